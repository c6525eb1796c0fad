//! Reading a mirror back: the newest complete snapshot of this node, and the logs that continue
//! it, replayed in order. Every file on the mirror's medium is untrusted (bounded reads, no
//! symlinks, authenticated contents).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::log::{LogOp, open_log};
use super::writer::parse_name;
use super::{COMPACT_AT, MIRROR_DIR, MirrorError, log::MAX_FRAME};
use crate::backup::{BackupContents, MAX_BACKUP_BYTES, Workers, open_backup};
use crate::config::Network;
use crate::files::{UntrustedError, read_untrusted};
use crate::seed::Seed;
use crate::store::{Entry, Snapshot, keys};

/// At most this many directory entries are looked at (a mirror has a few files).
const MAX_ENTRIES: usize = 10_000;

/// A mirror read back, ready to restore as a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorContents {
    /// The state: the snapshot with every mirrored commit after it applied. Its header's
    /// `commit_counter` is the last commit mirrored and `created_at` when it was written.
    pub contents: BackupContents,
    /// The snapshot the chain begins with.
    pub snapshot_counter: u64,
    /// Commits replayed from the logs.
    pub frames: usize,
    /// Bytes of a torn last frame (an append a power cut interrupted; never acknowledged).
    pub torn_bytes: usize,
}

fn untrusted(path: &Path, max: u64) -> Result<Vec<u8>, MirrorError> {
    read_untrusted(path, max).map_err(|e| match e {
        UntrustedError::Io(source) => MirrorError::Io { what: format!("reading {}", path.display()), source },
        other => MirrorError::BadLog(other.to_string()),
    })
}

/// Reads the mirror of the node `seed` gives on `network` from the directory chosen for it
/// (its files are in [`MIRROR_DIR`] there). Of several complete chains (files a prune left
/// behind) the one written last wins.
pub fn read_mirror(
    dir: &Path,
    seed: &Seed,
    network: Network,
    workers: &Workers,
) -> Result<MirrorContents, MirrorError> {
    let node_id = seed.node_id(network).map_err(|e| MirrorError::BadLog(e.to_string()))?;
    let node8: String = node_id.chars().take(8).collect();
    let mirror = dir.join(MIRROR_DIR);
    let listing =
        std::fs::read_dir(&mirror).map_err(MirrorError::io(format!("reading {}", mirror.display())))?;
    let mut snaps: Vec<(String, u64, PathBuf)> = Vec::new();
    let mut logs: HashMap<(String, u64), PathBuf> = HashMap::new();
    for entry in listing.take(MAX_ENTRIES).flatten() {
        let name = entry.file_name();
        let Some((n8, lineage, base, ext)) = name.to_str().and_then(parse_name) else { continue };
        if n8 != node8 {
            continue;
        }
        match ext {
            "snap" => snaps.push((lineage.to_string(), base, entry.path())),
            "log" => {
                logs.insert((lineage.to_string(), base), entry.path());
            }
            _ => {}
        }
    }
    snaps.sort_by_key(|s| std::cmp::Reverse(s.1));
    let mut best: Option<MirrorContents> = None;
    let mut last_error = None;
    for (lineage, base, path) in &snaps {
        match chain(path, lineage, *base, &logs, seed, &node_id, workers) {
            Ok(found) => {
                if best
                    .as_ref()
                    .is_none_or(|b| found.contents.header.created_at > b.contents.header.created_at)
                {
                    best = Some(found);
                }
            }
            // A wrong seed, or a mirror behind the card, is the answer, not a damaged file to
            // read past to an older chain.
            Err(MirrorError::Snapshot(crate::backup::BackupError::WrongSeed)) => {
                return Err(MirrorError::WrongSeed);
            }
            Err(e @ MirrorError::Behind { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!("mirror file {} not used: {e}", path.display());
                last_error = Some(e);
            }
        }
    }
    match (best, last_error) {
        (Some(found), _) => Ok(found),
        (None, Some(e)) => Err(e),
        (None, None) => Err(MirrorError::Nothing(dir.to_path_buf())),
    }
}

fn chain(
    snap: &Path,
    lineage: &str,
    base: u64,
    logs: &HashMap<(String, u64), PathBuf>,
    seed: &Seed,
    node_id: &str,
    workers: &Workers,
) -> Result<MirrorContents, MirrorError> {
    let bytes = untrusted(snap, MAX_BACKUP_BYTES)?;
    let mut contents = open_backup(Arc::new(bytes), seed, workers, &mut |_| {})?;
    let header = &contents.header;
    if header.node_id != node_id
        || header.lineage_id.as_deref() != Some(lineage)
        || header.commit_counter != base
    {
        return Err(MirrorError::BadLog(format!("{} is not the snapshot its name says", snap.display())));
    }
    let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = contents
        .snapshot
        .entries
        .drain(..)
        .map(|e| (keys::encode(&e.primary, &e.secondary, &e.key), e.value))
        .collect();
    let mut counter = base;
    let mut written_at = contents.header.created_at;
    let mut frames = 0;
    let mut torn_bytes = 0;
    // Each log continues from the counter the one before ended at.
    while let Some(path) = logs.get(&(lineage.to_string(), counter)) {
        let file = untrusted(path, COMPACT_AT.saturating_add(2 * MAX_FRAME as u64))?;
        let log = open_log(&file, seed)?;
        if log.header.node_id != node_id
            || log.header.lineage_id != lineage
            || log.header.base_counter != counter
        {
            return Err(MirrorError::BadLog(format!("{} is not the log its name says", path.display())));
        }
        torn_bytes = log.torn_bytes;
        let Some(last) = log.frames.last().map(|f| (f.counter, f.written_at)) else { break };
        for frame in log.frames {
            frames += 1;
            for op in frame.ops {
                match op {
                    LogOp::Put { key, value } => {
                        entries.insert(key, value);
                    }
                    LogOp::Delete { key } => {
                        entries.remove(&key);
                    }
                }
            }
        }
        (counter, written_at) = last;
    }
    // A log of this lineage that begins after the chain ends holds commits the chain lacks:
    // the mirror fell behind (it was lost, or the card went on without it) and a resync had
    // begun. Restoring the chain would put the node back on an old state.
    if let Some(newer) = logs.keys().filter(|(l, b)| l == lineage && *b > counter).map(|(_, b)| *b).max() {
        return Err(MirrorError::Behind { chain: counter, newer_log: newer });
    }
    let entries = entries
        .into_iter()
        .map(|(k, value)| {
            let (primary, secondary, key) =
                keys::decode(&k).map_err(|e| MirrorError::BadLog(format!("a key in the log: {e}")))?;
            Ok(Entry { primary, secondary, key, value })
        })
        .collect::<Result<Vec<_>, MirrorError>>()?;
    contents.header.commit_counter = counter;
    contents.header.created_at = written_at;
    contents.snapshot = Snapshot { commit_counter: counter, entries };
    Ok(MirrorContents { contents, snapshot_counter: base, frames, torn_bytes })
}

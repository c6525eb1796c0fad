//! Reading a mirror back: the newest complete snapshot of this node, and the logs that continue
//! it, replayed in order. Every file on the mirror's medium is untrusted (bounded reads, no
//! symlinks, authenticated contents).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::log::{LogOp, open_log};
use super::writer::parse_name;
use super::{COMPACT_AT, MIRROR_DIR, MirrorError, log::MAX_FRAME};
use crate::backup::{BackupContents, BackupHeader, MAX_BACKUP_BYTES, Workers, open_backup};
use crate::config::Network;
use crate::files::{UntrustedError, read_untrusted, read_untrusted_to_error};
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

/// Whether a log that reads up to `readable` bytes and then fails is one a power cut left while
/// it was being grown (on FAT the new length reaches the disk before the clusters that hold it:
/// the file fails to read from where they are missing). That is so when only zeros follow the
/// last good frame and the error comes past the next growth step after it: no frame is
/// written beyond a step before the step is durable, and frames are written one after the
/// other from the last one's end, so none can lie past zeros. Anything else is an I/O error:
/// the mirror fails closed rather than lose acknowledged commits to a failing stick.
fn cut_while_growing(readable: usize, end: usize, torn_bytes: usize) -> bool {
    let growth = super::writer::LOG_GROWTH as usize;
    let next_step = end.div_ceil(growth).saturating_mul(growth);
    torn_bytes == 0 && readable > end && readable >= next_step
}

/// Whether the mirror in `dir` was retired ([`super::RETIRED_FILE`]).
fn retired(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(MIRROR_DIR).join(super::RETIRED_FILE)).is_ok()
}

/// Marks the mirror in `dir` retired, durably: the node goes on without it (another stick is
/// chosen, or the mirror stopped), so it falls behind and must never be restored or offered.
/// Nothing to do where there is no mirror.
pub fn retire(dir: &Path) -> std::io::Result<()> {
    let mirror = dir.join(MIRROR_DIR);
    if !mirror.is_dir() {
        return Ok(());
    }
    let path = mirror.join(super::RETIRED_FILE);
    std::fs::write(&path, format!("{}\n", crate::unix_now()))?;
    std::fs::File::open(&path)?.sync_all()?;
    crate::files::sync_dir(&mirror)
}

fn untrusted(path: &Path, max: u64) -> Result<Vec<u8>, MirrorError> {
    read_untrusted(path, max).map_err(|e| untrusted_error(path, e))
}

fn untrusted_error(path: &Path, e: UntrustedError) -> MirrorError {
    match e {
        UntrustedError::Io(source) => MirrorError::Io { what: format!("reading {}", path.display()), source },
        other => MirrorError::BadLog(other.to_string()),
    }
}

/// Reads the mirror of the node `seed` gives on `network` from the directory chosen for it
/// (its files are in [`MIRROR_DIR`] there).
///
/// A chain is a snapshot and the logs that continue it, each from the commit the one before
/// reached. A log that begins at a commit inside an earlier log is a later history from that
/// commit (a restart or a resync there): the chain switches to it, and the earlier log's frames
/// after that commit (written, never committed on the card) are not used. A chain is current
/// only if every log of its lineage from its snapshot on is on it; a log left off holds commits
/// the chain lacks, and the mirror is refused as behind. Of several current chains (an older
/// snapshot a prune left behind reaches the same state) the one written last wins.
pub fn read_mirror(
    dir: &Path,
    seed: &Seed,
    network: Network,
    workers: &Workers,
) -> Result<MirrorContents, MirrorError> {
    let node_id = seed.node_id(network).map_err(|e| MirrorError::BadLog(e.to_string()))?;
    let node8: String = node_id.chars().take(8).collect();
    let mirror = dir.join(MIRROR_DIR);
    if retired(dir) {
        return Err(MirrorError::Retired(dir.to_path_buf()));
    }
    let listing =
        std::fs::read_dir(&mirror).map_err(MirrorError::io(format!("reading {}", mirror.display())))?;
    let mut snaps: Vec<(String, u64, PathBuf)> = Vec::new();
    let mut logs: HashMap<(String, u64), PathBuf> = HashMap::new();
    for (i, entry) in listing.flatten().enumerate() {
        // A file not looked at could be the log that shows a chain behind: refuse instead.
        if i >= MAX_ENTRIES {
            return Err(MirrorError::BadLog(format!(
                "{} has more than {MAX_ENTRIES} files",
                mirror.display()
            )));
        }
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
    let mut current: Vec<MirrorContents> = Vec::new();
    let mut behind = None;
    let mut last_error = None;
    for (lineage, base, path) in &snaps {
        match chain(path, lineage, *base, &logs, seed, &node_id, workers) {
            Ok(found) => current.push(found),
            // A wrong seed is the answer, not a damaged file to read past.
            Err(MirrorError::Snapshot(crate::backup::BackupError::WrongSeed)) => {
                return Err(MirrorError::WrongSeed);
            }
            Err(e @ MirrorError::Behind { .. }) => {
                behind.get_or_insert(e);
            }
            Err(e) => {
                tracing::warn!("mirror file {} not used: {e}", path.display());
                last_error = Some(e);
            }
        }
    }
    if let Some(best) =
        current.into_iter().max_by_key(|c| (c.contents.header.created_at, c.contents.header.commit_counter))
    {
        return Ok(best);
    }
    match (behind, last_error) {
        (Some(e), _) | (None, Some(e)) => Err(e),
        (None, None) => Err(MirrorError::Nothing(dir.to_path_buf())),
    }
}

/// The plain facts of the newest mirror snapshot in `dir` (its files in [`MIRROR_DIR`] there)
/// of `node_id` when given, on `network`, without the seed: the snapshot's path and header, and
/// when the node's newest log was last modified (Unix seconds; the snapshot's time if it has no
/// log). For the OLED's restore offer; a restore reads and checks the whole chain
/// ([`read_mirror`]).
pub fn newest_snapshot(
    dir: &Path,
    network: Network,
    node_id: Option<&str>,
) -> Option<(PathBuf, BackupHeader, u64)> {
    if retired(dir) {
        return None;
    }
    // (node id prefix, whether a log, path) of each mirror snapshot and log.
    let files: Vec<(String, bool, PathBuf)> = std::fs::read_dir(dir.join(MIRROR_DIR))
        .ok()?
        .take(MAX_ENTRIES)
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let (node8, _, _, ext) = parse_name(name.to_str()?)?;
            matches!(ext, "snap" | "log").then(|| (node8.to_string(), ext == "log", e.path()))
        })
        .collect();
    let (file, header) = files
        .iter()
        .filter(|(_, is_log, _)| !is_log)
        .filter_map(|(_, _, path)| {
            let header = crate::backup::read_header_of(path).ok()?;
            let ours = header.network == network && node_id.is_none_or(|id| id == header.node_id);
            ours.then(|| (path.clone(), header))
        })
        .max_by_key(|(_, h)| (h.created_at, h.commit_counter))?;
    let written = files
        .iter()
        .filter(|(node8, is_log, _)| *is_log && *node8 == header.node_id8())
        .filter_map(|(_, _, path)| std::fs::symlink_metadata(path).ok()?.modified().ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .max()
        .unwrap_or(header.created_at);
    Some((file, header, written))
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
    // This lineage's logs from the snapshot on, by base.
    let lineage_logs: BTreeMap<u64, &PathBuf> =
        logs.iter().filter(|((l, b), _)| l == lineage && *b >= base).map(|((_, b), p)| (*b, p)).collect();
    let mut used = BTreeSet::new();
    let mut counter = base;
    let mut written_at = contents.header.created_at;
    let mut frames = 0;
    let mut torn_bytes = 0;
    while let Some(path) = lineage_logs.get(&counter) {
        if !used.insert(counter) {
            break;
        }
        // A log is compacted after the frame that takes it past COMPACT_AT, and grown ahead of
        // its frames by less than LOG_GROWTH (1 MiB): within two frames' worth.
        let (file, error) = read_untrusted_to_error(path, COMPACT_AT.saturating_add(2 * MAX_FRAME as u64))
            .map_err(|e| untrusted_error(path, e))?;
        let log = open_log(&file, seed)?;
        if let Some(source) = error {
            if !cut_while_growing(file.len(), log.end, log.torn_bytes) {
                return Err(MirrorError::Io { what: format!("reading {}", path.display()), source });
            }
        }
        if log.header.node_id != node_id
            || log.header.lineage_id != lineage
            || log.header.base_counter != counter
        {
            return Err(MirrorError::BadLog(format!("{} is not the log its name says", path.display())));
        }
        torn_bytes = log.torn_bytes;
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
            (counter, written_at) = (frame.counter, frame.written_at);
            // A later history begins here: go on with it.
            if lineage_logs.contains_key(&counter) && !used.contains(&counter) {
                torn_bytes = 0;
                break;
            }
        }
    }
    // Every log of the lineage from the snapshot on must be on the chain: one that is not holds
    // commits the chain lacks (the mirror was lost, or is resyncing).
    if let Some(newer) = lineage_logs.keys().filter(|b| !used.contains(b)).max() {
        return Err(MirrorError::Behind { chain: counter, newer_log: *newer });
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

#[cfg(test)]
mod tests {
    use super::cut_while_growing;

    const MIB: usize = 1 << 20;

    #[test]
    fn only_an_error_past_the_next_growth_step_after_zeros_is_a_cut_while_growing() {
        // Frames end at 500 KiB, zeros after them, unreadable from 1 MiB: the growth to 2 MiB
        // was cut in its flush.
        assert!(cut_while_growing(MIB, 500 << 10, 0));
        assert!(cut_while_growing(MIB + 64 * 1024, 500 << 10, 0), "part of the new step's clusters");
        // Unreadable before the next step: room that was durable, so a failing stick.
        assert!(!cut_while_growing(MIB - 4096, 500 << 10, 0));
        // Frames end exactly at the step: the next frame would begin where it fails.
        assert!(!cut_while_growing(MIB, MIB, 0));
        assert!(cut_while_growing(MIB + 4096, MIB, 0), "a step after frames ending at one");
        // Bytes that are not zero after the last frame: a frame may lie there.
        assert!(!cut_while_growing(MIB, 500 << 10, 10));
    }
}

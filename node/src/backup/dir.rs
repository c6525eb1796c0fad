//! Writing a backup into a directory (a USB stick's, or any for the CLI) so that a reader only
//! ever finds complete, verified backups under a backup's name:
//!
//! 1. snapshot the store (one read transaction; writers go on);
//! 2. write to a hidden temporary name, fsync;
//! 3. drop the file's cached pages and read it back from the device, decrypt it fully and
//!    compare header and every entry with what was written;
//! 4. rename it to `boltbox-<network>-<nodeid8>-<UTC time>.bbk` (never over an existing file)
//!    and fsync the directory;
//! 5. only then delete this node's backups beyond the newest `keep` (newest by commit counter:
//!    a Pi's clock can be wrong before time sync).
//!
//! On any failure the temporary file is removed (best effort: a pulled stick cannot be
//! cleaned; the next backup removes leftovers), and earlier backups are untouched.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::BackupError;
use super::file::{
    BackupHeader, BackupInput, Workers, open_backup, read_header_of, sort_by_state, write_backup,
};
use crate::config::{Network, NodeConfig};
use crate::seed::Seed;
use crate::store::Store;
use crate::unix_now;

/// Backup files end in this.
pub const EXTENSION: &str = "bbk";

/// What to back up.
#[derive(Debug)]
pub struct BackupSource<'a> {
    /// The node's store (running or not).
    pub store: &'a Store,
    /// The node's seed.
    pub seed: &'a Seed,
    /// The node's config (its secrets are not written).
    pub config: &'a NodeConfig,
    /// The node id (hex).
    pub node_id: &'a str,
    /// Where chunks are sealed and opened.
    pub workers: Workers,
}

/// A verified backup in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The backup file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its header.
    pub header: BackupHeader,
    /// Snapshot to verified file.
    pub took: Duration,
    /// Older backups of this node deleted to keep the newest `keep`.
    pub pruned: Vec<PathBuf>,
    /// Why deleting an older backup failed, if it did (the new backup is good regardless).
    pub prune_error: Option<String>,
}

/// `YYYYMMDDTHHMMSSZ` for Unix time `secs`: sorts as time does, and has no character FAT
/// refuses.
fn utc_stamp(secs: u64) -> String {
    let at = chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0).unwrap_or_default();
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

fn prefix(network: Network, node_id: &str) -> String {
    format!("boltbox-{network}-{}-", node_id.chars().take(8).collect::<String>())
}

/// `boltbox-<network>-<nodeid8>-<UTC time>.bbk` for a backup with `header`.
pub fn file_name(header: &BackupHeader) -> String {
    format!("{}{}.{EXTENSION}", prefix(header.network, &header.node_id), utc_stamp(header.created_at))
}

/// This node's backups in `dir`, from the oldest state to the newest ([`sort_by_state`]: by
/// commit counter, not by the time in their names, which a clock before time sync gets wrong).
/// Files named like this node's backups whose header does not check out, or that are of
/// another node, are left out (and so never pruned).
pub fn backups_in(dir: &Path, network: Network, node_id: &str) -> Result<Vec<PathBuf>, BackupError> {
    let ours = prefix(network, node_id);
    let suffix = format!(".{EXTENSION}");
    let mut found: Vec<(PathBuf, BackupHeader)> = std::fs::read_dir(dir)
        .map_err(BackupError::io(format!("listing {}", dir.display())))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&ours) && name.ends_with(&suffix)
        })
        .map(|entry| entry.path())
        .filter_map(|path| {
            let header = read_header_of(&path).ok()?;
            (header.network == network && header.node_id == node_id).then_some((path, header))
        })
        .collect();
    // Ties (the same state backed up twice) keep the order of their names.
    found.sort_by_cached_key(|(path, _)| age_key(path));
    sort_by_state(&mut found);
    Ok(found.into_iter().map(|(path, _)| path).collect())
}

/// Orders backup names by time, then by the "-N" a same-second backup got: (name without
/// extension and "-N", N), with N = 1 for a name without one.
fn age_key(path: &Path) -> (String, u32) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(&format!(".{EXTENSION}")).unwrap_or(&name);
    match stem.rsplit_once('-') {
        Some((time, n)) if time.ends_with('Z') && n.chars().all(|c| c.is_ascii_digit()) => {
            (time.to_string(), n.parse().unwrap_or(1))
        }
        _ => (stem.to_string(), 1),
    }
}

/// Removes this node's temporary files left by an interrupted backup.
fn remove_leftovers(dir: &Path, network: Network, node_id: &str) {
    let ours = format!(".{}", prefix(network, node_id));
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&ours) && name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!("removed {} left by an interrupted backup", entry.path().display()),
                Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(BackupError::io(format!("syncing {}", dir.display())))
}

/// Renames `from` to `to`, never over an existing file. A second backup in the same second
/// gets "-2", "-3"... before the extension, numbered past every same-second name in the
/// directory so that names keep sorting by age even after older ones were pruned.
fn rename_no_replace(from: &Path, to: &Path) -> Result<PathBuf, BackupError> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    let stem = to.with_extension("").to_string_lossy().into_owned();
    let dir = to.parent().unwrap_or(Path::new("."));
    let taken = std::fs::read_dir(dir)
        .map_err(BackupError::io(format!("listing {}", dir.display())))?
        .filter_map(|e| e.ok())
        .map(|e| age_key(&e.path()))
        .filter(|(time, _)| dir.join(time) == Path::new(&stem))
        .map(|(_, n)| n)
        .max()
        .unwrap_or(0);
    for n in taken + 1..taken + 10 {
        let target = if n == 1 { to.to_path_buf() } else { PathBuf::from(format!("{stem}-{n}.{EXTENSION}")) };
        match renameat_with(CWD, from, CWD, &target, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(target),
            Err(rustix::io::Errno::EXIST) => continue,
            // A filesystem without RENAME_NOREPLACE: check, then rename (one writer per stick).
            Err(rustix::io::Errno::INVAL) if !target.exists() => {
                std::fs::rename(from, &target)
                    .map_err(BackupError::io(format!("renaming to {}", target.display())))?;
                return Ok(target);
            }
            Err(rustix::io::Errno::INVAL) => continue,
            Err(e) => {
                return Err(BackupError::Io {
                    what: format!("renaming to {}", target.display()),
                    source: e.into(),
                });
            }
        }
    }
    Err(BackupError::Io {
        what: format!("renaming to {}", to.display()),
        source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "too many backups with this name"),
    })
}

/// Backs `source` up into `dir` (created if missing), keeping this node's newest `keep`
/// backups (at least the new one). `progress` gets 0..=100.
pub fn backup_to_dir(
    source: &BackupSource<'_>,
    dir: &Path,
    keep: usize,
    progress: &mut dyn FnMut(u8),
) -> Result<Written, BackupError> {
    let started = Instant::now();
    progress(0);
    // A backup under another seed's key could never be restored with this node's seed.
    let derived = source.seed.node_id(source.config.network)?;
    if derived != source.node_id {
        return Err(BackupError::NodeMismatch { backup: source.node_id.to_string(), derived });
    }
    std::fs::create_dir_all(dir).map_err(BackupError::io(format!("creating {}", dir.display())))?;
    let network = source.config.network;
    remove_leftovers(dir, network, source.node_id);
    let lineage_id = source.store.identity()?.lineage_id;
    let snapshot = source.store.snapshot()?;
    let created_at = unix_now();
    progress(5);
    let input = BackupInput {
        seed: source.seed,
        config: source.config,
        node_id: source.node_id,
        lineage_id: &lineage_id,
        snapshot: &snapshot,
        created_at,
    };
    let stamp = utc_stamp(created_at);
    let tmp = dir.join(format!(".{}{stamp}.tmp", prefix(network, source.node_id)));
    let result = write_and_verify(&input, &tmp, &source.workers, progress);
    let (header, bytes) = match result {
        Ok(done) => done,
        Err(e) => {
            // Never leave a partial file behind; a pulled stick has nothing left to remove.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let path = match rename_no_replace(&tmp, &dir.join(file_name(&header))) {
        Ok(path) => path,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    sync_dir(dir)?;
    progress(97);
    let (pruned, prune_error) = prune(dir, network, source.node_id, keep.max(1), &path);
    progress(100);
    Ok(Written { path, bytes, header, took: started.elapsed(), pruned, prune_error })
}

fn write_and_verify(
    input: &BackupInput<'_>,
    tmp: &Path,
    workers: &Workers,
    progress: &mut dyn FnMut(u8),
) -> Result<(BackupHeader, u64), BackupError> {
    let what = |verb: &str| format!("{verb} {}", tmp.display());
    let file = crate::files::create_new(tmp, crate::files::PRIVATE_FILE)
        .map_err(BackupError::io(what("creating")))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let (header, bytes) = write_backup(input, &mut out, workers, &mut |p| progress(5 + p / 2))?;
    let file =
        out.into_inner().map_err(|e| BackupError::Io { what: what("writing"), source: e.into_error() })?;
    file.sync_all().map_err(BackupError::io(what("syncing")))?;
    progress(60);
    // Read back from the device, not from the page cache that still holds what was written.
    if let Err(e) = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed) {
        tracing::warn!("cannot drop the cached pages of {}: {e}", tmp.display());
    }
    drop(file);
    let data = crate::files::read_untrusted(tmp, bytes).map_err(|e| match e {
        crate::files::UntrustedError::Io(source) => BackupError::Io { what: what("reading back"), source },
        other => BackupError::Verify(format!("reading {} back: {other}", tmp.display())),
    })?;
    if data.len() as u64 != bytes {
        return Err(BackupError::Verify(format!("{} bytes written, {} read back", bytes, data.len())));
    }
    let contents = open_backup(Arc::new(data), input.seed, workers, &mut |p| {
        progress(60 + (u16::from(p) * 35 / 100) as u8)
    })?;
    if contents.header != header {
        return Err(BackupError::Verify("the header differs".into()));
    }
    if contents.snapshot != *input.snapshot {
        return Err(BackupError::Verify("the store entries differ".into()));
    }
    Ok((header, bytes))
}

/// Deletes this node's backups in `dir` beyond the newest `keep`, never `new`.
fn prune(
    dir: &Path,
    network: Network,
    node_id: &str,
    keep: usize,
    new: &Path,
) -> (Vec<PathBuf>, Option<String>) {
    let all = match backups_in(dir, network, node_id) {
        Ok(all) => all,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let older: Vec<&PathBuf> = all.iter().filter(|p| p.as_path() != new).collect();
    let excess = older.len().saturating_sub(keep - 1);
    let mut pruned = Vec::new();
    let mut error = None;
    for path in older.into_iter().take(excess) {
        match std::fs::remove_file(path) {
            Ok(()) => pruned.push(path.clone()),
            Err(e) => error = Some(format!("deleting {}: {e}", path.display())),
        }
    }
    if !pruned.is_empty() {
        if let Err(e) = sync_dir(dir) {
            error = Some(e.to_string());
        }
    }
    (pruned, error)
}

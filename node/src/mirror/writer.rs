//! The mirror's writer: the committer's side ([`Mirror`], called on the committer thread
//! around each commit) and the thread that owns the mirror's files.
//!
//! Per batch the committer calls [`Mirror::before_commit`] (which may begin a new log with a
//! read transaction taken right there, between two commits, and sends the batch's frame to the
//! writer thread), commits on the card, then [`Mirror::after_commit`], which waits at most
//! [`MIRROR_WAIT`] for the frame to be durable. The two flushes overlap.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::log::{LogOp, LogSealer};
use super::{
    COMPACT_AT, MIRROR_DIR, MIRROR_WAIT, MirrorError, MirrorSetup, MirrorStatus, REBUILDABLE_KEYS,
    RESYNC_EVERY,
};
use crate::backup::BackupInput;
use crate::store::committer::Op;
use crate::store::{Entry, Snapshot, StoreIdentity, keys, snapshot_of};
use crate::unix_now;

/// Whether a store key (decoded) is mirrored.
pub(crate) fn mirrored(primary: &str, secondary: &str, key: &str) -> bool {
    !(primary.is_empty() && secondary.is_empty() && REBUILDABLE_KEYS.contains(&key))
}

/// The mirror's file names for node `node_id`, lineage `lineage`, base counter `base`.
pub(crate) fn file_stem(node_id: &str, lineage: &str, base: u64) -> String {
    format!("mirror-{}-{lineage}-{base:020}", node_id.chars().take(8).collect::<String>())
}

/// The parts of a mirror file name: (node id prefix, lineage, base, extension).
pub(crate) fn parse_name(name: &str) -> Option<(&str, &str, u64, &str)> {
    let rest = name.strip_prefix("mirror-")?;
    let (stem, ext) = rest.split_once('.')?;
    let mut parts = stem.splitn(3, '-');
    let node8 = parts.next()?;
    let lineage = parts.next()?;
    let base = parts.next()?;
    if node8.len() != 8 || lineage.len() != 32 || base.len() != 20 {
        return None;
    }
    Some((node8, lineage, base.parse().ok()?, ext))
}

enum Msg {
    /// Begin a new log at `base` with its snapshot read from `txn`.
    Begin { base: u64, generation: u64, after_loss: bool, txn: Box<redb::ReadTransaction> },
    /// Append the commit that brings the store to `counter`.
    Append { counter: u64, ops: Vec<LogOp>, ack: SyncSender<Result<(), String>> },
}

/// The committer's handle on the mirror.
pub(crate) struct Mirror {
    setup: Arc<MirrorSetup>,
    status: Arc<Mutex<MirrorStatus>>,
    /// The writer thread's queue; `None` while lost.
    writer: Option<Sender<Msg>>,
    /// Bytes in the current log (the writer counts them), for compaction.
    log_bytes: Arc<AtomicU64>,
    /// Bumped at each new log, each loss and each mirror chosen (shared by every mirror of the
    /// store): a thread of an older log, a broken chain or a replaced mirror does not get to
    /// change the status.
    generation: Arc<AtomicU64>,
    /// Held by this mirror's writer and snapshot threads: while one of an earlier attempt is
    /// still alive (stuck on a dead stick), no new one is started.
    alive: Arc<()>,
    /// The last attempt ended in a loss: the next log's older chain is behind, and is removed
    /// once the new log is there.
    after_loss: bool,
    needs_begin: bool,
    retry_at: Instant,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").field("dir", &self.setup.dir).finish_non_exhaustive()
    }
}

/// Marks the mirror lost for a thread of generation `generation`, judged under the status's
/// lock (the generation is bumped under it too), so that an older thread never speaks for a
/// newer one.
fn mark_lost_if(
    status: &Mutex<MirrorStatus>,
    current: &AtomicU64,
    generation: u64,
    dir: &Path,
    reason: String,
) {
    let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
    if current.load(Ordering::SeqCst) == generation {
        lost(&mut status, dir, reason);
    }
}

/// Marks `status` lost for `reason`; a mirror already lost keeps the time it was first lost (a
/// resync that fails again is the same outage), and the log hears of a new reason only.
pub(crate) fn lost(status: &mut MirrorStatus, dir: &Path, reason: String) {
    // A write refused for want of a log follows a failure already said: keep that one.
    if reason == MirrorError::NotOpen.to_string() && matches!(status, MirrorStatus::Lost { .. }) {
        return;
    }
    let since = match &*status {
        MirrorStatus::Lost { reason: old, since, .. } => {
            if *old != reason {
                tracing::warn!("mirror still lost ({}): {reason}", dir.display());
            }
            *since
        }
        _ => {
            tracing::warn!("mirror lost ({}): {reason}; the node goes on on the card alone", dir.display());
            unix_now()
        }
    };
    *status = MirrorStatus::Lost { dir: dir.to_path_buf(), reason, since };
}

fn get(status: &Mutex<MirrorStatus>) -> MirrorStatus {
    status.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

impl Mirror {
    /// A mirror into `setup.dir`; its first log and snapshot begin with the next commit.
    /// `generation` is the store's (see [`Mirror::generation`]).
    pub(crate) fn new(
        setup: MirrorSetup,
        status: Arc<Mutex<MirrorStatus>>,
        generation: Arc<AtomicU64>,
    ) -> Mirror {
        {
            let mut shown = status.lock().unwrap_or_else(|p| p.into_inner());
            generation.fetch_add(1, Ordering::SeqCst);
            *shown = MirrorStatus::Syncing { dir: setup.dir.clone(), percent: 0 };
        }
        Mirror {
            setup: Arc::new(setup),
            status,
            writer: None,
            log_bytes: Arc::new(AtomicU64::new(0)),
            generation,
            alive: Arc::new(()),
            after_loss: false,
            needs_begin: true,
            retry_at: Instant::now(),
        }
    }

    fn lose(&mut self, reason: String) {
        self.writer = None;
        self.after_loss = true;
        {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            self.generation.fetch_add(1, Ordering::SeqCst);
            lost(&mut status, &self.setup.dir, reason);
        }
        self.retry_at = Instant::now() + RESYNC_EVERY;
    }

    /// Before the commit that brings the store from `counter` to `counter + 1`: begins a log
    /// when one is due (`begin_read` gives the state at `counter`: no commit is in flight) and
    /// sends the batch. Returns what to wait for after the card's commit.
    pub(crate) fn before_commit(
        &mut self,
        counter: u64,
        ops: &[Op],
        begin_read: impl FnOnce() -> Result<redb::ReadTransaction, String>,
    ) -> Option<Receiver<Result<(), String>>> {
        // The snapshot writer reports its own failure through the status.
        if self.writer.is_some() {
            if let MirrorStatus::Lost { reason, .. } = get(&self.status) {
                self.lose(reason);
            }
        }
        if self.writer.is_none() {
            if Instant::now() < self.retry_at {
                return None;
            }
            if Arc::strong_count(&self.alive) > 1 {
                // A thread of the last attempt still waits on the stick: at most one at a time.
                self.retry_at = Instant::now() + RESYNC_EVERY;
                return None;
            }
            let (tx, rx) = mpsc::channel();
            let setup = Arc::clone(&self.setup);
            let status = Arc::clone(&self.status);
            let bytes = Arc::clone(&self.log_bytes);
            let generation = Arc::clone(&self.generation);
            let alive = Arc::clone(&self.alive);
            let spawned = std::thread::Builder::new()
                .name("boltbox-mirror".into())
                .spawn(move || WriterThread { setup, status, bytes, generation, alive, log: None }.run(rx));
            if let Err(e) = spawned {
                self.lose(format!("no mirror thread: {e}"));
                return None;
            }
            self.writer = Some(tx);
            self.needs_begin = true;
        }
        if self.log_bytes.load(Ordering::Relaxed) > COMPACT_AT {
            self.needs_begin = true;
        }
        if self.needs_begin {
            match begin_read() {
                Ok(txn) => {
                    self.needs_begin = false;
                    self.log_bytes.store(0, Ordering::Relaxed);
                    let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                    let after_loss = std::mem::take(&mut self.after_loss);
                    self.send(Msg::Begin { base: counter, generation, after_loss, txn: Box::new(txn) })?;
                }
                Err(e) => {
                    self.lose(format!("cannot read the store for a snapshot: {e}"));
                    return None;
                }
            }
        }
        let ops = log_ops(ops);
        let (ack, done) = mpsc::sync_channel(1);
        self.send(Msg::Append { counter: counter.saturating_add(1), ops, ack })?;
        Some(done)
    }

    fn send(&mut self, msg: Msg) -> Option<()> {
        let sent = self.writer.as_ref().is_some_and(|w| w.send(msg).is_ok());
        if !sent {
            self.lose("the mirror's writer stopped".into());
        }
        sent.then_some(())
    }

    /// After the card's commit brought the store to `counter` (the mirror's copy was sealed
    /// as `counter_sent`): waits for the mirror's copy.
    pub(crate) fn after_commit(
        &mut self,
        pending: Option<Receiver<Result<(), String>>>,
        counter_sent: u64,
        counter: u64,
    ) {
        let Some(done) = pending else { return };
        if counter != counter_sent {
            // A failed card commit that had reached the disk after all, then a retry: the
            // mirror's frame carries another counter, and its log now has a gap.
            self.lose(format!("the card's commit was retried at counter {counter}, not {counter_sent}"));
            return;
        }
        match done.recv_timeout(MIRROR_WAIT) {
            Ok(Ok(())) => {
                let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                if let MirrorStatus::InSync { counter: at, .. } = &mut *status {
                    *at = counter;
                }
            }
            Ok(Err(reason)) => self.lose(reason),
            Err(RecvTimeoutError::Timeout) => {
                self.lose(format!("a write took longer than {} s", MIRROR_WAIT.as_secs()));
            }
            Err(RecvTimeoutError::Disconnected) => self.lose("the mirror's writer stopped".into()),
        }
    }
}

/// The store's identity and its mirrored entries at the state `txn` reads, read at once and
/// the transaction let go: one held through a slow medium would keep redb from reusing the
/// card's pages.
pub(crate) fn mirrored_snapshot(
    txn: redb::ReadTransaction,
) -> Result<(StoreIdentity, Snapshot), MirrorError> {
    let store = |e: crate::store::StoreError| MirrorError::Store(e.to_string());
    let identity = crate::store::identity_of(&txn).map_err(store)?;
    let keep = |e: &Entry| mirrored(&e.primary, &e.secondary, &e.key);
    let snapshot = snapshot_of(&txn, &keep).map_err(store)?;
    Ok((identity, snapshot))
}

/// A commit's operations as a mirror's frame carries them: the mirrored keys' puts and deletes.
pub(crate) fn log_ops(ops: &[Op]) -> Vec<LogOp> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Put { key, value } if key_mirrored(key) => {
                Some(LogOp::Put { key: key.clone(), value: value.clone() })
            }
            Op::Delete { key } if key_mirrored(key) => Some(LogOp::Delete { key: key.clone() }),
            _ => None,
        })
        .collect()
}

/// [`mirrored`] on a key as the store encodes it, without decoding it (it runs for every
/// operation of every commit): the rebuildable keys are in the empty namespaces.
fn key_mirrored(stored: &[u8]) -> bool {
    match stored {
        [keys::SEP, keys::SEP, key @ ..] => !REBUILDABLE_KEYS.iter().any(|r| r.as_bytes() == key),
        _ => true,
    }
}

/// The log being appended to.
struct LogFile {
    file: File,
    sealer: LogSealer,
    /// Where the next frame goes.
    end: u64,
    /// The file's length, grown ahead of the frames in [`LOG_GROWTH`] steps.
    allocated: u64,
}

/// How far a log is grown ahead of its frames, durably (its length, its clusters, zeros)
/// before frames are written into it: a frame's flush then changes no file-system metadata.
/// On FAT, whose fsync writes a file's new length before the chain of clusters that holds
/// it, an append that grew the file and was cut in its flush leaves a length beyond the
/// chain, and the file unreadable from there (`fat_bmap_cluster: request beyond EOF`, EIO):
/// the boot test's power cut found it. Within allocated space a cut can only tear the frame.
pub(crate) const LOG_GROWTH: u64 = 1 << 20;

struct WriterThread {
    setup: Arc<MirrorSetup>,
    status: Arc<Mutex<MirrorStatus>>,
    bytes: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
    alive: Arc<()>,
    log: Option<LogFile>,
}

impl WriterThread {
    fn run(mut self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Begin { base, generation, after_loss, txn } => {
                    if let Err(e) = self.begin(base, generation, after_loss, *txn) {
                        self.log = None;
                        mark_lost_if(
                            &self.status,
                            &self.generation,
                            generation,
                            &self.setup.dir,
                            e.to_string(),
                        );
                    }
                }
                Msg::Append { counter, ops, ack } => {
                    let result = self.append(counter, &ops).map_err(|e| e.to_string());
                    if result.is_err() {
                        self.log = None;
                    }
                    // The committer may have stopped waiting (it then calls the mirror lost).
                    let _ = ack.send(result);
                }
            }
        }
    }

    fn dir(&self) -> PathBuf {
        self.setup.dir.join(MIRROR_DIR)
    }

    fn begin(
        &mut self,
        base: u64,
        generation: u64,
        after_loss: bool,
        txn: redb::ReadTransaction,
    ) -> Result<(), MirrorError> {
        self.log = None;
        let (identity, snapshot) = mirrored_snapshot(txn)?;
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(MirrorError::io(format!("creating {}", dir.display())))?;
        let setup = &self.setup;
        remove_leftovers(&dir, &setup.node_id);
        // A log of this history that begins after the card's counter is from a later state
        // than the card's: the card went back. Never written over.
        if let Some(later) = later_base(&dir, &setup.node_id, &identity.lineage_id, base) {
            return Err(MirrorError::Ahead { mirror: later, card: base });
        }
        let (_, sealer) =
            LogSealer::new(&setup.seed, setup.config.network, &setup.node_id, &identity.lineage_id, base)?;
        let stem = file_stem(&setup.node_id, &identity.lineage_id, base);
        let path = dir.join(format!("{stem}.log"));
        let io = MirrorError::io(format!("writing {}", path.display()));
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&path).map_err(io)?;
        let io = MirrorError::io(format!("writing {}", path.display()));
        file.write_all(sealer.prefix()).and_then(|()| file.sync_all()).map_err(io)?;
        crate::files::sync_dir(&dir).map_err(MirrorError::io("syncing the mirror's directory"))?;
        // Chosen again: the new log, durable, already shows the older chain behind.
        match std::fs::remove_file(dir.join(super::RETIRED_FILE)) {
            Ok(()) => {
                crate::files::sync_dir(&dir).map_err(MirrorError::io("syncing the mirror's directory"))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(MirrorError::io("removing the mirror's retired mark")(e)),
        }
        let end = sealer.prefix().len() as u64;
        self.bytes.store(end, Ordering::Relaxed);
        self.log = Some(LogFile { file, sealer, end, allocated: end });
        if after_loss {
            // The older chain ends before this log begins (commits were made without the
            // mirror): a reader refuses it now anyway, and on a small stick its room is needed.
            prune(&dir, &setup.node_id, &identity.lineage_id, base);
        }
        // A resync says so once its log is there: a stick that is still full or read-only
        // stays "lost" rather than flickering to "syncing" at each attempt.
        {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            if self.generation.load(Ordering::SeqCst) == generation {
                if let MirrorStatus::Lost { .. } = &*status {
                    *status = MirrorStatus::Syncing { dir: self.setup.dir.clone(), percent: 0 };
                }
            }
        }

        // The snapshot in the background; the chain stays whole meanwhile when the mirror was
        // in sync (the older log ends where this one begins).
        let setup = Arc::clone(&self.setup);
        let status = Arc::clone(&self.status);
        let lineage = identity.lineage_id;
        let current = Arc::clone(&self.generation);
        let alive = Arc::clone(&self.alive);
        std::thread::Builder::new()
            .name("boltbox-mirror-snap".into())
            .spawn(move || {
                let _alive = alive;
                let is_current = || current.load(Ordering::SeqCst) == generation;
                let result = write_snapshot(&setup, &status, &dir, &stem, &lineage, &snapshot, &is_current);
                // Judged under the status's lock: after a newer log, a loss or another mirror,
                // this snapshot's word is not the last.
                match result {
                    Ok(()) => {
                        let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
                        if current.load(Ordering::SeqCst) == generation {
                            if let MirrorStatus::Syncing { .. } = &*status {
                                *status = MirrorStatus::InSync { dir: setup.dir.clone(), counter: base };
                            }
                        }
                    }
                    Err(e) => mark_lost_if(&status, &current, generation, &setup.dir, e.to_string()),
                }
            })
            .map_err(|e| MirrorError::Io { what: "starting the snapshot thread".into(), source: e })?;
        Ok(())
    }

    fn append(&mut self, counter: u64, ops: &[LogOp]) -> Result<(), MirrorError> {
        let Some(log) = self.log.as_mut() else {
            return Err(MirrorError::NotOpen);
        };
        let frame = log.sealer.seal(counter, unix_now(), ops)?;
        let io = MirrorError::io("appending to the mirror's log");
        let end = log.end.saturating_add(frame.len() as u64);
        if end > log.allocated {
            let allocated = end.div_ceil(LOG_GROWTH).saturating_mul(LOG_GROWTH);
            log.file.set_len(allocated).and_then(|()| log.file.sync_all()).map_err(io)?;
            log.allocated = allocated;
        }
        let io = MirrorError::io("appending to the mirror's log");
        log.file.write_all_at(&frame, log.end).and_then(|()| log.file.sync_data()).map_err(io)?;
        log.end = end;
        self.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The base of a file of node `node_id`'s history `lineage` in `dir` later than `base`, if any.
fn later_base(dir: &Path, node_id: &str, lineage: &str, base: u64) -> Option<u64> {
    lineage_files(dir, node_id, lineage).into_iter().map(|(b, _, _)| b).filter(|b| *b > base).max()
}

/// Node `node_id`'s files of history `lineage` in `dir`: (base, whether a snapshot, path).
fn lineage_files(dir: &Path, node_id: &str, lineage: &str) -> Vec<(u64, bool, PathBuf)> {
    let node8: String = node_id.chars().take(8).collect();
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let (n8, l, b, ext) = name.to_str().and_then(parse_name)?;
            (n8 == node8 && l == lineage).then(|| (b, ext == "snap", entry.path()))
        })
        .collect()
}

/// Writes `snapshot` as `<stem>.snap` (a temporary name, flushed, then renamed while
/// `is_current`), then deletes this node's older files of the lineage.
fn write_snapshot(
    setup: &MirrorSetup,
    status: &Mutex<MirrorStatus>,
    dir: &Path,
    stem: &str,
    lineage: &str,
    snapshot: &Snapshot,
    is_current: &dyn Fn() -> bool,
) -> Result<(), MirrorError> {
    let tmp = dir.join(format!(".{stem}.snap.tmp"));
    let path = dir.join(format!("{stem}.snap"));
    let io = |what: &str| MirrorError::io(format!("{what} {}", tmp.display()));
    let file = File::create(&tmp).map_err(io("creating"))?;
    let mut out = BufWriter::new(file);
    let input = BackupInput {
        seed: &setup.seed,
        config: &setup.config,
        node_id: &setup.node_id,
        lineage_id: lineage,
        snapshot,
        created_at: unix_now(),
    };
    let mut progress = |percent: u8| {
        if !is_current() {
            return;
        }
        let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
        if let MirrorStatus::Syncing { percent: p, .. } = &mut *status {
            *p = percent.min(99);
        }
    };
    crate::backup::write_backup(&input, &mut out, &setup.workers, &mut progress)?;
    let file = out
        .into_inner()
        .map_err(|e| MirrorError::Io { what: "writing the snapshot".into(), source: e.into_error() })?;
    file.sync_all().map_err(io("flushing"))?;
    if !is_current() {
        // Superseded: a newer snapshot may already have pruned this one's log.
        let _ = std::fs::remove_file(&tmp);
        return Ok(());
    }
    std::fs::rename(&tmp, &path).map_err(io("renaming"))?;
    crate::files::sync_dir(dir).map_err(MirrorError::io("syncing the mirror's directory"))?;
    prune(dir, &setup.node_id, lineage, snapshot.commit_counter);
    Ok(())
}

/// Deletes this node's mirror files of `lineage` older than `base`: snapshots first, so that
/// a cut in the middle never leaves a snapshot whose log is gone. Other lineages (the node's
/// state before a start on an empty store) are left to the owner. Best effort: a file left over
/// is read past.
fn prune(dir: &Path, node_id: &str, lineage: &str, base: u64) {
    // Snapshots first.
    let mut old: Vec<(bool, PathBuf)> = lineage_files(dir, node_id, lineage)
        .into_iter()
        .filter(|(b, _, _)| *b < base)
        .map(|(_, snap, path)| (!snap, path))
        .collect();
    old.sort();
    for (_, path) in old {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::debug!("cannot remove the old mirror file {}: {e}", path.display());
        }
    }
}

/// Deletes this node's temporary snapshot files that a cut or a failure left behind.
fn remove_leftovers(dir: &Path, node_id: &str) {
    let prefix = format!(".mirror-{}-", node_id.chars().take(8).collect::<String>());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".snap.tmp")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_not_ours() {
        let node = "02aaaaaaaabbbbbbbbccccccccddddddddeeeeeeeeffffffff0000000011111111";
        let stem = file_stem(node, "0123456789abcdef0123456789abcdef", 42);
        let name = format!("{stem}.log");
        assert_eq!(parse_name(&name), Some(("02aaaaaa", "0123456789abcdef0123456789abcdef", 42, "log")));
        assert_eq!(parse_name("mirror-x.log"), None);
        assert_eq!(parse_name(&format!(".{stem}.snap.tmp")), None);
        assert!(!mirrored("", "", "network_graph") && mirrored("monitors", "", "abc"));
        for (primary, secondary, key) in
            [("", "", "network_graph"), ("", "", "scorer"), ("monitors", "", "scorer"), ("", "", "abc")]
        {
            let stored = keys::encode(primary, secondary, key);
            assert_eq!(
                key_mirrored(&stored),
                mirrored(primary, secondary, key),
                "{primary:?} {secondary:?} {key:?}"
            );
        }
    }
}

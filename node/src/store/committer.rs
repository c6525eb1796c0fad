//! The group committer: one thread that takes every queued operation, in call order, applies
//! as many as the limits allow in one redb write transaction, commits it (one fsync), and then
//! releases the callers of that batch. A commit that fails is retried on a reopened database
//! until it succeeds or the store closes; its callers are released only by a success.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::completion::{BatchDone, Completion};
use super::{COMMIT_COUNTER, CommitLimits, IDENTITY, KV, META, Opener, RETRY_MAX, StoreError, StoreHealth};
use crate::mirror::vss::{VssMirror, VssSetup, VssStatus};
use crate::mirror::writer::Mirror;
use crate::mirror::{MirrorSetup, MirrorStatus};

/// One queued operation.
#[derive(Debug)]
pub(crate) enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Sets an identity field (see [`super::StoreIdentity`]).
    Identity {
        key: &'static str,
        value: String,
    },
    /// Changes nothing; completes when everything queued before it is durable.
    Barrier,
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Put { key, value } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
            Op::Identity { value, .. } => value.len(),
            Op::Barrier => 0,
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    ops: VecDeque<Op>,
    /// Completion shared by the operations queued since the last batch was taken.
    done: Arc<BatchDone>,
    /// Completions of operations queued behind a full batch, and of groups: (number of ops,
    /// their bytes, completion). Kept so that a batch cut by the limits releases exactly its
    /// own callers, and a group is never split; consecutive segments that fit the limits
    /// together are committed together.
    segments: VecDeque<(usize, usize, Arc<BatchDone>)>,
    open_segment_ops: usize,
    open_segment_bytes: usize,
    shutting_down: bool,
    /// Size and duration of the last commit, for the adaptive linger.
    last_batch_ops: usize,
    last_commit: Duration,
}

/// State shared by the store handles and the committer thread.
struct Shared {
    /// `None` once the store is closed, or while it is being reopened after a failed commit.
    db: RwLock<Option<Database>>,
    closed: AtomicBool,
    /// Opens the database again after a failed commit.
    open: Opener,
    health: Mutex<StoreHealth>,
    limits: CommitLimits,
    queue: Mutex<Queue>,
    wake: Condvar,
    commits: AtomicU64,
    ops: AtomicU64,
    /// The commit counter of the last commit (the store's `meta` holds it too).
    counter: AtomicU64,
    /// The live mirror, if one is chosen; the committer takes it out for each batch.
    mirror: Mutex<Option<Mirror>>,
    /// Bumped by each `set_mirror`: the committer puts its mirror back only if unchanged.
    mirror_epoch: AtomicU64,
    /// The mirrors' generation (see `Mirror`), shared by every mirror this store has.
    mirror_generation: Arc<AtomicU64>,
    /// Where the mirror stands, readable without waiting on a commit.
    mirror_status: Arc<Mutex<MirrorStatus>>,
    /// The remote mirror (VSS), if one is set; taken out for each batch like `mirror`.
    vss: Mutex<Option<VssMirror>>,
    /// Bumped by each `set_vss`.
    vss_epoch: AtomicU64,
    /// Where the remote mirror set last stands (each has its own, so that a replaced one's
    /// thread never speaks for its successor); `None`: no remote mirror.
    vss_status: Mutex<Option<Arc<Mutex<VssStatus>>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// The store's handle on the committer. Dropping it (with the last `Store`) lets the thread
/// commit whatever is still queued and then joins it.
#[derive(Debug)]
pub(crate) struct Committer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A read lock on the open database.
pub(crate) struct DbGuard<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for DbGuard<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        // `Committer::db` hands out a guard only while the database is open.
        self.0.as_ref().unwrap_or_else(|| unreachable!("guard on a closed store"))
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the store is closed")
}

fn reopening() -> io::Error {
    io::Error::other("the store is not open: it is being reopened after a failed commit")
}

/// A redb error as an I/O error that keeps the OS error's kind (a full disk stays
/// `StorageFull`), so that the owner is told what happened.
fn io_of(e: impl Into<redb::Error>) -> io::Error {
    match e.into() {
        redb::Error::Io(e) => e,
        redb::Error::PreviousIo => io::Error::other("an earlier write of this store failed"),
        other => io::Error::other(other.to_string()),
    }
}

impl Committer {
    pub(crate) fn start(db: Database, open: Opener, limits: CommitLimits) -> Result<Arc<Self>, StoreError> {
        // The store made its tables before starting the committer.
        let counter = super::counter_of(&db.begin_read().map_err(StoreError::redb)?)?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            closed: AtomicBool::new(false),
            open,
            health: Mutex::new(StoreHealth::Healthy),
            limits,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            commits: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            counter: AtomicU64::new(counter),
            mirror: Mutex::new(None),
            mirror_epoch: AtomicU64::new(0),
            mirror_generation: Arc::new(AtomicU64::new(0)),
            mirror_status: Arc::new(Mutex::new(MirrorStatus::Off)),
            vss: Mutex::new(None),
            vss_epoch: AtomicU64::new(0),
            vss_status: Mutex::new(None),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("boltbox-commit".into())
            .spawn(move || while worker.run_one_batch() {})
            .map_err(StoreError::Thread)?;
        Ok(Arc::new(Committer { shared, thread: Mutex::new(Some(thread)) }))
    }

    /// The database, for readers; an error once the store is closed.
    pub(crate) fn db(&self) -> io::Result<DbGuard<'_>> {
        let guard = self.shared.db.read().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            return Err(if self.shared.closed.load(Ordering::SeqCst) { closed() } else { reopening() });
        }
        Ok(DbGuard(guard))
    }

    /// Commits everything queued, stops the thread and closes the database. Operations on
    /// any remaining handle fail from now on.
    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()).shutting_down = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
        // The remote mirror's thread stops after the exchange it is in: a reopened store's
        // mirror is the only one that writes.
        self.shared.vss.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.shared.db.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub(crate) fn health(&self) -> StoreHealth {
        self.shared.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.shared.commits.load(Ordering::Relaxed), self.shared.ops.load(Ordering::Relaxed))
    }

    pub(crate) fn submit(&self, op: Op) -> Completion {
        self.shared.submit(op)
    }

    /// Queues `ops` as one commit of their own (never split by the limits, never shared with
    /// other writers) and returns their completion.
    pub(crate) fn submit_group(&self, ops: Vec<Op>) -> Completion {
        self.shared.submit_group(ops)
    }

    /// Chooses (or, with `None`, stops) the live mirror; it takes effect at the next commit.
    pub(crate) fn set_mirror(&self, setup: Option<MirrorSetup>) {
        self.replace_mirror(setup, |status| *status = MirrorStatus::Off);
    }

    /// Stops writing the mirror, whose medium in `dir` is gone for `reason`, and says it is lost
    /// (keeping the time of a loss already under way).
    pub(crate) fn mirror_unreachable(&self, dir: &std::path::Path, reason: String) {
        self.replace_mirror(None, |status| crate::mirror::writer::lost(status, dir, reason));
    }

    /// Replaces the mirror with `setup`'s; without one, `say` sets the status.
    fn replace_mirror(&self, setup: Option<MirrorSetup>, say: impl FnOnce(&mut MirrorStatus)) {
        let mut mirror = self.shared.mirror.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.mirror_epoch.fetch_add(1, Ordering::SeqCst);
        *mirror = setup.map(|setup| {
            Mirror::new(
                setup,
                Arc::clone(&self.shared.mirror_status),
                Arc::clone(&self.shared.mirror_generation),
            )
        });
        if mirror.is_none() {
            // Threads of the mirror stopped here say nothing more.
            let mut status = self.shared.mirror_status.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.mirror_generation.fetch_add(1, Ordering::SeqCst);
            say(&mut status);
        }
    }

    pub(crate) fn mirror_status(&self) -> MirrorStatus {
        self.shared.mirror_status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets (or, with `None`, stops) the remote mirror; it takes effect at the next commit.
    pub(crate) fn set_vss(&self, setup: Option<VssSetup>) {
        let mut slot = self.shared.vss.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.vss_epoch.fetch_add(1, Ordering::SeqCst);
        let status = setup.as_ref().map(|_| Arc::new(Mutex::new(VssStatus::Off)));
        *slot = setup.zip(status.clone()).map(|(setup, status)| VssMirror::new(setup, status));
        *self.shared.vss_status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    pub(crate) fn vss_status(&self) -> VssStatus {
        match &*self.shared.vss_status.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(status) => status.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => VssStatus::Off,
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    /// Queues `op` behind everything queued before it and returns its completion.
    pub(crate) fn submit(&self, op: Op) -> Completion {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.shutting_down {
            let done = Arc::new(BatchDone::default());
            done.finish(Err(&closed()));
            return Completion(done);
        }
        let bytes = op.bytes();
        // Close the open segment when this op would make it exceed a batch's limits, so
        // that its callers are released by the commit that really holds their ops.
        if q.open_segment_ops > 0
            && (q.open_segment_ops >= self.limits.max_ops
                || q.open_segment_bytes + bytes > self.limits.max_bytes)
        {
            let full = std::mem::take(&mut q.done);
            let n = std::mem::take(&mut q.open_segment_ops);
            let bytes = std::mem::take(&mut q.open_segment_bytes);
            q.segments.push_back((n, bytes, full));
        }
        q.ops.push_back(op);
        q.open_segment_ops += 1;
        q.open_segment_bytes += bytes;
        let done = Completion(q.done.clone());
        drop(q);
        self.wake.notify_one();
        done
    }

    /// See [`Committer::submit_group`].
    fn submit_group(&self, ops: Vec<Op>) -> Completion {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.shutting_down {
            let done = Arc::new(BatchDone::default());
            done.finish(Err(&closed()));
            return Completion(done);
        }
        // Close the open segment first, so that the group is a segment of its own: the
        // committer takes a segment whole, so the group is one write transaction.
        if q.open_segment_ops > 0 {
            let open = std::mem::take(&mut q.done);
            let n = std::mem::take(&mut q.open_segment_ops);
            let bytes = std::mem::take(&mut q.open_segment_bytes);
            q.segments.push_back((n, bytes, open));
        }
        let done = Arc::new(BatchDone::default());
        let bytes = ops.iter().map(Op::bytes).sum();
        q.segments.push_back((ops.len(), bytes, done.clone()));
        q.ops.extend(ops);
        drop(q);
        self.wake.notify_one();
        Completion(done)
    }

    /// Takes the next batch and commits it. Returns false when the store is shutting down
    /// and nothing is left to do.
    fn run_one_batch(&self) -> bool {
        let (ops, done) = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            while q.ops.is_empty() {
                if q.shutting_down {
                    return false;
                }
                q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            // Writers released by the last commit come back one by one; committing the first
            // arrival alone would split them over two fsyncs. Wait for as many as the last batch
            // held, but never longer than an eighth of the last commit (cheap next to the fsync
            // it saves) nor than `max_wait`.
            let linger = self.limits.max_wait.min(q.last_commit / 8);
            if !linger.is_zero() && q.segments.is_empty() && q.ops.len() < q.last_batch_ops {
                let until = Instant::now() + linger;
                while q.segments.is_empty() && !q.shutting_down && q.ops.len() < q.last_batch_ops {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    q = self.wake.wait_timeout(q, until - now).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
            // Whole segments, as many as fit the limits together (at least one), then the open
            // segment if it fits too.
            let (max_ops, max_bytes) = (self.limits.max_ops, self.limits.max_bytes);
            let (mut n, mut bytes, mut done) = (0usize, 0usize, Vec::new());
            while let Some(&(ops, size, _)) = q.segments.front() {
                if !done.is_empty() && (n + ops > max_ops || bytes + size > max_bytes) {
                    break;
                }
                if let Some((_, _, segment)) = q.segments.pop_front() {
                    (n, bytes) = (n + ops, bytes + size);
                    done.push(segment);
                }
            }
            let open_fits = n + q.open_segment_ops <= max_ops && bytes + q.open_segment_bytes <= max_bytes;
            if done.is_empty() || (q.segments.is_empty() && q.open_segment_ops > 0 && open_fits) {
                n += std::mem::take(&mut q.open_segment_ops);
                q.open_segment_bytes = 0;
                done.push(std::mem::take(&mut q.done));
            }
            (q.ops.drain(..n).collect::<Vec<_>>(), done)
        };
        let started = Instant::now();
        // The mirror's copy is written while the card's commit runs; both are durable before
        // the writers are released (or the mirror is called lost and the card's alone counts).
        // Taken out for the batch, so that choosing another mirror never waits on a commit
        // (which a full disk can stall for long).
        let (mut mirror, epoch) = {
            let mut slot = self.mirror.lock().unwrap_or_else(|p| p.into_inner());
            (slot.take(), self.mirror_epoch.load(Ordering::SeqCst))
        };
        let (mut vss, vss_epoch) = {
            let mut slot = self.vss.lock().unwrap_or_else(|p| p.into_inner());
            (slot.take(), self.vss_epoch.load(Ordering::SeqCst))
        };
        let before = self.counter.load(Ordering::SeqCst);
        let begin_read = || {
            let db = self.db.read().unwrap_or_else(|p| p.into_inner());
            let db = db.as_ref().ok_or_else(|| "the store is not open".to_string())?;
            db.begin_read().map_err(|e| e.to_string())
        };
        let pending = mirror.as_mut().and_then(|m| m.before_commit(before, &ops, begin_read));
        let vss_pending = vss.as_mut().and_then(|m| m.before_commit(before, &ops, begin_read));
        if !self.commit_until_stored(&ops) {
            // Closed while commits were failing: these writers were never told their writes are
            // durable, and never will be; the process is going away.
            return false;
        }
        if let Some(mut m) = mirror {
            // Under the slot's lock (at most MIRROR_WAIT), so that a mirror chosen meanwhile
            // (or none) is not then given this one's state; that one is simply dropped.
            let mut slot = self.mirror.lock().unwrap_or_else(|p| p.into_inner());
            if self.mirror_epoch.load(Ordering::SeqCst) == epoch {
                m.after_commit(pending, before.saturating_add(1), self.counter.load(Ordering::SeqCst));
                *slot = Some(m);
            }
        }
        // (Both copies' flushes overlapped the card's commit; the writers wait for both.
        // Pipelining commits over VSS's round trip was measured and gained nothing: LDK waits
        // for each monitor write before it handles its peer's next message; docs/BENCHMARKS.md.)
        let mut refused = None;
        if let Some(mut m) = vss {
            let mut slot = self.vss.lock().unwrap_or_else(|p| p.into_inner());
            if self.vss_epoch.load(Ordering::SeqCst) == vss_epoch {
                refused = m.after_commit(
                    vss_pending,
                    before.saturating_add(1),
                    self.counter.load(Ordering::SeqCst),
                );
                *slot = Some(m);
            }
        }
        if let Some(refusal) = refused {
            self.hold(&done, &refusal);
            return false;
        }
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.last_batch_ops = ops.len();
            q.last_commit = started.elapsed();
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
        for segment in &done {
            segment.finish(Ok(()));
        }
        true
    }

    /// The remote mirror refused this device: another one runs the node. Fails closed: the
    /// batch's writers (and every one after them) are never told "done"; they wait until the
    /// store is closed and then get the refusal as an error. The committer commits nothing more.
    fn hold(&self, done: &[Arc<BatchDone>], refusal: &io::Error) {
        tracing::error!("{refusal}: no write is acknowledged any more; the node must stop");
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while !q.shutting_down {
            q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        for segment in done {
            segment.finish(Err(refusal));
        }
        for (_, _, segment) in q.segments.drain(..) {
            segment.finish(Err(refusal));
        }
        std::mem::take(&mut q.done).finish(Err(refusal));
        q.ops.clear();
    }

    /// Commits `ops`, reopening the database and retrying with a growing pause while commits
    /// fail. Returns false if the store was closed before they could be stored.
    fn commit_until_stored(&self, ops: &[Op]) -> bool {
        let mut pause = Duration::from_millis(100);
        let mut attempts: u64 = 0;
        loop {
            let open = self.db.read().unwrap_or_else(|p| p.into_inner()).is_some();
            let error = if open {
                match self.commit(ops) {
                    Ok(counter) => {
                        self.counter.store(counter, Ordering::SeqCst);
                        break;
                    }
                    Err(e) => e,
                }
            } else {
                // The last reopen failed: open first; its error is the one that tells.
                match self.reopen() {
                    Ok(()) => continue,
                    Err(e) => io::Error::from(e),
                }
            };
            attempts = attempts.saturating_add(1);
            self.set_failing(&error, attempts, ops.len());
            if open {
                // redb refuses every transaction on a handle that saw an I/O error: reopen,
                // which also proves the file is still a sound store (the open checks it).
                match self.reopen() {
                    // A transient error (one failed flush) gets one immediate retry.
                    Ok(()) if attempts == 1 => continue,
                    Ok(()) => {}
                    Err(e) => tracing::debug!("reopening the failing store: {e}"),
                }
            }
            let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let (q, _) = self
                .wake
                .wait_timeout_while(q, pause, |q| !q.shutting_down)
                .unwrap_or_else(|p| p.into_inner());
            if q.shutting_down {
                tracing::error!(
                    "the store closes with {} operations it could not store (they were never acknowledged)",
                    ops.len()
                );
                return false;
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if let StoreHealth::Failing { since, attempts, .. } = &*health {
            tracing::warn!(
                "the store can write again: {} operations stored after {attempts} attempts over {} s",
                ops.len(),
                crate::unix_now().saturating_sub(*since)
            );
        }
        *health = StoreHealth::Healthy;
        true
    }

    fn set_failing(&self, error: &io::Error, attempts: u64, ops: usize) {
        let reason = error.to_string();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let since = match &*health {
            StoreHealth::Failing { reason: last, since, .. } => {
                if *last != reason {
                    tracing::error!("the store still cannot write {ops} operations: {reason}");
                }
                *since
            }
            StoreHealth::Healthy => {
                tracing::error!(
                    "the store cannot write {ops} operations: {reason}; they wait, unacknowledged, while it retries"
                );
                crate::unix_now()
            }
        };
        *health = StoreHealth::Failing { reason, since, attempts };
    }

    /// Closes the database and opens it again; until that succeeds readers get an error.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Redb("the store is closed".into()));
        }
        // The old handle must be gone before the file is opened again (it holds the lock).
        *db = None;
        *db = Some((self.open)()?);
        Ok(())
    }

    /// Applies `ops` in one write transaction and commits it; returns the new commit counter.
    fn commit(&self, ops: &[Op]) -> io::Result<u64> {
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        let db = match db.as_ref() {
            Some(db) => db,
            None if self.closed.load(Ordering::SeqCst) => return Err(closed()),
            None => return Err(reopening()),
        };
        let txn = db.begin_write().map_err(io_of)?;
        let counter = {
            let mut kv = txn.open_table(KV).map_err(io_of)?;
            for op in ops {
                match op {
                    Op::Put { key, value } => {
                        kv.insert(key.as_slice(), value.as_slice()).map_err(io_of)?;
                    }
                    Op::Delete { key } => {
                        kv.remove(key.as_slice()).map_err(io_of)?;
                    }
                    Op::Identity { .. } | Op::Barrier => {}
                }
            }
            let mut identity = txn.open_table(IDENTITY).map_err(io_of)?;
            for op in ops {
                if let Op::Identity { key, value } = op {
                    identity.insert(*key, value.as_str()).map_err(io_of)?;
                }
            }
            let meta = txn.open_table(META).map_err(io_of)?;
            let counter = meta.get(COMMIT_COUNTER).map_err(io_of)?.map(|v| v.value()).unwrap_or(0);
            counter.saturating_add(1)
        };
        let mut meta = txn.open_table(META).map_err(io_of)?;
        meta.insert(COMMIT_COUNTER, counter).map_err(io_of)?;
        drop(meta);
        // Durability::Immediate is redb's default: commit returns after the fsync.
        txn.commit().map_err(io_of)?;
        Ok(counter)
    }
}

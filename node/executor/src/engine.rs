//! The engine: executes a batch of transactions, each declaring the keys it reads and writes,
//! with the result of running them one after another in batch order.
//!
//! [`Sequential`] is that definition (the oracle and the baseline). [`Parallel`] reaches the same
//! final state and the same per-transaction outcomes on several threads. A batch runs in chunks:
//!
//! 1. **Automatic choice** ([`Scheduling::Auto`]), made once per batch on its first chunk. If the
//!    first transactions mostly conflict with their immediate predecessors (e.g. every transfer
//!    between the same two accounts), the batch is a chain and runs inline on the caller's
//!    thread, exactly like [`Sequential`]. Otherwise the first 64 transactions run inline and are
//!    timed: if one costs less than 500 ns, the parallel bookkeeping would cost more than it
//!    saves, and the batch runs inline too. Either way the result is the same; only the speed
//!    differs. Otherwise every chunk runs in the following phases.
//! 2. **Dependencies** (parallel, by key group: the state's 64 hash shards are split into one
//!    group per thread, and whichever thread is free claims the next group). For each access to
//!    a key of its group, a thread records which earlier write produces the version the access
//!    will see (or copies the value from before the chunk). Only read-after-write is a
//!    dependency: every write creates a new version, so writers never wait for earlier readers
//!    or writers.
//! 3. **Execution** (parallel, blocks of 32 transactions claimed in batch order). A read waits
//!    (spins briefly, then sleeps) until the version it depends on is published; a transaction
//!    that fails (or writes nothing to a key it declared) publishes "unchanged", and readers
//!    follow it to the version before. Claiming in batch order guarantees progress: the earliest
//!    unfinished transaction never waits. If the dependency pass finds many dependencies between
//!    blocks that would run at the same time, one thread runs the chunk instead (in order, so
//!    never waiting).
//! 4. **Write-back** (parallel, by key group, once every transaction has run): the last version
//!    of every written key goes into the state.
//!
//! Memory is bounded per chunk: a chunk holds at most `chunk_rows` declared keys (default 65536;
//! a single larger transaction is a chunk of its own), and everything the engine allocates for it
//! is proportional to that (version cells and key maps are reused by the next chunk of the same
//! batch); a longer batch is cut into chunks that run one after another.
//!
//! A transaction that panics makes `execute` panic once the chunk's threads have stopped; the
//! state is then unspecified, as after a panic in a sequential loop. `Hash`, `Eq` and `Clone` of
//! keys and values must not panic: outside a transaction a panic can leave other engine threads
//! waiting for it.

use std::any::Any;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::Instant;

use thiserror::Error;

use crate::fxhash::{FxBuildHasher, hash_of};
use crate::runtime::RuntimePlan;

/// Shards of [`State`]; a power of two, and at least the thread count of any board we target so
/// that every engine thread owns some shards.
const SHARDS: usize = 64;
/// Transactions claimed at once in the execution phase: enough to amortise the shared counter,
/// few enough that dependent neighbours rarely land in concurrently running blocks.
const BLOCK_TXS: usize = 32;
/// Transactions inspected by the contention check before a chunk.
const SAMPLE_TXS: usize = 256;
/// Transactions timed on the caller's thread to estimate what one costs.
const PROBE_TXS: usize = 64;
/// Below this cost per transaction the parallel phases (about 150-200 ns of bookkeeping per
/// transaction and thread, measured on x86_64) cost more than they save.
const PARALLEL_MIN_TX_NANOS: u128 = 500;
/// Default bound of declared keys per chunk: 16,384 two-account transfers (2 reads, 2 writes
/// each), a few MiB of engine memory. Measured: fewer, larger chunks amortise the per-chunk
/// synchronisation (2 µs transfers on 2 threads: 1.71x at 1 << 14, 1.78x here, no better at
/// 1 << 17).
pub const DEFAULT_CHUNK_ROWS: usize = 1 << 16;
/// Upper bound of `chunk_rows`: row numbers are stored in 32 bits.
pub const MAX_CHUNK_ROWS: usize = 1 << 28;

fn shard_of(hash: u64) -> usize {
    // Bits 40.. are used neither by hashbrown's bucket index (low bits) nor its tag (top 7).
    (hash >> 40) as usize & (SHARDS - 1)
}

/// The key-value state transactions run against.
#[derive(Clone)]
pub struct State<K, V> {
    // Sharded so that the parallel engine can hand disjoint shards to its threads.
    shards: Vec<HashMap<K, V, FxBuildHasher>>,
}

impl<K: Hash + Eq, V> State<K, V> {
    /// An empty state.
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| HashMap::default()).collect() }
    }

    fn shard(&self, key: &K) -> &HashMap<K, V, FxBuildHasher> {
        &self.shards[shard_of(hash_of(key))]
    }

    fn shard_mut(&mut self, key: &K) -> &mut HashMap<K, V, FxBuildHasher> {
        &mut self.shards[shard_of(hash_of(key))]
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.shard(key).get(key)
    }

    /// Sets `key`, returning its previous value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.shard_mut(&key).insert(key, value)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.shard_mut(key).remove(key)
    }

    /// Number of keys present.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }
}

impl<K: Hash + Eq, V> Default for State<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for State<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut state = Self::new();
        for (key, value) in entries {
            state.insert(key, value);
        }
        state
    }
}

impl<K: Hash + Eq, V: PartialEq> PartialEq for State<K, V> {
    fn eq(&self, other: &Self) -> bool {
        // A key's shard depends only on the key, so equal states have equal shards.
        self.shards == other.shards
    }
}

impl<K: Hash + Eq, V: Eq> Eq for State<K, V> {}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for State<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shards.iter().flat_map(|shard| shard.iter())).finish()
    }
}

/// A transaction: declares its keys up front, then runs against a [`TxContext`] that allows
/// exactly those keys.
pub trait Transaction: Sync {
    /// State key.
    type Key: Hash + Eq + Clone + Send + Sync;
    /// State value.
    type Value: Clone + Send + Sync;
    /// What a successful transaction returns.
    type Output: Send;
    /// Why a transaction fails; a failed transaction has no effect.
    type Error: Send;

    /// Keys the transaction may read.
    fn reads(&self) -> &[Self::Key];
    /// Keys the transaction may write or delete (and read).
    fn writes(&self) -> &[Self::Key];
    /// Runs the transaction. Writes take effect only if it returns `Ok` and touched no key it
    /// did not declare.
    fn execute(&self, ctx: &mut TxContext<'_, Self::Key, Self::Value>) -> Result<Self::Output, Self::Error>;
}

/// How a key was touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `get`
    Read,
    /// `put` or `delete`
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// Returned to a transaction that touches a key it did not declare for that access. Whatever the
/// transaction then returns, its outcome is [`TxError::Undeclared`] and it has no effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("undeclared {0} of a key")]
pub struct UndeclaredKey(pub Access);

/// Why a transaction has no effect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxError<K, E> {
    /// The transaction returned an error.
    #[error("transaction failed: {0}")]
    Failed(E),
    /// The transaction touched a key it had not declared (the first such access).
    #[error("undeclared {access} of key {key:?}")]
    Undeclared {
        /// The key.
        key: K,
        /// How it was touched.
        access: Access,
    },
}

/// The outcome of one transaction.
pub type Outcome<T> =
    Result<<T as Transaction>::Output, TxError<<T as Transaction>::Key, <T as Transaction>::Error>>;

/// What a transaction sees: its declared keys, with its own writes applied.
#[derive(Debug)]
pub struct TxContext<'c, K, V> {
    reads: &'c [K],
    writes: &'c [K],
    view: View<'c, K, V>,
    buffer: &'c mut Vec<(K, Option<V>)>,
    violation: OnceCell<(K, Access)>,
}

/// Where values written before this transaction come from.
#[derive(Debug)]
enum View<'c, K, V> {
    State(&'c State<K, V>),
    Versions(Versions<'c, K, V>),
}

impl<'c, K: Hash + Eq + Clone, V> TxContext<'c, K, V> {
    fn new(
        reads: &'c [K],
        writes: &'c [K],
        view: View<'c, K, V>,
        buffer: &'c mut Vec<(K, Option<V>)>,
    ) -> Self {
        buffer.clear();
        Self { reads, writes, view, buffer, violation: OnceCell::new() }
    }

    fn undeclared(&self, key: &K, access: Access) -> UndeclaredKey {
        // Only the first violation is reported; later ones change nothing.
        let _ = self.violation.set((key.clone(), access));
        UndeclaredKey(access)
    }

    /// The value of `key` as sequential execution would see it here; `key` must be declared as
    /// read or written.
    pub fn get(&self, key: &K) -> Result<Option<&V>, UndeclaredKey> {
        if !self.reads.contains(key) && !self.writes.contains(key) {
            return Err(self.undeclared(key, Access::Read));
        }
        if let Some((_, own)) = self.buffer.iter().find(|(k, _)| k == key) {
            return Ok(own.as_ref());
        }
        Ok(match &self.view {
            View::State(state) => state.get(key),
            View::Versions(versions) => versions.get(key),
        })
    }

    /// Sets `key`, which must be declared as written.
    pub fn put(&mut self, key: K, value: V) -> Result<(), UndeclaredKey> {
        self.stage(key, Some(value))
    }

    /// Removes `key`, which must be declared as written.
    pub fn delete(&mut self, key: &K) -> Result<(), UndeclaredKey> {
        self.stage(key.clone(), None)
    }

    fn stage(&mut self, key: K, value: Option<V>) -> Result<(), UndeclaredKey> {
        if !self.writes.contains(&key) {
            return Err(self.undeclared(&key, Access::Write));
        }
        match self.buffer.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.buffer.push((key, value)),
        }
        Ok(())
    }

    fn into_violation(self) -> Option<(K, Access)> {
        self.violation.into_inner()
    }
}

fn outcome<T: Transaction>(
    result: Result<T::Output, T::Error>,
    violation: Option<(T::Key, Access)>,
) -> Outcome<T> {
    match violation {
        Some((key, access)) => Err(TxError::Undeclared { key, access }),
        None => result.map_err(TxError::Failed),
    }
}

/// Runs batches of transactions against a state.
pub trait Executor {
    /// Executes `batch` in order against `state`, returning one outcome per transaction.
    fn execute<T: Transaction>(&self, state: &mut State<T::Key, T::Value>, batch: &[T]) -> Vec<Outcome<T>>;
}

/// One transaction after another on the caller's thread: the definition of a batch's result.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;

impl Executor for Sequential {
    fn execute<T: Transaction>(&self, state: &mut State<T::Key, T::Value>, batch: &[T]) -> Vec<Outcome<T>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        run_sequential(state, batch, &mut outcomes);
        outcomes
    }
}

fn run_sequential<T: Transaction>(
    state: &mut State<T::Key, T::Value>,
    txs: &[T],
    outcomes: &mut Vec<Outcome<T>>,
) {
    let mut buffer = Vec::new();
    for tx in txs {
        let mut ctx = TxContext::new(tx.reads(), tx.writes(), View::State(state), &mut buffer);
        let result = tx.execute(&mut ctx);
        let outcome = outcome::<T>(result, ctx.into_violation());
        if outcome.is_ok() {
            for (key, value) in buffer.drain(..) {
                match value {
                    Some(value) => state.insert(key, value),
                    None => state.remove(&key),
                };
            }
        }
        outcomes.push(outcome);
    }
}

/// Errors in configuring the parallel engine.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    /// The engine needs at least one thread.
    #[error("the engine needs at least one thread")]
    ZeroThreads,
    /// `chunk_rows` is outside 1..=[`MAX_CHUNK_ROWS`].
    #[error("chunk_rows must be in 1..={MAX_CHUNK_ROWS} (got {0})")]
    ChunkRows(usize),
}

/// How [`Parallel`] runs a chunk; the result is the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduling {
    /// Inline on the caller's thread when the chunk is a chain or its transactions are too
    /// cheap to gain from threads; otherwise the parallel phases (the default).
    #[default]
    Auto,
    /// Always the parallel phases, even on one thread (for tests and measurements).
    Phased,
}

/// The parallel engine. See the module documentation for how it schedules.
#[derive(Debug, Clone)]
pub struct Parallel {
    threads: usize,
    chunk_rows: usize,
    scheduling: Scheduling,
}

impl Parallel {
    /// An engine on `threads` threads (the caller's thread is one of them).
    pub fn new(threads: usize) -> Result<Self, EngineError> {
        if threads == 0 {
            return Err(EngineError::ZeroThreads);
        }
        Ok(Self { threads, chunk_rows: DEFAULT_CHUNK_ROWS, scheduling: Scheduling::Auto })
    }

    /// An engine on the plan's engine threads.
    pub fn from_plan(plan: &RuntimePlan) -> Self {
        Self {
            threads: plan.engine_threads().max(1),
            chunk_rows: DEFAULT_CHUNK_ROWS,
            scheduling: Scheduling::Auto,
        }
    }

    /// Bounds the declared keys per chunk (and so the engine's memory per chunk).
    pub fn with_chunk_rows(mut self, chunk_rows: usize) -> Result<Self, EngineError> {
        if !(1..=MAX_CHUNK_ROWS).contains(&chunk_rows) {
            return Err(EngineError::ChunkRows(chunk_rows));
        }
        self.chunk_rows = chunk_rows;
        Ok(self)
    }

    /// Sets how chunks are run.
    pub fn with_scheduling(mut self, scheduling: Scheduling) -> Self {
        self.scheduling = scheduling;
        self
    }

    /// Threads the engine runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs the first chunk of a batch inline or in parallel phases and says which: inline when it
    /// is a chain or its transactions are too cheap for the parallel phases to pay off. The probe
    /// transactions are executed for real, not wasted.
    fn run_first_chunk<'b, T: Transaction>(
        &self,
        state: &mut State<T::Key, T::Value>,
        chunk: &'b [T],
        scratch: &mut Scratch<'b, T::Key, T::Value>,
        outcomes: &mut Vec<Outcome<T>>,
    ) -> Choice {
        if self.threads == 1 || looks_contended(chunk, self.threads) {
            run_sequential(state, chunk, outcomes);
            return Choice::Inline;
        }
        let (probe, rest) = chunk.split_at(chunk.len().min(PROBE_TXS));
        let started = Instant::now();
        run_sequential(state, probe, outcomes);
        let nanos_per_tx = started.elapsed().as_nanos() / probe.len().max(1) as u128;
        if nanos_per_tx < PARALLEL_MIN_TX_NANOS {
            run_sequential(state, rest, outcomes);
            Choice::Inline
        } else {
            run_phases(state, rest, self.threads, self.scheduling, scratch, outcomes);
            Choice::Phased
        }
    }
}

/// How [`Scheduling::Auto`] runs the chunks of a batch, decided on its first chunk.
#[derive(Debug, Clone, Copy)]
enum Choice {
    Inline,
    Phased,
}

impl Executor for Parallel {
    fn execute<T: Transaction>(&self, state: &mut State<T::Key, T::Value>, batch: &[T]) -> Vec<Outcome<T>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut scratch = Scratch::default();
        let mut choice = match self.scheduling {
            Scheduling::Auto => None,
            Scheduling::Phased => Some(Choice::Phased),
        };
        let mut start = 0;
        while start < batch.len() {
            let mut end = start;
            let mut rows = 0;
            while end < batch.len() {
                let cost = batch[end].reads().len() + batch[end].writes().len();
                if end > start && rows + cost > self.chunk_rows {
                    break;
                }
                rows += cost;
                end += 1;
            }
            let chunk = &batch[start..end];
            match choice {
                None => choice = Some(self.run_first_chunk(state, chunk, &mut scratch, &mut outcomes)),
                Some(Choice::Inline) => run_sequential(state, chunk, &mut outcomes),
                Some(Choice::Phased) => {
                    run_phases(state, chunk, self.threads, self.scheduling, &mut scratch, &mut outcomes)
                }
            }
            start = end;
        }
        outcomes
    }
}

/// Whether most sampled transactions conflict with one of the `threads` before them, in which
/// case parallel execution would mostly wait (a chain).
fn looks_contended<T: Transaction>(chunk: &[T], threads: usize) -> bool {
    let sample = &chunk[..chunk.len().min(SAMPLE_TXS)];
    let conflicted = (1..sample.len())
        .filter(|&i| {
            sample[i.saturating_sub(threads)..i].iter().any(|earlier| conflicts(earlier, &sample[i]))
        })
        .count();
    conflicted * 2 > sample.len()
}

fn conflicts<T: Transaction>(earlier: &T, later: &T) -> bool {
    let written_before = |key: &T::Key| earlier.writes().contains(key);
    later.reads().iter().chain(later.writes()).any(written_before)
        || later.writes().iter().any(|key| earlier.reads().contains(key))
}

/// The distinct keys of a transaction, each with whether it is written: the engine's "rows".
/// Every phase derives them the same way, so row numbers agree between threads.
fn rows_of<'t, T: Transaction>(tx: &'t T, rows: &mut Vec<(&'t T::Key, bool)>) {
    rows.clear();
    for key in tx.reads() {
        if !rows.iter().any(|(k, _)| *k == key) {
            rows.push((key, tx.writes().contains(key)));
        }
    }
    for key in tx.writes() {
        if !rows.iter().any(|(k, _)| *k == key) {
            rows.push((key, true));
        }
    }
}

/// Where the version an access sees comes from.
#[derive(Debug, Clone, Copy)]
enum Pred {
    /// The value before the chunk, copied by the dependency pass of key group `.0` into its
    /// `bases[.1]`.
    Base(u32, u32),
    /// The version published by the write in this row.
    Row(u32),
}

/// What a write row publishes.
#[derive(Debug)]
enum Version<V> {
    Value(V),
    Absent,
    /// The transaction failed or did not write this key: the version before it applies.
    Unchanged(Pred),
}

/// The dependency pass's results for the keys of one key group.
#[derive(Debug)]
struct Dependencies<V> {
    /// The predecessor of each row whose key is in this group, in row order.
    preds: Vec<Pred>,
    bases: Vec<Option<V>>,
    /// Index into `preds` at the start of each block.
    block_starts: Vec<u32>,
    /// Global row number at the start of each block.
    row_starts: Vec<u32>,
    /// Reads of versions written in another block that may run at the same time.
    stalling: usize,
}

/// The last write of a key seen by the dependency pass (kept small: one per key per chunk).
#[derive(Debug)]
struct LastWrite {
    pred: Pred,
    tx: Option<u32>,
    /// Index of the key's shard within its group.
    local: u32,
}

/// Where a shard belongs: its key group (shard mod groups) and its index in the group. Looked up
/// in a table because a division per declared key is measurably slow.
#[derive(Debug, Clone, Copy)]
struct Place {
    group: usize,
    local: usize,
}

fn places(groups: usize) -> [Place; SHARDS] {
    std::array::from_fn(|shard| Place { group: shard % groups, local: shard / groups })
}

/// One declared key of the transaction being executed.
#[derive(Debug)]
struct RowRef<'t, K> {
    key: &'t K,
    write: bool,
    pred: Pred,
    row: u32,
}

/// The versions a transaction reads in the parallel engine.
#[derive(Debug)]
struct Versions<'c, K, V> {
    rows: &'c [RowRef<'c, K>],
    cells: &'c [OnceLock<Version<V>>],
    deps: &'c [&'c Dependencies<V>],
    wakeup: &'c Wakeup,
    me: usize,
}

impl<'c, K: Eq, V> Versions<'c, K, V> {
    fn get(&self, key: &K) -> Option<&'c V> {
        let row = self.rows.iter().find(|row| row.key == key)?;
        match resolve(self.cells, self.wakeup, self.me, row.pred) {
            Resolved::Base(owner, index) => self.deps[owner as usize].bases[index as usize].as_ref(),
            Resolved::Value(value) => Some(value),
            Resolved::Absent => None,
        }
    }
}

/// The effective version behind a predecessor.
enum Resolved<'c, V> {
    /// The value before the chunk, in `bases[.1]` of key group `.0`.
    Base(u32, u32),
    Value(&'c V),
    Absent,
}

/// Follows "unchanged" versions back to the effective one, waiting for each to be published.
fn resolve<'c, V>(
    cells: &'c [OnceLock<Version<V>>],
    wakeup: &Wakeup,
    me: usize,
    mut pred: Pred,
) -> Resolved<'c, V> {
    loop {
        match pred {
            Pred::Base(owner, index) => return Resolved::Base(owner, index),
            Pred::Row(row) => match wakeup.wait(me, Event::Row(row), || cells[row as usize].get()) {
                Version::Unchanged(earlier) => pred = *earlier,
                Version::Value(value) => return Resolved::Value(value),
                Version::Absent => return Resolved::Absent,
            },
        }
    }
}

/// Spins before a waiting thread goes to sleep: most waits end within a transaction or two.
const SPINS: u32 = 256;

/// What a sleeping engine thread waits for: a version row's publication, a key group's
/// dependency pass, or the end of execution. Encoded in one `u64` so that a publisher can check cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Row(u32),
    Dependencies(usize),
    AllExecuted,
}

impl Event {
    fn encode(self) -> u64 {
        match self {
            Event::Row(row) => u64::from(row),
            Event::Dependencies(group) => (1 << 32) + group as u64,
            Event::AllExecuted => 1 << 40,
        }
    }
}

/// Marks a thread that is not sleeping.
const AWAKE: u64 = u64::MAX;

/// Lets engine threads sleep while they wait, instead of taking CPU time from the thread they
/// wait for (and from the node and the display loop). Each sleeper says what it waits for, so a
/// publisher wakes sleepers only for their own event.
#[derive(Debug)]
struct Wakeup {
    sleeping_on: Vec<AtomicU64>,
    lock: Mutex<()>,
    published: Condvar,
}

impl Wakeup {
    fn new(threads: usize) -> Self {
        Self {
            sleeping_on: (0..threads).map(|_| AtomicU64::new(AWAKE)).collect(),
            lock: Mutex::new(()),
            published: Condvar::new(),
        }
    }

    /// Call after publishing: wakes the sleepers waiting for one of `events`.
    fn notify(&self, events: impl Iterator<Item = Event> + Clone) {
        // Pairs with the fence in `wait`: either the sleeper sees the publication or this sees
        // the sleeper.
        fence(Ordering::SeqCst);
        let waited_for = |sleeper: &AtomicU64| {
            let event = sleeper.load(Ordering::Relaxed);
            event != AWAKE && events.clone().any(|published| published.encode() == event)
        };
        if self.sleeping_on.iter().any(waited_for) {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.published.notify_all();
        }
    }

    /// Waits on thread `me` until `ready` returns a value, which another thread publishes together
    /// with `event`. Every wait is for an earlier transaction, a dependency pass (which never
    /// waits) or the end of execution, and the earliest unfinished transaction never waits, so
    /// this ends.
    fn wait<'c, R>(&self, me: usize, event: Event, ready: impl Fn() -> Option<&'c R>) -> &'c R {
        for _ in 0..SPINS {
            if let Some(value) = ready() {
                return value;
            }
            std::hint::spin_loop();
        }
        self.sleeping_on[me].store(event.encode(), Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let value = loop {
            if let Some(value) = ready() {
                break value;
            }
            guard = self.published.wait(guard).unwrap_or_else(PoisonError::into_inner);
        };
        drop(guard);
        self.sleeping_on[me].store(AWAKE, Ordering::Relaxed);
        value
    }
}

type Shard<K, V> = HashMap<K, V, FxBuildHasher>;

/// The shards of one key group (shard index ≡ group mod groups) and what the dependency pass
/// learned about their keys. Whichever thread is free claims a group for the dependency pass
/// and again for the write-back, so a descheduled thread holds up only work it already started.
struct Group<'s, 'b, K, V> {
    shards: Vec<&'s mut Shard<K, V>>,
    last: HashMap<&'b K, LastWrite, FxBuildHasher>,
}

/// Allocations reused from chunk to chunk of one batch: growing fresh maps and touching fresh
/// pages for every chunk cost more than the bookkeeping itself.
struct Scratch<'b, K, V> {
    lasts: Vec<HashMap<&'b K, LastWrite, FxBuildHasher>>,
    cells: Vec<OnceLock<Version<V>>>,
}

impl<K, V> Default for Scratch<'_, K, V> {
    fn default() -> Self {
        Self { lasts: Vec::new(), cells: Vec::new() }
    }
}

/// Everything the threads of one chunk share.
struct Chunk<'s, 'b, T: Transaction> {
    txs: &'b [T],
    threads: usize,
    scheduling: Scheduling,
    groups: Vec<Mutex<Group<'s, 'b, T::Key, T::Value>>>,
    places: [Place; SHARDS],
    next_group: AtomicUsize,
    next_write_back: AtomicUsize,
    /// Per group, published once by the thread that ran its dependency pass.
    deps: Vec<OnceLock<Dependencies<T::Value>>>,
    cells: &'s [OnceLock<Version<T::Value>>],
    next_block: AtomicUsize,
    /// Transactions executed so far; write-back waits for all.
    executed: AtomicUsize,
    wakeup: Wakeup,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

fn run_phases<'b, T: Transaction>(
    state: &mut State<T::Key, T::Value>,
    txs: &'b [T],
    threads: usize,
    scheduling: Scheduling,
    scratch: &mut Scratch<'b, T::Key, T::Value>,
    outcomes: &mut Vec<Outcome<T>>,
) {
    if txs.is_empty() {
        return;
    }
    let rows: usize = txs.iter().map(|tx| tx.reads().len() + tx.writes().len()).sum();
    if scratch.cells.len() < rows {
        scratch.cells.resize_with(rows, OnceLock::new);
    }
    scratch.lasts.resize_with(threads, HashMap::default);
    let mut groups: Vec<Group<'_, 'b, T::Key, T::Value>> = scratch
        .lasts
        .iter_mut()
        .map(|last| Group { shards: Vec::new(), last: std::mem::take(last) })
        .collect();
    for (index, shard) in state.shards.iter_mut().enumerate() {
        groups[index % threads].shards.push(shard);
    }
    let chunk = Chunk {
        txs,
        threads,
        scheduling,
        groups: groups.into_iter().map(Mutex::new).collect(),
        places: places(threads),
        next_group: AtomicUsize::new(0),
        next_write_back: AtomicUsize::new(0),
        deps: (0..threads).map(|_| OnceLock::new()).collect(),
        cells: &scratch.cells[..rows],
        next_block: AtomicUsize::new(0),
        executed: AtomicUsize::new(0),
        wakeup: Wakeup::new(threads),
        panic: Mutex::new(None),
    };
    let per_thread = thread::scope(|scope| {
        let chunk = &chunk;
        let handles: Vec<_> = (1..threads).map(|me| scope.spawn(move || work(chunk, me))).collect();
        let mut per_thread = vec![work(chunk, 0)];
        for handle in handles {
            match handle.join() {
                Ok(done) => per_thread.push(done),
                Err(payload) => panic::resume_unwind(payload),
            }
        }
        per_thread
    });
    let Chunk { groups, panic, .. } = chunk;
    for (last, group) in scratch.lasts.iter_mut().zip(groups) {
        *last = group.into_inner().unwrap_or_else(PoisonError::into_inner).last;
    }
    for cell in &mut scratch.cells[..rows] {
        cell.take();
    }
    if let Some(payload) = panic.into_inner().unwrap_or_else(PoisonError::into_inner) {
        panic::resume_unwind(payload);
    }
    let mut slots: Vec<Option<Outcome<T>>> = (0..txs.len()).map(|_| None).collect();
    for (index, done) in per_thread.into_iter().flatten() {
        slots[index] = Some(done);
    }
    outcomes.extend(slots.into_iter().map(|slot| slot.expect("every transaction of the chunk was executed")));
}

/// One engine thread: claims dependency passes, blocks of transactions and write-backs until
/// none is left.
fn work<T: Transaction>(chunk: &Chunk<'_, '_, T>, me: usize) -> Vec<(usize, Outcome<T>)> {
    let groups = chunk.groups.len();
    loop {
        let group = chunk.next_group.fetch_add(1, Ordering::Relaxed);
        if group >= groups {
            break;
        }
        let mut claimed = chunk.groups[group].lock().unwrap_or_else(PoisonError::into_inner);
        let deps = dependency_pass(chunk, group, &mut claimed);
        // Publishing is the hand-over to the other threads; each slot is set once.
        let _ = chunk.deps[group].set(deps);
        chunk.wakeup.notify(std::iter::once(Event::Dependencies(group)));
    }
    let deps: Vec<&Dependencies<T::Value>> = (0..groups)
        .map(|group| chunk.wakeup.wait(me, Event::Dependencies(group), || chunk.deps[group].get()))
        .collect();

    let stalling: usize = deps.iter().map(|d| d.stalling).sum();
    let one_thread = chunk.scheduling == Scheduling::Auto && stalling * 4 > chunk.txs.len();
    let done = if me == 0 || !one_thread { execute_blocks(chunk, &deps, me) } else { Vec::new() };

    // Write-back starts when every transaction has run: one wait instead of one per key.
    let all = chunk.txs.len();
    chunk
        .wakeup
        .wait(me, Event::AllExecuted, || (chunk.executed.load(Ordering::Acquire) == all).then_some(&()));
    loop {
        let group = chunk.next_write_back.fetch_add(1, Ordering::Relaxed);
        if group >= groups {
            return done;
        }
        let mut claimed = chunk.groups[group].lock().unwrap_or_else(PoisonError::into_inner);
        let Group { shards, last } = &mut *claimed;
        for (key, last_write) in last.drain() {
            if last_write.tx.is_none() {
                continue;
            }
            let shard = &mut shards[last_write.local as usize];
            match resolve(chunk.cells, &chunk.wakeup, me, last_write.pred) {
                Resolved::Base(..) => {}
                Resolved::Value(value) => {
                    shard.insert(key.clone(), value.clone());
                }
                Resolved::Absent => {
                    shard.remove(key);
                }
            }
        }
    }
}

/// For every access to a key of `group`, finds the write whose version it will see (or copies
/// the value from before the chunk).
fn dependency_pass<'b, T: Transaction>(
    chunk: &Chunk<'_, 'b, T>,
    group: usize,
    claimed: &mut Group<'_, 'b, T::Key, T::Value>,
) -> Dependencies<T::Value> {
    let Group { shards, last } = claimed;
    let mut deps = Dependencies {
        preds: Vec::new(),
        bases: Vec::new(),
        block_starts: Vec::new(),
        row_starts: Vec::new(),
        stalling: 0,
    };
    let mut keys = Vec::new();
    let mut row = 0u32;
    for (index, tx) in chunk.txs.iter().enumerate() {
        if index % BLOCK_TXS == 0 {
            deps.block_starts.push(deps.preds.len() as u32);
            deps.row_starts.push(row);
        }
        rows_of(tx, &mut keys);
        for &(key, write) in &keys {
            let place = chunk.places[shard_of(hash_of(key))];
            if place.group == group {
                let bases = &mut deps.bases;
                let entry = last.entry(key).or_insert_with(|| {
                    bases.push(shards[place.local].get(key).cloned());
                    let pred = Pred::Base(group as u32, (bases.len() - 1) as u32);
                    LastWrite { pred, tx: None, local: place.local as u32 }
                });
                deps.preds.push(entry.pred);
                if let Some(writer) = entry.tx {
                    let (writer_block, block) = (writer as usize / BLOCK_TXS, index / BLOCK_TXS);
                    if writer_block != block && block - writer_block < chunk.threads {
                        deps.stalling += 1;
                    }
                }
                if write {
                    entry.pred = Pred::Row(row);
                    entry.tx = Some(index as u32);
                }
            }
            row += 1;
        }
    }
    deps
}

/// Claims blocks of transactions in batch order and executes them.
fn execute_blocks<T: Transaction>(
    chunk: &Chunk<'_, '_, T>,
    deps: &[&Dependencies<T::Value>],
    me: usize,
) -> Vec<(usize, Outcome<T>)> {
    let blocks = chunk.txs.len().div_ceil(BLOCK_TXS);
    let mut done = Vec::new();
    let mut cursors = vec![0usize; deps.len()];
    let mut keys = Vec::new();
    let mut rows: Vec<RowRef<'_, T::Key>> = Vec::new();
    let mut buffer = Vec::new();
    loop {
        let block = chunk.next_block.fetch_add(1, Ordering::Relaxed);
        if block >= blocks {
            return done;
        }
        for (cursor, dep) in cursors.iter_mut().zip(deps) {
            *cursor = dep.block_starts[block] as usize;
        }
        let mut row = deps[0].row_starts[block];
        let end = ((block + 1) * BLOCK_TXS).min(chunk.txs.len());
        for index in block * BLOCK_TXS..end {
            let tx = &chunk.txs[index];
            rows_of(tx, &mut keys);
            rows.clear();
            for &(key, write) in &keys {
                let owner = chunk.places[shard_of(hash_of(key))].group;
                let pred = deps[owner].preds[cursors[owner]];
                cursors[owner] += 1;
                rows.push(RowRef { key, write, pred, row });
                row += 1;
            }
            let versions = Versions { rows: &rows, cells: chunk.cells, deps, wakeup: &chunk.wakeup, me };
            let mut ctx = TxContext::new(tx.reads(), tx.writes(), View::Versions(versions), &mut buffer);
            let result = panic::catch_unwind(AssertUnwindSafe(|| tx.execute(&mut ctx)));
            let violation = ctx.into_violation();
            let outcome = match result {
                Ok(result) => Some(outcome::<T>(result, violation)),
                Err(payload) => {
                    // Publish "unchanged" so that no other thread waits forever; the panic is
                    // re-raised when the chunk ends.
                    let mut slot = chunk.panic.lock().unwrap_or_else(PoisonError::into_inner);
                    slot.get_or_insert(payload);
                    None
                }
            };
            let committed = matches!(outcome, Some(Ok(_)));
            for written in rows.iter().filter(|r| r.write) {
                let version = match buffer.iter().position(|(key, _)| key == written.key) {
                    Some(position) if committed => match buffer.swap_remove(position).1 {
                        Some(value) => Version::Value(value),
                        None => Version::Absent,
                    },
                    _ => Version::Unchanged(written.pred),
                };
                // Each row belongs to one transaction, so this is its only publication.
                let _ = chunk.cells[written.row as usize].set(version);
            }
            chunk.wakeup.notify(rows.iter().filter(|r| r.write).map(|r| Event::Row(r.row)));
            if let Some(outcome) = outcome {
                done.push((index, outcome));
            }
        }
        let executed = end - block * BLOCK_TXS;
        if chunk.executed.fetch_add(executed, Ordering::AcqRel) + executed == chunk.txs.len() {
            chunk.wakeup.notify(std::iter::once(Event::AllExecuted));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds `delta` to `key` (absent counts as 0); deletes it when the result is 0; panics on
    /// `delta == 13`.
    #[derive(Debug)]
    struct Add {
        key: [u32; 1],
        delta: i64,
    }

    impl Transaction for Add {
        type Key = u32;
        type Value = i64;
        type Output = i64;
        type Error = ();

        fn reads(&self) -> &[u32] {
            &[]
        }

        fn writes(&self) -> &[u32] {
            &self.key
        }

        fn execute(&self, ctx: &mut TxContext<'_, u32, i64>) -> Result<i64, ()> {
            assert_ne!(self.delta, 13, "unlucky transaction");
            let value = ctx.get(&self.key[0]).map_err(|_| ())?.copied().unwrap_or(0) + self.delta;
            if value == 0 {
                ctx.delete(&self.key[0]).map_err(|_| ())?;
            } else {
                ctx.put(self.key[0], value).map_err(|_| ())?;
            }
            Ok(value)
        }
    }

    fn forced(threads: usize) -> Parallel {
        Parallel::new(threads).expect("threads > 0").with_scheduling(Scheduling::Phased)
    }

    #[test]
    fn engine_threads_come_from_the_runtime_plan() {
        let facts = crate::runtime::BoardFacts { cores: 4, memory_bytes: 1 << 30 };
        let plan = RuntimePlan::derive(facts).expect("valid facts");
        assert_eq!(Parallel::from_plan(&plan).threads(), 4);
    }

    #[test]
    fn configuration_errors() {
        assert_eq!(Parallel::new(0).err(), Some(EngineError::ZeroThreads));
        let engine = Parallel::new(2).expect("two threads");
        assert_eq!(engine.clone().with_chunk_rows(0).err(), Some(EngineError::ChunkRows(0)));
        assert_eq!(
            engine.with_chunk_rows(MAX_CHUNK_ROWS + 1).err(),
            Some(EngineError::ChunkRows(MAX_CHUNK_ROWS + 1))
        );
    }

    #[test]
    fn deletes_and_reinserts_like_sequential() {
        let batch: Vec<Add> = [(1, 5), (1, -5), (2, 3), (1, 4), (2, -3), (2, -3)]
            .map(|(k, d)| Add { key: [k], delta: d })
            .into();
        let mut expected = State::new();
        let outcomes = Sequential.execute(&mut expected, &batch);
        assert_eq!(outcomes, [Ok(5), Ok(0), Ok(3), Ok(4), Ok(0), Ok(-3)]);
        assert_eq!(expected, [(1, 4), (2, -3)].into_iter().collect());
        for threads in [1, 2, 3] {
            let mut state = State::new();
            assert_eq!(forced(threads).execute(&mut state, &batch), outcomes);
            assert_eq!(state, expected);
        }
    }

    #[test]
    #[should_panic(expected = "unlucky transaction")]
    fn a_panicking_transaction_panics_the_batch_instead_of_hanging_it() {
        // Later transactions depend on the panicking one; they must not wait for it forever.
        let batch: Vec<Add> =
            (0..200).map(|i| Add { key: [i % 3], delta: if i == 50 { 13 } else { 1 } }).collect();
        forced(2).execute(&mut State::new(), &batch);
    }

    #[test]
    fn state_basics() {
        let mut state: State<u32, i64> = State::default();
        assert!(state.is_empty());
        assert_eq!(state.insert(7, 1), None);
        assert_eq!(state.insert(7, 2), Some(1));
        assert_eq!((state.len(), state.get(&7)), (1, Some(&2)));
        assert_eq!(format!("{state:?}"), "{7: 2}");
        assert_eq!(state.remove(&7), Some(2));
        assert!(state.is_empty());
    }
}

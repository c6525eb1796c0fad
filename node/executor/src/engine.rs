//! The engine: executes a batch of transactions, each declaring the keys it reads and writes,
//! with the result of running them one after another in batch order.
//!
//! [`Sequential`] is that definition (the oracle and the baseline). [`Parallel`] reaches the same
//! final state and the same per-transaction outcomes on several threads. Per chunk of the batch:
//!
//! 1. **Automatic choice** ([`ContentionFallback::Auto`]). If the first transactions of the
//!    chunk mostly conflict with their immediate predecessors (e.g. every transfer between the
//!    same two accounts), the chunk is a chain and runs inline on the caller's thread, exactly like
//!    [`Sequential`]. Otherwise the first 64 transactions run inline and are timed: if one costs
//!    less than 500 ns, the parallel bookkeeping would cost more than it saves, and the rest of the
//!    chunk runs inline too. Either way the result is the same; only the speed differs.
//! 2. **Dependencies** (parallel, by key shard). Every thread scans the chunk's declared keys and
//!    handles the keys of the shards it owns: it records, for each access, which earlier write
//!    produces the version the access will see (or the value before the chunk, which it copies).
//!    Only read-after-write is a dependency: every write creates a new version, so writers never
//!    wait for earlier readers or writers.
//! 3. **Execution** (parallel, blocks of transactions claimed in batch order). A read waits until
//!    the version it depends on is published; a transaction that fails (or writes nothing to a key
//!    it declared) publishes "unchanged", and readers follow it to the version before. Claiming in
//!    batch order guarantees progress: the earliest unfinished transaction never waits.
//!    If the dependency pass finds many dependencies between concurrently running blocks, the
//!    chunk's transactions run on one thread instead (in order, so never waiting).
//! 4. **Write-back** (parallel, by key shard): the last version of every written key goes into
//!    the state.
//!
//! Memory is bounded per chunk: a chunk holds at most `chunk_rows` declared keys (default 32768;
//! a single larger transaction is a chunk of its own), and everything the engine allocates for it
//! is proportional to that; a longer batch is cut into chunks that run one after another.
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
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
/// Default bound of declared keys per chunk (about 16k two-account transfers).
pub const DEFAULT_CHUNK_ROWS: usize = 1 << 15;
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

/// Whether [`Parallel`] may run contended chunks inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentionFallback {
    /// Run a chunk inline when it looks like a chain (the default).
    #[default]
    Auto,
    /// Always use the parallel phases, even on one thread (for tests and measurements).
    Never,
}

/// The parallel engine. See the module documentation for how it schedules.
#[derive(Debug, Clone)]
pub struct Parallel {
    threads: usize,
    chunk_rows: usize,
    fallback: ContentionFallback,
}

impl Parallel {
    /// An engine on `threads` threads (the caller's thread is one of them).
    pub fn new(threads: usize) -> Result<Self, EngineError> {
        if threads == 0 {
            return Err(EngineError::ZeroThreads);
        }
        Ok(Self { threads, chunk_rows: DEFAULT_CHUNK_ROWS, fallback: ContentionFallback::Auto })
    }

    /// An engine on the plan's engine threads.
    pub fn from_plan(plan: &RuntimePlan) -> Self {
        Self {
            threads: plan.engine_threads().max(1),
            chunk_rows: DEFAULT_CHUNK_ROWS,
            fallback: ContentionFallback::Auto,
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

    /// Sets whether contended chunks may run inline.
    pub fn with_fallback(mut self, fallback: ContentionFallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Threads the engine runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs a chunk inline when it is a chain or its transactions are too cheap for the parallel
    /// phases to pay off; the probe transactions are executed for real, not wasted.
    fn run_auto<T: Transaction>(
        &self,
        state: &mut State<T::Key, T::Value>,
        chunk: &[T],
        outcomes: &mut Vec<Outcome<T>>,
    ) {
        if self.threads == 1 || looks_contended(chunk, self.threads) {
            run_sequential(state, chunk, outcomes);
            return;
        }
        let (probe, rest) = chunk.split_at(chunk.len().min(PROBE_TXS));
        let started = Instant::now();
        run_sequential(state, probe, outcomes);
        let nanos_per_tx = started.elapsed().as_nanos() / probe.len().max(1) as u128;
        if nanos_per_tx < PARALLEL_MIN_TX_NANOS {
            run_sequential(state, rest, outcomes);
        } else {
            run_phases(state, rest, self.threads, self.fallback, outcomes);
        }
    }
}

impl Executor for Parallel {
    fn execute<T: Transaction>(&self, state: &mut State<T::Key, T::Value>, batch: &[T]) -> Vec<Outcome<T>> {
        let mut outcomes = Vec::with_capacity(batch.len());
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
            match self.fallback {
                ContentionFallback::Never => {
                    run_phases(state, chunk, self.threads, self.fallback, &mut outcomes)
                }
                ContentionFallback::Auto => self.run_auto(state, chunk, &mut outcomes),
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
    /// The value before the chunk, copied by shard owner `.0` into its `bases[.1]`.
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

/// The dependency pass's results for the keys of one thread's shards.
#[derive(Debug)]
struct Dependencies<V> {
    /// The predecessor of each of this thread's rows, in row order.
    preds: Vec<Pred>,
    bases: Vec<Option<V>>,
    /// Index into `preds` at the start of each block.
    block_starts: Vec<u32>,
    /// Global row number at the start of each block.
    row_starts: Vec<u32>,
    /// Reads of versions written in another block that may run at the same time.
    stalling: usize,
}

/// The last write of a key seen by the dependency pass.
#[derive(Debug)]
struct LastWrite {
    pred: Pred,
    tx: Option<usize>,
    shard: usize,
}

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
}

impl<'c, K: Eq, V> Versions<'c, K, V> {
    fn get(&self, key: &K) -> Option<&'c V> {
        let row = self.rows.iter().find(|row| row.key == key)?;
        match resolve(self.cells, row.pred) {
            Resolved::Base(owner, index) => self.deps[owner as usize].bases[index as usize].as_ref(),
            Resolved::Value(value) => Some(value),
            Resolved::Absent => None,
        }
    }
}

/// The effective version behind a predecessor.
enum Resolved<'c, V> {
    /// The value before the chunk, in `bases[.1]` of shard owner `.0`.
    Base(u32, u32),
    Value(&'c V),
    Absent,
}

/// Follows "unchanged" versions back to the effective one, waiting for each to be published.
fn resolve<V>(cells: &[OnceLock<Version<V>>], mut pred: Pred) -> Resolved<'_, V> {
    loop {
        match pred {
            Pred::Base(owner, index) => return Resolved::Base(owner, index),
            Pred::Row(row) => match wait(&cells[row as usize]) {
                Version::Unchanged(earlier) => pred = *earlier,
                Version::Value(value) => return Resolved::Value(value),
                Version::Absent => return Resolved::Absent,
            },
        }
    }
}

/// Waits until another engine thread publishes `cell`. Every wait is for an earlier transaction,
/// and the earliest unfinished one never waits, so this ends.
fn wait<T>(cell: &OnceLock<T>) -> &T {
    let mut spins = 0u32;
    loop {
        if let Some(value) = cell.get() {
            return value;
        }
        if spins < 100 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

type Shard<K, V> = HashMap<K, V, FxBuildHasher>;

/// Everything the threads of one chunk share.
struct Chunk<'b, T: Transaction> {
    txs: &'b [T],
    threads: usize,
    fallback: ContentionFallback,
    deps: Vec<OnceLock<Dependencies<T::Value>>>,
    cells: Vec<OnceLock<Version<T::Value>>>,
    next_block: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

fn run_phases<T: Transaction>(
    state: &mut State<T::Key, T::Value>,
    txs: &[T],
    threads: usize,
    fallback: ContentionFallback,
    outcomes: &mut Vec<Outcome<T>>,
) {
    if txs.is_empty() {
        return;
    }
    let rows: usize = txs.iter().map(|tx| tx.reads().len() + tx.writes().len()).sum();
    let chunk = Chunk {
        txs,
        threads,
        fallback,
        deps: (0..threads).map(|_| OnceLock::new()).collect(),
        cells: (0..rows).map(|_| OnceLock::new()).collect(),
        next_block: AtomicUsize::new(0),
        panic: Mutex::new(None),
    };
    let mut owned: Vec<Vec<&mut Shard<T::Key, T::Value>>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, shard) in state.shards.iter_mut().enumerate() {
        owned[index % threads].push(shard);
    }
    let per_thread = thread::scope(|scope| {
        let chunk = &chunk;
        let mut owned = owned.into_iter();
        let mine = owned.next().unwrap_or_default();
        let handles: Vec<_> = owned
            .enumerate()
            .map(|(index, shards)| scope.spawn(move || work(chunk, index + 1, shards)))
            .collect();
        let mut per_thread = vec![work(chunk, 0, mine)];
        for handle in handles {
            match handle.join() {
                Ok(done) => per_thread.push(done),
                Err(payload) => panic::resume_unwind(payload),
            }
        }
        per_thread
    });
    if let Some(payload) = chunk.panic.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()) {
        panic::resume_unwind(payload);
    }
    let mut slots: Vec<Option<Outcome<T>>> = (0..txs.len()).map(|_| None).collect();
    for (index, done) in per_thread.into_iter().flatten() {
        slots[index] = Some(done);
    }
    outcomes.extend(slots.into_iter().map(|slot| slot.expect("every transaction of the chunk was executed")));
}

/// One engine thread: dependencies and write-back for its shards, execution of claimed blocks.
fn work<'b, T: Transaction>(
    chunk: &Chunk<'b, T>,
    me: usize,
    mut shards: Vec<&mut Shard<T::Key, T::Value>>,
) -> Vec<(usize, Outcome<T>)> {
    let threads = chunk.threads;
    let mut last: HashMap<&'b T::Key, LastWrite, FxBuildHasher> = HashMap::default();
    let mut mine = Dependencies {
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
            mine.block_starts.push(mine.preds.len() as u32);
            mine.row_starts.push(row);
        }
        rows_of(tx, &mut keys);
        for &(key, write) in &keys {
            let shard = shard_of(hash_of(key));
            if shard % threads == me {
                let bases = &mut mine.bases;
                let entry = last.entry(key).or_insert_with(|| {
                    bases.push(shards[shard / threads].get(key).cloned());
                    LastWrite { pred: Pred::Base(me as u32, (bases.len() - 1) as u32), tx: None, shard }
                });
                mine.preds.push(entry.pred);
                if let Some(writer) = entry.tx {
                    let (writer_block, block) = (writer / BLOCK_TXS, index / BLOCK_TXS);
                    if writer_block != block && block - writer_block < threads {
                        mine.stalling += 1;
                    }
                }
                if write {
                    entry.pred = Pred::Row(row);
                    entry.tx = Some(index);
                }
            }
            row += 1;
        }
    }
    // Publishing is the hand-over to the other threads; each slot is set once, by its owner.
    let _ = chunk.deps[me].set(mine);
    let deps: Vec<&Dependencies<T::Value>> = chunk.deps.iter().map(wait).collect();

    let stalling: usize = deps.iter().map(|d| d.stalling).sum();
    let one_thread = chunk.fallback == ContentionFallback::Auto && stalling * 4 > chunk.txs.len();
    let done = if me == 0 || !one_thread { execute_blocks(chunk, &deps) } else { Vec::new() };

    for (key, last_write) in last {
        if last_write.tx.is_none() {
            continue;
        }
        let shard = &mut shards[last_write.shard / threads];
        match resolve(&chunk.cells, last_write.pred) {
            Resolved::Base(..) => {}
            Resolved::Value(value) => {
                shard.insert(key.clone(), value.clone());
            }
            Resolved::Absent => {
                shard.remove(key);
            }
        }
    }
    done
}

/// Claims blocks of transactions in batch order and executes them.
fn execute_blocks<T: Transaction>(
    chunk: &Chunk<'_, T>,
    deps: &[&Dependencies<T::Value>],
) -> Vec<(usize, Outcome<T>)> {
    let threads = chunk.threads;
    let blocks = chunk.txs.len().div_ceil(BLOCK_TXS);
    let mut done = Vec::new();
    let mut cursors = vec![0usize; threads];
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
                let owner = shard_of(hash_of(key)) % threads;
                let pred = deps[owner].preds[cursors[owner]];
                cursors[owner] += 1;
                rows.push(RowRef { key, write, pred, row });
                row += 1;
            }
            let versions = Versions { rows: &rows, cells: &chunk.cells, deps };
            let mut ctx = TxContext::new(tx.reads(), tx.writes(), View::Versions(versions), &mut buffer);
            let result = panic::catch_unwind(AssertUnwindSafe(|| tx.execute(&mut ctx)));
            let violation = ctx.into_violation();
            let outcome = match result {
                Ok(result) => Some(outcome::<T>(result, violation)),
                Err(payload) => {
                    // Publish "unchanged" so that no other thread waits forever; the panic is
                    // re-raised when the chunk ends.
                    let mut slot = chunk.panic.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
            if let Some(outcome) = outcome {
                done.push((index, outcome));
            }
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
        Parallel::new(threads).expect("threads > 0").with_fallback(ContentionFallback::Never)
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

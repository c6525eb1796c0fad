//! Accounts: one node, many wallets. A ledger of accounts whose operations run as transactions
//! on the executor's engine, in batches, each batch durable in one commit of the node's store
//! before any caller hears of it. docs/ACCOUNTS.md has the design; [`tx`] the rules.
//!
//! The records live in the engine's [`State`] (the whole ledger is in memory: an account is
//! about 100 bytes) and in the store under the namespace `accounts`: `a<id>` accounts, `h<hash>`
//! holds, `i<hash>` invoices, each a versioned postcard encoding.

#[cfg(test)]
mod tests;
pub mod tx;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use boltbox_executor::engine::{Executor, Outcome, Parallel, Sequential, State, Transaction as _, TxError};
use serde::{Deserialize, Serialize};

use crate::store::Store;
pub use tx::{
    Account, AccountId, Done, Hold, InvoiceFor, Key, LedgerError, LedgerTx, MAIN, Op, PaymentHash, Record,
    transfer_mac,
};

/// The store namespace of the ledger.
pub const NAMESPACE: &str = "accounts";
/// The record encoding's version (the first byte of every stored value).
const RECORD_VERSION: u8 = 1;
/// Batches with more changed records than this encode them on the engine's threads.
const PARALLEL_ENCODE_MIN: usize = 2048;

/// Which executor runs the batches; both give the same results (the property tests check it).
#[derive(Debug)]
pub enum Engine {
    /// One transaction after another.
    Sequential,
    /// The parallel engine.
    Parallel(Parallel),
}

impl Engine {
    fn execute(&self, state: &mut State<Key, Record>, batch: &[LedgerTx]) -> Vec<Outcome<LedgerTx>> {
        match self {
            Engine::Sequential => Sequential.execute(state, batch),
            Engine::Parallel(parallel) => parallel.execute(state, batch),
        }
    }

    fn threads(&self) -> usize {
        match self {
            Engine::Sequential => 1,
            Engine::Parallel(parallel) => parallel.threads(),
        }
    }
}

/// Why the ledger could not run a batch (each operation's own refusal is a [`LedgerError`]).
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// The operation was refused and had no effect.
    #[error("refused: {0}")]
    Refused(LedgerError),
    /// The store failed: the batch is not durable and none of it counts.
    #[error("the accounts could not be stored: {0}")]
    Store(#[from] std::io::Error),
    /// A stored record cannot be read.
    #[error("account record {key:?} is damaged: {reason}")]
    Damaged {
        /// The store key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The stored ledger breaks its invariant.
    #[error("the stored accounts break the ledger's invariant: {0}")]
    Invariant(String),
}

/// An account as the CLI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// Its id.
    pub id: AccountId,
    /// Its name.
    pub name: String,
    /// Balance, msat (holds included).
    pub balance_msat: u64,
    /// Held for payments in flight, msat.
    pub held_msat: u64,
    /// Budget: (limit msat, period s, spent this period msat).
    pub budget: Option<(u64, u64, u64)>,
}

/// What the OLED's accounts page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountsSummary {
    /// Open accounts.
    pub count: u64,
    /// Σ balances, msat.
    pub total_msat: u64,
    /// Σ held, msat.
    pub held_msat: u64,
    /// The largest few by balance: (name, balance msat).
    pub largest: Vec<(String, u64)>,
}

/// Where the time of the last batches went (for benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LedgerStats {
    /// Batches applied.
    pub batches: u64,
    /// Operations applied.
    pub ops: u64,
    /// Seconds executing on the engine.
    pub execute_secs: f64,
    /// Seconds encoding records and queueing the commit.
    pub encode_secs: f64,
    /// Seconds waiting for commits.
    pub durable_secs: f64,
}

#[derive(Debug)]
struct Book {
    state: State<Key, Record>,
    /// Open accounts by name.
    names: HashMap<String, AccountId>,
    next_id: AccountId,
    /// Σ balances, msat.
    tracked_msat: u64,
    /// A batch failed to be stored after changing the state: reload before the next.
    stale: bool,
    /// Batches submitted so far, and (the last durable one's number, Σ balances after it).
    submitted: u64,
    durable: (u64, u64),
    stats: LedgerStats,
}

/// The ledger. Shared by reference; operations from many threads form batches in call order.
#[derive(Debug)]
pub struct Accounts {
    store: Store,
    engine: Engine,
    book: Mutex<Book>,
    /// Notified after each batch (for [`Accounts::wait_hold_gone`]).
    changed: Condvar,
}

fn store_key(key: &Key) -> Option<String> {
    Some(match key {
        Key::Main => return None,
        Key::Account(id) => format!("a{id}"),
        Key::Hold(hash) => format!("h{}", hex(hash)),
        Key::Invoice(hash) => format!("i{}", hex(hash)),
    })
}

/// A fresh random transfer key for a new account (from the OS).
pub fn new_account_key() -> std::io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| std::io::Error::other(format!("no randomness from the OS: {e}")))?;
    Ok(key)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex digits as 32 bytes.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(out)
}

fn parse_key(key: &str) -> Option<Key> {
    let rest = key.get(1..)?;
    match key.as_bytes().first()? {
        b'a' => rest.parse().ok().map(Key::Account),
        b'h' => parse_hex32(rest).map(Key::Hold),
        b'i' => parse_hex32(rest).map(Key::Invoice),
        _ => None,
    }
}

fn encode(record: &Record) -> Vec<u8> {
    let out = vec![RECORD_VERSION];
    // Encoding into a Vec cannot fail for these types (no maps with non-string keys, no
    // unsized sequences).
    match postcard::to_extend(record, out) {
        Ok(bytes) => bytes,
        Err(e) => unreachable!("postcard encodes ledger records: {e}"),
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record, AccountsError> {
    let damaged = |reason: String| AccountsError::Damaged { key: key.to_string(), reason };
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| damaged(e.to_string())),
        Some((version, _)) => Err(damaged(format!("unknown record version {version}"))),
        None => Err(damaged("empty".into())),
    }
}

fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

impl Book {
    fn load(store: &Store) -> Result<Book, AccountsError> {
        let mut state = State::new();
        for (name, bytes) in store.read_namespace(NAMESPACE, "")? {
            let key = parse_key(&name)
                .ok_or_else(|| AccountsError::Damaged { key: name.clone(), reason: "unknown key".into() })?;
            state.insert(key, decode(&name, &bytes)?);
        }
        let tracked_msat = tx::check(state.iter()).map_err(AccountsError::Invariant)?;
        let mut names = HashMap::new();
        let mut next_id = 1;
        for (key, record) in state.iter() {
            if let (Key::Account(id), Record::Account(account)) = (key, record) {
                next_id = next_id.max(id.saturating_add(1));
                if !account.closed {
                    names.insert(account.name.clone(), *id);
                }
            }
        }
        Ok(Book {
            state,
            names,
            next_id,
            tracked_msat,
            stale: false,
            submitted: 0,
            durable: (0, tracked_msat),
            stats: LedgerStats::default(),
        })
    }

    /// What the ledger tracks for spending decisions: the larger of the total in memory and
    /// the total after the last durable batch (money leaving the ledger counts for main only
    /// once it is stored).
    fn tracked(&self) -> u64 {
        self.tracked_msat.max(self.durable.1)
    }

    fn account(&self, id: AccountId) -> Option<&Account> {
        match self.state.get(&Key::Account(id)) {
            Some(Record::Account(account)) if !account.closed => Some(account),
            _ => None,
        }
    }
}

impl Accounts {
    /// The ledger stored in `store` (empty if none is), run by `engine`. Fails if a record is
    /// damaged or the stored ledger breaks its invariant.
    pub fn load(store: &Store, engine: Engine) -> Result<Accounts, AccountsError> {
        let book = Book::load(store)?;
        Ok(Accounts { store: store.clone(), engine, book: Mutex::new(book), changed: Condvar::new() })
    }

    /// The engine on this machine's cores.
    pub fn default_engine() -> Engine {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        match Parallel::new(threads) {
            Ok(parallel) => Engine::Parallel(parallel),
            Err(_) => Engine::Sequential,
        }
    }

    /// Runs `ops` as one batch at `now` (Unix seconds), main having `spendable_msat` (the
    /// node's spendable Lightning balance) in all, and returns when the batch is durable: one
    /// outcome per operation, in order. `Op::Open`'s id is replaced by a fresh one. On an error
    /// nothing of the batch counts (the ledger is reloaded from the store).
    pub fn apply(
        &self,
        ops: Vec<Op>,
        now: u64,
        spendable_msat: u64,
    ) -> Result<Vec<Result<Done, LedgerError>>, AccountsError> {
        let started = Instant::now();
        let mut book = lock(&self.book);
        if book.stale {
            // Everything queued before is durable or failed: the store has the truth.
            self.store.flush()?;
            *book = Book::load(&self.store)?;
        }
        // Names are unique among open accounts: checked here, in batch order, since an engine
        // transaction sees only the keys it declares.
        let mut claimed: HashMap<String, AccountId> = HashMap::new();
        let mut batch = Vec::with_capacity(ops.len());
        // (account, its name before the batch) of every open, rename and close.
        let mut named: Vec<(AccountId, Option<String>)> = Vec::new();
        for mut op in ops {
            let mut refusal = None;
            if let Op::Rename { id, .. } | Op::Close { id } = &op {
                named.push((*id, book.account(*id).map(|a| a.name.clone())));
            }
            let opens = matches!(op, Op::Open { .. });
            if let Op::Open { id, name, .. } | Op::Rename { id, name } = &mut op {
                if opens {
                    *id = book.next_id;
                    book.next_id = book.next_id.saturating_add(1);
                    named.push((*id, None));
                }
                let taken = |other: &AccountId| *other != *id;
                if let Err(e) = tx::valid_name(name) {
                    refusal = Some(e);
                } else if book.names.get(name.as_str()).is_some_and(taken)
                    || claimed.get(name.as_str()).is_some_and(taken)
                {
                    refusal = Some(LedgerError::NameTaken(name.clone()));
                } else {
                    claimed.insert(name.clone(), *id);
                }
            }
            batch.push(match refusal {
                Some(e) => LedgerTx::refused(op, e),
                None => LedgerTx::new(op, now, |key| book.state.get(key)),
            });
        }
        let main = spendable_msat.saturating_sub(book.tracked());
        book.state.insert(Key::Main, Record::Main(main));
        let exec_started = Instant::now();
        let outcomes = self.engine.execute(&mut book.state, &batch);
        let execute_secs = exec_started.elapsed().as_secs_f64();
        book.state.remove(&Key::Main);

        let encode_started = Instant::now();
        let mut changed = BTreeSet::new();
        let mut results = Vec::with_capacity(outcomes.len());
        for (tx, outcome) in batch.iter().zip(outcomes) {
            results.push(match outcome {
                Ok(done) => {
                    changed.extend(tx.writes().iter().filter(|k| **k != Key::Main).copied());
                    book.tracked_msat = book
                        .tracked_msat
                        .saturating_add(done.tracked_in_msat)
                        .saturating_sub(done.tracked_out_msat);
                    Ok(done)
                }
                Err(TxError::Failed(e)) => Err(e),
                Err(TxError::Undeclared { key, .. }) => Err(LedgerError::Undeclared(key)),
            });
        }
        // Names of the accounts this batch opened, renamed or closed: each such account's
        // names before and during the batch go, its final name (if open) comes.
        for (id, old) in named {
            if let Some(old) = old
                && book.names.get(&old) == Some(&id)
            {
                book.names.remove(&old);
            }
            let final_name = book.account(id).map(|a| a.name.clone());
            for (name, _) in claimed.iter().filter(|(_, other)| **other == id) {
                if book.names.get(name) == Some(&id) {
                    book.names.remove(name);
                }
            }
            if let Some(name) = final_name {
                book.names.insert(name, id);
            }
        }
        let changed: Vec<Key> = changed.into_iter().collect();
        let entries = self.encode_changed(&book.state, &changed);
        let completion = self.store.write_group(NAMESPACE, "", entries);
        let encode_secs = encode_started.elapsed().as_secs_f64();
        let completion = match completion {
            Ok(completion) => completion,
            Err(e) => {
                book.stale = true;
                return Err(e.into());
            }
        };
        book.submitted += 1;
        let (number, tracked_after) = (book.submitted, book.tracked_msat);
        drop(book);
        // Waiting outside the lock lets the next batch execute while this one commits; the
        // committer keeps their order, so a later batch is never durable before this one.
        let durable_started = Instant::now();
        let stored = completion.wait();
        let mut book = lock(&self.book);
        if let Err(e) = stored {
            book.stale = true;
            return Err(e.into());
        }
        if number > book.durable.0 {
            book.durable = (number, tracked_after);
        }
        let stats = &mut book.stats;
        stats.batches += 1;
        stats.ops += batch.len() as u64;
        stats.execute_secs += execute_secs;
        stats.encode_secs += encode_secs;
        stats.durable_secs += durable_started.elapsed().as_secs_f64();
        drop(book);
        self.changed.notify_all();
        tracing::debug!("accounts: {} ops in {:?}", batch.len(), started.elapsed());
        Ok(results)
    }

    /// One operation, as [`Accounts::apply`].
    pub fn apply_one(
        &self,
        op: Op,
        now: u64,
        spendable_msat: u64,
    ) -> Result<Result<Done, LedgerError>, AccountsError> {
        let mut results = self.apply(vec![op], now, spendable_msat)?;
        Ok(results.pop().unwrap_or(Err(LedgerError::Invalid("no outcome"))))
    }

    fn encode_changed(&self, state: &State<Key, Record>, changed: &[Key]) -> Vec<(String, Option<Vec<u8>>)> {
        let one = |key: &Key| store_key(key).map(|name| (name, state.get(key).map(encode)));
        let threads = self.engine.threads();
        if changed.len() < PARALLEL_ENCODE_MIN || threads < 2 {
            return changed.iter().filter_map(one).collect();
        }
        let per = changed.len().div_ceil(threads);
        std::thread::scope(|s| {
            let parts: Vec<_> = changed
                .chunks(per)
                .map(|part| s.spawn(move || part.iter().filter_map(one).collect::<Vec<_>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|part| part.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    /// The open account called `name_or_id` (an id in digits, or a name).
    pub fn resolve(&self, name_or_id: &str) -> Option<AccountId> {
        let book = lock(&self.book);
        match name_or_id.parse::<AccountId>() {
            Ok(MAIN) => Some(MAIN),
            Ok(id) => book.account(id).map(|_| id),
            Err(_) => book.names.get(name_or_id).copied(),
        }
    }

    /// An open account.
    pub fn show(&self, id: AccountId) -> Option<AccountView> {
        let book = lock(&self.book);
        book.account(id).map(|a| view(id, a))
    }

    /// Every open account, by id.
    pub fn list(&self) -> Vec<AccountView> {
        let book = lock(&self.book);
        let mut out: Vec<AccountView> = book
            .state
            .iter()
            .filter_map(|(key, record)| match (key, record) {
                (Key::Account(id), Record::Account(a)) if !a.closed => Some(view(*id, a)),
                _ => None,
            })
            .collect();
        out.sort_by_key(|a| a.id);
        out
    }

    /// An open account's transfer key (for the app that signs its transfers).
    pub fn key(&self, id: AccountId) -> Option<[u8; 32]> {
        lock(&self.book).account(id).map(|a| a.key)
    }

    /// Every hold: (payment hash, hold).
    pub fn holds(&self) -> Vec<(PaymentHash, Hold)> {
        let book = lock(&self.book);
        book.state
            .iter()
            .filter_map(|(key, record)| match (key, record) {
                (Key::Hold(hash), Record::Hold(hold)) => Some((*hash, hold.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether the payment is held.
    pub fn is_held(&self, payment_hash: &PaymentHash) -> bool {
        lock(&self.book).state.get(&Key::Hold(*payment_hash)).is_some()
    }

    /// Whether the payment is held, or its invoice was made for accounts.
    pub fn knows(&self, payment_hash: &PaymentHash) -> bool {
        let book = lock(&self.book);
        book.state.get(&Key::Hold(*payment_hash)).is_some()
            || book.state.get(&Key::Invoice(*payment_hash)).is_some()
    }

    /// Waits until the payment's hold is settled or released, at most `timeout`; whether it is.
    pub fn wait_hold_gone(&self, payment_hash: &PaymentHash, timeout: Duration) -> bool {
        let book = lock(&self.book);
        let (book, _) = self
            .changed
            .wait_timeout_while(book, timeout, |b| b.state.get(&Key::Hold(*payment_hash)).is_some())
            .unwrap_or_else(|p| p.into_inner());
        book.state.get(&Key::Hold(*payment_hash)).is_none()
    }

    /// What the ledger tracks for main's spending: Σ balances of the accounts, msat (while a
    /// batch that lowers it is not yet durable, the total before it).
    pub fn tracked_msat(&self) -> u64 {
        lock(&self.book).tracked()
    }

    /// Checks the invariant over the records in memory; the tracked total, msat.
    pub fn check(&self) -> Result<u64, String> {
        let book = lock(&self.book);
        let tracked = tx::check(book.state.iter())?;
        if tracked != book.tracked_msat {
            return Err(format!("the records hold {tracked} msat, the ledger counted {}", book.tracked_msat));
        }
        Ok(tracked)
    }

    /// The OLED's summary: counts, totals and the `largest` biggest accounts.
    pub fn summary(&self, largest: usize) -> AccountsSummary {
        let book = lock(&self.book);
        let mut summary = AccountsSummary::default();
        let mut all = Vec::new();
        for (key, record) in book.state.iter() {
            if let (Key::Account(_), Record::Account(a)) = (key, record)
                && !a.closed
            {
                summary.count += 1;
                summary.total_msat = summary.total_msat.saturating_add(a.balance_msat);
                summary.held_msat = summary.held_msat.saturating_add(a.held_msat);
                all.push((a.name.clone(), a.balance_msat));
            }
        }
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(largest);
        summary.largest = all;
        summary
    }

    /// Where the time of the batches so far went.
    pub fn stats(&self) -> LedgerStats {
        lock(&self.book).stats
    }
}

fn view(id: AccountId, a: &Account) -> AccountView {
    AccountView {
        id,
        name: a.name.clone(),
        balance_msat: a.balance_msat,
        held_msat: a.held_msat,
        budget: a.budget.as_ref().map(|b| (b.limit_msat, b.period_secs, b.spent_msat)),
    }
}

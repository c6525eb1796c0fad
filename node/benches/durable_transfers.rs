//! `cargo bench -p boltbox-node --bench durable_transfers`: durable transfers/s. The executor's
//! engine runs batches of peer-to-peer transfers between 10,000 accounts, and each batch's
//! changed balances are written durably through boltbox's `Store`: every write of the batch is
//! queued with the async `KVStore::write` (group commit), then all are awaited; a batch counts
//! once it is durable. Compared, in one run on the same disk, with:
//! - sequential execution and one redb write transaction (one fsync) per transfer;
//! - the engine and the store, but each write awaited before the next is queued.
//!
//! Local disk in this process; with `BOLTBOX_SDCARD_SHIM` set (as `make bench` does), the same
//! again under the SD-card flush model in a child process. Data under `BOLTBOX_BENCH_DIR`.
//! Reported, never asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use boltbox_executor::bench::{Transfer, funded_accounts, random_transfers};
use boltbox_executor::engine::{Executor, Parallel, Sequential, State};
use boltbox_node::Store;
use boltbox_node::bench::sdcard;
use ldk_node::lightning::util::persist::KVStore;
use redb::TableDefinition;

const ACCOUNTS: u64 = 10_000;
const BALANCE: u64 = 1_000_000_000;
const MAX_AMOUNT: u64 = 100;
const NAMESPACE: &str = "balances";
const PLAIN: TableDefinition<u64, u64> = TableDefinition::new("balances");

#[derive(Debug)]
struct Row {
    contender: String,
    batch: usize,
    transfers: u64,
    secs: f64,
    commits: u64,
    exec_secs: f64,
}

impl Row {
    fn per_sec(&self) -> f64 {
        self.transfers as f64 / self.secs.max(f64::MIN_POSITIVE)
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// `count` batches of `size` transfers, each from its own seed.
fn batches(size: usize, count: usize) -> Vec<Vec<Transfer>> {
    (0..count).map(|i| random_transfers(ACCOUNTS, size, MAX_AMOUNT, 1 + i as u64)).collect()
}

/// The accounts a batch changed (those of its successful transfers), each once, in order.
fn changed(batch: &[Transfer], ok: impl Fn(usize) -> bool, seen: &mut [bool]) -> Vec<u64> {
    let mut keys = Vec::new();
    for (i, transfer) in batch.iter().enumerate() {
        if !ok(i) {
            continue;
        }
        for &account in boltbox_executor::engine::Transaction::writes(transfer) {
            let slot = &mut seen[account as usize];
            if !*slot {
                *slot = true;
                keys.push(account);
            }
        }
    }
    for &k in &keys {
        seen[k as usize] = false;
    }
    keys
}

fn key(account: u64) -> String {
    format!("a{account}")
}

/// Engine + store. `group`: queue the whole batch's writes, then await them all; otherwise
/// await each write before queuing the next. Runs batches for `duration` (at least one) after
/// one warm-up batch.
fn engine_and_store(dir: &Path, batch_size: usize, group: bool, duration: Duration) -> Row {
    let store = Store::open(&dir.join(format!("store-{batch_size}-{group}.redb"))).expect("open store");
    let engine = Parallel::new(threads()).expect("engine");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let work = batches(batch_size, 16);
    let mut state: State<u64, u64> = funded_accounts(ACCOUNTS, BALANCE);
    let mut seen = vec![false; ACCOUNTS as usize];
    let mut run_batch = |batch: &[Transfer], state: &mut State<u64, u64>, exec: &mut Duration| {
        let started = Instant::now();
        let outcomes = engine.execute(state, batch);
        let keys = changed(batch, |i| outcomes[i].is_ok(), &mut seen);
        *exec += started.elapsed();
        rt.block_on(async {
            if group {
                let queued: Vec<_> = keys
                    .iter()
                    .map(|&k| {
                        let value = state.get(&k).copied().unwrap_or(0).to_le_bytes().to_vec();
                        KVStore::write(&store, NAMESPACE, "", &key(k), value)
                    })
                    .collect();
                for write in queued {
                    write.await.expect("durable write");
                }
            } else {
                for &k in &keys {
                    let value = state.get(&k).copied().unwrap_or(0).to_le_bytes().to_vec();
                    KVStore::write(&store, NAMESPACE, "", &key(k), value).await.expect("durable write");
                }
            }
        });
        batch.len() as u64
    };
    let mut exec = Duration::ZERO;
    run_batch(&work[0], &mut state, &mut exec);
    let (commits_before, _) = store.commit_stats();
    exec = Duration::ZERO;
    let started = Instant::now();
    let mut transfers = 0;
    for batch in work.iter().cycle().skip(1) {
        transfers += run_batch(batch, &mut state, &mut exec);
        if started.elapsed() >= duration {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let commits = store.commit_stats().0 - commits_before;
    store.close();
    Row {
        contender: if group {
            format!("engine ({} threads) + store, group commit", threads())
        } else {
            format!("engine ({} threads) + store, each write awaited", threads())
        },
        batch: batch_size,
        transfers,
        secs,
        commits,
        exec_secs: exec.as_secs_f64(),
    }
}

/// Sequential execution, one redb write transaction (one fsync) per transfer.
fn sequential_redb(dir: &Path, duration: Duration) -> Row {
    let db = redb::Database::create(dir.join("plain.redb")).expect("redb");
    let work = batches(10_000, 1).remove(0);
    let mut state: State<u64, u64> = funded_accounts(ACCOUNTS, BALANCE);
    let commit = |state: &State<u64, u64>, transfer: &Transfer| {
        let txn = db.begin_write().expect("begin write");
        {
            let mut table = txn.open_table(PLAIN).expect("table");
            for &account in boltbox_executor::engine::Transaction::writes(transfer) {
                table.insert(account, state.get(&account).copied().unwrap_or(0)).expect("insert");
            }
        }
        txn.commit().expect("commit");
    };
    let mut exec = Duration::ZERO;
    let (mut transfers, mut commits) = (0u64, 0u64);
    let started = Instant::now();
    for transfer in work.iter().cycle() {
        let t0 = Instant::now();
        let outcome = Sequential.execute(&mut state, std::slice::from_ref(transfer));
        exec += t0.elapsed();
        if outcome[0].is_ok() {
            commit(&state, transfer);
            commits += 1;
        }
        transfers += 1;
        if started.elapsed() >= duration {
            break;
        }
    }
    Row {
        contender: "sequential + redb commit per transfer".into(),
        batch: 1,
        transfers,
        secs: started.elapsed().as_secs_f64(),
        commits,
        exec_secs: exec.as_secs_f64(),
    }
}

fn run(title: &str, duration: Duration) {
    let dir = tempfile::tempdir_in(std::env::var_os("BOLTBOX_BENCH_DIR").unwrap_or_else(|| ".".into()))
        .expect("bench dir");
    let rows = vec![
        sequential_redb(dir.path(), duration),
        engine_and_store(dir.path(), 1_000, false, duration),
        engine_and_store(dir.path(), 1_000, true, duration),
        engine_and_store(dir.path(), 10_000, true, duration),
    ];
    let baseline = rows[0].per_sec();
    println!("{title}");
    println!(
        "{:<46} {:>6} {:>13} {:>10} {:>8} {:>9} {:>12}",
        "contender", "batch", "transfers/s", "vs seq+redb", "commits", "commits/s", "exec share"
    );
    for row in &rows {
        println!(
            "{:<46} {:>6} {:>13.0} {:>10.1}x {:>8} {:>9.0} {:>11.1}%",
            row.contender,
            row.batch,
            row.per_sec(),
            row.per_sec() / baseline.max(f64::MIN_POSITIVE),
            row.commits,
            row.commits as f64 / row.secs.max(f64::MIN_POSITIVE),
            100.0 * row.exec_secs / row.secs.max(f64::MIN_POSITIVE)
        );
    }
    println!(
        "({ACCOUNTS} accounts, transfers of 1..={MAX_AMOUNT}; a batch counts once all its changed balances are durable; \
         exec share = time in the executor)"
    );
    println!();
}

fn main() {
    if sdcard::in_model() {
        let ms = std::env::var("BOLTBOX_FSYNC_DELAY_MS").unwrap_or_else(|_| "10".into());
        run(
            &format!("durable transfers/s, SD-card model ({ms} ms per fsync, one at a time)"),
            Duration::from_secs(3),
        );
        return;
    }
    run("durable transfers/s, local disk", Duration::from_secs(3));
    for line in sdcard::rerun_in_model().expect("run under the SD-card model").unwrap_or_default() {
        println!("{line}");
    }
}

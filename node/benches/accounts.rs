//! `cargo bench -p boltbox-node --bench accounts`: durable transfers/s through the accounts
//! ledger's own API ([`Accounts::apply`]), 10,000 accounts, every transfer signed with its
//! payer's key (HMAC-SHA256 checked in the transaction, as the API will) and carrying a fresh
//! nonce. A batch counts once it is durable (one commit of the node's store).
//!
//! In one run, on the same disk: sequential execution with one commit per transfer; and at
//! batch sizes 1, 100 and 10,000, sequential execution with the same batching against the
//! engine; then every transfer between the same two accounts. `BOLTBOX_BENCH_CLIENTS` threads
//! (default 2) submit batches at once, as several tills or apps would. Local disk in this
//! process; with `BOLTBOX_SDCARD_SHIM` set (`make bench`), again under the SD-card flush model
//! in a child process. Data under `BOLTBOX_BENCH_DIR`. Reported, never asserted.

use std::path::Path;
use std::time::Instant;

use boltbox_node::Store;
use boltbox_node::accounts::{AccountId, Accounts, Engine, MAIN, Op, transfer_mac};
use boltbox_node::bench::sdcard;

const ACCOUNTS: u64 = 10_000;
const FUNDS: u64 = 1_000_000_000;
const SPENDABLE: u64 = u64::MAX / 2;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

fn key_of(id: AccountId) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&id.to_le_bytes());
    key
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Signed transfers in `count` batches of `size`, batch `j` for client `j % clients`, whose
/// payers are its own (so each payer's nonces reach the ledger in order). `two`: only between
/// accounts 1 and 2.
fn workload(size: usize, count: usize, clients: usize, two: bool) -> Vec<Vec<Op>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut nonces = vec![0u64; ACCOUNTS as usize + 1];
    (0..count)
        .map(|j| {
            let client = (j % clients) as u64;
            (0..size)
                .map(|_| {
                    let (from, to) = if two {
                        let from = 1 + client % 2;
                        (from, 3 - from)
                    } else {
                        // A payer of this client: ids ≡ client + 1 (mod clients).
                        let slots = ACCOUNTS / clients as u64;
                        let from = 1 + client + clients as u64 * (rng.next() % slots);
                        let to = 1 + rng.next() % ACCOUNTS;
                        (from, if to == from { from % ACCOUNTS + 1 } else { to })
                    };
                    let amount_msat = 1 + rng.next() % 100;
                    let nonce = &mut nonces[from as usize];
                    *nonce += 1;
                    let mac = Some(transfer_mac(&key_of(from), from, to, amount_msat, *nonce));
                    Op::Transfer { from, to, amount_msat, nonce: *nonce, mac }
                })
                .collect()
        })
        .collect()
}

struct Row {
    contender: String,
    batch: usize,
    transfers: u64,
    secs: f64,
    commits: u64,
    stats: boltbox_node::accounts::LedgerStats,
}

impl Row {
    fn per_sec(&self) -> f64 {
        self.transfers as f64 / self.secs.max(f64::MIN_POSITIVE)
    }
}

/// A ledger of 10,000 funded accounts in a fresh store.
fn ledger(dir: &Path, name: &str, engine: Engine) -> (Accounts, Store) {
    let store = Store::open(&dir.join(format!("{name}.redb"))).expect("store");
    let accounts = Accounts::load(&store, engine).expect("ledger");
    let opens =
        (1..=ACCOUNTS).map(|i| Op::Open { id: 0, name: format!("acct-{i}"), key: key_of(i) }).collect();
    assert!(accounts.apply(opens, 0, SPENDABLE).expect("opened").iter().all(Result::is_ok));
    let funds = (1..=ACCOUNTS)
        .map(|to| Op::Transfer { from: MAIN, to, amount_msat: FUNDS, nonce: 0, mac: None })
        .collect();
    assert!(accounts.apply(funds, 0, SPENDABLE).expect("funded").iter().all(Result::is_ok));
    (accounts, store)
}

fn measure(dir: &Path, contender: &str, engine: Engine, work: Vec<Vec<Op>>, clients: usize) -> Row {
    let name = contender.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let (accounts, store) = ledger(dir, &name, engine);
    let batch = work.first().map_or(0, Vec::len);
    let transfers = work.iter().map(Vec::len).sum::<usize>() as u64;
    let mut per_client: Vec<Vec<Vec<Op>>> = (0..clients).map(|_| Vec::new()).collect();
    for (j, ops) in work.into_iter().enumerate() {
        per_client[j % clients].push(ops);
    }
    let (commits_before, _) = store.commit_stats();
    let started = Instant::now();
    std::thread::scope(|s| {
        for batches in per_client {
            let accounts = &accounts;
            s.spawn(move || {
                for ops in batches {
                    let out = accounts.apply(ops, 1, SPENDABLE).expect("durable");
                    assert!(out.iter().all(Result::is_ok), "{:?}", out.iter().find(|r| r.is_err()));
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    accounts.check().expect("the invariant");
    let row = Row {
        contender: contender.into(),
        batch,
        transfers,
        secs,
        commits: store.commit_stats().0 - commits_before,
        stats: accounts.stats(),
    };
    store.close();
    row
}

fn run(title: &str, sd: bool) {
    let dir = tempfile::tempdir_in(std::env::var_os("BOLTBOX_BENCH_DIR").unwrap_or_else(|| ".".into()))
        .expect("bench dir");
    let clients = env_usize("BOLTBOX_BENCH_CLIENTS", 2);
    let engine = || Accounts::default_engine();
    // Batches per measurement: a few seconds each on this machine.
    let count = |batch: usize| match (batch, sd) {
        (1, false) => 10_000,
        (1, true) => 300,
        (100, false) => 2_000,
        (100, true) => 200,
        (_, false) => 100,
        (_, true) => 40,
    };
    let mut rows = vec![measure(
        dir.path(),
        "sequential, one commit per transfer",
        Engine::Sequential,
        workload(1, count(1), 1, false),
        1,
    )];
    let mut pairs = Vec::new();
    for batch in [1, 100, 10_000] {
        let seq = measure(
            dir.path(),
            &format!("sequential, batches of {batch}"),
            Engine::Sequential,
            workload(batch, count(batch), clients, false),
            clients,
        );
        let par = measure(
            dir.path(),
            &format!("engine, batches of {batch}"),
            engine(),
            workload(batch, count(batch), clients, false),
            clients,
        );
        pairs.push((rows.len(), rows.len() + 1));
        rows.push(seq);
        rows.push(par);
    }
    let seq = measure(
        dir.path(),
        "sequential, same two accounts",
        Engine::Sequential,
        workload(10_000, count(10_000), clients, true),
        clients,
    );
    let par = measure(
        dir.path(),
        "engine, same two accounts",
        engine(),
        workload(10_000, count(10_000), clients, true),
        clients,
    );
    pairs.push((rows.len(), rows.len() + 1));
    rows.push(seq);
    rows.push(par);

    let baseline = rows[0].per_sec();
    println!("{title}");
    println!(
        "{:<38} {:>6} {:>13} {:>9} {:>9} {:>8} {:>24}",
        "contender", "batch", "transfers/s", "vs 1/cmt", "vs seq", "commits", "per batch: exec/enc/dur"
    );
    for (i, row) in rows.iter().enumerate() {
        let vs_seq = pairs
            .iter()
            .find(|(_, p)| *p == i)
            .map(|(s, _)| format!("{:.2}x", row.per_sec() / rows[*s].per_sec().max(f64::MIN_POSITIVE)))
            .unwrap_or_default();
        let per = |secs: f64| 1e3 * secs / row.stats.batches.max(1) as f64;
        println!(
            "{:<38} {:>6} {:>13.0} {:>8.1}x {:>9} {:>8} {:>9.2}/{:.2}/{:.2} ms",
            row.contender,
            row.batch,
            row.per_sec(),
            row.per_sec() / baseline.max(f64::MIN_POSITIVE),
            vs_seq,
            row.commits,
            per(row.stats.execute_secs),
            per(row.stats.encode_secs),
            per(row.stats.durable_secs),
        );
    }
    println!(
        "({ACCOUNTS} accounts, signed transfers of 1..=100 msat, {clients} clients, engine threads = cores; \
         a batch counts once durable; per batch: engine execution / encoding and queueing / waiting for the commit)"
    );
    println!();
}

fn main() {
    if sdcard::in_model() {
        run(
            &format!(
                "accounts: durable transfers/s, SD-card model ({} ms per fsync, one at a time)",
                sdcard::delay_ms()
            ),
            true,
        );
        return;
    }
    run("accounts: durable transfers/s, local disk", false);
    for line in sdcard::rerun_in_model().expect("run under the SD-card model").unwrap_or_default() {
        println!("{line}");
    }
}

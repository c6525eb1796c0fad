//! Crash consistency of the accounts ledger: a child process applies a deterministic stream of
//! batches (transfers, holds, settles, releases, on the parallel engine) and reports each one
//! the ledger acknowledged; the parent kills it with SIGKILL after a random number of
//! acknowledgements, reloads the ledger from the store and checks that the invariant holds and
//! that the ledger is exactly the stream's first n batches, every acknowledged one included
//! (n is the last acknowledged, or the one after it, durable but not yet reported). Then the
//! next child goes on from there. 20 kills; `BOLTBOX_KILLS` sets another count
//! (`make reliability`).
//!
//! `harness = false`: the same binary is the parent and (with `BOLTBOX_ACCOUNTS_CHILD` naming
//! the store file) the child.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use boltbox_node::Store;
use boltbox_node::accounts::{Accounts, Engine, MAIN, Op};

const ACCOUNTS: u64 = 200;
const SPENDABLE: u64 = 1 << 40;

fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    x |= 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Batch `i` of the stream (batch 0 opens and funds the accounts).
fn batch(i: u64) -> Vec<Op> {
    if i == 0 {
        let mut ops: Vec<Op> =
            (1..=ACCOUNTS).map(|n| Op::Open { id: 0, name: format!("a{n}"), key: [1; 32] }).collect();
        ops.extend((1..=ACCOUNTS).map(|to| Op::Transfer {
            from: MAIN,
            to,
            amount_msat: 1_000_000,
            nonce: 0,
            mac: None,
        }));
        return ops;
    }
    let mut next = xorshift(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let size = 1 + next() % 500;
    let mut ops: Vec<Op> = (0..size)
        .map(|_| Op::Transfer {
            from: 1 + next() % ACCOUNTS,
            to: 1 + next() % ACCOUNTS,
            amount_msat: 1 + next() % 20_000,
            nonce: 0,
            mac: None,
        })
        .collect();
    let hash = |n: u64| {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&n.to_be_bytes());
        h
    };
    ops.push(Op::Hold {
        payment_hash: hash(i),
        account: 1 + next() % ACCOUNTS,
        amount_msat: 5_000,
        fee_limit_msat: 100,
    });
    // The hold of the batch before settles or is released.
    ops.push(if i % 2 == 0 {
        Op::Settle { payment_hash: hash(i - 1), fee_paid_msat: Some(i % 101) }
    } else {
        Op::Release { payment_hash: hash(i - 1) }
    });
    ops
}

fn open(path: &Path, engine: Engine) -> Accounts {
    Accounts::load(&Store::open(path).expect("open the store"), engine).expect("load the ledger")
}

fn child(path: &Path, start: u64) {
    let ledger = open(path, Accounts::default_engine());
    let mut out = std::io::stdout().lock();
    for i in start.. {
        ledger.apply(batch(i), i, SPENDABLE).expect("child: stored");
        writeln!(out, "ack {i}").and_then(|()| out.flush()).expect("child: report");
    }
}

type View = (Vec<boltbox_node::accounts::AccountView>, Vec<([u8; 32], boltbox_node::accounts::Hold)>, u64);

fn view(ledger: &Accounts) -> View {
    let mut holds = ledger.holds();
    holds.sort_by_key(|(hash, _)| *hash);
    (ledger.list(), holds, ledger.tracked_msat())
}

fn main() {
    if let Ok(path) = std::env::var("BOLTBOX_ACCOUNTS_CHILD") {
        let start = std::env::var("BOLTBOX_ACCOUNTS_START").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        child(Path::new(&path), start);
        return;
    }
    let kills: u64 = std::env::var("BOLTBOX_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.redb");
    // The oracle applies the same stream, sequentially, in its own store.
    let oracle = open(&dir.path().join("oracle.redb"), Engine::Sequential);
    let mut applied = 0u64; // batches 0..applied are in the ledger
    let mut random = xorshift(0x5eed);
    let exe = std::env::current_exe().expect("exe");
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .env("BOLTBOX_ACCOUNTS_CHILD", &path)
            .env("BOLTBOX_ACCOUNTS_START", applied.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let wanted = 1 + random() % 8;
        let mut last_ack = None;
        for _ in 0..wanted {
            let line = lines.next().expect("the child reports").expect("read");
            last_ack = line.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok());
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // Acknowledgements still in the pipe count too.
        for line in lines.map_while(Result::ok) {
            last_ack = line.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok()).or(last_ack);
        }
        let acked = last_ack.expect("an acknowledgement") + 1;
        let ledger = open(&path, Engine::Sequential);
        let tracked = ledger.check().unwrap_or_else(|e| panic!("round {round}: the invariant: {e}"));
        while applied < acked {
            oracle.apply(batch(applied), applied, SPENDABLE).expect("oracle");
            applied += 1;
        }
        if view(&ledger) != view(&oracle) {
            // The batch after the last acknowledged one may be durable too, never more.
            oracle.apply(batch(applied), applied, SPENDABLE).expect("oracle");
            applied += 1;
            assert_eq!(
                view(&ledger),
                view(&oracle),
                "round {round}: the ledger is not the stream's first {applied} batches"
            );
        }
        assert_eq!(tracked, oracle.tracked_msat());
        drop(ledger);
    }
    println!(
        "accounts crash: {kills} kills, {applied} batches, every acknowledged batch present, invariant held"
    );
}

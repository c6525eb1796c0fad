//! Crash consistency of the group-committing store: a child process writes under load from
//! several threads and reports every acknowledged write through a pipe; the parent kills it
//! with SIGKILL at a random moment, reopens the store, and checks that every acknowledged write
//! is present and intact and that no stored value is torn. Repeated 60 times on one store.
//!
//! `harness = false`: the same binary is the parent (normally) and the writer (when
//! `BOLTBOX_CRASH_CHILD` names the store file).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boltbox_node::Store;
use ldk_node::lightning::util::persist::KVStoreSync;

const KILLS: usize = 60;
const WRITERS: usize = 8;
const VALUE_LEN: usize = 1024;
/// Each round's writers start their sequence numbers here times the round, so that keys of
/// different rounds never collide and "later" always means a larger number.
const ROUND_STRIDE: u64 = 1 << 32;

/// A value that says who wrote it and ends in a checksum, so a torn or mixed value is seen.
fn value(writer: usize, seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_LEN);
    v.extend_from_slice(&(writer as u64).to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ writer as u64 | 1;
    while v.len() < VALUE_LEN - 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    let sum = fnv(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// (writer, seq) of an intact value; `None` if it is torn.
fn check(v: &[u8]) -> Option<(usize, u64)> {
    if v.len() != VALUE_LEN {
        return None;
    }
    let writer = u64::from_le_bytes(v[0..8].try_into().ok()?) as usize;
    let seq = u64::from_le_bytes(v[8..16].try_into().ok()?);
    (value(writer, seq) == v).then_some((writer, seq))
}

/// The writer: each thread writes new keys (`w{t}-{seq}`) and overwrites its `hot{t}` key,
/// then reports `ack t seq` on stdout. Runs until killed.
fn child(path: &Path, start_seq: u64) {
    let store = Store::open(path).expect("child: open");
    let out = Arc::new(Mutex::new(std::io::stdout()));
    std::thread::scope(|scope| {
        for t in 0..WRITERS {
            let (store, out) = (store.clone(), out.clone());
            scope.spawn(move || {
                for seq in start_seq.. {
                    let v = value(t, seq);
                    KVStoreSync::write(&store, "crash", "new", &format!("w{t}-{seq}"), v.clone())
                        .expect("write");
                    KVStoreSync::write(&store, "crash", "hot", &format!("hot{t}"), v).expect("write");
                    let mut out = out.lock().expect("stdout");
                    writeln!(out, "ack {t} {seq}").expect("pipe");
                    out.flush().expect("pipe");
                }
            });
        }
    });
}

/// A small deterministic PRNG for the kill timing (reproducible with BOLTBOX_CRASH_SEED).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().expect("exe");
    let seed = std::env::var("BOLTBOX_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    let mut rng = Rng(seed | 1);
    // The highest acknowledged seq of each writer's hot key, over all rounds.
    let mut hot_floor: HashMap<usize, u64> = HashMap::new();
    let mut total_acks = 0usize;
    for round in 1..=KILLS as u64 {
        let mut child = Command::new(&exe)
            .env("BOLTBOX_CRASH_CHILD", &path)
            .env("BOLTBOX_CRASH_START", (round * ROUND_STRIDE).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("pipe");
        let (tx, rx) = std::sync::mpsc::channel::<(usize, u64)>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace().skip(1);
                let (Some(t), Some(s)) = (parts.next(), parts.next()) else { continue };
                if tx.send((t.parse().expect("writer"), s.parse().expect("seq"))).is_err() {
                    break;
                }
            }
        });
        // After the first ack (the store is open and writing), kill at a random moment in the
        // next 0–40 ms: mid-commit, mid-fsync, between batches.
        let first = rx.recv_timeout(Duration::from_secs(30)).expect("the child acknowledged nothing");
        let kill_at = Instant::now() + Duration::from_micros(rng.below(40_000));
        while Instant::now() < kill_at {
            std::hint::spin_loop();
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader");
        let acks: Vec<(usize, u64)> = std::iter::once(first).chain(rx.try_iter()).collect();
        total_acks += acks.len();

        let store = Store::open(&path).expect("reopen after SIGKILL");
        for &(t, seq) in &acks {
            let key = format!("w{t}-{seq}");
            let v = KVStoreSync::read(&store, "crash", "new", &key)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {key} lost: {e:?}"));
            assert_eq!(check(&v), Some((t, seq)), "round {round}: {key} is torn");
            let floor = hot_floor.entry(t).or_insert(seq);
            *floor = (*floor).max(seq);
        }
        for (&t, &floor) in &hot_floor {
            let hot = KVStoreSync::read(&store, "crash", "hot", &format!("hot{t}")).expect("hot key");
            let (writer, seq) = check(&hot).unwrap_or_else(|| panic!("round {round}: hot{t} is torn"));
            assert!(writer == t && seq >= floor, "round {round}: hot{t} went back from {floor} to {seq}");
        }
        for key in KVStoreSync::list(&store, "crash", "new").expect("list") {
            let v = KVStoreSync::read(&store, "crash", "new", &key).expect("read a listed key");
            assert!(check(&v).is_some(), "round {round}: {key} is torn");
        }
        store.close();
    }
    println!("crash_consistency: {KILLS} SIGKILLs, {total_acks} acknowledged writes present and intact");
    println!("test result: ok. 1 passed; 0 failed");
}

fn main() {
    match std::env::var_os("BOLTBOX_CRASH_CHILD") {
        Some(path) => {
            let start = std::env::var("BOLTBOX_CRASH_START").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            child(Path::new(&path), start);
        }
        None => parent(),
    }
}

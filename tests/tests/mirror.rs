//! The live mirror (node/src/mirror, docs/MIRROR.md), on real files and a real node:
//!
//! - a store's mirror, once in sync, reads back as exactly the store's state, also while
//!   writers go on and across a compaction;
//! - a mirror on a small filesystem that fills: every write is still acknowledged (the card's
//!   commit alone), the mirror says "lost" with the reason, and once there is room again it
//!   resynchronises by itself and reads back as the store;
//! - a node with a channel whose data dir is destroyed after payments and restored from its
//!   mirror: same node id, the channel's balance what both sides saw, payments go on, no
//!   force-close.
//!
//! The tmpfs tests need root, as CI has.

use std::path::{Path, PathBuf};

use boltbox_node::backup::{self, Workers};
use boltbox_node::mirror::{MirrorSetup, MirrorStatus, read_mirror};
use boltbox_node::{Network, NodeConfig, NodeEvent, Seed, Store};
use boltbox_tests::{BitcoinD, Deadline, TestNode, Tmpfs, mine_and_sync, mirrored_state, wait_until};
use ldk_node::lightning::util::persist::KVStoreSync;

const SAT: u64 = 1000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn setup(dir: &Path, seed: &Seed, workers: &Workers) -> MirrorSetup {
    let config = NodeConfig { network: Network::Regtest, ..NodeConfig::default() };
    MirrorSetup {
        dir: dir.to_path_buf(),
        seed: seed.clone(),
        node_id: seed.node_id(Network::Regtest).expect("node id"),
        config,
        workers: workers.clone(),
    }
}

fn write(store: &Store, key: &str, value: Vec<u8>) {
    KVStoreSync::write(store, "monitors", "", key, value).expect("write");
}

fn wait_in_sync(store: &Store, what: &str) -> u64 {
    wait_until(Deadline::in_secs(60), what, || match store.mirror_status() {
        MirrorStatus::InSync { counter, .. } => Some(counter),
        _ => None,
    })
}

/// A runtime for sealing, a temp dir, a seed and a new store of its node in the dir.
fn fresh_store() -> (tokio::runtime::Runtime, tempfile::TempDir, Seed, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = Seed::generate();
    let node_id = seed.node_id(Network::Regtest).expect("node id");
    let store = Store::create_new(&dir.path().join("node.redb"), Some(&node_id)).expect("store");
    (runtime(), dir, seed, store)
}

#[test]
fn a_mirror_in_sync_reads_back_as_the_store_while_writers_go_on() {
    let (rt, dir, seed, store) = fresh_store();
    let workers = Workers(rt.handle().clone());
    for i in 0..50u32 {
        write(&store, &format!("before{i}"), vec![i as u8; 1000]);
    }
    store.mirror_to(setup(&dir.path().join("stick"), &seed, &workers));
    // Writers from four threads while the first snapshot is written.
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let store = store.clone();
            s.spawn(move || {
                for i in 0..100u32 {
                    write(&store, &format!("t{t}-{i}"), vec![(t + i) as u8; 300]);
                    if i % 10 == 0 {
                        KVStoreSync::remove(&store, "monitors", "", &format!("t{t}-{}", i / 2), false)
                            .expect("remove");
                    }
                }
            });
        }
    });
    wait_in_sync(&store, "the mirror in sync");
    write(&store, "after", vec![7; 10]);
    let read = read_mirror(&dir.path().join("stick"), &seed, Network::Regtest, &workers).expect("read");
    let state = mirrored_state(&store);
    assert_eq!(read.contents.snapshot, state, "the mirror is the store's state, to the last commit");
    assert_eq!(read.contents.header.commit_counter, store.commit_counter().expect("counter"));
    assert!(read.frames > 0, "commits came from the log, not only the snapshot");
    assert_eq!(read.torn_bytes, 0);
    // Logs are grown in 1 MiB steps ahead of their frames: an append changes no file length
    // (on FAT a cut in a flush that grew the file leaves it unreadable at its end).
    let logs: Vec<u64> = std::fs::read_dir(dir.path().join("stick").join(boltbox_node::mirror::MIRROR_DIR))
        .expect("mirror dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().expect("log").len())
        .collect();
    assert!(!logs.is_empty() && logs.iter().all(|len| len % (1 << 20) == 0), "log lengths {logs:?}");
    assert!(
        matches!(
            read_mirror(&dir.path().join("stick"), &Seed::generate(), Network::Regtest, &workers),
            Err(boltbox_node::mirror::MirrorError::Nothing(_))
        ),
        "another seed is another node: none of its files are there"
    );
}

fn copy_dir(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if keep(&name) {
            std::fs::copy(entry.path(), to.join(&name)).expect("copy");
        }
    }
}

#[test]
fn a_mirror_that_fell_behind_the_card_is_refused_not_restored() {
    let (rt, dir, seed, store) = fresh_store();
    let workers = Workers(rt.handle().clone());
    let stick = dir.path().join("stick");
    store.mirror_to(setup(&stick, &seed, &workers));
    write(&store, "first", vec![1; 100]);
    let old_end = wait_in_sync(&store, "the mirror in sync");
    // The stick as it was while in sync: a chain up to here.
    let files = stick.join(boltbox_node::mirror::MIRROR_DIR);
    let old = dir.path().join("old");
    copy_dir(&files, &old.join(boltbox_node::mirror::MIRROR_DIR), |_| true);
    // The card goes on without the mirror, then the mirror resyncs: a new log begins further on.
    store.stop_mirror();
    for i in 0..10u32 {
        write(&store, &format!("unmirrored{i}"), vec![2; 100]);
    }
    store.mirror_to(setup(&stick, &seed, &workers));
    write(&store, "resync", vec![3; 100]);
    wait_in_sync(&store, "in sync again");
    // The stick as a cut in the middle of the resync leaves it: the old chain and the new log,
    // without the new snapshot.
    copy_dir(&files, &old.join(boltbox_node::mirror::MIRROR_DIR), |name| name.ends_with(".log"));
    match read_mirror(&old, &seed, Network::Regtest, &workers) {
        Err(boltbox_node::mirror::MirrorError::Behind { chain, newer_log }) => {
            assert!(chain <= old_end + 1 && newer_log > chain, "{chain} {newer_log}");
        }
        other => panic!("a stale chain must not be offered: {other:?}"),
    }
    // The stick itself, resynced, is the store.
    let read = read_mirror(&stick, &seed, Network::Regtest, &workers).expect("read");
    assert_eq!(read.contents.snapshot, mirrored_state(&store));
}

#[test]
fn a_retired_mirror_is_neither_read_nor_offered_until_it_is_chosen_again() {
    let (rt, dir, seed, store) = fresh_store();
    let workers = Workers(rt.handle().clone());
    let stick = dir.path().join("stick");
    store.mirror_to(setup(&stick, &seed, &workers));
    write(&store, "first", vec![1; 100]);
    wait_in_sync(&store, "the mirror in sync");
    // Another stick chosen: the node goes on without this one.
    store.stop_mirror();
    boltbox_node::mirror::retire(&stick).expect("retire");
    write(&store, "without_it", vec![2; 100]);
    assert!(matches!(
        read_mirror(&stick, &seed, Network::Regtest, &workers),
        Err(boltbox_node::mirror::MirrorError::Retired(_))
    ));
    let node_id = seed.node_id(Network::Regtest).expect("node id");
    assert!(boltbox_node::mirror::newest_snapshot(&stick, Network::Regtest, Some(&node_id)).is_none());
    // Chosen again: current again.
    store.mirror_to(setup(&stick, &seed, &workers));
    write(&store, "again", vec![3; 100]);
    wait_in_sync(&store, "in sync again");
    let read = read_mirror(&stick, &seed, Network::Regtest, &workers).expect("read");
    assert_eq!(read.contents.snapshot, mirrored_state(&store));
}

#[test]
fn a_card_that_went_back_never_writes_over_the_mirrors_later_state() {
    let (rt, dir, seed, store) = fresh_store();
    let workers = Workers(rt.handle().clone());
    let stick = dir.path().join("stick");
    write(&store, "first", vec![1; 100]);
    // An older state of this history: a backup taken here, restored onto a new card later.
    let (early, identity) = (store.snapshot().expect("snapshot"), store.identity().expect("identity"));
    for i in 0..5u32 {
        write(&store, &format!("later{i}"), vec![2; 100]);
    }
    store.mirror_to(setup(&stick, &seed, &workers));
    write(&store, "mirrored", vec![3; 100]);
    wait_in_sync(&store, "the mirror in sync");
    let later = mirrored_state(&store);
    store.close();

    let card = dir.path().join("new-card.redb");
    Store::create_from_snapshot(&card, &early, &identity).expect("the older state on a new card");
    let went_back = Store::open(&card).expect("open");
    went_back.mirror_to(setup(&stick, &seed, &workers));
    let reason = wait_until(Deadline::in_secs(30), "the mirror refused", || {
        write(&went_back, "after", vec![4; 100]);
        match went_back.mirror_status() {
            MirrorStatus::Lost { reason, .. } => Some(reason),
            _ => None,
        }
    });
    assert!(reason.contains("later state of this node"), "{reason}");
    let read =
        read_mirror(&stick, &seed, Network::Regtest, &workers).expect("the later state is still there");
    assert_eq!(read.contents.snapshot, later, "not written over");
}

/// Files as the writer names them, made by hand: a snapshot at `base` holding `entries`, and a
/// log at `base` holding `frames` (counter, key, value).
struct Stick<'a> {
    dir: PathBuf,
    seed: &'a Seed,
    node_id: String,
    workers: &'a Workers,
}

const LINEAGE: &str = "0123456789abcdef0123456789abcdef";

impl Stick<'_> {
    fn stem(&self, base: u64) -> PathBuf {
        let files = self.dir.join(boltbox_node::mirror::MIRROR_DIR);
        std::fs::create_dir_all(&files).expect("mkdir");
        let node8: String = self.node_id.chars().take(8).collect();
        files.join(format!("mirror-{node8}-{LINEAGE}-{base:020}"))
    }

    fn snap(&self, base: u64, entries: &[(&str, &[u8])]) {
        let snapshot = boltbox_node::store::Snapshot {
            commit_counter: base,
            entries: entries
                .iter()
                .map(|(k, v)| boltbox_node::store::Entry {
                    primary: "monitors".into(),
                    secondary: String::new(),
                    key: k.to_string(),
                    value: v.to_vec(),
                })
                .collect(),
        };
        let config = NodeConfig { network: Network::Regtest, ..NodeConfig::default() };
        let input = backup::BackupInput {
            seed: self.seed,
            config: &config,
            node_id: &self.node_id,
            lineage_id: LINEAGE,
            snapshot: &snapshot,
            created_at: 1_700_000_000 + base,
        };
        let mut bytes = Vec::new();
        backup::write_backup(&input, &mut bytes, self.workers, &mut |_| {}).expect("snapshot");
        std::fs::write(self.stem(base).with_extension("snap"), bytes).expect("write");
    }

    fn log(&self, base: u64, frames: &[(u64, &str, &[u8])]) {
        use boltbox_node::mirror::log::{LogOp, LogSealer};
        let (_, sealer) =
            LogSealer::new(self.seed, Network::Regtest, &self.node_id, LINEAGE, base).expect("log");
        let mut file = sealer.prefix().to_vec();
        for (counter, key, value) in frames {
            let op = LogOp::Put { key: format!("monitors\0\0{key}").into_bytes(), value: value.to_vec() };
            file.extend(sealer.seal(*counter, 1_700_000_000 + counter, &[op]).expect("seal"));
        }
        std::fs::write(self.stem(base).with_extension("log"), file).expect("write");
    }

    fn read(&self) -> Result<boltbox_node::mirror::MirrorContents, boltbox_node::mirror::MirrorError> {
        read_mirror(&self.dir, self.seed, Network::Regtest, self.workers)
    }
}

fn value_of(read: &boltbox_node::mirror::MirrorContents, key: &str) -> Option<Vec<u8>> {
    read.contents.snapshot.entries.iter().find(|e| e.key == key).map(|e| e.value.clone())
}

#[test]
fn a_chain_follows_the_later_history_and_a_log_left_off_it_means_behind() {
    let rt = runtime();
    let workers = Workers(rt.handle().clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = Seed::generate();
    let node_id = seed.node_id(Network::Regtest).expect("node id");
    let stick = Stick { dir: dir.path().to_path_buf(), seed: &seed, node_id, workers: &workers };
    stick.snap(0, &[("a", b"0")]);
    // A restart at commit 2: the log of the first run had a frame 3 the card never committed
    // (the stick's flush came first); the second run's log begins at 2.
    stick.log(0, &[(1, "k1", b"x"), (2, "k2", b"y"), (3, "k3", b"never committed")]);
    stick.log(2, &[(3, "k3", b"z"), (4, "k4", b"w")]);
    let read = stick.read().expect("read");
    assert_eq!(read.contents.header.commit_counter, 4);
    assert_eq!(value_of(&read, "k3"), Some(b"z".to_vec()), "the later history from commit 2 on");
    assert_eq!((value_of(&read, "k1"), value_of(&read, "k4")), (Some(b"x".to_vec()), Some(b"w".to_vec())));

    // A log that begins where no chain reaches: commits the mirror lacks.
    stick.log(10, &[(11, "k11", b"v")]);
    match stick.read() {
        Err(boltbox_node::mirror::MirrorError::Behind { chain: 4, newer_log: 10 }) => {}
        other => panic!("behind, not {other:?}"),
    }

    // Its snapshot written: the current chain is read; the older snapshot (its log pruned
    // later) stays behind but does not stand in the way.
    stick.snap(10, &[("a", b"0"), ("k10", b"t")]);
    let read = stick.read().expect("read");
    assert_eq!(read.contents.header.commit_counter, 11);
    assert_eq!(value_of(&read, "k11"), Some(b"v".to_vec()));
    std::fs::remove_file(stick.stem(0).with_extension("log")).expect("prune the old log");
    std::fs::remove_file(stick.stem(2).with_extension("log")).expect("prune the old log");
    assert_eq!(
        stick.read().expect("read").contents.header.commit_counter,
        11,
        "a leftover snapshot is read past"
    );
}

#[test]
fn a_full_mirror_is_lost_without_failing_a_write_and_resyncs_once_there_is_room() {
    let rt = runtime();
    let workers = Workers(rt.handle().clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let stick = Tmpfs::mount(&dir.path().join("stick"), "4M");
    let seed = Seed::generate();
    let node_id = seed.node_id(Network::Regtest).expect("node id");
    let store = Store::create_new(&dir.path().join("node.redb"), Some(&node_id)).expect("store");
    store.mirror_to(setup(stick.path(), &seed, &workers));
    write(&store, "first", vec![1; 100]);
    wait_in_sync(&store, "the mirror in sync");

    let filler = stick.fill("filler", 0);
    // Every write is acknowledged by the card alone once the mirror cannot take it.
    for i in 0..20u32 {
        write(&store, &format!("while-full{i}"), vec![2; 64 * 1024]);
    }
    let reason = wait_until(Deadline::in_secs(30), "the mirror lost", || match store.mirror_status() {
        MirrorStatus::Lost { reason, .. } => Some(reason),
        _ => None,
    });
    assert!(reason.contains("No space left"), "the reason says why: {reason}");

    std::fs::remove_file(&filler).expect("free the stick");
    // Resyncs come with commits: keep writing until the mirror is in sync again.
    let mut i = 0u32;
    wait_until(Deadline::in_secs(60), "the mirror in sync again", || {
        i += 1;
        write(&store, &format!("after{i}"), vec![3; 100]);
        matches!(store.mirror_status(), MirrorStatus::InSync { .. }).then_some(())
    });
    write(&store, "last", vec![4; 100]);
    let read = read_mirror(stick.path(), &seed, Network::Regtest, &workers).expect("read");
    assert_eq!(read.contents.snapshot, mirrored_state(&store), "resynced to the store's state");
}

#[test]
fn a_node_restored_from_its_mirror_keeps_its_channel_and_pays_on() {
    let rt = runtime();
    let workers = Workers(rt.handle().clone());
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let mut alice = TestNode::start(&bitcoind, "mirror-alice", vec![]);
    let bob = TestNode::start(&bitcoind, "mirror-bob", vec![]);
    let stick = tempfile::tempdir().expect("stick");
    let alice_setup = MirrorSetup {
        dir: stick.path().to_path_buf(),
        seed: alice.seed().clone(),
        config: alice.config.clone(),
        node_id: alice.node().node_id(),
        workers: workers.clone(),
    };
    alice.node().store().mirror_to(alice_setup.clone());
    alice.fund(&bitcoind, 1_000_000);
    bob.fund(&bitcoind, 100_000);
    mine_and_sync(&bitcoind, 6, &[&alice, &bob], 60);
    for node in [&alice, &bob] {
        node.wait_status("on-chain funds", 60, |s| s.balances.onchain_spendable_sats >= 100_000);
    }
    alice.open_channel_to(&bitcoind, &bob, 500_000);
    mine_and_sync(&bitcoind, 6, &[&alice, &bob], 60);
    alice.wait_status("the channel usable", 60, |s| s.usable_channels() == 1);
    bob.wait_status("the channel usable", 60, |s| s.usable_channels() == 1);

    let bob_id = bob.node().node_id();
    let mut paid = 0;
    for i in 1..=10u64 {
        alice.node().keysend(&bob_id, i * 1000 * SAT).expect("keysend");
        alice.wait_event("a payment", 60, |e| match e {
            NodeEvent::PaymentSent { .. } => Some(()),
            NodeEvent::PaymentFailed { reason, .. } => panic!("payment failed: {reason}"),
            _ => None,
        });
        paid += i * 1000;
    }
    // PaymentSent comes with the preimage, before the last commitment round trip: wait for
    // both sides to settle (bob keeps what he received less the 1% reserve).
    let reserve = 500_000 / 100 * SAT;
    let bob_before = bob.wait_status("bob holds every payment", 30, |s| {
        s.channels[0].local_msat == paid * SAT - reserve && s.balances.in_flight_htlc_msat == 0
    });
    let bob_before = bob_before.channels[0].clone();
    let before = alice.wait_status("no HTLC in flight", 30, |s| s.balances.in_flight_htlc_msat == 0);
    let before = before.channels[0].clone();
    wait_in_sync(alice.node().store(), "alice's mirror in sync");
    let alice_id = alice.node().node_id();

    // The card dies: the data dir is destroyed while the node is down, and restored from the
    // mirror alone (the seed is the owner's words).
    let seed = alice.seed().clone();
    let network = alice.config.network;
    alice.restart_after(|config| {
        std::fs::remove_dir_all(&config.data_dir).expect("destroy the data dir");
        let read = read_mirror(stick.path(), &seed, network, &workers).expect("read the mirror");
        backup::restore_backup(&config.data_dir, network, &read.contents, &seed).expect("restore");
    });
    assert_eq!(alice.node().node_id(), alice_id, "the same node");
    let after = alice.wait_status("the channel usable again", 90, |s| s.usable_channels() == 1);
    let channel = &after.channels[0];
    assert_eq!(channel.local_msat, before.local_msat, "the balance both sides saw");
    assert_eq!(channel.channel_id, before.channel_id);
    let bob_view = bob.wait_status("bob sees alice back", 60, |s| s.usable_channels() == 1);
    assert_eq!(bob_view.channels[0].local_msat, bob_before.local_msat, "bob agrees");
    let received: u64 = bob
        .node()
        .list_payments()
        .iter()
        .filter(|p| p.kind == "keysend" && p.direction == "inbound" && p.status == "succeeded")
        .filter_map(|p| p.amount_msat)
        .sum();
    assert_eq!(received, paid * SAT, "every payment alice made before the card died reached bob");

    alice.node().keysend(&bob_id, 5000 * SAT).expect("keysend after the restore");
    alice.wait_event("a payment after the restore", 60, |e| match e {
        NodeEvent::PaymentSent { .. } => Some(()),
        NodeEvent::PaymentFailed { reason, .. } => panic!("payment failed: {reason}"),
        _ => None,
    });
    assert!(bitcoind.mempool().expect("mempool").is_empty(), "nothing was broadcast: no force-close");
    assert!(bob.node().list_channels().iter().all(|c| c.usable), "bob's channel is open and usable");
}

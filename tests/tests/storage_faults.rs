//! The store and the restore on a real filesystem that runs out of space (a small tmpfs: these
//! tests need root, as CI has, and fail rather than skip without it).
//!
//! - A full disk makes the store fail a commit: nothing is acknowledged, the store says it is
//!   failing, and once space is freed the same writes are stored and later ones too (redb marks
//!   a handle that saw an I/O error unusable for good; the store reopens it).
//! - A restore that runs out of space leaves the data dir as it was before.
//! - A node whose data partition fills while it pays: LDK persists channel monitors under its
//!   channel locks, so payments (and anything that lists channels) wait; the node's status
//!   still says why, and once space is freed the payments complete.

use std::sync::Arc;

use boltbox_node::backup::{self, DataDirStore, RecoveredRestore, Workers};
use boltbox_node::config::ChainSource;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use boltbox_node::{Alert, DataDir, Network, NodeConfig, Seed, Storage, Store, StoreHealth};
use boltbox_tests::{BitcoinD, Deadline, TestNode, Tmpfs, mine_and_sync, try_wait_until, wait_until};
use ldk_node::lightning::util::persist::KVStoreSync;

#[test]
fn a_full_disk_stalls_the_store_without_acknowledging_and_freeing_space_heals_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&dir.path().join("disk"), "32M");
    let store = Store::create_new(&disk.path().join("node.redb"), Some("02ab")).expect("store");
    KVStoreSync::write(&store, "monitors", "", "m0", vec![1; 4096]).expect("a first write");
    let filler = disk.fill("filler", 0);

    // A write that needs room: it waits, unacknowledged, while the store says why.
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 1..40u32 {
                KVStoreSync::write(&store, "monitors", "", &format!("m{i}"), vec![i as u8; 64 * 1024])?;
            }
            Ok::<(), ldk_node::lightning::io::Error>(())
        })
    };
    let reason = wait_until(Deadline::in_secs(60), "the store to report failing", || match store.health() {
        StoreHealth::Failing { reason, .. } => Some(reason),
        StoreHealth::Healthy => None,
    });
    assert!(reason.to_lowercase().contains("space"), "the reason names the full disk: {reason}");
    assert!(!writer.is_finished(), "no write is acknowledged while the disk is full");

    std::fs::remove_file(filler).expect("free the space");
    writer.join().expect("writer thread").expect("every write is stored once there is room");
    assert_eq!(store.health(), StoreHealth::Healthy);
    KVStoreSync::write(&store, "monitors", "", "after", vec![7]).expect("later writes work too");
    store.close();
    let reopened = Store::open_existing(&disk.path().join("node.redb")).expect("reopen");
    assert_eq!(KVStoreSync::list(&reopened, "monitors", "").expect("list").len(), 41);
}

#[test]
fn a_restore_that_runs_out_of_space_leaves_the_data_dir_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = Seed::generate();
    let source = DataDir::new(&dir.path().join("source"), Network::Regtest);
    let store = source.create_node(&seed).expect("node");
    for i in 0..300u32 {
        let value: Vec<u8> =
            (0..8192u32).map(|j| (j.wrapping_mul(2_654_435_761) >> 7) as u8 ^ i as u8).collect();
        KVStoreSync::write(&store, "monitors", "", &format!("m{i}"), value).expect("write");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
    let config = NodeConfig {
        network: Network::Regtest,
        data_dir: source.path().to_path_buf(),
        chain: ChainSource::Electrum { url: "tcp://127.0.0.1:60401".into() },
        ..NodeConfig::default()
    };
    let node_id = seed.node_id(Network::Regtest).expect("id");
    let backup_dir = dir.path().join("backups");
    let written = backup::backup_to_dir(
        &backup::BackupSource {
            store: &store,
            seed: &seed,
            config: &config,
            node_id: &node_id,
            workers: Workers(runtime.handle().clone()),
        },
        &backup_dir,
        1,
        &mut |_| {},
    )
    .expect("backup");
    store.close();
    let contents = backup::open_backup(
        Arc::new(std::fs::read(&written.path).expect("read")),
        &seed,
        &Workers(runtime.handle().clone()),
        &mut |_| {},
    )
    .expect("open");

    // A card with room for the seed but not for the 2.4 MB store.
    let disk = Tmpfs::mount(&dir.path().join("small"), "1M");
    let data = disk.path().join("data");
    let err = backup::restore_backup(&data, Network::Regtest, &contents, &seed).expect_err("no room");
    assert!(err.to_string().to_lowercase().contains("space"), "{err}");
    assert_eq!(backup::recover_restore(&data).expect("settle"), None, "nothing left to settle");
    assert_eq!(backup::data_dir_store(&data).expect("store"), DataDirStore::None);
    assert!(Seed::load(&data).expect("seed").is_none(), "no seed without its store");
    drop(disk);

    // With room, the same restore goes through; a staging dir left by a cut-short one is undone.
    let roomy = dir.path().join("roomy");
    std::fs::create_dir_all(roomy.join(backup::STAGING_DIR)).expect("a leftover staging dir");
    assert_eq!(backup::recover_restore(&roomy).expect("settle"), Some(RecoveredRestore::Undone));
    backup::restore_backup(&roomy, Network::Regtest, &contents, &seed).expect("restore");
}

#[test]
fn a_node_whose_disk_fills_while_paying_says_so_and_pays_once_there_is_room() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&dir.path().join("disk"), "256M");
    let mut a = TestNode::start_with_storage(&bitcoind, "full-alice", vec![], Storage::Boltbox, disk.path());
    let b = TestNode::start(&bitcoind, "full-bob", vec![]);
    a.fund(&bitcoind, 1_000_000);
    b.fund(&bitcoind, 100_000);
    mine_and_sync(&bitcoind, 6, &[&a, &b], 60);
    a.wait_status("A funded", 60, |s| s.balances.onchain_spendable_sats >= 900_000);
    b.wait_status("B funded", 60, |s| s.balances.onchain_spendable_sats >= 90_000);
    a.open_channel_to(&bitcoind, &b, 400_000);
    mine_and_sync(&bitcoind, 6, &[&a, &b], 60);
    a.wait_status("A's channel usable", 60, |s| s.usable_channels() == 1);
    b.wait_status("B's channel usable", 60, |s| s.usable_channels() == 1);

    let filler = disk.fill("filler", 0);
    let (stop, paid) = (AtomicBool::new(false), AtomicU64::new(0));
    let failing = std::thread::scope(|scope| {
        // Payments, one at a time, until the full disk stalls one (each commits several channel
        // updates; redb reuses its freed pages for a while before it needs new room).
        let payer = scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let invoice =
                    b.node().create_invoice(Some(1_000_000), "on a full disk", 3600).expect("invoice");
                a.node().pay_invoice(&invoice, None).expect("pay");
                let n = paid.fetch_add(1, Ordering::SeqCst) + 1;
                while !stop.load(Ordering::SeqCst) && b.node().refresh_status().payments.received < n {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        });
        let failing = try_wait_until(Deadline::in_secs(180), || {
            a.node().status().alerts.into_iter().find(|alert| matches!(alert, Alert::StoreFailing { .. }))
        });
        // Space is freed whatever was seen: the payer may be waiting on the store.
        stop.store(true, Ordering::SeqCst);
        std::fs::remove_file(&filler).expect("free the space");
        payer.join().expect("the payer");
        failing
    });
    let failing = failing.expect("A's status to say its store cannot write, within 180 s");
    assert!(failing.to_string().to_lowercase().contains("space"), "the alert names the full disk: {failing}");

    // Every payment started goes through once there is room.
    let started = paid.load(Ordering::SeqCst);
    assert!(started > 0);
    a.wait_status("A sent them all, its store healthy again", 120, |s| {
        s.payments.sent == started
            && !s.alerts.iter().any(|alert| matches!(alert, Alert::StoreFailing { .. }))
    });
    b.wait_status("B received them all", 60, |s| s.payments.received == started);
}

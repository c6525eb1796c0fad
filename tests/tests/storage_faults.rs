//! The store and the restore on a real filesystem that runs out of space (a small tmpfs: these
//! tests need root, as CI has, and fail rather than skip without it).
//!
//! - A full disk makes the store fail a commit: nothing is acknowledged, the store says it is
//!   failing, and once space is freed the same writes are stored and later ones too (redb marks
//!   a handle that saw an I/O error unusable for good; the store reopens it).
//! - A restore that runs out of space leaves the data dir as it was before.

use std::sync::Arc;

use boltbox_node::backup::{self, DataDirStore, RecoveredRestore, Workers};
use boltbox_node::config::ChainSource;
use boltbox_node::{DataDir, Network, NodeConfig, Seed, Store, StoreHealth};
use boltbox_tests::{Deadline, Tmpfs, wait_until};
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

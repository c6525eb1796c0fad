//! Backups end to end. On regtest: a node with a channel and payments is backed up while
//! payments flow, then again at rest; its data dir is destroyed; seed + file bring back the same
//! node id, channel and balances, and it pays and is paid again; the backup taken under load is
//! then refused as older than the restored data dir. On real filesystems (tmpfs mounts, so
//! these need root, as CI has; they fail, not skip, without it): a stick that fills up mid-write,
//! one that became read-only, and one pulled mid-write; earlier backups survive and no partial
//! file ever has a backup's name.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use boltbox_node::backup::{
    BackupError, BackupSource, Workers, backup_to_dir, backups_in, open_backup, restore_backup,
};
use boltbox_node::config::ChainSource;
use boltbox_node::{Network, NodeConfig, NodeEvent, Seed, Store};
use boltbox_tests::{BitcoinD, Deadline, TestNode, Tmpfs, mine_and_sync, wait_until};
use ldk_node::lightning::util::persist::KVStoreSync;

const SAT: u64 = 1000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn open(path: &Path, seed: &Seed) -> Result<boltbox_node::backup::BackupContents, BackupError> {
    let rt = runtime();
    let contents = open_backup(
        Arc::new(std::fs::read(path).expect("read backup")),
        seed,
        &Workers(rt.handle().clone()),
        &mut |_| {},
    );
    rt.shutdown_timeout(Duration::from_secs(5));
    contents
}

/// `payer` pays `payee` an invoice of `sats` and both see it done.
fn pay(payer: &mut TestNode, payee: &mut TestNode, sats: u64, what: &str) {
    let invoice = payee.node().create_invoice(Some(sats * SAT), what, 3600).expect("invoice");
    payer.node().pay_invoice(&invoice, None).expect("pay");
    payer.wait_event(what, 60, |e| match e {
        NodeEvent::PaymentSent { .. } => Some(()),
        NodeEvent::PaymentFailed { reason, .. } => panic!("{what}: payment failed: {reason}"),
        _ => None,
    });
    payee.wait_event(what, 30, |e| {
        matches!(e, NodeEvent::PaymentReceived { amount_msat, .. } if *amount_msat == sats * SAT)
            .then_some(())
    });
}

/// (channel id, our side) for every channel, sorted.
fn channels(status: &boltbox_node::Status) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> =
        status.channels.iter().map(|c| (c.channel_id.clone(), c.local_msat)).collect();
    v.sort();
    v
}

#[test]
fn a_node_backed_up_while_paying_is_restored_from_seed_and_file_and_pays_again() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let mut b = TestNode::start(&bitcoind, "bob", vec![]);
    let mut a = TestNode::start(&bitcoind, "alice", vec![b.peer_address().to_string()]);
    assert_eq!(
        a.seed().node_id(Network::Regtest).expect("derived id"),
        a.node().node_id(),
        "the node id derived from the seed is the one ldk-node uses"
    );
    a.fund(&bitcoind, 1_000_000);
    b.fund(&bitcoind, 100_000);
    mine_and_sync(&bitcoind, 6, &[&a, &b], 60);
    for node in [&a, &b] {
        node.wait_status("on-chain funds", 60, |s| s.balances.onchain_spendable_sats >= 100_000);
    }
    a.open_channel_to(&bitcoind, &b, 500_000);
    mine_and_sync(&bitcoind, 6, &[&a, &b], 60);
    a.wait_status("A's channel usable", 60, |s| s.usable_channels() == 1);
    b.wait_status("B's channel usable", 60, |s| s.usable_channels() == 1);
    pay(&mut a, &mut b, 40_000, "A pays B");
    b.wait_status("B can pay back", 30, |s| s.channels.iter().any(|c| c.local_msat >= 10_001 * SAT));
    pay(&mut b, &mut a, 10_000, "B pays A");

    // Backups while A keysends to B one payment after another.
    let usb = tempfile::tempdir().expect("stick");
    let stick = usb.path().join("boltbox-backups");
    let b_id = b.node().node_id();
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let under_load = std::thread::scope(|s| {
        let payer = s.spawn(|| {
            let node = a.node();
            while !stop.load(Ordering::Relaxed) {
                let before = node.refresh_status().payments.sent;
                node.keysend(&b_id, 1_000 * SAT).expect("keysend");
                wait_until(Deadline::in_secs(30), "keysend done", || {
                    (node.status().payments.sent > before).then_some(())
                });
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
        wait_until(Deadline::in_secs(60), "payments flowing", || {
            (sent.load(Ordering::Relaxed) >= 2).then_some(())
        });
        // Back up again and again until payments completed in the meantime: each backup's
        // snapshot is taken with payments in flight.
        let from = sent.load(Ordering::Relaxed);
        let deadline = Deadline::in_secs(120);
        let mut written = Vec::new();
        while written.len() < 3 || sent.load(Ordering::Relaxed) < from + 2 {
            assert!(!deadline.passed(), "payments stalled while backing up");
            let w = a.node().backup_to_dir(a.seed(), &stick, 1000, &mut |_| {}).expect("backup under load");
            written.push(w);
        }
        stop.store(true, Ordering::Relaxed);
        payer.join().expect("payer");
        eprintln!(
            "{} backups while {} payments completed",
            written.len(),
            sent.load(Ordering::Relaxed) - from
        );
        written
    });
    let first = &under_load[0];
    let last = &under_load[under_load.len() - 1];
    assert!(
        last.header.commit_counter > first.header.commit_counter,
        "the node committed while the backups ran: {} then {}",
        first.header.commit_counter,
        last.header.commit_counter
    );
    for w in &under_load {
        let contents = open(&w.path, a.seed()).expect("a backup taken under load opens");
        assert_eq!(contents.header.node_id, a.node().node_id());
    }

    // At rest: everything settled on both sides, then the backup that is restored.
    let paid = sent.load(Ordering::Relaxed);
    // B received A's first invoice and every keysend.
    b.wait_status("B received every keysend", 60, |s| s.payments.received == paid + 1);
    let before = a.wait_status("A settled", 60, |s| {
        s.balances.in_flight_htlc_msat == 0 && s.channels.iter().all(|c| c.usable)
    });
    let started = Instant::now();
    let rest = a.node().backup_to_dir(a.seed(), &stick, 1000, &mut |_| {}).expect("backup at rest");
    eprintln!(
        "backup of the regtest node: {} bytes, store commit {}, {} entries, {:.0} ms \
         (snapshot to verified file), {:.0} ms with the call",
        rest.bytes,
        rest.header.commit_counter,
        open(&rest.path, a.seed()).expect("open").snapshot.entries.len(),
        rest.took.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let all = backups_in(&stick, Network::Regtest, &a.node().node_id()).expect("list");
    assert_eq!(all.len(), under_load.len() + 1);
    assert_eq!(all.last(), Some(&rest.path), "the newest sorts last");

    // The data dir is destroyed; seed + file restore it.
    let seed = a.seed().clone();
    let file = rest.path.clone();
    a.restart_after(|config| {
        let listing: Vec<String> = std::fs::read_dir(&config.data_dir)
            .expect("data dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        eprintln!("data dir before it is destroyed: {listing:?}");
        std::fs::remove_dir_all(&config.data_dir).expect("destroy the data dir");
        let contents = open(&file, &seed).expect("open");
        let report = restore_backup(&config.data_dir, Network::Regtest, &contents, &seed).expect("restore");
        assert_eq!(report.commit_counter, rest.header.commit_counter);
    });
    let after = a.wait_status("A back with its channel usable", 90, |s| {
        s.channels.len() == 1 && s.channels.iter().all(|c| c.usable)
    });
    assert_eq!(after.node_id, before.node_id);
    assert_eq!(channels(&after), channels(&before));
    assert_eq!(after.balances.lightning_sats, before.balances.lightning_sats);
    let onchain = a.wait_status("A's on-chain funds back", 60, |s| {
        s.balances.onchain_total_sats == before.balances.onchain_total_sats
    });
    assert_eq!(onchain.payments.sent, before.payments.sent);

    // It pays and is paid again.
    pay(&mut a, &mut b, 5_000, "A pays B after the restore");
    pay(&mut b, &mut a, 2_000, "B pays A after the restore");

    // The stale guard: a backup older than the restored data dir is refused.
    let older = under_load[0].path.clone();
    a.restart_after(|config| {
        let contents = open(&older, &seed).expect("open");
        let err = restore_backup(&config.data_dir, Network::Regtest, &contents, &seed).expect_err("older");
        assert!(matches!(err, BackupError::NotOlder { .. }), "{err}");
    });
    a.wait_status("A still fine", 90, |s| s.usable_channels() == 1);
}

/// A stopped node's store and seed, without a chain: what a stick backup reads.
struct Offline {
    _dir: tempfile::TempDir,
    stick: PathBuf,
    store: Store,
    seed: Seed,
    config: NodeConfig,
    node_id: String,
    runtime: tokio::runtime::Runtime,
    next: usize,
}

impl Offline {
    fn new() -> Offline {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("node.redb")).expect("store");
        let seed = Seed::generate();
        let config = NodeConfig {
            network: Network::Regtest,
            data_dir: dir.path().join("data"),
            chain: ChainSource::Esplora { url: "http://127.0.0.1:1".into() },
            ..NodeConfig::default()
        };
        let node_id = seed.node_id(Network::Regtest).expect("node id");
        let stick = dir.path().join("stick");
        Offline { stick, _dir: dir, store, seed, config, node_id, runtime: runtime(), next: 0 }
    }

    /// Adds `count` entries of 2 KiB of incompressible-looking bytes.
    fn grow(&mut self, count: usize) {
        for _ in 0..count {
            let i = self.next;
            self.next += 1;
            let value: Vec<u8> =
                (0..2048u32).map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i as u8).collect();
            KVStoreSync::write(&self.store, "monitors", "", &format!("m{i}"), value).expect("write");
        }
    }

    fn backup(&self, progress: &mut dyn FnMut(u8)) -> Result<boltbox_node::backup::Written, BackupError> {
        let source = BackupSource {
            store: &self.store,
            seed: &self.seed,
            config: &self.config,
            node_id: &self.node_id,
            workers: Workers(self.runtime.handle().clone()),
        };
        backup_to_dir(&source, &self.stick, 1, progress)
    }

    /// Every file name in the stick, hidden ones included.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.stick)
            .expect("stick")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

#[test]
fn a_stick_that_fills_up_mid_write_keeps_the_previous_backup() {
    let mut node = Offline::new();
    let _mount = Tmpfs::mount(&node.stick, "1m");
    node.grow(250);
    let first = node.backup(&mut |_| {}).expect("the first backup fits");
    assert!(first.bytes > 400_000 && first.bytes < 700_000, "{} bytes", first.bytes);
    // Twice the state does not fit next to the first backup; keep = 1, yet the first stays.
    node.grow(250);
    let err = node.backup(&mut |_| {}).expect_err("no space");
    let io = err.io_error().unwrap_or_else(|| panic!("an I/O error, got {err}"));
    assert_eq!(io.kind(), std::io::ErrorKind::StorageFull, "{err}");
    let name = first.path.file_name().expect("name").to_string_lossy().into_owned();
    assert_eq!(node.files(), vec![name], "only the first backup; no partial file");
    let contents = open(&first.path, &node.seed).expect("the first backup still opens");
    assert_eq!(contents.header, first.header);
}

#[test]
fn a_stick_that_became_read_only_keeps_the_previous_backup() {
    let mut node = Offline::new();
    let mount = Tmpfs::mount(&node.stick, "4m");
    node.grow(20);
    let first = node.backup(&mut |_| {}).expect("first backup");
    mount.remount_read_only();
    node.grow(20);
    let err = node.backup(&mut |_| {}).expect_err("read-only");
    let io = err.io_error().unwrap_or_else(|| panic!("an I/O error, got {err}"));
    assert_eq!(io.kind(), std::io::ErrorKind::ReadOnlyFilesystem, "{err}");
    assert_eq!(node.files().len(), 1);
    open(&first.path, &node.seed).expect("the first backup still opens");
}

#[test]
fn a_stick_pulled_mid_write_fails_and_leaves_no_backup_name_behind() {
    let mut node = Offline::new();
    let mount = Tmpfs::mount(&node.stick, "4m");
    node.grow(200);
    let mut pulled = false;
    let err = node
        .backup(&mut |percent| {
            // Chunks are being sealed and written: the stick goes away (a lazy unmount detaches
            // it the way a yanked stick's filesystem disappears from its mount point).
            if percent >= 20 && !pulled {
                pulled = true;
                let status = Command::new("umount").arg("-l").arg(mount.path()).status().expect("umount");
                assert!(status.success(), "umount: {status}");
            }
        })
        .expect_err("pulled");
    assert!(pulled, "the stick was pulled during the write");
    assert!(err.io_error().is_some(), "a file error, got {err}");
    assert!(node.files().is_empty(), "nothing under the mount point: {:?}", node.files());
}

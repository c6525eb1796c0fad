//! The remote mirror on LDK's Versioned Storage Service (node/src/mirror/vss, docs/MIRROR.md):
//! a real vss-server (the published crate) on a real PostgreSQL cluster, both on loopback
//! (`boltbox_tests::Vss`), and real nodes:
//!
//! - a store's remote mirror, once in sync, reads back as exactly the store's state, also while
//!   writers go on;
//! - one writer per node: a second store of the same seed (another history, an older copy of
//!   the card, or a clone that writes first) is refused, and says why;
//! - a node with a channel pays on while vss-server is killed and PostgreSQL crashes (no
//!   payment fails; the mirror is "lost" with the reason and how far behind, then catches up),
//!   and after its data dir is destroyed it is restored from VSS: the same channel, both sides
//!   agreeing, no force-close.

use std::path::Path;

use boltbox_node::backup::{self, Workers};
use boltbox_node::mirror::vss::{VssAuth, VssSetup, VssStatus, read_vss, vss_head};
use boltbox_node::{Network, NodeConfig, NodeEvent, Seed, Store};
use boltbox_tests::{BitcoinD, Deadline, TestNode, Vss, mine_and_sync, mirrored_state, wait_until};
use ldk_node::lightning::util::persist::KVStoreSync;

const SAT: u64 = 1000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// A keysend of `i` thousand sat from `alice` to `bob_id`, which must succeed; returns the sats.
fn pay(alice: &mut TestNode, bob_id: &str, i: u64) -> u64 {
    alice.node().keysend(bob_id, i * 1000 * SAT).expect("keysend");
    alice.wait_event("a payment", 90, |e| match e {
        NodeEvent::PaymentSent { .. } => Some(()),
        NodeEvent::PaymentFailed { reason, .. } => panic!("payment {i} failed: {reason}"),
        _ => None,
    });
    i * 1000
}

fn setup(vss: &Vss, seed: &Seed, config: NodeConfig, workers: &Workers) -> VssSetup {
    VssSetup {
        url: vss.url(),
        auth: VssAuth::Signature,
        certificate: None,
        node_id: seed.node_id(config.network).expect("node id"),
        seed: seed.clone(),
        config,
        workers: workers.clone(),
    }
}

/// A regtest node's config whose data dir (where the device's VSS record is kept) is `dir`.
fn regtest(dir: &Path) -> NodeConfig {
    NodeConfig { network: Network::Regtest, data_dir: dir.to_path_buf(), ..NodeConfig::default() }
}

fn write(store: &Store, key: &str, value: Vec<u8>) {
    KVStoreSync::write(store, "monitors", "", key, value).expect("write");
}

fn wait_in_sync(store: &Store, what: &str) -> u64 {
    wait_until(Deadline::in_secs(90), what, || match store.vss_status() {
        VssStatus::InSync { counter } => Some(counter),
        VssStatus::Refused { reason } => panic!("{what}: refused: {reason}"),
        _ => None,
    })
}

fn wait_refused(store: &Store, what: &str) -> String {
    boltbox_tests::try_wait_until(Deadline::in_secs(60), || match store.vss_status() {
        VssStatus::Refused { reason } => Some(reason),
        _ => None,
    })
    .unwrap_or_else(|| panic!("timed out waiting for {what}: {:?}", store.vss_status()))
}

fn new_store(dir: &std::path::Path, seed: &Seed) -> Store {
    let node_id = seed.node_id(Network::Regtest).expect("node id");
    Store::create_new(&dir.join("node.redb"), Some(&node_id)).expect("store")
}

#[test]
fn a_remote_mirror_in_sync_reads_back_as_the_store_and_a_second_writer_is_refused() {
    let vss = Vss::start().expect("vss");
    let rt = runtime();
    let workers = Workers(rt.handle().clone());
    let seed = Seed::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path(), &seed);
    for i in 0..50u32 {
        write(&store, &format!("before{i}"), vec![i as u8; 1000]);
    }
    // A snapshot of several chunks (512 KiB each) goes up while writers go on.
    write(&store, "large", vec![9; 3 << 20]);
    store.mirror_to_vss(setup(&vss, &seed, regtest(dir.path()), &workers));
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
    wait_in_sync(&store, "the remote mirror in sync");
    // In sync, each commit waits for VSS: the one after it is on the server when it returns.
    write(&store, "after", vec![7; 10]);
    let counter = store.commit_counter().expect("counter");
    assert_eq!(store.vss_status(), VssStatus::InSync { counter });
    let read = read_vss(&setup(&vss, &seed, regtest(dir.path()), &workers), Network::Regtest, &workers)
        .expect("read")
        .mirror;
    assert_eq!(
        read.contents.snapshot,
        mirrored_state(&store),
        "VSS holds the store's state, to the last commit"
    );
    assert_eq!(read.contents.header.commit_counter, counter);
    assert!(read.frames > 0, "commits came from the log, not only the snapshot");
    let head = vss_head(&setup(&vss, &seed, regtest(dir.path()), &workers)).expect("head").expect("a mirror");
    assert_eq!((head.0, head.2), (counter, true));
    let other = Seed::generate();
    assert!(
        vss_head(&setup(&vss, &other, regtest(dir.path()), &workers)).expect("head").is_none(),
        "another seed is another user and store on the server: it sees nothing of this node"
    );

    // 1. Another history of the same node (the seed set up anew on another box).
    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let fresh = new_store(fresh_dir.path(), &seed);
    fresh.mirror_to_vss(setup(&vss, &seed, regtest(fresh_dir.path()), &workers));
    write(&fresh, "x", vec![1]);
    let reason = wait_refused(&fresh, "a second device with another history refused");
    assert!(reason.contains("this node's state from another device"), "{reason}");
    assert!(
        boltbox_node::mirror::vss::refused(fresh_dir.path()).is_some(),
        "the refusal is marked on the card"
    );

    // 2. An older backup restored onto this card: VSS holds a later state of its history.
    let older_dir = tempfile::tempdir().expect("tempdir");
    let older = copy_of(&store, older_dir.path());
    std::fs::copy(
        dir.path().join(boltbox_node::mirror::vss::DEVICE_FILE),
        older_dir.path().join(boltbox_node::mirror::vss::DEVICE_FILE),
    )
    .expect("the same device");
    for i in 0..5u32 {
        write(&store, &format!("later{i}"), vec![1; 10]);
    }
    older.mirror_to_vss(setup(&vss, &seed, regtest(older_dir.path()), &workers));
    write(&older, "x", vec![1]);
    let reason = wait_refused(&older, "an older copy of the card refused");
    assert!(reason.contains("VSS is ahead of this card"), "{reason}");
    // 3. A copy of the card on another box (the same history, the same commit): another device.
    let copy_dir = tempfile::tempdir().expect("tempdir");
    let copy = copy_of(&store, copy_dir.path());
    copy.mirror_to_vss(setup(&vss, &seed, regtest(copy_dir.path()), &workers));
    write(&copy, "x", vec![1]);
    let reason = wait_refused(&copy, "a copy of the card on another box refused");
    assert!(reason.contains("another device runs this node"), "{reason}");
    // The device that writes there is not disturbed by any of them.
    write(&store, "still", vec![2]);
    assert!(matches!(store.vss_status(), VssStatus::InSync { .. }), "{:?}", store.vss_status());

    // 4. Another box restored from VSS while this one goes on writing: this one's next commit
    //    after the restore tells the other that it still runs the node; the other is refused.
    let late_dir = tempfile::tempdir().expect("tempdir");
    let late = restored_from_vss(&vss, &seed, late_dir.path(), &workers);
    write(&store, "after-the-other-restore", vec![5]);
    late.mirror_to_vss(setup(&vss, &seed, regtest(late_dir.path()), &workers));
    write(&late, "x", vec![1]);
    let reason = wait_refused(&late, "a box restored before the original's last commit refused");
    assert!(reason.contains("another device runs this node"), "{reason}");

    // 5. Another box restored from VSS takes the node over: it writes; this one's next write is
    //    refused, and never acknowledged (the store holds it: fail closed) until it is closed.
    let next_dir = tempfile::tempdir().expect("tempdir");
    let next = restored_from_vss(&vss, &seed, next_dir.path(), &workers);
    next.mirror_to_vss(setup(&vss, &seed, regtest(next_dir.path()), &workers));
    write(&next, "taken-over", vec![6]);
    wait_in_sync(&next, "the box that took the node over in sync");
    let before = store.commit_counter().expect("counter");
    let held = {
        let store = store.clone();
        std::thread::spawn(move || KVStoreSync::write(&store, "monitors", "", "held", vec![7]))
    };
    wait_refused(&store, "the box the node was taken from refused");
    wait_until(Deadline::in_secs(30), "the held write committed on the card", || {
        (store.commit_counter().ok()? > before).then_some(())
    });
    assert!(!held.is_finished(), "a write VSS refused is not acknowledged");
    assert!(boltbox_node::mirror::vss::refused(dir.path()).is_some(), "the refusal is marked on the card");
    store.close();
    let answer = held.join().expect("the writer");
    assert!(
        answer.is_err_and(|e| e.to_string().contains("another device runs this node")),
        "the writer hears why"
    );
    assert!(
        matches!(next.vss_status(), VssStatus::InSync { .. }),
        "the new box goes on: {:?}",
        next.vss_status()
    );
}

/// A copy of `store` (its state and history) in `to`.
fn copy_of(store: &Store, to: &Path) -> Store {
    let snapshot = store.snapshot().expect("snapshot");
    let identity = store.identity().expect("identity");
    Store::create_from_snapshot(&to.join("node.redb"), &snapshot, &identity).expect("copy");
    Store::open(&to.join("node.redb")).expect("open the copy")
}

/// A store in `dir` restored from VSS, as `boltbox restore --vss` leaves it (the takeover
/// recorded).
fn restored_from_vss(vss: &Vss, seed: &Seed, dir: &Path, workers: &Workers) -> Store {
    let read =
        read_vss(&setup(vss, seed, regtest(dir), workers), Network::Regtest, workers).expect("read VSS");
    backup::restore_backup(dir, Network::Regtest, &read.mirror.contents, seed).expect("restore");
    boltbox_node::mirror::vss::record_takeover(dir, &read.takeover).expect("record the takeover");
    Store::open(&dir.join("node.redb")).expect("open the restored store")
}

#[test]
fn a_node_pays_through_vss_outages_and_is_restored_from_vss_with_its_channel() {
    let rt = runtime();
    let workers = Workers(rt.handle().clone());
    let mut vss = Vss::start().expect("vss");
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let mut alice = TestNode::start(&bitcoind, "vss-alice", vec![]);
    let bob = TestNode::start(&bitcoind, "vss-bob", vec![]);
    let alice_setup = setup(&vss, alice.seed(), alice.config.clone(), &workers);
    alice.node().store().mirror_to_vss(alice_setup.clone());
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
    wait_in_sync(alice.node().store(), "alice's remote mirror in sync");

    let bob_id = bob.node().node_id();
    let mut paid = 0;
    for i in 1..=3 {
        paid += pay(&mut alice, &bob_id, i);
    }
    // vss-server killed while payments go on: none fails; the mirror says lost, and behind.
    vss.kill();
    for i in 4..=6 {
        paid += pay(&mut alice, &bob_id, i);
    }
    let (reason, behind) = wait_until(Deadline::in_secs(60), "the remote mirror lost", || {
        match alice.node().store().vss_status() {
            VssStatus::Lost { reason, behind, .. } => Some((reason, behind)),
            _ => None,
        }
    });
    assert!(reason.contains(&vss.url()) && behind > 0, "{reason}, {behind} behind");
    vss.resume().expect("vss-server back");
    wait_in_sync(alice.node().store(), "caught up after vss-server came back");
    paid += pay(&mut alice, &bob_id, 7);
    // PostgreSQL crashes (no checkpoint) and comes back: the same.
    vss.crash_postgres().expect("crash postgres");
    for i in 8..=9 {
        paid += pay(&mut alice, &bob_id, i);
    }
    wait_until(Deadline::in_secs(60), "the remote mirror lost with PostgreSQL", || {
        matches!(alice.node().store().vss_status(), VssStatus::Lost { .. }).then_some(())
    });
    vss.start_postgres().expect("postgres back");
    wait_in_sync(alice.node().store(), "caught up after PostgreSQL came back");
    paid += pay(&mut alice, &bob_id, 10);

    let reserve = 500_000 / 100 * SAT;
    let bob_before = bob.wait_status("bob holds every payment", 30, |s| {
        s.channels[0].local_msat == paid * SAT - reserve && s.balances.in_flight_htlc_msat == 0
    });
    let bob_before = bob_before.channels[0].clone();
    let before = alice.wait_status("no HTLC in flight", 30, |s| s.balances.in_flight_htlc_msat == 0);
    let before = before.channels[0].clone();
    wait_in_sync(alice.node().store(), "alice's remote mirror in sync at the end");
    let alice_id = alice.node().node_id();

    // The box is gone: a new card, the owner's words, and VSS.
    let seed = alice.seed().clone();
    let network = alice.config.network;
    alice.restart_after(|config| {
        std::fs::remove_dir_all(&config.data_dir).expect("destroy the data dir");
        let read = read_vss(&alice_setup, network, &workers).expect("read VSS");
        backup::restore_backup(&config.data_dir, network, &read.mirror.contents, &seed).expect("restore");
        boltbox_node::mirror::vss::record_takeover(&config.data_dir, &read.takeover)
            .expect("record the takeover");
    });
    assert_eq!(alice.node().node_id(), alice_id, "the same node");
    let after = alice.wait_status("the channel usable again", 90, |s| s.usable_channels() == 1);
    let channel = &after.channels[0];
    assert_eq!(channel.local_msat, before.local_msat, "the balance both sides saw");
    assert_eq!(channel.channel_id, before.channel_id);
    let bob_view = bob.wait_status("bob sees alice back", 60, |s| s.usable_channels() == 1);
    assert_eq!(bob_view.channels[0].local_msat, bob_before.local_msat, "bob agrees");
    // The restored card mirrors to VSS again, continuing the same history.
    alice.node().store().mirror_to_vss(alice_setup.clone());
    pay(&mut alice, &bob_id, 11);
    wait_in_sync(alice.node().store(), "the restored node's remote mirror in sync");
    assert!(bitcoind.mempool().expect("mempool").is_empty(), "nothing was broadcast: no force-close");
    assert!(bob.node().list_channels().iter().all(|c| c.usable), "bob's channel is open and usable");
}

#[test]
fn a_self_hosted_server_behind_tls_is_trusted_by_its_pinned_certificate_only() {
    let vss = Vss::start().expect("vss");
    let dir = tempfile::tempdir().expect("tempdir");
    let port: u16 =
        vss.url().trim_start_matches("http://127.0.0.1:").trim_end_matches("/vss").parse().expect("port");
    let proxy = boltbox_tests::TlsProxy::start(port, dir.path()).expect("TLS proxy");
    let rt = runtime();
    let workers = Workers(rt.handle().clone());
    let seed = Seed::generate();
    let pinned = |certificate: &[u8]| VssSetup {
        url: format!("https://127.0.0.1:{}/vss", proxy.port()),
        certificate: Some(certificate.to_vec()),
        ..setup(&vss, &seed, regtest(dir.path()), &workers)
    };

    // Pinned to the server's own certificate: in sync, and it reads back.
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(store_dir.path(), &seed);
    store.mirror_to_vss(pinned(proxy.certificate()));
    write(&store, "a", vec![1; 100]);
    wait_in_sync(&store, "in sync over TLS");
    write(&store, "b", vec![2; 100]);
    let read =
        read_vss(&pinned(proxy.certificate()), Network::Regtest, &workers).expect("read over TLS").mirror;
    assert_eq!(read.contents.snapshot, mirrored_state(&store));

    // Pinned to another certificate (the server was swapped, or someone is in the middle):
    // nothing is sent; the mirror is lost, and says why.
    let (other, _) = boltbox_tests::self_signed(dir.path(), "other").expect("another certificate");
    let store_dir = tempfile::tempdir().expect("tempdir");
    let stranger = new_store(store_dir.path(), &seed);
    stranger.mirror_to_vss(pinned(&other));
    write(&stranger, "c", vec![3; 100]);
    let reason =
        wait_until(Deadline::in_secs(60), "lost for the certificate", || match stranger.vss_status() {
            VssStatus::Lost { reason, .. } => Some(reason),
            _ => None,
        });
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    assert!(
        matches!(read_vss(&pinned(&other), Network::Regtest, &workers), Err(e) if e.to_string().to_lowercase().contains("certificate")),
        "a restore through it is refused too"
    );
    // Plain http to a TLS port is not TLS: refused as well, never sent in the clear.
    let mut plain = pinned(proxy.certificate());
    plain.url = format!("http://127.0.0.1:{}/vss", proxy.port());
    assert!(read_vss(&plain, Network::Regtest, &workers).is_err());
}

#[test]
fn puts_whose_answers_are_cut_are_found_applied_and_never_taken_for_another_device() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let vss = Vss::start().expect("vss");
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], vss.port()));
    let proxy = boltbox_tests::FaultProxy::start(target, boltbox_tests::Fault::Pass).expect("proxy");
    let rt = runtime();
    let workers = Workers(rt.handle().clone());
    let seed = Seed::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(dir.path(), &seed);
    let through_proxy = VssSetup {
        url: format!("http://127.0.0.1:{}/vss", proxy.port()),
        ..setup(&vss, &seed, regtest(dir.path()), &workers)
    };
    store.mirror_to_vss(through_proxy);
    write(&store, "first", vec![1; 100]);
    wait_in_sync(&store, "in sync");
    // Every answer is cut after the server applied the put: each write still returns (on the
    // card's commit), and the mirror is lost while no answer comes.
    proxy.set(boltbox_tests::Fault::CutEveryAnswer);
    for i in 0..10u32 {
        write(&store, &format!("cut{i}"), vec![i as u8; 100]);
    }
    wait_until(Deadline::in_secs(30), "lost while the answers are cut", || {
        matches!(store.vss_status(), VssStatus::Lost { .. }).then_some(())
    });
    proxy.set(boltbox_tests::Fault::Pass);
    wait_in_sync(&store, "in sync once answers come again");
    write(&store, "last", vec![2; 100]);
    let read = read_vss(&setup(&vss, &seed, regtest(dir.path()), &workers), Network::Regtest, &workers)
        .expect("read")
        .mirror;
    assert_eq!(read.contents.snapshot, mirrored_state(&store), "every commit on VSS once, in order");
    assert!(boltbox_node::mirror::vss::refused(dir.path()).is_none(), "its own puts never refused it");
}

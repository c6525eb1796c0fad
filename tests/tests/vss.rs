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

use std::sync::atomic::{AtomicBool, Ordering};

use boltbox_node::backup::{self, Workers};
use boltbox_node::mirror::vss::{VssAuth, VssSetup, VssStatus, read_vss, vss_head};
use boltbox_node::{Network, NodeConfig, NodeEvent, Seed, Store};
use boltbox_tests::{BitcoinD, Deadline, TestNode, Vss, mine_and_sync, wait_until};
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

fn regtest() -> NodeConfig {
    NodeConfig { network: Network::Regtest, ..NodeConfig::default() }
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
    wait_until(Deadline::in_secs(60), what, || match store.vss_status() {
        VssStatus::Refused { reason } => Some(reason),
        _ => None,
    })
}

fn new_store(dir: &std::path::Path, seed: &Seed) -> Store {
    let node_id = seed.node_id(Network::Regtest).expect("node id");
    Store::create_new(&dir.join("node.redb"), Some(&node_id)).expect("store")
}

/// The store's state without the keys the mirror leaves out.
fn mirrored_state(store: &Store) -> boltbox_node::store::Snapshot {
    let mut snapshot = store.snapshot().expect("snapshot");
    snapshot
        .entries
        .retain(|e| !(e.primary.is_empty() && e.secondary.is_empty() && e.key == "network_graph"));
    snapshot
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
    // A snapshot of several chunks (1 MiB each) goes up while writers go on.
    write(&store, "large", vec![9; 3 << 20]);
    store.mirror_to_vss(setup(&vss, &seed, regtest(), &workers));
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
    let read = read_vss(&setup(&vss, &seed, regtest(), &workers), Network::Regtest, &workers).expect("read");
    assert_eq!(
        read.contents.snapshot,
        mirrored_state(&store),
        "VSS holds the store's state, to the last commit"
    );
    assert_eq!(read.contents.header.commit_counter, counter);
    assert!(read.frames > 0, "commits came from the log, not only the snapshot");
    let head = vss_head(&setup(&vss, &seed, regtest(), &workers)).expect("head").expect("a mirror");
    assert_eq!((head.0, head.2), (counter, true));
    let other = Seed::generate();
    assert!(
        vss_head(&setup(&vss, &other, regtest(), &workers)).expect("head").is_none(),
        "another seed is another user and store on the server: it sees nothing of this node"
    );

    // A copy of the card as it is now: the same history at the same commit.
    let clone_dir = tempfile::tempdir().expect("tempdir");
    let copy = |to: &std::path::Path| {
        let snapshot = store.snapshot().expect("snapshot");
        let identity = store.identity().expect("identity");
        Store::create_from_snapshot(&to.join("node.redb"), &snapshot, &identity).expect("copy");
        Store::open(&to.join("node.redb")).expect("open the copy")
    };
    let older_dir = tempfile::tempdir().expect("tempdir");
    let older = copy(older_dir.path());
    for i in 0..5u32 {
        write(&store, &format!("later{i}"), vec![1; 10]);
    }
    wait_in_sync(&store, "in sync after later writes");

    // 1. Another history of the same node (the seed set up anew on another box).
    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let fresh = new_store(fresh_dir.path(), &seed);
    fresh.mirror_to_vss(setup(&vss, &seed, regtest(), &workers));
    write(&fresh, "x", vec![1]);
    let reason = wait_refused(&fresh, "a second device with another history refused");
    assert!(reason.contains("this node's state from another device"), "{reason}");
    // 2. An older copy of this card: VSS holds a later state.
    older.mirror_to_vss(setup(&vss, &seed, regtest(), &workers));
    write(&older, "x", vec![1]);
    let reason = wait_refused(&older, "an older copy of the card refused");
    assert!(reason.contains("VSS is ahead of this card"), "{reason}");
    // The device that writes there is not disturbed by either.
    write(&store, "still", vec![2]);
    assert!(matches!(store.vss_status(), VssStatus::InSync { .. }), "{:?}", store.vss_status());

    // 3. A clone at the very same commit takes the first write: the device it took it from is
    //    refused at its next write (the store's version moved without it), and says so.
    let clone = copy(clone_dir.path());
    clone.mirror_to_vss(setup(&vss, &seed, regtest(), &workers));
    write(&clone, "clone", vec![3]);
    wait_until(Deadline::in_secs(60), "the clone writes", || match clone.vss_status() {
        VssStatus::Refused { reason } => panic!("the clone was refused: {reason}"),
        VssStatus::Syncing { .. } | VssStatus::InSync { .. } => Some(()),
        VssStatus::Lost { .. } | VssStatus::Off => None,
    });
    wait_until(Deadline::in_secs(60), "the clone's first put", || {
        let read = read_vss(&setup(&vss, &seed, regtest(), &workers), Network::Regtest, &workers);
        // Until the clone's snapshot is up, the old generation still reads (the clone's log
        // continues it).
        read.ok()
            .filter(|r| r.contents.header.commit_counter >= store.commit_counter().unwrap_or(0))
            .map(|_| ())
    });
    let original_wrote = AtomicBool::new(false);
    for i in 0..20u32 {
        write(&store, &format!("original{i}"), vec![4]);
        original_wrote.store(true, Ordering::Relaxed);
        if matches!(store.vss_status(), VssStatus::Refused { .. }) {
            break;
        }
    }
    let reason = wait_refused(&store, "the device a clone took over from refused");
    assert!(reason.contains("another device runs this node"), "{reason}");
    assert!(
        original_wrote.load(Ordering::Relaxed),
        "every write of the original was acknowledged by its card"
    );
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
        backup::restore_backup(&config.data_dir, network, &read.contents, &seed).expect("restore");
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
        ..setup(&vss, &seed, regtest(), &workers)
    };

    // Pinned to the server's own certificate: in sync, and it reads back.
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = new_store(store_dir.path(), &seed);
    store.mirror_to_vss(pinned(proxy.certificate()));
    write(&store, "a", vec![1; 100]);
    wait_in_sync(&store, "in sync over TLS");
    write(&store, "b", vec![2; 100]);
    let read = read_vss(&pinned(proxy.certificate()), Network::Regtest, &workers).expect("read over TLS");
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

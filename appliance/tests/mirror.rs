//! The live mirror on a USB stick, and the SD card dying (issue 13, docs/MIRROR.md): the real
//! `boltbox run` service (Alice) on the link board, a stick (a small ext4 filesystem on a loop
//! device, which the test fills, fails into read-only and pulls out) under `[backup] sticks`,
//! a channel to a harness
//! node (Bob), and keysend payments streaming both ways through Alice's control socket and Bob's
//! node.
//!
//! 0. `boltbox mirror use` asks on the OLED ("mirror to sda1?"); B on the device chooses it.
//! 1. The mirror is in sync; the stick fills: `boltbox status` says the mirror is lost (with
//!    the reason, as an alert) while the payments go on; room again: in sync again. The stick
//!    fails (an ext4 error: read-only), then is pulled out: lost each time, for that reason;
//!    checked and put back under another name: in sync. No payment failed.
//! 2. Alice is SIGKILLed in the middle of the stream, her data dir destroyed, and restored with
//!    `boltbox restore --mirror` and her seed words onto an empty data dir.
//! 3. She comes back as the same node with the channel usable; every payment either side saw
//!    succeed is succeeded on the other side too; the channel's balances agree; payments go on;
//!    nothing is broadcast (no force-close) and Bob's channel stays open; the stick is her
//!    mirror again.
//!
//! Needs root for the stick's loop device, as CI has.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use boltbox::control::{Client, ControlError, Request, socket_path};
use boltbox_tests::{BitcoinD, Deadline, Ext4Stick, Rng, TestNode, try_wait_until, wait_until};
use serde_json::Value;

use boltbox_board::LinkClient;
use common::{Appliance, BOOT, SCREEN, SHORT_PRESS, cli, link_appliance, status, wait_screen, wait_status};

const SAT: u64 = 1000;
const CHANNEL_SATS: u64 = 1_000_000;
/// LDK's log line when it force-closes a channel whose ChannelManager is older than its monitor.
const STALE_MANAGER: &str = "A ChannelManager is stale compared to the current ChannelMonitor";

fn control(data_dir: &Path, request: &Request) -> Result<Value, ControlError> {
    let mut client = Client::connect(&socket_path(data_dir))?;
    client.set_timeout(Duration::from_secs(30))?;
    client.call(request)
}

/// Keysend payments by id (the payment hash on both sides) and status.
fn keysends(payments: &[Value]) -> BTreeMap<String, String> {
    payments
        .iter()
        .filter(|p| p["kind"] == "keysend")
        .filter_map(|p| Some((p["id"].as_str()?.to_string(), p["status"].as_str()?.to_string())))
        .collect()
}

fn bob_keysends(bob: &TestNode) -> BTreeMap<String, String> {
    keysends(
        serde_json::to_value(bob.node().list_payments())
            .ok()
            .and_then(|v| v.as_array().cloned())
            .as_deref()
            .unwrap_or_default(),
    )
}

fn alice_keysends(data_dir: &Path) -> BTreeMap<String, String> {
    control(data_dir, &Request::Payments)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .map(|p| keysends(&p))
        .unwrap_or_default()
}

fn mirror_state(status: &Value) -> &str {
    status["mirror"]["state"].as_str().unwrap_or("")
}

#[test]
fn a_node_whose_card_dies_comes_back_from_its_mirror_with_every_payment() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stick = Ext4Stick::new(&dir.path().join("stick.img"), 24);
    let alice_dir = dir.path().join("alice");
    std::fs::create_dir_all(&alice_dir).expect("dir");
    let (node, config, socket) = link_appliance(&bitcoind, &alice_dir, "alice");
    let sticks = common::with_sticks(&alice_dir, &config);
    stick.insert(&sticks.join("sda1"));
    let sda1 = stick.path().to_path_buf();
    let data_dir = node.data_dir.clone();
    let mut runs = 0;
    let start = |runs: &mut usize| {
        *runs += 1;
        Appliance::start(&config, alice_dir.join(format!("run{runs}.log")), None)
    };
    let mut alice = start(&mut runs);
    wait_status(&config, "alice running", BOOT, |s| s["running"] == true);

    // 0. The owner asks from the CLI; the stick is chosen only by B on the device.
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    let chosen = std::thread::scope(|scope| {
        let asked = scope.spawn(|| cli(&config, &["mirror", "use"]));
        wait_screen(&mut link, "mirror confirm", "mirror to sda1?", SCREEN);
        link.press(boltbox_board::Button::B, SHORT_PRESS).expect("B");
        asked.join().expect("the CLI")
    });
    let said = String::from_utf8_lossy(&chosen.stdout).to_string();
    assert!(chosen.status.success() && said.contains("on stick sda1"), "boltbox mirror use: {said}");
    assert!(sda1.join("boltbox-mirror").join("stick").is_file(), "the stick is marked");
    let bob = TestNode::start(&bitcoind, "bob", vec![]);
    let (alice_id, bob_id) = (common::status_node_id(&config), bob.node().node_id());

    // Alice opens to Bob, pushing half: both can pay.
    let address = control(&data_dir, &Request::NewAddress).expect("address");
    bitcoind.send_to(address.as_str().expect("an address"), 3 * CHANNEL_SATS).expect("fund alice");
    bob.fund(&bitcoind, 100_000);
    bitcoind.mine(6).expect("mine");
    wait_status(&config, "alice funded", BOOT, |s| {
        s["balances"]["onchain_spendable_sats"].as_u64().is_some_and(|v| v >= 2 * CHANNEL_SATS)
    });
    bob.wait_status("bob funded", 60, |s| s.balances.onchain_spendable_sats >= 100_000);
    control(
        &data_dir,
        &Request::OpenChannel {
            peer: bob.peer_address().to_string(),
            amount_sats: CHANNEL_SATS,
            push_msat: Some(CHANNEL_SATS * SAT / 2),
            announce: false,
        },
    )
    .expect("alice → bob");
    bitcoind.wait_for_mempool(1, Deadline::in_secs(60));
    bitcoind.mine(6).expect("mine");
    let usable = |s: &Value| s["channels"].as_array().is_some_and(|c| c.len() == 1 && c[0]["usable"] == true);
    wait_status(&config, "alice's channel usable", BOOT, usable);
    bob.wait_status("bob's channel usable", 60, |s| s.usable_channels() == 1);
    let in_sync = wait_status(&config, "the mirror in sync", BOOT, |s| mirror_state(s) == "in_sync");
    assert_eq!(in_sync["mirror"]["dir"], sda1.display().to_string());

    // The stream: keysend both ways every 50–300 ms; a payment whose payer is down is not made.
    let streaming = AtomicBool::new(true);
    let attempts = Mutex::new(0usize);
    let mut rng = Rng::from_env("BOLTBOX_MIRROR_SEED").0;
    let sdb1 = std::thread::scope(|scope| {
        // A failed check below ends the stream too, so that the scope (and the test) ends.
        let _stop = common::StopOnDrop(&streaming);
        scope.spawn(|| {
            while streaming.load(Ordering::SeqCst) {
                let amount_msat = (1_000 + rng.below(4_000)) * SAT;
                let made = if rng.below(2) == 0 {
                    control(&data_dir, &Request::Keysend { node_id: bob_id.clone(), amount_msat }).is_ok()
                } else {
                    bob.node().keysend(&alice_id, amount_msat).is_ok()
                };
                if made {
                    *attempts.lock().expect("attempts") += 1;
                }
                std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
            }
        });
        let made = || *attempts.lock().expect("attempts");
        wait_until(Deadline::in_secs(60), "payments streaming", || (made() >= 10).then_some(()));

        // 1. The stick fills, turns read-only, is pulled out: each time the mirror is lost and
        // the payments go on; the stick fixed, the mirror resyncs.
        let succeeded = |m: &BTreeMap<String, String>| m.values().filter(|s| *s == "succeeded").count();
        let lost_while_paying = |what: &str, because: &str| {
            // Promptly, and for this reason (a mirror lost before keeps its first time only).
            let lost = wait_status(&config, &format!("the mirror lost: {what}"), SCREEN, |s| {
                mirror_state(s) == "lost"
                    && s["mirror"]["reason"].as_str().is_some_and(|r| r.contains(because))
            });
            assert!(
                lost["alerts"].as_array().is_some_and(|a| a.iter().any(|a| a["kind"] == "mirror_lost")),
                "{what}: an alert says so: {lost}"
            );
            let before = succeeded(&bob_keysends(&bob));
            wait_until(Deadline::in_secs(60), "payments succeeding while the mirror is lost", || {
                (succeeded(&bob_keysends(&bob)) >= before + 5).then_some(())
            });
            assert_eq!(mirror_state(&status(&config).expect("status")), "lost", "{what}: still lost");
        };
        let in_sync_again = |dir: &Path| {
            let back =
                wait_status(&config, "the mirror in sync again", BOOT, |s| mirror_state(s) == "in_sync");
            assert_eq!(back["mirror"]["dir"], dir.display().to_string());
        };
        let filler = stick.fill("filler", 0);
        lost_while_paying("the stick is full", "No space left");
        std::fs::remove_file(&filler).expect("room on the stick again");
        in_sync_again(&sda1);

        stick.fail_read_only();
        lost_while_paying("the stick failed", "Read-only file system");
        // Pulled: its files may still be open in the service, but it is gone from its place.
        stick.pull();
        lost_while_paying("the stick is pulled out", "the mirror stick (sda1) is not inserted");
        // The service lets go of the stick's files; the owner checks it and puts it back.
        wait_until(Deadline::in_secs(60), "the pulled stick's files closed", || {
            stick.released().then_some(())
        });
        stick.check();
        let sdb1 = sticks.join("sdb1");
        stick.insert(&sdb1);
        in_sync_again(&sdb1);
        let failed = |m: &BTreeMap<String, String>| m.values().filter(|s| *s == "failed").count();
        assert_eq!(
            (failed(&alice_keysends(&data_dir)), failed(&bob_keysends(&bob))),
            (0, 0),
            "no payment failed because of the mirror"
        );

        // 2. The card dies in the middle of the stream.
        let at = made();
        wait_until(Deadline::in_secs(60), "more payments", || (made() >= at + 10).then_some(()));
        let _ = alice.child.kill();
        alice.child.wait().expect("the killed service");
        streaming.store(false, Ordering::SeqCst);
        sdb1
    });
    let words = std::fs::read_to_string(data_dir.join("seed.words")).expect("the owner's seed words");
    std::fs::remove_dir_all(&data_dir).expect("the card is gone");
    let seed_file = dir.path().join("words");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&seed_file)
            .expect("seed file");
        f.write_all(words.as_bytes()).expect("seed file");
    }
    let restored = cli(
        &config,
        &[
            "restore",
            "--mirror",
            &sdb1.display().to_string(),
            "--seed-file",
            &seed_file.display().to_string(),
            "--yes",
        ],
    );
    let said =
        String::from_utf8_lossy(&restored.stdout).to_string() + &String::from_utf8_lossy(&restored.stderr);
    assert!(restored.status.success(), "boltbox restore --mirror: {said}");
    assert!(said.contains("from the live mirror"), "{said}");
    assert!(said.contains("The mirror goes on on"), "the stick stays the mirror: {said}");
    common::skip_seed_reminder(&data_dir);

    // 3. Back, with every payment. Unless the SIGKILL landed between ldk-node's write of a
    // channel monitor update and its next ChannelManager write: LDK then force-closes the
    // channel at the start (rust-lightning#4286, docs/RELIABILITY.md). The mirror is exactly as
    // current as the card, so it restores that window too; the kill storm counts the same close.
    let mut alice = start(&mut runs);
    let back = try_wait_until(Deadline::in_secs(BOOT.as_secs()), || {
        if alice.log().contains(STALE_MANAGER) {
            return Some(false);
        }
        status(&config).filter(|s| s["running"] == true && usable(s)).map(|_| true)
    });
    let node = wait_status(&config, "alice's node id", BOOT, |s| {
        s["node_id"].as_str().is_some_and(|id| !id.is_empty())
    });
    assert_eq!(node["node_id"].as_str(), Some(alice_id.as_str()), "the same node");
    match back {
        Some(true) => {}
        Some(false) => {
            println!(
                "LDK's stale-ChannelManager close after the kill (rust-lightning#4286): the checks that need the channel are skipped"
            );
            let _ = alice.child.kill();
            return;
        }
        None => panic!("alice not running again with her channel:\n{}", alice.log()),
    }
    bob.wait_status("bob's channel usable again", 120, |s| s.usable_channels() == 1);
    let settled = try_wait_until(Deadline::in_secs(120), || {
        let (a, b) = (alice_keysends(&data_dir), bob_keysends(&bob));
        let pending = a.values().chain(b.values()).any(|s| s == "pending");
        (!pending).then_some((a, b))
    });
    let (a, b) = settled.expect("every payment settles after the restore");
    for (id, bob_saw) in &b {
        if bob_saw == "succeeded" {
            assert_eq!(a.get(id).map(String::as_str), Some("succeeded"), "payment {id}: bob saw it succeed");
        }
    }
    for (id, alice_saw) in &a {
        if alice_saw == "succeeded" {
            assert_eq!(
                b.get(id).map(String::as_str),
                Some("succeeded"),
                "payment {id}: alice saw it succeed"
            );
        }
    }
    // One more payment each way.
    control(&data_dir, &Request::Keysend { node_id: bob_id.clone(), amount_msat: 7_000 * SAT })
        .expect("alice pays");
    bob.node().keysend(&alice_id, 7_000 * SAT).expect("bob pays");
    wait_until(Deadline::in_secs(60), "both new payments succeeded", || {
        let ok = |m: &BTreeMap<String, String>| m.values().filter(|s| *s == "succeeded").count();
        (ok(&alice_keysends(&data_dir)) >= ok(&a) + 2).then_some(())
    });
    assert!(bitcoind.mempool().expect("mempool").is_empty(), "nothing broadcast: no force-close");
    assert!(bob.node().list_channels().iter().all(|c| c.usable), "bob's channel is open and usable");
    let mirrored =
        wait_status(&config, "the mirror in sync after the restore", BOOT, |s| mirror_state(s) == "in_sync");
    assert_eq!(mirrored["mirror"]["dir"], sdb1.display().to_string(), "the same stick");
    let _ = alice.child.kill();
}

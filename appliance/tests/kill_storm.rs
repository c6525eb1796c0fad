//! Kill storm: two `boltbox run` services on regtest with a channel between them, a third node
//! (the harness's own ldk-node) with a channel to the first, and payments streaming both ways
//! and through the first (a forward, for its fee ledger) while one service is SIGKILLed at
//! random moments: while payments are in flight, while it starts, while it stops, during a
//! backup, and while its store's writes and flushes fail (EIO or ENOSPC from a fault library
//! preloaded into every service); half of those faults end in a kill, the other half heal, and
//! the node must say "cannot save state" meanwhile and go on by itself afterwards. After each kill the service is started again and must come back to running with its
//! channels usable; at the end, once every payment has settled:
//!
//! - every payment one side saw succeed is succeeded on the other side too (none lost), and
//!   each service counts its payments (the earnings screen's sent and recv) as its list does;
//! - every node's Lightning balance moved by exactly what the succeeded payments say (the
//!   amounts and fees as the *other* side recorded them);
//! - the router's fee ledger holds exactly the fees its forwards earned;
//! - no channel was closed: every node still lists its channels, and bitcoind's mempool is empty
//!   (a force-close broadcasts a commitment transaction; nothing is mined during the storm).
//!
//! One force-close is not boltbox's to prevent: a kill between ldk-node's write of a
//! ChannelMonitor update and its next write of the ChannelManager leaves the manager behind the
//! monitor, and LDK 0.2 force-closes such a channel when it starts (its "ChannelManager is stale"
//! error; rust-lightning#4286, open upstream; no funds are lost, the channel is closed). The storm
//! counts these, ends its round there (the closed channel's HTLCs resolve on chain only after
//! their timeouts), checks what still holds (no payment succeeded on one side and failed on the
//! other), and starts a fresh round until all kills are made. Any other force-close fails.
//!
//! `BOLTBOX_KILLS` sets the number of kills (`make test` runs a few, `make reliability` 200) and
//! `BOLTBOX_STORM_SEED` the random seed (printed, so that a failing storm can be run again). The
//! table of figures is printed at the end (docs/RELIABILITY.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use boltbox::control::{Client, ControlError, Request, socket_path};
use boltbox_node::NodeConfig;
use boltbox_tests::{BitcoinD, Deadline, Rng, TestNode, try_wait_until, wait_until};
use ldk_node::lightning_invoice::Bolt11Invoice;
use serde_json::Value;

mod common;
use common::{Appliance, BOOT, link_appliance, sdcard_shim, status, wait_status, with_sticks, write_config};

const SAT: u64 = 1000;
/// Channel capacities; half is pushed to the other side at open so that both can pay.
const CHANNEL_SATS: u64 = 2_000_000;
/// Kills in `make test` unless `BOLTBOX_KILLS` says otherwise.
const DEFAULT_KILLS: usize = 8;
/// A payment settles, or a restarted node resolves what was in flight.
const SETTLE: Duration = Duration::from_secs(120);

/// One of the two services.
struct Service {
    name: &'static str,
    dir: PathBuf,
    node: NodeConfig,
    config: PathBuf,
    socket: PathBuf,
    run: Option<Appliance>,
    runs: usize,
    /// The fault library's control file: "EIO" or "ENOSPC" in it fails the store's writes.
    fault: PathBuf,
}

impl Service {
    fn new(bitcoind: &BitcoinD, dir: PathBuf, name: &'static str) -> Service {
        std::fs::create_dir_all(&dir).expect("dir");
        let (node, config, socket) = link_appliance(bitcoind, &dir, name);
        let fault = dir.join("fault");
        Service { name, dir, node, config, socket, run: None, runs: 0, fault }
    }

    /// Writes the config again with `trusted_peers` (reconnected to quickly after restarts) and
    /// a USB stick for backups.
    fn trust(&mut self, trusted_peers: Vec<String>) {
        self.node.trusted_peers = trusted_peers;
        self.config = write_config(&self.dir, &self.node, &self.socket);
        std::fs::create_dir_all(with_sticks(&self.dir, &self.config).join("sda1")).expect("stick");
    }

    fn stick(&self) -> PathBuf {
        self.dir.join("usb").join("sda1")
    }

    /// Starts the service with the fault library (`shim`) preloaded on its data dir, no delay.
    fn start(&mut self, shim: &Path) {
        self.runs += 1;
        let log = self.dir.join(format!("run{}.log", self.runs));
        let preload = format!("LD_PRELOAD={}", shim.display());
        let prefix = format!("BOLTBOX_FSYNC_PATH_PREFIX={}", self.node.data_dir.display());
        let fault = format!("BOLTBOX_FAULT_FILE={}", self.fault.display());
        let wrapper = ["env", &preload, &prefix, &fault, "BOLTBOX_FSYNC_DELAY_MS=0"];
        self.run = Some(Appliance::start_wrapped(&self.config, log, &wrapper));
    }

    /// Whether the status has the store's "cannot save state" alert.
    fn store_failing(status: &Value) -> bool {
        status["alerts"].as_array().is_some_and(|a| a.iter().any(|a| a["kind"] == "store_failing"))
    }

    /// SIGKILL, as a power cut is to the process.
    fn kill(&mut self) {
        if let Some(mut run) = self.run.take() {
            let _ = run.child.kill();
            run.child.wait().expect("wait for the killed service");
        }
    }

    fn sigterm(&self) {
        if let Some(run) = &self.run {
            run.sigterm();
        }
    }

    fn try_call(&self, request: &Request) -> Result<Value, ControlError> {
        control(&self.node.data_dir, request)
    }

    fn call(&self, request: &Request) -> Option<Value> {
        self.try_call(request).ok()
    }

    /// Waits until the node runs with `channels` usable channels; returns how long that took.
    fn wait_ready(&self, channels: usize, since: Instant) -> Duration {
        wait_status(
            &self.config,
            &format!("{} running with {channels} usable channels", self.name),
            BOOT,
            |s| {
                s["running"] == true
                    && s["channels"]
                        .as_array()
                        .is_some_and(|c| c.len() == channels && c.iter().all(|c| c["usable"] == true))
            },
        );
        since.elapsed()
    }

    fn id(&self) -> String {
        status(&self.config).and_then(|s| s["node_id"].as_str().map(str::to_string)).expect("node id")
    }

    fn address(&self) -> String {
        format!("{}@{}", self.id(), self.node.listen[0])
    }

    fn payments(&self) -> Vec<Value> {
        self.call(&Request::Payments).and_then(|v| v.as_array().cloned()).expect("payments")
    }

    fn status(&self) -> Value {
        status(&self.config).expect("status")
    }
}

/// Who pays whom in the storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Party {
    Alice,
    Bob,
    Carol,
}

/// A payment the storm attempted.
#[derive(Debug, Clone)]
struct Attempt {
    from: Party,
    to: Party,
    hash: String,
    amount_msat: u64,
}

/// What one node's payment list says of a payment: its status and fee.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status: String,
    fee_msat: u64,
}

/// The payment lists of one node, by payment hash.
fn by_hash(payments: &[Value]) -> BTreeMap<String, Seen> {
    payments
        .iter()
        .filter(|p| p["kind"] == "bolt11")
        .filter_map(|p| {
            let seen = Seen {
                status: p["status"].as_str()?.to_string(),
                fee_msat: p["fee_msat"].as_u64().unwrap_or(0),
            };
            Some((p["id"].as_str()?.to_string(), seen))
        })
        .collect()
}

/// The moment of a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Moment {
    PaymentsInFlight,
    Starting,
    Stopping,
    Backup,
    /// While the store's writes and flushes fail (EIO or ENOSPC from the fault library).
    StorageFault,
}

const MOMENTS: [Moment; 5] =
    [Moment::PaymentsInFlight, Moment::Starting, Moment::Stopping, Moment::Backup, Moment::StorageFault];

/// The storm's figures, over all rounds.
#[derive(Debug, Default)]
struct Figures {
    kills: usize,
    by_moment: BTreeMap<Moment, usize>,
    rounds: usize,
    attempted: usize,
    succeeded: usize,
    forwards: u64,
    ready_times: Vec<Duration>,
    /// LDK's stale-ChannelManager force-closes: (kill number, moment).
    stale_closes: Vec<(usize, Moment)>,
    /// Store faults injected: (error, `None` if killed while failing, else the seconds from the
    /// fault's end to a healthy store).
    faults: Vec<(&'static str, Option<f64>)>,
    /// Rounds, and kills in them, that ended without a force-close: every check ran.
    checked_rounds: usize,
    checked_kills: usize,
    /// Kills of the "starting" moment by what the service's log said at the kill: before the
    /// node's start began, during ldk-node's start, after the node ran.
    starting_phases: BTreeMap<&'static str, usize>,
}

/// LDK's log line when it force-closes a channel whose ChannelManager is behind its monitor.
const STALE_MANAGER: &str = "A ChannelManager is stale compared to the current ChannelMonitor";

#[test]
fn services_killed_at_random_moments_lose_no_payment() {
    let kills: usize =
        std::env::var("BOLTBOX_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(DEFAULT_KILLS);
    let (mut rng, seed) = Rng::from_env("BOLTBOX_STORM_SEED");
    println!("kill storm: {kills} kills, BOLTBOX_STORM_SEED={seed}");
    let mut figures = Figures::default();
    while figures.kills < kills {
        figures.rounds += 1;
        storm_round(&mut rng, kills, &mut figures);
    }

    figures.ready_times.sort();
    let median = figures.ready_times.get(figures.ready_times.len() / 2).copied().unwrap_or_default();
    let worst = figures.ready_times.last().copied().unwrap_or_default();
    println!("\n| figure | value |\n|---|---|");
    println!("| kills survived | {} ({:?}) in {} rounds |", figures.kills, figures.by_moment, figures.rounds);
    println!("| \"starting\" kills by phase | {:?} |", figures.starting_phases);
    println!(
        "| rounds / kills with every check (no force-close in the round) | {} / {} |",
        figures.checked_rounds, figures.checked_kills
    );
    println!("| payments attempted / succeeded | {} / {} |", figures.attempted, figures.succeeded);
    println!("| acknowledged payments lost | 0 (any fails the test) |");
    println!("| forwards counted in the fee ledger, each once | {} |", figures.forwards);
    println!(
        "| force-closes by LDK's stale ChannelManager (kill, moment) | {} {:?} |",
        figures.stale_closes.len(),
        figures.stale_closes
    );
    println!("| other force-closes | 0 (any fails the test) |");
    for error in ["EIO", "ENOSPC"] {
        let faults: Vec<Option<f64>> = figures.faults.iter().filter(|f| f.0 == error).map(|f| f.1).collect();
        let healed: Vec<f64> = faults.iter().flatten().copied().collect();
        let slowest = healed.iter().copied().fold(0.0, f64::max);
        println!(
            "| store {error} faults: killed while failing / healed (slowest, from the fault's end) | {} / {} ({slowest:.1} s) |",
            faults.len() - healed.len(),
            healed.len()
        );
    }
    println!(
        "| restart to ready, median / worst | {:.1} s / {:.1} s |",
        median.as_secs_f64(),
        worst.as_secs_f64()
    );
    println!("| seed | {seed} |");
}

/// One round: fresh nodes and channels, then kills until `kills` are made in all or LDK
/// force-closes a channel for its stale ChannelManager.
fn storm_round(rng: &mut Rng, kills: usize, figures: &mut Figures) {
    let first_kill = figures.kills;
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    // The SD-card model as a fault library, without its delay.
    let shim = sdcard_shim(dir.path());
    let mut alice = Service::new(&bitcoind, dir.path().join("alice"), "alice");
    let mut bob = Service::new(&bitcoind, dir.path().join("bob"), "bob");
    for service in [&mut alice, &mut bob] {
        service.start(&shim);
        service.wait_ready(0, Instant::now());
    }
    let (alice_addr, bob_addr) = (alice.address(), bob.address());
    let carol = TestNode::start(&bitcoind, "carol", vec![alice_addr.clone()]);
    let carol_addr = carol.peer_address().to_string();
    // Trusted peers are reconnected to at once after a restart (the config is read at start).
    alice.trust(vec![bob_addr.clone(), carol_addr.clone()]);
    bob.trust(vec![alice_addr.clone()]);

    // Carol opens to Alice and Alice opens to Bob, each pushing half: everyone can pay.
    carol.fund(&bitcoind, 3 * CHANNEL_SATS);
    let address = alice.call(&Request::NewAddress).expect("address");
    bitcoind.send_to(address.as_str().expect("an address"), 3 * CHANNEL_SATS).expect("fund alice");
    bitcoind.mine(6).expect("mine");
    carol.wait_status("carol funded", 60, |s| s.balances.onchain_spendable_sats >= 2 * CHANNEL_SATS);
    wait_status(&alice.config, "alice funded", BOOT, |s| {
        s["balances"]["onchain_spendable_sats"].as_u64().is_some_and(|v| v >= 2 * CHANNEL_SATS)
    });
    let peer = alice_addr.parse().expect("alice's address");
    // Announced: LDK forwards only over announced channels (unless it is an LSP).
    carol
        .node()
        .open_channel(&peer, CHANNEL_SATS, Some(CHANNEL_SATS * SAT / 2), true)
        .expect("carol → alice");
    alice
        .call(&Request::OpenChannel {
            peer: bob_addr.clone(),
            amount_sats: CHANNEL_SATS,
            push_msat: Some(CHANNEL_SATS * SAT / 2),
            announce: true,
        })
        .expect("alice → bob");
    bitcoind.wait_for_mempool(2, Deadline::in_secs(60));
    bitcoind.mine(6).expect("mine");
    let now = Instant::now();
    alice.wait_ready(2, now);
    bob.wait_ready(1, now);
    carol.wait_status("carol's channel usable", 60, |s| s.usable_channels() == 1);

    // Before the storm, a forward each way through Alice: routing works (the payer has learnt
    // the announced channels from gossip), so the storm's forwards are not all failures, and
    // the fee ledger has something to be checked against.
    for payer in [Party::Carol, Party::Bob] {
        wait_until(Deadline::in_secs(120), &format!("{payer:?}'s payment through alice"), || {
            let invoice = match payer {
                Party::Carol => {
                    let request = Request::Invoice {
                        amount_msat: Some(5_000 * SAT),
                        description: "warm-up".into(),
                        expiry_secs: 600,
                    };
                    let invoice = bob.call(&request)?.as_str()?.to_string();
                    carol.node().pay_invoice(&invoice, None).ok()?;
                    invoice
                }
                _ => {
                    let invoice = carol.node().create_invoice(Some(5_000 * SAT), "warm-up", 600).ok()?;
                    bob.call(&Request::Pay { invoice: invoice.clone(), amount_msat: None })?;
                    invoice
                }
            };
            let hash = Bolt11Invoice::from_str(&invoice).ok()?.payment_hash().to_string();
            let status = wait_until(Deadline::in_secs(60), "the warm-up payment settled", || {
                let payments = if payer == Party::Carol { carol_payments(&carol) } else { bob.payments() };
                by_hash(&payments).get(&hash).map(|s| s.status.clone()).filter(|s| s != "pending")
            });
            (status == "succeeded").then_some(())
        });
    }
    let earnings = |s: &Value| (s["earnings"]["total_msat"].as_u64(), s["earnings"]["forwards"].as_u64());
    let earned_before =
        wait_status(&alice.config, "alice's two forwards", BOOT, |s| earnings(s).1 == Some(2));
    let (fees_before, forwards_before) = earnings(&earned_before);
    let (fees_before, forwards_before) = (fees_before.expect("fees"), forwards_before.expect("forwards"));

    // The balances before: once the warm-up's HTLCs are off every commitment (a payer sees its
    // payment succeed before the commitments are updated).
    assert!(wait_quiet(&alice, &bob, &carol), "the warm-up payments settle");
    let lightning = |s: &Value| s["balances"]["lightning_sats"].as_u64().expect("lightning sats");
    let before = BTreeMap::from([
        (Party::Alice, lightning(&alice.status())),
        (Party::Bob, lightning(&bob.status())),
        (Party::Carol, carol.node().refresh_status().balances.lightning_sats),
    ]);

    // The payment stream: a thread that pays in a random direction every few hundred ms for as
    // long as the storm lasts; a payment whose payer or payee is down is simply not made.
    let attempts: Mutex<Vec<Attempt>> = Mutex::new(Vec::new());
    let storming = AtomicBool::new(true);
    let mut stale_close: Option<&'static str> = None;
    let mut stream_rng = Rng::new(rng.next_u64());
    let (alice_data, bob_data) = (alice.node.data_dir.clone(), bob.node.data_dir.clone());
    std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let call = |data_dir: &Path, request: &Request| control(data_dir, request).ok();
            let invoice = |to: Party, amount_msat: u64| -> Option<String> {
                let description = "storm".to_string();
                match to {
                    Party::Alice | Party::Bob => {
                        let data = if to == Party::Alice { &alice_data } else { &bob_data };
                        let request = Request::Invoice {
                            amount_msat: Some(amount_msat),
                            description,
                            expiry_secs: 3600,
                        };
                        call(data, &request)?.as_str().map(str::to_string)
                    }
                    Party::Carol => carol.node().create_invoice(Some(amount_msat), &description, 3600).ok(),
                }
            };
            while storming.load(Ordering::SeqCst) {
                // Alice ↔ Bob directly, and Carol ↔ Bob through Alice (a forward).
                let (from, to) = match stream_rng.below(4) {
                    0 => (Party::Alice, Party::Bob),
                    1 => (Party::Bob, Party::Alice),
                    2 => (Party::Carol, Party::Bob),
                    _ => (Party::Bob, Party::Carol),
                };
                let amount_msat = (1_000 + stream_rng.below(9_000)) * SAT;
                if let Some(invoice) = invoice(to, amount_msat) {
                    let hash = Bolt11Invoice::from_str(&invoice)
                        .expect("our own invoice")
                        .payment_hash()
                        .to_string();
                    // Recorded before it is paid: a payment the payer's death cut short is
                    // still checked (it must be failed, or succeeded, on both sides).
                    attempts.lock().expect("attempts").push(Attempt { from, to, hash, amount_msat });
                    // Whether the payer took it shows in the payment lists at the end.
                    match from {
                        Party::Alice | Party::Bob => {
                            let data = if from == Party::Alice { &alice_data } else { &bob_data };
                            let _ = call(data, &Request::Pay { invoice, amount_msat: None });
                        }
                        Party::Carol => {
                            let _ = carol.node().pay_invoice(&invoice, None);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100 + stream_rng.below(400)));
            }
        });

        // Ends the stream also when an assertion below fails, or the scope would wait forever.
        let _stop = common::StopOnDrop(&storming);
        // How long a clean stop took last (a first guess until measured).
        let mut stop_ms = 500u64;
        let mut step = 0usize;
        while figures.kills < kills {
            step += 1;
            let kill = figures.kills + 1;
            let victim = if rng.below(2) == 0 { &mut alice } else { &mut bob };
            let moment = MOMENTS[step % MOMENTS.len()];
            match moment {
                Moment::PaymentsInFlight => {
                    std::thread::sleep(Duration::from_millis(rng.below(3_000)));
                    victim.kill();
                }
                Moment::Starting => {
                    let stopping = Instant::now();
                    victim.sigterm();
                    assert!(victim.run.as_mut().expect("running").wait_exit(SETTLE), "a clean stop");
                    stop_ms = stopping.elapsed().as_millis() as u64;
                    victim.start(&shim);
                    // Once the service says it starts the node, within the 60 ms that ldk-node's
                    // start takes here; where the kill landed is read from the log.
                    let starts = |victim: &Service| {
                        victim.run.as_ref().is_some_and(|run| run.log().contains("starting the node"))
                    };
                    wait_until(Deadline::in_secs(BOOT.as_secs()), "the node's start", || {
                        starts(victim).then_some(())
                    });
                    std::thread::sleep(Duration::from_millis(rng.below(60)));
                    let log = victim.run.as_ref().map(|run| run.log()).unwrap_or_default();
                    let phase = if log.contains("node running") {
                        "after the node ran"
                    } else if log.contains("starting the node") {
                        "during ldk-node's start"
                    } else {
                        "before the node's start"
                    };
                    *figures.starting_phases.entry(phase).or_default() += 1;
                    victim.kill();
                }
                Moment::Stopping => {
                    victim.sigterm();
                    std::thread::sleep(Duration::from_millis(rng.below(stop_ms)));
                    victim.kill();
                }
                Moment::Backup => {
                    let (config, stick) = (victim.config.clone(), victim.stick());
                    let backup = Command::new(env!("CARGO_BIN_EXE_boltbox"))
                        .args(["backup", "--to"])
                        .arg(&stick)
                        .arg("--config")
                        .arg(&config)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("boltbox backup");
                    std::thread::sleep(Duration::from_millis(rng.below(1_000)));
                    victim.kill();
                    let mut backup = backup;
                    backup.wait().expect("backup client");
                }
                Moment::StorageFault => {
                    let error = if rng.below(2) == 0 { "EIO" } else { "ENOSPC" };
                    std::fs::write(&victim.fault, error).expect("fault on");
                    // The store cannot write: it says so, and holds the writes unacknowledged
                    // (the payments through this node stall, nothing fails).
                    wait_status(&victim.config, &format!("{}'s store failing", victim.name), BOOT, |s| {
                        Service::store_failing(s)
                    });
                    // Requests that would wait on the store are refused at once, however many
                    // come, and the status is still answered.
                    for _ in 0..12 {
                        let request = Request::Invoice {
                            amount_msat: Some(SAT),
                            description: "refused".into(),
                            expiry_secs: 60,
                        };
                        match victim.try_call(&request) {
                            Err(ControlError::Refused(why)) if why.contains("cannot save its state") => {}
                            other => panic!("an invoice while the store cannot write: {other:?}"),
                        }
                    }
                    assert!(Service::store_failing(&victim.status()), "the status answers, with the alert");
                    std::thread::sleep(Duration::from_millis(rng.below(2_000)));
                    if rng.below(2) == 0 {
                        // Killed while failing; restarted below on a healthy disk.
                        victim.kill();
                        std::fs::remove_file(&victim.fault).expect("fault off");
                        figures.faults.push((error, None));
                    } else {
                        // Healed: the store writes what waited, the node goes on.
                        std::fs::remove_file(&victim.fault).expect("fault off");
                        let healing = Instant::now();
                        wait_status(&victim.config, &format!("{}'s store healthy", victim.name), BOOT, |s| {
                            !Service::store_failing(s) && s["running"] == true
                        });
                        let took = healing.elapsed().as_secs_f64();
                        println!(
                            "{error} on {}'s store, healed {took:.1} s after the fault ended",
                            victim.name
                        );
                        figures.faults.push((error, Some(took)));
                        continue;
                    }
                }
            }
            figures.kills = kill;
            *figures.by_moment.entry(moment).or_default() += 1;
            let restarted = Instant::now();
            victim.start(&shim);
            wait_status(&victim.config, &format!("{} running", victim.name), BOOT, |s| s["running"] == true);
            if victim.run.as_ref().is_some_and(|run| run.log().contains(STALE_MANAGER)) {
                println!(
                    "kill {kill}: {} {moment:?}: LDK force-closed for a stale ChannelManager",
                    victim.name
                );
                figures.stale_closes.push((kill, moment));
                stale_close = Some(victim.name);
                break;
            }
            let channels = if victim.name == "alice" { 2 } else { 1 };
            let took = victim.wait_ready(channels, restarted);
            figures.ready_times.push(took);
            println!("kill {kill}: {} {moment:?}, back to ready in {:.1} s", victim.name, took.as_secs_f64());
            assert!(bitcoind.mempool().expect("mempool").is_empty(), "a force-close after kill {kill}");
        }
        drop(_stop);
        stream.join().expect("payment stream");
    });

    let attempts = attempts.into_inner().expect("attempts");
    figures.attempted += attempts.len();
    if let Some(victim) = stale_close {
        // The closed channel's HTLCs resolve on chain only after their timeouts: what holds now
        // is that no payment succeeded on one side and failed, or is unknown, on the other (a
        // payee knows every invoice it made; pending is allowed: an HTLC on the closed
        // channel's commitment resolves on chain).
        let lists = payment_lists(&alice, &bob, &carol);
        for a in &attempts {
            let (sent, received) = (lists[&a.from].get(&a.hash), lists[&a.to].get(&a.hash));
            let status = |s: Option<&Seen>| s.map(|s| s.status.clone()).unwrap_or_default();
            let (sent, received) = (status(sent), status(received));
            let contradiction = (sent == "succeeded" && matches!(received.as_str(), "failed" | ""))
                || (sent == "failed" && received == "succeeded");
            assert!(!contradiction, "{a:?}: payer {sent:?}, payee {received:?}");
            figures.succeeded += usize::from(sent == "succeeded" && received == "succeeded");
        }
        println!(
            "round {}: {victim} restarted with a stale ChannelManager: LDK force-closed its channel",
            figures.rounds
        );
        return;
    }

    // Everything settles: no payment pending on any node, no HTLC in flight.
    let dump = || {
        for service in [&alice, &bob] {
            let status = service.status();
            eprintln!("{}: balances {}, channels {}", service.name, status["balances"], status["channels"]);
        }
        eprintln!("carol: {:?}", carol.node().refresh_status().balances);
    };
    if !wait_quiet(&alice, &bob, &carol) {
        dump();
        panic!("payments or HTLCs still in flight {} s after the storm", SETTLE.as_secs());
    }

    let lists = payment_lists(&alice, &bob, &carol);
    // No acknowledged payment lost: succeeded on one side means succeeded on both.
    let mut lost = Vec::new();
    let mut expected: BTreeMap<Party, i128> = BTreeMap::new();
    let mut forward_fees = 0u64;
    let mut forwards = 0u64;
    let mut succeeded = 0usize;
    for a in &attempts {
        let sent = lists[&a.from].get(&a.hash);
        let received = lists[&a.to].get(&a.hash);
        let sent_ok = sent.is_some_and(|s| s.status == "succeeded");
        let received_ok = received.is_some_and(|s| s.status == "succeeded");
        if sent_ok != received_ok {
            lost.push(format!("{a:?}: payer {sent:?}, payee {received:?}"));
            continue;
        }
        if !sent_ok {
            continue;
        }
        succeeded += 1;
        let fee = sent.map_or(0, |s| s.fee_msat);
        *expected.entry(a.from).or_default() -= i128::from(a.amount_msat + fee);
        *expected.entry(a.to).or_default() += i128::from(a.amount_msat);
        if a.from == Party::Carol || a.to == Party::Carol {
            *expected.entry(Party::Alice).or_default() += i128::from(fee);
            forward_fees += fee;
            forwards += 1;
        }
    }
    assert!(lost.is_empty(), "acknowledged payments lost:\n{}", lost.join("\n"));
    assert!(succeeded > 0, "the storm made no payment at all");
    assert!(forwards > 0, "no payment through alice succeeded: the fee ledger is not tested");

    // Balances moved by exactly what the other sides recorded (to a satoshi a channel: the
    // status rounds each channel's side down to whole satoshis), and the router's fee ledger
    // holds exactly the fees of the forwards, each counted once. The services' status is a
    // snapshot refreshed after events: looked at until it agrees, or for a minute.
    let check = || -> Result<(), String> {
        let (alice_status, bob_status) = (alice.status(), bob.status());
        let after = BTreeMap::from([
            (Party::Alice, lightning(&alice_status)),
            (Party::Bob, lightning(&bob_status)),
            (Party::Carol, carol.node().refresh_status().balances.lightning_sats),
        ]);
        let moves: Vec<(Party, i128, i128)> = [Party::Alice, Party::Bob, Party::Carol]
            .into_iter()
            .map(|party| {
                let moved = i128::from(after[&party]) - i128::from(before[&party]);
                (party, moved, expected.get(&party).copied().unwrap_or(0) / 1000)
            })
            .collect();
        if moves.iter().any(|(_, moved, want)| (moved - want).abs() > 2) {
            return Err(format!("balances moved (party, sat, the payments say sat): {moves:?}"));
        }
        // The payments each service counts (the earnings screen's "sent" and "recv") are its
        // own payment list's: an event replayed after a kill must not count one twice.
        for (service, status) in [(&alice, &alice_status), (&bob, &bob_status)] {
            let payments = service.payments();
            let count = |direction: &str| {
                payments
                    .iter()
                    .filter(|p| {
                        p["kind"] != "onchain" && p["status"] == "succeeded" && p["direction"] == direction
                    })
                    .count() as u64
            };
            let counted = (status["payments"]["sent"].as_u64(), status["payments"]["received"].as_u64());
            if counted != (Some(count("outbound")), Some(count("inbound"))) {
                return Err(format!(
                    "{} counts {counted:?} payments sent and received, its list {} and {}",
                    service.name,
                    count("outbound"),
                    count("inbound")
                ));
            }
        }
        let (fees, count) = earnings(&alice_status);
        let (fees, count) = (fees.unwrap_or(0) - fees_before, count.unwrap_or(0) - forwards_before);
        if fees != forward_fees || count != forwards {
            return Err(format!(
                "alice's fee ledger says {count} forwards earned {fees} msat in the storm, \
                 the payments say {forwards} earned {forward_fees} msat"
            ));
        }
        Ok(())
    };
    if try_wait_until(Deadline::in_secs(60), || check().ok()).is_none() {
        dump();
        for a in &attempts {
            eprintln!(
                "{a:?}: payer {:?}, payee {:?}",
                lists[&a.from].get(&a.hash),
                lists[&a.to].get(&a.hash)
            );
        }
        panic!("{}", check().err().unwrap_or_default());
    }

    // No channel closed, on either side, nor on the chain.
    assert_eq!(alice.status()["channels"].as_array().map(Vec::len), Some(2));
    assert_eq!(bob.status()["channels"].as_array().map(Vec::len), Some(1));
    assert_eq!(carol.node().list_channels().len(), 1);
    assert!(bitcoind.mempool().expect("mempool").is_empty(), "a commitment transaction was broadcast");

    figures.succeeded += succeeded;
    figures.forwards += forwards;
    figures.checked_rounds += 1;
    figures.checked_kills += figures.kills - first_kill;
}

/// Waits up to [`SETTLE`] until no payment is pending on any node and no HTLC is on any
/// commitment (an HTLC shows as in flight on the side that offered it); returns whether it came.
fn wait_quiet(alice: &Service, bob: &Service, carol: &TestNode) -> bool {
    let settled =
        |payments: &[Value]| payments.iter().all(|p| p["status"] != "pending" || p["direction"] == "inbound");
    try_wait_until(Deadline::in_secs(SETTLE.as_secs()), || {
        let quiet = [alice, bob]
            .iter()
            .all(|s| settled(&s.payments()) && s.status()["balances"]["in_flight_htlc_msat"] == 0)
            && carol.node().refresh_status().balances.in_flight_htlc_msat == 0
            && settled(&carol_payments(carol));
        quiet.then_some(())
    })
    .is_some()
}

/// One request to the service whose data dir is `data_dir`, through its control socket.
fn control(data_dir: &Path, request: &Request) -> Result<Value, ControlError> {
    let mut client = Client::connect(&socket_path(data_dir))?;
    client.set_timeout(Duration::from_secs(30))?;
    client.call(request)
}

/// Every node's bolt11 payments, by payment hash.
fn payment_lists(
    alice: &Service,
    bob: &Service,
    carol: &TestNode,
) -> BTreeMap<Party, BTreeMap<String, Seen>> {
    BTreeMap::from([
        (Party::Alice, by_hash(&alice.payments())),
        (Party::Bob, by_hash(&bob.payments())),
        (Party::Carol, by_hash(&carol_payments(carol))),
    ])
}

fn carol_payments(carol: &TestNode) -> Vec<Value> {
    serde_json::to_value(carol.node().list_payments())
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

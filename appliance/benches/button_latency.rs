//! `cargo bench -p boltbox --bench button_latency`: how long after a button is let go the next
//! page leaves the board, on the link board, with and without a payment load on the node.
//!
//! Setup (as in `tests/supervisor.rs`): a regtest bitcoind, the real `boltbox run` binary on a
//! link board, and a peer `TestNode` in this process that opens a channel to the appliance.
//! Then two rounds of short presses of A, the same in each round:
//! - idle: nothing else happens;
//! - load: a thread keysends small payments from the peer to the appliance, `IN_FLIGHT` at a
//!   time (a new one whenever the peer reports one sent or failed).
//!
//! One press: send `EDGE A DOWN`, keep reading the link for `HOLD` (the finger on the button;
//! reading keeps earlier frames from queueing up), note the host time, send `EDGE A UP`, read
//! frames until the first one whose screen (the caption's first line) differs from the page
//! shown before the press, note the host time. The latency is the difference, nothing
//! subtracted. It includes, in order: the UP line reaching the device (dated there on arrival);
//! the gesture machine's 30 ms debounce (a short press is only recognised once the release has
//! been stable that long); the display loop's 20 ms button poll, which makes the release count
//! at its second poll tick after the edge (~40 ms after it, not 30); drawing the new page (a
//! status snapshot of the node and rendering); writing the `FRAME` line; and this process
//! reading and parsing it, on the same machine (and cores) as the node under load.
//!
//! Knobs: `BOLTBOX_BUTTON_PRESSES` (presses per round, default 100). Reported, never asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boltbox_board::link::DeviceLine;
use boltbox_board::{Button, LinkClient, LinkError, LinkFrame};
use boltbox_node::NodeEvent;
use boltbox_tests::{BitcoinD, Deadline, TestNode};
use tokio::sync::broadcast::error::RecvError;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{Appliance, link_appliance, screen};

const ALIAS: &str = "latency";
/// The finger on the button for a short press: longer than the 30 ms debounce, far shorter
/// than the 3 s long press.
const HOLD: Duration = Duration::from_millis(100);
/// The finger off the button between two presses (longer than the debounce).
const BETWEEN_PRESSES: Duration = Duration::from_millis(150);
/// Booting includes starting ldk-node and its first chain sync.
const BOOT: Duration = Duration::from_secs(120);
/// Longest wait for the page to change after a release before the run is given up.
const SCREEN: Duration = Duration::from_secs(15);
/// The channel the peer opens to the appliance, and the payments over it: non-dust (above the
/// anchor channels' 354 sat dust limit), so that every HTLC is a real commitment output, and
/// small enough that the channel lasts the run (5,000,000 / 500 sat = 10,000 payments).
const CHANNEL_SATS: u64 = 5_000_000;
const PAYMENT_MSAT: u64 = 500_000;
/// Keysend payments in flight during the load.
const IN_FLIGHT: usize = 8;
/// The load runs this long before the loaded round starts.
const LOAD_WARMUP: Duration = Duration::from_secs(3);

/// Reads (and drops) whatever the device sends for `duration`.
fn drain_for(link: &mut LinkClient, duration: Duration) {
    let until = Instant::now() + duration;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match link.next_line(left) {
            Ok(_) | Err(LinkError::Timeout { .. }) => {}
            Err(e) => panic!("reading the link: {e}"),
        }
    }
}

/// One short press of A; returns the time from sending UP to receiving the next page's frame.
fn press_and_time(link: &mut LinkClient) -> Duration {
    let before =
        link.last_frame().map(|f| screen(f).to_string()).expect("a frame was shown before the press");
    link.send_edge(Button::A, true).expect("A down");
    drain_for(link, HOLD);
    // Frames drawn while the button was held show the same page (a press changes it only when
    // it is let go), so nothing read so far can be the answer.
    let page = link.last_frame().map(|f| screen(f).to_string()).expect("a frame");
    assert_eq!(page, before, "the page changed while A was held");
    let released = Instant::now();
    link.send_edge(Button::A, false).expect("A up");
    let deadline = released + SCREEN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match link.next_line(left) {
            Ok(DeviceLine::Frame(frame)) if screen(&frame) != before => return released.elapsed(),
            Ok(_) => {}
            Err(e) => panic!("waiting for the page after {before:?} to change: {e}"),
        }
    }
}

/// Short presses of A until the page `name` shows (at most one round of the pages); its frame.
fn page_to(link: &mut LinkClient, name: &str) -> LinkFrame {
    for _ in 0..8 {
        if let Some(frame) = link.last_frame().filter(|f| screen(f) == name) {
            return frame.clone();
        }
        drain_for(link, BETWEEN_PRESSES);
        press_and_time(link);
    }
    panic!("no page {name:?} after a round of presses");
}

/// `n` presses, each after `BETWEEN_PRESSES` off the button; the latencies, sorted.
fn round(link: &mut LinkClient, n: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        drain_for(link, BETWEEN_PRESSES);
        latencies.push(press_and_time(link));
    }
    latencies.sort();
    latencies
}

/// The peer's keysend load on its own thread: `IN_FLIGHT` payments at a time, a new one for
/// each that the peer reports sent or failed. Counts payments sent.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: JoinHandle<TestNode>,
}

impl Load {
    fn start(mut peer: TestNode, to: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (stop2, sent2, failed2) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        let thread = std::thread::Builder::new()
            .name("payment-load".into())
            .spawn(move || {
                let waiter =
                    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
                let mut in_flight = 0usize;
                let mut refused_logged = false;
                while !stop2.load(Ordering::Relaxed) {
                    if in_flight < IN_FLIGHT {
                        match peer.node().keysend(&to, PAYMENT_MSAT) {
                            Ok(_) => in_flight += 1,
                            Err(e) => {
                                if !refused_logged {
                                    eprintln!("keysend refused (retrying): {e}");
                                    refused_logged = true;
                                }
                                // Liquidity or a busy channel: try again shortly.
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                        continue;
                    }
                    let event = waiter.block_on(async {
                        tokio::time::timeout(Duration::from_millis(200), peer.events().recv()).await
                    });
                    match event {
                        Err(_) => {}
                        Ok(Ok(NodeEvent::PaymentSent { .. })) => {
                            sent2.fetch_add(1, Ordering::Relaxed);
                            in_flight -= 1;
                        }
                        Ok(Ok(NodeEvent::PaymentFailed { .. })) => {
                            failed2.fetch_add(1, Ordering::Relaxed);
                            in_flight -= 1;
                        }
                        Ok(Ok(_)) => {}
                        // Completions were lost: count them as no longer in flight.
                        Ok(Err(RecvError::Lagged(n))) => {
                            in_flight = in_flight.saturating_sub(n as usize);
                        }
                        Ok(Err(RecvError::Closed)) => panic!("the peer's event stream closed"),
                    }
                }
                peer
            })
            .expect("start the load thread");
        Load { stop, sent, failed, thread }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn stop(self) -> (TestNode, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        (self.thread.join().expect("the load thread"), failed)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The nearest-rank percentile of sorted latencies.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn row(load: &str, latencies: &[Duration], payments_per_sec: Option<f64>) -> String {
    format!(
        "{:<22} {:>4} {:>10.1} {:>8.1} {:>8.1} {:>8.1} {:>12}",
        load,
        latencies.len(),
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.90)),
        ms(percentile(latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        payments_per_sec.map_or_else(|| "-".to_string(), |p| format!("{p:.1}")),
    )
}

fn main() {
    let presses: usize =
        std::env::var("BOLTBOX_BUTTON_PRESSES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);

    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, config, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);

    let _run = Appliance::start(&config, dir.path().join("run.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    link.wait_for_frame(BOOT, |f| screen(f) == "home" && f.caption.contains(ALIAS)).expect("home screen");
    // The node id, from the network page's URI caption (`qr <node id>@<ip>:<port>`).
    let network = page_to(&mut link, "network");
    let uri =
        network.caption.lines().find_map(|l| l.strip_prefix("qr ")).expect("network page shows the URI");
    let id = uri.split('@').next().unwrap_or(uri).to_string();
    page_to(&mut link, "home");

    // A peer opens a channel to it; the home screen counts it once it is usable.
    let mut peer = TestNode::start(&bitcoind, "peer", Vec::new());
    peer.fund(&bitcoind, CHANNEL_SATS + 1_000_000);
    bitcoind.mine(6).expect("mine");
    peer.wait_status("peer funds", 60, |s| s.balances.onchain_spendable_sats >= CHANNEL_SATS + 500_000);
    let address = format!("{id}@{}", node.listen[0]).parse().expect("appliance address");
    let mempool = bitcoind.mempool().expect("mempool").len();
    peer.node().open_channel(&address, CHANNEL_SATS, None, true).expect("open channel");
    peer.wait_event("ChannelPending", 30, |e| matches!(e, NodeEvent::ChannelPending { .. }).then_some(()));
    bitcoind.wait_for_mempool(mempool + 1, Deadline::in_secs(30));
    bitcoind.mine(6).expect("mine");
    link.wait_for_frame(BOOT, |f| screen(f) == "home" && f.caption.contains("1/1 ch"))
        .expect("the home screen counts a usable channel");
    peer.wait_status("a usable channel on the peer", 120, |s| s.usable_channels() == 1);
    // One payment through, end to end, before measuring.
    peer.node().keysend(&id, PAYMENT_MSAT).expect("keysend");
    peer.wait_event("the first keysend", 60, |e| match e {
        NodeEvent::PaymentSent { .. } => Some(()),
        NodeEvent::PaymentFailed { reason, .. } => panic!("the first keysend failed: {reason}"),
        _ => None,
    });

    eprintln!("button_latency: {presses} presses with no load");
    let idle = round(&mut link, presses);

    let load = Load::start(peer, id);
    drain_for(&mut link, LOAD_WARMUP);
    let (sent_before, started) = (load.sent(), Instant::now());
    eprintln!("button_latency: {presses} presses under the payment load");
    let loaded = round(&mut link, presses);
    let per_sec = (load.sent() - sent_before) as f64 / started.elapsed().as_secs_f64();
    let (peer, failed) = load.stop();
    drop(peer);

    println!(
        "\nbutton latency on the link board: host sends `EDGE A UP` → host receives the next page's FRAME \
         (includes the 30 ms debounce and the 20 ms button poll), ms"
    );
    println!(
        "{:<22} {:>4} {:>10} {:>8} {:>8} {:>8} {:>12}",
        "load", "n", "median", "p90", "p99", "max", "payments/s"
    );
    println!("{}", row("none", &idle, None));
    println!("{}", row(&format!("keysend, {IN_FLIGHT} in flight"), &loaded, Some(per_sec)));
    if failed > 0 {
        println!("({failed} payments of the load failed)");
    }
}

//! `cargo bench -p boltbox-tests --bench payments`: end-to-end payments/s between two regtest
//! boltbox nodes in one process, A → B over 8 channels, with 32 keysend payments in flight
//! (a new one starts whenever one completes, driven by A's events), on boltbox's store, on
//! boltbox's store with the live mirror on (both nodes mirroring into a directory on the same
//! disk; the SD-card model flushes it as a stick of its own beside the card), with the remote
//! mirror to a vss-server on this machine (its own PostgreSQL, fsync on) reached directly and
//! through a proxy that adds 20 ms and 100 ms to each round trip (a WAN), and on ldk-node's
//! stock SQLite store, side by side. Bytes written per payment are what both nodes passed to
//! write(2) (`wchar`), of that what went to the mirrors' logs, and the rest (the card's).
//!
//! The local-disk run happens in this process; with `BOLTBOX_SDCARD_SHIM` set (as `make bench`
//! does) the binary runs itself again with the SD-card flush model preloaded (the bitcoind
//! harness keeps it away from bitcoind) and its rows join the same table. Node data lives
//! under `BOLTBOX_BENCH_DIR` (default /var/cache/boltbox/bench), on a real disk, never tmpfs.
//!
//! Knobs: `BOLTBOX_PAYMENTS_SECS` (measured seconds per run, default 20),
//! `BOLTBOX_PAYMENTS_WARMUP_SECS` (default 3). Reported, never asserted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boltbox_node::bench::sdcard;
use boltbox_node::{NodeEvent, Storage};
use boltbox_tests::{BitcoinD, Fault, FaultProxy, TestNode, Vss, mine_and_sync};
use tokio::sync::broadcast::error::RecvError;

const CHANNELS: usize = 8;
const CHANNEL_SATS: u64 = 2_000_000;
const IN_FLIGHT: usize = 32;
/// Non-dust (above the anchor channels' 354 sat dust limit), so every HTLC is a real output
/// of the commitment transactions.
const PAYMENT_MSAT: u64 = 1_000_000;

/// One measured run.
#[derive(Debug, Clone)]
struct Row {
    storage: String,
    model: String,
    payments: u64,
    failed: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Group commits and writes of boltbox's stores (A's and B's) in the window; with
    /// `Storage::LdkSqlite` only the fee ledger lives there, so these stay near zero.
    commits: u64,
    writes: u64,
    /// CPU seconds this process (both nodes) used per second of the window: 2.0 is both cores.
    cores_busy: f64,
    /// Bytes both nodes passed to write(2) in the window, all media.
    wchar: u64,
    /// Bytes the mirrors' logs grew by in the window.
    mirror_bytes: u64,
}

impl Row {
    fn per_sec(&self) -> f64 {
        self.payments as f64 / self.secs.max(f64::MIN_POSITIVE)
    }

    fn to_line(&self) -> String {
        format!(
            "ROW {} {} {} {} {:.3} {:.3} {:.3} {} {} {:.3} {} {}",
            self.storage,
            self.model,
            self.payments,
            self.failed,
            self.secs,
            self.p50_ms,
            self.p99_ms,
            self.commits,
            self.writes,
            self.cores_busy,
            self.wchar,
            self.mirror_bytes
        )
    }

    fn from_line(line: &str) -> Option<Row> {
        let f: Vec<&str> = line.strip_prefix("ROW ")?.split_whitespace().collect();
        Some(Row {
            storage: f.first()?.to_string(),
            model: f.get(1)?.to_string(),
            payments: f.get(2)?.parse().ok()?,
            failed: f.get(3)?.parse().ok()?,
            secs: f.get(4)?.parse().ok()?,
            p50_ms: f.get(5)?.parse().ok()?,
            p99_ms: f.get(6)?.parse().ok()?,
            commits: f.get(7)?.parse().ok()?,
            writes: f.get(8)?.parse().ok()?,
            cores_busy: f.get(9)?.parse().ok()?,
            wchar: f.get(10)?.parse().ok()?,
            mirror_bytes: f.get(11)?.parse().ok()?,
        })
    }
}

fn env_secs(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("BOLTBOX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/boltbox/bench"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// CPU time (user + system) of this process so far, in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the 12th
    // and 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes this process has passed to write(2) and its kin so far (`wchar` of /proc/self/io).
fn wchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// The bytes of the mirror logs under `dir`.
fn log_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir.join(boltbox_node::mirror::MIRROR_DIR)) else { return 0 };
    // A log is grown in zeroed 1 MiB steps ahead of its frames: its bytes end at its last
    // non-zero byte.
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|bytes| bytes.iter().rposition(|b| *b != 0).map_or(0, |last| last as u64 + 1))
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Where the nodes' stores are mirrored in a run.
#[derive(Debug, Clone, Copy)]
enum Mirror {
    Off,
    /// Into a directory on the same disk (a stick of its own under the SD-card model).
    Stick,
    /// To the bench's vss-server on loopback, through a proxy that holds each answer back this
    /// long (a WAN's round trip).
    Vss(Duration),
}

/// Two fresh nodes on `storage` (each mirroring as `mirror` says), 8 confirmed channels A → B,
/// then the measured payments.
#[allow(clippy::too_many_arguments)]
fn run(
    bitcoind: &BitcoinD,
    vss: Option<&Vss>,
    storage: Storage,
    mirror: Mirror,
    model: &str,
    parent: &Path,
    warmup: f64,
    secs: f64,
) -> Row {
    let label = match (storage, mirror) {
        (Storage::Boltbox, Mirror::Off) => "boltbox".to_string(),
        (Storage::Boltbox, Mirror::Stick) => "boltbox+mirror".to_string(),
        (Storage::Boltbox, Mirror::Vss(rtt)) => format!("boltbox+vss{}", rtt.as_millis()),
        (Storage::LdkSqlite, _) => "SqliteStore".to_string(),
    };
    eprintln!("payments: {label}, {model}: setting up {CHANNELS} channels");
    let b = TestNode::start_with_storage(bitcoind, &format!("bob-{label}"), vec![], storage, parent);
    let b_addr = b.peer_address();
    let mut a = TestNode::start_with_storage(
        bitcoind,
        &format!("alice-{label}"),
        vec![b_addr.to_string()],
        storage,
        parent,
    );
    a.fund(bitcoind, CHANNEL_SATS * CHANNELS as u64 + 1_000_000);
    // The accepting side keeps an anchor reserve (25,000 sat) per channel on-chain.
    b.fund(bitcoind, 25_000 * CHANNELS as u64 + 100_000);
    mine_and_sync(bitcoind, 6, &[&a, &b], 120);
    a.wait_status("A's funds", 60, |s| s.balances.onchain_spendable_sats >= CHANNEL_SATS * CHANNELS as u64);
    b.wait_status("B's funds", 60, |s| s.balances.onchain_spendable_sats >= 25_000 * CHANNELS as u64);
    for i in 0..CHANNELS {
        let before = bitcoind.mempool().expect("mempool").len();
        a.node().open_channel(&b_addr, CHANNEL_SATS, None, false).expect("open channel");
        a.wait_event("ChannelPending", 60, |e| matches!(e, NodeEvent::ChannelPending { .. }).then_some(()));
        bitcoind.wait_for_mempool(before + 1, boltbox_tests::Deadline::in_secs(60));
        // LDK takes at most 4 unconfirmed inbound channels per peer: confirm each one.
        mine_and_sync(bitcoind, if i + 1 == CHANNELS { 6 } else { 1 }, &[&a, &b], 120);
    }
    a.wait_status("8 usable channels on A", 120, |s| s.usable_channels() == CHANNELS);
    b.wait_status("8 usable channels on B", 120, |s| s.usable_channels() == CHANNELS);
    let workers_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
    let mirrors = tempfile::tempdir_in(parent).expect("mirror dir");
    let workers = boltbox_node::backup::Workers(workers_rt.handle().clone());
    let mut proxy = None;
    match (mirror, vss) {
        (Mirror::Off, _) | (Mirror::Vss(_), None) => {}
        (Mirror::Stick, _) => {
            for (node, name) in [(&a, "a"), (&b, "b")] {
                node.node().store().mirror_to(boltbox_node::mirror::MirrorSetup {
                    dir: mirrors.path().join(name),
                    seed: node.seed().clone(),
                    config: node.config.clone(),
                    node_id: node.node().node_id(),
                    workers: workers.clone(),
                });
            }
        }
        (Mirror::Vss(rtt), Some(vss)) => {
            let target = std::net::SocketAddr::from(([127, 0, 0, 1], vss.port()));
            let fault = if rtt.is_zero() { Fault::Pass } else { Fault::Delay(rtt) };
            let started = proxy.insert(FaultProxy::start(target, fault).expect("latency proxy"));
            for node in [&a, &b] {
                node.node().store().mirror_to_vss(boltbox_node::mirror::vss::VssSetup {
                    url: format!("http://127.0.0.1:{}/vss", started.port()),
                    auth: boltbox_node::mirror::vss::VssAuth::Signature,
                    certificate: None,
                    seed: node.seed().clone(),
                    config: node.config.clone(),
                    node_id: node.node().node_id(),
                    workers: workers.clone(),
                });
            }
            for node in [&a, &b] {
                boltbox_tests::wait_until(boltbox_tests::Deadline::in_secs(120), "VSS in sync", || {
                    matches!(
                        node.node().store().vss_status(),
                        boltbox_node::mirror::vss::VssStatus::InSync { .. }
                    )
                    .then_some(())
                });
            }
        }
    }
    let mirror_log_bytes = || log_bytes(&mirrors.path().join("a")) + log_bytes(&mirrors.path().join("b"));

    let b_id = b.node().node_id();
    let waiter = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let mut in_flight: HashMap<String, Instant> = HashMap::new();
    let send = |a: &TestNode, in_flight: &mut HashMap<String, Instant>| -> bool {
        match a.node().keysend(&b_id, PAYMENT_MSAT) {
            Ok(id) => {
                in_flight.insert(id, Instant::now());
                true
            }
            Err(e) => {
                eprintln!("keysend refused: {e}");
                false
            }
        }
    };
    for _ in 0..IN_FLIGHT {
        send(&a, &mut in_flight);
    }
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(warmup);
    let measure_until = measure_from + Duration::from_secs_f64(secs);
    let (mut payments, mut failed, mut lagged) = (0u64, 0u64, 0u64);
    let mut latencies = Vec::new();
    let mut window_start = None;
    let commit_stats = |a: &TestNode, b: &TestNode| {
        let (ca, wa) = a.node().store().commit_stats();
        let (cb, wb) = b.node().store().commit_stats();
        (ca + cb, wa + wb)
    };
    let mut stats_start = (0, 0);
    let mut cpu_start = 0.0;
    let (mut wchar_start, mut mirror_start) = (0, 0);
    let mut last_done = Instant::now();
    loop {
        let now = Instant::now();
        if now >= measure_until {
            break;
        }
        if in_flight.len() < IN_FLIGHT {
            // A refused send (liquidity, a channel busy): try again shortly.
            if !send(&a, &mut in_flight) {
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        assert!(now - last_done < Duration::from_secs(120), "no payment completed for 2 minutes");
        let event = waiter.block_on(async {
            tokio::time::timeout(measure_until.saturating_duration_since(now), a.events().recv()).await
        });
        let (hash, ok) = match event {
            Err(_) => break,
            Ok(Ok(NodeEvent::PaymentSent { payment_hash, .. })) => (Some(payment_hash), true),
            Ok(Ok(NodeEvent::PaymentFailed { payment_hash, reason })) => {
                eprintln!("payment failed: {reason}");
                (payment_hash, false)
            }
            Ok(Ok(_)) => continue,
            Ok(Err(RecvError::Lagged(n))) => {
                // Completions were lost: forget the oldest in-flight payments so that the
                // window stays at 32 (they are not counted).
                lagged += n;
                let mut oldest: Vec<(String, Instant)> =
                    in_flight.iter().map(|(k, v)| (k.clone(), *v)).collect();
                oldest.sort_by_key(|(_, t)| *t);
                for (k, _) in oldest.into_iter().take(n as usize) {
                    in_flight.remove(&k);
                }
                continue;
            }
            Ok(Err(RecvError::Closed)) => panic!("A's event stream closed"),
        };
        let Some(sent_at) = hash.and_then(|h| in_flight.remove(&h)) else { continue };
        let done = Instant::now();
        last_done = done;
        if done >= measure_from {
            if window_start.is_none() {
                window_start = Some(done);
                stats_start = commit_stats(&a, &b);
                cpu_start = cpu_secs();
                wchar_start = wchar();
                mirror_start = mirror_log_bytes();
            }
            if ok {
                payments += 1;
                latencies.push(done - sent_at);
            } else {
                failed += 1;
            }
        }
    }
    let secs = window_start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
    let stats_end = commit_stats(&a, &b);
    let cores_busy = (cpu_secs() - cpu_start) / secs.max(f64::MIN_POSITIVE);
    let wchar_window = wchar().saturating_sub(wchar_start);
    // A compaction in the window would shrink the sum; the window is far shorter than 64 MiB.
    let mirror_window = mirror_log_bytes().saturating_sub(mirror_start);
    if !matches!(mirror, Mirror::Off) {
        for (node, name) in [(&a, "a"), (&b, "b")] {
            let status = node.node().store().mirror_status();
            let remote = node.node().store().vss_status();
            eprintln!("payments: mirrors of {name} at the end: {status:?}, {remote:?}");
        }
    }
    if lagged > 0 {
        eprintln!("warning: {lagged} events lost to lag; those payments were not counted");
    }
    latencies.sort();
    let row = Row {
        storage: label.clone(),
        model: model.into(),
        payments,
        failed,
        secs,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        commits: stats_end.0 - stats_start.0,
        writes: stats_end.1 - stats_start.1,
        cores_busy,
        wchar: wchar_window,
        mirror_bytes: mirror_window,
    };
    eprintln!("payments: {label}, {model}: {:.1}/s", row.per_sec());
    drop(a);
    drop(b);
    row
}

fn run_both(model: &str) -> Vec<Row> {
    let warmup = env_secs("BOLTBOX_PAYMENTS_WARMUP_SECS", 3.0);
    let secs = env_secs("BOLTBOX_PAYMENTS_SECS", 20.0);
    let parent = tempfile::tempdir_in(bench_dir()).expect("bench dir");
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    // A vss-server on its own PostgreSQL (fsync on), on this machine; without one provisioned
    // (scripts/setup.sh vss) its rows are left out.
    let vss = match Vss::start() {
        Ok(vss) => Some(vss),
        Err(e) => {
            eprintln!("payments: no VSS rows: {e}");
            None
        }
    };
    let mut runs = vec![(Storage::Boltbox, Mirror::Off), (Storage::Boltbox, Mirror::Stick)];
    if vss.is_some() {
        runs.extend([0, 20, 100].map(|ms| (Storage::Boltbox, Mirror::Vss(Duration::from_millis(ms)))));
    }
    runs.push((Storage::LdkSqlite, Mirror::Off));
    runs.into_iter()
        .map(|(storage, mirror)| {
            run(&bitcoind, vss.as_ref(), storage, mirror, model, parent.path(), warmup, secs)
        })
        .collect()
}

fn format_table(rows: &[Row]) -> String {
    let mut out = format!(
        "payments/s, A → B over {CHANNELS} channels of {CHANNEL_SATS} sat, {IN_FLIGHT} keysend payments of {} sat in flight\n",
        PAYMENT_MSAT / 1000
    );
    out += &format!(
        "{:<15} {:<10} {:>11} {:>9} {:>7} {:>8} {:>8} {:>17} {:>16} {:>14} {:>11} {:>15} {:>15} {:>12}\n",
        "storage",
        "model",
        "payments/s",
        "payments",
        "failed",
        "p50 ms",
        "p99 ms",
        "boltbox ÷ SQLite",
        "commits/payment",
        "writes/commit",
        "cores busy",
        "bytes/payment",
        "mirror B/pay",
        "card B/pay"
    );
    for row in rows {
        let ratio = if row.storage.starts_with("boltbox") {
            rows.iter()
                .find(|r| r.storage == "SqliteStore" && r.model == row.model)
                .map(|s| format!("{:.2}x", row.per_sec() / s.per_sec().max(f64::MIN_POSITIVE)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let (per_payment, per_commit) = if row.storage.starts_with("boltbox") {
            (
                format!("{:.1}", row.commits as f64 / row.payments.max(1) as f64),
                format!("{:.1}", row.writes as f64 / row.commits.max(1) as f64),
            )
        } else {
            ("-".to_string(), "-".to_string())
        };
        out += &format!(
            "{:<15} {:<10} {:>11.1} {:>9} {:>7} {:>8.0} {:>8.0} {:>17} {:>16} {:>14} {:>11.2} {:>15.0} {:>15.0} {:>12.0}\n",
            row.storage,
            row.model,
            row.per_sec(),
            row.payments,
            row.failed,
            row.p50_ms,
            row.p99_ms,
            ratio,
            per_payment,
            per_commit,
            row.cores_busy,
            row.wchar as f64 / row.payments.max(1) as f64,
            row.mirror_bytes as f64 / row.payments.max(1) as f64,
            row.wchar.saturating_sub(row.mirror_bytes) as f64 / row.payments.max(1) as f64
        );
    }
    out
}

fn main() {
    // ldk-node logs an error per fee estimate on a fresh regtest chain (expected there): keep
    // the table readable unless RUST_LOG asks for more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ldk_node::chain::bitcoind=off"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    if sdcard::in_model() {
        for row in run_both("SD-card") {
            println!("{}", row.to_line());
        }
        return;
    }
    let mut rows = run_both("local");
    for line in sdcard::rerun_in_model().expect("run under the SD-card model").unwrap_or_default() {
        match Row::from_line(&line) {
            Some(row) => rows.push(row),
            None => println!("{line}"),
        }
    }
    let ms = sdcard::delay_ms();
    println!("{}", format_table(&rows));
    for model in ["local", "SD-card"] {
        let rate =
            |storage: &str| rows.iter().find(|r| r.storage == storage && r.model == model).map(Row::per_sec);
        if let (Some(on), Some(off)) = (rate("boltbox+mirror"), rate("boltbox")) {
            println!("mirror on ÷ off, {model}: {:.2}x payments/s", on / off.max(f64::MIN_POSITIVE));
        }
        for rtt in [0, 20, 100] {
            if let (Some(on), Some(off)) = (rate(&format!("boltbox+vss{rtt}")), rate("boltbox")) {
                println!(
                    "VSS mirror on ÷ off, +{rtt} ms round trip, {model}: {:.2}x payments/s",
                    on / off.max(f64::MIN_POSITIVE)
                );
            }
        }
    }
    println!(
        "(SD-card model: +{ms} ms per fsync/fdatasync, one at a time per medium; both nodes share the card, and the mirrors one stick. \
         commits and writes: boltbox's group commits of A and B together)"
    );
}

//! `cargo bench -p boltbox-tests --bench node_rss`: the peak resident memory of one boltbox
//! node holding 10 channels on regtest. The measured node runs alone in a child process (this
//! binary again), so that its RSS is its own; a peer in the parent opens the channels to it and
//! pays it. Reported, never asserted (target: ≤ 80 MB, for boards with 512 MB).

use boltbox_node::{BoltNode, NodeConfig, NodeEvent, Seed};
use boltbox_tests::{BitcoinD, Deadline, TestNode, free_port, open_store, regtest_config, wait_until};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CHANNELS: usize = 10;

/// The measured node: starts from the config file the parent wrote, prints
/// `READY <peer address> <funding address>`,
/// then answers `STATUS` with `<usable channels> <spendable sats> <lightning height>` and `RSS` with
/// `<VmHWM kB> <VmRSS kB>`, and stops on `STOP`.
fn child(config_path: &str) {
    let text = std::fs::read_to_string(config_path).expect("config");
    let config: NodeConfig = toml::from_str(&text).expect("config toml");
    let seed = Seed::generate();
    let store = open_store(&config, &seed);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let node = BoltNode::start(&config, &seed, store, rt.handle().clone()).expect("start");
    let port = config.listen[0].rsplit(':').next().expect("port");
    println!("READY {}@127.0.0.1:{port} {}", node.node_id(), node.new_address().expect("address"));
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        match line.trim() {
            "STATUS" => {
                let s = node.refresh_status();
                println!(
                    "{} {} {}",
                    s.usable_channels(),
                    s.balances.onchain_spendable_sats,
                    s.sync.lightning_height
                );
            }
            "RSS" => {
                let status = std::fs::read_to_string("/proc/self/status").expect("proc");
                let kb = |field: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(field))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                println!("{} {}", kb("VmHWM:"), kb("VmRSS:"));
            }
            _ => break,
        }
        std::io::stdout().flush().expect("stdout");
    }
    node.stop().expect("stop");
}

fn main() {
    if let Ok(path) = std::env::var("BOLTBOX_RSS_CHILD") {
        child(&path);
        return;
    }
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = regtest_config(&bitcoind, "measured", dir.path(), free_port().expect("port"), vec![]);
    let config_path = dir.path().join("boltbox.toml");
    std::fs::write(&config_path, toml::to_string(&config).expect("toml")).expect("write config");

    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env("BOLTBOX_RSS_CHILD", &config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the measured node");
    let mut to_child = child.stdin.take().expect("stdin");
    let mut from_child = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = from_child.next().expect("the child said READY").expect("line");
    let ready: Vec<&str> = ready.split_whitespace().collect();
    assert_eq!(ready.first(), Some(&"READY"), "{ready:?}");
    let (peer_address, funding) = (ready[1].to_string(), ready[2].to_string());
    let mut ask = |cmd: &str| -> Vec<String> {
        writeln!(to_child, "{cmd}").expect("to child");
        to_child.flush().expect("flush");
        let line = from_child.next().expect("the child answered").expect("line");
        line.split_whitespace().map(String::from).collect()
    };

    // The accepting side keeps an anchor reserve per channel on-chain.
    bitcoind.send_to(&funding, 400_000).expect("fund the measured node");
    let mut peer = TestNode::start(&bitcoind, "peer", vec![]);
    peer.fund(&bitcoind, 3_000_000);
    bitcoind.mine(6).expect("mine");
    wait_until(Deadline::in_secs(60), "funds on both sides", || {
        let s = ask("STATUS");
        let peer_ok = peer.node().refresh_status().balances.onchain_spendable_sats >= 2_000_000;
        (s[1].parse::<u64>().unwrap_or(0) >= 300_000 && peer_ok).then_some(())
    });
    let target = peer_address.parse().expect("peer address");
    for i in 0..CHANNELS {
        let before = bitcoind.mempool().expect("mempool").len();
        peer.node().open_channel(&target, 150_000, Some(50_000_000), true).expect("open");
        peer.wait_event("pending", 30, |e| matches!(e, NodeEvent::ChannelPending { .. }).then_some(()));
        bitcoind.wait_for_mempool(before + 1, Deadline::in_secs(30));
        // LDK takes at most 4 unconfirmed inbound channels per peer: confirm each, and let
        // both nodes see the block (the peer's wallet must know its funding input is spent
        // before it builds the next funding transaction).
        bitcoind.mine(if i + 1 == CHANNELS { 6 } else { 1 }).expect("mine");
        let height = bitcoind.height().expect("height") as u32;
        peer.wait_status("the peer at the new height", 60, |s| {
            s.sync.lightning_height >= height && s.sync.wallet_height >= height
        });
        wait_until(Deadline::in_secs(60), "the measured node at the new height", || {
            (ask("STATUS")[2].parse::<u32>().unwrap_or(0) >= height).then_some(())
        });
    }
    wait_until(Deadline::in_secs(120), "10 usable channels on the measured node", || {
        (ask("STATUS")[0].parse::<usize>().unwrap_or(0) == CHANNELS).then_some(())
    });
    // Some traffic: keysends in both directions.
    let id = peer_address.split('@').next().expect("id").to_string();
    for _ in 0..20 {
        peer.node().keysend(&id, 10_000).expect("keysend");
        peer.wait_event("keysend done", 30, |e| matches!(e, NodeEvent::PaymentSent { .. }).then_some(()));
    }
    let rss = ask("RSS");
    let (hwm, now) =
        (rss[0].parse::<f64>().unwrap_or(0.0) / 1024.0, rss[1].parse::<f64>().unwrap_or(0.0) / 1024.0);
    println!(
        "one boltbox node, {CHANNELS} channels, 20 payments: peak RSS {hwm:.1} MiB, RSS now {now:.1} MiB"
    );
    // STOP has no answer: the child stops its node and exits.
    writeln!(to_child, "STOP").expect("to child");
    to_child.flush().expect("flush");
    let status = child.wait().expect("the measured node exits");
    assert!(status.success(), "the measured node failed: {status}");
}

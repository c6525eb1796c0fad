//! `boltbox run` end to end on the link board against a regtest bitcoind: boot to the home
//! screen, page with A, a peer opens a channel, long-press A and confirm → "shutting down" then
//! "safe to unplug", the power-off command, and exit 0 with the node's state persisted; a second
//! run comes back with the same node id (read from the network screen's URI caption) and the
//! channel, and SIGTERM stops it safely without powering off ("stopped"), telling a pretend
//! systemd READY, WATCHDOG and STOPPING; meanwhile
//! the `boltbox` CLI reads its status, refuses bad input, and keeps accounts (an invoice made
//! for one paid by the peer, a batch of transfers, the OLED's accounts page) through the
//! control socket. Every wait is on a caption, an event or a polled condition with
//! a deadline; the only timed things are how long a finger holds a button for a short press and
//! lifts it between two presses.

use std::io::{ErrorKind, Write as _};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boltbox_board::{Button, LinkClient, LinkFrame};
use boltbox_node::NodeEvent;
use boltbox_tests::{BitcoinD, Deadline, TestNode, wait_until};

mod common;
use common::{
    Appliance, BETWEEN_PRESSES, BOOT, SCREEN, SHORT_PRESS, SHUTDOWN, cli, link_appliance, observe_stop,
    wait_screen,
};

const ALIAS: &str = "linktest";

/// Waits for a datagram on the pretend systemd's socket with the line `line`.
fn wait_notify(socket: &UnixDatagram, line: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {line:?} from boltbox within {timeout:?}");
        socket.set_read_timeout(Some(left)).expect("read timeout");
        match socket.recv(&mut buf) {
            Ok(n) if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == line) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
}

/// A short press of A, then the next status page `name`.
fn next_page(link: &mut LinkClient, name: &str) -> LinkFrame {
    link.press(Button::A, SHORT_PRESS).expect("press A");
    wait_screen(link, name, "", SCREEN)
}

/// The node id in the network screen's caption (`qr <node id>@<ip>:<port>` or `qr <node id>`).
fn node_id(network: &LinkFrame) -> String {
    let uri =
        network.caption.lines().find_map(|l| l.strip_prefix("qr ")).expect("network screen shows the URI");
    uri.split('@').next().unwrap_or(uri).to_string()
}

/// Waits for "shutting down", then "safe to unplug" (the gesture's last frame), then for the
/// process to exit 0.
fn observe_safe_shutdown(link: &mut LinkClient, run: &mut Appliance) {
    wait_screen(link, "shutdown", "shutting", SHUTDOWN);
    let last = wait_screen(link, "shutdown", "safe to", SHUTDOWN);
    assert!(last.caption.contains("unplug"), "{}", last.caption);
    assert!(run.wait_exit(SHUTDOWN), "boltbox run exits with status 0 after a safe shutdown");
}

#[test]
fn boots_pages_shuts_down_safely_and_restarts_with_the_same_node_and_channel() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, config, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);
    // Powering off leaves a mark: only the shutdown gesture may.
    let powered_off = dir.path().join("powered-off");
    let text = std::fs::read_to_string(&config).expect("config");
    let off = format!("off_command = [\"touch\", \"{}\"]", powered_off.display());
    std::fs::write(&config, text.replace("off_command = []", &off)).expect("config");

    // First run: boot, page, learn the node id.
    let mut run = Appliance::start(&config, dir.path().join("run1.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "home", ALIAS, BOOT);
    let channels = next_page(&mut link, "channels");
    assert!(channels.caption.contains("no channels yet"), "{}", channels.caption);
    next_page(&mut link, "earnings");
    let accounts = next_page(&mut link, "accounts");
    assert!(accounts.caption.contains("no accounts yet"), "{}", accounts.caption);
    let id = node_id(&next_page(&mut link, "network"));
    for page in ["system", "alerts", "home"] {
        next_page(&mut link, page);
    }

    // A peer opens a channel to it; the home screen counts it once it is usable.
    let mut peer = TestNode::start(&bitcoind, "peer", Vec::new());
    peer.fund(&bitcoind, 1_000_000);
    bitcoind.mine(6).expect("mine");
    peer.wait_status("peer funds", 60, |s| s.balances.onchain_spendable_sats >= 500_000);
    let address = format!("{id}@{}", node.listen[0]).parse().expect("appliance address");
    let mempool = bitcoind.mempool().expect("mempool").len();
    peer.node().open_channel(&address, 200_000, None, true).expect("open channel");
    peer.wait_event("ChannelPending", 30, |e| matches!(e, NodeEvent::ChannelPending { .. }).then_some(()));
    bitcoind.wait_for_mempool(mempool + 1, Deadline::in_secs(30));
    bitcoind.mine(6).expect("mine");
    wait_screen(&mut link, "home", "1/1 ch", BOOT);
    accounts_over_the_cli(&config, &mut link, &peer);

    // Long-press A (held until the confirmation shows), then confirm with a short press.
    link.send_edge(Button::A, true).expect("A down");
    wait_screen(&mut link, "shutdown confirm", "press A again", SCREEN);
    link.send_edge(Button::A, false).expect("A up");
    // A release shows nothing to wait for; the finger simply takes a moment to press again.
    std::thread::sleep(BETWEEN_PRESSES);
    link.press(Button::A, SHORT_PRESS).expect("confirm");
    observe_safe_shutdown(&mut link, &mut run);
    assert!(powered_off.exists(), "the gesture powers the board off");
    std::fs::remove_file(&powered_off).expect("rm");
    let data_dir = &node.data_dir;
    assert!(data_dir.join("node.redb").is_file(), "the store is in {}", data_dir.display());
    assert!(data_dir.join("seed.words").is_file(), "the seed is in {}", data_dir.display());

    // Second run, under a pretend systemd: the same node id and the channel; SIGTERM shuts it
    // down the same way.
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    let mut run = Appliance::start(&config, dir.path().join("run2.log"), Some(&notify_path));
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "home", "/1 ch", BOOT);
    wait_notify(&notify, "READY=1", BOOT);
    wait_notify(&notify, "WATCHDOG=1", SCREEN);
    let channels = next_page(&mut link, "channels");
    assert!(channels.caption.contains("channel 1/1"), "{}", channels.caption);
    next_page(&mut link, "earnings");
    next_page(&mut link, "accounts");
    assert_eq!(node_id(&next_page(&mut link, "network")), id, "the same node after a restart");

    // The CLI reaches the running node through the control socket.
    let status: serde_json::Value =
        serde_json::from_slice(&cli_ok(&config, &["status"])).expect("status is JSON");
    assert_eq!(status["node_id"], id.as_str(), "{status}");
    assert_eq!(status["channels"].as_array().map(Vec::len), Some(1), "{status}");
    let address = String::from_utf8(cli_ok(&config, &["address"])).expect("text");
    assert!(address.trim().starts_with("bcrt1"), "a regtest address: {address}");
    let refused = cli(&config, &["pay", "lnbcrt-not-an-invoice"]);
    assert!(!refused.status.success(), "paying garbage fails");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("invoice"), "the error names the invoice: {why}");

    run.sigterm();
    observe_stop(&mut link, &mut run);
    assert!(!powered_off.exists(), "SIGTERM (systemctl stop, restart) never powers the board off");
    wait_notify(&notify, "STOPPING=1", SCREEN);
    assert!(!data_dir.join("control.sock").exists(), "the control socket goes with the service");
    let unreachable = cli(&config, &["status"]);
    assert_eq!(unreachable.status.code(), Some(69), "no service, no status: EX_UNAVAILABLE");
    let why = String::from_utf8_lossy(&unreachable.stderr);
    assert!(why.contains("cannot reach boltbox"), "{why}");
}

/// Accounts through the CLI and on the OLED: the peer pays an invoice made for an account,
/// a batch moves money between accounts, and what is wrong is refused with its reason.
fn accounts_over_the_cli(config: &std::path::Path, link: &mut LinkClient, peer: &TestNode) {
    let family: serde_json::Value =
        serde_json::from_slice(&cli_ok(config, &["account", "new", "family"])).expect("JSON");
    assert_eq!(family["name"], "family", "{family}");
    assert_eq!(family["key"].as_str().map(str::len), Some(64), "the transfer key, shown once: {family}");
    cli_ok(config, &["account", "new", "kid"]);
    let again = cli(config, &["account", "new", "family"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    // The node has no outbound money of its own: main has nothing to give.
    let broke = cli(config, &["account", "transfer", "main", "kid", "--msat", "1000"]);
    assert_eq!(broke.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broke.stderr).contains("main account has 0 msat"));

    let invoice = cli_ok(config, &["account", "invoice", "family", "--msat", "5000000"]);
    let invoice = String::from_utf8(invoice).expect("text");
    peer.wait_status("the peer's channel usable", 60, |s| s.usable_channels() == 1);
    peer.node().pay_invoice(invoice.trim(), None).expect("the peer pays the family's invoice");
    let show = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&cli_ok(config, &["account", "show", name])).expect("JSON")
    };
    wait_until(Deadline::in_secs(60), "the family credited", || {
        (show("family")["balance_msat"] == 5_000_000).then_some(())
    });

    // A batch: one good transfer, a line that is not one, one with a wrong MAC.
    let (from, to) = (family["id"].as_u64().expect("id"), show("kid")["id"].as_u64().expect("id"));
    let lines = format!(
        "{{\"from\":{from},\"to\":{to},\"amount_msat\":1500000}}\nnot json\n\
         {{\"from\":{from},\"to\":{to},\"amount_msat\":1,\"nonce\":1,\"mac\":\"{}\"}}\n",
        "00".repeat(32)
    );
    let mut batch = Command::new(env!("CARGO_BIN_EXE_boltbox"))
        .args(["account", "batch", "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the CLI");
    batch.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("write");
    let out = batch.wait_with_output().expect("batch");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a refused line fails the batch: {text}");
    assert!(text.contains("1 applied, 2 refused"), "{text}");
    assert!(
        text.contains("line 2: not a transfer") && text.contains("line 3:") && text.contains("not signed"),
        "{text}"
    );
    assert_eq!(
        (show("family")["balance_msat"].as_u64(), show("kid")["balance_msat"].as_u64()),
        (Some(3_500_000), Some(1_500_000))
    );
    let list: serde_json::Value =
        serde_json::from_slice(&cli_ok(config, &["account", "list"])).expect("JSON");
    assert_eq!(list["accounts"].as_array().map(Vec::len), Some(2), "{list}");

    // The OLED's accounts page: from home, channels, earnings, then accounts.
    for page in ["channels", "earnings"] {
        next_page(link, page);
    }
    let page = next_page(link, "accounts");
    assert!(page.caption.contains("2 accounts") && page.caption.contains("total 5,000"), "{}", page.caption);
}

/// Runs the CLI, asserts that it succeeded, and returns its standard output.
fn cli_ok(config: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let output = cli(config, args);
    assert!(output.status.success(), "boltbox {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// A 0.91" module (`display_size = "128x32"`): the service shows every screen a band of whole
/// lines at a time, nothing past the panel's 32 rows, and the node id's QR code whole within
/// them, module for module.
#[test]
fn a_128x32_panel_is_shown_each_screen_a_part_at_a_time_and_the_qr_code_whole() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);
    let config = boltbox_tests::appliance_config(
        dir.path(),
        &node,
        &format!("board = \"link:{}\"\ndisplay_size = \"128x32\"\n", socket.display()),
    );
    let mut run = Appliance::start(&config, dir.path().join("run.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    let first = wait_screen(&mut link, "home", "part 1/", BOOT);
    let second = wait_screen(&mut link, "home", "part 2/", SCREEN);
    assert_ne!(first.frame, second.frame, "the second part is another band of the screen");
    let below = |f: &LinkFrame| (32..64).any(|y| (0..128).any(|x| f.frame.get(x, y)));
    assert!(!below(&first) && !below(&second), "nothing is drawn past row 32");

    for page in ["channels", "earnings", "accounts", "network"] {
        next_page(&mut link, page);
    }
    link.press(Button::B, SHORT_PRESS).expect("press B");
    let qr = wait_screen(&mut link, "network qr", "qr ", SCREEN);
    assert!(!below(&qr), "the QR screen fits the panel");
    let id = qr.caption.lines().find_map(|l| l.strip_prefix("qr ")).expect("qr line").to_string();
    let code = qrcode::QrCode::with_error_correction_level(&id, qrcode::EcLevel::L).expect("code");
    let n = code.width();
    let (x0, y0) = ((128 - (n + 8)) / 2 + 4, (32 - n) / 2);
    let drawn: Vec<bool> = (0..n * n).map(|i| !qr.frame.get(x0 + i % n, y0 + i / n)).collect();
    let dark: Vec<bool> = code.to_colors().iter().map(|c| *c == qrcode::Color::Dark).collect();
    assert_eq!(drawn, dark, "the node id's code, module for module\n{}", qr.frame.to_ascii());
    assert_eq!(id, common::status_node_id(&config).to_uppercase(), "and it is this node's id");
    // The last frame stays on a halted board: whole on the panel, not a part of a screen.
    run.sigterm();
    let last = wait_screen(&mut link, "shutdown", "stopped", SHUTDOWN);
    assert!(!last.caption.contains("part "), "{}", last.caption);
    assert!(!below(&last) && last.frame.lit_pixels() > 0, "{}", last.frame.to_ascii());
    assert!(run.wait_exit(SHUTDOWN), "a safe stop");
}

#[test]
fn a_missing_display_and_missing_buttons_are_alerts_while_the_node_runs() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _, _) = link_appliance(&bitcoind, dir.path(), ALIAS);
    // The real-hardware board, on a machine with neither the I2C bus nor the GPIO chip.
    let config = boltbox_tests::appliance_config(
        dir.path(),
        &node,
        &format!(
            "board = \"auto\"\ni2c_bus = \"{0}/no-i2c\"\ngpio_chip = \"{0}/no-gpiochip\"\n",
            dir.path().display()
        ),
    );
    common::skip_seed_reminder(&node.data_dir);
    let mut run = Appliance::start(&config, dir.path().join("run.log"), None);
    // The alerts come as soon as the board is opened, the node runs a moment later.
    let status = common::wait_status(&config, "device alerts while the node runs", BOOT, |status| {
        status["alerts"].as_array().is_some_and(|alerts| alerts.len() >= 2) && status["running"] == true
    });
    let headlines: Vec<&str> =
        status["alerts"].as_array().into_iter().flatten().filter_map(|a| a["headline"].as_str()).collect();
    assert_eq!(headlines, ["display not working", "buttons not working"], "{status}");
    assert!(status["running"].as_bool().unwrap_or(false), "the node runs without them: {status}");
    run.sigterm();
    assert!(run.wait_exit(SHUTDOWN), "a safe shutdown without display and buttons exits 0");
}

#[test]
fn a_bad_config_exits_with_ex_config_and_every_other_error_names_its_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("boltbox.toml");
    std::fs::write(&config, "[node]\nalias = \"\"\n\n[board]\nboard = \"sim\"\n").expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_boltbox"))
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run boltbox");
    assert_eq!(output.status.code(), Some(78), "the unit's RestartPreventExitStatus=78");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node.alias"), "{stderr}");
    assert!(!stderr.contains("Caused by:"), "{stderr}");
    assert!(stderr.lines().all(|l| !l.trim_end().ends_with(':')), "no cause left empty: {stderr}");
    let missing = cli(&dir.path().join("nowhere.toml"), &["status"]);
    assert_eq!(missing.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nowhere.toml"));
}

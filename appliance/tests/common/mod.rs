//! Shared by the supervisor test and the button-latency bench: the real `boltbox run` binary
//! as a child process, and its config on a link board. Each user takes a part of it.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use boltbox_board::{LinkClient, LinkFrame};
use boltbox_node::NodeConfig;
use boltbox_tests::{BitcoinD, Deadline, appliance_config, free_port, regtest_config, wait_until};

/// A `boltbox run` process; killed (and its log printed) if the test fails while it runs.
pub struct Appliance {
    /// The process.
    pub child: Child,
    log: PathBuf,
}

impl Appliance {
    /// Starts `boltbox run`, under a pretend systemd when `notify` is given: `NOTIFY_SOCKET`
    /// points there and the watchdog is on.
    pub fn start(config: &Path, log: PathBuf, notify: Option<&Path>) -> Appliance {
        let mut command = Command::new(env!("CARGO_BIN_EXE_boltbox"));
        command.args(["run", "--config"]).arg(config);
        match notify {
            Some(socket) => command.env("NOTIFY_SOCKET", socket).env("WATCHDOG_USEC", WATCHDOG_USEC),
            None => command.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC"),
        };
        Appliance::spawn(command, log)
    }

    /// Starts `boltbox run` as `wrapper` runs it (`["sh", "-c", "umask 022; exec \"$0\" \"$@\""]`,
    /// `["unshare", "--mount", ...]`, `["env", "LD_PRELOAD=..."]`): the wrapper's arguments, then
    /// the binary and `run --config <config>`.
    pub fn start_wrapped(config: &Path, log: PathBuf, wrapper: &[&str]) -> Appliance {
        let (program, args) = wrapper.split_first().expect("a wrapper");
        let mut command = Command::new(program);
        command.args(args).arg(env!("CARGO_BIN_EXE_boltbox")).args(["run", "--config"]).arg(config);
        command.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC");
        Appliance::spawn(command, log)
    }

    fn spawn(mut command: Command, log: PathBuf) -> Appliance {
        let stderr = File::create(&log).expect("log file");
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn boltbox run");
        Appliance { child, log }
    }

    /// What the service has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit by itself; returns whether it exited
    /// with status 0.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let status = wait_until(Deadline::in_secs(timeout.as_secs()), "boltbox to exit", || {
            self.child.try_wait().expect("try_wait")
        });
        status.success()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- boltbox run log ({}) ---\n{log}", self.log.display());
        }
    }
}

/// The pretend systemd's watchdog interval: boltbox pings at half of it.
pub const WATCHDOG_USEC: &str = "1000000";

/// Writes `boltbox.toml` for the link board at `socket` (see [`appliance_config`]).
pub fn write_config(dir: &Path, node: &NodeConfig, socket: &Path) -> PathBuf {
    appliance_config(dir, node, &format!("board = \"link:{}\"\n", socket.display()))
}

/// A short press: longer than the 30 ms debounce, far shorter than the long press.
pub const SHORT_PRESS: Duration = Duration::from_millis(150);
/// A finger off the button between two presses: longer than the debounce, or the two presses
/// are one (a release shorter than the debounce is contact bounce).
pub const BETWEEN_PRESSES: Duration = Duration::from_millis(150);
/// Booting includes starting ldk-node and its first chain sync.
pub const BOOT: Duration = Duration::from_secs(120);
/// A screen change after a button press.
pub const SCREEN: Duration = Duration::from_secs(15);
/// Stopping the node, syncing, drawing the last frame.
pub const SHUTDOWN: Duration = Duration::from_secs(60);

/// Waits for a frame of screen `name` whose caption contains `text`, also where the screen
/// wrapped it over two lines.
pub fn wait_screen(link: &mut LinkClient, name: &str, text: &str, timeout: Duration) -> LinkFrame {
    link.wait_for_frame(timeout, |f| screen(f) == name && f.caption.replace('\n', " ").contains(text))
        .unwrap_or_else(|e| panic!("waiting for screen {name:?} showing {text:?}: {e}"))
}

/// The screen a frame shows: the caption's first line.
pub fn screen(frame: &LinkFrame) -> &str {
    frame.caption.lines().next().unwrap_or_default()
}

/// A regtest appliance named `alias` on a link board: writes its config under `dir` and returns
/// (its node config, config file, link socket). The appliance only accepts channels: it keeps no on-chain anchor
/// reserve, so that it needs no funds of its own. The seed reminder is recorded as skipped, so
/// that the home page shows the node (`seed_reminder` tests it).
pub fn link_appliance(bitcoind: &BitcoinD, dir: &Path, alias: &str) -> (NodeConfig, PathBuf, PathBuf) {
    let mut node = regtest_config(bitcoind, alias, dir, free_port().expect("port"), Vec::new());
    node.channel.anchor_reserve_sats = 0;
    let socket = dir.join("link.sock");
    let config = write_config(dir, &node, &socket);
    skip_seed_reminder(&node.data_dir);
    (node, config, socket)
}

/// Records in `data_dir` that the owner chose not to be reminded of the seed words (private,
/// as boltbox itself writes it).
pub fn skip_seed_reminder(data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data_dir).expect("data dir");
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let path = data_dir.join("seed-reminder.json");
    std::fs::write(&path, br#"{"skipped":{"at":0}}"#).expect("reminder");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Adds `[backup] sticks = <dir>/usb` (and `keep = 2`) to the appliance's config; returns the
/// sticks dir.
pub fn with_sticks(dir: &Path, config: &Path) -> PathBuf {
    let sticks = dir.join("usb");
    std::fs::create_dir_all(&sticks).expect("sticks dir");
    let mut text = std::fs::read_to_string(config).expect("config");
    text.push_str(&format!("\n[backup]\nsticks = \"{}\"\nkeep = 2\n", sticks.display()));
    std::fs::write(config, text).expect("config");
    sticks
}

/// Holds B until the backup confirmation shows, releases, and confirms with a short press of B.
pub fn hold_b_and_confirm(link: &mut LinkClient) {
    link.send_edge(boltbox_board::Button::B, true).expect("B down");
    wait_screen(link, "backup confirm", "press B again", SCREEN);
    link.send_edge(boltbox_board::Button::B, false).expect("B up");
    // A release shows nothing to wait for; the finger takes a moment to press again.
    std::thread::sleep(BETWEEN_PRESSES);
    link.press(boltbox_board::Button::B, SHORT_PRESS).expect("confirm");
}

/// A node on the link board that has written one backup to a USB stick (`sda1` under
/// [`with_sticks`]) by the gesture, and has stopped.
pub struct BackedUp {
    /// The node's config.
    pub node: NodeConfig,
    /// The appliance's config file.
    pub config: PathBuf,
    /// The link board's socket.
    pub socket: PathBuf,
    /// Where the sticks are.
    pub sticks: PathBuf,
    /// The node id.
    pub id: String,
}

/// Starts a node on the link board with a stick, backs it up by the gesture and stops it.
pub fn node_backed_up_to_a_stick(bitcoind: &BitcoinD, dir: &Path, alias: &str) -> BackedUp {
    let (node, config, socket) = link_appliance(bitcoind, dir, alias);
    let sticks = with_sticks(dir, &config);
    std::fs::create_dir(sticks.join("sda1")).expect("stick");
    let mut run = Appliance::start(&config, dir.join("run1.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "home", alias, BOOT);
    let id = status_node_id(&config);
    hold_b_and_confirm(&mut link);
    wait_screen(&mut link, "backup", "backup OK", SHUTDOWN);
    run.sigterm();
    observe_stop(&mut link, &mut run);
    BackedUp { node, config, socket, sticks, id }
}

/// The node id, from `boltbox status`.
pub fn status_node_id(config: &Path) -> String {
    let status = status(config).expect("boltbox status answers");
    status["node_id"].as_str().expect("node id").to_string()
}

/// Runs `boltbox <args> --config <config>` with no input.
pub fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_boltbox"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("run the boltbox CLI")
}

/// `boltbox status` as JSON, if the service answers.
pub fn status(config: &Path) -> Option<serde_json::Value> {
    let output = cli(config, &["status"]);
    output.status.success().then(|| serde_json::from_slice(&output.stdout).ok()).flatten()
}

/// Waits for `boltbox status` to satisfy `check`; returns that status.
pub fn wait_status(
    config: &Path,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_until(Deadline::in_secs(timeout.as_secs()), what, || status(config).filter(|s| check(s)))
}

/// Waits for "shutting down", then "stopped" (SIGTERM's last frame), then an exit with 0.
pub fn observe_stop(link: &mut LinkClient, run: &mut Appliance) {
    wait_screen(link, "shutdown", "shutting", SHUTDOWN);
    let last = wait_screen(link, "shutdown", "stopped", SHUTDOWN);
    assert!(last.caption.contains("node state saved"), "{}", last.caption);
    assert!(run.wait_exit(SHUTDOWN), "boltbox run exits with status 0 after a safe stop");
}

/// Builds the SD-card flush model (`node/benches/sdcard_fsync.c`: a delay per flush, and the
/// fault file of tests) into `dir`; returns the library's path, for `LD_PRELOAD`.
pub fn sdcard_shim(dir: &Path) -> PathBuf {
    let shim = dir.join("sdcard_fsync.so");
    let built = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../node/benches/sdcard_fsync.c"))
        .args(["-ldl", "-lpthread"])
        .status()
        .expect("gcc");
    assert!(built.success(), "the SD-card model builds");
    shim
}

/// Sets the flag to false when dropped.
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

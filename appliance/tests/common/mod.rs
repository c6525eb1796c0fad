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
        let stderr = File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_boltbox"));
        command.args(["run", "--config"]).arg(config).env("RUST_LOG", "info");
        match notify {
            Some(socket) => command.env("NOTIFY_SOCKET", socket).env("WATCHDOG_USEC", WATCHDOG_USEC),
            None => command.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC"),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn boltbox run");
        Appliance { child, log }
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

/// Waits for a frame of screen `name` whose caption contains `text`.
pub fn wait_screen(link: &mut LinkClient, name: &str, text: &str, timeout: Duration) -> LinkFrame {
    link.wait_for_frame(timeout, |f| screen(f) == name && f.caption.contains(text))
        .unwrap_or_else(|e| panic!("waiting for screen {name:?} showing {text:?}: {e}"))
}

/// The screen a frame shows: the caption's first line.
pub fn screen(frame: &LinkFrame) -> &str {
    frame.caption.lines().next().unwrap_or_default()
}

/// A regtest appliance named `alias` on a link board: writes its config under `dir` and returns
/// (its node config, config file, link socket). The appliance only accepts channels: it keeps no on-chain anchor
/// reserve, so that it needs no funds of its own.
pub fn link_appliance(bitcoind: &BitcoinD, dir: &Path, alias: &str) -> (NodeConfig, PathBuf, PathBuf) {
    let mut node = regtest_config(bitcoind, alias, dir, free_port().expect("port"), Vec::new());
    node.channel.anchor_reserve_sats = 0;
    let socket = dir.join("link.sock");
    let config = write_config(dir, &node, &socket);
    (node, config, socket)
}

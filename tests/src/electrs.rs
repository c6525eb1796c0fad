//! A real Electrum server for the tests: electrs (the published crate, built and cached by
//! `scripts/electrs.sh`), indexing the test's regtest bitcoind. Stopped, and its index removed,
//! when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::bitcoind::{BitcoinD, HarnessError, free_port};
use crate::wait::{Deadline, wait_until};

/// The directory holding the `electrs` binary.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BOLTBOX_ELECTRS_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("BOLTBOX_CACHE").unwrap_or_else(|| "/var/cache/boltbox".into());
    PathBuf::from(cache).join("electrs").join("bin")
}

/// An electrs process serving the Electrum protocol on 127.0.0.1.
#[derive(Debug)]
pub struct Electrs {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    args: Vec<String>,
}

impl Electrs {
    /// Starts electrs on a free port against `bitcoind` and waits until it has indexed the
    /// chain and answers Electrum calls.
    pub fn start(bitcoind: &BitcoinD) -> Result<Electrs, HarnessError> {
        Self::start_on(bitcoind, free_port()?)
    }

    /// [`Electrs::start`] on a given port (a test that starts the server after the node
    /// already looks for it there).
    pub fn start_on(bitcoind: &BitcoinD, port: u16) -> Result<Electrs, HarnessError> {
        let bin = bin_dir().join("electrs");
        if !bin.exists() {
            return Err(HarnessError::NotProvisioned(bin));
        }
        let dir = tempfile::Builder::new()
            .prefix("boltbox-electrs-")
            .tempdir()
            .map_err(|source| HarnessError::Io { what: "creating the electrs dir".into(), source })?;
        // The RPC credentials go in a config file: electrs does not take them as an argument.
        let conf = dir.path().join("electrs.toml");
        std::fs::write(&conf, format!("auth = \"{}\"\n", bitcoind.rpc_auth()?))
            .map_err(|source| HarnessError::Io { what: "writing electrs.toml".into(), source })?;
        // electrs's option parser takes each value as the next argument, not after "=".
        let args: Vec<String> = [
            ("--conf", conf.display().to_string()),
            ("--network", "regtest".to_string()),
            ("--db-dir", dir.path().join("db").display().to_string()),
            ("--daemon-dir", bitcoind.datadir().display().to_string()),
            ("--daemon-rpc-addr", format!("127.0.0.1:{}", bitcoind.rpc_port())),
            ("--daemon-p2p-addr", format!("127.0.0.1:{}", bitcoind.p2p_port())),
            ("--electrum-rpc-addr", format!("127.0.0.1:{port}")),
            ("--monitoring-addr", format!("127.0.0.1:{}", free_port()?)),
            // Regtest blocks come quickly in tests: look for them often.
            ("--wait-duration-secs", "1".to_string()),
            ("--jsonrpc-timeout-secs", "10".to_string()),
        ]
        .into_iter()
        .flat_map(|(option, value)| [option.to_string(), value])
        .collect();
        let mut electrs = Electrs { child: None, dir, port, args };
        electrs.spawn()?;
        electrs.wait_synced(bitcoind)?;
        Ok(electrs)
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let log = std::fs::File::create(self.dir.path().join("electrs.log"))
            .map_err(|source| HarnessError::Io { what: "creating the electrs log".into(), source })?;
        let child = Command::new(bin_dir().join("electrs"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| HarnessError::Io { what: "spawning electrs".into(), source })?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until electrs serves the chain up to bitcoind's tip.
    pub fn wait_synced(&mut self, bitcoind: &BitcoinD) -> Result<(), HarnessError> {
        let tip = bitcoind.height()?;
        let deadline = Deadline::in_secs(120);
        let url = self.url();
        let mut exited = None;
        wait_until(deadline, &format!("electrs at height {tip}"), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                exited = Some(status.to_string());
                return Some(());
            }
            use electrum_client::ElectrumApi;
            let client = electrum_client::Client::new(&url).ok()?;
            let header = client.block_headers_subscribe().ok()?;
            (header.height as u64 >= tip).then_some(())
        });
        match exited {
            Some(status) => Err(HarnessError::Exited { status, log: self.log_tail() }),
            None => Ok(()),
        }
    }

    /// The end of electrs's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("electrs.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The Electrum port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `tcp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its index is kept for [`Electrs::resume`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same port and index.
    pub fn resume(&mut self, bitcoind: &BitcoinD) -> Result<(), HarnessError> {
        self.stop();
        self.spawn()?;
        self.wait_synced(bitcoind)
    }
}

impl Drop for Electrs {
    fn drop(&mut self) {
        self.stop();
    }
}

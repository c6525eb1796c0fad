//! A regtest `bitcoind` process owned by a test.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::wait::{Deadline, wait_until};

/// What can go wrong while running the test bitcoind.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The provisioned binaries are not where the harness looks.
    #[error(
        "bitcoind not found at {0}: run `make test` (or `scripts/setup.sh bitcoind`) to provision it, \
         or set BOLTBOX_BITCOIND_BIN to a directory holding bitcoind and bitcoin-cli"
    )]
    NotProvisioned(PathBuf),
    /// Starting or talking to a process failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// bitcoind exited before it became ready.
    #[error("bitcoind exited during start ({status}); its log:\n{log}")]
    Exited {
        /// Its exit status.
        status: String,
        /// The tail of its debug log.
        log: String,
    },
    /// An RPC call returned an error.
    #[error("bitcoin-cli {call} failed: {stderr}")]
    Rpc {
        /// The call and its arguments.
        call: String,
        /// What bitcoin-cli printed.
        stderr: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// The directory holding the `bitcoind` and `bitcoin-cli` wrappers.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BOLTBOX_BITCOIND_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("BOLTBOX_CACHE").unwrap_or_else(|| "/var/cache/boltbox".into());
    PathBuf::from(cache).join("bitcoind").join("bin")
}

/// A free TCP port on loopback (the kernel picks it; the listener is dropped right away).
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding a free port"))?;
    let port = listener.local_addr().map_err(io_err("reading a free port"))?.port();
    Ok(port)
}

fn random_hex(bytes: usize) -> Result<String, HarnessError> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A regtest bitcoind in a temp dir with a funded-on-demand wallet named `harness`.
#[derive(Debug)]
pub struct BitcoinD {
    child: Option<Child>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    rpc_port: u16,
    /// The P2P port on 127.0.0.1 (an Electrum server fetches blocks there).
    p2p_port: u16,
    rpc_user: String,
    rpc_password: String,
    /// RPC authentication by the cookie file bitcoind writes at each start, not by a password.
    cookie: bool,
}

impl BitcoinD {
    /// Starts a fresh regtest bitcoind and creates its wallet.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(false)
    }

    /// Starts a fresh regtest bitcoind whose RPC takes only its cookie file (a new one at each
    /// start, as a bitcoind on the owner's network does).
    pub fn start_with_cookie() -> Result<Self, HarnessError> {
        Self::start_with(true)
    }

    fn start_with(cookie: bool) -> Result<Self, HarnessError> {
        let bin = bin_dir();
        if !bin.join("bitcoind").exists() {
            return Err(HarnessError::NotProvisioned(bin));
        }
        let dir = tempfile::Builder::new()
            .prefix("boltbox-bitcoind-")
            .tempdir()
            .map_err(io_err("creating the bitcoind temp dir"))?;
        let mut node = BitcoinD {
            child: None,
            dir,
            bin,
            rpc_port: 0,
            p2p_port: 0,
            rpc_user: "boltbox".into(),
            rpc_password: random_hex(16)?,
            cookie,
        };
        // A port picked free can be taken before bitcoind binds it: retry with new ports.
        let mut last_err = None;
        for _ in 0..3 {
            node.rpc_port = free_port()?;
            node.p2p_port = free_port()?;
            node.write_conf()?;
            match node.spawn_and_wait() {
                Ok(()) => {
                    node.cli(&["createwallet", "harness"])?;
                    return Ok(node);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| HarnessError::Exited { status: "unknown".into(), log: String::new() }))
    }

    fn write_conf(&self) -> Result<(), HarnessError> {
        // P2P on loopback only: an Electrum server fetches blocks there; nothing else connects.
        let mut conf = format!(
            "regtest=1\nserver=1\n\n[regtest]\nlisten=1\nbind=127.0.0.1\nport={}\ndnsseed=0\n\
             rpcbind=127.0.0.1\nrpcallowip=127.0.0.1\nrpcport={}\nfallbackfee=0.00001\nprinttoconsole=0\n",
            self.p2p_port, self.rpc_port
        );
        if !self.cookie {
            conf.push_str(&format!("rpcuser={}\nrpcpassword={}\n", self.rpc_user, self.rpc_password));
        }
        std::fs::write(self.dir.path().join("bitcoin.conf"), conf).map_err(io_err("writing bitcoin.conf"))
    }

    fn spawn_and_wait(&mut self) -> Result<(), HarnessError> {
        let child = Command::new(self.bin.join("bitcoind"))
            .arg(format!("-datadir={}", self.dir.path().display()))
            // A benchmark's SD-card flush model is for the node under test, not for bitcoind.
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err("spawning bitcoind"))?;
        self.child = Some(child);
        let deadline = Deadline::in_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(HarnessError::Exited { status: status.to_string(), log: self.log_tail() });
            }
            if self.cli(&["getblockchaininfo"]).is_ok() {
                return Ok(());
            }
            if deadline.passed() {
                self.kill();
                return Err(HarnessError::Exited {
                    status: "not ready in 60 s".into(),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("regtest").join("debug.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The process id of the running bitcoind, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory (for tests that look at bitcoind's own files).
    pub fn datadir(&self) -> &Path {
        self.dir.path()
    }

    /// The RPC port on 127.0.0.1.
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// The P2P port on 127.0.0.1.
    pub fn p2p_port(&self) -> u16 {
        self.p2p_port
    }

    /// The RPC user name (with a password; see [`BitcoinD::cookie_file`] for the cookie).
    pub fn rpc_user(&self) -> &str {
        &self.rpc_user
    }

    /// The RPC password.
    pub fn rpc_password(&self) -> &str {
        &self.rpc_password
    }

    /// The cookie file bitcoind writes at each start (when started with a cookie).
    pub fn cookie_file(&self) -> PathBuf {
        self.dir.path().join("regtest").join(".cookie")
    }

    /// `user:password` for RPC clients (an Electrum server): the password's, or the cookie's.
    pub fn rpc_auth(&self) -> Result<String, HarnessError> {
        if self.cookie {
            let text = std::fs::read_to_string(self.cookie_file()).map_err(io_err("reading the cookie"))?;
            Ok(text.trim().to_string())
        } else {
            Ok(format!("{}:{}", self.rpc_user, self.rpc_password))
        }
    }

    /// Runs `bitcoin-cli` against this node and returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> Result<String, HarnessError> {
        let out = Command::new(self.bin.join("bitcoin-cli"))
            .arg(format!("-datadir={}", self.dir.path().display()))
            .arg("-rpcwallet=harness")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("running bitcoin-cli"))?;
        if !out.status.success() {
            return Err(HarnessError::Rpc {
                call: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `bitcoin-cli` and parses its output as JSON.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value, HarnessError> {
        let text = self.cli(args)?;
        serde_json::from_str(&text).map_err(|e| HarnessError::Rpc {
            call: args.join(" "),
            stderr: format!("not JSON ({e}): {text}"),
        })
    }

    /// The height of the best block.
    pub fn height(&self) -> Result<u64, HarnessError> {
        let text = self.cli(&["getblockcount"])?;
        text.parse().map_err(|_| HarnessError::Rpc { call: "getblockcount".into(), stderr: text })
    }

    /// A new address of the harness wallet.
    pub fn new_address(&self) -> Result<String, HarnessError> {
        self.cli(&["getnewaddress"])
    }

    /// Mines `n` blocks to `address` and returns their hashes.
    pub fn mine_to(&self, n: u64, address: &str) -> Result<Vec<String>, HarnessError> {
        let hashes = self.cli_json(&["generatetoaddress", &n.to_string(), address])?;
        Ok(hashes.as_array().into_iter().flatten().filter_map(|h| h.as_str().map(String::from)).collect())
    }

    /// Mines `n` blocks to the harness wallet.
    pub fn mine(&self, n: u64) -> Result<Vec<String>, HarnessError> {
        let address = self.new_address()?;
        self.mine_to(n, &address)
    }

    /// Sends `sats` from the harness wallet to `address` and returns the txid. The wallet
    /// needs mature coins: call [`BitcoinD::mine`] with at least 101 blocks first.
    pub fn send_to(&self, address: &str, sats: u64) -> Result<String, HarnessError> {
        let btc = format!("{}.{:08}", sats / 100_000_000, sats % 100_000_000);
        self.cli(&["sendtoaddress", address, &btc])
    }

    /// The txids in the mempool.
    pub fn mempool(&self) -> Result<Vec<String>, HarnessError> {
        let txids = self.cli_json(&["getrawmempool"])?;
        Ok(txids.as_array().into_iter().flatten().filter_map(|t| t.as_str().map(String::from)).collect())
    }

    /// Waits until the mempool holds at least `count` transactions.
    pub fn wait_for_mempool(&self, count: usize, deadline: Deadline) {
        wait_until(deadline, &format!("{count} transaction(s) in the mempool"), || {
            self.mempool().ok().filter(|m| m.len() >= count).map(|_| ())
        })
    }

    /// Stops the process (keeping its data dir) and waits for it to exit.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let _ = self.cli(&["stop"]);
        let deadline = Deadline::in_secs(30);
        while let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return;
            }
            if deadline.passed() {
                self.kill();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Starts it again on the same data dir and ports.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        self.spawn_and_wait()?;
        // The wallet is not loaded automatically after a restart.
        let _ = self.cli(&["loadwallet", "harness"]);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BitcoinD {
    fn drop(&mut self) {
        // Fast and certain: the data dir is thrown away with the temp dir.
        self.kill();
    }
}

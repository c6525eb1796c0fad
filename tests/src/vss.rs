//! LDK's Versioned Storage Service for the tests: a real `vss-server` (the published crate,
//! built and cached by `scripts/vss.sh`) on a real PostgreSQL cluster of its own (Debian's
//! binaries, `initdb` into a temporary directory), both on loopback. The server uses its
//! default signature authorizer. Stopped, and the cluster removed, when dropped.
//!
//! PostgreSQL refuses to run as root: as root the cluster is run as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::bitcoind::{HarnessError, free_port};
use crate::wait::{Deadline, wait_until};

/// Debian's PostgreSQL binaries (bookworm: 15).
fn pg_bin() -> Result<PathBuf, HarnessError> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|entries| {
            entries.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().ok_or_else(|| HarnessError::NotProvisioned(root.join("<version>/bin/initdb")))
}

fn vss_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("BOLTBOX_VSS_BIN") {
        return PathBuf::from(dir).join("vss-server");
    }
    let cache = std::env::var_os("BOLTBOX_CACHE").unwrap_or_else(|| "/var/cache/boltbox".into());
    PathBuf::from(cache).join("vss").join("bin").join("vss-server")
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> HarnessError + '_ {
    move |source| HarnessError::Io { what: what.to_string(), source }
}

/// Whether the tests run as root (`/proc/self` belongs to the process's user).
fn as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A PostgreSQL cluster and a vss-server in front of it.
#[derive(Debug)]
pub struct Vss {
    dir: tempfile::TempDir,
    pg: PathBuf,
    pg_port: u16,
    port: u16,
    server: Option<Child>,
}

impl Vss {
    /// Creates the cluster, starts PostgreSQL and vss-server, and waits until the server
    /// answers.
    pub fn start() -> Result<Vss, HarnessError> {
        let bin = vss_bin();
        if !bin.exists() {
            return Err(HarnessError::NotProvisioned(bin));
        }
        let pg = pg_bin()?;
        let dir =
            tempfile::Builder::new().prefix("boltbox-vss-").tempdir().map_err(io("creating the VSS dir"))?;
        if as_root() {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(io("chown"))?;
            if !chowned.success() {
                return Err(HarnessError::Io {
                    what: "chown of the cluster dir to postgres".into(),
                    source: std::io::Error::other(chowned.to_string()),
                });
            }
        }
        let password = dir.path().join("password");
        std::fs::write(&password, "boltbox-test\n").map_err(io("writing the password file"))?;
        let mut vss = Vss { pg, pg_port: free_port()?, port: free_port()?, server: None, dir };
        if as_root() {
            let _ = Command::new("chown").args(["postgres:postgres"]).arg(&password).status();
        }
        vss.pg_command(
            "initdb",
            &[
                "-D",
                &vss.data().display().to_string(),
                "-U",
                "vss",
                "--pwfile",
                &password.display().to_string(),
                "--auth",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        vss.start_postgres()?;
        let config = format!(
            "[server_config]\nbind_address = \"127.0.0.1:{}\"\n\n[postgresql_config]\nusername = \"vss\"\n\
             password = \"boltbox-test\"\naddress = \"127.0.0.1:{}\"\ndefault_database = \"postgres\"\n\
             vss_database = \"vss\"\n\n[log_config]\nlevel = \"info\"\nfile = \"{}\"\n",
            vss.port,
            vss.pg_port,
            vss.dir.path().join("vss-server.log").display()
        );
        std::fs::write(vss.dir.path().join("vss-server.toml"), config)
            .map_err(io("writing vss-server.toml"))?;
        vss.resume()?;
        Ok(vss)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    fn pg_command(&self, tool: &str, args: &[&str]) -> Result<(), HarnessError> {
        let program = self.pg.join(tool);
        let mut command = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        // The SD-card model of the benchmarks is the device's card, not the server's disk.
        let out =
            command.args(args).env_remove("LD_PRELOAD").stdin(Stdio::null()).output().map_err(io(tool))?;
        if !out.status.success() {
            return Err(HarnessError::Rpc {
                call: format!("{tool} {}", args.join(" ")),
                stderr: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    /// Starts PostgreSQL (on its port, with fsync on) and waits until it accepts connections.
    pub fn start_postgres(&mut self) -> Result<(), HarnessError> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.pg_port,
            self.dir.path().display()
        );
        self.pg_command(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-o",
                &options,
                "-l",
                &self.dir.path().join("postgres.log").display().to_string(),
                "-w",
                "start",
            ],
        )
    }

    /// Stops PostgreSQL at once, as a crash would (`-m immediate`: no checkpoint; it recovers
    /// from its WAL on the next start).
    pub fn crash_postgres(&mut self) -> Result<(), HarnessError> {
        self.pg_command(
            "pg_ctl",
            &["-D", &self.data().display().to_string(), "-m", "immediate", "-w", "stop"],
        )
    }

    /// The server's base URL (`http://127.0.0.1:<port>/vss`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/vss", self.port)
    }

    /// The server's port on 127.0.0.1 (for a proxy in front of it).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills vss-server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts vss-server (again) on its port and waits until it accepts connections.
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("vss-server.out"))
            .map_err(io("creating the vss-server log"))?;
        let child = Command::new(vss_bin())
            .arg(self.dir.path().join("vss-server.toml"))
            .current_dir(self.dir.path())
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("the vss-server log"))?)
            .stderr(log)
            .spawn()
            .map_err(io("spawning vss-server"))?;
        self.server = Some(child);
        let port = self.port;
        let mut exited = None;
        wait_until(Deadline::in_secs(60), "vss-server listening", || {
            if let Some(status) = self.server.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                exited = Some(status.to_string());
                return Some(());
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        match exited {
            Some(status) => Err(HarnessError::Exited { status, log: self.log_tail() }),
            None => Ok(()),
        }
    }

    /// The end of vss-server's output.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("vss-server.out")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Vss {
    fn drop(&mut self) {
        self.kill();
        let _ = self.crash_postgres();
    }
}

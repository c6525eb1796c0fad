//! `boltbox`: the appliance's binary. The service (`boltbox run`) and the lncli-like commands
//! that talk to it. `anyhow` lives only here, at the edge.

use std::path::PathBuf;

use anyhow::Context as _;
use boltbox::control::Request;
use clap::{Parser, Subcommand};

/// A Lightning node you flash onto an SD card.
#[derive(Debug, Parser)]
#[command(name = "boltbox", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance: board, node and display until a safe shutdown (SIGTERM, SIGINT or
    /// the shutdown gesture). Exits 0 after a safe shutdown, non-zero on a bad config.
    Run {
        /// The config file (see appliance/boltbox.example.toml).
        #[arg(long, default_value = "/etc/boltbox/boltbox.toml")]
        config: PathBuf,
    },
    /// Run the benchmarks on this machine: the node's store against LDK's own stores on the
    /// disk holding DIR, and the executor's engine on this machine's cores.
    Bench {
        /// A directory on the disk to measure (the data partition on the device).
        #[arg(long, default_value = "/var/lib/boltbox")]
        dir: PathBuf,
        /// Seconds per store measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// The node's status (what the OLED shows), as JSON.
    Status(Target),
    /// A new on-chain address to fund the node.
    Address(Target),
    /// Send on-chain.
    Send {
        /// Destination address.
        address: String,
        /// Amount in sats.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        sats: Option<u64>,
        /// Send everything spendable (the anchor reserve stays).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Connect to a peer and remember it.
    Connect {
        /// `node_id@host:port`.
        peer: String,
        #[command(flatten)]
        target: Target,
    },
    /// Open a channel.
    Open {
        /// `node_id@host:port`.
        peer: String,
        /// Capacity in sats.
        #[arg(long)]
        sats: u64,
        /// Give the peer this much at open.
        #[arg(long)]
        push_msat: Option<u64>,
        /// Do not announce the channel (no routing through it).
        #[arg(long)]
        private: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Close a channel (its user channel id, from `boltbox channels`).
    Close {
        /// The user channel id.
        channel: String,
        /// Force-close: broadcast our latest commitment without the peer.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Create a BOLT11 invoice.
    Invoice {
        /// Amount in msat; omitted: any amount.
        #[arg(long)]
        msat: Option<u64>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        expiry_secs: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Pay a BOLT11 invoice.
    Pay {
        /// The invoice.
        invoice: String,
        /// Amount in msat, for an any-amount invoice.
        #[arg(long)]
        msat: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Send a spontaneous payment.
    Keysend {
        /// The payee's node id.
        node_id: String,
        /// Amount in msat.
        #[arg(long)]
        msat: u64,
        #[command(flatten)]
        target: Target,
    },
    /// The channels, as JSON.
    Channels(Target),
    /// The payments, as JSON.
    Payments(Target),
    /// The peers, as JSON.
    Peers(Target),
    /// Sync the wallets with the chain now.
    Sync(Target),
    /// Write an encrypted, verified backup into DIR (docs/BACKUP.md): through the running
    /// service when there is one, else from the stopped node's store.
    Backup {
        /// The directory to write `boltbox-<network>-<nodeid8>-<UTC time>.bbk` into.
        #[arg(long)]
        to: PathBuf,
        /// Keep this node's newest N backups in DIR (default: `[backup] keep`).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        keep: Option<u64>,
        /// The node's config file.
        #[arg(long, default_value = "/etc/boltbox/boltbox.toml")]
        config: PathBuf,
    },
    /// Restore a backup onto the config's data dir (empty, or holding an older state of the
    /// same node). Shows the backup's age and commit counter, refuses a data dir that is not
    /// older, warns, and asks for confirmation.
    Restore {
        /// The backup file.
        #[arg(long)]
        backup: PathBuf,
        /// The config file naming the data dir and network to restore into.
        #[arg(long, default_value = "/etc/boltbox/boltbox.toml")]
        config: PathBuf,
        /// A file with the 24 seed words, mode 0600; without it they are asked for.
        #[arg(long)]
        seed_file: Option<PathBuf>,
        /// Confirm without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Render every OLED screen for sample statuses as PNG files.
    Screens {
        /// Directory to write `<screen>.png` files to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Pixels per OLED pixel (1..=16).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
        scale: u32,
    },
}

/// Which running boltbox a command talks to.
#[derive(Debug, clap::Args)]
struct Target {
    /// The service's config file: its data dir holds the control socket.
    #[arg(long, default_value = "/etc/boltbox/boltbox.toml")]
    config: PathBuf,
    /// The control socket itself (instead of --config).
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> anyhow::Result<PathBuf> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        let config = boltbox::config::AppConfig::load(&self.config)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.config.display()))?;
        Ok(boltbox::control::socket_path(&config.node.data_dir))
    }

    /// Sends `request` to the service and prints the answer: text as it is, anything else as JSON.
    fn call(&self, request: Request) -> anyhow::Result<()> {
        let mut client = boltbox::control::Client::connect(&self.socket()?)?;
        match client.call(&request)? {
            serde_json::Value::Null => {}
            serde_json::Value::String(text) => println!("{text}"),
            value => println!("{}", serde_json::to_string_pretty(&value)?),
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Run { config }) => {
            init_logging();
            boltbox::supervisor::run(&config)
                .with_context(|| format!("boltbox run --config {}", config.display()))
        }
        Some(Command::Screens { out, scale }) => screens(&out, scale),
        Some(Command::Status(target)) => target.call(Request::Status),
        Some(Command::Address(target)) => target.call(Request::NewAddress),
        Some(Command::Send { address, sats, all: _, target }) => {
            target.call(Request::SendOnchain { address, amount_sats: sats })
        }
        Some(Command::Connect { peer, target }) => target.call(Request::Connect { peer }),
        Some(Command::Open { peer, sats, push_msat, private, target }) => {
            target.call(Request::OpenChannel { peer, amount_sats: sats, push_msat, announce: !private })
        }
        Some(Command::Close { channel, force, target }) => {
            target.call(Request::CloseChannel { channel, force })
        }
        Some(Command::Invoice { msat, description, expiry_secs, target }) => {
            target.call(Request::Invoice { amount_msat: msat, description, expiry_secs })
        }
        Some(Command::Pay { invoice, msat, target }) => {
            target.call(Request::Pay { invoice, amount_msat: msat })
        }
        Some(Command::Keysend { node_id, msat, target }) => {
            target.call(Request::Keysend { node_id, amount_msat: msat })
        }
        Some(Command::Channels(target)) => target.call(Request::Channels),
        Some(Command::Payments(target)) => target.call(Request::Payments),
        Some(Command::Peers(target)) => target.call(Request::Peers),
        Some(Command::Sync(target)) => target.call(Request::Sync),
        Some(Command::Backup { to, keep, config }) => backup(&config, &to, keep),
        Some(Command::Restore { backup, config, seed_file, yes }) => {
            let app = load_config(&config)?;
            let options = boltbox::backup::RestoreOptions { backup, seed_file, yes };
            let mut stdout = std::io::stdout();
            boltbox::backup::restore(&app, &options, &mut std::io::stdin().lock(), &mut stdout)?;
            Ok(())
        }
        Some(Command::Bench { dir, seconds }) => {
            anyhow::ensure!(seconds > 0.0 && seconds.is_finite(), "--seconds must be a positive number");
            let cores = boltbox_executor::runtime::BoardFacts::detect().map(|f| f.cores).unwrap_or(1);
            let options = boltbox::bench::BenchOptions { dir, seconds, writers: vec![1, 4, 16, 64], cores };
            print!("{}", boltbox::bench::run(&options)?);
            Ok(())
        }
        None => {
            println!("boltbox {}: no command given; see --help", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

fn load_config(path: &std::path::Path) -> anyhow::Result<boltbox::config::AppConfig> {
    boltbox::config::AppConfig::load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `boltbox backup --to DIR`: through the control socket when the service answers there, else
/// offline from the store (which refuses when another process holds it).
fn backup(config: &std::path::Path, to: &std::path::Path, keep: Option<u64>) -> anyhow::Result<()> {
    use boltbox::backup::{BackupSummary, backup_offline};
    use boltbox::control::{Client, ControlError};

    let app = load_config(config)?;
    let keep = keep.map_or(app.backup.keep, |k| usize::try_from(k).unwrap_or(usize::MAX));
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    // The service has its own working directory.
    let to = std::path::absolute(to).with_context(|| format!("resolving {}", to.display()))?;
    let summary: BackupSummary = match Client::connect(&boltbox::control::socket_path(&app.node.data_dir)) {
        Ok(mut client) => {
            client.set_timeout(std::time::Duration::from_secs(600))?;
            let value = client.call(&Request::Backup { to: to.clone(), keep })?;
            serde_json::from_value(value).context("reading the service's answer")?
        }
        Err(ControlError::Unreachable { .. }) => backup_offline(&app, &to, keep)?,
        Err(e) => return Err(e.into()),
    };
    println!(
        "{} ({} bytes, store commit {}, verified in {:.1} s)",
        summary.path.display(),
        summary.bytes,
        summary.commit_counter,
        summary.took_ms as f64 / 1000.0
    );
    for old in &summary.pruned {
        println!("deleted the older {}", old.display());
    }
    Ok(())
}

/// Logs to stderr (journald under systemd), filtered by `RUST_LOG` (default: info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// `boltbox screens`: writes each sample screen as `<name>.png` and lists the files.
fn screens(out: &std::path::Path, scale: u32) -> anyhow::Result<()> {
    use std::io::Write as _;

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut stdout = std::io::stdout().lock();
    for (name, screen) in boltbox::screens::samples::render_all() {
        let path = out.join(format!("{name}.png"));
        let png = screen.frame.to_png(scale).with_context(|| format!("encoding {name}"))?;
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        // An error, not a panic, when the reader of the list went away (`| head`).
        writeln!(stdout, "{}", path.display()).context("writing the list of files")?;
    }
    Ok(())
}

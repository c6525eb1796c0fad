//! `boltbox`: the appliance's binary. The service (`boltbox run`) and the lncli-like commands
//! that talk to it. `anyhow` lives only here, at the edge.
//!
//! Exit codes: 0 done; 1 the command failed or was refused (the reason is printed); 2 bad
//! arguments; 69 the service cannot be reached; 75 (`run`) start again in a fresh process;
//! 78 the config file is missing or invalid.

use std::path::PathBuf;

use std::process::ExitCode;

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
enum MirrorCommand {
    /// Make a USB stick the live mirror: the OLED asks "mirror to STICK?" and only B pressed on
    /// the device chooses it (waits up to a minute for the press).
    Use {
        /// The stick's name under `[backup] sticks` (the kernel's, e.g. sda1); default: the
        /// first inserted stick that is not the mirror yet.
        stick: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Stop mirroring to the chosen stick (its files stay on it).
    Stop(Target),
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Open an account; prints its id and its transfer key (hex: give it to the app that signs
    /// its transfers; it is shown only here).
    New {
        /// A name (1 to 32 bytes, not only digits).
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Every open account, and what main has, as JSON.
    List(Target),
    /// One account (id, name, or `main`), as JSON.
    Show {
        /// Id or name.
        account: String,
        #[command(flatten)]
        target: Target,
    },
    /// Rename an account.
    Rename {
        /// Id or name.
        account: String,
        /// The new name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Close an empty account (its id is never given again).
    Close {
        /// Id or name.
        account: String,
        #[command(flatten)]
        target: Target,
    },
    /// Move money between accounts, instantly and for free (`main` on either side).
    Transfer {
        /// Paying account (id, name or `main`).
        from: String,
        /// Receiving account.
        to: String,
        /// Amount in msat.
        #[arg(long)]
        msat: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Many transfers at once: JSON lines on stdin (`{"from":1,"to":2,"amount_msat":5}`, with
    /// `"nonce"` and `"mac"` when signed), sent in durable batches of up to 10,000. Prints
    /// how many were applied and each refusal; exits 1 if any was refused.
    Batch(Target),
    /// A BOLT11 invoice whose payment is credited to one account.
    Invoice {
        /// Id or name.
        account: String,
        #[command(flatten)]
        invoice: InvoiceArgs,
        #[command(flatten)]
        target: Target,
    },
    /// A BOLT11 invoice whose payment is split over accounts by weight (`alice:2 bob:1`).
    Split {
        /// ACCOUNT:WEIGHT, 1 to 16 of them.
        #[arg(required = true, value_parser = parse_share)]
        shares: Vec<(String, u32)>,
        #[command(flatten)]
        invoice: InvoiceArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Pay a BOLT11 invoice (with an amount) from an account: amount plus fee limit are held,
    /// the unused fee returns; waits up to 50 s for the outcome.
    Pay {
        /// Id or name.
        account: String,
        /// The invoice.
        invoice: String,
        /// The most routing fee in msat (default: 1% + 50 sat).
        #[arg(long)]
        fee_limit_msat: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Set an account's spending budget (payments with their fee limit, and transfers out).
    Budget {
        /// Id or name.
        account: String,
        /// At most this many msat per period.
        #[arg(long, required_unless_present = "none", conflicts_with = "none")]
        msat: Option<u64>,
        /// The period in seconds.
        #[arg(long, default_value_t = 86_400)]
        period_secs: u64,
        /// Remove the budget.
        #[arg(long)]
        none: bool,
        #[command(flatten)]
        target: Target,
    },
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
    /// Start the node on an EMPTY store, when the service says its store is missing, empty or
    /// damaged and no backup can be restored: the node forgets the channels of the lost state,
    /// and their peers force-close them.
    StartEmpty {
        /// Confirm without asking.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Run the benchmarks on this machine: the node's store against LDK's own stores on the
    /// disk holding DIR, and the executor's engine on this machine's cores.
    Bench {
        /// A directory on the disk to measure (the data partition on the device).
        #[arg(long, default_value = "/var/lib/boltbox")]
        dir: PathBuf,
        /// Seconds per store measurement (more than 0, at most 3600).
        #[arg(long, default_value = "2", value_parser = bench_seconds)]
        seconds: f64,
    },
    /// The live mirror on a USB stick (docs/MIRROR.md).
    Mirror {
        #[command(subcommand)]
        command: MirrorCommand,
    },
    /// Accounts: one node, many wallets (docs/ACCOUNTS.md).
    Account {
        #[command(subcommand)]
        command: AccountCommand,
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
        #[command(flatten)]
        invoice: InvoiceArgs,
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
    /// Restore a backup (or the live mirror) onto the config's data dir (empty, or holding an
    /// older state of the same node). Shows its age and commit counter, refuses a data dir that
    /// is not older, warns, and asks for confirmation.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["backup", "mirror", "vss"])))]
    Restore {
        /// The backup file.
        #[arg(long)]
        backup: Option<PathBuf>,
        /// Restore from the live mirror written into this directory (a USB stick's mount
        /// point; its files are in DIR/boltbox-mirror) instead of a backup.
        #[arg(long, value_name = "DIR")]
        mirror: Option<PathBuf>,
        /// Restore from the remote mirror on VSS that the config's `[mirror.vss]` names.
        #[arg(long)]
        vss: bool,
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
        /// The panel to draw for: 128x64, or 128x32 (a screen that does not fit is written as
        /// the parts the panel shows in turn, `<screen>-<part>.png`).
        #[arg(long, default_value = "128x64", value_parser = parse_panel)]
        panel: boltbox_board::PanelSize,
    },
}

/// What every BOLT11 invoice the CLI asks for takes.
#[derive(Debug, clap::Args)]
struct InvoiceArgs {
    /// Amount in msat; omitted: any amount.
    #[arg(long)]
    msat: Option<u64>,
    /// What it is for.
    #[arg(long, default_value = "")]
    description: String,
    /// Seconds until it expires.
    #[arg(long, default_value_t = 3600)]
    expiry_secs: u32,
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
        let config = load_config(&self.config)?;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Run { config }) => {
            init_logging();
            match boltbox::supervisor::run(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("boltbox run --config {}: {}", config.display(), report(&e));
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Some(command) => match command_line(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("boltbox: {}", report(e.as_ref()));
                ExitCode::from(exit_code(&e))
            }
        },
        None => {
            println!("boltbox {}: no command given; see --help", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// An error and its causes on one line, each cause once: a cause whose text the line already
/// holds (thiserror's "{0}" wrappers) or that has none adds nothing.
fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.trim().is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    if line.trim().is_empty() { "failed without saying why".to_string() } else { line }
}

/// The exit code of a failed command (see the module documentation).
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(control) = e.downcast_ref::<boltbox::control::ControlError>() {
        if matches!(control, boltbox::control::ControlError::Unreachable { .. }) {
            return 69;
        }
    }
    if e.downcast_ref::<boltbox::config::ConfigError>().is_some() {
        return boltbox::supervisor::EXIT_CONFIG;
    }
    1
}

/// `--seconds` of `boltbox bench`: a number of seconds a measurement may really take.
fn bench_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.parse().map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0 {
        Ok(seconds)
    } else {
        Err(format!("{text} is not between 0 and 3600 seconds"))
    }
}

fn command_line(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { .. } => Ok(()),
        Command::StartEmpty { yes, target } => start_empty(yes, &target),
        Command::Screens { out, scale, panel } => screens(&out, scale, panel),
        Command::Status(target) => target.call(Request::Status),
        Command::Account { command } => account(command),
        Command::Mirror { command: MirrorCommand::Use { stick, target } } => {
            eprintln!("press B on the device to confirm (A: no)");
            let mut client = boltbox::control::Client::connect(&target.socket()?)?;
            client.set_timeout(boltbox::mirror::ASK_WAIT + std::time::Duration::from_secs(15))?;
            let answer = client.call(&Request::MirrorUse { stick })?;
            println!("the live mirror is on stick {}", answer["stick"].as_str().unwrap_or("?"));
            Ok(())
        }
        Command::Mirror { command: MirrorCommand::Stop(target) } => {
            target.call(Request::MirrorStop)?;
            println!("the mirror stick is no longer written");
            Ok(())
        }
        Command::Address(target) => target.call(Request::NewAddress),
        Command::Send { address, sats, all: _, target } => {
            target.call(Request::SendOnchain { address, amount_sats: sats })
        }
        Command::Connect { peer, target } => target.call(Request::Connect { peer }),
        Command::Open { peer, sats, push_msat, private, target } => {
            target.call(Request::OpenChannel { peer, amount_sats: sats, push_msat, announce: !private })
        }
        Command::Close { channel, force, target } => target.call(Request::CloseChannel { channel, force }),
        Command::Invoice { invoice: InvoiceArgs { msat, description, expiry_secs }, target } => {
            target.call(Request::Invoice { amount_msat: msat, description, expiry_secs })
        }
        Command::Pay { invoice, msat, target } => target.call(Request::Pay { invoice, amount_msat: msat }),
        Command::Keysend { node_id, msat, target } => {
            target.call(Request::Keysend { node_id, amount_msat: msat })
        }
        Command::Channels(target) => target.call(Request::Channels),
        Command::Payments(target) => target.call(Request::Payments),
        Command::Peers(target) => target.call(Request::Peers),
        Command::Sync(target) => target.call(Request::Sync),
        Command::Backup { to, keep, config } => backup(&config, &to, keep),
        Command::Restore { backup, mirror, vss, config, seed_file, yes } => {
            let app = load_config(&config)?;
            let source = match (backup, mirror, vss) {
                (_, _, true) => boltbox::backup::RestoreSource::Vss,
                (_, Some(dir), false) => boltbox::backup::RestoreSource::Mirror(dir),
                (Some(file), None, false) => boltbox::backup::RestoreSource::Backup(file),
                (None, None, false) => anyhow::bail!("--backup FILE, --mirror DIR or --vss"),
            };
            let options = boltbox::backup::RestoreOptions { source, seed_file, yes };
            let mut stdout = std::io::stdout();
            boltbox::backup::restore(&app, &options, &mut std::io::stdin().lock(), &mut stdout)?;
            Ok(())
        }
        Command::Bench { dir, seconds } => {
            let cores = boltbox_executor::runtime::BoardFacts::detect().map(|f| f.cores).unwrap_or(1);
            let options = boltbox::bench::BenchOptions { dir, seconds, writers: vec![1, 4, 16, 64], cores };
            print!("{}", boltbox::bench::run(&options)?);
            Ok(())
        }
    }
}

/// `boltbox start-empty`: the warning, the confirmation, then the request to the service.
/// `ACCOUNT:WEIGHT` of `boltbox account split`.
fn parse_share(text: &str) -> Result<(String, u32), String> {
    let (account, weight) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not ACCOUNT:WEIGHT"))?;
    let weight = weight.parse().map_err(|e| format!("weight {weight:?}: {e}"))?;
    Ok((account.to_string(), weight))
}

fn account(command: AccountCommand) -> anyhow::Result<()> {
    use boltbox::accounts::AccountRequest as A;
    let call = |target: Target, request: A| target.call(Request::Account(request));
    match command {
        AccountCommand::New { name, target } => call(target, A::New { name }),
        AccountCommand::List(target) => call(target, A::List),
        AccountCommand::Show { account, target } => call(target, A::Show { account }),
        AccountCommand::Rename { account, name, target } => call(target, A::Rename { account, name }),
        AccountCommand::Close { account, target } => call(target, A::Close { account }),
        AccountCommand::Transfer { from, to, msat, target } => {
            call(target, A::Transfer { from, to, amount_msat: msat })
        }
        AccountCommand::Batch(target) => account_batch(&target),
        AccountCommand::Invoice {
            account,
            invoice: InvoiceArgs { msat, description, expiry_secs },
            target,
        } => call(
            target,
            A::Invoice { shares: vec![(account, 1)], amount_msat: msat, description, expiry_secs },
        ),
        AccountCommand::Split { shares, invoice: InvoiceArgs { msat, description, expiry_secs }, target } => {
            call(target, A::Invoice { shares, amount_msat: msat, description, expiry_secs })
        }
        AccountCommand::Pay { account, invoice, fee_limit_msat, target } => {
            let mut client = boltbox::control::Client::connect(&target.socket()?)?;
            client.set_timeout(std::time::Duration::from_secs(120))?;
            let answer = client.call(&Request::Account(A::Pay { account, invoice, fee_limit_msat }))?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            match answer.get("outcome").and_then(|o| o.as_str()) {
                Some("failed") => anyhow::bail!("the payment failed; its hold was released"),
                _ => Ok(()),
            }
        }
        AccountCommand::Budget { account, msat, period_secs, none: _, target } => {
            call(target, A::Budget { account, limit_msat: msat, period_secs })
        }
    }
}

type Pending = Vec<(usize, boltbox::accounts::BatchTransfer)>;

/// Sends the pending transfers as one batch; prints each refusal with its line; returns
/// (applied, refused).
fn send_batch(client: &mut boltbox::control::Client, pending: &mut Pending) -> anyhow::Result<(u64, u64)> {
    if pending.is_empty() {
        return Ok((0, 0));
    }
    let transfers = pending.iter().map(|(_, t)| t.clone()).collect();
    let answer = client.call(&Request::Account(boltbox::accounts::AccountRequest::Batch { transfers }))?;
    let applied = answer.get("applied").and_then(|a| a.as_u64()).unwrap_or(0);
    let mut refused = 0;
    for r in answer.get("refused").and_then(|r| r.as_array()).into_iter().flatten() {
        let line = r.get("index").and_then(|i| i.as_u64()).and_then(|i| pending.get(i as usize)).map(|p| p.0);
        let reason = r.get("reason").and_then(|r| r.as_str()).unwrap_or("refused");
        println!("line {}: {reason}", line.unwrap_or(0));
        refused += 1;
    }
    pending.clear();
    Ok((applied, refused))
}

/// `boltbox account batch`: JSON lines from stdin, in requests of up to 10,000.
fn account_batch(target: &Target) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let mut client = boltbox::control::Client::connect(&target.socket()?)?;
    client.set_timeout(std::time::Duration::from_secs(600))?;
    let (mut applied, mut refused) = (0u64, 0u64);
    let mut pending = Pending::new();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(transfer) => pending.push((line_no, transfer)),
            Err(e) => {
                println!("line {line_no}: not a transfer: {e}");
                refused += 1;
            }
        }
        if pending.len() == boltbox::accounts::MAX_BATCH {
            let (a, r) = send_batch(&mut client, &mut pending)?;
            (applied, refused) = (applied + a, refused + r);
        }
    }
    let (a, r) = send_batch(&mut client, &mut pending)?;
    (applied, refused) = (applied + a, refused + r);
    println!("{applied} applied, {refused} refused");
    if refused > 0 {
        anyhow::bail!("{refused} transfers were refused");
    }
    Ok(())
}

fn start_empty(yes: bool, target: &Target) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Write as _};
    eprintln!(
        "WARNING: the node starts on an EMPTY store. It forgets every channel of its lost state: their\n\
         peers will force-close them, and their funds come back on-chain only after a delay (if the\n\
         peers do close them). Restore a backup instead if you have one."
    );
    if !yes {
        eprint!("Type \"empty\" to start on an empty store: ");
        std::io::stderr().flush().context("writing")?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).context("reading the confirmation")?;
        anyhow::ensure!(answer.trim() == "empty", "not confirmed: nothing was changed");
    }
    target.call(Request::StartEmpty)
}

/// The config file; its error names the file or the field (and keeps its type for the exit code).
fn load_config(path: &std::path::Path) -> anyhow::Result<boltbox::config::AppConfig> {
    boltbox::config::AppConfig::load(path).map_err(|mut e| {
        if e.field != path.display().to_string() {
            e.reason = format!("{} (in {})", e.reason, path.display());
        }
        anyhow::Error::from(e)
    })
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
            use std::os::unix::fs::MetadataExt as _;
            let seen = std::fs::metadata(&to).with_context(|| format!("reading {}", to.display()))?;
            client.set_timeout(std::time::Duration::from_secs(600))?;
            let request = Request::Backup { to: to.clone(), keep, device: seen.dev(), inode: seen.ino() };
            let value = client.call(&request)?;
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

/// A panel size as `[board] display_size` writes it.
fn parse_panel(text: &str) -> Result<boltbox_board::PanelSize, String> {
    boltbox_board::PanelSize::from_name(text).ok_or_else(|| format!("{text:?} is not 128x64 or 128x32"))
}

/// `boltbox screens`: writes each sample screen as `<name>.png` (on a 128x32 panel, each part
/// of one that does not fit as `<name>-<part>.png`) and lists the files.
fn screens(out: &std::path::Path, scale: u32, panel: boltbox_board::PanelSize) -> anyhow::Result<()> {
    use boltbox::screens::panel::{part_frame, parts};
    use std::io::Write as _;

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut stdout = std::io::stdout().lock();
    let rows = panel.rows();
    for (name, screen) in boltbox::screens::samples::render_all_for(panel) {
        let parts = parts(&screen.bands, rows);
        for (i, part) in parts.iter().enumerate() {
            let file = if parts.len() > 1 { format!("{name}-{}.png", i + 1) } else { format!("{name}.png") };
            let path = out.join(file);
            let frame = if rows < boltbox_board::HEIGHT {
                part_frame(&screen.frame, *part, rows)
            } else {
                screen.frame.clone()
            };
            let png = frame.to_png_rows(scale, rows).with_context(|| format!("encoding {name}"))?;
            std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
            // An error, not a panic, when the reader of the list went away (`| head`).
            writeln!(stdout, "{}", path.display()).context("writing the list of files")?;
        }
    }
    Ok(())
}

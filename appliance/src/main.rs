//! `boltbox`: the appliance's binary. The service (`boltbox run`) and the lncli-like commands
//! that talk to it. `anyhow` lives only here, at the edge.

use std::path::PathBuf;

use anyhow::Context as _;
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Run { config }) => {
            init_logging();
            boltbox::supervisor::run(&config)
                .with_context(|| format!("boltbox run --config {}", config.display()))
        }
        Some(Command::Screens { out, scale }) => screens(&out, scale),
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

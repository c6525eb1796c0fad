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
        Some(Command::Screens { out, scale }) => screens(&out, scale),
        None => {
            println!("boltbox {}: no command given; see --help", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
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

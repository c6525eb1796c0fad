//! `boltbox`: the appliance's binary. The service (`boltbox run`) and the lncli-like commands
//! that talk to it. `anyhow` lives only here, at the edge.

use clap::Parser;

/// A Lightning node you flash onto an SD card.
#[derive(Debug, Parser)]
#[command(name = "boltbox", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    println!("boltbox {}: no command given; see --help", env!("CARGO_PKG_VERSION"));
    Ok(())
}

//! `boltbox-setup`: run by `boltbox-setup.service` at every boot, as root, before the network
//! and boltbox start. Grows the data partition, then applies `[system]` from `boltbox.toml`.
//! A failing step is logged (the journal) and the next one still runs; the exit status says
//! whether all went well. boltbox starts either way and shows its own config errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use boltbox_setup::{SetupError, grow, system};
use clap::Parser;

/// Grows the data partition and applies [system] from boltbox.toml.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The boot partition's boltbox.toml.
    #[arg(long, default_value = "/boot/firmware/boltbox.toml")]
    config: PathBuf,
    /// The data partition's filesystem label.
    #[arg(long, default_value = "boltbox-data")]
    data_label: String,
}

fn grow_data(label: &str) -> Result<(), SetupError> {
    let partition = grow::partition_by_label(label)?;
    match grow::plan(Path::new("/sys/class/block"), &partition)? {
        None => println!("data partition {partition} already fills the card"),
        Some(plan) => {
            println!(
                "growing data partition {partition} by {} MiB to the end of {}",
                plan.free * 512 / (1024 * 1024),
                plan.disk
            );
            grow::grow(&plan)?;
            println!("data partition {partition} grown");
        }
    }
    Ok(())
}

fn apply_system(config: &Path) -> Result<(), SetupError> {
    let system = system::load(config)?;
    let changes = system::write_files(Path::new("/"), &system)?;
    system::apply(&changes)?;
    println!(
        "system: hostname {}, wired {}, wifi {}, ssh {}",
        changes.hostname,
        if system.wired.address.is_some() { "static" } else { "dhcp" },
        if changes.wifi { "on" } else { "off" },
        if changes.ssh { "on" } else { "off" },
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut ok = true;
    if let Err(e) = grow_data(&cli.data_label) {
        eprintln!("boltbox-setup: growing the data partition failed: {e}");
        ok = false;
    }
    if let Err(e) = apply_system(&cli.config) {
        eprintln!("boltbox-setup: applying [system] from {} failed: {e}", cli.config.display());
        ok = false;
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

//! `boltbox-setup`: the image's root-side helper (docs/IMAGE.md).
//!
//! - `boot`: run by `boltbox-setup.service` at every boot, before the network and boltbox:
//!   grows the data partition, then applies `[system]` from `boltbox.toml`. A failing step is
//!   logged (the journal) and the next one still runs; boltbox starts either way and shows its
//!   own config errors.
//! - `usb-mount NAME` / `usb-unmount NAME`: `boltbox-usb@NAME.service`, started by udev for a
//!   USB stick.
//! - `usb-eject`: `boltbox-eject.service`, when the service asks for a stick to be unmounted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use boltbox_setup::{SetupError, grow, system, usb, user_ids};
use clap::{Parser, Subcommand};

/// The boltbox image's root-side helper: data partition, [system] settings, USB sticks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Grow the data partition and apply [system] from boltbox.toml (every boot).
    Boot {
        /// The boot partition's boltbox.toml.
        #[arg(long, default_value = "/boot/firmware/boltbox.toml")]
        config: PathBuf,
        /// The data partition's filesystem label.
        #[arg(long, default_value = "boltbox-data")]
        data_label: String,
    },
    /// Mount USB stick NAME (a kernel name such as sda1) at /run/boltbox/usb/NAME for boltbox.
    UsbMount {
        /// The kernel name of the partition.
        name: String,
    },
    /// Unmount USB stick NAME.
    UsbUnmount {
        /// The kernel name of the partition.
        name: String,
    },
    /// Unmount the stick named in /run/boltbox/eject (the service's request).
    UsbEject,
}

/// The service user, who gets the sticks.
const SERVICE_USER: &str = "boltbox";

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

/// Where a failed growth of the data partition is recorded for boltbox, which shows it as an
/// alert (a card the image did not grow into is nearly full from the start).
const GROW_FAILED: &str = "/run/boltbox/data-grow-failed";

fn boot(config: &Path, data_label: &str) -> ExitCode {
    let mut ok = true;
    if let Err(e) = grow_data(data_label) {
        eprintln!("boltbox-setup: growing the data partition failed: {e}");
        if let Err(w) = std::fs::write(GROW_FAILED, format!("{e}\n")) {
            eprintln!("boltbox-setup: cannot record it in {GROW_FAILED}: {w}");
        }
        ok = false;
    }
    if let Err(e) = apply_system(config) {
        eprintln!("boltbox-setup: applying [system] from {} failed: {e}", config.display());
        ok = false;
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn report(what: &str, result: Result<String, SetupError>) -> ExitCode {
    match result {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("boltbox-setup: {what} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Boot { config, data_label } => boot(&config, &data_label),
        Command::UsbMount { name } => report(
            "mounting the USB stick",
            user_ids(SERVICE_USER)
                .and_then(|(uid, gid)| usb::mount(&name, uid, gid))
                .map(|dir| format!("USB stick {name} mounted at {}", dir.display())),
        ),
        Command::UsbUnmount { name } => report(
            "unmounting the USB stick",
            usb::unmount(&name).map(|()| format!("USB stick {name} unmounted")),
        ),
        Command::UsbEject => {
            report("ejecting a USB stick", usb::eject().map(|name| format!("USB stick {name} ejected")))
        }
    }
}

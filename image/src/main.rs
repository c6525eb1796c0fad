//! `boltbox-image`: builds and boot-tests the flashable OS image.

use clap::{Parser, Subcommand};

/// Builds and boot-tests the flashable boltbox image.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build dist/boltbox-<version>-arm64.img.xz and its .sha256.
    Build,
    /// Boot the built image in qemu-system-aarch64 and drive it through its buttons.
    BootTest,
    /// Print the file name the image will have.
    Name,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Name => {
            println!("{}", boltbox_image::artifact_name(env!("CARGO_PKG_VERSION")));
            Ok(())
        }
        Command::Build | Command::BootTest => {
            anyhow::bail!("not built yet (issue: flashable image); nothing was done")
        }
    }
}

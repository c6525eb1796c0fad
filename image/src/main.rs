//! `boltbox-image`: builds and boot-tests the flashable OS image (docs/IMAGE.md). Runs as root:
//! mmdebstrap and chroot need it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use boltbox_image::{VERSION, artifact_name, boot_test, build, cache_dir, workspace};
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
    Build {
        /// Where the image goes.
        #[arg(long, default_value_os_t = workspace().join("dist"))]
        dist: PathBuf,
    },
    /// Boot the built image in qemu-system-aarch64 and drive it through its buttons.
    BootTest {
        /// The image to test.
        #[arg(long, default_value_os_t = workspace().join("dist").join(artifact_name(VERSION)))]
        image: PathBuf,
    },
    /// Print the file name the image will have.
    Name,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Name => println!("{}", artifact_name(VERSION)),
        Command::Build { dist } => {
            let started = Instant::now();
            let built = build::build(&workspace(), &cache_dir(), &dist).context("building the image")?;
            println!("built {} in {:.0?}", built.image.display(), started.elapsed());
            println!("  checksum     {}", built.checksum.display());
            println!(
                "  raw image    {:.0} MiB (root filesystem {:.0} MiB)",
                mib(built.raw_size),
                mib(built.root_size)
            );
            println!("  compressed   {:.0} MiB", mib(built.compressed_size));
            println!(
                "  base root    {} ({})",
                built.base_key,
                if built.base_cached { "cached" } else { "built" }
            );
            for (step, took) in &built.steps {
                println!("  {step:<24} {took:.0?}");
            }
        }
        Command::BootTest { image } => {
            let started = Instant::now();
            let report = boot_test::boot_test(&image, &cache_dir().join("boot-test"))
                .with_context(|| format!("boot-testing {}", image.display()))?;
            println!("{}", report.summary());
            println!("boot-test: passed in {:.0?}", started.elapsed());
        }
    }
    Ok(())
}

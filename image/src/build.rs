//! The whole build: cross-compile `boltbox` and `boltbox-setup` for aarch64, get the base root
//! (cached), lay the boltbox layer over a copy, make the three filesystems, assemble the disk
//! image, compress it and write its checksum.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{output, stream};
use crate::rootfs::Programs;
use crate::{ImageError, ROOT_LABEL, TARGET, VERSION, artifact_name, base, disk, io_error, rootfs};

/// What a build made, and how long it took.
#[derive(Debug, Clone)]
pub struct Built {
    /// `dist/boltbox-<version>-arm64.img.xz`.
    pub image: PathBuf,
    /// Its `.sha256` file.
    pub checksum: PathBuf,
    /// The raw image's size in bytes.
    pub raw_size: u64,
    /// The compressed image's size in bytes.
    pub compressed_size: u64,
    /// The root filesystem's size in bytes.
    pub root_size: u64,
    /// The base root's cache key, and whether it came from the cache.
    pub base_key: String,
    /// Whether the base came from the cache.
    pub base_cached: bool,
    /// Time per step: (step, duration).
    pub steps: Vec<(&'static str, Duration)>,
}

fn cargo() -> Command {
    // Under `cargo run` this is the cargo that runs us; otherwise the one on PATH.
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    without_package_env(&mut command);
    command
}

/// Removes what `cargo run` tells the program it runs about its package (CARGO_MANIFEST_DIR
/// and the like) from `command`'s environment. A cargo started with them passes them on to
/// build scripts that watch them (ring's `rerun-if-env-changed=CARGO_MANIFEST_DIR`), so a
/// checkout at another path, or `make aarch64` beside `make image`, rebuilt ring and all that
/// depends on it (ldk-node most of all): about two minutes of every image build.
fn without_package_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let package = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(name, "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE");
        if package {
            command.env_remove(name);
        }
    }
}

/// The cargo target directory of the workspace (CARGO_TARGET_DIR, config, or ./target).
fn target_dir(workspace: &Path) -> Result<PathBuf, ImageError> {
    let json = output(
        cargo().current_dir(workspace).args(["metadata", "--no-deps", "--format-version", "1", "--locked"]),
        None,
    )?;
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| ImageError::Invalid(format!("cargo metadata: {e}")))?;
    value["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| ImageError::Invalid("cargo metadata names no target_directory".into()))
}

/// Cross-builds the release programs for the board. Each package is built on its own, so
/// that `boltbox` is the very artifact `make aarch64` builds (and reuses it: no second fat-LTO
/// link when nothing changed).
pub fn cross_build(workspace: &Path) -> Result<Programs, ImageError> {
    for package in ["boltbox", "boltbox-setup"] {
        stream(cargo().current_dir(workspace).args([
            "build",
            "--locked",
            "--release",
            "--target",
            TARGET,
            "-p",
            package,
        ]))?;
    }
    let release = target_dir(workspace)?.join(TARGET).join("release");
    Ok(Programs { boltbox: release.join("boltbox"), setup: release.join("boltbox-setup") })
}

/// The boot partition's config.txt and cmdline.txt, as raspi-firmware wrote them, must boot
/// the root by label and switch I2C on; a change in raspi-firmware that breaks this stops the
/// build here rather than on a user's board.
fn check_boot_files(boot: &Path) -> Result<(), ImageError> {
    let read = |name: &str| {
        let path = boot.join(name);
        std::fs::read_to_string(&path).map_err(io_error(format!("reading {}", path.display())))
    };
    let cmdline = read("cmdline.txt")?;
    let config = read("config.txt")?;
    let checks = [
        (cmdline.contains(&format!("root=LABEL={ROOT_LABEL}")), "cmdline.txt boots the root by label"),
        (config.contains("dtparam=i2c_arm=on"), "config.txt switches I2C on"),
        (config.contains("arm_64bit=1"), "config.txt starts the CPU in 64-bit mode"),
        (config.lines().any(|l| l.starts_with("kernel=vmlinuz-")), "config.txt names the kernel"),
        (config.lines().any(|l| l.starts_with("initramfs initrd.img-")), "config.txt names the initramfs"),
    ];
    for (ok, what) in checks {
        if !ok {
            return Err(ImageError::Invalid(format!(
                "raspi-firmware's boot files are not as expected: {what}\ncmdline.txt: {cmdline}\nconfig.txt:\n{config}"
            )));
        }
    }
    Ok(())
}

fn disk_id() -> Result<u32, ImageError> {
    let mut bytes = [0u8; 4];
    std::io::Read::read_exact(
        &mut File::open("/dev/urandom").map_err(io_error("opening /dev/urandom"))?,
        &mut bytes,
    )
    .map_err(io_error("reading /dev/urandom"))?;
    Ok(u32::from_le_bytes(bytes))
}

/// Builds the image into `dist`, working under `cache` (`$BOLTBOX_CACHE/image`).
pub fn build(workspace: &Path, cache: &Path, dist: &Path) -> Result<Built, ImageError> {
    let mut steps = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |steps: &mut Vec<(&'static str, Duration)>, name: &'static str| {
        steps.push((name, clock.elapsed()));
        println!("build: {name} done in {:.0?}", clock.elapsed());
        clock = Instant::now();
    };

    let programs = cross_build(workspace)?;
    lap(&mut steps, "cross-build");

    let base = base::ensure(cache)?;
    lap(&mut steps, if base.cached { "base root (cached)" } else { "base root (built)" });

    let work = cache.join("work");
    let boot = rootfs::layer(&base.root, &work, &programs)?;
    let template = workspace.join("image").join("boltbox.toml");
    std::fs::copy(&template, boot.join("boltbox.toml"))
        .map_err(io_error(format!("copying {}", template.display())))?;
    check_boot_files(&boot)?;
    lap(&mut steps, "boltbox layer");

    let files = [work.join("boot.vfat"), work.join("root.ext4"), work.join("data.ext4")];
    disk::make_boot(&files[0], &boot)?;
    let root_size = disk::make_root(&files[1], &work.join("root"))?;
    disk::make_data(&files[2])?;
    let raw = work.join("boltbox.img");
    let layout = disk::layout(root_size);
    let parts =
        [(layout[0], files[0].as_path()), (layout[1], files[1].as_path()), (layout[2], files[2].as_path())];
    disk::assemble(&raw, &parts, disk_id()?)?;
    for file in &files {
        std::fs::remove_file(file).map_err(io_error(format!("removing {}", file.display())))?;
    }
    lap(&mut steps, "filesystems and image");

    std::fs::create_dir_all(dist).map_err(io_error(format!("creating {}", dist.display())))?;
    let name = artifact_name(VERSION);
    let image = dist.join(&name);
    let partial = dist.join(format!("{name}.partial"));
    let out = File::create(&partial).map_err(io_error(format!("creating {}", partial.display())))?;
    stream(Command::new("xz").args(["--threads=0", "-6", "--stdout"]).arg(&raw).stdout(Stdio::from(out)))?;
    std::fs::rename(&partial, &image).map_err(io_error(format!("moving {}", image.display())))?;
    let sum = output(Command::new("sha256sum").arg(&name).current_dir(dist), None)?;
    let checksum = dist.join(format!("{name}.sha256"));
    std::fs::write(&checksum, sum).map_err(io_error(format!("writing {}", checksum.display())))?;
    lap(&mut steps, "xz and sha256");

    let size = |p: &Path| {
        std::fs::metadata(p).map(|m| m.len()).map_err(io_error(format!("reading {}", p.display())))
    };
    Ok(Built {
        raw_size: size(&raw)?,
        compressed_size: size(&image)?,
        image,
        checksum,
        root_size,
        base_key: base.key,
        base_cached: base.cached,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cargo_it_starts_knows_nothing_of_this_package() {
        // cargo sets these for the tests it runs, as `cargo run` does for the program.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let mut env = Command::new("env");
        without_package_env(&mut env);
        env.env("CARGO_TARGET_DIR", "/kept");
        let out = env.output().expect("env runs");
        let vars = String::from_utf8_lossy(&out.stdout);
        assert!(!vars.lines().any(|l| l.starts_with("CARGO_MANIFEST_DIR=")), "{vars}");
        assert!(!vars.lines().any(|l| l.starts_with("CARGO_PKG_")), "{vars}");
        assert!(vars.lines().any(|l| l == "CARGO_TARGET_DIR=/kept"), "the build's own settings stay");
    }
}

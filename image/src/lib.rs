//! boltbox-image: builds the flashable image from Debian packages and boot-tests it in QEMU.
//!
//! - [`base`]: the Debian root made by mmdebstrap (kernel, initramfs, firmware), cached by
//!   a hash of its recipe.
//! - [`rootfs`]: the boltbox layer on a copy of it: binaries, units, users, rules.
//! - [`disk`]: filesystems, the MBR and the image file, without loop mounts.
//! - [`build`]: the whole build, from the cross-compile to `dist/*.img.xz` and its `.sha256`.
//! - [`boot_test`]: boots the image in `qemu-system-aarch64 -M virt` and drives it through
//!   the link board.
//!
//! docs/IMAGE.md describes the image and how it is made.

pub mod base;
pub mod boot_test;
pub mod build;
pub mod disk;
mod process;
pub mod rootfs;

use std::path::{Path, PathBuf};

/// The boot partition's FAT label: what the owner sees when the card is plugged into a laptop.
pub const BOOT_LABEL: &str = "BOLTBOX";
/// The root filesystem's label (the kernel command line names it).
pub const ROOT_LABEL: &str = "boltbox-root";
/// The data filesystem's label, mounted at [`DATA_DIR`].
pub const DATA_LABEL: &str = "boltbox-data";
/// The node's data dir (`node.data_dir`'s default), where the data partition is mounted.
pub const DATA_DIR: &str = "/var/lib/boltbox";
/// Where the boot partition is mounted on the device (raspi-firmware's place).
pub const BOOT_DIR: &str = "/boot/firmware";
/// The service user's fixed uid and gid (image/rootfs/usr/lib/sysusers.d/boltbox.conf).
pub const BOLTBOX_ID: u32 = 900;
/// The Rust target of the board.
pub const TARGET: &str = "aarch64-unknown-linux-gnu";

/// What can go wrong while building or boot-testing the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A tool could not be started, or it failed.
    #[error("{command}: {reason}")]
    Tool {
        /// The command line.
        command: String,
        /// Why: not found, or its exit status and the tail of its output.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something in the image is not as the build made it or as the test expects.
    #[error("{0}")]
    Invalid(String),
    /// The boot test saw the guest do the wrong thing or nothing in time.
    #[error("boot test: {what}: {reason}")]
    Boot {
        /// The step, e.g. "first boot: home screen".
        what: String,
        /// What went wrong, with the last caption or the console's tail.
        reason: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// The compressed image's file name for a boltbox version: `boltbox-<version>-arm64.img.xz`.
pub fn artifact_name(version: &str) -> String {
    format!("boltbox-{version}-arm64.img.xz")
}

/// The version of the workspace (and so of the image).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The source tree this tool was built from: the image's files and the workspace it builds.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The cache directory: `$BOLTBOX_CACHE/image` (default `/var/cache/boltbox/image`), as the
/// Makefile sets it.
pub fn cache_dir() -> PathBuf {
    let cache = std::env::var_os("BOLTBOX_CACHE").unwrap_or_else(|| "/var/cache/boltbox".into());
    PathBuf::from(cache).join("image")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_artifact_is_named_by_version_and_arch() {
        assert_eq!(super::artifact_name("0.1.0"), "boltbox-0.1.0-arm64.img.xz");
    }
}

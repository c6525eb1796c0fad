//! The Debian base root: an arm64 trixie root made by mmdebstrap (maintainer scripts run under
//! qemu-user through binfmt), with the Debian kernel, its initramfs and the Raspberry Pi
//! firmware in `/boot/firmware`. Building it takes many minutes under qemu-user (mostly the
//! initramfs), so it is cached under `$BOLTBOX_CACHE/image/base-<key>/`, keyed by a hash of
//! everything that goes into it: the suite, the packages, mmdebstrap's options, the hook script
//! and the files under image/base/. A change of any of them builds a new base; nothing else does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{output, stream};
use crate::{ImageError, ROOT_LABEL, io_error};

/// The Debian suite: the current stable release.
pub const SUITE: &str = "trixie";

/// Components: the Pi's boot firmware and the Wi-Fi firmware are in non-free-firmware.
pub const COMPONENTS: &str = "main,non-free-firmware";

/// The packages on top of mmdebstrap's `apt` variant (Essential packages and apt). Chosen
/// light: no desktop, no Python or Perl, systemd's own networking.
pub const PACKAGES: &[&str] = &[
    // Boot: kernel, initramfs, the Pi's firmware and Wi-Fi firmware.
    "linux-image-arm64",
    "initramfs-tools",
    "zstd",
    "raspi-firmware",
    "firmware-brcm80211",
    "wireless-regdb",
    // The system: systemd with networkd, resolved and timesyncd; Wi-Fi; SSH (off by default).
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "systemd-resolved",
    "systemd-timesyncd",
    "wpasupplicant",
    "iproute2",
    "kmod",
    "ca-certificates",
    "openssh-server",
    // Filesystems: fsck at boot, and growing the data partition on first boot.
    "dosfstools",
    "e2fsprogs",
    "fdisk",
];

/// mmdebstrap's options, apart from the packages, hooks, suite and target.
const OPTIONS: &[&str] = &[
    "--mode=root",
    "--architectures=arm64",
    "--variant=apt",
    // Documentation and translations are dead weight on the card; licences stay.
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
];

/// Run after every package is installed (sh, `$1` is the root). raspi-firmware's own settings
/// file is a conffile, so it is amended after installation, not seeded before: the root is
/// found by label (the same image boots from SD, USB and virtio), the consoles are HDMI and
/// the header's UART, and no CMA size is forced (the right one differs between Pi 3 and Pi 4).
/// Then raspi-firmware's kernel hook runs again to write config.txt and cmdline.txt with them,
/// as it will on the device at every kernel upgrade. SSH host keys made by openssh-server's
/// postinst would be shared by every card: they go, and the device makes its own if SSH is
/// turned on. /etc/machine-id is left for the first boot to fill in.
fn customize_hook() -> String {
    format!(
        r#"set -eu
root="$1"
cat >>"$root/etc/default/raspi-firmware" <<'EOF'

# boltbox: the same image boots from SD, USB and QEMU's virtio disk.
ROOTPART="LABEL={ROOT_LABEL}"
CONSOLES="tty0 ttyS1,115200"
CMA=0
EOF
kernel=$(ls "$root/usr/lib/modules")
chroot "$root" env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware "$kernel"
rm -f "$root"/etc/ssh/ssh_host_*
printf 'uninitialized\n' >"$root/etc/machine-id"
"#
    )
}

/// The files laid into the root before the packages are installed (image/base/): the
/// initramfs module list and raspi-firmware's extra config.txt lines.
pub fn base_files() -> PathBuf {
    crate::workspace().join("image").join("base")
}

/// Every regular file under `dir`, sorted, as paths relative to `dir`.
pub(crate) fn files_under(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries =
            std::fs::read_dir(&current).map_err(io_error(format!("listing {}", current.display())))?;
        for entry in entries {
            let path = entry.map_err(io_error(format!("listing {}", current.display())))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                found.push(relative.to_path_buf());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Everything the base depends on, as text: what its cache key is the hash of.
pub fn recipe() -> Result<String, ImageError> {
    let mut text = format!("suite {SUITE}\ncomponents {COMPONENTS}\npackages {}\n", PACKAGES.join(","));
    for option in OPTIONS {
        let _ = writeln!(text, "option {option}");
    }
    let _ = writeln!(text, "customize-hook\n{}", customize_hook());
    let dir = base_files();
    for file in files_under(&dir)? {
        let path = dir.join(&file);
        let content =
            std::fs::read_to_string(&path).map_err(io_error(format!("reading {}", path.display())))?;
        let _ = writeln!(text, "file {}\n{content}", file.display());
    }
    Ok(text)
}

/// The first 16 hex digits of the SHA-256 of `text`.
pub fn key(text: &str) -> Result<String, ImageError> {
    let digest = output(&mut Command::new("sha256sum"), Some(text.as_bytes()))?;
    Ok(digest.chars().take(16).collect())
}

/// A built base: its root directory.
#[derive(Debug, Clone)]
pub struct Base {
    /// The root filesystem tree.
    pub root: PathBuf,
    /// The cache key it was built for.
    pub key: String,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// The base root for the current recipe: from the cache, or built now (and older bases
/// removed, each is most of a gigabyte).
pub fn ensure(cache: &Path) -> Result<Base, ImageError> {
    let recipe = recipe()?;
    let key = key(&recipe)?;
    let dir = cache.join(format!("base-{key}"));
    let root = dir.join("root");
    let stamp = dir.join("recipe");
    if stamp.is_file() && root.join("usr/lib/raspi-firmware").is_dir() {
        return Ok(Base { root, key, cached: true });
    }
    std::fs::create_dir_all(cache).map_err(io_error(format!("creating {}", cache.display())))?;
    // Built next to its place and renamed when complete: an interrupted build leaves no
    // base that looks finished.
    let work = cache.join(format!("base-{key}.new"));
    remove_dir(&work)?;
    std::fs::create_dir_all(&work).map_err(io_error(format!("creating {}", work.display())))?;
    let mut command = Command::new("mmdebstrap");
    command
        .args(OPTIONS)
        .arg(format!("--components={COMPONENTS}"))
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(format!("--essential-hook=sync-in {} /", base_files().display()))
        .arg(format!("--customize-hook={}", customize_hook()))
        .arg(SUITE)
        .arg(work.join("root"));
    stream(&mut command)?;
    std::fs::write(work.join("recipe"), &recipe).map_err(io_error("writing the base's recipe"))?;
    remove_dir(&dir)?;
    std::fs::rename(&work, &dir).map_err(io_error(format!("moving the base to {}", dir.display())))?;
    remove_other_bases(cache, &dir)?;
    Ok(Base { root, key, cached: false })
}

fn remove_dir(dir: &Path) -> Result<(), ImageError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error(format!("removing {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

fn remove_other_bases(cache: &Path, keep: &Path) -> Result<(), ImageError> {
    let entries = std::fs::read_dir(cache).map_err(io_error(format!("listing {}", cache.display())))?;
    for entry in entries {
        let path = entry.map_err(io_error(format!("listing {}", cache.display())))?.path();
        let is_base = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("base-"));
        if is_base && path != keep {
            remove_dir(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_covers_packages_hooks_and_base_files() {
        let recipe = recipe().expect("recipe");
        assert!(recipe.contains("linux-image-arm64"));
        assert!(recipe.contains("z50-raspi-firmware"));
        assert!(recipe.contains("file usr/share/initramfs-tools/modules.d/boltbox"));
        assert!(recipe.contains("MODULES=list"));
        let key = key(&recipe).expect("key");
        assert_eq!(key.len(), 16);
        assert_ne!(key, super::key(&format!("{recipe}x")).expect("key"));
    }
}

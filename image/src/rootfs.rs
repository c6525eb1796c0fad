//! The boltbox layer: a copy of the base root with the boltbox binaries, the files under
//! image/rootfs/ (units, udev rules, users, journald and network settings), /etc/fstab, the
//! users made and the units enabled. This is the fast part of a rebuild: no package is
//! installed here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::base::files_under;
use crate::process::run;
use crate::{BOLTBOX_ID, BOOT_DIR, BOOT_LABEL, DATA_DIR, DATA_LABEL, ImageError, ROOT_LABEL, io_error};

/// Units enabled in the image.
const ENABLE: &[&str] = &[
    "boltbox.service",
    "boltbox-setup.service",
    "boltbox-poweroff.path",
    "boltbox-eject.path",
    "systemd-networkd.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
];

/// Units that packages enable but the image keeps off: SSH until the owner gives a key
/// (boltbox-setup turns it on), and wpa_supplicant's D-Bus service (Wi-Fi runs per interface,
/// wpa_supplicant@wlan0, when configured).
const DISABLE: &[&str] = &["ssh.service", "ssh.socket", "wpa_supplicant.service"];

/// The cross-built programs that go into the image.
#[derive(Debug, Clone)]
pub struct Programs {
    /// `boltbox`, installed as /usr/bin/boltbox.
    pub boltbox: PathBuf,
    /// `boltbox-setup`, installed as /usr/sbin/boltbox-setup.
    pub setup: PathBuf,
}

/// The files laid over the base (image/rootfs/).
pub fn layer_files() -> PathBuf {
    crate::workspace().join("image").join("rootfs")
}

/// /etc/fstab: every filesystem by label. The boot partition's files belong to root and are
/// readable by group boltbox only (boltbox.toml may hold RPC credentials and a Wi-Fi
/// passphrase); the data partition holds no programs.
pub fn fstab() -> String {
    format!(
        "# boltbox: filesystems by label, so that the card boots from SD, USB and virtio alike.\n\
         LABEL={ROOT_LABEL}\t/\text4\tdefaults,noatime\t0\t1\n\
         LABEL={BOOT_LABEL}\t{BOOT_DIR}\tvfat\tdefaults,noatime,uid=0,gid={BOLTBOX_ID},fmask=0137,dmask=0027\t0\t2\n\
         LABEL={DATA_LABEL}\t{DATA_DIR}\text4\tdefaults,noatime,nodev,nosuid,noexec\t0\t2\n"
    )
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<(), ImageError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(format!("creating {}", parent.display())))?;
    }
    std::fs::copy(from, to).map_err(io_error(format!("copying {} to {}", from.display(), to.display())))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(io_error(format!("setting the mode of {}", to.display())))
}

fn chroot(root: &Path, args: &[&str]) -> Result<(), ImageError> {
    run(Command::new("chroot").arg(root).args(args))
}

/// The uid and gid of `user` in the root's /etc/passwd.
fn ids(root: &Path, user: &str) -> Result<(u32, u32), ImageError> {
    let path = root.join("etc/passwd");
    let passwd = std::fs::read_to_string(&path).map_err(io_error(format!("reading {}", path.display())))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&user))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .ok_or_else(|| ImageError::Invalid(format!("no user {user} in {}", path.display())))
}

/// Makes `work` a copy of `base` with the boltbox layer. Returns the boot partition's content
/// (the base's /boot/firmware, moved out of the root: on the device the FAT partition is
/// mounted there).
pub fn layer(base: &Path, work: &Path, programs: &Programs) -> Result<PathBuf, ImageError> {
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(io_error(format!("removing {}", work.display())))?;
    }
    std::fs::create_dir_all(work).map_err(io_error(format!("creating {}", work.display())))?;
    let root = work.join("root");
    run(Command::new("cp").arg("-a").arg("--reflink=auto").arg(base).arg(&root))?;

    let layer = layer_files();
    for file in files_under(&layer)? {
        install(&layer.join(&file), &root.join(&file), 0o644)?;
    }
    install(&programs.boltbox, &root.join("usr/bin/boltbox"), 0o755)?;
    install(&programs.setup, &root.join("usr/sbin/boltbox-setup"), 0o755)?;
    std::fs::write(root.join("etc/fstab"), fstab()).map_err(io_error("writing /etc/fstab"))?;
    // `boltbox <command>` (over SSH, as root) looks for its config here by default.
    let etc_boltbox = root.join("etc/boltbox");
    std::fs::create_dir_all(&etc_boltbox).map_err(io_error("creating /etc/boltbox"))?;
    std::os::unix::fs::symlink(format!("{BOOT_DIR}/boltbox.toml"), etc_boltbox.join("boltbox.toml"))
        .map_err(io_error("linking /etc/boltbox/boltbox.toml"))?;
    // systemd's ssh generator would open sshd on a local AF_UNIX socket (and AF_VSOCK in VMs)
    // whether or not SSH is on; in this image SSH is off unless the owner gives a key.
    let generators = root.join("etc/systemd/system-generators");
    std::fs::create_dir_all(&generators).map_err(io_error("creating /etc/systemd/system-generators"))?;
    std::os::unix::fs::symlink("/dev/null", generators.join("systemd-ssh-generator"))
        .map_err(io_error("masking systemd-ssh-generator"))?;

    // Under qemu-user through binfmt, like mmdebstrap's hooks.
    chroot(&root, &["systemd-sysusers"])?;
    let mut enable = vec!["systemctl", "--quiet", "enable"];
    enable.extend_from_slice(ENABLE);
    chroot(&root, &enable)?;
    let mut disable = vec!["systemctl", "--quiet", "disable"];
    disable.extend_from_slice(DISABLE);
    chroot(&root, &disable)?;

    let (uid, gid) = ids(&root, "boltbox")?;
    if (uid, gid) != (BOLTBOX_ID, BOLTBOX_ID) {
        return Err(ImageError::Invalid(format!(
            "user boltbox got uid {uid} gid {gid}, not {BOLTBOX_ID} (fstab relies on it)"
        )));
    }
    // The mount point of the data partition, not writable by anyone while nothing is mounted
    // there, so that the node never writes its state onto the root filesystem by mistake.
    let data = root.join(DATA_DIR.trim_start_matches('/'));
    std::fs::create_dir_all(&data).map_err(io_error(format!("creating {}", data.display())))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555))
        .map_err(io_error(format!("setting the mode of {}", data.display())))?;

    let boot = work.join("boot");
    std::fs::rename(root.join(BOOT_DIR.trim_start_matches('/')), &boot)
        .map_err(io_error("moving /boot/firmware out of the root"))?;
    std::fs::create_dir(root.join(BOOT_DIR.trim_start_matches('/')))
        .map_err(io_error("creating the /boot/firmware mount point"))?;
    Ok(boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_names_every_filesystem_by_label() {
        let fstab = fstab();
        for label in [ROOT_LABEL, BOOT_LABEL, DATA_LABEL] {
            assert!(fstab.contains(&format!("LABEL={label}\t")), "{fstab}");
        }
        assert!(!fstab.contains("/dev/"), "{fstab}");
        assert!(fstab.contains(&format!("gid={BOLTBOX_ID}")), "{fstab}");
    }

    #[test]
    fn the_sysusers_file_pins_the_ids_fstab_uses() {
        let sysusers = std::fs::read_to_string(layer_files().join("usr/lib/sysusers.d/boltbox.conf"))
            .expect("sysusers file");
        assert!(sysusers.contains(&format!("u boltbox {BOLTBOX_ID} ")), "{sysusers}");
    }

    #[test]
    fn the_units_enabled_are_in_the_layer_or_debian() {
        for unit in ENABLE.iter().filter(|u| u.starts_with("boltbox")) {
            assert!(layer_files().join("etc/systemd/system").join(unit).is_file(), "{unit}");
        }
    }
}

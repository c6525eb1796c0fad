//! USB sticks for backups. udev starts `boltbox-usb@<name>.service` for a USB partition with
//! a vfat, exfat or ext4 filesystem; it mounts the stick at `/run/boltbox/usb/<name>` so that
//! the unprivileged service can write there (FAT and exFAT: owned by boltbox; ext4: the
//! `boltbox-backups` and `boltbox-mirror` directories owned by boltbox). A stick stays mounted
//! until it is pulled, ejected or the system stops: the live mirror's stick is written at every
//! commit, and one present at boot is mounted before boltbox starts. The service asks for a stick to be unmounted
//! by writing its name into `/run/boltbox/eject`; `boltbox-eject.path` runs [`eject`], which
//! takes only the name of a stick mounted here.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{SetupError, io_error, run};

/// Where sticks are mounted, one directory per kernel name.
pub const USB_DIR: &str = "/run/boltbox/usb";
/// The service's eject request: the kernel name of a mounted stick.
pub const EJECT_REQUEST: &str = "/run/boltbox/eject";
/// The directory made for boltbox's backups on an ext4 stick (FAT has no owners, it gets the
/// mount).
pub const BACKUP_DIR: &str = "boltbox-backups";
/// The directory made for boltbox's live mirror on an ext4 stick.
pub const MIRROR_DIR: &str = "boltbox-mirror";
/// The image's own partitions' labels: a stick carrying one is never mounted (and udev never
/// lets its by-label link win over the card's, see 61-boltbox-usb-labels.rules).
pub const SYSTEM_LABELS: [&str; 3] = ["BOLTBOX", "boltbox-root", "boltbox-data"];

/// A kernel block device name as udev gives it (`sda1`, `sdb`): letters, then letters and
/// digits; nothing that could walk out of a directory.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 32
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn checked(name: &str) -> Result<&str, SetupError> {
    if valid_name(name) {
        Ok(name)
    } else {
        Err(SetupError::config("usb", format!("{name:?} is not a block device name")))
    }
}

/// The mount options for a stick's filesystem, or an error for one boltbox does not take.
/// Nothing on a stick runs, and no symlink on it is followed; FAT and exFAT files belong to
/// boltbox and only it reads them.
pub fn mount_options(fstype: &str, uid: u32, gid: u32) -> Result<String, SetupError> {
    let common = "nodev,nosuid,noexec,noatime,nosymfollow";
    match fstype {
        "vfat" => Ok(format!("{common},uid={uid},gid={gid},fmask=0177,dmask=0077,utf8,flush")),
        "exfat" => Ok(format!("{common},uid={uid},gid={gid},fmask=0177,dmask=0077")),
        // A filesystem error turns the stick read-only (the mirror then says so) rather than
        // going on writing to it.
        "ext4" => Ok(format!("{common},errors=remount-ro")),
        other => Err(SetupError::config("usb", format!("filesystem {other:?} is not vfat, exfat or ext4"))),
    }
}

/// Whether `dir` is a mount point, from a /proc/self/mountinfo text.
pub fn is_mounted(mountinfo: &str, dir: &Path) -> bool {
    // Field 5 is the mount point (octal escapes only for spaces and the like, which our
    // names never have).
    mountinfo.lines().any(|line| line.split(' ').nth(4).is_some_and(|m| Path::new(m) == dir))
}

fn mount_point(name: &str) -> PathBuf {
    Path::new(USB_DIR).join(name)
}

fn mounted(dir: &Path) -> Result<bool, SetupError> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(io_error("reading /proc/self/mountinfo"))?;
    Ok(is_mounted(&info, dir))
}

/// One tag (`TYPE`, `LABEL`) of the filesystem on `device`, as blkid reads it.
fn fs_tag(device: &Path, tag: &str) -> Result<String, SetupError> {
    let out = Command::new("blkid")
        .args(["--output", "value", "--match-tag", tag])
        .arg(device)
        .output()
        .map_err(io_error("running blkid"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Makes boltbox's directories ([`BACKUP_DIR`], [`MIRROR_DIR`]) in the ext4 stick mounted at
/// `mount`, for `uid`/`gid`.
pub fn prepare_dirs(mount: &Path, uid: u32, gid: u32) -> Result<(), SetupError> {
    prepare_dir(mount, BACKUP_DIR, uid, gid)?;
    prepare_dir(mount, MIRROR_DIR, uid, gid)
}

/// Makes directory `name` in the stick mounted at `mount` for `uid`/`gid`, working on file
/// descriptors opened without following links: a stick that carries `name` as a symlink (to
/// `/`, say) is refused, and nothing outside the stick changes owner or mode.
fn prepare_dir(mount: &Path, name: &str, uid: u32, gid: u32) -> Result<(), SetupError> {
    use rustix::fs::{CWD, Gid, Mode, OFlags, Uid, fchmod, fchown, mkdirat, openat};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let errno = |what: String| move |e: rustix::io::Errno| io_error(what)(std::io::Error::from(e));
    let root =
        openat(CWD, mount, flags, Mode::empty()).map_err(errno(format!("opening {}", mount.display())))?;
    match mkdirat(&root, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(errno(format!("creating {name} on the stick"))(e)),
    }
    let dir = openat(&root, name, flags, Mode::empty()).map_err(|e| {
        SetupError::config(
            "usb",
            format!("{name} on the stick is not a plain directory ({e}): the stick is refused"),
        )
    })?;
    fchown(&dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(errno(format!("giving {name} to boltbox")))?;
    fchmod(&dir, Mode::from_raw_mode(0o700)).map_err(errno(format!("setting the mode of {name}")))
}

/// Mounts stick `name` for user `uid`/`gid` (boltbox-usb@.service's start).
pub fn mount(name: &str, uid: u32, gid: u32) -> Result<PathBuf, SetupError> {
    let name = checked(name)?;
    let device = Path::new("/dev").join(name);
    let label = fs_tag(&device, "LABEL")?;
    if SYSTEM_LABELS.contains(&label.as_str()) {
        return Err(SetupError::config(
            "usb",
            format!("{name} is labelled {label:?}, like a boltbox partition: not mounted"),
        ));
    }
    let fstype = fs_tag(&device, "TYPE")?;
    let options = mount_options(&fstype, uid, gid)?;
    let dir = mount_point(name);
    std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
    if !mounted(&dir)? {
        run(Command::new("mount").args(["-t", &fstype, "-o", &options]).arg(&device).arg(&dir), None)?;
    }
    if fstype == "ext4" {
        if let Err(e) = prepare_dirs(&dir, uid, gid) {
            // A refused stick is not left mounted for the service.
            let _ = run(Command::new("umount").arg(&dir), None);
            return Err(e);
        }
    }
    Ok(dir)
}

/// Unmounts stick `name` (boltbox-usb@.service's stop: an eject, a pulled stick, shutdown).
/// A stick already pulled out is detached lazily: there is nothing left to flush to.
pub fn unmount(name: &str) -> Result<(), SetupError> {
    let name = checked(name)?;
    let dir = mount_point(name);
    if mounted(&dir)? {
        let gone = !Path::new("/dev").join(name).exists();
        let mut umount = Command::new("umount");
        if gone {
            umount.arg("--lazy");
        }
        run(umount.arg(&dir), None)?;
    }
    match std::fs::remove_dir(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error(format!("removing {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Reads a request file the unprivileged service wrote: a regular file, not followed if it is
/// a symlink (root reads it), and short.
fn read_request(path: &Path) -> Result<String, SetupError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_error(format!("opening {} (a symlink is refused)", path.display())))?;
    let meta = file.metadata().map_err(io_error(format!("reading {}", path.display())))?;
    if !meta.is_file() {
        return Err(SetupError::config("usb", format!("{} is not a regular file", path.display())));
    }
    let mut text = String::new();
    file.take(64).read_to_string(&mut text).map_err(io_error(format!("reading {}", path.display())))?;
    Ok(text)
}

/// Takes the service's eject request: the name in [`EJECT_REQUEST`] must be a stick mounted
/// under [`USB_DIR`]; its unit is stopped, which unmounts it. The request is consumed either way.
pub fn eject() -> Result<String, SetupError> {
    let request = read_request(Path::new(EJECT_REQUEST));
    std::fs::remove_file(EJECT_REQUEST).map_err(io_error(format!("removing {EJECT_REQUEST}")))?;
    let request = request?;
    let name = checked(request.trim())?;
    if !mounted(&mount_point(name))? {
        return Err(SetupError::config("usb", format!("{name} is not a stick mounted under {USB_DIR}")));
    }
    run(Command::new("systemctl").arg("stop").arg(format!("boltbox-usb@{name}.service")), None)?;
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_kernel_names_are_taken() {
        for ok in ["sda", "sda1", "sdb12", "mmcblk1p1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "../sda1", "sda/1", "1sda", "SDA1", "sda 1", "sda1\n", &"a".repeat(33)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn fat_sticks_belong_to_boltbox_and_nothing_on_a_stick_runs() {
        let vfat = mount_options("vfat", 900, 900).expect("vfat");
        assert!(vfat.contains("uid=900,gid=900") && vfat.contains("noexec") && vfat.contains("fmask=0177"));
        assert!(mount_options("exfat", 900, 900).expect("exfat").contains("uid=900"));
        let ext4 = mount_options("ext4", 900, 900).expect("ext4");
        assert!(ext4.contains("nosuid") && ext4.contains("nosymfollow") && !ext4.contains("uid="));
        assert!(mount_options("ntfs", 900, 900).is_err());
        assert!(mount_options("", 900, 900).is_err());
    }

    #[test]
    fn a_request_must_be_a_short_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let request = dir.path().join("eject");
        std::fs::write(&request, "sda1\n").expect("write");
        assert_eq!(read_request(&request).expect("read"), "sda1\n");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root:x").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).expect("symlink");
        assert!(read_request(&link).is_err(), "a symlink is not followed");
        assert!(read_request(dir.path()).is_err(), "a directory is no request");
    }

    #[test]
    fn a_backup_or_mirror_dir_that_is_a_symlink_is_refused_and_its_target_untouched() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().expect("tempdir");
        for name in [BACKUP_DIR, MIRROR_DIR] {
            let stick = tmp.path().join(format!("stick-{name}"));
            std::fs::create_dir(&stick).expect("mkdir");
            let victim = tmp.path().join(format!("victim-{name}"));
            std::fs::create_dir(&victim).expect("mkdir");
            std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            let before = std::fs::metadata(&victim).expect("meta");
            std::os::unix::fs::symlink(&victim, stick.join(name)).expect("symlink");
            // Our own ids: the test also runs unprivileged.
            let (uid, gid) = (before.uid(), before.gid());
            let e = prepare_dirs(&stick, uid, gid).expect_err("a symlink");
            assert!(e.to_string().contains("refused"), "{name}: {e}");
            let after = std::fs::metadata(&victim).expect("meta");
            assert_eq!((after.mode(), after.uid(), after.gid()), (before.mode(), before.uid(), before.gid()));
        }

        let plain = tmp.path().join("plain");
        std::fs::create_dir(&plain).expect("mkdir");
        let own = std::fs::metadata(&plain).expect("meta");
        let (uid, gid) = (own.uid(), own.gid());
        prepare_dirs(&plain, uid, gid).expect("new directories");
        for name in [BACKUP_DIR, MIRROR_DIR] {
            let made = std::fs::metadata(plain.join(name)).expect("made");
            assert_eq!(made.mode() & 0o777, 0o700, "{name}");
        }
        prepare_dirs(&plain, uid, gid).expect("again: they exist");
        assert!(SYSTEM_LABELS.contains(&"boltbox-data"));
    }

    #[test]
    fn mount_points_are_read_from_mountinfo() {
        let info = "36 35 98:0 / /run/boltbox/usb/sda1 rw,noatime - ext4 /dev/sda1 rw\n\
                    37 35 98:0 / /var/lib/boltbox rw - ext4 /dev/vda3 rw\n";
        assert!(is_mounted(info, Path::new("/run/boltbox/usb/sda1")));
        assert!(!is_mounted(info, Path::new("/run/boltbox/usb/sdb1")));
    }
}

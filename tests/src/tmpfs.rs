//! Small real filesystems for fault tests: a tmpfs a test can fill, make read-only or pull
//! away; an ext4 USB stick on a loop device that can also fail as sticks do. Mounting needs
//! root, as CI has; the tests that use it fail, not skip, without it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for one test; unmounted (lazily) when dropped.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`"64M"`) at `path`, mode 0755.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} ({status}): these failure tests need root, as CI has",
            path.display()
        );
        Tmpfs(path.to_path_buf())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Remounts it read-only.
    pub fn remount_read_only(&self) {
        let status = Command::new("mount").args(["-o", "remount,ro"]).arg(&self.0).status().expect("mount");
        assert!(status.success(), "remount read-only: {status}");
    }

    /// Bytes free on it.
    pub fn free_bytes(&self) -> u64 {
        free_bytes(&self.0)
    }

    /// Writes a file `name` that leaves about `leave` bytes free (none: fills it up), and
    /// returns its path. Removing it gives the space back.
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        fill(&self.0, name, leave)
    }
}

/// Bytes free on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let output = Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().expect("df");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df's answer")
}

/// Writes a file `name` into `dir` that leaves about `leave` bytes free on its filesystem.
fn fill(dir: &Path, name: &str, leave: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0x5au8; 1 << 20];
    loop {
        let free = free_bytes(dir);
        if free <= leave {
            break;
        }
        let n = usize::try_from((free - leave).min(chunk.len() as u64)).unwrap_or(chunk.len());
        match file.write(&chunk[..n]) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = file.sync_all();
    path
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Already unmounted when the test pulled it: nothing to say then.
        let _ = Command::new("umount").arg("-l").arg(&self.0).stderr(std::process::Stdio::null()).status();
    }
}

/// A USB stick as the kernel sees one: an ext4 filesystem in an image file on a loop device,
/// mounted with `errors=remount-ro` as a stick's filesystem is. It can fill up, fail into
/// read-only (an ext4 error, as a failing stick's gives), be pulled out while files on it are
/// open, be checked and inserted again under another name.
#[derive(Debug)]
pub struct Ext4Stick {
    image: PathBuf,
    at: Option<PathBuf>,
}

fn run(command: &mut Command, what: &str) {
    let status = command.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what}: {status} (these failure tests need root, as CI has)");
}

impl Ext4Stick {
    /// A new stick of `mib` MiB, its image at `image`; not inserted.
    pub fn new(image: &Path, mib: u64) -> Ext4Stick {
        let file = std::fs::File::create(image).expect("stick image");
        file.set_len(mib << 20).expect("stick size");
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image), "mkfs.ext4");
        Ext4Stick { image: image.to_path_buf(), at: None }
    }

    /// Inserts it: mounts it at `at` (made if missing).
    pub fn insert(&mut self, at: &Path) {
        std::fs::create_dir_all(at).expect("mount point");
        run(
            Command::new("mount").args(["-o", "loop,errors=remount-ro"]).arg(&self.image).arg(at),
            "mounting the stick",
        );
        self.at = Some(at.to_path_buf());
    }

    /// Where it is inserted.
    pub fn path(&self) -> &Path {
        self.at.as_deref().expect("the stick is inserted")
    }

    /// See [`Tmpfs::fill`].
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        fill(self.path(), name, leave)
    }

    /// Fails it: an ext4 error, after which the kernel makes the filesystem read-only
    /// (`errors=remount-ro`) until it is unmounted and checked.
    pub fn fail_read_only(&self) {
        let output =
            Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(self.path()).output().expect("findmnt");
        let source = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let device = Path::new(&source).file_name().expect("a loop device").to_string_lossy().into_owned();
        std::fs::write(format!("/sys/fs/ext4/{device}/trigger_fs_error"), "boltbox test\n")
            .expect("trigger an ext4 error");
    }

    /// Pulls it out: a lazy unmount, which succeeds while files on it are open.
    pub fn pull(&mut self) {
        if let Some(at) = self.at.take() {
            run(Command::new("umount").arg("-l").arg(&at), "pulling the stick");
        }
    }

    /// Whether the kernel is done with it (every file on it closed after a pull).
    pub fn released(&self) -> bool {
        let output = Command::new("losetup").arg("-j").arg(&self.image).output().expect("losetup");
        output.stdout.is_empty()
    }

    /// Checks and repairs its filesystem, as an owner would before inserting it again.
    pub fn check(&self) {
        let status = Command::new("e2fsck").args(["-f", "-y"]).arg(&self.image).status().expect("e2fsck");
        // 0: clean; 1: errors corrected.
        assert!(matches!(status.code(), Some(0 | 1)), "e2fsck: {status}");
    }
}

impl Drop for Ext4Stick {
    fn drop(&mut self) {
        if let Some(at) = self.at.take() {
            let _ = Command::new("umount").arg("-l").arg(&at).stderr(std::process::Stdio::null()).status();
        }
    }
}

//! Small real filesystems for fault tests: a tmpfs a test can fill, make read-only or pull
//! away. Mounting needs root, as CI has; the tests that use it fail, not skip, without it.

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
        let output = Command::new("df").args(["--output=avail", "-B1"]).arg(&self.0).output().expect("df");
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df's answer")
    }

    /// Writes a file `name` that leaves about `leave` bytes free (none: fills it up), and
    /// returns its path. Removing it gives the space back.
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.0.join(name);
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0x5au8; 1 << 20];
        loop {
            let free = self.free_bytes();
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
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Already unmounted when the test pulled it: nothing to say then.
        let _ = Command::new("umount").arg("-l").arg(&self.0).stderr(std::process::Stdio::null()).status();
    }
}

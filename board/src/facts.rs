//! Facts about the board: model (from the device tree), cores, memory.
//!
//! Read from files under a root directory (normally `/`) so that tests can point it at a
//! fixture tree that models a Raspberry Pi or QEMU's virt machine.

use std::path::{Path, PathBuf};

/// What can go wrong while reading board facts.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// A file that every Linux system has could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file was read but did not hold what it should.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Facts about the board the appliance runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardFacts {
    /// The model string from the device tree (e.g. "Raspberry Pi 4 Model B Rev 1.4"), or a
    /// description of the machine when there is no device tree (a PC, a VM).
    pub model: String,
    /// Online CPU cores.
    pub cores: usize,
    /// Total memory in bytes.
    pub memory_bytes: u64,
}

impl BoardFacts {
    /// Reads the facts of the machine this runs on.
    pub fn detect() -> Result<Self, FactsError> {
        Self::read_from(Path::new("/"))
    }

    /// Reads the facts from a system tree rooted at `root` (normally `/`).
    pub fn read_from(root: &Path) -> Result<Self, FactsError> {
        Ok(BoardFacts { model: read_model(root), cores: read_cores(root)?, memory_bytes: read_memory(root)? })
    }

    /// Whether the device tree says this is a Raspberry Pi.
    pub fn is_raspberry_pi(&self) -> bool {
        self.model.starts_with("Raspberry Pi")
    }
}

fn read_model(root: &Path) -> String {
    // The device tree's model is NUL-terminated; boards without a device tree are PCs or VMs.
    for path in ["proc/device-tree/model", "sys/firmware/devicetree/base/model"] {
        if let Ok(bytes) = std::fs::read(root.join(path)) {
            let model = String::from_utf8_lossy(&bytes).trim_end_matches('\0').trim().to_string();
            if !model.is_empty() {
                return model;
            }
        }
    }
    match std::fs::read_to_string(root.join("sys/class/dmi/id/product_name")) {
        Ok(name) if !name.trim().is_empty() => name.trim().to_string(),
        _ => format!("unknown {} machine", std::env::consts::ARCH),
    }
}

/// Parses a kernel CPU list such as "0-3" or "0,2-3" into a count.
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (usize, usize) = (lo.parse().ok()?, hi.parse().ok()?);
                count += hi.checked_sub(lo)? + 1;
            }
            None => {
                part.parse::<usize>().ok()?;
                count += 1;
            }
        }
    }
    (count > 0).then_some(count)
}

fn read_cores(root: &Path) -> Result<usize, FactsError> {
    let path = root.join("sys/devices/system/cpu/online");
    let text =
        std::fs::read_to_string(&path).map_err(|source| FactsError::Read { path: path.clone(), source })?;
    count_cpu_list(&text)
        .ok_or_else(|| FactsError::Parse { path, reason: format!("not a CPU list: {:?}", text.trim()) })
}

fn read_memory(root: &Path) -> Result<u64, FactsError> {
    let path = root.join("proc/meminfo");
    let text =
        std::fs::read_to_string(&path).map_err(|source| FactsError::Read { path: path.clone(), source })?;
    let kib = text
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or_else(|| FactsError::Parse { path, reason: "no MemTotal line in kB".into() })?;
    Ok(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, contents) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, contents).expect("write");
        }
        dir
    }

    #[test]
    fn reads_a_raspberry_pi_4() {
        let root = fixture(&[
            ("proc/device-tree/model", b"Raspberry Pi 4 Model B Rev 1.4\0"),
            ("sys/devices/system/cpu/online", b"0-3\n"),
            ("proc/meminfo", b"MemTotal:        3884096 kB\nMemFree:          100 kB\n"),
        ]);
        let facts = BoardFacts::read_from(root.path()).expect("facts");
        assert_eq!(facts.model, "Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!(facts.cores, 4);
        assert_eq!(facts.memory_bytes, 3_884_096 * 1024);
        assert!(facts.is_raspberry_pi());
    }

    #[test]
    fn a_machine_without_device_tree_is_not_a_pi() {
        let root = fixture(&[
            ("sys/class/dmi/id/product_name", b"QEMU Virtual Machine\n"),
            ("sys/devices/system/cpu/online", b"0,2-3\n"),
            ("proc/meminfo", b"MemTotal: 1024 kB\n"),
        ]);
        let facts = BoardFacts::read_from(root.path()).expect("facts");
        assert_eq!(facts.model, "QEMU Virtual Machine");
        assert_eq!(facts.cores, 3);
        assert!(!facts.is_raspberry_pi());
    }

    #[test]
    fn cpu_lists_parse_or_are_rejected() {
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-1,4-7\n"), Some(6));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn missing_meminfo_is_a_clear_error() {
        let root = fixture(&[("sys/devices/system/cpu/online", b"0\n")]);
        let err = BoardFacts::read_from(root.path()).expect_err("no meminfo");
        assert!(err.to_string().contains("proc/meminfo"), "{err}");
    }

    #[test]
    fn detects_this_machine() {
        let facts = BoardFacts::detect().expect("facts of this machine");
        assert!(facts.cores >= 1);
        assert!(facts.memory_bytes > 0);
    }
}

//! Grows the data partition (the card's last partition) to the end of the card, and its ext4
//! filesystem with it, while it is mounted. The image ships it small so that the download
//! stays small; on first boot it takes the rest of whatever card it was written to.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{SetupError, io_error, run};

/// Free space after the partition below which nothing is done (alignment slack, and cards a
/// few sectors larger than the image).
const MIN_GROWTH_SECTORS: u64 = 16 * 1024 * 1024 / 512;

/// A partition that can grow: where it is and by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowPlan {
    /// The whole disk, e.g. `mmcblk0` or `vda`.
    pub disk: String,
    /// The partition, e.g. `mmcblk0p3`.
    pub partition: String,
    /// Its number in the partition table.
    pub number: u32,
    /// Its size now and after, in 512-byte sectors.
    pub sectors: u64,
    /// Free sectors after it, which it will take.
    pub free: u64,
}

fn read_number(path: &Path) -> Result<u64, SetupError> {
    let text = std::fs::read_to_string(path).map_err(io_error(format!("reading {}", path.display())))?;
    text.trim().parse().map_err(|_| {
        SetupError::Partition(format!("{} holds {:?}, not a number", path.display(), text.trim()))
    })
}

/// Decides whether partition `name` (e.g. `vda3`) can grow, from the block device tree under
/// `sys_block` (`/sys/class/block`). `None`: it already ends within a few MiB of the disk's end.
pub fn plan(sys_block: &Path, name: &str) -> Result<Option<GrowPlan>, SetupError> {
    let part = sys_block.join(name);
    let number = read_number(&part.join("partition"))
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| SetupError::Partition(format!("{name} is not a partition")))?;
    let start = read_number(&part.join("start"))?;
    let sectors = read_number(&part.join("size"))?;
    // /sys/class/block/vda3 links into the disk's directory: .../block/vda/vda3.
    let real = std::fs::canonicalize(&part).map_err(io_error(format!("resolving {}", part.display())))?;
    let disk_dir = real.parent().ok_or_else(|| SetupError::Partition(format!("{name} has no disk")))?;
    let disk = disk_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| SetupError::Partition(format!("{name} has no disk")))?
        .to_string();
    let disk_sectors = read_number(&disk_dir.join("size"))?;
    let end = start + sectors;
    // Only the last partition may grow: anything after it would be overwritten.
    let entries = std::fs::read_dir(disk_dir).map_err(io_error(format!("listing {}", disk_dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_error(format!("listing {}", disk_dir.display())))?;
        let other = entry.path();
        if other.join("partition").is_file() && read_number(&other.join("start"))? > start {
            return Err(SetupError::Partition(format!(
                "{name} is not the last partition on {disk}; {} follows it",
                entry.file_name().to_string_lossy()
            )));
        }
    }
    let free = disk_sectors.saturating_sub(end);
    if free < MIN_GROWTH_SECTORS {
        return Ok(None);
    }
    Ok(Some(GrowPlan { disk, partition: name.to_string(), number, sectors, free }))
}

/// The partition holding the filesystem labelled `label`, as its kernel name (e.g. `vda3`).
pub fn partition_by_label(label: &str) -> Result<String, SetupError> {
    let link = PathBuf::from("/dev/disk/by-label").join(label);
    let dev = std::fs::canonicalize(&link).map_err(io_error(format!("finding {}", link.display())))?;
    dev.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| SetupError::Partition(format!("{} names no device", link.display())))
}

/// Carries out `plan`: the partition table entry is extended to the end of the disk (the
/// disk is in use, so sfdisk only writes the table and partx tells the kernel the new size),
/// then the mounted ext4 filesystem is grown online.
pub fn grow(plan: &GrowPlan) -> Result<(), SetupError> {
    let disk = format!("/dev/{}", plan.disk);
    let mut sfdisk = Command::new("sfdisk");
    sfdisk.args(["--no-reread", "--no-tell-kernel", "--quiet", "-N", &plan.number.to_string(), &disk]);
    run(&mut sfdisk, Some(",+\n"))?;
    run(Command::new("partx").args(["--update", "--nr", &plan.number.to_string(), &disk]), None)?;
    run(Command::new("resize2fs").arg(format!("/dev/{}", plan.partition)), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys/class/block: disk `vda` of `disk` sectors with partitions (start, size).
    fn sysfs(disk: u64, parts: &[(u64, u64)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk_dir = dir.path().join("devices/vda");
        std::fs::create_dir_all(&disk_dir).expect("disk dir");
        std::fs::write(disk_dir.join("size"), format!("{disk}\n")).expect("size");
        let class = dir.path().join("class");
        std::fs::create_dir_all(&class).expect("class dir");
        for (i, (start, size)) in parts.iter().enumerate() {
            let name = format!("vda{}", i + 1);
            let part = disk_dir.join(&name);
            std::fs::create_dir_all(&part).expect("part dir");
            std::fs::write(part.join("partition"), format!("{}\n", i + 1)).expect("partition");
            std::fs::write(part.join("start"), format!("{start}\n")).expect("start");
            std::fs::write(part.join("size"), format!("{size}\n")).expect("size");
            std::os::unix::fs::symlink(&part, class.join(&name)).expect("link");
        }
        dir
    }

    #[test]
    fn the_last_partition_grows_to_the_end_of_a_bigger_card() {
        let sys = sysfs(4_000_000, &[(8192, 1000), (9192, 1000), (10_192, 131_072)]);
        let plan = plan(&sys.path().join("class"), "vda3").expect("plan").expect("grows");
        assert_eq!(plan.disk, "vda");
        assert_eq!(plan.number, 3);
        assert_eq!(plan.free, 4_000_000 - 10_192 - 131_072);
    }

    #[test]
    fn a_partition_that_fills_the_card_stays() {
        let sys = sysfs(200_000, &[(8192, 1000), (9192, 190_000)]);
        assert_eq!(plan(&sys.path().join("class"), "vda2").expect("plan"), None);
    }

    #[test]
    fn only_the_last_partition_may_grow() {
        let sys = sysfs(4_000_000, &[(8192, 1000), (9192, 1000)]);
        let err = plan(&sys.path().join("class"), "vda1").expect_err("not last");
        assert!(err.to_string().contains("vda2 follows it"), "{err}");
    }
}

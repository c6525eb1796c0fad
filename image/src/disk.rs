//! The image file: three filesystems made as files (mkfs.vfat + mtools, mkfs.ext4 -d), an MBR
//! partition table (the Pi 3's boot ROM reads MBR only) and the filesystems copied in at their
//! offsets. No loop device and no mount is needed, so it works in containers and CI alike.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{output, run};
use crate::{BOLTBOX_ID, BOOT_LABEL, DATA_LABEL, ImageError, ROOT_LABEL, io_error};

/// A sector of the partition table.
pub const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;
/// The first partition starts here: SD cards erase in blocks of up to 4 MiB.
pub const FIRST_OFFSET: u64 = 4 * MIB;
/// The boot partition: firmware (~25 MiB), device trees, and room for two kernels with
/// their initramfs during a kernel upgrade.
pub const BOOT_SIZE: u64 = 256 * MIB;
/// The data partition as shipped; it grows to fill the card on first boot.
pub const DATA_SIZE: u64 = 64 * MIB;
/// Free room on the root filesystem for package upgrades (a new kernel while the old one is
/// still installed).
pub const ROOT_HEADROOM: u64 = 512 * MIB;

/// MBR partition type of the FAT32 boot partition.
pub const TYPE_FAT32_LBA: u8 = 0x0c;
/// MBR partition type of a Linux filesystem.
pub const TYPE_LINUX: u8 = 0x83;

/// One partition: where it is, in bytes, and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Offset from the start of the disk.
    pub offset: u64,
    /// Size.
    pub size: u64,
    /// MBR type byte.
    pub kind: u8,
}

impl Partition {
    /// Where it ends (exclusive).
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// The 512-byte MBR for `partitions` (at most four, sector-aligned, below 2 TiB), with the
/// disk signature `id`.
pub fn mbr(partitions: &[Partition], id: u32) -> Result<[u8; 512], ImageError> {
    if partitions.len() > 4 {
        return Err(ImageError::Invalid("an MBR holds at most four partitions".into()));
    }
    let mut sector = [0u8; 512];
    sector[440..444].copy_from_slice(&id.to_le_bytes());
    for (i, p) in partitions.iter().enumerate() {
        let lba = |bytes: u64| {
            u32::try_from(bytes / SECTOR).ok().filter(|_| bytes % SECTOR == 0).ok_or_else(|| {
                ImageError::Invalid(format!("{bytes} bytes is not a sector count an MBR holds"))
            })
        };
        let entry = &mut sector[446 + 16 * i..446 + 16 * (i + 1)];
        // CHS fields say "use LBA" (the largest CHS value); every reader here uses LBA.
        entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        entry[4] = p.kind;
        entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        entry[8..12].copy_from_slice(&lba(p.offset)?.to_le_bytes());
        entry[12..16].copy_from_slice(&lba(p.size)?.to_le_bytes());
    }
    sector[510] = 0x55;
    sector[511] = 0xaa;
    Ok(sector)
}

/// Reads the MBR partitions (non-empty entries, in table order) of the disk image at `path`.
pub fn read_partitions(path: &Path) -> Result<Vec<Partition>, ImageError> {
    let mut sector = [0u8; 512];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut sector))
        .map_err(io_error(format!("reading the partition table of {}", path.display())))?;
    if sector[510..512] != [0x55, 0xaa] {
        return Err(ImageError::Invalid(format!("{} has no MBR partition table", path.display())));
    }
    let mut partitions = Vec::new();
    for i in 0..4 {
        let entry = &sector[446 + 16 * i..446 + 16 * (i + 1)];
        let word = |at: usize| {
            u64::from(u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]))
        };
        if entry[4] != 0 {
            partitions.push(Partition { offset: word(8) * SECTOR, size: word(12) * SECTOR, kind: entry[4] });
        }
    }
    Ok(partitions)
}

/// The size of the ext4 filesystem starting at `offset` in the file at `path`, in bytes, read
/// from its superblock.
pub fn ext4_size(path: &Path, offset: u64) -> Result<u64, ImageError> {
    let mut sb = [0u8; 1024];
    let mut file = File::open(path).map_err(io_error(format!("opening {}", path.display())))?;
    file.seek(SeekFrom::Start(offset + 1024))
        .and_then(|_| file.read_exact(&mut sb))
        .map_err(io_error(format!("reading the ext4 superblock in {}", path.display())))?;
    let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return Err(ImageError::Invalid(format!(
            "no ext4 filesystem at offset {offset} of {}",
            path.display()
        )));
    }
    let mut blocks = u64::from(u32_at(0x04));
    // INCOMPAT_64BIT: the block count's high half is valid.
    if u32_at(0x60) & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    Ok(blocks << (10 + u32_at(0x18)))
}

fn round_up(bytes: u64, to: u64) -> u64 {
    bytes.div_ceil(to) * to
}

/// Bytes used by the tree at `dir` (`du`, in the host filesystem's blocks).
fn used_bytes(dir: &Path) -> Result<u64, ImageError> {
    let text = output(Command::new("du").args(["-s", "--block-size=1"]).arg(dir), None)?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ImageError::Invalid(format!("du printed {text:?}")))
}

/// Makes the FAT32 boot filesystem at `image` holding everything in `content`.
pub fn make_boot(image: &Path, content: &Path) -> Result<(), ImageError> {
    remove_file(image)?;
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", BOOT_LABEL, "-C"])
        .arg(image)
        .arg((BOOT_SIZE / 1024).to_string()))?;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(content)
        .map_err(io_error(format!("listing {}", content.display())))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_error(format!("listing {}", content.display())))?;
    entries.sort();
    run(mtools("mcopy").arg("-i").arg(image).arg("-s").args(&entries).arg("::/"))
}

/// An mtools command that accepts image files whose size is no multiple of a track.
pub fn mtools(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env("MTOOLS_SKIP_CHECK", "1");
    command
}

/// Makes the ext4 root filesystem at `image` from the tree at `root`, sized to its content
/// plus [`ROOT_HEADROOM`]. Returns the size.
pub fn make_root(image: &Path, root: &Path) -> Result<u64, ImageError> {
    let size = round_up(used_bytes(root)? * 11 / 10 + ROOT_HEADROOM, 64 * MIB);
    remove_file(image)?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-L", ROOT_LABEL, "-m", "1", "-d"])
        .arg(root)
        .arg(image)
        .arg(format!("{}k", size / 1024)))?;
    Ok(size)
}

/// Makes the ext4 data filesystem at `image`, empty, its root directory owned by boltbox, no
/// blocks reserved for root (the node runs as boltbox; it needs all of the space). 4 KiB
/// blocks and the default inode ratio although it starts small (mke2fs would pick its "small"
/// profile, 1 KiB blocks): it grows to the card's size on first boot.
pub fn make_data(image: &Path) -> Result<(), ImageError> {
    make_ext4(image, DATA_LABEL, DATA_SIZE, Some((BOLTBOX_ID, BOLTBOX_ID)))
}

/// Makes an empty ext4 filesystem at `image` of `size` bytes, its root owned by `owner`.
pub fn make_ext4(image: &Path, label: &str, size: u64, owner: Option<(u32, u32)>) -> Result<(), ImageError> {
    remove_file(image)?;
    let mut command = Command::new("mkfs.ext4");
    command.args(["-q", "-L", label, "-m", "0", "-b", "4096", "-T", "default"]);
    if let Some((uid, gid)) = owner {
        command.arg("-E").arg(format!("root_owner={uid}:{gid}"));
    }
    run(command.arg(image).arg(format!("{}k", size / 1024)))
}

fn remove_file(path: &Path) -> Result<(), ImageError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Copies the file `from` into `to` at `offset`, leaving holes where `from` has zeros, so
/// that the image stays sparse on disk.
fn copy_at(from: &Path, to: &mut File, offset: u64) -> Result<(), ImageError> {
    let mut source = File::open(from).map_err(io_error(format!("opening {}", from.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    loop {
        let n = source.read(&mut buf).map_err(io_error(format!("reading {}", from.display())))?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            to.seek(SeekFrom::Start(at))
                .and_then(|_| to.write_all(&buf[..n]))
                .map_err(io_error("writing the image"))?;
        }
        at += n as u64;
    }
}

/// The layout for filesystems of these sizes: boot, root, data, each starting on a 4 MiB
/// boundary.
pub fn layout(root_size: u64) -> [Partition; 3] {
    let boot = Partition { offset: FIRST_OFFSET, size: BOOT_SIZE, kind: TYPE_FAT32_LBA };
    let root = Partition { offset: round_up(boot.end(), FIRST_OFFSET), size: root_size, kind: TYPE_LINUX };
    let data = Partition { offset: round_up(root.end(), FIRST_OFFSET), size: DATA_SIZE, kind: TYPE_LINUX };
    [boot, root, data]
}

/// Writes the disk image at `image`: the MBR for the partitions, then each filesystem file at
/// its partition's offset; the image ends at the last partition's end, rounded up to a MiB.
pub fn assemble(image: &Path, parts: &[(Partition, &Path)], id: u32) -> Result<(), ImageError> {
    remove_file(image)?;
    let table: Vec<Partition> = parts.iter().map(|(p, _)| *p).collect();
    let end = table.iter().map(Partition::end).max().unwrap_or(FIRST_OFFSET);
    let mut out = File::create(image).map_err(io_error(format!("creating {}", image.display())))?;
    out.set_len(round_up(end, MIB)).map_err(io_error("sizing the image"))?;
    out.write_all(&mbr(&table, id)?).map_err(io_error("writing the partition table"))?;
    for (partition, file) in parts {
        let len = std::fs::metadata(file).map_err(io_error(format!("reading {}", file.display())))?.len();
        if len != partition.size {
            return Err(ImageError::Invalid(format!(
                "{} is {len} bytes, its partition {} bytes",
                file.display(),
                partition.size
            )));
        }
        copy_at(file, &mut out, partition.offset)?;
    }
    out.sync_all().map_err(io_error("syncing the image"))
}

/// Copies `size` bytes at `offset` of `disk` out into the file `to` (a partition, to look into
/// with tools that take a filesystem image).
pub fn extract(disk: &Path, partition: &Partition, to: &Path) -> Result<(), ImageError> {
    let mut source = File::open(disk).map_err(io_error(format!("opening {}", disk.display())))?;
    source
        .seek(SeekFrom::Start(partition.offset))
        .map_err(io_error(format!("seeking in {}", disk.display())))?;
    let mut out = File::create(to).map_err(io_error(format!("creating {}", to.display())))?;
    std::io::copy(&mut source.take(partition.size), &mut out)
        .map_err(io_error(format!("copying a partition out of {}", disk.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_aligned_and_in_order() {
        let parts = layout(900 * MIB);
        assert_eq!(parts[0].offset, FIRST_OFFSET);
        for pair in parts.windows(2) {
            assert!(pair[1].offset >= pair[0].end());
        }
        assert!(parts.iter().all(|p| p.offset % FIRST_OFFSET == 0));
        assert_eq!(parts[2].size, DATA_SIZE);
    }

    #[test]
    fn the_partition_table_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parts = layout(900 * MIB);
        let path = dir.path().join("disk.img");
        std::fs::write(&path, mbr(&parts, 0xb017_b0c5).expect("mbr")).expect("write");
        assert_eq!(read_partitions(&path).expect("read"), parts.to_vec());
        let sector = std::fs::read(&path).expect("read");
        assert_eq!(&sector[440..444], &0xb017_b0c5u32.to_le_bytes());
    }

    #[test]
    fn an_unaligned_partition_is_refused() {
        let p = Partition { offset: 1000, size: MIB, kind: TYPE_LINUX };
        assert!(mbr(&[p], 1).is_err());
    }
}

//! Files in the data dir and on USB sticks.
//!
//! - State files (seed, store, records, restore staging) are created with an explicit mode,
//!   whatever the umask, and, when a root CLI creates them in a directory that belongs to
//!   someone else (the service's user), they are given to that owner: the service must be able
//!   to read what `boltbox restore` or an offline `boltbox backup` run as root left behind.
//! - Files from outside the process (backups and words on a stick) are read through
//!   [`read_untrusted`]: regular files only, never through a symlink, never blocking on a FIFO,
//!   never more than a bound.
//!
//! Every error names the path it is about.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of secrets and state files.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of directories holding them.
pub const PRIVATE_DIR: u32 = 0o700;

/// `e` with the path and what was being done in front of its message; the kind is kept, so
/// callers can still tell a full disk from a missing file.
pub fn with_path(what: &str, path: &Path) -> impl FnOnce(io::Error) -> io::Error + use<> {
    let context = format!("{what} {}", path.display());
    move |e| io::Error::new(e.kind(), format!("{context}: {e}"))
}

/// The owner to give new files in `dir`: its owner when this process runs as root and the
/// directory belongs to someone else, else none (files belong to whoever creates them).
fn owner_for(dir: &Path) -> io::Result<Option<(u32, u32)>> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let meta = std::fs::metadata(dir).map_err(with_path("reading the owner of", dir))?;
    Ok((meta.uid() != 0 || meta.gid() != 0).then_some((meta.uid(), meta.gid())))
}

fn give(file: &File, owner: Option<(u32, u32)>, path: &Path) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(file, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
            .map_err(|e| with_path("giving", path)(e.into()))?;
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `path` as a new file with mode `mode` (never an existing one: `AlreadyExists`),
/// owned as [`owner_for`] its directory says, and returns it open for writing.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let owner = owner_for(parent(path))?;
    let file = File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(with_path("creating", path))?;
    // The umask may have taken bits away; never add any, but make the mode exactly `mode`.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(with_path("setting the mode of", path))?;
    give(&file, owner, path)?;
    Ok(file)
}

/// Writes `bytes` to `path` atomically: a private temporary file next to it, fsync, rename over
/// `path`, fsync of the directory. The file ends with mode 0600 and the directory's owner (see
/// the module documentation).
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent(path).join(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(with_path("removing", &tmp)(e)),
        _ => {}
    }
    let mut file = create_new(&tmp, PRIVATE_FILE)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all()).map_err(with_path("writing", &tmp));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(with_path("renaming into", path)(e));
    }
    sync_dir(parent(path))
}

/// Creates the directory `dir` (and its missing parents) with mode 0700, owned as
/// [`owner_for`] its parent says; an existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(up) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(up)?;
    }
    let owner = owner_for(parent(dir))?;
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(with_path("creating", dir)(e)),
    }
    let handle = File::open(dir).map_err(with_path("opening", dir))?;
    handle
        .set_permissions(std::fs::Permissions::from_mode(PRIVATE_DIR))
        .map_err(with_path("setting the mode of", dir))?;
    give(&handle, owner, dir)
}

/// Takes group and other bits away from an existing file (a store or record made by an older
/// boltbox under the usual umask); true when it changed the mode.
pub fn make_private(path: &Path) -> io::Result<bool> {
    let mode = std::fs::metadata(path).map_err(with_path("reading", path))?.permissions().mode();
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
        .map_err(with_path("setting the mode of", path))?;
    Ok(true)
}

/// fsyncs the directory `dir`, so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(with_path("syncing", dir))
}

/// Why an untrusted file was not read.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedError {
    /// It could not be opened or read (missing, a symlink, unreadable...).
    #[error("{0}")]
    Io(io::Error),
    /// It is not a regular file (a FIFO, a device, a directory).
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// It is larger than the bound.
    #[error("{path} is {size} bytes, more than the {max} bytes it may have")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },
}

impl UntrustedError {
    /// The OS error, if opening or reading failed.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            UntrustedError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Opens `path` for reading if it is a regular file reached without a symlink in its last
/// component, without blocking on a FIFO; returns it and its size.
fn open_untrusted(path: &Path) -> Result<(File, u64), UntrustedError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| UntrustedError::Io(with_path("opening", path)(e)))?;
    let meta = file.metadata().map_err(|e| UntrustedError::Io(with_path("reading", path)(e)))?;
    if !meta.is_file() {
        return Err(UntrustedError::NotAFile(path.display().to_string()));
    }
    Ok((file, meta.len()))
}

/// Reads the regular file `path` (at most `max` bytes, as [`read_untrusted`]) up to the end or
/// to the first I/O error: the bytes before it, and the error if one came. For files whose
/// end a power cut may leave unreadable (a log on FAT): the caller judges where the error is.
pub fn read_untrusted_to_error(
    path: &Path,
    max: u64,
) -> Result<(Vec<u8>, Option<io::Error>), UntrustedError> {
    let (mut file, size) = open_untrusted(path)?;
    if size > max {
        return Err(UntrustedError::TooLarge { path: path.display().to_string(), size, max });
    }
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // Page by page, so that an error says where the readable part ends.
    let mut page = [0u8; 4096];
    loop {
        match file.read(&mut page) {
            Ok(0) => return Ok((out, None)),
            Ok(n) => {
                out.extend_from_slice(page.get(..n).unwrap_or_default());
                if out.len() as u64 > max {
                    return Err(UntrustedError::TooLarge {
                        path: path.display().to_string(),
                        size: out.len() as u64,
                        max,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Ok((out, Some(with_path("reading", path)(e)))),
        }
    }
}

/// Reads all of the regular file `path`, if it has at most `max` bytes (see
/// [`UntrustedError`] for what is refused).
pub fn read_untrusted(path: &Path, max: u64) -> Result<Vec<u8>, UntrustedError> {
    let (file, size) = open_untrusted(path)?;
    if size > max {
        return Err(UntrustedError::TooLarge { path: path.display().to_string(), size, max });
    }
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // A file that grows while it is read is still cut at the bound.
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| UntrustedError::Io(with_path("reading", path)(e)))?;
    if out.len() as u64 > max {
        return Err(UntrustedError::TooLarge {
            path: path.display().to_string(),
            size: out.len() as u64,
            max,
        });
    }
    Ok(out)
}

/// Reads at most the first `n` bytes of the regular file `path` and returns them with the
/// file's size.
pub fn read_untrusted_prefix(path: &Path, n: u64) -> Result<(Vec<u8>, u64), UntrustedError> {
    let (file, size) = open_untrusted(path)?;
    let mut out = Vec::new();
    file.take(n).read_to_end(&mut out).map_err(|e| UntrustedError::Io(with_path("reading", path)(e)))?;
    Ok((out, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_have_their_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A permissive umask is what `create_new` must not depend on; it is process-wide, so
        // the test only checks the result, which holds for any umask.
        let path = dir.path().join("secret");
        drop(create_new(&path, PRIVATE_FILE).expect("create"));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = create_new(&path, PRIVATE_FILE).expect_err("exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("secret"), "the error names the path: {e}");
    }

    #[test]
    fn atomic_writes_replace_and_stay_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("record.json");
        std::fs::write(&path, b"old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private_atomic(&path, b"new").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1, "no temporary file left");
    }

    #[test]
    fn private_dirs_and_tightening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a").join("b");
        create_private_dir(&nested).expect("mkdir");
        assert_eq!(std::fs::metadata(&nested).expect("meta").permissions().mode() & 0o777, 0o700);
        let file = nested.join("f");
        std::fs::write(&file, b"x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(make_private(&file).expect("tighten"));
        assert_eq!(std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777, 0o600);
        assert!(!make_private(&file).expect("already private"));
    }

    #[test]
    fn untrusted_reads_take_only_small_regular_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = dir.path().join("small");
        std::fs::write(&small, b"hello").expect("write");
        assert_eq!(read_untrusted(&small, 5).expect("read"), b"hello");
        assert!(matches!(read_untrusted(&small, 4), Err(UntrustedError::TooLarge { size: 5, max: 4, .. })));
        assert_eq!(read_untrusted_prefix(&small, 2).expect("prefix"), (b"he".to_vec(), 5));

        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        assert!(
            matches!(read_untrusted(&link, 1 << 20), Err(UntrustedError::Io(_))),
            "symlinks are not followed"
        );
        assert!(matches!(read_untrusted(dir.path(), 1 << 20), Err(UntrustedError::NotAFile(_))));

        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert!(matches!(read_untrusted(&fifo, 1 << 20), Err(UntrustedError::NotAFile(_))));
    }
}

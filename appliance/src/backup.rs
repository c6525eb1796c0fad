//! Backups on the appliance: hold B and confirm → a verified backup on a USB stick, made on a
//! worker thread with its progress on the OLED; the record of the last good backup (system
//! screen, alert); and the CLI's `boltbox backup --to DIR` and `boltbox restore`.
//!
//! Sticks (the contract with the image): every directory directly under `[backup] sticks` is
//! an inserted stick; backups go into `<stick>/boltbox-backups/`. With an eject request file
//! (the device), only mount points of FAT, exFAT or ext4 count, and after a backup the stick's
//! name is written to that file and boltbox waits for the stick to be unmounted. Several sticks:
//! the first by name, and the OLED says which.

use std::io::{BufRead, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use boltbox_node::unix_now;

use boltbox_executor::runtime::{BoardFacts, RuntimeError, RuntimePlan};
use boltbox_node::backup::{self, BackupError, BackupHeader, DataDirStore, RestoreReport, Workers, Written};
use boltbox_node::datadir::{DataDirLock, LockError, STORE_FILE};
use boltbox_node::mirror::read_mirror;
use boltbox_node::mirror::vss::{VssContents, read_vss};
use boltbox_node::{Alert, NodeConfig, Seed, SeedError, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::config::{AppConfig, BackupSettings, ConfigError};
use crate::control::ControlError;
use crate::screens::BackupProgress;

/// The record of the last verified backup, in the data dir.
pub const LAST_BACKUP_FILE: &str = "last-backup.json";
/// Backups go into this directory on a stick.
pub const STICK_DIR: &str = "boltbox-backups";
/// How long an unmount may take after the request.
const EJECT_WAIT: Duration = Duration::from_secs(20);
/// Filesystems a stick may have on the device (statfs magic numbers): FAT, exFAT, ext2/3/4.
const STICK_FILESYSTEMS: [i64; 3] = [0x4d44, 0x2011_bab0, 0xef53];

/// `HH:MM UTC` of Unix time `secs`.
fn utc_clock(secs: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
        .unwrap_or_default()
        .format("%H:%M UTC")
        .to_string()
}

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix time `secs`.
fn utc_time(secs: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// The last verified backup: when, where, how big, at which commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBackup {
    /// When its snapshot was taken (Unix seconds).
    pub at: u64,
    /// The file it was written to.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The store's commit counter in it.
    pub commit_counter: u64,
}

impl LastBackup {
    fn of(written: &Written) -> LastBackup {
        LastBackup {
            at: written.header.created_at,
            file: written.path.clone(),
            bytes: written.bytes,
            commit_counter: written.header.commit_counter,
        }
    }

    /// The record in `data_dir`, if there is a readable one; an unreadable one is logged.
    pub fn load(data_dir: &Path) -> Option<LastBackup> {
        let path = data_dir.join(LAST_BACKUP_FILE);
        let bytes = match boltbox_node::files::read_untrusted(&path, 64 * 1024) {
            Ok(bytes) => bytes,
            Err(e) if e.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => return None,
            Err(e) => {
                tracing::warn!("cannot read the last backup's record: {e}");
                return None;
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| tracing::warn!("ignoring {}: {e}", path.display())).ok()
    }

    /// Stores the record in `data_dir` (0600, given to the data dir's owner, atomically).
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        boltbox_node::files::write_private_atomic(&data_dir.join(LAST_BACKUP_FILE), &bytes)
    }
}

/// Why a backup to a stick failed, in words the owner can act on (the OLED shows at most 63
/// characters). Earlier backups are untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum StickError {
    /// No stick is inserted (or none is mounted).
    #[error("no USB stick found: insert one and hold B again")]
    NoStick,
    /// The stick's filesystem is not one the device writes to.
    #[error("USB stick {0}: use FAT32, exFAT or ext4")]
    WrongFilesystem(String),
    /// The stick is mounted read-only (write-protect switch, or a damaged filesystem).
    #[error("USB stick {0} is read-only: unlock it or use another")]
    ReadOnly(String),
    /// The service may not write to the stick.
    #[error("USB stick {0} is not writable by boltbox")]
    NotWritable(String),
    /// The stick has no room for the backup.
    #[error("USB stick {0} is full: free space or use another")]
    Full(String),
    /// The stick went away while the backup was being written.
    #[error("USB stick {0} was removed during the backup: retry")]
    Removed(String),
    /// There is no node state to back up (the store is missing or damaged).
    #[error("no node state to back up yet")]
    NoStore,
    /// The node's seed could not be read.
    #[error("cannot read the seed: {0}")]
    Seed(#[from] SeedError),
    /// Anything else: the backup error itself.
    #[error("backup failed: {0}")]
    Backup(BackupError),
}

/// An inserted stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stick {
    /// Its name under the sticks directory (the kernel's partition name on the device).
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
}

fn is_mount_point(path: &Path) -> bool {
    let parent = path.parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(dir), Ok(parent)) => dir.is_dir() && dir.dev() != parent.dev(),
        _ => false,
    }
}

impl Stick {
    /// Whether the stick is still there (mounted, on the device).
    pub(crate) fn present(&self, device: bool) -> bool {
        if device { is_mount_point(&self.path) } else { self.path.is_dir() }
    }
}

/// The stick to back up to: the first directory by name under `sticks`; on the device
/// (`device`), the first mount point with a usable filesystem.
pub fn find_stick(sticks: &Path, device: bool) -> Result<Stick, StickError> {
    let mut found = usable_sticks(sticks, device)?;
    Ok(found.remove(0))
}

/// Every inserted stick, by name: directories under `sticks`; on the device (`device`), mount
/// points (read-only ones and any filesystem too: for reading).
pub fn inserted_sticks(sticks: &Path, device: bool) -> Vec<Stick> {
    let Ok(entries) = std::fs::read_dir(sticks) else { return Vec::new() };
    let mut found: Vec<Stick> = entries
        .filter_map(|e| e.ok())
        .map(|e| Stick { name: e.file_name().to_string_lossy().into_owned(), path: e.path() })
        .filter(|s| s.present(device))
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Every stick boltbox may write to, by name (never empty): directories under `sticks`; on
/// the device (`device`), mount points with a usable filesystem that are not read-only. The
/// error names the first stick when none is usable.
pub fn usable_sticks(sticks: &Path, device: bool) -> Result<Vec<Stick>, StickError> {
    let found = inserted_sticks(sticks, device);
    let first = found.first().cloned().ok_or(StickError::NoStick)?;
    if !device {
        return Ok(found);
    }
    // `f_type`'s integer type differs between architectures; i128 holds every one of them.
    let usable = |s: &Stick| {
        rustix::fs::statfs(&s.path)
            .is_ok_and(|st| STICK_FILESYSTEMS.iter().any(|magic| i128::from(st.f_type) == i128::from(*magic)))
    };
    let read_only = |s: &Stick| {
        rustix::fs::statvfs(&s.path).is_ok_and(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
    };
    let found: Vec<Stick> = found.into_iter().filter(usable).collect();
    let Some(first_usable) = found.first().cloned() else {
        return Err(StickError::WrongFilesystem(first.name));
    };
    let writable: Vec<Stick> = found.into_iter().filter(|s| !read_only(s)).collect();
    if writable.is_empty() {
        return Err(StickError::ReadOnly(first_usable.name));
    }
    Ok(writable)
}

/// The owner's words for `error` from writing to `stick`.
fn classify(error: BackupError, stick: &Stick, device: bool) -> StickError {
    if let Some(io) = error.io_error() {
        match io.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                return StickError::Full(stick.name.clone());
            }
            std::io::ErrorKind::ReadOnlyFilesystem => return StickError::ReadOnly(stick.name.clone()),
            std::io::ErrorKind::PermissionDenied => return StickError::NotWritable(stick.name.clone()),
            _ => {}
        }
        // EIO, ENODEV, ENOENT... on a stick that is gone: it was pulled.
        if !stick.present(device) || matches!(io.raw_os_error(), Some(libc_codes::EIO | libc_codes::ENODEV)) {
            return StickError::Removed(stick.name.clone());
        }
    }
    StickError::Backup(error)
}

/// The two errno values that mean "the device went away" (as in <errno.h> on Linux).
mod libc_codes {
    pub const EIO: i32 = 5;
    pub const ENODEV: i32 = 19;
}

/// Asks the image to unmount `stick` and waits for it; true once it is unmounted.
fn eject(request: &Path, stick: &Stick) -> bool {
    if let Err(e) = std::fs::write(request, format!("{}\n", stick.name)) {
        tracing::warn!("cannot ask for {} to be unmounted via {}: {e}", stick.name, request.display());
        return false;
    }
    let deadline = Instant::now() + EJECT_WAIT;
    while is_mount_point(&stick.path) {
        if Instant::now() >= deadline {
            tracing::warn!("{} was not unmounted within {} s", stick.name, EJECT_WAIT.as_secs());
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// What a backup is made of: the open store and what names it.
#[derive(Debug, Clone)]
pub struct BackupTarget {
    /// The node's open store (running or not).
    pub store: Store,
    /// The node's seed.
    pub seed: Seed,
    /// The node's config (its secrets are not written).
    pub config: NodeConfig,
    /// The node id (hex).
    pub node_id: String,
    /// Where chunks are sealed.
    pub workers: Workers,
}

impl BackupTarget {
    fn source(&self) -> backup::BackupSource<'_> {
        backup::BackupSource {
            store: &self.store,
            seed: &self.seed,
            config: &self.config,
            node_id: &self.node_id,
            workers: self.workers.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    progress: Option<BackupProgress>,
    running: bool,
    last: Option<LastBackup>,
    target: Option<BackupTarget>,
}

/// Backups for the running appliance, one at a time: the button's on a thread of its own (the
/// display thread only reads their progress), the control socket's on its caller's thread after
/// any running one. The shutdown waits for them.
#[derive(Debug)]
pub struct BackupService {
    settings: BackupSettings,
    eject_request: Option<PathBuf>,
    data_dir: PathBuf,
    state: Mutex<State>,
    idle: Condvar,
}

impl BackupService {
    /// The service for `config`, with the last backup's record from the data dir.
    pub fn new(config: &AppConfig) -> Arc<BackupService> {
        let data_dir = config.node.data_dir.clone();
        let last = LastBackup::load(&data_dir);
        Arc::new(BackupService {
            settings: config.backup.clone(),
            eject_request: config.eject_request(),
            data_dir,
            state: Mutex::new(State { last, ..State::default() }),
            idle: Condvar::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_progress(&self, progress: BackupProgress) {
        self.state().progress = Some(progress);
    }

    /// What backups are made of from now on; none while no store is open.
    pub fn set_target(&self, target: Option<BackupTarget>) {
        self.state().target = target;
    }

    /// Whether there is a store to back up.
    pub fn available(&self) -> bool {
        self.state().target.is_some()
    }

    /// The running or last backup's progress.
    pub fn progress(&self) -> Option<BackupProgress> {
        self.state().progress.clone()
    }

    /// Time since the last verified backup's snapshot.
    pub fn last_backup_age(&self) -> Option<Duration> {
        self.state().last.as_ref().map(|l| Duration::from_secs(unix_now().saturating_sub(l.at)))
    }

    /// Reads the record again (a backup made by the CLI offline writes it too).
    pub fn reload(&self) {
        let last = LastBackup::load(&self.data_dir);
        self.state().last = last;
    }

    /// The alert for an old backup, or for none while the node has channels.
    pub fn alert(&self, has_channels: bool) -> Option<Alert> {
        let limit_days = self.settings.alert_after_days;
        if limit_days == 0 {
            return None;
        }
        match self.last_backup_age() {
            Some(age) if age.as_secs() > limit_days.saturating_mul(86_400) => {
                let days = age.as_secs() / 86_400;
                Some(Alert::Device {
                    headline: format!("backup {days} d old"),
                    detail: format!("the last backup is {days} days old: insert a USB stick and hold B"),
                })
            }
            Some(_) => None,
            None if has_channels => Some(Alert::Device {
                headline: "no backup yet".into(),
                detail: "the node has channels but no backup: insert a USB stick and hold B".into(),
            }),
            None => None,
        }
    }

    /// Records a verified backup.
    fn record(&self, written: &Written) {
        let last = LastBackup::of(written);
        if let Err(e) = last.save(&self.data_dir) {
            tracing::warn!("cannot record the backup in {}: {e}", self.data_dir.display());
        }
        self.state().last = Some(last);
    }

    /// Starts a backup to a stick on a thread of its own, unless one is running.
    pub fn start(self: &Arc<Self>) {
        let target = {
            let mut state = self.state();
            if state.running {
                tracing::info!("a backup is already running");
                return;
            }
            state.running = true;
            state.progress = Some(BackupProgress::Running { percent: 0, stick: None });
            state.target.clone()
        };
        let service = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("backup".into()).spawn(move || {
            let outcome = match target {
                Some(target) => service.to_stick(&target),
                None => Err(StickError::NoStore),
            };
            let progress = match outcome {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!("backup failed: {e}");
                    BackupProgress::Failed { reason: e.to_string() }
                }
            };
            service.finish(Some(progress));
        });
        if let Err(e) = spawned {
            self.finish(Some(BackupProgress::Failed { reason: format!("cannot start the backup: {e}") }));
        }
    }

    fn finish(&self, progress: Option<BackupProgress>) {
        let mut state = self.state();
        if progress.is_some() {
            state.progress = progress;
        }
        state.running = false;
        self.idle.notify_all();
    }

    /// Backs up into `to` now, on this thread, after any backup that runs (the control socket's
    /// `backup`). `seen_as` is the directory's (device, inode) as the caller sees it: a directory
    /// the service sees differently (its private /tmp) is refused, naming `writable`.
    pub fn run_now(
        &self,
        to: &Path,
        keep: usize,
        seen_as: (u64, u64),
        writable: &str,
    ) -> Result<BackupSummary, CommandError> {
        let target = {
            let state = self.state();
            let mut state = self.idle.wait_while(state, |s| s.running).unwrap_or_else(|p| p.into_inner());
            state.running = true;
            state.target.clone()
        };
        let result = (|| {
            let target = target.ok_or(CommandError::NoStore)?;
            let here = std::fs::metadata(to).map(|m| (m.dev(), m.ino())).ok();
            if here != Some(seen_as) {
                return Err(CommandError::NotVisible {
                    to: to.to_path_buf(),
                    writable: writable.to_string(),
                });
            }
            let written = backup::backup_to_dir(&target.source(), to, keep, &mut |_| {})?;
            log_written(&written);
            self.record(&written);
            Ok(BackupSummary::of(&written))
        })();
        self.finish(None);
        result
    }

    /// Waits up to `timeout` for a running backup to end; true if none runs.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let state = self.state();
        let (state, _) =
            self.idle.wait_timeout_while(state, timeout, |s| s.running).unwrap_or_else(|p| p.into_inner());
        !state.running
    }

    fn to_stick(&self, target: &BackupTarget) -> Result<BackupProgress, StickError> {
        let device = self.eject_request.is_some();
        let stick = find_stick(&self.settings.sticks, device)?;
        tracing::info!("backing up to USB stick {} ({})", stick.name, stick.path.display());
        let name = Some(stick.name.clone());
        self.set_progress(BackupProgress::Running { percent: 0, stick: name.clone() });
        let dir = stick.path.join(STICK_DIR);
        let written = backup::backup_to_dir(&target.source(), &dir, self.settings.keep, &mut |percent| {
            // 100% only once the stick is unmounted.
            self.set_progress(BackupProgress::Running { percent: percent.min(99), stick: name.clone() });
        })
        .map_err(|e| classify(e, &stick, device))?;
        log_written(&written);
        self.record(&written);
        // The mirror stick stays in: it is written at every commit.
        let mirror_stick = crate::mirror::Choice::load(&self.data_dir)
            .is_some_and(|c| crate::mirror::carries(&stick.path, &c.id));
        let ejected = match &self.eject_request {
            Some(_) if mirror_stick => false,
            Some(request) => eject(request, &stick),
            None => true,
        };
        Ok(BackupProgress::Succeeded {
            bytes: written.bytes,
            took: written.took,
            stick: stick.name,
            at: utc_clock(written.header.created_at),
            ejected,
            mirror: mirror_stick,
        })
    }
}

fn log_written(written: &Written) {
    tracing::info!(
        "backup {} verified: {} bytes, store commit {}, in {:.1} s",
        written.path.display(),
        written.bytes,
        written.header.commit_counter,
        written.took.as_secs_f64()
    );
    for old in &written.pruned {
        tracing::info!("deleted the older backup {}", old.display());
    }
    if let Some(e) = &written.prune_error {
        tracing::warn!("could not delete an older backup: {e}");
    }
}

/// Why a backup or restore command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The config file is missing or invalid.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The backup, its verification or the restore failed or was refused.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The running service failed the backup.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The data dir has no seed to back up with.
    #[error("no seed in {0}: nothing to back up")]
    NoSeed(PathBuf),
    /// The seed could not be read.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// The runtime for the chunks could not be built.
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// A file or the terminal failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The owner did not confirm the restore.
    #[error("restore not confirmed: nothing was changed")]
    NotConfirmed,
    /// The live mirror cannot be read.
    #[error("the mirror: {0}")]
    Mirror(#[from] boltbox_node::mirror::MirrorError),
    /// The remote mirror cannot be read.
    #[error("the remote mirror: {0}")]
    RemoteMirror(#[from] boltbox_node::mirror::vss::VssMirrorError),
    /// `--vss` without `[mirror.vss]` in the config (or with settings that cannot be used).
    #[error("the remote mirror: {0}")]
    VssSettings(String),
    /// The service (or another boltbox command) works on the data dir: a restore or an
    /// offline backup must not run beside it.
    #[error(
        "boltbox is running on {}: stop it first (systemctl stop boltbox), or restore from a USB stick with the buttons",
        .0.display()
    )]
    ServiceRunning(PathBuf),
    /// The service has no node state to back up (its store is missing or damaged).
    #[error("the service has no node state to back up yet")]
    NoStore,
    /// The directory is not the same for the service (systemd gives it a private /tmp).
    #[error(
        "{to} is not the same directory for the boltbox service (it has a private /tmp and a read-only system): back up to {writable}"
    )]
    NotVisible {
        /// The directory asked for.
        to: PathBuf,
        /// Where the service can write.
        writable: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CommandError {
    let what = what.into();
    move |source| CommandError::Io { what, source }
}

/// A runtime for sealing and opening chunks in a CLI process, sized like the service's.
fn cli_runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    Ok(RuntimePlan::derive(BoardFacts::detect()?)?.build()?)
}

/// What `boltbox backup --to` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The verified backup file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The store's commit counter in it.
    pub commit_counter: u64,
    /// Snapshot to verified file, in milliseconds.
    pub took_ms: u64,
    /// Older backups deleted to keep the newest N.
    pub pruned: Vec<PathBuf>,
}

impl BackupSummary {
    /// The summary of `written`.
    pub fn of(written: &Written) -> BackupSummary {
        BackupSummary {
            path: written.path.clone(),
            bytes: written.bytes,
            commit_counter: written.header.commit_counter,
            took_ms: u64::try_from(written.took.as_millis()).unwrap_or(u64::MAX),
            pruned: written.pruned.clone(),
        }
    }
}

/// Takes the data dir's lock for a command that works on it without the service (the data dir
/// is created first when missing).
fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, CommandError> {
    boltbox_node::files::create_private_dir(data_dir).map_err(io("creating the data dir"))?;
    DataDirLock::try_acquire(data_dir).map_err(|e| match e {
        LockError::Held { data_dir } => CommandError::ServiceRunning(data_dir),
        LockError::Io(source) => CommandError::Io { what: "locking the data dir".into(), source },
    })
}

/// Backs up a stopped node by opening its store directly.
pub fn backup_offline(config: &AppConfig, to: &Path, keep: usize) -> Result<BackupSummary, CommandError> {
    let node = &config.node;
    let seed = Seed::load(&node.data_dir)?.ok_or_else(|| CommandError::NoSeed(node.data_dir.clone()))?;
    let _lock = lock_data_dir(&node.data_dir)?;
    let path = node.data_dir.join(STORE_FILE);
    let store = Store::open_existing(&path).map_err(|e| match e {
        StoreError::InUse { path } => {
            BackupError::StoreInUse { path, reason: "another process has it open".into() }
        }
        other => BackupError::Store(other),
    })?;
    let runtime = cli_runtime()?;
    let node_id = seed.node_id(node.network)?;
    let source = backup::BackupSource {
        store: &store,
        seed: &seed,
        config: node,
        node_id: &node_id,
        workers: Workers(runtime.handle().clone()),
    };
    let written = backup::backup_to_dir(&source, to, keep, &mut |_| {});
    store.close();
    runtime.shutdown_timeout(Duration::from_secs(5));
    let written = written?;
    log_written(&written);
    if let Err(e) = LastBackup::of(&written).save(&node.data_dir) {
        tracing::warn!("cannot record the backup: {e}");
    }
    Ok(BackupSummary::of(&written))
}

/// What `boltbox restore` restores from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// A backup file.
    Backup(PathBuf),
    /// The directory a live mirror was written into (its files in `<dir>/boltbox-mirror/`).
    Mirror(PathBuf),
    /// The remote mirror on VSS that `[mirror.vss]` names.
    Vss,
}

/// How `boltbox restore` gets the seed and the confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// What to restore from.
    pub source: RestoreSource,
    /// A file with the 24 words (0600); none: ask on the terminal.
    pub seed_file: Option<PathBuf>,
    /// Confirmed on the command line.
    pub yes: bool,
}

/// What the operator types to confirm a restore.
pub const CONFIRM_WORD: &str = "restore";

/// The restore's story before anything is done: what the backup is, how old, and the warning.
fn describe(header: &BackupHeader, data_dir: &Path, current: &DataDirStore) -> String {
    let age = Duration::from_secs(unix_now().saturating_sub(header.created_at));
    let state = match current {
        DataDirStore::None => "empty (no store)".to_string(),
        DataDirStore::Damaged { reason } => format!("holds a damaged store ({reason}); it is set aside"),
        DataDirStore::Sound { empty: true, .. } => "holds an empty store; it is set aside".to_string(),
        DataDirStore::Sound { commit_counter, identity, .. } => format!(
            "holds a store at commit {commit_counter} of lineage {}; an older one is set aside",
            identity.lineage_id
        ),
    };
    format!(
        "backup of node {} on {}\n  made {} ({} ago) by boltbox {}\n  store commit counter {} of lineage {}\n\
         data dir {}: {state}\n\n\
         WARNING: this node's channels go back to their state at the time of the backup. Any\n\
         channel that changed since (a payment, a forward, a fee update) is out of date: its peer\n\
         will see an old state and force-close it; funds then return on-chain after a delay.\n\
         Restore only if this backup is the newest state of the node that exists.\n",
        header.node_id,
        header.network,
        utc_time(header.created_at),
        crate::screens::short_duration(age),
        header.boltbox_version,
        header.commit_counter,
        header.lineage_id.as_deref().unwrap_or("(none: an older backup)"),
        data_dir.display(),
    )
}

/// Reads the seed from `path`, which must be 0600 (or stricter).
fn seed_from_file(path: &Path) -> Result<Seed, CommandError> {
    let meta = std::fs::metadata(path).map_err(io(format!("seed file {}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SeedError::Permissions(path.to_path_buf(), mode).into());
    }
    let words = boltbox_node::files::read_untrusted(path, 4096).map_err(|e| CommandError::Io {
        what: format!("seed file {}", path.display()),
        source: std::io::Error::other(e.to_string()),
    })?;
    let words =
        String::from_utf8(words).map_err(|_| SeedError::Invalid("the seed file is not text".into()))?;
    Ok(Seed::from_words(&words)?)
}

/// Reads one line from `input`, without echo when stdin is a terminal.
fn read_secret_line(input: &mut dyn BufRead) -> Result<String, CommandError> {
    use rustix::termios::{LocalModes, OptionalActions, isatty, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = if isatty(&stdin) { tcgetattr(&stdin).ok() } else { None };
    if let Some(mode) = &saved {
        let mut quiet = mode.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        let _ = tcsetattr(&stdin, OptionalActions::Now, &quiet);
    }
    let mut line = String::new();
    let read = input.read_line(&mut line);
    if let Some(mode) = &saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, mode);
        eprintln!();
    }
    read.map_err(io("reading the seed words"))?;
    Ok(line)
}

/// `boltbox restore`: shows the backup and the stale guard's facts, refuses a data dir that is
/// not older, reads the seed, decrypts and checks the whole backup, warns, asks for
/// confirmation, and restores. Messages go to `out`; answers come from `input`.
pub fn restore(
    config: &AppConfig,
    options: &RestoreOptions,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<RestoreReport, CommandError> {
    let node = &config.node;
    // A backup's plain header is shown and judged before the seed is asked for; a mirror is
    // read only with the seed.
    enum Read<'a> {
        Backup { file: Vec<u8>, header: Box<BackupHeader> },
        Mirror(&'a Path),
        Vss(&'a crate::config::VssSettings),
    }
    let source = match &options.source {
        RestoreSource::Backup(path) => {
            let file =
                boltbox_node::files::read_untrusted(path, backup::MAX_BACKUP_BYTES).map_err(|e| match e {
                    boltbox_node::files::UntrustedError::Io(source) => {
                        CommandError::Io { what: "reading the backup".into(), source }
                    }
                    other => CommandError::Io {
                        what: "reading the backup".into(),
                        source: std::io::Error::other(other.to_string()),
                    },
                })?;
            let (header, _) = backup::read_header(&file)?;
            Read::Backup { file, header: Box::new(header) }
        }
        RestoreSource::Mirror(dir) => {
            // Said before the seed words are asked for.
            if !dir.join(boltbox_node::mirror::MIRROR_DIR).is_dir() {
                return Err(boltbox_node::mirror::MirrorError::Nothing(dir.clone()).into());
            }
            Read::Mirror(dir)
        }
        RestoreSource::Vss => match &config.mirror.vss {
            Some(settings) => Read::Vss(settings),
            None => return Err(CommandError::VssSettings("the config has no [mirror.vss] url".into())),
        },
    };
    let _lock = lock_data_dir(&node.data_dir)?;
    backup::recover_restore(&node.data_dir).map_err(io("settling an interrupted restore"))?;
    let current = backup::data_dir_store(&node.data_dir)?;
    let say = |out: &mut dyn Write, text: &str| out.write_all(text.as_bytes()).map_err(io("writing"));
    if let Read::Backup { header, .. } = &source {
        say(out, &describe(header, &node.data_dir, &current))?;
        backup::check_stale(header, &current)?;
        if header.network != node.network {
            return Err(BackupError::NetworkMismatch { backup: header.network, config: node.network }.into());
        }
    }
    let seed = match &options.seed_file {
        Some(path) => seed_from_file(path)?,
        None => {
            say(out, "Seed words (24, separated by spaces): ")?;
            out.flush().map_err(io("writing"))?;
            Seed::from_words(&read_secret_line(input)?)?
        }
    };
    let runtime = cli_runtime()?;
    let workers = Workers(runtime.handle().clone());
    let mut vss_takeover = None;
    let mirror_dir = match &source {
        Read::Mirror(dir) => Some(dir.to_path_buf()),
        Read::Backup { .. } | Read::Vss(_) => None,
    };
    let contents = match source {
        Read::Backup { file, .. } => {
            backup::open_backup(Arc::new(file), &seed, &workers, &mut |_| {}).map_err(CommandError::from)
        }
        Read::Mirror(dir) => {
            read_mirror(dir, &seed, node.network, &workers).map_err(CommandError::from).and_then(|read| {
                say(out, &describe(&read.contents.header, &node.data_dir, &current))?;
                say(
                    out,
                    &format!(
                        "  from the live mirror in {}: a snapshot at commit {} and {} commits after it{}\n",
                        dir.display(),
                        read.snapshot_counter,
                        read.frames,
                        if read.torn_bytes > 0 { " (and a torn last write, never acknowledged)" } else { "" }
                    ),
                )?;
                backup::check_stale(&read.contents.header, &current)?;
                Ok(read.contents)
            })
        }
        Read::Vss(settings) => settings
            .setup(&seed, node, workers.clone())
            .map_err(CommandError::VssSettings)
            .and_then(|setup| {
                let VssContents { mirror: read, takeover } = read_vss(&setup, node.network, &workers)?;
                vss_takeover = Some(takeover);
                say(out, &describe(&read.contents.header, &node.data_dir, &current))?;
                say(
                    out,
                    &format!(
                        "  from the remote mirror at {}: a snapshot at commit {} and {} commits after it\n",
                        setup.url, read.snapshot_counter, read.frames
                    ),
                )?;
                backup::check_stale(&read.contents.header, &current)?;
                Ok(read.contents)
            }),
    };
    runtime.shutdown_timeout(Duration::from_secs(5));
    let contents = contents?;
    let header = contents.header.clone();
    say(out, &format!("The backup decrypts and checks out: {} entries.\n", contents.snapshot.entries.len()))?;
    if !options.yes {
        say(out, &format!("Type \"{CONFIRM_WORD}\" to restore: "))?;
        out.flush().map_err(io("writing"))?;
        let mut answer = String::new();
        input.read_line(&mut answer).map_err(io("reading the confirmation"))?;
        if answer.trim() != CONFIRM_WORD {
            return Err(CommandError::NotConfirmed);
        }
    }
    let report = backup::restore_backup(&node.data_dir, node.network, &contents, &seed)?;
    // Restored from VSS: this card may take over writing the node's state there.
    if let Some(takeover) = &vss_takeover {
        boltbox_node::mirror::vss::record_takeover(&node.data_dir, takeover)
            .map_err(io("recording the takeover"))?;
    }
    // The stick restored from stays the mirror, if it was the chosen one.
    if let Some(dir) = &mirror_dir
        && crate::mirror::adopt(&node.data_dir, dir).is_some()
    {
        say(out, &format!("The mirror goes on on {} once boltbox runs.\n", dir.display()))?;
    }
    say(
        out,
        &format!(
            "Restored node {} into {} at commit {}.\nThe backup's config (secrets removed) is in {}.\n{}",
            header.node_id,
            node.data_dir.display(),
            report.commit_counter,
            report.config_copy.display(),
            report
                .kept_older_store
                .as_ref()
                .map(|p| format!("The store that was there is kept as {}.\n", p.display()))
                .unwrap_or_default(),
        ),
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_sticks_one_stick_or_several_pick_the_first_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sticks = dir.path().join("usb");
        assert!(matches!(find_stick(&sticks, false), Err(StickError::NoStick)), "no sticks dir");
        std::fs::create_dir(&sticks).expect("mkdir");
        assert!(matches!(find_stick(&sticks, false), Err(StickError::NoStick)));
        std::fs::write(sticks.join("a-file"), b"").expect("file");
        assert!(matches!(find_stick(&sticks, false), Err(StickError::NoStick)), "files are not sticks");
        std::fs::create_dir(sticks.join("sdb1")).expect("mkdir");
        std::fs::create_dir(sticks.join("sda1")).expect("mkdir");
        assert_eq!(find_stick(&sticks, false).expect("stick").name, "sda1");
        // On the device plain directories are not mounted sticks.
        assert!(matches!(find_stick(&sticks, true), Err(StickError::NoStick)));
    }

    #[test]
    fn failures_are_named_for_the_owner() {
        let stick = Stick { name: "sda1".into(), path: PathBuf::from("/nonexistent/sda1") };
        let io_error =
            |kind: std::io::ErrorKind| BackupError::Io { what: "writing".into(), source: kind.into() };
        let cases = [
            (io_error(std::io::ErrorKind::StorageFull), "USB stick sda1 is full: free space or use another"),
            (
                io_error(std::io::ErrorKind::ReadOnlyFilesystem),
                "USB stick sda1 is read-only: unlock it or use another",
            ),
            (io_error(std::io::ErrorKind::NotFound), "USB stick sda1 was removed during the backup: retry"),
        ];
        for (error, message) in cases {
            let e = classify(error, &stick, false);
            assert_eq!(e.to_string(), message);
            assert!(message.len() <= 63, "fits three OLED lines: {message}");
        }
        assert!(StickError::NoStick.to_string().len() <= 63);
        let verify = classify(BackupError::Verify("the header differs".into()), &stick, false);
        assert!(matches!(verify, StickError::Backup(_)), "{verify}");
    }

    #[test]
    fn the_last_backup_is_recorded_and_raises_an_alert_when_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[node]\nnetwork = \"regtest\"\ndata_dir = \"{}\"\n[node.chain]\nsource = \"bitcoind\"\n\
             rpc_user = \"u\"\nrpc_password = \"p\"\n[backup]\nalert_after_days = 7\n",
            dir.path().display()
        );
        let config = AppConfig::parse(&text).expect("config");
        let service = BackupService::new(&config);
        assert_eq!(service.last_backup_age(), None);
        let alert = service.alert(true).expect("channels and no backup");
        assert_eq!(alert.headline(), "no backup yet");
        assert_eq!(service.alert(false), None, "nothing to lose yet");

        let old =
            LastBackup { at: unix_now() - 8 * 86_400, file: "x.bbk".into(), bytes: 1, commit_counter: 3 };
        old.save(dir.path()).expect("save");
        let mode = std::fs::metadata(dir.path().join(LAST_BACKUP_FILE)).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let service = BackupService::new(&config);
        assert_eq!(service.alert(false).expect("old").headline(), "backup 8 d old");
        let fresh = LastBackup { at: unix_now() - 3600, ..old };
        fresh.save(dir.path()).expect("save");
        service.reload();
        assert_eq!(service.alert(true), None);
        assert!(service.last_backup_age().is_some_and(|a| a >= Duration::from_secs(3600)));
    }

    #[test]
    fn a_seed_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("words");
        std::fs::write(&path, "abandon ".repeat(23) + "art").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = seed_from_file(&path).expect_err("0644");
        assert!(e.to_string().contains("0600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        seed_from_file(&path).expect("0600 is fine");
    }
}

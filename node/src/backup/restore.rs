//! Restoring a decrypted backup onto a data dir: the seed and a store holding every entry with
//! the backup's commit counter and lineage.
//!
//! Refused when the data dir's store is of the same lineage and at least as new as the backup,
//! of another lineage (counters of two lineages say nothing about which is newer), another
//! node's, or in use; when the data dir holds another seed; when seed, node and network
//! disagree. A damaged or older store is set aside, never deleted.
//!
//! Atomic: everything is first written into `restore.staging/` in the data dir and synced; a
//! `COMMITTED` marker, synced, is the point of no return; then the files are moved into place.
//! [`recover_restore`], run before anything else looks at the data dir, finishes a restore
//! interrupted after the marker and undoes one interrupted before it: a power cut, a SIGKILL or a
//! full disk at any step leaves either the state before or the restored one.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::BackupError;
use super::file::{BackupContents, BackupHeader};
use crate::config::Network;
use crate::datadir::{STORE_FILE, set_aside};
use crate::files::{self, with_path};
use crate::seed::{SEED_FILE, Seed};
use crate::store::{Store, StoreError, StoreIdentity};

/// The backup's config (secrets removed) is written here in the data dir, for the operator.
pub const RESTORED_CONFIG_FILE: &str = "restored-config.toml";
/// Where a restore is prepared, in the data dir.
pub const STAGING_DIR: &str = "restore.staging";
/// In the staging dir: the restore is committed and must be finished.
const COMMITTED: &str = "COMMITTED";

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The restored store file.
    pub store: PathBuf,
    /// The commit counter the restored store starts at (the backup's).
    pub commit_counter: u64,
    /// Entries written.
    pub entries: usize,
    /// Where a store found in the data dir (older, or damaged) was moved to.
    pub kept_older_store: Option<PathBuf>,
    /// The backup's config, for reference.
    pub config_copy: PathBuf,
}

/// What [`recover_restore`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveredRestore {
    /// A restore was interrupted after its point of no return and has been finished now.
    Finished,
    /// A restore was interrupted before it and has been undone: the data dir is as before it.
    Undone,
}

impl std::fmt::Display for RecoveredRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecoveredRestore::Finished => {
                "an interrupted restore was finished: the node runs on the restored state"
            }
            RecoveredRestore::Undone => {
                "an interrupted restore was undone: the node runs on the state from before it"
            }
        })
    }
}

/// The store in a data dir, as the stale guard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirStore {
    /// No store file.
    None,
    /// A store: its lineage, commit counter, and whether it holds any LDK data.
    Sound {
        /// Lineage and node.
        identity: StoreIdentity,
        /// Commit counter.
        commit_counter: u64,
        /// No LDK data at all.
        empty: bool,
    },
    /// A store that fails the integrity check.
    Damaged {
        /// Why.
        reason: String,
    },
}

/// The store of `data_dir`, as the stale guard sees it. Fails when the store is in use (a
/// running node holds it) or cannot be read.
pub fn data_dir_store(data_dir: &Path) -> Result<DataDirStore, BackupError> {
    let path = data_dir.join(STORE_FILE);
    let store = match Store::open_existing(&path) {
        Ok(store) => store,
        Err(StoreError::Missing { .. }) => return Ok(DataDirStore::None),
        Err(StoreError::Damaged { reason, .. }) => return Ok(DataDirStore::Damaged { reason }),
        Err(StoreError::InUse { path }) => {
            return Err(BackupError::StoreInUse { path, reason: "another process has it open".into() });
        }
        Err(other) => return Err(BackupError::Store(other)),
    };
    let found = (|| {
        Ok::<_, StoreError>(DataDirStore::Sound {
            identity: store.identity()?,
            commit_counter: store.commit_counter()?,
            empty: store.is_empty()?,
        })
    })();
    store.close();
    Ok(found?)
}

/// The stale guard: may the backup with `header` replace `current`? Counters are compared only
/// within one lineage; a store of another node or lineage is never replaced.
pub fn check_stale(header: &BackupHeader, current: &DataDirStore) -> Result<(), BackupError> {
    let DataDirStore::Sound { identity, commit_counter, empty } = current else { return Ok(()) };
    if let Some(node) = identity.node_id.as_deref().filter(|n| *n != header.node_id) {
        return Err(BackupError::NodeMismatch { backup: header.node_id.clone(), derived: node.to_string() });
    }
    if *empty && identity.node_id.is_none() {
        // Nothing to lose and nothing to compare with.
        return Ok(());
    }
    match header.lineage_id.as_deref() {
        Some(lineage) if lineage == identity.lineage_id => {
            if *commit_counter >= header.commit_counter {
                return Err(BackupError::NotOlder {
                    backup: header.commit_counter,
                    data_dir: *commit_counter,
                });
            }
            Ok(())
        }
        backup_lineage => Err(BackupError::OtherLineage {
            backup: backup_lineage.unwrap_or("none (a backup of an older boltbox)").to_string(),
            data_dir: identity.lineage_id.clone(),
        }),
    }
}

/// A step of a restore, in order; a test can stop a restore after any of them, as a power cut
/// would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The staging dir exists, empty.
    Staged,
    /// The seed is in the staging dir.
    SeedStaged,
    /// The store is in the staging dir.
    StoreStaged,
    /// The config copy is in the staging dir, everything synced.
    ConfigStaged,
    /// The marker is durable: the point of no return.
    Committed,
    /// A store that was in the data dir is set aside.
    OldStoreAside,
    /// The restored store is in place.
    StoreInPlace,
    /// The seed is in place.
    SeedInPlace,
}

/// Restores `contents` onto `data_dir` for a node on `network` with `seed`. See the module
/// documentation for what is refused and how it is made atomic.
pub fn restore_backup(
    data_dir: &Path,
    network: Network,
    contents: &BackupContents,
    seed: &Seed,
) -> Result<RestoreReport, BackupError> {
    restore_backup_until(data_dir, network, contents, seed, &mut |_| true)?
        .ok_or_else(|| BackupError::Payload("the restore stopped before it was done".into()))
}

/// [`restore_backup`], asking `go_on` after each [`Step`]; `Ok(None)` when it said no (the data
/// dir is left as a power cut at that point would leave it).
pub(crate) fn restore_backup_until(
    data_dir: &Path,
    network: Network,
    contents: &BackupContents,
    seed: &Seed,
    go_on: &mut dyn FnMut(Step) -> bool,
) -> Result<Option<RestoreReport>, BackupError> {
    let header = &contents.header;
    if header.network != network {
        return Err(BackupError::NetworkMismatch { backup: header.network, config: network });
    }
    let derived = seed.node_id(network)?;
    if derived != header.node_id {
        return Err(BackupError::NodeMismatch { backup: header.node_id.clone(), derived });
    }
    let seed_there = match Seed::load(data_dir)? {
        Some(existing) if existing.to_seed_bytes() != seed.to_seed_bytes() => {
            return Err(crate::seed::SeedError::Exists(data_dir.join(SEED_FILE)).into());
        }
        existing => existing.is_some(),
    };
    // A restore interrupted earlier is settled first: its store is what the guard must see.
    if data_dir.is_dir() {
        recover_restore(data_dir)
            .map_err(BackupError::io(format!("settling an earlier restore in {}", data_dir.display())))?;
    }
    let current = data_dir_store(data_dir)?;
    check_stale(header, &current)?;
    if let DataDirStore::Damaged { reason } = &current {
        tracing::warn!("the data dir's store is damaged ({reason}); the restore sets it aside");
    }

    files::create_private_dir(data_dir)
        .map_err(BackupError::io(format!("creating {}", data_dir.display())))?;
    let staging = data_dir.join(STAGING_DIR);
    remove_staging(&staging)?;
    let staged = stage(&staging, contents, seed, seed_there, go_on);
    match staged {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => {
            // Before the marker nothing in the data dir was touched: undo is removing the staging.
            if let Err(cleanup) = remove_staging(&staging) {
                tracing::warn!("cannot remove {} after a failed restore: {cleanup}", staging.display());
            }
            return Err(e);
        }
    }
    let Some(kept_older_store) = finish(data_dir, go_on)? else { return Ok(None) };
    // The node's state was chosen anew: a refusal by the remote mirror no longer applies.
    match std::fs::remove_file(data_dir.join(crate::mirror::vss::REFUSED_FILE)) {
        Ok(()) => tracing::info!("the remote mirror's refusal is lifted by the restore"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove the remote mirror's refusal mark: {e}"),
    }
    Ok(Some(RestoreReport {
        store: data_dir.join(STORE_FILE),
        commit_counter: header.commit_counter,
        entries: contents.snapshot.entries.len(),
        kept_older_store,
        config_copy: data_dir.join(RESTORED_CONFIG_FILE),
    }))
}

/// Writes everything into `staging` and commits; false when `go_on` stopped it.
fn stage(
    staging: &Path,
    contents: &BackupContents,
    seed: &Seed,
    seed_there: bool,
    go_on: &mut dyn FnMut(Step) -> bool,
) -> Result<bool, BackupError> {
    let header = &contents.header;
    files::create_private_dir(staging).map_err(BackupError::io(format!("creating {}", staging.display())))?;
    if !go_on(Step::Staged) {
        return Ok(false);
    }
    if !seed_there {
        seed.store(staging)?;
    }
    if !go_on(Step::SeedStaged) {
        return Ok(false);
    }
    let identity = StoreIdentity {
        // A v1 backup has no lineage: the restored store begins one, recording where it came from.
        lineage_id: match &header.lineage_id {
            Some(lineage) => lineage.clone(),
            None => new_lineage()?,
        },
        node_id: Some(header.node_id.clone()),
    };
    Store::create_from_snapshot(&staging.join(STORE_FILE), &contents.snapshot, &identity)?;
    if !go_on(Step::StoreStaged) {
        return Ok(false);
    }
    let text = toml::to_string(&contents.config).map_err(|e| BackupError::Payload(format!("config: {e}")))?;
    let config_copy = staging.join(RESTORED_CONFIG_FILE);
    let mut file = files::create_new(&config_copy, files::PRIVATE_FILE)
        .map_err(BackupError::io("writing the config copy"))?;
    writeln!(
        file,
        "# The config of node {} as backed up (commit {}), secrets removed.\n{text}",
        header.node_id, header.commit_counter
    )
    .and_then(|()| file.sync_all())
    .map_err(BackupError::io(format!("writing {}", config_copy.display())))?;
    files::sync_dir(staging).map_err(BackupError::io("syncing the staging dir"))?;
    if !go_on(Step::ConfigStaged) {
        return Ok(false);
    }
    let marker = files::create_new(&staging.join(COMMITTED), files::PRIVATE_FILE)
        .map_err(BackupError::io("committing the restore"))?;
    marker.sync_all().map_err(BackupError::io("committing the restore"))?;
    files::sync_dir(staging).map_err(BackupError::io("committing the restore"))?;
    Ok(go_on(Step::Committed))
}

fn new_lineage() -> Result<String, BackupError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| BackupError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Moves a committed restore's files into place. Every step can be run again after an
/// interruption. Returns where a store that was there went, or none if `go_on` stopped it.
fn finish(
    data_dir: &Path,
    go_on: &mut dyn FnMut(Step) -> bool,
) -> Result<Option<Option<PathBuf>>, BackupError> {
    let staging = data_dir.join(STAGING_DIR);
    let io = |what: &str| BackupError::io(format!("finishing the restore: {what}"));
    let staged_store = staging.join(STORE_FILE);
    let mut aside = None;
    if staged_store.exists() {
        // The restored store is not in place yet, so a store in the data dir is the old one.
        aside = set_aside(data_dir, "before-restore").map_err(io("setting the old store aside"))?;
        if !go_on(Step::OldStoreAside) {
            return Ok(None);
        }
        std::fs::rename(&staged_store, data_dir.join(STORE_FILE)).map_err(io("moving the store in"))?;
        files::sync_dir(data_dir).map_err(io("syncing"))?;
    }
    if !go_on(Step::StoreInPlace) {
        return Ok(None);
    }
    let staged_seed = staging.join(SEED_FILE);
    if staged_seed.exists() {
        if data_dir.join(SEED_FILE).exists() {
            // Only the same seed gets this far (checked before staging); the staged copy goes.
            std::fs::remove_file(&staged_seed).map_err(io("removing the staged seed"))?;
        } else {
            std::fs::rename(&staged_seed, data_dir.join(SEED_FILE)).map_err(io("moving the seed in"))?;
        }
        files::sync_dir(data_dir).map_err(io("syncing"))?;
    }
    if !go_on(Step::SeedInPlace) {
        return Ok(None);
    }
    let staged_config = staging.join(RESTORED_CONFIG_FILE);
    if staged_config.exists() {
        std::fs::rename(&staged_config, data_dir.join(RESTORED_CONFIG_FILE))
            .map_err(io("moving the config copy in"))?;
    }
    remove_staging(&staging)?;
    files::sync_dir(data_dir).map_err(io("syncing"))?;
    Ok(Some(aside))
}

/// Removes the staging dir and what is in it (files only: it never holds directories).
fn remove_staging(staging: &Path) -> Result<(), BackupError> {
    let entries = match std::fs::read_dir(staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BackupError::Io { what: format!("listing {}", staging.display()), source: e }),
    };
    // The marker goes first, so that a removal cut short is never taken for a committed restore.
    match std::fs::remove_file(staging.join(COMMITTED)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(BackupError::Io {
                what: format!("removing the marker in {}", staging.display()),
                source: e,
            });
        }
        _ => {}
    }
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        std::fs::remove_file(&path)
            .map_err(|e| BackupError::Io { what: format!("removing {}", path.display()), source: e })?;
    }
    std::fs::remove_dir(staging)
        .map_err(|e| BackupError::Io { what: format!("removing {}", staging.display()), source: e })?;
    if let Some(parent) = staging.parent() {
        files::sync_dir(parent).map_err(|e| BackupError::Io { what: "syncing".into(), source: e })?;
    }
    Ok(())
}

/// Settles a restore that was interrupted in `data_dir`: finishes a committed one, undoes one
/// that was not. Returns what it did, or none if there was nothing to settle.
pub fn recover_restore(data_dir: &Path) -> Result<Option<RecoveredRestore>, std::io::Error> {
    let staging = data_dir.join(STAGING_DIR);
    if std::fs::symlink_metadata(&staging).is_err() {
        return Ok(None);
    }
    let as_io = |e: BackupError| with_path("settling", &staging)(std::io::Error::other(e.to_string()));
    let done = if staging.join(COMMITTED).exists() {
        finish(data_dir, &mut |_| true).map_err(as_io)?;
        RecoveredRestore::Finished
    } else {
        remove_staging(&staging).map_err(as_io)?;
        RecoveredRestore::Undone
    };
    tracing::warn!("{done}");
    Ok(Some(done))
}

//! Restoring a decrypted backup onto a data dir: the seed and a store holding every entry with
//! the backup's commit counter. Refused when the data dir's store is at least as new as the
//! backup, when the data dir holds another seed, or when seed, node and network disagree. An
//! older store in the data dir is kept beside the restored one, never deleted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::BackupError;
use super::file::BackupContents;
use crate::config::Network;
use crate::node::STORE_FILE;
use crate::seed::Seed;
use crate::store::{Store, StoreError};

/// The backup's config (secrets removed) is written here in the data dir, for the operator.
pub const RESTORED_CONFIG_FILE: &str = "restored-config.toml";

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The restored store file.
    pub store: PathBuf,
    /// The commit counter the restored store starts at (the backup's).
    pub commit_counter: u64,
    /// Entries written.
    pub entries: usize,
    /// Where an older store found in the data dir was moved to.
    pub kept_older_store: Option<PathBuf>,
    /// The backup's config, for reference.
    pub config_copy: PathBuf,
}

/// The commit counter of the store in `data_dir`, or none when there is no store or it has
/// never committed. Fails when the store is in use (a running node holds its lock).
pub fn store_counter(data_dir: &Path) -> Result<Option<u64>, BackupError> {
    let path = data_dir.join(STORE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let store = Store::open(&path).map_err(|e| match e {
        StoreError::Open { path, source } => BackupError::StoreInUse { path, reason: source.to_string() },
        other => BackupError::Store(other),
    })?;
    let counter = store.commit_counter();
    store.close();
    Ok(Some(counter?).filter(|c| *c > 0))
}

/// Restores `contents` onto `data_dir` for a node on `network` with `seed`. See the module
/// documentation for what is refused.
pub fn restore_backup(
    data_dir: &Path,
    network: Network,
    contents: &BackupContents,
    seed: &Seed,
) -> Result<RestoreReport, BackupError> {
    let header = &contents.header;
    if header.network != network {
        return Err(BackupError::NetworkMismatch { backup: header.network, config: network });
    }
    let derived = seed.node_id(network)?;
    if derived != header.node_id {
        return Err(BackupError::NodeMismatch { backup: header.node_id.clone(), derived });
    }
    if let Some(existing) = Seed::load(data_dir)? {
        if existing.to_seed_bytes() != seed.to_seed_bytes() {
            return Err(crate::seed::SeedError::Exists(data_dir.join(crate::seed::SEED_FILE)).into());
        }
    }
    let current = store_counter(data_dir)?;
    if let Some(counter) = current.filter(|c| *c >= header.commit_counter) {
        return Err(BackupError::NotOlder { backup: header.commit_counter, data_dir: counter });
    }

    std::fs::create_dir_all(data_dir).map_err(BackupError::io(format!("creating {}", data_dir.display())))?;
    // The seed first: it is the same as any seed already there (checked above), and a restore
    // interrupted after it can simply be run again.
    seed.store(data_dir)?;
    let store_path = data_dir.join(STORE_FILE);
    let staging = data_dir.join(format!("{STORE_FILE}.restoring"));
    match std::fs::remove_file(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BackupError::io(format!("removing {}", staging.display()))(e)),
    }
    Store::create_from_snapshot(&staging, &contents.snapshot)?;
    // An older store is kept aside; a store file that never committed holds nothing and is
    // simply replaced.
    let kept_older_store = match current {
        Some(_) => {
            let now = crate::unix_now();
            let aside = data_dir.join(format!("{STORE_FILE}.before-restore-{now}"));
            std::fs::rename(&store_path, &aside)
                .map_err(BackupError::io(format!("moving the older store to {}", aside.display())))?;
            Some(aside)
        }
        None => None,
    };
    std::fs::rename(&staging, &store_path).map_err(BackupError::io(format!(
        "renaming {} to {}",
        staging.display(),
        store_path.display()
    )))?;
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(BackupError::io(format!("syncing {}", data_dir.display())))?;

    let config_copy = data_dir.join(RESTORED_CONFIG_FILE);
    let text = toml::to_string(&contents.config).map_err(|e| BackupError::Payload(format!("config: {e}")))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&config_copy)
        .map_err(BackupError::io(format!("writing {}", config_copy.display())))?;
    writeln!(
        file,
        "# The config of node {} as backed up (commit {}), secrets removed.\n{text}",
        header.node_id, header.commit_counter
    )
    .and_then(|()| file.sync_all())
    .map_err(BackupError::io(format!("writing {}", config_copy.display())))?;

    Ok(RestoreReport {
        store: store_path,
        commit_counter: header.commit_counter,
        entries: contents.snapshot.entries.len(),
        kept_older_store,
        config_copy,
    })
}

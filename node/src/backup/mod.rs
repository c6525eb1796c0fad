//! Backups of the node: an encrypted, versioned file holding one committed state of the whole
//! store and the config without secrets ([`file`], docs/BACKUP.md); written into a directory
//! with every safety a USB stick needs ([`dir`]); restored onto a data dir with a guard against
//! going back to an older state unawares ([`restore`]).
//!
//! The key comes from the seed, which is never in the file: the file alone is useless, and
//! seed + file bring the node back.

pub mod dir;
pub mod file;
pub mod restore;

use std::path::PathBuf;

pub use dir::{BackupSource, Written, backup_to_dir, backups_in, file_name};
pub use file::{
    BackupContents, BackupHeader, BackupInput, MAX_BACKUP_BYTES, Workers, open_backup, read_header,
    read_header_of, read_header_prefix, sort_by_state, write_backup,
};
pub use restore::{
    DataDirStore, RecoveredRestore, RestoreReport, STAGING_DIR, check_stale, data_dir_store, recover_restore,
    restore_backup,
};

use crate::config::Network;
use crate::seed::SeedError;
use crate::store::StoreError;

/// What can go wrong making, reading or restoring a backup. Each refusal says why in words an
/// operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file does not start with the backup magic.
    #[error("not a boltbox backup file (wrong magic bytes)")]
    NotABackup,
    /// The file is of a format version this boltbox does not read.
    #[error("backup format version {found} is not supported (this boltbox reads version {supported})")]
    UnsupportedVersion {
        /// The file's version.
        found: u16,
        /// The version this code reads.
        supported: u16,
    },
    /// The plain header cannot be read.
    #[error("the backup's header is damaged: {0}")]
    BadHeader(String),
    /// The file is shorter than its header says.
    #[error("the backup is truncated: {found} of {expected} bytes")]
    Truncated {
        /// Bytes the header says the file has.
        expected: u64,
        /// Bytes it has.
        found: u64,
    },
    /// The file is longer than its header says.
    #[error("the backup has extra bytes: {found} instead of {expected}")]
    TrailingData {
        /// Bytes the header says the file has.
        expected: u64,
        /// Bytes it has.
        found: u64,
    },
    /// The seed's key does not match the file's key check.
    #[error("wrong seed: this backup was made with a different seed")]
    WrongSeed,
    /// A chunk failed authentication: the file was altered or damaged.
    #[error("the backup was altered or is damaged: chunk {chunk} of {chunks} fails authentication")]
    Tampered {
        /// The first chunk that failed (0-based).
        chunk: u64,
        /// Chunks in the file.
        chunks: u64,
    },
    /// The authenticated contents are not in the expected layout.
    #[error("the backup's contents are malformed: {0}")]
    Payload(String),
    /// Encryption failed (a chunk too long for the AEAD).
    #[error("encrypting the backup failed")]
    Encrypt,
    /// The OS's random source failed.
    #[error("no random salt for the backup: {0}")]
    Random(String),
    /// A worker task failed or the runtime is shutting down.
    #[error("the executor's workers could not run the backup's chunks: {0}")]
    Workers(String),
    /// Reading the written file back did not give what was written.
    #[error("the backup read back differs from what was written: {0}")]
    Verify(String),
    /// The backup is for another network than the config.
    #[error("the backup is of a {backup} node but the config says {config}")]
    NetworkMismatch {
        /// The backup's network.
        backup: Network,
        /// The config's network.
        config: Network,
    },
    /// The seed gives another node id than the backup names.
    #[error("the seed belongs to node {derived}, the backup to node {backup}")]
    NodeMismatch {
        /// The node id in the backup's header.
        backup: String,
        /// The node id the seed gives.
        derived: String,
    },
    /// The data dir already holds a state at least as new as the backup's.
    #[error(
        "refusing to restore: the data dir's store is at commit {data_dir}, the backup at commit \
         {backup}; the data dir is not older than the backup"
    )]
    NotOlder {
        /// The backup's commit counter.
        backup: u64,
        /// The data dir store's commit counter.
        data_dir: u64,
    },
    /// The data dir's store is of another lineage than the backup: their commit counters say
    /// nothing about which state is newer.
    #[error(
        "refusing to restore: the data dir's store is of lineage {data_dir}, the backup of lineage \
         {backup}; their commit counters cannot be compared (set the store aside by hand if you are \
         sure the backup is newer)"
    )]
    OtherLineage {
        /// The backup's lineage.
        backup: String,
        /// The data dir store's lineage.
        data_dir: String,
    },
    /// The store cannot be opened, typically because the node is running on it.
    #[error("the store {path} is in use or unreadable ({reason}); stop boltbox first")]
    StoreInUse {
        /// The store file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The seed could not be read, derived from, or written.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl BackupError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
        let what = what.into();
        move |source| BackupError::Io { what, source }
    }

    /// The OS error behind a failed file operation, if that is what failed (for messages such
    /// as "the stick is full").
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            BackupError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;

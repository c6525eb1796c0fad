//! The live mirror: every commit of the store also durable in a second place (a USB stick's
//! directory) before the writers it carries are released, so that a dead SD card takes no
//! channel state with it (docs/MIRROR.md).
//!
//! On the mirror's medium, per node, for one store lineage:
//!
//! - `mirror-<lineage>-<base>.snap`: the whole store at commit counter `base`, in the backup
//!   file format (sealed with a key from the seed; it opens like a backup);
//! - `mirror-<lineage>-<base>.log`: every commit after `base`, one sealed frame each
//!   ([`log`]).
//!
//! A log is begun with its snapshot, at a moment when no commit is in flight (the committer
//! takes a read transaction between two commits, so the snapshot is exactly the state at
//! `base`), and from then on every commit is appended to it and flushed in parallel with the
//! card's own commit; the commit's writers are released once both are durable. The snapshot
//! itself is written in the background; until it is complete the older pair, whose log ends
//! exactly where the new log begins, keeps the chain whole. Once it is complete the older pairs
//! are deleted. A log that has grown past [`COMPACT_AT`] is closed the same way.
//!
//! The mirror never stops the node: a write that fails, or does not finish within
//! [`MIRROR_WAIT`], marks the mirror lost (the card's commit alone releases the writers from
//! then on), and every [`RESYNC_EVERY`] the committer begins a new pair, which is a resync
//! from the current state.
//!
//! Restoring reads the newest complete snapshot and replays the logs that continue it
//! ([`read_mirror`]); the result is a backup's contents, restored through the backup's own
//! checks and stale guard.

pub mod log;
mod read;
pub mod vss;
pub(crate) mod writer;

use std::path::PathBuf;
use std::time::Duration;

pub use read::{MirrorContents, newest_snapshot, read_mirror, retire};

use crate::backup::{BackupError, Workers};
use crate::config::NodeConfig;
use crate::seed::Seed;

/// The longest the committer waits for the mirror's copy of a commit before it calls the
/// mirror lost and releases the writers on the card's commit alone. A USB stick flushes in
/// 5–50 ms, and pauses for its own housekeeping for a few hundred.
pub const MIRROR_WAIT: Duration = Duration::from_secs(2);
/// How often a lost mirror is tried again (a new snapshot and log: a resync).
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// A log that has grown past this is closed and a new pair begun (compaction). FAT32 caps a
/// file at 4 GiB; this keeps a replay short and the stick's free space predictable.
pub const COMPACT_AT: u64 = 64 << 20;
/// The directory a mirror keeps its files in, in the directory chosen for it.
pub const MIRROR_DIR: &str = "boltbox-mirror";
/// In [`MIRROR_DIR`]: the mirror there was retired (another stick chosen, or the mirror
/// stopped) and is not read; the writer removes it when the stick is chosen again.
pub const RETIRED_FILE: &str = "retired";

/// Keys that are not channel state and are rebuilt by the node itself (ldk-node's network
/// graph and scorer, in the empty namespaces): left out of the mirror, where they would be most
/// of the bytes written.
pub(crate) const REBUILDABLE_KEYS: &[&str] =
    &["network_graph", "scorer", "external_pathfinding_scores_cache"];

/// What the mirror writes with.
#[derive(Clone)]
pub struct MirrorSetup {
    /// The directory chosen for the mirror (the mirror's files go into [`MIRROR_DIR`] in it).
    pub dir: PathBuf,
    /// The node's seed: the files' keys come from it; it is not written.
    pub seed: Seed,
    /// The node's config, written without secrets into each snapshot (as in backups).
    pub config: NodeConfig,
    /// The node id (hex).
    pub node_id: String,
    /// Where a snapshot's chunks are sealed.
    pub workers: Workers,
}

impl std::fmt::Debug for MirrorSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorSetup")
            .field("dir", &self.dir)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Where the mirror stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MirrorStatus {
    /// No mirror is chosen.
    Off,
    /// A new snapshot is being written and the older chain does not reach the current state:
    /// not yet a mirror to restore from.
    Syncing {
        /// The mirror's directory.
        dir: PathBuf,
        /// Share of the snapshot written, 0..=100.
        percent: u8,
    },
    /// Every commit acknowledged is on the mirror too.
    InSync {
        /// The mirror's directory.
        dir: PathBuf,
        /// The commit counter of the last commit mirrored.
        counter: u64,
    },
    /// The mirror failed; the node runs on the card alone and tries again every
    /// [`RESYNC_EVERY`].
    Lost {
        /// The mirror's directory.
        dir: PathBuf,
        /// Why, in words.
        reason: String,
        /// Since when (Unix seconds).
        since: u64,
    },
}

/// What can go wrong writing or reading a mirror.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// An I/O error on the mirror's medium.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A log file is not one of ours or is damaged before its first frame.
    #[error("the mirror's log is damaged: {0}")]
    BadLog(String),
    /// The seed does not open the mirror.
    #[error("the mirror was written with another seed")]
    WrongSeed,
    /// No random numbers for a file's salt.
    #[error("no random salt: {0}")]
    Random(String),
    /// Sealing a frame failed.
    #[error("sealing a frame failed")]
    Encrypt,
    /// A commit too large for one frame.
    #[error("a commit of {0} bytes is too large for the mirror")]
    TooLarge(usize),
    /// The snapshot (a backup file) cannot be written or read.
    #[error("the mirror's snapshot: {0}")]
    Snapshot(#[from] BackupError),
    /// The store could not be read for a snapshot.
    #[error("reading the store for the mirror: {0}")]
    Store(String),
    /// The newest chain ends before a newer log of the same lineage begins: the mirror fell
    /// behind the card (it was lost, or is still resyncing) and is not restored.
    #[error(
        "the mirror is behind the node it mirrored: its state ends at commit {chain} but a newer log begins at \
         {newer_log} (the mirror was lost or was resyncing); restoring it would bring back an old channel state"
    )]
    Behind {
        /// Where the newest complete chain ends.
        chain: u64,
        /// The base of the newer log.
        newer_log: u64,
    },
    /// The mirror holds a later state of the card's own history than the card: the card went
    /// back (an older backup restored onto it, say). The mirror is not written over (it may be
    /// the only copy of the channels' current state) and the owner is told.
    #[error(
        "the mirror holds a later state of this node (commit {mirror}) than the card (commit {card}): the card's \
         channel state is behind; stop the node and restore from this mirror (boltbox restore --mirror)"
    )]
    Ahead {
        /// Where the mirror's newer log begins.
        mirror: u64,
        /// The card's commit counter.
        card: u64,
    },
    /// A commit came while no log was open: beginning the log, or an earlier write, failed.
    #[error("no log is open: an earlier write failed")]
    NotOpen,
    /// The mirror in the directory was retired (another stick chosen, or the mirror stopped):
    /// the node went on without it.
    #[error(
        "the mirror in {0} was retired (another stick was chosen, or the mirror was stopped): the node went on \
         without it, so it is behind; restore from the current mirror"
    )]
    Retired(PathBuf),
    /// Nothing to restore.
    #[error("no mirror of this node in {0}: no complete snapshot with its log")]
    Nothing(PathBuf),
}

impl MirrorError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MirrorError {
        let what = what.into();
        move |source| MirrorError::Io { what, source }
    }
}

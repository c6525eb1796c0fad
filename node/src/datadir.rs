//! The node's data dir, and what may run from it.
//!
//! A node that starts with the wrong channel state loses money: its peers force-close, or an
//! old state is broadcast and punished. So nothing becomes the running node's state silently
//! (docs/STORE.md, "Trust rules"):
//!
//! - a new node is made in a fixed order: its store first (empty, recording the node id and a new
//!   lineage), then its seed. A seed without a store therefore always means a lost store, never an
//!   interrupted first start, and a store without a seed that holds nothing is the leftover of an
//!   interrupted first start, safe to discard;
//! - a seed without a store, a store without LDK data that was not made for this node, a store of
//!   another node, a damaged store or a store without its seed are [`StoreProblem`]s: the
//!   appliance shows them and waits for the owner (a restore, or an explicit start on an empty
//!   store, [`DataDir::start_empty`], which is logged);
//! - an interrupted restore is finished or undone before anything else looks at the data dir
//!   ([`crate::backup::recover_restore`]).

use std::path::{Path, PathBuf};

use crate::backup::{RecoveredRestore, recover_restore};
use crate::config::Network;
use crate::seed::{SEED_FILE, Seed, SeedError};
use crate::store::{Store, StoreError, StoreIdentity};

/// The store's file name in the data dir.
pub const STORE_FILE: &str = "node.redb";
/// The data dir's lock file ([`DataDirLock`]).
pub const LOCK_FILE: &str = "boltbox.lock";

/// One boltbox process at a time works on a data dir: the service for its whole life, and
/// `boltbox restore` or an offline backup for theirs. Otherwise a restore run over SSH while
/// the service waits on a missing store would race the service's own look at the data dir (it
/// finishes or undoes interrupted restores, and sets damaged stores aside).
///
/// An exclusive `flock(2)` on [`LOCK_FILE`] (0600); the kernel releases it when the process
/// ends, a crash included, so a stale lock cannot keep the node down.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` (which must exist) without waiting. Errors:
    /// [`LockError::Held`] when another process holds it, [`LockError::Io`] naming the path.
    pub fn try_acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.join(LOCK_FILE);
        let file = match crate::files::create_new(&path, crate::files::PRIVATE_FILE) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(crate::files::with_path("opening", &path))?,
            Err(e) => return Err(LockError::Io(e)),
        };
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Held { data_dir: data_dir.to_path_buf() }),
            Err(e) => Err(LockError::Io(crate::files::with_path("locking", &path)(e.into()))),
        }
    }
}

/// Why [`DataDirLock::try_acquire`] did not get the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process works on the data dir: the service, or another boltbox command.
    #[error("another boltbox process (the service?) is working on {}", data_dir.display())]
    Held {
        /// The data dir.
        data_dir: PathBuf,
    },
    /// The lock file could not be made or locked (the message names the path).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why the data dir cannot run a node without the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreProblem {
    /// The seed is there but the store is not (deleted, or the card lost it).
    Missing,
    /// The store holds no channel state and was not made for this node (a store made before
    /// boltbox recorded its node, then emptied or replaced).
    Empty,
    /// The store cannot be opened as a sound store.
    Damaged {
        /// What the integrity check found.
        reason: String,
    },
    /// The store belongs to another node than the seed.
    OtherNode {
        /// The node the store records.
        store_node_id: String,
        /// The node the seed gives.
        seed_node_id: String,
    },
    /// There is a store with channel state but no seed to run it with.
    SeedMissing,
    /// The seed file cannot be used (unreadable, readable by others, not 24 valid words).
    SeedUnusable {
        /// Why.
        reason: String,
    },
    /// Another process holds the store (a second boltbox on the same data dir).
    InUse,
    /// The store's file cannot be read (permissions, an I/O error).
    Unreadable {
        /// The error, with the path.
        reason: String,
    },
}

impl StoreProblem {
    /// A short line for the OLED (at most 21 characters).
    pub fn headline(&self) -> &'static str {
        match self {
            StoreProblem::Missing => "node store missing",
            StoreProblem::Empty => "node store empty",
            StoreProblem::Damaged { .. } => "node store damaged",
            StoreProblem::OtherNode { .. } => "store of other node",
            StoreProblem::SeedMissing => "seed missing",
            StoreProblem::SeedUnusable { .. } => "seed unusable",
            StoreProblem::InUse => "store in use",
            StoreProblem::Unreadable { .. } => "store unreadable",
        }
    }

    /// Whether the owner may replace the store by a restore or start empty: not for a store of
    /// another node or one without its seed (that would destroy someone's only copy), nor while
    /// another process has it open.
    pub fn replaceable(&self) -> bool {
        matches!(self, StoreProblem::Missing | StoreProblem::Empty | StoreProblem::Damaged { .. })
    }
}

impl std::fmt::Display for StoreProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreProblem::Missing => f.write_str(
                "the seed is here but the node's store is missing: restore a backup, or start on an empty store",
            ),
            StoreProblem::Empty => f.write_str(
                "the node's store holds no channel state and was not made for this node: restore a backup, \
                 or start on it as an empty store",
            ),
            StoreProblem::Damaged { reason } => {
                write!(f, "the node's store is damaged ({reason}): restore from a backup")
            }
            StoreProblem::OtherNode { store_node_id, seed_node_id } => write!(
                f,
                "the store holds node {store_node_id}, the seed gives node {seed_node_id}: put the matching \
                 seed or store back"
            ),
            StoreProblem::SeedMissing => f.write_str(
                "the store holds channel state but there is no seed to run it: put seed.words back",
            ),
            StoreProblem::SeedUnusable { reason } => write!(f, "the seed cannot be used: {reason}"),
            StoreProblem::InUse => f.write_str("another process has the node's store open"),
            StoreProblem::Unreadable { reason } => write!(f, "the node's store cannot be read: {reason}"),
        }
    }
}

/// What the data dir holds.
#[derive(Debug)]
pub enum Inspection {
    /// Nothing yet (or only the leftover of an interrupted first start): a new node may be
    /// created, or a backup restored.
    Fresh,
    /// Seed and store belong together: the node can run.
    Ready {
        /// The seed.
        seed: Box<Seed>,
        /// The open store.
        store: Store,
        /// Its lineage and node.
        identity: StoreIdentity,
    },
    /// The owner has to decide (see [`StoreProblem`]).
    Problem {
        /// What is wrong.
        problem: StoreProblem,
        /// The seed, when it could be read (a restore of this node needs no other).
        seed: Option<Box<Seed>>,
    },
}

/// The data dir of a node on one network.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
    network: Network,
}

impl DataDir {
    /// The data dir at `path` for a node on `network`.
    pub fn new(path: &Path, network: Network) -> DataDir {
        DataDir { path: path.to_path_buf(), network }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its store file.
    pub fn store_path(&self) -> PathBuf {
        self.path.join(STORE_FILE)
    }

    /// Finishes or undoes an interrupted restore (see [`recover_restore`]), then looks at the
    /// seed and the store and opens the store if they belong together.
    pub fn inspect(&self) -> Result<(Option<RecoveredRestore>, Inspection), std::io::Error> {
        let recovered = if self.path.is_dir() { recover_restore(&self.path)? } else { None };
        Ok((recovered, self.inspect_now()))
    }

    fn inspect_now(&self) -> Inspection {
        let seed = match Seed::load(&self.path) {
            Ok(seed) => seed.map(Box::new),
            Err(e) => {
                return Inspection::Problem {
                    problem: StoreProblem::SeedUnusable { reason: e.to_string() },
                    seed: None,
                };
            }
        };
        let path = self.store_path();
        let store = match Store::open_existing(&path) {
            Ok(store) => store,
            Err(StoreError::Missing { .. }) => {
                return match seed {
                    None => Inspection::Fresh,
                    Some(seed) => Inspection::Problem { problem: StoreProblem::Missing, seed: Some(seed) },
                };
            }
            Err(e) => return Inspection::Problem { problem: problem_of(e), seed },
        };
        let Some(seed) = seed else {
            return match self.leftover(&store) {
                Ok(()) => {
                    store.close();
                    match std::fs::remove_file(&path) {
                        Ok(()) => {
                            tracing::info!(
                                "removed {}: an empty store left by an interrupted first start",
                                path.display()
                            );
                            Inspection::Fresh
                        }
                        Err(e) => Inspection::Problem {
                            problem: StoreProblem::Unreadable {
                                reason: format!("removing {}: {e}", path.display()),
                            },
                            seed: None,
                        },
                    }
                }
                Err(problem) => {
                    store.close();
                    Inspection::Problem { problem, seed: None }
                }
            };
        };
        match self.judge(&store, &seed) {
            Ok(identity) => Inspection::Ready { seed, store, identity },
            Err(problem) => {
                store.close();
                Inspection::Problem { problem, seed: Some(seed) }
            }
        }
    }

    /// A store without a seed is a leftover of an interrupted first start if it holds nothing
    /// (see the module documentation); otherwise the seed is missing.
    fn leftover(&self, store: &Store) -> Result<(), StoreProblem> {
        match store.is_empty() {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreProblem::SeedMissing),
            Err(e) => Err(StoreProblem::Unreadable { reason: e.to_string() }),
        }
    }

    /// Whether `store` may run with `seed`: its identity when it may.
    fn judge(&self, store: &Store, seed: &Seed) -> Result<StoreIdentity, StoreProblem> {
        let unreadable = |e: StoreError| StoreProblem::Unreadable { reason: e.to_string() };
        let identity = store.identity().map_err(unreadable)?;
        let seed_node_id =
            seed.node_id(self.network).map_err(|e| StoreProblem::SeedUnusable { reason: e.to_string() })?;
        match &identity.node_id {
            Some(id) if *id == seed_node_id => Ok(identity),
            Some(id) => Err(StoreProblem::OtherNode { store_node_id: id.clone(), seed_node_id }),
            // Made before boltbox recorded the node: empty, it proves nothing; with channel
            // state, it is taken as this node's (LDK refuses to load another node's state) and
            // the node is recorded once it runs.
            None if store.is_empty().map_err(unreadable)? => Err(StoreProblem::Empty),
            None => Ok(identity),
        }
    }

    /// Makes a new node: an empty store recording `seed`'s node id and a new lineage, then the
    /// seed (see the module documentation for the order). Refuses when either exists.
    pub fn create_node(&self, seed: &Seed) -> Result<Store, DataDirError> {
        crate::files::create_private_dir(&self.path).map_err(DataDirError::Io)?;
        if self.path.join(SEED_FILE).exists() {
            return Err(DataDirError::Seed(SeedError::Exists(self.path.join(SEED_FILE))));
        }
        let node_id = seed.node_id(self.network)?;
        let store = Store::create_new(&self.store_path(), Some(&node_id))?;
        if let Err(e) = seed.store(&self.path) {
            store.close();
            let _ = std::fs::remove_file(self.store_path());
            return Err(e.into());
        }
        tracing::info!("created node {node_id}: a new seed and an empty store");
        Ok(store)
    }

    /// Starts `seed`'s node on an empty store by the owner's explicit choice, after a
    /// [`StoreProblem`] that [allows it](StoreProblem::replaceable): an existing store file is set
    /// aside (renamed, never deleted) and a new lineage begins. The channels of the lost state are
    /// unknown to the node from now on; their peers will force-close them.
    pub fn start_empty(&self, seed: &Seed) -> Result<Store, DataDirError> {
        let path = self.store_path();
        let aside = self.set_aside("empty-start")?;
        let node_id = seed.node_id(self.network)?;
        let store = Store::create_new(&path, Some(&node_id))?;
        tracing::warn!(
            node_id,
            set_aside = ?aside,
            "the owner chose to start on an EMPTY store: the node does not know the channels of its lost state"
        );
        Ok(store)
    }

    /// Sets the store file aside (see [`set_aside`]).
    pub fn set_aside(&self, why: &str) -> Result<Option<PathBuf>, DataDirError> {
        set_aside(&self.path, why).map_err(DataDirError::Io)
    }
}

/// Renames the store file of `data_dir`, if any, to `node.redb.<why>-<unix time>` next to it
/// (never deleting it) and returns the new name.
pub fn set_aside(data_dir: &Path, why: &str) -> std::io::Result<Option<PathBuf>> {
    let path = data_dir.join(STORE_FILE);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let now = crate::unix_now();
    let mut aside = data_dir.join(format!("{STORE_FILE}.{why}-{now}"));
    let mut n = 1u32;
    while aside.exists() {
        n = n.saturating_add(1);
        aside = data_dir.join(format!("{STORE_FILE}.{why}-{now}-{n}"));
    }
    std::fs::rename(&path, &aside).map_err(crate::files::with_path("setting aside", &path))?;
    crate::files::sync_dir(data_dir)?;
    tracing::warn!("set the store aside as {}", aside.display());
    Ok(Some(aside))
}

pub(crate) fn problem_of(e: StoreError) -> StoreProblem {
    match e {
        StoreError::Damaged { reason, .. } => StoreProblem::Damaged { reason },
        StoreError::InUse { .. } => StoreProblem::InUse,
        other => StoreProblem::Unreadable { reason: other.to_string() },
    }
}

/// What can go wrong making or replacing the data dir's node.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The seed could not be derived from, read or written.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// The store could not be created.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation failed (the message names the path).
    #[error("{0}")]
    Io(std::io::Error),
}

#[cfg(test)]
mod tests {
    use ldk_node::lightning::util::persist::KVStoreSync;

    use super::*;

    fn seed() -> Seed {
        Seed::from_words(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
             abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art",
        )
        .expect("seed")
    }

    fn ready(dir: &DataDir) -> (Seed, Store) {
        match dir.inspect().expect("inspect").1 {
            Inspection::Ready { seed, store, .. } => (*seed, store),
            other => panic!("expected a ready data dir, got {other:?}"),
        }
    }

    fn problem(dir: &DataDir) -> StoreProblem {
        match dir.inspect().expect("inspect").1 {
            Inspection::Problem { problem, .. } => problem,
            other => panic!("expected a problem, got {other:?}"),
        }
    }

    #[test]
    fn a_new_node_is_fresh_then_ready_with_its_own_lineage() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(&tmp.path().join("data"), Network::Regtest);
        assert!(matches!(dir.inspect().expect("inspect").1, Inspection::Fresh));
        let store = dir.create_node(&seed()).expect("create");
        let identity = store.identity().expect("identity");
        assert_eq!(identity.node_id, Some(seed().node_id(Network::Regtest).expect("id")));
        assert_eq!(identity.lineage_id.len(), 32);
        store.close();
        let (_, store) = ready(&dir);
        assert_eq!(store.identity().expect("identity"), identity, "the same lineage after a restart");
    }

    #[test]
    fn a_seed_without_its_store_is_never_started_silently() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path(), Network::Regtest);
        dir.create_node(&seed()).expect("create").close();
        std::fs::rename(dir.store_path(), tmp.path().join("moved-away")).expect("mv");
        assert_eq!(problem(&dir), StoreProblem::Missing);
        assert!(!dir.store_path().exists(), "inspecting creates nothing");
        // The owner's explicit choice: a new, empty store and a new lineage.
        let old = Store::open(&tmp.path().join("moved-away")).expect("old").identity().expect("id");
        let store = dir.start_empty(&seed()).expect("start empty");
        assert_ne!(store.identity().expect("identity").lineage_id, old.lineage_id);
        store.close();
        ready(&dir);
    }

    #[test]
    fn an_interrupted_first_start_is_fresh_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path(), Network::Regtest);
        // The store is made before the seed: a power cut in between leaves only the empty store.
        Store::create_new(&dir.store_path(), Some("02aa")).expect("store").close();
        assert!(matches!(dir.inspect().expect("inspect").1, Inspection::Fresh));
        assert!(!dir.store_path().exists());
    }

    #[test]
    fn a_store_with_state_but_no_seed_or_another_seed_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path(), Network::Regtest);
        let store = dir.create_node(&seed()).expect("create");
        KVStoreSync::write(&store, "monitors", "", "m1", vec![1; 10]).expect("write");
        store.close();
        std::fs::remove_file(tmp.path().join(SEED_FILE)).expect("rm seed");
        assert_eq!(problem(&dir), StoreProblem::SeedMissing);
        assert!(dir.store_path().exists(), "a store with state is never discarded");
        Seed::generate().store(tmp.path()).expect("another seed");
        assert!(matches!(problem(&dir), StoreProblem::OtherNode { .. }));
        assert!(!StoreProblem::SeedMissing.replaceable() && !problem(&dir).replaceable());
    }

    #[test]
    fn an_empty_store_of_unknown_origin_needs_the_owner() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path(), Network::Regtest);
        seed().store(tmp.path()).expect("seed");
        // A store that does not record its node: what an older boltbox created on an empty dir.
        Store::create_new(&dir.store_path(), None).expect("store").close();
        assert_eq!(problem(&dir), StoreProblem::Empty);
    }

    #[test]
    fn a_damaged_store_is_a_problem_and_is_set_aside_not_deleted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path(), Network::Regtest);
        let store = dir.create_node(&seed()).expect("create");
        KVStoreSync::write(&store, "monitors", "", "m1", vec![1; 5000]).expect("write");
        store.close();
        let mut bytes = std::fs::read(dir.store_path()).expect("read");
        bytes[4096..4104].copy_from_slice(&[0xff; 8]);
        std::fs::write(dir.store_path(), &bytes).expect("write");
        assert!(matches!(problem(&dir), StoreProblem::Damaged { .. }));
        let aside = dir.set_aside("damaged").expect("aside").expect("a file was there");
        assert_eq!(std::fs::read(&aside).expect("kept"), bytes);
        assert_eq!(problem(&dir), StoreProblem::Missing);
    }
}

//! The node's storage: a redb database behind LDK's `KVStore`/`KVStoreSync` (ldk-node's
//! `DynStore`), with every durable write routed through one group committer.
//!
//! Contract (LDK's, see `lightning::util::persist::KVStoreSync`):
//! - namespaces and keys are validated (alphabet, length, empty-namespace rules);
//! - writes and removes to the same key are applied in call order: an operation is queued at
//!   the moment `write`/`remove` is called, before any future is returned;
//! - a write is durable when it returns (sync) or its future resolves (async): the caller is
//!   released only after the batch holding its write has been committed with an fsync;
//! - nothing is acknowledged that was not stored: a failed commit (a full disk, an I/O error) is
//!   retried on a reopened file until it succeeds, its writers waiting meanwhile, and the store
//!   reports itself failing ([`StoreHealth`]) so that the appliance can say so and stop the node
//!   safely; LDK takes a failed monitor write as unrecoverable and panics, so failing the writes
//!   instead would crash the node;
//! - a lazy remove is queued like any operation but does not wait for its commit, so `list` may
//!   show the key until the next commit (LDK allows exactly this).

pub(crate) mod committer;
mod completion;
pub(crate) mod keys;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ldk_node::lightning::util::async_poll::AsyncResult;
use ldk_node::lightning::util::persist::{KVStore, KVStoreSync, MigratableKVStore};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use committer::{Committer, Op};
pub use completion::Completion;
pub use keys::validate;

/// All LDK data: key = `primary \0 secondary \0 key`, value = the bytes LDK wrote.
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// Store metadata, such as the monotonic commit counter.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Incremented by every commit; a backup carries it so that a stale one is recognised.
pub(crate) const COMMIT_COUNTER: &str = "commit_counter";
/// Which node's state the store holds, and the lineage of that state.
pub(crate) const IDENTITY: TableDefinition<&str, &str> = TableDefinition::new("identity");
const LINEAGE_ID: &str = "lineage_id";
const NODE_ID: &str = "node_id";
/// redb refuses larger values; refusing them at the door keeps one bad write from failing the
/// whole batch it would share.
const MAX_VALUE_BYTES: usize = 3 << 30;

/// What can go wrong opening or running the store. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// There is no store file where one is expected.
    #[error("no store at {path}")]
    Missing {
        /// The store file.
        path: PathBuf,
    },
    /// A store file is already there (creating a new store never replaces one).
    #[error("a store already exists at {path}")]
    Exists {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a usable store: not a redb database, altered outside redb, truncated, or
    /// not a regular file. Nothing is repaired silently; the file is left as it is.
    #[error("the store at {path} is damaged: {reason}")]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What the integrity check found.
        reason: String,
    },
    /// The store is in a redb file format this boltbox does not read: made by another
    /// version. Sound, and possibly newer than anything else: never to be replaced for that.
    #[error(
        "the store at {path} is in redb file format {format}, which this boltbox does not read (made by another version of boltbox)"
    )]
    OtherFormat {
        /// The store file.
        path: PathBuf,
        /// redb's file format version in it.
        format: u8,
    },
    /// Another process (a running boltbox) holds the store.
    #[error("the store at {path} is in use by another process")]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The file could not be read or written.
    #[error("store {path}: {source}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A redb operation failed.
    #[error("store: {0}")]
    Redb(String),
    /// The committer thread could not be started.
    #[error("cannot start the store's committer thread: {0}")]
    Thread(io::Error),
}

impl StoreError {
    pub(crate) fn redb(e: impl std::fmt::Display) -> Self {
        StoreError::Redb(e.to_string())
    }

    /// The store's file is damaged (see [`StoreError::Damaged`]).
    pub fn is_damaged(&self) -> bool {
        matches!(self, StoreError::Damaged { .. })
    }

    /// Classifies what redb said on opening `path`.
    fn opening(path: &Path, e: redb::DatabaseError) -> StoreError {
        let path = path.to_path_buf();
        let damaged = |reason: String| StoreError::Damaged { path: path.clone(), reason };
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
                StoreError::InUse { path }
            }
            redb::DatabaseError::UpgradeRequired(format) => StoreError::OtherFormat { path, format },
            redb::DatabaseError::RepairAborted => damaged("redb could not repair it".into()),
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => damaged(reason),
            redb::DatabaseError::Storage(redb::StorageError::Io(source))
                if source.kind() == io::ErrorKind::InvalidData =>
            {
                damaged(format!("it is not a redb database ({source})"))
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(source)) => StoreError::Io { path, source },
            other => StoreError::Redb(format!("opening {}: {other}", path.display())),
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Redb(e.to_string())
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io { source, .. } => source,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// Bounds of one group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitLimits {
    /// At most this many operations go into one write transaction.
    pub max_ops: usize,
    /// At most about this many value bytes go into one write transaction.
    pub max_bytes: usize,
    /// The most the committer waits for more writes once it has one. Writes that arrive while
    /// a commit is in flight form the next batch anyway; this bounds the extra wait for the
    /// writers the last commit released (itself at most an eighth of that commit's duration).
    /// Zero never waits.
    pub max_wait: Duration,
}

impl Default for CommitLimits {
    fn default() -> Self {
        CommitLimits { max_ops: 4096, max_bytes: 32 << 20, max_wait: Duration::from_millis(2) }
    }
}

/// One stored value with its namespaces and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// LDK's primary namespace.
    pub primary: String,
    /// LDK's secondary namespace.
    pub secondary: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
}

/// One committed state of the whole store (for backups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The commit counter of that state.
    pub commit_counter: u64,
    /// Every entry.
    pub entries: Vec<Entry>,
}

/// Which node's state a store holds and where that state comes from.
///
/// A lineage is one history of commits: it begins when an empty store is created for a node
/// and goes on through every commit, backup, restore and mirror of that history. Commit
/// counters say which of two states is newer only within one lineage: a store started empty
/// again for the same node is a new lineage whose counters start over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreIdentity {
    /// 32 lower-case hex digits, random when the lineage began.
    pub lineage_id: String,
    /// The node id (hex) whose state this is; none for a store made before boltbox recorded it,
    /// until the node first runs on it.
    pub node_id: Option<String>,
}

/// Whether the store can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Commits succeed.
    Healthy,
    /// Commits fail (a full disk, an I/O error). The writes of the failed batch and everything
    /// queued after it wait, unacknowledged, while the committer reopens the file and retries
    /// with a growing pause (at most [`RETRY_MAX`]): nothing is reported durable that is not,
    /// and nothing is reported failed that LDK would then treat as lost.
    Failing {
        /// What the last attempt said.
        reason: String,
        /// When commits began failing (Unix seconds).
        since: u64,
        /// Attempts so far.
        attempts: u64,
    },
}

/// The longest pause between two attempts to commit on a failing store.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// A new random lineage id.
fn new_lineage_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Redb(format!("no random lineage id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How a store's database is (re)opened: from its file with the integrity check, or by a test's
/// own backend. The committer reopens after a failed commit, since redb refuses every later
/// transaction on a handle that saw an I/O error.
pub(crate) type Opener = Box<dyn Fn() -> Result<redb::Database, StoreError> + Send + Sync>;

/// Opens the existing redb file at `path`, checking the checksum of every page first (redb then
/// reports an altered file as damaged instead of trusting it).
fn open_checked(path: &Path) -> Result<redb::Database, StoreError> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => StoreError::Missing { path: path.to_path_buf() },
        _ => StoreError::Io { path: path.to_path_buf(), source },
    })?;
    if !meta.is_file() {
        return Err(StoreError::Damaged {
            path: path.to_path_buf(),
            reason: "it is not a regular file".into(),
        });
    }
    if meta.len() == 0 {
        return Err(StoreError::Damaged { path: path.to_path_buf(), reason: "the file is empty".into() });
    }
    redb::Database::builder()
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| StoreError::opening(path, e))
}

/// The commit counter of the state `txn` reads.
pub(crate) fn counter_of(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META).map_err(StoreError::redb)?;
    Ok(meta.get(COMMIT_COUNTER).map_err(StoreError::redb)?.map(|v| v.value()).unwrap_or(0))
}

/// The lineage and node recorded in the state `txn` reads.
pub(crate) fn identity_of(txn: &redb::ReadTransaction) -> Result<StoreIdentity, StoreError> {
    let identity = txn.open_table(IDENTITY).map_err(StoreError::redb)?;
    let get = |key| -> Result<Option<String>, StoreError> {
        Ok(identity.get(key).map_err(StoreError::redb)?.map(|v| v.value().to_string()))
    };
    let lineage_id =
        get(LINEAGE_ID)?.ok_or_else(|| StoreError::Redb("the store has no lineage id".into()))?;
    Ok(StoreIdentity { lineage_id, node_id: get(NODE_ID)? })
}

/// Every entry `keep` accepts (by its decoded key) of the state `txn` reads, and its counter.
pub(crate) fn snapshot_of(
    txn: &redb::ReadTransaction,
    keep: &dyn Fn(&Entry) -> bool,
) -> Result<Snapshot, StoreError> {
    let counter = counter_of(txn)?;
    let table = txn.open_table(KV).map_err(StoreError::redb)?;
    let mut entries = Vec::new();
    for entry in table.iter().map_err(StoreError::redb)? {
        let (k, v) = entry.map_err(StoreError::redb)?;
        let (primary, secondary, key) = keys::decode(k.value()).map_err(StoreError::redb)?;
        let entry = Entry { primary, secondary, key, value: v.value().to_vec() };
        if keep(&entry) {
            entries.push(entry);
        }
    }
    Ok(Snapshot { commit_counter: counter, entries })
}

/// The redb-backed, group-committing store. Cheap to clone (shared handle).
#[derive(Clone, Debug)]
pub struct Store {
    committer: Arc<Committer>,
}

impl Store {
    /// Opens the store file at `path`, creating an empty store (a new lineage) if there is none.
    /// For tools, tests and benchmarks; the node's data dir is opened through
    /// [`crate::datadir`], which never creates a store silently.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, CommitLimits::default())
    }

    /// [`Store::open`] with commit limits.
    pub fn open_with(path: &Path, limits: CommitLimits) -> Result<Self, StoreError> {
        match Self::open_existing_with(path, limits) {
            Err(StoreError::Missing { .. }) => Self::create_new_with(path, None, limits),
            other => other,
        }
    }

    /// Opens the existing store file at `path` with the integrity check; never creates one.
    /// A file readable by others is made private (0600) first.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        Self::open_existing_with(path, CommitLimits::default())
    }

    fn open_existing_with(path: &Path, limits: CommitLimits) -> Result<Self, StoreError> {
        let db = open_checked(path)?;
        match crate::files::make_private(path) {
            Ok(true) => tracing::warn!("{} was readable by others; it is 0600 now", path.display()),
            Ok(false) => {}
            Err(source) => return Err(StoreError::Io { path: path.to_path_buf(), source }),
        }
        let reopen_path = path.to_path_buf();
        Self::start(db, Box::new(move || open_checked(&reopen_path)), limits, None)
    }

    /// Creates a new, empty store file at `path` (mode 0600, never over an existing file): a new
    /// lineage, of `node_id` when given.
    pub fn create_new(path: &Path, node_id: Option<&str>) -> Result<Self, StoreError> {
        Self::create_new_with(path, node_id, CommitLimits::default())
    }

    fn create_new_with(path: &Path, node_id: Option<&str>, limits: CommitLimits) -> Result<Self, StoreError> {
        match crate::files::create_new(path, crate::files::PRIVATE_FILE) {
            Ok(file) => drop(file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Exists { path: path.to_path_buf() });
            }
            Err(source) => return Err(StoreError::Io { path: path.to_path_buf(), source }),
        }
        let created = redb::Database::create(path).map_err(|e| StoreError::opening(path, e));
        let db = match created {
            Ok(db) => db,
            Err(e) => {
                // Leave no empty file behind that a later start would take for a damaged store.
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        let reopen_path = path.to_path_buf();
        Self::start(db, Box::new(move || open_checked(&reopen_path)), limits, node_id)
    }

    /// A store on a database from `open`, which is called again to reopen it after a failed
    /// commit (for tests on a backend of their own).
    #[cfg(test)]
    pub(crate) fn with_opener(open: Opener, limits: CommitLimits) -> Result<Self, StoreError> {
        let db = open()?;
        Self::start(db, open, limits, None)
    }

    fn start(
        db: redb::Database,
        open: Opener,
        limits: CommitLimits,
        node_id: Option<&str>,
    ) -> Result<Self, StoreError> {
        // Create the tables up front so that readers never see "table does not exist", and give
        // a store without an identity (new, or made by an older boltbox) its lineage.
        let txn = db.begin_write().map_err(StoreError::redb)?;
        {
            txn.open_table(KV).map_err(StoreError::redb)?;
            txn.open_table(META).map_err(StoreError::redb)?;
            let mut identity = txn.open_table(IDENTITY).map_err(StoreError::redb)?;
            if identity.get(LINEAGE_ID).map_err(StoreError::redb)?.is_none() {
                let lineage = new_lineage_id()?;
                identity.insert(LINEAGE_ID, lineage.as_str()).map_err(StoreError::redb)?;
            }
            if let Some(node_id) = node_id {
                identity.insert(NODE_ID, node_id).map_err(StoreError::redb)?;
            }
        }
        txn.commit().map_err(StoreError::redb)?;
        Ok(Store { committer: Committer::start(db, open, limits)? })
    }

    /// Commits everything queued and closes the database file, even if other handles (held
    /// inside ldk-node, for instance) still exist: their operations fail from now on. On a
    /// failing store ([`StoreHealth::Failing`]) the writes still waiting stay unacknowledged.
    pub fn close(&self) {
        self.committer.close();
    }

    /// Whether commits succeed.
    pub fn health(&self) -> StoreHealth {
        self.committer.health()
    }

    /// The number of commits this store has made over its whole lineage.
    pub fn commit_counter(&self) -> Result<u64, StoreError> {
        counter_of(&self.committer.db()?.begin_read().map_err(StoreError::redb)?)
    }

    /// The store's lineage and node.
    pub fn identity(&self) -> Result<StoreIdentity, StoreError> {
        let txn = self.committer.db()?.begin_read().map_err(StoreError::redb)?;
        identity_of(&txn)
    }

    /// Records the node whose state this is (a store made before boltbox recorded it, once the
    /// node has run on it). Durable when it returns.
    pub fn set_node_id(&self, node_id: &str) -> io::Result<()> {
        self.committer.submit(Op::Identity { key: NODE_ID, value: node_id.to_string() }).wait()
    }

    /// Whether the store holds no LDK data at all.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let txn = self.committer.db()?.begin_read().map_err(StoreError::redb)?;
        let kv = txn.open_table(KV).map_err(StoreError::redb)?;
        Ok(kv.first().map_err(StoreError::redb)?.is_none())
    }

    /// Waits until every operation queued so far (lazy removes included) is durable.
    pub fn flush(&self) -> io::Result<()> {
        self.committer.submit(Op::Barrier).wait()
    }

    /// How many group commits and operations the committer has done (for the system screen
    /// and benchmarks).
    pub fn commit_stats(&self) -> (u64, u64) {
        self.committer.stats()
    }

    fn submit_write(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        value: Vec<u8>,
    ) -> io::Result<Completion> {
        validate(primary, secondary, Some(key), "write")?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot write {primary:?}/{secondary:?}/{key:?}: {} bytes is more than a store value may have",
                    value.len()
                ),
            ));
        }
        Ok(self.committer.submit(Op::Put { key: keys::encode(primary, secondary, key), value }))
    }

    fn submit_remove(&self, primary: &str, secondary: &str, key: &str) -> io::Result<Completion> {
        validate(primary, secondary, Some(key), "remove")?;
        Ok(self.committer.submit(Op::Delete { key: keys::encode(primary, secondary, key) }))
    }

    /// Writes (`Some(value)`) and removes (`None`) the keys of one namespace in one commit of
    /// their own: after a crash either all of them are stored or none is. Returns at once; the
    /// completion says when they are durable. Keys and values follow LDK's rules, as `write`.
    pub fn write_group(
        &self,
        primary: &str,
        secondary: &str,
        entries: Vec<(String, Option<Vec<u8>>)>,
    ) -> io::Result<Completion> {
        let mut ops = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            validate(primary, secondary, Some(&key), "write")?;
            let key = keys::encode(primary, secondary, &key);
            ops.push(match value {
                Some(value) if value.len() > MAX_VALUE_BYTES => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("cannot write {primary:?}/{secondary:?}: {} bytes is more than a store value may have", value.len()),
                    ));
                }
                Some(value) => Op::Put { key, value },
                None => Op::Delete { key },
            });
        }
        if ops.is_empty() {
            return Ok(self.committer.submit(Op::Barrier));
        }
        Ok(self.committer.submit_group(ops))
    }

    /// Every key of one namespace with its value, from one committed state, in key order.
    pub fn read_namespace(&self, primary: &str, secondary: &str) -> io::Result<Vec<(String, Vec<u8>)>> {
        validate(primary, secondary, None, "list")?;
        let (start, end) = keys::namespace_range(primary, secondary);
        let txn = self.committer.db()?.begin_read().map_err(io::Error::other)?;
        let table = txn.open_table(KV).map_err(io::Error::other)?;
        let mut out = Vec::new();
        for entry in table.range(start.as_slice()..end.as_slice()).map_err(io::Error::other)? {
            let (k, v) = entry.map_err(io::Error::other)?;
            out.push((keys::key_part(k.value())?, v.value().to_vec()));
        }
        Ok(out)
    }

    fn read_now(&self, primary: &str, secondary: &str, key: &str) -> io::Result<Vec<u8>> {
        validate(primary, secondary, Some(key), "read")?;
        let txn = self.committer.db()?.begin_read().map_err(io::Error::other)?;
        let table = txn.open_table(KV).map_err(io::Error::other)?;
        match table.get(keys::encode(primary, secondary, key).as_slice()).map_err(io::Error::other)? {
            Some(v) => Ok(v.value().to_vec()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no value at {primary}/{secondary}/{key}"),
            )),
        }
    }

    fn list_now(&self, primary: &str, secondary: &str) -> io::Result<Vec<String>> {
        validate(primary, secondary, None, "list")?;
        let (start, end) = keys::namespace_range(primary, secondary);
        let txn = self.committer.db()?.begin_read().map_err(io::Error::other)?;
        let table = txn.open_table(KV).map_err(io::Error::other)?;
        let mut out = Vec::new();
        for entry in table.range(start.as_slice()..end.as_slice()).map_err(io::Error::other)? {
            let (k, _) = entry.map_err(io::Error::other)?;
            out.push(keys::key_part(k.value())?);
        }
        Ok(out)
    }

    /// Every entry of one committed state, and that state's commit counter, read in one read
    /// transaction while writers go on.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let txn = self.committer.db()?.begin_read().map_err(StoreError::redb)?;
        snapshot_of(&txn, &|_| true)
    }

    /// Mirrors every commit from now on into `setup.dir` (replacing any mirror chosen before),
    /// see [`crate::mirror`]. Returns at once: the first snapshot is written in the background.
    pub fn mirror_to(&self, setup: crate::mirror::MirrorSetup) {
        self.committer.set_mirror(Some(setup));
    }

    /// Stops mirroring (the files stay where they are).
    pub fn stop_mirror(&self) {
        self.committer.set_mirror(None);
    }

    /// Stops mirroring because the mirror's medium (in `dir`) is gone — a stick pulled out —
    /// and reports the mirror [`crate::mirror::MirrorStatus::Lost`] for `reason` until
    /// [`Store::mirror_to`] chooses it (or another) again.
    pub fn mirror_unreachable(&self, dir: &Path, reason: String) {
        self.committer.mirror_unreachable(dir, reason);
    }

    /// Where the mirror stands.
    pub fn mirror_status(&self) -> crate::mirror::MirrorStatus {
        self.committer.mirror_status()
    }

    /// Mirrors every commit from now on to VSS as well (replacing any remote mirror set
    /// before), see [`crate::mirror::vss`]. Returns at once: the first look at the server and
    /// the first snapshot happen in the background.
    pub fn mirror_to_vss(&self, setup: crate::mirror::vss::VssSetup) {
        self.committer.set_vss(Some(setup));
    }

    /// Stops the remote mirror (what is on the server stays there).
    pub fn stop_vss(&self) {
        self.committer.set_vss(None);
    }

    /// Where the remote mirror stands.
    pub fn vss_status(&self) -> crate::mirror::vss::VssStatus {
        self.committer.vss_status()
    }

    /// Creates the store file at `path` (mode 0600, never over an existing file) holding exactly
    /// `snapshot` in `identity`'s lineage: every entry and the commit counter in one durable
    /// write transaction (restoring a backup continues the backed-up lineage).
    pub fn create_from_snapshot(
        path: &Path,
        snapshot: &Snapshot,
        identity: &StoreIdentity,
    ) -> Result<(), StoreError> {
        match crate::files::create_new(path, crate::files::PRIVATE_FILE) {
            Ok(file) => drop(file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Exists { path: path.to_path_buf() });
            }
            Err(source) => return Err(StoreError::Io { path: path.to_path_buf(), source }),
        }
        let db = redb::Database::create(path).map_err(|e| StoreError::opening(path, e))?;
        let txn = db.begin_write().map_err(StoreError::redb)?;
        {
            let mut kv = txn.open_table(KV).map_err(StoreError::redb)?;
            let mut meta = txn.open_table(META).map_err(StoreError::redb)?;
            let mut ids = txn.open_table(IDENTITY).map_err(StoreError::redb)?;
            for e in &snapshot.entries {
                validate(&e.primary, &e.secondary, Some(&e.key), "restore")?;
                let key = keys::encode(&e.primary, &e.secondary, &e.key);
                kv.insert(key.as_slice(), e.value.as_slice()).map_err(StoreError::redb)?;
            }
            meta.insert(COMMIT_COUNTER, snapshot.commit_counter).map_err(StoreError::redb)?;
            ids.insert(LINEAGE_ID, identity.lineage_id.as_str()).map_err(StoreError::redb)?;
            if let Some(node_id) = &identity.node_id {
                ids.insert(NODE_ID, node_id.as_str()).map_err(StoreError::redb)?;
            }
        }
        // Durability::Immediate (redb's default): the data is on disk when this returns.
        txn.commit().map_err(StoreError::redb)
    }
}

// LDK's traits speak `lightning::io::Error` (rust-bitcoin's io); the store speaks std's and
// converts at this boundary.
type LdkResult<T> = Result<T, ldk_node::lightning::io::Error>;

impl KVStoreSync for Store {
    fn read(&self, primary: &str, secondary: &str, key: &str) -> LdkResult<Vec<u8>> {
        Ok(self.read_now(primary, secondary, key)?)
    }

    fn write(&self, primary: &str, secondary: &str, key: &str, buf: Vec<u8>) -> LdkResult<()> {
        Ok(self.submit_write(primary, secondary, key, buf)?.wait()?)
    }

    fn remove(&self, primary: &str, secondary: &str, key: &str, lazy: bool) -> LdkResult<()> {
        let done = self.submit_remove(primary, secondary, key)?;
        if lazy { Ok(()) } else { Ok(done.wait()?) }
    }

    fn list(&self, primary: &str, secondary: &str) -> LdkResult<Vec<String>> {
        Ok(self.list_now(primary, secondary)?)
    }
}

impl KVStore for Store {
    fn read(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
    ) -> AsyncResult<'static, Vec<u8>, ldk_node::lightning::io::Error> {
        let res = self.read_now(primary, secondary, key);
        Box::pin(async move { Ok(res?) })
    }

    fn write(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        buf: Vec<u8>,
    ) -> AsyncResult<'static, (), ldk_node::lightning::io::Error> {
        // Queued now, in call order; the future only waits for durability.
        let queued = self.submit_write(primary, secondary, key, buf);
        Box::pin(async move { Ok(queued?.await?) })
    }

    fn remove(
        &self,
        primary: &str,
        secondary: &str,
        key: &str,
        lazy: bool,
    ) -> AsyncResult<'static, (), ldk_node::lightning::io::Error> {
        let queued = self.submit_remove(primary, secondary, key);
        Box::pin(async move {
            let done = queued?;
            if lazy { Ok(()) } else { Ok(done.await?) }
        })
    }

    fn list(
        &self,
        primary: &str,
        secondary: &str,
    ) -> AsyncResult<'static, Vec<String>, ldk_node::lightning::io::Error> {
        let res = self.list_now(primary, secondary);
        Box::pin(async move { Ok(res?) })
    }
}

impl MigratableKVStore for Store {
    fn list_all_keys(&self) -> LdkResult<Vec<(String, String, String)>> {
        let snapshot = self.snapshot().map_err(io::Error::from)?;
        Ok(snapshot.entries.into_iter().map(|e| (e.primary, e.secondary, e.key)).collect())
    }
}

#[cfg(test)]
mod tests;

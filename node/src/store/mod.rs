//! The node's storage: a redb database behind LDK's `KVStore`/`KVStoreSync` (ldk-node's
//! `DynStore`), with every durable write routed through one group committer.
//!
//! Contract (LDK's, see `lightning::util::persist::KVStoreSync`):
//! - namespaces and keys are validated (alphabet, length, empty-namespace rules);
//! - writes and removes to the same key are applied in call order: an operation is queued at
//!   the moment `write`/`remove` is called, before any future is returned;
//! - a write is durable when it returns (sync) or its future resolves (async): the caller is
//!   released only after the batch holding its write has been committed with an fsync;
//! - a failed commit fails every write in its batch; nothing is acknowledged that was not stored;
//! - a lazy remove is queued like any operation but does not wait for its commit, so `list` may
//!   show the key until the next commit (LDK allows exactly this).

mod committer;
mod completion;
mod keys;

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

/// What can go wrong opening or running the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::DatabaseError>,
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
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Redb(e.to_string())
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> Self {
        io::Error::other(e.to_string())
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

/// The redb-backed, group-committing store. Cheap to clone (shared handle).
#[derive(Clone, Debug)]
pub struct Store {
    committer: Arc<Committer>,
}

impl Store {
    /// Opens (or creates) the store file at `path` with default commit limits.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, CommitLimits::default())
    }

    /// Opens (or creates) the store file at `path`.
    pub fn open_with(path: &Path, limits: CommitLimits) -> Result<Self, StoreError> {
        let db = redb::Database::create(path)
            .map_err(|source| StoreError::Open { path: path.to_path_buf(), source: Box::new(source) })?;
        Self::with_database(db, limits)
    }

    /// A store on a redb database opened by the caller (for example on a custom backend).
    pub fn with_database(db: redb::Database, limits: CommitLimits) -> Result<Self, StoreError> {
        // Create the tables up front so that readers never see "table does not exist".
        let txn = db.begin_write().map_err(StoreError::redb)?;
        txn.open_table(KV).map_err(StoreError::redb)?;
        txn.open_table(META).map_err(StoreError::redb)?;
        txn.commit().map_err(StoreError::redb)?;
        Ok(Store { committer: Committer::start(db, limits)? })
    }

    /// Commits everything queued and closes the database file, even if other handles (held
    /// inside ldk-node, for instance) still exist: their operations fail from now on.
    pub fn close(&self) {
        self.committer.close();
    }

    /// The number of commits this store has made over its whole life.
    pub fn commit_counter(&self) -> Result<u64, StoreError> {
        let txn = self.committer.db()?.begin_read().map_err(StoreError::redb)?;
        let meta = txn.open_table(META).map_err(StoreError::redb)?;
        Ok(meta.get(COMMIT_COUNTER).map_err(StoreError::redb)?.map(|v| v.value()).unwrap_or(0))
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
        Ok(self.committer.submit(Op::Put { key: keys::encode(primary, secondary, key), value }))
    }

    fn submit_remove(&self, primary: &str, secondary: &str, key: &str) -> io::Result<Completion> {
        validate(primary, secondary, Some(key), "remove")?;
        Ok(self.committer.submit(Op::Delete { key: keys::encode(primary, secondary, key) }))
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
        let meta = txn.open_table(META).map_err(StoreError::redb)?;
        let counter = meta.get(COMMIT_COUNTER).map_err(StoreError::redb)?.map(|v| v.value()).unwrap_or(0);
        let table = txn.open_table(KV).map_err(StoreError::redb)?;
        let mut entries = Vec::new();
        for entry in table.iter().map_err(StoreError::redb)? {
            let (k, v) = entry.map_err(StoreError::redb)?;
            let (primary, secondary, key) = keys::decode(k.value()).map_err(StoreError::redb)?;
            entries.push(Entry { primary, secondary, key, value: v.value().to_vec() });
        }
        Ok(Snapshot { commit_counter: counter, entries })
    }

    /// Creates the store file at `path` holding exactly `snapshot`: every entry, and its
    /// commit counter, in one durable write transaction (restoring a backup). Refuses a file
    /// that already holds a store with data or commits.
    pub fn create_from_snapshot(path: &Path, snapshot: &Snapshot) -> Result<(), StoreError> {
        let db = redb::Database::create(path)
            .map_err(|source| StoreError::Open { path: path.to_path_buf(), source: Box::new(source) })?;
        let txn = db.begin_write().map_err(StoreError::redb)?;
        {
            let mut kv = txn.open_table(KV).map_err(StoreError::redb)?;
            let mut meta = txn.open_table(META).map_err(StoreError::redb)?;
            let counter = meta.get(COMMIT_COUNTER).map_err(StoreError::redb)?.map(|v| v.value()).unwrap_or(0);
            if counter != 0 || kv.first().map_err(StoreError::redb)?.is_some() {
                return Err(StoreError::Redb(format!("{} is not an empty store", path.display())));
            }
            for e in &snapshot.entries {
                validate(&e.primary, &e.secondary, Some(&e.key), "restore")?;
                let key = keys::encode(&e.primary, &e.secondary, &e.key);
                kv.insert(key.as_slice(), e.value.as_slice()).map_err(StoreError::redb)?;
            }
            meta.insert(COMMIT_COUNTER, snapshot.commit_counter).map_err(StoreError::redb)?;
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

//! Talking to the VSS server: the objects, the fenced put, and reading a mirror back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ldk_node::vss_client::client::VssClient;
use ldk_node::vss_client::error::VssError;
use ldk_node::vss_client::types::{GetObjectRequest, KeyValue, ListKeyVersionsRequest, PutObjectRequest};
use ldk_node::vss_client::util::retry::{RetryContext, RetryPolicy};
use serde::{Deserialize, Serialize};

use super::auth::VssKeys;
use super::{VssMirrorError, VssSetup};
use crate::backup::Workers;
use crate::config::Network;
use crate::mirror::writer::file_stem;
use crate::mirror::{MIRROR_DIR, MirrorContents, read_mirror};

/// A request that gets no answer within this is taken as failed (its outcome is then read
/// back before anything else is sent).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One generation of the mirror: a log (its header and segments of frames) and the snapshot it
/// begins with, as the stick's `.log` and `.snap` files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Generation {
    /// Random, 16 hex digits: names this generation's objects.
    pub id: String,
    /// The commit counter the snapshot holds and the log begins after.
    pub base: u64,
    /// The snapshot's chunks, and how many of them are on the server.
    pub chunks: u64,
    pub chunks_sent: u64,
    /// Segments of the log on the server.
    pub segments: u64,
    /// The log's bytes on the server (header and frames).
    pub log_bytes: u64,
    /// The last commit in the log (`base` when it has none).
    pub counter: u64,
}

impl Generation {
    pub(super) fn snapshot_complete(&self) -> bool {
        self.chunks > 0 && self.chunks_sent == self.chunks
    }
}

/// The `head` object: which node and history the mirror holds and its generations, oldest
/// first (at most two: the one whose snapshot is complete, and a newer one whose snapshot is
/// still going up). Sealed like every value; rewritten by every put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Head {
    pub node_id: String,
    pub lineage_id: String,
    /// The device that wrote it ([`super::VssDevice`]).
    pub writer: String,
    pub generations: Vec<Generation>,
    /// When this head was written (Unix seconds).
    pub written_at: u64,
}

impl Head {
    /// The last commit on the server.
    pub(super) fn counter(&self) -> u64 {
        self.generations.last().map_or(0, |g| g.counter)
    }
}

/// A head as opened, and its bytes as stored (to recognise a put of our own).
pub(super) type StoredHead = (Head, Vec<u8>);

/// The object names' labels.
pub(super) fn header_label(generation: &str) -> String {
    format!("header/{generation}")
}
pub(super) fn chunk_label(generation: &str, i: u64) -> String {
    format!("chunk/{generation}/{i}")
}
pub(super) fn segment_label(generation: &str, j: u64) -> String {
    format!("segment/{generation}/{j}")
}
const HEAD: &str = "head";

/// No retries inside the client: the writer retries itself, after reading back what a failed
/// put did.
struct NoRetry;

impl RetryPolicy for NoRetry {
    type E = VssError;
    fn next_delay(&self, _context: &RetryContext<Self::E>) -> Option<Duration> {
        None
    }
}

/// A put's failure.
#[derive(Debug)]
pub(super) enum PutError {
    /// The server refused the version: someone else wrote (or our own put whose answer was
    /// lost was applied).
    Conflict,
    /// Anything else: its outcome is unknown; the head's bytes as sent.
    Failed(VssMirrorError, Vec<u8>),
}

/// A connection to the server, used from one thread (it has its own small runtime).
pub(super) struct Remote {
    client: VssClient<NoRetry>,
    /// The client's own HTTP client: asked again when a request failed, for the reason the VSS
    /// client's error leaves out.
    http: reqwest::Client,
    pub(super) keys: VssKeys,
    url: String,
    runtime: tokio::runtime::Runtime,
}

impl Remote {
    pub(super) fn connect(setup: &VssSetup) -> Result<Remote, VssMirrorError> {
        let keys = VssKeys::derive(&setup.seed, setup.config.network)?;
        let mut http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(pem) = &setup.certificate {
            // Pinned: this certificate is the only one trusted.
            let certificate = reqwest::Certificate::from_pem(pem)
                .map_err(|e| VssMirrorError::Settings(format!("the server's certificate: {e}")))?;
            http = http.tls_built_in_root_certs(false).add_root_certificate(certificate).https_only(true);
        }
        let http = http.build().map_err(|e| VssMirrorError::Settings(format!("the HTTP client: {e}")))?;
        let headers = Arc::new(keys.headers(&setup.auth)?);
        let client = VssClient::from_client_and_headers(setup.url.clone(), http.clone(), NoRetry, headers);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| VssMirrorError::Settings(format!("no runtime: {e}")))?;
        Ok(Remote { client, http, keys, url: setup.url.clone(), runtime })
    }

    fn error(&self, e: VssError) -> VssMirrorError {
        match e {
            VssError::AuthError(detail) => VssMirrorError::Auth { url: self.url.clone(), detail },
            // The client keeps only reqwest's top-level words, which name the URL and not why:
            // the server is asked once more, directly, for the reason (refused, timed out, a
            // certificate that is not the pinned one).
            VssError::InternalError(detail) if detail.starts_with("error sending request") => {
                VssMirrorError::Unreachable { url: self.url.clone(), detail: self.why_unreachable() }
            }
            VssError::InternalError(detail) => VssMirrorError::Unreachable { url: self.url.clone(), detail },
            VssError::InternalServerError(detail) => VssMirrorError::Unreachable {
                url: self.url.clone(),
                detail: format!("the server failed: {detail}"),
            },
            other => VssMirrorError::Unreachable { url: self.url.clone(), detail: other.to_string() },
        }
    }

    /// Why the server cannot be reached, in the words of the deepest error.
    fn why_unreachable(&self) -> String {
        // Built inside the runtime: reqwest arms its timeout when the request is made.
        let answer =
            self.runtime.block_on(async { self.http.post(format!("{}/getObject", self.url)).send().await });
        match answer {
            Ok(_) => "no answer to the last request (it answers again now)".into(),
            Err(e) => {
                let mut source: &dyn std::error::Error = &e;
                while let Some(deeper) = source.source() {
                    source = deeper;
                }
                if e.is_timeout() {
                    format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
                } else {
                    source.to_string()
                }
            }
        }
    }

    /// The store's global version and its head (opened, and as stored).
    pub(super) fn state(&self) -> Result<(i64, Option<StoredHead>), VssMirrorError> {
        let store_id = self.keys.store_id.clone();
        let listed = self.runtime.block_on(self.client.list_key_versions(&ListKeyVersionsRequest {
            store_id: store_id.clone(),
            key_prefix: None,
            page_size: Some(0),
            page_token: None,
        }));
        let version = listed.map_err(|e| self.error(e))?.global_version.unwrap_or(0);
        let head = match self.get_raw(HEAD)? {
            None => None,
            Some(sealed) => {
                let plain = self.keys.open(&self.keys.name(HEAD), &sealed)?;
                let head: Head = serde_json::from_slice(&plain)
                    .map_err(|e| VssMirrorError::Damaged(format!("its head: {e}")))?;
                Some((head, sealed))
            }
        };
        Ok((version, head))
    }

    fn get_raw(&self, label: &str) -> Result<Option<Vec<u8>>, VssMirrorError> {
        let request = GetObjectRequest { store_id: self.keys.store_id.clone(), key: self.keys.name(label) };
        match self.runtime.block_on(self.client.get_object(&request)) {
            Ok(response) => Ok(response.value.map(|kv| kv.value)),
            Err(VssError::NoSuchKeyError(_)) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The object `label`, opened; missing is damage.
    pub(super) fn get(&self, label: &str) -> Result<Vec<u8>, VssMirrorError> {
        let sealed =
            self.get_raw(label)?.ok_or_else(|| VssMirrorError::Damaged(format!("{label} is missing")))?;
        self.keys.open(&self.keys.name(label), &sealed)
    }

    /// Writes `items` (label, plain value), deletes `deletes` (labels of objects that exist)
    /// and writes `head`, in one transaction, if the store's version is still `version`.
    /// Returns the head's bytes as stored.
    pub(super) fn put(
        &self,
        version: i64,
        items: &[(String, Vec<u8>)],
        deletes: &[String],
        head: &Head,
    ) -> Result<Vec<u8>, PutError> {
        let sealed_head = self.seal_head(head).map_err(|e| PutError::Failed(e, Vec::new()))?;
        let mut transaction_items = Vec::with_capacity(items.len() + 1);
        for (label, plain) in items {
            let key = self.keys.name(label);
            let value = self.keys.seal(&key, plain).map_err(|e| PutError::Failed(e, Vec::new()))?;
            transaction_items.push(KeyValue { key, version: -1, value });
        }
        transaction_items.push(KeyValue {
            key: self.keys.name(HEAD),
            version: -1,
            value: sealed_head.clone(),
        });
        let delete_items = deletes
            .iter()
            .map(|label| KeyValue { key: self.keys.name(label), version: -1, value: Vec::new() })
            .collect();
        let request = PutObjectRequest {
            store_id: self.keys.store_id.clone(),
            global_version: Some(version),
            transaction_items,
            delete_items,
        };
        match self.runtime.block_on(self.client.put_object(&request)) {
            Ok(_) => Ok(sealed_head),
            Err(VssError::ConflictError(_)) => Err(PutError::Conflict),
            Err(e) => Err(PutError::Failed(self.error(e), sealed_head)),
        }
    }

    fn seal_head(&self, head: &Head) -> Result<Vec<u8>, VssMirrorError> {
        let plain = serde_json::to_vec(head).map_err(|e| VssMirrorError::Damaged(e.to_string()))?;
        self.keys.seal(&self.keys.name(HEAD), &plain)
    }
}

/// Whether `store` may write to the remote mirror `setup` names (checked before the node
/// starts, so that a second device never runs a node whose state another one writes): `Ok`
/// when the server holds nothing of this node, or this store's own history no more than one
/// commit ahead; [`VssMirrorError::OtherHistory`], [`VssMirrorError::Ahead`] or
/// [`VssMirrorError::WrongSeed`] otherwise. An unreachable server is an error too: the caller
/// decides to go on without it.
pub fn check_vss(setup: &VssSetup, store: &crate::store::Store) -> Result<(), VssMirrorError> {
    let identity = store
        .identity()
        .map_err(|e| VssMirrorError::Mirror(crate::mirror::MirrorError::Store(e.to_string())))?;
    let counter = store
        .commit_counter()
        .map_err(|e| VssMirrorError::Mirror(crate::mirror::MirrorError::Store(e.to_string())))?;
    let device = super::VssDevice::load_or_create(&setup.config.data_dir)
        .map_err(|e| VssMirrorError::Settings(format!("this device's record for VSS: {e}")))?;
    let remote = Remote::connect(setup)?;
    let (version, head) = remote.state()?;
    super::writer::judge(
        head.as_ref().map(|(h, _)| h),
        &setup.node_id,
        &identity.lineage_id,
        counter,
        &device,
        version,
    )
}

impl VssMirrorError {
    /// Whether this error means another device's (or a later) state is on the server: the node
    /// must not run on this card. Anything else leaves the node running on the card alone.
    pub fn refuses(&self) -> bool {
        matches!(
            self,
            VssMirrorError::Conflict { .. }
                | VssMirrorError::OtherDevice { .. }
                | VssMirrorError::OtherHistory { .. }
                | VssMirrorError::Ahead { .. }
                | VssMirrorError::WrongSeed
        )
    }
}

/// The plain facts of the remote mirror of the node `setup` is for, without reading it all:
/// `(commit counter, when last written (Unix seconds), whether its state is restorable)`, or
/// `None` when the server holds nothing of this node. For the OLED's restore offer.
pub fn vss_head(setup: &VssSetup) -> Result<Option<(u64, u64, bool)>, VssMirrorError> {
    let remote = Remote::connect(setup)?;
    Ok(remote.state()?.1.map(|(head, _)| {
        let restorable = head.generations.iter().any(Generation::snapshot_complete);
        (head.counter(), head.written_at, restorable)
    }))
}

/// A remote mirror read back.
#[derive(Debug, Clone)]
pub struct VssContents {
    /// The state, ready to restore as a backup.
    pub mirror: MirrorContents,
    /// Where it came from: record it with [`super::record_takeover`] once it is restored, so
    /// that this card may take over writing the node's state.
    pub takeover: super::Takeover,
}

/// Reads the remote mirror of the node `setup.seed` gives on `network` back: the generations
/// are fetched, written as the stick's files into a private temporary directory and read with
/// the stick's reader ([`read_mirror`]): the same chain rules and checks, and a result that
/// restores as a backup.
pub fn read_vss(
    setup: &VssSetup,
    network: Network,
    workers: &Workers,
) -> Result<VssContents, VssMirrorError> {
    let remote = Remote::connect(setup)?;
    let node_id = setup.seed.node_id(network).map_err(|e| VssMirrorError::Settings(e.to_string()))?;
    let (version, head) = remote.state()?;
    let Some((head, _)) = head else { return Err(VssMirrorError::Nothing(setup.url.clone())) };
    if head.node_id != node_id {
        return Err(VssMirrorError::WrongSeed);
    }
    let dir = TempDir::new()?;
    let files = dir.0.join(MIRROR_DIR);
    for generation in &head.generations {
        let stem = file_stem(&node_id, &head.lineage_id, generation.base);
        let mut log = remote.get(&header_label(&generation.id))?;
        for j in 0..generation.segments {
            log.extend_from_slice(&remote.get(&segment_label(&generation.id, j))?);
        }
        write_private(&files.join(format!("{stem}.log")), &log)?;
        if generation.snapshot_complete() {
            let mut snap = Vec::new();
            for i in 0..generation.chunks {
                snap.extend_from_slice(&remote.get(&chunk_label(&generation.id, i))?);
            }
            write_private(&files.join(format!("{stem}.snap")), &snap)?;
        }
    }
    let contents = read_mirror(&dir.0, &setup.seed, network, workers)?;
    // The server's head says how far the mirror reached: fewer commits read back means objects
    // are missing or were rolled back.
    if contents.contents.header.commit_counter < head.counter() {
        return Err(VssMirrorError::Damaged(format!(
            "its head says commit {} but its objects reach commit {}",
            head.counter(),
            contents.contents.header.commit_counter
        )));
    }
    Ok(VssContents { mirror: contents, takeover: super::Takeover { writer: head.writer.clone(), version } })
}

/// A directory only this process reads (0700), removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, VssMirrorError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| VssMirrorError::Settings(format!("no random name: {e}")))?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("boltbox-vss-{name}"));
        let io = |e: std::io::Error| VssMirrorError::Settings(format!("a temporary directory: {e}"));
        std::fs::DirBuilder::new().mode(0o700).create(&path).map_err(io)?;
        std::fs::DirBuilder::new().mode(0o700).create(path.join(MIRROR_DIR)).map_err(io)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), VssMirrorError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |e: std::io::Error| VssMirrorError::Settings(format!("writing {}: {e}", path.display()));
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)
}

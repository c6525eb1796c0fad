//! The backup file: a plain header and a chunked, authenticated-encrypted body (docs/BACKUP.md).
//!
//! ```text
//! magic "BOLTBKUP" | version u16 BE | header length u32 BE | header (JSON) | chunk 0 | chunk 1 | ...
//! ```
//!
//! Everything before the first chunk (the "prefix") is the associated data of every chunk, so a
//! changed header byte fails authentication. Chunk `i` is ChaCha20-Poly1305 over at most
//! `chunk_size` plaintext bytes with the 16-byte tag appended, under the nonce
//! `i (u64 BE) | 0 0 0 | last` where `last` is 1 only for the final chunk: reordered chunks fail
//! (wrong index), and a file cut after any chunk but the last fails (no chunk claims to be
//! last). The key is HKDF-SHA256 of the 64-byte BIP39 seed with the file's random salt and a
//! label of its own; a second label gives a key check in the header that tells a wrong seed
//! from a damaged file. Chunks are sealed and opened in parallel on the executor's workers.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::BackupError;
use crate::config::{Network, NodeConfig};
use crate::seed::Seed;
use crate::store::{Entry, Snapshot};

/// The first eight bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"BOLTBKUP";
/// The format version this code writes. Version 1 (no lineage id) is still read.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest version this code reads.
const OLDEST_VERSION: u16 = 1;
/// The largest backup file read (a store with a mainnet network graph is tens of MiB).
pub const MAX_BACKUP_BYTES: u64 = 1 << 30;
/// Plaintext bytes per chunk: small enough that sealing one takes well under a millisecond on
/// a Pi (the runtime's workers stay responsive), large enough that the 16-byte tags cost 0.02%.
pub const CHUNK_SIZE: u32 = 64 * 1024;
/// ChaCha20-Poly1305's tag.
pub(crate) const TAG_LEN: usize = 16;
/// A file's random HKDF salt.
pub(crate) const SALT_LEN: usize = 32;
/// The key check in a header.
pub(crate) const KEY_CHECK_LEN: usize = 16;
/// Bytes before the header: magic, version, header length.
pub const FIXED_LEN: usize = 8 + 2 + 4;
/// The longest header read: a header is a few hundred bytes; anything longer is not one of ours.
pub const MAX_HEADER_LEN: usize = 64 * 1024;
/// The largest chunk a header may declare: bounds the memory of one chunk in flight.
const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Chunks sealed or opened at once: bounds the memory of results not yet consumed.
const IN_FLIGHT: usize = 32;
/// HKDF labels: one for the body key, one for the key check. Versioned with the format.
const KEY_LABEL: &[u8] = b"boltbox backup v1: body key";
const CHECK_LABEL: &[u8] = b"boltbox backup v1: key check";

/// The plain header: readable without the seed, authenticated by every chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    /// The Bitcoin network of the node.
    pub network: Network,
    /// The node id (hex) the seed gives on that network.
    pub node_id: String,
    /// The store's lineage (32 hex digits; none in version 1 files): commit counters compare
    /// only within one lineage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage_id: Option<String>,
    /// The store's commit counter of the snapshot: a larger one is a newer state within the
    /// lineage.
    pub commit_counter: u64,
    /// When the snapshot was taken (Unix time, seconds, UTC).
    pub created_at: u64,
    /// The boltbox version that wrote the file.
    pub boltbox_version: String,
    /// Always "chacha20poly1305".
    pub cipher: String,
    /// Always "hkdf-sha256".
    pub kdf: String,
    /// The HKDF salt (hex, 32 bytes), random per file: every file has its own key.
    pub salt: String,
    /// HKDF output under its own label (hex, 16 bytes): tells a wrong seed from damage.
    pub key_check: String,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Plaintext bytes in all.
    pub plain_bytes: u64,
}

impl BackupHeader {
    /// Number of chunks: the plaintext cut into `chunk_size` pieces, at least one.
    pub fn chunks(&self) -> u64 {
        self.plain_bytes.div_ceil(u64::from(self.chunk_size.max(1))).max(1)
    }

    /// The encrypted body's length: the plaintext and one tag per chunk; none if it does not
    /// fit in 64 bits (a header no writer made).
    pub fn body_bytes(&self) -> Option<u64> {
        self.chunks().checked_mul(TAG_LEN as u64)?.checked_add(self.plain_bytes)
    }

    /// The first eight characters of the node id, as in file names.
    pub fn node_id8(&self) -> String {
        self.node_id.chars().take(8).collect()
    }

    /// Checks the values a reader relies on: the node id is a compressed public key in hex, the
    /// lineage 32 hex digits, the version text short and printable, the sizes within bounds.
    fn validate(&self, version: u16) -> Result<(), BackupError> {
        let bad = |what: String| Err(BackupError::BadHeader(what));
        let hex = |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(&self.node_id, 66) {
            return bad("node_id is not a node id (66 hex digits)".into());
        }
        match (&self.lineage_id, version) {
            (Some(lineage), _) if !hex(lineage, 32) => return bad("lineage_id is not 32 hex digits".into()),
            (None, v) if v >= 2 => return bad("lineage_id is missing".into()),
            _ => {}
        }
        if self.boltbox_version.len() > 32 || !self.boltbox_version.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("boltbox_version is not a version".into());
        }
        if self.cipher != "chacha20poly1305" || self.kdf != "hkdf-sha256" {
            return bad("unknown cipher or kdf".into());
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return bad(format!("chunk size {} is implausible", self.chunk_size));
        }
        unhex(&self.salt, SALT_LEN, "salt")?;
        unhex(&self.key_check, KEY_CHECK_LEN, "key_check")?;
        match self.body_bytes() {
            Some(body) if body <= MAX_BACKUP_BYTES => Ok(()),
            _ => bad(format!("{} plaintext bytes is more than a backup may have", self.plain_bytes)),
        }
    }
}

/// What a backup holds, decrypted and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupContents {
    /// The plain header.
    pub header: BackupHeader,
    /// The node's config as it was, without secrets.
    pub config: NodeConfig,
    /// Every store entry of one committed state, with its commit counter.
    pub snapshot: Snapshot,
}

/// The tokio runtime whose workers seal and open chunks, and how to wait for them. The
/// backup's caller is a plain thread (the appliance's backup worker, the CLI), never a task.
#[derive(Debug, Clone)]
pub struct Workers(pub tokio::runtime::Handle);

impl Workers {
    /// Runs `job(0..count)` on the runtime, at most [`IN_FLIGHT`] at once, and hands the
    /// results to `each` in index order.
    fn map_ordered<T: Send + 'static>(
        &self,
        count: u64,
        job: Arc<dyn Fn(u64) -> T + Send + Sync>,
        mut each: impl FnMut(u64, T) -> Result<(), BackupError>,
    ) -> Result<(), BackupError> {
        let mut pending = VecDeque::with_capacity(IN_FLIGHT);
        let mut next = 0;
        for i in 0..count {
            let job = Arc::clone(&job);
            pending.push_back(self.0.spawn(async move { job(i) }));
            if pending.len() == IN_FLIGHT {
                self.collect(&mut pending, &mut next, &mut each)?;
            }
        }
        while !pending.is_empty() {
            self.collect(&mut pending, &mut next, &mut each)?;
        }
        Ok(())
    }

    fn collect<T>(
        &self,
        pending: &mut VecDeque<tokio::task::JoinHandle<T>>,
        next: &mut u64,
        each: &mut impl FnMut(u64, T) -> Result<(), BackupError>,
    ) -> Result<(), BackupError> {
        let Some(task) = pending.pop_front() else { return Ok(()) };
        let out = self.0.block_on(task).map_err(|e| BackupError::Workers(e.to_string()))?;
        each(*next, out)?;
        *next += 1;
        Ok(())
    }
}

/// The per-file key and key check, from the seed and the file's salt.
fn derive_keys(seed: &Seed, salt: &[u8]) -> ([u8; 32], [u8; KEY_CHECK_LEN]) {
    seed_keys(seed, salt, KEY_LABEL, CHECK_LABEL)
}

/// A file's key and key check: HKDF-SHA256 of the 64-byte BIP39 seed with the file's `salt`,
/// expanded under `key_label` and `check_label` (each kind of file has labels of its own).
pub(crate) fn seed_keys(
    seed: &Seed,
    salt: &[u8],
    key_label: &[u8],
    check_label: &[u8],
) -> ([u8; 32], [u8; KEY_CHECK_LEN]) {
    let hkdf = Hkdf::<Sha256>::new(Some(salt), &seed.to_seed_bytes());
    let mut key = [0u8; 32];
    let mut check = [0u8; KEY_CHECK_LEN];
    // Both lengths are far below HKDF-SHA256's limit of 8160 bytes.
    hkdf.expand(key_label, &mut key).unwrap_or_else(|_| unreachable!("32 bytes of HKDF output"));
    hkdf.expand(check_label, &mut check).unwrap_or_else(|_| unreachable!("16 bytes of HKDF output"));
    (key, check)
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::from(n)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(text: &str, len: usize, field: &str) -> Result<Vec<u8>, BackupError> {
    let bad = || BackupError::BadHeader(format!("{field} is not {len} bytes of hex"));
    if text.len() != 2 * len {
        return Err(bad());
    }
    let digit = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => Ok(high << 4 | low),
            _ => Err(bad()),
        })
        .collect()
}

/// The chunk boundaries of `plain_bytes` plaintext bytes.
fn chunk_range(i: u64, chunk_size: u32, plain_bytes: u64) -> (usize, usize) {
    let start = i * u64::from(chunk_size);
    let end = (start + u64::from(chunk_size)).min(plain_bytes);
    (start as usize, end as usize)
}

/// What is being written: the snapshot, the node it belongs to and its config.
#[derive(Debug)]
pub struct BackupInput<'a> {
    /// The node's seed: the key is derived from it; the seed itself is not written.
    pub seed: &'a Seed,
    /// The node's config; secrets are removed before it is written.
    pub config: &'a NodeConfig,
    /// The node id (hex).
    pub node_id: &'a str,
    /// The store's lineage.
    pub lineage_id: &'a str,
    /// One committed state of the store.
    pub snapshot: &'a Snapshot,
    /// When the snapshot was taken (Unix seconds).
    pub created_at: u64,
}

/// Writes the backup of `input` to `out` and returns (the header, bytes written). `progress`
/// gets the share of chunks written, 0..=100.
pub fn write_backup(
    input: &BackupInput<'_>,
    out: &mut dyn Write,
    workers: &Workers,
    progress: &mut dyn FnMut(u8),
) -> Result<(BackupHeader, u64), BackupError> {
    let plain = Arc::new(encode_payload(&input.config.without_secrets(), input.snapshot)?);
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| BackupError::Random(e.to_string()))?;
    let (key, check) = derive_keys(input.seed, &salt);
    let header = BackupHeader {
        network: input.config.network,
        node_id: input.node_id.to_string(),
        lineage_id: Some(input.lineage_id.to_string()),
        commit_counter: input.snapshot.commit_counter,
        created_at: input.created_at,
        boltbox_version: env!("CARGO_PKG_VERSION").to_string(),
        cipher: "chacha20poly1305".into(),
        kdf: "hkdf-sha256".into(),
        salt: hex(&salt),
        key_check: hex(&check),
        chunk_size: CHUNK_SIZE,
        plain_bytes: plain.len() as u64,
    };
    let prefix: Arc<[u8]> = encode_prefix(&header)?.into();
    let io = |source| BackupError::Io { what: "writing the backup".into(), source };
    out.write_all(&prefix).map_err(io)?;
    let mut written = prefix.len() as u64;

    let chunks = header.chunks();
    let (chunk_size, plain_bytes) = (header.chunk_size, header.plain_bytes);
    let cipher = Arc::new(ChaCha20Poly1305::new(&key.into()));
    let aad = Arc::clone(&prefix);
    let seal = Arc::new(move |i: u64| -> Result<Vec<u8>, chacha20poly1305::Error> {
        let (start, end) = chunk_range(i, chunk_size, plain_bytes);
        let mut buf = Vec::with_capacity(end - start + TAG_LEN);
        buf.extend_from_slice(&plain[start..end]);
        let tag =
            cipher.encrypt_inout_detached(&nonce(i, i + 1 == chunks), &aad, buf.as_mut_slice().into())?;
        buf.extend_from_slice(&tag);
        Ok(buf)
    });
    workers.map_ordered(chunks, seal, |i, sealed| {
        let sealed = sealed.map_err(|_| BackupError::Encrypt)?;
        out.write_all(&sealed).map_err(io)?;
        written += sealed.len() as u64;
        progress(((i + 1) * 100 / chunks) as u8);
        Ok(())
    })?;
    out.flush().map_err(io)?;
    Ok((header, written))
}

fn encode_prefix(header: &BackupHeader) -> Result<Vec<u8>, BackupError> {
    let json = serde_json::to_vec(header).map_err(|e| BackupError::BadHeader(e.to_string()))?;
    let mut prefix = Vec::with_capacity(FIXED_LEN + json.len());
    prefix.extend_from_slice(MAGIC);
    prefix.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    prefix.extend_from_slice(&(json.len() as u32).to_be_bytes());
    prefix.extend_from_slice(&json);
    Ok(prefix)
}

/// The checked header of the backup file at `path`, read from its first bytes: a regular file
/// only, never through a symlink, never more than the header's bound (files on a stick are
/// untrusted).
pub fn read_header_of(path: &std::path::Path) -> Result<BackupHeader, BackupError> {
    let bound = (FIXED_LEN + MAX_HEADER_LEN) as u64;
    let (prefix, len) = crate::files::read_untrusted_prefix(path, bound).map_err(|e| BackupError::Io {
        what: format!("reading {}", path.display()),
        source: match e {
            crate::files::UntrustedError::Io(source) => source,
            other => std::io::Error::other(other.to_string()),
        },
    })?;
    read_header_prefix(&prefix, len).map(|(header, _)| header)
}

/// Sorts backups of one node from the oldest state to the newest. Within one store lineage a
/// larger commit counter is the newer state, whatever the clock said when each was made: a Pi
/// has no real-time clock, and a backup made before time sync carries a wrong date. Lineages
/// (a new one begins only when the owner starts the node on an empty store) are ordered by
/// their newest backup's creation time; version 1 files, which have none, count as one.
pub fn sort_by_state<T>(backups: &mut [(T, BackupHeader)]) {
    let mut newest: std::collections::HashMap<Option<String>, u64> = std::collections::HashMap::new();
    for (_, header) in backups.iter() {
        let at = newest.entry(header.lineage_id.clone()).or_insert(0);
        *at = (*at).max(header.created_at);
    }
    backups.sort_by_cached_key(|(_, header)| {
        let lineage_newest = newest.get(&header.lineage_id).copied().unwrap_or(0);
        (lineage_newest, header.lineage_id.clone(), header.commit_counter, header.created_at)
    });
}

/// Reads the plain header of a backup file (no seed needed) and the length of the prefix that
/// precedes the chunks. Checks the magic, the version, the header's own values, and that the
/// file is exactly as long as the header says.
pub fn read_header(file: &[u8]) -> Result<(BackupHeader, usize), BackupError> {
    read_header_prefix(file, file.len() as u64)
}

/// [`read_header`] from the first bytes of a file of `file_len` bytes (at least the prefix:
/// [`FIXED_LEN`] + [`MAX_HEADER_LEN`] bytes are always enough), so that a stick's backups can be
/// listed without reading them whole.
pub fn read_header_prefix(prefix: &[u8], file_len: u64) -> Result<(BackupHeader, usize), BackupError> {
    if prefix.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(BackupError::NotABackup);
    }
    let Some(fixed) = prefix.get(..FIXED_LEN) else {
        return Err(BackupError::Truncated { expected: FIXED_LEN as u64, found: file_len });
    };
    let version = u16::from_be_bytes([fixed[8], fixed[9]]);
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(BackupError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let header_len = u32::from_be_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]) as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(BackupError::BadHeader(format!("header length {header_len} is implausible")));
    }
    let prefix_len = FIXED_LEN + header_len;
    let Some(json) = prefix.get(FIXED_LEN..prefix_len) else {
        return Err(BackupError::Truncated { expected: prefix_len as u64, found: file_len });
    };
    let header: BackupHeader =
        serde_json::from_slice(json).map_err(|e| BackupError::BadHeader(e.to_string()))?;
    header.validate(version)?;
    let expected =
        header.body_bytes().and_then(|body| body.checked_add(prefix_len as u64)).unwrap_or(u64::MAX);
    if file_len < expected {
        return Err(BackupError::Truncated { expected, found: file_len });
    }
    if file_len > expected {
        return Err(BackupError::TrailingData { expected, found: file_len });
    }
    Ok((header, prefix_len))
}

/// Decrypts and checks a whole backup file with `seed`. `progress` gets the share of chunks
/// opened, 0..=100.
pub fn open_backup(
    file: Arc<Vec<u8>>,
    seed: &Seed,
    workers: &Workers,
    progress: &mut dyn FnMut(u8),
) -> Result<BackupContents, BackupError> {
    let (header, prefix_len) = read_header(&file)?;
    let salt = unhex(&header.salt, SALT_LEN, "salt")?;
    let (key, check) = derive_keys(seed, &salt);
    if hex(&check) != header.key_check {
        return Err(BackupError::WrongSeed);
    }
    let chunks = header.chunks();
    let (chunk_size, plain_bytes) = (header.chunk_size, header.plain_bytes);
    let cipher = Arc::new(ChaCha20Poly1305::new(&key.into()));
    let data = Arc::clone(&file);
    let open = Arc::new(move |i: u64| -> Option<Vec<u8>> {
        let (start, end) = chunk_range(i, chunk_size, plain_bytes);
        // Each chunk before `i` carries one tag. The file's length was checked against the
        // header, so these ranges are inside it; `get` keeps a mistake an error, not a panic.
        let at = prefix_len + start + usize::try_from(i).ok()? * TAG_LEN;
        let sealed = data.get(at..at + (end - start) + TAG_LEN)?;
        let (body, tag) = sealed.split_at(end - start);
        let tag = Tag::try_from(tag).ok()?;
        let mut buf = body.to_vec();
        let aad = data.get(..prefix_len)?;
        cipher
            .decrypt_inout_detached(&nonce(i, i + 1 == chunks), aad, buf.as_mut_slice().into(), &tag)
            .ok()?;
        Some(buf)
    });
    // Bounded: the header's length was checked against the file, which was read into memory.
    let mut plain = Vec::with_capacity(usize::try_from(plain_bytes).unwrap_or(0));
    workers.map_ordered(chunks, open, |i, opened| {
        let opened = opened.ok_or(BackupError::Tampered { chunk: i, chunks })?;
        plain.extend_from_slice(&opened);
        progress(((i + 1) * 100 / chunks) as u8);
        Ok(())
    })?;
    let (config, entries) = decode_payload(&plain)?;
    let snapshot = Snapshot { commit_counter: header.commit_counter, entries };
    Ok(BackupContents { header, config, snapshot })
}

/// The plaintext: the config (TOML, secrets removed) and every entry.
///
/// ```text
/// config length u32 BE | config TOML | entry count u64 BE |
///   per entry: primary length u16 BE | primary | secondary length u16 BE | secondary |
///              key length u16 BE | key | value length u32 BE | value
/// ```
fn encode_payload(config: &NodeConfig, snapshot: &Snapshot) -> Result<Vec<u8>, BackupError> {
    let toml = toml::to_string(config).map_err(|e| BackupError::Payload(format!("config: {e}")))?;
    let size: usize = snapshot
        .entries
        .iter()
        .map(|e| 2 + e.primary.len() + 2 + e.secondary.len() + 2 + e.key.len() + 4 + e.value.len())
        .sum();
    let mut out = Vec::with_capacity(4 + toml.len() + 8 + size);
    put_bytes32(&mut out, toml.as_bytes())?;
    out.extend_from_slice(&(snapshot.entries.len() as u64).to_be_bytes());
    for e in &snapshot.entries {
        for name in [&e.primary, &e.secondary, &e.key] {
            let len = u16::try_from(name.len())
                .map_err(|_| BackupError::Payload(format!("name of {} bytes", name.len())))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        put_bytes32(&mut out, &e.value)?;
    }
    Ok(out)
}

fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), BackupError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| BackupError::Payload(format!("value of {} bytes", bytes.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// A cursor over the authenticated plaintext. It was written by this code, so a malformed one
/// means a bug or a format mismatch, reported as [`BackupError::Payload`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BackupError> {
        if self.0.len() < n {
            return Err(BackupError::Payload("ends early".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<usize, BackupError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32(&mut self) -> Result<usize, BackupError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self) -> Result<u64, BackupError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self, len: usize) -> Result<String, BackupError> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| BackupError::Payload("a name is not UTF-8".into()))
    }
}

fn decode_payload(plain: &[u8]) -> Result<(NodeConfig, Vec<Entry>), BackupError> {
    let mut r = Reader(plain);
    let len = r.u32()?;
    let toml = r.string(len)?;
    let config: NodeConfig =
        toml::from_str(&toml).map_err(|e| BackupError::Payload(format!("config: {e}")))?;
    let count = r.u64()?;
    let mut entries = Vec::new();
    for _ in 0..count {
        let n = r.u16()?;
        let primary = r.string(n)?;
        let n = r.u16()?;
        let secondary = r.string(n)?;
        let n = r.u16()?;
        let key = r.string(n)?;
        let n = r.u32()?;
        let value = r.take(n)?.to_vec();
        entries.push(Entry { primary, secondary, key, value });
    }
    if !r.0.is_empty() {
        return Err(BackupError::Payload(format!("{} bytes after the last entry", r.0.len())));
    }
    Ok((config, entries))
}

//! The mirror's commit log file: a plain header, then one sealed frame per store commit.
//!
//! ```text
//! magic "BOLTMLOG" | version u16 BE | header length u32 BE | header (JSON) | frame | frame | ...
//! frame: sealed length u32 BE | ChaCha20-Poly1305(plaintext) with its 16-byte tag
//! plaintext: commit counter u64 BE | written at (Unix s) u64 BE | op count u32 BE | op ...
//! op: 1 (put) | key length u32 BE | key | value length u32 BE | value
//!     2 (delete) | key length u32 BE | key
//! ```
//!
//! The key is HKDF-SHA256 of the 64-byte BIP39 seed with the file's random salt and a label of
//! the mirror's own (a second label gives the key check, as in backups). The nonce is the
//! frame's commit counter: within one file (one key, one writer) each counter is sealed once
//! (a retried card commit is not sealed again: the mirror is lost and a new file begun).
//! Everything before the first frame is every frame's associated data, so a frame cannot be
//! moved to another file (another lineage or base). A frame is the commit it carries or
//! nothing: a power cut in the middle of an append leaves a torn last frame, which fails its
//! length or its tag, and the log is read up to the frame before it (that commit's writers
//! were never released); a bad frame with an authentic one after it is damage, an error.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use serde::{Deserialize, Serialize};

use super::MirrorError;
use crate::backup::file::{KEY_CHECK_LEN, SALT_LEN, TAG_LEN, hex, seed_keys, unhex};
use crate::config::Network;
use crate::seed::Seed;

/// The first eight bytes of every log file.
pub const MAGIC: &[u8; 8] = b"BOLTMLOG";
/// The format version written and read.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes before the header: magic, version, header length.
const FIXED_LEN: usize = 8 + 2 + 4;
/// The longest header read.
const MAX_HEADER_LEN: usize = 16 * 1024;
/// The largest frame read: a batch is at most about 32 MiB of values (the committer's limit).
pub const MAX_FRAME: usize = 64 << 20;
const KEY_LABEL: &[u8] = b"boltbox mirror v1: log key";
const CHECK_LABEL: &[u8] = b"boltbox mirror v1: key check";

/// The plain header: readable without the seed, authenticated by every frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogHeader {
    /// The node's network.
    pub network: Network,
    /// The node id (hex).
    pub node_id: String,
    /// The store's lineage (32 hex digits).
    pub lineage_id: String,
    /// The commit counter this log continues from: its first frame is `base_counter + 1`.
    pub base_counter: u64,
    /// When the log was begun (Unix seconds).
    pub created_at: u64,
    /// The HKDF salt (hex, 32 bytes), random per file.
    pub salt: String,
    /// HKDF output under the check label (hex, 16 bytes): tells a wrong seed from damage.
    pub key_check: String,
}

/// One operation of a commit, as the store's committer applied it. Keys are the store's own
/// encoding (`primary \0 secondary \0 key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOp {
    /// Set a key.
    Put {
        /// The encoded key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The encoded key.
        key: Vec<u8>,
    },
}

/// One commit read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The store's commit counter after this commit.
    pub counter: u64,
    /// When it was written (Unix seconds).
    pub written_at: u64,
    /// Its operations, in order.
    pub ops: Vec<LogOp>,
}

fn keys(seed: &Seed, salt: &[u8]) -> ([u8; 32], [u8; KEY_CHECK_LEN]) {
    seed_keys(seed, salt, KEY_LABEL, CHECK_LABEL)
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

/// Seals frames of one log file.
pub struct LogSealer {
    cipher: ChaCha20Poly1305,
    prefix: Vec<u8>,
}

impl std::fmt::Debug for LogSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSealer").finish_non_exhaustive()
    }
}

impl LogSealer {
    /// A new log's header (with a fresh salt) and its sealer.
    pub fn new(
        seed: &Seed,
        network: Network,
        node_id: &str,
        lineage_id: &str,
        base_counter: u64,
    ) -> Result<(LogHeader, LogSealer), MirrorError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| MirrorError::Random(e.to_string()))?;
        let (key, check) = keys(seed, &salt);
        let header = LogHeader {
            network,
            node_id: node_id.to_string(),
            lineage_id: lineage_id.to_string(),
            base_counter,
            created_at: crate::unix_now(),
            salt: hex(&salt),
            key_check: hex(&check),
        };
        let prefix = encode_prefix(&header)?;
        Ok((header, LogSealer { cipher: ChaCha20Poly1305::new(&key.into()), prefix }))
    }

    /// The bytes the file begins with.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The sealed frame (length and ciphertext) of the commit that brings the store to
    /// `counter`.
    pub fn seal(&self, counter: u64, written_at: u64, ops: &[LogOp]) -> Result<Vec<u8>, MirrorError> {
        let mut buf = encode_plain(counter, written_at, ops)?;
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(counter), &self.prefix, buf.as_mut_slice().into())
            .map_err(|_| MirrorError::Encrypt)?;
        buf.extend_from_slice(&tag);
        let len = u32::try_from(buf.len()).map_err(|_| MirrorError::TooLarge(buf.len()))?;
        if buf.len() > MAX_FRAME {
            return Err(MirrorError::TooLarge(buf.len()));
        }
        let mut frame = Vec::with_capacity(4 + buf.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&buf);
        Ok(frame)
    }
}

fn encode_prefix(header: &LogHeader) -> Result<Vec<u8>, MirrorError> {
    let json = serde_json::to_vec(header).map_err(|e| MirrorError::BadLog(e.to_string()))?;
    let mut prefix = Vec::with_capacity(FIXED_LEN + json.len());
    prefix.extend_from_slice(MAGIC);
    prefix.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    prefix.extend_from_slice(&(json.len() as u32).to_be_bytes());
    prefix.extend_from_slice(&json);
    Ok(prefix)
}

fn len32(n: usize) -> Result<[u8; 4], MirrorError> {
    u32::try_from(n).map(u32::to_be_bytes).map_err(|_| MirrorError::TooLarge(n))
}

fn encode_plain(counter: u64, written_at: u64, ops: &[LogOp]) -> Result<Vec<u8>, MirrorError> {
    let size: usize = ops
        .iter()
        .map(|op| match op {
            LogOp::Put { key, value } => 9 + key.len() + value.len(),
            LogOp::Delete { key } => 5 + key.len(),
        })
        .sum();
    let mut out = Vec::with_capacity(20 + size + TAG_LEN);
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(&written_at.to_be_bytes());
    out.extend_from_slice(&len32(ops.len())?);
    for op in ops {
        match op {
            LogOp::Put { key, value } => {
                out.push(1);
                out.extend_from_slice(&len32(key.len())?);
                out.extend_from_slice(key);
                out.extend_from_slice(&len32(value.len())?);
                out.extend_from_slice(value);
            }
            LogOp::Delete { key } => {
                out.push(2);
                out.extend_from_slice(&len32(key.len())?);
                out.extend_from_slice(key);
            }
        }
    }
    Ok(out)
}

/// A cursor over untrusted plaintext: every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok()
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_be_bytes(a))
    }
}

fn decode_plain(plain: &[u8]) -> Option<Frame> {
    let mut r = Reader(plain);
    let counter = r.u64()?;
    let written_at = r.u64()?;
    let count = r.u32()?;
    // Each op takes at least five bytes: a count beyond that is not ours.
    let mut ops = Vec::with_capacity(count.min(plain.len() / 5));
    for _ in 0..count {
        let tag = r.take(1)?[0];
        let key_len = r.u32()?;
        let key = r.take(key_len)?.to_vec();
        ops.push(match tag {
            1 => {
                let value_len = r.u32()?;
                LogOp::Put { key, value: r.take(value_len)?.to_vec() }
            }
            2 => LogOp::Delete { key },
            _ => return None,
        });
    }
    r.0.is_empty().then_some(Frame { counter, written_at, ops })
}

/// Reads the plain header of a log (no seed needed) and the length of the prefix.
pub fn read_header(file: &[u8]) -> Result<(LogHeader, usize), MirrorError> {
    if file.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(MirrorError::BadLog("not a boltbox mirror log".into()));
    }
    let fixed = file.get(..FIXED_LEN).ok_or_else(|| MirrorError::BadLog("truncated header".into()))?;
    let version = u16::from_be_bytes([fixed[8], fixed[9]]);
    if version != FORMAT_VERSION {
        return Err(MirrorError::BadLog(format!(
            "log format version {version}, this boltbox reads {FORMAT_VERSION}"
        )));
    }
    let header_len = u32::from_be_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]) as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(MirrorError::BadLog(format!("header length {header_len} is implausible")));
    }
    let prefix_len = FIXED_LEN + header_len;
    let json =
        file.get(FIXED_LEN..prefix_len).ok_or_else(|| MirrorError::BadLog("truncated header".into()))?;
    let header: LogHeader = serde_json::from_slice(json).map_err(|e| MirrorError::BadLog(e.to_string()))?;
    let is_hex = |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hex(&header.node_id, 66)
        || !is_hex(&header.lineage_id, 32)
        || !is_hex(&header.salt, 2 * SALT_LEN)
        || !is_hex(&header.key_check, 2 * KEY_CHECK_LEN)
    {
        return Err(MirrorError::BadLog("a header field is not what a writer makes".into()));
    }
    Ok((header, prefix_len))
}

/// What a log holds, read with the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogContents {
    /// Its header.
    pub header: LogHeader,
    /// The frames, counters `base + 1`, `base + 2`, ... without a gap, up to the first frame
    /// that is torn, fails its tag or breaks the sequence.
    pub frames: Vec<Frame>,
    /// Bytes after the last good frame up to the last one that is not zero (a torn append, or
    /// nothing: the zeros after it are room grown ahead).
    pub torn_bytes: usize,
    /// Where the last good frame ends (the header's end when there is none).
    pub end: usize,
}

/// Opens a whole log with `seed`.
pub fn open_log(file: &[u8], seed: &Seed) -> Result<LogContents, MirrorError> {
    let (header, prefix_len) = read_header(file)?;
    let salt = unhex(&header.salt, SALT_LEN, "salt").map_err(|e| MirrorError::BadLog(e.to_string()))?;
    let (key, check) = keys(seed, &salt);
    if hex(&check) != header.key_check {
        return Err(MirrorError::WrongSeed);
    }
    let cipher = ChaCha20Poly1305::new(&key.into());
    let aad = file.get(..prefix_len).unwrap_or_default();
    let mut frames = Vec::new();
    let mut at = prefix_len;
    let mut expected = header.base_counter;
    // The frame at `at` with counter `counter`, if it is whole and authentic; and its length.
    let frame_at = |at: usize, counter: u64| -> Option<(Frame, usize)> {
        let b = file.get(at..at.checked_add(4)?)?;
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if !(TAG_LEN..=MAX_FRAME).contains(&len) {
            return None;
        }
        let sealed = file.get(at + 4..at + 4 + len)?;
        let (body, tag) = sealed.split_at(len - TAG_LEN);
        let tag = Tag::try_from(tag).ok()?;
        let mut buf = body.to_vec();
        cipher.decrypt_inout_detached(&nonce(counter), aad, buf.as_mut_slice().into(), &tag).ok()?;
        decode_plain(&buf).filter(|f| f.counter == counter).map(|f| (f, 4 + len))
    };
    while let Some(next) = expected.checked_add(1) {
        match frame_at(at, next) {
            Some((frame, len)) => {
                frames.push(frame);
                expected = next;
                at += len;
            }
            None => {
                // A torn append is the last thing in a log. A bad frame with an authentic one
                // after it is damage in the middle: what follows would be lost silently.
                let b = file.get(at..at.saturating_add(4)).unwrap_or_default();
                let len =
                    if b.len() == 4 { u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize } else { 0 };
                let after = at.saturating_add(4).saturating_add(len);
                if len >= TAG_LEN && next.checked_add(1).is_some_and(|n| frame_at(after, n).is_some()) {
                    return Err(MirrorError::BadLog(format!("the frame of commit {next} is damaged")));
                }
                break;
            }
        }
    }
    // The log is grown in zeroed steps ahead of its frames: only bytes that are not zero
    // after the last frame are a torn append.
    let rest = file.get(at..).unwrap_or_default();
    let torn_bytes = rest.iter().rposition(|b| *b != 0).map_or(0, |last| last + 1);
    Ok(LogContents { header, frames, torn_bytes, end: at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> String {
        format!("02{}", "a".repeat(64))
    }
    const LINEAGE: &str = "0123456789abcdef0123456789abcdef";

    fn ops(n: u8) -> Vec<LogOp> {
        vec![
            LogOp::Put { key: vec![b'k', n], value: vec![n; usize::from(n)] },
            LogOp::Delete { key: vec![b'd', n] },
        ]
    }

    fn log_of(seed: &Seed, base: u64, frames: u8) -> Vec<u8> {
        let (_, sealer) = LogSealer::new(seed, Network::Regtest, &node(), LINEAGE, base).expect("sealer");
        let mut file = sealer.prefix().to_vec();
        for i in 1..=frames {
            file.extend(sealer.seal(base + u64::from(i), 1_700_000_000, &ops(i)).expect("seal"));
        }
        file
    }

    #[test]
    fn frames_read_back_in_order_with_their_counters() {
        let seed = Seed::generate();
        let file = log_of(&seed, 41, 3);
        let log = open_log(&file, &seed).expect("open");
        assert_eq!(log.header.base_counter, 41);
        assert_eq!(log.frames.iter().map(|f| f.counter).collect::<Vec<_>>(), [42, 43, 44]);
        assert_eq!(log.frames[2].ops, ops(3));
        assert_eq!(log.torn_bytes, 0);
    }

    #[test]
    fn zeros_after_the_frames_are_room_grown_ahead_and_a_torn_frame_in_them_is_torn() {
        let seed = Seed::generate();
        let whole = log_of(&seed, 0, 3);
        let mut grown = whole.clone();
        grown.resize(whole.len() + 4096, 0);
        let log = open_log(&grown, &seed).expect("open");
        assert_eq!((log.frames.len(), log.torn_bytes), (3, 0), "zeros are room, not a torn append");
        // The third frame cut in its write, in zeroed room: two frames and its bytes torn.
        let two = log_of(&seed, 0, 2).len();
        let mut torn = whole[..whole.len() - 10].to_vec();
        torn.resize(whole.len() + 4096, 0);
        let log = open_log(&torn, &seed).expect("open");
        assert_eq!(log.frames.len(), 2);
        assert!(log.torn_bytes > 0 && log.torn_bytes <= whole.len() - 10 - two, "{}", log.torn_bytes);
    }

    #[test]
    fn a_torn_or_altered_last_frame_ends_the_log_before_it() {
        let seed = Seed::generate();
        let whole = log_of(&seed, 0, 3);
        let two = open_log(&log_of(&seed, 0, 2), &seed).expect("open").frames.len();
        assert_eq!(two, 2);
        // Every cut inside the third frame reads as two frames.
        let third_start = {
            let mut f = whole.clone();
            let log = open_log(&f, &seed).expect("open");
            assert_eq!(log.frames.len(), 3);
            f.truncate(f.len() - 1);
            let cut = open_log(&f, &seed).expect("open");
            assert_eq!(cut.frames.len(), 2, "a frame missing its last byte is torn");
            f.len() + 1 - cut.torn_bytes
        };
        for end in third_start..whole.len() {
            let log = open_log(&whole[..end], &seed).expect("open");
            assert_eq!(log.frames.len(), 2, "cut at {end}");
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 20;
        flipped[last] ^= 1;
        assert_eq!(open_log(&flipped, &seed).expect("open").frames.len(), 2);
    }

    #[test]
    fn a_damaged_frame_in_the_middle_is_an_error_not_a_shorter_log() {
        let seed = Seed::generate();
        let whole = log_of(&seed, 0, 3);
        let (_, prefix_len) = read_header(&whole).expect("header");
        // A byte inside the first frame's ciphertext: the frames after it are authentic.
        let mut bad = whole.clone();
        bad[prefix_len + 10] ^= 1;
        assert!(matches!(open_log(&bad, &seed), Err(MirrorError::BadLog(_))), "{:?}", open_log(&bad, &seed));
    }

    #[test]
    fn another_seed_or_a_frame_from_another_log_is_refused() {
        let seed = Seed::generate();
        let file = log_of(&seed, 0, 2);
        assert!(matches!(open_log(&file, &Seed::generate()), Err(MirrorError::WrongSeed)));
        // The second log's frames moved behind the first's header: not this file's frames.
        let other = log_of(&seed, 0, 2);
        let (_, prefix_len) = read_header(&file).expect("header");
        let (_, other_prefix) = read_header(&other).expect("header");
        let mut spliced = file[..prefix_len].to_vec();
        spliced.extend_from_slice(&other[other_prefix..]);
        assert!(open_log(&spliced, &seed).expect("open").frames.is_empty());
    }

    #[test]
    fn garbage_is_an_error_or_an_empty_log_never_a_panic() {
        let seed = Seed::generate();
        let file = log_of(&seed, 7, 2);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut bad = file.clone();
            let at = (rng % bad.len() as u64) as usize;
            bad[at] = (rng >> 32) as u8;
            bad.truncate(((rng >> 8) % (file.len() as u64 + 1)) as usize);
            if let Ok(log) = open_log(&bad, &seed) {
                assert!(log.frames.len() <= 2);
            }
        }
    }
}

//! The remote mirror: the store's commits also acknowledged by LDK's Versioned Storage Service
//! (VSS, the `vss-server` crate over PostgreSQL) before the writers are released, so that a
//! lost box (theft, fire) takes no channel state with it (docs/MIRROR.md, "The remote mirror").
//!
//! The remote mirror writes exactly what the stick's mirror writes — a snapshot (a backup file)
//! and a log of sealed commit frames ([`super::log`]) — as VSS objects instead of files:
//!
//! - `header(gen)`: the log's header; `chunk(gen, i)`: the snapshot's bytes, 1 MiB each;
//!   `segment(gen, j)`: one or more of the log's frames, in order;
//! - `head`: which generations make up the mirror now ([`Head`]), rewritten by every put.
//!
//! Object names are keyed hashes and every value is sealed (ChaCha20-Poly1305, a key from the
//! seed, the name as associated data): the server sees opaque names and ciphertext only.
//!
//! **One writer.** Every put carries VSS's `global_version` (the store's compare-and-swap
//! counter) and a freshly sealed `head`, in one server transaction. A put from anyone else
//! moves the version, so the next put of ours is refused with a conflict; a put whose answer
//! was lost is judged by reading `head` back (our bytes: it was applied). A conflict we did not
//! cause, a `head` of another store lineage, or one ahead of the card, is
//! [`VssStatus::Refused`]: another device writes this node's state, and the mirror stops.
//!
//! Reading back ([`read_vss`]) rebuilds the generations as the stick's files in a private
//! temporary directory and reads them with the stick's reader, so that both mirrors share one
//! chain logic and one set of checks.

mod auth;
mod remote;
mod writer;

use std::time::Duration;

pub use remote::{VssContents, check_vss, read_vss, vss_head};
pub(crate) use writer::VssMirror;

use crate::backup::Workers;
use crate::config::NodeConfig;
use crate::seed::Seed;

/// The longest the committer waits for VSS to acknowledge a commit before it calls the remote
/// mirror lost and releases the writers on the card's commit alone (the writer goes on
/// trying, and catches up). A LAN or WAN round trip and PostgreSQL's commit take 2–200 ms.
pub const VSS_WAIT: Duration = Duration::from_secs(5);
/// How far behind the remote mirror may fall while VSS is away: the commits waiting to go up
/// are kept in memory up to this many bytes; past it they are dropped and a new snapshot is
/// sent once VSS is back (a resync).
pub const MAX_BEHIND_BYTES: usize = 64 << 20;
/// A generation whose log has grown past this many bytes, or [`COMPACT_SEGMENTS`] segments, is
/// followed by a new one (a new snapshot): a restore then fetches a bounded number of objects.
pub const COMPACT_BYTES: u64 = 64 << 20;
/// See [`COMPACT_BYTES`].
pub const COMPACT_SEGMENTS: u64 = 20_000;

/// In the data dir: the remote mirror refused this device while its node ran (another device
/// took over the node). Its text is the reason. While it is there the node is not started
/// (after a reboot too): the other device's state is the node's now, and this card's is behind
/// it. A restore (of any source) removes it.
pub const REFUSED_FILE: &str = "vss-refused";

/// Records in `data_dir` that the remote mirror refused this device for `reason` (0600,
/// durable).
pub fn mark_refused(data_dir: &std::path::Path, reason: &str) -> std::io::Result<()> {
    crate::files::write_private_atomic(&data_dir.join(REFUSED_FILE), reason.as_bytes())
}

/// The reason recorded by [`mark_refused`], if the mark is there (a mark that cannot be read
/// counts as one: fail closed).
pub fn refused(data_dir: &std::path::Path) -> Option<String> {
    match crate::files::read_untrusted(&data_dir.join(REFUSED_FILE), 4096) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(crate::files::UntrustedError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("the remote mirror's refusal mark cannot be read ({e}): restore to go on")),
    }
}

/// In the data dir: this device as a writer of the node's state on VSS ([`VssDevice`]).
pub const DEVICE_FILE: &str = "vss-device";

/// This device as a writer of the node's state on VSS (`vss-device` in the data dir, 0600):
/// its id goes into every head it writes, so that a device finds whether another one wrote
/// there since (see [`check_vss`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VssDevice {
    /// Random, 16 hex digits.
    pub id: String,
    /// Set by a restore from VSS: the head this card's state came from. Until this device's
    /// first put, it may follow that writer, and only while nothing was written after it.
    #[serde(default)]
    pub takeover: Option<Takeover>,
}

/// The head a card was restored from: its writer and the store's version when it was read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Takeover {
    /// The device that wrote it.
    pub writer: String,
    /// VSS's `global_version` then.
    pub version: i64,
}

impl VssDevice {
    /// The record in `data_dir`, made (with a new id) when there is none.
    pub fn load_or_create(data_dir: &std::path::Path) -> std::io::Result<VssDevice> {
        let path = data_dir.join(DEVICE_FILE);
        match crate::files::read_untrusted(&path, 4096) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(crate::files::UntrustedError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut random = [0u8; 8];
                getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
                let device =
                    VssDevice { id: random.iter().map(|b| format!("{b:02x}")).collect(), takeover: None };
                device.save(data_dir)?;
                Ok(device)
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// Writes the record into `data_dir` (0600, atomically).
    pub fn save(&self, data_dir: &std::path::Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::files::write_private_atomic(&data_dir.join(DEVICE_FILE), &bytes)
    }
}

/// Records in `data_dir` that its store was just restored from VSS at `takeover`: this device
/// may then take over writing the node's state, if no other device writes after it.
pub fn record_takeover(data_dir: &std::path::Path, takeover: &Takeover) -> std::io::Result<()> {
    let mut device = VssDevice::load_or_create(data_dir)?;
    device.takeover = Some(takeover.clone());
    device.save(data_dir)
}

/// How the remote mirror proves who it is to the VSS server.
#[derive(Debug, Clone)]
pub enum VssAuth {
    /// vss-server's signature authorizer: an ECDSA signature, over a constant, the key and the
    /// time, by a secp256k1 key derived from the seed (`Authorization: <pubkey><sig><time>`,
    /// vss-auth-impls `signature.rs`). The server's user is that key.
    Signature,
    /// vss-server's JWT authorizer: `Authorization: Bearer <token>` (RS256, issued by the
    /// operator's own issuer), the token read from this file (not readable by group or others)
    /// at each connection, so that a renewed token is taken up. The token is never logged.
    BearerFile(std::path::PathBuf),
}

/// What the remote mirror writes with.
#[derive(Clone)]
pub struct VssSetup {
    /// The server's base URL, its `/vss` path included (`https://host:8080/vss`).
    pub url: String,
    /// How the mirror authenticates.
    pub auth: VssAuth,
    /// A self-hosted server's certificate (PEM): with it, TLS trusts that certificate alone
    /// (pinning) instead of the system's roots.
    pub certificate: Option<Vec<u8>>,
    /// The node's seed: every key comes from it; it is never sent.
    pub seed: Seed,
    /// The node's config, written without secrets into each snapshot (as in backups).
    pub config: NodeConfig,
    /// The node id (hex).
    pub node_id: String,
    /// Where a snapshot's chunks are sealed.
    pub workers: Workers,
}

impl std::fmt::Debug for VssSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VssSetup")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Where the remote mirror stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum VssStatus {
    /// No remote mirror is set.
    Off,
    /// A new snapshot is going up and the mirror does not reach the current state yet.
    Syncing {
        /// Share of the snapshot sent, 0..=100.
        percent: u8,
        /// Commits the card has that VSS does not.
        behind: u64,
    },
    /// Every commit acknowledged is on VSS too.
    InSync {
        /// The commit counter of the last commit mirrored.
        counter: u64,
    },
    /// VSS is unreachable, slow or failing: the node runs on the card alone; the commits are
    /// sent when it is back (up to [`MAX_BEHIND_BYTES`], a new snapshot past that).
    Lost {
        /// Why, in words.
        reason: String,
        /// Since when (Unix seconds).
        since: u64,
        /// Commits the card has that VSS does not.
        behind: u64,
    },
    /// The mirror stopped for good: VSS holds this node's state from another device (or a
    /// later one than the card's). Nothing more is written there.
    Refused {
        /// Why, in words.
        reason: String,
    },
}

/// What can go wrong with the remote mirror.
#[derive(Debug, thiserror::Error)]
pub enum VssMirrorError {
    /// The server could not be reached, or failed.
    #[error("VSS at {url}: {detail}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// The error, in words.
        detail: String,
    },
    /// The server refused the mirror's credentials.
    #[error("VSS at {url} refused the credentials: {detail}")]
    Auth {
        /// The server's URL.
        url: String,
        /// The server's reason.
        detail: String,
    },
    /// The URL or the pinned certificate cannot be used.
    #[error("the VSS settings: {0}")]
    Settings(String),
    /// Another device wrote this node's state to the same VSS store. (Each of these messages
    /// says the essential in its first 63 characters: three lines of the OLED.)
    #[error(
        "another device runs this node (it wrote to VSS after this one): this box stops it; restore from VSS to \
         move the node back here (the store's version moved from {expected} to {found} without this box)"
    )]
    Conflict {
        /// The version we expected.
        expected: i64,
        /// The version found.
        found: i64,
    },
    /// Another device wrote this node's state to VSS last (a second box that took the node over,
    /// or this card is older than the node's move to another box).
    #[error(
        "another device runs this node (it wrote to VSS last): restore from VSS to move the node back here, \
         or stop the other device (VSS is at commit {counter}, written {written_at} UTC)"
    )]
    OtherDevice {
        /// The commit counter VSS holds.
        counter: u64,
        /// When it was written (UTC, text).
        written_at: String,
    },
    /// VSS holds another history of this node (another store lineage).
    #[error(
        "VSS has this node's state from another device: restore from it (boltbox restore --vss) or stop that \
         device (VSS is at commit {counter}, written {written_at} UTC)"
    )]
    OtherHistory {
        /// The commit counter VSS holds.
        counter: u64,
        /// When it was written (UTC, text).
        written_at: String,
    },
    /// VSS holds a later state of the card's own history: the card went back.
    #[error(
        "VSS is ahead of this card ({remote} vs {card}): restore from VSS, the card's channel state is old \
         (boltbox restore --vss)"
    )]
    Ahead {
        /// The remote's commit counter.
        remote: u64,
        /// The card's.
        card: u64,
    },
    /// An object could not be opened: another seed, or damage.
    #[error("a VSS object does not open with this seed (another node's, or damaged)")]
    WrongSeed,
    /// An object is damaged or missing.
    #[error("the remote mirror is damaged: {0}")]
    Damaged(String),
    /// Nothing of this node on the server.
    #[error("no mirror of this node on VSS at {0}")]
    Nothing(String),
    /// The generations fetched could not be read back.
    #[error(transparent)]
    Mirror(#[from] super::MirrorError),
}

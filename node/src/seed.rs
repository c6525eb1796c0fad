//! The wallet seed: BIP39, 24 words, created on first start and kept 0600 in the data dir.
//!
//! The words are never logged: [`Seed`]'s `Debug` is redacted, and the only way to the words
//! is [`Seed::words`], for the appliance's on-OLED seed flow.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ldk_node::bip39::Mnemonic;

/// The seed file's name in the data dir.
pub const SEED_FILE: &str = "seed.words";

/// What can go wrong with the seed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The seed file could not be read or written.
    #[error("seed file {path}: {source}")]
    Io {
        /// The seed file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The words are not a valid BIP39 mnemonic (the words themselves are not repeated here).
    #[error("not a valid BIP39 mnemonic: {0}")]
    Invalid(String),
    /// Only 24-word seeds are created or restored on the device.
    #[error("a seed must have 24 words, got {0}")]
    WordCount(usize),
    /// The seed file is readable by others.
    #[error("seed file {0} is readable by others (mode {1:o}); it must be 0600")]
    Permissions(PathBuf, u32),
    /// Restoring would replace a different existing seed.
    #[error("{0} already holds a different seed; refusing to overwrite it")]
    Exists(PathBuf),
}

/// The node's BIP39 seed.
#[derive(Clone)]
pub struct Seed {
    mnemonic: Mnemonic,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SeedError + '_ {
    move |source| SeedError::Io { path: path.to_path_buf(), source }
}

impl Seed {
    /// Parses 24 words (any whitespace between them).
    pub fn from_words(words: &str) -> Result<Self, SeedError> {
        let count = words.split_whitespace().count();
        if count != 24 {
            return Err(SeedError::WordCount(count));
        }
        let mnemonic = Mnemonic::parse(words.split_whitespace().collect::<Vec<_>>().join(" "))
            .map_err(|e| SeedError::Invalid(e.to_string()))?;
        Ok(Seed { mnemonic })
    }

    /// A new random 24-word seed (from the OS's random source).
    pub fn generate() -> Self {
        Seed { mnemonic: ldk_node::generate_entropy_mnemonic(Some(ldk_node::WordCount::Words24)) }
    }

    /// The words, in order, for the on-OLED seed flow.
    pub fn words(&self) -> Vec<&'static str> {
        self.mnemonic.words().collect()
    }

    /// The mnemonic, for the node's builder.
    pub(crate) fn mnemonic(&self) -> &Mnemonic {
        &self.mnemonic
    }

    /// The 64-byte BIP39 seed (no passphrase), from which other keys (e.g. the backup key) are
    /// derived.
    pub fn to_seed_bytes(&self) -> [u8; 64] {
        self.mnemonic.to_seed("")
    }

    /// The node id (hex) this seed gives on `network`, derived as ldk-node derives it: LDK's
    /// `KeysManager` on the private key of the BIP32 master key of the BIP39 seed. Lets a
    /// stopped node's backup and a restore name the node without starting it; the regtest
    /// backup test checks it against the running node's id.
    pub fn node_id(&self, network: crate::config::Network) -> Result<String, SeedError> {
        use ldk_node::bitcoin::bip32::Xpriv;
        use ldk_node::lightning::sign::{KeysManager, NodeSigner, Recipient};
        let xprv = Xpriv::new_master(network.to_bitcoin(), &self.to_seed_bytes())
            .map_err(|e| SeedError::Invalid(e.to_string()))?;
        // The starting time only seeds ephemeral keys; the node key does not depend on it.
        let keys = KeysManager::new(&xprv.private_key.secret_bytes(), 0, 0, false);
        let id = keys.get_node_id(Recipient::Node).map_err(|()| SeedError::Invalid("no node key".into()))?;
        Ok(id.to_string())
    }

    /// Reads the seed of `data_dir`, if there is one. Refuses a file others can read.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, SeedError> {
        let path = data_dir.join(SEED_FILE);
        // 24 words of at most 8 letters: anything much longer is not a seed file.
        let bytes = match crate::files::read_untrusted(&path, 4096) {
            Ok(bytes) => bytes,
            Err(crate::files::UntrustedError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(crate::files::UntrustedError::Io(e)) => return Err(io_err(&path)(e)),
            Err(other) => return Err(SeedError::Invalid(other.to_string())),
        };
        let text =
            String::from_utf8(bytes).map_err(|_| SeedError::Invalid("the seed file is not text".into()))?;
        let mode = std::fs::metadata(&path).map_err(io_err(&path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SeedError::Permissions(path, mode));
        }
        Self::from_words(&text).map(Some)
    }

    /// Stores the seed in `data_dir` (0600, written to a temporary file, synced, renamed).
    /// Storing the same seed again is a no-op; a different existing seed is never replaced.
    pub fn store(&self, data_dir: &Path) -> Result<(), SeedError> {
        let path = data_dir.join(SEED_FILE);
        if let Some(existing) = Self::load(data_dir)? {
            return if existing.mnemonic == self.mnemonic { Ok(()) } else { Err(SeedError::Exists(path)) };
        }
        crate::files::create_private_dir(data_dir).map_err(io_err(data_dir))?;
        let text = format!("{}\n", self.words().join(" "));
        crate::files::write_private_atomic(&path, text.as_bytes()).map_err(io_err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The BIP39 test vector's 24-word mnemonic (all-zero entropy).
    const ABANDON: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
        abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
        abandon art";

    #[test]
    fn a_new_seed_is_24_words_stored_0600_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Seed::load(dir.path()).expect("load").is_none());
        let seed = Seed::generate();
        seed.store(dir.path()).expect("store");
        assert_eq!(seed.words().len(), 24);
        let mode = std::fs::metadata(dir.path().join(SEED_FILE)).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Seed::load(dir.path()).expect("load").expect("stored");
        assert_eq!(again.words(), seed.words());
    }

    #[test]
    fn restoring_words_gives_the_same_seed_and_never_overwrites_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seed = Seed::from_words(ABANDON).expect("valid");
        seed.store(dir.path()).expect("store");
        seed.store(dir.path()).expect("same seed again is fine");
        let loaded = Seed::load(dir.path()).expect("load").expect("present");
        assert_eq!(loaded.to_seed_bytes(), seed.to_seed_bytes());
        let other = Seed::generate();
        assert!(matches!(other.store(dir.path()), Err(SeedError::Exists(_))));
    }

    #[test]
    fn bad_words_are_rejected_without_echoing_them() {
        let err = Seed::from_words("abandon ability").expect_err("too few");
        assert!(matches!(err, SeedError::WordCount(2)));
        let wrong = ABANDON.replace("art", "zoo");
        let err = Seed::from_words(&wrong).expect_err("bad checksum");
        assert!(!err.to_string().contains("abandon"), "{err}");
    }

    #[test]
    fn a_readable_seed_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        Seed::from_words(ABANDON).expect("valid").store(dir.path()).expect("store");
        let path = dir.path().join(SEED_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(Seed::load(dir.path()), Err(SeedError::Permissions(_, 0o644))));
    }

    #[test]
    fn debug_never_shows_the_words() {
        let seed = Seed::from_words(ABANDON).expect("valid");
        assert_eq!(format!("{seed:?}"), "Seed(<redacted>)");
    }

    mod arbitrary_input {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Any text (a restore.words file from a stick) is 24 valid words or an error that
            /// does not repeat it.
            #[test]
            fn any_text_is_a_seed_or_an_error_without_the_words(text in "([a-z]{3,8}[ \n\t]){0,30}|.{0,100}") {
                if let Err(e) = Seed::from_words(&text) {
                    let e = e.to_string();
                    for word in text.split_whitespace().filter(|w| w.len() > 3 && e.contains(*w)) {
                        // Only the message's own words may be there ("seed", "must"...): with
                        // the word replaced, the message still has it.
                        let other = Seed::from_words(&text.replace(word, "qxqxqx")).err().map(|e| e.to_string());
                        prop_assert!(other.is_some_and(|o| o.contains(word)), "{} repeats {}", e, word);
                    }
                }
            }
        }
    }
}

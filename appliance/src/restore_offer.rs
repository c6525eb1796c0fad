//! The first start with an empty data dir while a USB stick holds a backup of a node: the OLED
//! offers to restore it instead of creating a new node.
//!
//! The backup needs the seed, which two buttons cannot type: the owner writes the 24 words into
//! `boltbox-backups/restore.words` on the stick (next to the backups), as they would edit
//! `boltbox.toml`. The offer names the newest backup's node, age and commit counter (the stale
//! guard's facts); B shows the warning that channels changed since the backup get force-closed
//! by their peers; B again restores; holding A starts a new node instead. After a restore the
//! words file is deleted from the stick: the seed then lives only in the data dir (0600).
//!
//! [`find`] and [`OfferUi`] are pure or read-only; the supervisor runs the loop with the board.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use boltbox_board::{Button, Gesture};
use boltbox_node::backup::{self, BackupHeader, RestoreReport, Workers};
use boltbox_node::seed::SEED_FILE;
use boltbox_node::{Network, Seed};

use crate::backup::{STICK_DIR, find_stick};
use crate::config::AppConfig;
use crate::screens::{self, Rendered};

/// The seed words' file on the stick, in [`STICK_DIR`].
pub const WORDS_FILE: &str = "restore.words";

/// A backup that could be restored onto this empty data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The stick's name (for the log).
    pub stick: String,
    /// The backup file.
    pub file: PathBuf,
    /// Its plain header.
    pub header: BackupHeader,
    /// Where the seed words are expected.
    pub words: PathBuf,
}

/// The offer, if the data dir is empty and a stick holds a backup of a node on `config`'s
/// network: the newest by creation time (then commit counter).
pub fn find(config: &AppConfig) -> Option<Offer> {
    let data_dir = &config.node.data_dir;
    if data_dir.join(SEED_FILE).exists() || data_dir.join(boltbox_node::node::STORE_FILE).exists() {
        return None;
    }
    let stick = find_stick(&config.backup.sticks, config.eject_request().is_some()).ok()?;
    let dir = stick.path.join(STICK_DIR);
    let newest = newest_backup(&dir, config.node.network)?;
    Some(Offer { stick: stick.name, file: newest.0, header: newest.1, words: dir.join(WORDS_FILE) })
}

fn newest_backup(dir: &Path, network: Network) -> Option<(PathBuf, BackupHeader)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == backup::dir::EXTENSION))
        .filter_map(|p| {
            let bytes = std::fs::read(&p).ok()?;
            let (header, _) = backup::read_header(&bytes).ok()?;
            (header.network == network).then_some((p, header))
        })
        .max_by_key(|(_, h)| (h.created_at, h.commit_counter))
}

/// Reads the words, decrypts and checks the whole backup, restores it onto the empty data dir,
/// and deletes the words from the stick.
pub fn restore(config: &AppConfig, offer: &Offer, workers: &Workers) -> Result<RestoreReport, RestoreError> {
    let words = std::fs::read_to_string(&offer.words).map_err(|_| RestoreError::NoWords)?;
    let seed = Seed::from_words(&words).map_err(|_| RestoreError::BadWords)?;
    let file = std::fs::read(&offer.file).map_err(|e| RestoreError::Read(e.to_string()))?;
    let contents = backup::open_backup(Arc::new(file), &seed, workers, &mut |_| {})?;
    let report = backup::restore_backup(&config.node.data_dir, config.node.network, &contents, &seed)?;
    // The seed is in the data dir now; on the stick it would sit next to the backup it opens.
    if let Err(e) = std::fs::remove_file(&offer.words) {
        tracing::warn!(error = %e, "restored, but cannot delete {}: delete it by hand", offer.words.display());
    } else if let Some(dir) = offer.words.parent() {
        // Best effort: the deletion reaches the stick before the owner pulls it.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(report)
}

/// Why the restore did not happen, in words for the OLED (at most three lines of 21).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The words file is missing or unreadable.
    #[error("put the 24 seed words in {STICK_DIR}/{WORDS_FILE}")]
    NoWords,
    /// The file does not hold 24 valid BIP39 words.
    #[error("restore.words: not 24 valid seed words")]
    BadWords,
    /// The backup cannot be read.
    #[error("cannot read the backup: {0}")]
    Read(String),
    /// The backup refused: wrong seed, altered, not older...
    #[error("{0}")]
    Backup(#[from] boltbox_node::backup::BackupError),
}

/// What the owner decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restore the backup (after the warning).
    Restore,
    /// Start a new node.
    NewNode,
}

/// The offer's screens and buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferUi {
    /// The backup, and what the buttons do.
    Offer,
    /// The force-close warning; B again restores.
    Confirm,
    /// Restoring.
    Restoring,
    /// The restore failed; A goes back to the offer.
    Failed(String),
}

impl OfferUi {
    /// Takes a gesture; returns the decision it makes, if any. `words` says whether the words
    /// file is on the stick: without it B only repeats what to do.
    pub fn gesture(&mut self, gesture: Gesture, words: bool) -> Option<Decision> {
        match (&*self, gesture) {
            (OfferUi::Offer, Gesture::Long(Button::A)) => return Some(Decision::NewNode),
            (OfferUi::Offer, Gesture::Short(Button::B)) if words => *self = OfferUi::Confirm,
            (OfferUi::Confirm, Gesture::Short(Button::B)) => {
                *self = OfferUi::Restoring;
                return Some(Decision::Restore);
            }
            (OfferUi::Confirm | OfferUi::Failed(_), Gesture::Short(Button::A)) => *self = OfferUi::Offer,
            _ => {}
        }
        None
    }

    /// The frame for `offer`, `now` being the Unix time.
    pub fn screen(&self, offer: &Offer, words: bool, now: u64) -> Rendered {
        match self {
            OfferUi::Offer => {
                let age = Duration::from_secs(now.saturating_sub(offer.header.created_at));
                screens::restore_offer(offer.header.node_id8(), age, offer.header.commit_counter, words)
            }
            OfferUi::Confirm => screens::restore_confirm(),
            OfferUi::Restoring => screens::restore_progress(None),
            OfferUi::Failed(reason) => screens::restore_progress(Some(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b_then_b_restores_and_a_backs_out() {
        let mut ui = OfferUi::Offer;
        assert_eq!(ui.gesture(Gesture::Short(Button::B), true), None);
        assert_eq!(ui, OfferUi::Confirm, "the warning first");
        assert_eq!(ui.gesture(Gesture::Short(Button::A), true), None);
        assert_eq!(ui, OfferUi::Offer, "A backs out of the warning");
        ui.gesture(Gesture::Short(Button::B), true);
        assert_eq!(ui.gesture(Gesture::Short(Button::B), true), Some(Decision::Restore));
        assert_eq!(ui, OfferUi::Restoring);
        assert_eq!(ui.gesture(Gesture::Short(Button::A), true), None, "no way out while restoring");
    }

    #[test]
    fn without_the_words_b_does_nothing_and_only_holding_a_starts_a_new_node() {
        let mut ui = OfferUi::Offer;
        assert_eq!(ui.gesture(Gesture::Short(Button::B), false), None);
        assert_eq!(ui, OfferUi::Offer);
        for stray in [Gesture::Short(Button::A), Gesture::Long(Button::B), Gesture::BothHeld] {
            assert_eq!(ui.gesture(stray, true), None, "{stray:?}");
            assert_eq!(ui, OfferUi::Offer, "{stray:?}");
        }
        assert_eq!(ui.gesture(Gesture::Long(Button::A), false), Some(Decision::NewNode));
    }

    #[test]
    fn a_failure_goes_back_to_the_offer_on_a() {
        let mut ui = OfferUi::Failed("wrong seed".into());
        assert_eq!(ui.gesture(Gesture::Short(Button::B), true), None);
        assert!(matches!(ui, OfferUi::Failed(_)));
        ui.gesture(Gesture::Short(Button::A), true);
        assert_eq!(ui, OfferUi::Offer);
    }

    #[test]
    fn an_empty_data_dir_and_a_stick_with_backups_make_an_offer_of_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let sticks = dir.path().join("usb");
        let config = AppConfig::parse(&format!(
            "[node]\nnetwork = \"regtest\"\ndata_dir = \"{}\"\n[node.chain]\nsource = \"bitcoind\"\n\
             rpc_user = \"u\"\nrpc_password = \"p\"\n[board]\nboard = \"sim\"\n[backup]\nsticks = \"{}\"\n",
            data.display(),
            sticks.display()
        ))
        .expect("config");
        assert_eq!(find(&config), None, "no stick");
        let backups = sticks.join("sda1").join(STICK_DIR);
        std::fs::create_dir_all(&backups).expect("mkdir");
        assert_eq!(find(&config), None, "a stick without backups");
        std::fs::write(backups.join("junk.bbk"), b"not a backup").expect("junk");
        assert_eq!(find(&config), None, "files that are not backups are ignored");
    }
}

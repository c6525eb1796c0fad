//! The OLED screens: pure functions from data to a [`Rendered`] frame and caption.
//!
//! Every screen is laid out for a 0.96" 128x64 panel read at arm's length: a title bar in
//! small print, then at most four lines, headline values in a 20 px font, everything else at
//! least 13 px tall and bold. A 128x32 panel shows it in parts of whole lines ([`panel`]). The caption is the screen's name followed by each text line drawn,
//! so that a host on the link board can assert on what is shown without decoding pixels.
//!
//! - [`status`]: home, channels, earnings, accounts, network (with QR codes), system, alerts.
//! - [`dialogs`]: seed warning and words, shutdown, confirmations, backup, boot and config error.
//! - [`service`]: waiting, a store that needs the owner, the seed reminder, a node not saved.
//! - [`samples`]: sample data that `boltbox screens` and the golden tests render.
//! - [`panel`]: a screen on a 128x32 panel, a band of whole lines at a time.

mod dialogs;
mod draw;
pub mod panel;
pub mod samples;
mod service;
mod status;

use std::time::Duration;

use boltbox_board::Frame;

pub use dialogs::{
    SEED_WORDS_PER_PAGE, backup, backup_confirm, backup_unavailable, boot, config_error, mirror_confirm,
    restore_confirm, restore_offer, restore_progress, seed_page, seed_pages, seed_unavailable, seed_warning,
    shutdown, shutdown_confirm,
};
pub use draw::{bytes, clip, msat_as_sats, short_duration, thousands, wrap, wrap_lines};
pub use service::{
    BackupFacts, StateSource, StoreChoice, Waiting, empty_confirm, not_saved, restarting, seed_reminder,
    seed_skip_confirm, starting, store_choice, waiting,
};
pub use status::{
    accounts, alerts, chain_source, channels, earnings, funding, home, network, network_qr, node_uri,
    screensaver, system,
};

/// A drawn screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The picture.
    pub frame: Frame,
    /// The screen's name on the first line, then each text line shown on it.
    pub caption: String,
    /// The rows that something is drawn on, merged where things share a row, top to bottom:
    /// what a 128x32 panel may not cut through ([`panel`]).
    pub bands: Vec<panel::Band>,
}

/// Used and total amount of a resource, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// In use.
    pub used: u64,
    /// In all.
    pub total: u64,
}

impl Usage {
    /// The share in use, in whole percent (0 when the total is 0).
    pub fn percent(&self) -> u64 {
        (self.used.saturating_mul(100)).checked_div(self.total).unwrap_or(0)
    }
}

/// Facts about the machine for the system screen. Each is optional: whatever could not be read
/// is shown as "-" rather than hiding the screen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemInfo {
    /// SoC temperature in degrees Celsius.
    pub temperature_c: Option<f32>,
    /// One-minute load average.
    pub load_1m: Option<f32>,
    /// Memory in use and in all.
    pub memory: Option<Usage>,
    /// The data partition: in use and in all.
    pub disk: Option<Usage>,
    /// Worker threads of the node's executor.
    pub executor_workers: Option<usize>,
    /// Time since the last verified backup, none if there has never been one.
    pub last_backup_age: Option<Duration>,
}

/// Where a backup is, for the backup screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupProgress {
    /// Writing and verifying.
    Running {
        /// 0..=100.
        percent: u8,
        /// The stick written to (its name under the sticks directory), once chosen.
        stick: Option<String>,
    },
    /// Written, read back and verified.
    Succeeded {
        /// Size of the backup file.
        bytes: u64,
        /// How long it took.
        took: Duration,
        /// The stick it is on.
        stick: String,
        /// When it was taken, as the owner reads it ("14:02 UTC").
        at: String,
        /// The stick was unmounted (or there is nothing to unmount): it may be pulled now.
        ejected: bool,
        /// The stick is the live mirror's: it stays in (and mounted).
        mirror: bool,
    },
    /// Did not complete; `reason` says why in words the user can act on ("no USB stick found").
    /// Earlier backups are untouched.
    Failed {
        /// Why.
        reason: String,
    },
}

/// The frames of a safe shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownPhase {
    /// The node is stopping and state is being flushed.
    InProgress,
    /// Shutting down with no node or store open: nothing to save.
    NothingToSave,
    /// Everything is persisted and synced: the board may lose power.
    SafeToUnplug,
    /// Everything is persisted and synced; the service stopped, the board stays on (a restart,
    /// an update, a `systemctl stop`).
    Stopped,
}

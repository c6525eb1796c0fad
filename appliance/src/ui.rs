//! The UI: a pure state machine that owns which screen is shown and turns button gestures into
//! screen changes and requested [`Action`]s. No I/O and no clock: the caller passes the time
//! since start, the gestures recognised since the last tick and a [`Context`] with the data to
//! show, and gets back an [`Output`]: the frame, its caption, the contrast and the actions.
//!
//! Gestures (see the table in [`Ui::tick`]):
//! - A short: next status page (home, channels, earnings, network, system, alerts, home...).
//! - B short: the page's own action: next channel on channels, after the last one an on-chain
//!   address to fund the node ([`Action::FundingAddress`] asks the node for it); on network the
//!   big QR, then the chain source and what it learns, then back.
//! - On system, B short asks to make a USB stick the live mirror ([`Action::MirrorAsk`]).
//! - A question from the service ([`Context::mirror_ask`], "mirror to stick sda1?", asked by
//!   the gesture or by `boltbox mirror use`) takes the screen when it arrives: B short says yes,
//!   A short or `ask_timeout` no ([`Action::MirrorAnswer`]).
//! - A long: "press A again to shut down"; A short confirms ([`Action::Shutdown`]), B short or
//!   `confirm_timeout` cancels. Reachable from every screen but the shutdown itself.
//! - B long (on a status page): "press B again to back up"; B short confirms
//!   ([`Action::Backup`]) and shows the backup's progress, A short or the timeout cancels. While
//!   the caller says backups are unavailable, it shows "not available yet" instead.
//! - A+B held (on a status page): the seed warning; B short shows the words four at a time (B
//!   next page, A leave). The words come from the caller's [`SeedSource`] at each frame that
//!   shows them and are dropped right after drawing; the UI keeps only the page number. The
//!   seed pages go back home after `seed_timeout` without a press.
//!
//! - While the node is not simply running, the home page shows what the service is doing
//!   ([`Service`]): what it waits for, or a store that needs the owner. There B short restores a
//!   backup from a stick and B long starts on an empty store (or a new node), each behind a
//!   confirmation naming what it costs.
//! - Until the owner has seen the seed words once (or skipped them), the home page reminds them:
//!   B short asks to skip; reaching the last seed page counts as seen.
//!
//! Idle: `dim_after` without a gesture lowers the contrast; `blank_after` replaces the picture
//! with a [`screens::screensaver`] whose position moves every `shift_every`. A press while dim
//! or blank only wakes the display: the short or long press (or both-held) it becomes is
//! swallowed. A shutdown in progress is never dimmed.
//!
//! New alerts: an alert that was not there at the previous tick, arriving while the display is
//! dim or blank on a status page, switches to the alerts page and wakes the display, so that the
//! first thing the owner sees on coming back is what went wrong. While someone is using the
//! buttons (awake) the page never changes under their finger; the "!N" badge in the title bar
//! says there are alerts. Alerts present at the first tick are not new.

use std::net::IpAddr;
use std::time::Duration;

use boltbox_board::{Button, Frame, Gesture, PanelSize};
use boltbox_node::Status;

use crate::screens::panel::Band;
use crate::screens::{
    self, BackupFacts, BackupProgress, Rendered, ShutdownPhase, StoreChoice, SystemInfo, Waiting,
};

/// Timings and contrast levels of the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiConfig {
    /// Without a gesture for this long, the display dims.
    pub dim_after: Duration,
    /// Without a gesture for this long, the display blanks to the moving screensaver.
    pub blank_after: Duration,
    /// How often the screensaver moves.
    pub shift_every: Duration,
    /// Confirmation, warning and "not available" screens go back after this long.
    pub confirm_timeout: Duration,
    /// The seed pages go back home after this long without a press.
    pub seed_timeout: Duration,
    /// A question from the service (the mirror stick) is answered no after this long: the
    /// owner may have asked from the CLI and still have to walk to the device.
    pub ask_timeout: Duration,
    /// Contrast when awake (0..=255).
    pub bright: u8,
    /// Contrast when dim or blank.
    pub dim: u8,
    /// The panel the screens are drawn for: its QR codes and screensaver fit its rows (the
    /// display loop shows other screens a part at a time on 128x32, see `screens::panel`).
    pub panel: PanelSize,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            dim_after: Duration::from_secs(60),
            blank_after: Duration::from_secs(300),
            shift_every: Duration::from_secs(180),
            confirm_timeout: Duration::from_secs(10),
            seed_timeout: Duration::from_secs(120),
            ask_timeout: crate::mirror::ASK_WAIT,
            bright: 0xff,
            dim: 0x10,
            panel: PanelSize::Size128x64,
        }
    }
}

/// The status pages that A short cycles through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Page {
    /// Sync, balances, peers, channels.
    Home,
    /// One channel at a time.
    Channels,
    /// Routing fees and payments.
    Earnings,
    /// The accounts: how many, their total, the largest.
    Accounts,
    /// Address, port and node URI as a QR code.
    Network,
    /// Temperature, load, memory, disk, executor, backup age.
    System,
    /// Alert headlines.
    Alerts,
}

impl Page {
    /// The pages in cycle order.
    pub const ALL: [Page; 7] = [
        Page::Home,
        Page::Channels,
        Page::Earnings,
        Page::Accounts,
        Page::Network,
        Page::System,
        Page::Alerts,
    ];

    /// The page after this one, wrapping to home.
    pub fn next(self) -> Page {
        let i = Page::ALL.iter().position(|p| *p == self).unwrap_or(0);
        Page::ALL[(i + 1) % Page::ALL.len()]
    }
}

/// What is on the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// A status page.
    Page(Page),
    /// "Press A again to shut down".
    ShutdownConfirm,
    /// Shutting down, then "safe to unplug": final, gestures are ignored.
    ShuttingDown,
    /// "Press B again to back up".
    BackupConfirm,
    /// Backups are not available (yet).
    BackupUnavailable,
    /// A backup's progress or result.
    Backup,
    /// The warning before the seed words.
    SeedWarning,
    /// Page `n` (0-based) of the seed words.
    Seed(usize),
    /// "Restore the backup?": B restores ([`Action::Restore`]).
    RestoreConfirm,
    /// "Start on an empty store?" (or "new node?"): B starts ([`Action::StartEmpty`]).
    EmptyConfirm,
    /// "Skip the seed words?": B skips ([`Action::SeedSkipped`]).
    SeedSkipConfirm,
    /// "Mirror to stick …?": B makes it the mirror ([`Action::MirrorAnswer`]).
    MirrorConfirm,
}

/// What the UI asks the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The user confirmed a safe shutdown.
    Shutdown,
    /// The user confirmed a backup.
    Backup,
    /// The user confirmed restoring the offered backup.
    Restore,
    /// The user confirmed starting on an empty store (or a new node instead of the backup).
    StartEmpty,
    /// The user went back from a failed restore.
    Dismiss,
    /// The last page of the seed words was shown.
    SeedSeen,
    /// The user chose not to be reminded of the seed words.
    SeedSkipped,
    /// The funding screen is shown: the node should reveal an address for it.
    FundingAddress,
    /// The owner asked to choose a USB stick as the live mirror.
    MirrorAsk,
    /// The owner's answer to the service's question `ask` ([`crate::mirror::Ask::id`]).
    MirrorAnswer {
        /// Which question.
        ask: u64,
        /// B (yes) or A, a timeout (no).
        yes: bool,
    },
}

/// A backup offered on a first start with an empty data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The backup.
    pub backup: BackupFacts,
    /// Whether the seed words are on the stick (without them B only repeats what to do).
    pub words: bool,
}

/// What the service is doing, for the home page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service<'a> {
    /// The node runs: the home page shows its status.
    Running,
    /// ldk-node is starting.
    Starting,
    /// Waiting for something outside the process.
    Waiting(&'a Waiting),
    /// The data dir needs the owner.
    Store(&'a StoreChoice),
    /// A first start with a backup on a stick.
    Offer(&'a Offer),
    /// A restore runs (`None`) or failed (why).
    Restoring(Option<&'a str>),
}

/// How awake the display is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Idle {
    /// Full contrast, the current screen.
    Awake,
    /// Low contrast, the current screen.
    Dimmed,
    /// Low contrast, the moving screensaver.
    Blank,
}

/// Where the seed words come from when a seed page is drawn. Implemented for closures, so a
/// caller can pass `&|| Some(seed.words().iter().map(|w| w.to_string()).collect())`.
pub trait SeedSource {
    /// The words in order, or none if they cannot be read now.
    fn seed_words(&self) -> Option<Vec<String>>;
}

impl<F: Fn() -> Option<Vec<String>>> SeedSource for F {
    fn seed_words(&self) -> Option<Vec<String>> {
        self()
    }
}

/// What one tick shows, besides the UI's own state.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The node's status.
    pub status: &'a Status,
    /// The machine's facts.
    pub system: &'a SystemInfo,
    /// The address the node is reached at, for the network page.
    pub ip: Option<IpAddr>,
    /// Whether backups can be made; false until the backup feature exists or when no stick is
    /// configured.
    pub backup_available: bool,
    /// The running or last backup's progress.
    pub backup: Option<&'a BackupProgress>,
    /// A shutdown in progress, however it began (the gesture or SIGTERM): shown over everything.
    pub shutdown: Option<ShutdownPhase>,
    /// The seed words, asked for only while a seed page is shown.
    pub seed: &'a dyn SeedSource,
    /// What the service is doing.
    pub service: Service<'a>,
    /// Whether the home page reminds the owner to write the seed words down.
    pub seed_reminder: bool,
    /// The service's open question about the mirror stick, if any.
    pub mirror_ask: Option<&'a crate::mirror::Ask>,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("alias", &self.status.alias)
            .field("ip", &self.ip)
            .field("backup_available", &self.backup_available)
            .field("backup", &self.backup)
            .field("shutdown", &self.shutdown)
            .field("service", &self.service)
            .field("seed_reminder", &self.seed_reminder)
            .field("mirror_ask", &self.mirror_ask)
            .finish_non_exhaustive()
    }
}

/// The result of one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The picture to send.
    pub frame: Frame,
    /// Its caption: screen name and text lines.
    pub caption: String,
    /// The rows drawn on ([`Rendered::bands`]).
    pub bands: Vec<Band>,
    /// The contrast to set (0..=255).
    pub contrast: u8,
    /// How awake the display is.
    pub idle: Idle,
    /// What the user asked for during this tick, in order.
    pub actions: Vec<Action>,
}

/// The UI state machine. See the module documentation.
#[derive(Debug, Clone)]
pub struct Ui {
    config: UiConfig,
    view: View,
    /// The status page to go back to from dialogs.
    page: Page,
    /// The channel shown on the channels page.
    channel: usize,
    /// What the network page shows: 0 the address and a QR code, 1 the big QR code, 2 the
    /// chain source.
    network_view: u8,
    /// The latest time seen.
    now: Duration,
    /// When the last gesture (or a new alert) happened.
    last_activity: Duration,
    /// When the current view was entered (or the seed page last turned).
    view_since: Duration,
    /// The press of this button woke the display: its short or long press is not an action.
    swallow: [bool; 2],
    /// Alert headlines seen at the previous tick; none before the first tick.
    known_alerts: Option<Vec<String>>,
    /// The last question of the service shown (its id; 0 before any).
    shown_ask: u64,
    /// When each button was last pressed down.
    pressed_at: [Duration; 2],
}

fn index(button: Button) -> usize {
    match button {
        Button::A => 0,
        Button::B => 1,
    }
}

impl Ui {
    /// A UI on the home page, awake, at time zero.
    pub fn new(config: UiConfig) -> Self {
        Ui {
            config,
            view: View::Page(Page::Home),
            page: Page::Home,
            channel: 0,
            network_view: 0,
            now: Duration::ZERO,
            last_activity: Duration::ZERO,
            view_since: Duration::ZERO,
            swallow: [false; 2],
            known_alerts: None,
            shown_ask: 0,
            pressed_at: [Duration::ZERO; 2],
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &UiConfig {
        &self.config
    }

    /// What is on the screen.
    pub fn view(&self) -> View {
        self.view
    }

    /// How awake the display is at the latest time seen.
    pub fn idle(&self) -> Idle {
        self.idle_at(self.now)
    }

    fn idle_at(&self, now: Duration) -> Idle {
        if self.view == View::ShuttingDown {
            return Idle::Awake;
        }
        let quiet = now.saturating_sub(self.last_activity);
        if quiet >= self.config.blank_after {
            Idle::Blank
        } else if quiet >= self.config.dim_after {
            Idle::Dimmed
        } else {
            Idle::Awake
        }
    }

    fn set_view(&mut self, view: View) {
        if let View::Page(page) = view {
            if page == Page::Channels && self.page != Page::Channels {
                self.channel = 0;
            }
            if page != Page::Network {
                self.network_view = 0;
            }
            self.page = page;
        }
        self.view = view;
        self.view_since = self.now;
    }

    fn back(&mut self) {
        self.set_view(View::Page(self.page));
    }

    /// One step: takes the gestures recognised since the last tick (all dated up to `now`),
    /// applies timeouts and new alerts, and draws.
    ///
    /// | screen | A short | B short | A long | B long | A+B held |
    /// |---|---|---|---|---|---|
    /// | status page | next page | page action | shutdown confirm | backup confirm / not available | seed warning |
    /// | shutdown confirm | [`Action::Shutdown`] | cancel | - | - | - |
    /// | backup confirm | cancel | [`Action::Backup`] | shutdown confirm | - | - |
    /// | mirror question | no | yes ([`Action::MirrorAnswer`]) | shutdown confirm | - | - |
    /// | backup not available | back | back | shutdown confirm | - | - |
    /// | backup progress | back | back | shutdown confirm | - | - |
    /// | seed warning | back | seed page 1 | shutdown confirm | - | - |
    /// | seed page n | back | page n+1 (wraps) | shutdown confirm | - | - |
    /// | shutting down | - | - | - | - | - |
    ///
    /// Time going backwards is taken as no time passing.
    pub fn tick(&mut self, now: Duration, gestures: &[Gesture], ctx: &Context<'_>) -> Output {
        self.now = self.now.max(now);
        let mut actions = Vec::new();
        if ctx.shutdown.is_some() && self.view != View::ShuttingDown {
            self.set_view(View::ShuttingDown);
        }
        self.watch_ask(ctx);
        for gesture in gestures {
            self.gesture(*gesture, ctx, &mut actions);
        }
        self.timeouts(&mut actions);
        self.watch_alerts(ctx.status);
        let idle = self.idle();
        let contrast = if idle == Idle::Awake { self.config.bright } else { self.config.dim };
        let (Rendered { frame, caption, bands }, seed_seen) = self.render(idle, ctx);
        if seed_seen {
            actions.push(Action::SeedSeen);
        }
        Output { frame, caption, bands, contrast, idle, actions }
    }

    fn gesture(&mut self, gesture: Gesture, ctx: &Context<'_>, actions: &mut Vec<Action>) {
        if self.view == View::ShuttingDown {
            return;
        }
        let was = self.idle();
        self.last_activity = self.now;
        match gesture {
            Gesture::Pressed(b) => {
                // A press that wakes the display is only that; one on an awake display starts
                // a fresh gesture, so an earlier wake no longer applies to this button.
                self.swallow[index(b)] = was != Idle::Awake;
                self.pressed_at[index(b)] = self.now;
                return;
            }
            Gesture::Short(b) | Gesture::Long(b) if self.swallow[index(b)] => {
                self.swallow[index(b)] = false;
                return;
            }
            Gesture::BothHeld if self.swallow.iter().any(|s| *s) => {
                self.swallow = [false; 2];
                return;
            }
            _ => {}
        }
        use Button::{A, B};
        use Gesture::{BothHeld, Long, Short};
        match (self.view, gesture) {
            (View::ShutdownConfirm, Short(A)) => {
                self.set_view(View::ShuttingDown);
                actions.push(Action::Shutdown);
            }
            (View::ShutdownConfirm, Short(B)) => self.back(),
            (View::ShutdownConfirm, _) => {}
            (_, Long(A)) => self.set_view(View::ShutdownConfirm),
            (View::Page(Page::Home), Short(A)) if matches!(ctx.service, Service::Restoring(Some(_))) => {
                actions.push(Action::Dismiss);
            }
            (View::Page(page), Short(A)) => self.set_view(View::Page(page.next())),
            (View::Page(Page::Home), Short(B) | Long(B)) if !matches!(ctx.service, Service::Running) => {
                self.service_gesture(gesture, ctx);
            }
            (View::Page(Page::Home), Short(B)) if ctx.seed_reminder => self.set_view(View::SeedSkipConfirm),
            (View::RestoreConfirm, Short(B)) => {
                self.back();
                actions.push(Action::Restore);
            }
            (View::EmptyConfirm, Short(B)) => {
                self.back();
                actions.push(Action::StartEmpty);
            }
            (View::SeedSkipConfirm, Short(B)) => {
                self.back();
                actions.push(Action::SeedSkipped);
            }
            (View::RestoreConfirm | View::EmptyConfirm | View::SeedSkipConfirm, Short(A)) => self.back(),
            (View::Page(Page::Channels), Short(B)) => {
                // Each channel (or "no channels yet"), then the funding address.
                let stops = ctx.status.channels.len().max(1) + 1;
                self.channel = (self.channel + 1) % stops;
                if self.channel == stops - 1 {
                    actions.push(Action::FundingAddress);
                }
            }
            (View::Page(Page::Network), Short(B)) => self.network_view = (self.network_view + 1) % 3,
            (View::Page(Page::System), Short(B)) => actions.push(Action::MirrorAsk),
            // A press begun before the question was on the screen is not its answer.
            (View::MirrorConfirm, Short(B)) if self.pressed_at[index(B)] <= self.view_since => {}
            (View::MirrorConfirm, Short(b)) => {
                self.back();
                let chosen = ctx.mirror_ask.is_some_and(|a| a.id == self.shown_ask && a.stick.is_ok());
                actions.push(Action::MirrorAnswer { ask: self.shown_ask, yes: b == B && chosen });
            }
            (View::Page(_), Short(B)) => {}
            (View::Page(_), Long(B)) if ctx.backup_available => self.set_view(View::BackupConfirm),
            (View::Page(_), Long(B)) => self.set_view(View::BackupUnavailable),
            (View::Page(_), BothHeld) => self.set_view(View::SeedWarning),
            (View::BackupConfirm, Short(B)) => {
                self.set_view(View::Backup);
                actions.push(Action::Backup);
            }
            (View::BackupConfirm, Short(A)) => self.back(),
            (View::BackupUnavailable | View::Backup, Short(_)) => self.back(),
            (View::SeedWarning, Short(B)) => self.set_view(View::Seed(0)),
            (View::SeedWarning | View::Seed(_), Short(A)) => self.back(),
            // The page count is known only to the seed source; drawing wraps it.
            (View::Seed(n), Short(B)) => self.set_view(View::Seed(n + 1)),
            _ => {}
        }
    }

    /// B on the home page while the node does not run: a restore or an empty start, where the
    /// service offers one.
    fn service_gesture(&mut self, gesture: Gesture, ctx: &Context<'_>) {
        let (restore, empty) = match ctx.service {
            Service::Store(choice) => (choice.backup.is_some(), choice.start_empty),
            Service::Offer(offer) => (offer.words, true),
            _ => (false, false),
        };
        match gesture {
            Gesture::Short(Button::B) if restore => self.set_view(View::RestoreConfirm),
            Gesture::Long(Button::B) if empty => self.set_view(View::EmptyConfirm),
            // Backups need a store: while one is open (waiting for the chain, say), B long backs up.
            Gesture::Long(Button::B) if ctx.backup_available => self.set_view(View::BackupConfirm),
            Gesture::Long(Button::B) => self.set_view(View::BackupUnavailable),
            _ => {}
        }
    }

    /// A new question of the service takes the screen (and wakes it) unless a shutdown runs;
    /// one withdrawn leaves it.
    fn watch_ask(&mut self, ctx: &Context<'_>) {
        match ctx.mirror_ask {
            Some(ask) if ask.id != self.shown_ask && self.view != View::ShuttingDown => {
                self.shown_ask = ask.id;
                self.set_view(View::MirrorConfirm);
                self.last_activity = self.now;
                self.swallow = [false; 2];
            }
            None if self.view == View::MirrorConfirm => self.back(),
            _ => {}
        }
    }

    fn timeouts(&mut self, actions: &mut Vec<Action>) {
        let shown = self.now.saturating_sub(self.view_since);
        if self.view == View::MirrorConfirm {
            if shown >= self.config.ask_timeout {
                self.back();
                actions.push(Action::MirrorAnswer { ask: self.shown_ask, yes: false });
            }
            return;
        }
        let limit = match self.view {
            View::ShutdownConfirm
            | View::BackupConfirm
            | View::BackupUnavailable
            | View::SeedWarning
            | View::RestoreConfirm
            | View::EmptyConfirm
            | View::SeedSkipConfirm => self.config.confirm_timeout,
            View::Seed(_) => self.config.seed_timeout,
            View::Page(_) | View::Backup | View::ShuttingDown | View::MirrorConfirm => return,
        };
        if shown >= limit {
            self.back();
        }
    }

    fn watch_alerts(&mut self, status: &Status) {
        let current: Vec<String> = status.alerts.iter().map(|a| a.headline()).collect();
        let new = match &self.known_alerts {
            Some(known) => current.iter().any(|h| !known.contains(h)),
            None => false,
        };
        if new && matches!(self.view, View::Page(_)) && self.idle() != Idle::Awake {
            self.set_view(View::Page(Page::Alerts));
            self.last_activity = self.now;
            self.swallow = [false; 2];
        }
        self.known_alerts = Some(current);
    }

    /// The frame, and whether it is the last page of the seed words.
    fn render(&mut self, idle: Idle, ctx: &Context<'_>) -> (Rendered, bool) {
        if idle == Idle::Blank {
            let blank_since = self.last_activity.saturating_add(self.config.blank_after);
            let every = self.config.shift_every.as_millis().max(1);
            let step = self.now.saturating_sub(blank_since).as_millis() / every;
            let step = u64::try_from(step).unwrap_or(u64::MAX);
            return (screens::screensaver(ctx.status, step, self.config.panel), false);
        }
        let status = ctx.status;
        let screen = match self.view {
            View::Page(Page::Home) => match ctx.service {
                Service::Running if ctx.seed_reminder => screens::seed_reminder(),
                Service::Running => screens::home(status),
                Service::Starting => screens::starting(&status.alias),
                Service::Waiting(waiting) => screens::waiting(waiting),
                Service::Store(choice) => screens::store_choice(choice),
                Service::Offer(offer) => screens::restore_offer(&offer.backup, offer.words),
                Service::Restoring(failed) => screens::restore_progress(failed),
            },
            View::Page(Page::Channels) if self.channel >= status.channels.len().max(1) => {
                screens::funding(status, self.config.panel)
            }
            View::Page(Page::Channels) => screens::channels(status, self.channel),
            View::Page(Page::Earnings) => screens::earnings(status),
            View::Page(Page::Accounts) => screens::accounts(status),
            View::Page(Page::Network) if self.network_view == 1 => {
                screens::network_qr(status, self.config.panel)
            }
            View::Page(Page::Network) if self.network_view == 2 => screens::chain_source(status),
            View::Page(Page::Network) => screens::network(status, ctx.ip, self.config.panel),
            View::Page(Page::System) => screens::system(status, ctx.system),
            View::Page(Page::Alerts) => screens::alerts(status),
            View::ShutdownConfirm => screens::shutdown_confirm(),
            View::ShuttingDown => {
                screens::shutdown(ctx.shutdown.unwrap_or(ShutdownPhase::InProgress), self.config.panel)
            }
            View::BackupConfirm => screens::backup_confirm(),
            View::BackupUnavailable => screens::backup_unavailable(),
            View::Backup => {
                screens::backup(ctx.backup.unwrap_or(&BackupProgress::Running { percent: 0, stick: None }))
            }
            View::SeedWarning => screens::seed_warning(),
            View::Seed(page) => match ctx.seed.seed_words() {
                Some(words) if !words.is_empty() => {
                    let pages = screens::seed_pages(words.len());
                    let page = page % pages;
                    self.view = View::Seed(page);
                    return (screens::seed_page(&words, page), page + 1 == pages);
                }
                _ => screens::seed_unavailable(),
            },
            View::RestoreConfirm => screens::restore_confirm(),
            View::EmptyConfirm => screens::empty_confirm(matches!(ctx.service, Service::Offer(_))),
            View::SeedSkipConfirm => screens::seed_skip_confirm(),
            View::MirrorConfirm => match ctx.mirror_ask {
                Some(ask) => screens::mirror_confirm(&ask.stick),
                None => screens::mirror_confirm(&Err("asked no more".into())),
            },
        };
        (screen, false)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::screens::{StateSource, samples};
    use Button::{A, B};
    use Gesture::{BothHeld, Long, Pressed, Short};

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A UI with sample data; `t` advances by one second per press unless told.
    struct Rig {
        ui: Ui,
        status: Status,
        system: SystemInfo,
        backup_available: bool,
        backup: Option<BackupProgress>,
        shutdown: Option<ShutdownPhase>,
        seed_calls: Cell<usize>,
        service: TestService,
        seed_reminder: bool,
        mirror_ask: Option<crate::mirror::Ask>,
        t: f64,
    }

    /// What the rig's service does (owned, so that the rig can lend it to each tick).
    enum TestService {
        Running,
        Waiting(Waiting),
        Store(StoreChoice),
        Offer(Offer),
        RestoreFailed(String),
    }

    impl Rig {
        fn new() -> Self {
            Rig {
                ui: Ui::new(UiConfig::default()),
                status: samples::synced(),
                system: samples::system_info(),
                backup_available: false,
                backup: None,
                shutdown: None,
                seed_calls: Cell::new(0),
                service: TestService::Running,
                seed_reminder: false,
                mirror_ask: None,
                t: 0.0,
            }
        }

        fn at(&mut self, t: f64, gestures: &[Gesture]) -> Output {
            self.t = t;
            let calls = &self.seed_calls;
            let seed = || {
                calls.set(calls.get() + 1);
                Some(samples::SAMPLE_SEED.iter().map(|w| w.to_string()).collect::<Vec<_>>())
            };
            let service = match &self.service {
                TestService::Running => Service::Running,
                TestService::Waiting(w) => Service::Waiting(w),
                TestService::Store(s) => Service::Store(s),
                TestService::Offer(o) => Service::Offer(o),
                TestService::RestoreFailed(e) => Service::Restoring(Some(e)),
            };
            let ctx = Context {
                status: &self.status,
                system: &self.system,
                ip: Some(samples::SAMPLE_IP),
                backup_available: self.backup_available,
                backup: self.backup.as_ref(),
                shutdown: self.shutdown,
                seed: &seed,
                service,
                seed_reminder: self.seed_reminder,
                mirror_ask: self.mirror_ask.as_ref(),
            };
            self.ui.tick(secs(t), gestures, &ctx)
        }

        /// A whole press of `b` one second after the last step: Pressed then Short.
        fn short(&mut self, b: Button) -> Output {
            let t = self.t + 1.0;
            self.at(t, &[Pressed(b), Short(b)])
        }

        fn long(&mut self, b: Button) -> Output {
            let t = self.t + 1.0;
            self.at(t, &[Pressed(b)]);
            self.at(t + 3.0, &[Long(b)])
        }

        fn both(&mut self) -> Output {
            let t = self.t + 1.0;
            self.at(t, &[Pressed(A), Pressed(B)]);
            self.at(t + 5.0, &[BothHeld])
        }

        fn tick(&mut self, dt: f64) -> Output {
            let t = self.t + dt;
            self.at(t, &[])
        }
    }

    fn name(out: &Output) -> &str {
        out.caption.lines().next().unwrap_or("")
    }

    #[test]
    fn b_on_the_system_page_asks_for_a_mirror_stick_and_the_question_takes_the_screen() {
        use crate::mirror::Ask;
        let mut rig = Rig::new();
        rig.at(0.0, &[]);
        while rig.ui.view() != View::Page(Page::System) {
            rig.short(A);
        }
        assert_eq!(rig.short(B).actions, vec![Action::MirrorAsk]);

        // The service's question (from the gesture or the CLI) takes the screen, even dimmed.
        rig.mirror_ask = Some(Ask { id: 1, stick: Ok("sda1".into()) });
        let out = rig.tick(100.0);
        assert_eq!((rig.ui.view(), out.idle), (View::MirrorConfirm, Idle::Awake));
        assert!(out.caption.contains("mirror to sda1?"), "{}", out.caption);
        // A B pressed before the question was shown is not its answer, nor one pressed in
        // the very tick it came.
        let t = rig.t;
        rig.at(t + 0.1, &[Pressed(B)]);
        rig.mirror_ask = Some(Ask { id: 9, stick: Ok("sda1".into()) });
        assert_eq!(rig.at(t + 5.0, &[Short(B)]).actions, vec![], "pressed before it came");
        rig.mirror_ask = Some(Ask { id: 10, stick: Ok("sda1".into()) });
        assert_eq!(rig.at(t + 6.0, &[Pressed(B), Short(B)]).actions, vec![], "pressed as it came");
        assert_eq!(rig.ui.view(), View::MirrorConfirm);
        rig.mirror_ask = Some(Ask { id: 1, stick: Ok("sda1".into()) });
        rig.tick(1.0);
        let out = rig.short(B);
        assert_eq!(out.actions, vec![Action::MirrorAnswer { ask: 1, yes: true }]);
        assert_eq!(rig.ui.view(), View::Page(Page::System), "back where it was");

        // The same question again is not asked twice; a new one is, and A says no.
        rig.tick(1.0);
        assert_eq!(rig.ui.view(), View::Page(Page::System));
        rig.mirror_ask = Some(Ask { id: 2, stick: Ok("sdb1".into()) });
        rig.tick(1.0);
        assert_eq!(rig.short(A).actions, vec![Action::MirrorAnswer { ask: 2, yes: false }]);

        // Unanswered, it is a no after the timeout.
        rig.mirror_ask = Some(Ask { id: 3, stick: Ok("sdb1".into()) });
        rig.tick(1.0);
        let out = rig.tick(crate::mirror::ASK_WAIT.as_secs_f64());
        assert_eq!(out.actions, vec![Action::MirrorAnswer { ask: 3, yes: false }]);
        assert_eq!(rig.ui.view(), View::Page(Page::System));

        // No stick to choose: the screen says why, and B is no yes.
        rig.mirror_ask = Some(Ask { id: 4, stick: Err("no USB stick found".into()) });
        let out = rig.tick(1.0);
        assert!(out.caption.contains("no USB stick found"), "{}", out.caption);
        assert_eq!(rig.short(B).actions, vec![Action::MirrorAnswer { ask: 4, yes: false }]);

        // A question withdrawn leaves the screen.
        rig.mirror_ask = Some(Ask { id: 5, stick: Ok("sdb1".into()) });
        rig.tick(1.0);
        rig.mirror_ask = None;
        rig.tick(1.0);
        assert_eq!(rig.ui.view(), View::Page(Page::System));
    }

    #[test]
    fn starts_on_home_awake_at_full_contrast() {
        let mut rig = Rig::new();
        let out = rig.at(0.0, &[]);
        assert_eq!(name(&out), "home");
        assert!(out.caption.contains("satoshi's box"), "{}", out.caption);
        assert_eq!(out.contrast, 0xff);
        assert_eq!(out.idle, Idle::Awake);
        assert!(out.actions.is_empty());
        assert_eq!(out.frame, screens::home(&rig.status).frame);
    }

    #[test]
    fn a_short_cycles_every_page_and_wraps_home() {
        let mut rig = Rig::new();
        rig.at(0.0, &[]);
        let mut seen = Vec::new();
        for _ in 0..7 {
            let out = rig.short(A);
            seen.push(name(&out).to_string());
        }
        assert_eq!(seen, ["channels", "earnings", "accounts", "network", "system", "alerts", "home"]);
    }

    #[test]
    fn b_short_pages_channels_and_wraps_and_entering_starts_at_the_first() {
        let mut rig = Rig::new();
        rig.short(A);
        assert!(rig.tick(0.1).caption.contains("channel 1/3"));
        assert!(rig.short(B).caption.contains("channel 2/3"));
        assert!(rig.short(B).caption.contains("channel 3/3"));
        let fund = rig.short(B);
        assert_eq!(name(&fund), "fund", "after the last channel: the funding address");
        assert_eq!(fund.actions, vec![Action::FundingAddress], "which the node is asked for");
        assert!(rig.short(B).caption.contains("channel 1/3"));
        rig.short(B);
        for _ in 0..7 {
            rig.short(A);
        }
        assert!(rig.tick(0.1).caption.contains("channel 1/3"), "back on channels: first channel");
    }

    #[test]
    fn b_short_on_channels_without_channels_shows_the_funding_address_and_back() {
        let mut rig = Rig::new();
        rig.status = samples::fresh();
        assert!(rig.short(A).caption.contains("no channels yet"));
        let out = rig.short(B);
        assert_eq!((name(&out), out.actions.as_slice()), ("fund", [Action::FundingAddress].as_slice()));
        assert!(out.caption.contains("getting an address"), "{}", out.caption);
        rig.status.funding_address = Some("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into());
        let out = rig.tick(0.3);
        assert!(
            out.caption.contains("qr bitcoin:bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"),
            "{}",
            out.caption
        );
        let out = rig.short(B);
        assert_eq!(name(&out), "channels");
        assert!(out.caption.contains("no channels yet"));
        assert!(out.actions.is_empty());
    }

    #[test]
    fn b_short_on_network_toggles_the_big_qr_and_leaving_resets_it() {
        let mut rig = Rig::new();
        for _ in 0..4 {
            rig.short(A);
        }
        assert_eq!(name(&rig.tick(0.1)), "network");
        assert_eq!(name(&rig.short(B)), "network qr");
        assert_eq!(name(&rig.short(B)), "chain source");
        assert_eq!(name(&rig.short(B)), "network");
        rig.short(B);
        assert_eq!(name(&rig.short(A)), "system", "A leaves the big QR for the next page");
        for _ in 0..6 {
            rig.short(A);
        }
        assert_eq!(name(&rig.tick(0.1)), "network", "and the small QR is back");
    }

    #[test]
    fn b_short_on_pages_without_an_action_does_nothing() {
        let mut rig = Rig::new();
        for page in ["home", "channels", "earnings", "accounts", "network", "system", "alerts"] {
            let before = rig.tick(0.1);
            assert_eq!(name(&before), page);
            if !matches!(page, "channels" | "network" | "system") {
                let after = rig.short(B);
                assert_eq!(
                    (after.frame, after.caption, after.actions),
                    (before.frame, before.caption, vec![])
                );
            }
            rig.short(A);
        }
    }

    #[test]
    fn a_long_then_a_short_shuts_down_once_and_ignores_everything_after() {
        let mut rig = Rig::new();
        rig.short(A);
        let out = rig.long(A);
        assert_eq!(name(&out), "shutdown confirm");
        assert!(out.caption.contains("press A again"));
        assert!(out.actions.is_empty());
        let out = rig.short(A);
        assert_eq!(out.actions, vec![Action::Shutdown]);
        assert_eq!(name(&out), "shutdown");
        assert!(out.caption.contains("shutting"));
        assert_eq!(rig.ui.view(), View::ShuttingDown);
        for out in [rig.short(A), rig.short(B), rig.long(A), rig.long(B), rig.both()] {
            assert!(out.actions.is_empty());
            assert_eq!(name(&out), "shutdown");
        }
        rig.shutdown = Some(ShutdownPhase::SafeToUnplug);
        let out = rig.tick(1000.0);
        assert!(out.caption.contains("safe to\nunplug"), "{}", out.caption);
        assert_eq!((out.idle, out.contrast), (Idle::Awake, 0xff), "the last frame is never dimmed");
    }

    #[test]
    fn b_short_cancels_the_shutdown_back_to_the_same_page() {
        let mut rig = Rig::new();
        rig.short(A);
        rig.short(A);
        rig.long(A);
        let out = rig.short(B);
        assert!(out.actions.is_empty());
        assert_eq!(name(&out), "earnings");
    }

    #[test]
    fn the_shutdown_confirm_times_out() {
        let mut rig = Rig::new();
        rig.long(A);
        let entered = rig.t;
        assert_eq!(name(&rig.at(entered + 9.9, &[])), "shutdown confirm");
        assert_eq!(name(&rig.at(entered + 10.0, &[])), "home");
        let out = rig.short(A);
        assert!(out.actions.is_empty(), "a late second press is an ordinary press");
        assert_eq!(name(&out), "channels");
    }

    #[test]
    fn other_gestures_leave_the_shutdown_confirm_as_it_is() {
        for gesture in [Long(A), Long(B), BothHeld] {
            let mut rig = Rig::new();
            rig.long(A);
            rig.tick(1.0);
            let out = rig.at(rig.t + 1.0, &[gesture]);
            assert_eq!(name(&out), "shutdown confirm", "{gesture:?}");
            assert!(out.actions.is_empty());
        }
    }

    #[test]
    fn sigterm_shows_the_shutdown_over_any_screen() {
        let mut rig = Rig::new();
        rig.both();
        rig.shutdown = Some(ShutdownPhase::InProgress);
        let out = rig.tick(0.1);
        assert_eq!(name(&out), "shutdown");
        assert!(out.actions.is_empty(), "the caller started it; no action is asked for");
    }

    #[test]
    fn b_long_says_backup_is_not_available_until_it_is() {
        let mut rig = Rig::new();
        let out = rig.long(B);
        assert_eq!(name(&out), "backup unavailable");
        assert!(out.actions.is_empty());
        assert_eq!(name(&rig.short(B)), "home");
        rig.long(B);
        assert_eq!(name(&rig.short(A)), "home");
        rig.long(B);
        assert_eq!(name(&rig.tick(10.0)), "home", "times out");
    }

    #[test]
    fn b_long_then_b_short_starts_a_backup_and_shows_its_progress() {
        let mut rig = Rig::new();
        rig.backup_available = true;
        let out = rig.long(B);
        assert_eq!(name(&out), "backup confirm");
        assert!(out.actions.is_empty());
        let out = rig.short(B);
        assert_eq!(out.actions, vec![Action::Backup]);
        assert!(out.caption.contains("backup 0%"), "{}", out.caption);
        rig.backup = Some(BackupProgress::Running { percent: 40, stick: Some("sda1".into()) });
        assert!(rig.tick(1.0).caption.contains("backup 40%"));
        rig.backup = Some(BackupProgress::Succeeded {
            bytes: 2048,
            took: Duration::from_secs(3),
            stick: "sda1".into(),
            at: "14:02 UTC".into(),
            ejected: true,
            mirror: false,
        });
        let out = rig.tick(30.0);
        assert!(out.caption.contains("backup OK"));
        assert!(out.actions.is_empty());
        assert_eq!(name(&rig.short(A)), "home");
    }

    #[test]
    fn the_backup_confirm_is_cancelled_by_a_or_the_timeout() {
        let mut rig = Rig::new();
        rig.backup_available = true;
        rig.long(B);
        let out = rig.short(A);
        assert!(out.actions.is_empty());
        assert_eq!(name(&out), "home");
        rig.long(B);
        assert_eq!(name(&rig.tick(10.0)), "home");
        assert!(rig.short(B).actions.is_empty());
    }

    #[test]
    fn the_seed_flow_warns_then_pages_then_leaves() {
        let mut rig = Rig::new();
        rig.short(A);
        let out = rig.both();
        assert_eq!(name(&out), "seed warning");
        assert_eq!(rig.seed_calls.get(), 0, "words are not read for the warning");
        let mut headers = Vec::new();
        for _ in 0..7 {
            let out = rig.short(B);
            assert_eq!(name(&out), "seed words");
            assert!(!out.caption.contains("abandon"), "no words in captions: {}", out.caption);
            headers.push(out.caption.lines().nth(1).unwrap_or("").to_string());
        }
        let expected: Vec<String> =
            [1, 2, 3, 4, 5, 6, 1].iter().map(|n| format!("seed words {n}/6")).collect();
        assert_eq!(headers, expected);
        assert_eq!(rig.seed_calls.get(), 7, "read once per frame shown");
        let out = rig.short(A);
        assert_eq!(name(&out), "channels", "back to the page the flow began on");
        rig.tick(1.0);
        assert_eq!(rig.seed_calls.get(), 7, "not read once left");
    }

    #[test]
    fn the_seed_warning_leaves_on_a_and_on_its_timeout() {
        let mut rig = Rig::new();
        rig.both();
        assert_eq!(name(&rig.short(A)), "home");
        rig.both();
        assert_eq!(name(&rig.tick(10.0)), "home");
        assert_eq!(rig.seed_calls.get(), 0);
    }

    #[test]
    fn seed_pages_go_home_after_the_seed_timeout() {
        let mut rig = Rig::new();
        rig.both();
        rig.short(B);
        assert_eq!(name(&rig.tick(119.0)), "seed words");
        assert_eq!(name(&rig.tick(1.0)), "home");
    }

    #[test]
    fn a_long_from_the_seed_pages_asks_to_shut_down() {
        let mut rig = Rig::new();
        rig.both();
        rig.short(B);
        assert_eq!(name(&rig.long(A)), "shutdown confirm");
    }

    #[test]
    fn dialogs_ignore_b_long_and_both_held() {
        let mut rig = Rig::new();
        rig.both();
        assert_eq!(name(&rig.long(B)), "seed warning");
        rig.short(B);
        assert_eq!(name(&rig.both()), "seed words");
    }

    #[test]
    fn a_seed_source_without_words_says_so() {
        let mut rig = Rig::new();
        rig.both();
        rig.short(B);
        let t = rig.t + 1.0;
        let none = || None;
        let ctx = Context {
            status: &rig.status,
            system: &rig.system,
            ip: None,
            backup_available: false,
            backup: None,
            shutdown: None,
            seed: &none,
            service: Service::Running,
            seed_reminder: false,
            mirror_ask: None,
        };
        let out = rig.ui.tick(secs(t), &[], &ctx);
        assert!(out.caption.contains("not available"), "{}", out.caption);
    }

    #[test]
    fn idle_dims_then_blanks_with_a_moving_screensaver() {
        let mut rig = Rig::new();
        assert_eq!(rig.at(59.9, &[]).idle, Idle::Awake);
        let out = rig.at(60.0, &[]);
        assert_eq!((out.idle, out.contrast), (Idle::Dimmed, 0x10));
        assert_eq!(name(&out), "home", "dim keeps the picture");
        let out = rig.at(300.0, &[]);
        assert_eq!((out.idle, out.contrast), (Idle::Blank, 0x10));
        assert_eq!(name(&out), "screensaver");
        assert!(out.frame.lit_pixels() < 400, "mostly dark");
        assert_eq!(rig.at(479.9, &[]).frame, out.frame, "still for shift_every");
        let moved = rig.at(480.0, &[]);
        assert_ne!(moved.frame, out.frame, "moves after shift_every");
        assert_eq!(moved.frame.lit_pixels(), out.frame.lit_pixels(), "the same text, elsewhere");
    }

    #[test]
    fn a_press_that_wakes_is_swallowed() {
        let mut rig = Rig::new();
        rig.at(61.0, &[]);
        let out = rig.at(62.0, &[Pressed(A)]);
        assert_eq!((out.idle, name(&out)), (Idle::Awake, "home"), "the press wakes at once");
        let out = rig.at(62.2, &[Short(A)]);
        assert_eq!(name(&out), "home", "and its short press is not an action");
        assert_eq!(name(&rig.short(A)), "channels", "the next press is");
    }

    #[test]
    fn a_long_press_that_wakes_is_swallowed_too() {
        let mut rig = Rig::new();
        rig.at(400.0, &[]);
        rig.at(401.0, &[Pressed(A)]);
        let out = rig.at(404.0, &[Long(A)]);
        assert_eq!(name(&out), "home");
        assert!(out.actions.is_empty());
    }

    #[test]
    fn waking_gestures_in_one_batch_are_swallowed() {
        let mut rig = Rig::new();
        let out = rig.at(400.0, &[Pressed(B), Short(B)]);
        assert_eq!((out.idle, name(&out)), (Idle::Awake, "home"));
    }

    #[test]
    fn a_both_held_begun_by_a_waking_press_is_swallowed() {
        let mut rig = Rig::new();
        rig.at(400.0, &[Pressed(A)]);
        rig.at(400.5, &[Pressed(B)]);
        assert_eq!(name(&rig.at(405.5, &[BothHeld])), "home");
        assert_eq!(name(&rig.both()), "seed warning", "a later both-held counts");
    }

    #[test]
    fn the_other_button_pressed_once_awake_counts() {
        let mut rig = Rig::new();
        for _ in 0..4 {
            rig.short(A);
        }
        rig.at(200.0, &[Pressed(A)]);
        let out = rig.at(200.5, &[Pressed(B), Short(B)]);
        assert_eq!(name(&out), "network qr", "B was pressed on an awake display");
        let out = rig.at(200.6, &[Short(A)]);
        assert_eq!(name(&out), "network qr", "A's waking press stays swallowed");
    }

    #[test]
    fn a_new_alert_while_idle_shows_the_alerts_page_and_wakes() {
        let mut rig = Rig::new();
        rig.status = samples::fresh();
        rig.at(0.0, &[]);
        rig.at(100.0, &[]);
        rig.status.alerts.push(boltbox_node::Alert::SyncStalled { seconds: Some(400) });
        let out = rig.at(101.0, &[]);
        assert_eq!((name(&out), out.idle), ("alerts", Idle::Awake));
        assert_eq!(name(&rig.at(170.0, &[])), "alerts", "it stays, and dims like any page");
        assert_eq!(rig.at(170.0, &[]).idle, Idle::Dimmed);
    }

    #[test]
    fn a_new_alert_while_awake_does_not_move_the_page() {
        let mut rig = Rig::new();
        rig.status = samples::fresh();
        rig.short(A);
        rig.status.alerts.push(boltbox_node::Alert::SyncStalled { seconds: Some(400) });
        assert_eq!(name(&rig.tick(1.0)), "channels");
        assert_eq!(name(&rig.tick(100.0)), "channels", "and it is not new any more later");
    }

    #[test]
    fn alerts_present_at_start_are_not_new() {
        let mut rig = Rig::new();
        let out = rig.at(0.0, &[]);
        assert_eq!(name(&out), "home");
        assert_eq!(name(&rig.at(400.0, &[])), "screensaver");
    }

    #[test]
    fn time_going_backwards_is_no_time() {
        let mut rig = Rig::new();
        rig.at(100.0, &[]);
        let out = rig.at(5.0, &[]);
        assert_eq!(out.idle, Idle::Dimmed, "still 100 s quiet");
    }

    fn choice(backup: bool, start_empty: bool) -> StoreChoice {
        StoreChoice {
            headline: "node store missing".into(),
            reason: "the seed is here but the store is not".into(),
            backup: backup.then(|| BackupFacts {
                node_id8: "02abcdef".into(),
                age: secs(60.0),
                commit: 7,
                source: StateSource::Backup,
            }),
            start_empty,
        }
    }

    #[test]
    fn while_waiting_home_says_why_and_the_other_pages_and_the_shutdown_still_work() {
        let mut rig = Rig::new();
        rig.service = TestService::Waiting(Waiting {
            what: "chain source".into(),
            reason: "Electrum server refused the connection".into(),
            retry_in: Some(secs(4.0)),
        });
        let out = rig.tick(0.1);
        assert_eq!(name(&out), "waiting");
        assert!(out.caption.contains("refused"), "{}", out.caption);
        assert_eq!(name(&rig.short(A)), "channels");
        for _ in 0..5 {
            rig.short(A);
        }
        assert_eq!(name(&rig.long(A)), "shutdown confirm");
        assert_eq!(rig.short(A).actions, vec![Action::Shutdown]);
    }

    #[test]
    fn a_store_problem_restores_or_starts_empty_only_behind_a_confirmation() {
        let mut rig = Rig::new();
        rig.service = TestService::Store(choice(true, true));
        assert_eq!(name(&rig.tick(0.1)), "store");
        let out = rig.short(B);
        assert_eq!(name(&out), "restore confirm");
        assert!(out.actions.is_empty());
        assert_eq!(name(&rig.short(A)), "store", "A backs out");
        rig.short(B);
        assert_eq!(rig.short(B).actions, vec![Action::Restore]);

        let out = rig.long(B);
        assert_eq!(name(&out), "empty confirm");
        assert!(out.caption.contains("EMPTY"), "{}", out.caption);
        assert!(out.actions.is_empty());
        assert_eq!(name(&rig.tick(10.0)), "store", "the confirmation times out");
        rig.long(B);
        assert_eq!(rig.short(B).actions, vec![Action::StartEmpty]);
    }

    #[test]
    fn a_store_problem_without_a_backup_or_that_may_not_be_replaced_offers_nothing() {
        let mut rig = Rig::new();
        rig.service = TestService::Store(choice(false, false));
        for out in [rig.short(B), rig.long(B)] {
            assert!(out.actions.is_empty());
            assert!(matches!(name(&out), "store" | "backup unavailable"), "{}", name(&out));
        }
        rig.tick(10.0);
        rig.service = TestService::Store(choice(false, true));
        assert_eq!(name(&rig.short(B)), "store", "no backup: B does nothing");
        assert_eq!(name(&rig.long(B)), "empty confirm");
    }

    #[test]
    fn the_first_start_offer_restores_with_the_words_or_makes_a_new_node() {
        let backup = BackupFacts {
            node_id8: "02abcdef".into(),
            age: secs(60.0),
            commit: 7,
            source: StateSource::Backup,
        };
        let mut rig = Rig::new();
        rig.service = TestService::Offer(Offer { backup: backup.clone(), words: false });
        let out = rig.tick(0.1);
        assert_eq!(name(&out), "restore offer");
        assert!(out.caption.contains("no restore.words"), "{}", out.caption);
        assert_eq!(name(&rig.short(B)), "restore offer", "without the words B does nothing");
        let out = rig.long(B);
        assert!(out.caption.contains("new node"), "{}", out.caption);
        assert_eq!(rig.short(B).actions, vec![Action::StartEmpty]);
        rig.service = TestService::Offer(Offer { backup, words: true });
        rig.short(B);
        assert_eq!(rig.short(B).actions, vec![Action::Restore]);
        rig.service = TestService::RestoreFailed("wrong seed".into());
        let out = rig.tick(0.1);
        assert!(out.caption.contains("wrong seed"), "{}", out.caption);
        assert_eq!(rig.short(A).actions, vec![Action::Dismiss]);
    }

    #[test]
    fn the_seed_reminder_is_seen_on_the_last_page_or_skipped() {
        let mut rig = Rig::new();
        rig.seed_reminder = true;
        assert_eq!(name(&rig.tick(0.1)), "seed reminder");
        rig.both();
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(rig.short(B).actions.contains(&Action::SeedSeen));
        }
        assert_eq!(seen, [false, false, false, false, false, true], "seen on the last page only");
        rig.short(A);
        assert_eq!(name(&rig.short(B)), "seed skip");
        assert_eq!(rig.short(B).actions, vec![Action::SeedSkipped]);
        rig.seed_reminder = false;
        assert_eq!(name(&rig.tick(0.1)), "home");
    }

    #[test]
    fn pages_cycle_in_order() {
        assert_eq!(Page::Alerts.next(), Page::Home);
        assert_eq!(Page::Home.next(), Page::Channels);
    }
}

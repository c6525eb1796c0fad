//! The display and button loop, on a thread of its own: buttons → [`GestureMachine`] →
//! [`Ui::tick`] → display, at least every [`FRAME_EVERY`] and at once after a gesture. It only
//! reads snapshots (the node's status, the service's state), so a busy node never stalls it, and
//! it feeds the systemd watchdog, so a stalled loop gets the service restarted.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boltbox_board::buttons::monotonic;
use boltbox_board::{Buttons, ButtonsHealth, Display, DisplayHealth, Gesture, GestureMachine, Levels};
use boltbox_node::{Alert, Seed};
use serde::{Deserialize, Serialize};

use crate::config::AppConfig;
use crate::screens::panel::Pager;
use crate::screens::{self, Rendered, ShutdownPhase, SystemInfo};
use crate::supervisor::{Event, Notifier, Owner, Phase, Shared, State};
use crate::system::{primary_ip, read_system_info};
use crate::ui::{Action, Context, Service, Ui};

/// The display loop draws at least this often (4 frames/s), and at once after a gesture.
pub const FRAME_EVERY: Duration = Duration::from_millis(250);
/// How long the display loop waits for a button edge before ticking the gesture machine:
/// short, so that a long press is recognised within this much of its threshold.
const BUTTON_POLL: Duration = Duration::from_millis(20);
/// How often the system screen's facts and the IP address are read again.
const SYSTEM_EVERY: Duration = Duration::from_secs(2);
/// The record that the owner has seen the seed words (or chose not to), in the data dir.
pub const SEED_REMINDER_FILE: &str = "seed-reminder.json";

/// What the owner did about the seed reminder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedReminder {
    /// The last page of the words was shown (Unix seconds).
    Seen {
        /// When.
        at: u64,
    },
    /// The owner chose not to be reminded (Unix seconds).
    Skipped {
        /// When.
        at: u64,
    },
}

impl SeedReminder {
    /// Whether the data dir records that the reminder is done with.
    pub fn done(data_dir: &Path) -> bool {
        data_dir.join(SEED_REMINDER_FILE).exists()
    }

    /// Records this in `data_dir`.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        boltbox_node::files::write_private_atomic(&data_dir.join(SEED_REMINDER_FILE), &bytes)
    }
}

/// The display and button loop.
pub(crate) struct DisplayLoop {
    display: Box<dyn Display>,
    buttons: Box<dyn Buttons>,
    gestures: GestureMachine,
    ui: Ui,
    pager: Pager,
    shared: Arc<Shared>,
    notifier: Arc<Notifier>,
    data_dir: PathBuf,
    workers: usize,
}

impl DisplayLoop {
    pub(crate) fn new(
        display: Box<dyn Display>,
        buttons: Box<dyn Buttons>,
        config: &AppConfig,
        shared: Arc<Shared>,
        notifier: Arc<Notifier>,
        workers: usize,
    ) -> DisplayLoop {
        DisplayLoop {
            display,
            buttons,
            gestures: GestureMachine::new(config.ui.gestures()),
            ui: Ui::new(config.ui.ui(config.board.panel())),
            pager: Pager::new(config.board.panel()),
            data_dir: shared.data_dir().to_path_buf(),
            shared,
            notifier,
            workers,
        }
    }

    pub(crate) fn run(mut self) {
        let start = monotonic();
        let mut next_frame = Instant::now();
        let mut next_watchdog = Instant::now();
        let mut next_system = Instant::now();
        let mut system = SystemInfo::default();
        let mut ip: Option<IpAddr> = None;
        let mut contrast: Option<u8> = None;
        let mut last_error: Option<String> = None;
        let mut health = DisplayHealth::Present;
        let mut buttons_health = ButtonsHealth::Working;
        let mut drawn_phase: Option<std::mem::Discriminant<Phase>> = None;
        let mut reminder_done = SeedReminder::done(&self.data_dir);
        let mut grown = None;
        let data_dir = self.data_dir.clone();
        // Read at each frame that shows them and dropped after drawing (see `ui::SeedSource`).
        let seed_words = move || {
            Seed::load(&data_dir)
                .ok()
                .flatten()
                .map(|seed| seed.words().iter().map(|w| w.to_string()).collect::<Vec<String>>())
        };
        loop {
            let phase = self.shared.phase();
            let gestures = next_gestures(&mut *self.buttons, &mut self.gestures, &mut last_error);
            self.notifier.feed_watchdog(&mut next_watchdog);
            let now = Instant::now();
            let last = matches!(phase, Phase::SafeToUnplug | Phase::Stopped | Phase::Failed(_));
            // A new phase is drawn at once: the shutdown waits for "shutting down" to be shown.
            let new_phase = drawn_phase != Some(std::mem::discriminant(&phase));
            if gestures.is_empty() && now < next_frame && !new_phase {
                continue;
            }
            next_frame = now + FRAME_EVERY;
            if now >= next_system {
                system = read_system_info(&self.data_dir, self.workers);
                self.shared.backups.reload();
                system.last_backup_age = self.shared.backups.last_backup_age();
                // A restore with the words from a stick records them as seen.
                reminder_done = reminder_done || SeedReminder::done(&self.data_dir);
                grown = crate::system::grow_alert(Path::new(crate::system::GROW_FAILED));
                ip = primary_ip();
                next_system = now + SYSTEM_EVERY;
            }
            let node = self.shared.node();
            let shutdown = match &phase {
                Phase::Running => None,
                Phase::ShuttingDown { saving: true } => Some(ShutdownPhase::InProgress),
                Phase::ShuttingDown { saving: false } | Phase::Failed(_) => {
                    Some(ShutdownPhase::NothingToSave)
                }
                Phase::SafeToUnplug => Some(ShutdownPhase::SafeToUnplug),
                Phase::Stopped => Some(ShutdownPhase::Stopped),
            };
            let screen = match &phase {
                Phase::Failed(screen) => (**screen).clone(),
                _ => {
                    let mut status =
                        node.as_ref().map_or_else(|| self.shared.starting.clone(), |n| n.status());
                    status.alerts.extend(self.shared.alerts());
                    let backup = self.shared.backups.progress();
                    let state = self.shared.state();
                    let views = StateViews::of(&state);
                    let mirror_ask = self.shared.mirror.asked();
                    let ctx = Context {
                        status: &status,
                        system: &system,
                        ip,
                        backup_available: self.shared.backups.available(),
                        backup: backup.as_ref(),
                        shutdown,
                        seed: &seed_words,
                        service: views.service(&state),
                        seed_reminder: node.is_some() && !reminder_done,
                        mirror_ask: mirror_ask.as_ref(),
                    };
                    let now = monotonic().saturating_sub(start);
                    let out = self.ui.tick(now, &gestures, &ctx);
                    for action in out.actions {
                        self.act(action, &mut reminder_done);
                    }
                    if contrast != Some(out.contrast) {
                        match self.display.set_contrast(out.contrast) {
                            Ok(()) => contrast = Some(out.contrast),
                            Err(e) => log_once(&mut last_error, format!("display contrast: {e}")),
                        }
                    }
                    Rendered { frame: out.frame, caption: out.caption, bands: out.bands }
                }
            };
            let screen = self.pager.show(screen, monotonic().saturating_sub(start), !gestures.is_empty());
            if let Err(e) = self.display.show(&screen.frame, &screen.caption) {
                log_once(&mut last_error, format!("display: {e}"));
            }
            if matches!(phase, Phase::ShuttingDown { .. }) {
                self.shared.set_shutting_down_shown();
            }
            drawn_phase = Some(std::mem::discriminant(&phase));
            let now_health = self.display.health();
            if now_health != health {
                match &now_health {
                    DisplayHealth::Present => tracing::info!("display present"),
                    DisplayHealth::Absent { reason, .. } => tracing::warn!(reason, "display absent"),
                }
                health = now_health;
            }
            let now_buttons = self.buttons.health();
            if now_buttons != buttons_health {
                match &now_buttons {
                    ButtonsHealth::Working => tracing::info!("buttons working"),
                    ButtonsHealth::Failing { reason } => tracing::warn!(reason, "buttons not working"),
                }
                buttons_health = now_buttons;
            }
            let mut alerts = device_alerts(&health, &buttons_health);
            alerts.extend(grown.clone());
            let has_channels = node.is_some_and(|n| !n.status().channels.is_empty());
            alerts.extend(self.shared.backups.alert(has_channels));
            *self.shared.device_alerts.lock().unwrap_or_else(|p| p.into_inner()) = alerts;
            if last {
                return;
            }
        }
    }

    fn act(&mut self, action: Action, reminder_done: &mut bool) {
        let event = match action {
            Action::Shutdown => Some(Event::ShutdownGesture),
            Action::Restore => Some(Event::Owner(Owner::Restore)),
            Action::StartEmpty => Some(Event::Owner(Owner::StartEmpty)),
            Action::Dismiss => Some(Event::Owner(Owner::Dismiss)),
            Action::Backup => {
                self.shared.backups.start();
                None
            }
            Action::MirrorAsk => {
                // With a question open, it is on the screen already.
                if let Err(why) = self.shared.mirror.ask(None) {
                    tracing::info!("{why}");
                }
                None
            }
            Action::MirrorAnswer { ask, yes } => {
                // Writing the stick's mark and the data dir's record is off the display thread.
                let shared = Arc::clone(&self.shared);
                let spawned = std::thread::Builder::new()
                    .name("mirror-choice".into())
                    .spawn(move || shared.mirror.answer(ask, yes));
                if let Err(e) = spawned {
                    tracing::error!("cannot record the mirror stick's choice: {e}");
                }
                None
            }
            Action::FundingAddress => {
                if let Some(node) = self.shared.node() {
                    node.want_funding_address();
                }
                None
            }
            Action::SeedSeen | Action::SeedSkipped if *reminder_done => None,
            Action::SeedSeen | Action::SeedSkipped => {
                let at = boltbox_node::unix_now();
                let record = if action == Action::SeedSeen {
                    SeedReminder::Seen { at }
                } else {
                    SeedReminder::Skipped { at }
                };
                match record.save(&self.data_dir) {
                    Ok(()) => {
                        tracing::info!("seed reminder done: {record:?}");
                        *reminder_done = true;
                    }
                    Err(e) => tracing::warn!("cannot record the seed reminder: {e}"),
                }
                None
            }
        };
        if let Some(event) = event {
            // The receiver is gone only when the life is over.
            let _ = self.shared.send(event);
        }
    }
}

/// Owned views of the service's state that the UI borrows for one tick.
struct StateViews {
    waiting: Option<screens::Waiting>,
}

impl StateViews {
    fn of(state: &State) -> StateViews {
        let waiting = match state {
            State::Waiting { wait, retry_at } => {
                Some(wait.view(retry_at.map(|at| at.saturating_duration_since(Instant::now()))))
            }
            _ => None,
        };
        StateViews { waiting }
    }

    fn service<'a>(&'a self, state: &'a State) -> Service<'a> {
        match (state, &self.waiting) {
            (State::Running, _) => Service::Running,
            (State::Checking | State::Starting, _) => Service::Starting,
            (State::Waiting { .. }, Some(waiting)) => Service::Waiting(waiting),
            (State::Waiting { .. }, None) => Service::Starting,
            (State::Store { choice, .. }, _) => Service::Store(choice),
            (State::Offer(offer), _) => Service::Offer(offer),
            (State::Restoring(failed), _) => Service::Restoring(failed.as_deref()),
        }
    }
}

/// Waits up to [`BUTTON_POLL`] for a button edge and returns the gestures it and the passing
/// time make. A failing source is logged once per distinct error.
fn next_gestures(
    buttons: &mut dyn Buttons,
    machine: &mut GestureMachine,
    last_error: &mut Option<String>,
) -> Vec<Gesture> {
    let mut gestures = Vec::new();
    // The lines' levels, read only when no edge was waiting (a queued edge would disagree with
    // them): a long press is declared only on lines read still pressed (board/src/gesture.rs).
    let mut levels = None;
    match buttons.next_edge(BUTTON_POLL) {
        Ok(Some(edge)) => gestures.extend(machine.edge(edge)),
        Ok(None) => match Levels::read(&*buttons) {
            // An edge that came between the wait and the read would disagree with the levels
            // and make its press look like one that lost an edge: then the edge counts, not
            // this read.
            Ok(read) => match buttons.next_edge(Duration::ZERO) {
                Ok(Some(edge)) => gestures.extend(machine.edge(edge)),
                _ => levels = Some(read),
            },
            Err(e) => log_once(last_error, format!("buttons: {e}")),
        },
        Err(e) => {
            log_once(last_error, format!("buttons: {e}"));
            // Failing buttons return at once; wait as a working source would have.
            std::thread::sleep(BUTTON_POLL);
        }
    }
    gestures.extend(machine.tick(monotonic(), levels));
    gestures
}

/// The alerts for a display or buttons that do not work. An absent display cannot show its
/// own alert; it is in the log, in `boltbox status`, and on the display once it is back.
fn device_alerts(display: &DisplayHealth, buttons: &ButtonsHealth) -> Vec<Alert> {
    let mut alerts = Vec::new();
    if let DisplayHealth::Absent { reason, .. } = display {
        alerts.push(Alert::Device {
            headline: "display not working".into(),
            detail: format!("the display does not answer (retrying): {reason}"),
        });
    }
    if let ButtonsHealth::Failing { reason } = buttons {
        alerts.push(Alert::Device {
            headline: "buttons not working".into(),
            detail: format!("the buttons cannot be read (retrying): {reason}"),
        });
    }
    alerts
}

/// Logs an error unless it is the same as the last one (a failing device fails at every frame).
fn log_once(last: &mut Option<String>, message: String) {
    if last.as_deref() != Some(message.as_str()) {
        tracing::warn!("{message}");
        *last = Some(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_display_or_buttons_is_an_alert() {
        assert!(device_alerts(&DisplayHealth::Present, &ButtonsHealth::Working).is_empty());
        let absent =
            DisplayHealth::Absent { reason: "i2c NACK".into(), failures: 3, next_retry: Duration::ZERO };
        let failing = ButtonsHealth::Failing { reason: "no /dev/gpiochip0".into() };
        let alerts = device_alerts(&absent, &failing);
        let headlines: Vec<String> = alerts.iter().map(Alert::headline).collect();
        assert_eq!(headlines, ["display not working", "buttons not working"]);
        assert!(alerts[0].to_string().contains("i2c NACK"), "{}", alerts[0]);
        assert!(alerts[1].to_string().contains("/dev/gpiochip0"), "{}", alerts[1]);
    }

    #[test]
    fn the_seed_reminder_is_recorded_privately() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!SeedReminder::done(dir.path()));
        SeedReminder::Skipped { at: 5 }.save(dir.path()).expect("save");
        assert!(SeedReminder::done(dir.path()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(SEED_REMINDER_FILE)).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

//! `boltbox run`: the supervisor. Loads the config, opens the board, starts the tuned runtime
//! and the node, runs the display and button loop on its own thread, talks to systemd, and turns
//! SIGTERM, SIGINT and the shutdown gesture into one safe-shutdown path.
//!
//! Threads:
//! - the caller's (here "main"): waits for events (node started, signal, shutdown gesture) and
//!   runs the startup and shutdown sequences, which block on the node;
//! - "node-start": `BoltNode::start`, which blocks until ldk-node is up;
//! - "display": buttons → [`GestureMachine`] → [`Ui::tick`] → display, at least every
//!   [`FRAME_EVERY`] and at once after a gesture. It only reads status snapshots, so a busy node
//!   never stalls it, and it feeds the systemd watchdog, so a stalled loop gets restarted;
//! - a task on the runtime that turns SIGTERM and SIGINT into events.
//!
//! The safe shutdown: the display shows "shutting down"; the node stops (ldk-node persists
//! everything, the store is flushed and closed); the runtime stops; filesystems are synced; the
//! display thread draws "safe to unplug" and ends, so the frame has been handed to the display
//! when it is joined; then the configured power-off command runs; then `run` returns.
//! docs/RUN.md describes it for operators, with a systemd unit.

use std::net::IpAddr;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use boltbox_board::buttons::monotonic;
use boltbox_board::{
    Board, BoardConfig, Buttons, ButtonsHealth, Display, DisplayHealth, Gesture, GestureConfig,
    GestureMachine,
};
use boltbox_executor::runtime::{BoardFacts, RuntimeError, RuntimePlan};
use boltbox_node::{Alert, BoltNode, Seed, SeedError, Status};

use crate::backup::BackupService;
use crate::config::{AppConfig, ConfigError, runtime_error};
use crate::control;
use crate::restore_offer;
use crate::screens::{self, Rendered, ShutdownPhase, SystemInfo};
use crate::system::{primary_ip, read_system_info};
use crate::ui::{Action, Context, Ui};

/// The display loop draws at least this often (4 frames/s), and at once after a gesture.
pub const FRAME_EVERY: Duration = Duration::from_millis(250);
/// How long the display loop waits for a button edge before ticking the gesture machine:
/// short, so that a long press is recognised within this much of its threshold.
const BUTTON_POLL: Duration = Duration::from_millis(20);
/// How often the system screen's facts and the IP address are read again.
const SYSTEM_EVERY: Duration = Duration::from_secs(2);
/// How long the runtime's remaining tasks get to finish after the node stopped.
const RUNTIME_GRACE: Duration = Duration::from_secs(5);
/// How long the shutdown waits for a running backup to finish before it stops the node (the
/// snapshot is taken; the rest is writing and verifying the file).
const BACKUP_WAIT: Duration = Duration::from_secs(120);
/// How long the shutdown waits for "shutting down" to be on the display before it stops the
/// node anyway: a hung display must not keep the node from persisting its state.
const SHOWN_WAIT: Duration = Duration::from_secs(2);

/// Why `boltbox run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config file is missing or invalid; shown on the display too.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The board could not be opened.
    #[error("board: {0}")]
    Board(#[from] boltbox_board::OpenError),
    /// The seed could not be read or created.
    #[error("seed: {0}")]
    Seed(#[from] SeedError),
    /// The runtime could not be planned or built.
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// The node did not start.
    #[error("node start: {0}")]
    NodeStart(#[source] boltbox_node::Error),
    /// The node did not stop cleanly: its state may not all be persisted.
    #[error("node stop: {0}")]
    NodeStop(#[source] boltbox_node::Error),
    /// A thread or the signal handlers could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The display thread panicked.
    #[error("the display thread panicked")]
    DisplayThread,
    /// The power-off command failed.
    #[error("power-off command {command:?}: {reason}")]
    PowerOff {
        /// The command.
        command: Vec<String>,
        /// Why it failed.
        reason: String,
    },
}

/// Runs the appliance from the config file at `path` until a safe shutdown (`Ok`) or a failure.
pub fn run(path: &Path) -> Result<(), RunError> {
    let config = match AppConfig::load(path) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(field = e.field, reason = e.reason, "bad config {}", path.display());
            show_config_error(path, &e);
            return Err(e.into());
        }
    };
    let gestures = config.ui.gestures();
    let mut board = boltbox_board::open_with_gestures(&config.board, &gestures)?;
    tracing::info!(chosen = board.chosen, model = board.facts.model, "board");
    let notifier = Arc::new(Notifier::from_env());
    notifier.notify("STATUS=starting");

    let data_dir = config.node.data_dir.clone();
    let plan = runtime_plan(&board, &config)?;
    let runtime = plan.build()?;
    if let Some(offer) = restore_offer::find(&config) {
        offer_restore(&mut board, &gestures, &config, &offer, &runtime, &notifier);
    }

    let (seed, created) = Seed::load_or_create(&data_dir)?;
    if created {
        tracing::info!("created a new seed in {}", data_dir.display());
    }

    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        node: OnceLock::new(),
        phase: Mutex::new(Phase::Running),
        starting: Status::starting(config.node.network, &config.node.alias),
        device_alerts: control::DeviceAlerts::default(),
        shutting_down_shown: Mutex::new(false),
        shown: Condvar::new(),
    });
    let backups = BackupService::new(&config);
    let Board { display, buttons, .. } = board;
    let display_loop = DisplayLoop {
        display,
        buttons,
        gestures: GestureMachine::new(gestures),
        ui: Ui::new(config.ui.ui()),
        shared: Arc::clone(&shared),
        events: tx.clone(),
        notifier: Arc::clone(&notifier),
        data_dir: data_dir.clone(),
        workers: plan.worker_threads(),
        backups: Arc::clone(&backups),
    };
    let display_thread = std::thread::Builder::new()
        .name("display".into())
        .spawn(move || display_loop.run())
        .map_err(|source| RunError::Io { what: "starting the display thread", source })?;

    watch_signals(&runtime, tx.clone())?;

    let node_config = config.node.clone();
    let handle = runtime.handle().clone();
    let node_tx = tx.clone();
    std::thread::Builder::new()
        .name("node-start".into())
        .spawn(move || {
            let started = BoltNode::start(&node_config, &seed, handle);
            // The receiver outlives this thread unless `run` already failed; nothing to tell.
            let _ = node_tx.send(Event::NodeStarted(Box::new(started)));
        })
        .map_err(|source| RunError::Io { what: "starting the node thread", source })?;
    drop(tx);

    let control = ControlSocket {
        runtime: runtime.handle().clone(),
        path: control::socket_path(&data_dir),
        device_alerts: Arc::clone(&shared.device_alerts),
    };
    let node = match wait_for_node_then_shutdown(&rx, &shared, &notifier, &control) {
        Ok(node) => node,
        Err(e) => {
            let screen = match &e {
                boltbox_node::Error::Config(c) => Some(Box::new(screens::config_error(&c.field, &c.reason))),
                boltbox_node::Error::Invalid { what, reason } => {
                    Some(Box::new(screens::config_error(what, reason)))
                }
                _ => None,
            };
            shared.set_phase(Phase::Failed(screen));
            // The display thread draws the error and ends; a panic there changes nothing now.
            let _ = display_thread.join();
            runtime.shutdown_timeout(RUNTIME_GRACE);
            return Err(RunError::NodeStart(e));
        }
    };

    // The safe shutdown. The owner sees "shutting down" before anything stops.
    if !shared.wait_shutting_down_shown(SHOWN_WAIT) {
        tracing::warn!("the display did not show \"shutting down\" in time; stopping the node anyway");
    }
    notifier.notify("STOPPING=1\nSTATUS=stopping the node");
    control.remove();
    if !backups.wait_idle(BACKUP_WAIT) {
        tracing::warn!("a backup is still running; stopping the node anyway (the backup fails)");
    }
    let stopped = node.stop();
    drop(node);
    runtime.shutdown_timeout(RUNTIME_GRACE);
    if let Err(e) = stopped {
        // Not "safe to unplug": the state may not be persisted. Exiting non-zero lets systemd
        // start boltbox again, which recovers what was persisted, rather than power off.
        tracing::error!(error = %e, "the node did not stop cleanly");
        shared.set_phase(Phase::Failed(None));
        let _ = display_thread.join();
        return Err(RunError::NodeStop(e));
    }
    notifier.notify("STATUS=syncing filesystems");
    rustix::fs::sync();
    shared.set_phase(Phase::SafeToUnplug);
    display_thread.join().map_err(|_| RunError::DisplayThread)?;
    tracing::info!("safe to unplug");
    notifier.notify("STATUS=safe to unplug");
    power_off(&config.off_command())
}

/// What the main thread waits for.
enum Event {
    /// `BoltNode::start` returned.
    NodeStarted(Box<Result<BoltNode, boltbox_node::Error>>),
    /// A signal asked for shutdown.
    Signal(&'static str),
    /// The user confirmed the shutdown gesture.
    ShutdownGesture,
}

/// Waits for the node to start and then for a shutdown request (a signal or the gesture).
/// A request that comes while the node is starting is kept until it has started, since
/// ldk-node's start cannot be interrupted and stopping it is what persists its state.
fn wait_for_node_then_shutdown(
    rx: &Receiver<Event>,
    shared: &Shared,
    notifier: &Notifier,
    control: &ControlSocket,
) -> Result<Arc<BoltNode>, boltbox_node::Error> {
    let mut node: Option<Arc<BoltNode>> = None;
    let mut shutdown_requested = false;
    loop {
        let event = match rx.recv() {
            Ok(event) => event,
            // Every sender is gone: nothing can ask for shutdown any more, so shut down.
            Err(mpsc::RecvError) => Event::Signal("no event sources left"),
        };
        match event {
            Event::NodeStarted(started) => {
                let started = Arc::new((*started)?);
                let id = started.node_id();
                tracing::info!(node_id = id, uris = ?started.uris(), "node running");
                notifier.notify(&format!("READY=1\nSTATUS=node {id} running"));
                // Set once: this is the only place that sets it.
                let _ = shared.node.set(Arc::clone(&started));
                control.serve(Arc::clone(&started));
                node = Some(started);
            }
            Event::Signal(why) => request_shutdown(&mut shutdown_requested, why, shared, notifier),
            Event::ShutdownGesture => {
                request_shutdown(&mut shutdown_requested, "the shutdown gesture", shared, notifier)
            }
        }
        if let (true, Some(node)) = (shutdown_requested, &node) {
            return Ok(Arc::clone(node));
        }
    }
}

/// First start with an empty data dir and a backup on a stick: shows the offer until the owner
/// restores it (the node then starts from the backup) or holds A for a new node. Runs before the
/// signal handlers: SIGTERM here ends the process, with nothing started that could lose state.
fn offer_restore(
    board: &mut Board,
    gestures: &GestureConfig,
    config: &AppConfig,
    offer: &restore_offer::Offer,
    runtime: &tokio::runtime::Runtime,
    notifier: &Notifier,
) {
    use restore_offer::{Decision, OfferUi};
    tracing::info!(
        stick = offer.stick,
        file = %offer.file.display(),
        node_id = offer.header.node_id,
        commit = offer.header.commit_counter,
        "the data dir is empty and a USB stick holds a backup: offering to restore it on the display"
    );
    notifier.notify("STATUS=waiting for the owner: restore offer on the display");
    let mut machine = GestureMachine::new(*gestures);
    let mut ui = OfferUi::Offer;
    let mut drawn: Option<Rendered> = None;
    let mut next_watchdog = Instant::now();
    let mut last_error = None;
    loop {
        let got = next_gestures(&mut *board.buttons, &mut machine, &mut last_error);
        notifier.feed_watchdog(&mut next_watchdog);
        let words = offer.words.is_file();
        for gesture in got {
            match ui.gesture(gesture, words) {
                Some(Decision::NewNode) => {
                    tracing::info!("the owner chose a new node over the backup");
                    return;
                }
                Some(Decision::Restore) => {
                    let screen = ui.screen(offer, words, boltbox_node::unix_now());
                    if let Err(e) = board.display.show(&screen.frame, &screen.caption) {
                        log_once(&mut last_error, format!("display: {e}"));
                    }
                    let workers = boltbox_node::backup::Workers(runtime.handle().clone());
                    match restore_offer::restore(config, offer, &workers) {
                        Ok(report) => {
                            tracing::info!(
                                node_id = offer.header.node_id,
                                commit = report.commit_counter,
                                "restored the backup from the stick; starting the node"
                            );
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "restore from the stick failed");
                            ui = OfferUi::Failed(e.to_string());
                        }
                    }
                }
                None => {}
            }
        }
        let screen = ui.screen(offer, words, boltbox_node::unix_now());
        if drawn.as_ref() != Some(&screen) {
            if let Err(e) = board.display.show(&screen.frame, &screen.caption) {
                log_once(&mut last_error, format!("display: {e}"));
            }
            drawn = Some(screen);
        }
    }
}

/// Where `boltbox <command>` reaches the running node (see [`control`]).
struct ControlSocket {
    runtime: tokio::runtime::Handle,
    path: PathBuf,
    device_alerts: control::DeviceAlerts,
}

impl ControlSocket {
    /// Starts answering; without the socket the node still runs, only the CLI cannot reach it.
    fn serve(&self, node: Arc<BoltNode>) {
        if let Err(e) = control::serve(&self.runtime, &self.path, node, Arc::clone(&self.device_alerts)) {
            tracing::warn!(error = %e, "cannot listen at {}: the boltbox CLI cannot reach this node", self.path.display());
        }
    }

    /// Stops new commands reaching a node that is stopping.
    fn remove(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "cannot remove {}", self.path.display()),
        }
    }
}

fn request_shutdown(requested: &mut bool, why: &str, shared: &Shared, notifier: &Notifier) {
    if *requested {
        tracing::info!("{why}: already shutting down");
        return;
    }
    *requested = true;
    tracing::info!("{why}: safe shutdown");
    shared.set_phase(Phase::ShuttingDown);
    notifier.notify("STATUS=shutting down");
}

/// Turns SIGTERM and SIGINT into [`Event::Signal`]; the handlers stay installed, so later
/// signals are logged rather than killing a shutdown half-way.
fn watch_signals(runtime: &tokio::runtime::Runtime, tx: Sender<Event>) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let _entered = runtime.enter();
    let io = |source| RunError::Io { what: "installing signal handlers", source };
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    runtime.spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => return,
            };
            if tx.send(Event::Signal(name)).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// The runtime plan from the board's facts (or the kernel's, when the board could not tell
/// the memory size), with the config's overrides.
fn runtime_plan(board: &Board, config: &AppConfig) -> Result<RuntimePlan, RunError> {
    let facts = match board.facts.memory_bytes {
        0 => BoardFacts::detect()?,
        memory_bytes => BoardFacts { cores: board.facts.cores, memory_bytes },
    };
    let plan = RuntimePlan::derive(facts)?.with_overrides(&config.runtime).map_err(runtime_error)?;
    Ok(plan)
}

/// Shows a bad config on the board the file asks for, if that part of it can be read, else
/// on the default board (the real hardware).
fn show_config_error(path: &Path, error: &ConfigError) {
    let board_config = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|mut table| table.remove("board"))
        .and_then(|board| board.try_into::<BoardConfig>().ok())
        .filter(|board| board.validate().is_ok())
        .unwrap_or_default();
    match boltbox_board::open(&board_config) {
        Ok(mut board) => {
            let screen = screens::config_error(&error.field, &error.reason);
            if let Err(e) = board.display.show(&screen.frame, &screen.caption) {
                tracing::warn!(error = %e, "cannot show the config error");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot open the board to show the config error"),
    }
}

/// Runs the power-off command, if any.
fn power_off(command: &[String]) -> Result<(), RunError> {
    let Some((program, args)) = command.split_first() else {
        tracing::info!("no power-off command configured; exiting");
        return Ok(());
    };
    tracing::info!(?command, "powering off");
    let failed = |reason: String| RunError::PowerOff { command: command.to_vec(), reason };
    let status =
        std::process::Command::new(program).args(args).status().map_err(|e| failed(e.to_string()))?;
    if status.success() { Ok(()) } else { Err(failed(status.to_string())) }
}

/// Where the appliance is in its life, as the display thread sees it.
#[derive(Debug, Clone)]
enum Phase {
    /// Booting or running.
    Running,
    /// A safe shutdown is in progress.
    ShuttingDown,
    /// Everything is persisted: draw "safe to unplug" and end.
    SafeToUnplug,
    /// Starting or stopping failed: draw this (if any) and end.
    Failed(Option<Box<Rendered>>),
}

/// What the main and the display thread share.
struct Shared {
    /// The node, once started.
    node: OnceLock<Arc<BoltNode>>,
    phase: Mutex<Phase>,
    /// The status shown before the node has one.
    starting: Status,
    /// The display's and buttons' alerts, kept by the display thread.
    device_alerts: control::DeviceAlerts,
    /// Set by the display thread once a "shutting down" frame went to the display.
    shutting_down_shown: Mutex<bool>,
    shown: Condvar,
}

impl Shared {
    fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    fn device_alerts(&self) -> Vec<Alert> {
        self.device_alerts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_device_alerts(&self, alerts: Vec<Alert>) {
        *self.device_alerts.lock().unwrap_or_else(|p| p.into_inner()) = alerts;
    }

    fn set_shutting_down_shown(&self) {
        *self.shutting_down_shown.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shown.notify_all();
    }

    /// Waits up to `timeout` for the display thread to have shown "shutting down"; true if it has.
    fn wait_shutting_down_shown(&self, timeout: Duration) -> bool {
        let shown = self.shutting_down_shown.lock().unwrap_or_else(|p| p.into_inner());
        let (shown, _) =
            self.shown.wait_timeout_while(shown, timeout, |shown| !*shown).unwrap_or_else(|p| p.into_inner());
        *shown
    }
}

/// The display and button loop, on its own thread.
struct DisplayLoop {
    display: Box<dyn Display>,
    buttons: Box<dyn Buttons>,
    gestures: GestureMachine,
    ui: Ui,
    shared: Arc<Shared>,
    events: Sender<Event>,
    notifier: Arc<Notifier>,
    data_dir: PathBuf,
    workers: usize,
    /// Backups to USB sticks, made on a thread of their own.
    backups: Arc<BackupService>,
}

impl DisplayLoop {
    fn run(mut self) {
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
        let mut drawn_phase: Option<Phase> = None;
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
            let last = matches!(phase, Phase::SafeToUnplug | Phase::Failed(_));
            // A new phase is drawn at once: the shutdown waits for "shutting down" to be shown.
            let new_phase =
                drawn_phase.as_ref().map(std::mem::discriminant) != Some(std::mem::discriminant(&phase));
            if gestures.is_empty() && now < next_frame && !new_phase {
                continue;
            }
            next_frame = now + FRAME_EVERY;
            if now >= next_system {
                system = read_system_info(&self.data_dir, self.workers);
                self.backups.reload();
                system.last_backup_age = self.backups.last_backup_age();
                ip = primary_ip();
                next_system = now + SYSTEM_EVERY;
            }
            let node = self.shared.node.get();
            let shutdown = match phase {
                Phase::Running => None,
                Phase::ShuttingDown | Phase::Failed(_) => Some(ShutdownPhase::InProgress),
                Phase::SafeToUnplug => Some(ShutdownPhase::SafeToUnplug),
            };
            let screen = match (&phase, node) {
                (Phase::Failed(Some(screen)), _) => (**screen).clone(),
                (Phase::Running, None) => screens::boot(env!("CARGO_PKG_VERSION")),
                _ => {
                    let mut status = node.map_or_else(|| self.shared.starting.clone(), |n| n.status());
                    status.alerts.extend(self.shared.device_alerts());
                    let backup = self.backups.progress();
                    let ctx = Context {
                        status: &status,
                        system: &system,
                        ip,
                        backup_available: node.is_some(),
                        backup: backup.as_ref(),
                        shutdown,
                        seed: &seed_words,
                    };
                    let now = monotonic().saturating_sub(start);
                    let out = self.ui.tick(now, &gestures, &ctx);
                    for action in out.actions {
                        match action {
                            Action::Shutdown => {
                                // The receiver is gone only when `run` is over.
                                let _ = self.events.send(Event::ShutdownGesture);
                            }
                            Action::Backup => self.backups.start(node.cloned()),
                        }
                    }
                    if contrast != Some(out.contrast) {
                        match self.display.set_contrast(out.contrast) {
                            Ok(()) => contrast = Some(out.contrast),
                            Err(e) => log_once(&mut last_error, format!("display contrast: {e}")),
                        }
                    }
                    Rendered { frame: out.frame, caption: out.caption }
                }
            };
            if let Err(e) = self.display.show(&screen.frame, &screen.caption) {
                log_once(&mut last_error, format!("display: {e}"));
            }
            if matches!(phase, Phase::ShuttingDown) {
                self.shared.set_shutting_down_shown();
            }
            drawn_phase = Some(phase);
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
            let has_channels = node.is_some_and(|n| !n.status().channels.is_empty());
            alerts.extend(self.backups.alert(has_channels));
            self.shared.set_device_alerts(alerts);
            if last {
                return;
            }
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
    match buttons.next_edge(BUTTON_POLL) {
        Ok(Some(edge)) => gestures.extend(machine.edge(edge)),
        Ok(None) => {}
        Err(e) => {
            log_once(last_error, format!("buttons: {e}"));
            // Failing buttons return at once; wait as a working source would have.
            std::thread::sleep(BUTTON_POLL);
        }
    }
    gestures.extend(machine.tick(monotonic()));
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

/// systemd's notify protocol (sd_notify(3)): datagrams to `$NOTIFY_SOCKET`, when set.
#[derive(Debug)]
struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// `$WATCHDOG_USEC`, when the watchdog is on for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let bytes = path.as_encoded_bytes();
            // "@name" is a socket in the abstract namespace.
            let addr = match bytes.strip_prefix(b"@") {
                Some(name) => SocketAddr::from_abstract_name(name),
                None => SocketAddr::from_pathname(&path),
            };
            let socket = addr.and_then(|addr| UnixDatagram::unbound().map(|s| (s, addr)));
            socket.map_err(|e| tracing::warn!(error = %e, "NOTIFY_SOCKET is set but unusable")).ok()
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .map_or(true, |pid| pid.trim().parse::<u32>().is_ok_and(|p| p == std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us && target.is_some())
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// Tells the watchdog we are alive when `next` is due, at half its interval.
    fn feed_watchdog(&self, next: &mut Instant) {
        if let Some(interval) = self.watchdog {
            let now = Instant::now();
            if now >= *next {
                self.notify("WATCHDOG=1");
                *next = now + interval / 2;
            }
        }
    }

    fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!(error = %e, state, "cannot notify systemd");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifier_sends_datagrams_to_the_notify_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().expect("socket"),
                SocketAddr::from_pathname(&path).expect("addr"),
            )),
            watchdog: None,
        };
        notifier.notify("READY=1\nSTATUS=up");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("datagram");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
    }

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
    fn power_off_runs_the_command_and_reports_failure() {
        assert!(power_off(&[]).is_ok());
        assert!(power_off(&["true".into()]).is_ok());
        let e = power_off(&["false".into()]).expect_err("false fails");
        assert!(matches!(e, RunError::PowerOff { .. }), "{e}");
        assert!(power_off(&["/nonexistent/poweroff".into()]).is_err());
    }
}

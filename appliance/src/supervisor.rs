//! `boltbox run`: the supervisor. Loads the config, opens the board, starts the display loop,
//! the control socket and the tuned runtime, and then runs the service's life (docs/RUN.md):
//!
//! 1. **Config error**: the only reason `boltbox run` exits by itself, with its own exit code
//!    ([`EXIT_CONFIG`]), which the unit's `RestartPreventExitStatus=` keeps systemd from looping
//!    on; the OLED keeps the field and the reason.
//! 2. **The data dir** ([`boltbox_node::datadir`]): a new node on an empty one (or the restore
//!    of a backup offered on a stick); a store that needs the owner waits for the owner (a
//!    restore, or an explicit start on an empty store), never started silently.
//! 3. **Waiting for …** the world outside ([`crate::preflight`]): disk space, network, clock,
//!    listen address, chain source. Retried with a bounded backoff; the display, the buttons,
//!    the watchdog and the control socket work all along.
//! 4. **Running**: the node is up; problems are alerts. A node whose bitcoind cookie rotated is
//!    stopped and started again inside the process.
//! 5. **Stopping**: SIGTERM or SIGINT (`systemctl stop`, `restart`) is a safe stop that exits 0;
//!    only the shutdown gesture goes on to "safe to unplug" and powers the board off. A node that
//!    cannot save its state on the way down is never called safe: the screen says so and the
//!    process exits [`EXIT_RESTART`].
//!
//! Threads: this one runs the life (events from a channel); "display" draws and reads the
//! buttons ([`crate::display_loop`]); "node-start" and "preflight" run the blocking steps; the
//! tuned runtime runs the node; a small runtime of its own ("boltbox-service") serves the control
//! socket and turns signals into events, so that both are answered while the node's runtime is
//! stalled on a store that cannot write.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use boltbox_board::{Board, BoardConfig};
use boltbox_executor::runtime::{BoardFacts, RuntimeError, RuntimePlan};
use boltbox_node::backup::{RecoveredRestore, Workers};
use boltbox_node::datadir::{DataDirLock, LockError};
use boltbox_node::mirror::MirrorSetup;
use boltbox_node::{Alert, BoltNode, DataDir, Inspection, Seed, Status, Store, StoreProblem};

use crate::backup::{BackupService, BackupTarget};
use crate::config::{AppConfig, ConfigError, runtime_error};
use crate::control::{self, ServiceStatus};
use crate::display_loop::DisplayLoop;
use crate::preflight::{self, Wait, WaitFor};
use crate::restore_offer::{self, Offered};
use crate::screens::{self, Rendered, StoreChoice};
use crate::ui;

/// Exit code of a config that cannot be used (sysexits' EX_CONFIG): systemd does not restart.
pub const EXIT_CONFIG: u8 = 78;
/// Exit code of a run that must be started again in a fresh process (sysexits' EX_TEMPFAIL):
/// the node could not save its state on the way down, or ldk-node left parts running after a
/// failed start.
pub const EXIT_RESTART: u8 = 75;

/// How long the shutdown waits for "shutting down" to be on the display before it stops the
/// node anyway: a hung display must not keep the node from persisting its state.
const SHOWN_WAIT: Duration = Duration::from_secs(2);
/// How long the shutdown waits for a running backup (the unit allows the whole stop 120 s).
const BACKUP_WAIT: Duration = Duration::from_secs(30);
/// How long the node gets to stop and persist.
const NODE_STOP_WAIT: Duration = Duration::from_secs(45);
/// How long the runtime's remaining tasks get to finish after the node stopped.
const RUNTIME_GRACE: Duration = Duration::from_secs(5);
/// How often a waiting service looks at the data dir, the sticks and the running node again.
const LOOK_AGAIN: Duration = Duration::from_secs(2);
/// A store problem that the owner cannot act on (in use, unreadable) is looked at again this
/// often even when the data dir looks unchanged.
const LOOK_AGAIN_UNCHANGED: Duration = Duration::from_secs(10);

/// Why `boltbox run` ended other than with a safe stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config file is missing or invalid; shown on the display too.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The board could not be opened.
    #[error("board: {0}")]
    Board(#[from] boltbox_board::OpenError),
    /// The runtime could not be planned or built.
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// A thread, the signal handlers or the data dir could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The service must be started again in a fresh process (see [`EXIT_RESTART`]).
    #[error("{0}")]
    Restart(String),
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

impl RunError {
    /// The process's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => EXIT_CONFIG,
            RunError::Restart(_) => EXIT_RESTART,
            _ => 1,
        }
    }
}

/// What the life waits for.
pub(crate) enum Event {
    /// SIGTERM or SIGINT: a safe stop.
    Signal(&'static str),
    /// The owner confirmed the shutdown gesture: a safe stop, then power-off.
    ShutdownGesture,
    /// The owner chose on the display or through the control socket.
    Owner(Owner),
    /// The preflight checks ended.
    Checked(Result<(), Wait>),
    /// `BoltNode::start` returned.
    NodeStarted(Box<Result<BoltNode, boltbox_node::Error>>),
}

/// An owner's choice about the data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Restore the backup on offer.
    Restore,
    /// Start on an empty store (or make a new node instead of the backup on offer).
    StartEmpty,
    /// Back from a failed restore.
    Dismiss,
}

/// Where the service is, as the display, `boltbox status` and systemd see it.
#[derive(Debug, Clone)]
pub(crate) enum State {
    /// Looking at the data dir and the world outside.
    Checking,
    /// Waiting for the world outside; `retry_at` is the next attempt.
    Waiting { wait: Wait, retry_at: Option<Instant> },
    /// The data dir needs the owner.
    Store { problem: StoreProblem, choice: StoreChoice },
    /// A first start with a backup on a stick.
    Offer(ui::Offer),
    /// A restore runs (`None`), or failed (why).
    Restoring(Option<String>),
    /// ldk-node is starting.
    Starting,
    /// The node runs.
    Running,
}

impl State {
    /// The line systemd's `STATUS=` and the log get.
    fn describe(&self) -> String {
        match self {
            State::Checking => "checking".into(),
            State::Waiting { wait, .. } => wait.to_string(),
            State::Store { problem, .. } => format!("waiting for the owner: {problem}"),
            State::Offer(_) => "waiting for the owner: restore offer on the display".into(),
            State::Restoring(None) => "restoring a backup".into(),
            State::Restoring(Some(why)) => format!("restore failed: {why}"),
            State::Starting => "starting the node".into(),
            State::Running => "node running".into(),
        }
    }

    fn status(&self) -> ServiceStatus {
        let now = Instant::now();
        let (state, waiting_for, reason, retry_in_secs) = match self {
            State::Checking => ("checking", None, None, None),
            State::Waiting { wait, retry_at } => (
                "waiting",
                Some(wait.what.name().to_string()),
                Some(wait.reason.clone()),
                retry_at.map(|at| at.saturating_duration_since(now).as_secs()),
            ),
            State::Store { problem, .. } => {
                ("store", Some(problem.headline().to_string()), Some(problem.to_string()), None)
            }
            State::Offer(_) => ("restore_offer", None, None, None),
            State::Restoring(failed) => ("restoring", None, failed.clone(), None),
            State::Starting => ("starting", None, None, None),
            State::Running => ("running", None, None, None),
        };
        ServiceStatus { state: state.into(), waiting_for, reason, retry_in_secs }
    }
}

/// Where the service is on its way out, as the display thread sees it.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// Not shutting down.
    Running,
    /// A safe shutdown is in progress; `saving` while there is a node or store to persist.
    ShuttingDown { saving: bool },
    /// Everything is persisted and the board powers off: draw "safe to unplug" and end.
    SafeToUnplug,
    /// Everything is persisted; the service stops (SIGTERM): draw "stopped" and end.
    Stopped,
    /// Draw this last frame and end.
    Failed(Box<Rendered>),
}

/// What the supervisor shares with the display thread and the control socket.
pub(crate) struct Shared {
    node: RwLock<Option<Arc<BoltNode>>>,
    phase: Mutex<Phase>,
    state: Mutex<State>,
    /// The status shown before the node has one.
    pub(crate) starting: Status,
    /// The display's and buttons' alerts, kept by the display thread.
    pub(crate) device_alerts: control::DeviceAlerts,
    /// Notices of this run (an interrupted restore settled), shown as alerts.
    notices: Mutex<Vec<Alert>>,
    shutting_down_shown: Mutex<bool>,
    shown: Condvar,
    events: Mutex<Sender<Event>>,
    pub(crate) backups: Arc<BackupService>,
    /// The live mirror's stick.
    pub(crate) mirror: crate::mirror::MirrorChoice,
    data_dir: PathBuf,
    sticks: PathBuf,
}

impl Shared {
    pub(crate) fn node(&self) -> Option<Arc<BoltNode>> {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_node(&self, node: Option<Arc<BoltNode>>) {
        *self.node.write().unwrap_or_else(|p| p.into_inner()) = node;
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    pub(crate) fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn alerts(&self) -> Vec<Alert> {
        let mut alerts = self.device_alerts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        alerts.extend(self.notices.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        alerts
    }

    pub(crate) fn set_shutting_down_shown(&self) {
        *self.shutting_down_shown.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shown.notify_all();
    }

    fn wait_shutting_down_shown(&self, timeout: Duration) -> bool {
        let shown = self.shutting_down_shown.lock().unwrap_or_else(|p| p.into_inner());
        let (shown, _) =
            self.shown.wait_timeout_while(shown, timeout, |shown| !*shown).unwrap_or_else(|p| p.into_inner());
        *shown
    }

    /// Sends an event to the life; false once it is over.
    pub(crate) fn send(&self, event: Event) -> bool {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).send(event).is_ok()
    }

    /// The data dir (for the display's seed words and reminder).
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl control::Service for Shared {
    fn node(&self) -> Option<Arc<BoltNode>> {
        Shared::node(self)
    }

    fn service_status(&self) -> ServiceStatus {
        match self.phase() {
            Phase::Running => self.state().status(),
            _ => ServiceStatus {
                state: "stopping".into(),
                waiting_for: None,
                reason: None,
                retry_in_secs: None,
            },
        }
    }

    fn starting_status(&self) -> Status {
        self.starting.clone()
    }

    fn alerts(&self) -> Vec<Alert> {
        Shared::alerts(self)
    }

    fn start_empty(&self) -> Result<(), String> {
        match self.state() {
            State::Store { problem, choice } if choice.start_empty => {
                tracing::warn!(
                    "the owner asked through the control socket to start on an empty store ({problem})"
                );
                if self.send(Event::Owner(Owner::StartEmpty)) {
                    Ok(())
                } else {
                    Err("boltbox is stopping".into())
                }
            }
            State::Store { problem, .. } => Err(format!("not allowed for this store: {problem}")),
            other => Err(format!("the store needs no empty start: {}", other.describe())),
        }
    }

    fn backups(&self) -> &BackupService {
        &self.backups
    }

    fn mirror(&self) -> &crate::mirror::MirrorChoice {
        &self.mirror
    }

    fn writable_places(&self) -> String {
        format!(
            "a USB stick (under {}) or a directory under {}",
            self.sticks.display(),
            self.data_dir.display()
        )
    }
}

/// Runs the appliance from the config file at `path` until a safe stop (`Ok`) or a failure.
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
    let board = boltbox_board::open_with_gestures(&config.board, &gestures)?;
    tracing::info!(chosen = board.chosen, model = board.facts.model, "board");
    let notifier = Arc::new(Notifier::from_env());
    notifier.notify("STATUS=starting");

    let data_dir = config.node.data_dir.clone();
    // A data dir that cannot be made (a partition not mounted, read-only) is waited on like any
    // store problem; so is the control socket in it.
    if let Err(e) = boltbox_node::files::create_private_dir(&data_dir) {
        tracing::warn!("{e}");
    }
    let plan = runtime_plan(&board, &config)?;
    let runtime = plan.build()?;
    let service_runtime = ServiceRuntime::new()?;
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        node: RwLock::new(None),
        phase: Mutex::new(Phase::Running),
        state: Mutex::new(State::Checking),
        starting: Status {
            chain_source: config.node.chain.describe(),
            ..Status::starting(config.node.network, &config.node.alias)
        },
        device_alerts: control::DeviceAlerts::default(),
        notices: Mutex::new(Vec::new()),
        shutting_down_shown: Mutex::new(false),
        shown: Condvar::new(),
        events: Mutex::new(tx.clone()),
        backups: BackupService::new(&config),
        mirror: crate::mirror::MirrorChoice::new(&config),
        data_dir: data_dir.clone(),
        sticks: config.backup.sticks.clone(),
    });
    let Board { display, buttons, .. } = board;
    let display_loop = DisplayLoop::new(
        display,
        buttons,
        &config,
        Arc::clone(&shared),
        Arc::clone(&notifier),
        plan.worker_threads(),
    );
    let display_thread = std::thread::Builder::new()
        .name("display".into())
        .spawn(move || display_loop.run())
        .map_err(|source| RunError::Io { what: "starting the display thread", source })?;
    watch_signals(service_runtime.handle(), tx.clone())?;
    let socket = control::socket_path(&data_dir);
    let serving = serve_control(service_runtime.handle(), &socket, &shared);
    // READY=1 means: the service is up (display, buttons, control socket); what the node is
    // doing is in STATUS= and on the display (docs/RUN.md).
    notifier.notify("READY=1\nSTATUS=checking");

    let mut life = Life {
        config,
        shared: Arc::clone(&shared),
        events: rx,
        tx,
        runtime,
        service_runtime,
        notifier: Arc::clone(&notifier),
        store: None,
        node: None,
        attempts: 0,
        last_wait: None,
        gesture: false,
        record_node_id: false,
        lock: None,
        serving,
        mirroring: None,
        frozen: false,
    };
    let outcome = life.live();
    life.shut_down(outcome, display_thread, &socket)
}

/// Why the life ended.
enum End {
    /// A safe stop was asked for.
    Stop,
    /// A fresh process is needed (see [`EXIT_RESTART`]).
    Restart(String),
}

/// The service's life: the stages of the module documentation, on this thread.
struct Life {
    config: AppConfig,
    shared: Arc<Shared>,
    events: Receiver<Event>,
    tx: Sender<Event>,
    runtime: tokio::runtime::Runtime,
    service_runtime: ServiceRuntime,
    notifier: Arc<Notifier>,
    /// The data dir's store and seed, once they may run.
    store: Option<(Store, Seed)>,
    node: Option<Arc<BoltNode>>,
    /// Failed attempts since the last success or the last change of what is waited for, for the
    /// backoff: a new problem is looked at again soon.
    attempts: u32,
    last_wait: Option<Wait>,
    /// The shutdown came from the gesture (power off at the end).
    gesture: bool,
    /// The store does not record its node yet: do so once the node runs.
    record_node_id: bool,
    /// The data dir's lock, held from when it was first got until the process ends.
    lock: Option<DataDirLock>,
    /// The control socket listens.
    serving: bool,
    /// Where the open store's mirror was last pointed (none since the store was opened).
    mirroring: Option<crate::mirror::Target>,
    /// The remote mirror refused this device while the node ran: the store holds its writes,
    /// and the node is not stopped (it could not persist) but left to the process's end.
    frozen: bool,
}

/// While the data dir waits for the owner, the remote mirror's offer is looked at again this
/// often (VSS may have been unreachable at the last look).
const VSS_LOOK_AGAIN: Duration = Duration::from_secs(30);

/// The runtime of the control socket and the signal handlers, apart from the node's: ldk-node
/// calls the store synchronously from its tasks, so a store that cannot write stalls every
/// worker of the node's runtime, and the owner's `boltbox status` and systemd's SIGTERM must
/// still be answered then. One worker and a few blocking threads for the control requests.
struct ServiceRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl ServiceRuntime {
    fn new() -> Result<Self, RunError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_name("boltbox-service")
            .enable_all()
            .build()
            .map_err(|source| RunError::Io { what: "starting the service runtime", source })?;
        let handle = runtime.handle().clone();
        Ok(ServiceRuntime { runtime: Some(runtime), handle })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for ServiceRuntime {
    /// Without waiting: a control request can be stuck in the node (a store that cannot
    /// write), and the process must still end.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Listens on the control socket at `socket`; false (logged) when it cannot.
fn serve_control(runtime: &tokio::runtime::Handle, socket: &Path, shared: &Arc<Shared>) -> bool {
    match control::serve(runtime, socket, Arc::clone(shared) as Arc<dyn control::Service>) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen at {}: the boltbox CLI cannot reach this node", socket.display());
            false
        }
    }
}

/// What waiting for events gave.
enum Next {
    /// Go on with this event.
    Event(Event),
    /// The time ran out.
    Timeout,
    /// Shut down.
    Stop,
}

impl Life {
    fn set_state(&self, state: State) {
        let line = state.describe();
        let mut current = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if current.describe() != line {
            tracing::info!("{line}");
            self.notifier.notify(&format!("STATUS={line}"));
        }
        *current = state;
    }

    /// Waits up to `timeout` for an event; a shutdown request is taken here for every stage.
    fn next(&mut self, timeout: Duration) -> Next {
        match self.events.recv_timeout(timeout) {
            Ok(Event::Signal(why)) => {
                tracing::info!("{why}: safe stop");
                Next::Stop
            }
            Ok(Event::ShutdownGesture) => {
                tracing::info!("the shutdown gesture: safe shutdown");
                self.gesture = true;
                Next::Stop
            }
            Ok(event) => Next::Event(event),
            Err(RecvTimeoutError::Timeout) => Next::Timeout,
            // Every sender is gone: nothing can ask for anything any more.
            Err(RecvTimeoutError::Disconnected) => Next::Stop,
        }
    }

    fn live(&mut self) -> End {
        loop {
            if self.store.is_none() {
                match self.open_data_dir() {
                    Ok(true) => {}
                    Ok(false) => return End::Stop,
                    Err(end) => return end,
                }
            }
            match self.preflight() {
                Some(true) => {}
                Some(false) => continue,
                None => return End::Stop,
            }
            match self.start_node() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(end) => return end,
            }
            match self.run_node() {
                Ok(()) => continue,
                Err(end) => return end,
            }
        }
    }

    /// Looks at the data dir until its store and seed may run (`Ok(true)`), or a shutdown
    /// (`Ok(false)`).
    fn open_data_dir(&mut self) -> Result<bool, End> {
        let dir = DataDir::new(&self.config.node.data_dir, self.config.node.network);
        let mut last_seen: Option<Fingerprint> = None;
        let mut failed: Option<String> = None;
        // A problem the owner cannot act on (the store in use, unreadable) is looked at again
        // after a while even when nothing visible changed.
        let mut look_at: Option<Instant> = None;
        loop {
            let seen = Fingerprint::of(&dir, &self.config.backup.sticks);
            if last_seen.as_ref() != Some(&seen) || look_at.is_some_and(|at| Instant::now() >= at) {
                last_seen = Some(seen);
                look_at = None;
                let (recovered, inspection) = match self.lock_data_dir().and_then(|()| dir.inspect()) {
                    Ok(found) => found,
                    Err(e) => {
                        let problem = match e.kind() {
                            std::io::ErrorKind::WouldBlock => StoreProblem::InUse,
                            _ => StoreProblem::Unreadable { reason: e.to_string() },
                        };
                        (None, Inspection::Problem { problem, seed: None })
                    }
                };
                if let Inspection::Problem {
                    problem: StoreProblem::InUse | StoreProblem::Unreadable { .. },
                    ..
                } = &inspection
                {
                    look_at = Some(Instant::now() + LOOK_AGAIN_UNCHANGED);
                }
                if let Some(recovered) = recovered {
                    self.notice(recovered);
                }
                // A remote mirror that did not answer (or had nothing yet) is asked again.
                if self.config.mirror.vss.is_some() && !matches!(inspection, Inspection::Ready { .. }) {
                    look_at.get_or_insert(Instant::now() + VSS_LOOK_AGAIN);
                }
                match inspection {
                    Inspection::Ready { seed, store, identity } => {
                        tracing::info!(lineage = identity.lineage_id, "the node's store is sound");
                        // A store from before boltbox recorded its node: recorded once the node
                        // has run on it (ldk-node checks its state against the seed's keys).
                        self.record_node_id = identity.node_id.is_none();
                        self.store_ready(store, *seed);
                        return Ok(true);
                    }
                    Inspection::Fresh => match self.offer() {
                        None => match dir.create_node(&Seed::generate()) {
                            Ok(store) => {
                                // Read back what was written, so that the node runs on the seed
                                // the owner will see on the display.
                                let Some(seed) = Seed::load(dir.path()).ok().flatten() else {
                                    store.close();
                                    return Err(End::Restart("the new seed cannot be read back".into()));
                                };
                                self.store_ready(store, seed);
                                return Ok(true);
                            }
                            Err(e) => {
                                let problem = StoreProblem::Unreadable { reason: e.to_string() };
                                self.show_store_problem(problem, None, &failed);
                            }
                        },
                        Some(offer) => self.show_offer(&offer, &failed),
                    },
                    Inspection::Problem { problem, seed } => {
                        let backup = seed.as_deref().and_then(|seed| self.backup_of(seed, &problem));
                        self.show_store_problem(problem, backup.as_ref(), &failed);
                    }
                }
            }
            match self.next(LOOK_AGAIN) {
                Next::Stop => return Ok(false),
                Next::Timeout => {}
                Next::Event(Event::Owner(choice)) => {
                    failed = None;
                    match self.owner_chose(&dir, choice) {
                        Ok(()) => {}
                        Err(why) => {
                            tracing::warn!("{why}");
                            failed = Some(why.clone());
                            self.set_state(State::Restoring(Some(why)));
                        }
                    }
                    last_seen = None;
                }
                Next::Event(other) => log_stray(&other),
            }
        }
    }

    /// Makes the data dir if it is missing and takes its lock, once: `WouldBlock` while another
    /// process holds it. The control socket, if it could not listen before, listens then.
    fn lock_data_dir(&mut self) -> std::io::Result<()> {
        if self.lock.is_none() {
            let data_dir = &self.config.node.data_dir;
            boltbox_node::files::create_private_dir(data_dir)?;
            match DataDirLock::try_acquire(data_dir) {
                Ok(lock) => {
                    self.lock = Some(lock);
                    if !self.serving {
                        let socket = control::socket_path(data_dir);
                        self.serving = serve_control(self.service_runtime.handle(), &socket, &self.shared);
                    }
                }
                Err(LockError::Held { data_dir }) => {
                    tracing::warn!("another boltbox process is working on {}; waiting", data_dir.display());
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Err(LockError::Io(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Carries out the owner's choice about the data dir.
    fn owner_chose(&mut self, dir: &DataDir, choice: Owner) -> Result<(), String> {
        match (self.shared.state(), choice) {
            (_, Owner::Dismiss) => Ok(()),
            (State::Store { problem, choice: c }, Owner::StartEmpty) if c.start_empty => {
                // The data dir as it is now, not as it was at the last look: a store put back
                // since then is not to be set aside.
                match dir.inspect().map_err(|e| e.to_string())?.1 {
                    Inspection::Problem { problem: now, .. }
                        if std::mem::discriminant(&now) == std::mem::discriminant(&problem) => {}
                    Inspection::Ready { store, .. } => {
                        store.close();
                        return Err("the data dir changed: its store is sound now".into());
                    }
                    _ => return Err("the data dir changed: look again".into()),
                }
                let seed = Seed::load(dir.path()).map_err(|e| e.to_string())?.ok_or("the seed is gone")?;
                tracing::warn!("the owner chose to start on an empty store over: {problem}");
                dir.start_empty(&seed).map_err(|e| e.to_string())?.close();
                Ok(())
            }
            (State::Offer(_), Owner::StartEmpty) => {
                if !matches!(dir.inspect().map_err(|e| e.to_string())?.1, Inspection::Fresh) {
                    return Err("the data dir changed: look again".into());
                }
                tracing::info!("the owner chose a new node over the backup on the stick");
                dir.create_node(&Seed::generate()).map_err(|e| e.to_string())?.close();
                Ok(())
            }
            (state @ (State::Store { .. } | State::Offer(_)), Owner::Restore) => {
                let shown = match &state {
                    State::Store { choice, .. } => choice.backup.as_ref().map(|b| b.source),
                    State::Offer(offer) => Some(offer.backup.source),
                    _ => None,
                };
                self.set_state(State::Restoring(None));
                let workers = boltbox_node::backup::Workers(self.runtime.handle().clone());
                let report =
                    restore_offer::restore(&self.config, &workers, shown).map_err(|e| e.to_string())?;
                // A stick restored from that was the mirror is the mirror again.
                self.shared.mirror.reload();
                tracing::info!(commit = report.commit_counter, "restored the backup from the stick");
                Ok(())
            }
            (state, choice) => Err(format!("{choice:?} does not apply now ({})", state.describe())),
        }
    }

    /// The newest backup of the seed's node on a stick, when the problem allows a restore.
    fn backup_of(&self, seed: &Seed, problem: &StoreProblem) -> Option<Offered> {
        if !problem.replaceable() {
            return None;
        }
        let workers = boltbox_node::backup::Workers(self.runtime.handle().clone());
        restore_offer::find_offer(&self.config, Some(seed), &workers)
    }

    /// A state offered on a first start: a stick's (any node: its words come with it), or the
    /// remote mirror's of the node whose words are on the stick.
    fn offer(&self) -> Option<Offered> {
        let workers = boltbox_node::backup::Workers(self.runtime.handle().clone());
        restore_offer::find_offer(&self.config, None, &workers)
    }

    fn show_store_problem(&self, problem: StoreProblem, backup: Option<&Offered>, failed: &Option<String>) {
        if let Some(why) = failed {
            self.set_state(State::Restoring(Some(why.clone())));
            return;
        }
        let choice = StoreChoice {
            headline: problem.headline().to_string(),
            reason: problem.to_string(),
            backup: backup.map(Offered::facts),
            start_empty: problem.replaceable(),
        };
        self.set_state(State::Store { problem, choice });
    }

    fn show_offer(&self, backup: &Offered, failed: &Option<String>) {
        if let Some(why) = failed {
            self.set_state(State::Restoring(Some(why.clone())));
            return;
        }
        self.set_state(State::Offer(ui::Offer { backup: backup.facts(), words: backup.words_present() }));
    }

    fn store_ready(&mut self, store: Store, seed: Seed) {
        let node_id = seed.node_id(self.config.node.network).unwrap_or_default();
        self.shared.backups.set_target(Some(BackupTarget {
            store: store.clone(),
            seed: seed.clone(),
            config: self.config.node.clone(),
            node_id,
            workers: boltbox_node::backup::Workers(self.runtime.handle().clone()),
        }));
        self.store = Some((store, seed));
        self.mirroring = None;
        self.keep_vss();
    }

    /// Sets the open store's remote mirror from `[mirror.vss]`, if set.
    fn keep_vss(&mut self) {
        let Some((store, seed)) = &self.store else { return };
        let Some(settings) = &self.config.mirror.vss else { return };
        if boltbox_node::mirror::vss::refused(&self.config.node.data_dir).is_some() {
            // Refused before: this card writes nothing there until a restore.
            return;
        }
        match self.vss_setup(seed) {
            Some(Ok(setup)) => {
                tracing::info!("mirroring the store to VSS at {}", settings.url);
                store.mirror_to_vss(setup);
            }
            Some(Err(reason)) => {
                tracing::error!("no remote mirror: {reason}");
                let alert = Alert::Device { headline: "VSS settings".into(), detail: reason };
                let mut notices = self.shared.notices.lock().unwrap_or_else(|p| p.into_inner());
                if !notices.contains(&alert) {
                    notices.push(alert);
                }
            }
            None => {}
        }
    }

    /// The remote mirror's setup from `[mirror.vss]`, if set.
    fn vss_setup(&self, seed: &Seed) -> Option<Result<boltbox_node::mirror::vss::VssSetup, String>> {
        let settings = self.config.mirror.vss.as_ref()?;
        Some(settings.setup(
            seed,
            &self.config.node,
            boltbox_node::backup::Workers(self.runtime.handle().clone()),
        ))
    }

    /// Points the open store's mirror where `[mirror] dir` or the owner's stick says, as sticks
    /// come and go: a stick pulled out is said at once ("mirror lost"), one put back (under
    /// any name) resyncs.
    fn keep_mirror(&mut self) {
        use crate::mirror::Target;
        let Some((store, seed)) = &self.store else { return };
        let target = self.shared.mirror.target();
        if self.mirroring.as_ref() == Some(&target) {
            return;
        }
        match &target {
            Target::Off => {
                if self.mirroring.is_some() {
                    tracing::info!("no live mirror");
                }
                store.stop_mirror();
            }
            Target::Missing(reason) => {
                tracing::warn!("{reason}: the node goes on on the card alone");
                let dir = match &self.mirroring {
                    Some(Target::Dir(dir)) => dir.clone(),
                    _ => self.config.backup.sticks.clone(),
                };
                store.mirror_unreachable(&dir, reason.clone());
            }
            // A mirror on the card itself dies with it: said, and not written.
            Target::Dir(dir) if same_device(dir, &self.config.node.data_dir) => {
                let detail = format!(
                    "the mirror {} is on the same device as the data dir: a mirror must be on another medium (a USB stick); no mirror is written",
                    dir.display()
                );
                tracing::error!("{detail}");
                store.stop_mirror();
                let alert = Alert::Device { headline: "mirror on the card".into(), detail };
                let mut notices = self.shared.notices.lock().unwrap_or_else(|p| p.into_inner());
                if !notices.contains(&alert) {
                    notices.push(alert);
                }
            }
            Target::Dir(dir) => match seed.node_id(self.config.node.network) {
                Ok(node_id) => {
                    tracing::info!("mirroring the store into {}", dir.display());
                    store.mirror_to(MirrorSetup {
                        dir: dir.clone(),
                        seed: seed.clone(),
                        config: self.config.node.clone(),
                        node_id,
                        workers: Workers(self.runtime.handle().clone()),
                    });
                }
                Err(e) => tracing::error!("no mirror: {e}"),
            },
        }
        self.mirroring = Some(target);
    }

    fn notice(&self, recovered: RecoveredRestore) {
        let alert = Alert::Device {
            headline: match recovered {
                RecoveredRestore::Finished => "restore finished".into(),
                RecoveredRestore::Undone => "restore undone".into(),
            },
            detail: recovered.to_string(),
        };
        self.shared.notices.lock().unwrap_or_else(|p| p.into_inner()).push(alert);
    }

    /// Runs the checks until they pass (`Some(true)`), the data dir must be looked at again
    /// (`Some(false)`), or a shutdown (`None`).
    fn preflight(&mut self) -> Option<bool> {
        loop {
            self.set_state(State::Checking);
            let (node, wifi, handle, tx) = (
                self.config.node.clone(),
                self.config.system.wifi_ssid(),
                self.runtime.handle().clone(),
                self.tx.clone(),
            );
            let spawned = std::thread::Builder::new().name("preflight".into()).spawn(move || {
                let _ = tx.send(Event::Checked(preflight::check(&node, wifi.as_deref(), &handle)));
            });
            if let Err(e) = spawned {
                tracing::error!("cannot start the preflight checks: {e}");
            }
            let result = loop {
                match self.next(Duration::from_secs(3600)) {
                    Next::Stop => return None,
                    Next::Event(Event::Checked(result)) => break result,
                    Next::Event(other) => log_stray(&other),
                    Next::Timeout => {}
                }
            };
            match result {
                Ok(()) => return Some(true),
                Err(wait) => {
                    if !self.wait(wait) {
                        return None;
                    }
                }
            }
        }
    }

    /// Shows `wait` until the backoff's next attempt; false on a shutdown.
    fn wait(&mut self, wait: Wait) -> bool {
        self.attempts =
            if self.last_wait.as_ref() == Some(&wait) { self.attempts.saturating_add(1) } else { 1 };
        self.last_wait = Some(wait.clone());
        let pause = preflight::backoff(self.attempts);
        let retry_at = Instant::now() + pause;
        self.set_state(State::Waiting { wait, retry_at: Some(retry_at) });
        loop {
            match self.next(retry_at.saturating_duration_since(Instant::now())) {
                Next::Stop => return false,
                Next::Timeout => return true,
                Next::Event(other) => log_stray(&other),
            }
        }
    }

    /// Starts the node on the open store: `Ok(true)` when it runs, `Ok(false)` to check again
    /// after a failure (or a shutdown request, which stops it right after it started).
    fn start_node(&mut self) -> Result<bool, End> {
        let Some((store, seed)) = self.store.clone() else { return Ok(false) };
        // Refused while it ran (another device took the node over): never started again on
        // this card, after a reboot too, so that two devices never take turns pushing each other
        // off with diverging channel states. A restore lifts it.
        if let Some(reason) = boltbox_node::mirror::vss::refused(&self.config.node.data_dir) {
            let wait = Wait { what: WaitFor::RemoteMirror, reason };
            return if self.wait(wait) { Ok(false) } else { Err(End::Stop) };
        }
        self.set_state(State::Starting);
        let (config, handle, tx) = (self.config.node.clone(), self.runtime.handle().clone(), self.tx.clone());
        // Before the node starts: its first writes are mirrored too.
        self.keep_mirror();
        let vss = self.vss_setup(&seed).and_then(Result::ok);
        std::thread::Builder::new()
            .name("node-start".into())
            .spawn(move || {
                // Never a node whose state another device writes to VSS, or a card behind VSS.
                if let Some(setup) = vss {
                    match boltbox_node::mirror::vss::check_vss(&setup, &store) {
                        Err(e) if e.refuses() => {
                            // Marked: the card must not run the node later either, when VSS
                            // cannot be asked.
                            if let Err(mark) =
                                boltbox_node::mirror::vss::mark_refused(&config.data_dir, &e.to_string())
                            {
                                tracing::error!("cannot record the remote mirror's refusal: {mark}");
                            }
                            let _ = tx.send(Event::NodeStarted(Box::new(Err(e.into()))));
                            return;
                        }
                        Err(e) => tracing::warn!(
                            "the remote mirror cannot be checked ({e}): the node starts anyway"
                        ),
                        Ok(()) => {}
                    }
                }
                let started = BoltNode::start(&config, &seed, store, handle);
                let _ = tx.send(Event::NodeStarted(Box::new(started)));
            })
            .map_err(|e| End::Restart(format!("cannot start the node's thread: {e}")))?;
        let mut stop = false;
        let started = loop {
            // ldk-node's start cannot be interrupted; a shutdown waits for it, then stops it.
            match self.next(Duration::from_secs(3600)) {
                Next::Stop => stop = true,
                Next::Event(Event::NodeStarted(started)) => break *started,
                Next::Event(other) => log_stray(&other),
                Next::Timeout => {}
            }
        };
        match started {
            Ok(node) => {
                let node = Arc::new(node);
                tracing::info!(node_id = node.node_id(), uris = ?node.uris(), "node running");
                if std::mem::take(&mut self.record_node_id) {
                    if let Some((store, _)) = &self.store {
                        if let Err(e) = store.set_node_id(&node.node_id()) {
                            tracing::warn!("cannot record the node in its store: {e}");
                        }
                    }
                }
                self.shared.set_node(Some(Arc::clone(&node)));
                self.node = Some(node);
                self.attempts = 0;
                self.last_wait = None;
                self.set_state(State::Running);
                if stop {
                    return Err(End::Stop);
                }
                Ok(true)
            }
            Err(e) if e.needs_fresh_process() => Err(End::Restart(format!("the node did not start: {e}"))),
            Err(e) => {
                tracing::warn!("the node did not start: {e}");
                if stop || !self.wait(start_wait(&e)) {
                    return Err(End::Stop);
                }
                Ok(false)
            }
        }
    }

    /// Watches the running node until a shutdown (`Err(End::Stop)`), a restart of the node
    /// (`Ok(())`, after stopping it) or a restart of the process (the node did not stop).
    fn run_node(&mut self) -> Result<(), End> {
        loop {
            match self.next(LOOK_AGAIN) {
                Next::Stop => return Err(End::Stop),
                Next::Event(other) => log_stray(&other),
                Next::Timeout => {}
            }
            self.keep_mirror();
            let Some(node) = &self.node else { return Ok(()) };
            let refused = match self.store.as_ref().map(|(store, _)| store.vss_status()) {
                Some(boltbox_node::mirror::vss::VssStatus::Refused { reason }) => Some(reason),
                _ => None,
            };
            if let Some(reason) = refused {
                // Another device runs this node. The store holds every write from now on (none
                // is acknowledged: fail closed), so the node cannot even be stopped cleanly; the
                // process ends, and the next one waits (the refusal is marked in the data dir).
                tracing::error!(
                    "the remote mirror refused this device ({reason}): the node's writes are held"
                );
                // (The mirror's writer marked the refusal before it said it.)
                self.frozen = true;
                return Err(End::Restart(format!("the remote mirror refused this device: {reason}")));
            }
            let why = node.needs_restart();
            if let Some(why) = why {
                tracing::warn!("{why}: stopping and starting the node");
                self.set_state(State::Starting);
                if let Err(e) = self.stop_node() {
                    // Parts of ldk-node may still run and write: never close the store under
                    // them; a fresh process starts from what was saved.
                    return Err(End::Restart(e));
                }
                // Stopping the node closed its store: the data dir is opened (and checked) again.
                self.shared.backups.set_target(None);
                if let Some((store, _)) = self.store.take() {
                    store.close();
                }
                return Ok(());
            }
        }
    }

    /// Stops the running node within [`NODE_STOP_WAIT`]; the store stays open for a restart.
    fn stop_node(&mut self) -> Result<(), String> {
        let Some(node) = self.node.take() else { return Ok(()) };
        self.shared.set_node(None);
        let (tx, rx) = mpsc::channel();
        let stopping = Arc::clone(&node);
        let spawned = std::thread::Builder::new().name("node-stop".into()).spawn(move || {
            let _ = tx.send(stopping.stop());
        });
        if let Err(e) = spawned {
            return Err(format!("cannot stop the node: {e}"));
        }
        match rx.recv_timeout(NODE_STOP_WAIT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the node did not stop cleanly: {e}")),
            Err(_) => Err(format!("the node did not stop within {} s", NODE_STOP_WAIT.as_secs())),
        }
    }

    /// The safe stop, from any stage.
    fn shut_down(
        mut self,
        end: End,
        display_thread: std::thread::JoinHandle<()>,
        socket: &Path,
    ) -> Result<(), RunError> {
        // Only a running node has state to save; an open store alone is just closed.
        let saving = self.node.is_some();
        self.shared.set_phase(Phase::ShuttingDown { saving });
        self.notifier.notify("STATUS=shutting down");
        if !self.shared.wait_shutting_down_shown(SHOWN_WAIT) {
            tracing::warn!("the display did not show \"shutting down\" in time; stopping anyway");
        }
        self.notifier.notify("STOPPING=1\nSTATUS=stopping the node");
        control::remove(socket);
        if !self.shared.backups.wait_idle(BACKUP_WAIT) {
            tracing::warn!(
                "a backup is still running after {} s; stopping the node anyway (the backup fails)",
                BACKUP_WAIT.as_secs()
            );
        }
        let stopped = if self.frozen {
            Err("the remote mirror refused this device: its last writes are not acknowledged, and the node is left to the process's end".to_string())
        } else {
            self.stop_node()
        };
        self.shared.backups.set_target(None);
        // Closing commits what is still queued: its health afterwards says whether all of it
        // reached the disk.
        let store_health = self.store.take().map(|(store, _)| {
            store.close();
            store.health()
        });
        self.runtime.shutdown_timeout(RUNTIME_GRACE);
        let not_saved = match (stopped, store_health) {
            (Err(e), _) => Some(e),
            (Ok(()), Some(boltbox_node::StoreHealth::Failing { reason, .. })) => {
                Some(format!("the store cannot write: {reason}"))
            }
            (Ok(()), _) => None,
        };
        let last = match (not_saved, end) {
            // Never "safe to unplug" when it is not; a fresh start recovers what was saved.
            (Some(reason), _) => Some((screens::not_saved(&reason), reason)),
            (None, End::Restart(why)) => Some((screens::restarting(&why), why)),
            (None, End::Stop) => None,
        };
        if let Some((screen, reason)) = last {
            tracing::error!("{reason}");
            self.shared.set_phase(Phase::Failed(Box::new(screen)));
            let _ = display_thread.join();
            return Err(RunError::Restart(reason));
        }
        self.notifier.notify("STATUS=syncing filesystems");
        rustix::fs::sync();
        self.shared.set_phase(if self.gesture { Phase::SafeToUnplug } else { Phase::Stopped });
        display_thread.join().map_err(|_| RunError::DisplayThread)?;
        tracing::info!("stopped safely");
        if self.gesture {
            self.notifier.notify("STATUS=safe to unplug");
            power_off(&self.config.off_command())
        } else {
            self.notifier.notify("STATUS=stopped");
            Ok(())
        }
    }
}

/// What a failed node start waits for.
fn start_wait(e: &boltbox_node::Error) -> Wait {
    match e.chain_source_fault() {
        Some(reason) => Wait { what: WaitFor::ChainSource, reason: reason.into() },
        None if matches!(e, boltbox_node::Error::RemoteMirror(_)) => {
            Wait { what: WaitFor::RemoteMirror, reason: e.to_string() }
        }
        None => Wait { what: WaitFor::NodeStart, reason: e.to_string() },
    }
}

fn log_stray(event: &Event) {
    let name = match event {
        Event::Owner(choice) => format!("owner choice {choice:?}"),
        Event::Checked(_) => "a preflight result".into(),
        Event::NodeStarted(_) => "a node start".into(),
        Event::Signal(_) | Event::ShutdownGesture => "a shutdown".into(),
    };
    tracing::info!("{name} does not apply now; ignored");
}

/// A file's inode, length and modification time, when it exists.
type FileStamp = Option<(u64, u64, i64)>;

/// What the data dir and the sticks look like, cheaply: looked at again only when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, FileStamp)>);

impl Fingerprint {
    fn of(dir: &DataDir, sticks: &Path) -> Fingerprint {
        use std::os::unix::fs::MetadataExt;
        let mut paths = vec![
            dir.path().to_path_buf(),
            dir.store_path(),
            dir.path().join(boltbox_node::seed::SEED_FILE),
            sticks.to_path_buf(),
        ];
        if let Ok(entries) = std::fs::read_dir(sticks) {
            for stick in entries.filter_map(Result::ok) {
                let backups = stick.path().join(crate::backup::STICK_DIR);
                paths.push(backups.join(restore_offer::WORDS_FILE));
                paths.push(backups);
            }
        }
        Fingerprint(
            paths
                .into_iter()
                .map(|p| {
                    let meta = std::fs::symlink_metadata(&p)
                        .ok()
                        .map(|m| (m.ino(), m.len(), m.mtime_nsec() ^ m.mtime()));
                    (p, meta)
                })
                .collect(),
        )
    }
}

/// Turns SIGTERM and SIGINT into [`Event::Signal`]; the handlers stay installed, so later
/// signals are logged rather than killing a shutdown half-way.
fn watch_signals(runtime: &tokio::runtime::Handle, tx: Sender<Event>) -> Result<(), RunError> {
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
                tracing::info!("{name}: already stopping");
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

/// The board a bad config file asks for: each field of its `[board]` section that is valid
/// with those before it, defaults for the rest. A typo in one field (a 64x48 size, an unknown
/// controller) must not move the error to another board, where nobody would see it.
fn board_of_bad_config(text: &str) -> BoardConfig {
    let section = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("board"))
        .and_then(|board| match board {
            toml::Value::Table(fields) => Some(fields),
            _ => None,
        })
        .unwrap_or_default();
    let read = |fields: &toml::Table| {
        toml::Value::Table(fields.clone()).try_into::<BoardConfig>().ok().filter(|b| b.validate().is_ok())
    };
    let mut accepted = toml::Table::new();
    for (key, value) in section {
        let mut candidate = accepted.clone();
        candidate.insert(key, value);
        if read(&candidate).is_some() {
            accepted = candidate;
        }
    }
    read(&accepted).unwrap_or_default()
}

/// Shows a bad config on the board the file asks for (see [`board_of_bad_config`]).
fn show_config_error(path: &Path, error: &ConfigError) {
    let board_config =
        std::fs::read_to_string(path).map(|text| board_of_bad_config(&text)).unwrap_or_default();
    match boltbox_board::open(&board_config) {
        Ok(mut board) => {
            let screen = screens::config_error(&error.field, &error.reason, board_config.panel());
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

/// systemd's notify protocol (sd_notify(3)): datagrams to `$NOTIFY_SOCKET`, when set.
#[derive(Debug)]
pub(crate) struct Notifier {
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
    pub(crate) fn feed_watchdog(&self, next: &mut Instant) {
        if let Some(interval) = self.watchdog {
            let now = Instant::now();
            if now >= *next {
                self.notify("WATCHDOG=1");
                *next = now + interval / 2;
            }
        }
    }

    pub(crate) fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!(error = %e, state, "cannot notify systemd");
            }
        }
    }
}

/// Whether `a` and `b` are on one device (a directory that does not exist yet counts by its
/// nearest existing parent).
fn same_device(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &std::path::Path| p.ancestors().find_map(|a| std::fs::metadata(a).ok()).map(|m| m.dev());
    matches!((dev(a), dev(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_dir_on_the_data_dirs_device_is_the_same_device_and_tmpfs_is_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(same_device(&dir.path().join("stick/not/yet"), dir.path()), "by its nearest parent");
        // /proc is never the device a temp dir is on.
        assert!(!same_device(std::path::Path::new("/proc/self"), dir.path()));
    }

    /// One bad field of `[board]` keeps the others: the error shows on the board asked for.
    #[test]
    fn a_bad_board_field_keeps_the_board_the_file_asks_for() {
        let text = "[node]\nalias = \"\"\n\n[board]\nboard = \"link:/run/x.sock\"\ndisplay_size = \"64x48\"\n\
                    controller = \"SH1106\"\ni2c_address = 0x3d\n";
        let board = board_of_bad_config(text);
        assert_eq!(board.board, "link:/run/x.sock");
        assert_eq!(board.i2c_address, 0x3d);
        assert_eq!(board.display_size, BoardConfig::default().display_size);
        assert_eq!(board.controller, BoardConfig::default().controller);
        assert_eq!(board_of_bad_config("[board]\nboard = 7\n").board, BoardConfig::default().board);
        assert_eq!(board_of_bad_config("not toml at all [").board, BoardConfig::default().board);
    }

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
    fn power_off_runs_the_command_and_reports_failure() {
        assert!(power_off(&[]).is_ok());
        assert!(power_off(&["true".into()]).is_ok());
        let e = power_off(&["false".into()]).expect_err("false fails");
        assert!(matches!(e, RunError::PowerOff { .. }), "{e}");
        assert!(power_off(&["/nonexistent/poweroff".into()]).is_err());
    }

    #[test]
    fn only_a_bad_config_has_the_exit_code_that_stops_restarts() {
        assert_eq!(RunError::Config(ConfigError::new("node.alias", "empty")).exit_code(), EXIT_CONFIG);
        assert_eq!(RunError::Restart("not saved".into()).exit_code(), EXIT_RESTART);
        assert_eq!(RunError::DisplayThread.exit_code(), 1);
    }

    #[test]
    fn a_failed_start_waits_for_what_it_names() {
        let e =
            boltbox_node::Error::Node { operation: "start", source: ldk_node::NodeError::ConnectionFailed };
        assert_eq!(start_wait(&e).what, WaitFor::ChainSource);
        let e = boltbox_node::Error::Build("read failed".into());
        let wait = start_wait(&e);
        assert_eq!(wait.what, WaitFor::NodeStart);
        assert!(wait.reason.contains("read failed"));
    }
}

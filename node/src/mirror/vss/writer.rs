//! The remote mirror's writer: the committer's side ([`VssMirror`]) and the thread that talks
//! to VSS.
//!
//! The committer hands every commit's operations to the thread (always, so that the log has
//! no gap) and, while the mirror is in sync, waits at most [`VSS_WAIT`] for VSS to acknowledge
//! it. The thread seals the commits as the stick's frames, sends them in order (several per
//! put while catching up), sends the snapshot in chunks between them, and says where it stands.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::remote::{Generation, Head, PutError, Remote, chunk_label, header_label, segment_label};
use super::{
    COMPACT_BYTES, COMPACT_SEGMENTS, MAX_BEHIND_BYTES, VSS_WAIT, VssMirrorError, VssSetup, VssStatus,
};
use crate::backup::BackupInput;
use crate::mirror::log::{LogOp, LogSealer};
use crate::mirror::writer::{key_mirrored, mirrored};
use crate::store::committer::Op;
use crate::store::{Entry, snapshot_of};
use crate::unix_now;

/// A snapshot goes up in chunks of this size.
const CHUNK: usize = 1 << 20;
/// At most this many bytes of frames in one put while catching up.
const SEGMENT_MAX: usize = 4 << 20;
/// At most this many old objects deleted per put (the server takes 1000 items per put).
const DELETES_PER_PUT: usize = 900;
/// Pauses between attempts while VSS is away: from the first to the last, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_LAST: Duration = Duration::from_secs(10);

const TIMEOUT_REASON: &str = "VSS did not acknowledge a commit";

enum Msg {
    /// Begin a new generation at `base` with its snapshot read from `txn`.
    Begin { base: u64, txn: Box<redb::ReadTransaction> },
    /// The commit that brings the store to `counter`; `ack` hears when VSS has it.
    Append { counter: u64, ops: Vec<LogOp>, ack: Option<SyncSender<Result<(), String>>> },
}

/// What the committer and the thread share.
#[derive(Default)]
struct Shared {
    /// The mirror reaches the card's state: commits wait for VSS.
    in_sync: AtomicBool,
    /// The thread needs a new generation (its queue overflowed, or its log has grown).
    wants_begin: AtomicBool,
}

/// The committer's handle on the remote mirror.
pub(crate) struct VssMirror {
    status: Arc<Mutex<VssStatus>>,
    shared: Arc<Shared>,
    writer: Option<Sender<Msg>>,
    needs_begin: bool,
}

impl std::fmt::Debug for VssMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VssMirror").finish_non_exhaustive()
    }
}

fn set(status: &Mutex<VssStatus>, new: VssStatus) {
    *status.lock().unwrap_or_else(|p| p.into_inner()) = new;
}

fn get(status: &Mutex<VssStatus>) -> VssStatus {
    status.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Marks `status` lost for `reason`, keeping the time of the first loss of one outage.
fn lost(status: &Mutex<VssStatus>, reason: String, behind: u64) {
    let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
    let since = match &*status {
        VssStatus::Refused { .. } => return,
        // The committer's timeout does not hide the writer's own reason.
        VssStatus::Lost { .. } if reason.starts_with(TIMEOUT_REASON) => return,
        VssStatus::Lost { since, reason: old, .. } => {
            if *old != reason {
                tracing::warn!("remote mirror still lost: {reason}");
            }
            *since
        }
        _ => {
            tracing::warn!("remote mirror lost: {reason}; the node goes on on the card alone");
            unix_now()
        }
    };
    *status = VssStatus::Lost { reason, since, behind };
}

impl VssMirror {
    /// A remote mirror to `setup.url`; its first generation begins with the next commit. The
    /// thread that talks to VSS stops when this is dropped.
    pub(crate) fn new(setup: VssSetup, status: Arc<Mutex<VssStatus>>) -> VssMirror {
        set(&status, VssStatus::Syncing { percent: 0, behind: 0 });
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let thread = Thread {
            setup,
            status: Arc::clone(&status),
            shared: Arc::clone(&shared),
            remote: None,
            fence: None,
            in_flight: None,
            attached: false,
            current: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            latest: 0,
            deletes: Vec::new(),
            pending_dropped: Vec::new(),
            frames_last: false,
            retry: RETRY_FIRST,
            retry_at: None,
        };
        let writer =
            match std::thread::Builder::new().name("boltbox-vss".into()).spawn(move || thread.run(rx)) {
                Ok(_) => Some(tx),
                Err(e) => {
                    lost(&status, format!("no thread for the remote mirror: {e}"), 0);
                    None
                }
            };
        VssMirror { status, shared, writer, needs_begin: true }
    }

    /// Before the commit that brings the store from `counter` to `counter + 1`: begins a
    /// generation when one is due (`begin_read` gives the state at `counter`) and sends the
    /// batch. Returns what to wait for after the card's commit, while the mirror is in sync.
    pub(crate) fn before_commit(
        &mut self,
        counter: u64,
        ops: &[Op],
        begin_read: impl FnOnce() -> Result<redb::ReadTransaction, String>,
    ) -> Option<Receiver<Result<(), String>>> {
        let writer = self.writer.as_ref()?;
        if self.needs_begin || self.shared.wants_begin.swap(false, Ordering::SeqCst) {
            match begin_read() {
                Ok(txn) => {
                    self.needs_begin = false;
                    self.shared.in_sync.store(false, Ordering::SeqCst);
                    if writer.send(Msg::Begin { base: counter, txn: Box::new(txn) }).is_err() {
                        self.writer_gone();
                        return None;
                    }
                }
                Err(e) => {
                    lost(&self.status, format!("cannot read the store for a snapshot: {e}"), 0);
                    return None;
                }
            }
        }
        let ops = ops
            .iter()
            .filter_map(|op| match op {
                Op::Put { key, value } if key_mirrored(key) => {
                    Some(LogOp::Put { key: key.clone(), value: value.clone() })
                }
                Op::Delete { key } if key_mirrored(key) => Some(LogOp::Delete { key: key.clone() }),
                _ => None,
            })
            .collect();
        let (ack, done) = if self.shared.in_sync.load(Ordering::SeqCst) {
            let (ack, done) = mpsc::sync_channel(1);
            (Some(ack), Some(done))
        } else {
            (None, None)
        };
        let sent = self
            .writer
            .as_ref()
            .is_some_and(|w| w.send(Msg::Append { counter: counter + 1, ops, ack }).is_ok());
        if !sent {
            self.writer_gone();
            return None;
        }
        done
    }

    fn writer_gone(&mut self) {
        self.writer = None;
        self.shared.in_sync.store(false, Ordering::SeqCst);
        if !matches!(get(&self.status), VssStatus::Refused { .. }) {
            lost(&self.status, "the remote mirror's writer stopped".into(), 0);
        }
    }

    /// After the card's commit brought the store to `counter` (the mirror's copy was sent as
    /// `counter_sent`): waits for VSS while in sync, at most [`VSS_WAIT`].
    pub(crate) fn after_commit(
        &mut self,
        pending: Option<Receiver<Result<(), String>>>,
        counter_sent: u64,
        counter: u64,
    ) {
        if counter != counter_sent {
            // A card commit retried under another counter: the log has a gap; a new generation.
            self.shared.in_sync.store(false, Ordering::SeqCst);
            self.needs_begin = true;
        }
        let Some(done) = pending else { return };
        match done.recv_timeout(VSS_WAIT) {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => {
                self.shared.in_sync.store(false, Ordering::SeqCst)
            }
            Err(RecvTimeoutError::Timeout) => {
                // The writer goes on trying: this commit, and those after it, are caught up.
                self.shared.in_sync.store(false, Ordering::SeqCst);
                lost(&self.status, format!("{TIMEOUT_REASON} within {} s", VSS_WAIT.as_secs()), 1);
            }
        }
    }
}

/// A commit waiting to go up.
struct Pending {
    counter: u64,
    frame: Vec<u8>,
    ack: Option<SyncSender<Result<(), String>>>,
}

/// The generation being written.
struct Current {
    id: String,
    lineage_id: String,
    base: u64,
    sealer: LogSealer,
    /// The snapshot's sealed bytes, in [`CHUNK`]s.
    chunks: Vec<Vec<u8>>,
}

/// What the server holds as far as we know: its version and head.
struct Fence {
    version: i64,
    head: Option<Head>,
    head_bytes: Option<Vec<u8>>,
}

/// A put whose answer did not come: applied if the server now shows its head under the next
/// version, not applied if the server still shows the head and version it was sent over.
struct InFlight {
    head: Head,
    effect: Effect,
    version: i64,
    before: Vec<u8>,
}

enum Effect {
    Registered,
    Frames { count: usize },
    Chunk,
    Deleted { count: usize },
}

struct Thread {
    setup: VssSetup,
    status: Arc<Mutex<VssStatus>>,
    shared: Arc<Shared>,
    remote: Option<Remote>,
    fence: Option<Fence>,
    in_flight: Option<InFlight>,
    /// The first look at the server (who wrote there) was taken for this generation.
    attached: bool,
    current: Option<Current>,
    queue: VecDeque<Pending>,
    queued_bytes: usize,
    /// The newest commit handed to the thread.
    latest: u64,
    /// Labels of objects of generations no longer in the head, to delete.
    deletes: Vec<String>,
    /// Generations an unanswered put dropped from the head: deleted if it was applied.
    pending_dropped: Vec<Generation>,
    /// The last put carried frames (the next one carries a chunk, so that neither starves).
    frames_last: bool,
    retry: Duration,
    retry_at: Option<Instant>,
}

impl Thread {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let msg = if self.has_work() {
                match self.retry_at {
                    Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(msg) => Some(msg),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    },
                    None => match rx.try_recv() {
                        Ok(msg) => Some(msg),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Disconnected) => return,
                    },
                }
            } else {
                match rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => return,
                }
            };
            if let Some(msg) = msg {
                self.handle(msg);
                // Take everything already waiting, so that one put carries it.
                loop {
                    match rx.try_recv() {
                        Ok(msg) => self.handle(msg),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
                continue;
            }
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            self.retry_at = None;
            match self.step() {
                Ok(()) => {
                    self.retry = RETRY_FIRST;
                    self.say();
                }
                Err(e) if e.refuses() => {
                    let reason = e.to_string();
                    tracing::error!("remote mirror refused: {reason}");
                    self.shared.in_sync.store(false, Ordering::SeqCst);
                    set(&self.status, VssStatus::Refused { reason: reason.clone() });
                    for pending in self.queue.drain(..) {
                        if let Some(ack) = pending.ack {
                            let _ = ack.send(Err(reason.clone()));
                        }
                    }
                    return;
                }
                Err(e) => {
                    self.shared.in_sync.store(false, Ordering::SeqCst);
                    let reason = e.to_string();
                    // Writers waiting on these commits go on at once on the card's commit; the
                    // commits themselves stay queued and go up when VSS is back.
                    for pending in &mut self.queue {
                        if let Some(ack) = pending.ack.take() {
                            let _ = ack.send(Err(reason.clone()));
                        }
                    }
                    lost(&self.status, reason, self.behind());
                    self.retry_at = Some(Instant::now() + self.retry);
                    self.retry = (self.retry * 2).min(RETRY_LAST);
                }
            }
        }
    }

    fn has_work(&self) -> bool {
        self.current.is_some()
            && (self.fence.is_none()
                || !self.registered()
                || !self.queue.is_empty()
                || self.current.as_ref().is_some_and(|c| {
                    self.generation().is_some_and(|g| g.chunks_sent < c.chunks.len() as u64)
                })
                || !self.deletes.is_empty())
    }

    fn behind(&self) -> u64 {
        let on_server = self.fence.as_ref().and_then(|f| f.head.as_ref()).map_or(0, Head::counter);
        self.latest.saturating_sub(on_server)
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Begin { base, txn } => {
                if let Err(e) = self.begin(base, *txn) {
                    // Tried again at the next commit.
                    self.current = None;
                    self.shared.wants_begin.store(true, Ordering::SeqCst);
                    lost(&self.status, e.to_string(), self.behind());
                }
            }
            Msg::Append { counter, ops, ack } => {
                self.latest = counter;
                let frame = match &self.current {
                    Some(current) => {
                        current.sealer.seal(counter, unix_now(), &ops).map_err(|e| e.to_string())
                    }
                    None => Err("no generation is open: an earlier step failed".to_string()),
                };
                match frame {
                    Ok(frame) => {
                        self.queued_bytes = self.queued_bytes.saturating_add(frame.len());
                        self.queue.push_back(Pending { counter, frame, ack });
                        if self.queued_bytes > MAX_BEHIND_BYTES {
                            self.overflow();
                        }
                    }
                    Err(reason) => {
                        if let Some(ack) = ack {
                            let _ = ack.send(Err(reason));
                        }
                    }
                }
            }
        }
    }

    /// More is waiting than [`MAX_BEHIND_BYTES`]: dropped, and a new snapshot once VSS is back.
    fn overflow(&mut self) {
        let reason = format!(
            "more than {} MiB of commits waited for VSS: a new snapshot goes up once it is back",
            MAX_BEHIND_BYTES >> 20
        );
        for pending in self.queue.drain(..) {
            if let Some(ack) = pending.ack {
                let _ = ack.send(Err(reason.clone()));
            }
        }
        self.queued_bytes = 0;
        self.current = None;
        self.shared.in_sync.store(false, Ordering::SeqCst);
        self.shared.wants_begin.store(true, Ordering::SeqCst);
        lost(&self.status, reason, self.behind());
    }

    fn begin(&mut self, base: u64, txn: redb::ReadTransaction) -> Result<(), VssMirrorError> {
        let store = |e: crate::store::StoreError| {
            VssMirrorError::Mirror(crate::mirror::MirrorError::Store(e.to_string()))
        };
        // Read at once and let go (as the stick's writer does).
        let identity = crate::store::identity_of(&txn).map_err(store)?;
        let keep = |e: &Entry| mirrored(&e.primary, &e.secondary, &e.key);
        let snapshot = snapshot_of(&txn, &keep).map_err(store)?;
        drop(txn);
        let setup = &self.setup;
        let (_, sealer) =
            LogSealer::new(&setup.seed, setup.config.network, &setup.node_id, &identity.lineage_id, base)?;
        let input = BackupInput {
            seed: &setup.seed,
            config: &setup.config,
            node_id: &setup.node_id,
            lineage_id: &identity.lineage_id,
            snapshot: &snapshot,
            created_at: unix_now(),
        };
        let mut bytes = Vec::new();
        crate::backup::write_backup(&input, &mut bytes, &setup.workers, &mut |_| {})
            .map_err(|e| VssMirrorError::Mirror(e.into()))?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| VssMirrorError::Settings(format!("no random id: {e}")))?;
        // Frames of the older generation that are still waiting are in this snapshot.
        for pending in self.queue.drain(..) {
            if let Some(ack) = pending.ack {
                let _ = ack.send(Err("superseded by a new snapshot".into()));
            }
        }
        self.queued_bytes = 0;
        self.latest = base;
        self.current = Some(Current {
            id: random.iter().map(|b| format!("{b:02x}")).collect(),
            lineage_id: identity.lineage_id,
            base,
            sealer,
            chunks: bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect(),
        });
        Ok(())
    }

    /// The current generation as the server's head has it.
    fn generation(&self) -> Option<&Generation> {
        let id = &self.current.as_ref()?.id;
        self.fence.as_ref()?.head.as_ref()?.generations.iter().find(|g| &g.id == id)
    }

    fn registered(&self) -> bool {
        self.generation().is_some()
    }

    /// Whether the server's head reaches the card's state from a complete snapshot.
    fn whole(&self) -> bool {
        let Some(head) = self.fence.as_ref().and_then(|f| f.head.as_ref()) else { return false };
        let Some(current) = self.generation() else { return false };
        current.snapshot_complete()
            || head.generations.first().is_some_and(|first| {
                first.id != current.id && first.snapshot_complete() && first.counter >= current.base
            })
    }

    /// Says where the mirror stands after a step.
    fn say(&mut self) {
        let behind = self.behind();
        if self.whole() && self.queue.is_empty() {
            let counter = self.fence.as_ref().and_then(|f| f.head.as_ref()).map_or(0, Head::counter);
            let was = get(&self.status);
            if !matches!(was, VssStatus::InSync { .. }) {
                tracing::info!("remote mirror in sync at commit {counter}");
            }
            set(&self.status, VssStatus::InSync { counter });
            self.shared.in_sync.store(true, Ordering::SeqCst);
            let compact = self
                .generation()
                .is_some_and(|g| g.log_bytes > COMPACT_BYTES || g.segments > COMPACT_SEGMENTS);
            if compact && self.deletes.is_empty() {
                self.shared.wants_begin.store(true, Ordering::SeqCst);
            }
        } else if !self.whole() {
            let percent = match (&self.current, self.generation()) {
                (Some(c), Some(g)) if !c.chunks.is_empty() => {
                    (g.chunks_sent * 100 / c.chunks.len() as u64).min(99) as u8
                }
                _ => 0,
            };
            set(&self.status, VssStatus::Syncing { percent, behind });
        }
    }

    fn remote(&mut self) -> Result<&Remote, VssMirrorError> {
        if self.remote.is_none() {
            self.remote = Some(Remote::connect(&self.setup)?);
        }
        self.remote.as_ref().ok_or_else(|| VssMirrorError::Settings("no connection".into()))
    }

    /// One exchange with the server.
    fn step(&mut self) -> Result<(), VssMirrorError> {
        if self.fence.is_none() {
            return self.look();
        }
        let (Some(current), Some(fence)) = (&self.current, &self.fence) else { return Ok(()) };
        let mut head = fence.head.clone().unwrap_or_else(|| Head {
            node_id: self.setup.node_id.clone(),
            lineage_id: current.lineage_id.clone(),
            generations: Vec::new(),
            written_at: 0,
        });
        head.written_at = unix_now();
        let mut items = Vec::new();
        let mut deletes = Vec::new();
        let mut dropped = Vec::new();
        let effect;
        match head.generations.iter().position(|g| g.id == current.id) {
            None => {
                // Register the generation: its log's header, and the head naming it. An older
                // generation is kept only while it carries the chain to this one's base.
                let keep = head
                    .generations
                    .iter()
                    .rfind(|g| g.snapshot_complete())
                    .filter(|g| g.counter >= current.base)
                    .cloned();
                dropped = head
                    .generations
                    .iter()
                    .filter(|g| keep.as_ref().is_none_or(|k| k.id != g.id))
                    .cloned()
                    .collect();
                head.generations = keep.into_iter().collect();
                head.generations.push(Generation {
                    id: current.id.clone(),
                    base: current.base,
                    chunks: current.chunks.len() as u64,
                    chunks_sent: 0,
                    segments: 0,
                    log_bytes: current.sealer.prefix().len() as u64,
                    counter: current.base,
                });
                items.push((header_label(&current.id), current.sealer.prefix().to_vec()));
                effect = Effect::Registered;
            }
            Some(at) => {
                let chunks_left = head.generations[at].chunks_sent < current.chunks.len() as u64;
                let frames = !self.queue.is_empty() && (!self.frames_last || !chunks_left);
                if frames {
                    let mut segment = Vec::new();
                    let mut count = 0;
                    let mut counter = head.generations[at].counter;
                    for pending in &self.queue {
                        if count > 0 && segment.len() + pending.frame.len() > SEGMENT_MAX {
                            break;
                        }
                        segment.extend_from_slice(&pending.frame);
                        counter = pending.counter;
                        count += 1;
                    }
                    let generation = &mut head.generations[at];
                    generation.log_bytes = generation.log_bytes.saturating_add(segment.len() as u64);
                    items.push((segment_label(&current.id, generation.segments), segment));
                    generation.segments += 1;
                    generation.counter = counter;
                    effect = Effect::Frames { count };
                } else if chunks_left {
                    let generation = &mut head.generations[at];
                    let i = generation.chunks_sent;
                    let chunk = usize::try_from(i)
                        .ok()
                        .and_then(|i| current.chunks.get(i))
                        .cloned()
                        .unwrap_or_default();
                    items.push((chunk_label(&current.id, i), chunk));
                    generation.chunks_sent += 1;
                    if generation.snapshot_complete() {
                        // The older generations are no longer needed.
                        dropped = head.generations.drain(..at).collect();
                    }
                    effect = Effect::Chunk;
                } else if !self.deletes.is_empty() {
                    let count = self.deletes.len().min(DELETES_PER_PUT);
                    deletes.extend(self.deletes.iter().take(count).cloned());
                    effect = Effect::Deleted { count };
                } else {
                    return Ok(());
                }
            }
        }
        let version = fence.version;
        let before = fence.head_bytes.clone().unwrap_or_default();
        let result = self.remote()?.put(version, &items, &deletes, &head);
        match result {
            Ok(head_bytes) => {
                self.apply(head, head_bytes, effect, version.saturating_add(1));
                self.deletes.extend(dropped.iter().flat_map(labels_of));
                Ok(())
            }
            Err(PutError::Conflict) => {
                self.fence = None;
                let found = self.remote()?.state().map(|(v, _)| v).unwrap_or(-1);
                Err(VssMirrorError::Conflict { expected: version, found })
            }
            Err(PutError::Failed(e)) => {
                // The outcome is unknown: the server's state is read back before anything else.
                self.pending_dropped = dropped;
                self.in_flight = Some(InFlight { head, effect, version, before });
                self.fence = None;
                Err(e)
            }
        }
    }

    fn apply(&mut self, head: Head, head_bytes: Vec<u8>, effect: Effect, version: i64) {
        self.fence = Some(Fence { version, head: Some(head), head_bytes: Some(head_bytes) });
        let mut acks = Vec::new();
        match effect {
            Effect::Frames { count } => {
                for pending in self.queue.drain(..count.min(self.queue.len())) {
                    self.queued_bytes = self.queued_bytes.saturating_sub(pending.frame.len());
                    acks.extend(pending.ack);
                }
                self.frames_last = true;
            }
            Effect::Chunk => self.frames_last = false,
            Effect::Deleted { count } => {
                self.deletes.drain(..count.min(self.deletes.len()));
            }
            Effect::Registered => {}
        }
        // The status says it before the writers hear it.
        self.say();
        for ack in acks {
            let _ = ack.send(Ok(()));
        }
    }

    /// Reads the server's version and head: at the first look, checks who wrote there; after a
    /// put whose answer was lost, finds out whether it was applied.
    fn look(&mut self) -> Result<(), VssMirrorError> {
        let Some(current) = &self.current else { return Ok(()) };
        let (base, lineage) = (current.base, current.lineage_id.clone());
        let (version, head) = self.remote()?.state()?;
        let (head, head_bytes) = match head {
            Some((head, bytes)) => (Some(head), bytes),
            None => (None, Vec::new()),
        };
        if let Some(f) = self.in_flight.take() {
            let dropped = std::mem::take(&mut self.pending_dropped);
            if version == f.version.saturating_add(1) && head.as_ref() == Some(&f.head) {
                // Applied: the server holds the head we sent.
                self.apply(f.head, head_bytes, f.effect, version);
                self.deletes.extend(dropped.iter().flat_map(labels_of));
                return Ok(());
            }
            if version != f.version || head_bytes != f.before {
                return Err(VssMirrorError::Conflict { expected: f.version, found: version });
            }
            // Not applied: sent again from the same state.
        } else if !self.attached {
            judge(head.as_ref(), &self.setup.node_id, &lineage, base)?;
            self.attached = true;
        }
        self.fence = Some(Fence { version, head, head_bytes: Some(head_bytes) });
        Ok(())
    }
}

/// Whether a store of history `lineage` at commit `card` of node `node_id` may write where
/// `head` is: nothing there, or its own history no more than one commit (the one a cut
/// interrupted, never acknowledged) ahead of the card.
pub(super) fn judge(
    head: Option<&Head>,
    node_id: &str,
    lineage: &str,
    card: u64,
) -> Result<(), VssMirrorError> {
    let Some(head) = head else { return Ok(()) };
    if head.node_id != node_id {
        return Err(VssMirrorError::WrongSeed);
    }
    if head.lineage_id != lineage {
        return Err(VssMirrorError::OtherHistory {
            counter: head.counter(),
            written_at: utc(head.written_at),
        });
    }
    if head.counter() > card.saturating_add(1) {
        return Err(VssMirrorError::Ahead { remote: head.counter(), card });
    }
    Ok(())
}

fn utc(secs: u64) -> String {
    let at = chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0).unwrap_or_default();
    at.format("%Y-%m-%d %H:%M").to_string()
}

/// The labels of every object of generation `g`.
fn labels_of(g: &Generation) -> Vec<String> {
    let mut labels = vec![header_label(&g.id)];
    labels.extend((0..g.chunks_sent).map(|i| chunk_label(&g.id, i)));
    labels.extend((0..g.segments).map(|j| segment_label(&g.id, j)));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lineage: &str, counter: u64) -> Head {
        Head {
            node_id: "02aa".into(),
            lineage_id: lineage.into(),
            generations: vec![Generation {
                id: "0011223344556677".into(),
                base: 1,
                chunks: 1,
                chunks_sent: 1,
                segments: 1,
                log_bytes: 100,
                counter,
            }],
            written_at: 1_700_000_000,
        }
    }

    #[test]
    fn only_the_same_history_no_more_than_one_commit_ahead_may_be_written_over() {
        assert!(judge(None, "02aa", "L", 5).is_ok(), "an empty server");
        assert!(judge(Some(&head("L", 5)), "02aa", "L", 5).is_ok(), "in sync");
        assert!(judge(Some(&head("L", 3)), "02aa", "L", 5).is_ok(), "behind the card (lost, resynced)");
        assert!(judge(Some(&head("L", 6)), "02aa", "L", 5).is_ok(), "the frame a cut interrupted");
        assert!(matches!(
            judge(Some(&head("L", 7)), "02aa", "L", 5),
            Err(VssMirrorError::Ahead { remote: 7, card: 5 })
        ));
        assert!(matches!(
            judge(Some(&head("M", 2)), "02aa", "L", 5),
            Err(VssMirrorError::OtherHistory { counter: 2, .. })
        ));
        assert!(matches!(judge(Some(&head("L", 5)), "03bb", "L", 5), Err(VssMirrorError::WrongSeed)));
    }

    #[test]
    fn a_refusal_says_what_to_do_within_three_oled_lines() {
        for e in [
            VssMirrorError::Conflict { expected: 5, found: 9 },
            VssMirrorError::OtherHistory { counter: 12, written_at: "2026-12-01 05:00".into() },
            VssMirrorError::Ahead { remote: 12, card: 7 },
        ] {
            assert!(e.refuses());
            let text = e.to_string();
            let shown: String = text.chars().take(63).collect();
            assert!(shown.contains("VSS") || shown.contains("device"), "{shown}");
            assert!(shown.contains("restore") || shown.contains("stop") || shown.contains("runs"), "{shown}");
        }
        let away = VssMirrorError::Unreachable { url: "http://x/vss".into(), detail: "no answer".into() };
        assert!(!away.refuses(), "an unreachable server leaves the node running");
    }
}

//! The remote mirror's writer: the committer's side ([`VssMirror`]) and the thread that talks
//! to VSS.
//!
//! The committer hands every commit's operations to the thread (always, so that the log has
//! no gap) and, while the mirror is in sync, waits at most [`VSS_WAIT`] for VSS to acknowledge
//! it. The thread seals the commits as the stick's frames, sends them in order (several per
//! put while catching up), sends the snapshot in chunks between them, and says where it stands.
//! Once VSS refused this device, no write is acknowledged any more (the committer holds them).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::remote::{Generation, Head, PutError, Remote, chunk_label, header_label, segment_label};
use super::{
    COMPACT_BYTES, COMPACT_SEGMENTS, MAX_BEHIND_BYTES, VSS_WAIT, VssDevice, VssMirrorError, VssSetup,
    VssStatus,
};
use crate::backup::BackupInput;
use crate::mirror::log::{LogOp, LogSealer};
use crate::mirror::writer::{log_ops, mirrored_snapshot};
use crate::store::committer::Op;
use crate::unix_now;

/// A snapshot goes up in chunks of this size (under a reverse proxy's usual 1 MiB body limit
/// with the seal and the request around it).
const CHUNK: usize = 512 << 10;
/// At most this many bytes of frames in one put while catching up (as [`CHUNK`]).
const SEGMENT_MAX: usize = 512 << 10;
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
    /// The newest commit the committer handed to the thread: the mirror is in sync only when
    /// the server has it (one may still be in the channel).
    handed: AtomicU64,
    /// The committer let go of this mirror: the thread stops after the exchange it is in.
    stop: AtomicBool,
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

impl Drop for VssMirror {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
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
            device: None,
            fence: None,
            in_flight: None,
            unanswered: Vec::new(),
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
            self.needs_begin = true;
            match begin_read() {
                Ok(txn) => {
                    self.needs_begin = false;
                    self.shared.in_sync.store(false, Ordering::SeqCst);
                    if writer.send(Msg::Begin { base: counter, txn: Box::new(txn) }).is_err() {
                        self.writer_gone();
                        return None;
                    }
                }
                // The commit still goes to the generation there is (no gap); a new one is
                // begun at the next commit.
                Err(e) => lost(&self.status, format!("cannot read the store for a snapshot: {e}"), 0),
            }
        }
        let ops = log_ops(ops);
        let (ack, done) = if self.shared.in_sync.load(Ordering::SeqCst) {
            let (ack, done) = mpsc::sync_channel(1);
            (Some(ack), Some(done))
        } else {
            (None, None)
        };
        let next = counter.saturating_add(1);
        self.shared.handed.store(next, Ordering::SeqCst);
        let sent =
            self.writer.as_ref().is_some_and(|w| w.send(Msg::Append { counter: next, ops, ack }).is_ok());
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
    /// `counter_sent`): waits for VSS while in sync, at most [`VSS_WAIT`]. Returns the refusal
    /// when VSS refused this device: the committer then holds the writers (fails closed).
    pub(crate) fn after_commit(
        &mut self,
        pending: Option<Receiver<Result<(), String>>>,
        counter_sent: u64,
        counter: u64,
    ) -> Option<std::io::Error> {
        if counter != counter_sent {
            // A card commit retried under another counter: the log has a gap; a new generation.
            self.shared.in_sync.store(false, Ordering::SeqCst);
            self.needs_begin = true;
        }
        if let Some(done) = pending {
            match done.recv_timeout(VSS_WAIT) {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => {
                    self.shared.in_sync.store(false, Ordering::SeqCst);
                }
                Err(RecvTimeoutError::Timeout) => {
                    // The writer goes on trying: this commit, and those after it, are caught up.
                    self.shared.in_sync.store(false, Ordering::SeqCst);
                    lost(&self.status, format!("{TIMEOUT_REASON} within {} s", VSS_WAIT.as_secs()), 1);
                }
            }
        }
        match get(&self.status) {
            VssStatus::Refused { reason } => {
                Some(std::io::Error::other(format!("the remote mirror: {reason}")))
            }
            _ => None,
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
    /// The counter the next frame must carry: a commit missing from the log ends the generation.
    next: u64,
    /// The snapshot's sealed bytes, in [`CHUNK`]s.
    chunks: Vec<Vec<u8>>,
}

/// What the server holds as far as we know: its version and head.
struct Fence {
    version: i64,
    head: Option<Head>,
    head_bytes: Option<Vec<u8>>,
}

/// A put whose answer did not come: applied if the server now shows its head, not applied if
/// the server still shows the head and version it was sent over.
struct InFlight {
    sent: Unanswered,
    version: i64,
    before: Vec<u8>,
}

/// A put sent without an answer: its head's bytes as sent, and what it does once applied.
#[derive(Clone)]
struct Unanswered {
    head_bytes: Vec<u8>,
    head: Head,
    effect: Effect,
}

#[derive(Clone, Copy)]
enum Effect {
    Registered,
    Frames { count: usize },
    Chunk,
    Deleted { count: usize },
}

impl Effect {
    /// The same put after the frames it carried were dropped (a new generation began).
    fn without_frames(self) -> Effect {
        match self {
            Effect::Frames { .. } => Effect::Frames { count: 0 },
            other => other,
        }
    }
}

struct Thread {
    setup: VssSetup,
    status: Arc<Mutex<VssStatus>>,
    shared: Arc<Shared>,
    remote: Option<Remote>,
    /// This device as a writer (the data dir's `vss-device`), loaded at the first look.
    device: Option<VssDevice>,
    fence: Option<Fence>,
    in_flight: Option<InFlight>,
    /// Puts judged not applied after their answer was lost, since the last success: one of them
    /// may still be applied late (the server was slow), which the next put then finds.
    unanswered: Vec<Unanswered>,
    /// The first look at the server (who wrote there) was taken.
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
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
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
                    self.refused(&e.to_string());
                    return;
                }
                Err(e) => {
                    if matches!(e, VssMirrorError::Auth { .. }) {
                        // A token replaced in its file is read at the next connection.
                        self.remote = None;
                    }
                    self.shared.in_sync.store(false, Ordering::SeqCst);
                    let reason = e.to_string();
                    lost(&self.status, reason.clone(), self.behind());
                    // Writers waiting on these commits go on at once on the card's commit; the
                    // commits themselves stay queued and go up when VSS is back.
                    for pending in &mut self.queue {
                        if let Some(ack) = pending.ack.take() {
                            let _ = ack.send(Err(reason.clone()));
                        }
                    }
                    self.retry_at = Some(Instant::now() + self.retry);
                    self.retry = (self.retry * 2).min(RETRY_LAST);
                }
            }
        }
    }

    /// Another device runs this node (or VSS holds a later state): said, recorded in the data
    /// dir (the node must not run on this card again until a restore), and nothing more is
    /// written. Waiting writers hear it: the committer holds them.
    fn refused(&mut self, reason: &str) {
        tracing::error!("remote mirror refused: {reason}");
        self.shared.in_sync.store(false, Ordering::SeqCst);
        // Marked before it is said: whoever sees the refusal finds the mark.
        if let Err(e) = super::mark_refused(&self.setup.config.data_dir, reason) {
            tracing::error!("cannot record the remote mirror's refusal: {e}");
        }
        set(&self.status, VssStatus::Refused { reason: reason.to_string() });
        for pending in self.queue.drain(..) {
            if let Some(ack) = pending.ack {
                let _ = ack.send(Err(reason.to_string()));
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
                    self.drop_generation(&e.to_string());
                }
            }
            Msg::Append { counter, ops, ack } => {
                self.latest = counter;
                let frame = match &self.current {
                    Some(current) if current.next == counter => {
                        current.sealer.seal(counter, unix_now(), &ops).map_err(|e| e.to_string())
                    }
                    Some(current) => Err(format!(
                        "commit {} is missing from the remote mirror's log: a new snapshot goes up",
                        current.next
                    )),
                    None => Err("no generation is open: an earlier step failed".to_string()),
                };
                match frame {
                    Ok(frame) => {
                        if let Some(current) = &mut self.current {
                            current.next = counter.saturating_add(1);
                        }
                        self.queued_bytes = self.queued_bytes.saturating_add(frame.len());
                        self.queue.push_back(Pending { counter, frame, ack });
                        if self.queued_bytes > MAX_BEHIND_BYTES {
                            self.drop_generation(&format!(
                                "more than {} MiB of commits waited for VSS: a new snapshot goes up once it is back",
                                MAX_BEHIND_BYTES >> 20
                            ));
                        }
                    }
                    Err(reason) => {
                        if let Some(ack) = ack {
                            let _ = ack.send(Err(reason.clone()));
                        }
                        if self.current.is_some() {
                            self.drop_generation(&reason);
                        }
                    }
                }
            }
        }
    }

    /// The generation cannot go on (too far behind, a commit missing, a snapshot that could not
    /// be read): its waiting commits are dropped, and a new one begins at the next commit.
    fn drop_generation(&mut self, reason: &str) {
        for pending in self.queue.drain(..) {
            if let Some(ack) = pending.ack {
                let _ = ack.send(Err(reason.to_string()));
            }
        }
        self.forget_sent_frames();
        self.queued_bytes = 0;
        self.current = None;
        self.shared.in_sync.store(false, Ordering::SeqCst);
        self.shared.wants_begin.store(true, Ordering::SeqCst);
        lost(&self.status, reason.to_string(), self.behind());
    }

    /// The queued frames are gone: a put of them whose answer is still unknown must not take
    /// the new queue's frames for its own once it turns out applied.
    fn forget_sent_frames(&mut self) {
        if let Some(f) = &mut self.in_flight {
            f.sent.effect = f.sent.effect.without_frames();
        }
        for u in &mut self.unanswered {
            u.effect = u.effect.without_frames();
        }
    }

    fn begin(&mut self, base: u64, txn: redb::ReadTransaction) -> Result<(), VssMirrorError> {
        let (identity, snapshot) = mirrored_snapshot(txn)?;
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
        self.forget_sent_frames();
        self.queued_bytes = 0;
        self.latest = base;
        self.current = Some(Current {
            id: random.iter().map(|b| format!("{b:02x}")).collect(),
            lineage_id: identity.lineage_id,
            base,
            sealer,
            next: base.saturating_add(1),
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
        let on_server = self.fence.as_ref().and_then(|f| f.head.as_ref()).map_or(0, Head::counter);
        let whole = self.whole();
        // Once the chain is whole and little is left to send, commits wait for VSS again: their
        // own frames, behind the few still queued, hold back a node that commits faster than
        // VSS acknowledges, so that the mirror always catches up.
        if whole && self.queued_bytes <= SEGMENT_MAX {
            self.shared.in_sync.store(true, Ordering::SeqCst);
        }
        // A commit handed over but not yet taken from the channel is not on the server.
        let caught_up = self.queue.is_empty() && on_server >= self.shared.handed.load(Ordering::SeqCst);
        if whole && caught_up {
            if !matches!(get(&self.status), VssStatus::InSync { .. }) {
                tracing::info!("remote mirror in sync at commit {on_server}");
            }
            set(&self.status, VssStatus::InSync { counter: on_server });
            let compact = self
                .generation()
                .is_some_and(|g| g.log_bytes > COMPACT_BYTES || g.segments > COMPACT_SEGMENTS);
            if compact && self.deletes.is_empty() {
                self.shared.wants_begin.store(true, Ordering::SeqCst);
            }
        } else if !whole {
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
        let whole = self.whole();
        let (Some(current), Some(fence), Some(device)) = (&self.current, &self.fence, &self.device) else {
            return Ok(());
        };
        let mut head = fence.head.clone().unwrap_or_else(|| Head {
            node_id: self.setup.node_id.clone(),
            lineage_id: current.lineage_id.clone(),
            writer: device.id.clone(),
            generations: Vec::new(),
            written_at: 0,
        });
        head.written_at = unix_now();
        head.writer = device.id.clone();
        let mut items = Vec::new();
        let mut deletes = Vec::new();
        let mut dropped = Vec::new();
        let effect;
        match head.generations.iter().position(|g| g.id == current.id) {
            None => {
                // Register the generation: its log's header, and the head naming it. An older
                // generation is kept only while it carries the chain to this one's base (and
                // began before it: two logs of one base would be one file name).
                let keep = head
                    .generations
                    .iter()
                    .rfind(|g| g.snapshot_complete())
                    .filter(|g| g.counter >= current.base && g.base < current.base)
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
                // While the chain is whole, commits wait for VSS: their frames go first.
                let frames = !self.queue.is_empty() && (whole || !self.frames_last || !chunks_left);
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
                // A put of ours whose answer was lost may have been applied late; otherwise
                // someone else wrote.
                self.fence = None;
                let (found, now) = self.remote()?.state()?;
                let now = now.map(|(_, bytes)| bytes).unwrap_or_default();
                if let Some(late) = self.unanswered.iter().find(|u| u.head_bytes == now).cloned() {
                    tracing::info!("a put of the remote mirror whose answer was lost was applied late");
                    self.apply(late.head, now, late.effect, found);
                    return Ok(());
                }
                Err(VssMirrorError::Conflict { expected: version, found })
            }
            Err(PutError::Failed(e, head_bytes)) => {
                // The outcome is unknown: the server's state is read back before anything else.
                // (Deletes of dropped generations are found again from the head then.)
                self.in_flight =
                    Some(InFlight { sent: Unanswered { head_bytes, head, effect }, version, before });
                self.pending_dropped = dropped;
                self.fence = None;
                Err(e)
            }
        }
    }

    fn apply(&mut self, head: Head, head_bytes: Vec<u8>, effect: Effect, version: i64) {
        self.fence = Some(Fence { version, head: Some(head), head_bytes: Some(head_bytes) });
        self.unanswered.clear();
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
        // The first put after a restore from VSS made this device the writer.
        if let Some(device) = &mut self.device {
            if device.takeover.take().is_some() {
                if let Err(e) = device.save(&self.setup.config.data_dir) {
                    tracing::warn!("cannot record that this device writes VSS now: {e}");
                }
            }
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
        if self.device.is_none() {
            let device = VssDevice::load_or_create(&self.setup.config.data_dir)
                .map_err(|e| VssMirrorError::Settings(format!("this device's record for VSS: {e}")))?;
            self.device = Some(device);
        }
        let (version, head) = self.remote()?.state()?;
        let (head, head_bytes) = match head {
            Some((head, bytes)) => (Some(head), bytes),
            None => (None, Vec::new()),
        };
        if let Some(f) = self.in_flight.take() {
            let dropped = std::mem::take(&mut self.pending_dropped);
            if head.is_some() && head_bytes == f.sent.head_bytes {
                // Applied: the server holds the head we sent.
                tracing::info!("the remote mirror's last put, whose answer was lost, was applied");
                self.apply(f.sent.head, head_bytes, f.sent.effect, version);
                self.deletes.extend(dropped.iter().flat_map(labels_of));
                return Ok(());
            }
            if version != f.version || head_bytes != f.before {
                if let Some(late) = self.unanswered.iter().find(|u| u.head_bytes == head_bytes).cloned() {
                    self.apply(late.head, head_bytes, late.effect, version);
                    return Ok(());
                }
                return Err(VssMirrorError::Conflict { expected: f.version, found: version });
            }
            // Not applied (yet): sent again from the same state; remembered, in case it is
            // applied late after all.
            tracing::info!(
                "the remote mirror's last put, whose answer was lost, was not applied: sent again"
            );
            self.unanswered.push(f.sent);
        } else if !self.attached {
            let device =
                self.device.as_ref().ok_or_else(|| VssMirrorError::Settings("no device record".into()))?;
            judge(head.as_ref(), &self.setup.node_id, &lineage, base, device, version)?;
            self.attached = true;
        }
        self.fence = Some(Fence { version, head, head_bytes: Some(head_bytes) });
        Ok(())
    }
}

/// Whether a store of history `lineage` at commit `card` of node `node_id`, on `device`, may
/// write where `head` is at version `version`: nothing there; or its own history no more than
/// one commit (the one a cut interrupted, never acknowledged) ahead of the card, last written
/// by this device, or by the device this card was restored from if nothing was written since.
pub(super) fn judge(
    head: Option<&Head>,
    node_id: &str,
    lineage: &str,
    card: u64,
    device: &VssDevice,
    version: i64,
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
    if head.writer != device.id {
        let taken_over =
            device.takeover.as_ref().is_some_and(|t| t.writer == head.writer && t.version == version);
        if !taken_over {
            return Err(VssMirrorError::OtherDevice {
                counter: head.counter(),
                written_at: utc(head.written_at),
            });
        }
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
    use crate::mirror::vss::Takeover;

    fn head(lineage: &str, counter: u64, writer: &str) -> Head {
        Head {
            node_id: "02aa".into(),
            lineage_id: lineage.into(),
            writer: writer.into(),
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
    fn only_this_devices_history_no_more_than_one_commit_ahead_may_be_written_over() {
        let me = VssDevice { id: "me".into(), takeover: None };
        assert!(judge(None, "02aa", "L", 5, &me, 0).is_ok(), "an empty server");
        assert!(judge(Some(&head("L", 5, "me")), "02aa", "L", 5, &me, 9).is_ok(), "in sync");
        assert!(judge(Some(&head("L", 3, "me")), "02aa", "L", 5, &me, 9).is_ok(), "behind the card");
        assert!(
            judge(Some(&head("L", 6, "me")), "02aa", "L", 5, &me, 9).is_ok(),
            "the frame a cut interrupted"
        );
        assert!(matches!(
            judge(Some(&head("L", 7, "me")), "02aa", "L", 5, &me, 9),
            Err(VssMirrorError::Ahead { remote: 7, card: 5 })
        ));
        assert!(matches!(
            judge(Some(&head("M", 2, "me")), "02aa", "L", 5, &me, 9),
            Err(VssMirrorError::OtherHistory { counter: 2, .. })
        ));
        assert!(matches!(
            judge(Some(&head("L", 5, "me")), "03bb", "L", 5, &me, 9),
            Err(VssMirrorError::WrongSeed)
        ));
        // Another device wrote last: refused, unless this card was restored from exactly that.
        assert!(matches!(
            judge(Some(&head("L", 5, "other")), "02aa", "L", 5, &me, 9),
            Err(VssMirrorError::OtherDevice { counter: 5, .. })
        ));
        let restored =
            VssDevice { id: "me".into(), takeover: Some(Takeover { writer: "other".into(), version: 9 }) };
        assert!(judge(Some(&head("L", 5, "other")), "02aa", "L", 5, &restored, 9).is_ok(), "taken over");
        assert!(
            matches!(
                judge(Some(&head("L", 6, "other")), "02aa", "L", 5, &restored, 10),
                Err(VssMirrorError::OtherDevice { .. })
            ),
            "the other device wrote after the restore: it still runs the node"
        );
    }

    #[test]
    fn a_refusal_says_what_to_do_within_three_oled_lines() {
        for e in [
            VssMirrorError::Conflict { expected: 5, found: 9 },
            VssMirrorError::OtherDevice { counter: 12, written_at: "2026-12-01 05:00".into() },
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

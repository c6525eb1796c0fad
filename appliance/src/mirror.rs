//! The live mirror on the appliance: which USB stick is the mirror, chosen by the owner on the
//! device, found again after it was pulled or the device rebooted, and the store's mirror kept
//! pointed at it (docs/MIRROR.md, "On the device").
//!
//! Choosing: B on the system page, or `boltbox mirror use [STICK]` over the control socket,
//! puts an [`Ask`] on the OLED ("mirror to stick sda1?"); only B pressed on the device makes the
//! stick the mirror, so nobody reaching the control socket alone moves the channel state
//! elsewhere. The choice is two records with one id: [`CHOICE_FILE`] in the data dir (0600) and
//! `boltbox-mirror/`[`STICK_MARK`] on the stick. A stick is the mirror when it carries the data
//! dir's id: its kernel name (`sda1`) may change from one insertion to the next, its contents
//! do not. `[mirror] dir` in boltbox.toml, when set, is the mirror instead and no stick is
//! chosen.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use boltbox_node::files::{self, read_untrusted};
use boltbox_node::mirror::MIRROR_DIR;
use serde::{Deserialize, Serialize};

use crate::backup::{Stick, StickError, inserted_sticks, usable_sticks};
use crate::config::AppConfig;

/// The chosen stick's record in the data dir.
pub const CHOICE_FILE: &str = "mirror-stick.json";
/// The chosen stick's mark: `<stick>/boltbox-mirror/stick`, holding the choice's id.
pub const STICK_MARK: &str = "stick";
/// How long a question on the OLED waits for the owner's press.
pub const ASK_WAIT: Duration = Duration::from_secs(60);

/// The stick chosen as the mirror (the data dir's [`CHOICE_FILE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// The id the stick carries in its mark.
    pub id: String,
    /// The stick's name when it was chosen (for the owner: the current name may differ).
    pub stick: String,
    /// When it was chosen (Unix seconds).
    pub at: u64,
}

impl Choice {
    /// The choice recorded in `data_dir`, if any; an unreadable record is logged and taken as
    /// none (the owner chooses again; the stick's files are untouched).
    pub fn load(data_dir: &Path) -> Option<Choice> {
        let path = data_dir.join(CHOICE_FILE);
        let bytes = match read_untrusted(&path, 4096) {
            Ok(bytes) => bytes,
            Err(e) if e.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => return None,
            Err(e) => {
                tracing::warn!("the mirror stick's record: {e}");
                return None;
            }
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| tracing::warn!("the mirror stick's record {}: {e}", path.display()))
            .ok()
    }

    fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        files::write_private_atomic(&data_dir.join(CHOICE_FILE), &json)
    }
}

/// The id marked on the stick at `dir`, if it carries one.
fn mark_of(dir: &Path) -> Option<String> {
    let bytes = read_untrusted(&dir.join(MIRROR_DIR).join(STICK_MARK), 256).ok()?;
    String::from_utf8(bytes).ok().map(|s| s.trim().to_string())
}

/// Whether the stick at `dir` carries the mark of choice `id`.
pub fn carries(dir: &Path, id: &str) -> bool {
    mark_of(dir).as_deref() == Some(id)
}

/// Marks `stick` as carrying the mirror of choice `id` (durably: the mark is how the stick is
/// found again).
fn mark(stick: &Stick, id: &str) -> std::io::Result<()> {
    let dir = stick.path.join(MIRROR_DIR);
    files::create_private_dir(&dir)?;
    let path = dir.join(STICK_MARK);
    // Not through a symlink, a FIFO or a device a stick may carry under that name.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(files::PRIVATE_FILE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!("{} is not a regular file", path.display())));
    }
    file.write_all(format!("{id}\n").as_bytes())?;
    file.sync_all()?;
    files::sync_dir(&dir)
}

/// A question on the OLED: make this stick the mirror?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Tells one question from the next.
    pub id: u64,
    /// The stick's name, or why no stick can be chosen (the OLED says it, A or B dismisses).
    pub stick: Result<String, String>,
}

/// Where the mirror is to be written now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No mirror.
    Off,
    /// This directory (`[mirror] dir`, or the chosen stick's mount point).
    Dir(PathBuf),
    /// The chosen stick is not there: why, for the status.
    Missing(String),
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// The open question and the stick it names.
    asked: Option<(Ask, Option<Stick>, Instant)>,
    /// The question whose yes is being written to the stick and the data dir.
    answering: Option<u64>,
    /// How the last questions ended, by id (a few, for the callers waiting on them).
    answers: Vec<(u64, Result<String, String>)>,
    choice: Option<Choice>,
}

/// The appliance's mirror choice, shared by the display loop, the control socket and the
/// supervisor.
#[derive(Debug)]
pub struct MirrorChoice {
    data_dir: PathBuf,
    sticks: PathBuf,
    device: bool,
    fixed: Option<PathBuf>,
    state: Mutex<State>,
    answered: Condvar,
}

impl MirrorChoice {
    /// The choice for `config`, with the stick recorded in its data dir.
    pub fn new(config: &AppConfig) -> MirrorChoice {
        let data_dir = config.node.data_dir.clone();
        let choice = Choice::load(&data_dir);
        MirrorChoice {
            data_dir,
            sticks: config.backup.sticks.clone(),
            device: config.eject_request().is_some(),
            fixed: config.mirror.dir().map(Path::to_path_buf),
            state: Mutex::new(State { choice, ..State::default() }),
            answered: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stick chosen, if any.
    pub fn choice(&self) -> Option<Choice> {
        self.state().choice.clone()
    }

    /// The chosen stick where it is now mounted, if it is.
    fn chosen_stick(&self, id: &str) -> Option<Stick> {
        // Every inserted stick, a read-only one too: the mirror then says why it cannot write.
        inserted_sticks(&self.sticks, self.device).into_iter().find(|s| carries(&s.path, id))
    }

    /// Where the mirror is to be written now (looked up afresh: sticks come and go).
    pub fn target(&self) -> Target {
        if let Some(dir) = &self.fixed {
            return Target::Dir(dir.clone());
        }
        let Some(choice) = self.choice() else { return Target::Off };
        match self.chosen_stick(&choice.id) {
            Some(stick) => Target::Dir(stick.path),
            None => Target::Missing(format!("the mirror stick ({}) is not inserted", choice.stick)),
        }
    }

    /// Puts a question on the OLED: make `name` (or, without one, the first stick that is not
    /// the mirror yet) the mirror? Refused while another is open: a question is never swapped
    /// under the owner's finger.
    pub fn ask(&self, name: Option<&str>) -> Result<Ask, String> {
        // An open question past its time is a no first.
        let _ = self.asked();
        let stick = self.candidate(name);
        let mut state = self.state();
        if state.asked.is_some() || state.answering.is_some() {
            return Err("another question is open on the device: answer it there first".into());
        }
        state.next_id = state.next_id.saturating_add(1);
        let ask =
            Ask { id: state.next_id, stick: stick.as_ref().map(|s| s.name.clone()).map_err(Clone::clone) };
        tracing::info!("asking on the device: {ask:?}");
        state.asked = Some((ask.clone(), stick.ok(), Instant::now()));
        Ok(ask)
    }

    fn candidate(&self, name: Option<&str>) -> Result<Stick, String> {
        if let Some(dir) = &self.fixed {
            return Err(format!("set in boltbox.toml: [mirror] dir = {}", dir.display()));
        }
        let sticks = usable_sticks(&self.sticks, self.device).map_err(|e| match e {
            StickError::NoStick => "no USB stick found: insert one and ask again".to_string(),
            other => other.to_string(),
        })?;
        let current = self.choice().map(|c| c.id);
        let is_mirror = |s: &Stick| current.as_deref().is_some_and(|id| carries(&s.path, id));
        match name {
            Some(name) => match sticks.into_iter().find(|s| s.name == name) {
                Some(s) if is_mirror(&s) => Err(format!("stick {name} is the mirror already")),
                Some(s) => Ok(s),
                None => Err(format!("no usable USB stick {name}")),
            },
            None => sticks
                .into_iter()
                .find(|s| !is_mirror(s))
                .ok_or_else(|| "this stick is the mirror already".into()),
        }
    }

    /// The question on the OLED, if one is open (one not answered within [`ASK_WAIT`] is
    /// answered no).
    pub fn asked(&self) -> Option<Ask> {
        let expired = {
            let state = self.state();
            match &state.asked {
                Some((ask, _, at)) if at.elapsed() >= ASK_WAIT => Some(ask.id),
                Some((ask, _, _)) => return Some(ask.clone()),
                None => return None,
            }
        };
        if let Some(id) = expired {
            self.answer(id, false);
        }
        None
    }

    /// The owner's answer to question `id` on the device: yes makes its stick the mirror.
    pub fn answer(&self, id: u64, yes: bool) {
        let (ask, stick) = {
            let mut state = self.state();
            let Some((ask, stick, _)) = state.asked.take_if(|(ask, _, _)| ask.id == id) else { return };
            // Still pending for wait() and stop() until the outcome is recorded.
            state.answering = Some(id);
            (ask, stick)
        };
        // The stick is written without the lock held: a slow stick never holds up the display
        // thread's look at the question, nor the supervisor's at the target.
        let outcome = match (yes, stick, ask.stick) {
            (_, _, Err(why)) => Err(why),
            (false, _, Ok(_)) | (_, None, Ok(_)) => Err("not confirmed on the device".into()),
            (true, Some(stick), Ok(_)) => self.choose(&stick).map(|choice| (choice, stick.name)),
        };
        let mut state = self.state();
        let outcome = match outcome {
            Ok((choice, name)) => {
                tracing::info!("the owner chose stick {name} as the mirror");
                state.choice = Some(choice);
                Ok(name)
            }
            Err(why) => {
                tracing::info!("no stick chosen as the mirror: {why}");
                Err(why)
            }
        };
        state.answering = None;
        state.answers.push((id, outcome));
        let drop_before = state.answers.len().saturating_sub(8);
        state.answers.drain(..drop_before);
        self.answered.notify_all();
    }

    /// Marks the chosen stick's mirror retired, if the stick is in: the node goes on without it
    /// (see [`boltbox_node::mirror::retire`]).
    fn retire(&self, old: &Choice) {
        let Some(stick) = self.chosen_stick(&old.id) else { return };
        match boltbox_node::mirror::retire(&stick.path) {
            Ok(()) => tracing::info!("the mirror on stick {} is retired", stick.name),
            Err(e) => tracing::warn!("cannot mark the mirror on stick {} retired: {e}", stick.name),
        }
    }

    /// Makes `stick` the mirror: marks it, records it in the data dir, and retires the stick
    /// it replaces.
    fn choose(&self, stick: &Stick) -> Result<Choice, String> {
        let old = self.choice();
        let at = boltbox_node::unix_now();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let choice =
            Choice { id: format!("{at}-{nanos:09}-{}", std::process::id()), stick: stick.name.clone(), at };
        mark(stick, &choice.id).map_err(|e| format!("cannot write to stick {}: {e}", stick.name))?;
        choice.save(&self.data_dir).map_err(|e| format!("cannot record the choice in the data dir: {e}"))?;
        if let Some(old) = old {
            self.retire(&old);
        }
        Ok(choice)
    }

    /// Waits up to `timeout` for how question `id` ended: the stick chosen, or why not.
    pub fn wait(&self, id: u64, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            // An open question past its time is a no first.
            let _ = self.asked();
            let state = self.state();
            if let Some((_, outcome)) = state.answers.iter().find(|(a, _)| *a == id) {
                return outcome.clone();
            }
            let pending =
                state.asked.as_ref().is_some_and(|(ask, _, _)| ask.id == id) || state.answering == Some(id);
            if !pending {
                return Err("the question was replaced by another".into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no answer on the device".into());
            }
            drop(self.answered.wait_timeout(state, left.min(Duration::from_secs(1))));
        }
    }

    /// Forgets the chosen stick (the mirror stops; its files stay on the stick).
    pub fn stop(&self) -> Result<(), String> {
        if self.fixed.is_some() {
            return Err("the mirror is set in boltbox.toml ([mirror] dir): change it there".into());
        }
        let old = {
            let mut state = self.state();
            if state.answering.is_some() {
                return Err("a stick is being chosen on the device: try again in a moment".into());
            }
            let Some(old) = state.choice.take() else { return Err("no stick is the mirror".into()) };
            if let Err(e) = std::fs::remove_file(self.data_dir.join(CHOICE_FILE))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                state.choice = Some(old);
                return Err(format!("cannot remove the mirror stick's record: {e}"));
            }
            old
        };
        tracing::info!("the mirror stick is no longer chosen");
        self.retire(&old);
        Ok(())
    }

    /// Reads the data dir's record again (a restore may have written one).
    pub fn reload(&self) {
        self.state().choice = Choice::load(&self.data_dir);
    }

    /// After a restore from the mirror on `dir`: see [`adopt`].
    pub fn adopt(&self, dir: &Path) {
        if self.fixed.is_none()
            && let Some(choice) = adopt(&self.data_dir, dir)
        {
            self.state().choice = Some(choice);
        }
    }
}

/// After a restore from the mirror on `dir` into `data_dir`: a stick that carries a mark is
/// recorded as the chosen mirror (the new data dir has no record), so that the mirror goes on
/// there. Returns the choice recorded.
pub fn adopt(data_dir: &Path, dir: &Path) -> Option<Choice> {
    let id = mark_of(dir)?;
    let stick = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let choice = Choice { id, stick, at: boltbox_node::unix_now() };
    match choice.save(data_dir) {
        Ok(()) => {
            tracing::info!("the stick restored from ({}) is the mirror again", dir.display());
            Some(choice)
        }
        Err(e) => {
            tracing::warn!("cannot record the mirror stick: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice_in(dir: &Path) -> MirrorChoice {
        let text = format!(
            "[node]\nnetwork = \"regtest\"\ndata_dir = \"{}\"\n[node.chain]\nsource = \"electrum\"\n\
             url = \"tcp://127.0.0.1:1\"\n[board]\nboard = \"sim\"\n[backup]\nsticks = \"{}\"\n",
            dir.join("data").display(),
            dir.join("usb").display()
        );
        let config = AppConfig::parse(&text).expect("config");
        std::fs::create_dir_all(&config.node.data_dir).expect("data dir");
        std::fs::create_dir_all(&config.backup.sticks).expect("sticks");
        MirrorChoice::new(&config)
    }

    #[test]
    fn a_stick_confirmed_on_the_device_is_the_mirror_under_any_name_until_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let choice = choice_in(dir.path());
        assert_eq!(choice.target(), Target::Off);
        let ask = choice.ask(None).expect("asked");
        assert_eq!(ask.stick, Err("no USB stick found: insert one and ask again".into()));
        choice.answer(ask.id, true);

        let usb = dir.path().join("usb");
        std::fs::create_dir(usb.join("sda1")).expect("stick");
        let ask = choice.ask(None).expect("asked");
        assert_eq!((choice.asked(), &ask.stick), (Some(ask.clone()), &Ok("sda1".into())));
        // A no chooses nothing.
        choice.answer(ask.id, false);
        assert_eq!(choice.wait(ask.id, Duration::ZERO), Err("not confirmed on the device".into()));
        assert_eq!((choice.asked(), choice.target()), (None, Target::Off));

        let ask = choice.ask(Some("sda1")).expect("asked");
        choice.answer(ask.id, true);
        assert_eq!(choice.wait(ask.id, Duration::ZERO), Ok("sda1".into()));
        assert_eq!(choice.target(), Target::Dir(usb.join("sda1")));
        // The record survives a restart of the service.
        assert_eq!(choice_in(dir.path()).target(), Target::Dir(usb.join("sda1")));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("data").join(CHOICE_FILE)).expect("record").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        // Put back under another name, it is still the mirror; another stick is not.
        std::fs::rename(usb.join("sda1"), usb.join("sdb1")).expect("re-inserted");
        std::fs::create_dir(usb.join("sda1")).expect("another stick");
        assert_eq!(choice.target(), Target::Dir(usb.join("sdb1")));
        // Asking again offers the other stick, never the mirror itself.
        let ask = choice.ask(None).expect("asked");
        assert_eq!(ask.stick, Ok("sda1".into()));
        choice.answer(ask.id, false);
        let ask = choice.ask(Some("sdb1")).expect("asked");
        assert_eq!(ask.stick, Err("stick sdb1 is the mirror already".into()));
        choice.answer(ask.id, false);

        // Another stick chosen: the one it replaces is retired (its mirror falls behind).
        std::fs::create_dir_all(usb.join("sdb1").join(MIRROR_DIR)).expect("a mirror on sdb1");
        let ask = choice.ask(Some("sda1")).expect("asked");
        choice.answer(ask.id, true);
        assert_eq!(choice.target(), Target::Dir(usb.join("sda1")));
        let retired = usb.join("sdb1").join(MIRROR_DIR).join(boltbox_node::mirror::RETIRED_FILE);
        assert!(retired.is_file(), "the replaced stick is marked retired");
        // sda1's mark lost, the old stick's retired mark gone: no stick carries the choice.
        std::fs::remove_file(usb.join("sda1").join(MIRROR_DIR).join(STICK_MARK)).expect("unmarked");
        std::fs::remove_file(&retired).expect("unretired");
        std::fs::rename(usb.join("sdb1"), dir.path().join("pulled")).expect("pulled");
        assert_eq!(choice.target(), Target::Missing("the mirror stick (sda1) is not inserted".into()));

        choice.stop().expect("stop");
        assert_eq!(choice.target(), Target::Off);
        assert_eq!(choice.stop(), Err("no stick is the mirror".into()));

        // A restore from the marked stick makes it the mirror again.
        std::fs::rename(dir.path().join("pulled"), usb.join("sdc1")).expect("back");
        choice.adopt(&usb.join("sdc1"));
        assert_eq!(choice.target(), Target::Dir(usb.join("sdc1")));
    }

    #[test]
    fn a_question_is_never_replaced_while_open_and_an_unanswered_one_chooses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let choice = choice_in(dir.path());
        std::fs::create_dir(dir.path().join("usb").join("sda1")).expect("stick");
        let first = choice.ask(None).expect("asked");
        assert_eq!(
            choice.ask(Some("sda1")),
            Err("another question is open on the device: answer it there first".into())
        );
        assert_eq!(choice.asked(), Some(first.clone()), "the question shown stays");
        assert_eq!(choice.wait(first.id, Duration::ZERO), Err("no answer on the device".into()));
        // Answering a question that is not the open one does nothing.
        choice.answer(first.id + 1, true);
        assert_eq!(choice.target(), Target::Off);
        choice.answer(first.id, false);
        let second = choice.ask(None).expect("a new question once the first is answered");
        assert!(second.id > first.id);
    }
}

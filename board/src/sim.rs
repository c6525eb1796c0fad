//! The simulated board: the OLED drawn in a terminal, PNG frames on request, keys for buttons.
//!
//! The panel is drawn with two pixels per character cell (Unicode half blocks), 128x32 cells,
//! with the caption under it. A terminal cannot report key release, so each key stands for a
//! whole press, played out in real time as a sequence of edges:
//!
//! | key | edges                                       | gesture (default thresholds) |
//! |-----|---------------------------------------------|------------------------------|
//! | `a` | A down, A up after a short hold             | short press A                |
//! | `b` | B down, B up after a short hold             | short press B                |
//! | `A` | A down, A up after `long_press` + 250 ms    | long press A                 |
//! | `B` | B down, B up after `long_press` + 250 ms    | long press B                 |
//! | `c` | A and B down, both up after `both_held` + 250 ms | both held               |
//! | `p` | none: saves the next frame as a PNG         |                              |
//!
//! Keys are read from standard input: a terminal is put in non-canonical, no-echo mode (so keys
//! count without Enter; Ctrl-C still interrupts) and restored when the buttons are dropped; when
//! standard input is not a terminal, its lines are read and every character counts as a key.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use crate::buttons::{Button, ButtonEdge, ButtonError, Buttons, monotonic};
use crate::display::{Display, DisplayError};
use crate::frame::{Frame, HEIGHT, WIDTH};
use crate::gesture::{GestureConfig, Levels};

/// One line of help for the keys.
pub const KEY_HELP: &str = "keys: a/b short press · A/B long press · c both held · p save PNG";

/// The frame as text: 32 lines of 128 cells, each cell two pixels stacked (`▀`, `▄`, `█`, ` `).
pub fn half_blocks(frame: &Frame) -> Vec<String> {
    (0..HEIGHT / 2)
        .map(|row| {
            (0..WIDTH)
                .map(|x| match (frame.get(x, row * 2), frame.get(x, row * 2 + 1)) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                })
                .collect()
        })
        .collect()
}

/// The frame as text at half the size of [`half_blocks`]: 32 lines of 64 cells, each cell a 2x2
/// block of pixels drawn with the Unicode quadrant characters, so that two boards fit side by
/// side in a terminal of 130 columns.
pub fn quadrants(frame: &Frame) -> Vec<String> {
    // Indexed by top-left 1, top-right 2, bottom-left 4, bottom-right 8.
    const GLYPHS: [char; 16] =
        [' ', '▘', '▝', '▀', '▖', '▌', '▞', '▛', '▗', '▚', '▐', '▜', '▄', '▙', '▟', '█'];
    (0..HEIGHT / 2)
        .map(|row| {
            (0..WIDTH / 2)
                .map(|col| {
                    let (x, y) = (col * 2, row * 2);
                    let bits = [(x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1)]
                        .iter()
                        .enumerate()
                        .filter(|(_, (x, y))| frame.get(*x, *y))
                        .fold(0, |acc, (i, _)| acc | (1 << i));
                    GLYPHS[bits]
                })
                .collect()
        })
        .collect()
}

/// A request, shared between the keyboard and the display, to save the next frame as a PNG.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRequest(Arc<AtomicBool>);

impl SnapshotRequest {
    /// Asks for the next frame to be saved.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// The simulated OLED: draws each frame in a terminal (or any writer) and saves PNGs.
pub struct SimDisplay {
    out: Box<dyn Write + Send>,
    ansi: bool,
    png_dir: PathBuf,
    save_every_frame: bool,
    snapshot: SnapshotRequest,
    seq: u64,
    frame: Frame,
    on: bool,
    contrast: u8,
    /// What was drawn last (frame, caption, on, contrast): an unchanged picture is not redrawn,
    /// which keeps a log readable and a terminal free of flicker.
    drawn: Option<(Frame, String, bool, u8)>,
}

impl std::fmt::Debug for SimDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDisplay")
            .field("png_dir", &self.png_dir)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl SimDisplay {
    /// Draws into `out`; with `ansi`, each frame is redrawn in place (cursor home) instead of
    /// being appended.
    pub fn new(out: Box<dyn Write + Send>, ansi: bool) -> Self {
        SimDisplay {
            out,
            ansi,
            png_dir: PathBuf::from("."),
            save_every_frame: false,
            snapshot: SnapshotRequest::default(),
            seq: 0,
            frame: Frame::blank(),
            on: true,
            contrast: 0x5F,
            drawn: None,
        }
    }

    /// Draws on standard output, in place when it is a terminal.
    pub fn stdout() -> Self {
        let ansi = rustix::termios::isatty(std::io::stdout());
        Self::new(Box::new(std::io::stdout()), ansi)
    }

    /// Saves PNGs into `dir` (on request, or every frame with `every_frame`).
    pub fn with_png_dir(mut self, dir: PathBuf, every_frame: bool) -> Self {
        self.png_dir = dir;
        self.save_every_frame = every_frame;
        self
    }

    /// The request flag that the keyboard (`p`) sets to save the next frame.
    pub fn snapshot_request(&self) -> SnapshotRequest {
        self.snapshot.clone()
    }

    /// Saves the current frame at `path`, 4 times enlarged so that people can read it.
    pub fn save_png(&self, path: &Path) -> Result<(), DisplayError> {
        let bytes = self.frame.to_png(4).map_err(|e| DisplayError::Png(e.to_string()))?;
        std::fs::write(path, bytes)
            .map_err(|source| DisplayError::Io { what: format!("writing {}", path.display()), source })
    }

    fn draw(&mut self, caption: &str) -> Result<(), DisplayError> {
        let state = (self.frame.clone(), caption.to_string(), self.on, self.contrast);
        if self.drawn.as_ref() == Some(&state) {
            return Ok(());
        }
        let shown = if self.on { self.frame.clone() } else { Frame::blank() };
        let mut text = String::with_capacity(20_000);
        let (clear_line, home) = match (self.ansi, self.drawn.is_none()) {
            (true, true) => ("\x1b[K", "\x1b[2J\x1b[H"),
            (true, false) => ("\x1b[K", "\x1b[H"),
            (false, _) => ("", ""),
        };
        self.drawn = Some(state);
        text.push_str(home);
        text.push('┌');
        text.push_str(&"─".repeat(WIDTH));
        text.push_str(&format!("┐{clear_line}\n"));
        for line in half_blocks(&shown) {
            text.push_str(&format!("│{line}│{clear_line}\n"));
        }
        let status = format!(
            " frame {} · contrast {}{} ",
            self.seq,
            self.contrast,
            if self.on { "" } else { " · off" }
        );
        text.push('└');
        text.push_str(&status);
        text.push_str(&"─".repeat(WIDTH.saturating_sub(status.chars().count())));
        text.push_str(&format!("┘{clear_line}\n"));
        for line in caption.lines() {
            text.push_str(&format!("{line}{clear_line}\n"));
        }
        text.push_str(&format!("{KEY_HELP}{clear_line}\n"));
        if self.ansi {
            text.push_str("\x1b[J");
        }
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|source| DisplayError::Io { what: "drawing the sim board".into(), source })
    }
}

impl Display for SimDisplay {
    fn show(&mut self, frame: &Frame, caption: &str) -> Result<(), DisplayError> {
        let changed = *frame != self.frame || self.seq == 0;
        self.seq += 1;
        frame.clone_into(&mut self.frame);
        if self.snapshot.take() || (self.save_every_frame && changed) {
            let path = self.png_dir.join(format!("frame-{:06}.png", self.seq));
            self.save_png(&path)?;
            tracing::info!(path = %path.display(), "sim: saved frame");
        }
        self.draw(caption)
    }

    fn set_contrast(&mut self, contrast: u8) -> Result<(), DisplayError> {
        self.contrast = contrast;
        Ok(())
    }

    fn set_on(&mut self, on: bool) -> Result<(), DisplayError> {
        self.on = on;
        Ok(())
    }
}

/// How long each key holds its buttons down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHolds {
    /// `a`, `b`.
    pub short: Duration,
    /// `A`, `B`.
    pub long: Duration,
    /// `c`.
    pub both: Duration,
}

impl KeyHolds {
    /// Holds that make each key's gesture under `config`: a short hold well past debounce and
    /// under the long-press threshold, and long holds a little past their thresholds.
    pub fn for_gestures(config: &GestureConfig) -> Self {
        let margin = Duration::from_millis(250);
        let short = (config.debounce * 3).max(Duration::from_millis(100)).min(config.long_press / 2);
        KeyHolds { short, long: config.long_press + margin, both: config.both_held + margin }
    }
}

/// Restores the terminal's settings when dropped.
#[derive(Debug)]
struct TerminalGuard {
    original: rustix::termios::Termios,
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        // Best effort: there is nothing left to do if the terminal is gone.
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.original,
        );
    }
}

/// Keys stand in for buttons; see the module documentation for the key map.
#[derive(Debug)]
pub struct SimButtons {
    keys: Receiver<char>,
    keys_closed: bool,
    /// Edges to deliver, in time order; an edge is delivered when its time has come.
    scheduled: VecDeque<ButtonEdge>,
    /// The level of each button as its last delivered edge left it.
    levels: Levels,
    holds: KeyHolds,
    snapshot: Option<SnapshotRequest>,
    _terminal: Option<TerminalGuard>,
}

impl SimButtons {
    /// Buttons driven by the keys arriving on `keys`.
    pub fn new(keys: Receiver<char>, holds: KeyHolds) -> Self {
        SimButtons {
            keys,
            keys_closed: false,
            scheduled: VecDeque::new(),
            levels: Levels::default(),
            holds,
            snapshot: None,
            _terminal: None,
        }
    }

    /// Buttons driven by standard input (see the module documentation).
    pub fn stdin(holds: KeyHolds) -> Result<Self, ButtonError> {
        let stdin = std::io::stdin();
        let terminal = if rustix::termios::isatty(&stdin) {
            let original =
                rustix::termios::tcgetattr(&stdin).map_err(|e| ButtonError::Keyboard(e.to_string()))?;
            let mut keys_mode = original.clone();
            keys_mode.local_modes -= rustix::termios::LocalModes::ICANON | rustix::termios::LocalModes::ECHO;
            keys_mode.special_codes[rustix::termios::SpecialCodeIndex::VMIN] = 1;
            keys_mode.special_codes[rustix::termios::SpecialCodeIndex::VTIME] = 0;
            rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &keys_mode)
                .map_err(|e| ButtonError::Keyboard(e.to_string()))?;
            Some(TerminalGuard { original })
        } else {
            None
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sim-keys".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = [0u8; 64];
                loop {
                    let n = match stdin.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "sim: reading keys failed");
                            return;
                        }
                    };
                    for c in String::from_utf8_lossy(&buf[..n]).chars() {
                        if tx.send(c).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| ButtonError::Keyboard(e.to_string()))?;
        let mut buttons = Self::new(rx, holds);
        buttons._terminal = terminal;
        Ok(buttons)
    }

    /// Lets `p` request a PNG of the next frame.
    pub fn with_snapshot(mut self, snapshot: SnapshotRequest) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    fn schedule(&mut self, button: Button, pressed: bool, at: Duration) {
        let edge = ButtonEdge { button, pressed, at };
        let index = self.scheduled.iter().position(|e| e.at > at).unwrap_or(self.scheduled.len());
        self.scheduled.insert(index, edge);
    }

    fn press(&mut self, buttons: &[Button], hold: Duration, now: Duration) {
        for &b in buttons {
            self.schedule(b, true, now);
        }
        for &b in buttons {
            self.schedule(b, false, now + hold);
        }
    }

    fn key(&mut self, key: char, now: Duration) {
        let holds = self.holds;
        match key {
            'a' => self.press(&[Button::A], holds.short, now),
            'b' => self.press(&[Button::B], holds.short, now),
            'A' => self.press(&[Button::A], holds.long, now),
            'B' => self.press(&[Button::B], holds.long, now),
            'c' | 'C' => self.press(&[Button::A, Button::B], holds.both, now),
            'p' | 'P' => match &self.snapshot {
                Some(snapshot) => snapshot.request(),
                None => tracing::info!("sim: no display to save a PNG of"),
            },
            _ => {}
        }
    }
}

impl Buttons for SimButtons {
    fn next_edge(&mut self, timeout: Duration) -> Result<Option<ButtonEdge>, ButtonError> {
        let deadline = monotonic() + timeout;
        loop {
            let now = monotonic();
            if let Some(edge) = self.scheduled.front().filter(|e| e.at <= now) {
                let edge = *edge;
                self.scheduled.pop_front();
                self.levels.set(edge.button, edge.pressed);
                return Ok(Some(edge));
            }
            if now >= deadline {
                return Ok(None);
            }
            let wake = self.scheduled.front().map_or(deadline, |e| e.at.min(deadline));
            let wait = wake.saturating_sub(now);
            if self.keys_closed {
                // No keys can come; wait for the next scheduled edge or the timeout.
                std::thread::sleep(wait);
                continue;
            }
            match self.keys.recv_timeout(wait) {
                Ok(key) => self.key(key, monotonic()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    tracing::info!("sim: no more keys (standard input closed)");
                    self.keys_closed = true;
                }
            }
        }
    }

    fn level(&self, button: Button) -> Result<bool, ButtonError> {
        Ok(self.levels.of(button))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gesture::{Gesture, GestureMachine};
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    #[test]
    fn half_blocks_put_two_pixels_in_a_cell() {
        let mut frame = Frame::blank();
        frame.set(0, 0, true);
        frame.set(1, 1, true);
        frame.set(2, 0, true);
        frame.set(2, 1, true);
        frame.set(127, 63, true);
        let lines = half_blocks(&frame);
        assert_eq!(lines.len(), 32);
        assert!(lines.iter().all(|l| l.chars().count() == 128));
        assert!(lines[0].starts_with("▀▄█ "));
        assert!(lines[31].ends_with('▄'));
    }

    #[test]
    fn quadrants_put_four_pixels_in_a_cell() {
        let mut frame = Frame::blank();
        // Cell 0: top-left and bottom-right; cell 1: the top row; cell 2: all but top-left.
        for (x, y) in [(0, 0), (1, 1), (2, 0), (3, 0), (5, 0), (4, 1), (5, 1), (127, 63)] {
            frame.set(x, y, true);
        }
        let lines = quadrants(&frame);
        assert_eq!(lines.len(), 32);
        assert!(lines.iter().all(|l| l.chars().count() == 64));
        assert!(lines[0].starts_with("▚▀▟ "), "{:?}", lines[0].chars().take(4).collect::<String>());
        assert!(lines[31].ends_with('▗'));
    }

    #[test]
    fn the_sim_display_draws_the_frame_and_caption_and_saves_pngs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Captured::default();
        let mut display =
            SimDisplay::new(Box::new(out.clone()), false).with_png_dir(dir.path().to_path_buf(), false);
        let mut frame = Frame::blank();
        frame.set(0, 0, true);
        display.show(&frame, "home\nheight 812").expect("show");
        let text = out.text();
        assert!(text.contains("│▀"), "{text}");
        assert!(text.contains("home\nheight 812\n"), "{text}");
        assert!(text.contains(KEY_HELP));
        assert!(!dir.path().join("frame-000001.png").exists(), "only on request");
        let drawn = out.text().len();
        display.show(&frame, "home\nheight 812").expect("show");
        assert_eq!(out.text().len(), drawn, "an unchanged picture is not drawn again");

        display.snapshot_request().request();
        display.show(&frame, "home").expect("show");
        let png = std::fs::read(dir.path().join("frame-000003.png")).expect("saved on request");
        assert_eq!(Frame::from_png(&png).expect("decode"), frame);
        display.show(&frame, "home").expect("show");
        assert!(!dir.path().join("frame-000004.png").exists(), "one request, one PNG");
    }

    #[test]
    fn every_changed_frame_can_be_saved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut display =
            SimDisplay::new(Box::new(Captured::default()), true).with_png_dir(dir.path().to_path_buf(), true);
        let mut frame = Frame::blank();
        display.show(&frame, "a").expect("show");
        display.show(&frame, "a").expect("show");
        frame.set(5, 5, true);
        display.show(&frame, "b").expect("show");
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        names.sort();
        assert_eq!(names, ["frame-000001.png", "frame-000003.png"]);
    }

    #[test]
    fn an_off_display_draws_dark() {
        let out = Captured::default();
        let mut display = SimDisplay::new(Box::new(out.clone()), false);
        let mut frame = Frame::blank();
        frame.set(0, 0, true);
        display.set_on(false).expect("off");
        display.show(&frame, "x").expect("show");
        assert!(!out.text().contains('▀'));
        assert!(out.text().contains("off"));
    }

    /// Plays keys through the sim buttons into a gesture machine, in real time.
    fn gestures_of(keys: &str) -> Vec<Gesture> {
        let config = GestureConfig {
            debounce: Duration::from_millis(10),
            // Far from the 100 ms short hold, so that a stalled test thread cannot turn it long.
            long_press: Duration::from_millis(800),
            both_held: Duration::from_millis(1000),
        };
        let (tx, rx) = mpsc::channel();
        let mut buttons = SimButtons::new(rx, KeyHolds::for_gestures(&config));
        let mut machine = GestureMachine::new(config);
        for key in keys.chars() {
            tx.send(key).expect("send");
        }
        drop(tx);
        let mut out = Vec::new();
        // Runs until the keys are all read and every scheduled edge is out, ticking meanwhile
        // as the appliance does.
        loop {
            match buttons.next_edge(Duration::from_millis(20)).expect("keys") {
                Some(edge) => out.extend(machine.edge(edge)),
                None => {
                    out.extend(machine.tick(monotonic(), Levels::read(&buttons).ok()));
                    if buttons.keys_closed && buttons.scheduled.is_empty() {
                        break;
                    }
                }
            }
        }
        let settled = monotonic() + Duration::from_secs(1);
        out.extend(machine.tick(settled, Levels::read(&buttons).ok()));
        out.retain(|g| !matches!(g, Gesture::Pressed(_)));
        out
    }

    #[test]
    fn keys_make_short_long_and_both_held_gestures() {
        assert_eq!(gestures_of("a"), [Gesture::Short(Button::A)]);
        assert_eq!(gestures_of("b"), [Gesture::Short(Button::B)]);
        assert_eq!(gestures_of("A"), [Gesture::Long(Button::A)]);
        assert_eq!(gestures_of("B"), [Gesture::Long(Button::B)]);
        assert_eq!(gestures_of("c"), [Gesture::BothHeld]);
        assert_eq!(gestures_of("x\n"), []);
    }

    #[test]
    fn scheduled_edges_stay_in_time_order() {
        let (_tx, rx) = mpsc::channel();
        let mut buttons = SimButtons::new(rx, KeyHolds::for_gestures(&GestureConfig::default()));
        let now = Duration::from_secs(10);
        buttons.key('A', now);
        buttons.key('b', now + Duration::from_millis(500));
        let order: Vec<_> = buttons.scheduled.iter().map(|e| (e.button, e.pressed)).collect();
        assert_eq!(
            order,
            [(Button::A, true), (Button::B, true), (Button::B, false), (Button::A, false)],
            "b's release comes before A's long hold ends"
        );
        assert!(buttons.scheduled.iter().zip(buttons.scheduled.iter().skip(1)).all(|(x, y)| x.at <= y.at));
    }

    #[test]
    fn p_requests_a_snapshot() {
        let (_tx, rx) = mpsc::channel();
        let snapshot = SnapshotRequest::default();
        let mut buttons = SimButtons::new(rx, KeyHolds::for_gestures(&GestureConfig::default()))
            .with_snapshot(snapshot.clone());
        buttons.key('p', Duration::ZERO);
        assert!(snapshot.take());
        assert!(buttons.scheduled.is_empty());
    }
}

//! The link board: a virtual board over a byte stream. Frames go out, button edges come in,
//! as lines of text; docs/LINK.md is the protocol. [`open_link`] is the device side (a
//! [`Display`] and [`Buttons`]); [`LinkClient`] is the host side, for tests and the image boot
//! test.
//!
//! Who connects: the host always connects to a Unix socket, and the device end is whatever
//! listens there: the device itself when `link:PATH` names a socket path (it binds it), or QEMU
//! with `-chardev socket,path=PATH,server=on,wait=off` in front of the guest's virtio console or
//! serial port (the device then opens that character device).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::buttons::{Button, ButtonEdge, ButtonError, Buttons, monotonic};
use crate::display::{Display, DisplayError, DisplayHealth};
use crate::frame::{FRAME_BYTES, Frame};
use crate::gesture::Levels;

/// The greeting the device sends on every new connection.
pub const HELLO: &str = "HELLO boltbox-link 1";

/// Longest line either side accepts, newline excluded. A frame line is about 2.1 KB plus its
/// escaped caption.
pub const MAX_LINE: usize = 16 * 1024;

/// How long the device waits for a slow host before it gives up on a write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What can go wrong on the link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Reading, writing, connecting or opening failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The other side closed the stream.
    #[error("the link was closed by the other side")]
    Closed,
    /// Nothing (or nothing wanted) arrived in time.
    #[error("nothing matching arrived within {waited:?}; last caption seen: {last_caption:?}")]
    Timeout {
        /// How long was waited.
        waited: Duration,
        /// The caption of the last frame seen, to say where the device was.
        last_caption: Option<String>,
    },
    /// A line that does not follow the protocol.
    #[error("malformed line {line:?}: {reason}")]
    Malformed {
        /// The line (its first 120 characters).
        line: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> LinkError {
    let what = what.into();
    move |source| LinkError::Io { what, source }
}

fn malformed(line: &str, reason: impl Into<String>) -> LinkError {
    LinkError::Malformed { line: line.chars().take(120).collect(), reason: reason.into() }
}

/// Escapes a caption for the end of a `FRAME` line: backslash, newline, carriage return and tab
/// become `\\`, `\n`, `\r`, `\t`; other control characters `\xHH`; all else is kept.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7F => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`]; an unknown escape or a dangling backslash is an error.
pub fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let code = u8::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 2)
                    .ok_or_else(|| format!("bad escape \\x{hex}"))?;
                out.push(char::from(code));
            }
            Some(other) => return Err(format!("unknown escape \\{other}")),
            None => return Err("dangling backslash at the end".into()),
        }
    }
    Ok(out)
}

fn hex_of(frame: &Frame) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(FRAME_BYTES * 2);
    for &b in frame.pages() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xF)]));
    }
    out
}

fn frame_of_hex(hex: &str) -> Result<Frame, String> {
    if hex.len() != FRAME_BYTES * 2 {
        return Err(format!("frame has {} hex digits, not {}", hex.len(), FRAME_BYTES * 2));
    }
    let mut pages = [0u8; FRAME_BYTES];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).map_err(|_| "frame is not hex".to_string())?;
        pages[i] =
            u8::from_str_radix(digits, 16).map_err(|_| format!("{digits:?} at byte {i} is not hex"))?;
    }
    Ok(Frame::from_pages(pages))
}

/// A frame as the host receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFrame {
    /// The device's frame counter: 1 for the first frame, +1 for each.
    pub seq: u64,
    /// The picture.
    pub frame: Frame,
    /// The caption: screen name and its text lines.
    pub caption: String,
}

/// A line from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceLine {
    /// `HELLO ...`: a new connection; the text after HELLO.
    Hello(String),
    /// `FRAME <seq> <hex> <caption>`.
    Frame(Box<LinkFrame>),
    /// `CONTRAST <0-255>`.
    Contrast(u8),
    /// `POWER ON` / `POWER OFF`.
    Power(bool),
    /// `ERROR <message>`: the device could not take a line the host sent.
    Error(String),
}

impl DeviceLine {
    /// The line as sent, without the newline.
    pub fn encode(&self) -> String {
        match self {
            DeviceLine::Hello(rest) => format!("HELLO {rest}"),
            DeviceLine::Frame(f) => format!("FRAME {} {} {}", f.seq, hex_of(&f.frame), escape(&f.caption)),
            DeviceLine::Contrast(c) => format!("CONTRAST {c}"),
            DeviceLine::Power(on) => format!("POWER {}", if *on { "ON" } else { "OFF" }),
            DeviceLine::Error(message) => format!("ERROR {}", escape(message)),
        }
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &str) -> Result<Self, LinkError> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "HELLO" => Ok(DeviceLine::Hello(rest.to_string())),
            "FRAME" => {
                let mut parts = rest.splitn(3, ' ');
                let seq = parts.next().unwrap_or_default();
                let seq =
                    seq.parse().map_err(|_| malformed(line, format!("sequence {seq:?} is not a number")))?;
                let frame = frame_of_hex(parts.next().unwrap_or_default()).map_err(|e| malformed(line, e))?;
                let caption = unescape(parts.next().unwrap_or_default()).map_err(|e| malformed(line, e))?;
                Ok(DeviceLine::Frame(Box::new(LinkFrame { seq, frame, caption })))
            }
            "CONTRAST" => {
                rest.parse().map(DeviceLine::Contrast).map_err(|_| malformed(line, "contrast is not 0-255"))
            }
            "POWER" => match rest {
                "ON" => Ok(DeviceLine::Power(true)),
                "OFF" => Ok(DeviceLine::Power(false)),
                _ => Err(malformed(line, "POWER takes ON or OFF")),
            },
            "ERROR" => unescape(rest).map(DeviceLine::Error).map_err(|e| malformed(line, e)),
            _ => Err(malformed(line, format!("unknown line type {word:?}"))),
        }
    }
}

/// Parses a line from the host: `EDGE <A|B> <DOWN|UP>`, as `(button, pressed)`.
pub fn parse_host_line(line: &str) -> Result<(Button, bool), LinkError> {
    let words: Vec<&str> = line.split(' ').collect();
    match words.as_slice() {
        ["EDGE", button, level] => {
            let button = match *button {
                "A" => Button::A,
                "B" => Button::B,
                other => return Err(malformed(line, format!("no button {other:?}; A or B"))),
            };
            let pressed = match *level {
                "DOWN" => true,
                "UP" => false,
                other => return Err(malformed(line, format!("no level {other:?}; DOWN or UP"))),
            };
            Ok((button, pressed))
        }
        ["EDGE", ..] => Err(malformed(line, "EDGE takes a button and a level: EDGE A DOWN")),
        [word, ..] => Err(malformed(line, format!("unknown line type {word:?}"))),
        [] => Err(malformed(line, "empty")),
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// The next complete line, without "\n" or "\r\n", if one is buffered.
    fn take_line(&mut self) -> Option<Result<String, String>> {
        let Some(end) = self.pending.iter().position(|&b| b == b'\n') else {
            if self.pending.len() > MAX_LINE {
                self.pending.clear();
                return Some(Err(format!("line longer than {MAX_LINE} bytes")));
            }
            return None;
        };
        let mut line: Vec<u8> = self.pending.drain(..=end).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > MAX_LINE {
            return Some(Err(format!("line longer than {MAX_LINE} bytes")));
        }
        Some(String::from_utf8(line).map_err(|_| "line is not UTF-8".to_string()))
    }

    fn fill(&mut self, reader: &mut impl Read) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = reader.read(&mut chunk)?;
        self.pending.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

/// The device's end of the connection to the host, if one is up.
struct Outgoing {
    writer: Option<Box<dyn Write + Send>>,
    seq: u64,
    last: Option<(Frame, String)>,
    contrast: Option<u8>,
    on: bool,
    /// The host's socket, to close it when the device side is dropped.
    socket: Option<UnixStream>,
}

impl Outgoing {
    fn send(&mut self, line: &DeviceLine) -> io::Result<()> {
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        let result =
            writer.write_all(format!("{}\n", line.encode()).as_bytes()).and_then(|()| writer.flush());
        if result.is_err() {
            self.writer = None;
        }
        result
    }

    /// A new host: greet it and bring it up to date.
    fn attach(&mut self, writer: Box<dyn Write + Send>) -> io::Result<()> {
        self.writer = Some(writer);
        self.send(&DeviceLine::Hello(HELLO.strip_prefix("HELLO ").unwrap_or(HELLO).to_string()))?;
        if let Some(c) = self.contrast {
            self.send(&DeviceLine::Contrast(c))?;
        }
        if !self.on {
            self.send(&DeviceLine::Power(false))?;
        }
        if let Some((frame, caption)) = self.last.clone() {
            self.send(&DeviceLine::Frame(Box::new(LinkFrame { seq: self.seq, frame, caption })))?;
        }
        Ok(())
    }
}

type Shared = Arc<Mutex<Outgoing>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Outgoing> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The device side's display: sends each frame as a `FRAME` line.
pub struct LinkDisplay {
    shared: Shared,
    describe: String,
    /// Hosts come and go (the device listens): losing one is not an error, the next one gets
    /// the current frame on connecting.
    listening: bool,
}

impl std::fmt::Debug for LinkDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkDisplay").field("link", &self.describe).finish_non_exhaustive()
    }
}

impl Drop for LinkDisplay {
    fn drop(&mut self) {
        let mut out = lock(&self.shared);
        out.writer = None;
        if let Some(socket) = out.socket.take() {
            // Ends the reader thread too, and tells the host the device is gone. An error means
            // the socket is closed already.
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl LinkDisplay {
    fn result(&self, sent: io::Result<()>) -> Result<(), DisplayError> {
        match sent {
            Err(e) if self.listening => {
                tracing::info!(error = %e, link = self.describe, "link: host went away");
                Ok(())
            }
            other => {
                other.map_err(|source| DisplayError::Io { what: format!("link {}", self.describe), source })
            }
        }
    }
}

impl Display for LinkDisplay {
    fn show(&mut self, frame: &Frame, caption: &str) -> Result<(), DisplayError> {
        let mut out = lock(&self.shared);
        out.seq += 1;
        out.last = Some((frame.clone(), caption.to_string()));
        let line = DeviceLine::Frame(Box::new(LinkFrame {
            seq: out.seq,
            frame: frame.clone(),
            caption: caption.to_string(),
        }));
        let sent = out.send(&line);
        drop(out);
        self.result(sent)
    }

    fn set_contrast(&mut self, contrast: u8) -> Result<(), DisplayError> {
        let mut out = lock(&self.shared);
        out.contrast = Some(contrast);
        let sent = out.send(&DeviceLine::Contrast(contrast));
        drop(out);
        self.result(sent)
    }

    fn set_on(&mut self, on: bool) -> Result<(), DisplayError> {
        let mut out = lock(&self.shared);
        out.on = on;
        let sent = out.send(&DeviceLine::Power(on));
        drop(out);
        self.result(sent)
    }

    fn health(&self) -> DisplayHealth {
        if lock(&self.shared).writer.is_some() {
            DisplayHealth::Present
        } else {
            DisplayHealth::Absent {
                reason: format!("no host connected to link {}", self.describe),
                failures: 0,
                next_retry: Duration::ZERO,
            }
        }
    }
}

/// The device side's buttons: `EDGE` lines from the host, dated on arrival.
#[derive(Debug)]
pub struct LinkButtons {
    edges: Receiver<ButtonEdge>,
    describe: String,
    /// The level of each button as its last delivered edge left it: the host's model.
    levels: Levels,
}

impl Buttons for LinkButtons {
    fn next_edge(&mut self, timeout: Duration) -> Result<Option<ButtonEdge>, ButtonError> {
        match self.edges.recv_timeout(timeout) {
            Ok(edge) => {
                self.levels.set(edge.button, edge.pressed);
                Ok(Some(edge))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(ButtonError::LinkClosed(self.describe.clone())),
        }
    }

    fn level(&self, button: Button) -> Result<bool, ButtonError> {
        Ok(self.levels.of(button))
    }
}

/// Reads host lines until end of stream, turning `EDGE` lines into edges and answering
/// malformed ones with `ERROR`. Returns at EOF or a read error, or when no one takes edges.
fn serve_host(mut reader: impl Read, shared: &Shared, edges: &Sender<ButtonEdge>) -> io::Result<()> {
    let mut lines = LineBuffer::default();
    loop {
        while let Some(line) = lines.take_line() {
            let result = line
                .map_err(|reason| malformed("", reason))
                .and_then(|line| if line.is_empty() { Ok(None) } else { parse_host_line(&line).map(Some) });
            match result {
                Ok(Some((button, pressed))) => {
                    let edge = ButtonEdge { button, pressed, at: monotonic() };
                    if edges.send(edge).is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "link: ignoring a malformed line from the host");
                    // The reply is best effort: a host that is gone is noticed by the next read.
                    let _ = lock(shared).send(&DeviceLine::Error(e.to_string()));
                }
            }
        }
        if lines.fill(&mut reader)? == 0 {
            return Ok(());
        }
    }
}

fn new_shared() -> Shared {
    Arc::new(Mutex::new(Outgoing {
        writer: None,
        seq: 0,
        last: None,
        contrast: None,
        on: true,
        socket: None,
    }))
}

/// The device side over an already connected stream (tests; a socket handed over by a
/// supervisor). When the host closes it, [`Buttons::next_edge`] returns
/// [`ButtonError::LinkClosed`].
pub fn link_over_stream(stream: UnixStream) -> Result<(LinkDisplay, LinkButtons), LinkError> {
    let describe = "stream".to_string();
    let shared = new_shared();
    let writer = stream.try_clone().map_err(io_error("cloning the link stream"))?;
    writer.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(io_error("setting the link write timeout"))?;
    {
        let mut out = lock(&shared);
        out.socket = Some(stream.try_clone().map_err(io_error("cloning the link stream"))?);
        out.attach(Box::new(writer)).map_err(io_error("greeting the host"))?;
    }
    let (tx, rx) = mpsc::channel();
    let thread_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("link-reader".into())
        .spawn(move || {
            if let Err(e) = serve_host(stream, &thread_shared, &tx) {
                tracing::warn!(error = %e, "link: reading from the host failed");
            }
            let mut out = lock(&thread_shared);
            out.writer = None;
            out.socket = None;
        })
        .map_err(io_error("starting the link reader"))?;
    Ok((
        LinkDisplay { shared, describe: describe.clone(), listening: false },
        LinkButtons { edges: rx, describe, levels: Levels::default() },
    ))
}

/// The device side at `path`: a character device (serial port, virtio console) is opened and
/// set to raw mode if it is a terminal; anything else is a Unix socket path that the device
/// listens on (a stale socket there is replaced), serving one host at a time.
pub fn open_link(path: &Path) -> Result<(LinkDisplay, LinkButtons), LinkError> {
    let describe = path.display().to_string();
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_char_device() => open_char_device(path),
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(io_error(format!("removing stale socket {describe}")))?;
            listen(path)
        }
        Ok(_) => Err(LinkError::Io {
            what: format!("link {describe}"),
            source: io::Error::new(io::ErrorKind::InvalidInput, "neither a character device nor a socket"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => listen(path),
        Err(e) => Err(io_error(format!("link {describe}"))(e)),
    }
}

fn listen(path: &Path) -> Result<(LinkDisplay, LinkButtons), LinkError> {
    let describe = path.display().to_string();
    let listener = UnixListener::bind(path).map_err(io_error(format!("listening on {describe}")))?;
    let shared = new_shared();
    let (tx, rx) = mpsc::channel();
    let thread_shared = Arc::clone(&shared);
    let thread_path = describe.clone();
    std::thread::Builder::new()
        .name("link-listener".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, link = thread_path, "link: accepting a host failed");
                        continue;
                    }
                };
                let attached = stream.try_clone().and_then(|socket| {
                    let writer = stream.try_clone()?;
                    writer.set_write_timeout(Some(WRITE_TIMEOUT))?;
                    let mut out = lock(&thread_shared);
                    out.socket = Some(socket);
                    out.attach(Box::new(writer))
                });
                if let Err(e) = attached {
                    tracing::warn!(error = %e, link = thread_path, "link: greeting a host failed");
                    continue;
                }
                tracing::info!(link = thread_path, "link: host connected");
                let served = serve_host(stream, &thread_shared, &tx);
                {
                    let mut out = lock(&thread_shared);
                    out.writer = None;
                    out.socket = None;
                }
                match served {
                    Ok(()) => tracing::info!(link = thread_path, "link: host disconnected"),
                    Err(e) => tracing::warn!(error = %e, link = thread_path, "link: host connection failed"),
                }
            }
        })
        .map_err(io_error("starting the link listener"))?;
    Ok((
        LinkDisplay { shared, describe: describe.clone(), listening: true },
        LinkButtons { edges: rx, describe, levels: Levels::default() },
    ))
}

fn open_char_device(path: &Path) -> Result<(LinkDisplay, LinkButtons), LinkError> {
    let describe = path.display().to_string();
    let file =
        File::options().read(true).write(true).open(path).map_err(io_error(format!("opening {describe}")))?;
    if rustix::termios::isatty(&file) {
        // Without raw mode the tty would echo our own FRAME lines back as input and cook bytes.
        let mut termios =
            rustix::termios::tcgetattr(&file).map_err(|e| io_error("reading tty settings")(e.into()))?;
        termios.make_raw();
        rustix::termios::tcsetattr(&file, rustix::termios::OptionalActions::Now, &termios)
            .map_err(|e| io_error("setting the tty to raw mode")(e.into()))?;
    }
    let shared = new_shared();
    let writer = file.try_clone().map_err(io_error(format!("cloning {describe}")))?;
    lock(&shared).attach(Box::new(writer)).map_err(io_error(format!("greeting the host on {describe}")))?;
    let (tx, rx) = mpsc::channel();
    let thread_shared = Arc::clone(&shared);
    let thread_path = describe.clone();
    std::thread::Builder::new()
        .name("link-reader".into())
        .spawn(move || {
            let mut file = file;
            loop {
                match serve_host(&mut file, &thread_shared, &tx) {
                    // A virtio port reads end-of-file while no host is attached on the other
                    // side; the device stays and polls again at a human pace.
                    Ok(()) => std::thread::sleep(Duration::from_secs(1)),
                    Err(e) => {
                        tracing::warn!(error = %e, link = thread_path, "link: reading failed; link closed");
                        return;
                    }
                }
            }
        })
        .map_err(io_error("starting the link reader"))?;
    Ok((
        LinkDisplay { shared, describe: describe.clone(), listening: false },
        LinkButtons { edges: rx, describe, levels: Levels::default() },
    ))
}

/// The host side of a link: connects to the device's socket, reads what it shows, presses its
/// buttons.
#[derive(Debug)]
pub struct LinkClient {
    stream: UnixStream,
    lines: LineBuffer,
    last: Option<LinkFrame>,
    hello: Option<String>,
}

impl LinkClient {
    /// Connects to the socket at `path` (the device's, or QEMU's chardev server).
    pub fn connect(path: &Path) -> Result<Self, LinkError> {
        let stream =
            UnixStream::connect(path).map_err(io_error(format!("connecting to {}", path.display())))?;
        Ok(Self::from_stream(stream))
    }

    /// Connects to `path`, waiting up to `timeout` for it to appear and accept (a device or VM
    /// that is still starting).
    pub fn connect_within(path: &Path, timeout: Duration) -> Result<Self, LinkError> {
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => return Ok(Self::from_stream(stream)),
                Err(e)
                    if Instant::now() < deadline
                        && matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) =>
                {
                    // Polls another process that is starting up; nothing to wait on instead.
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(io_error(format!("connecting to {}", path.display()))(e)),
            }
        }
    }

    /// The host side over an already connected stream.
    pub fn from_stream(stream: UnixStream) -> Self {
        LinkClient { stream, lines: LineBuffer::default(), last: None, hello: None }
    }

    /// The last frame received.
    pub fn last_frame(&self) -> Option<&LinkFrame> {
        self.last.as_ref()
    }

    /// The text after `HELLO` of the device's greeting, once received.
    pub fn hello(&self) -> Option<&str> {
        self.hello.as_deref()
    }

    /// The next line from the device, waiting up to `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Result<DeviceLine, LinkError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines.take_line() {
                let line = line.map_err(|reason| malformed("", reason))?;
                let parsed = DeviceLine::parse(&line)?;
                match &parsed {
                    DeviceLine::Frame(f) => self.last = Some((**f).clone()),
                    DeviceLine::Hello(text) => self.hello = Some(text.clone()),
                    _ => {}
                }
                return Ok(parsed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout(timeout));
            }
            self.stream.set_read_timeout(Some(left)).map_err(io_error("setting the read timeout"))?;
            match self.lines.fill(&mut self.stream) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("reading from the device")(e)),
            }
        }
    }

    fn timeout(&self, waited: Duration) -> LinkError {
        LinkError::Timeout { waited, last_caption: self.last.as_ref().map(|f| f.caption.clone()) }
    }

    /// The next frame, skipping other lines, waiting up to `timeout`.
    pub fn next_frame(&mut self, timeout: Duration) -> Result<LinkFrame, LinkError> {
        self.wait_for_frame(timeout, |_| true)
    }

    /// The first frame (from now on) for which `wanted` holds, waiting up to `timeout`.
    pub fn wait_for_frame(
        &mut self,
        timeout: Duration,
        mut wanted: impl FnMut(&LinkFrame) -> bool,
    ) -> Result<LinkFrame, LinkError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Ok(DeviceLine::Frame(frame)) if wanted(&frame) => return Ok(*frame),
                Ok(_) => {}
                Err(LinkError::Timeout { .. }) => return Err(self.timeout(timeout)),
                Err(e) => return Err(e),
            }
        }
    }

    /// The first frame whose caption contains `text`, waiting up to `timeout`.
    pub fn wait_for_caption(&mut self, text: &str, timeout: Duration) -> Result<LinkFrame, LinkError> {
        self.wait_for_frame(timeout, |f| f.caption.contains(text))
    }

    /// Sends one edge; the device dates it on arrival.
    pub fn send_edge(&mut self, button: Button, pressed: bool) -> Result<(), LinkError> {
        let line = format!("EDGE {} {}\n", button.name(), if pressed { "DOWN" } else { "UP" });
        self.send_raw(line.as_bytes())
    }

    /// Sends raw bytes, for testing how the device handles bad input.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.stream.write_all(bytes).map_err(io_error("writing to the device"))
    }

    /// Presses `button` for `hold`: DOWN, wait, UP. The wait is the press itself (the device
    /// dates edges on arrival), so a 3 s hold makes a long press.
    pub fn press(&mut self, button: Button, hold: Duration) -> Result<(), LinkError> {
        self.send_edge(button, true)?;
        std::thread::sleep(hold);
        self.send_edge(button, false)
    }

    /// A second handle that only presses buttons, for a thread other than the one reading frames.
    pub fn sender(&self) -> Result<LinkSender, LinkError> {
        let stream = self.stream.try_clone().map_err(io_error("cloning the link's stream"))?;
        Ok(LinkSender { stream })
    }
}

/// Presses a device's buttons over a link whose frames another thread reads ([`LinkClient::sender`]).
#[derive(Debug)]
pub struct LinkSender {
    stream: UnixStream,
}

impl LinkSender {
    /// Sends one edge; the device dates it on arrival.
    pub fn send_edge(&mut self, button: Button, pressed: bool) -> Result<(), LinkError> {
        let line = format!("EDGE {} {}\n", button.name(), if pressed { "DOWN" } else { "UP" });
        self.stream.write_all(line.as_bytes()).map_err(io_error("writing to the device"))
    }
}

/// The path of a link board, from `link:PATH`.
pub fn link_path(spec: &str) -> Option<PathBuf> {
    spec.strip_prefix("link:").filter(|p| !p.is_empty()).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn pair() -> (LinkDisplay, LinkButtons, LinkClient) {
        let (device, host) = UnixStream::pair().expect("socket pair");
        let (display, buttons) = link_over_stream(device).expect("device side");
        (display, buttons, LinkClient::from_stream(host))
    }

    fn picture(seed: u8) -> Frame {
        let mut pages = [0u8; FRAME_BYTES];
        for (i, b) in pages.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31) ^ seed;
        }
        Frame::from_pages(pages)
    }

    #[test]
    fn captions_survive_escaping() {
        for text in [
            "",
            "home",
            "a b  c",
            "line1\nline2",
            "back\\slash \\n",
            "tab\there\r",
            "bell\x07 del\x7f",
            "₿ 21 sat",
        ] {
            let escaped = escape(text);
            assert!(!escaped.contains('\n') && !escaped.contains('\r'), "{escaped:?}");
            assert_eq!(unescape(&escaped).as_deref(), Ok(text));
        }
        assert_eq!(escape("a\nb\\"), "a\\nb\\\\");
        assert!(unescape("\\q").expect_err("unknown").contains("\\q"));
        assert!(unescape("end\\").expect_err("dangling").contains("dangling"));
        assert!(unescape("\\x4").is_err());
        assert!(unescape("\\xzz").is_err());
    }

    #[test]
    fn device_lines_round_trip() {
        let lines = [
            DeviceLine::Hello("boltbox-link 1".into()),
            DeviceLine::Frame(Box::new(LinkFrame {
                seq: 7,
                frame: picture(3),
                caption: "home\nsynced 100%".into(),
            })),
            DeviceLine::Frame(Box::new(LinkFrame { seq: 8, frame: Frame::blank(), caption: String::new() })),
            DeviceLine::Contrast(0),
            DeviceLine::Power(false),
            DeviceLine::Error("bad \\ line".into()),
        ];
        for line in lines {
            assert_eq!(DeviceLine::parse(&line.encode()).expect("parses"), line);
        }
    }

    #[test]
    fn malformed_device_lines_say_what_is_wrong() {
        let hex = "00".repeat(FRAME_BYTES);
        let cases = [
            ("FRAME x ".to_string() + &hex, "sequence"),
            (format!("FRAME 1 {}", "00".repeat(FRAME_BYTES - 1)), "hex digits"),
            (format!("FRAME 1 zz{}", "00".repeat(FRAME_BYTES - 1)), "not hex"),
            (format!("FRAME 1 {hex} bad\\"), "dangling"),
            ("CONTRAST 256".to_string(), "contrast"),
            ("POWER MAYBE".to_string(), "ON or OFF"),
            ("BLINK".to_string(), "unknown line type"),
            (String::new(), "unknown line type"),
        ];
        for (line, expected) in cases {
            let err = DeviceLine::parse(&line).expect_err(&line);
            assert!(err.to_string().contains(expected), "{line:?}: {err}");
        }
    }

    #[test]
    fn malformed_host_lines_say_what_is_wrong() {
        assert_eq!(parse_host_line("EDGE A DOWN").expect("ok"), (Button::A, true));
        assert_eq!(parse_host_line("EDGE B UP").expect("ok"), (Button::B, false));
        for (line, expected) in [
            ("EDGE C DOWN", "no button"),
            ("EDGE A SIDEWAYS", "no level"),
            ("EDGE A", "EDGE takes"),
            ("EDGE A DOWN NOW", "EDGE takes"),
            ("edge a down", "unknown line type"),
            ("PRESS A", "unknown line type"),
        ] {
            let err = parse_host_line(line).expect_err(line);
            assert!(err.to_string().contains(expected), "{line:?}: {err}");
        }
    }

    #[test]
    fn frames_go_out_and_edges_come_in() {
        let (mut display, mut buttons, mut client) = pair();
        assert_eq!(client.next_line(WAIT).expect("hello"), DeviceLine::Hello("boltbox-link 1".into()));
        display.show(&picture(1), "home\nheight 800").expect("show");
        display.show(&picture(2), "channels").expect("show");
        let first = client.next_frame(WAIT).expect("frame");
        assert_eq!((first.seq, &first.frame, first.caption.as_str()), (1, &picture(1), "home\nheight 800"));
        let second = client.wait_for_caption("channels", WAIT).expect("frame");
        assert_eq!((second.seq, second.frame), (2, picture(2)));
        assert_eq!(client.last_frame().map(|f| f.seq), Some(2));

        display.set_contrast(40).expect("contrast");
        display.set_on(false).expect("off");
        assert_eq!(client.next_line(WAIT).expect("line"), DeviceLine::Contrast(40));
        assert_eq!(client.next_line(WAIT).expect("line"), DeviceLine::Power(false));

        let before = monotonic();
        client.press(Button::B, Duration::ZERO).expect("press");
        let down = buttons.next_edge(WAIT).expect("ok").expect("edge");
        let up = buttons.next_edge(WAIT).expect("ok").expect("edge");
        assert_eq!((down.button, down.pressed, up.button, up.pressed), (Button::B, true, Button::B, false));
        assert!(before <= down.at && down.at <= up.at, "dated on arrival, in order");
        assert_eq!(buttons.next_edge(Duration::ZERO).expect("ok"), None);
    }

    #[test]
    fn bad_host_lines_get_an_error_reply_and_the_link_goes_on() {
        let (_display, mut buttons, mut client) = pair();
        client.next_line(WAIT).expect("hello");
        client.send_raw(b"EDGE Z DOWN\n\n\xe2\x82\n").expect("send");
        client.send_raw(b"EDGE A DOWN\r\n").expect("send");
        let DeviceLine::Error(reply) = client.next_line(WAIT).expect("reply") else {
            panic!("an ERROR line")
        };
        assert!(reply.contains("no button"), "{reply}");
        let edge = buttons.next_edge(WAIT).expect("ok").expect("edge");
        assert_eq!((edge.button, edge.pressed), (Button::A, true));
    }

    #[test]
    fn an_overlong_line_is_an_error_not_a_crash() {
        let (_display, mut buttons, mut client) = pair();
        client.next_line(WAIT).expect("hello");
        client.send_raw("x".repeat(MAX_LINE + 10).as_bytes()).expect("send");
        client.send_raw(b"\nEDGE B DOWN\n").expect("send");
        let DeviceLine::Error(reply) = client.next_line(WAIT).expect("reply") else {
            panic!("an ERROR line")
        };
        assert!(reply.contains("longer than"), "{reply}");
        let edge = buttons.next_edge(WAIT).expect("ok").expect("edge");
        assert_eq!(edge.button, Button::B);
    }

    #[test]
    fn a_closed_host_ends_the_buttons_and_a_closed_device_ends_the_client() {
        let (display, mut buttons, client) = pair();
        drop(client);
        let err = buttons.next_edge(WAIT).expect_err("closed");
        assert!(matches!(err, ButtonError::LinkClosed(_)), "{err}");
        drop(display);

        let (display, buttons, mut client) = pair();
        client.next_line(WAIT).expect("hello");
        drop((display, buttons));
        assert!(matches!(client.next_frame(WAIT), Err(LinkError::Closed)));
    }

    #[test]
    fn waiting_for_a_caption_that_never_comes_times_out_naming_the_last_one() {
        let (mut display, _buttons, mut client) = pair();
        display.show(&picture(0), "alerts: display absent").expect("show");
        let err = client.wait_for_caption("home", Duration::from_millis(200)).expect_err("timeout");
        assert!(err.to_string().contains("alerts: display absent"), "{err}");
    }

    #[test]
    fn the_device_listens_on_a_socket_path_and_greets_each_host_with_the_current_frame() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("board.sock");
        let (mut display, mut buttons) = open_link(&path).expect("listen");
        assert!(matches!(display.health(), DisplayHealth::Absent { .. }), "no host yet");
        display.show(&picture(9), "boot").expect("no host is not an error");

        let mut client = LinkClient::connect(&path).expect("connect");
        let frame = client.next_frame(WAIT).expect("current frame on connect");
        assert_eq!((frame.seq, frame.frame, frame.caption.as_str()), (1, picture(9), "boot"));
        assert_eq!(client.hello(), Some("boltbox-link 1"));
        assert_eq!(display.health(), DisplayHealth::Present);
        client.press(Button::A, Duration::ZERO).expect("press");
        assert_eq!(buttons.next_edge(WAIT).expect("ok").map(|e| e.pressed), Some(true));
        assert_eq!(buttons.next_edge(WAIT).expect("ok").map(|e| e.pressed), Some(false));
        drop(client);

        display.show(&picture(10), "home").expect("show");
        let mut again = LinkClient::connect_within(&path, WAIT).expect("reconnect");
        let frame = again.next_frame(WAIT).expect("frame");
        assert_eq!((frame.seq, frame.caption.as_str()), (2, "home"));
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&path).expect("bind"));
        let (_display, _buttons) = open_link(&path).expect("replaces the stale socket");
        LinkClient::connect(&path).expect("connect").next_line(WAIT).expect("hello");

        let file = dir.path().join("plain");
        std::fs::write(&file, b"").expect("write");
        let err = open_link(&file).expect_err("a regular file");
        assert!(err.to_string().contains("neither a character device nor a socket"), "{err}");
    }

    #[test]
    fn link_paths_come_from_the_board_setting() {
        assert_eq!(link_path("link:/run/board.sock"), Some(PathBuf::from("/run/board.sock")));
        assert_eq!(link_path("link:"), None);
        assert_eq!(link_path("sim"), None);
    }

    mod arbitrary_input {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            /// Whatever a host or a device sends is a line or an error, never a panic.
            #[test]
            fn any_line_parses_or_is_refused(line in ".{0,200}", frame_like in "FRAME [0-9]{0,3} [0-9a-fA-Fz]{0,40} .{0,40}") {
                let _ = parse_host_line(&line);
                let _ = DeviceLine::parse(&line);
                let _ = DeviceLine::parse(&frame_like);
                let _ = unescape(&line);
            }

            /// Any byte stream splits into bounded lines or errors.
            #[test]
            fn any_byte_stream_splits_into_bounded_lines(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..12)) {
                let mut buffer = LineBuffer::default();
                for chunk in chunks {
                    buffer.pending.extend_from_slice(&chunk);
                    while let Some(line) = buffer.take_line() {
                        if let Ok(line) = line {
                            prop_assert!(line.len() <= MAX_LINE);
                        }
                    }
                }
            }
        }
    }
}

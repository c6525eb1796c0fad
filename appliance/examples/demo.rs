//! `make demo`: two boltbox appliances, side by side in the terminal, against a local regtest
//! bitcoind.
//!
//! Each board is a real `boltbox run` process on a `link` board (docs/LINK.md); this program is
//! the host at the other end of both links: it draws their OLED frames next to each other,
//! turns keys into button presses, and drives the nodes through their control sockets the way
//! an operator would with the `boltbox` CLI: fund both, open a channel from alice to bob, then
//! stream payments both ways and mine a block now and then. Ctrl-C (or `q`, or `--for-secs`)
//! asks both boards for a safe stop (SIGTERM, as systemd does) and waits for each to show
//! "stopped / node state saved" (or "safe to unplug" after the shutdown gesture) and exit 0.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use boltbox::control::{Client, Request, socket_path};
use boltbox_board::sim::{KeyHolds, half_blocks, quadrants};
use boltbox_board::{Button, GestureConfig, LinkClient, LinkFrame, LinkSender};
use boltbox_node::{NodeConfig, PaymentSummary, Status};
use boltbox_tests::{BitcoinD, appliance_config, free_port, regtest_config};
use clap::Parser;

/// Two boltbox appliances on simulated boards against a local regtest bitcoind.
#[derive(Debug, Parser)]
struct Args {
    /// The `boltbox` binary (default: the one built next to this example).
    #[arg(long)]
    boltbox: Option<PathBuf>,
    /// Shut both boards down safely after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    for_secs: Option<u64>,
    /// Keep the boards' data dirs and logs (printed at the end).
    #[arg(long)]
    keep: bool,
    /// Exit non-zero unless payments went both ways before the safe shutdown (for `make test`).
    #[arg(long)]
    check: bool,
}

/// Starting ldk-node and its first sync, and the link coming up.
const BOOT: Duration = Duration::from_secs(120);
/// Each board's safe shutdown.
const SHUTDOWN: Duration = Duration::from_secs(90);
/// The pause between two payments: a pace a person can follow on the screens.
const PAYMENT_EVERY: Duration = Duration::from_millis(1500);
/// A block is mined after this many payments, so that the height on the home screens moves.
const PAYMENTS_PER_BLOCK: u64 = 10;
const LOG_LINES: usize = 8;

/// One key's presses: (board index, what to press).
fn key_press(key: char) -> Option<(usize, Press)> {
    Some(match key {
        'a' => (0, Press::Short(Button::A)),
        'b' => (0, Press::Short(Button::B)),
        'A' => (0, Press::Long(Button::A)),
        'B' => (0, Press::Long(Button::B)),
        'c' => (0, Press::Both),
        'j' => (1, Press::Short(Button::A)),
        'k' => (1, Press::Short(Button::B)),
        'J' => (1, Press::Long(Button::A)),
        'K' => (1, Press::Long(Button::B)),
        'm' => (1, Press::Both),
        _ => return None,
    })
}

const KEYS: [&str; 2] = ["a b · A B long · c both", "j k · J K long · m both"];

#[derive(Debug, Clone, Copy)]
enum Press {
    Short(Button),
    Long(Button),
    Both,
}

/// What the main loop waits for.
enum Event {
    Key(char),
    /// A board sent a frame, or the script logged a line.
    Redraw,
}

/// A board: its `boltbox run` process, its link and its control socket.
struct Board {
    alias: &'static str,
    node: NodeConfig,
    child: Child,
    log: PathBuf,
    frame: Arc<Mutex<Option<LinkFrame>>>,
    presses: Sender<Press>,
    exit: Option<ExitStatus>,
}

impl Board {
    fn start(
        boltbox: &Path,
        bitcoind: &BitcoinD,
        dir: &Path,
        alias: &'static str,
        redraw: Sender<Event>,
    ) -> anyhow::Result<Board> {
        let dir = dir.join(alias);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let node = regtest_config(bitcoind, alias, &dir, free_port()?, Vec::new());
        let link = dir.join("link.sock");
        let config = appliance_config(&dir, &node, &format!("board = \"link:{}\"\n", link.display()));
        // A directory stands in for the USB stick, so that hold B backs up (docs/BACKUP.md).
        let sticks = dir.join("usb");
        std::fs::create_dir_all(sticks.join("stick")).context("creating the pretend USB stick")?;
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(&format!("\n[backup]\nsticks = \"{}\"\n", sticks.display()));
        std::fs::write(&config, text)?;
        let log = dir.join("boltbox.log");
        let stderr = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new(boltbox)
                .args(["run", "--config"])
                .arg(&config)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr),
            // Its own process group: the terminal's signals go to the demo, which shuts the
            // boards down in order.
            0,
        )
        .spawn()
        .with_context(|| format!("starting {}", boltbox.display()))?;
        let mut client = LinkClient::connect_within(&link, BOOT)
            .with_context(|| format!("{alias}: connecting to its link board"))?;
        let frame = Arc::new(Mutex::new(None));
        let presses = presser(client.sender()?);
        let latest = Arc::clone(&frame);
        std::thread::spawn(move || {
            while let Ok(next) = client.next_frame(Duration::from_secs(3600)) {
                *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(next);
                if redraw.send(Event::Redraw).is_err() {
                    return;
                }
            }
        });
        Ok(Board { alias, node, child, log, frame, presses, exit: None })
    }

    fn frame(&self) -> Option<LinkFrame> {
        self.frame.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn control(&self) -> PathBuf {
        socket_path(&self.node.data_dir)
    }

    fn sigterm(&self) -> anyhow::Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.child.id());
        Ok(())
    }

    fn exited(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit.is_some()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A thread that plays presses on one board in order, like a finger: a long press holds the
/// button for the long-press time.
fn presser(mut sender: LinkSender) -> Sender<Press> {
    let holds = KeyHolds::for_gestures(&GestureConfig::default());
    let (tx, rx) = mpsc::channel::<Press>();
    std::thread::spawn(move || {
        for press in rx {
            let (buttons, hold): (&[Button], Duration) = match press {
                Press::Short(Button::A) => (&[Button::A], holds.short),
                Press::Short(Button::B) => (&[Button::B], holds.short),
                Press::Long(Button::A) => (&[Button::A], holds.long),
                Press::Long(Button::B) => (&[Button::B], holds.long),
                Press::Both => (&[Button::A, Button::B], holds.both),
            };
            let mut play = || -> Result<(), boltbox_board::LinkError> {
                for &b in buttons {
                    sender.send_edge(b, true)?;
                }
                std::thread::sleep(hold);
                for &b in buttons {
                    sender.send_edge(b, false)?;
                }
                // A finger leaves the button a moment before the next press.
                std::thread::sleep(holds.short);
                Ok(())
            };
            if play().is_err() {
                return;
            }
        }
    });
    tx
}

/// The lines under the boards: what the script did.
#[derive(Clone, Default)]
struct Log {
    lines: Arc<Mutex<Vec<String>>>,
    /// Without a terminal to draw on, the lines are printed as they come.
    print: bool,
}

impl Log {
    fn line(&self, text: impl Into<String>) {
        let text = text.into();
        if self.print {
            println!("{text}");
        }
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(text);
        let excess = lines.len().saturating_sub(LOG_LINES);
        lines.drain(..excess);
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Puts the terminal in key-at-a-time mode without echo or signals (Ctrl-C arrives as a key,
/// so the demo shuts the boards down in order), hides the cursor, and restores both on drop.
struct Terminal {
    original: Option<rustix::termios::Termios>,
}

impl Terminal {
    fn keys() -> anyhow::Result<Terminal> {
        use rustix::termios::{LocalModes, OptionalActions, SpecialCodeIndex, isatty, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        if !isatty(&stdin) {
            return Ok(Terminal { original: None });
        }
        let original = tcgetattr(&stdin).context("reading the terminal mode")?;
        let mut keys = original.clone();
        keys.local_modes -= LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG;
        keys.special_codes[SpecialCodeIndex::VMIN] = 1;
        keys.special_codes[SpecialCodeIndex::VTIME] = 0;
        tcsetattr(&stdin, OptionalActions::Now, &keys).context("setting the terminal mode")?;
        print!("\x1b[?25l\x1b[2J");
        Ok(Terminal { original: Some(original) })
    }

    /// Columns, if standard output is a terminal.
    fn width() -> Option<usize> {
        rustix::termios::tcgetwinsize(std::io::stdout()).ok().map(|w| usize::from(w.ws_col))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(original) = &self.original {
            let _ =
                rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, original);
            print!("\x1b[?25h");
            let _ = std::io::stdout().flush();
        }
    }
}

fn read_keys(events: Sender<Event>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                return;
            }
            for &byte in &buf[..n] {
                if events.send(Event::Key(char::from(byte))).is_err() {
                    return;
                }
            }
        }
    });
}

/// Draws both boards side by side, their screen names, the log and the keys.
fn draw(boards: &[Board], log: &Log, footer: &str) {
    // Full size (two pixels per cell) when the terminal is wide enough for two, else half.
    let wide = Terminal::width().is_some_and(|w| w >= 2 * 128 + 3);
    let panels: Vec<Vec<String>> = boards
        .iter()
        .map(|b| match b.frame() {
            Some(f) if wide => half_blocks(&f.frame),
            Some(f) => quadrants(&f.frame),
            None => vec![String::new(); 32],
        })
        .collect();
    let width = if wide { 128 } else { 64 };
    let mut out = String::from("\x1b[H");
    let mut row = |left: &str, right: &str| {
        out.push_str(&format!("{left:<width$} │ {right:<width$}\x1b[K\n"));
    };
    let titles: Vec<String> =
        boards.iter().zip(KEYS).map(|(b, k)| format!("{} — keys {k}", b.alias)).collect();
    row(&titles[0], &titles[1]);
    for (left, right) in panels[0].iter().zip(&panels[1]) {
        row(left, right);
    }
    let captions: Vec<String> = boards
        .iter()
        .map(|b| b.frame().map(|f| f.caption.lines().collect::<Vec<_>>().join(" · ")).unwrap_or_default())
        .map(|c| c.chars().take(width).collect())
        .collect();
    row(&captions[0], &captions[1]);
    out.push_str("\x1b[K\n");
    let lines = log.lines();
    for i in 0..LOG_LINES {
        out.push_str(lines.get(i).map_or("", String::as_str));
        out.push_str("\x1b[K\n");
    }
    out.push_str(footer);
    out.push_str("\x1b[K\x1b[J");
    print!("{out}");
    let _ = std::io::stdout().flush();
}

fn call(board: &Path, request: Request) -> anyhow::Result<serde_json::Value> {
    Ok(Client::connect(board)?.call(&request)?)
}

fn status(board: &Path) -> anyhow::Result<Status> {
    Ok(serde_json::from_value(call(board, Request::Status)?)?)
}

/// Polls `check` on a board's status until it holds or `timeout` passes.
fn wait_status(
    board: &Path,
    what: &str,
    timeout: Duration,
    stop: &AtomicBool,
    check: impl Fn(&Status) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if stop.load(Ordering::SeqCst) {
            bail!("stopped");
        }
        if let Ok(s) = status(board) {
            if check(&s) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("no {what} within {timeout:?}");
        }
        // Another process's state: nothing to block on but the clock.
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether payment `id` succeeded and how it ended, waiting a while for it to settle.
fn outcome(payer: &Path, id: &str) -> anyhow::Result<(bool, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let payments: Vec<PaymentSummary> = serde_json::from_value(call(payer, Request::Payments)?)?;
        match payments.iter().find(|p| p.id == id) {
            Some(p) if p.status == "succeeded" => {
                return Ok((true, format!("paid, fee {} msat", p.fee_msat.unwrap_or(0))));
            }
            Some(p) if p.status == "failed" => return Ok((false, "failed".into())),
            _ if Instant::now() > deadline => return Ok((false, "still pending".into())),
            // Another process's state: nothing to block on but the clock.
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// What an operator would do: fund, open a channel, pay back and forth.
fn script(
    bitcoind: &BitcoinD,
    sockets: [PathBuf; 2],
    listen: [String; 2],
    log: &Log,
    stop: &AtomicBool,
    paid_each_way: &[AtomicU64; 2],
) -> anyhow::Result<()> {
    let names = ["alice", "bob"];
    let mut ids = Vec::new();
    for (socket, name) in sockets.iter().zip(names) {
        wait_status(socket, &format!("{name} running"), BOOT, stop, |s| s.running)?;
        let s = status(socket)?;
        log.line(format!("{name} is up: node {}", s.node_id.chars().take(16).collect::<String>()));
        ids.push(s.node_id);
        let address = call(socket, Request::NewAddress)?;
        let address = address.as_str().context("an address")?;
        bitcoind.send_to(address, 1_000_000)?;
        log.line(format!("sent 1,000,000 sat to {name}'s {address}"));
    }
    bitcoind.mine(6)?;
    for (socket, name) in sockets.iter().zip(names) {
        call(socket, Request::Sync)?;
        wait_status(socket, &format!("{name}'s funds"), BOOT, stop, |s| {
            s.balances.onchain_spendable_sats > 0
        })?;
    }
    log.line("both funded (6 blocks mined); alice opens a 500,000 sat channel to bob, pushing 200,000");
    let mempool = bitcoind.mempool()?.len();
    call(
        &sockets[0],
        Request::OpenChannel {
            peer: format!("{}@{}", ids[1], listen[1]),
            amount_sats: 500_000,
            push_msat: Some(200_000_000),
            announce: true,
        },
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while bitcoind.mempool()?.len() <= mempool {
        anyhow::ensure!(Instant::now() < deadline, "the funding transaction did not reach the mempool");
        anyhow::ensure!(!stop.load(Ordering::SeqCst), "stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    bitcoind.mine(6)?;
    log.line("funding transaction confirmed (6 blocks)");
    for (socket, name) in sockets.iter().zip(names) {
        call(socket, Request::Sync)?;
        wait_status(socket, &format!("{name}'s channel"), BOOT, stop, |s| {
            s.channels.iter().any(|c| c.usable)
        })?;
    }
    log.line("channel ready: streaming payments both ways");
    let mut paid = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let (payer, payee) = if paid % 2 == 0 { (0, 1) } else { (1, 0) };
        let sats = 1_000 + (paid * 7_919) % 20_000;
        let invoice = call(
            &sockets[payee],
            Request::Invoice { amount_msat: Some(sats * 1000), description: "demo".into(), expiry_secs: 600 },
        )?;
        let invoice = invoice.as_str().context("an invoice")?.to_string();
        let who = format!("{} → {} {sats} sat", names[payer], names[payee]);
        match call(&sockets[payer], Request::Pay { invoice, amount_msat: None }) {
            Ok(id) => {
                let id = id.as_str().context("a payment id")?.to_string();
                let (paid, how) = outcome(&sockets[payer], &id)?;
                if paid {
                    paid_each_way[payer].fetch_add(1, Ordering::SeqCst);
                }
                log.line(format!("{who}: {how}"));
            }
            Err(e) => log.line(format!("{who}: refused: {e}")),
        }
        paid += 1;
        if paid % PAYMENTS_PER_BLOCK == 0 {
            bitcoind.mine(1)?;
            log.line(format!("a block was mined (height {})", bitcoind.height()?));
        }
        std::thread::sleep(PAYMENT_EVERY);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let boltbox = match args.boltbox {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("boltbox"))
            .context("cannot find the boltbox binary; pass --boltbox")?,
    };
    anyhow::ensure!(boltbox.is_file(), "no boltbox binary at {} (cargo build -p boltbox)", boltbox.display());
    println!("starting a regtest bitcoind and two boltbox boards ({})…", boltbox.display());
    let bitcoind = BitcoinD::start()?;
    bitcoind.mine(101)?;
    let dir = tempfile::Builder::new().prefix("boltbox-demo-").tempdir()?;
    let (events, event_rx) = mpsc::channel();
    let mut boards = vec![
        Board::start(&boltbox, &bitcoind, dir.path(), "alice", events.clone())?,
        Board::start(&boltbox, &bitcoind, dir.path(), "bob", events.clone())?,
    ];
    let terminal = Terminal::keys()?;
    read_keys(events.clone());

    let log = Log { print: Terminal::width().is_none(), ..Log::default() };
    let stop = Arc::new(AtomicBool::new(false));
    let paid_each_way = [AtomicU64::new(0), AtomicU64::new(0)];
    let script_thread = {
        let (log, stop, events) = (log.clone(), Arc::clone(&stop), events.clone());
        let sockets = [boards[0].control(), boards[1].control()];
        let listen = [boards[0].node.listen[0].clone(), boards[1].node.listen[0].clone()];
        let (bitcoind, paid_each_way) = (&bitcoind, &paid_each_way);
        move || {
            if let Err(e) = script(bitcoind, sockets, listen, &log, &stop, paid_each_way) {
                if !stop.load(Ordering::SeqCst) {
                    log.line(format!("the demo script stopped: {e:#}"));
                }
            }
            let _ = events.send(Event::Redraw);
        }
    };
    let until = args.for_secs.map(|s| Instant::now() + Duration::from_secs(s));
    let footer = format!("Ctrl-C or q: safe shutdown of both · data and logs: {}", dir.path().display());
    let outcome = std::thread::scope(|scope| {
        scope.spawn(script_thread);
        run(&mut boards, &event_rx, &log, &footer, until, &stop)
    });
    drop(terminal);
    println!();
    let mut all_safe = true;
    for board in &boards {
        let last = board.frame().map(|f| f.caption).unwrap_or_default();
        // SIGTERM ends on "stopped / node state saved"; the shutdown gesture on "safe to unplug".
        let saved = last.contains("node state saved") || last.contains("safe to unplug");
        let safe = board.exit.is_some_and(|s| s.success()) && saved;
        all_safe &= safe;
        let exit = board.exit.map_or("still running".into(), |s| s.to_string());
        println!("{}: {exit}; last screen: {}", board.alias, last.lines().collect::<Vec<_>>().join(" · "));
    }
    let logs: Vec<String> = boards.iter().map(|b| b.log.display().to_string()).collect();
    if args.keep || outcome.is_err() || !all_safe {
        let kept = dir.keep();
        println!("data dirs and logs kept in {} ({})", kept.display(), logs.join(", "));
    }
    outcome?;
    anyhow::ensure!(all_safe, "a board did not shut down safely");
    let paid = paid_each_way.each_ref().map(|n| n.load(Ordering::SeqCst));
    println!("payments that succeeded: alice → bob {}, bob → alice {}", paid[0], paid[1]);
    anyhow::ensure!(!args.check || paid.iter().all(|&n| n > 0), "--check: no payments in one direction");
    println!("both boards shut down safely");
    Ok(())
}

/// The main loop: keys, redraws, then the safe shutdown of both boards.
fn run(
    boards: &mut [Board],
    events: &Receiver<Event>,
    log: &Log,
    footer: &str,
    until: Option<Instant>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut shutdown_at: Option<Instant> = None;
    loop {
        if !log.print {
            draw(boards, log, footer);
        }
        if let Some(started) = shutdown_at {
            if boards.iter_mut().all(Board::exited) {
                return Ok(());
            }
            if started.elapsed() > SHUTDOWN {
                bail!("the boards did not shut down within {SHUTDOWN:?}");
            }
        }
        let quit = match events.recv_timeout(Duration::from_millis(250)) {
            // Ctrl-C (the terminal sends it as a key here), or q.
            Ok(Event::Key('\u{3}' | 'q')) => true,
            Ok(Event::Key(key)) => {
                if let Some((board, press)) = key_press(key) {
                    // The presser ends only with the link; a press then has nowhere to go.
                    let _ = boards[board].presses.send(press);
                }
                false
            }
            Ok(Event::Redraw) | Err(RecvTimeoutError::Timeout) => until.is_some_and(|u| Instant::now() >= u),
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if quit && shutdown_at.is_none() {
            stop.store(true, Ordering::SeqCst);
            log.line("safe shutdown of both boards (SIGTERM, as systemd does)…");
            for board in boards.iter() {
                board.sigterm()?;
            }
            shutdown_at = Some(Instant::now());
        }
    }
}

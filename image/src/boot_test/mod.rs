//! The boot test: the built image, as a user would flash it, booted twice in
//! `qemu-system-aarch64 -M virt` with its own kernel and initramfs, and driven through the
//! link board on a virtio serial port:
//!
//! 1. The `.img.xz` is checked against its `.sha256`, unpacked, and enlarged by 1 GiB (a
//!    bigger card). Its boot partition's own `boltbox.toml` is edited (mtools) as an owner
//!    would: an alias, regtest, the link board, and its default `[node.chain]` (Electrum)
//!    untouched but for the URL, which points at an Electrum server (electrs) on the host
//!    indexing the host's regtest bitcoind (the guest reaches the host's loopback as 10.0.2.2):
//!    the default chain source's code path is the one booted.
//! 2. First boot, with a USB stick (one FAT32 partition, on QEMU's xHCI): the seed reminder
//!    greets the owner (the boot-to-ready time is measured up to it) and B, B skips it; the
//!    home screen shows the alias; A pages through every
//!    screen; the network screen gives the node id. A boltbox node on the host (its peer, on
//!    the host's bitcoind, reaching the guest's port 9735 through QEMU's forwarded port) funds
//!    the guest at the address its funding screen shows (channels, B) and opens a channel to
//!    it; the guest's channel screen shows it usable. Holding B and confirming writes a backup to
//!    the stick, and the OLED says "backup OK — remove the stick" once the image's root helper
//!    unmounted it; holding A and confirming shuts down: "shutting down", then "safe to
//!    unplug", and QEMU exits by itself (the guest powered off).
//! 3. The data partition filled the enlarged disk, and its filesystem with it; the stick holds
//!    one backup, which opens with the seed read from the data partition (mtools and debugfs,
//!    no mounts) and is of this node.
//! 4. Power cuts (`BOLTBOX_POWER_CUTS`, 1 by default, 20 in `make reliability`): QEMU is killed
//!    (SIGKILL: no shutdown, the guest's page cache lost) at a random moment of a boot of the
//!    same disk — during the kernel's boot, the node's start, or with the node running and the
//!    host's node paying it by keysend whenever the channel is usable — and the disk kept. The
//!    boots after a cut whose console shows the root filesystem's journal replayed are counted.
//! 5. Second boot of the same disk, after the last cut: the same node id (a damaged or missing
//!    store would show its own screen, never the home screen); the channel comes back usable,
//!    never force-closed (LDK's own stale-ChannelManager close, rust-lightning#4286, is
//!    recognised on the console and reported apart), every payment in flight at a cut
//!    resolves, more succeed, and the guest's channel and earnings screens show the balance and
//!    the count of the payments the host saw succeed. Then the live mirror (docs/MIRROR.md): B
//!    on the system page, "mirror to sda1?", B; the system page shows it in sync while the
//!    host pays; QEMU is killed with payments in flight.
//! 6. The SD card dies: the card is flashed afresh from the image (an empty data partition),
//!    the owner's seed words (read from the old card) written onto the stick, and the third
//!    boot offers "restore mirror?"; B, B restores it, and the node comes back with the same
//!    id and its channel, checked as in 5 (every payment the host saw succeed is on the
//!    guest's screens); the stick is its mirror again, in sync; a safe shutdown.
//!
//! Every wait has a deadline; on failure the error names the step, the last caption and the
//! tail of the guest's serial console.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use boltbox_board::{Button, LinkClient, LinkFrame};
use boltbox_node::Seed;
use boltbox_node::backup::{Workers, open_backup};
use boltbox_tests::{BitcoinD, Electrs, Rng, free_port};

use crate::disk::{self, Partition};
use crate::process::{output, run, stream};
use crate::{BOOT_LABEL, DATA_LABEL, ImageError, io_error};

mod mirror;
mod peer;

pub use peer::ChannelOutcome;
use peer::{HostPeer, STALE_MANAGER};

/// How much bigger than the image the test's "card" is.
const ENLARGE: u64 = 1024 * 1024 * 1024;
/// Boot to the home screen: kernel, systemd, ldk-node's start and first sync, all emulated.
const BOOT: Duration = Duration::from_secs(900);
/// A screen change after a press.
const SCREEN: Duration = Duration::from_secs(60);
/// Stopping the node, syncing, the last frame.
const SHUTDOWN: Duration = Duration::from_secs(180);
/// From "safe to unplug" until QEMU has exited: systemd stops everything and powers off.
const POWER_OFF: Duration = Duration::from_secs(180);
/// QEMU creating its socket.
const QEMU_START: Duration = Duration::from_secs(30);
/// A short press: longer than the 30 ms debounce, far shorter than the long press.
const SHORT_PRESS: Duration = Duration::from_millis(150);
/// A finger off the button between two presses: longer than the debounce, or the two presses
/// are one.
const BETWEEN_PRESSES: Duration = Duration::from_millis(150);
/// The guest's name for the link port (udev makes /dev/virtio-ports/<name>).
const LINK_PORT: &str = "boltbox.link";
/// The guest's Lightning port (the shipped boltbox.toml's `listen`).
const GUEST_PEER_PORT: u16 = 9735;
/// The alias the test sets in boltbox.toml.
const ALIAS: &str = "qemu-boot-test";
/// The USB stick: one FAT32 partition of this size at 1 MiB (FAT32 needs 65,525 clusters).
const STICK_SIZE: u64 = 64 * 1024 * 1024;
/// Snapshot, seal, write, read back and verify a backup, then unmount the stick, under TCG.
const BACKUP: Duration = Duration::from_secs(300);
/// The screens A pages through, from home back to home.
const PAGES: &[&str] = &["channels", "earnings", "accounts", "network", "system", "alerts", "home"];

/// What the boot test measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// QEMU start to the home screen, per boot.
    pub boot_to_ready: Vec<Duration>,
    /// The node id, the same on both boots.
    pub node_id: String,
    /// The data partition before and after the first boot, in bytes.
    pub data_before: u64,
    /// The data partition after the first boot.
    pub data_after: u64,
    /// Its filesystem after the first boot.
    pub data_fs_after: u64,
    /// How the guest ran: "KVM" or "TCG (...)".
    pub accel: String,
    /// The power cuts.
    pub cuts: Vec<Cut>,
    /// Boots after a cut whose console shows a journal replayed: the root filesystem's, by
    /// e2fsck in the initramfs (the data partition's systemd-fsck writes to the journal, not the
    /// console).
    pub journal_recoveries: usize,
    /// Keysend payments the host's node sent the guest during the cuts.
    pub payments_during_cuts: usize,
    /// How the channel between the host's node and the guest came through the cuts.
    pub channel: ChannelOutcome,
    /// The mirror boot's end.
    pub mirror_cut: mirror::MirrorCut,
    /// How the channel came through the restore from the mirror onto a fresh card.
    pub restored: ChannelOutcome,
}

fn boot_error(what: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Boot { what: what.to_string(), reason: reason.into() }
}

/// Checks `image`'s `.sha256` and unpacks it to `disk`, then makes `disk` [`ENLARGE`] bigger.
fn unpack(image: &Path, disk: &Path) -> Result<(), ImageError> {
    let dir = image.parent().unwrap_or(Path::new("."));
    let name = image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    run(Command::new("sha256sum").args(["--check", "--quiet", &format!("{name}.sha256")]).current_dir(dir))?;
    let out = File::create(disk).map_err(io_error(format!("creating {}", disk.display())))?;
    stream(Command::new("xz").args(["--decompress", "--stdout"]).arg(image).stdout(Stdio::from(out)))?;
    let file =
        File::options().write(true).open(disk).map_err(io_error(format!("opening {}", disk.display())))?;
    let len = file.metadata().map_err(io_error("reading the disk's size"))?.len();
    file.set_len(len + ENLARGE).map_err(io_error("enlarging the disk"))
}

/// `mtools` image spec for the FAT filesystem at `boot`: `disk@@offset`.
fn fat(disk: &Path, boot: &Partition) -> String {
    format!("{}@@{}", disk.display(), boot.offset)
}

/// Reads a text file from the boot partition.
fn read_boot_file(disk: &Path, boot: &Partition, name: &str) -> Result<String, ImageError> {
    output(disk::mtools("mtype").args(["-i", &fat(disk, boot), &format!("::{name}")]), None)
}

/// The kernel and initramfs named by the boot partition's config.txt, copied out to `dir`,
/// and the kernel command line from its cmdline.txt: what the Pi's firmware would boot.
fn boot_files(disk: &Path, boot: &Partition, dir: &Path) -> Result<(PathBuf, PathBuf, String), ImageError> {
    let config = read_boot_file(disk, boot, "config.txt")?;
    let named = |prefix: &str| {
        config
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .ok_or_else(|| ImageError::Invalid(format!("config.txt has no {prefix:?} line:\n{config}")))
    };
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    for (name, to) in [(named("kernel=")?, &kernel), (named("initramfs ")?, &initrd)] {
        run(disk::mtools("mcopy").args(["-n", "-i", &fat(disk, boot), &format!("::{name}")]).arg(to))?;
    }
    let cmdline = read_boot_file(disk, boot, "cmdline.txt")?.trim().to_string();
    Ok((kernel, initrd, cmdline))
}

/// The test's boltbox.toml: the image's own, edited line by line as an owner would: an alias,
/// regtest, the default Electrum chain source pointed at the host's Electrum server on `port`,
/// the link board on the virtio port, no idle dimming (a press on a dim screen only wakes it).
/// Everything else (the power-off request, USB sticks, `[system]`) stays as shipped. Each edit
/// must find its line, so that a change of the template is noticed here.
fn test_config(template: &str, electrum_port: u16) -> Result<String, ImageError> {
    let default_url = format!("url = \"{}\"", boltbox_node::config::MAINNET_ELECTRUM);
    let edits = [
        ("network = ", "network = \"regtest\"".to_string()),
        ("alias = ", format!("alias = \"{ALIAS}\"")),
        (default_url.as_str(), format!("url = \"tcp://10.0.2.2:{electrum_port}\"")),
        ("board = ", format!("board = \"link:/dev/virtio-ports/{LINK_PORT}\"")),
    ];
    let mut lines: Vec<String> = template.lines().map(String::from).collect();
    for (starts, with) in &edits {
        let line = lines.iter_mut().find(|l| l.starts_with(starts)).ok_or_else(|| {
            ImageError::Invalid(format!("the image's boltbox.toml has no line starting {starts:?}"))
        })?;
        *line = with.clone();
    }
    if !template.contains("source = \"electrum\"") {
        return Err(ImageError::Invalid("the image's boltbox.toml does not default to Electrum".into()));
    }
    let mut text = lines.join("\n");
    text.push_str("\n\n[ui]\ndim_after_secs = 3600\nblank_after_secs = 3600\n");
    Ok(text)
}

/// KVM where it can run an aarch64 guest (an aarch64 host with /dev/kvm); TCG otherwise.
fn accel() -> (Vec<&'static str>, String) {
    if cfg!(target_arch = "aarch64") && Path::new("/dev/kvm").exists() {
        (vec!["-accel", "kvm", "-cpu", "host"], "KVM".into())
    } else {
        let why = if Path::new("/dev/kvm").exists() {
            "KVM here runs only host-arch guests"
        } else {
            "no /dev/kvm"
        };
        (vec!["-accel", "tcg,thread=multi", "-cpu", "cortex-a72"], format!("TCG ({why})"))
    }
}

/// What every boot of the test runs on: the disk (the "card"), the USB stick, the image's
/// kernel, initramfs and command line, the work dir, and the host port the guest's Lightning
/// port is forwarded to.
struct Card<'a> {
    disk: &'a Path,
    stick: &'a Path,
    boot: &'a (PathBuf, PathBuf, String),
    dir: &'a Path,
    peer_port: u16,
}

/// A running guest; killed if dropped while it runs.
struct Guest {
    child: Child,
    console: PathBuf,
    qemu_log: PathBuf,
    started: Instant,
}

impl Guest {
    fn start(card: &Card<'_>, run_name: &str) -> Result<Guest, ImageError> {
        let dir = card.dir;
        let socket = dir.join(format!("{run_name}.link.sock"));
        let console = dir.join(format!("{run_name}.console.log"));
        let (accel, _) = accel();
        let (kernel, initrd, cmdline) = card.boot;
        let mut command = Command::new("qemu-system-aarch64");
        command
            .args(["-machine", "virt", "-smp", "2", "-m", "1024", "-nodefaults", "-display", "none"])
            .args(["-no-reboot", "-monitor", "none"])
            .args(&accel)
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            // The image's own command line; its consoles are the Pi's, QEMU's UART is ttyAMA0,
            // and the journal (in RAM, lost at a cut) is copied there for the test to read.
            .args(["-append", &format!("{cmdline} console=ttyAMA0 systemd.journald.forward_to_console=1")])
            .args([
                "-chardev",
                &format!("file,id=console,path={}", console.display()),
                "-serial",
                "chardev:console",
            ])
            .args(["-drive", &format!("file={},format=raw,if=none,id=disk", card.disk.display())])
            .args(["-device", "virtio-blk-pci,drive=disk"])
            // No option ROM: the kernel boots directly, nothing network-boots. The guest's
            // Lightning port is the host's `peer_port` on loopback, for the host's node.
            .args([
                "-netdev",
                &format!("user,id=net,hostfwd=tcp:127.0.0.1:{}-:{GUEST_PEER_PORT}", card.peer_port),
                "-device",
                "virtio-net-pci,netdev=net,romfile=",
            ])
            .args(["-device", "virtio-rng-pci", "-device", "virtio-serial-pci"])
            .args(["-chardev", &format!("socket,id=link,path={},server=on,wait=off", socket.display())])
            .args(["-device", &format!("virtserialport,chardev=link,name={LINK_PORT}")])
            .args(["-device", "qemu-xhci,id=usb"])
            .args(["-drive", &format!("file={},format=raw,if=none,id=stick", card.stick.display())])
            .args(["-device", "usb-storage,bus=usb.0,drive=stick"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let qemu_log = dir.join(format!("{run_name}.qemu.log"));
        let stderr = File::create(&qemu_log).map_err(io_error("creating the QEMU log"))?;
        let child = command.stderr(stderr).spawn().map_err(|e| ImageError::Tool {
            command: "qemu-system-aarch64".into(),
            reason: format!("cannot start: {e} (run `scripts/setup.sh image`)"),
        })?;
        Ok(Guest { child, console, qemu_log, started: Instant::now() })
    }

    fn link(&mut self, socket: &Path) -> Result<LinkClient, ImageError> {
        LinkClient::connect_within(socket, QEMU_START).map_err(|e| self.failed("connecting to the link", e))
    }

    /// The last lines of the guest's serial console.
    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn failed(&mut self, what: &str, reason: impl std::fmt::Display) -> ImageError {
        let exited = match self.child.try_wait() {
            Ok(Some(status)) => {
                let log = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
                format!("; QEMU exited ({status}): {}", log.trim())
            }
            _ => String::new(),
        };
        boot_error(
            what,
            format!(
                "{reason}{exited}\n--- guest console ({}) ---\n{}",
                self.console.display(),
                self.console_tail()
            ),
        )
    }

    /// Waits up to `timeout` for QEMU to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, ImageError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    // QEMU has no exit notification to wait on besides its pid; poll gently.
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(None) => {
                    return Err(
                        self.failed("power-off", format!("QEMU still runs {timeout:?} after the last frame"))
                    );
                }
                Err(e) => return Err(io_error("waiting for QEMU")(e)),
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Best effort: the guest failed a step, the error already says which.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads the guest's frames, each to `seen`, until `done` or `until` (from the guest's start).
fn watch_frames(
    link: &mut LinkClient,
    guest: &Guest,
    until: Duration,
    done: &dyn Fn() -> bool,
    seen: &mut dyn FnMut(&LinkFrame),
) {
    while let Some(left) = until.checked_sub(guest.started.elapsed()) {
        if done() {
            break;
        }
        let asked = Instant::now();
        let wait = left.min(Duration::from_millis(500));
        match link.wait_for_frame(wait, |_| true) {
            Ok(frame) => seen(&frame),
            // A closed link answers at once: poll it at the same pace.
            Err(_) => std::thread::sleep(wait.saturating_sub(asked.elapsed())),
        }
    }
}

/// The screen a frame shows: its caption's first line.
fn screen(frame: &LinkFrame) -> &str {
    frame.caption.lines().next().unwrap_or_default()
}

/// Waits for screen `name` showing `text`.
fn wait_screen(
    guest: &mut Guest,
    link: &mut LinkClient,
    name: &str,
    text: &str,
    timeout: Duration,
) -> Result<LinkFrame, ImageError> {
    link.wait_for_frame(timeout, |f| screen(f) == name && f.caption.contains(text))
        .map_err(|e| guest.failed(&format!("waiting for screen {name:?} showing {text:?}"), e))
}

/// The node id in the network screen's caption (`qr <node id>@<ip>:<port>` or `qr <node id>`).
fn node_id(network: &LinkFrame) -> Option<String> {
    let uri = network.caption.lines().find_map(|l| l.strip_prefix("qr "))?;
    Some(uri.split('@').next().unwrap_or(uri).to_string())
}

/// How a boot begins, before the home screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A new node: the seed reminder, skipped with B, B; a backup by the buttons at the end.
    NewNode,
    /// The node of the card.
    Known,
    /// A fresh card with the mirror stick: "restore mirror?", B, B.
    RestoreMirror,
}

/// How a boot ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Hold A, confirm, "safe to unplug", and QEMU exits by itself.
    Shutdown,
    /// `during` killed QEMU.
    Killed,
}

/// One boot: home screen with the alias, A through every page (the node id from the network
/// screen), then `during` (with the guest on its home screen, which it leaves it on), for a
/// new node hold B and confirm (a backup to the stick, which is then unmounted), then the
/// `end`. Returns (boot-to-ready, node id).
fn boot_once(
    card: &Card<'_>,
    run_name: &str,
    start: Start,
    end: End,
    during: &mut dyn FnMut(&mut Guest, &mut LinkClient, &str) -> Result<(), ImageError>,
) -> Result<(Duration, String), ImageError> {
    let mut guest = Guest::start(card, run_name)?;
    let mut link = guest.link(&card.dir.join(format!("{run_name}.link.sock")))?;
    let backup = start == Start::NewNode;
    let ready = if start == Start::RestoreMirror {
        wait_screen(&mut guest, &mut link, "restore offer", "restore mirror?", BOOT)?;
        let offered = guest.started.elapsed();
        println!("boot-test: {run_name}: \"restore mirror?\" after {:.1} s", offered.as_secs_f64());
        link.press(Button::B, SHORT_PRESS).map_err(|e| guest.failed("pressing B", e))?;
        wait_screen(&mut guest, &mut link, "restore confirm", "B: restore", SCREEN)?;
        std::thread::sleep(BETWEEN_PRESSES);
        link.press(Button::B, SHORT_PRESS).map_err(|e| guest.failed("confirming with B", e))?;
        wait_screen(&mut guest, &mut link, "home", ALIAS, BOOT)?;
        guest.started.elapsed()
    } else if backup {
        // A new node: the owner is asked to write the seed words down first, and skips.
        wait_screen(&mut guest, &mut link, "seed reminder", "write down", BOOT)?;
        let ready = guest.started.elapsed();
        println!(
            "boot-test: {run_name}: the node runs, the seed reminder after {:.1} s",
            ready.as_secs_f64()
        );
        link.press(Button::B, SHORT_PRESS).map_err(|e| guest.failed("pressing B", e))?;
        wait_screen(&mut guest, &mut link, "seed skip", "B: skip", SCREEN)?;
        std::thread::sleep(BETWEEN_PRESSES);
        link.press(Button::B, SHORT_PRESS).map_err(|e| guest.failed("pressing B", e))?;
        wait_screen(&mut guest, &mut link, "home", ALIAS, SCREEN)?;
        ready
    } else {
        wait_screen(&mut guest, &mut link, "home", ALIAS, BOOT)?;
        guest.started.elapsed()
    };
    println!(
        "boot-test: {run_name}: home screen with alias {ALIAS:?} after {:.1} s",
        guest.started.elapsed().as_secs_f64()
    );

    let mut id = None;
    for page in PAGES {
        link.press(Button::A, SHORT_PRESS).map_err(|e| guest.failed("pressing A", e))?;
        let frame = wait_screen(&mut guest, &mut link, page, "", SCREEN)?;
        if *page == "network" {
            id = node_id(&frame);
        }
    }
    let id =
        id.ok_or_else(|| guest.failed("reading the node id", "the network screen shows no `qr` line"))?;
    println!("boot-test: {run_name}: A paged through {}; node id {id}", PAGES.join(", "));
    during(&mut guest, &mut link, &id)?;
    if end == End::Killed {
        guest.child.wait().map_err(io_error("waiting for the killed QEMU"))?;
        return Ok((ready, id));
    }

    if backup {
        link.send_edge(Button::B, true).map_err(|e| guest.failed("holding B", e))?;
        wait_screen(&mut guest, &mut link, "backup confirm", "press B again", SCREEN)?;
        link.send_edge(Button::B, false).map_err(|e| guest.failed("releasing B", e))?;
        std::thread::sleep(BETWEEN_PRESSES);
        link.press(Button::B, SHORT_PRESS).map_err(|e| guest.failed("confirming with B", e))?;
        let done = wait_screen(&mut guest, &mut link, "backup", "backup OK", BACKUP)?;
        // "remove the stick": the image's root helper unmounted it at boltbox's request.
        if !done.caption.contains("remove the stick sda1") {
            return Err(guest.failed("the backup's last screen", format!("it reads {:?}", done.caption)));
        }
        println!(
            "boot-test: {run_name}: hold B + B: {:?}",
            done.caption.lines().collect::<Vec<_>>().join(" · ")
        );
        link.press(Button::A, SHORT_PRESS).map_err(|e| guest.failed("pressing A", e))?;
        wait_screen(&mut guest, &mut link, "home", ALIAS, SCREEN)?;
    }

    link.send_edge(Button::A, true).map_err(|e| guest.failed("holding A", e))?;
    wait_screen(&mut guest, &mut link, "shutdown confirm", "press A again", SCREEN)?;
    link.send_edge(Button::A, false).map_err(|e| guest.failed("releasing A", e))?;
    // A release shows nothing to wait for; the finger simply takes a moment to press again.
    std::thread::sleep(BETWEEN_PRESSES);
    link.press(Button::A, SHORT_PRESS).map_err(|e| guest.failed("confirming with A", e))?;
    wait_screen(&mut guest, &mut link, "shutdown", "shutting", SHUTDOWN)?;
    let last = wait_screen(&mut guest, &mut link, "shutdown", "safe to", SHUTDOWN)?;
    if !last.caption.contains("unplug") {
        return Err(guest.failed("the last frame", format!("it reads {:?}", last.caption)));
    }
    let status = guest.wait_exit(POWER_OFF)?;
    if !status.success() {
        return Err(guest.failed("power-off", format!("QEMU exited with {status}")));
    }
    println!(
        "boot-test: {run_name}: safe shutdown: \"safe to unplug\", QEMU exited by itself after {:.1} s",
        guest.started.elapsed().as_secs_f64()
    );
    Ok((ready, id))
}

/// The boot, root and data partitions of `disk`, checked against what the build makes.
fn partitions(disk: &Path) -> Result<[Partition; 3], ImageError> {
    match disk::read_partitions(disk)?.as_slice() {
        [boot, root, data] => Ok([*boot, *root, *data]),
        other => {
            Err(ImageError::Invalid(format!("{} has {} partitions, not 3", disk.display(), other.len())))
        }
    }
}

/// A USB stick image: an MBR with one empty FAT32 partition (the guest names it sda1).
fn make_stick(dir: &Path) -> Result<(PathBuf, Partition), ImageError> {
    let part = Partition { offset: 1024 * 1024, size: STICK_SIZE, kind: disk::TYPE_FAT32_LBA };
    let fs = dir.join("stick.fat");
    // One sector per cluster: enough clusters for FAT32 on a small stick.
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-s", "1", "-n", "BACKUP", "-C"])
        .arg(&fs)
        .arg((STICK_SIZE / 1024).to_string()))?;
    let stick = dir.join("stick.img");
    disk::assemble(&stick, &[(part, fs.as_path())], 0x5713_c000)?;
    std::fs::remove_file(&fs).map_err(io_error("removing the stick's filesystem file"))?;
    Ok((stick, part))
}

/// After the guest is off, the backup the buttons wrote is on the stick and opens with the
/// seed on the data partition (mtools and debugfs read both without mounting): the node's
/// whole store, for node `id`. Returns (file name, bytes, entries).
fn check_backup(
    stick: &Path,
    part: &Partition,
    disk: &Path,
    data: &Partition,
    dir: &Path,
    id: &str,
) -> Result<(String, usize, usize), ImageError> {
    let stick_fs = fat(stick, part);
    let listing = output(disk::mtools("mdir").args(["-b", "-i", &stick_fs, "::/boltbox-backups"]), None)?;
    let names: Vec<&str> = listing.lines().map(str::trim).filter(|l| l.ends_with(".bbk")).collect();
    let [name] = names[..] else {
        return Err(boot_error(
            "the USB stick",
            format!("not exactly one backup in boltbox-backups: {listing:?}"),
        ));
    };
    let file = dir.join("backup.bbk");
    run(disk::mtools("mcopy").args(["-o", "-i", &stick_fs, name]).arg(&file))?;
    let words = mirror::seed_words(disk, data)?;
    let seed =
        Seed::from_words(&words).map_err(|e| boot_error("the data partition's seed", e.to_string()))?;
    let bytes = std::fs::read(&file).map_err(io_error("reading the backup"))?;
    let size = bytes.len();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .map_err(io_error("starting a runtime to open the backup"))?;
    let opened = open_backup(Arc::new(bytes), &seed, &Workers(runtime.handle().clone()), &mut |_| {});
    runtime.shutdown_timeout(Duration::from_secs(5));
    let contents =
        opened.map_err(|e| boot_error("opening the backup with the node's seed", e.to_string()))?;
    if contents.header.node_id != id || contents.snapshot.entries.is_empty() {
        return Err(boot_error(
            "the backup",
            format!(
                "it is of node {} with {} entries; the node is {id}",
                contents.header.node_id,
                contents.snapshot.entries.len()
            ),
        ));
    }
    std::fs::remove_file(&file).map_err(io_error("removing the copied backup"))?;
    let name = name.rsplit('/').next().unwrap_or(name).to_string();
    Ok((name, size, contents.snapshot.entries.len()))
}

/// Runs the boot test on `image` (a `.img.xz` with its `.sha256` beside it), working in `dir`.
pub fn boot_test(image: &Path, dir: &Path) -> Result<Report, ImageError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io_error(format!("removing {}", dir.display())))?;
    }
    std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    let disk = dir.join("disk.img");
    unpack(image, &disk)?;
    let [boot, _, data] = partitions(&disk)?;
    let label = output(disk::mtools("mlabel").args(["-s", "-i", &fat(&disk, &boot)]), None)?;
    if !label.contains(BOOT_LABEL) {
        return Err(ImageError::Invalid(format!(
            "the boot partition's label is {label:?}, not {BOOT_LABEL}"
        )));
    }
    let boot_files = boot_files(&disk, &boot, dir)?;

    let bitcoind =
        BitcoinD::start().map_err(|e| boot_error("starting the host's regtest bitcoind", e.to_string()))?;
    bitcoind.mine(101).map_err(|e| boot_error("mining on the host's bitcoind", e.to_string()))?;
    let electrs = Electrs::start(&bitcoind)
        .map_err(|e| boot_error("starting the host's Electrum server", e.to_string()))?;
    let config = dir.join("boltbox.toml");
    let shipped = read_boot_file(&disk, &boot, "boltbox.toml")?;
    std::fs::write(&config, test_config(&shipped, electrs.port())?)
        .map_err(io_error("writing the test's boltbox.toml"))?;
    let configure = |disk: &Path| {
        run(disk::mtools("mcopy").args(["-o", "-i", &fat(disk, &boot)]).arg(&config).arg("::boltbox.toml"))
    };
    configure(&disk)?;

    let accel = accel().1;
    println!("boot-test: qemu-system-aarch64 -M virt, {accel}, 2 CPUs, 1 GiB; work dir {}", dir.display());
    let (stick, stick_part) = make_stick(dir)?;
    let peer_port =
        free_port().map_err(|e| boot_error("choosing the guest's forwarded port", e.to_string()))?;
    let card = Card { disk: &disk, stick: &stick, boot: &boot_files, dir, peer_port };
    let mut host = HostPeer::start(&bitcoind, peer_port)?;
    let (first_ready, first_id) =
        boot_once(&card, "boot1", Start::NewNode, End::Shutdown, &mut |guest, link, id| {
            host.open_channel(guest, link, &bitcoind, id)
        })?;
    let (name, size, entries) = check_backup(&stick, &stick_part, &disk, &data, dir, &first_id)?;
    println!(
        "boot-test: the FAT32 stick holds {name} ({size} bytes): it opens with the node's seed from the data partition, {entries} store entries of node {first_id}"
    );

    let [_, _, grown] = partitions(&disk)?;
    let disk_len = std::fs::metadata(&disk).map_err(io_error("reading the disk's size"))?.len();
    let fs = disk::ext4_size(&disk, grown.offset)?;
    // The partition reaches the disk's end (sfdisk keeps at most its 1 MiB alignment grain free)
    // and the filesystem fills it.
    if grown.offset != data.offset
        || disk_len - grown.end() > 1024 * 1024
        || fs + 4 * 1024 * 1024 < grown.size
    {
        return Err(boot_error(
            "growing the data partition",
            format!(
                "{DATA_LABEL} was {} bytes; now partition {} bytes ending {} bytes before the disk's end, filesystem {fs} bytes",
                data.size,
                grown.size,
                disk_len - grown.end()
            ),
        ));
    }
    println!(
        "boot-test: data partition grew from {} MiB to {} MiB (filesystem {} MiB) on a disk of {} MiB",
        data.size >> 20,
        grown.size >> 20,
        fs >> 20,
        disk_len >> 20
    );

    let cuts = std::env::var("BOLTBOX_POWER_CUTS").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    let (cuts, payments_during_cuts) = power_cuts(cuts, first_ready, &card, &host)?;
    let (mut rng, seed) = Rng::from_env("BOLTBOX_MIRROR_CUT_SEED");
    println!("boot-test: the mirror boot, BOLTBOX_MIRROR_CUT_SEED={seed}");
    let mut channel = None;
    let mut mirror_cut = None;
    let (second_ready, second_id) =
        boot_once(&card, "boot2", Start::Known, End::Killed, &mut |guest, link, _| {
            let stale = consoles(dir, cuts.len()).iter().any(|text| text.contains(STALE_MANAGER));
            channel = Some(host.settle_and_check(guest, link, stale)?);
            mirror_cut = Some(mirror::choose_and_cut(guest, link, &host, &mut rng)?);
            Ok(())
        })?;
    let channel = channel.ok_or_else(|| boot_error("second boot", "the channel was not checked"))?;
    let mirror_cut = mirror_cut.ok_or_else(|| boot_error("second boot", "the mirror was not chosen"))?;
    // e2fsck in the initramfs says so on the console of each boot after a cut: the cut boots but the first
    // (it follows boot 1's clean shutdown), and the second boot.
    let journal_recoveries = consoles(dir, cuts.len())
        .iter()
        .filter(|console| console.lines().any(|l| l.contains("recovering journal")))
        .count();
    if second_id != first_id {
        return Err(boot_error("second boot", format!("node id {second_id}, was {first_id}")));
    }

    // The SD card dies: a freshly flashed one, and the owner's words on the mirror stick.
    let words = mirror::seed_words(&disk, &grown)?;
    mirror::put_words_on_stick(&fat(&stick, &stick_part), &words, dir)?;
    drop(words);
    unpack(image, &disk)?;
    configure(&disk)?;
    println!("boot-test: the card flashed afresh (an empty data partition), the seed words on the stick");
    let mut restored = None;
    let (third_ready, third_id) =
        boot_once(&card, "boot3", Start::RestoreMirror, End::Shutdown, &mut |guest, link, _| {
            // LDK's stale-manager close, at this start or already at an earlier one (the channel
            // then stays closed through the mirror boot and the restore).
            let console = std::fs::read_to_string(dir.join("boot3.console.log")).unwrap_or_default();
            let stale = console.contains(STALE_MANAGER) || channel == ChannelOutcome::StaleManagerClose;
            restored = Some(host.settle_and_check(guest, link, stale)?);
            mirror::in_sync_again(guest, link, &host, &mut rng)
        })?;
    let restored = restored.ok_or_else(|| boot_error("third boot", "the channel was not checked"))?;
    if third_id != first_id {
        return Err(boot_error("the restore from the mirror", format!("node id {third_id}, was {first_id}")));
    }
    for file in [&disk, &stick] {
        std::fs::remove_file(file).map_err(io_error(format!("removing {}", file.display())))?;
    }
    Ok(Report {
        boot_to_ready: vec![first_ready, second_ready, third_ready],
        node_id: first_id,
        data_before: data.size,
        data_after: grown.size,
        data_fs_after: fs,
        accel,
        cuts,
        journal_recoveries,
        payments_during_cuts,
        channel,
        mirror_cut,
        restored,
    })
}

/// The consoles of the boots after a cut: every cut boot but the first (it follows boot 1's
/// clean shutdown), and the second boot (after the last cut).
fn consoles(dir: &Path, cuts: usize) -> Vec<String> {
    let after_cuts = (2..=cuts).map(|i| format!("cut{i}")).chain((cuts > 0).then(|| "boot2".into()));
    after_cuts
        .map(|name| std::fs::read_to_string(dir.join(format!("{name}.console.log"))).unwrap_or_default())
        .collect()
}

/// Where in a boot a power cut lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMoment {
    /// At a random moment up to the first boot's time to ready: the kernel, systemd, the
    /// node's start.
    Booting,
    /// Once the host's node has paid the guest in this boot, a random 0–10 s later: payments
    /// in flight.
    Paying,
}

/// How long a cut boot may take to get a payment through (boot, reconnect, reestablish).
const PAYING: Duration = Duration::from_secs(400);

/// Boots the disk `count` times and kills QEMU each time, half of the cuts (at random) while
/// booting and half while the host's node pays the guest, which it does whenever their
/// channel is usable (the moments printed with their seed, `BOLTBOX_POWER_CUT_SEED`); returns
/// when each cut came, its moment and the last screen seen before it, and how many payments
/// the host sent during the cuts.
fn power_cuts(
    count: usize,
    first_ready: Duration,
    card: &Card<'_>,
    host: &HostPeer,
) -> Result<(Vec<Cut>, usize), ImageError> {
    let (mut rng, seed) = Rng::from_env("BOLTBOX_POWER_CUT_SEED");
    println!("boot-test: {count} power cuts, BOLTBOX_POWER_CUT_SEED={seed}");
    let booting = first_ready.as_millis().max(1) as u64;
    let mut cuts = Vec::with_capacity(count);
    let mut payments = 0;
    for i in 1..=count {
        // Once the channel is gone (LDK's stale-manager close) there is nothing to pay over.
        let moment =
            if rng.below(2) == 0 || !host.has_channel() { CutMoment::Booting } else { CutMoment::Paying };
        let delay = Duration::from_millis(match moment {
            CutMoment::Booting => rng.below(booting),
            CutMoment::Paying => rng.below(10_000),
        });
        let run_name = format!("cut{i}");
        let mut guest = Guest::start(card, &run_name)?;
        let mut link = guest.link(&card.dir.join(format!("{run_name}.link.sock")))?;
        let stop = AtomicBool::new(false);
        let sent = AtomicUsize::new(0);
        let mut payer_rng = Rng::new(rng.next_u64());
        let last = std::thread::scope(|scope| {
            scope.spawn(|| host.pay_until(&stop, &sent, usize::MAX, &mut payer_rng));
            let mut last = String::from("(none)");
            let mut frames = |until: Duration, done: &dyn Fn() -> bool| {
                watch_frames(&mut link, &guest, until, done, &mut |frame| last = screen(frame).to_string());
            };
            let cut_at = match moment {
                CutMoment::Booting => delay,
                CutMoment::Paying => {
                    // Or until the channel is closed at this start (LDK's stale-manager close).
                    frames(PAYING, &|| sent.load(Ordering::SeqCst) > 0 || !host.has_channel());
                    guest.started.elapsed() + delay
                }
            };
            frames(cut_at, &|| false);
            let killed = guest.child.kill().map_err(io_error("killing QEMU"));
            stop.store(true, Ordering::SeqCst);
            killed.map(|()| last)
        })?;
        let at = guest.started.elapsed();
        guest.child.wait().map_err(io_error("waiting for the killed QEMU"))?;
        let sent = sent.load(Ordering::SeqCst);
        if moment == CutMoment::Paying && sent == 0 && host.has_channel() {
            return Err(guest.failed(
                &format!("{run_name}: the host's payments"),
                format!("none got through in {} s of the boot", PAYING.as_secs()),
            ));
        }
        println!(
            "boot-test: {run_name}: QEMU killed {:.1} s into the boot ({moment:?}), on the {last:?} screen, after {sent} payments from the host",
            at.as_secs_f64()
        );
        payments += sent;
        cuts.push(Cut { at_secs: at.as_secs_f64(), moment, last_screen: last });
    }
    Ok((cuts, payments))
}

/// One power cut.
#[derive(Debug, Clone)]
pub struct Cut {
    /// Seconds from QEMU's start to the kill.
    pub at_secs: f64,
    /// Where it was meant to land.
    pub moment: CutMoment,
    /// The last screen seen before it.
    pub last_screen: String,
}

impl Report {
    /// A summary for the log.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        for (i, t) in self.boot_to_ready.iter().enumerate() {
            let _ = writeln!(text, "boot {}: boot-to-ready {:.1} s ({})", i + 1, t.as_secs_f64(), self.accel);
        }
        let _ = writeln!(
            text,
            "power cuts: {} ({} while booting, {} while paying; QEMU killed so far into a boot, on that screen: {}), the root filesystem's journal replayed on {} of the boots after them; the node came back with its id",
            self.cuts.len(),
            self.cuts.iter().filter(|c| c.moment == CutMoment::Booting).count(),
            self.cuts.iter().filter(|c| c.moment == CutMoment::Paying).count(),
            self.cuts
                .iter()
                .map(|c| format!("{:.0} s, {}", c.at_secs, c.last_screen))
                .collect::<Vec<_>>()
                .join("; "),
            self.journal_recoveries
        );
        let _ = match &self.channel {
            ChannelOutcome::Kept { payments, sats, failed } => writeln!(
                text,
                "channel: kept through the cuts, no force-close; the host sent {} payments during the cuts; the guest holds all {payments} the host saw succeed ({sats} sat), {failed} failed",
                self.payments_during_cuts
            ),
            ChannelOutcome::StaleManagerClose => writeln!(
                text,
                "channel: force-closed by LDK's stale ChannelManager at a start after a cut (rust-lightning#4286); the host sent {} payments during the cuts",
                self.payments_during_cuts
            ),
        };
        let _ = writeln!(
            text,
            "mirror: the stick chosen on the OLED, {} at the cut {:.0} s into boot 2 after {} payments; restored onto a freshly flashed card by B, B: {}",
            if self.mirror_cut.in_sync { "in sync" } else { "NOT shown in sync" },
            self.mirror_cut.at_secs,
            self.mirror_cut.payments,
            match &self.restored {
                ChannelOutcome::Kept { payments, sats, failed } => format!(
                    "the channel kept, the guest holds all {payments} payments the host saw succeed ({sats} sat), {failed} failed"
                ),
                ChannelOutcome::StaleManagerClose => {
                    "the channel force-closed by LDK's stale ChannelManager at the restored start (rust-lightning#4286)".into()
                }
            }
        );
        let _ = write!(
            text,
            "node id {} on all boots; data partition {} MiB -> {} MiB (filesystem {} MiB)",
            self.node_id,
            self.data_before >> 20,
            self.data_after >> 20,
            self.data_fs_after >> 20
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_config_is_the_shipped_one_with_only_the_owners_edits() {
        let shipped = include_str!("../../boltbox.toml");
        let text = test_config(shipped, 50123).expect("every edit finds its line");
        assert!(text.contains("url = \"tcp://10.0.2.2:50123\""), "{text}");
        assert!(text.contains("source = \"electrum\""), "the default source stays: {text}");
        assert!(text.contains("network = \"regtest\"") && text.contains(ALIAS));
        assert!(!text.contains(boltbox_node::config::MAINNET_ELECTRUM));
        let changed = shipped.lines().zip(text.lines()).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 4, "network, alias, url and board, nothing else");
        assert!(test_config("[node]\n", 1).is_err(), "a template without the lines is noticed");
    }
}

//! The boot test's live mirror (issue 13, docs/MIRROR.md): the USB stick on QEMU's xHCI chosen
//! as the mirror on the OLED, in sync while the host's node pays the guest, QEMU killed with
//! payments in flight; then a freshly flashed card with the stick (and the owner's seed words on
//! it) offers "restore mirror?", and B, B brings the node back with its channel.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use boltbox_board::{Button, LinkClient, LinkFrame};
use boltbox_tests::Rng;

use super::peer::HostPeer;
use super::{Guest, SCREEN, SHORT_PRESS, screen, wait_screen, watch_frames};
use crate::disk::{self, Partition};
use crate::process::{output, run};
use crate::{ImageError, io_error};

/// A resync's snapshot and the first commits after it, written to a FAT stick under TCG.
const IN_SYNC: Duration = Duration::from_secs(400);
/// Payments that got through with the mirror in sync before the cut.
const MIRRORED: usize = 5;
/// How long the host may take to get them through.
const PAYING: Duration = Duration::from_secs(400);
/// At most this many payments while waiting for the mirror (they are there for commits).
const SYNC_PAYMENTS: usize = 20;
/// At most this many more until the cut (about 3 a second for 0–3 s): payments in flight.
const CUT_PAYMENTS: usize = 15;

/// How the mirror boot ended.
#[derive(Debug, Clone)]
pub struct MirrorCut {
    /// Seconds from QEMU's start to the kill.
    pub at_secs: f64,
    /// Keysend payments the host sent in that boot (the channel was usable).
    pub payments: usize,
    /// Whether the system page said "in sync" in its last frame before the cut.
    pub in_sync: bool,
}

/// Whether a frame is the system page showing the mirror in sync.
fn in_sync(frame: &LinkFrame) -> bool {
    screen(frame) == "system" && frame.caption.lines().any(|l| l == "mirror in sync")
}

/// From the home page, A to the system page.
fn to_system_page(guest: &mut Guest, link: &mut LinkClient) -> Result<(), ImageError> {
    for page in ["channels", "earnings", "accounts", "network", "system"] {
        link.press(Button::A, SHORT_PRESS).map_err(|e| guest.failed("pressing A", e))?;
        wait_screen(guest, link, page, "", SCREEN)?;
    }
    Ok(())
}

/// Reads frames until `done` or `until` (from the guest's start), remembering whether the last
/// system page seen showed the mirror in sync.
fn watch(link: &mut LinkClient, guest: &Guest, until: Duration, synced: &mut bool, done: &dyn Fn() -> bool) {
    watch_frames(link, guest, until, done, &mut |frame| {
        if screen(frame) == "system" {
            *synced = in_sync(frame);
        }
    });
}

/// With the guest on its home screen: B on the system page asks "mirror to sda1?" and B
/// chooses the stick; once the system page shows the mirror in sync and the host got
/// [`MIRRORED`] payments through, QEMU is killed 0–3 s later (payments in flight).
pub fn choose_and_cut(
    guest: &mut Guest,
    link: &mut LinkClient,
    host: &HostPeer,
    rng: &mut Rng,
) -> Result<MirrorCut, ImageError> {
    to_system_page(guest, link)?;
    link.press(Button::B, SHORT_PRESS).map_err(|e| guest.failed("pressing B", e))?;
    wait_screen(guest, link, "mirror confirm", "mirror to sda1?", SCREEN)?;
    link.press(Button::B, SHORT_PRESS).map_err(|e| guest.failed("confirming with B", e))?;
    let mut payer_rng = Rng::new(rng.next_u64());
    let delay = Duration::from_millis(rng.below(3_000));
    // Commits come with payments: the mirror's first snapshot is taken at one.
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| host.pay_until(&stop, &AtomicUsize::new(0), SYNC_PAYMENTS, &mut payer_rng));
        let synced = link.wait_for_frame(IN_SYNC, in_sync);
        stop.store(true, Ordering::SeqCst);
        synced
    })
    .map_err(|e| guest.failed("the system page showing the mirror in sync", e))?;
    println!(
        "boot-test: boot2: the stick is the mirror, in sync {:.1} s into the boot",
        guest.started.elapsed().as_secs_f64()
    );
    // Then a stream, cut 0–3 s after its first MIRRORED payments got through.
    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let (payments, synced) = std::thread::scope(|scope| {
        if host.has_channel() {
            scope.spawn(|| host.pay_until(&stop, &sent, MIRRORED + CUT_PAYMENTS, &mut payer_rng));
        }
        let result = (|| {
            let mut synced = true;
            if host.has_channel() {
                let until = guest.started.elapsed() + PAYING;
                watch(link, guest, until, &mut synced, &|| sent.load(Ordering::SeqCst) >= MIRRORED);
                if sent.load(Ordering::SeqCst) < MIRRORED {
                    return Err(guest.failed(
                        "the host's payments with the mirror in sync",
                        format!("fewer than {MIRRORED} in {} s", PAYING.as_secs()),
                    ));
                }
            }
            let cut_at = guest.started.elapsed() + delay;
            watch(link, guest, cut_at, &mut synced, &|| false);
            guest.child.kill().map_err(io_error("killing QEMU"))?;
            Ok(synced)
        })();
        stop.store(true, Ordering::SeqCst);
        result.map(|synced| (sent.load(Ordering::SeqCst), synced))
    })?;
    let at_secs = guest.started.elapsed().as_secs_f64();
    println!(
        "boot-test: boot2: QEMU killed {at_secs:.1} s into the boot, the mirror {}, after {payments} payments from the host",
        if synced { "in sync" } else { "not shown in sync" }
    );
    Ok(MirrorCut { at_secs, payments, in_sync: synced })
}

/// After the restore, with the guest on its home screen: the stick is the mirror again and
/// gets in sync (the host pays meanwhile, for commits); back to the home page.
pub fn in_sync_again(
    guest: &mut Guest,
    link: &mut LinkClient,
    host: &HostPeer,
    rng: &mut Rng,
) -> Result<(), ImageError> {
    to_system_page(guest, link)?;
    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let mut payer_rng = Rng::new(rng.next_u64());
    std::thread::scope(|scope| {
        scope.spawn(|| host.pay_until(&stop, &sent, SYNC_PAYMENTS, &mut payer_rng));
        let synced = link.wait_for_frame(IN_SYNC, in_sync);
        stop.store(true, Ordering::SeqCst);
        synced
    })
    .map_err(|e| guest.failed("the restored node's mirror in sync on the same stick", e))?;
    for page in ["alerts", "home"] {
        link.press(Button::A, SHORT_PRESS).map_err(|e| guest.failed("pressing A", e))?;
        wait_screen(guest, link, page, "", SCREEN)?;
    }
    println!("boot-test: boot3: the stick is the restored node's mirror again, in sync");
    Ok(())
}

/// The node's seed words, read from the card's data partition at `data` (debugfs, no mount).
pub fn seed_words(disk: &Path, data: &Partition) -> Result<String, ImageError> {
    output(
        Command::new("debugfs").args(["-R", "cat /seed.words"]).arg(format!(
            "{}?offset={}",
            disk.display(),
            data.offset
        )),
        None,
    )
}

/// Writes `words` into `boltbox-backups/restore.words` on the FAT stick, as the owner does for
/// a restore onto a fresh card (docs/BACKUP.md); the host's copy is private and removed.
pub fn put_words_on_stick(stick_fs: &str, words: &str, dir: &Path) -> Result<(), ImageError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = dir.join("restore.words");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .map_err(io_error("writing the seed words for the stick"))?;
    out.write_all(words.as_bytes()).map_err(io_error("writing the seed words for the stick"))?;
    drop(out);
    let copied = run(disk::mtools("mcopy")
        .args(["-o", "-i", stick_fs])
        .arg(&file)
        .arg("::/boltbox-backups/restore.words"));
    std::fs::remove_file(&file).map_err(io_error("removing the host's copy of the seed words"))?;
    copied
}

//! Screens that are not status pages: seed warning and words, shutdown, confirmations, backup,
//! boot and the config error.

use boltbox_board::PanelSize;

use super::draw::{
    Align, BIG, BODY, Canvas, H, MEDIUM, SMALL, W, bytes, clip, fit, short_duration, wrap_lines,
};
use super::{BackupProgress, Rendered, ShutdownPhase, StateSource};

/// Seed words on one page: four lines of 13 px text below the title bar.
pub const SEED_WORDS_PER_PAGE: usize = 4;

/// How many pages `words` seed words take.
pub fn seed_pages(words: usize) -> usize {
    words.div_ceil(SEED_WORDS_PER_PAGE).max(1)
}

/// The warning before the seed words are shown.
pub fn seed_warning() -> Rendered {
    let mut c = Canvas::new("seed warning");
    c.header("! SEED WORDS", "");
    c.text_in("Anyone who sees these", BODY, 0, W, 12, Align::Left);
    c.text_in("words can take your", BODY, 0, W, 25, Align::Left);
    c.text_in("funds. Look alone.", BODY, 0, W, 38, Align::Left);
    c.text_in("B: show", BODY, 0, W, 51, Align::Left);
    c.text_in("A: leave", BODY, 0, W, 51, Align::Right);
    c.done()
}

/// Page `page` (0-based, wraps) of the seed words, numbered from 1. The caption names the page
/// but not the words: captions travel to the link board's host and may be logged, the words
/// must only ever be on the glass.
pub fn seed_page<S: AsRef<str>>(words: &[S], page: usize) -> Rendered {
    let pages = seed_pages(words.len());
    let page = page % pages;
    let mut c = Canvas::new("seed words");
    c.header(&format!("seed words {}/{pages}", page + 1), "");
    let first = page * SEED_WORDS_PER_PAGE;
    for (i, word) in words.iter().enumerate().skip(first).take(SEED_WORDS_PER_PAGE) {
        let y = 13 + 13 * (i - first) as i32;
        c.text_in_unrecorded(&format!("{:>2}", i + 1), BODY, 0, y);
        c.text_in_unrecorded(word.as_ref(), MEDIUM, 22, y);
    }
    c.note(format!(
        "{} words on this page (not captioned)",
        words.len().saturating_sub(first).min(SEED_WORDS_PER_PAGE)
    ));
    c.done()
}

/// The seed words could not be read (the caller had none to give).
pub fn seed_unavailable() -> Rendered {
    let mut c = Canvas::new("seed words");
    c.header("seed words", "");
    c.text("not available", MEDIUM, 20, Align::Center);
    c.text("A: leave", BODY, 50, Align::Center);
    c.done()
}

/// Shutting down, then the last frame, which stays on the OLED after power-off. On a 128x32
/// `panel` each fits its 32 rows: a last frame is never paged, so it must be whole.
pub fn shutdown(phase: ShutdownPhase, panel: PanelSize) -> Rendered {
    let mut c = Canvas::new("shutdown");
    let (first, second, small) = match phase {
        ShutdownPhase::InProgress => ("shutting", "down...", "saving node state"),
        ShutdownPhase::NothingToSave => ("shutting", "down...", "no node running"),
        ShutdownPhase::Stopped => ("stopped", "", "node state saved"),
        ShutdownPhase::SafeToUnplug => ("safe to", "unplug", "boltbox is off"),
    };
    if panel.rows() >= H as usize {
        if second.is_empty() {
            c.text(first, BIG, 16, Align::Center);
        } else {
            c.text(first, BIG, 6, Align::Center);
            c.text(second, BIG, 26, Align::Center);
        }
        c.text(small, SMALL, 52, Align::Center);
    } else {
        let headline = if second.is_empty() { first.to_string() } else { format!("{first} {second}") };
        c.text(&headline, fit(&headline, W, &[MEDIUM, BODY]), 3, Align::Center);
        c.text(small, SMALL, 20, Align::Center);
    }
    c.done()
}

pub(crate) fn confirm(name: &str, title: &str, lines: [&str; 2], cancel: &str) -> Rendered {
    let mut c = Canvas::new(name);
    c.header(title, "");
    c.text(lines[0], MEDIUM, 15, Align::Center);
    c.text(lines[1], MEDIUM, 30, Align::Center);
    c.text(cancel, BODY, 51, Align::Center);
    c.done()
}

/// After A was held: a second press of A shuts down, B cancels.
pub fn shutdown_confirm() -> Rendered {
    confirm("shutdown confirm", "hold done: shut down?", ["press A again", "to shut down"], "B: cancel")
}

/// After B was held: a second press of B starts the backup, A cancels.
pub fn backup_confirm() -> Rendered {
    confirm("backup confirm", "hold done: back up?", ["press B again", "to back up"], "A: cancel")
}

/// The service asks whether `stick` (its name) is to be the live mirror: B yes, A no. When no
/// stick can be chosen, `stick` says why and either button goes back.
pub fn mirror_confirm(stick: &Result<String, String>) -> Rendered {
    match stick {
        Ok(name) => {
            let mut c = Canvas::new("mirror confirm");
            c.header("live mirror", "");
            c.text(&format!("mirror to {}?", clip(name, 10)), MEDIUM, 15, Align::Center);
            c.text("keep it plugged in", BODY, 33, Align::Center);
            c.text("B: yes  A: no", BODY, 51, Align::Center);
            c.done()
        }
        Err(why) => {
            let mut c = Canvas::new("mirror unavailable");
            c.header("live mirror", "");
            // A line apart by the font's whole cell: the reason can be any text, and glyphs that
            // ink a cell's first and last rows would join overlapping lines into one band too
            // tall for a 128x32 panel.
            for (i, line) in wrap_lines(why, 21, 3).iter().enumerate() {
                c.text(line, BODY, 14 + 13 * i32::try_from(i).unwrap_or(0), Align::Center);
            }
            c.text("any button: back", BODY, 53, Align::Center);
            c.done()
        }
    }
}

/// First start with an empty data dir and a backup (or the node's live mirror) on a USB stick:
/// which node, how old (for a mirror: when it was last written, in sync), and what the buttons
/// do.
/// Without the seed words on the stick (`words` false) it says so.
pub fn restore_offer(backup: &super::BackupFacts, words: bool) -> Rendered {
    let mut c = Canvas::new("restore offer");
    let source = backup.source;
    c.header(
        match source {
            StateSource::Backup => "restore backup?",
            StateSource::Mirror => "restore mirror?",
            StateSource::Vss => "restore from VSS?",
        },
        "",
    );
    c.text(&format!("node {}", backup.node_id8), BODY, 12, Align::Center);
    let age = short_duration(backup.age);
    c.text(
        // A mirror on offer is current (one that fell behind is refused): it was in sync
        // when its last commit was written.
        &match source {
            StateSource::Backup => format!("{age} old"),
            StateSource::Mirror => format!("in sync {age} ago"),
            StateSource::Vss => format!("written {age} ago"),
        },
        BODY,
        23,
        Align::Center,
    );
    let commit = super::thousands(backup.commit);
    c.text(
        // A stick's mirror names its snapshot's commit; its log goes further.
        &if source == StateSource::Mirror { format!("commit {commit}+") } else { format!("commit {commit}") },
        BODY,
        34,
        Align::Center,
    );
    let action = if words { "B: restore" } else { "no restore.words" };
    c.text(action, SMALL, 45, Align::Center);
    c.text("hold B: new node", SMALL, 54, Align::Center);
    c.done()
}

/// Before a restore: channels that changed since the backup will be force-closed by their peers.
pub fn restore_confirm() -> Rendered {
    confirm("restore confirm", "newer channels get", ["force-closed!", "B: restore"], "A: back")
}

/// A restore in progress, or why it failed.
pub fn restore_progress(failed: Option<&str>) -> Rendered {
    let mut c = Canvas::new("restore");
    match failed {
        None => {
            c.header("restore", "");
            c.text("restoring", BIG, 14, Align::Center);
            c.text("keep the stick in", SMALL, 50, Align::Center);
        }
        Some(reason) => failure(&mut c, "restore failed", reason),
    }
    c.done()
}

/// A failure's body: the title, the reason on up to three lines, and how to go back.
fn failure(c: &mut Canvas, title: &str, reason: &str) {
    c.header(title, "");
    for (i, line) in wrap_lines(reason, 21, 3).iter().enumerate() {
        c.text_in(line, BODY, 0, W, 13 + 13 * i as i32, Align::Left);
    }
    c.text_in("A: back", SMALL, 0, W, 54, Align::Right);
}

/// The backup gesture before the backup feature exists.
pub fn backup_unavailable() -> Rendered {
    let mut c = Canvas::new("backup unavailable");
    c.header("backup", "");
    c.text("not available", MEDIUM, 15, Align::Center);
    c.text("yet", MEDIUM, 30, Align::Center);
    c.text("any button: back", BODY, 51, Align::Center);
    c.done()
}

/// A backup's progress or result.
pub fn backup(progress: &BackupProgress) -> Rendered {
    let mut c = Canvas::new("backup");
    match progress {
        BackupProgress::Running { percent, stick } => {
            let percent = (*percent).min(100);
            c.header("backup", "");
            c.text_in(&format!("{percent}%"), BIG, 0, 44, 15, Align::Left);
            c.bar(48, 17, W - 49, 16, f64::from(percent) / 100.0, &format!("backup {percent}%"));
            let to = stick.as_deref().map_or_else(|| "USB".to_string(), |s| clip(s, 10));
            c.text(&format!("writing to {to}"), BODY, 38, Align::Center);
            c.text("keep the stick in", SMALL, 53, Align::Center);
        }
        BackupProgress::Succeeded { bytes: size, took, stick, at, ejected, mirror } => {
            c.header("backup", at);
            c.text("backup OK", BIG, 12, Align::Center);
            c.text(&format!("{} in {}", bytes(*size), short_duration(*took)), BODY, 33, Align::Center);
            // Not unmounted: the file and directory are synced, so pulling the stick loses
            // nothing; the filesystem may only be marked as not cleanly unmounted.
            let last = if *mirror {
                "mirror: keep it in".to_string()
            } else if !*ejected {
                "synced; eject failed".to_string()
            } else if stick.chars().count() <= 4 {
                format!("remove the stick {stick}")
            } else {
                format!("remove stick {}", clip(stick, 8))
            };
            c.text(&last, SMALL, 53, Align::Center);
        }
        BackupProgress::Failed { reason } => failure(&mut c, "backup failed", reason),
    }
    c.done()
}

/// The first frame after power-on, before the node reports anything.
pub fn boot(version: &str) -> Rendered {
    let mut c = Canvas::new("boot");
    c.text("boltbox", BIG, 10, Align::Center);
    c.text("starting", BODY, 34, Align::Center);
    c.text(&format!("v{version}"), SMALL, 52, Align::Center);
    c.done()
}

/// A configuration the node cannot start with: the field and the reason, wrapped, so that the
/// user can fix `boltbox.toml` without a console. It is the last frame (the service exits), so
/// on a 128x32 `panel` it fits 32 rows: the field and two lines of the reason, no title bar.
pub fn config_error(field: &str, reason: &str, panel: PanelSize) -> Rendered {
    let mut c = Canvas::new("config error");
    if panel.rows() >= H as usize {
        c.header("config error", "");
        c.text_in(&clip(field, 21), BODY, 0, W, 12, Align::Left);
        for (i, line) in wrap_lines(reason, 21, 4).iter().enumerate() {
            c.text_in(line, SMALL, 0, W, 25 + 10 * i as i32, Align::Left);
        }
    } else {
        c.text_in(&clip(&format!("bad {field}"), 21), SMALL, 0, W, 0, Align::Left);
        for (i, line) in wrap_lines(reason, 21, 2).iter().enumerate() {
            c.text_in(line, SMALL, 0, W, 11 + 10 * i as i32, Align::Left);
        }
    }
    c.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_pages_hold_four_words() {
        assert_eq!(seed_pages(24), 6);
        assert_eq!(seed_pages(12), 3);
        assert_eq!(seed_pages(13), 4);
        assert_eq!(seed_pages(0), 1);
    }

    #[test]
    fn a_seed_page_wraps_and_numbers_words_from_one() {
        let words: Vec<String> = (1..=24).map(|i| format!("w{i}")).collect();
        let last = seed_page(&words, 5);
        assert_eq!(seed_page(&words, 11), last);
        assert!(last.caption.contains("seed words 6/6"));
        assert!(!last.caption.contains("w24"));
        assert_ne!(seed_page(&words, 0).frame, last.frame);
    }

    #[test]
    fn a_long_config_error_is_wrapped_and_marked_as_cut() {
        let reason = "word ".repeat(40);
        let screen = config_error("node.alias", &reason, PanelSize::Size128x64);
        let lines: Vec<&str> = screen.caption.lines().collect();
        assert_eq!(lines[..3], ["config error", "config error", "node.alias"]);
        assert_eq!(lines.len(), 3 + 4);
        assert!(lines[6].ends_with("..."), "{lines:?}");
        assert!(lines.iter().all(|l| l.chars().count() <= 21));
    }

    #[test]
    fn backup_progress_is_clamped_to_100() {
        let screen = backup(&BackupProgress::Running { percent: 250, stick: None });
        assert!(screen.caption.contains("backup 100%"), "{}", screen.caption);
    }
}

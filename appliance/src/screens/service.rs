//! Screens of a service whose node is not simply running: what it waits for, a store that needs
//! the owner, starting on an empty store, the seed reminder, a node that stopped.

use std::time::Duration;

use super::draw::{Align, BODY, Canvas, MEDIUM, SMALL, W, short_duration, wrap_lines};
use super::{Rendered, dialogs};

/// What the service waits for, and why, for the home page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// What it waits for, for the title bar: "network", "chain source", "the clock"...
    pub what: String,
    /// Why, in words the owner can act on (wrapped on up to three lines).
    pub reason: String,
    /// When the next attempt is, if one is scheduled.
    pub retry_in: Option<Duration>,
}

/// The home page while the service waits (or starts: `what` "node starting").
pub fn waiting(w: &Waiting) -> Rendered {
    let mut c = Canvas::new("waiting");
    c.header(&super::clip(&format!("wait: {}", w.what), 20), "");
    for (i, line) in wrap_lines(&w.reason, 21, 3).iter().enumerate() {
        c.text_in(line, BODY, 0, W, 12 + 13 * i as i32, Align::Left);
    }
    let retry = match w.retry_in {
        Some(d) if d.as_secs() == 0 => "retrying".to_string(),
        Some(d) => format!("retry {}", short_duration(d)),
        None => String::new(),
    };
    c.text_in(&retry, SMALL, 0, W, 54, Align::Left);
    c.text_in("A: pages", SMALL, 0, W, 54, Align::Right);
    c.done()
}

/// Where a state on offer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    /// A backup file on a stick.
    Backup,
    /// The node's live mirror on a stick.
    Mirror,
    /// The node's remote mirror on VSS.
    Vss,
}

/// A state of this node on offer (a stick's backup or mirror, or VSS), for a store choice or
/// the restore offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    /// The first eight hex digits of its node id.
    pub node_id8: String,
    /// How old it is (for a mirror: since it was last written).
    pub age: Duration,
    /// Its commit counter (for a stick's mirror: its snapshot's; the log goes further).
    pub commit: u64,
    /// Where it is.
    pub source: StateSource,
}

/// A data dir that needs the owner (a missing, empty or damaged store, and others), with what
/// the buttons can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreChoice {
    /// The headline: "node store missing".
    pub headline: String,
    /// The whole story (wrapped on up to two lines).
    pub reason: String,
    /// A backup of this node that B restores, if a stick holds one.
    pub backup: Option<BackupFacts>,
    /// Whether holding B may start the node on an empty store.
    pub start_empty: bool,
}

/// The home page while the data dir needs the owner.
pub fn store_choice(s: &StoreChoice) -> Rendered {
    let mut c = Canvas::new("store");
    c.header(&super::clip(&s.headline, 20), "");
    for (i, line) in wrap_lines(&s.reason, 21, 2).iter().enumerate() {
        c.text_in(line, BODY, 0, W, 12 + 13 * i as i32, Align::Left);
    }
    let backup = match &s.backup {
        Some(b) if b.source == StateSource::Mirror => "B: restore the mirror".to_string(),
        Some(b) if b.source == StateSource::Vss => "B: restore from VSS".to_string(),
        Some(b) => format!("B: restore, {} old", short_duration(b.age)),
        None if s.start_empty => "no backup on a stick".to_string(),
        None => String::new(),
    };
    c.text_in(&super::clip(&backup, 21), SMALL, 0, W, 40, Align::Left);
    if s.start_empty {
        c.text_in("hold B: start empty", SMALL, 0, W, 52, Align::Left);
    }
    c.done()
}

/// Before the node starts on an empty store (or a new node is made over a backup on a stick):
/// its old channels are unknown to it, and their peers will force-close them.
pub fn empty_confirm(new_node: bool) -> Rendered {
    if new_node {
        dialogs::confirm(
            "empty confirm",
            "a new node instead?",
            ["the backup is", "not restored"],
            "B: new  A: back",
        )
    } else {
        dialogs::confirm(
            "empty confirm",
            "start EMPTY store?",
            ["lost channels", "force-closed"],
            "B: start  A: back",
        )
    }
}

/// The home page until the owner has seen the seed words once (or skipped them).
pub fn seed_reminder() -> Rendered {
    let mut c = Canvas::new("seed reminder");
    c.header("write down the seed", "");
    c.text_in("24 words bring this", BODY, 0, W, 12, Align::Left);
    c.text_in("node back if the", BODY, 0, W, 25, Align::Left);
    c.text_in("card dies.", BODY, 0, W, 38, Align::Left);
    c.text_in("hold A+B", SMALL, 0, W, 54, Align::Left);
    c.text_in("B: skip", SMALL, 0, W, 54, Align::Right);
    c.done()
}

/// Before the reminder is skipped for good.
pub fn seed_skip_confirm() -> Rendered {
    dialogs::confirm("seed skip", "skip the seed words?", ["no reminder", "from now on"], "B: skip  A: back")
}

/// The last frame when the node could not save its state on the way down: not "safe to unplug".
pub fn not_saved(reason: &str) -> Rendered {
    restart_with_reason("not saved", "NOT saved", reason)
}

/// The last frame when the service must start again in a fresh process (systemd restarts it).
pub fn restarting(reason: &str) -> Rendered {
    restart_with_reason("restarting", "restarting", reason)
}

/// A last frame before systemd starts the service again: `header`, the reason wrapped to three
/// lines, and the promise that boltbox restarts.
fn restart_with_reason(name: &str, header: &str, reason: &str) -> Rendered {
    let mut c = Canvas::new(name);
    c.header(header, "");
    for (i, line) in wrap_lines(reason, 21, 3).iter().enumerate() {
        c.text_in(line, BODY, 0, W, 12 + 13 * i as i32, Align::Left);
    }
    c.text("boltbox restarts", SMALL, 54, Align::Center);
    c.done()
}

/// The home page while ldk-node starts.
pub fn starting(alias: &str) -> Rendered {
    let mut c = Canvas::new("starting");
    c.header(&super::clip(alias, 20), "");
    c.text("starting", MEDIUM, 18, Align::Center);
    c.text("the node", MEDIUM, 32, Align::Center);
    c.text("A: pages", SMALL, 54, Align::Right);
    c.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_says_what_why_and_when() {
        let w = Waiting {
            what: "chain source".into(),
            reason: "Electrum server refused the connection (127.0.0.1:60401)".into(),
            retry_in: Some(Duration::from_secs(8)),
        };
        let screen = waiting(&w);
        let lines: Vec<&str> = screen.caption.lines().collect();
        assert_eq!(lines[..2], ["waiting", "wait: chain source"]);
        assert!(screen.caption.contains("Electrum server"), "{}", screen.caption);
        assert!(screen.caption.contains("retry 8 s"), "{}", screen.caption);
        assert!(lines.iter().all(|l| l.chars().count() <= 21), "{lines:?}");
    }

    #[test]
    fn a_store_choice_offers_only_what_is_allowed() {
        let mut s = StoreChoice {
            headline: "node store missing".into(),
            reason: "restore a backup or start empty".into(),
            backup: None,
            start_empty: true,
        };
        let screen = store_choice(&s);
        assert!(screen.caption.contains("hold B: start empty") && !screen.caption.contains("B: restore"));
        s.backup = Some(BackupFacts {
            node_id8: "02abcdef".into(),
            age: Duration::from_secs(7200),
            commit: 1234,
            source: StateSource::Backup,
        });
        let screen = store_choice(&s);
        assert!(screen.caption.contains("B: restore, 2 h old"), "{}", screen.caption);
        s.start_empty = false;
        s.backup = None;
        let screen = store_choice(&s);
        assert!(!screen.caption.contains("B:"), "nothing to press: {}", screen.caption);
    }
}

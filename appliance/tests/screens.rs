//! Screen goldens: every screen, rendered for the sample statuses (a syncing node, a synced node
//! with three channels and alerts, a new empty node), must match its PNG in tests/goldens/
//! pixel for pixel.
//!
//! `BOLTBOX_UPDATE_GOLDENS=1 cargo test -p boltbox --test screens` writes the goldens instead
//! (look at them before committing). On a mismatch the actual frame is written next to the
//! golden as `<name>.png.new` (gitignored) and both are printed as text.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use boltbox::screens::samples::{self, render_all};
use boltbox_board::Frame;

fn goldens_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("goldens")
}

fn updating() -> bool {
    std::env::var("BOLTBOX_UPDATE_GOLDENS").is_ok_and(|v| v == "1")
}

#[test]
fn the_sample_statuses_are_what_the_goldens_claim() {
    let syncing = samples::syncing();
    assert!(syncing.sync.syncing && syncing.sync.progress().is_some_and(|p| p < 1.0));
    let synced = samples::synced();
    assert!(!synced.sync.syncing);
    assert_eq!(synced.channels.len(), 3);
    assert!(!synced.alerts.is_empty());
    let fresh = samples::fresh();
    assert!(fresh.channels.is_empty() && fresh.alerts.is_empty() && fresh.balances.lightning_sats == 0);
}

#[test]
fn every_screen_matches_its_golden() {
    let dir = goldens_dir();
    let update = updating();
    if update {
        std::fs::create_dir_all(&dir).expect("create goldens dir");
    }
    let mut failures = Vec::new();
    let mut names = BTreeSet::new();
    for (name, screen) in render_all() {
        assert!(names.insert(name.clone()), "two screens are called {name}");
        let path = dir.join(format!("{name}.png"));
        let new_path = dir.join(format!("{name}.png.new"));
        if update {
            std::fs::write(&path, screen.frame.to_png(1).expect("encode")).expect("write golden");
            let _ = std::fs::remove_file(&new_path);
            println!("BOLTBOX_UPDATE_GOLDENS=1: wrote {}", path.display());
            continue;
        }
        let golden = match std::fs::read(&path) {
            Ok(bytes) => Frame::from_png(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            Err(e) => {
                failures.push(format!("{name}: no golden at {} ({e})", path.display()));
                continue;
            }
        };
        if golden == screen.frame {
            let _ = std::fs::remove_file(&new_path);
        } else {
            std::fs::write(&new_path, screen.frame.to_png(1).expect("encode")).expect("write .png.new");
            println!(
                "{name}: differs from its golden; actual written to {}\n--- golden\n{}--- actual\n{}",
                new_path.display(),
                golden.to_ascii(),
                screen.frame.to_ascii()
            );
            failures.push(format!("{name}: differs from {}", path.display()));
        }
    }
    if update {
        println!("goldens updated in {}: review them before committing", dir.display());
        return;
    }
    // A golden that no screen renders any more is a screen that was lost.
    let on_disk = std::fs::read_dir(&dir).expect("read goldens dir");
    for entry in on_disk.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = file.strip_suffix(".png")
            && !names.contains(stem)
        {
            failures.push(format!("{file}: golden of a screen that is not rendered any more"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} screen(s) do not match (set BOLTBOX_UPDATE_GOLDENS=1 to accept the new pictures):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn captions_name_the_screen_and_carry_its_text() {
    for (name, screen) in render_all() {
        let first = screen.caption.lines().next().unwrap_or_default();
        assert!(!first.is_empty(), "{name}: caption without a screen name");
        assert!(screen.frame.lit_pixels() > 0, "{name}: blank frame");
    }
    let home = boltbox::screens::home(&samples::synced());
    assert!(home.caption.starts_with("home\nsatoshi's box"), "{}", home.caption);
    assert!(home.caption.contains("LN 1,943,113"), "{}", home.caption);
    let syncing = boltbox::screens::home(&samples::syncing());
    assert!(syncing.caption.contains("sync 61%"), "{}", syncing.caption);
}

#[test]
fn seed_words_never_reach_a_caption() {
    for (name, screen) in render_all() {
        if name.starts_with("seed-") {
            for word in samples::SAMPLE_SEED {
                assert!(!screen.caption.contains(word), "{name}: {}", screen.caption);
            }
        }
    }
}

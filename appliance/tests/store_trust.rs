//! Channel state is never lost, silently replaced or exposed: the real `boltbox run` on the link
//! board against a regtest bitcoind, with the data dir in the states an SD card, an `rm`, a root
//! shell or a full disk leave it in. Each wait is on a caption or a status with a deadline.
//!
//! - a seed without its store: the OLED and `boltbox status` say so, nothing runs, nothing is
//!   created, a `boltbox restore` beside the service is refused; `boltbox start-empty` starts
//!   the node on an empty store, and says so in the log;
//!   every state file is private although the service ran under umask 022;
//! - a damaged store (bytes changed at 4096, at 0): a screen of its own, a safe stop on SIGTERM,
//!   and B restores the node's newest backup from the stick, the damaged file set aside;
//! - `boltbox restore` and an offline `boltbox backup` run as root leave the data dir to its
//!   owner, who can then read everything;
//! - `boltbox backup --to` a directory the service sees differently (its private /tmp) is refused
//!   with where it can write;
//! - a stop waits for a backup started through the control socket;
//! - a data partition that fills up is an alert before it is full; full, the node's writes wait
//!   unacknowledged with "cannot save state!"; freed, the node goes on.
//!
//! Mounts and ownership need root, as CI has: those tests fail rather than skip without it.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use boltbox_board::{Button, LinkClient};
use boltbox_tests::{BitcoinD, Deadline, Tmpfs, wait_until};

mod common;
use common::{
    Appliance, BETWEEN_PRESSES, BOOT, BackedUp, SCREEN, SHORT_PRESS, cli, link_appliance,
    node_backed_up_to_a_stick, observe_stop, skip_seed_reminder, status, status_node_id, wait_screen,
    wait_status,
};

const ALIAS: &str = "trusttest";

fn bitcoind() -> BitcoinD {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    bitcoind
}

/// Every file and directory under `dir`, with its metadata.
fn walk(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("list") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("meta");
            if meta.is_dir() {
                pending.push(path.clone());
            }
            out.push((path, meta));
        }
    }
    out
}

fn assert_ok(output: &std::process::Output) -> String {
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    text
}

#[test]
fn a_seed_without_its_store_waits_for_the_owner_and_starts_empty_only_when_told() {
    let bitcoind = bitcoind();
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, config, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);

    // A new node, made by a service under the usual umask 022.
    let umask = ["sh", "-c", "umask 022 && exec \"$0\" \"$@\""];
    let mut run = Appliance::start_wrapped(&config, dir.path().join("run1.log"), &umask);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "home", ALIAS, BOOT);
    let id = status_node_id(&config);
    run.sigterm();
    observe_stop(&mut link, &mut run);
    for (path, meta) in walk(&node.data_dir) {
        assert_eq!(meta.mode() & 0o077, 0, "{} is readable by others", path.display());
    }
    let backups = dir.path().join("backups");
    assert_ok(&cli(&config, &["backup", "--to", backups.to_str().expect("path")]));
    let backup = std::fs::read_dir(&backups).expect("ls").next().expect("a backup").expect("entry").path();

    // The store goes away; the seed stays.
    let store = node.data_dir.join("node.redb");
    std::fs::rename(&store, dir.path().join("moved-away.redb")).expect("mv");
    let mut run = Appliance::start(&config, dir.path().join("run2.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    let screen = wait_screen(&mut link, "store", "node store missing", BOOT);
    assert!(screen.caption.contains("hold B: start empty"), "{}", screen.caption);
    let waiting = wait_status(&config, "the store state", SCREEN, |s| s["service"]["state"] == "store");
    assert_eq!(waiting["running"], false, "{waiting}");
    assert!(waiting["service"]["reason"].as_str().is_some_and(|r| r.contains("missing")), "{waiting}");
    let refused = cli(&config, &["address"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not running"), "{refused:?}");
    assert!(!store.exists(), "nothing makes an empty store silently");
    // A restore from the command line beside the waiting service is refused: it would race the
    // service's own look at the data dir (which finishes, undoes and sets aside).
    let words = node.data_dir.join("seed.words");
    let args =
        ["restore", "--backup", backup.to_str().expect("path"), "--seed-file", words.to_str().expect("path")];
    let refused = cli(&config, &[&args[..], &["--yes"]].concat());
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("boltbox is running"), "{refused:?}");
    assert!(!store.exists() && !node.data_dir.join("restore.staging").exists(), "nothing was touched");

    // The owner decides, from the command line.
    let said = assert_ok(&cli(&config, &["start-empty", "--yes"]));
    assert!(said.contains("EMPTY"), "the warning is printed: {said}");
    wait_screen(&mut link, "home", ALIAS, BOOT);
    assert_eq!(status_node_id(&config), id, "the same node, on a new store");
    assert!(store.is_file());
    assert!(run.log().contains("EMPTY store"), "the choice is logged:\n{}", run.log());
    run.sigterm();
    observe_stop(&mut link, &mut run);
}

#[test]
fn a_damaged_store_has_its_own_screen_and_b_restores_the_nodes_backup_from_the_stick() {
    let bitcoind = bitcoind();
    let dir = tempfile::tempdir().expect("tempdir");
    let BackedUp { node, config, socket, id, .. } = node_backed_up_to_a_stick(&bitcoind, dir.path(), ALIAS);

    let store = node.data_dir.join("node.redb");
    let good = std::fs::read(&store).expect("store");
    for (at, log) in [(4096usize, "run2.log"), (0, "run3.log")] {
        let mut bytes = good.clone();
        bytes[at..at + 8].copy_from_slice(&[0xff; 8]);
        std::fs::write(&store, &bytes).expect("damage");
        let mut run = Appliance::start(&config, dir.path().join(log), None);
        let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
        let screen = wait_screen(&mut link, "store", "node store damaged", BOOT);
        assert!(screen.caption.contains("B: restore"), "the node's backup is offered: {}", screen.caption);
        let st = wait_status(&config, "the store state", SCREEN, |s| s["service"]["state"] == "store");
        assert!(st["service"]["reason"].as_str().is_some_and(|r| r.contains("damaged")), "{st}");
        if at == 4096 {
            // Never a crash loop: the service is up and stops cleanly.
            run.sigterm();
            observe_stop(&mut link, &mut run);
            assert_eq!(std::fs::read(&store).expect("store"), bytes, "a damaged store is never changed");
            continue;
        }
        link.press(Button::B, SHORT_PRESS).expect("B");
        wait_screen(&mut link, "restore confirm", "force-closed", SCREEN);
        std::thread::sleep(BETWEEN_PRESSES);
        link.press(Button::B, SHORT_PRESS).expect("confirm");
        wait_screen(&mut link, "home", ALIAS, BOOT);
        assert_eq!(status_node_id(&config), id, "the node, restored");
        let aside: Vec<PathBuf> = std::fs::read_dir(&node.data_dir)
            .expect("ls")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().contains("node.redb.before-restore-"))
            .collect();
        assert_eq!(aside.len(), 1, "the damaged store is set aside, not deleted: {aside:?}");
        assert_eq!(std::fs::read(&aside[0]).expect("aside"), bytes);
        run.sigterm();
        observe_stop(&mut link, &mut run);
    }
}

#[test]
fn a_restore_and_an_offline_backup_run_as_root_leave_the_data_dir_to_its_owner() {
    assert!(rustix::process::geteuid().is_root(), "this test runs commands as root, as CI does");
    let dir = tempfile::Builder::new().prefix("boltbox-owner-").tempdir_in("/var/tmp").expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let seed = boltbox_node::Seed::generate();
    let source = boltbox_node::DataDir::new(&dir.path().join("source"), boltbox_node::Network::Regtest);
    let store = source.create_node(&seed).expect("node");
    use ldk_node::lightning::util::persist::KVStoreSync;
    KVStoreSync::write(&store, "monitors", "", "m", vec![1; 1000]).expect("write");
    store.close();
    let write_config = |name: &str, data: &Path| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[node]\nnetwork = \"regtest\"\ndata_dir = \"{}\"\n[node.chain]\nsource = \"electrum\"\n\
                 url = \"tcp://127.0.0.1:1\"\n[board]\nboard = \"sim\"\n",
                data.display()
            ),
        )
        .expect("config");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        path
    };
    let source_config = write_config("source", source.path());
    let backups = dir.path().join("backups");
    assert_ok(&cli(&source_config, &["backup", "--to", backups.to_str().expect("path")]));
    let file = std::fs::read_dir(&backups).expect("ls").next().expect("a backup").expect("entry").path();
    let words = dir.path().join("words");
    std::fs::write(&words, seed.words().join(" ")).expect("words");
    std::fs::set_permissions(&words, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // The service's data dir belongs to its user (here: nobody); root restores into it.
    let (uid, gid) = (65534u32, 65534u32);
    let target = dir.path().join("target");
    std::fs::create_dir(&target).expect("mkdir");
    std::os::unix::fs::chown(&target, Some(uid), Some(gid)).expect("chown");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let target_config = write_config("target", &target);
    let restore = Command::new(env!("CARGO_BIN_EXE_boltbox"))
        .args(["restore", "--backup"])
        .arg(&file)
        .arg("--seed-file")
        .arg(&words)
        .args(["--yes", "--config"])
        .arg(&target_config)
        .output()
        .expect("restore");
    assert_ok(&restore);
    let out = dir.path().join("out");
    assert_ok(&cli(&target_config, &["backup", "--to", out.to_str().expect("path")]));
    for (path, meta) in walk(&target) {
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{} belongs to root", path.display());
        assert_eq!(meta.mode() & 0o077, 0, "{} is readable by others", path.display());
    }
    assert!(target.join("last-backup.json").is_file());

    // And the owner can use everything: an offline backup as that user reads the seed and store.
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).expect("mkdir");
    std::os::unix::fs::chown(&mine, Some(uid), Some(gid)).expect("chown");
    let as_owner = Command::new("setpriv")
        .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_boltbox"))
        .args(["backup", "--to"])
        .arg(&mine)
        .arg("--config")
        .arg(&target_config)
        .output()
        .expect("setpriv");
    assert_ok(&as_owner);
}

#[test]
fn a_backup_into_the_services_private_tmp_is_refused_with_where_it_can_write() {
    assert!(rustix::process::geteuid().is_root(), "this test makes a mount namespace, as CI can");
    let bitcoind = bitcoind();
    // Outside /tmp: the service gets a /tmp of its own, as systemd's PrivateTmp=yes gives it.
    let dir = tempfile::Builder::new().prefix("boltbox-privtmp-").tempdir_in("/var/tmp").expect("tempdir");
    let (_node, config, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);
    let private_tmp = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /tmp && exec \"$0\" \"$@\"",
    ];
    let mut run = Appliance::start_wrapped(&config, dir.path().join("run.log"), &private_tmp);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "home", ALIAS, BOOT);
    let tmp = tempfile::tempdir().expect("a directory in the real /tmp");
    let refused = cli(&config, &["backup", "--to", tmp.path().to_str().expect("path")]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("not the same directory") && why.contains("USB stick"), "{why}");
    assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 0, "nothing written where nobody sees it");
    let visible = dir.path().join("backups");
    assert_ok(&cli(&config, &["backup", "--to", visible.to_str().expect("path")]));
    assert_eq!(std::fs::read_dir(&visible).expect("ls").count(), 1);
    run.sigterm();
    observe_stop(&mut link, &mut run);
}

#[test]
fn a_stop_waits_for_a_backup_started_through_the_control_socket() {
    let bitcoind = bitcoind();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_node, config, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);
    // The SD-card flush model, slowed to 3 s a flush and only in the backup's directory.
    let shim = common::sdcard_shim(dir.path());
    let backups = dir.path().join("slow-stick");
    std::fs::create_dir(&backups).expect("mkdir");
    let preload = format!("LD_PRELOAD={}", shim.display());
    let prefix = format!("BOLTBOX_FSYNC_PATH_PREFIX={}", backups.display());
    let wrapper = ["env", preload.as_str(), prefix.as_str(), "BOLTBOX_FSYNC_DELAY_MS=3000"];
    let mut run = Appliance::start_wrapped(&config, dir.path().join("run.log"), &wrapper);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "home", ALIAS, BOOT);

    let backup = {
        let config = config.clone();
        let to = backups.clone();
        std::thread::spawn(move || cli(&config, &["backup", "--to", to.to_str().expect("path")]))
    };
    // The backup has begun once its temporary file is there.
    wait_until(Deadline::in_secs(60), "the backup's temporary file", || {
        std::fs::read_dir(&backups)
            .ok()?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .then_some(())
    });
    run.sigterm();
    observe_stop(&mut link, &mut run);
    let said = assert_ok(&backup.join().expect("backup thread"));
    assert!(said.contains("store commit"), "{said}");
    let log = run.log();
    let verified = log.find("verified").expect("the backup finished");
    let stopped = log.find("node stopped").expect("the node stopped");
    assert!(verified < stopped, "the node stopped only after the backup:\n{log}");
}

#[test]
fn a_filling_data_partition_is_an_alert_then_a_stall_that_acknowledges_nothing_then_heals() {
    let bitcoind = bitcoind();
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, config, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);
    let disk = Tmpfs::mount(&node.data_dir, "96M");
    skip_seed_reminder(&node.data_dir);
    let mut run = Appliance::start(&config, dir.path().join("run.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "home", ALIAS, BOOT);
    let kinds = |status: &serde_json::Value| -> Vec<String> {
        status["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["kind"].as_str().map(String::from))
            .collect()
    };
    let before = status(&config).expect("status");
    assert!(!kinds(&before).iter().any(|k| k == "disk_space_low"), "{before}");

    // Low but not out: an alert, and the node still saves.
    let low = disk.fill("filler-1", 40 << 20);
    wait_status(&config, "the disk alert", SCREEN, |s| kinds(s).iter().any(|k| k == "disk_space_low"));
    assert_ok(&cli(&config, &["invoice", "--msat", "1000"]));

    // Full. redb reuses pages it already has, so invoices are made until one needs a page the
    // disk cannot give: that one waits, unacknowledged, and the owner is told.
    let full = disk.fill("filler-2", 0);
    let stop = Arc::new(AtomicBool::new(false));
    let invoices = {
        let (config, stop) = (config.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let description = "x".repeat(600);
            let mut made = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let output = cli(&config, &["invoice", "--msat", "2000", "--description", &description]);
                if !output.status.success() {
                    return Err(String::from_utf8_lossy(&output.stderr).into_owned());
                }
                made += 1;
            }
            Ok(made)
        })
    };
    let stalled = wait_status(&config, "the store alert", Duration::from_secs(120), |s| {
        kinds(s).iter().any(|k| k == "store_failing")
    });
    stop.store(true, Ordering::SeqCst);
    assert!(stalled.to_string().contains("space"), "the alert says why: {stalled}");
    assert_eq!(stalled["service"]["state"], "running", "the service runs on: {stalled}");

    // Space back: the waiting write is stored, its invoice handed out, and the node goes on.
    std::fs::remove_file(full).expect("free");
    std::fs::remove_file(low).expect("free");
    let made = invoices.join().expect("invoice thread").expect("no invoice failed, before or after");
    assert!(made > 0);
    wait_status(&config, "no store alert", SCREEN, |s| !kinds(s).iter().any(|k| k == "store_failing"));
    assert_ok(&cli(&config, &["invoice", "--msat", "3000"]));
    run.sigterm();
    observe_stop(&mut link, &mut run);
}

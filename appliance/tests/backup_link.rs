//! The backup gesture end to end: the real `boltbox run` on the link board against a regtest
//! bitcoind. Hold B, confirm with B: with no stick the OLED says so; with two sticks the first
//! by name gets a backup that decrypts with the node's seed and names the node, the OLED says
//! "backup OK" with the stick, and the system page shows the backup's age; `boltbox backup --to`
//! reaches the running service through the control socket. On an empty data dir, a stick with a
//! backup makes the OLED offer the restore: with the seed words on the stick, B, B restores the
//! same node and the words are deleted from the stick. Every wait is on a caption with a
//! deadline.

use std::time::Duration;

use boltbox_board::{Button, LinkClient};
use boltbox_node::backup::{Workers, open_backup};
use boltbox_node::{Network, Seed};
use boltbox_tests::BitcoinD;

mod common;
use common::{
    Appliance, BETWEEN_PRESSES, BOOT, BackedUp, SCREEN, SHORT_PRESS, hold_b_and_confirm, link_appliance,
    node_backed_up_to_a_stick, observe_stop, status_node_id, wait_screen, with_sticks,
};

const ALIAS: &str = "backuptest";
/// Snapshot, write, fsync, read back and verify: a small regtest store takes well under this.
const BACKUP: Duration = Duration::from_secs(60);

#[test]
fn an_empty_data_dir_and_a_backup_on_the_stick_offer_the_restore_on_the_oled() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    // A node backs up to the stick and shuts down.
    let BackedUp { node, config, socket, sticks, id } =
        node_backed_up_to_a_stick(&bitcoind, dir.path(), ALIAS);
    let words = Seed::load(&node.data_dir).expect("seed").expect("seed").words().join(" ");

    // The card is new: an empty data dir. The OLED offers the backup, but needs the words.
    std::fs::remove_dir_all(&node.data_dir).expect("destroy the data dir");
    let mut run = Appliance::start(&config, dir.path().join("run2.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    let offer = wait_screen(&mut link, "restore offer", id.get(..8).unwrap_or_default(), BOOT);
    assert!(offer.caption.contains("no restore.words"), "{}", offer.caption);
    assert!(offer.caption.contains("hold B: new node"), "{}", offer.caption);
    assert!(offer.caption.contains("commit"), "the stale guard's facts: {}", offer.caption);
    link.press(Button::B, SHORT_PRESS).expect("B");
    let words_file = sticks.join("sda1/boltbox-backups/restore.words");
    std::fs::write(&words_file, format!("{words}\n")).expect("words on the stick");
    wait_screen(&mut link, "restore offer", "B: restore", SCREEN);
    link.press(Button::B, SHORT_PRESS).expect("B");
    wait_screen(&mut link, "restore confirm", "force-closed", SCREEN);
    std::thread::sleep(BETWEEN_PRESSES);
    link.press(Button::B, SHORT_PRESS).expect("confirm");

    // Restored: the same node starts, and the words are gone from the stick.
    wait_screen(&mut link, "home", ALIAS, BOOT);
    assert_eq!(status_node_id(&config), id, "the restored node");
    assert!(!words_file.exists(), "the seed words are deleted from the stick");
    assert!(node.data_dir.join("seed.words").is_file());
    run.sigterm();
    observe_stop(&mut link, &mut run);
}

#[test]
fn b_long_and_confirm_writes_a_verified_backup_to_the_first_stick() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, config, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);
    let sticks = with_sticks(dir.path(), &config);

    let mut run = Appliance::start(&config, dir.path().join("run.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "home", ALIAS, BOOT);

    // No stick yet: the OLED says what to do.
    hold_b_and_confirm(&mut link);
    wait_screen(&mut link, "backup", "no USB stick found", BACKUP);
    link.press(Button::A, SHORT_PRESS).expect("A");
    wait_screen(&mut link, "home", ALIAS, SCREEN);

    // Two sticks: the first by name is used, and the OLED names it.
    for name in ["sdb1", "sda1"] {
        std::fs::create_dir(sticks.join(name)).expect("stick");
    }
    hold_b_and_confirm(&mut link);
    let done = wait_screen(&mut link, "backup", "backup OK", BACKUP);
    assert!(done.caption.contains("sda1"), "{}", done.caption);
    assert!(done.caption.contains("UTC"), "{}", done.caption);

    let seed = Seed::load(&node.data_dir).expect("seed").expect("the appliance made one");
    let written: Vec<_> = std::fs::read_dir(sticks.join("sda1/boltbox-backups"))
        .expect("backup dir on the stick")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
    let contents = open_backup(
        std::sync::Arc::new(std::fs::read(&written[0]).expect("read")),
        &seed,
        &Workers(runtime.handle().clone()),
        &mut |_| {},
    )
    .expect("the backup decrypts and checks out");
    assert_eq!(contents.header.node_id, seed.node_id(Network::Regtest).expect("node id"));
    assert_eq!(contents.header.network, Network::Regtest);
    assert!(!contents.snapshot.entries.is_empty());
    assert!(std::fs::read_dir(sticks.join("sdb1")).expect("sdb1").next().is_none(), "sdb1 untouched");

    // The system page shows the backup's age.
    link.press(Button::A, SHORT_PRESS).expect("A");
    wait_screen(&mut link, "home", ALIAS, SCREEN);
    for page in ["channels", "earnings", "accounts", "network"] {
        link.press(Button::A, SHORT_PRESS).expect("A");
        wait_screen(&mut link, page, "", SCREEN);
    }
    link.press(Button::A, SHORT_PRESS).expect("A");
    wait_screen(&mut link, "system", "ago", SCREEN);

    // `boltbox backup --to` against the running service goes through the control socket (the
    // store is the service's: opening it directly would be refused).
    let cli_dir = dir.path().join("cli-backups");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_boltbox"))
        .args(["backup", "--to"])
        .arg(&cli_dir)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("boltbox backup");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}{}", String::from_utf8_lossy(&output.stderr));
    assert!(said.contains("store commit"), "{said}");
    let files: Vec<_> =
        std::fs::read_dir(&cli_dir).expect("cli dir").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let online = open_backup(
        std::sync::Arc::new(std::fs::read(&files[0]).expect("read")),
        &seed,
        &Workers(runtime.handle().clone()),
        &mut |_| {},
    )
    .expect("the CLI's backup checks out");
    assert!(online.header.commit_counter >= contents.header.commit_counter);

    run.sigterm();
    observe_stop(&mut link, &mut run);
}

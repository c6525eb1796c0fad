//! The remote mirror on VSS from the service's side (issue 19, docs/MIRROR.md): the real
//! `boltbox run` on the link board with `[mirror.vss]` pointing at a real vss-server on a real
//! PostgreSQL (`boltbox_tests::Vss`).
//!
//! 1. The service mirrors its store to VSS: `boltbox status` says `in_sync`, and the system page
//!    shows it.
//! 2. The owner moves the node: the first device stopped, a second one set up with the same
//!    seed words (the seed, no store) offers VSS's state on its store screen ("B: restore from
//!    VSS"); restored by B, B, it runs the node and writes VSS. The first device switched on
//!    again does not start the node: its OLED says "wait: remote mirror", another device runs
//!    this node (`boltbox status` too), also after a reboot; the second one is undisturbed.
//!    (A device refused while its node runs holds every write: tests/tests/vss.rs.)
//! 3. The first device's data dir is lost: `boltbox restore --vss` and the seed words bring the
//!    node back (the same node id, its state at the last commit), and it mirrors on.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use boltbox_board::{Button, LinkClient};
use boltbox_tests::{BitcoinD, Vss};
use common::{
    Appliance, BOOT, SCREEN, SHORT_PRESS, cli, link_appliance, observe_stop, wait_screen, wait_status,
};

fn with_vss(config: &std::path::Path, vss: &Vss) {
    let mut text = std::fs::read_to_string(config).expect("config");
    text.push_str(&format!("\n[mirror.vss]\nurl = \"{}\"\n", vss.url()));
    std::fs::write(config, text).expect("config");
}

fn remote_state(status: &serde_json::Value) -> &str {
    status["remote_mirror"]["state"].as_str().unwrap_or_default()
}

#[test]
fn the_service_mirrors_to_vss_a_second_device_waits_and_restore_vss_brings_the_node_back() {
    let vss = Vss::start().expect("vss");
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    let a_dir = dir.path().join("a");
    std::fs::create_dir(&a_dir).expect("mkdir");
    let (a_node, a_config, a_socket) = link_appliance(&bitcoind, &a_dir, "vss-a");
    with_vss(&a_config, &vss);
    let mut a = Appliance::start(&a_config, dir.path().join("a.log"), None);
    let mut a_link = LinkClient::connect_within(&a_socket, BOOT).expect("link");
    wait_screen(&mut a_link, "home", "vss-a", BOOT);
    let status = wait_status(&a_config, "the remote mirror in sync", BOOT, |s| remote_state(s) == "in_sync");
    let id = status["node_id"].as_str().expect("node id").to_string();
    // The system page shows it.
    for page in ["channels", "earnings", "accounts", "network"] {
        a_link.press(Button::A, SHORT_PRESS).expect("A");
        wait_screen(&mut a_link, page, "", SCREEN);
    }
    a_link.press(Button::A, SHORT_PRESS).expect("A");
    let frame = wait_screen(&mut a_link, "system", "in sync", SCREEN);
    assert!(frame.caption.contains("vss"), "{}", frame.caption);

    // The owner moves the node: the first box is stopped, and a second box set up with the
    // same words (its data dir has the seed and no store) offers VSS's state of the node on its
    // store screen. Restored there by B, B, it runs the node and writes VSS.
    a.sigterm();
    observe_stop(&mut a_link, &mut a);
    let seed = boltbox_node::Seed::load(&a_node.data_dir).expect("seed").expect("a seed");
    let b_dir = dir.path().join("b");
    std::fs::create_dir(&b_dir).expect("mkdir");
    let (b_node, b_config, b_socket) = link_appliance(&bitcoind, &b_dir, "vss-b");
    seed.store(&b_node.data_dir).expect("the same seed");
    with_vss(&b_config, &vss);
    let mut b = Appliance::start(&b_config, dir.path().join("b.log"), None);
    let mut b_link = LinkClient::connect_within(&b_socket, BOOT).expect("link");
    let frame = wait_screen(&mut b_link, "store", "restore from VSS", BOOT);
    assert!(frame.caption.contains("node store missing"), "{}", frame.caption);
    b_link.press(Button::B, SHORT_PRESS).expect("B");
    wait_screen(&mut b_link, "restore confirm", "force-closed", SCREEN);
    std::thread::sleep(common::BETWEEN_PRESSES);
    b_link.press(Button::B, SHORT_PRESS).expect("confirm");
    wait_screen(&mut b_link, "home", "vss-b", BOOT);
    wait_status(&b_config, "the second box writes VSS", BOOT, |s| remote_state(s) == "in_sync");
    assert_eq!(common::status_node_id(&b_config), id, "the same node on the second box");

    // The first box is switched on again: another device writes the node's state now, so it
    // does not start the node; its OLED says so, and so does `boltbox status`. It stays so
    // after a reboot, and the second box is undisturbed.
    for run in ["a-again.log", "a-rebooted.log"] {
        let mut a = Appliance::start(&a_config, dir.path().join(run), None);
        let mut a_link = LinkClient::connect_within(&a_socket, BOOT).expect("link");
        let frame = wait_screen(&mut a_link, "waiting", "remote mirror", BOOT);
        assert!(
            frame.caption.replace('\n', " ").contains("another device runs this node"),
            "{}",
            frame.caption
        );
        let said = cli(&a_config, &["status"]);
        let said = String::from_utf8_lossy(&said.stdout).to_string() + &String::from_utf8_lossy(&said.stderr);
        assert!(said.contains("remote mirror"), "the CLI says why the node does not run: {said}");
        assert!(!a.log().contains("node running"), "{}", a.log());
        a.sigterm();
        assert!(a.wait_exit(common::SHUTDOWN), "the waiting service stops cleanly");
    }
    assert!(
        boltbox_node::mirror::vss::refused(&a_node.data_dir).is_some(),
        "the refusal is marked on the first box's card: it holds even while VSS cannot be asked"
    );
    let b_status = wait_status(&b_config, "the second box", SCREEN, |s| !s["node_id"].is_null());
    assert_eq!(remote_state(&b_status), "in_sync", "the second box is undisturbed: {b_status}");
    b.sigterm();
    observe_stop(&mut b_link, &mut b);

    // The first box's card is lost; its words and VSS bring the node back.
    std::fs::remove_dir_all(&a_node.data_dir).expect("destroy the data dir");
    common::skip_seed_reminder(&a_node.data_dir);
    let words = dir.path().join("words");
    std::fs::write(&words, seed.words().join(" ")).expect("words");
    std::fs::set_permissions(&words, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let restored =
        cli(&a_config, &["restore", "--vss", "--seed-file", &words.display().to_string(), "--yes"]);
    let said =
        String::from_utf8_lossy(&restored.stdout).to_string() + &String::from_utf8_lossy(&restored.stderr);
    assert!(restored.status.success(), "{said}");
    assert!(said.contains("from the remote mirror at") && said.contains(&id), "{said}");
    let mut a = Appliance::start(&a_config, dir.path().join("a2.log"), None);
    let mut a_link = LinkClient::connect_within(&a_socket, BOOT).expect("link");
    wait_screen(&mut a_link, "home", "vss-a", BOOT);
    let status =
        wait_status(&a_config, "the restored node mirrors on", BOOT, |s| remote_state(s) == "in_sync");
    assert_eq!(status["node_id"], id.as_str(), "the same node");
    a.sigterm();
    observe_stop(&mut a_link, &mut a);
}

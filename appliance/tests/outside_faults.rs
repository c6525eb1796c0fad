//! The world outside the process is not right, and `boltbox run` waits it out: the real service
//! on the link board, against a real Electrum server (electrs) or bitcoind, with a fault-injecting
//! proxy of the tests' own in between. For each fault the test asserts the caption the owner
//! sees and `boltbox status`, that the process never exits, and that the node starts by itself
//! once the fault is gone; it prints how long that took.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use boltbox_board::LinkClient;
use boltbox_node::ChainSource;
use boltbox_tests::{BitcoinD, Electrs, Fault, FaultProxy, free_port};

mod common;
use common::{
    Appliance, BOOT, link_appliance, observe_stop, status_node_id, wait_screen, wait_status, write_config,
};

const ALIAS: &str = "faulttest";
/// A probe that times out takes 10 s, and the backoff is at most 30 s.
const WAIT_CHANGE: Duration = Duration::from_secs(90);

fn bitcoind() -> BitcoinD {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    bitcoind
}

/// Asserts that the service is still up (it never exits on an outside fault).
fn still_up(run: &mut Appliance) {
    assert!(run.child.try_wait().expect("try_wait").is_none(), "boltbox exited:\n{}", run.log());
}

/// Waits for the home page after the fault was removed at `fixed`, and prints how long it took.
fn running_after(link: &mut LinkClient, fixed: Instant, what: &str) {
    wait_screen(link, "home", ALIAS, WAIT_CHANGE);
    println!("{what}: fault removed → node running in {:.1} s", fixed.elapsed().as_secs_f64());
}

#[test]
fn an_electrum_server_that_refuses_stalls_or_cuts_answers_is_waited_out() {
    let bitcoind = bitcoind();
    let electrs = Electrs::start(&bitcoind).expect("electrs");
    let target = format!("127.0.0.1:{}", electrs.port()).parse().expect("addr");
    let proxy = FaultProxy::start(target, Fault::Refuse).expect("proxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut node, _, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);
    node.chain = ChainSource::Electrum { url: format!("tcp://127.0.0.1:{}", proxy.port()) };
    let config = write_config(dir.path(), &node, &socket);

    let mut run = Appliance::start(&config, dir.path().join("run.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    let screen = wait_screen(&mut link, "waiting", "refused the", BOOT);
    assert!(screen.caption.contains("wait: chain source"), "{}", screen.caption);
    let status = wait_status(&config, "waiting in the status", BOOT, |s| s["service"]["state"] == "waiting");
    assert_eq!(status["service"]["waiting_for"], "chain source", "{status}");
    assert!(status["service"]["reason"].as_str().is_some_and(|r| r.contains("Electrum server")), "{status}");

    // Far beyond the probe's 10 s: "too slow" whatever the machine's load.
    proxy.set(Fault::Delay(Duration::from_secs(60)));
    wait_screen(&mut link, "waiting", "did not answer", WAIT_CHANGE);
    still_up(&mut run);
    proxy.set(Fault::CloseMidAnswer);
    wait_screen(&mut link, "waiting", "closed the", WAIT_CHANGE);
    still_up(&mut run);
    proxy.set(Fault::Pass);
    running_after(&mut link, Instant::now(), "Electrum faults");
    run.sigterm();
    observe_stop(&mut link, &mut run);
}

#[test]
fn an_electrum_server_down_at_boot_and_started_later_is_found_by_itself() {
    let bitcoind = bitcoind();
    let port = free_port().expect("port");
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut node, _, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);
    node.chain = ChainSource::Electrum { url: format!("tcp://127.0.0.1:{port}") };
    let config = write_config(dir.path(), &node, &socket);

    let mut run = Appliance::start(&config, dir.path().join("run.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "waiting", "refused the", BOOT);
    let _electrs = Electrs::start_on(&bitcoind, port).expect("electrs");
    running_after(&mut link, Instant::now(), "Electrum server started");
    run.sigterm();
    observe_stop(&mut link, &mut run);
}

#[test]
fn a_busy_listen_port_and_an_address_not_yet_assigned_are_waited_out() {
    let bitcoind = bitcoind();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut node, config, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);

    let held = TcpListener::bind(node.listen[0].as_str()).expect("hold the port");
    let port = held.local_addr().expect("addr").port();
    let mut run = Appliance::start(&config, dir.path().join("run1.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    let screen = wait_screen(&mut link, "waiting", "in use", BOOT);
    assert!(screen.caption.contains(&format!("port {port}")), "{}", screen.caption);
    drop(held);
    running_after(&mut link, Instant::now(), "listen port freed");
    run.sigterm();
    observe_stop(&mut link, &mut run);

    // An address the machine does not have yet (TEST-NET-3, RFC 5737), then gets.
    assert!(rustix::process::geteuid().is_root(), "assigning an address needs root, as CI has");
    let address = "203.0.113.77";
    node.listen = vec![format!("{address}:{}", free_port().expect("port"))];
    let config = write_config(dir.path(), &node, &socket);
    let mut run = Appliance::start(&config, dir.path().join("run2.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "waiting", "an address of this", BOOT);
    let _assigned = Assigned::add(address);
    running_after(&mut link, Instant::now(), "listen address assigned");
    run.sigterm();
    observe_stop(&mut link, &mut run);
}

/// An address on the loopback interface for one test; removed when dropped.
struct Assigned(&'static str);

impl Assigned {
    fn add(address: &'static str) -> Assigned {
        let status = Command::new("ip").args(["addr", "add", &format!("{address}/32"), "dev", "lo"]).status();
        assert!(status.is_ok_and(|s| s.success()), "ip addr add {address}");
        Assigned(address)
    }
}

impl Drop for Assigned {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["addr", "del", &format!("{}/32", self.0), "dev", "lo"]).status();
    }
}

#[test]
fn bitcoind_restarted_with_a_new_cookie_is_followed_without_restarting_boltbox() {
    let mut bitcoind = BitcoinD::start_with_cookie().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut node, _, socket) = link_appliance(&bitcoind, dir.path(), ALIAS);
    node.chain = ChainSource::Bitcoind {
        rpc_host: "127.0.0.1".into(),
        rpc_port: Some(bitcoind.rpc_port()),
        rpc_user: None,
        rpc_password: None,
        rpc_cookie: Some(bitcoind.cookie_file()),
    };
    let config = write_config(dir.path(), &node, &socket);
    let mut run = Appliance::start(&config, dir.path().join("run.log"), None);
    let mut link = LinkClient::connect_within(&socket, BOOT).expect("link");
    wait_screen(&mut link, "home", ALIAS, BOOT);
    let id = status_node_id(&config);
    let pid = run.child.id();

    let cookie = std::fs::read_to_string(bitcoind.cookie_file()).expect("cookie");
    bitcoind.restart().expect("restart bitcoind");
    assert_ne!(std::fs::read_to_string(bitcoind.cookie_file()).expect("cookie"), cookie, "a new cookie");
    let restarted = Instant::now();
    // The node stopped and started again on the new cookie (the probe's own "read bitcoind's
    // new cookie" comes first, while the old node still runs).
    wait_status(&config, "the node on the new cookie", WAIT_CHANGE, |s| {
        let log = run.log();
        let restarted = log.find("a new cookie: stopping and starting the node");
        s["running"] == true
            && restarted.and_then(|at| log.get(at..)).is_some_and(|after| after.contains("node running"))
    });
    println!("bitcoind's new cookie: node running again in {:.1} s", restarted.elapsed().as_secs_f64());
    still_up(&mut run);
    assert_eq!(run.child.id(), pid, "the same process");
    assert_eq!(status_node_id(&config), id);
    // The node really talks to bitcoind again: it sees a new block.
    bitcoind.mine(1).expect("mine");
    let tip = bitcoind.height().expect("height");
    wait_status(&config, "the new block", WAIT_CHANGE, |s| {
        s["sync"]["lightning_height"].as_u64() >= Some(tip)
    });
    run.sigterm();
    observe_stop(&mut link, &mut run);
}

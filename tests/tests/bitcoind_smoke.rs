//! The harness itself: a real regtest bitcoind starts, mines, and is cleaned up.

use boltbox_tests::BitcoinD;

#[test]
fn mines_101_blocks_and_reports_the_height() {
    let bitcoind = BitcoinD::start().expect("start bitcoind");
    assert_eq!(bitcoind.height().expect("height"), 0);
    let hashes = bitcoind.mine(101).expect("mine");
    assert_eq!(hashes.len(), 101);
    assert_eq!(bitcoind.height().expect("height"), 101);
    // Coinbase of block 1 is mature now: the wallet can spend it.
    let balance: f64 = bitcoind.cli(&["getbalance"]).expect("balance").parse().expect("number");
    assert!(balance > 0.0, "wallet balance {balance}");
}

#[test]
fn is_stopped_and_removed_when_dropped_even_on_panic() {
    let (dir, pid) = {
        let bitcoind = BitcoinD::start().expect("start bitcoind");
        (bitcoind.datadir().to_path_buf(), bitcoind.pid().expect("running"))
    };
    assert!(!dir.exists(), "data dir left behind: {}", dir.display());
    assert!(!process_exists(pid), "bitcoind {pid} still running");

    let leaked = std::panic::catch_unwind(|| {
        let bitcoind = BitcoinD::start().expect("start bitcoind");
        std::panic::panic_any((bitcoind.datadir().to_path_buf(), bitcoind.pid().expect("running")));
    });
    let (dir, pid) =
        *leaked.expect_err("panicked").downcast::<(std::path::PathBuf, u32)>().expect("dir, pid");
    assert!(!dir.exists(), "data dir left behind after a panic: {}", dir.display());
    assert!(!process_exists(pid), "bitcoind {pid} still running after a panic");
}

#[test]
fn restarts_on_the_same_chain() {
    let mut bitcoind = BitcoinD::start().expect("start bitcoind");
    bitcoind.mine(5).expect("mine");
    bitcoind.restart().expect("restart");
    assert_eq!(bitcoind.height().expect("height"), 5);
}

/// Whether a (non-zombie) process with this id exists.
fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')))
        .unwrap_or(false)
}

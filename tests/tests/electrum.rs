//! The default chain source's protocol, end to end: a boltbox node that learns the chain only
//! from a real Electrum server (electrs, the published crate, indexing the test's regtest
//! bitcoind) is funded at the address its funding screen shows, opens a channel to a node on
//! bitcoind, and pays it. Every wait has a deadline; the Electrum node is synced on demand
//! rather than waited for on ldk-node's timer.

use boltbox_node::NodeEvent;
use boltbox_tests::{BitcoinD, Deadline, Electrs, TestNode, wait_until};

/// Mines `n` blocks and waits until both nodes have seen them, asking the Electrum node to sync.
fn mine(bitcoind: &BitcoinD, electrs: &mut Electrs, on_electrum: &TestNode, on_bitcoind: &TestNode, n: u64) {
    bitcoind.mine(n).expect("mine");
    electrs.wait_synced(bitcoind).expect("electrs follows");
    let tip = bitcoind.height().expect("height") as u32;
    wait_until(Deadline::in_secs(90), "the Electrum node at the tip", || {
        on_electrum.node().sync_wallets().ok()?;
        (on_electrum.node().refresh_status().sync.lightning_height >= tip).then_some(())
    });
    on_bitcoind.wait_status("the bitcoind node at the tip", 60, |s| s.sync.lightning_height >= tip);
}

#[test]
fn a_node_on_electrum_is_funded_opens_a_channel_to_a_node_on_bitcoind_and_pays_it() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let mut electrs = Electrs::start(&bitcoind).expect("electrs");
    let mut a = TestNode::start_on_electrum(&bitcoind, "electrum-alice", &electrs.url());
    let mut b = TestNode::start(&bitcoind, "bitcoind-bob", vec![]);

    // A is funded as an owner would: at the address its OLED shows once asked (and not before).
    assert_eq!(a.node().refresh_status().funding_address, None, "no address revealed unasked");
    a.node().want_funding_address();
    let shown = a.wait_status("A's funding address", 30, |s| s.funding_address.is_some());
    let address = shown.funding_address.expect("address");
    assert!(address.starts_with("bcrt1q"), "a regtest P2WPKH address: {address}");
    assert_eq!(a.node().refresh_status().funding_address.as_deref(), Some(address.as_str()), "kept");
    bitcoind.send_to(&address, 1_000_000).expect("send");
    b.fund(&bitcoind, 100_000);
    mine(&bitcoind, &mut electrs, &a, &b, 6);
    // Synced on demand: a first sync already running when the coins were mined is joined, not
    // repeated, so one call may not see them yet.
    let funded = wait_until(Deadline::in_secs(120), "A's funds, seen through Electrum", || {
        a.node().sync_wallets().ok()?;
        let status = a.node().refresh_status();
        (status.balances.onchain_spendable_sats >= 900_000).then_some(status)
    });
    assert_eq!(funded.balances.onchain_total_sats, 1_000_000);
    let next = funded.funding_address.expect("still shown");
    assert_ne!(next, address, "once funds arrived, a fresh address replaces the used one");
    assert!(funded.sync.chain_tip.is_some(), "the Electrum probe tells the tip: {:?}", funded.sync);

    let mempool = bitcoind.mempool().expect("mempool").len();
    a.node().open_channel(&b.peer_address(), 400_000, None, true).expect("open");
    a.wait_event("ChannelPending", 30, |e| matches!(e, NodeEvent::ChannelPending { .. }).then_some(()));
    bitcoind.wait_for_mempool(mempool + 1, Deadline::in_secs(30));
    mine(&bitcoind, &mut electrs, &a, &b, 6);
    wait_until(Deadline::in_secs(90), "the channel usable on both sides", || {
        a.node().sync_wallets().ok()?;
        let usable = a.node().refresh_status().usable_channels() == 1
            && b.node().refresh_status().usable_channels() == 1;
        usable.then_some(())
    });

    let invoice = b.node().create_invoice(Some(25_000_000), "over electrum", 3600).expect("invoice");
    a.node().pay_invoice(&invoice, None).expect("pay");
    a.wait_event("A's payment", 60, |e| match e {
        NodeEvent::PaymentSent { .. } => Some(()),
        NodeEvent::PaymentFailed { reason, .. } => panic!("payment failed: {reason}"),
        _ => None,
    });
    b.wait_event("B paid", 30, |e| {
        matches!(e, NodeEvent::PaymentReceived { amount_msat, .. } if *amount_msat == 25_000_000)
            .then_some(())
    });
}

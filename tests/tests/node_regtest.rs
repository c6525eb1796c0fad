//! boltbox nodes against a real bitcoind on regtest: channels, payments (BOLT11 through a
//! router, keysend, BOLT12), routing fees, a restart, a cooperative close, and a chain source
//! that goes away and comes back. No fixed sleeps: every wait is on an event or a polled
//! condition with a deadline.

use boltbox_node::{Alert, NodeEvent};
use boltbox_tests::{BitcoinD, Deadline, TestNode, mine_and_sync, wait_for_gossip, wait_until};

const SAT: u64 = 1000;

#[test]
fn three_nodes_route_pay_restart_and_close() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");

    let mut b = TestNode::start(&bitcoind, "bob", vec![]);
    let b_addr = b.peer_address().to_string();
    // A and C keep B as a trusted peer: they reconnect to it quickly after B restarts.
    let mut a = TestNode::start(&bitcoind, "alice", vec![b_addr.clone()]);
    let mut c = TestNode::start(&bitcoind, "carol", vec![b_addr]);

    // A and B open channels; C accepts one and needs its own anchor reserve on-chain.
    a.fund(&bitcoind, 1_000_000);
    b.fund(&bitcoind, 1_000_000);
    c.fund(&bitcoind, 100_000);
    mine_and_sync(&bitcoind, 6, &[&a, &b, &c], 60);
    for node in [&a, &b, &c] {
        node.wait_status("on-chain funds", 60, |s| s.balances.onchain_spendable_sats >= 100_000);
    }

    let ab = a.open_channel_to(&bitcoind, &b, 500_000);
    mine_and_sync(&bitcoind, 6, &[&a, &b, &c], 60);
    b.open_channel_to(&bitcoind, &c, 500_000);
    mine_and_sync(&bitcoind, 6, &[&a, &b, &c], 60);
    for node in [&mut a, &mut c] {
        node.wait_event("ChannelReady", 60, |e| matches!(e, NodeEvent::ChannelReady { .. }).then_some(()));
    }
    b.wait_status("both of B's channels usable", 60, |s| s.usable_channels() == 2);

    // A and C learn the other channel from B's gossip before they can route through it.
    for node in [&a, &c] {
        wait_for_gossip(&bitcoind, &[&a, &b, &c], 180, "both channels in the graph", || {
            (node.node().graph_size().1 >= 2).then_some(())
        });
    }

    // A pays C through B (BOLT11); B earns the routing fee. (LDK lets the accepting side of
    // a channel cap in-flight inbound HTLCs at 10% of its capacity: payments stay under that.)
    let invoice = c.node().create_invoice(Some(40_000 * SAT), "coffee", 3600).expect("invoice");
    a.node().pay_invoice(&invoice, None).expect("pay");
    let fee = a.wait_event("A's payment to C", 60, |e| match e {
        NodeEvent::PaymentSent { fee_msat, .. } => Some(fee_msat.unwrap_or(0)),
        NodeEvent::PaymentFailed { reason, .. } => panic!("payment failed: {reason}"),
        _ => None,
    });
    c.wait_event("C paid", 30, |e| {
        matches!(e, NodeEvent::PaymentReceived { amount_msat, .. } if *amount_msat == 40_000 * SAT)
            .then_some(())
    });
    let forwarded = b.wait_event("B forwarded", 30, |e| match e {
        NodeEvent::PaymentForwarded { fee_msat } => Some(*fee_msat),
        _ => None,
    });
    assert!(fee > 0 && forwarded == fee, "A paid {fee} msat in fees, B earned {forwarded}");
    // Default policy: 1000 msat base + 100 ppm of 40,000 sat.
    assert_eq!(fee, 1_000 + 40_000 * SAT / 10_000);
    let b_status = b.wait_status("B's earnings", 10, |s| s.earnings.total_msat == fee);
    assert_eq!(b_status.earnings.forwards, 1);
    assert_eq!(b_status.earnings.today_msat, fee);

    // C pays A back through B, once the received HTLC is irrevocably C's: PaymentReceived
    // fires at claim time, before the commitment round trip that makes it spendable.
    c.wait_status("C can send what it received", 30, |s| {
        s.channels.iter().any(|ch| ch.local_msat >= 20_001 * SAT)
    });
    let invoice = a.node().create_invoice(Some(20_000 * SAT), "change", 3600).expect("invoice");
    c.node().pay_invoice(&invoice, None).expect("pay");
    c.wait_event("C's payment to A", 60, |e| match e {
        NodeEvent::PaymentSent { .. } => Some(()),
        NodeEvent::PaymentFailed { reason, .. } => panic!("payment failed: {reason}"),
        _ => None,
    });
    a.wait_event("A paid", 30, |e| {
        matches!(e, NodeEvent::PaymentReceived { amount_msat, .. } if *amount_msat == 20_000 * SAT)
            .then_some(())
    });

    // Keysend A → B.
    a.node().keysend(&b.node().node_id(), 10_000 * SAT).expect("keysend");
    b.wait_event("keysend received", 30, |e| {
        matches!(e, NodeEvent::PaymentReceived { amount_msat, .. } if *amount_msat == 10_000 * SAT)
            .then_some(())
    });

    // BOLT12: an offer from C, paid by A (onion messages go through B).
    wait_until(Deadline::in_secs(90), "B's and C's node announcements reach A", || {
        let n = a.node();
        (n.graph_has_announced_node(&b.node().node_id()) && n.graph_has_announced_node(&c.node().node_id()))
            .then_some(())
    });
    let offer = c.node().create_offer(Some(15_000 * SAT), "tea").expect("offer");
    a.node().pay_offer(&offer, None).expect("pay offer");
    c.wait_event("offer paid", 60, |e| {
        matches!(e, NodeEvent::PaymentReceived { amount_msat, .. } if *amount_msat == 15_000 * SAT)
            .then_some(())
    });
    a.wait_event("A's offer payment done", 30, |e| match e {
        NodeEvent::PaymentSent { .. } => Some(()),
        NodeEvent::PaymentFailed { reason, .. } => panic!("offer payment failed: {reason}"),
        _ => None,
    });

    // Restart B: channels, balances and fees earned survive.
    let before = b.wait_status("B settled, no HTLC in flight", 30, |s| {
        s.channels.iter().all(|c| c.usable) && s.balances.in_flight_htlc_msat == 0
    });
    let node_id = before.node_id.clone();
    b.restart();
    let after = b.wait_status("B back with its channels usable", 90, |s| {
        s.channels.len() == 2 && s.channels.iter().all(|c| c.usable)
    });
    assert_eq!(after.node_id, node_id);
    assert_eq!(after.earnings, before.earnings);
    assert_eq!(after.balances.lightning_sats, before.balances.lightning_sats);
    let capacities = |s: &boltbox_node::Status| {
        let mut v: Vec<(String, u64)> =
            s.channels.iter().map(|c| (c.channel_id.clone(), c.local_msat)).collect();
        v.sort();
        v
    };
    assert_eq!(capacities(&after), capacities(&before));
    assert_eq!(after.payments.received, before.payments.received);

    // Still routes after the restart.
    let invoice = c.node().create_invoice(Some(5_000 * SAT), "after restart", 3600).expect("invoice");
    a.node().pay_invoice(&invoice, None).expect("pay");
    c.wait_event("paid after B's restart", 60, |e| {
        matches!(e, NodeEvent::PaymentReceived { amount_msat, .. } if *amount_msat == 5_000 * SAT)
            .then_some(())
    });
    let routed = b.wait_status("B's fee for it", 30, |s| s.earnings.forwards == before.earnings.forwards + 1);
    assert!(routed.earnings.total_msat > before.earnings.total_msat);

    // Cooperative close of A–B: A's side returns on-chain once mined.
    let onchain_before = a.node().refresh_status().balances.onchain_total_sats;
    let mempool_before = bitcoind.mempool().expect("mempool").len();
    a.node().close_channel(&ab, false).expect("close");
    a.wait_event("A–B closed", 60, |e| matches!(e, NodeEvent::ChannelClosed { .. }).then_some(()));
    bitcoind.wait_for_mempool(mempool_before + 1, Deadline::in_secs(30));
    mine_and_sync(&bitcoind, 6, &[&a, &b], 60);
    let closed = a.wait_status("A's funds back on-chain", 60, |s| {
        s.channels.is_empty() && s.balances.onchain_total_sats > onchain_before + 400_000
    });
    assert_eq!(closed.balances.lightning_sats, 0);
}

#[test]
fn a_lost_chain_source_is_an_alert_and_the_node_recovers() {
    let mut bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let node = TestNode::start(&bitcoind, "dave", vec![]);
    let height = bitcoind.height().expect("height") as u32;
    node.wait_status("synced", 60, |s| s.sync.lightning_height == height && s.sync.chain_tip == Some(height));

    bitcoind.stop();
    let down = node.wait_status("the alert", 30, |s| {
        s.alerts.iter().any(|a| matches!(a, Alert::ChainSourceUnreachable { .. }))
    });
    assert!(down.running, "the node keeps running without its chain source");
    // Still answers what needs no chain: an invoice.
    node.node().create_invoice(Some(1_000), "offline", 600).expect("invoice while bitcoind is down");

    bitcoind.restart().expect("bitcoind back");
    bitcoind.mine(3).expect("mine");
    let up = node.wait_status("recovery", 60, |s| {
        s.alerts.iter().all(|a| !matches!(a, Alert::ChainSourceUnreachable { .. }))
            && s.sync.lightning_height == height + 3
    });
    assert_eq!(up.sync.chain_tip, Some(height + 3));
}

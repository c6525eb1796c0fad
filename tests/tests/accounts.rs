//! Accounts on a real node against a real bitcoind on regtest (docs/ACCOUNTS.md): A keeps the
//! accounts; B pays A's invoices over their channel; A's accounts pay C through B (a real
//! routing fee). An invoice for an account credits it exactly once, also across restarts of A
//! while the payment arrives; a split credits its accounts by weight; a payment from an
//! account costs amount plus the actual fee; a failed payment releases its hold (and the
//! invoice cannot be tried again from an account); a budget refuses the payment that would
//! exceed it; main cannot spend what accounts hold. The ledger's invariant is checked
//! throughout.

use boltbox_node::NodeEvent;
use boltbox_node::accounts::{MAIN, Op};
use boltbox_tests::{BitcoinD, Deadline, TestNode, mine_and_sync, wait_for_gossip, wait_until};

const SAT: u64 = 1000;

fn balance(node: &TestNode, name: &str) -> u64 {
    let accounts = node.node().accounts();
    let id = accounts.resolve(name).expect("account");
    accounts.show(id).expect("open").balance_msat
}

fn open(node: &TestNode, name: &str) -> u64 {
    let op = Op::Open { id: 0, name: name.into(), key: [3; 32] };
    node.node().account_ops(vec![op]).expect("stored").pop().expect("outcome").expect("opened");
    node.node().accounts().resolve(name).expect("named")
}

fn paid_by(payer: &mut TestNode, invoice: &str, amount_msat: u64) {
    payer.node().pay_invoice(invoice, None).expect("pay");
    payer.wait_event("payment sent", 60, |e| match e {
        NodeEvent::PaymentSent { .. } => Some(()),
        NodeEvent::PaymentFailed { reason, .. } => panic!("payment of {amount_msat} msat failed: {reason}"),
        _ => None,
    });
}

/// Waits until account `name` of `node` holds `msat`.
fn wait_balance(node: &TestNode, name: &str, msat: u64) {
    wait_until(Deadline::in_secs(60), &format!("{name} holds {msat} msat"), || {
        (balance(node, name) == msat).then_some(())
    });
}

#[test]
fn accounts_credit_split_pay_release_and_budget_on_regtest() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let mut a = TestNode::start(&bitcoind, "alice", vec![]);
    let mut b = TestNode::start(&bitcoind, "bob", vec![]);
    let c = TestNode::start(&bitcoind, "carol", vec![]);
    a.fund(&bitcoind, 1_000_000);
    b.fund(&bitcoind, 1_000_000);
    c.fund(&bitcoind, 100_000);
    mine_and_sync(&bitcoind, 6, &[&a, &b, &c], 60);
    for node in [&a, &b, &c] {
        node.wait_status("on-chain funds", 60, |s| s.balances.onchain_spendable_sats >= 100_000);
    }
    // A–B with 200,000 sat pushed to B (so that B can pay A), B–C.
    let mempool = bitcoind.mempool().expect("mempool").len();
    a.node().open_channel(&b.peer_address(), 600_000, Some(200_000 * SAT), true).expect("open");
    a.wait_event("ChannelPending", 30, |e| matches!(e, NodeEvent::ChannelPending { .. }).then_some(()));
    bitcoind.wait_for_mempool(mempool + 1, Deadline::in_secs(30));
    mine_and_sync(&bitcoind, 6, &[&a, &b, &c], 60);
    b.open_channel_to(&bitcoind, &c, 500_000);
    mine_and_sync(&bitcoind, 6, &[&a, &b, &c], 60);
    b.wait_status("both of B's channels usable", 60, |s| s.usable_channels() == 2);
    wait_for_gossip(&bitcoind, &[&a, &b, &c], 180, "B–C in A's graph", || {
        (a.node().graph_size().1 >= 2).then_some(())
    });

    let x = open(&a, "x");
    let y = open(&a, "y");

    // An invoice for X, paid by B while A restarts: credited exactly once (before the
    // restart, or from the replayed event after it), and not again after another restart.
    let invoice = a.node().account_invoice(vec![(x, 1)], Some(30_000 * SAT), "for x", 3600).expect("invoice");
    b.node().pay_invoice(&invoice, None).expect("pay");
    a.restart();
    b.wait_event("B's payment to X", 90, |e| match e {
        NodeEvent::PaymentSent { .. } => Some(()),
        NodeEvent::PaymentFailed { reason, .. } => panic!("B's payment failed: {reason}"),
        _ => None,
    });
    wait_balance(&a, "x", 30_000 * SAT);
    a.restart();
    assert_eq!(balance(&a, "x"), 30_000 * SAT, "credited once");
    a.wait_status("A's channel usable again", 60, |s| s.usable_channels() == 1);
    b.wait_status("B's channels usable again", 60, |s| s.usable_channels() == 2);
    assert_eq!(a.node().accounts().check(), Ok(30_000 * SAT));

    // A split, X 1 : Y 2.
    let split =
        a.node().account_invoice(vec![(x, 1), (y, 2)], Some(9_000 * SAT), "split", 3600).expect("split");
    paid_by(&mut b, &split, 9_000 * SAT);
    wait_balance(&a, "y", 6_000 * SAT);
    assert_eq!(balance(&a, "x"), 33_000 * SAT);

    // X pays C through B: amount plus the fee LDK reports.
    let before = balance(&a, "x");
    let bill = c.node().create_invoice(Some(10_000 * SAT), "bill", 3600).expect("bill");
    let payment = a.node().account_pay(x, &bill, None).expect("pay from x");
    let fee = a.wait_event("X's payment", 60, |e| match e {
        NodeEvent::PaymentSent { fee_msat, .. } => Some(fee_msat.unwrap_or(0)),
        NodeEvent::PaymentFailed { reason, .. } => panic!("X's payment failed: {reason}"),
        _ => None,
    });
    let hash = boltbox_node::accounts::parse_hex32(&payment.payment_hash).expect("hash");
    assert!(a.node().accounts().wait_hold_gone(&hash, std::time::Duration::from_secs(30)), "settled");
    assert!(fee > 0, "routed through B, a fee was paid");
    assert_eq!(balance(&a, "x"), before - 10_000 * SAT - fee);
    assert_eq!(a.node().accounts().show(x).expect("x").held_msat, 0);

    // A payment that cannot succeed (more than C's channel takes in flight) releases its hold;
    // the invoice is not tried again from an account.
    let funded = a.node().account_ops(vec![Op::Transfer {
        from: MAIN,
        to: x,
        amount_msat: 80_000 * SAT,
        nonce: 0,
        mac: None,
    }]);
    funded.expect("stored").pop().expect("outcome").expect("funded from main");
    let before = balance(&a, "x");
    let too_big = c.node().create_invoice(Some(90_000 * SAT), "too big", 3600).expect("invoice");
    match a.node().account_pay(x, &too_big, None) {
        Ok(payment) => {
            let hash = boltbox_node::accounts::parse_hex32(&payment.payment_hash).expect("hash");
            assert!(
                a.node().accounts().wait_hold_gone(&hash, std::time::Duration::from_secs(90)),
                "released"
            );
        }
        Err(e) => println!("refused at once: {e}"),
    }
    let x_now = a.node().accounts().show(x).expect("x");
    assert_eq!((x_now.balance_msat, x_now.held_msat), (before, 0), "the hold returned whole");
    let again = a.node().account_pay(x, &too_big, None).expect_err("tried before");
    assert!(again.to_string().contains("at most once"), "{again}");

    // Y's budget: 5,000 sat a day; a 5,500 sat payment (Y has 6,000) is refused before it
    // starts.
    let budget = Op::SetBudget { account: y, limit_msat: Some(5_000 * SAT), period_secs: 86_400 };
    a.node().account_ops(vec![budget]).expect("stored").pop().expect("outcome").expect("budget set");
    let bill = c.node().create_invoice(Some(5_500 * SAT), "over budget", 3600).expect("bill");
    let refused = a.node().account_pay(y, &bill, Some(100 * SAT)).expect_err("over budget");
    assert!(refused.to_string().contains("budget"), "{refused}");
    assert_eq!(balance(&a, "y"), 6_000 * SAT);

    // Main cannot spend what the accounts hold.
    let main = a.node().main_account_msat();
    let big = c.node().create_invoice(Some(main + SAT), "more than main", 3600).expect("invoice");
    let refused = a.node().pay_invoice(&big, None).expect_err("main has less");
    assert!(refused.to_string().contains("main account"), "{refused}");

    let tracked = a.node().accounts().check().expect("invariant");
    assert_eq!(tracked, balance(&a, "x") + balance(&a, "y"));
    assert!(tracked + a.node().main_account_msat() <= a.node().status().balances.lightning_sats * SAT + SAT);
}

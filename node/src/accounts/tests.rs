use super::*;

const NOW: u64 = 1_700_000_000;

fn ledger(dir: &tempfile::TempDir) -> Accounts {
    let store = Store::open(&dir.path().join("store.redb")).expect("store");
    Accounts::load(&store, Accounts::default_engine()).expect("load")
}

fn open(accounts: &Accounts, name: &str) -> AccountId {
    let op = Op::Open { id: 0, name: name.into(), key: [7; 32] };
    accounts.apply_one(op, NOW, 0).expect("stored").expect("opened");
    accounts.resolve(name).expect("named")
}

fn transfer(from: AccountId, to: AccountId, amount_msat: u64) -> Op {
    Op::Transfer { from, to, amount_msat, nonce: 0, mac: None }
}

fn balance(accounts: &Accounts, id: AccountId) -> (u64, u64) {
    let view = accounts.show(id).expect("open");
    (view.balance_msat, view.held_msat)
}

#[test]
fn transfers_keep_to_what_main_and_accounts_have() {
    let dir = tempfile::tempdir().expect("tmp");
    let accounts = ledger(&dir);
    let (a, b) = (open(&accounts, "alice"), open(&accounts, "bob"));
    // Main has 10,000 msat spendable in all: funding more is refused.
    let out = accounts
        .apply(vec![transfer(MAIN, a, 6_000), transfer(MAIN, b, 5_000)], NOW, 10_000)
        .expect("stored");
    assert!(out[0].is_ok());
    assert_eq!(out[1], Err(LedgerError::MainInsufficient { available_msat: 4_000, needed_msat: 5_000 }));
    let out = accounts.apply(
        vec![transfer(a, b, 7_000), transfer(a, b, 2_500), transfer(b, MAIN, 500)],
        NOW,
        10_000,
    );
    let out = out.expect("stored");
    assert!(matches!(out[0], Err(LedgerError::Insufficient { available_msat: 6_000, .. })));
    assert_eq!(out[2], Ok(Done { tracked_out_msat: 500, ..Done::default() }));
    assert_eq!((balance(&accounts, a), balance(&accounts, b)), ((3_500, 0), (2_000, 0)));
    assert_eq!(accounts.check(), Ok(5_500));
    // Closing needs an empty account; names are unique among open accounts.
    assert!(matches!(
        accounts.apply_one(Op::Close { id: a }, NOW, 10_000).expect("stored"),
        Err(LedgerError::NotEmpty { .. })
    ));
    let taken =
        accounts.apply_one(Op::Open { id: 0, name: "alice".into(), key: [0; 32] }, NOW, 0).expect("stored");
    assert_eq!(taken, Err(LedgerError::NameTaken("alice".into())));

    // All of it is in the store.
    drop(accounts);
    let again = ledger(&dir);
    assert_eq!((balance(&again, a), balance(&again, b)), ((3_500, 0), (2_000, 0)));
    assert_eq!(again.check(), Ok(5_500));
    assert_eq!(again.resolve("bob"), Some(b));
}

#[test]
fn signed_transfers_need_the_key_and_a_fresh_nonce() {
    let dir = tempfile::tempdir().expect("tmp");
    let accounts = ledger(&dir);
    let (a, b) = (open(&accounts, "till-1"), open(&accounts, "shop"));
    accounts.apply_one(transfer(MAIN, a, 1_000), NOW, 1_000).expect("stored").expect("funded");
    let key = accounts.key(a).expect("key");
    let signed = |nonce, amount_msat, key: &[u8; 32]| Op::Transfer {
        from: a,
        to: b,
        amount_msat,
        nonce,
        mac: Some(transfer_mac(key, a, b, amount_msat, nonce)),
    };
    let out = accounts
        .apply(
            vec![signed(1, 100, &key), signed(1, 100, &key), signed(2, 100, &[1; 32]), signed(5, 100, &key)],
            NOW,
            1_000,
        )
        .expect("stored");
    assert!(out[0].is_ok());
    assert_eq!(out[1], Err(LedgerError::Replay { id: a, nonce: 1, last: 1 }));
    assert_eq!(out[2], Err(LedgerError::BadMac(a)));
    assert!(out[3].is_ok());
    let main_signed = Op::Transfer { from: MAIN, to: a, amount_msat: 1, nonce: 1, mac: Some([0; 32]) };
    assert_eq!(accounts.apply_one(main_signed, NOW, 1_000).expect("stored"), Err(LedgerError::MainSigned));
    assert_eq!(balance(&accounts, b), (200, 0));
}

#[test]
fn a_split_invoice_is_credited_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let accounts = ledger(&dir);
    let (a, b, c) = (open(&accounts, "a"), open(&accounts, "b"), open(&accounts, "c"));
    let hash = [9; 32];
    let invoice = Op::Invoice { payment_hash: hash, shares: vec![(a, 1), (b, 1), (c, 1)] };
    accounts.apply_one(invoice, NOW, 0).expect("stored").expect("recorded");
    let credit = Op::Credit { payment_hash: hash, amount_msat: 1_000 };
    let out = accounts.apply(vec![credit.clone(), credit.clone()], NOW, 0).expect("stored");
    assert_eq!(out[0], Ok(Done { tracked_in_msat: 1_000, ..Done::default() }));
    assert_eq!(out[1], Err(LedgerError::AlreadyCredited));
    // What rounding leaves goes to the first share.
    assert_eq!([balance(&accounts, a).0, balance(&accounts, b).0, balance(&accounts, c).0], [334, 333, 333]);
    // A replay after a restart credits nothing either.
    drop(accounts);
    let again = ledger(&dir);
    assert_eq!(again.apply_one(credit, NOW, 0).expect("stored"), Err(LedgerError::AlreadyCredited));
    assert_eq!(again.check(), Ok(1_000));
    let unknown = Op::Credit { payment_hash: [1; 32], amount_msat: 5 };
    assert_eq!(again.apply_one(unknown, NOW, 0).expect("stored"), Err(LedgerError::UnknownInvoice));
}

#[test]
fn holds_settle_with_the_fee_paid_and_release_whole_within_the_budget() {
    let dir = tempfile::tempdir().expect("tmp");
    let accounts = ledger(&dir);
    let a = open(&accounts, "kid");
    accounts.apply_one(transfer(MAIN, a, 100_000), NOW, 100_000).expect("stored").expect("funded");
    let budget = Op::SetBudget { account: a, limit_msat: Some(30_000), period_secs: 86_400 };
    accounts.apply_one(budget, NOW, 100_000).expect("stored").expect("set");
    let hold =
        |hash, amount_msat| Op::Hold { payment_hash: hash, account: a, amount_msat, fee_limit_msat: 1_000 };
    let out = accounts.apply(
        vec![hold([1; 32], 10_000), hold([2; 32], 10_000), hold([3; 32], 10_000)],
        NOW,
        100_000,
    );
    let out = out.expect("stored");
    assert!(out[0].is_ok() && out[1].is_ok());
    assert_eq!(out[2], Err(LedgerError::Budget { id: a, left_msat: 8_000, needed_msat: 11_000 }));
    assert_eq!(balance(&accounts, a), (100_000, 22_000));
    accounts.check().expect("invariant");

    let settle = Op::Settle { payment_hash: [1; 32], fee_paid_msat: Some(300) };
    let out = accounts.apply(
        vec![settle.clone(), Op::Release { payment_hash: [2; 32] }, settle],
        NOW + 60,
        100_000,
    );
    let out = out.expect("stored");
    assert_eq!(out[0], Ok(Done { tracked_out_msat: 10_300, ..Done::default() }));
    assert!(out[1].is_ok());
    assert_eq!(out[2], Err(LedgerError::UnknownHold));
    assert_eq!(balance(&accounts, a), (89_700, 0));
    // The unused fee and the released hold went back to the budget: 10,300 spent.
    let view = accounts.show(a).expect("open");
    assert_eq!(view.budget, Some((30_000, 86_400, 10_300)));
    // The next period starts afresh.
    let out = accounts.apply_one(hold([4; 32], 25_000), NOW + 86_400, 100_000).expect("stored");
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(accounts.check(), Ok(89_700));
}

#[test]
fn names_are_checked_and_freed() {
    let dir = tempfile::tempdir().expect("tmp");
    let accounts = ledger(&dir);
    for bad in ["", "123", "+5", "Main", " x", "a\nb", &"n".repeat(33)] {
        let out =
            accounts.apply_one(Op::Open { id: 0, name: bad.into(), key: [0; 32] }, NOW, 0).expect("stored");
        assert!(matches!(out, Err(LedgerError::InvalidName(_))), "{bad:?}: {out:?}");
    }
    let a = open(&accounts, "x");
    let out = accounts
        .apply(vec![Op::Rename { id: a, name: "y".into() }, Op::Rename { id: a, name: "z".into() }], NOW, 0)
        .expect("stored");
    assert!(out.iter().all(Result::is_ok));
    assert_eq!((accounts.resolve("x"), accounts.resolve("y"), accounts.resolve("z")), (None, None, Some(a)));
    accounts.apply_one(Op::Close { id: a }, NOW, 0).expect("stored").expect("closed");
    assert_eq!(accounts.resolve("z"), None);
    // A closed account's id is never given again; its name is free.
    let b = open(&accounts, "z");
    assert!(b > a);
    assert_eq!(accounts.list().len(), 1);
}

//! The accounts ledger on the parallel engine against the sequential oracle: random mixes of
//! every operation (transfers signed and unsigned, invoices with splits, credits, holds,
//! settles, releases, budgets, renames, closes, and failures of each) over 2 to 10,000
//! accounts, in batches, at 1, 2 and 2x cores engine threads, each ledger in its own store. The
//! same outcome per operation, the same final ledger (also after reloading it from the store),
//! and the invariant after every batch.

use boltbox_executor::engine::{Parallel, Scheduling};
use boltbox_node::Store;
use boltbox_node::accounts::{AccountId, Accounts, Engine, LedgerError, MAIN, Op, transfer_mac};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;

const KEY: [u8; 32] = [5; 32];
const SPENDABLE: u64 = 1 << 40;

fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// One random operation over accounts `1..=accounts` and a small pool of payment hashes (so
/// that credits, settles and releases meet their invoices and holds).
fn op(accounts: u64) -> impl Strategy<Value = Op> {
    let id = 0..=accounts + 1; // MAIN, the accounts, and one that does not exist
    let hash = (0u8..6).prop_map(|h| [h; 32]);
    let amount = prop_oneof![1u64..1_000, 0u64..2, 1_000u64..1_000_000];
    prop_oneof![
        8 => (id.clone(), id.clone(), amount.clone()).prop_map(|(from, to, amount_msat)| Op::Transfer {
            from, to, amount_msat, nonce: 0, mac: None
        }),
        4 => (id.clone(), id.clone(), amount.clone(), 0u64..4, any::<bool>()).prop_map(|(from, to, amount_msat, nonce, good)| {
            let key = if good { KEY } else { [6; 32] };
            Op::Transfer { from, to, amount_msat, nonce, mac: Some(transfer_mac(&key, from, to, amount_msat, nonce)) }
        }),
        2 => (hash.clone(), proptest::collection::vec((id.clone(), 0u32..4), 0..4))
            .prop_map(|(payment_hash, shares)| Op::Invoice { payment_hash, shares }),
        2 => (hash.clone(), amount.clone()).prop_map(|(payment_hash, amount_msat)| Op::Credit { payment_hash, amount_msat }),
        3 => (hash.clone(), id.clone(), amount.clone(), 0u64..100).prop_map(|(payment_hash, account, amount_msat, fee_limit_msat)| {
            Op::Hold { payment_hash, account, amount_msat, fee_limit_msat }
        }),
        2 => (hash.clone(), proptest::option::of(0u64..200)).prop_map(|(payment_hash, fee_paid_msat)| Op::Settle { payment_hash, fee_paid_msat }),
        1 => hash.prop_map(|payment_hash| Op::Release { payment_hash }),
        1 => (id.clone(), proptest::option::of(0u64..5_000), 0u64..3).prop_map(|(account, limit_msat, period_secs)| {
            Op::SetBudget { account, limit_msat, period_secs }
        }),
        1 => (id.clone(), 0u8..3).prop_map(|(id, n)| Op::Rename { id, name: format!("n{n}") }),
        1 => id.prop_map(|id| Op::Close { id }),
    ]
}

fn case() -> impl Strategy<Value = (u64, Vec<(u64, Vec<Op>)>)> {
    prop_oneof![4 => Just(2u64), 4 => Just(17), 3 => Just(300), 1 => Just(10_000)].prop_flat_map(|accounts| {
        let batch = proptest::collection::vec(op(accounts), 1..400);
        (Just(accounts), proptest::collection::vec((0u64..3, batch), 1..4))
    })
}

fn ledger(dir: &tempfile::TempDir, name: &str, engine: Engine) -> Accounts {
    let store = Store::open(&dir.path().join(name)).expect("store");
    Accounts::load(&store, engine).expect("load")
}

/// Opens the accounts and funds each from main.
fn setup(ledger: &Accounts, accounts: u64) {
    let opens = (1..=accounts).map(|i| Op::Open { id: 0, name: format!("acct-{i}"), key: KEY }).collect();
    assert!(ledger.apply(opens, 0, SPENDABLE).expect("stored").iter().all(Result::is_ok));
    let funds = (1..=accounts)
        .map(|to| Op::Transfer { from: MAIN, to, amount_msat: 10_000 + to, nonce: 0, mac: None })
        .collect();
    assert!(ledger.apply(funds, 0, SPENDABLE).expect("stored").iter().all(Result::is_ok));
}

type Outcomes = Vec<Result<(u64, u64), LedgerError>>;

fn run(ledger: &Accounts, batches: &[(u64, Vec<Op>)]) -> Vec<Outcomes> {
    let mut all = Vec::new();
    let mut expected = ledger.tracked_msat();
    for (i, (step, ops)) in batches.iter().enumerate() {
        // Time moves by 0 to 2 budget periods (of 1 and 2 s) between batches.
        let now = 1_000 + i as u64 * 2 + step;
        let out = ledger.apply(ops.clone(), now, SPENDABLE).expect("stored");
        let out: Outcomes =
            out.into_iter().map(|r| r.map(|d| (d.tracked_in_msat, d.tracked_out_msat))).collect();
        for (tin, tout) in out.iter().flatten() {
            expected = expected + tin - tout;
        }
        assert_eq!(ledger.check(), Ok(expected), "the invariant after batch {i}");
        all.push(out);
    }
    all
}

type View = (Vec<boltbox_node::accounts::AccountView>, Vec<([u8; 32], boltbox_node::accounts::Hold)>, u64);

fn snapshot(ledger: &Accounts) -> View {
    let mut holds = ledger.holds();
    holds.sort_by_key(|(hash, _)| *hash);
    (ledger.list(), holds, ledger.tracked_msat())
}

/// The ledger on the engine at 1, 2 and 2x cores threads against the sequential oracle.
fn same_as_the_oracle(accounts: u64, batches: &[(u64, Vec<Op>)]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tmp");
    let oracle = ledger(&dir, "oracle.redb", Engine::Sequential);
    setup(&oracle, accounts);
    let expected = run(&oracle, batches);
    let expected_state = snapshot(&oracle);
    for n in [1, 2, 2 * threads()] {
        let parallel = Parallel::new(n).expect("engine").with_scheduling(Scheduling::Phased);
        let name = format!("engine-{n}.redb");
        let ledger = ledger(&dir, &name, Engine::Parallel(parallel));
        setup(&ledger, accounts);
        let outcomes = run(&ledger, batches);
        prop_assert_eq!(&outcomes, &expected, "outcomes at {} threads", n);
        prop_assert_eq!(&snapshot(&ledger), &expected_state, "ledger at {} threads", n);
    }
    // What is stored is what was in memory.
    drop(oracle);
    let reloaded = ledger(&dir, "oracle.redb", Engine::Sequential);
    prop_assert_eq!(snapshot(&reloaded), expected_state);
    Ok(())
}

proptest! {
    // 16 cases in `make test`; PROPTEST_CASES sets more (`make reliability`: 200).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(16),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_engine_keeps_the_ledger_of_the_sequential_oracle((accounts, batches) in case()) {
        same_as_the_oracle(accounts, &batches)?;
    }
}

/// The largest ledger every run, whatever the random cases drew.
#[test]
fn ten_thousand_accounts_keep_the_ledger_of_the_oracle() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let batches =
        proptest::collection::vec((0u64..3, proptest::collection::vec(op(10_000), 1_000..2_000)), 2..3)
            .new_tree(&mut runner)
            .expect("a case")
            .current();
    same_as_the_oracle(10_000, &batches).expect("the same as the oracle");
}

#[test]
fn an_account_id_that_is_not_open_is_refused_by_both() {
    let dir = tempfile::tempdir().expect("tmp");
    let ledger = ledger(&dir, "l.redb", Engine::Sequential);
    setup(&ledger, 2);
    let missing: AccountId = 3;
    let out = ledger.apply_one(
        Op::Transfer { from: 1, to: missing, amount_msat: 5, nonce: 0, mac: None },
        0,
        SPENDABLE,
    );
    assert_eq!(out.expect("stored"), Err(LedgerError::NoAccount(missing)));
}

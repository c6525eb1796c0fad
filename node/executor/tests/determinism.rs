//! The parallel engine against the sequential oracle: same final state, same outcome for every
//! transaction, at 1, 2, cores and 2x cores threads, from 2 to 10,000 keys.

use std::num::NonZeroUsize;

use boltbox_executor::bench::{Transfer, TransferError, funded_accounts, random_transfers};
use boltbox_executor::engine::{
    Access, Executor, Outcome, Parallel, Scheduling, Sequential, State, Transaction, TxContext, TxError,
};
use proptest::prelude::*;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

fn thread_counts() -> Vec<usize> {
    let mut counts = vec![1, 2, cores(), 2 * cores()];
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// Every engine configuration the oracle is compared with: automatic scheduling with default
/// chunks, and forced parallel phases with default chunks and with chunks of `small_chunk_rows`
/// declared keys (many chunk borders).
fn engines(small_chunk_rows: usize) -> Vec<Parallel> {
    let mut engines = Vec::new();
    for threads in thread_counts() {
        let parallel = Parallel::new(threads).expect("threads > 0");
        engines.push(parallel.clone());
        let forced = parallel.with_scheduling(Scheduling::Phased);
        engines.push(forced.clone());
        engines.push(forced.with_chunk_rows(small_chunk_rows).expect("valid chunk"));
    }
    engines
}

/// A transaction that reads its declared reads, fails on some sums, writes or deletes its
/// declared writes, reads its own write back, and may touch a key it did not declare.
#[derive(Debug, Clone)]
struct Script {
    reads: Vec<u64>,
    writes: Vec<u64>,
    add: u64,
    fail_on: u64,
    delete_first: bool,
    stray: Option<(u64, Access)>,
}

impl Transaction for Script {
    type Key = u64;
    type Value = u64;
    type Output = (u64, Option<u64>);
    type Error = u64;

    fn reads(&self) -> &[u64] {
        &self.reads
    }

    fn writes(&self) -> &[u64] {
        &self.writes
    }

    fn execute(&self, ctx: &mut TxContext<'_, u64, u64>) -> Result<(u64, Option<u64>), u64> {
        let mut sum = 0u64;
        for key in &self.reads {
            let value = ctx.get(key).map_err(|_| u64::MAX)?.copied().unwrap_or(1000);
            sum = sum.wrapping_mul(31).wrapping_add(value);
        }
        // A misbehaving transaction ignores the error; the engine must still catch it.
        match self.stray {
            Some((key, Access::Read)) => {
                let _ = ctx.get(&key);
            }
            Some((key, Access::Write)) => {
                let _ = ctx.put(key, sum);
            }
            None => {}
        }
        if sum % 8 == self.fail_on {
            return Err(sum);
        }
        for (index, key) in self.writes.iter().enumerate() {
            if index == 0 && self.delete_first {
                ctx.delete(key).map_err(|_| u64::MAX)?;
            } else {
                ctx.put(*key, sum.wrapping_add(self.add).wrapping_add(index as u64)).map_err(|_| u64::MAX)?;
            }
        }
        let own = match self.writes.first() {
            Some(key) => ctx.get(key).map_err(|_| u64::MAX)?.copied(),
            None => None,
        };
        Ok((sum, own))
    }
}

fn script(keys: u64) -> impl Strategy<Value = Script> {
    let key = 0..keys;
    let stray = prop_oneof![
        8 => Just(None),
        1 => (0..keys + 3).prop_map(|key| Some((key, Access::Read))),
        1 => (0..keys + 3).prop_map(|key| Some((key, Access::Write))),
    ];
    (
        prop::collection::vec(key.clone(), 0..4),
        prop::collection::vec(key, 0..3),
        any::<u8>(),
        0..12u64,
        prop::bool::weighted(0.1),
        stray,
    )
        .prop_map(|(reads, writes, add, fail_on, delete_first, stray)| Script {
            reads,
            writes,
            add: u64::from(add),
            fail_on,
            delete_first,
            stray,
        })
}

fn workload() -> impl Strategy<Value = (State<u64, u64>, Vec<Script>)> {
    prop::sample::select(vec![2u64, 3, 10, 100, 10_000]).prop_flat_map(|keys| {
        let initial = prop::collection::vec((0..keys, any::<u16>()), 0..40)
            .prop_map(|entries| entries.into_iter().map(|(k, v)| (k, u64::from(v))).collect::<State<_, _>>());
        (initial, prop::collection::vec(script(keys), 0..150))
    })
}

fn assert_matches_oracle<T>(initial: &State<T::Key, T::Value>, batch: &[T], small_chunk_rows: usize)
where
    T: Transaction,
    T::Key: std::fmt::Debug,
    T::Value: PartialEq + std::fmt::Debug,
    Outcome<T>: PartialEq + std::fmt::Debug,
{
    let mut expected = initial.clone();
    let expected_outcomes = Sequential.execute(&mut expected, batch);
    for engine in engines(small_chunk_rows) {
        let mut state = initial.clone();
        let outcomes = engine.execute(&mut state, batch);
        assert_eq!(outcomes, expected_outcomes, "outcomes of {engine:?}");
        assert_eq!(state, expected, "state after {engine:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn parallel_equals_sequential((initial, batch) in workload()) {
        assert_matches_oracle(&initial, &batch, 16);
    }
}

#[test]
fn undeclared_access_is_an_error_without_effect() {
    let initial: State<u64, u64> = [(1, 10), (2, 20)].into_iter().collect();
    let batch = vec![
        Script {
            reads: vec![1],
            writes: vec![2],
            add: 0,
            fail_on: 99,
            delete_first: false,
            stray: Some((3, Access::Read)),
        },
        Script {
            reads: vec![1],
            writes: vec![2],
            add: 0,
            fail_on: 99,
            delete_first: false,
            stray: Some((1, Access::Write)),
        },
        Script {
            reads: vec![1],
            writes: vec![2],
            add: 5,
            fail_on: 99,
            delete_first: false,
            stray: Some((2, Access::Read)),
        },
    ];
    let mut expected = initial.clone();
    let outcomes = Sequential.execute(&mut expected, &batch);
    assert_eq!(outcomes[0], Err(TxError::Undeclared { key: 3, access: Access::Read }));
    assert_eq!(outcomes[1], Err(TxError::Undeclared { key: 1, access: Access::Write }));
    assert_eq!(outcomes[2], Ok((10, Some(15))), "reading a declared write is allowed");
    assert_eq!(expected, [(1, 10), (2, 15)].into_iter().collect());
    assert_matches_oracle(&initial, &batch, 16);
}

#[test]
fn transfers_match_from_full_contention_to_ten_thousand_accounts() {
    for accounts in [2, 100, 10_000] {
        let initial = funded_accounts(accounts, 300);
        let batch = random_transfers(accounts, 5_000, 200, accounts);
        assert_matches_oracle(&initial, &batch, 2_048);
    }
}

/// FNV-1a, 64 bit: fixed output on every platform, unlike std's `DefaultHasher`.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Digest of the sorted final state and of every outcome, in little-endian bytes.
fn digest(state: &State<u64, u64>, outcomes: &[Outcome<Transfer>]) -> u64 {
    let mut entries: Vec<(u64, u64)> = state.iter().map(|(k, v)| (*k, *v)).collect();
    entries.sort_unstable();
    let mut hash = FNV_OFFSET;
    for (key, value) in entries {
        hash = fnv1a(hash, &key.to_le_bytes());
        hash = fnv1a(hash, &value.to_le_bytes());
    }
    for outcome in outcomes {
        let (tag, a, b) = match outcome {
            Ok(remaining) => (0u8, *remaining, 0),
            Err(TxError::Failed(TransferError::InsufficientFunds { balance, amount })) => {
                (1, *balance, *amount)
            }
            Err(TxError::Failed(TransferError::Overflow)) => (2, 0, 0),
            Err(TxError::Failed(TransferError::Undeclared(_))) | Err(TxError::Undeclared { .. }) => (3, 0, 0),
        };
        hash = fnv1a(hash, &[tag]);
        hash = fnv1a(hash, &a.to_le_bytes());
        hash = fnv1a(hash, &b.to_le_bytes());
    }
    hash
}

/// The same literal on x86_64 and on aarch64 (under qemu-user) proves the same final state and
/// outcomes on both architectures.
#[test]
fn seeded_workload_has_a_fixed_final_state_hash() {
    const EXPECTED: u64 = 0xadfb_433e_8b79_8850;
    let initial = funded_accounts(1_000, 1_000);
    let batch = random_transfers(1_000, 12_000, 1_500, 42);
    let mut sequential = initial.clone();
    let sequential_outcomes = Sequential.execute(&mut sequential, &batch);
    assert_eq!(digest(&sequential, &sequential_outcomes), EXPECTED, "sequential");
    for engine in engines(4_096) {
        let mut state = initial.clone();
        let outcomes = engine.execute(&mut state, &batch);
        assert_eq!(digest(&state, &outcomes), EXPECTED, "{engine:?}");
    }
}

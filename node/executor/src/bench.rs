//! The engine benchmark: peer-to-peer transfers (read two balances, write two) between 2, 100
//! and 10,000 accounts, on the sequential executor and on the parallel engine at 1..N threads.
//!
//! `cargo bench -p boltbox-executor` and `boltbox bench` call [`run`] and print [`format_table`].
//! Every parallel run is checked against the sequential result before it counts.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::engine::{
    EngineError, Executor, Outcome, Parallel, Scheduling, Sequential, State, Transaction, TxContext,
    UndeclaredKey,
};

/// Moves `amount` from the first account to the second; fails without effect on insufficient
/// funds. Its output is the payer's new balance.
///
/// `work` rounds of hashing stand in for the checks a real state transition does before it
/// touches balances (a channel update verifies signatures: tens of microseconds on a Pi);
/// 0 makes the transfer as cheap as it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    accounts: [u64; 2],
    amount: u64,
    work: u32,
}

impl Transfer {
    /// A transfer of `amount` from `from` to `to`.
    pub fn new(from: u64, to: u64, amount: u64) -> Self {
        Self { accounts: [from, to], amount, work: 0 }
    }

    /// The same transfer doing `work` rounds of hashing first.
    pub fn with_work(self, work: u32) -> Self {
        Self { work, ..self }
    }
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransferError {
    /// The payer's balance is below the amount.
    #[error("insufficient funds: balance {balance}, amount {amount}")]
    InsufficientFunds {
        /// The payer's balance.
        balance: u64,
        /// The amount.
        amount: u64,
    },
    /// The payee's balance would overflow.
    #[error("payee balance would overflow")]
    Overflow,
    /// The transfer touched an undeclared key (impossible for this type; kept for `?`).
    #[error(transparent)]
    Undeclared(#[from] UndeclaredKey),
}

impl Transaction for Transfer {
    type Key = u64;
    type Value = u64;
    type Output = u64;
    type Error = TransferError;

    fn reads(&self) -> &[u64] {
        &self.accounts
    }

    fn writes(&self) -> &[u64] {
        &self.accounts
    }

    fn execute(&self, ctx: &mut TxContext<'_, u64, u64>) -> Result<u64, TransferError> {
        let [from, to] = self.accounts;
        let mut check = SplitMix64::new(from ^ to.rotate_left(32) ^ self.amount);
        for _ in 0..self.work {
            std::hint::black_box(check.next_u64());
        }
        let balance = ctx.get(&from)?.copied().unwrap_or(0);
        let payee = ctx.get(&to)?.copied().unwrap_or(0);
        let remaining = balance
            .checked_sub(self.amount)
            .ok_or(TransferError::InsufficientFunds { balance, amount: self.amount })?;
        let credited = payee.checked_add(self.amount).ok_or(TransferError::Overflow)?;
        ctx.put(from, remaining)?;
        ctx.put(to, credited)?;
        Ok(remaining)
    }
}

/// SplitMix64: a tiny generator with the same output on every platform, so that a seed names
/// the same workload everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0); the slight modulo bias does not matter here.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// Accounts `0..count`, each holding `balance`.
pub fn funded_accounts(count: u64, balance: u64) -> State<u64, u64> {
    (0..count).map(|account| (account, balance)).collect()
}

/// `count` transfers between two distinct accounts of `0..accounts` (at least 2), with amounts in
/// `1..=max_amount`, and no extra work (see [`Transfer::with_work`]).
pub fn random_transfers(accounts: u64, count: usize, max_amount: u64, seed: u64) -> Vec<Transfer> {
    let accounts = accounts.max(2);
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|_| {
            let from = rng.below(accounts);
            let to = (from + 1 + rng.below(accounts - 1)) % accounts;
            Transfer::new(from, to, 1 + rng.below(max_amount.max(1)))
        })
        .collect()
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Account counts (contention: 2 is a chain, 10,000 is nearly independent).
    pub accounts: Vec<u64>,
    /// Engine thread counts.
    pub threads: Vec<usize>,
    /// Rounds of hashing per transfer (see [`Transfer::with_work`]); one table section each.
    pub work: Vec<u32>,
    /// Transfers per batch.
    pub batch: usize,
    /// Timed runs per measurement; the fastest counts (other load only ever slows a run down).
    pub rounds: usize,
    /// Workload seed.
    pub seed: u64,
}

impl BenchConfig {
    /// 2, 100 and 10,000 accounts at 1..=`cores` threads; cheap transfers and transfers with
    /// 2,000 rounds of hashing (about 2 µs on x86_64); 100,000 transfers per batch; fastest of 5.
    pub fn for_cores(cores: usize) -> Self {
        Self {
            accounts: vec![2, 100, 10_000],
            threads: (1..=cores.max(1)).collect(),
            work: vec![0, 2_000],
            batch: 100_000,
            rounds: 5,
            seed: 1,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// Rounds of hashing per transfer.
    pub work: u32,
    /// Accounts in the workload.
    pub accounts: u64,
    /// `sequential`, `parallel` ([`Scheduling::Auto`]), or `parallel, forced`
    /// ([`Scheduling::Phased`]: chains and cheap chunks still run in parallel phases).
    pub executor: &'static str,
    /// Engine threads.
    pub threads: usize,
    /// Transfers per second (fastest of the rounds).
    pub txs_per_sec: f64,
    /// `txs_per_sec` over the sequential executor's at the same account count.
    pub vs_sequential: f64,
}

/// The measurements, and what the machine allowed while they ran.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// One row per workload, executor and thread count.
    pub rows: Vec<BenchRow>,
    /// For each thread count, how much faster that many threads did independent hashing than one
    /// thread, measured right after the rows: the most any engine could gain on this machine at
    /// that time (other load, SMT siblings and throttling all lower it).
    pub ceiling: Vec<(usize, f64)>,
}

/// Why the benchmark could not produce rows.
#[derive(Debug, Error)]
pub enum BenchError {
    /// The configuration has nothing to measure.
    #[error("empty benchmark configuration: {0}")]
    Empty(&'static str),
    /// An engine could not be configured.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The parallel engine's result differed from sequential execution.
    #[error("{executor} on {threads} threads diverged from sequential execution at {accounts} accounts")]
    Diverged {
        /// Executor label.
        executor: &'static str,
        /// Engine threads.
        threads: usize,
        /// Accounts in the workload.
        accounts: u64,
    },
}

const INITIAL_BALANCE: u64 = 1_000;
const MAX_AMOUNT: u64 = 100;

/// Rounds of hashing per ceiling measurement (tens of milliseconds).
const CEILING_ROUNDS: u64 = 1 << 23;

/// Runs the transfer benchmark, then measures the machine's ceiling.
pub fn run(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    if config.accounts.is_empty()
        || config.threads.is_empty()
        || config.work.is_empty()
        || config.batch == 0
        || config.rounds == 0
    {
        return Err(BenchError::Empty("accounts, threads, work, batch and rounds must be non-empty"));
    }
    // Wakes the CPU from idle clocks: the first measurement must not run slower than the rest.
    for _ in 0..config.rounds {
        split_hashing(1);
    }
    let mut rows = Vec::new();
    for (&work, &accounts) in config.work.iter().flat_map(|w| config.accounts.iter().map(move |a| (w, a))) {
        let initial = funded_accounts(accounts, INITIAL_BALANCE);
        let batch: Vec<Transfer> = random_transfers(accounts, config.batch, MAX_AMOUNT, config.seed)
            .into_iter()
            .map(|transfer| transfer.with_work(work))
            .collect();
        let (expected_state, expected_outcomes, sequential) =
            measure(&Sequential, &initial, &batch, config.rounds);
        let rate = |elapsed: Duration| config.batch as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let baseline = rate(sequential);
        rows.push(BenchRow {
            work,
            accounts,
            executor: "sequential",
            threads: 1,
            txs_per_sec: baseline,
            vs_sequential: 1.0,
        });
        for (executor, scheduling) in
            [("parallel", Scheduling::Auto), ("parallel, forced", Scheduling::Phased)]
        {
            for &threads in &config.threads {
                let engine = Parallel::new(threads)?.with_scheduling(scheduling);
                let (state, outcomes, elapsed) = measure(&engine, &initial, &batch, config.rounds);
                if state != expected_state || outcomes != expected_outcomes {
                    return Err(BenchError::Diverged { executor, threads, accounts });
                }
                let txs_per_sec = rate(elapsed);
                rows.push(BenchRow {
                    work,
                    accounts,
                    executor,
                    threads,
                    txs_per_sec,
                    vs_sequential: txs_per_sec / baseline,
                });
            }
        }
    }
    split_hashing(1);
    let one = fastest_time(config.rounds, || split_hashing(1));
    let ceiling = config
        .threads
        .iter()
        .map(|&threads| {
            (
                threads,
                one.as_secs_f64() / fastest_time(config.rounds, || split_hashing(threads)).as_secs_f64(),
            )
        })
        .collect();
    Ok(BenchReport { rows, ceiling })
}

/// Splits `CEILING_ROUNDS` rounds of hashing over `threads` threads; no shared data at all.
fn split_hashing(threads: usize) {
    let share = CEILING_ROUNDS / threads.max(1) as u64;
    std::thread::scope(|scope| {
        for thread in 0..threads.max(1) {
            scope.spawn(move || {
                let mut rng = SplitMix64::new(thread as u64);
                for _ in 0..share {
                    std::hint::black_box(rng.next_u64());
                }
            });
        }
    });
}

fn fastest_time(rounds: usize, mut job: impl FnMut()) -> Duration {
    (0..rounds.max(1))
        .map(|_| {
            let started = Instant::now();
            job();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Runs `batch` from `initial` once to warm caches and allocator, then `rounds` timed times;
/// returns the last result and the fastest time.
fn measure<E: Executor>(
    executor: &E,
    initial: &State<u64, u64>,
    batch: &[Transfer],
    rounds: usize,
) -> (State<u64, u64>, Vec<Outcome<Transfer>>, Duration) {
    executor.execute(&mut initial.clone(), batch);
    let mut result = (initial.clone(), Vec::new());
    let mut fastest = Duration::MAX;
    for _ in 0..rounds {
        let mut state = initial.clone();
        let started = Instant::now();
        let outcomes = executor.execute(&mut state, batch);
        fastest = fastest.min(started.elapsed());
        result = (state, outcomes);
    }
    (result.0, result.1, fastest)
}

/// The report as a plain-text table, followed by the machine's ceiling.
pub fn format_table(report: &BenchReport) -> String {
    let mut table = format!(
        "{:>5} {:>8}  {:<22} {:>7} {:>14} {:>14}\n",
        "work", "accounts", "executor", "threads", "transfers/s", "vs sequential"
    );
    for row in &report.rows {
        // Writing to a String cannot fail.
        let _ = writeln!(
            table,
            "{:>5} {:>8}  {:<22} {:>7} {:>14} {:>13.2}x",
            row.work,
            row.accounts,
            row.executor,
            row.threads,
            thousands(row.txs_per_sec),
            row.vs_sequential
        );
    }
    let ceiling: Vec<String> = report
        .ceiling
        .iter()
        .map(|(threads, speedup)| {
            format!("{threads} {} {speedup:.2}x", if *threads == 1 { "thread" } else { "threads" })
        })
        .collect();
    let _ = writeln!(
        table,
        "machine ceiling (independent hashing, measured after the rows): {}",
        ceiling.join(", ")
    );
    table
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_move_funds_or_fail_without_effect() {
        let mut state = funded_accounts(2, 10);
        let batch = [Transfer::new(0, 1, 7), Transfer::new(0, 1, 7), Transfer::new(1, 0, 17)];
        let outcomes = Sequential.execute(&mut state, &batch);
        assert_eq!(outcomes[0], Ok(3));
        assert!(matches!(
            outcomes[1],
            Err(crate::engine::TxError::Failed(TransferError::InsufficientFunds { balance: 3, amount: 7 }))
        ));
        assert_eq!(outcomes[2], Ok(0));
        assert_eq!((state.get(&0), state.get(&1)), (Some(&20), Some(&0)));
    }

    #[test]
    fn workload_is_fixed_by_its_seed() {
        assert_eq!(random_transfers(100, 50, 10, 7), random_transfers(100, 50, 10, 7));
        assert_ne!(random_transfers(100, 50, 10, 7), random_transfers(100, 50, 10, 8));
        assert!(random_transfers(2, 100, 10, 1).iter().all(|t| t.accounts[0] != t.accounts[1]));
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn small_run_produces_a_table() {
        let config = BenchConfig {
            accounts: vec![2, 50],
            threads: vec![1, 2],
            work: vec![0, 3],
            batch: 200,
            rounds: 1,
            seed: 3,
        };
        let report = run(&config).expect("engines agree");
        assert_eq!(report.rows.len(), 2 * 2 * (1 + 2 * 2));
        assert_eq!(report.ceiling.iter().map(|(threads, _)| *threads).collect::<Vec<_>>(), [1, 2]);
        let table = format_table(&report);
        assert_eq!(table.lines().count(), report.rows.len() + 2);
        assert!(table.lines().nth(1).is_some_and(|line| line.trim_end().ends_with("1.00x")), "{table}");
        assert!(table.lines().last().is_some_and(|line| line.starts_with("machine ceiling")), "{table}");
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(12_345_678.0), "12,345,678");
    }

    #[test]
    fn empty_configuration_is_an_error() {
        let config = BenchConfig { threads: Vec::new(), ..BenchConfig::for_cores(2) };
        assert!(matches!(run(&config), Err(BenchError::Empty(_))));
    }
}

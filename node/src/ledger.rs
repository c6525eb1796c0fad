//! Routing fees earned, kept in the node's store so that they survive restarts.
//!
//! LDK does not keep forwarding history, so the node records each `PaymentForwarded` event's
//! fee here (durably, before the event is marked handled) in per-day buckets for the
//! earnings screen. If the process dies between this write and LDK marking the event handled,
//! LDK replays the event and that one fee is counted twice: accounting, not money, so the
//! simpler order that never loses a fee is the one chosen.

use std::collections::BTreeMap;

use ldk_node::lightning::util::persist::KVStoreSync;
use serde::{Deserialize, Serialize};

use crate::status::Earnings;
use crate::store::Store;

const NAMESPACE: &str = "boltbox";
const KEY: &str = "ledger";
const SECS_PER_DAY: u64 = 86_400;
/// Days of history kept: the earnings screen shows today and the last 7 days.
const DAYS_KEPT: u64 = 7;

/// The persisted fee ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    total_fee_msat: u64,
    forwards: u64,
    /// Fees per UTC day number (unix time / 86400).
    daily_fee_msat: BTreeMap<u64, u64>,
}

impl Ledger {
    /// Reads the ledger from the store (an empty one if there is none yet).
    pub fn load(store: &Store) -> std::io::Result<Self> {
        match KVStoreSync::read(store, NAMESPACE, "", KEY) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("fee ledger: {e}"))
            }),
            Err(e) if e.kind() == ldk_node::lightning::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Records one forward's fee at unix time `now` and writes the ledger durably.
    pub fn record_forward(&mut self, fee_msat: u64, now: u64, store: &Store) -> std::io::Result<()> {
        self.total_fee_msat = self.total_fee_msat.saturating_add(fee_msat);
        self.forwards = self.forwards.saturating_add(1);
        let today = now / SECS_PER_DAY;
        let day = self.daily_fee_msat.entry(today).or_default();
        *day = day.saturating_add(fee_msat);
        self.daily_fee_msat.retain(|day, _| day.saturating_add(DAYS_KEPT) > today);
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        Ok(KVStoreSync::write(store, NAMESPACE, "", KEY, bytes)?)
    }

    /// What the earnings screen shows, at unix time `now`.
    pub fn earnings(&self, now: u64) -> Earnings {
        let today = now / SECS_PER_DAY;
        Earnings {
            total_msat: self.total_fee_msat,
            today_msat: self.daily_fee_msat.get(&today).copied().unwrap_or(0),
            week_msat: self
                .daily_fee_msat
                .range(today.saturating_sub(DAYS_KEPT - 1)..=today)
                .fold(0u64, |sum, (_, v)| sum.saturating_add(*v)),
            forwards: self.forwards,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_are_bucketed_by_day_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        let day = 20_000 * SECS_PER_DAY;
        {
            let store = Store::open(&path).expect("open");
            let mut ledger = Ledger::load(&store).expect("load");
            ledger.record_forward(1_000, day - 10 * SECS_PER_DAY, &store).expect("old");
            ledger.record_forward(2_000, day - 3 * SECS_PER_DAY, &store).expect("this week");
            ledger.record_forward(500, day + 60, &store).expect("today");
            ledger.record_forward(250, day + 120, &store).expect("today");
        }
        let store = Store::open(&path).expect("reopen");
        let ledger = Ledger::load(&store).expect("load");
        let e = ledger.earnings(day + 3600);
        assert_eq!(e, Earnings { total_msat: 3_750, today_msat: 750, week_msat: 2_750, forwards: 4 });
        assert_eq!(ledger.earnings(day + 8 * SECS_PER_DAY).week_msat, 0);
    }
}

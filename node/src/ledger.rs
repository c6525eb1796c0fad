//! Routing fees earned, kept in the node's store so that they survive restarts.
//!
//! LDK does not keep forwarding history, so the node records each `PaymentForwarded` event's
//! fee here (durably, before the event is marked handled) in per-day buckets for the
//! earnings screen.
//!
//! Each fee is counted once. ldk-node hands an event out until it is marked handled, so a
//! process that dies between this write and that mark gets the same forward again as the first
//! event of its next start. The ledger therefore keeps the last forward it counted as
//! *unsettled* (its fields, [`Forward`]) until the event is marked handled ([`Ledger::settle`]);
//! the first event after a start that equals the unsettled forward is that replay, and is not
//! counted again. The one forward this cannot tell apart: a new forward with every field equal
//! to the last one (same channels, amounts and fee) arriving first after a crash in the moment
//! between the mark and the settle; it goes uncounted (the ledger is accounting, not money).
//! And one replay it cannot see: when the process dies before ldk-node wrote its
//! ChannelManager after the forward, LDK generates the event anew at the next start (the same
//! window as its stale-manager force-close, docs/RELIABILITY.md), and ldk-node queues it behind
//! the one it kept; that copy is counted again.

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
    /// The last forward counted, until its event is marked handled.
    #[serde(default)]
    unsettled: Option<Forward>,
}

/// A `PaymentForwarded` event's fields, as the ledger recognises a replay of it: the channel
/// ids (hex) in and out, the fee earned and the amount forwarded (msat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The inbound channel's id.
    pub prev_channel_id: String,
    /// The outbound channel's id.
    pub next_channel_id: String,
    /// The fee earned (msat); `None` when LDK does not know it (an on-chain claim).
    pub fee_msat: Option<u64>,
    /// The amount sent on (msat), when known.
    pub outbound_amount_msat: Option<u64>,
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

    /// Records `forward`'s fee at unix time `now` and writes the ledger durably; returns whether
    /// it was counted. `first_since_start`: no event has been marked handled since the node
    /// started, so this may be the replay of the unsettled forward, which is not counted again.
    /// On a write error nothing changes, in the store or here.
    pub fn record_forward(
        &mut self,
        forward: &Forward,
        now: u64,
        first_since_start: bool,
        store: &Store,
    ) -> std::io::Result<bool> {
        if first_since_start && self.unsettled.as_ref() == Some(forward) {
            return Ok(false);
        }
        let mut next = self.clone();
        let fee_msat = forward.fee_msat.unwrap_or(0);
        next.total_fee_msat = next.total_fee_msat.saturating_add(fee_msat);
        next.forwards = next.forwards.saturating_add(1);
        let today = now / SECS_PER_DAY;
        let day = next.daily_fee_msat.entry(today).or_default();
        *day = day.saturating_add(fee_msat);
        next.daily_fee_msat.retain(|day, _| day.saturating_add(DAYS_KEPT) > today);
        next.unsettled = Some(forward.clone());
        next.write(store)?;
        *self = next;
        Ok(true)
    }

    /// The unsettled forward's event is marked handled: it can no longer be replayed.
    pub fn settle(&mut self, store: &Store) -> std::io::Result<()> {
        if self.unsettled.is_none() {
            return Ok(());
        }
        let next = Ledger { unsettled: None, ..self.clone() };
        next.write(store)?;
        *self = next;
        Ok(())
    }

    fn write(&self, store: &Store) -> std::io::Result<()> {
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
            for (fee, at) in [
                (1_000, day - 10 * SECS_PER_DAY),
                (2_000, day - 3 * SECS_PER_DAY),
                (500, day + 60),
                (250, day + 120),
            ] {
                assert!(ledger.record_forward(&forward(fee), at, false, &store).expect("record"));
            }
        }
        let store = Store::open(&path).expect("reopen");
        let ledger = Ledger::load(&store).expect("load");
        let e = ledger.earnings(day + 3600);
        assert_eq!(e, Earnings { total_msat: 3_750, today_msat: 750, week_msat: 2_750, forwards: 4 });
        assert_eq!(ledger.earnings(day + 8 * SECS_PER_DAY).week_msat, 0);
    }

    fn forward(fee_msat: u64) -> Forward {
        Forward {
            prev_channel_id: "aa".into(),
            next_channel_id: "bb".into(),
            fee_msat: Some(fee_msat),
            outbound_amount_msat: Some(1_000_000),
        }
    }

    /// The process died after the fee was written and before ldk-node forgot the event: the
    /// event comes again first after the start, and is not counted twice.
    #[test]
    fn a_forward_replayed_after_a_crash_is_counted_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).expect("open");
            let mut ledger = Ledger::load(&store).expect("load");
            assert!(ledger.record_forward(&forward(700), 1, true, &store).expect("record"));
            // No settle: killed here.
        }
        let store = Store::open(&path).expect("reopen");
        let mut ledger = Ledger::load(&store).expect("load");
        assert!(!ledger.record_forward(&forward(700), 2, true, &store).expect("replay"));
        ledger.settle(&store).expect("settle");
        // A later forward with the same fields is a new one.
        assert!(ledger.record_forward(&forward(700), 3, false, &store).expect("record"));
        ledger.settle(&store).expect("settle");
        // After a settle, even the first event after a start with equal fields is new.
        let mut reopened = Ledger::load(&store).expect("load");
        assert!(reopened.record_forward(&forward(700), 4, true, &store).expect("record"));
        assert_eq!(
            reopened.earnings(4),
            Earnings { total_msat: 2_100, today_msat: 2_100, week_msat: 2_100, forwards: 3 }
        );
    }

    /// Not first after a start, an equal forward is counted: two payments of one amount over
    /// the same channels are two forwards.
    #[test]
    fn equal_forwards_in_one_run_are_each_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.redb")).expect("open");
        let mut ledger = Ledger::load(&store).expect("load");
        assert!(ledger.record_forward(&forward(5), 1, true, &store).expect("first"));
        assert!(ledger.record_forward(&forward(5), 1, false, &store).expect("second"));
        assert_eq!(ledger.earnings(1).forwards, 2);
    }
}

//! The node's status snapshot: everything the screens, the CLI and metrics show, kept current
//! by the node's own tasks (events and a timer) so that reading it costs one lock and a clone.

use serde::{Deserialize, Serialize};

use crate::config::Network;

/// Sync state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The height LDK has processed (its best block).
    pub lightning_height: u32,
    /// The height the on-chain wallet has synced to (same as LDK's for a bitcoind source).
    pub wallet_height: u32,
    /// The chain source's tip, when the source can tell it.
    pub chain_tip: Option<u32>,
    /// Unix time of the last successful wallet sync.
    pub last_sync: Option<u64>,
    /// Whether the node is behind the chain tip.
    pub syncing: bool,
}

impl SyncStatus {
    /// Progress in 0..=1, when the tip is known.
    pub fn progress(&self) -> Option<f64> {
        self.chain_tip
            .map(|tip| if tip == 0 { 1.0 } else { (self.lightning_height as f64 / tip as f64).min(1.0) })
    }
}

/// One channel, as the screens and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSummary {
    /// LDK's channel id (hex).
    pub channel_id: String,
    /// Our id for it (decimal), used to close it.
    pub user_channel_id: String,
    /// The peer's node id (hex).
    pub peer: String,
    /// Total capacity.
    pub capacity_sats: u64,
    /// What we could send now.
    pub local_msat: u64,
    /// What we could receive now.
    pub remote_msat: u64,
    /// Ready and the peer is connected.
    pub usable: bool,
    /// Opening, not yet confirmed.
    pub pending: bool,
    /// Announced to the network.
    pub announced: bool,
}

/// Balances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    /// All on-chain funds, confirmed or not.
    pub onchain_total_sats: u64,
    /// Confirmed on-chain funds that can be spent (the anchor reserve excluded).
    pub onchain_spendable_sats: u64,
    /// On-chain funds not yet confirmed or not yet spendable.
    pub onchain_unconfirmed_sats: u64,
    /// The on-chain reserve kept for anchor channels.
    pub anchor_reserve_sats: u64,
    /// Our side of all channels.
    pub lightning_sats: u64,
    /// Funds from closed channels on their way back on-chain.
    pub claimable_sats: u64,
    /// HTLCs in flight, all channels together (msat): the ones we offered (payments and
    /// forwards not yet settled) and the ones offered to us whose preimage we do not know yet,
    /// as on our current commitment. An HTLC we are claiming is in `lightning_sats`, but for the
    /// part below a whole satoshi, which is counted here.
    pub in_flight_htlc_msat: u64,
}

/// Routing fees earned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Earnings {
    /// Since the node was created (persisted across restarts).
    pub total_msat: u64,
    /// Today (UTC).
    pub today_msat: u64,
    /// The last 7 days including today.
    pub week_msat: u64,
    /// Payments forwarded.
    pub forwards: u64,
}

/// Payment counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCounts {
    /// Outbound payments that succeeded.
    pub sent: u64,
    /// Inbound payments that succeeded.
    pub received: u64,
}

/// Something the user should know about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    /// The chain source does not answer.
    ChainSourceUnreachable {
        /// What the probe saw.
        reason: String,
    },
    /// No successful sync for too long.
    SyncStalled {
        /// Seconds since the last successful sync (none if never).
        seconds: Option<u64>,
    },
    /// A configured trusted peer is not connected.
    PeerDown {
        /// The peer's node id.
        peer: String,
    },
    /// Not enough confirmed on-chain funds for the anchor reserve of the channels.
    LowOnchainReserve {
        /// What there is.
        have_sats: u64,
        /// What the channels need.
        need_sats: u64,
    },
    /// The store cannot write: the node's state changes wait, unacknowledged (see
    /// [`crate::store::StoreHealth`]).
    StoreFailing {
        /// What the last commit said.
        reason: String,
        /// For how long, in seconds.
        seconds: u64,
    },
    /// The data partition is nearly full: the store cannot grow much more.
    DiskSpaceLow {
        /// Bytes free.
        free_bytes: u64,
        /// Bytes the rule wants free.
        wanted_bytes: u64,
    },
    /// The live mirror failed: the node runs on the card alone until it resyncs (see
    /// [`crate::mirror::MirrorStatus::Lost`]).
    MirrorLost {
        /// Why.
        reason: String,
        /// For how long, in seconds.
        seconds: u64,
    },
    /// The remote mirror (VSS) is unreachable or failing: the node runs on the card alone and
    /// catches up when it is back (see [`crate::mirror::vss::VssStatus::Lost`]).
    RemoteMirrorLost {
        /// Why.
        reason: String,
        /// For how long, in seconds.
        seconds: u64,
        /// Commits the card has that VSS does not.
        behind: u64,
    },
    /// The remote mirror stopped: VSS holds this node's state from another device, or a later
    /// one (see [`crate::mirror::vss::VssStatus::Refused`]).
    RemoteMirrorRefused {
        /// Why.
        reason: String,
    },
    /// A problem of the device around the node (display, buttons, backups), raised by the
    /// appliance rather than the node.
    Device {
        /// A short line for the OLED.
        headline: String,
        /// The whole story, for the log and the CLI.
        detail: String,
    },
}

impl Alert {
    /// A short line for the OLED (at most ~21 characters per line is readable).
    pub fn headline(&self) -> String {
        match self {
            Alert::ChainSourceUnreachable { .. } => "chain source down".into(),
            Alert::SyncStalled { .. } => "sync stalled".into(),
            Alert::PeerDown { peer } => format!("peer {} down", peer.chars().take(8).collect::<String>()),
            Alert::LowOnchainReserve { .. } => "low on-chain reserve".into(),
            Alert::StoreFailing { .. } => "cannot save state!".into(),
            Alert::DiskSpaceLow { .. } => "disk almost full".into(),
            Alert::MirrorLost { .. } => "mirror lost".into(),
            Alert::RemoteMirrorLost { .. } => "remote mirror lost".into(),
            Alert::RemoteMirrorRefused { .. } => "VSS: other device".into(),
            Alert::Device { headline, .. } => headline.clone(),
        }
    }
}

impl std::fmt::Display for Alert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Alert::ChainSourceUnreachable { reason } => write!(f, "chain source unreachable: {reason}"),
            Alert::SyncStalled { seconds: Some(s) } => write!(f, "no successful sync for {s} s"),
            Alert::SyncStalled { seconds: None } => write!(f, "the node has not synced yet"),
            Alert::PeerDown { peer } => write!(f, "trusted peer {peer} is not connected"),
            Alert::LowOnchainReserve { have_sats, need_sats } => write!(
                f,
                "on-chain reserve for anchor channels is low: {have_sats} sat, channels need {need_sats} sat"
            ),
            Alert::StoreFailing { reason, seconds } => write!(
                f,
                "the node's store cannot write for {seconds} s ({reason}): state changes wait and nothing \
                 unsaved is acknowledged; free space on the data partition or replace the card"
            ),
            Alert::DiskSpaceLow { free_bytes, wanted_bytes } => write!(
                f,
                "the data partition has {} MiB free, less than the {} MiB the store may need to grow: free space",
                free_bytes >> 20,
                wanted_bytes >> 20
            ),
            Alert::MirrorLost { reason, seconds } => write!(
                f,
                "the live mirror is lost for {seconds} s ({reason}): the node goes on on the card alone and \
                 resyncs the mirror once it can write again"
            ),
            Alert::RemoteMirrorLost { reason, seconds, behind } => write!(
                f,
                "the remote mirror is lost for {seconds} s and {behind} commits behind ({reason}): the node goes on \
                 on the card alone and sends them when VSS is back"
            ),
            Alert::RemoteMirrorRefused { reason } => write!(f, "the remote mirror stopped: {reason}"),
            Alert::Device { detail, .. } => f.write_str(detail),
        }
    }
}

fn remote_mirror_off() -> crate::mirror::vss::VssStatus {
    crate::mirror::vss::VssStatus::Off
}

fn mirror_off() -> crate::mirror::MirrorStatus {
    crate::mirror::MirrorStatus::Off
}

/// The whole snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The network.
    pub network: Network,
    /// Our node id (hex).
    pub node_id: String,
    /// Our alias.
    pub alias: String,
    /// Where we listen.
    pub listening: Vec<String>,
    /// Whether the node is running.
    pub running: bool,
    /// Where the node learns the chain, without secrets ("Electrum host:port").
    #[serde(default)]
    pub chain_source: String,
    /// Sync state.
    pub sync: SyncStatus,
    /// Connected peers.
    pub peers_connected: usize,
    /// Configured trusted peers.
    pub peers_configured: usize,
    /// Channels.
    pub channels: Vec<ChannelSummary>,
    /// Balances.
    pub balances: Balances,
    /// Routing fees earned.
    pub earnings: Earnings,
    /// Payment counts.
    pub payments: PaymentCounts,
    /// Current alerts.
    pub alerts: Vec<Alert>,
    /// The live mirror (read live, like the store's health).
    #[serde(default = "mirror_off")]
    pub mirror: crate::mirror::MirrorStatus,
    /// The remote mirror on VSS (read live).
    #[serde(default = "remote_mirror_off")]
    pub remote_mirror: crate::mirror::vss::VssStatus,
    /// An on-chain address to fund the node, once the owner asked for one (the OLED's funding
    /// screen); a fresh one after funds arrived at it.
    #[serde(default)]
    pub funding_address: Option<String>,
    /// The accounts (read live).
    #[serde(default)]
    pub accounts: crate::accounts::AccountsSummary,
    /// Unix time of this snapshot.
    pub updated_at: u64,
}

impl Status {
    /// The snapshot of a node that has not started yet.
    pub fn starting(network: Network, alias: &str) -> Self {
        Status {
            network,
            node_id: String::new(),
            alias: alias.to_string(),
            listening: Vec::new(),
            running: false,
            chain_source: String::new(),
            sync: SyncStatus::default(),
            peers_connected: 0,
            peers_configured: 0,
            channels: Vec::new(),
            balances: Balances::default(),
            earnings: Earnings::default(),
            payments: PaymentCounts::default(),
            alerts: Vec::new(),
            mirror: crate::mirror::MirrorStatus::Off,
            remote_mirror: crate::mirror::vss::VssStatus::Off,
            funding_address: None,
            accounts: crate::accounts::AccountsSummary::default(),
            updated_at: 0,
        }
    }

    /// Channels that are usable now.
    pub fn usable_channels(&self) -> usize {
        self.channels.iter().filter(|c| c.usable).count()
    }
}

/// What the alert rules look at.
#[derive(Debug, Clone, Default)]
pub struct AlertInputs {
    /// The chain probe's error, if the last probe failed.
    pub chain_error: Option<String>,
    /// Unix time now.
    pub now: u64,
    /// Unix time of the last successful sync.
    pub last_sync: Option<u64>,
    /// Unix time the node started.
    pub started_at: u64,
    /// Trusted peers that are not connected (hex ids).
    pub trusted_peers_down: Vec<String>,
    /// Confirmed, spendable on-chain funds plus the reserve already set aside.
    pub onchain_for_reserve_sats: u64,
    /// Anchor channels times the per-channel reserve.
    pub reserve_needed_sats: u64,
    /// Bytes free on the data partition, when known.
    pub disk_free_bytes: Option<u64>,
    /// The store file's size.
    pub store_bytes: u64,
}

/// The least free space on the data partition before "disk almost full". redb grows its file
/// in steps of up to its current size, so the rule also wants at least the store's own size free.
pub const DISK_FREE_FLOOR_BYTES: u64 = 64 << 20;

/// A sync older than this raises "sync stalled". Syncs happen every few seconds (bitcoind) to
/// 80 s (esplora/electrum wallet sync), so this is several missed rounds.
pub const SYNC_STALLED_AFTER_SECS: u64 = 300;

/// The alert for a store whose commits fail, at Unix time `now`.
pub fn store_alert(health: &crate::store::StoreHealth, now: u64) -> Option<Alert> {
    match health {
        crate::store::StoreHealth::Failing { reason, since, .. } => {
            Some(Alert::StoreFailing { reason: reason.clone(), seconds: now.saturating_sub(*since) })
        }
        crate::store::StoreHealth::Healthy => None,
    }
}

/// The alert for the live mirror's state, if it has one.
pub fn mirror_alert(mirror: &crate::mirror::MirrorStatus, now: u64) -> Option<Alert> {
    match mirror {
        crate::mirror::MirrorStatus::Lost { reason, since, .. } => {
            Some(Alert::MirrorLost { reason: reason.clone(), seconds: now.saturating_sub(*since) })
        }
        _ => None,
    }
}

/// The alert for the remote mirror's state, if it has one.
pub fn remote_mirror_alert(remote: &crate::mirror::vss::VssStatus, now: u64) -> Option<Alert> {
    match remote {
        crate::mirror::vss::VssStatus::Lost { reason, since, behind } => Some(Alert::RemoteMirrorLost {
            reason: reason.clone(),
            seconds: now.saturating_sub(*since),
            behind: *behind,
        }),
        crate::mirror::vss::VssStatus::Refused { reason } => {
            Some(Alert::RemoteMirrorRefused { reason: reason.clone() })
        }
        _ => None,
    }
}

/// The alerts for a set of inputs (pure, so the rules are unit-tested).
pub fn alerts(inputs: &AlertInputs) -> Vec<Alert> {
    let mut out = Vec::new();
    if let Some(reason) = &inputs.chain_error {
        out.push(Alert::ChainSourceUnreachable { reason: reason.clone() });
    }
    let since = inputs.last_sync.unwrap_or(inputs.started_at);
    if inputs.now.saturating_sub(since) > SYNC_STALLED_AFTER_SECS {
        out.push(Alert::SyncStalled { seconds: inputs.last_sync.map(|t| inputs.now.saturating_sub(t)) });
    }
    out.extend(inputs.trusted_peers_down.iter().map(|p| Alert::PeerDown { peer: p.clone() }));
    if inputs.onchain_for_reserve_sats < inputs.reserve_needed_sats {
        out.push(Alert::LowOnchainReserve {
            have_sats: inputs.onchain_for_reserve_sats,
            need_sats: inputs.reserve_needed_sats,
        });
    }
    let wanted_bytes = DISK_FREE_FLOOR_BYTES.max(inputs.store_bytes);
    if let Some(free_bytes) = inputs.disk_free_bytes.filter(|free| *free < wanted_bytes) {
        out.push(Alert::DiskSpaceLow { free_bytes, wanted_bytes });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> AlertInputs {
        AlertInputs { now: 10_000, last_sync: Some(9_990), started_at: 1_000, ..AlertInputs::default() }
    }

    #[test]
    fn a_healthy_node_has_no_alerts() {
        assert!(alerts(&healthy()).is_empty());
    }

    #[test]
    fn each_rule_raises_its_alert() {
        let mut i = healthy();
        i.chain_error = Some("connection refused".into());
        assert_eq!(alerts(&i), vec![Alert::ChainSourceUnreachable { reason: "connection refused".into() }]);

        let mut i = healthy();
        i.last_sync = Some(10_000 - SYNC_STALLED_AFTER_SECS - 1);
        assert_eq!(alerts(&i), vec![Alert::SyncStalled { seconds: Some(SYNC_STALLED_AFTER_SECS + 1) }]);

        let mut i = healthy();
        i.last_sync = None;
        i.started_at = 10_000 - 10;
        assert!(alerts(&i).is_empty(), "a node that just started is not stalled");
        i.started_at = 1_000;
        assert_eq!(alerts(&i), vec![Alert::SyncStalled { seconds: None }]);

        let mut i = healthy();
        i.trusted_peers_down = vec!["02ab".into()];
        assert_eq!(alerts(&i), vec![Alert::PeerDown { peer: "02ab".into() }]);

        let mut i = healthy();
        i.reserve_needed_sats = 50_000;
        i.onchain_for_reserve_sats = 20_000;
        assert_eq!(alerts(&i), vec![Alert::LowOnchainReserve { have_sats: 20_000, need_sats: 50_000 }]);
        i.onchain_for_reserve_sats = 50_000;
        assert!(alerts(&i).is_empty());

        let failing =
            crate::store::StoreHealth::Failing { reason: "No space left".into(), since: 9_000, attempts: 3 };
        assert_eq!(
            store_alert(&failing, healthy().now),
            Some(Alert::StoreFailing { reason: "No space left".into(), seconds: 1_000 })
        );
        assert_eq!(store_alert(&crate::store::StoreHealth::Healthy, healthy().now), None);

        let mut i = healthy();
        i.disk_free_bytes = Some(DISK_FREE_FLOOR_BYTES);
        assert!(alerts(&i).is_empty());
        i.store_bytes = 100 << 20;
        assert_eq!(
            alerts(&i),
            vec![Alert::DiskSpaceLow { free_bytes: DISK_FREE_FLOOR_BYTES, wanted_bytes: 100 << 20 }]
        );
    }

    #[test]
    fn progress_is_bounded() {
        let s = SyncStatus { lightning_height: 50, chain_tip: Some(100), ..SyncStatus::default() };
        assert_eq!(s.progress(), Some(0.5));
        let s = SyncStatus { lightning_height: 120, chain_tip: Some(100), ..SyncStatus::default() };
        assert_eq!(s.progress(), Some(1.0));
        assert_eq!(SyncStatus::default().progress(), None);
    }
}

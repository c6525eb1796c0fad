//! Sample data for every screen: a node that is syncing, a synced node with three channels and
//! alerts, and a node that was just created. `boltbox screens` renders them for the README and
//! the golden tests compare them with the checked-in PNGs, so both always show the same set.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use boltbox_board::PanelSize;
use boltbox_node::status::{Balances, ChannelSummary, Earnings, PaymentCounts, SyncStatus};
use boltbox_node::{Alert, Network, Status};

use super::{Rendered, SystemInfo, Usage};

/// A node id that looks like a real one (33-byte compressed key, hex).
const NODE_ID: &str = "02f1a8c87607f415c8f22c00593002775941dea48869ce23096af27b0cfdcc0b69";

/// The address the sample node is reached at.
pub const SAMPLE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 42));

/// The BIP39 test-vector mnemonic (all zero entropy, 24 words): public, holds nothing.
pub const SAMPLE_SEED: [&str; 24] = [
    "abandon", "abandon", "abandon", "abandon", "abandon", "abandon", "abandon", "abandon", "abandon",
    "abandon", "abandon", "abandon", "abandon", "abandon", "abandon", "abandon", "abandon", "abandon",
    "abandon", "abandon", "abandon", "abandon", "abandon", "art",
];

fn base(alias: &str) -> Status {
    let mut s = Status::starting(Network::Regtest, alias);
    s.node_id = NODE_ID.to_string();
    s.listening = vec!["0.0.0.0:9735".to_string()];
    s.running = true;
    s.chain_source = "Electrum electrum.blockstream.info:50002".into();
    s.updated_at = 1_760_000_000;
    s
}

/// A node catching up with the chain: 61% through, one peer, one pending channel.
pub fn syncing() -> Status {
    let mut s = base("boltbox");
    s.sync = SyncStatus {
        lightning_height: 524_288,
        wallet_height: 524_288,
        chain_tip: Some(852_301),
        last_sync: Some(1_759_999_990),
        syncing: true,
    };
    s.peers_connected = 1;
    s.channels =
        vec![channel("03c2abfa93eacec04721c019644584424aab2ba4dff3ac9bdab4e9c97007491dda", 500_000, 0, 0)];
    s.channels[0].pending = true;
    s.channels[0].usable = false;
    s.balances.onchain_total_sats = 1_250_000;
    s
}

fn channel(peer: &str, capacity_sats: u64, local_sats: u64, remote_sats: u64) -> ChannelSummary {
    ChannelSummary {
        channel_id: format!("{:0>64}", capacity_sats),
        user_channel_id: capacity_sats.to_string(),
        peer: peer.to_string(),
        capacity_sats,
        local_msat: local_sats * 1000,
        remote_msat: remote_sats * 1000,
        usable: true,
        pending: false,
        announced: true,
    }
}

/// A synced node with three channels (one offline), earnings, payments and two alerts.
pub fn synced() -> Status {
    let mut s = base("satoshi's box");
    s.sync = SyncStatus {
        lightning_height: 852_301,
        wallet_height: 852_301,
        chain_tip: Some(852_301),
        last_sync: Some(1_759_999_995),
        syncing: false,
    };
    s.peers_connected = 3;
    s.peers_configured = 4;
    s.channels = vec![
        channel(
            "03864ef025fde8fb587d989186ce6a4a186895ee44a926bfc370e2c366597a3f8f",
            2_000_000,
            1_204_113,
            782_401,
        ),
        channel(
            "035e4ff418fc8b5554c5d9eea66396c227bd429a3251c8cbc711002ba215bfc226",
            1_000_000,
            250_000,
            742_600,
        ),
        channel(
            "02d96eadea3d780104449aca5c93461ce67c1564e2e1d73225fa67dd3b997a6018",
            500_000,
            489_000,
            3_210,
        ),
    ];
    s.channels[2].usable = false;
    s.balances = Balances {
        onchain_total_sats: 734_210,
        onchain_spendable_sats: 659_210,
        onchain_unconfirmed_sats: 0,
        anchor_reserve_sats: 75_000,
        lightning_sats: 1_943_113,
        claimable_sats: 0,
        in_flight_htlc_msat: 12_000_000,
    };
    s.earnings =
        Earnings { total_msat: 48_213_520, today_msat: 1_337, week_msat: 9_876_500, forwards: 1_204 };
    s.payments = PaymentCounts { sent: 42, received: 317 };
    s.alerts = vec![
        Alert::PeerDown { peer: "02d96eadea3d780104449aca5c93461ce67c1564e2e1d73225fa67dd3b997a6018".into() },
        Alert::LowOnchainReserve { have_sats: 50_000, need_sats: 75_000 },
    ];
    s
}

/// A node that was just created: synced, nothing else.
pub fn fresh() -> Status {
    let mut s = base("boltbox");
    s.sync = SyncStatus {
        lightning_height: 852_301,
        wallet_height: 852_301,
        chain_tip: Some(852_301),
        last_sync: Some(1_759_999_999),
        syncing: false,
    };
    s
}

/// A fresh node that has revealed an address to be funded at (a mainnet P2WPKH address).
pub fn funded() -> Status {
    let mut s = fresh();
    s.funding_address = Some("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq".into());
    s
}

/// A Pi 4 under light load.
pub fn system_info() -> SystemInfo {
    SystemInfo {
        temperature_c: Some(51.4),
        load_1m: Some(0.42),
        memory: Some(Usage { used: 1_610_612_736, total: 3_992_977_408 }),
        disk: Some(Usage { used: 12_884_901_888, total: 60_129_542_144 }),
        executor_workers: Some(3),
        last_backup_age: Some(Duration::from_secs(2 * 86_400 + 5 * 3600)),
    }
}

/// Every screen for the sample data, each with a file-name stem ("home-synced").
pub fn render_all() -> Vec<(String, Rendered)> {
    render_all_for(PanelSize::Size128x64)
}

/// Every screen for the sample data as drawn for a `panel` (only the QR screens and the
/// screensaver differ).
pub fn render_all_for(panel: PanelSize) -> Vec<(String, Rendered)> {
    use super::*;

    let synced = synced();
    let syncing = syncing();
    let fresh = fresh();
    let mut out: Vec<(String, Rendered)> = vec![
        ("boot".into(), boot("0.1.0")),
        ("home-starting".into(), home(&Status::starting(Network::Regtest, "boltbox"))),
        ("home-syncing".into(), home(&syncing)),
        ("home-synced".into(), home(&synced)),
        ("home-fresh".into(), home(&fresh)),
    ];
    for i in 0..synced.channels.len() {
        out.push((format!("channels-{}", i + 1), channels(&synced, i)));
    }
    out.push(("channels-pending".into(), channels(&syncing, 0)));
    out.push(("channels-none".into(), channels(&fresh, 0)));
    out.push(("fund".into(), funding(&funded(), panel)));
    out.push(("fund-waiting".into(), funding(&fresh, panel)));
    out.push(("earnings".into(), earnings(&synced)));
    out.push(("earnings-fresh".into(), earnings(&fresh)));
    let mut shared = synced.clone();
    shared.accounts = boltbox_node::accounts::AccountsSummary {
        count: 4,
        total_msat: 1_250_000_000,
        held_msat: 21_000_000,
        largest: vec![("family".into(), 900_000_000), ("shop till number one".into(), 250_000_000)],
    };
    out.push(("accounts".into(), accounts(&shared)));
    out.push(("accounts-none".into(), accounts(&fresh)));
    out.push(("network".into(), network(&synced, Some(SAMPLE_IP), panel)));
    out.push(("network-no-ip".into(), network(&fresh, None, panel)));
    out.push(("network-qr".into(), network_qr(&synced, panel)));
    out.push(("chain-source".into(), chain_source(&synced)));
    out.push(("system".into(), system(&synced, &system_info())));
    out.push(("system-unknown".into(), system(&fresh, &SystemInfo::default())));
    let mut mirrored = synced.clone();
    mirrored.mirror = boltbox_node::mirror::MirrorStatus::Lost {
        dir: "/run/boltbox/usb/sda1".into(),
        reason: "No space left on device (os error 28)".into(),
        since: 0,
    };
    out.push(("system-mirror-lost".into(), system(&mirrored, &system_info())));
    out.push(("alerts".into(), alerts(&synced)));
    out.push(("alerts-none".into(), alerts(&fresh)));
    out.push(("screensaver".into(), screensaver(&synced, 3, panel)));
    out.push(("seed-warning".into(), seed_warning()));
    for page in 0..seed_pages(SAMPLE_SEED.len()) {
        out.push((format!("seed-{}", page + 1), seed_page(&SAMPLE_SEED, page)));
    }
    out.push(("seed-unavailable".into(), seed_unavailable()));
    out.push(("shutdown-confirm".into(), shutdown_confirm()));
    out.push(("shutdown".into(), shutdown(ShutdownPhase::InProgress, panel)));
    out.push(("shutdown-safe".into(), shutdown(ShutdownPhase::SafeToUnplug, panel)));
    out.push(("shutdown-nothing".into(), shutdown(ShutdownPhase::NothingToSave, panel)));
    out.push(("shutdown-stopped".into(), shutdown(ShutdownPhase::Stopped, panel)));
    out.push((
        "waiting-chain".into(),
        waiting(&Waiting {
            what: "chain source".into(),
            reason: "Electrum server electrum.blockstream.info:50002 refused the connection".into(),
            retry_in: Some(Duration::from_secs(16)),
        }),
    ));
    out.push((
        "waiting-network".into(),
        waiting(&Waiting {
            what: "network".into(),
            reason: "no network: plug in the cable or set Wi-Fi in boltbox.toml".into(),
            retry_in: Some(Duration::from_secs(4)),
        }),
    ));
    out.push(("starting".into(), starting("satoshi's box")));
    out.push((
        "store-missing".into(),
        store_choice(&StoreChoice {
            headline: "node store missing".into(),
            reason: "the seed is here but the node's store is missing".into(),
            backup: Some(BackupFacts {
                node_id8: "02d96ead".into(),
                age: Duration::from_secs(7200),
                commit: 1_874,
                source: StateSource::Backup,
            }),
            start_empty: true,
        }),
    ));
    out.push((
        "store-other-node".into(),
        store_choice(&StoreChoice {
            headline: "store of other node".into(),
            reason: "the store holds node 03aa..., the seed gives node 02d9...".into(),
            backup: None,
            start_empty: false,
        }),
    ));
    out.push(("empty-confirm".into(), empty_confirm(false)));
    out.push(("new-node-confirm".into(), empty_confirm(true)));
    out.push(("seed-reminder".into(), seed_reminder()));
    out.push(("seed-skip".into(), seed_skip_confirm()));
    out.push(("not-saved".into(), not_saved("the store cannot write: No space left on device")));
    out.push(("restarting".into(), restarting("the node did not start: it could not listen")));
    out.push(("backup-confirm".into(), backup_confirm()));
    out.push(("mirror-confirm".into(), super::mirror_confirm(&Ok("sda1".into()))));
    out.push((
        "mirror-unavailable".into(),
        super::mirror_confirm(&Err("no USB stick found: insert one and ask again".into())),
    ));
    let offered = BackupFacts {
        node_id8: "02d96ead".into(),
        age: Duration::from_secs(3 * 3600 + 20 * 60),
        commit: 1_874,
        source: StateSource::Backup,
    };
    out.push(("restore-offer".into(), restore_offer(&offered, true)));
    out.push(("restore-offer-no-words".into(), restore_offer(&offered, false)));
    let mirror = BackupFacts { age: Duration::from_secs(90), source: StateSource::Mirror, ..offered.clone() };
    out.push(("restore-offer-mirror".into(), restore_offer(&mirror, true)));
    let vss =
        BackupFacts { age: Duration::from_secs(40), commit: 2_016, source: StateSource::Vss, ..offered };
    out.push(("restore-offer-vss".into(), restore_offer(&vss, true)));
    out.push(("restore-confirm".into(), restore_confirm()));
    out.push(("restore-running".into(), restore_progress(None)));
    out.push((
        "restore-failed".into(),
        restore_progress(Some("wrong seed words: this backup was made with another seed")),
    ));
    out.push(("backup-unavailable".into(), backup_unavailable()));
    out.push((
        "backup-running".into(),
        backup(&BackupProgress::Running { percent: 37, stick: Some("sda1".into()) }),
    ));
    out.push((
        "backup-ok".into(),
        backup(&BackupProgress::Succeeded {
            bytes: 3_565_158,
            took: Duration::from_secs(12),
            stick: "sda1".into(),
            at: "14:02 UTC".into(),
            ejected: true,
            mirror: false,
        }),
    ));
    out.push((
        "backup-ok-mirror-stick".into(),
        backup(&BackupProgress::Succeeded {
            bytes: 3_565_158,
            took: Duration::from_secs(12),
            stick: "sda1".into(),
            at: "14:02 UTC".into(),
            ejected: false,
            mirror: true,
        }),
    ));
    out.push((
        "backup-failed".into(),
        backup(&BackupProgress::Failed { reason: "no USB stick found: insert one and hold B again".into() }),
    ));
    out.push((
        "config-error".into(),
        config_error(
            "chain.rpc_port",
            "expected a port number from 1 to 65535, found \"eighty\" (line 14)",
            panel,
        ),
    ));
    out
}

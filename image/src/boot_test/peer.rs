//! The guest's channel peer: a boltbox node on the host (on the host's regtest bitcoind) that
//! reaches the guest's Lightning port through QEMU's forwarded port. It funds the guest at the
//! address the guest's funding screen shows (an inbound anchor channel needs the guest's
//! on-chain reserve), opens a channel to it, pays it by keysend while QEMU's power is cut, and
//! after the cuts checks that the guest kept every payment the host saw succeed: the balance
//! on the guest's channel screen and the payments counted on its earnings screen are what the
//! host's succeeded payments make, the channel is open and usable, and more payments succeed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use boltbox_board::{Button, LinkClient, LinkFrame};
use boltbox_node::{ChannelSummary, PaymentSummary, PeerAddress};
use boltbox_tests::{BitcoinD, Deadline, Rng, TestNode, try_wait_until};

use super::{BETWEEN_PRESSES, Guest, SCREEN, SHORT_PRESS, boot_error, screen, wait_screen};
use crate::ImageError;

/// The channel the host opens to the guest, in sats.
const CHANNEL_SATS: u64 = 1_000_000;
/// The guest's on-chain funds: its anchor reserve for one channel (25,000 sat by default) and
/// more.
const GUEST_FUNDS_SATS: u64 = 100_000;
/// The reserve the host asks the guest to keep in the channel: LDK's default, 1% of it. The
/// guest's channel screen shows what it can send, its balance less this.
const GUEST_RESERVE_SATS: u64 = CHANNEL_SATS / 100;
/// Keysend amounts are 1 sat up to this many.
const MAX_PAYMENT_SATS: u64 = 5_000;
/// Payments after the last cut, each waited for: the channel works, and their sum takes the
/// guest's balance past its reserve, so that the channel screen shows it.
const PAYMENTS_AFTER: usize = 5;
/// The guest's wallets sync every 80 s (on-chain) and 30 s (Lightning) by ldk-node's default,
/// under TCG: how long the guest may take to see coins or a confirmed channel.
const GUEST_SYNC: Duration = Duration::from_secs(400);
/// Reconnecting after a boot, and every HTLC the cut left in flight resolved.
const SETTLE: Duration = Duration::from_secs(300);
/// One payment after the cuts, under TCG.
const PAYMENT: Duration = Duration::from_secs(120);
/// LDK's log line when it force-closes a channel whose ChannelManager on disk is older than its
/// ChannelMonitor (a cut between the two writes; rust-lightning#4286, docs/RELIABILITY.md).
pub(super) const STALE_MANAGER: &str = "A ChannelManager is stale compared to the current ChannelMonitor";

/// How the channel came through the cuts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelOutcome {
    /// Open and usable on both sides; the guest's balance is what the host's succeeded
    /// payments make.
    Kept {
        /// Payments the host saw succeed (during the cuts and after them).
        payments: usize,
        /// Their sum, in sats: the guest's balance in the channel.
        sats: u64,
        /// Payments the host saw fail: the guest was cut before it accepted them.
        failed: usize,
    },
    /// Force-closed by LDK for a stale ChannelManager at a start after a cut (upstream's to
    /// fix): counted, not a failure of boltbox's.
    StaleManagerClose,
}

/// The host's node and what it knows of the guest.
pub struct HostPeer {
    node: TestNode,
    /// The guest's Lightning port, forwarded to the host's loopback.
    port: u16,
    /// The guest, once the channel is open.
    guest: Option<PeerAddress>,
}

fn peer_error(what: &str, reason: impl std::fmt::Display) -> ImageError {
    boot_error(what, reason.to_string())
}

/// The address in the funding screen's caption (`qr bitcoin:<address>`).
fn funding_address(frame: &LinkFrame) -> Option<&str> {
    frame.caption.lines().find_map(|l| l.strip_prefix("qr bitcoin:"))
}

fn press(guest: &mut Guest, link: &mut LinkClient, button: Button) -> Result<(), ImageError> {
    std::thread::sleep(BETWEEN_PRESSES);
    link.press(button, SHORT_PRESS).map_err(|e| guest.failed("pressing a button", e))
}

impl HostPeer {
    /// A funded node on the host's bitcoind; the guest's port is `port` on the host.
    pub fn start(bitcoind: &BitcoinD, port: u16) -> Result<HostPeer, ImageError> {
        let node = TestNode::start(bitcoind, "host-peer", Vec::new());
        node.fund(bitcoind, 2 * CHANNEL_SATS);
        bitcoind.mine(1).map_err(|e| peer_error("mining the host node's funds", e))?;
        try_wait_until(Deadline::in_secs(120), || {
            (node.node().refresh_status().balances.onchain_spendable_sats >= 2 * CHANNEL_SATS).then_some(())
        })
        .ok_or_else(|| peer_error("funding the host's node", "its wallet never saw the coins"))?;
        Ok(HostPeer { node, port, guest: None })
    }

    /// The channel to the guest, if the host has one.
    fn channel(&self) -> Option<ChannelSummary> {
        let guest = self.guest.as_ref()?.node_id.to_string();
        self.node.node().list_channels().into_iter().find(|c| c.peer == guest)
    }

    /// Whether the host still has a channel to the guest (LDK's stale-manager close ends it).
    pub fn has_channel(&self) -> bool {
        self.channel().is_some()
    }

    fn connected(&self) -> bool {
        let Some(guest) = &self.guest else { return false };
        let id = guest.node_id.to_string();
        self.node.node().list_peers().iter().any(|p| p.node_id == id && p.connected)
    }

    fn keysends(&self) -> Vec<PaymentSummary> {
        self.node.node().list_payments().into_iter().filter(|p| p.kind == "keysend").collect()
    }

    /// With the guest running on its home screen: funds it through its funding screen, opens
    /// a channel of [`CHANNEL_SATS`] to it, confirms it, and leaves the guest on its home
    /// screen again once its channel screen shows the channel usable.
    pub fn open_channel(
        &mut self,
        guest: &mut Guest,
        link: &mut LinkClient,
        bitcoind: &BitcoinD,
        guest_id: &str,
    ) -> Result<(), ImageError> {
        let peer: PeerAddress = format!("{guest_id}@127.0.0.1:{}", self.port)
            .parse()
            .map_err(|e| peer_error("the guest's forwarded address", e))?;
        press(guest, link, Button::A)?;
        wait_screen(guest, link, "channels", "no channels yet", SCREEN)?;
        press(guest, link, Button::B)?;
        let shown = wait_screen(guest, link, "fund", "qr bitcoin:", SCREEN)?;
        let address = funding_address(&shown).unwrap_or_default().to_string();
        println!("boot-test: the guest's funding screen shows {address}");
        bitcoind.send_to(&address, GUEST_FUNDS_SATS).map_err(|e| peer_error("funding the guest", e))?;
        // Confirmed at once: only confirmed coins count towards the reserve for a channel.
        bitcoind.mine(1).map_err(|e| peer_error("confirming the guest's funds", e))?;
        // The guest's wallet saw them when its screen shows a fresh address.
        link.wait_for_frame(GUEST_SYNC, |f| {
            screen(f) == "fund" && funding_address(f).is_some_and(|a| a != address)
        })
        .map_err(|e| guest.failed("waiting for the guest to see its funds (a fresh funding address)", e))?;

        let mempool = bitcoind.mempool().map_err(|e| peer_error("reading the mempool", e))?.len();
        self.node.node().connect(&peer, true).map_err(|e| peer_error("connecting to the guest", e))?;
        self.node
            .node()
            .open_channel(&peer, CHANNEL_SATS, None, false)
            .map_err(|e| peer_error("opening a channel to the guest", e))?;
        self.guest = Some(peer);
        try_wait_until(Deadline::in_secs(120), || {
            (bitcoind.mempool().map_or(0, |m| m.len()) > mempool).then_some(())
        })
        .ok_or_else(|| {
            guest.failed(
                "the channel's funding transaction",
                format!("none in the mempool; the host's channels: {:?}", self.node.node().list_channels()),
            )
        })?;
        bitcoind.mine(6).map_err(|e| peer_error("confirming the channel", e))?;
        try_wait_until(Deadline::after(GUEST_SYNC), || self.channel().filter(|c| c.usable))
            .ok_or_else(|| guest.failed("the channel usable on the host", format!("{:?}", self.channel())))?;
        press(guest, link, Button::B)?;
        wait_screen(guest, link, "channels", "usable", SCREEN)?;
        for page in ["earnings", "accounts", "network", "system", "alerts", "home"] {
            press(guest, link, Button::A)?;
            wait_screen(guest, link, page, "", SCREEN)?;
        }
        println!(
            "boot-test: the host's node opened a {CHANNEL_SATS} sat channel to the guest; usable on both"
        );
        Ok(())
    }

    /// Pays the guest by keysend (1 to [`MAX_PAYMENT_SATS`] sats) whenever the channel is usable,
    /// reconnecting when it is not, until `stop` or `limit` payments were sent (a stream that
    /// runs for minutes would drain the channel); counts the payments sent in `sent`.
    pub fn pay_until(&self, stop: &AtomicBool, sent: &AtomicUsize, limit: usize, rng: &mut Rng) {
        let Some(guest) = &self.guest else { return };
        let id = guest.node_id.to_string();
        while !stop.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) < limit {
            if !self.connected() {
                // Refused while the guest is down: tried again shortly.
                let _ = self.node.node().connect(guest, true);
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            if self.channel().is_some_and(|c| c.usable) {
                let sats = 1 + rng.below(MAX_PAYMENT_SATS);
                if self.node.node().keysend(&id, sats * 1000).is_ok() {
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            }
            // A stream, not a flood: the guest under TCG takes a while per payment.
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// After the last cut, with the guest on its home screen: the channel comes back, every
    /// payment in flight resolves, [`PAYMENTS_AFTER`] more succeed, and the guest's channel and
    /// earnings screens show what the host's succeeded payments make. `stale` says whether
    /// a console of the cuts shows LDK's stale-manager force-close, which is the only closing
    /// of the channel accepted.
    pub fn settle_and_check(
        &self,
        guest: &mut Guest,
        link: &mut LinkClient,
        stale: bool,
    ) -> Result<ChannelOutcome, ImageError> {
        let Some(peer) = self.guest.clone() else {
            return Err(peer_error("checking the channel", "the host never opened one"));
        };
        let usable = try_wait_until(Deadline::after(SETTLE), || {
            if self.channel().is_none() {
                return Some(false);
            }
            if !self.connected() {
                let _ = self.node.node().connect(&peer, true);
            }
            self.channel().is_some_and(|c| c.usable).then_some(true)
        });
        match (usable, stale) {
            (Some(true), _) => {}
            (Some(false), true) => return Ok(ChannelOutcome::StaleManagerClose),
            (Some(false), false) => {
                return Err(
                    guest.failed("the channel after the cuts", "the host's channel to the guest is closed")
                );
            }
            (None, _) => {
                return Err(guest.failed(
                    "the channel after the cuts",
                    format!("not usable again: {:?}, connected {}", self.channel(), self.connected()),
                ));
            }
        }
        try_wait_until(Deadline::after(SETTLE), || {
            self.keysends().iter().all(|p| p.status != "pending").then_some(())
        })
        .ok_or_else(|| guest.failed("payments in flight at the cuts", "some never resolved"))?;

        let id = peer.node_id.to_string();
        for _ in 0..PAYMENTS_AFTER {
            let payment = self
                .node
                .node()
                .keysend(&id, MAX_PAYMENT_SATS * 1000)
                .map_err(|e| guest.failed("paying the guest after the cuts", e))?;
            let status = try_wait_until(Deadline::after(PAYMENT), || {
                self.keysends()
                    .into_iter()
                    .find(|p| p.id == payment && p.status != "pending")
                    .map(|p| p.status)
            });
            if status.as_deref() != Some("succeeded") {
                return Err(guest.failed("a payment after the cuts", format!("it ended {status:?}")));
            }
        }

        let payments = self.keysends();
        let succeeded: Vec<u64> =
            payments.iter().filter(|p| p.status == "succeeded").map(|p| p.amount_msat.unwrap_or(0)).collect();
        let failed = payments.iter().filter(|p| p.status == "failed").count();
        let sum_msat: u64 = succeeded.iter().sum();
        let sendable_sats = (sum_msat / 1000).saturating_sub(GUEST_RESERVE_SATS);
        // A payment succeeds for the payer at the preimage; its HTLC leaves the commitment (and
        // the balances) a round trip later: the host's view is awaited, not read once.
        let settled = try_wait_until(Deadline::after(PAYMENT), || {
            self.channel().filter(|c| c.remote_msat / 1000 == sendable_sats)
        });
        let channel = match settled {
            Some(channel) => channel,
            None => self.channel().ok_or_else(|| guest.failed("the channel", "closed while paying"))?,
        };
        if channel.remote_msat / 1000 != sendable_sats {
            return Err(guest.failed(
                "the host's view of the guest's balance",
                format!(
                    "{} msat sendable by the guest, but the {} succeeded payments make {sum_msat} msat less the {GUEST_RESERVE_SATS} sat reserve",
                    channel.remote_msat,
                    succeeded.len()
                ),
            ));
        }
        // The guest's own screens, from its own store.
        press(guest, link, Button::A)?;
        // The OLED groups digits with commas: a line that is this number once they are gone.
        let expected = sendable_sats.to_string();
        link.wait_for_frame(SCREEN, |f| {
            screen(f) == "channels" && f.caption.lines().any(|l| l.replace(',', "") == expected)
        })
        .map_err(|e| {
            guest.failed(&format!("the guest's channel screen showing {expected} sat to send"), e)
        })?;
        press(guest, link, Button::A)?;
        let received = format!("recv {}", succeeded.len());
        link.wait_for_frame(SCREEN, |f| screen(f) == "earnings" && f.caption.lines().any(|l| l == received))
            .map_err(|e| guest.failed(&format!("the guest's earnings screen showing {received:?}"), e))?;
        for page in ["accounts", "network", "system", "alerts", "home"] {
            press(guest, link, Button::A)?;
            wait_screen(guest, link, page, "", SCREEN)?;
        }
        println!(
            "boot-test: after the cuts the guest holds the {} payments the host saw succeed ({} sat; {failed} failed), the channel usable",
            succeeded.len(),
            sum_msat / 1000
        );
        Ok(ChannelOutcome::Kept { payments: succeeded.len(), sats: sum_msat / 1000, failed })
    }
}

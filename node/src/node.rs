//! [`BoltNode`]: ldk-node wrapped for the appliance. It owns the node, its redb store, the
//! status snapshot and the tasks that keep it current (events, a timer, trusted peers).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldk_node::bitcoin::Address;
use ldk_node::bitcoin::hashes::Hash as _;
use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::config::{AnchorChannelsConfig, ChannelConfig, Config as LdkConfig};
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning::offers::offer::Offer;
use ldk_node::lightning::routing::gossip::NodeAlias;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use ldk_node::{Builder, Event, Node, UserChannelId};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

use crate::accounts::{AccountId, Accounts, LedgerError, Op as LedgerOp, hex};
use crate::config::{ChainSource, Gossip, NodeConfig, PeerAddress, ValidConfig};
use crate::error::Error;
use crate::events::NodeEvent;
use crate::ledger::{Forward, Ledger};
use crate::probe::ChainProbe;
use crate::seed::Seed;
use crate::status::{self, AlertInputs, Balances, ChannelSummary, PaymentCounts, Status, SyncStatus};
use crate::store::Store;

pub use crate::datadir::STORE_FILE;
/// How often the status is refreshed without an event.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the chain source is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Trusted peers are checked this often; a failed connect backs off from 1 s to this.
const PEER_CHECK_INTERVAL: Duration = Duration::from_secs(2);
const PEER_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The fee limit of a payment when none is given: LDK's default, 1% of the amount plus 50 sat.
fn default_fee_limit_msat(amount_msat: u64) -> u64 {
    (amount_msat / 100).saturating_add(50_000)
}

/// Now, in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A payment, as the CLI lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSummary {
    /// Payment id (hex).
    pub id: String,
    /// "bolt11", "bolt12", "keysend", "onchain"…
    pub kind: String,
    /// "inbound" or "outbound".
    pub direction: String,
    /// "pending", "succeeded" or "failed".
    pub status: String,
    /// Amount, when known.
    pub amount_msat: Option<u64>,
    /// Fee paid, when known.
    pub fee_msat: Option<u64>,
}

/// A peer, as the CLI lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSummary {
    /// Node id (hex).
    pub node_id: String,
    /// Address.
    pub address: String,
    /// Connected now.
    pub connected: bool,
    /// Reconnected by ldk-node after a restart.
    pub persisted: bool,
}

/// Chain source state seen by the probe task.
#[derive(Debug, Default)]
struct ChainState {
    /// Shown once two probes in a row failed: one slow answer is not an outage.
    error: Option<String>,
    failures: u32,
    tip: Option<u32>,
}

struct Inner {
    node: Node,
    store: Store,
    config: ValidConfig,
    status: RwLock<Status>,
    events: broadcast::Sender<NodeEvent>,
    ledger: Mutex<Ledger>,
    chain: Mutex<ChainState>,
    probe: Option<ChainProbe>,
    /// The bitcoind password the node's chain client was built with (from the cookie, maybe).
    chain_password: Option<String>,
    refresh: Notify,
    started_at: u64,
    funding: Mutex<Funding>,
    /// The accounts ledger (docs/ACCOUNTS.md).
    accounts: Accounts,
    /// Held while an outgoing payment is checked against the ledger and started, so that the
    /// check and the start are one step for every payer (accounts and main alike).
    sending: Mutex<()>,
}

/// An account's payment, as `boltbox account pay` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountPayment {
    /// The payment hash (hex), which is also the payment id.
    pub payment_hash: String,
    /// Amount, msat.
    pub amount_msat: u64,
    /// Fee limit held, msat.
    pub fee_limit_msat: u64,
}

/// The address shown to the owner for funding the node: revealed only when asked for (every
/// revealed address widens the range a restoring wallet must scan), and replaced by a fresh one
/// once the wallet's on-chain total changes (funds arrived, so the address is used).
#[derive(Debug, Default)]
struct Funding {
    wanted: bool,
    /// The address and the on-chain total (sats) when it was revealed.
    shown: Option<(String, u64)>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoltNode").field("node_id", &self.node.node_id()).finish_non_exhaustive()
    }
}

/// Where ldk-node keeps the Lightning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// boltbox's redb store with group commit (the product).
    Boltbox,
    /// ldk-node's stock SQLite store (the baseline the benchmarks compare against); the fee
    /// ledger still lives in boltbox's store.
    LdkSqlite,
}

/// The running Lightning node.
#[derive(Debug)]
pub struct BoltNode {
    inner: Arc<Inner>,
    handle: tokio::runtime::Handle,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl BoltNode {
    /// Builds and starts the node described by `config`, with `seed`, on `store` (the data
    /// dir's, as [`crate::datadir::DataDir::inspect`] found it fit to run), on `runtime`. Blocks
    /// until ldk-node has started; call it from a plain thread, not from inside the runtime.
    ///
    /// On failure the node is dropped and nothing of it keeps running, except in one case that
    /// [`Error::needs_fresh_process`] names: the caller should then start over in a new process.
    pub fn start(
        config: &NodeConfig,
        seed: &Seed,
        store: Store,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, Error> {
        Self::start_with_storage(config, seed, store, runtime, Storage::Boltbox)
    }

    /// [`BoltNode::start`] with a choice of where ldk-node keeps its state (`store` then keeps
    /// only boltbox's own records).
    pub fn start_with_storage(
        config: &NodeConfig,
        seed: &Seed,
        store: Store,
        runtime: tokio::runtime::Handle,
        storage: Storage,
    ) -> Result<Self, Error> {
        let valid = config.validate()?;

        let policy = &config.channel;
        let ldk_config = LdkConfig {
            anchor_channels_config: Some(AnchorChannelsConfig {
                trusted_peers_no_reserve: Vec::new(),
                per_channel_reserve_sats: policy.anchor_reserve_sats,
            }),
            ..LdkConfig::default()
        };
        let mut builder = Builder::from_config(ldk_config);
        builder.set_network(config.network.to_bitcoin());
        builder.set_storage_dir_path(config.data_dir.join("ldk").to_string_lossy().into_owned());
        // Logs go to the `log` facade (and from there to tracing/journald), not to a file on
        // the SD card.
        builder.set_log_facade_logger();
        builder.set_entropy_bip39_mnemonic(seed.mnemonic().clone(), None);
        builder.set_runtime(runtime.clone());
        builder.set_node_alias(config.alias.clone()).map_err(|e| Error::invalid("node.alias", e))?;
        if !valid.listen.is_empty() {
            builder
                .set_listening_addresses(valid.listen.clone())
                .map_err(|e| Error::invalid("node.listen", e))?;
        }
        if !valid.announce.is_empty() {
            builder
                .set_announcement_addresses(valid.announce.clone())
                .map_err(|e| Error::invalid("node.announce", e))?;
        }
        let credentials = crate::probe::bitcoind_credentials(config)
            .map_err(|e| Error::invalid("node.chain.rpc_cookie", e))?;
        match (&config.chain, &credentials) {
            (ChainSource::Bitcoind { rpc_host, .. }, Some((user, password))) => {
                builder.set_chain_source_bitcoind_rpc(
                    rpc_host.clone(),
                    config.bitcoind_rpc_port(),
                    user.clone(),
                    password.clone(),
                );
            }
            (ChainSource::Esplora { url }, _) => {
                builder.set_chain_source_esplora(url.clone(), None);
            }
            (ChainSource::Electrum { url }, _) => {
                builder.set_chain_source_electrum(url.clone(), None);
            }
            (ChainSource::Bitcoind { .. }, None) => {
                return Err(Error::invalid("node.chain", "bitcoind credentials are missing"));
            }
            (ChainSource::Default, _) => {
                return Err(Error::invalid(
                    "node.chain",
                    "the public default was not chosen for the network",
                ));
            }
        }
        match &valid.gossip {
            Gossip::P2p => {
                builder.set_gossip_source_p2p();
            }
            Gossip::Rgs(url) => {
                builder.set_gossip_source_rgs(url.clone());
            }
            Gossip::None => {}
        }
        let node = match storage {
            Storage::Boltbox => builder.build_with_store(Arc::new(store.clone())),
            Storage::LdkSqlite => builder.build(),
        }
        .map_err(|e| Error::Build(format!("{e} ({e:?})")))?;
        node.start().map_err(Error::node("start"))?;

        let probe = ChainProbe::new(config).map_err(|e| tracing::warn!("no chain probe: {e}")).ok();
        let ledger = Ledger::load(&store)?;
        let accounts = Accounts::load(&store, Accounts::default_engine())?;
        let (events, _) = broadcast::channel(256);
        let inner = Arc::new(Inner {
            status: RwLock::new(Status::starting(config.network, &config.alias)),
            node,
            store,
            config: valid,
            events,
            ledger: Mutex::new(ledger),
            chain: Mutex::new(ChainState::default()),
            probe,
            chain_password: credentials.map(|(_, password)| password),
            refresh: Notify::new(),
            started_at: unix_now(),
            funding: Mutex::new(Funding::default()),
            accounts,
            sending: Mutex::new(()),
        });
        inner.apply_policy_to_all_channels();
        inner.resolve_holds();
        inner.refresh_status();

        let (shutdown, _) = watch::channel(false);
        let tasks = vec![
            runtime.spawn(event_loop(inner.clone(), shutdown.subscribe())),
            runtime.spawn(status_loop(inner.clone(), shutdown.subscribe())),
            runtime.spawn(probe_loop(inner.clone(), shutdown.subscribe())),
            runtime.spawn(trusted_peers_loop(inner.clone(), shutdown.subscribe())),
        ];
        tracing::info!(
            "node {} started on {} ({} trusted peers)",
            inner.node.node_id(),
            config.network,
            inner.config.trusted_peers.len()
        );
        Ok(BoltNode { inner, handle: runtime, shutdown, tasks: Mutex::new(tasks) })
    }

    /// Stops the node: our tasks end, ldk-node stops and persists everything, and the store
    /// is flushed. Blocks; call it from a plain thread.
    pub fn stop(&self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = self.handle.block_on(task);
        }
        let stopped = match self.inner.node.stop() {
            Err(ldk_node::NodeError::NotRunning) => Ok(()),
            other => other.map_err(Error::node("stop")),
        };
        self.inner.store.flush()?;
        let counter = self.inner.store.commit_counter()?;
        // ldk-node may keep handles on the store after it stops: close the file regardless,
        // so that the same data dir can be opened again (restart, restore).
        self.inner.store.close();
        self.inner.status.write().unwrap_or_else(|p| p.into_inner()).running = false;
        tracing::info!("node stopped; store flushed and closed at commit {counter}");
        stopped
    }

    /// Why this node must be stopped and started again, if it must: bitcoind was restarted
    /// with a new cookie, which the node's chain client (built with the old one) cannot use.
    pub fn needs_restart(&self) -> Option<String> {
        let probe = self.inner.probe.as_ref()?;
        let password = self.inner.chain_password.as_deref()?;
        probe.credentials_rotated(password).then(|| "bitcoind was restarted with a new cookie".to_string())
    }

    /// The current status snapshot (one lock, one clone: cheap at display rate).
    pub fn status(&self) -> Status {
        let mut status = self.inner.status.read().unwrap_or_else(|p| p.into_inner()).clone();
        // The store's health is read here, live, and only here: LDK persists channel monitors
        // under its channel locks, so a commit stalled on a full disk also stalls a refresh
        // that lists channels, and the snapshot would never say why.
        status.alerts.extend(status::store_alert(&self.inner.store.health(), unix_now()));
        status.mirror = self.inner.store.mirror_status();
        status.alerts.extend(status::mirror_alert(&status.mirror, unix_now()));
        status.remote_mirror = self.inner.store.vss_status();
        status.alerts.extend(status::remote_mirror_alert(&status.remote_mirror, unix_now()));
        status.accounts = self.inner.accounts.summary(3);
        status
    }

    /// Recomputes the status now (it is also refreshed every second and after each event).
    pub fn refresh_status(&self) -> Status {
        self.inner.refresh_status();
        self.status()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// The node's store (for backups and metrics).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The config the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config.raw
    }

    /// Backs the running node up into `dir` (see [`crate::backup::dir`]): one committed state
    /// of the store, taken while the node goes on, sealed on this node's runtime. `seed` is
    /// the node's own (the node does not keep it). Blocks; call it from a plain thread.
    pub fn backup_to_dir(
        &self,
        seed: &Seed,
        dir: &std::path::Path,
        keep: usize,
        progress: &mut dyn FnMut(u8),
    ) -> Result<crate::backup::Written, crate::backup::BackupError> {
        let node_id = self.node_id();
        let source = crate::backup::BackupSource {
            store: &self.inner.store,
            seed,
            config: &self.inner.config.raw,
            node_id: &node_id,
            workers: crate::backup::Workers(self.handle.clone()),
        };
        crate::backup::backup_to_dir(&source, dir, keep, progress)
    }

    /// Our node id (hex).
    pub fn node_id(&self) -> String {
        self.inner.node.node_id().to_string()
    }

    /// `node_id@host:port` for each listening address.
    pub fn uris(&self) -> Vec<String> {
        let id = self.node_id();
        self.inner.config.listen.iter().map(|a| format!("{id}@{a}")).collect()
    }

    /// Asks for an on-chain address to fund the node (the OLED's funding screen): the next
    /// status refreshes carry it in [`Status::funding_address`], until funds arrive and a
    /// fresh one replaces it.
    pub fn want_funding_address(&self) {
        self.inner.funding.lock().unwrap_or_else(|p| p.into_inner()).wanted = true;
        self.inner.refresh.notify_one();
    }

    /// A new on-chain address of the node's wallet.
    pub fn new_address(&self) -> Result<String, Error> {
        Ok(self.inner.node.onchain_payment().new_address().map_err(Error::node("new address"))?.to_string())
    }

    /// Sends `amount_sats` on-chain to `address` (or everything but the anchor reserve when
    /// `amount_sats` is `None`). Returns the txid.
    pub fn send_onchain(&self, address: &str, amount_sats: Option<u64>) -> Result<String, Error> {
        let network = self.inner.config.raw.network.to_bitcoin();
        let address = Address::from_str(address)
            .map_err(|e| Error::invalid("address", e))?
            .require_network(network)
            .map_err(|e| Error::invalid("address", e))?;
        let onchain = self.inner.node.onchain_payment();
        let txid = match amount_sats {
            Some(sats) => onchain.send_to_address(&address, sats, None),
            None => onchain.send_all_to_address(&address, true, None),
        }
        .map_err(Error::node("send on-chain"))?;
        Ok(txid.to_string())
    }

    /// Connects to a peer; `persist` makes ldk-node reconnect to it after restarts.
    pub fn connect(&self, peer: &PeerAddress, persist: bool) -> Result<(), Error> {
        self.inner.node.connect(peer.node_id, peer.address.clone(), persist).map_err(Error::node("connect"))
    }

    /// Disconnects from a peer (and forgets it).
    pub fn disconnect(&self, node_id: &str) -> Result<(), Error> {
        let id = parse_node_id(node_id)?;
        self.inner.node.disconnect(id).map_err(Error::node("disconnect"))
    }

    /// Opens a channel of `amount_sats` to `peer`, announced or not, with our channel policy.
    /// Returns the user channel id (decimal).
    pub fn open_channel(
        &self,
        peer: &PeerAddress,
        amount_sats: u64,
        push_msat: Option<u64>,
        announce: bool,
    ) -> Result<String, Error> {
        let config = Some(self.inner.channel_config());
        let node = &self.inner.node;
        let id = if announce {
            node.open_announced_channel(peer.node_id, peer.address.clone(), amount_sats, push_msat, config)
        } else {
            node.open_channel(peer.node_id, peer.address.clone(), amount_sats, push_msat, config)
        }
        .map_err(Error::node("open channel"))?;
        Ok(id.0.to_string())
    }

    /// Closes a channel cooperatively, or by force.
    pub fn close_channel(&self, user_channel_id: &str, force: bool) -> Result<(), Error> {
        let wanted = u128::from_str(user_channel_id).map_err(|e| Error::invalid("channel id", e))?;
        let channel = self
            .inner
            .node
            .list_channels()
            .into_iter()
            .find(|c| c.user_channel_id.0 == wanted)
            .ok_or_else(|| Error::invalid("channel id", format!("no channel {user_channel_id}")))?;
        let (id, peer) = (UserChannelId(wanted), channel.counterparty_node_id);
        if force {
            self.inner
                .node
                .force_close_channel(&id, peer, Some("closed by the operator".into()))
                .map_err(Error::node("force close"))
        } else {
            self.inner.node.close_channel(&id, peer).map_err(Error::node("close"))
        }
    }

    /// A BOLT11 invoice for `amount_msat` (any amount when `None`).
    pub fn create_invoice(
        &self,
        amount_msat: Option<u64>,
        description: &str,
        expiry_secs: u32,
    ) -> Result<String, Error> {
        let description = Bolt11InvoiceDescription::Direct(
            Description::new(description.to_string()).map_err(|e| Error::invalid("description", e))?,
        );
        let bolt11 = self.inner.node.bolt11_payment();
        let invoice = match amount_msat {
            Some(msat) => bolt11.receive(msat, &description, expiry_secs),
            None => bolt11.receive_variable_amount(&description, expiry_secs),
        }
        .map_err(Error::node("create invoice"))?;
        Ok(invoice.to_string())
    }

    /// Pays a BOLT11 invoice (with `amount_msat` for an any-amount invoice). Returns the
    /// payment id (hex); the outcome arrives as an event.
    pub fn pay_invoice(&self, invoice: &str, amount_msat: Option<u64>) -> Result<String, Error> {
        let invoice = Bolt11Invoice::from_str(invoice.trim()).map_err(|e| Error::invalid("invoice", e))?;
        let _sending = self.inner.sending.lock().unwrap_or_else(|p| p.into_inner());
        let hash = invoice.payment_hash().to_byte_array();
        if self.inner.accounts.knows(&hash) {
            return Err(Error::invalid("invoice", "it was made for accounts, or an account pays it"));
        }
        self.inner.check_main(amount_msat.or(invoice.amount_milli_satoshis()))?;
        let bolt11 = self.inner.node.bolt11_payment();
        let id = match amount_msat {
            Some(msat) => bolt11.send_using_amount(&invoice, msat, None),
            None => bolt11.send(&invoice, None),
        }
        .map_err(Error::node("pay invoice"))?;
        Ok(hex(&id.0))
    }

    /// Sends a spontaneous (keysend) payment.
    pub fn keysend(&self, node_id: &str, amount_msat: u64) -> Result<String, Error> {
        let id = parse_node_id(node_id)?;
        let _sending = self.inner.sending.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.check_main(Some(amount_msat))?;
        let payment = self.inner.node.spontaneous_payment().send(amount_msat, id, None);
        Ok(hex(&payment.map_err(Error::node("keysend"))?.0))
    }

    /// A BOLT12 offer for `amount_msat` (any amount when `None`).
    pub fn create_offer(&self, amount_msat: Option<u64>, description: &str) -> Result<String, Error> {
        let bolt12 = self.inner.node.bolt12_payment();
        let offer = match amount_msat {
            Some(msat) => bolt12.receive(msat, description, None, None),
            None => bolt12.receive_variable_amount(description, None),
        }
        .map_err(Error::node("create offer"))?;
        Ok(offer.to_string())
    }

    /// Pays a BOLT12 offer (with `amount_msat` for an any-amount offer).
    pub fn pay_offer(&self, offer: &str, amount_msat: Option<u64>) -> Result<String, Error> {
        let offer = Offer::from_str(offer.trim()).map_err(|e| Error::invalid("offer", format!("{e:?}")))?;
        let _sending = self.inner.sending.lock().unwrap_or_else(|p| p.into_inner());
        let offer_msat = match offer.amount() {
            Some(ldk_node::lightning::offers::offer::Amount::Bitcoin { amount_msats }) => Some(amount_msats),
            _ => None,
        };
        self.inner.check_main(amount_msat.or(offer_msat))?;
        let bolt12 = self.inner.node.bolt12_payment();
        let id = match amount_msat {
            Some(msat) => bolt12.send_using_amount(&offer, msat, None, None, None),
            None => bolt12.send(&offer, None, None, None),
        }
        .map_err(Error::node("pay offer"))?;
        Ok(hex(&id.0))
    }

    /// The accounts ledger, for reading (its changes go through [`BoltNode::account_ops`] and
    /// the payment methods, which know what main has).
    pub fn accounts(&self) -> &Accounts {
        &self.inner.accounts
    }

    /// Runs `ops` as one durable batch on the accounts ledger (see
    /// [`Accounts::apply`]); main has the node's spendable Lightning balance minus what the
    /// ledger tracks.
    pub fn account_ops(
        &self,
        ops: Vec<LedgerOp>,
    ) -> Result<Vec<Result<crate::accounts::Done, LedgerError>>, Error> {
        // Under the sending lock: what main has is read and given out in one step, never
        // while a payment from main is being checked and started.
        let _sending = self.inner.sending.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.inner.accounts.apply(ops, unix_now(), self.inner.spendable_msat())?)
    }

    /// What the owner's main account has, msat: the spendable Lightning balance minus what the
    /// accounts hold.
    pub fn main_account_msat(&self) -> u64 {
        self.inner.spendable_msat().saturating_sub(self.inner.accounts.tracked_msat())
    }

    /// A BOLT11 invoice whose payment is credited to accounts by weight (`shares`: 1 to 16
    /// (account, weight > 0); one account for an invoice of its own).
    pub fn account_invoice(
        &self,
        shares: Vec<(AccountId, u32)>,
        amount_msat: Option<u64>,
        description: &str,
        expiry_secs: u32,
    ) -> Result<String, Error> {
        for (id, _) in &shares {
            if self.inner.accounts.show(*id).is_none() {
                return Err(Error::Accounts(crate::accounts::AccountsError::Refused(
                    LedgerError::NoAccount(*id),
                )));
            }
        }
        let text = self.create_invoice(amount_msat, description, expiry_secs)?;
        let invoice = Bolt11Invoice::from_str(&text).map_err(|e| Error::invalid("invoice", e))?;
        let op = LedgerOp::Invoice { payment_hash: invoice.payment_hash().to_byte_array(), shares };
        match self.inner.accounts.apply_one(op, unix_now(), 0)? {
            Ok(_) => Ok(text),
            // Not recorded: a payment of it would go to main. Nobody has the invoice yet.
            Err(refused) => Err(Error::Accounts(crate::accounts::AccountsError::Refused(refused))),
        }
    }

    /// Pays a BOLT11 invoice (with an amount) from an account: holds amount plus `fee_limit_msat`
    /// (default: 1% + 50 sat) durably, then starts the payment; its success settles the hold
    /// with the fee paid, its failure releases it (events, also after a restart). An invoice
    /// the node tried to pay before is refused: it is paid at most once, and only from one
    /// place.
    pub fn account_pay(
        &self,
        account: AccountId,
        invoice: &str,
        fee_limit_msat: Option<u64>,
    ) -> Result<AccountPayment, Error> {
        use ldk_node::lightning::ln::channelmanager::PaymentId;
        use ldk_node::lightning::routing::router::RouteParametersConfig;
        let invoice = Bolt11Invoice::from_str(invoice.trim()).map_err(|e| Error::invalid("invoice", e))?;
        let amount_msat = invoice
            .amount_milli_satoshis()
            .ok_or_else(|| Error::invalid("invoice", "an account pays only invoices that name an amount"))?;
        let fee_limit_msat = fee_limit_msat.unwrap_or_else(|| default_fee_limit_msat(amount_msat));
        let payment_hash = invoice.payment_hash().to_byte_array();
        let _sending = self.inner.sending.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.node.payment(&PaymentId(payment_hash)).is_some()
            || self.inner.accounts.knows(&payment_hash)
        {
            return Err(Error::invalid(
                "invoice",
                "this node tried to pay it or made it before; it is paid at most once",
            ));
        }
        let hold = LedgerOp::Hold { payment_hash, account, amount_msat, fee_limit_msat };
        if let Err(refused) = self.inner.accounts.apply_one(hold, unix_now(), 0)? {
            return Err(Error::Accounts(crate::accounts::AccountsError::Refused(refused)));
        }
        let route =
            RouteParametersConfig { max_total_routing_fee_msat: Some(fee_limit_msat), ..Default::default() };
        match self.inner.node.bolt11_payment().send(&invoice, Some(route)) {
            Ok(_) => {}
            // Nothing was sent: the hold goes back. Any other error may come after LDK took
            // the payment; its outcome then arrives as an event, which settles or releases.
            Err(
                e @ (ldk_node::NodeError::NotRunning
                | ldk_node::NodeError::InvalidInvoice
                | ldk_node::NodeError::PaymentSendingFailed),
            ) => {
                self.inner.ledger_event(LedgerOp::Release { payment_hash });
                return Err(Error::Node { operation: "pay from account", source: e });
            }
            Err(e) => return Err(Error::Node { operation: "pay from account", source: e }),
        }
        Ok(AccountPayment { payment_hash: hex(&payment_hash), amount_msat, fee_limit_msat })
    }

    /// A payment's status ("pending", "succeeded", "failed") by its id (hex), if the node has
    /// a record of it.
    pub fn payment_status(&self, id_hex: &str) -> Option<String> {
        let id = crate::accounts::parse_hex32(id_hex)?;
        let payment = self.inner.node.payment(&ldk_node::lightning::ln::channelmanager::PaymentId(id))?;
        Some(status_name(payment.status).to_string())
    }

    /// The channels.
    pub fn list_channels(&self) -> Vec<ChannelSummary> {
        self.inner.node.list_channels().iter().map(summarize_channel).collect()
    }

    /// The payments, newest last.
    pub fn list_payments(&self) -> Vec<PaymentSummary> {
        let mut payments = self.inner.node.list_payments();
        payments.sort_by_key(|p| p.latest_update_timestamp);
        payments
            .iter()
            .map(|p| PaymentSummary {
                id: hex(&p.id.0),
                kind: match p.kind {
                    PaymentKind::Onchain { .. } => "onchain",
                    PaymentKind::Bolt11 { .. } | PaymentKind::Bolt11Jit { .. } => "bolt11",
                    PaymentKind::Bolt12Offer { .. } | PaymentKind::Bolt12Refund { .. } => "bolt12",
                    PaymentKind::Spontaneous { .. } => "keysend",
                }
                .into(),
                direction: match p.direction {
                    PaymentDirection::Inbound => "inbound",
                    PaymentDirection::Outbound => "outbound",
                }
                .into(),
                status: status_name(p.status).into(),
                amount_msat: p.amount_msat,
                fee_msat: p.fee_paid_msat,
            })
            .collect()
    }

    /// The peers.
    pub fn list_peers(&self) -> Vec<PeerSummary> {
        self.inner
            .node
            .list_peers()
            .into_iter()
            .map(|p| PeerSummary {
                node_id: p.node_id.to_string(),
                address: p.address.to_string(),
                connected: p.is_connected,
                persisted: p.is_persisted,
            })
            .collect()
    }

    /// How many nodes, and routable channels (announced, with fee policies for both
    /// directions), the node knows of in the network graph.
    pub fn graph_size(&self) -> (usize, usize) {
        let graph = self.inner.node.network_graph();
        let routable = graph
            .list_channels()
            .iter()
            .filter_map(|scid| graph.channel(*scid))
            .filter(|c| c.one_to_two.is_some() && c.two_to_one.is_some())
            .count();
        (graph.list_nodes().len(), routable)
    }

    /// Whether the network graph holds `node_id`'s node announcement.
    pub fn graph_has_announced_node(&self, node_id: &str) -> bool {
        let Ok(id) = parse_node_id(node_id) else { return false };
        let id = ldk_node::lightning::routing::gossip::NodeId::from_pubkey(&id);
        self.inner.node.network_graph().node(&id).is_some_and(|n| n.announcement_info.is_some())
    }

    /// Syncs the wallets with the chain source now (ldk-node also does so on its own timer).
    pub fn sync_wallets(&self) -> Result<(), Error> {
        self.inner.node.sync_wallets().map_err(Error::node("sync wallets"))
    }
}

impl Drop for BoltNode {
    fn drop(&mut self) {
        // A node dropped without `stop` still stops its tasks; ldk-node persists on its own.
        let _ = self.shutdown.send(true);
    }
}

/// Bytes available to an unprivileged user on the filesystem holding `dir`.
fn disk_free(dir: &std::path::Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    stat.f_bavail.checked_mul(stat.f_frsize)
}

fn parse_node_id(text: &str) -> Result<PublicKey, Error> {
    PublicKey::from_str(text.trim()).map_err(|e| Error::invalid("node id", e))
}

fn status_name(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Pending => "pending",
        PaymentStatus::Succeeded => "succeeded",
        PaymentStatus::Failed => "failed",
    }
}

fn summarize_channel(c: &ldk_node::ChannelDetails) -> ChannelSummary {
    ChannelSummary {
        channel_id: c.channel_id.to_string(),
        user_channel_id: c.user_channel_id.0.to_string(),
        peer: c.counterparty_node_id.to_string(),
        capacity_sats: c.channel_value_sats,
        local_msat: c.outbound_capacity_msat,
        remote_msat: c.inbound_capacity_msat,
        usable: c.is_usable,
        pending: !c.is_channel_ready,
        announced: c.is_announced,
    }
}

fn count_payments(node: &Node) -> PaymentCounts {
    let mut counts = PaymentCounts::default();
    for p in node.list_payments_with_filter(|p| {
        p.status == PaymentStatus::Succeeded && !matches!(p.kind, PaymentKind::Onchain { .. })
    }) {
        match p.direction {
            PaymentDirection::Inbound => counts.received += 1,
            PaymentDirection::Outbound => counts.sent += 1,
        }
    }
    counts
}

impl Inner {
    fn channel_config(&self) -> ChannelConfig {
        let policy = &self.config.raw.channel;
        ChannelConfig {
            forwarding_fee_base_msat: policy.forwarding_fee_base_msat,
            forwarding_fee_proportional_millionths: policy.forwarding_fee_proportional_millionths,
            cltv_expiry_delta: policy.cltv_expiry_delta,
            ..ChannelConfig::default()
        }
    }

    /// Inbound channels are opened with LDK's defaults: our policy is applied when they are
    /// ready, and to every channel at start so that a changed config reaches them.
    fn apply_policy(&self, channel: &ldk_node::ChannelDetails) {
        let wanted = self.channel_config();
        let current = &channel.config;
        if current.forwarding_fee_base_msat == wanted.forwarding_fee_base_msat
            && current.forwarding_fee_proportional_millionths == wanted.forwarding_fee_proportional_millionths
            && current.cltv_expiry_delta == wanted.cltv_expiry_delta
        {
            return;
        }
        if let Err(e) =
            self.node.update_channel_config(&channel.user_channel_id, channel.counterparty_node_id, wanted)
        {
            tracing::warn!(
                "could not apply the channel policy to channel {}: {e}",
                channel.user_channel_id.0
            );
        }
    }

    fn apply_policy_to_all_channels(&self) {
        for channel in self.node.list_channels() {
            self.apply_policy(&channel);
        }
    }

    fn publish(&self, event: NodeEvent) {
        // No subscriber is fine: the UI may not be listening.
        let _ = self.events.send(event);
    }

    /// Carries out what `event` means for boltbox. `first_since_start`: no event has been marked
    /// handled since the node started (see [`Ledger::record_forward`]).
    fn handle_event(&self, event: &Event, first_since_start: bool) -> Result<(), Error> {
        match event {
            Event::PaymentForwarded {
                prev_channel_id,
                next_channel_id,
                total_fee_earned_msat,
                outbound_amount_forwarded_msat,
                ..
            } => {
                let forward = Forward {
                    prev_channel_id: prev_channel_id.to_string(),
                    next_channel_id: next_channel_id.to_string(),
                    fee_msat: *total_fee_earned_msat,
                    outbound_amount_msat: *outbound_amount_forwarded_msat,
                };
                let counted = self.ledger.lock().unwrap_or_else(|p| p.into_inner()).record_forward(
                    &forward,
                    unix_now(),
                    first_since_start,
                    &self.store,
                )?;
                if counted {
                    self.publish(NodeEvent::PaymentForwarded {
                        fee_msat: total_fee_earned_msat.unwrap_or(0),
                    });
                }
            }
            Event::PaymentReceived { payment_hash, amount_msat, .. } => {
                // Durable before the event is marked handled; a replay finds it credited.
                let credit = LedgerOp::Credit { payment_hash: payment_hash.0, amount_msat: *amount_msat };
                self.ledger_op_for_event(credit)?;
                self.publish(NodeEvent::PaymentReceived {
                    payment_hash: hex(&payment_hash.0),
                    amount_msat: *amount_msat,
                });
            }
            Event::PaymentSuccessful { payment_id, payment_hash, fee_paid_msat, .. } => {
                // An account's payment has the id of its hash (BOLT11); another payment with the
                // same hash (a BOLT12 invoice's, chosen by its payee) never settles a hold.
                if payment_id.is_some_and(|id| id.0 == payment_hash.0) {
                    let settle =
                        LedgerOp::Settle { payment_hash: payment_hash.0, fee_paid_msat: *fee_paid_msat };
                    self.ledger_op_for_event(settle)?;
                }
                self.publish(NodeEvent::PaymentSent {
                    payment_hash: hex(&payment_hash.0),
                    fee_msat: *fee_paid_msat,
                });
            }
            Event::PaymentFailed { payment_id, payment_hash, reason, .. } => {
                if let (Some(id), Some(hash)) = (payment_id, payment_hash)
                    && id.0 == hash.0
                {
                    self.ledger_op_for_event(LedgerOp::Release { payment_hash: hash.0 })?;
                }
                self.publish(NodeEvent::PaymentFailed {
                    payment_hash: payment_hash.map(|h| hex(&h.0)),
                    reason: format!("{reason:?}"),
                });
            }
            Event::ChannelPending { channel_id, counterparty_node_id, .. } => {
                self.publish(NodeEvent::ChannelPending {
                    channel_id: channel_id.to_string(),
                    peer: counterparty_node_id.to_string(),
                });
            }
            Event::ChannelReady { channel_id, user_channel_id, counterparty_node_id, .. } => {
                match self.node.list_channels().into_iter().find(|c| c.user_channel_id == *user_channel_id) {
                    Some(channel) => self.apply_policy(&channel),
                    None => tracing::warn!("channel {} is ready but not listed", user_channel_id.0),
                }
                self.publish(NodeEvent::ChannelReady {
                    channel_id: channel_id.to_string(),
                    peer: counterparty_node_id.map(|p| p.to_string()),
                });
            }
            Event::ChannelClosed { channel_id, counterparty_node_id, reason, .. } => {
                self.publish(NodeEvent::ChannelClosed {
                    channel_id: channel_id.to_string(),
                    peer: counterparty_node_id.map(|p| p.to_string()),
                    reason: reason.as_ref().map(|r| r.to_string()).unwrap_or_else(|| "unknown".into()),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies a credit, settle or release caused by an event, if the ledger knows the payment.
    /// A refusal (a replay: credited already, no hold) is logged; a store error is returned,
    /// so that the event stays unhandled and comes again.
    fn ledger_op_for_event(&self, op: LedgerOp) -> Result<(), Error> {
        let (LedgerOp::Credit { payment_hash, .. }
        | LedgerOp::Settle { payment_hash, .. }
        | LedgerOp::Release { payment_hash }) = &op
        else {
            return Ok(());
        };
        if !self.accounts.knows(payment_hash) {
            return Ok(());
        }
        match self.accounts.apply_one(op.clone(), unix_now(), 0)? {
            Ok(_) => tracing::info!("accounts: {op:?}"),
            Err(refused) => tracing::info!("accounts: {op:?} changes nothing: {refused}"),
        }
        Ok(())
    }

    /// [`Inner::ledger_op_for_event`] outside the event loop (a payment that never started):
    /// a store error is logged, and the hold stays (fail closed).
    fn ledger_event(&self, op: LedgerOp) {
        if let Err(e) = self.ledger_op_for_event(op) {
            tracing::error!("accounts: {e}; the hold stays (fail closed)");
        }
    }

    /// Settles or releases the holds whose payments ended while the node was not listening
    /// (ldk-node's record says how). A hold whose payment ldk-node has no record of stays held:
    /// ldk-node records a payment only after LDK took it, so it may be in flight.
    fn resolve_holds(&self) {
        use ldk_node::lightning::ln::channelmanager::PaymentId;
        for (payment_hash, hold) in self.accounts.holds() {
            let op = match self.node.payment(&PaymentId(payment_hash)) {
                Some(p) if p.status == PaymentStatus::Succeeded => {
                    LedgerOp::Settle { payment_hash, fee_paid_msat: p.fee_paid_msat }
                }
                Some(p) if p.status == PaymentStatus::Failed => LedgerOp::Release { payment_hash },
                Some(_) => continue,
                None => {
                    tracing::warn!(
                        "account {}'s payment {} is unknown to the node; it stays held (fail closed)",
                        hold.account,
                        hex(&payment_hash)
                    );
                    continue;
                }
            };
            self.ledger_event(op);
        }
    }

    /// The node's spendable Lightning balance, msat: the outbound capacity of its ready
    /// channels (what it can pay out now), less main's outbound payments still pending with
    /// their default fee limit (LDK takes them from the capacity only once their HTLCs are
    /// added, and gives them back between retries). Fails closed: an HTLC already added counts
    /// twice until its payment ends.
    fn spendable_msat(&self) -> u64 {
        let capacity = self
            .node
            .list_channels()
            .iter()
            .filter(|c| c.is_channel_ready)
            .map(|c| c.outbound_capacity_msat)
            .fold(0, u64::saturating_add);
        let pending = self
            .node
            .list_payments_with_filter(|p| {
                p.direction == PaymentDirection::Outbound
                    && p.status == PaymentStatus::Pending
                    && !self.accounts.is_held(&p.id.0)
            })
            .iter()
            .map(|p| {
                let amount = p.amount_msat.unwrap_or(0);
                amount.saturating_add(default_fee_limit_msat(amount))
            })
            .fold(0, u64::saturating_add);
        capacity.saturating_sub(pending)
    }

    /// Refuses a payment from main that would spend the accounts' money: `amount_msat` plus the
    /// default fee limit must be within what main has. Fails closed on an unknown amount.
    fn check_main(&self, amount_msat: Option<u64>) -> Result<(), Error> {
        if self.accounts.tracked_msat() == 0 {
            return Ok(());
        }
        let amount_msat =
            amount_msat.ok_or_else(|| Error::invalid("amount", "accounts hold money: name the amount"))?;
        let needed_msat = amount_msat.saturating_add(default_fee_limit_msat(amount_msat));
        let available_msat = self.spendable_msat().saturating_sub(self.accounts.tracked_msat());
        if needed_msat > available_msat {
            return Err(Error::Accounts(crate::accounts::AccountsError::Refused(
                LedgerError::MainInsufficient { available_msat, needed_msat },
            )));
        }
        Ok(())
    }

    /// The funding address to show, if the owner asked for one (see [`Funding`]); revealing
    /// one writes the wallet, so a store that cannot save leaves it `None` until it can.
    fn funding_address(&self, onchain_total_sats: u64) -> Option<String> {
        let mut funding = self.funding.lock().unwrap_or_else(|p| p.into_inner());
        if !funding.wanted {
            return None;
        }
        if let Some((address, at_total)) = &funding.shown {
            if *at_total == onchain_total_sats {
                return Some(address.clone());
            }
        }
        match self.node.onchain_payment().new_address() {
            Ok(address) => {
                let address = address.to_string();
                funding.shown = Some((address.clone(), onchain_total_sats));
                Some(address)
            }
            Err(e) => {
                tracing::warn!("cannot reveal a funding address: {e}");
                funding.shown = None;
                None
            }
        }
    }

    fn refresh_status(&self) {
        let node = &self.node;
        let ldk = node.status();
        let now = unix_now();
        let balances = node.list_balances();
        let channels: Vec<ChannelSummary> = node.list_channels().iter().map(summarize_channel).collect();
        let peers = node.list_peers();
        let connected: Vec<PublicKey> = peers.iter().filter(|p| p.is_connected).map(|p| p.node_id).collect();
        let trusted_down: Vec<String> = self
            .config
            .trusted_peers
            .iter()
            .filter(|p| !connected.contains(&p.node_id))
            .map(|p| p.node_id.to_string())
            .collect();
        let (chain_error, tip) = {
            let chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
            (chain.error.clone(), chain.tip)
        };
        let height = ldk.current_best_block.height;
        let last_sync =
            ldk.latest_onchain_wallet_sync_timestamp.max(ldk.latest_lightning_wallet_sync_timestamp);
        let claimable_sats = balances
            .pending_balances_from_channel_closures
            .iter()
            .map(|b| match b {
                ldk_node::PendingSweepBalance::PendingBroadcast { amount_satoshis, .. }
                | ldk_node::PendingSweepBalance::BroadcastAwaitingConfirmation { amount_satoshis, .. }
                | ldk_node::PendingSweepBalance::AwaitingThresholdConfirmations { amount_satoshis, .. } => {
                    *amount_satoshis
                }
            })
            .sum();
        let in_flight_htlc_msat = balances
            .lightning_balances
            .iter()
            .map(|b| match b {
                ldk_node::LightningBalance::ClaimableOnChannelClose {
                    outbound_payment_htlc_rounded_msat,
                    outbound_forwarded_htlc_rounded_msat,
                    inbound_claiming_htlc_rounded_msat,
                    inbound_htlc_rounded_msat,
                    ..
                } => outbound_payment_htlc_rounded_msat
                    .saturating_add(*outbound_forwarded_htlc_rounded_msat)
                    .saturating_add(*inbound_claiming_htlc_rounded_msat)
                    .saturating_add(*inbound_htlc_rounded_msat),
                // The rounded parts above are only what HTLCs carry below a whole satoshi (and
                // dust HTLCs): each HTLC with an output of its own is a balance of its own.
                ldk_node::LightningBalance::MaybeTimeoutClaimableHTLC { amount_satoshis, .. }
                | ldk_node::LightningBalance::MaybePreimageClaimableHTLC { amount_satoshis, .. } => {
                    amount_satoshis.saturating_mul(1000)
                }
                _ => 0,
            })
            .fold(0u64, u64::saturating_add);
        let funding_address = self.funding_address(balances.total_onchain_balance_sats);
        let anchor_channels = channels.iter().filter(|c| !c.pending || c.usable).count() as u64;
        let reserve_per_channel = self.config.raw.channel.anchor_reserve_sats;
        let alerts = status::alerts(&AlertInputs {
            chain_error,
            now,
            last_sync,
            started_at: self.started_at,
            trusted_peers_down: trusted_down,
            onchain_for_reserve_sats: balances
                .total_anchor_channels_reserve_sats
                .saturating_add(balances.spendable_onchain_balance_sats),
            reserve_needed_sats: anchor_channels
                .max(channels.len() as u64)
                .saturating_mul(reserve_per_channel),
            disk_free_bytes: disk_free(&self.config.raw.data_dir),
            store_bytes: std::fs::metadata(self.config.raw.data_dir.join(STORE_FILE)).map_or(0, |m| m.len()),
        });
        let status = Status {
            network: self.config.raw.network,
            node_id: node.node_id().to_string(),
            alias: node.node_alias().map(|a: NodeAlias| a.to_string()).unwrap_or_default(),
            listening: self.config.listen.iter().map(SocketAddress::to_string).collect(),
            running: ldk.is_running,
            chain_source: self.config.raw.chain.describe(),
            sync: SyncStatus {
                lightning_height: height,
                wallet_height: height,
                chain_tip: tip,
                last_sync,
                syncing: tip.is_some_and(|t| t > height),
            },
            peers_connected: connected.len(),
            peers_configured: self.config.trusted_peers.len(),
            balances: Balances {
                onchain_total_sats: balances.total_onchain_balance_sats,
                onchain_spendable_sats: balances.spendable_onchain_balance_sats,
                onchain_unconfirmed_sats: balances
                    .total_onchain_balance_sats
                    .saturating_sub(balances.spendable_onchain_balance_sats)
                    .saturating_sub(balances.total_anchor_channels_reserve_sats),
                anchor_reserve_sats: balances.total_anchor_channels_reserve_sats,
                lightning_sats: balances.total_lightning_balance_sats,
                claimable_sats,
                in_flight_htlc_msat,
            },
            channels,
            earnings: self.ledger.lock().unwrap_or_else(|p| p.into_inner()).earnings(now),
            // Counted from ldk-node's payment store at each refresh, not from events: an event
            // replayed after a crash would count its payment twice.
            payments: count_payments(node),
            alerts,
            mirror: crate::mirror::MirrorStatus::Off,
            remote_mirror: crate::mirror::vss::VssStatus::Off,
            funding_address,
            accounts: Default::default(),
            updated_at: now,
        };
        *self.status.write().unwrap_or_else(|p| p.into_inner()) = status;
    }
}

async fn event_loop(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let mut first_since_start = true;
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => return,
            event = inner.node.next_event_async() => event,
        };
        match inner.handle_event(&event, first_since_start) {
            Ok(()) => {
                // Only now may ldk-node forget the event: what it caused is stored. It drops
                // the event from memory even when storing the queue fails (then it comes again
                // only after a restart, where the unsettled forward catches it).
                first_since_start = false;
                match inner.node.event_handled() {
                    Ok(()) => {
                        if matches!(event, Event::PaymentForwarded { .. }) {
                            let mut ledger = inner.ledger.lock().unwrap_or_else(|p| p.into_inner());
                            if let Err(e) = ledger.settle(&inner.store) {
                                tracing::error!("could not settle the fee ledger: {e}");
                            }
                        }
                    }
                    Err(e) => tracing::error!("could not mark event handled: {e}"),
                }
            }
            Err(e) => {
                // Leave it unhandled: ldk-node hands it out again.
                tracing::error!("handling {event:?} failed: {e}");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        inner.refresh.notify_one();
    }
}

async fn status_loop(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = inner.refresh.notified() => {}
            _ = tokio::time::sleep(STATUS_INTERVAL) => {}
        }
        let worker = inner.clone();
        // ldk-node's list calls take its locks: keep them off the async workers.
        if tokio::task::spawn_blocking(move || worker.refresh_status()).await.is_err() {
            tracing::error!("status refresh panicked");
        }
    }
}

async fn probe_loop(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let Some(probe) = inner.probe.as_ref() else { return };
    loop {
        let result = probe.probe().await;
        {
            let mut chain = inner.chain.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(facts) => {
                    if chain.error.take().is_some() {
                        tracing::info!("chain source reachable again");
                    }
                    chain.failures = 0;
                    chain.tip = facts.tip.or(chain.tip);
                }
                Err(reason) => {
                    chain.failures = chain.failures.saturating_add(1);
                    if chain.failures >= 2 {
                        if chain.error.as_deref() != Some(reason.as_str()) {
                            tracing::warn!("chain source: {reason}");
                        }
                        chain.error = Some(reason);
                    }
                }
            }
        }
        inner.refresh.notify_one();
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

async fn trusted_peers_loop(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    if inner.config.trusted_peers.is_empty() {
        return;
    }
    // Per peer: when the next attempt may be made, and the current backoff.
    let mut backoff: HashMap<PublicKey, (Instant, Duration)> = HashMap::new();
    loop {
        let connected: Vec<PublicKey> =
            inner.node.list_peers().into_iter().filter(|p| p.is_connected).map(|p| p.node_id).collect();
        for peer in &inner.config.trusted_peers {
            if connected.contains(&peer.node_id) {
                backoff.remove(&peer.node_id);
                continue;
            }
            let now = Instant::now();
            let (next, delay) = backoff.get(&peer.node_id).copied().unwrap_or((now, Duration::from_secs(1)));
            if now < next {
                continue;
            }
            let (worker, target) = (inner.clone(), peer.clone());
            let outcome = tokio::task::spawn_blocking(move || {
                worker.node.connect(target.node_id, target.address, true)
            })
            .await;
            match outcome {
                Ok(Ok(())) => {
                    tracing::info!("connected to trusted peer {peer}");
                    backoff.remove(&peer.node_id);
                }
                Ok(Err(e)) => {
                    tracing::warn!("trusted peer {peer}: {e}; next try in {} s", delay.as_secs());
                    backoff.insert(peer.node_id, (now + delay, (delay * 2).min(PEER_MAX_BACKOFF)));
                }
                Err(e) => tracing::error!("connecting to {peer} panicked: {e}"),
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(PEER_CHECK_INTERVAL) => {}
        }
    }
}

//! A boltbox node on the test bitcoind: its own data dir, runtime and event subscription.

use std::time::Duration;

use boltbox_node::config::ChainSource;
use boltbox_node::{
    BoltNode, DataDir, Inspection, Network, NodeConfig, NodeEvent, PeerAddress, Seed, Status, Storage, Store,
};
use tokio::sync::broadcast::error::TryRecvError;

use crate::bitcoind::{BitcoinD, free_port};
use crate::wait::{Deadline, try_wait_until, wait_until};

/// A running test node. Stopped (and its runtime shut down) when dropped.
#[derive(Debug)]
pub struct TestNode {
    node: Option<BoltNode>,
    runtime: Option<tokio::runtime::Runtime>,
    events: tokio::sync::broadcast::Receiver<NodeEvent>,
    /// The node's config (regtest, its temp data dir, its port).
    pub config: NodeConfig,
    seed: Seed,
    port: u16,
    storage: Storage,
    _dir: tempfile::TempDir,
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("{name}-worker"))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A regtest node config on `bitcoind`, keeping its data under `dir` and listening on
/// 127.0.0.1:`port`.
pub fn regtest_config(
    bitcoind: &BitcoinD,
    alias: &str,
    dir: &std::path::Path,
    port: u16,
    trusted_peers: Vec<String>,
) -> NodeConfig {
    NodeConfig {
        network: Network::Regtest,
        data_dir: dir.join("data"),
        alias: alias.to_string(),
        listen: vec![format!("127.0.0.1:{port}")],
        announce: Vec::new(),
        gossip: "p2p".into(),
        trusted_peers,
        chain: ChainSource::Bitcoind {
            rpc_host: "127.0.0.1".into(),
            rpc_port: Some(bitcoind.rpc_port()),
            rpc_user: Some(bitcoind.rpc_user().into()),
            rpc_password: Some(bitcoind.rpc_password().into()),
            rpc_cookie: None,
        },
        channel: Default::default(),
    }
}

/// Writes `<dir>/boltbox.toml` for `boltbox run`: `node`, `board` as the body of the `[board]`
/// section, idle dimming far away (a press on a dim display only wakes it) and no power-off
/// command. Returns its path.
pub fn appliance_config(dir: &std::path::Path, node: &NodeConfig, board: &str) -> std::path::PathBuf {
    let mut sections = toml::Table::new();
    sections.insert("node".into(), toml::Value::try_from(node).expect("node config to TOML"));
    let mut text = toml::to_string(&sections).expect("config to TOML");
    text.push_str(&format!(
        "\n[board]\n{board}\n\
         [ui]\ndim_after_secs = 3600\nblank_after_secs = 3600\n\n\
         [power]\noff_command = []\n"
    ));
    let path = dir.join("boltbox.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

impl TestNode {
    /// A node named `alias` on `bitcoind`, with `trusted_peers` (`id@host:port`).
    pub fn start(bitcoind: &BitcoinD, alias: &str, trusted_peers: Vec<String>) -> TestNode {
        let parent = std::env::temp_dir();
        TestNode::start_with_storage(bitcoind, alias, trusted_peers, Storage::Boltbox, &parent)
    }

    /// A node that learns the chain from an Electrum server at `url` instead of bitcoind.
    pub fn start_on_electrum(bitcoind: &BitcoinD, alias: &str, url: &str) -> TestNode {
        let chain = ChainSource::Electrum { url: url.to_string() };
        TestNode::start_with(
            bitcoind,
            alias,
            Vec::new(),
            Storage::Boltbox,
            &std::env::temp_dir(),
            Some(chain),
        )
    }

    /// [`TestNode::start`] with a choice of store, keeping the node's data in a fresh temp dir
    /// under `parent` (benchmarks put it on the disk they measure).
    pub fn start_with_storage(
        bitcoind: &BitcoinD,
        alias: &str,
        trusted_peers: Vec<String>,
        storage: Storage,
        parent: &std::path::Path,
    ) -> TestNode {
        TestNode::start_with(bitcoind, alias, trusted_peers, storage, parent, None)
    }

    fn start_with(
        bitcoind: &BitcoinD,
        alias: &str,
        trusted_peers: Vec<String>,
        storage: Storage,
        parent: &std::path::Path,
        chain: Option<ChainSource>,
    ) -> TestNode {
        crate::init_logging();
        let dir = tempfile::Builder::new()
            .prefix(&format!("boltbox-{alias}-"))
            .tempdir_in(parent)
            .expect("tempdir");
        let port = free_port().expect("port");
        let mut config = regtest_config(bitcoind, alias, dir.path(), port, trusted_peers);
        if let Some(chain) = chain {
            config.chain = chain;
        }
        let seed = Seed::generate();
        let store = open_store(&config, &seed);
        let rt = runtime(alias);
        let node = BoltNode::start_with_storage(&config, &seed, store, rt.handle().clone(), storage)
            .expect("start node");
        let events = node.subscribe();
        TestNode { node: Some(node), runtime: Some(rt), events, config, seed, port, storage, _dir: dir }
    }

    /// The node's event subscription (for callers that consume events as a stream).
    pub fn events(&mut self) -> &mut tokio::sync::broadcast::Receiver<NodeEvent> {
        &mut self.events
    }

    /// The node's seed (for backups).
    pub fn seed(&self) -> &Seed {
        &self.seed
    }

    /// The node.
    pub fn node(&self) -> &BoltNode {
        self.node.as_ref().expect("running")
    }

    /// `node_id@127.0.0.1:port`.
    pub fn peer_address(&self) -> PeerAddress {
        format!("{}@127.0.0.1:{}", self.node().node_id(), self.port).parse().expect("peer address")
    }

    /// Stops the node (everything persisted) and starts it again on the same data dir.
    pub fn restart(&mut self) {
        self.restart_after(|_| {});
    }

    /// Stops the node (everything persisted), runs `between` on its config (to wipe or restore
    /// the data dir, say), and starts it again with the same config and seed.
    pub fn restart_after(&mut self, between: impl FnOnce(&NodeConfig)) {
        if let Some(node) = self.node.take() {
            node.stop().expect("stop");
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
        between(&self.config);
        let rt = runtime(&self.config.alias);
        let store = open_store(&self.config, &self.seed);
        let node =
            BoltNode::start_with_storage(&self.config, &self.seed, store, rt.handle().clone(), self.storage)
                .expect("restart node");
        self.events = node.subscribe();
        self.node = Some(node);
        self.runtime = Some(rt);
    }

    /// Waits for an event that `matches` selects (earlier, unmatched events are skipped).
    pub fn wait_event<T>(
        &mut self,
        what: &str,
        secs: u64,
        mut matches: impl FnMut(&NodeEvent) -> Option<T>,
    ) -> T {
        let events = &mut self.events;
        wait_until(Deadline::in_secs(secs), what, || {
            loop {
                match events.try_recv() {
                    Ok(event) => {
                        if let Some(found) = matches(&event) {
                            return Some(found);
                        }
                    }
                    Err(TryRecvError::Empty) => return None,
                    Err(TryRecvError::Lagged(_)) => continue,
                    Err(TryRecvError::Closed) => panic!("event stream closed while waiting for {what}"),
                }
            }
        })
    }

    /// Waits until the (freshly refreshed) status satisfies `check`, and returns it.
    pub fn wait_status(&self, what: &str, secs: u64, mut check: impl FnMut(&Status) -> bool) -> Status {
        wait_until(Deadline::in_secs(secs), what, || {
            let status = self.node().refresh_status();
            check(&status).then_some(status)
        })
    }

    /// Opens an announced channel of `sats` to `to` and waits until its funding transaction is
    /// in `bitcoind`'s mempool (ldk-node broadcasts it shortly after ChannelPending). Returns
    /// the channel's id.
    pub fn open_channel_to(&mut self, bitcoind: &BitcoinD, to: &TestNode, sats: u64) -> String {
        let mempool_before = bitcoind.mempool().expect("mempool").len();
        let id = self.node().open_channel(&to.peer_address(), sats, None, true).expect("open channel");
        self.wait_event("ChannelPending", 30, |e| {
            matches!(e, NodeEvent::ChannelPending { .. }).then_some(())
        });
        bitcoind.wait_for_mempool(mempool_before + 1, Deadline::in_secs(30));
        id
    }

    /// Sends `sats` from the harness wallet to a new address of this node (unconfirmed).
    pub fn fund(&self, bitcoind: &BitcoinD, sats: u64) {
        let address = self.node().new_address().expect("address");
        bitcoind.send_to(&address, sats).expect("send");
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            let _ = node.stop();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// The store of `config`'s data dir as `boltbox run` would find it: a new node with `seed` on an
/// empty dir, the node's own store otherwise; a store problem fails the test.
pub fn open_store(config: &NodeConfig, seed: &Seed) -> Store {
    let dir = DataDir::new(&config.data_dir, config.network);
    match dir.inspect().expect("inspect the data dir").1 {
        Inspection::Fresh => dir.create_node(seed).expect("create the node"),
        Inspection::Ready { store, .. } => store,
        Inspection::Problem { problem, .. } => panic!("{}: {problem}", config.data_dir.display()),
    }
}

/// Waits up to `secs` for `condition` on gossip (a channel or node announcement reaching a
/// node's graph), mining 6 blocks whenever 20 s pass without it.
///
/// LDK broadcasts a channel's announcement once when it becomes public and then again every
/// 6 blocks for a week (`ChannelManager::do_chain_event`); a broadcast that a peer missed (its
/// send buffer was full, or its gossip filter had not arrived yet) is only repeated once the
/// chain moves, as it always does on a real network.
pub fn wait_for_gossip<T>(
    bitcoind: &BitcoinD,
    nodes: &[&TestNode],
    secs: u64,
    what: &str,
    mut condition: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Deadline::in_secs(secs);
    loop {
        if let Some(value) = try_wait_until(Deadline::in_secs(20), &mut condition) {
            return value;
        }
        if deadline.passed() {
            panic!("timed out waiting for {what}");
        }
        mine_and_sync(bitcoind, 6, nodes, 60);
    }
}

/// `store`'s state without the keys the mirrors leave out (the network graph): what a mirror
/// read back must equal.
pub fn mirrored_state(store: &Store) -> boltbox_node::store::Snapshot {
    let mut snapshot = store.snapshot().expect("snapshot");
    snapshot
        .entries
        .retain(|e| !(e.primary.is_empty() && e.secondary.is_empty() && e.key == "network_graph"));
    snapshot
}

/// Mines `n` blocks and waits (up to `secs` each) until every node has processed them.
pub fn mine_and_sync(bitcoind: &BitcoinD, n: u64, nodes: &[&TestNode], secs: u64) {
    bitcoind.mine(n).expect("mine");
    let height = bitcoind.height().expect("height") as u32;
    for node in nodes {
        node.wait_status(&format!("{} at height {height}", node.config.alias), secs, |s| {
            s.sync.lightning_height >= height
        });
    }
}

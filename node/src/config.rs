//! `[node]` of the appliance's TOML: typed, with defaults, and validation that names the bad
//! field. See docs/CONFIG.md for the reference.

use std::path::PathBuf;
use std::str::FromStr;

use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::lightning::ln::msgs::SocketAddress;
use serde::{Deserialize, Serialize};

/// A configuration value that is wrong, with the field's full name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The full name of the field, e.g. `node.channel.cltv_expiry_delta`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field` (its full name, e.g. `node.alias`).
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { field: field.into(), reason: reason.into() }
    }
}

/// The Bitcoin network the node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Bitcoin mainnet: real money.
    Bitcoin,
    /// testnet3.
    Testnet,
    /// testnet4.
    Testnet4,
    /// signet.
    Signet,
    /// A local regtest chain (tests, the demo).
    Regtest,
}

impl Network {
    /// The rust-bitcoin network.
    pub fn to_bitcoin(self) -> ldk_node::bitcoin::Network {
        use ldk_node::bitcoin::Network as N;
        match self {
            Network::Bitcoin => N::Bitcoin,
            Network::Testnet => N::Testnet,
            Network::Testnet4 => N::Testnet4,
            Network::Signet => N::Signet,
            Network::Regtest => N::Regtest,
        }
    }

    /// The lower-case name used in the config and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Network::Bitcoin => "bitcoin",
            Network::Testnet => "testnet",
            Network::Testnet4 => "testnet4",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the node learns about the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum ChainSource {
    /// The network's public default ([`ChainSource::public_default`]), chosen when the config
    /// is loaded ([`NodeConfig::resolve_default_chain`]).
    #[default]
    Default,
    /// A bitcoind's JSON-RPC interface.
    Bitcoind {
        /// Host name or address.
        #[serde(default = "default_rpc_host")]
        rpc_host: String,
        /// RPC port; defaults to the network's standard port.
        rpc_port: Option<u16>,
        /// RPC user (with `rpc_password`).
        rpc_user: Option<String>,
        /// RPC password (with `rpc_user`).
        rpc_password: Option<String>,
        /// bitcoind's `.cookie` file, instead of user and password.
        rpc_cookie: Option<PathBuf>,
    },
    /// An Esplora HTTP(S) server.
    Esplora {
        /// Base URL, e.g. `https://blockstream.info/api`.
        url: String,
    },
    /// An Electrum server.
    Electrum {
        /// URL such as `ssl://electrum.example:50002` or `tcp://host:50001`.
        url: String,
    },
}

fn default_rpc_host() -> String {
    "127.0.0.1".into()
}

/// The public Electrum server of mainnet's default chain source (docs/CONFIG.md says why).
pub const MAINNET_ELECTRUM: &str = "ssl://electrum.blockstream.info:50002";

impl ChainSource {
    /// A public server for `network`, so that a node runs with no server of the owner's:
    /// Electrum on mainnet and testnet3, Esplora on signet and testnet4 (where no public
    /// Electrum server is run as reliably); none on regtest.
    pub fn public_default(network: Network) -> Option<ChainSource> {
        let electrum = |url: &str| Some(ChainSource::Electrum { url: url.into() });
        let esplora = |url: &str| Some(ChainSource::Esplora { url: url.into() });
        match network {
            Network::Bitcoin => electrum(MAINNET_ELECTRUM),
            Network::Testnet => electrum("ssl://electrum.blockstream.info:60002"),
            Network::Testnet4 => esplora("https://mempool.space/testnet4/api"),
            Network::Signet => esplora("https://mempool.space/signet/api"),
            Network::Regtest => None,
        }
    }

    /// What it is and where, without secrets: "Electrum electrum.blockstream.info:50002".
    pub fn describe(&self) -> String {
        match self {
            ChainSource::Default => "the network's public default".into(),
            ChainSource::Bitcoind { rpc_host, rpc_port, .. } => match rpc_port {
                Some(port) => format!("bitcoind {rpc_host}:{port}"),
                None => format!("bitcoind {rpc_host}"),
            },
            ChainSource::Electrum { url } => format!("Electrum {}", host_of(url)),
            ChainSource::Esplora { url } => format!("Esplora {}", host_of(url)),
        }
    }
}

/// `host[:port]` of a URL, without user info or path.
fn host_of(url: &str) -> String {
    let clean = without_userinfo(url);
    let rest = clean.split_once("://").map_or(clean.as_str(), |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// Channel policy: what LDK lets a node choose for its channels. Applied to every channel
/// when it opens and again at each start, so a changed value reaches existing channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelPolicy {
    /// Base fee for forwarding a payment, in millisatoshi.
    pub forwarding_fee_base_msat: u32,
    /// Proportional fee for forwarding, in millionths of the amount.
    pub forwarding_fee_proportional_millionths: u32,
    /// Blocks between an incoming HTLC's expiry and the one we forward.
    pub cltv_expiry_delta: u16,
    /// On-chain reserve kept per anchor channel to bump fees when a channel is closed.
    pub anchor_reserve_sats: u64,
    /// Not offered: ldk-node 0.7 does not expose LDK's handshake config (see docs/CONFIG.md).
    pub channel_reserve_sats: Option<u64>,
    /// Not offered by ldk-node 0.7 (see docs/CONFIG.md).
    pub htlc_minimum_msat: Option<u64>,
    /// Not offered by ldk-node 0.7 (see docs/CONFIG.md).
    pub htlc_maximum_msat: Option<u64>,
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        ChannelPolicy {
            forwarding_fee_base_msat: 1000,
            forwarding_fee_proportional_millionths: 100,
            cltv_expiry_delta: 72,
            anchor_reserve_sats: 25_000,
            channel_reserve_sats: None,
            htlc_minimum_msat: None,
            htlc_maximum_msat: None,
        }
    }
}

/// LDK refuses a smaller CLTV delta (`lightning::ln::channelmanager::MIN_CLTV_EXPIRY_DELTA`).
pub const MIN_CLTV_EXPIRY_DELTA: u16 = ldk_node::lightning::ln::channelmanager::MIN_CLTV_EXPIRY_DELTA;

/// How the node learns the Lightning network graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gossip {
    /// From peers over the P2P network.
    P2p,
    /// From a rapid gossip sync server.
    Rgs(String),
    /// Not at all (a node that only pays through its own channels' peers).
    None,
}

/// `[node]`: everything the Lightning node needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The Bitcoin network.
    pub network: Network,
    /// Where the node keeps its store and seed.
    pub data_dir: PathBuf,
    /// The node's public name (at most 32 bytes).
    pub alias: String,
    /// Addresses to listen on for peers, `host:port`.
    pub listen: Vec<String>,
    /// Addresses to announce to the network; empty means the listening ones.
    pub announce: Vec<String>,
    /// `"p2p"`, `"none"`, or `"rgs:<url>"`.
    pub gossip: String,
    /// Peers (`node_id@host:port`) connected at start and reconnected with backoff.
    pub trusted_peers: Vec<String>,
    /// Where the chain comes from.
    pub chain: ChainSource,
    /// Channel policy.
    pub channel: ChannelPolicy,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            network: Network::Bitcoin,
            data_dir: PathBuf::from("/var/lib/boltbox"),
            alias: "boltbox".into(),
            listen: vec!["0.0.0.0:9735".into()],
            announce: Vec::new(),
            gossip: "p2p".into(),
            trusted_peers: Vec::new(),
            chain: ChainSource::default(),
            channel: ChannelPolicy::default(),
        }
    }
}

/// A peer as `node_id@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    /// The peer's node id.
    pub node_id: PublicKey,
    /// Where it listens.
    pub address: SocketAddress,
}

impl FromStr for PeerAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, addr) = s.split_once('@').ok_or_else(|| format!("{s:?} is not node_id@host:port"))?;
        let node_id = PublicKey::from_str(id).map_err(|e| format!("{id:?} is not a node id: {e}"))?;
        let address = SocketAddress::from_str(addr).map_err(|e| format!("{addr:?} is not host:port: {e}"))?;
        Ok(PeerAddress { node_id, address })
    }
}

impl std::fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.node_id, self.address)
    }
}

/// A [`NodeConfig`] that passed validation, with its strings parsed.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The config as written.
    pub raw: NodeConfig,
    /// Parsed `listen`.
    pub listen: Vec<SocketAddress>,
    /// Parsed `announce`.
    pub announce: Vec<SocketAddress>,
    /// Parsed `gossip`.
    pub gossip: Gossip,
    /// Parsed `trusted_peers`.
    pub trusted_peers: Vec<PeerAddress>,
}

fn parse_addresses(field: &str, values: &[String]) -> Result<Vec<SocketAddress>, ConfigError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            SocketAddress::from_str(v).map_err(|e| {
                ConfigError::new(format!("{field}[{i}]"), format!("{v:?} is not host:port ({e})"))
            })
        })
        .collect()
}

fn check_url(field: &str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    match url.split_once("://") {
        Some((scheme, rest)) if schemes.contains(&scheme) && !rest.is_empty() => Ok(()),
        // The URL may carry user:password@: it is shown without.
        _ => Err(ConfigError::new(
            field,
            format!("{:?} is not a URL starting with {}", without_userinfo(url), schemes.join(":// or ")),
        )),
    }
}

impl NodeConfig {
    /// Checks every field and parses the string-typed ones.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        if self.alias.is_empty() || self.alias.len() > 32 {
            return Err(ConfigError::new(
                "node.alias",
                "must be 1 to 32 bytes (announced channels need one)",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("node.data_dir", "must not be empty"));
        }
        let listen = parse_addresses("node.listen", &self.listen)?;
        let announce = parse_addresses("node.announce", &self.announce)?;
        let gossip = match self.gossip.as_str() {
            "p2p" => Gossip::P2p,
            "none" => Gossip::None,
            other => match other.strip_prefix("rgs:") {
                Some(url) => {
                    check_url("node.gossip", url, &["https", "http"])?;
                    Gossip::Rgs(url.to_string())
                }
                None => {
                    return Err(ConfigError::new(
                        "node.gossip",
                        format!("{other:?}: use \"p2p\", \"none\" or \"rgs:<url>\""),
                    ));
                }
            },
        };
        let trusted_peers = self
            .trusted_peers
            .iter()
            .enumerate()
            .map(|(i, p)| p.parse().map_err(|e| ConfigError::new(format!("node.trusted_peers[{i}]"), e)))
            .collect::<Result<Vec<PeerAddress>, _>>()?;
        match &self.chain {
            ChainSource::Bitcoind { rpc_user, rpc_password, rpc_cookie, rpc_host, .. } => {
                if rpc_host.is_empty() {
                    return Err(ConfigError::new("node.chain.rpc_host", "must not be empty"));
                }
                match (rpc_user, rpc_password, rpc_cookie) {
                    (Some(_), Some(_), None) | (None, None, Some(_)) => {}
                    (None, None, None) => {
                        return Err(ConfigError::new(
                            "node.chain.rpc_user",
                            "bitcoind needs rpc_user and rpc_password, or rpc_cookie",
                        ));
                    }
                    (_, _, Some(_)) => {
                        return Err(ConfigError::new(
                            "node.chain.rpc_cookie",
                            "give either rpc_cookie or rpc_user/rpc_password, not both",
                        ));
                    }
                    (Some(_), None, None) => {
                        return Err(ConfigError::new(
                            "node.chain.rpc_password",
                            "rpc_user is set without it",
                        ));
                    }
                    (None, Some(_), None) => {
                        return Err(ConfigError::new(
                            "node.chain.rpc_user",
                            "rpc_password is set without it",
                        ));
                    }
                }
            }
            ChainSource::Esplora { url } => check_url("node.chain.url", url, &["https", "http"])?,
            ChainSource::Electrum { url } => check_url("node.chain.url", url, &["ssl", "tcp"])?,
            ChainSource::Default => {
                return Err(ConfigError::new(
                    "node.chain",
                    format!(
                        "{} has no public chain source: set source and url (or bitcoind's RPC)",
                        self.network
                    ),
                ));
            }
        }
        let c = &self.channel;
        if c.cltv_expiry_delta < MIN_CLTV_EXPIRY_DELTA {
            return Err(ConfigError::new(
                "node.channel.cltv_expiry_delta",
                format!(
                    "must be at least {MIN_CLTV_EXPIRY_DELTA} (LDK's minimum), got {}",
                    c.cltv_expiry_delta
                ),
            ));
        }
        if c.forwarding_fee_proportional_millionths > 1_000_000 {
            return Err(ConfigError::new(
                "node.channel.forwarding_fee_proportional_millionths",
                "more than 1,000,000 would charge over 100% of the amount",
            ));
        }
        for (field, set) in [
            ("node.channel.channel_reserve_sats", c.channel_reserve_sats.is_some()),
            ("node.channel.htlc_minimum_msat", c.htlc_minimum_msat.is_some()),
            ("node.channel.htlc_maximum_msat", c.htlc_maximum_msat.is_some()),
        ] {
            if set {
                return Err(ConfigError::new(
                    field,
                    "not offered by ldk-node 0.7 (it does not expose LDK's channel handshake config); \
                     remove it, LDK's default applies",
                ));
            }
        }
        Ok(ValidConfig { raw: self.clone(), listen, announce, gossip, trusted_peers })
    }

    /// Puts the network's public chain source in place of [`ChainSource::Default`] (a config
    /// without `[node.chain]`, or with `source = "default"`); regtest has none, which
    /// [`NodeConfig::validate`] then names.
    pub fn resolve_default_chain(&mut self) {
        if self.chain == ChainSource::Default {
            if let Some(public) = ChainSource::public_default(self.network) {
                self.chain = public;
            }
        }
    }

    /// This config with its secrets removed, as a backup keeps it: bitcoind's RPC user and
    /// password, and any `user:password@` in a URL. The cookie file's path is kept (it names a
    /// file on the device, not a secret).
    pub fn without_secrets(&self) -> NodeConfig {
        let mut config = self.clone();
        match &mut config.chain {
            ChainSource::Bitcoind { rpc_user, rpc_password, .. } => {
                *rpc_user = None;
                *rpc_password = None;
            }
            ChainSource::Esplora { url } | ChainSource::Electrum { url } => *url = without_userinfo(url),
            ChainSource::Default => {}
        }
        if let Some(url) = config.gossip.strip_prefix("rgs:") {
            config.gossip = format!("rgs:{}", without_userinfo(url));
        }
        config
    }

    /// The RPC port for a bitcoind chain source: the configured one or the network's default.
    pub fn bitcoind_rpc_port(&self) -> u16 {
        match &self.chain {
            ChainSource::Bitcoind { rpc_port: Some(port), .. } => *port,
            _ => match self.network {
                Network::Bitcoin => 8332,
                Network::Testnet => 18332,
                Network::Testnet4 => 48332,
                Network::Signet => 38332,
                Network::Regtest => 18443,
            },
        }
    }
}

/// `scheme://user:password@host/path` without `user:password@`, for anything shown or copied.
/// A password may hold a `/`, `?` or `#` that a parser would take for the end of the
/// authority: when the authority (up to the first `/`) has no `@` but the rest has one,
/// everything up to the last `@` goes, so that no part of a password can remain (a `@` in
/// the path of a URL without user info is then lost too; these URLs have none).
pub fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, Some(path)),
        None => (rest, None),
    };
    // Splitting at ASCII characters keeps every piece on a character boundary.
    let rest = match (authority.rsplit_once('@'), path) {
        (Some((_, host)), Some(path)) => format!("{host}/{path}"),
        (Some((_, host)), None) => host.to_string(),
        (None, _) => rest.rsplit_once('@').map_or(rest, |(_, after)| after).to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<ValidConfig, String> {
        let cfg: NodeConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())
    }

    const BITCOIND: &str = "[chain]\nsource = \"bitcoind\"\nrpc_user = \"u\"\nrpc_password = \"p\"\n";

    #[test]
    fn a_config_without_a_chain_source_gets_the_networks_public_one() {
        let mut config: NodeConfig = toml::from_str("").expect("empty");
        assert_eq!(config.chain, ChainSource::Default);
        config.resolve_default_chain();
        assert_eq!(config.chain, ChainSource::Electrum { url: MAINNET_ELECTRUM.into() });
        config.validate().expect("mainnet runs with no edits");
        for (network, wanted) in [
            ("signet", "Esplora mempool.space"),
            ("testnet4", "Esplora mempool.space"),
            ("testnet", "Electrum electrum.blockstream.info:60002"),
        ] {
            let mut c: NodeConfig = toml::from_str(&format!("network = \"{network}\"\n")).expect("toml");
            c.resolve_default_chain();
            c.validate().expect(network);
            assert_eq!(c.chain.describe(), wanted, "{network}");
        }
        let mut regtest: NodeConfig = toml::from_str("network = \"regtest\"\n").expect("toml");
        regtest.resolve_default_chain();
        let e = regtest.validate().expect_err("no public regtest");
        assert_eq!(e.field, "node.chain");
        let explicit: NodeConfig = toml::from_str("[chain]\nsource = \"default\"\n").expect("toml");
        assert_eq!(explicit.chain, ChainSource::Default);
    }

    #[test]
    fn defaults_need_only_chain_credentials() {
        let valid = parse(BITCOIND).expect("valid");
        assert_eq!(valid.raw.network, Network::Bitcoin);
        assert_eq!(valid.gossip, Gossip::P2p);
        assert_eq!(valid.listen.len(), 1);
        assert_eq!(valid.raw.bitcoind_rpc_port(), 8332);
        assert_eq!(valid.raw.channel.cltv_expiry_delta, 72);
    }

    #[test]
    fn a_full_config_parses() {
        let text = r#"
            network = "regtest"
            data_dir = "/tmp/x"
            alias = "my node"
            listen = ["127.0.0.1:9735", "[::1]:9736"]
            gossip = "rgs:https://rgs.example/snapshot"
            trusted_peers = ["0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798@10.0.0.1:9735"]
            [chain]
            source = "esplora"
            url = "https://esplora.example/api"
            [channel]
            forwarding_fee_base_msat = 0
            forwarding_fee_proportional_millionths = 500
            cltv_expiry_delta = 144
        "#;
        let valid = parse(text).expect("valid");
        assert_eq!(valid.trusted_peers.len(), 1);
        assert_eq!(valid.gossip, Gossip::Rgs("https://rgs.example/snapshot".into()));
        assert_eq!(valid.raw.bitcoind_rpc_port(), 18443);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (format!("alias = \"\"\n{BITCOIND}"), "node.alias"),
            (format!("listen = [\"nowhere\"]\n{BITCOIND}"), "node.listen[0]"),
            (format!("gossip = \"carrier pigeon\"\n{BITCOIND}"), "node.gossip"),
            (format!("trusted_peers = [\"abc@1.2.3.4:9735\"]\n{BITCOIND}"), "node.trusted_peers[0]"),
            ("[chain]\nsource = \"bitcoind\"\n".to_string(), "node.chain.rpc_user"),
            ("[chain]\nsource = \"bitcoind\"\nrpc_user = \"u\"\n".to_string(), "node.chain.rpc_password"),
            ("[chain]\nsource = \"electrum\"\nurl = \"https://x\"\n".to_string(), "node.chain.url"),
            (format!("{BITCOIND}[channel]\ncltv_expiry_delta = 10\n"), "node.channel.cltv_expiry_delta"),
            (format!("{BITCOIND}[channel]\nhtlc_minimum_msat = 1\n"), "node.channel.htlc_minimum_msat"),
        ];
        for (text, field) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(err.starts_with(field), "expected an error about {field}, got {err:?}");
        }
    }

    #[test]
    fn unknown_fields_and_values_are_rejected() {
        assert!(parse(&format!("colour = \"orange\"\n{BITCOIND}")).expect_err("unknown").contains("colour"));
        assert!(parse(&format!("network = \"litecoin\"\n{BITCOIND}")).is_err());
        assert!(parse("[chain]\nsource = \"esplora\"\nurl = \"https://x\"\nrpc_user = \"u\"\n").is_err());
    }

    #[test]
    fn peer_addresses_round_trip() {
        let text = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798@127.0.0.1:9735";
        let peer: PeerAddress = text.parse().expect("peer");
        assert_eq!(peer.to_string(), text);
        assert!("nodeid-only".parse::<PeerAddress>().is_err());
    }

    #[test]
    fn without_secrets_drops_credentials_and_keeps_the_rest() {
        let valid = parse(BITCOIND).expect("valid");
        let clean = valid.raw.without_secrets();
        let text = toml::to_string(&clean).expect("toml");
        assert!(!text.contains("rpc_password") && !text.contains("rpc_user"), "{text}");
        assert_eq!(clean.channel, valid.raw.channel);
        let mut esplora = valid.raw.clone();
        esplora.chain = ChainSource::Esplora { url: "https://me:hunter2@esplora.example/api".into() };
        esplora.gossip = "rgs:https://a:b@rgs.example/x@y".into();
        let clean = esplora.without_secrets();
        assert_eq!(clean.chain, ChainSource::Esplora { url: "https://esplora.example/api".into() });
        assert_eq!(clean.gossip, "rgs:https://rgs.example/x@y");
    }

    #[test]
    fn no_part_of_a_password_survives_in_a_url_shown() {
        for (url, shown) in [
            ("ssl://me:pa/ss@electrum.example:50002", "ssl://electrum.example:50002"),
            ("https://me:a?b#c/d@esplora.example/api", "https://esplora.example/api"),
            ("me:secret@electrum.example:50001", "electrum.example:50001"),
            ("tcp://electrum.example:50001", "tcp://electrum.example:50001"),
        ] {
            assert_eq!(without_userinfo(url), shown, "{url}");
            let source = ChainSource::Electrum { url: url.into() };
            assert!(!source.describe().contains("pa") && !source.describe().contains("secret"), "{url}");
        }
        let probe_host = crate::probe::host_port("ssl://me:12/ss@electrum.example:50002");
        assert_eq!(probe_host, Some(("electrum.example".into(), 50002)));
    }
}

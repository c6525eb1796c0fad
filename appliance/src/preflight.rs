//! What must be right outside the process before the node can start, checked in this order:
//! room on the data partition, the network (when the chain source is not on this machine), the
//! clock (when the chain source is reached over TLS, whose certificates have dates), the listen
//! addresses, and the chain source itself, asked by its own protocol (see
//! [`boltbox_node::probe`]). The first that is not right is what the service waits for; each
//! rule is a pure function of facts read here, so that it is tested without the fault.

use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use boltbox_node::probe::ChainProbe;
use boltbox_node::{ChainSource, NodeConfig};

use crate::screens::Waiting;
use crate::system::primary_ip;

/// Below this much free space on the data partition the node is not started: it could not
/// persist its first state changes.
pub const MIN_FREE_BYTES: u64 = 16 << 20;
/// No clock reads earlier than this (2026-11-01 UTC) once it is set: a board without a real-time
/// clock starts at its last saved time or the epoch.
pub const CLOCK_FLOOR_UNIX: u64 = 1_793_491_200;
/// Where systemd-timesyncd says the clock is synchronized (systemd 239 and later).
const TIMESYNC_DIR: &str = "/run/systemd/timesync";

/// What the service waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// Free space on the data partition.
    DiskSpace,
    /// A network link and an address.
    Network,
    /// The clock to be set.
    Clock,
    /// The listen address to be free or assigned.
    ListenAddress,
    /// The chain source to answer.
    ChainSource,
    /// The node to start (it failed to).
    NodeStart,
    /// The remote mirror (VSS) to hold no other device's state of this node.
    RemoteMirror,
}

impl WaitFor {
    /// How the title bar names it.
    pub fn name(self) -> &'static str {
        match self {
            WaitFor::DiskSpace => "disk space",
            WaitFor::Network => "network",
            WaitFor::Clock => "clock",
            WaitFor::ListenAddress => "listen address",
            WaitFor::ChainSource => "chain source",
            WaitFor::NodeStart => "node start",
            WaitFor::RemoteMirror => "remote mirror",
        }
    }
}

/// Something the node waits for, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// What.
    pub what: WaitFor,
    /// Why, in words the owner can act on.
    pub reason: String,
}

impl Wait {
    fn new(what: WaitFor, reason: impl Into<String>) -> Wait {
        Wait { what, reason: reason.into() }
    }

    /// The home page's view of it, with the time to the next attempt.
    pub fn view(&self, retry_in: Option<Duration>) -> Waiting {
        Waiting { what: self.what.name().to_string(), reason: self.reason.clone(), retry_in }
    }
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "waiting for the {}: {}", self.what.name(), self.reason)
    }
}

/// The pause before attempt `n` (1-based) after a failure: 2, 4, 8, 16 s, then 30 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64.checked_shl(attempt.min(5)).unwrap_or(32).min(30))
}

/// One network interface as the kernel shows it in /sys/class/net.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its name (`eth0`, `wlan0`).
    pub name: String,
    /// A Wi-Fi interface.
    pub wireless: bool,
    /// A cable is plugged in (wired), or the interface is associated (Wi-Fi).
    pub carrier: bool,
}

/// The network as far as the system can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetFacts {
    /// The hardware interfaces (virtual ones left out).
    pub links: Vec<Link>,
    /// The address other machines reach this one at, if there is a default route.
    pub address: Option<IpAddr>,
}

/// Reads [`NetFacts`] from /sys/class/net and the routing table.
pub fn read_net_facts() -> NetFacts {
    let mut links = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            // Hardware interfaces have a device; loopback, bridges and the like do not.
            if !path.join("device").exists() {
                continue;
            }
            let carrier = std::fs::read_to_string(path.join("carrier")).is_ok_and(|c| c.trim() == "1");
            links.push(Link {
                name: entry.file_name().to_string_lossy().into_owned(),
                wireless: path.join("wireless").exists() || path.join("phy80211").exists(),
                carrier,
            });
        }
    }
    links.sort_by(|a, b| a.name.cmp(&b.name));
    NetFacts { links, address: primary_ip() }
}

/// Why there is no usable network, if there is none. `wifi` is the SSID configured in
/// `[system.wifi]`, if any.
pub fn network_wait(facts: &NetFacts, wifi: Option<&str>) -> Option<Wait> {
    if facts.address.is_some() {
        return None;
    }
    let wired_plugged = facts.links.iter().any(|l| !l.wireless && l.carrier);
    let wireless = facts.links.iter().find(|l| l.wireless);
    let reason = match (wired_plugged, wifi, wireless) {
        (true, _, _) => "the cable is plugged in: waiting for an address (DHCP)".to_string(),
        (false, Some(ssid), None) => {
            format!("Wi-Fi {ssid:?} is set, but this board has no Wi-Fi: plug in the cable")
        }
        (false, Some(ssid), Some(link)) if link.carrier => {
            format!("joined Wi-Fi {ssid:?}: waiting for an address (DHCP)")
        }
        (false, Some(ssid), Some(_)) => {
            format!("Wi-Fi {ssid:?} not joined: check ssid, password and country in boltbox.toml")
        }
        (false, None, _) => "no network: plug in the cable or set Wi-Fi in boltbox.toml".to_string(),
    };
    Some(Wait::new(WaitFor::Network, reason))
}

/// Whether the clock can be trusted for TLS: set past [`CLOCK_FLOOR_UNIX`] and, where
/// systemd-timesyncd keeps it (`timesync` says whether it has synchronized), synchronized.
pub fn clock_wait(now_unix: u64, timesync: Option<bool>) -> Option<Wait> {
    if now_unix < CLOCK_FLOOR_UNIX {
        return Some(Wait::new(
            WaitFor::Clock,
            "the clock is not set (no real-time clock): waiting for time sync",
        ));
    }
    match timesync {
        Some(false) => Some(Wait::new(
            WaitFor::Clock,
            "waiting for time sync (needed to check the server's certificate)",
        )),
        _ => None,
    }
}

/// Whether systemd-timesyncd has synchronized the clock; none where it does not run.
fn read_timesync() -> Option<bool> {
    let dir = Path::new(TIMESYNC_DIR);
    dir.is_dir().then(|| dir.join("synchronized").exists())
}

/// Why a listen address cannot be bound now, if it cannot: in use, not (yet) on this machine.
pub fn listen_wait(listen: &[String]) -> Option<Wait> {
    for text in listen {
        let addrs: Vec<SocketAddr> = match text.to_socket_addrs() {
            Ok(addrs) => addrs.collect(),
            Err(e) => return Some(Wait::new(WaitFor::ListenAddress, format!("{text}: {e}"))),
        };
        for addr in addrs {
            if let Err(e) = TcpListener::bind(addr) {
                let reason = match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        format!("port {} is in use by another program", addr.port())
                    }
                    std::io::ErrorKind::AddrNotAvailable => {
                        format!("{} is not an address of this machine (yet)", addr.ip())
                    }
                    std::io::ErrorKind::PermissionDenied => format!("port {} needs privileges", addr.port()),
                    _ => format!("{addr}: {e}"),
                };
                return Some(Wait::new(WaitFor::ListenAddress, reason));
            }
        }
    }
    None
}

/// Why there is not room enough to start, if there is not.
pub fn disk_wait(free_bytes: Option<u64>) -> Option<Wait> {
    let free = free_bytes?;
    (free < MIN_FREE_BYTES).then(|| {
        Wait::new(
            WaitFor::DiskSpace,
            format!("the data partition is full ({} MiB free): free some space", free >> 20),
        )
    })
}

/// The chain source's host, when the node reaches it over the network (not on this machine).
fn remote_host(chain: &ChainSource) -> Option<String> {
    let host = match chain {
        ChainSource::Default => return None,
        ChainSource::Bitcoind { rpc_host, .. } => rpc_host.clone(),
        ChainSource::Esplora { url } | ChainSource::Electrum { url } => {
            boltbox_node::probe::host_port(url).map(|(host, _)| host)?
        }
    };
    let local =
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    (!local).then_some(host)
}

/// Whether the chain source is reached over TLS.
fn uses_tls(chain: &ChainSource) -> bool {
    match chain {
        ChainSource::Esplora { url } | ChainSource::Electrum { url } => {
            url.starts_with("https://") || url.starts_with("ssl://")
        }
        ChainSource::Bitcoind { .. } | ChainSource::Default => false,
    }
}

/// Runs every check against the real machine, in order, and returns the first that fails.
/// Blocks for at most the chain probe's timeout; call it off the display thread.
pub fn check(config: &NodeConfig, wifi: Option<&str>, runtime: &tokio::runtime::Handle) -> Result<(), Wait> {
    let free = rustix::fs::statvfs(&config.data_dir).ok().and_then(|s| s.f_bavail.checked_mul(s.f_frsize));
    if let Some(wait) = disk_wait(free) {
        return Err(wait);
    }
    if remote_host(&config.chain).is_some() {
        if let Some(wait) = network_wait(&read_net_facts(), wifi) {
            return Err(wait);
        }
    }
    if uses_tls(&config.chain) {
        if let Some(wait) = clock_wait(boltbox_node::unix_now(), read_timesync()) {
            return Err(wait);
        }
    }
    if let Some(wait) = listen_wait(&config.listen) {
        return Err(wait);
    }
    let probe = ChainProbe::new(config).map_err(|e| Wait::new(WaitFor::ChainSource, e))?;
    let facts = runtime.block_on(probe.probe()).map_err(|e| Wait::new(WaitFor::ChainSource, e))?;
    if config.network == boltbox_node::Network::Bitcoin && !facts.fee_estimates {
        // ldk-node refuses to start on mainnet without one fee-rate fetch.
        return Err(Wait::new(WaitFor::ChainSource, "the chain source gives no fee estimates yet"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, wireless: bool, carrier: bool) -> Link {
        Link { name: name.into(), wireless, carrier }
    }

    #[test]
    fn the_network_rule_says_what_to_do() {
        let up = NetFacts {
            links: vec![link("eth0", false, true)],
            address: Some("192.168.1.5".parse().expect("ip")),
        };
        assert_eq!(network_wait(&up, None), None);
        let reason = |facts: &NetFacts, wifi| network_wait(facts, wifi).expect("a wait").reason;
        let unplugged =
            NetFacts { links: vec![link("eth0", false, false), link("wlan0", true, false)], address: None };
        assert_eq!(reason(&unplugged, None), "no network: plug in the cable or set Wi-Fi in boltbox.toml");
        assert!(reason(&unplugged, Some("home")).contains("\"home\" not joined"));
        let joined = NetFacts { links: vec![link("wlan0", true, true)], address: None };
        assert!(reason(&joined, Some("home")).contains("waiting for an address"));
        let no_wifi = NetFacts { links: vec![link("eth0", false, false)], address: None };
        assert!(reason(&no_wifi, Some("home")).contains("no Wi-Fi"));
        let plugged = NetFacts { links: vec![link("eth0", false, true)], address: None };
        assert!(reason(&plugged, Some("home")).contains("DHCP"));
    }

    #[test]
    fn the_clock_must_be_set_and_synchronized_where_timesyncd_runs() {
        assert!(clock_wait(0, None).is_some(), "the epoch is not a time");
        assert!(clock_wait(CLOCK_FLOOR_UNIX - 1, Some(true)).is_some());
        assert_eq!(clock_wait(CLOCK_FLOOR_UNIX, None), None, "no timesyncd: a plausible clock will do");
        assert!(clock_wait(CLOCK_FLOOR_UNIX + 10, Some(false)).is_some());
        assert_eq!(clock_wait(CLOCK_FLOOR_UNIX + 10, Some(true)), None);
    }

    #[test]
    fn a_busy_port_and_a_foreign_address_are_named() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let wait = listen_wait(&[format!("127.0.0.1:{port}")]).expect("in use");
        assert_eq!(wait.reason, format!("port {port} is in use by another program"));
        drop(held);
        assert_eq!(listen_wait(&[format!("127.0.0.1:{port}")]), None);
        // TEST-NET-3 (RFC 5737) is nobody's address.
        let wait = listen_wait(&["203.0.113.7:9735".to_string()]).expect("not ours");
        assert!(wait.reason.contains("not an address of this machine"), "{}", wait.reason);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let pauses: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(pauses, [2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX).as_secs(), 30);
    }

    #[test]
    fn disk_and_remote_rules() {
        assert!(disk_wait(Some(MIN_FREE_BYTES - 1)).is_some());
        assert_eq!(disk_wait(Some(MIN_FREE_BYTES)), None);
        assert_eq!(disk_wait(None), None);
        let local = ChainSource::Electrum { url: "tcp://127.0.0.1:60401".into() };
        assert_eq!(remote_host(&local), None);
        let public = ChainSource::Electrum { url: "ssl://electrum.example:50002".into() };
        assert_eq!(remote_host(&public).as_deref(), Some("electrum.example"));
        assert!(uses_tls(&public) && !uses_tls(&local));
    }
}

//! Asks the chain source whether it is there and how high the chain is, independently of
//! LDK's own sync, so that "unreachable" and "syncing 812,000 / 870,000" can be shown.

use std::time::Duration;

use base64::Engine;
use lightning_block_sync::http::HttpEndpoint;
use lightning_block_sync::rpc::RpcClient;

use crate::config::{ChainSource, NodeConfig};

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How the chain source is probed.
pub(crate) enum ChainProbe {
    /// bitcoind: `getblockcount` over JSON-RPC (also checks the credentials).
    Bitcoind(Box<RpcClient>),
    /// Esplora or Electrum: can a TCP connection be made to the server.
    Tcp { host: String, port: u16 },
}

impl std::fmt::Debug for ChainProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainProbe::Bitcoind(_) => f.write_str("ChainProbe::Bitcoind"),
            ChainProbe::Tcp { host, port } => write!(f, "ChainProbe::Tcp({host}:{port})"),
        }
    }
}

/// `host` and `port` of a URL such as `https://host:port/path` or `ssl://host:port`.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        "ssl" => 50002,
        "tcp" => 50001,
        _ => return None,
    };
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            Some((host.trim_matches(['[', ']']).to_string(), port.parse().ok()?))
        }
        _ => Some((authority.trim_matches(['[', ']']).to_string(), default_port)),
    }
}

impl ChainProbe {
    /// The probe for a config, with bitcoind credentials (user, password) already resolved.
    pub(crate) fn new(config: &NodeConfig, credentials: Option<(&str, &str)>) -> Option<Self> {
        match &config.chain {
            ChainSource::Bitcoind { rpc_host, .. } => {
                let (user, password) = credentials?;
                let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                let endpoint = HttpEndpoint::for_host(rpc_host.clone()).with_port(config.bitcoind_rpc_port());
                Some(ChainProbe::Bitcoind(Box::new(RpcClient::new(&auth, endpoint))))
            }
            ChainSource::Esplora { url } | ChainSource::Electrum { url } => {
                let (host, port) = host_port(url)?;
                Some(ChainProbe::Tcp { host, port })
            }
        }
    }

    /// `Ok(Some(tip))` when the source answered with its height, `Ok(None)` when it is
    /// reachable but cannot tell, `Err(reason)` when it is not reachable.
    pub(crate) async fn probe(&self) -> Result<Option<u32>, String> {
        match self {
            ChainProbe::Bitcoind(client) => {
                let call = client.call_method::<serde_json::Value>("getblockcount", &[]);
                match tokio::time::timeout(PROBE_TIMEOUT, call).await {
                    Ok(Ok(value)) => value
                        .as_u64()
                        .and_then(|h| u32::try_from(h).ok())
                        .map(Some)
                        .ok_or_else(|| format!("getblockcount returned {value}")),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
                }
            }
            ChainProbe::Tcp { host, port } => {
                let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
                match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
                    Ok(Ok(_)) => Ok(None),
                    Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
                    Err(_) => Err(format!("{host}:{port}: no answer within {} s", PROBE_TIMEOUT.as_secs())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(host_port("https://esplora.example/api"), Some(("esplora.example".into(), 443)));
        assert_eq!(host_port("http://10.0.0.2:3002/api"), Some(("10.0.0.2".into(), 3002)));
        assert_eq!(host_port("ssl://electrum.example:50002"), Some(("electrum.example".into(), 50002)));
        assert_eq!(host_port("tcp://[::1]:50001"), Some(("::1".into(), 50001)));
        assert_eq!(host_port("ftp://x"), None);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let probe = ChainProbe::Tcp { host: "127.0.0.1".into(), port };
        assert_eq!(probe.probe().await, Ok(None));
        drop(listener);
        assert!(probe.probe().await.is_err());
    }
}

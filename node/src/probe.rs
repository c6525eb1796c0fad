//! Asks the chain source, in its own protocol, whether it serves: bitcoind by JSON-RPC
//! (`getblockchaininfo`, `estimatesmartfee`), an Electrum server by Electrum calls
//! (`blockchain.headers.subscribe`, `blockchain.estimatefee`, through the `electrum-client` crate
//! ldk-node uses), an Esplora server by its HTTP API (`/blocks/tip/height`, `/fee-estimates`,
//! through `esplora-client`). Independent of LDK's own sync, so that "Electrum server refused
//! the connection", "HTTP 429 rate limited" or "bitcoind is loading the block index" can be
//! shown, and so that the node is only started once the source answers.

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use lightning_block_sync::http::HttpEndpoint;
use lightning_block_sync::rpc::{RpcClient, RpcError};

use crate::config::{ChainSource, NodeConfig};

/// How long one probe may take. Generous: a slow but working link must not look broken.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The confirmation target fee estimates are asked for.
const FEE_TARGET_BLOCKS: u16 = 6;

/// What a probe learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainFacts {
    /// The source's chain tip, when it tells.
    pub tip: Option<u32>,
    /// Whether it gives a fee estimate (ldk-node needs one to start on mainnet).
    pub fee_estimates: bool,
}

/// bitcoind's credentials: user and password from the config, or its cookie file, re-read when
/// bitcoind refuses the ones in use (it writes a new cookie at every start).
struct Bitcoind {
    host: String,
    port: u16,
    cookie: Option<PathBuf>,
    /// The client with the credentials in use, and those credentials.
    client: Mutex<(std::sync::Arc<RpcClient>, String)>,
}

/// How the chain source is probed.
pub enum ChainProbe {
    /// bitcoind's JSON-RPC.
    Bitcoind(Box<BitcoindProbe>),
    /// An Electrum server (`tcp://` or `ssl://`).
    Electrum {
        /// The server's URL.
        url: String,
    },
    /// An Esplora server.
    Esplora(Box<esplora_client::AsyncClient>),
}

/// The bitcoind probe (opaque).
pub struct BitcoindProbe(Bitcoind);

impl std::fmt::Debug for BitcoindProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BitcoindProbe({}:{})", self.0.host, self.0.port)
    }
}

impl std::fmt::Debug for ChainProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainProbe::Bitcoind(b) => write!(f, "ChainProbe::Bitcoind({}:{})", b.0.host, b.0.port),
            ChainProbe::Electrum { url } => {
                write!(f, "ChainProbe::Electrum({})", crate::config::without_userinfo(url))
            }
            ChainProbe::Esplora(client) => write!(f, "ChainProbe::Esplora({})", client.url()),
        }
    }
}

/// `host` and `port` of a URL such as `https://host:port/path` or `ssl://host:port`.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let clean = crate::config::without_userinfo(url);
    let (scheme, rest) = clean.split_once("://")?;
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

/// bitcoind's credentials for `config`: user and password, or the cookie file's.
pub(crate) fn bitcoind_credentials(config: &NodeConfig) -> Result<Option<(String, String)>, String> {
    match &config.chain {
        ChainSource::Bitcoind { rpc_user: Some(u), rpc_password: Some(p), .. } => {
            Ok(Some((u.clone(), p.clone())))
        }
        ChainSource::Bitcoind { rpc_cookie: Some(path), .. } => read_cookie(path).map(Some),
        _ => Ok(None),
    }
}

/// `user:password` from bitcoind's cookie file (a short file bitcoind writes at start).
fn read_cookie(path: &std::path::Path) -> Result<(String, String), String> {
    let bytes = crate::files::read_untrusted(path, 1024)
        .map_err(|e| format!("cannot read bitcoind's cookie file: {e} (is bitcoind running?)"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not text", path.display()))?;
    let (user, password) =
        text.trim().split_once(':').ok_or_else(|| format!("{} is not user:password", path.display()))?;
    Ok((user.to_string(), password.to_string()))
}

fn rpc_client(host: &str, port: u16, (user, password): &(String, String)) -> std::sync::Arc<RpcClient> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::sync::Arc::new(RpcClient::new(&auth, HttpEndpoint::for_host(host.to_string()).with_port(port)))
}

impl ChainProbe {
    /// The probe for `config`'s chain source; an error when bitcoind's cookie cannot be read or
    /// the Esplora client cannot be made.
    pub fn new(config: &NodeConfig) -> Result<Self, String> {
        match &config.chain {
            ChainSource::Bitcoind { rpc_host, rpc_cookie, .. } => {
                let credentials = bitcoind_credentials(config)?
                    .ok_or_else(|| "bitcoind needs rpc_user and rpc_password, or rpc_cookie".to_string())?;
                let port = config.bitcoind_rpc_port();
                let client = rpc_client(rpc_host, port, &credentials);
                Ok(ChainProbe::Bitcoind(Box::new(BitcoindProbe(Bitcoind {
                    host: rpc_host.clone(),
                    port,
                    cookie: rpc_cookie.clone(),
                    client: Mutex::new((client, credentials.1)),
                }))))
            }
            ChainSource::Electrum { url } => Ok(ChainProbe::Electrum { url: url.clone() }),
            ChainSource::Default => Err("no chain source chosen for this network".into()),
            ChainSource::Esplora { url } => {
                let client = esplora_client::Builder::new(url)
                    .timeout(PROBE_TIMEOUT.as_secs())
                    .build_async()
                    .map_err(|e| {
                        format!("Esplora client for {}: {e}", crate::config::without_userinfo(url))
                    })?;
                Ok(ChainProbe::Esplora(Box::new(client)))
            }
        }
    }

    /// Asks the source for its tip and a fee estimate; `Err` says why it does not serve, in
    /// words for the owner.
    pub async fn probe(&self) -> Result<ChainFacts, String> {
        match tokio::time::timeout(PROBE_TIMEOUT + Duration::from_secs(5), self.probe_inner()).await {
            Ok(result) => result,
            Err(_) => Err(format!("the chain source did not answer within {} s", PROBE_TIMEOUT.as_secs())),
        }
    }

    async fn probe_inner(&self) -> Result<ChainFacts, String> {
        match self {
            ChainProbe::Bitcoind(b) => b.0.probe().await,
            ChainProbe::Electrum { url } => {
                let url = url.clone();
                tokio::task::spawn_blocking(move || probe_electrum(&url))
                    .await
                    .map_err(|e| format!("the Electrum probe failed: {e}"))?
            }
            ChainProbe::Esplora(client) => probe_esplora(client).await,
        }
    }

    /// Whether bitcoind's cookie changed from the one with `password` (bitcoind restarted and
    /// the probe read its new cookie): a node built with the old one is refused by bitcoind and
    /// must be started again.
    pub fn credentials_rotated(&self, password: &str) -> bool {
        let ChainProbe::Bitcoind(b) = self else { return false };
        b.0.client.lock().unwrap_or_else(|p| p.into_inner()).1 != password
    }
}

impl Bitcoind {
    /// Reads the cookie file again, if there is one; true when it holds other credentials than
    /// the ones in use (which are then replaced).
    fn reread_cookie(&self) -> Result<bool, String> {
        let Some(path) = &self.cookie else { return Ok(false) };
        let credentials = read_cookie(path)?;
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if client.1 == credentials.1 {
            return Ok(false);
        }
        *client = (rpc_client(&self.host, self.port, &credentials), credentials.1.clone());
        tracing::info!("read bitcoind's new cookie from {}", path.display());
        Ok(true)
    }

    async fn call(&self, method: &str, params: &[serde_json::Value]) -> io::Result<serde_json::Value> {
        let client = self.client.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        client.call_method::<serde_json::Value>(method, params).await
    }

    async fn probe(&self) -> Result<ChainFacts, String> {
        let info = match self.call("getblockchaininfo", &[]).await {
            Err(e) => match self.reread_cookie()? {
                // bitcoind writes a new cookie at each start, and refuses the old one (its 401
                // reaches us as an empty answer): retry once with the new one.
                true => self.call("getblockchaininfo", &[]).await,
                false => Err(e),
            },
            ok => ok,
        }
        .map_err(|e| describe_bitcoind(&e, &self.host, self.port))?;
        let tip = info["blocks"].as_u64().and_then(|h| u32::try_from(h).ok());
        let fee = self
            .call("estimatesmartfee", &[serde_json::json!(FEE_TARGET_BLOCKS)])
            .await
            .map_err(|e| describe_bitcoind(&e, &self.host, self.port))?;
        Ok(ChainFacts { tip, fee_estimates: fee["feerate"].as_f64().is_some_and(|r| r > 0.0) })
    }
}

/// Whether bitcoind answered 401 with a body: lightning-block-sync reports an HTTP error status
/// only in its error's text (its error type is private), as `status_code: 401`.
fn unauthorized(e: &io::Error) -> bool {
    e.to_string().contains("status_code: 401")
}

fn describe_bitcoind(e: &io::Error, host: &str, port: u16) -> String {
    if let Some(rpc) = e.get_ref().and_then(|inner| inner.downcast_ref::<RpcError>()) {
        // RPC_IN_WARMUP: still loading the block index, verifying blocks, and so on.
        if rpc.code == -28 {
            return format!("bitcoind is starting: {}", rpc.message.trim_end_matches(['.', '…']));
        }
        return format!("bitcoind refused the call: {} (code {})", rpc.message, rpc.code);
    }
    if unauthorized(e) || (e.kind() == io::ErrorKind::InvalidData && e.to_string().contains(": 0 bytes")) {
        // bitcoind's 401 has an empty body, which the RPC client reports as an empty answer.
        return format!("bitcoind at {host}:{port} refused the RPC user and password (or cookie)");
    }
    describe_io(e, &format!("bitcoind at {host}:{port}"))
}

/// An I/O error of a connection to `server`, in the owner's words.
fn describe_io(e: &io::Error, server: &str) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => format!("{server} refused the connection"),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("{server} did not answer within {} s", PROBE_TIMEOUT.as_secs())
        }
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            format!("{server} closed the connection")
        }
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            format!("{server} is unreachable")
        }
        _ => format!("{server}: {e}"),
    }
}

fn describe_electrum(e: &electrum_client::Error, url: &str) -> String {
    let server = match host_port(url) {
        Some((host, port)) => format!("Electrum server {host}:{port}"),
        None => "the Electrum server".into(),
    };
    match e {
        electrum_client::Error::IOError(io) => describe_io(io, &server),
        electrum_client::Error::SharedIOError(io) => describe_io(io, &server),
        electrum_client::Error::AllAttemptsErrored(errors) => match errors.last() {
            Some(last) => describe_electrum(last, url),
            None => format!("{server}: no attempt succeeded"),
        },
        electrum_client::Error::Protocol(value) => format!("{server} answered with an error: {value}"),
        // A connection cut in the middle of an answer leaves half a JSON line.
        electrum_client::Error::JSON(json) if json.is_eof() => {
            format!("{server} closed the connection in the middle of an answer")
        }
        electrum_client::Error::JSON(_) => format!("{server} answered something that is not Electrum"),
        electrum_client::Error::CouldNotCreateConnection(tls) => format!("{server}: TLS: {tls}"),
        electrum_client::Error::InvalidDNSNameError(name) => format!("{server}: {name:?} is not a host name"),
        other => format!("{server}: {other}"),
    }
}

fn probe_electrum(url: &str) -> Result<ChainFacts, String> {
    use electrum_client::ElectrumApi;
    use electrum_client::raw_client::RawClient;
    // One plain connection, no retries: the client with retries keeps only the errors before the
    // last, and the probe is retried by the caller anyway.
    let (host, port) = host_port(url)
        .ok_or_else(|| format!("{} has no host and port", crate::config::without_userinfo(url)))?;
    let address = format!("{host}:{port}");
    let timeout = Some(PROBE_TIMEOUT);
    let describe = |e: electrum_client::Error| describe_electrum(&e, url);
    let (header, fee) = if url.starts_with("ssl://") {
        let client = RawClient::new_ssl(address.as_str(), true, timeout).map_err(describe)?;
        (
            client.block_headers_subscribe().map_err(describe)?,
            client.estimate_fee(usize::from(FEE_TARGET_BLOCKS)).map_err(describe)?,
        )
    } else {
        let client = RawClient::new(address.as_str(), timeout).map_err(describe)?;
        (
            client.block_headers_subscribe().map_err(describe)?,
            client.estimate_fee(usize::from(FEE_TARGET_BLOCKS)).map_err(describe)?,
        )
    };
    Ok(ChainFacts { tip: u32::try_from(header.height).ok(), fee_estimates: fee > 0.0 })
}

fn describe_esplora(e: &esplora_client::Error, url: &str) -> String {
    let server = match host_port(url) {
        Some((host, port)) => format!("Esplora server {host}:{port}"),
        None => "the Esplora server".into(),
    };
    match e {
        esplora_client::Error::HttpResponse { status: 429, .. } => format!("{server}: HTTP 429 rate limited"),
        esplora_client::Error::HttpResponse { status, .. } => format!("{server}: HTTP {status}"),
        esplora_client::Error::Reqwest(r) if r.is_timeout() => {
            format!("{server} did not answer within {} s", PROBE_TIMEOUT.as_secs())
        }
        esplora_client::Error::Reqwest(r) if r.is_connect() => format!("{server}: cannot connect ({r})"),
        other => format!("{server}: {other}"),
    }
}

async fn probe_esplora(client: &esplora_client::AsyncClient) -> Result<ChainFacts, String> {
    let url = client.url().to_string();
    let tip = client.get_height().await.map_err(|e| describe_esplora(&e, &url))?;
    let fees = client.get_fee_estimates().await.map_err(|e| describe_esplora(&e, &url))?;
    Ok(ChainFacts { tip: Some(tip), fee_estimates: fees.values().any(|rate| *rate > 0.0) })
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
        assert_eq!(host_port("https://me:pw@esplora.example/api"), Some(("esplora.example".into(), 443)));
        assert_eq!(host_port("ftp://x"), None);
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_by_name() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let probe = ChainProbe::Electrum { url: format!("tcp://127.0.0.1:{port}") };
        let reason = probe.probe().await.expect_err("nothing listens");
        assert_eq!(reason, format!("Electrum server 127.0.0.1:{port} refused the connection"));
    }

    #[test]
    fn io_errors_are_named_for_the_owner() {
        let cases = [
            (io::ErrorKind::ConnectionRefused, "X refused the connection"),
            (io::ErrorKind::WouldBlock, "X did not answer within 10 s"),
            (io::ErrorKind::UnexpectedEof, "X closed the connection"),
            (io::ErrorKind::ConnectionReset, "X closed the connection"),
        ];
        for (kind, text) in cases {
            assert_eq!(describe_io(&io::Error::from(kind), "X"), text);
        }
        let warmup = io::Error::other(RpcError { code: -28, message: "Loading block index…".into() });
        assert_eq!(describe_bitcoind(&warmup, "h", 1), "bitcoind is starting: Loading block index");
        let refused = io::Error::other("status_code: 401, contents: ");
        assert!(unauthorized(&refused));
        assert!(describe_bitcoind(&refused, "h", 1).contains("refused the RPC user and password"));
        // bitcoind's 401 has no body, which the RPC client reports as an empty answer.
        let empty = io::Error::new(io::ErrorKind::InvalidData, "invalid response length: 0 bytes");
        assert!(describe_bitcoind(&empty, "h", 1).contains("refused the RPC user and password"));
    }
}

//! The control socket: how `boltbox <command>` talks to the running `boltbox run`.
//!
//! A Unix stream socket at `<data_dir>/control.sock`, mode 0600, so only the service's user
//! (and root) may use it; nothing listens on the network. Each request is one line of JSON
//! ([`Request`], tagged by `"cmd"`), answered by one line of JSON: `{"ok": <value>}` or
//! `{"error": "<why>"}`. A connection may carry many requests, answered in order.
//! docs/RUN.md lists the commands.
//!
//! The socket answers from the service's first moments, also while the node waits for the
//! chain source or the owner: `status` then says what it waits for, and commands that need the
//! node say that it does not run yet.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boltbox_node::{Alert, BoltNode, PeerAddress, Status};

use crate::backup::BackupService;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

/// The alerts the appliance adds to the node's (display, buttons), as the display loop last saw
/// them.
pub type DeviceAlerts = Arc<Mutex<Vec<Alert>>>;

/// The socket's file name in the data dir.
pub const SOCKET_NAME: &str = "control.sock";

/// How long the client waits for an answer: opening a channel or paying returns once LDK has
/// taken the request, not when it completes, so answers come quickly.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest request line the service reads: an account batch of 10,000 signed transfers is
/// about 1.6 MiB of JSON (an invoice or offer is well under 2 KiB).
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// What the service is doing, as `boltbox status` reports it beside the node's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// `checking`, `waiting`, `store`, `restore_offer`, `restoring`, `starting`, `running` or
    /// `stopping`.
    pub state: String,
    /// What it waits for (`chain source`, `network`...), or the store's problem.
    pub waiting_for: Option<String>,
    /// Why, in words the owner can act on.
    pub reason: Option<String>,
    /// Seconds to the next attempt.
    pub retry_in_secs: Option<u64>,
}

/// `boltbox status`'s answer: the service's state and the node's status (a starting node's while
/// it does not run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// What the service is doing.
    pub service: ServiceStatus,
    /// The node's status.
    #[serde(flatten)]
    pub node: Status,
}

/// What the control socket asks of the service.
pub trait Service: Send + Sync {
    /// The node, while it runs.
    fn node(&self) -> Option<Arc<BoltNode>>;
    /// What the service is doing.
    fn service_status(&self) -> ServiceStatus;
    /// The status shown while the node does not run.
    fn starting_status(&self) -> Status;
    /// The appliance's own alerts (display, buttons, backups, notices).
    fn alerts(&self) -> Vec<Alert>;
    /// The owner's explicit start on an empty store; refused unless the store allows it.
    fn start_empty(&self) -> Result<(), String>;
    /// Backups, serialised with the button's.
    fn backups(&self) -> &BackupService;
    /// Where the service can write a backup, in words.
    fn writable_places(&self) -> String;
    /// The live mirror's stick, chosen on the device.
    fn mirror(&self) -> &crate::mirror::MirrorChoice;
}

/// The socket of the service whose data dir is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// A command for the running node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The status snapshot the OLED shows.
    Status,
    /// A new on-chain address of the node's wallet.
    NewAddress,
    /// Sends on-chain: `amount_sats`, or everything spendable when `None`.
    SendOnchain {
        /// Destination address.
        address: String,
        /// Amount; `None` sends all (keeping the anchor reserve).
        amount_sats: Option<u64>,
    },
    /// Connects to a peer (`node_id@host:port`) and remembers it.
    Connect {
        /// The peer.
        peer: String,
    },
    /// Opens a channel.
    OpenChannel {
        /// The peer (`node_id@host:port`).
        peer: String,
        /// Capacity.
        amount_sats: u64,
        /// Pushed to the peer at open.
        push_msat: Option<u64>,
        /// Announced to the network (routing) or private.
        announce: bool,
    },
    /// Closes a channel, cooperatively or by force.
    CloseChannel {
        /// The user channel id from `channels`.
        channel: String,
        /// Force-close (broadcast our latest commitment).
        force: bool,
    },
    /// A BOLT11 invoice.
    Invoice {
        /// Amount; `None` for an any-amount invoice.
        amount_msat: Option<u64>,
        /// Description.
        description: String,
        /// Expiry in seconds.
        expiry_secs: u32,
    },
    /// Pays a BOLT11 invoice; the outcome shows in `payments`.
    Pay {
        /// The invoice.
        invoice: String,
        /// Amount, for an any-amount invoice.
        amount_msat: Option<u64>,
    },
    /// A spontaneous payment.
    Keysend {
        /// The payee.
        node_id: String,
        /// Amount.
        amount_msat: u64,
    },
    /// The channels.
    Channels,
    /// The payments.
    Payments,
    /// The peers.
    Peers,
    /// Syncs the on-chain and Lightning wallets with the chain now.
    Sync,
    /// Writes a verified backup into a directory (docs/BACKUP.md), keeping the newest `keep`.
    Backup {
        /// The directory (absolute).
        to: PathBuf,
        /// This node's backups kept there.
        keep: usize,
        /// The directory's device number as the client sees it: the service refuses a directory
        /// it sees as another one (its private /tmp).
        device: u64,
        /// The directory's inode number as the client sees it.
        inode: u64,
    },
    /// Starts the node on an empty store, when the store is missing, empty or damaged and the
    /// owner has decided to (the CLI asks for confirmation first).
    StartEmpty,
    /// Asks on the OLED whether `stick` (a name under `[backup] sticks`, e.g. `sda1`; without
    /// one, the first stick that is not the mirror) is to be the live mirror, and answers once
    /// the owner pressed B (`{"stick": name}`) or A, or [`crate::mirror::ASK_WAIT`] passed (an
    /// error). Only a press on the device chooses.
    MirrorUse {
        /// The stick's name.
        stick: Option<String>,
    },
    /// Forgets the mirror stick: commits are no longer mirrored (its files stay on it).
    MirrorStop,
    /// An accounts request (`{"cmd": "account", "op": …}`, docs/ACCOUNTS.md).
    Account(crate::accounts::AccountRequest),
}

/// An answer: the value, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The request was carried out.
    Ok(serde_json::Value),
    /// It was not.
    Error(String),
}

/// Why a command could not be carried out, as the CLI sees it.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No service listens at the socket.
    #[error("cannot reach boltbox at {path}: {source} (is `boltbox run` running with this data dir?)")]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The connection failed mid-request.
    #[error("talking to boltbox: {0}")]
    Io(#[from] std::io::Error),
    /// The service sent something that is not an answer.
    #[error("boltbox answered something unreadable: {0}")]
    Protocol(String),
    /// The service refused or failed the command.
    #[error("{0}")]
    Refused(String),
}

/// The client side: one connection to the service.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the service listening at `path`.
    pub fn connect(path: &Path) -> Result<Client, ControlError> {
        let unreachable = |source| ControlError::Unreachable { path: path.to_path_buf(), source };
        let stream = UnixStream::connect(path).map_err(unreachable)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let writer = stream.try_clone()?;
        Ok(Client { reader: BufReader::new(stream), writer })
    }

    /// How long to wait for an answer (a backup of a large store takes longer than most).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ControlError> {
        self.writer.set_read_timeout(Some(timeout))?;
        Ok(())
    }

    /// Sends `request` and returns the value of the answer.
    pub fn call(&mut self, request: &Request) -> Result<serde_json::Value, ControlError> {
        let mut line = serde_json::to_string(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(ControlError::Protocol("the connection closed without an answer".into()));
        }
        match serde_json::from_str::<Response>(&answer) {
            Ok(Response::Ok(value)) => Ok(value),
            Ok(Response::Error(why)) => Err(ControlError::Refused(why)),
            Err(e) => Err(ControlError::Protocol(format!("{e}: {}", answer.trim_end()))),
        }
    }
}

/// Removes the socket (a stopping service takes no more commands).
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove {}", path.display()),
    }
}

/// Listens at `path` (replacing a stale socket left by a crash) and answers requests against
/// `service` on `runtime` until the runtime shuts down. The socket file is 0600.
pub fn serve(
    runtime: &tokio::runtime::Handle,
    path: &Path,
    service: Arc<dyn Service>,
) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!("removed a stale control socket at {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let _entered = runtime.enter();
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!("control socket at {}", path.display());
    runtime.spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, Arc::clone(&service)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn connection(stream: tokio::net::UnixStream, service: Arc<dyn Service>) {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let read = (&mut reader).take(MAX_REQUEST_BYTES as u64).read_until(b'\n', &mut line).await;
        let response = match read {
            Ok(0) => return,
            Ok(_) if !line.ends_with(b"\n") && line.len() >= MAX_REQUEST_BYTES => {
                answer(
                    &mut write,
                    &Response::Error(format!("request longer than {MAX_REQUEST_BYTES} bytes")),
                )
                .await;
                return;
            }
            Ok(_) => match serde_json::from_slice::<Request>(&line) {
                // The status is a snapshot: answered at once, never behind requests that wait
                // for the node in the blocking pool.
                Ok(Request::Status) => handle(&*service, Request::Status),
                Ok(request) => {
                    let service = Arc::clone(&service);
                    let command = command_name(&request);
                    // ldk-node's calls block; keep them off the runtime's workers.
                    match tokio::task::spawn_blocking(move || handle(&*service, request)).await {
                        Ok(response) => {
                            if let Response::Error(why) = &response {
                                tracing::info!(command, why, "control: refused");
                            }
                            response
                        }
                        Err(e) => Response::Error(format!("internal error: {e}")),
                    }
                }
                Err(e) => Response::Error(format!("not a request: {e}")),
            },
            Err(e) => {
                tracing::debug!(error = %e, "control: read failed");
                return;
            }
        };
        if !answer(&mut write, &response).await {
            return;
        }
    }
}

/// Writes one answer line; false when the client went away.
async fn answer(write: &mut tokio::net::unix::OwnedWriteHalf, response: &Response) -> bool {
    let mut line = match serde_json::to_string(response) {
        Ok(line) => line,
        Err(e) => format!("{{\"error\":\"cannot encode the answer: {}\"}}", e.to_string().replace('"', "'")),
    };
    line.push('\n');
    write.write_all(line.as_bytes()).await.is_ok()
}

/// The request's name, for the log (never its arguments: invoices are not secret, but the log
/// stays about what happened, not the data).
fn command_name(request: &Request) -> &'static str {
    match request {
        Request::Status => "status",
        Request::NewAddress => "new-address",
        Request::SendOnchain { .. } => "send-onchain",
        Request::Connect { .. } => "connect",
        Request::OpenChannel { .. } => "open-channel",
        Request::CloseChannel { .. } => "close-channel",
        Request::Invoice { .. } => "invoice",
        Request::Pay { .. } => "pay",
        Request::Keysend { .. } => "keysend",
        Request::Channels => "channels",
        Request::Payments => "payments",
        Request::Peers => "peers",
        Request::Sync => "sync",
        Request::Backup { .. } => "backup",
        Request::StartEmpty => "start-empty",
        Request::MirrorUse { .. } => "mirror-use",
        Request::MirrorStop => "mirror-stop",
        Request::Account(_) => "account",
    }
}

/// Carries out one request.
fn handle(service: &dyn Service, request: Request) -> Response {
    use serde_json::json;
    let result: Result<serde_json::Value, String> = (|| {
        let e = |e: boltbox_node::Error| e.to_string();
        // A store that cannot write stalls whatever the node does next: such a request would
        // hang (and hold a thread) until the store heals, so it is refused at once instead.
        let running = || {
            let node = service.node().ok_or_else(|| {
                let status = service.service_status();
                let why = status.reason.map(|r| format!(": {r}")).unwrap_or_default();
                format!("the node is not running ({}{why})", status.state)
            })?;
            match node.store().health() {
                boltbox_node::StoreHealth::Failing { reason, .. } => Err(format!(
                    "the node cannot save its state ({reason}): nothing was done; try again once \
                     `boltbox status` no longer says so"
                )),
                boltbox_node::StoreHealth::Healthy => Ok(node),
            }
        };
        Ok(match request {
            Request::Status => {
                let mut node = match service.node() {
                    Some(node) => node.status(),
                    None => service.starting_status(),
                };
                node.alerts.extend(service.alerts());
                to_value(&StatusAnswer { service: service.service_status(), node })?
            }
            Request::NewAddress => json!(running()?.new_address().map_err(e)?),
            Request::SendOnchain { address, amount_sats } => {
                json!(running()?.send_onchain(&address, amount_sats).map_err(e)?)
            }
            // The owner's input is checked first: a typo is said as such even while the node
            // is not running.
            Request::Connect { peer } => {
                let peer = parse_peer(&peer)?;
                running()?.connect(&peer, true).map_err(e)?;
                serde_json::Value::Null
            }
            Request::OpenChannel { peer, amount_sats, push_msat, announce } => {
                let peer = parse_peer(&peer)?;
                json!(running()?.open_channel(&peer, amount_sats, push_msat, announce).map_err(e)?)
            }
            Request::CloseChannel { channel, force } => {
                running()?.close_channel(&channel, force).map_err(e)?;
                serde_json::Value::Null
            }
            Request::Invoice { amount_msat, description, expiry_secs } => {
                json!(running()?.create_invoice(amount_msat, &description, expiry_secs).map_err(e)?)
            }
            Request::Pay { invoice, amount_msat } => {
                json!(running()?.pay_invoice(&invoice, amount_msat).map_err(e)?)
            }
            Request::Keysend { node_id, amount_msat } => {
                json!(running()?.keysend(&node_id, amount_msat).map_err(e)?)
            }
            Request::Channels => to_value(&running()?.list_channels())?,
            Request::Payments => to_value(&running()?.list_payments())?,
            Request::Peers => to_value(&running()?.list_peers())?,
            Request::Sync => {
                running()?.sync_wallets().map_err(e)?;
                serde_json::Value::Null
            }
            Request::Backup { to, keep, device, inode } => {
                let summary = service
                    .backups()
                    .run_now(&to, keep, (device, inode), &service.writable_places())
                    .map_err(|e| e.to_string())?;
                to_value(&summary)?
            }
            Request::StartEmpty => {
                service.start_empty()?;
                serde_json::Value::Null
            }
            Request::MirrorUse { stick } => {
                let ask = service.mirror().ask(stick.as_deref())?;
                // The OLED says why no stick can be chosen too; the caller hears it at once.
                ask.stick.clone()?;
                let stick =
                    service.mirror().wait(ask.id, crate::mirror::ASK_WAIT + Duration::from_secs(5))?;
                json!({ "stick": stick })
            }
            Request::MirrorStop => {
                service.mirror().stop()?;
                serde_json::Value::Null
            }
            Request::Account(request) => crate::accounts::handle(&*running()?, request)?,
        })
    })();
    match result {
        Ok(value) => Response::Ok(value),
        Err(why) => Response::Error(why),
    }
}

fn parse_peer(peer: &str) -> Result<PeerAddress, String> {
    peer.parse::<PeerAddress>().map_err(|e| format!("peer {peer:?}: {e}"))
}

fn to_value(value: &impl Serialize) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot encode the answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object_tagged_by_cmd() {
        let request = Request::OpenChannel {
            peer: "02ab@127.0.0.1:9735".into(),
            amount_sats: 100_000,
            push_msat: None,
            announce: true,
        };
        let line = serde_json::to_string(&request).expect("encode");
        assert_eq!(
            line,
            r#"{"cmd":"open-channel","peer":"02ab@127.0.0.1:9735","amount_sats":100000,"push_msat":null,"announce":true}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).expect("decode"), request);
        assert_eq!(serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).expect("decode"), Request::Status);
    }

    #[test]
    fn unknown_commands_and_fields_are_refused() {
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"format-disk"}"#).is_err());
        let extra = r#"{"cmd":"keysend","node_id":"02","amount_msat":1,"fee_limit":5}"#;
        assert!(serde_json::from_str::<Request>(extra).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"keysend","node_id":"02"}"#).is_err());
    }

    #[test]
    fn answers_are_ok_or_error() {
        let ok = serde_json::to_string(&Response::Ok(serde_json::json!("bcrt1q"))).expect("encode");
        assert_eq!(ok, r#"{"ok":"bcrt1q"}"#);
        let error = serde_json::to_string(&Response::Error("no route".into())).expect("encode");
        assert_eq!(error, r#"{"error":"no route"}"#);
    }

    #[test]
    fn a_missing_service_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Client::connect(&socket_path(dir.path())).expect_err("nothing listens");
        let message = e.to_string();
        assert!(message.contains("control.sock") && message.contains("boltbox run"), "{message}");
    }

    /// A service with no node, for requests that need none (and the refusals of those that do).
    struct NoNode(std::sync::Arc<BackupService>, crate::mirror::MirrorChoice);

    impl Service for NoNode {
        fn node(&self) -> Option<Arc<BoltNode>> {
            None
        }
        fn service_status(&self) -> ServiceStatus {
            ServiceStatus {
                state: "waiting".into(),
                waiting_for: Some("chain source".into()),
                reason: None,
                retry_in_secs: None,
            }
        }
        fn starting_status(&self) -> Status {
            Status::starting(boltbox_node::Network::Regtest, "test")
        }
        fn alerts(&self) -> Vec<Alert> {
            Vec::new()
        }
        fn start_empty(&self) -> Result<(), String> {
            Err("not allowed for this store".into())
        }
        fn backups(&self) -> &BackupService {
            &self.0
        }
        fn writable_places(&self) -> String {
            "nowhere".into()
        }
        fn mirror(&self) -> &crate::mirror::MirrorChoice {
            &self.1
        }
    }

    fn no_node() -> NoNode {
        let config = crate::config::AppConfig::parse(
            "[node]\nnetwork = \"regtest\"\ndata_dir = \"/nonexistent/boltbox\"\n[node.chain]\nsource = \"electrum\"\n\
             url = \"tcp://127.0.0.1:1\"\n[board]\nboard = \"sim\"\n",
        )
        .expect("config");
        NoNode(BackupService::new(&config), crate::mirror::MirrorChoice::new(&config))
    }

    #[test]
    fn without_a_node_status_says_what_the_service_waits_for_and_commands_are_refused() {
        let service = no_node();
        let Response::Ok(status) = handle(&service, Request::Status) else { panic!("status answers") };
        assert_eq!(status["service"]["state"], "waiting");
        assert_eq!(status["running"], false);
        let Response::Error(why) = handle(&service, Request::NewAddress) else { panic!("refused") };
        assert!(why.contains("not running") && why.contains("waiting"), "{why}");
        let backup = Request::Backup { to: "/nonexistent".into(), keep: 1, device: 0, inode: 0 };
        let Response::Error(why) = handle(&service, backup) else { panic!("refused") };
        assert!(why.contains("no node state"), "{why}");
        // No stick to make the mirror: said at once, not after the wait for a press.
        let Response::Error(why) = handle(&service, Request::MirrorUse { stick: None }) else {
            panic!("refused")
        };
        assert!(why.contains("no USB stick"), "{why}");
    }

    mod arbitrary_input {
        use proptest::prelude::*;
        use serde_json::json;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

            /// Any line is a request or a refusal, and any request is answered, never a panic.
            #[test]
            fn any_request_line_is_answered(line in ".{0,200}") {
                if let Ok(request) = serde_json::from_str::<Request>(&line) {
                    let _ = handle(&no_node(), request);
                }
            }

            /// Every command with arbitrary values in its own fields is read and answered, and
            /// a peer that does not parse is refused as such before anything else.
            #[test]
            fn every_command_with_any_values_is_answered(
                cmd in proptest::sample::select(&["status", "new-address", "send-onchain", "connect", "open-channel",
                    "close-channel", "invoice", "pay", "keysend", "channels", "payments", "peers", "sync", "backup",
                    "start-empty"][..]),
                text in ".{0,80}",
                number in any::<u64>(),
            ) {
                let fields = match cmd {
                    "send-onchain" => json!({"address": text, "amount_sats": number}),
                    "connect" => json!({"peer": text}),
                    "open-channel" => json!({"peer": text, "amount_sats": number, "push_msat": number, "announce": true}),
                    "close-channel" => json!({"channel": text, "force": false}),
                    "invoice" => json!({"amount_msat": number, "description": text, "expiry_secs": number % 100_000}),
                    "pay" => json!({"invoice": text, "amount_msat": number}),
                    "keysend" => json!({"node_id": text, "amount_msat": number}),
                    "backup" => json!({"to": text, "keep": number, "device": number, "inode": number}),
                    _ => json!({}),
                };
                let mut json = fields;
                json["cmd"] = json!(cmd);
                let request = serde_json::from_value::<Request>(json);
                prop_assert!(request.is_ok(), "{cmd}: {request:?}");
                let answer = request.map(|r| handle(&no_node(), r));
                if matches!(cmd, "connect" | "open-channel") && text.parse::<PeerAddress>().is_err() {
                    prop_assert!(matches!(&answer, Ok(Response::Error(why)) if why.starts_with("peer ")), "{answer:?}");
                }
            }
        }
    }
}

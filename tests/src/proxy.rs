//! A small fault-injecting TCP proxy of the tests' own, put in front of a real server (an
//! Electrum server, bitcoind's RPC) to make it misbehave the ways a link or a server does:
//! refuse connections, answer too slowly, or close a connection half-way through an answer.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::bitcoind::HarnessError;

/// How the proxy misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// None: bytes pass both ways.
    Pass,
    /// Nothing listens: connections are refused, open ones are closed.
    Refuse,
    /// Each answer is held back this long before it is passed on.
    Delay(Duration),
    /// The first answer on a connection is cut in the middle, and the connection closed.
    CloseMidAnswer,
    /// Every answer, on every connection, is cut in the middle and its connection closed: the
    /// requests still reach the server whole (it acts on them), the client never hears back.
    CutEveryAnswer,
}

#[derive(Debug)]
struct State {
    fault: Mutex<Fault>,
    stop: AtomicBool,
}

impl State {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The proxy: listens on 127.0.0.1, forwards to a target. Stopped when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    state: Arc<State>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `target` on a free port, misbehaving as `fault` says.
    pub fn start(target: SocketAddr, fault: Fault) -> Result<FaultProxy, HarnessError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| HarnessError::Io { what, source }
        };
        let probe = TcpListener::bind("127.0.0.1:0").map_err(io("binding the proxy"))?;
        let port = probe.local_addr().map_err(io("reading the proxy's port"))?.port();
        drop(probe);
        let state = Arc::new(State { fault: Mutex::new(fault), stop: AtomicBool::new(false) });
        let accepting = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(port, target, &accepting))
            .map_err(io("starting the proxy"))?;
        Ok(FaultProxy { port, state, thread: Some(thread) })
    }

    /// The port it listens on (when it does).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes how it misbehaves from now on.
    pub fn set(&self, fault: Fault) {
        *self.state.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const POLL: Duration = Duration::from_millis(20);

fn accept_loop(port: u16, target: SocketAddr, state: &Arc<State>) {
    let mut listener: Option<TcpListener> = None;
    while !state.stop.load(Ordering::SeqCst) {
        if state.fault() == Fault::Refuse {
            // Closing the listening socket makes the port refuse, as a server that is down.
            listener = None;
            std::thread::sleep(POLL);
            continue;
        }
        if listener.is_none() {
            listener = TcpListener::bind(("127.0.0.1", port)).ok();
            if let Some(l) = &listener {
                let _ = l.set_nonblocking(true);
            }
        }
        match listener.as_ref().map(TcpListener::accept) {
            Some(Ok((client, _))) => {
                let state = Arc::clone(state);
                std::thread::spawn(move || relay(client, target, &state));
            }
            _ => std::thread::sleep(POLL),
        }
    }
}

/// Passes bytes between `client` and `target`, misbehaving on the way back.
fn relay(client: TcpStream, target: SocketAddr, state: &Arc<State>) {
    let Ok(server) = TcpStream::connect(target) else { return };
    let _ = client.set_nonblocking(false);
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let (mut server_read, mut client_write) = (server, client);
    let _ = server_read.set_read_timeout(Some(POLL * 5));
    let mut buf = vec![0u8; 64 * 1024];
    let mut answered = false;
    loop {
        if state.stop.load(Ordering::SeqCst) || state.fault() == Fault::Refuse {
            break;
        }
        let n = match server_read.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                continue;
            }
            Err(_) => break,
        };
        match state.fault() {
            Fault::Delay(d) => std::thread::sleep(d),
            Fault::CloseMidAnswer if !answered => {
                let _ = client_write.write_all(&buf[..n / 2]);
                break;
            }
            Fault::CutEveryAnswer => {
                let _ = client_write.write_all(&buf[..n / 2]);
                break;
            }
            _ => {}
        }
        if client_write.write_all(&buf[..n]).is_err() {
            break;
        }
        answered = true;
    }
    let _ = client_write.shutdown(Shutdown::Both);
    let _ = server_read.shutdown(Shutdown::Both);
    let _ = upstream.join();
}

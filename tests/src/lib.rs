//! Test harness shared by the node and end-to-end tests: a real `bitcoind` on regtest.
//!
//! The binaries come from the project's provisioned Bitcoin Knots (`scripts/bitcoind.sh`,
//! run by `make test`). Each [`BitcoinD`] runs in its own temp dir on free loopback ports and
//! is stopped, and its dir removed, when it is dropped, also when a test panics.
//! [`TestNode`] runs a boltbox node against it; [`Electrs`] serves it over the Electrum
//! protocol, and [`FaultProxy`] makes a server misbehave.

mod bitcoind;
mod electrs;
mod node;
mod proxy;
mod rng;
mod tls;
mod tmpfs;
mod vss;
mod wait;

pub use bitcoind::{BitcoinD, HarnessError, free_port};
pub use electrs::Electrs;
pub use node::{
    TestNode, appliance_config, mine_and_sync, mirrored_state, open_store, regtest_config, wait_for_gossip,
};
pub use proxy::{Fault, FaultProxy};
pub use rng::Rng;
pub use tls::{TlsProxy, self_signed};
pub use tmpfs::{Ext4Stick, Tmpfs};
pub use vss::Vss;
pub use wait::{Deadline, try_wait_until, wait_until};

/// Sends the node's logs (tracing, and ldk-node's `log` records) to the test's output,
/// filtered by `RUST_LOG` (default: warnings). Safe to call more than once.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

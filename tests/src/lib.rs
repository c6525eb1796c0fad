//! Test harness shared by the node and end-to-end tests: a real `bitcoind` on regtest.
//!
//! The binaries come from the project's provisioned Bitcoin Knots (`scripts/bitcoind.sh`,
//! run by `make test`). Each [`BitcoinD`] runs in its own temp dir on free loopback ports and
//! is stopped, and its dir removed, when it is dropped, also when a test panics.

mod bitcoind;
mod wait;

pub use bitcoind::{BitcoinD, HarnessError};
pub use wait::{Deadline, wait_until};

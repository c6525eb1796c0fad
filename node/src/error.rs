//! The node's errors.

use crate::config::ConfigError;
use crate::seed::SeedError;
use crate::store::StoreError;

/// Everything that can go wrong in the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The seed could not be read, created or restored.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// ldk-node refused to build the node.
    #[error("cannot build the node: {0}")]
    Build(String),
    /// An ldk-node operation failed.
    #[error("{operation}: {source}")]
    Node {
        /// What was being done.
        operation: &'static str,
        /// What ldk-node said.
        source: ldk_node::NodeError,
    },
    /// An argument (address, invoice, node id, amount…) is not valid.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was given.
        what: &'static str,
        /// Why it is not valid.
        reason: String,
    },
    /// The accounts ledger refused an operation or could not store it.
    #[error(transparent)]
    Accounts(#[from] crate::accounts::AccountsError),
    /// A file or the runtime failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The remote mirror holds this node's state from another device, or a later state than
    /// the card's: the node must not run on this card (see
    /// [`crate::mirror::vss::VssMirrorError::refuses`]).
    #[error(transparent)]
    RemoteMirror(#[from] crate::mirror::vss::VssMirrorError),
}

impl Error {
    /// ldk-node had begun running parts of the node (its chain sync) when this start failed
    /// (it could not listen): those parts cannot be stopped from outside, so the next start must
    /// be made in a new process.
    pub fn needs_fresh_process(&self) -> bool {
        matches!(self, Error::Node { operation: "start", source: ldk_node::NodeError::InvalidSocketAddress })
    }

    /// What the chain source did, when this failed start is its fault: it closed the
    /// connection, or gave no fee estimates (ldk-node needs one to start).
    pub fn chain_source_fault(&self) -> Option<&'static str> {
        match self {
            Error::Node { operation: "start", source: ldk_node::NodeError::ConnectionFailed } => {
                Some("the chain source closed the connection while the node started")
            }
            Error::Node {
                operation: "start",
                source:
                    ldk_node::NodeError::FeerateEstimationUpdateFailed
                    | ldk_node::NodeError::FeerateEstimationUpdateTimeout,
            } => Some("the chain source gave no fee estimates while the node started"),
            _ => None,
        }
    }

    pub(crate) fn node(operation: &'static str) -> impl FnOnce(ldk_node::NodeError) -> Error {
        move |source| Error::Node { operation, source }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl std::fmt::Display) -> Error {
        Error::Invalid { what, reason: reason.to_string() }
    }
}

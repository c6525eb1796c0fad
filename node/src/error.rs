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
    /// A file or the runtime failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn node(operation: &'static str) -> impl FnOnce(ldk_node::NodeError) -> Error {
        move |source| Error::Node { operation, source }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl std::fmt::Display) -> Error {
        Error::Invalid { what, reason: reason.to_string() }
    }
}

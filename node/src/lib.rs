//! boltbox-node: the Lightning node of boltbox, built on ldk-node (LDK + BDK), with its state
//! in a redb store that group-commits durable writes. It knows nothing of screens or pins.

pub mod accounts;
pub mod backup;
pub mod bench;
pub mod config;
pub mod datadir;
pub mod error;
pub mod events;
pub mod files;
pub mod ledger;
pub mod mirror;
pub mod node;
pub mod probe;
pub mod seed;
pub mod status;
pub mod store;

pub use backup::BackupError;
pub use config::{ChainSource, ChannelPolicy, ConfigError, Network, NodeConfig, PeerAddress};
pub use datadir::{DataDir, Inspection, StoreProblem};
pub use error::Error;
pub use events::NodeEvent;
pub use node::{BoltNode, PaymentSummary, PeerSummary, Storage, unix_now};
pub use seed::{Seed, SeedError};
pub use status::{Alert, ChannelSummary, Status};
pub use store::{CommitLimits, Store, StoreError, StoreHealth, StoreIdentity};

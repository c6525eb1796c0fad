//! boltbox-node: the Lightning node of boltbox, built on ldk-node (LDK + BDK), with its state
//! in a redb store that group-commits durable writes.

pub mod store;

pub use store::{CommitLimits, Store, StoreError};

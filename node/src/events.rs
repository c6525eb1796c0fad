//! The events the node re-publishes to its subscribers (the UI, the API).

use serde::{Deserialize, Serialize};

/// A typed event for subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeEvent {
    /// We were paid.
    PaymentReceived {
        /// Payment hash (hex).
        payment_hash: String,
        /// Amount received.
        amount_msat: u64,
    },
    /// A payment of ours succeeded.
    PaymentSent {
        /// Payment hash (hex).
        payment_hash: String,
        /// Routing fee paid.
        fee_msat: Option<u64>,
    },
    /// A payment of ours failed.
    PaymentFailed {
        /// Payment hash (hex), when known.
        payment_hash: Option<String>,
        /// Why, as LDK says.
        reason: String,
    },
    /// We forwarded a payment and earned a fee.
    PaymentForwarded {
        /// Fee earned.
        fee_msat: u64,
    },
    /// A channel's funding transaction was broadcast.
    ChannelPending {
        /// Channel id (hex).
        channel_id: String,
        /// Peer node id (hex).
        peer: String,
    },
    /// A channel can be used.
    ChannelReady {
        /// Channel id (hex).
        channel_id: String,
        /// Peer node id (hex), when known.
        peer: Option<String>,
    },
    /// A channel was closed.
    ChannelClosed {
        /// Channel id (hex).
        channel_id: String,
        /// Peer node id (hex), when known.
        peer: Option<String>,
        /// Why, as LDK says.
        reason: String,
    },
}

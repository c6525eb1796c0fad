//! The boltbox appliance as a library: what the `boltbox` binary shows and how the buttons
//! drive it, kept free of I/O so that it is tested without a board.
//!
//! - [`screens`]: pure functions from the node's status (and other data) to OLED frames.
//! - [`ui`]: the state machine that turns gestures and time into the screen shown and the
//!   actions requested (shutdown, backup).

pub mod screens;
pub mod ui;

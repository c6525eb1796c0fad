//! The boltbox appliance as a library: what the `boltbox` binary shows, how the buttons drive
//! it, and the service that runs it all. The screens and the UI are kept free of I/O so that
//! they are tested without a board.
//!
//! - [`backup`]: backups to USB sticks (the B gesture), `boltbox backup` and `boltbox restore`.
//! - [`bench`]: `boltbox bench`, the benchmarks on the device.
//! - [`config`]: `boltbox.toml`, parsed and validated with errors that name the field.
//! - [`control`]: the control socket through which `boltbox <command>` reaches the service.
//! - [`supervisor`]: `boltbox run`, the service: board, runtime, node, display loop, systemd,
//!   safe shutdown.
//! - [`system`]: machine facts for the system and network screens.
//! - [`restore_offer`]: the first start with an empty data dir and a backup on a stick.
//! - [`screens`]: pure functions from the node's status (and other data) to OLED frames.
//! - [`ui`]: the state machine that turns gestures and time into the screen shown and the
//!   actions requested (shutdown, backup).

pub mod backup;
pub mod bench;
pub mod config;
pub mod control;
pub mod restore_offer;
pub mod screens;
pub mod supervisor;
pub mod system;
pub mod ui;

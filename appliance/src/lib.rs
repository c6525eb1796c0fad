//! The boltbox appliance as a library: what the `boltbox` binary shows, how the buttons drive
//! it, and the service that runs it all. The screens and the UI are kept free of I/O so that
//! they are tested without a board.
//!
//! - [`accounts`]: `boltbox account …` on the service's side (the accounts ledger).
//! - [`backup`]: backups to USB sticks (the B gesture), `boltbox backup` and `boltbox restore`.
//! - [`bench`]: `boltbox bench`, the benchmarks on the device.
//! - [`config`]: `boltbox.toml`, parsed and validated with errors that name the field.
//! - [`control`]: the control socket through which `boltbox <command>` reaches the service.
//! - [`mirror`]: the USB stick chosen as the live mirror, and finding it again.
//! - [`supervisor`]: `boltbox run`, the service's life: data dir, waiting states, node, systemd,
//!   safe stop; the display and button loop runs on a thread of its own.
//! - [`preflight`]: what must be right outside the process before the node starts.
//! - [`system`]: machine facts for the system and network screens.
//! - [`restore_offer`]: backups on a stick that the OLED offers to restore.
//! - [`screens`]: pure functions from the node's status (and other data) to OLED frames.
//! - [`ui`]: the state machine that turns gestures and time into the screen shown and the
//!   actions requested (shutdown, backup).

pub mod accounts;
pub mod backup;
pub mod bench;
pub mod config;
pub mod control;
mod display_loop;
pub mod mirror;
pub mod preflight;
pub mod restore_offer;
pub mod screens;
pub mod supervisor;
pub mod system;
pub mod ui;

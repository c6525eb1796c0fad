//! The core-count-tuned executor of boltbox: the tokio runtime the Lightning node runs on, sized
//! from the board ([`runtime`]), a parallel engine whose results equal sequential execution
//! ([`engine`]), and the engine benchmark behind `cargo bench` and `boltbox bench` ([`mod@bench`]).
//!
//! Pure logic, so that its tests run under qemu-user for aarch64 without cross-compiling LDK.

pub mod bench;
pub mod engine;
mod fxhash;
pub mod runtime;

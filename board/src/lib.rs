//! boltbox-board: the hardware boundary. Display, buttons, and facts about the board, behind
//! small traits with backends chosen at run time. It knows nothing of Lightning.
//!
//! - [`display`]: the [`Display`] trait, the SSD1306 backend and the [`ResilientDisplay`].
//! - [`buttons`]: the [`Buttons`] trait, rppal and GPIO character device backends.
//! - [`gesture`]: the pure gesture state machine over button edges.
//! - [`sim`], [`link`]: the terminal board and the virtual board over a byte stream.
//! - [`sh1106`]: the SH1106 backend of 1.3" modules.
//! - [`emulated`]: an emulated SSD1306 or SH1106 on an emulated I2C bus, for tests.
//! - [`config`]: [`BoardConfig`] and [`open`], which picks the backends.

pub mod buttons;
pub mod clock;
pub mod config;
pub mod display;
pub mod emulated;
pub mod facts;
pub mod frame;
pub mod gesture;
pub mod link;
pub mod sh1106;
pub mod sim;

pub use buttons::{Button, ButtonEdge, ButtonError, Buttons, ButtonsHealth};
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use config::{Board, BoardConfig, ConfigError, OpenError, open, open_with_gestures};
pub use display::{Controller, Display, DisplayError, DisplayHealth, PanelSize, ResilientDisplay};
pub use facts::{BoardFacts, FactsError};
pub use frame::{FRAME_BYTES, Frame, HEIGHT, PngError, WIDTH};
pub use gesture::{Gesture, GestureConfig, GestureMachine, Levels};
pub use link::{LinkClient, LinkError, LinkFrame, LinkSender};

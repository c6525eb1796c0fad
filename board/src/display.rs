//! The display: a 128x64 (or 128x32) monochrome panel that takes whole frames.
//!
//! [`Ssd1306Display`] drives a real SSD1306 through the `ssd1306` crate over any
//! [`embedded_hal::i2c::I2c`] bus, [`crate::sh1106::Sh1106Display`] an SH1106 (sold as "1.3 inch
//! SSD1306") with its own commands; [`ResilientDisplay`] wraps any display so that a missing,
//! unplugged or failing panel is a state ([`DisplayHealth::Absent`]) with retries on a bounded
//! exponential backoff, not an error the caller has to handle, and so that a panel that lost
//! power without an I2C error is brought back within [`REINIT_EVERY`].

use std::path::Path;
use std::time::Duration;

use ssd1306::I2CDisplayInterface;
use ssd1306::mode::BufferedGraphicsMode;
use ssd1306::prelude::{
    Brightness, DisplayConfig, DisplayRotation, DisplaySize128x32, DisplaySize128x64, I2CInterface,
};

use crate::clock::Clock;
use crate::frame::{Frame, HEIGHT, WIDTH};
use crate::sh1106::Sh1106Display;

/// How often [`ResilientDisplay`] initialises a present controller afresh and sends it the whole
/// frame. A controller whose supply dipped (a loose lead, a brownout) restarts dark (display
/// off, charge pump off) with random memory, and still acknowledges every write, so nothing
/// else notices it; a wake from dim or blank does the same at once.
pub const REINIT_EVERY: Duration = Duration::from_secs(10);

/// The controller chip on the OLED module (`[board] controller`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    /// Solomon Systech SSD1306: 128x64 RAM, horizontal addressing (most 0.96" modules).
    #[default]
    Ssd1306,
    /// Sino Wealth SH1106: 132x64 RAM showing columns 2..=129, page addressing only (most 1.3"
    /// modules, often sold as SSD1306).
    Sh1106,
}

impl Controller {
    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Ssd1306 => "ssd1306",
            Controller::Sh1106 => "sh1106",
        }
    }
}

/// The glass of the OLED module (`[board] display_size`). Screens are always drawn into a
/// 128x64 [`Frame`]; a 128x32 panel shows its rows 0..32 (the appliance pages a screen's lines
/// into that window, board/README.md), and its controller is set up for 32 rows (multiplex ratio
/// 31, sequential COM pins) so that every row of the glass shows its own row of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PanelSize {
    /// 128x64: most 0.96" and 1.3" modules.
    #[default]
    Size128x64,
    /// 128x32: 0.91" modules.
    Size128x32,
}

impl PanelSize {
    /// Rows of the glass: 64 or 32.
    pub fn rows(self) -> usize {
        match self {
            PanelSize::Size128x64 => HEIGHT,
            PanelSize::Size128x32 => HEIGHT / 2,
        }
    }

    /// The size as written in the config: `"128x64"` or `"128x32"`.
    pub fn name(self) -> &'static str {
        match self {
            PanelSize::Size128x64 => "128x64",
            PanelSize::Size128x32 => "128x32",
        }
    }

    /// The size a config names, if it is one of the two.
    pub fn from_name(name: &str) -> Option<PanelSize> {
        [PanelSize::Size128x64, PanelSize::Size128x32].into_iter().find(|size| size.name() == name)
    }
}

/// What can go wrong with a display.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// The I2C address is not one an SSD1306 module answers at.
    #[error("I2C address {0:#04x} is not an SSD1306 address (0x3c or 0x3d)")]
    BadAddress(u8),
    /// The I2C bus could not be opened.
    #[error("cannot open I2C bus {bus}: {reason}")]
    Bus {
        /// The bus (device path or number).
        bus: String,
        /// Why.
        reason: String,
    },
    /// The controller did not take a command or data (NACK, bus error).
    #[error("SSD1306 at {address:#04x}: {reason}")]
    Controller {
        /// Its I2C address.
        address: u8,
        /// What the driver reported.
        reason: String,
    },
    /// Writing to the terminal, a file or the link failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being written.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PNG could not be encoded or decoded.
    #[error("PNG: {0}")]
    Png(String),
}

/// Whether the panel is there. An absent panel is retried; the caller shows an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayHealth {
    /// Frames reach the panel.
    Present,
    /// Frames do not reach the panel.
    Absent {
        /// The last error.
        reason: String,
        /// Failed attempts in a row.
        failures: u32,
        /// When the next attempt is due, on the [`crate::buttons::monotonic`] time base.
        next_retry: Duration,
    },
}

/// A monochrome display that takes whole 128x64 frames (a 128x32 panel shows rows 0..32).
pub trait Display: Send {
    /// Shows `frame`. `caption` names the screen and carries its text lines: a panel ignores it,
    /// the sim board prints it, the link sends it so that a host can assert on text.
    fn show(&mut self, frame: &Frame, caption: &str) -> Result<(), DisplayError>;

    /// Sets the contrast (brightness), 0 dimmest to 255 brightest.
    fn set_contrast(&mut self, contrast: u8) -> Result<(), DisplayError>;

    /// Turns the panel on or off (off: dark, memory kept).
    fn set_on(&mut self, on: bool) -> Result<(), DisplayError>;

    /// Whether frames reach the panel.
    fn health(&self) -> DisplayHealth {
        DisplayHealth::Present
    }
}

impl<D: Display + ?Sized> Display for Box<D> {
    fn show(&mut self, frame: &Frame, caption: &str) -> Result<(), DisplayError> {
        (**self).show(frame, caption)
    }
    fn set_contrast(&mut self, contrast: u8) -> Result<(), DisplayError> {
        (**self).set_contrast(contrast)
    }
    fn set_on(&mut self, on: bool) -> Result<(), DisplayError> {
        (**self).set_on(on)
    }
    fn health(&self) -> DisplayHealth {
        (**self).health()
    }
}

/// The `ssd1306` crate's driver in its buffered mode, for one of the two glass sizes (the size
/// is a type parameter there; boxed, as the buffers differ in size).
enum Driver<I> {
    Rows64(
        Box<ssd1306::Ssd1306<I2CInterface<I>, DisplaySize128x64, BufferedGraphicsMode<DisplaySize128x64>>>,
    ),
    Rows32(
        Box<ssd1306::Ssd1306<I2CInterface<I>, DisplaySize128x32, BufferedGraphicsMode<DisplaySize128x32>>>,
    ),
}

/// Calls the same method on either size's driver.
macro_rules! each_driver {
    ($driver:expr, $d:ident => $body:expr) => {
        match $driver {
            Driver::Rows64($d) => $body,
            Driver::Rows32($d) => $body,
        }
    };
}

/// An SSD1306 panel (128x64 or 128x32) on an I2C bus, through the `ssd1306` crate.
///
/// Only what changed since the last frame is sent (the crate's buffered mode sends the
/// bounding box of the pixels set), which keeps I2C traffic small for mostly static screens.
pub struct Ssd1306Display<I> {
    driver: Driver<I>,
    address: u8,
    rows: usize,
    /// What the panel shows, when known; after an error it is not, and the next frame is sent whole.
    shown: Option<Frame>,
}

impl<I> std::fmt::Debug for Ssd1306Display<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ssd1306Display")
            .field("address", &self.address)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl<I: embedded_hal::i2c::I2c> Ssd1306Display<I> {
    /// Initialises a 128x64 controller at `address` (0x3C or 0x3D) on `i2c`. Memory is not
    /// cleared here; the first [`Display::show`] sends a whole frame.
    pub fn init(i2c: I, address: u8) -> Result<Self, DisplayError> {
        Self::init_size(i2c, address, PanelSize::Size128x64)
    }

    /// Initialises the controller of a `size` panel at `address` (0x3C or 0x3D) on `i2c`.
    pub fn init_size(i2c: I, address: u8, size: PanelSize) -> Result<Self, DisplayError> {
        if address != 0x3C && address != 0x3D {
            return Err(DisplayError::BadAddress(address));
        }
        let interface = I2CDisplayInterface::new_custom_address(i2c, address);
        let mut driver = match size {
            PanelSize::Size128x64 => Driver::Rows64(Box::new(
                ssd1306::Ssd1306::new(interface, DisplaySize128x64, DisplayRotation::Rotate0)
                    .into_buffered_graphics_mode(),
            )),
            PanelSize::Size128x32 => Driver::Rows32(Box::new(
                ssd1306::Ssd1306::new(interface, DisplaySize128x32, DisplayRotation::Rotate0)
                    .into_buffered_graphics_mode(),
            )),
        };
        each_driver!(&mut driver, d => d.init()).map_err(|e| controller_error(address, e))?;
        Ok(Ssd1306Display { driver, address, rows: size.rows(), shown: None })
    }
}

/// Initialises the `controller` of a `size` panel at `address` (0x3C or 0x3D) on `i2c`.
pub fn init_controller<I: embedded_hal::i2c::I2c + Send + 'static>(
    i2c: I,
    address: u8,
    controller: Controller,
    size: PanelSize,
) -> Result<Box<dyn Display>, DisplayError> {
    Ok(match controller {
        Controller::Ssd1306 => Box::new(Ssd1306Display::init_size(i2c, address, size)?),
        Controller::Sh1106 => Box::new(Sh1106Display::init_size(i2c, address, size)?),
    })
}

pub(crate) fn controller_error(address: u8, error: impl std::fmt::Debug) -> DisplayError {
    DisplayError::Controller { address, reason: format!("{error:?}") }
}

impl<I: embedded_hal::i2c::I2c + Send> Display for Ssd1306Display<I> {
    fn show(&mut self, frame: &Frame, _caption: &str) -> Result<(), DisplayError> {
        for y in 0..self.rows {
            for x in 0..WIDTH {
                let on = frame.get(x, y);
                if self.shown.as_ref().is_none_or(|shown| shown.get(x, y) != on) {
                    each_driver!(&mut self.driver, d => d.set_pixel(x as u32, y as u32, on));
                }
            }
        }
        self.shown = None;
        each_driver!(&mut self.driver, d => d.flush()).map_err(|e| controller_error(self.address, e))?;
        self.shown = Some(frame.clone());
        Ok(())
    }

    fn set_contrast(&mut self, contrast: u8) -> Result<(), DisplayError> {
        // Low contrast also gets the short pre-charge of the crate's dimmest setting.
        let precharge = if contrast < 0x10 { 0x1 } else { 0x2 };
        each_driver!(&mut self.driver, d => d.set_brightness(Brightness::custom(precharge, contrast)))
            .map_err(|e| controller_error(self.address, e))
    }

    fn set_on(&mut self, on: bool) -> Result<(), DisplayError> {
        each_driver!(&mut self.driver, d => d.set_display_on(on))
            .map_err(|e| controller_error(self.address, e))
    }
}

/// Opens the `controller` through the kernel's I2C device (`/dev/i2c-N`) with linux-embedded-hal.
pub fn open_i2cdev(
    bus: &Path,
    address: u8,
    controller: Controller,
    size: PanelSize,
) -> Result<Box<dyn Display>, DisplayError> {
    let i2c = linux_embedded_hal::I2cdev::new(bus)
        .map_err(|e| DisplayError::Bus { bus: bus.display().to_string(), reason: e.to_string() })?;
    init_controller(i2c, address, controller, size)
}

/// Opens the `controller` through rppal's I2C (Raspberry Pi OS); `bus` is N of `/dev/i2c-N`.
pub fn open_rppal(
    bus: u8,
    address: u8,
    controller: Controller,
    size: PanelSize,
) -> Result<Box<dyn Display>, DisplayError> {
    let i2c = rppal::i2c::I2c::with_bus(bus)
        .map_err(|e| DisplayError::Bus { bus: format!("rppal I2C bus {bus}"), reason: e.to_string() })?;
    init_controller(i2c, address, controller, size)
}

/// How long to wait between attempts to reach an absent display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait; doubling stops here.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The wait after `failures` failed attempts in a row (at least one).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Opens a display afresh: the bus, and initialisation of the controller.
pub type Connect = Box<dyn FnMut() -> Result<Box<dyn Display>, DisplayError> + Send>;

/// A display that survives its panel: when it is missing or fails, frames are kept, the state
/// is [`DisplayHealth::Absent`], and connecting is retried on a bounded exponential backoff from
/// within [`Display::show`] and [`ResilientDisplay::poll`]. On recovery the controller is
/// initialised again and gets the contrast, on/off state and current frame.
///
/// A present panel gets the same every [`REINIT_EVERY`] and on every wake (a contrast higher
/// than the last, or turning it on): a controller that lost power without an I2C error comes
/// back in its power-on state (SSD1306 datasheet 8.9: display off, charge pump off) and would
/// otherwise stay dark, since an unchanged frame sends nothing.
///
/// Its methods return `Ok` even while the panel is absent: that is a state, read from
/// [`Display::health`], not an error for every frame.
pub struct ResilientDisplay {
    connect: Connect,
    clock: Box<dyn Clock>,
    backoff: Backoff,
    inner: Option<Box<dyn Display>>,
    failures: u32,
    next_retry: Duration,
    reason: String,
    frame: Frame,
    caption: String,
    contrast: Option<u8>,
    on: bool,
    /// When the present controller is next initialised afresh.
    next_reinit: Duration,
    /// A wake asks for it before then.
    reinit_due: bool,
}

impl std::fmt::Debug for ResilientDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientDisplay").field("health", &self.health()).finish_non_exhaustive()
    }
}

impl ResilientDisplay {
    /// Makes the first attempt to connect at once.
    pub fn new(connect: Connect, clock: Box<dyn Clock>, backoff: Backoff) -> Self {
        let mut display = ResilientDisplay {
            connect,
            clock,
            backoff,
            inner: None,
            failures: 0,
            next_retry: Duration::ZERO,
            reason: "not connected yet".into(),
            frame: Frame::blank(),
            caption: String::new(),
            contrast: None,
            on: true,
            next_reinit: Duration::ZERO,
            reinit_due: false,
        };
        display.poll();
        display
    }

    /// Never while the panel is off: initialising turns it on, and a blank display must not
    /// flash every period (a controller that lost power meanwhile is dark, as wanted; the wake
    /// initialises it).
    fn reinit_due(&self) -> bool {
        self.on && (self.reinit_due || self.clock.now() >= self.next_reinit)
    }

    /// Tries to reach an absent panel if a retry is due, and initialises a present one afresh
    /// if [`REINIT_EVERY`] has passed or a wake asked for it. Cheap otherwise.
    pub fn poll(&mut self) {
        if self.inner.is_some() {
            if !self.reinit_due() {
                return;
            }
            // Connecting again is initialising again: the recovery path, for a panel that may
            // have lost power without anyone noticing.
            self.inner = None;
        } else if self.clock.now() < self.next_retry {
            return;
        }
        let recovered = (self.connect)().and_then(|mut display| {
            // Initialising turned the panel on: a blank one goes dark again before anything is
            // drawn, so a panel that comes back while blank is lit only for the moment of init.
            if !self.on {
                display.set_on(false)?;
            }
            if let Some(contrast) = self.contrast {
                display.set_contrast(contrast)?;
            }
            display.show(&self.frame, &self.caption)?;
            Ok(display)
        });
        match recovered {
            Ok(display) => {
                if self.failures > 0 {
                    tracing::info!(after_failures = self.failures, "display is back");
                }
                self.inner = Some(display);
                self.failures = 0;
                self.reinit_due = false;
                self.next_reinit = self.clock.now() + REINIT_EVERY;
            }
            Err(e) => self.lost(e),
        }
    }

    fn lost(&mut self, error: DisplayError) {
        self.inner = None;
        self.failures = self.failures.saturating_add(1);
        self.reason = error.to_string();
        let delay = self.backoff.delay(self.failures);
        self.next_retry = self.clock.now() + delay;
        // Once per outage, not once per retry: an absent panel must not flood the log.
        if self.failures == 1 {
            tracing::warn!(error = %self.reason, "display absent; retrying with backoff");
        } else {
            tracing::debug!(error = %self.reason, failures = self.failures, ?delay, "display still absent");
        }
    }

    fn with_inner(&mut self, op: impl FnOnce(&mut dyn Display) -> Result<(), DisplayError>) {
        match self.inner.as_mut() {
            Some(inner) => {
                if let Err(e) = op(inner.as_mut()) {
                    self.lost(e);
                }
            }
            None => self.poll(),
        }
    }
}

impl Display for ResilientDisplay {
    fn show(&mut self, frame: &Frame, caption: &str) -> Result<(), DisplayError> {
        frame.clone_into(&mut self.frame);
        caption.clone_into(&mut self.caption);
        if self.inner.is_some() && self.reinit_due() {
            // Initialising sends the new frame whole.
            self.poll();
        } else {
            self.with_inner(|d| d.show(frame, caption));
        }
        Ok(())
    }

    fn set_contrast(&mut self, contrast: u8) -> Result<(), DisplayError> {
        if self.contrast.is_some_and(|before| contrast > before) {
            // A wake from dim or blank: the owner looks now.
            self.reinit_due = true;
        }
        self.contrast = Some(contrast);
        self.with_inner(|d| d.set_contrast(contrast));
        Ok(())
    }

    fn set_on(&mut self, on: bool) -> Result<(), DisplayError> {
        if on && !self.on {
            self.reinit_due = true;
        }
        self.on = on;
        self.with_inner(|d| d.set_on(on));
        Ok(())
    }

    fn health(&self) -> DisplayHealth {
        match self.inner {
            Some(_) => DisplayHealth::Present,
            None => DisplayHealth::Absent {
                reason: self.reason.clone(),
                failures: self.failures,
                next_retry: self.next_retry,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::emulated::{EmulatedHandle, EmulatedSsd1306};
    use embedded_graphics::pixelcolor::BinaryColor;
    use embedded_graphics::prelude::*;
    use embedded_graphics::primitives::{Circle, PrimitiveStyle, Rectangle};

    fn picture() -> Frame {
        let mut frame = Frame::blank();
        Circle::new(Point::new(10, 5), 40)
            .into_styled(PrimitiveStyle::with_stroke(BinaryColor::On, 2))
            .draw(&mut frame)
            .expect("infallible");
        Rectangle::new(Point::new(70, 20), Size::new(50, 30))
            .into_styled(PrimitiveStyle::with_fill(BinaryColor::On))
            .draw(&mut frame)
            .expect("infallible");
        frame.set(127, 63, true);
        frame.set(0, 0, true);
        frame
    }

    fn panel() -> (EmulatedSsd1306, EmulatedHandle) {
        let bus = EmulatedSsd1306::new(0x3C);
        let handle = bus.handle();
        (bus, handle)
    }

    #[test]
    fn init_turns_the_panel_on_upright_with_the_charge_pump() {
        let (bus, handle) = panel();
        let _display = Ssd1306Display::init(bus, 0x3C).expect("init");
        assert!(handle.is_on());
        assert!(handle.charge_pump());
        assert!(!handle.is_inverted());
        assert_eq!(handle.addressing_mode(), crate::emulated::AddressingMode::Horizontal);
        assert!(handle.protocol_errors().is_empty(), "{:?}", handle.protocol_errors());
    }

    #[test]
    fn a_full_flush_shows_exactly_the_frame() {
        let (bus, handle) = panel();
        let mut display = Ssd1306Display::init(bus, 0x3C).expect("init");
        let frame = picture();
        display.show(&frame, "test").expect("show");
        assert_eq!(handle.visible(), frame, "\n{}", handle.visible().to_ascii());
        assert_eq!(handle.data_bytes(), 1024, "the first frame is sent whole");
        assert!(handle.protocol_errors().is_empty(), "{:?}", handle.protocol_errors());
    }

    #[test]
    fn a_partial_flush_sends_and_changes_only_the_dirty_area() {
        let (bus, handle) = panel();
        let mut display = Ssd1306Display::init(bus, 0x3C).expect("init");
        let first = picture();
        display.show(&first, "one").expect("show");
        let before = handle.data_bytes();
        let mut second = first.clone();
        // Columns 40..=43 of rows 17..=18: all in page 2.
        for x in 40..44 {
            second.set(x, 17, true);
            second.set(x, 18, !first.get(x, 18));
        }
        display.show(&second, "two").expect("show");
        assert_eq!(handle.visible(), second);
        assert_eq!(handle.data_bytes() - before, 4, "4 columns of 1 page");
        assert_eq!(handle.windows(), ((40, 43), (2, 2)));
        let transactions = handle.transactions();
        display.show(&second, "same").expect("show");
        assert_eq!(handle.transactions(), transactions, "an unchanged frame sends nothing");
    }

    #[test]
    fn contrast_and_on_off_reach_the_controller() {
        let (bus, handle) = panel();
        let mut display = Ssd1306Display::init(bus, 0x3C).expect("init");
        display.show(&picture(), "").expect("show");
        display.set_contrast(0x22).expect("contrast");
        assert_eq!(handle.contrast(), 0x22);
        display.set_on(false).expect("off");
        assert_eq!(handle.visible(), Frame::blank());
        display.set_on(true).expect("on");
        assert_eq!(handle.visible(), picture());
    }

    #[test]
    fn addresses_other_than_0x3c_and_0x3d_are_refused() {
        let (bus, _) = panel();
        let err = Ssd1306Display::init(bus, 0x50).expect_err("bad address");
        assert!(err.to_string().contains("0x50"), "{err}");
        let bus = EmulatedSsd1306::new(0x3D);
        assert!(Ssd1306Display::init(bus.clone(), 0x3D).is_ok());
        assert!(Ssd1306Display::init(bus, 0x3C).is_err(), "nobody answers at 0x3c");
    }

    #[test]
    fn a_missing_bus_is_an_error() {
        let Err(err) =
            open_i2cdev(Path::new("/nonexistent/i2c-9"), 0x3C, Controller::Ssd1306, PanelSize::Size128x64)
        else {
            panic!("no bus")
        };
        assert!(err.to_string().contains("/nonexistent/i2c-9"), "{err}");
    }

    fn resilient(bus: &EmulatedSsd1306, clock: &ManualClock) -> ResilientDisplay {
        resilient_chip(bus, clock, Controller::Ssd1306)
    }

    fn resilient_chip(bus: &EmulatedSsd1306, clock: &ManualClock, chip: Controller) -> ResilientDisplay {
        let bus = bus.clone();
        let connect: Connect =
            Box::new(move || init_controller(bus.clone(), 0x3C, chip, PanelSize::Size128x64));
        ResilientDisplay::new(connect, Box::new(clock.clone()), Backoff::default())
    }

    /// A QR-code-like picture: finder squares in three corners and noise modules from column 0
    /// to column 127 and row 0 to row 63.
    fn qr_like() -> Frame {
        let mut frame = Frame::blank();
        let mut x = 0x1234_5678u32;
        for my in 0..16 {
            for mx in 0..32 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let on = x & 1 == 1 || mx == 0 || mx == 31;
                for (dx, dy) in (0..4).flat_map(|dx| (0..4).map(move |dy| (dx, dy))) {
                    frame.set(mx * 4 + dx, my * 4 + dy, on);
                }
            }
        }
        for (cx, cy) in [(0, 0), (107, 0), (0, 43)] {
            for (dx, dy) in (0..21).flat_map(|dx| (0..21).map(move |dy| (dx, dy))) {
                // 7x7 modules of 3 pixels: dark ring, light ring, dark 3x3 centre.
                let ring = dx.min(dy).min(20 - dx).min(20 - dy) / 3;
                frame.set(cx + dx, cy + dy, ring != 1);
            }
        }
        frame
    }

    #[test]
    fn power_lost_without_an_i2c_error_is_recovered_within_one_reinit_period() {
        for chip in [Controller::Ssd1306, Controller::Sh1106] {
            let bus = EmulatedSsd1306::with_controller(0x3C, chip);
            let handle = bus.handle();
            let clock = ManualClock::new(Duration::from_secs(100));
            let mut display = resilient_chip(&bus, &clock, chip);
            display.set_contrast(0xC0).expect("ok");
            display.show(&picture(), "home").expect("ok");
            assert_eq!(handle.visible(), picture(), "{chip:?}");

            clock.advance(Duration::from_secs(1));
            handle.lose_power();
            display.show(&picture(), "home").expect("ok");
            assert_eq!(handle.visible(), Frame::blank(), "{chip:?}: dark after the brownout");
            assert_eq!(display.health(), DisplayHealth::Present, "{chip:?}: nothing failed on the bus");

            // Frames keep coming at display rate; within one period the panel is back.
            let mut waited = Duration::ZERO;
            while handle.visible() != picture() && waited <= REINIT_EVERY {
                clock.advance(Duration::from_millis(250));
                waited += Duration::from_millis(250);
                display.show(&picture(), "home").expect("ok");
            }
            assert!(waited <= REINIT_EVERY, "{chip:?}: still not back after {waited:?}");
            assert_eq!(handle.visible(), picture(), "{chip:?}\n{}", handle.visible().to_ascii());
            assert!(handle.is_on() && handle.charge_pump(), "{chip:?}: on, with its supply");
            assert_eq!(handle.contrast(), 0xC0, "{chip:?}: the contrast is set again");
            assert!(handle.protocol_errors().is_empty(), "{chip:?}: {:?}", handle.protocol_errors());
        }
    }

    #[test]
    fn a_wake_from_dim_or_blank_reinitialises_at_once() {
        for chip in [Controller::Ssd1306, Controller::Sh1106] {
            let bus = EmulatedSsd1306::with_controller(0x3C, chip);
            let handle = bus.handle();
            let clock = ManualClock::new(Duration::ZERO);
            let mut display = resilient_chip(&bus, &clock, chip);
            display.set_contrast(0xFF).expect("ok");
            display.show(&picture(), "home").expect("ok");
            display.set_contrast(0x10).expect("dim");
            handle.lose_power();
            display.set_contrast(0xFF).expect("wake");
            display.show(&picture(), "home").expect("ok");
            assert_eq!(handle.visible(), picture(), "{chip:?}: no wait for the period");
            assert_eq!(handle.contrast(), 0xFF, "{chip:?}");

            display.set_on(false).expect("off");
            handle.lose_power();
            display.set_on(true).expect("on");
            display.show(&picture(), "home").expect("ok");
            assert_eq!(handle.visible(), picture(), "{chip:?}: turning on is a wake too");
        }
    }

    /// Initialising turns a controller on: a blanked display must stay dark through the
    /// periods, and come back whole at the wake.
    #[test]
    fn a_blank_display_is_not_lit_by_the_periodic_reinit() {
        let bus = EmulatedSsd1306::with_controller(0x3C, Controller::Ssd1306);
        let handle = bus.handle();
        let clock = ManualClock::new(Duration::ZERO);
        let mut display = resilient_chip(&bus, &clock, Controller::Ssd1306);
        display.show(&picture(), "home").expect("ok");
        display.set_on(false).expect("blank");
        let sent = handle.transactions();
        for _ in 0..3 {
            clock.advance(REINIT_EVERY);
            display.show(&picture(), "home").expect("ok");
            display.poll();
        }
        // Not a command: one would be an init, which lights the panel for a moment.
        assert_eq!(handle.transactions(), sent, "the panel was written to while blank");
        assert!(!handle.is_on());
        display.set_on(true).expect("wake");
        display.show(&picture(), "home").expect("ok");
        assert!(handle.is_on());
        assert_eq!(handle.visible(), picture());
    }

    #[test]
    fn a_frame_appears_unshifted_on_an_sh1106_edge_to_edge() {
        let bus = EmulatedSsd1306::with_controller(0x3C, Controller::Sh1106);
        let handle = bus.handle();
        let mut display = Sh1106Display::init(bus, 0x3C).expect("init");
        let frame = qr_like();
        assert!((0..HEIGHT).any(|y| frame.get(0, y)) && (0..HEIGHT).any(|y| frame.get(WIDTH - 1, y)));
        display.show(&frame, "qr").expect("show");
        assert_eq!(handle.visible(), frame, "\n{}", handle.visible().to_ascii());
        assert!(handle.is_on() && handle.charge_pump());
        // A change at the right edge only is sent as that, and lands there.
        let mut next = frame.clone();
        next.set(WIDTH - 1, 30, !frame.get(WIDTH - 1, 30));
        let before = handle.data_bytes();
        display.show(&next, "qr 2").expect("show");
        assert_eq!(handle.visible(), next);
        assert_eq!(handle.data_bytes() - before, 1, "one column of one page");
        assert!(handle.protocol_errors().is_empty(), "{:?}", handle.protocol_errors());
    }

    #[test]
    fn the_ssd1306_driver_on_an_sh1106_shows_a_garbled_picture() {
        // Why `controller = "sh1106"` exists: the emulated SH1106 is faithful enough to show it.
        let bus = EmulatedSsd1306::with_controller(0x3C, Controller::Sh1106);
        let handle = bus.handle();
        let mut display = Ssd1306Display::init(bus, 0x3C).expect("the SH1106 acknowledges");
        display.show(&qr_like(), "qr").expect("show");
        assert_ne!(handle.visible(), qr_like());
        assert!(!handle.protocol_errors().is_empty(), "0x20-0x22 and 0x8D are no SH1106 commands");
    }

    /// `frame` as a 128x32 glass shows it: rows 0..32, the rest dark (there is no glass there).
    fn top_rows(frame: &Frame) -> Frame {
        frame.moved_rows(0, HEIGHT / 2, 0)
    }

    #[test]
    fn a_128x32_panel_shows_the_frames_first_32_rows_on_either_chip() {
        for chip in [Controller::Ssd1306, Controller::Sh1106] {
            let bus = EmulatedSsd1306::with_panel(0x3C, chip, PanelSize::Size128x32);
            let handle = bus.handle();
            let mut display = init_controller(bus, 0x3C, chip, PanelSize::Size128x32).expect("init");
            display.show(&qr_like(), "qr").expect("show");
            assert_eq!(handle.visible(), top_rows(&qr_like()), "{chip:?}\n{}", handle.visible().to_ascii());
            assert_eq!(handle.data_bytes(), 512, "{chip:?}: 4 pages of 128 columns, no more");
            assert!(handle.is_on() && handle.charge_pump(), "{chip:?}");
            assert!(handle.protocol_errors().is_empty(), "{chip:?}: {:?}", handle.protocol_errors());
        }
    }

    #[test]
    fn a_panel_set_up_for_the_other_size_shows_a_garbled_picture() {
        // Why `display_size` exists: the emulated glass is wired as modules are, so a 64-row
        // setup on a 32-row glass shows every other row, and a 32-row setup on a 64-row glass
        // leaves every other row dark.
        for chip in [Controller::Ssd1306, Controller::Sh1106] {
            for (glass, setup) in [
                (PanelSize::Size128x32, PanelSize::Size128x64),
                (PanelSize::Size128x64, PanelSize::Size128x32),
            ] {
                let bus = EmulatedSsd1306::with_panel(0x3C, chip, glass);
                let handle = bus.handle();
                let mut display = init_controller(bus, 0x3C, chip, setup).expect("init");
                display.show(&qr_like(), "qr").expect("show");
                let right = if glass == PanelSize::Size128x32 { top_rows(&qr_like()) } else { qr_like() };
                assert_ne!(handle.visible(), right, "{chip:?} {glass:?} set up as {setup:?}");
                assert!(handle.visible().lit_pixels() > 0, "{chip:?}: garbled, not dark");
            }
        }
    }

    #[test]
    fn a_128x32_panel_that_lost_power_is_recovered_within_one_period() {
        for chip in [Controller::Ssd1306, Controller::Sh1106] {
            let bus = EmulatedSsd1306::with_panel(0x3C, chip, PanelSize::Size128x32);
            let handle = bus.handle();
            let clock = ManualClock::new(Duration::ZERO);
            let connect: Connect =
                Box::new(move || init_controller(bus.clone(), 0x3C, chip, PanelSize::Size128x32));
            let mut display = ResilientDisplay::new(connect, Box::new(clock.clone()), Backoff::default());
            display.show(&picture(), "home").expect("ok");
            assert_eq!(handle.visible(), top_rows(&picture()), "{chip:?}");
            handle.lose_power();
            clock.advance(REINIT_EVERY);
            display.show(&picture(), "home").expect("ok");
            assert_eq!(handle.visible(), top_rows(&picture()), "{chip:?}: back, set up for 32 rows again");
            assert!(handle.protocol_errors().is_empty(), "{chip:?}: {:?}", handle.protocol_errors());
        }
    }

    fn absent_failures(display: &ResilientDisplay) -> Option<u32> {
        match display.health() {
            DisplayHealth::Present => None,
            DisplayHealth::Absent { failures, .. } => Some(failures),
        }
    }

    #[test]
    fn a_nack_marks_the_display_absent_and_recovery_restores_the_picture() {
        let (bus, handle) = panel();
        let clock = ManualClock::new(Duration::from_secs(100));
        let mut display = resilient(&bus, &clock);
        assert_eq!(display.health(), DisplayHealth::Present);
        display.show(&picture(), "home").expect("show");
        assert_eq!(handle.visible(), picture());

        handle.unplug();
        let mut next = picture();
        next.set(64, 2, true);
        display.show(&next, "home 2").expect("absent is not an error");
        assert_eq!(absent_failures(&display), Some(1));
        let DisplayHealth::Absent { reason, next_retry, .. } = display.health() else { panic!("absent") };
        assert!(reason.contains("0x3c"), "{reason}");
        assert_eq!(next_retry, Duration::from_millis(100_500));

        handle.replug();
        display.show(&next, "home 2").expect("show");
        assert_eq!(absent_failures(&display), Some(1), "no retry before the backoff elapses");
        assert!(!handle.is_on(), "still in power-on state");

        clock.advance(Duration::from_millis(500));
        display.poll();
        assert_eq!(display.health(), DisplayHealth::Present);
        assert!(handle.is_on(), "re-initialised");
        assert_eq!(handle.visible(), next, "the current frame is re-sent");
        assert!(handle.protocol_errors().is_empty(), "{:?}", handle.protocol_errors());
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_bound() {
        let (bus, handle) = panel();
        handle.unplug();
        let clock = ManualClock::new(Duration::ZERO);
        let mut display = resilient(&bus, &clock);
        let mut waits = Vec::new();
        for _ in 0..10 {
            let DisplayHealth::Absent { next_retry, .. } = display.health() else { panic!("absent") };
            waits.push((next_retry - clock.now()).as_millis());
            clock.advance(next_retry - clock.now());
            display.poll();
        }
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
        assert_eq!(absent_failures(&display), Some(11));
    }

    #[test]
    fn settings_made_while_absent_are_applied_on_recovery() {
        let (bus, handle) = panel();
        handle.unplug();
        let clock = ManualClock::new(Duration::ZERO);
        let mut display = resilient(&bus, &clock);
        display.set_contrast(0x05).expect("ok");
        display.show(&picture(), "x").expect("ok");
        display.set_on(false).expect("ok");
        handle.replug();
        clock.advance(Duration::from_secs(60));
        display.poll();
        assert_eq!(display.health(), DisplayHealth::Present);
        assert_eq!(handle.contrast(), 0x05);
        assert!(!handle.is_on());
        assert_eq!(handle.gddram(), picture(), "memory holds the frame while the panel is off");
    }

    #[test]
    fn a_nack_in_the_middle_of_a_frame_resends_it_whole_after_recovery() {
        let (bus, handle) = panel();
        let clock = ManualClock::new(Duration::ZERO);
        let mut display = resilient(&bus, &clock);
        display.show(&Frame::blank(), "blank").expect("ok");
        handle.set_nack(true);
        display.show(&picture(), "pic").expect("ok");
        handle.set_nack(false);
        clock.advance(Duration::from_secs(1));
        display.show(&picture(), "pic").expect("ok");
        assert_eq!(display.health(), DisplayHealth::Present);
        assert_eq!(handle.visible(), picture());
    }
}

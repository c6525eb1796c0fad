//! Buttons: timestamped edges from two push buttons.
//!
//! Every backend dates edges on one time base, [`monotonic`] (the kernel's CLOCK_MONOTONIC),
//! which is also what the GPIO character device stamps its events with, so that debouncing
//! sees the real spacing of contact bounce rather than the delay of the reading thread.

use std::time::Duration;

use linux_embedded_hal::gpio_cdev::{Chip, EventRequestFlags, EventType, LineEventHandle, LineRequestFlags};
use rustix::event::{PollFd, PollFlags, Timespec};

/// One of the two buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Button {
    /// The first button (default GPIO17).
    A,
    /// The second button (default GPIO27).
    B,
}

impl Button {
    /// "A" or "B".
    pub fn name(self) -> &'static str {
        match self {
            Button::A => "A",
            Button::B => "B",
        }
    }
}

/// A button went down or up at a moment on the [`monotonic`] time base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonEdge {
    /// Which button.
    pub button: Button,
    /// True when it went down (pressed), false when it came up.
    pub pressed: bool,
    /// When, on the [`monotonic`] time base.
    pub at: Duration,
}

/// Why no edge could be read. The caller keeps the board running and retries.
#[derive(Debug, thiserror::Error)]
pub enum ButtonError {
    /// The rppal GPIO backend failed.
    #[error("GPIO (rppal): {0}")]
    Rppal(#[from] rppal::gpio::Error),
    /// The GPIO character device failed.
    #[error("GPIO character device {chip}: {source}")]
    Cdev {
        /// The chip device path.
        chip: String,
        /// The underlying error.
        source: linux_embedded_hal::gpio_cdev::Error,
    },
    /// Waiting for GPIO events failed.
    #[error("waiting for GPIO events: {0}")]
    Poll(#[source] std::io::Error),
    /// The link to the host is gone; no more edges will come.
    #[error("link closed: {0}")]
    LinkClosed(String),
    /// The keyboard (sim board) cannot be read any more.
    #[error("keyboard: {0}")]
    Keyboard(String),
}

/// Whether the buttons can be read. Failing buttons are retried; the caller shows an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonsHealth {
    /// Edges are read.
    Working,
    /// The buttons cannot be read at the moment.
    Failing {
        /// The last error.
        reason: String,
    },
}

/// A source of button edges.
pub trait Buttons: Send {
    /// Waits up to `timeout` for the next edge; `Ok(None)` when none came in time.
    fn next_edge(&mut self, timeout: Duration) -> Result<Option<ButtonEdge>, ButtonError>;

    /// Whether `button` is pressed now, read back from its line with the wiring's polarity
    /// applied (backends without a line: their model's level). Edges can be lost, the level
    /// cannot: [`crate::gesture::GestureMachine::tick`] checks the edges against it.
    fn level(&self, button: Button) -> Result<bool, ButtonError>;

    /// Whether the buttons can be read.
    fn health(&self) -> ButtonsHealth {
        ButtonsHealth::Working
    }
}

/// Now, on the time base of button edges: CLOCK_MONOTONIC (time since boot, not counting
/// suspend), the same clock the kernel stamps GPIO events with.
pub fn monotonic() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // CLOCK_MONOTONIC is never negative; the fallback only keeps this free of panics.
    Duration::try_from(ts).unwrap_or_default()
}

/// Which GPIO lines the buttons are on and how they are wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonPins {
    /// GPIO (BCM) number of button A.
    pub a: u32,
    /// GPIO (BCM) number of button B.
    pub b: u32,
    /// Pressed pulls the line low (button to ground, pull-up bias); else pressed is high
    /// (button to 3.3 V, pull-down bias).
    pub active_low: bool,
}

impl Default for ButtonPins {
    fn default() -> Self {
        ButtonPins { a: 17, b: 27, active_low: true }
    }
}

/// Buttons through rppal (Raspberry Pi kernels with /dev/gpiomem).
#[derive(Debug)]
pub struct RppalButtons {
    gpio: rppal::gpio::Gpio,
    a: rppal::gpio::InputPin,
    b: rppal::gpio::InputPin,
    active_low: bool,
}

impl RppalButtons {
    /// Claims both pins as inputs with the bias their wiring needs and edge interrupts.
    pub fn open(pins: ButtonPins) -> Result<Self, ButtonError> {
        use rppal::gpio::Trigger;
        let gpio = rppal::gpio::Gpio::new()?;
        let input = |n: u32| -> Result<rppal::gpio::InputPin, ButtonError> {
            // GPIO numbers above 255 do not exist on a Pi; an invalid one is rppal's error.
            let pin = gpio.get(u8::try_from(n).unwrap_or(u8::MAX))?;
            let mut pin = if pins.active_low { pin.into_input_pullup() } else { pin.into_input_pulldown() };
            pin.set_interrupt(Trigger::Both, None)?;
            Ok(pin)
        };
        let (a, b) = (input(pins.a)?, input(pins.b)?);
        Ok(RppalButtons { gpio, a, b, active_low: pins.active_low })
    }
}

impl Buttons for RppalButtons {
    fn next_edge(&mut self, timeout: Duration) -> Result<Option<ButtonEdge>, ButtonError> {
        let Some((pin, event)) = self.gpio.poll_interrupts(&[&self.a, &self.b], false, Some(timeout))? else {
            return Ok(None);
        };
        let button = if pin.pin() == self.a.pin() { Button::A } else { Button::B };
        let high = matches!(event.trigger, rppal::gpio::Trigger::RisingEdge);
        Ok(Some(ButtonEdge { button, pressed: high != self.active_low, at: event.timestamp }))
    }

    fn level(&self, button: Button) -> Result<bool, ButtonError> {
        let pin = match button {
            Button::A => &self.a,
            Button::B => &self.b,
        };
        let high = pin.read() == rppal::gpio::Level::High;
        Ok(high != self.active_low)
    }
}

/// The kernel's GPIO v1 request flags for bias (Linux 5.5+), which gpio-cdev 0.6 does not name.
const BIAS_PULL_UP: u32 = 1 << 5;
const BIAS_PULL_DOWN: u32 = 1 << 6;

/// Buttons through the GPIO character device (/dev/gpiochipN), for any Linux kernel.
#[derive(Debug)]
pub struct CdevButtons {
    chip: String,
    lines: [LineEventHandle; 2],
    active_low: bool,
    /// Whether the kernel took the bias request (else the board needs external resistors).
    pub bias_applied: bool,
}

impl CdevButtons {
    /// Requests edge events on both lines of `chip` (e.g. "/dev/gpiochip0"), with pull bias
    /// where the kernel allows; without it otherwise, saying so in the log.
    pub fn open(chip_path: &str, pins: ButtonPins) -> Result<Self, ButtonError> {
        let err = |source| ButtonError::Cdev { chip: chip_path.to_string(), source };
        let mut chip = Chip::new(chip_path).map_err(err)?;
        let bias = if pins.active_low { BIAS_PULL_UP } else { BIAS_PULL_DOWN };
        let request = |chip: &mut Chip, n: u32, flags: LineRequestFlags| {
            chip.get_line(n)?.events(flags, EventRequestFlags::BOTH_EDGES, "boltbox")
        };
        let with_bias = LineRequestFlags::INPUT | LineRequestFlags::from_bits_retain(bias);
        let (lines, bias_applied) =
            match (request(&mut chip, pins.a, with_bias.clone()), request(&mut chip, pins.b, with_bias)) {
                (Ok(a), Ok(b)) => ([a, b], true),
                (a, b) => {
                    // Kernels before 5.5 reject bias flags; the request must be retried without.
                    let reason = a.err().or(b.err()).map(|e| e.to_string()).unwrap_or_default();
                    tracing::warn!(
                        chip = chip_path,
                        %reason,
                        "GPIO bias not accepted by the kernel; buttons need external pull resistors"
                    );
                    let a = request(&mut chip, pins.a, LineRequestFlags::INPUT).map_err(err)?;
                    let b = request(&mut chip, pins.b, LineRequestFlags::INPUT).map_err(err)?;
                    ([a, b], false)
                }
            };
        Ok(CdevButtons { chip: chip_path.to_string(), lines, active_low: pins.active_low, bias_applied })
    }
}

impl Buttons for CdevButtons {
    fn next_edge(&mut self, timeout: Duration) -> Result<Option<ButtonEdge>, ButtonError> {
        let ready = {
            let mut fds =
                [PollFd::new(&self.lines[0], PollFlags::IN), PollFd::new(&self.lines[1], PollFlags::IN)];
            let timeout = Timespec::try_from(timeout).ok();
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(0) => return Ok(None),
                Ok(_) => fds.iter().position(|fd| !fd.revents().is_empty()),
                Err(rustix::io::Errno::INTR) => return Ok(None),
                Err(e) => return Err(ButtonError::Poll(e.into())),
            }
        };
        let Some(i) = ready else { return Ok(None) };
        let event = self.lines[i]
            .get_event()
            .map_err(|source| ButtonError::Cdev { chip: self.chip.clone(), source })?;
        let high = matches!(event.event_type(), EventType::RisingEdge);
        let button = if i == 0 { Button::A } else { Button::B };
        Ok(Some(ButtonEdge { button, pressed: high != self.active_low, at: event_time(event.timestamp()) }))
    }

    fn level(&self, button: Button) -> Result<bool, ButtonError> {
        let line = match button {
            Button::A => &self.lines[0],
            Button::B => &self.lines[1],
        };
        // 1 is high: the lines are requested without the kernel's ACTIVE_LOW flag.
        let value =
            line.get_value().map_err(|source| ButtonError::Cdev { chip: self.chip.clone(), source })?;
        Ok((value != 0) != self.active_low)
    }
}

/// Kernels before 5.7 stamp v1 events with CLOCK_REALTIME; such a stamp is far from
/// [`monotonic`] now, and then the time of reading is the best estimate.
fn event_time(kernel_ns: u64) -> Duration {
    let now = monotonic();
    let stamp = Duration::from_nanos(kernel_ns);
    if stamp <= now && now - stamp < Duration::from_secs(10) { stamp } else { now }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_time_moves_forward() {
        let a = monotonic();
        let b = monotonic();
        assert!(b >= a);
        assert!(a > Duration::ZERO);
    }

    #[test]
    fn kernel_stamps_on_another_clock_are_replaced_by_now() {
        let now = monotonic();
        let realtime_like = Duration::from_secs(1_700_000_000).as_nanos() as u64;
        assert!(event_time(realtime_like) >= now);
        let recent = now.saturating_sub(Duration::from_millis(5));
        assert_eq!(event_time(recent.as_nanos() as u64), recent);
    }

    #[test]
    fn a_missing_gpio_chip_is_an_error_not_a_panic() {
        let err = CdevButtons::open("/nonexistent/gpiochip9", ButtonPins::default()).expect_err("no chip");
        assert!(err.to_string().contains("/nonexistent/gpiochip9"), "{err}");
    }

    #[test]
    fn defaults_are_gpio17_and_gpio27_active_low() {
        assert_eq!(ButtonPins::default(), ButtonPins { a: 17, b: 27, active_low: true });
    }
}

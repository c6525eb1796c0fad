//! Board configuration and opening a board: backends chosen at run time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::buttons::{
    ButtonEdge, ButtonError, ButtonPins, Buttons, ButtonsHealth, CdevButtons, RppalButtons,
};
use crate::clock::{Clock, MonotonicClock};
use crate::display::{Backoff, Connect, Controller, Display, PanelSize, ResilientDisplay};
use crate::facts::BoardFacts;
use crate::gesture::GestureConfig;
use crate::link::{LinkError, link_path, open_link};
use crate::sim::{KeyHolds, SimButtons, SimDisplay};

/// The `[board]` settings. Every field has a default; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardConfig {
    /// `"auto"` (real hardware, whatever is there), `"sim"` (terminal) or `"link:PATH"`.
    pub board: String,
    /// The I2C bus device of the OLED.
    pub i2c_bus: PathBuf,
    /// The OLED's I2C address: 0x3c (most modules) or 0x3d.
    pub i2c_address: u8,
    /// The OLED's controller chip: `"ssd1306"` (most 0.96" modules) or `"sh1106"` (most 1.3"
    /// modules, often sold as SSD1306: a picture shifted by two columns with a stripe of noise
    /// at one edge, or garbled, means this one).
    pub controller: Controller,
    /// The OLED's size in pixels: `"128x64"` (most modules) or `"128x32"` (0.91" modules, whose
    /// screens are shown a band of lines at a time, board/README.md).
    pub display_size: String,
    /// GPIO (BCM) number of button A.
    pub button_a: u32,
    /// GPIO (BCM) number of button B.
    pub button_b: u32,
    /// Buttons connect the GPIO to ground (pull-up bias); false: to 3.3 V (pull-down).
    pub buttons_active_low: bool,
    /// The GPIO character device, for kernels without rppal's /dev/gpiomem.
    pub gpio_chip: PathBuf,
    /// Where the sim board saves PNG frames.
    pub png_dir: PathBuf,
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig {
            board: "auto".into(),
            i2c_bus: PathBuf::from("/dev/i2c-1"),
            i2c_address: 0x3C,
            controller: Controller::Ssd1306,
            display_size: "128x64".into(),
            button_a: 17,
            button_b: 27,
            buttons_active_low: true,
            gpio_chip: PathBuf::from("/dev/gpiochip0"),
            png_dir: PathBuf::from("."),
        }
    }
}

/// A setting that cannot work, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("board setting `{field}`: {reason}")]
pub struct ConfigError {
    /// The field's name as written in the config file.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Which kind of board a config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardKind {
    /// Real hardware: the OLED on I2C, buttons on GPIO.
    Auto,
    /// The terminal.
    Sim,
    /// A link at this path.
    Link(PathBuf),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { field, reason: reason.into() }
}

impl BoardConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<BoardKind, ConfigError> {
        let kind = match self.board.as_str() {
            "auto" => BoardKind::Auto,
            "sim" => BoardKind::Sim,
            other => match link_path(other) {
                Some(path) => BoardKind::Link(path),
                None => {
                    return Err(invalid(
                        "board",
                        format!("{other:?} is not \"auto\", \"sim\" or \"link:PATH\""),
                    ));
                }
            },
        };
        if !self.i2c_bus.is_absolute() {
            return Err(invalid("i2c_bus", format!("{} is not an absolute path", self.i2c_bus.display())));
        }
        if self.i2c_address != 0x3C && self.i2c_address != 0x3D {
            return Err(invalid("i2c_address", format!("{:#04x} is not 0x3c or 0x3d", self.i2c_address)));
        }
        if PanelSize::from_name(&self.display_size).is_none() {
            return Err(invalid(
                "display_size",
                format!("{:?} is not \"128x64\" or \"128x32\"", self.display_size),
            ));
        }
        for (field, pin) in [("button_a", self.button_a), ("button_b", self.button_b)] {
            if pin > 511 {
                return Err(invalid(field, format!("GPIO {pin} does not exist")));
            }
        }
        if self.button_a == self.button_b {
            return Err(invalid("button_b", format!("GPIO {} is button_a's too", self.button_b)));
        }
        if !self.gpio_chip.is_absolute() {
            return Err(invalid(
                "gpio_chip",
                format!("{} is not an absolute path", self.gpio_chip.display()),
            ));
        }
        Ok(kind)
    }

    /// The panel's size; a size [`BoardConfig::validate`] refuses is taken as 128x64.
    pub fn panel(&self) -> PanelSize {
        PanelSize::from_name(&self.display_size).unwrap_or_default()
    }

    fn pins(&self) -> ButtonPins {
        ButtonPins { a: self.button_a, b: self.button_b, active_low: self.buttons_active_low }
    }
}

/// Why a board could not be opened. Missing hardware is not one of them: that is a state.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The link could not be opened.
    #[error("link board: {0}")]
    Link(#[from] LinkError),
    /// The sim board's keyboard could not be set up.
    #[error("sim board: {0}")]
    Sim(#[from] ButtonError),
}

/// An open board.
pub struct Board {
    /// The display.
    pub display: Box<dyn Display>,
    /// The buttons.
    pub buttons: Box<dyn Buttons>,
    /// Facts about the machine.
    pub facts: BoardFacts,
    /// Which backends were chosen and why, for the log.
    pub chosen: String,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("facts", &self.facts)
            .field("chosen", &self.chosen)
            .finish_non_exhaustive()
    }
}

/// Opens the board the config asks for, with the default gesture thresholds.
pub fn open(config: &BoardConfig) -> Result<Board, OpenError> {
    open_with_gestures(config, &GestureConfig::default())
}

/// Opens the board the config asks for; `gestures` sets how long the sim board's keys hold.
pub fn open_with_gestures(config: &BoardConfig, gestures: &GestureConfig) -> Result<Board, OpenError> {
    open_probing(config, gestures, Path::new("/dev/gpiomem"))
}

fn facts() -> BoardFacts {
    BoardFacts::detect().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read board facts");
        BoardFacts {
            model: format!("unknown {} machine", std::env::consts::ARCH),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: 0,
        }
    })
}

/// [`open_with_gestures`] with the path that tells a Raspberry Pi kernel apart, for tests.
fn open_probing(config: &BoardConfig, gestures: &GestureConfig, gpiomem: &Path) -> Result<Board, OpenError> {
    let kind = config.validate()?;
    let board = match kind {
        BoardKind::Sim => {
            let display = SimDisplay::stdout().with_png_dir(config.png_dir.clone(), false);
            let buttons = SimButtons::stdin(KeyHolds::for_gestures(gestures))?
                .with_snapshot(display.snapshot_request());
            Board {
                display: Box::new(display),
                buttons: Box::new(buttons),
                facts: facts(),
                chosen: format!(
                    "sim: OLED drawn in the terminal, PNGs to {}; {}",
                    config.png_dir.display(),
                    crate::sim::KEY_HELP
                ),
            }
        }
        BoardKind::Link(path) => {
            let (display, buttons) = open_link(&path)?;
            let how = if std::fs::metadata(&path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_char_device()
            }) {
                "character device (serial or virtio console)"
            } else {
                "Unix socket, listening for the host"
            };
            Board {
                display: Box::new(display),
                buttons: Box::new(buttons),
                facts: facts(),
                chosen: format!("link: {} is a {how}; frames out, button edges in", path.display()),
            }
        }
        BoardKind::Auto => {
            let pi = gpiomem.exists();
            let (display, display_why) = auto_display(config, pi, Box::new(MonotonicClock));
            let (buttons, buttons_why) = auto_buttons(config, pi, gpiomem);
            Board {
                display: Box::new(display),
                buttons: Box::new(buttons),
                facts: facts(),
                chosen: format!("auto: {buttons_why}; {display_why}"),
            }
        }
    };
    tracing::info!(chosen = board.chosen, "board opened");
    Ok(board)
}

/// `N` of `/dev/i2c-N`, for rppal.
fn i2c_bus_number(bus: &Path) -> Option<u8> {
    bus.to_str()?.strip_prefix("/dev/i2c-")?.parse().ok()
}

fn auto_display(config: &BoardConfig, pi: bool, clock: Box<dyn Clock>) -> (ResilientDisplay, String) {
    let bus = config.i2c_bus.clone();
    let address = config.i2c_address;
    let chip = config.controller;
    let size = config.panel();
    let present = if bus.exists() { "" } else { " (missing: display absent, retrying)" };
    let (connect, why): (Connect, String) = match i2c_bus_number(&bus).filter(|_| pi) {
        Some(n) => (
            Box::new(move || crate::display::open_rppal(n, address, chip, size)),
            format!(
                "{}{present} → {} {} at {address:#04x} via rppal I2C",
                bus.display(),
                chip.name(),
                size.name()
            ),
        ),
        None => {
            let path = bus.clone();
            (
                Box::new(move || crate::display::open_i2cdev(&path, address, chip, size)),
                format!(
                    "{}{present} → {} {} at {address:#04x} via linux-embedded-hal I2cdev",
                    bus.display(),
                    chip.name(),
                    size.name()
                ),
            )
        }
    };
    let display = ResilientDisplay::new(connect, clock, Backoff::default());
    (display, why)
}

/// Opens buttons afresh.
pub type OpenButtons = Box<dyn FnMut() -> Result<Box<dyn Buttons>, ButtonError> + Send>;

fn auto_buttons(config: &BoardConfig, pi: bool, gpiomem: &Path) -> (RetryingButtons, String) {
    let pins = config.pins();
    let chip = config.gpio_chip.display().to_string();
    let polarity = if pins.active_low { "active low, pull-up" } else { "active high, pull-down" };
    let (open, why): (OpenButtons, String) = if pi {
        let fallback = chip.clone();
        (
            Box::new(move || match RppalButtons::open(pins) {
                Ok(b) => Ok(Box::new(b) as Box<dyn Buttons>),
                Err(e) => {
                    tracing::warn!(error = %e, chip = fallback, "rppal GPIO failed; trying the character device");
                    CdevButtons::open(&fallback, pins).map(|b| Box::new(b) as Box<dyn Buttons>)
                }
            }),
            format!(
                "{} present → rppal buttons A=GPIO{} B=GPIO{} ({polarity})",
                gpiomem.display(),
                pins.a,
                pins.b
            ),
        )
    } else {
        let path = chip.clone();
        (
            Box::new(move || CdevButtons::open(&path, pins).map(|b| Box::new(b) as Box<dyn Buttons>)),
            format!(
                "no {} → GPIO character device {chip} buttons A={} B={} ({polarity})",
                gpiomem.display(),
                pins.a,
                pins.b
            ),
        )
    };
    (RetryingButtons::new(open, Box::new(MonotonicClock), Backoff::default()), why)
}

/// Buttons that survive failing GPIO: an error is returned once per failed attempt to open
/// them (for an alert); between attempts, on a bounded exponential backoff, it waits out the
/// timeout like buttons nobody presses.
pub struct RetryingButtons {
    open: OpenButtons,
    clock: Box<dyn Clock>,
    backoff: Backoff,
    inner: Option<Box<dyn Buttons>>,
    failures: u32,
    next_retry: Duration,
    last_error: Option<String>,
}

impl std::fmt::Debug for RetryingButtons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryingButtons")
            .field("open", &self.inner.is_some())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl RetryingButtons {
    /// Opens with `open` on the first [`Buttons::next_edge`], and again after failures.
    pub fn new(open: OpenButtons, clock: Box<dyn Clock>, backoff: Backoff) -> Self {
        RetryingButtons {
            open,
            clock,
            backoff,
            inner: None,
            failures: 0,
            next_retry: Duration::ZERO,
            last_error: None,
        }
    }

    fn failed(&mut self, error: ButtonError) -> ButtonError {
        self.inner = None;
        self.last_error = Some(error.to_string());
        self.failures = self.failures.saturating_add(1);
        self.next_retry = self.clock.now() + self.backoff.delay(self.failures);
        error
    }
}

impl Buttons for RetryingButtons {
    fn next_edge(&mut self, timeout: Duration) -> Result<Option<ButtonEdge>, ButtonError> {
        if self.inner.is_none() {
            let now = self.clock.now();
            if now < self.next_retry {
                // Buttons that cannot be read are buttons nobody presses, until the next attempt.
                std::thread::sleep(timeout.min(self.next_retry - now));
                return Ok(None);
            }
            match (self.open)() {
                Ok(buttons) => {
                    if self.failures > 0 {
                        tracing::info!(after_failures = self.failures, "buttons are back");
                    }
                    self.failures = 0;
                    self.last_error = None;
                    self.inner = Some(buttons);
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
        let Some(inner) = self.inner.as_mut() else { return Ok(None) };
        match inner.next_edge(timeout) {
            Ok(edge) => Ok(edge),
            Err(e) => Err(self.failed(e)),
        }
    }

    fn level(&self, button: crate::buttons::Button) -> Result<bool, ButtonError> {
        // Buttons that cannot be read are buttons nobody presses, as in `next_edge`.
        self.inner.as_ref().map_or(Ok(false), |inner| inner.level(button))
    }

    fn health(&self) -> ButtonsHealth {
        match (&self.inner, &self.last_error) {
            (None, Some(reason)) => ButtonsHealth::Failing { reason: reason.clone() },
            _ => ButtonsHealth::Working,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buttons::Button;
    use crate::clock::ManualClock;
    use crate::display::DisplayHealth;
    use std::sync::{Arc, Mutex};

    fn parse(text: &str) -> Result<BoardConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_are_the_documented_wiring() {
        let config = parse("").expect("empty is all defaults");
        assert_eq!(config, BoardConfig::default());
        assert_eq!(config.validate(), Ok(BoardKind::Auto));
        assert_eq!(
            (config.i2c_bus.to_str(), config.i2c_address, config.button_a, config.button_b),
            (Some("/dev/i2c-1"), 0x3C, 17, 27)
        );
    }

    #[test]
    fn settings_parse_and_unknown_fields_are_refused() {
        let config =
            parse("board = \"link:/run/b.sock\"\ni2c_address = 0x3d\nbutton_a = 5\n").expect("parses");
        assert_eq!(config.validate(), Ok(BoardKind::Link(PathBuf::from("/run/b.sock"))));
        assert_eq!(config.i2c_address, 0x3D);
        let err = parse("i2c_adress = 0x3c").expect_err("typo");
        assert!(err.to_string().contains("i2c_adress"), "{err}");
    }

    #[test]
    fn validation_names_the_bad_field() {
        let cases: [(&str, &str); 7] = [
            ("board = \"hdmi\"", "board"),
            ("board = \"link:\"", "board"),
            ("i2c_bus = \"i2c-1\"", "i2c_bus"),
            ("i2c_address = 0x50", "i2c_address"),
            ("button_a = 900", "button_a"),
            ("button_a = 27", "button_b"),
            ("gpio_chip = \"gpiochip0\"", "gpio_chip"),
        ];
        for (text, field) in cases {
            let err = parse(text).expect("parses").validate().expect_err(text);
            assert_eq!(err.field, field, "{text}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn the_controller_and_the_panel_size_are_chosen() {
        let config = parse("controller = \"sh1106\"").expect("parses");
        assert_eq!(config.controller, Controller::Sh1106);
        assert_eq!(config.validate(), Ok(BoardKind::Auto));
        let (_, why) = auto_display(
            &BoardConfig { i2c_bus: PathBuf::from("/nonexistent/i2c-1"), ..config },
            false,
            Box::new(ManualClock::default()),
        );
        assert!(why.contains("sh1106 128x64 at 0x3c"), "{why}");
        let err = parse("controller = \"ssd1309\"").expect_err("unknown chip");
        assert!(err.to_string().contains("sh1106"), "names the choices: {err}");

        let small = parse("display_size = \"128x32\"").expect("parses");
        assert_eq!(small.validate(), Ok(BoardKind::Auto));
        assert_eq!(small.panel(), PanelSize::Size128x32);
        assert_eq!(BoardConfig::default().panel(), PanelSize::Size128x64);
        let (_, why) = auto_display(
            &BoardConfig { i2c_bus: PathBuf::from("/nonexistent/i2c-1"), ..small },
            false,
            Box::new(ManualClock::default()),
        );
        assert!(why.contains("ssd1306 128x32 at 0x3c"), "{why}");
        let err = parse("display_size = \"64x48\"").expect("parses").validate().expect_err("64x48");
        assert_eq!(err.field, "display_size");
        assert!(err.to_string().contains("\"64x48\" is not \"128x64\" or \"128x32\""), "{err}");
    }

    #[test]
    fn auto_without_hardware_gives_a_working_board_with_the_display_absent() {
        let config = BoardConfig {
            i2c_bus: PathBuf::from("/nonexistent/i2c-1"),
            gpio_chip: PathBuf::from("/nonexistent/gpiochip0"),
            ..BoardConfig::default()
        };
        let mut board = open_probing(&config, &GestureConfig::default(), Path::new("/nonexistent/gpiomem"))
            .expect("opens");
        assert!(board.chosen.starts_with("auto: "), "{}", board.chosen);
        assert!(board.chosen.contains("/nonexistent/gpiochip0"), "{}", board.chosen);
        assert!(board.chosen.contains("display absent, retrying"), "{}", board.chosen);
        assert!(board.chosen.contains("0x3c"), "{}", board.chosen);
        assert!(matches!(board.display.health(), DisplayHealth::Absent { .. }));
        board.display.show(&crate::Frame::blank(), "home").expect("an absent display is not an error");
        let err = board.buttons.next_edge(Duration::ZERO).expect_err("GPIO missing");
        assert!(err.to_string().contains("/nonexistent/gpiochip0"), "{err}");
        assert!(board.buttons.next_edge(Duration::ZERO).expect("waits out the backoff").is_none());
        assert!(board.facts.cores >= 1);
    }

    #[test]
    fn a_link_board_is_opened_on_its_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("link.sock");
        let config = BoardConfig { board: format!("link:{}", path.display()), ..BoardConfig::default() };
        let board = open(&config).expect("opens");
        assert!(board.chosen.contains("listening for the host"), "{}", board.chosen);
        crate::LinkClient::connect(&path).expect("a host can connect");
    }

    #[test]
    fn an_invalid_config_is_an_error_from_open() {
        let config = BoardConfig { board: "vga".into(), ..BoardConfig::default() };
        let err = open(&config).expect_err("invalid");
        assert!(matches!(err, OpenError::Config(ConfigError { field: "board", .. })), "{err}");
    }

    /// Buttons that fail to open until told otherwise, then give one edge.
    fn flaky(working: Arc<Mutex<bool>>) -> OpenButtons {
        struct One(Option<ButtonEdge>);
        impl Buttons for One {
            fn next_edge(&mut self, _: Duration) -> Result<Option<ButtonEdge>, ButtonError> {
                Ok(self.0.take())
            }
            fn level(&self, _: Button) -> Result<bool, ButtonError> {
                Ok(false)
            }
        }
        Box::new(move || {
            if *working.lock().expect("lock") {
                let edge = ButtonEdge { button: Button::B, pressed: true, at: Duration::from_secs(1) };
                Ok(Box::new(One(Some(edge))) as Box<dyn Buttons>)
            } else {
                Err(ButtonError::Keyboard("unplugged".into()))
            }
        })
    }

    #[test]
    fn failing_gpio_is_retried_with_backoff() {
        let working = Arc::new(Mutex::new(false));
        let clock = ManualClock::new(Duration::from_secs(50));
        let mut buttons =
            RetryingButtons::new(flaky(working.clone()), Box::new(clock.clone()), Backoff::default());
        assert_eq!(buttons.health(), ButtonsHealth::Working, "nothing tried yet");
        assert!(buttons.next_edge(Duration::ZERO).is_err(), "the first attempt fails");
        assert!(matches!(buttons.health(), ButtonsHealth::Failing { .. }), "a failure is a state");
        assert!(buttons.next_edge(Duration::ZERO).expect("no attempt due").is_none());
        assert!(matches!(buttons.health(), ButtonsHealth::Failing { .. }), "still failing while backing off");
        *working.lock().expect("lock") = true;
        assert!(buttons.next_edge(Duration::ZERO).expect("still backing off").is_none());
        clock.advance(Duration::from_millis(500));
        let edge = buttons.next_edge(Duration::ZERO).expect("reopened").expect("edge");
        assert_eq!(edge.button, Button::B);
        assert_eq!(buttons.health(), ButtonsHealth::Working, "recovered");
    }
}

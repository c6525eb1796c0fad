//! The SH1106 OLED controller (Sino Wealth SH1106 datasheet v2.3), which most 1.3" modules
//! carry even when sold as SSD1306, driven with its own commands over the same embedded-hal 1
//! I2C bus as the SSD1306 (the `sh1106` crate is built on embedded-hal 0.2).
//!
//! What differs from the SSD1306 (datasheet section "Commands"):
//! - 132x64 RAM; a 128-column module's glass shows columns 2..=129 ([`COLUMN_OFFSET`]).
//! - Page addressing only: no 0x20 (addressing mode) or 0x21/0x22 (windows). The column is set
//!   by its low nibble (0x00-0x0F) and high nibble (0x10-0x1F), the page by 0xB0-0xB7; a data
//!   write moves the column on and never changes the page.
//! - The panel's supply is the DC-DC converter (0xAD, 0x8B on), not the SSD1306 charge pump
//!   (0x8D).

use crate::display::{Display, DisplayError, PanelSize, controller_error};
use crate::frame::{Frame, WIDTH};

/// RAM column of the glass's first column on a 128-wide module: (132 - 128) / 2.
pub const COLUMN_OFFSET: usize = 2;

/// Control byte: every following byte is a command (Co = 0, D/C# = 0).
const COMMANDS: u8 = 0x00;
/// Control byte: every following byte is display data (Co = 0, D/C# = 1).
const DATA: u8 = 0x40;

/// Where [`INIT`] holds the multiplex ratio's argument and the common pads' argument, which a
/// 128x32 glass needs otherwise (32 rows, sequential pads: each COM pin its own row).
const MULTIPLEX_AT: usize = 5;
const PADS_AT: usize = 14;
const _: () = assert!(INIT[MULTIPLEX_AT - 1] == 0xA8 && INIT[PADS_AT - 1] == 0xDA);

/// The initialisation, with the values 128x64 modules need (datasheet "Commands" 1-21).
const INIT: [u8; 24] = [
    COMMANDS, //
    0xAE,     // display off while it is set up
    0xD5, 0x80, // display clock: divide ratio 1, oscillator +15%
    0xA8, 0x3F, // multiplex ratio 64
    0xD3, 0x00, // display offset 0
    0x40, // display start line 0
    0xAD, 0x8B, // DC-DC converter on: the panel's supply
    0xA1, // segment remap: column 131 to SEG0, upright as modules mount the glass
    0xC8, // common output scan from COM63 to COM0, upright likewise
    0xDA, 0x12, // common pads: alternative, as the glass is wired
    0x81, 0x80, // contrast: the reset value until the caller sets one
    0xD9, 0x22, // pre-charge and discharge: 2 display clocks each
    0xDB, 0x35, // VCOM deselect level 0.77 x Vref
    0xA4, // show RAM, not entire display on
    0xA6, // normal, not inverted
    0xAF, // display on
];

/// An SH1106 panel (128x64, or 128x32) on an I2C bus.
///
/// Only the pages that changed since the last frame are sent, and of each only the span of
/// columns that changed, which keeps I2C traffic small for mostly static screens.
pub struct Sh1106Display<I> {
    i2c: I,
    address: u8,
    /// Pages of the glass: 8 (64 rows) or 4 (32 rows).
    pages: usize,
    /// What the panel shows, when known; after an error it is not, and the next frame is sent whole.
    shown: Option<Frame>,
}

impl<I> std::fmt::Debug for Sh1106Display<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sh1106Display").field("address", &self.address).finish_non_exhaustive()
    }
}

impl<I: embedded_hal::i2c::I2c> Sh1106Display<I> {
    /// Initialises a 128x64 controller at `address` (0x3C or 0x3D) on `i2c` and turns it on.
    /// Memory is not cleared here; the first [`Display::show`] sends a whole frame.
    pub fn init(i2c: I, address: u8) -> Result<Self, DisplayError> {
        Self::init_size(i2c, address, PanelSize::Size128x64)
    }

    /// Initialises the controller of a `size` panel at `address` (0x3C or 0x3D) on `i2c`.
    pub fn init_size(i2c: I, address: u8, size: PanelSize) -> Result<Self, DisplayError> {
        if address != 0x3C && address != 0x3D {
            return Err(DisplayError::BadAddress(address));
        }
        let mut init = INIT;
        if size == PanelSize::Size128x32 {
            init[MULTIPLEX_AT] = 0x1F;
            init[PADS_AT] = 0x02;
        }
        let mut display = Sh1106Display { i2c, address, pages: size.rows() / 8, shown: None };
        display.write(&init)?;
        Ok(display)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), DisplayError> {
        self.i2c.write(self.address, bytes).map_err(|e| controller_error(self.address, e))
    }

    fn send(&mut self, frame: &Frame) -> Result<(), DisplayError> {
        let old = self.shown.take();
        let rows = frame.pages().chunks(WIDTH).take(self.pages);
        for (page, row) in (0u8..).zip(rows) {
            let before = old.as_ref().and_then(|o| o.pages().chunks(WIDTH).nth(usize::from(page)));
            let changed = |x: &usize| before.is_none_or(|b| b.get(*x) != row.get(*x));
            let Some(first) = (0..row.len()).find(changed) else { continue };
            let last = (0..row.len()).rev().find(changed).unwrap_or(first);
            let Some(bytes) = row.get(first..=last) else { continue };
            let column = first + COLUMN_OFFSET;
            // Page, then the column's low and high nibbles; the column moves on with each byte.
            let low = (column & 0x0F) as u8;
            let high = ((column >> 4) & 0x0F) as u8;
            self.write(&[COMMANDS, 0xB0 | (page & 0x07), low, 0x10 | high])?;
            let mut data = Vec::with_capacity(bytes.len() + 1);
            data.push(DATA);
            data.extend_from_slice(bytes);
            self.write(&data)?;
        }
        self.shown = Some(frame.clone());
        Ok(())
    }
}

impl<I: embedded_hal::i2c::I2c + Send> Display for Sh1106Display<I> {
    fn show(&mut self, frame: &Frame, _caption: &str) -> Result<(), DisplayError> {
        self.send(frame)
    }

    fn set_contrast(&mut self, contrast: u8) -> Result<(), DisplayError> {
        // Low contrast also gets a short pre-charge, as the SSD1306 path does.
        let precharge = if contrast < 0x10 { 0x11 } else { 0x22 };
        self.write(&[COMMANDS, 0x81, contrast, 0xD9, precharge])
    }

    fn set_on(&mut self, on: bool) -> Result<(), DisplayError> {
        self.write(&[COMMANDS, if on { 0xAF } else { 0xAE }])
    }
}

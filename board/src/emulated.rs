//! An emulated SSD1306 or SH1106 controller on an emulated I2C bus, for tests.
//!
//! [`EmulatedSsd1306`] implements [`embedded_hal::i2c::I2c`] and decodes what a driver writes as
//! the SSD1306 datasheet describes it: control bytes (Co and D/C# bits), the command set with
//! its arguments (which may continue into a later transaction, as on the chip), the three memory
//! addressing modes with their column and page windows and wrap-around, and data writes into its
//! 128x64 GDDRAM. [`EmulatedHandle::visible`] is what the panel would show.
//!
//! As an SH1106 ([`EmulatedSsd1306::with_controller`]) it follows the SH1106 datasheet instead:
//! 132-column RAM of which the glass shows columns 2..=129, page addressing only (0x20-0x22 are
//! no commands there, so their argument bytes are taken as commands of their own), the column
//! pointer stopping at 131 and never moving to the next page. A driver that uses horizontal
//! addressing or forgets the column offset shows a garbled or shifted picture.
//!
//! The glass is 128x64 or 128x32 ([`EmulatedSsd1306::with_panel`]), wired as modules wire it: a
//! 64-row glass for the alternative COM pin configuration (0xDA 0x12, the reset value), a
//! 32-row one for the sequential (0xDA 0x02) with 32 rows multiplexed. A driver that sets a
//! 32-row glass up for 64 rows shows every other row of memory, squeezed (and the other way
//! round, every other row dark): garbled either way.
//!
//! Clones of the bus and the [`EmulatedHandle`] share one controller, so a test can unplug and
//! replug it, make it NACK, or cut its power without an I2C error, while the driver owns the bus.
//!
//! Orientation: modules mount the panel so that segment remap on (0xA1) and reversed COM scan
//! (0xC8), which the `ssd1306` crate sends for `Rotate0`, show GDDRAM upright; the other
//! settings mirror the picture.

use std::sync::{Arc, Mutex, MutexGuard};

use embedded_hal::i2c::{ErrorKind, ErrorType, NoAcknowledgeSource, Operation};

use crate::display::{Controller as Chip, PanelSize};
use crate::frame::{FRAME_BYTES, Frame, HEIGHT, WIDTH};
use crate::sh1106::COLUMN_OFFSET;

const PAGES: u8 = (HEIGHT / 8) as u8;
const LAST_COLUMN: u8 = (WIDTH - 1) as u8;
/// The SH1106's RAM columns.
const SH1106_COLUMNS: usize = 132;
/// The seed of the first power-on's noise in memory.
const SEED: u32 = 0x5EED_1306;

/// The controller's memory addressing mode (command 0x20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressingMode {
    /// Column pointer moves first, within the column window, then the page pointer.
    Horizontal,
    /// Page pointer moves first, within the page window, then the column pointer.
    Vertical,
    /// Only the column pointer moves, wrapping within the page (the power-on mode).
    Page,
}

/// The error the emulated bus returns: a NACK, or a read (the SSD1306 cannot be read over I2C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("emulated I2C: {0:?}")]
pub struct EmulatedI2cError(pub ErrorKind);

impl embedded_hal::i2c::Error for EmulatedI2cError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

/// The controller's registers and memory.
#[derive(Debug, Clone)]
struct Controller {
    chip: Chip,
    /// The glass: 128x64 or 128x32.
    panel: PanelSize,
    /// COM pin configuration (0xDA bit 4): alternative, else sequential.
    com_alternative: bool,
    /// RAM columns: 128 (SSD1306) or 132 (SH1106).
    columns: usize,
    /// Page-major: page p's column c at `p * columns + c`.
    ram: Vec<u8>,
    mode: AddressingMode,
    column_window: (u8, u8),
    page_window: (u8, u8),
    column: u8,
    page: u8,
    /// Column the page-mode pointer returns to at the end of a page (commands 0x00-0x1F).
    page_mode_start: u8,
    display_on: bool,
    contrast: u8,
    inverted: bool,
    entire_on: bool,
    segment_remap: bool,
    com_reversed: bool,
    start_line: u8,
    display_offset: u8,
    multiplex: u8,
    charge_pump: bool,
    scrolling: bool,
    /// A multi-byte command waiting for its arguments: opcode, arguments so far, count needed.
    pending: Option<(u8, Vec<u8>, usize)>,
    /// Bytes the controller could not make sense of; a faithful driver causes none.
    errors: Vec<String>,
    data_bytes: usize,
}

impl Controller {
    /// The state after power-on reset (SSD1306 datasheet section 8.9: display off, charge pump
    /// off, page addressing, full windows, contrast 0x7F; SH1106 datasheet "Power on reset":
    /// display off, DC-DC on, column and page 0, contrast 0x80); RAM holds noise.
    fn power_on(chip: Chip, panel: PanelSize, seed: u32) -> Self {
        let columns = match chip {
            Chip::Ssd1306 => WIDTH,
            Chip::Sh1106 => SH1106_COLUMNS,
        };
        let mut ram = vec![0u8; columns * usize::from(PAGES)];
        let mut x = seed | 1;
        for byte in &mut ram {
            // xorshift: deterministic noise, so that a test sees whether memory was written.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *byte = x as u8;
        }
        Controller {
            chip,
            panel,
            com_alternative: true,
            columns,
            ram,
            mode: AddressingMode::Page,
            column_window: (0, LAST_COLUMN),
            page_window: (0, PAGES - 1),
            column: 0,
            page: 0,
            page_mode_start: 0,
            display_on: false,
            contrast: if chip == Chip::Sh1106 { 0x80 } else { 0x7F },
            inverted: false,
            entire_on: false,
            segment_remap: false,
            com_reversed: false,
            start_line: 0,
            display_offset: 0,
            multiplex: 63,
            charge_pump: chip == Chip::Sh1106,
            scrolling: false,
            pending: None,
            errors: Vec::new(),
            data_bytes: 0,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let control = bytes[i];
            i += 1;
            if control & 0x3F != 0 {
                self.errors.push(format!("control byte {control:#04x} has low bits set"));
            }
            let data = control & 0x40 != 0;
            if control & 0x80 != 0 {
                // Co = 1: one byte, then another control byte.
                if let Some(&byte) = bytes.get(i) {
                    self.byte(data, byte);
                    i += 1;
                }
            } else {
                // Co = 0: the rest of the transaction is all data or all commands.
                for &byte in &bytes[i..] {
                    self.byte(data, byte);
                }
                break;
            }
        }
    }

    fn byte(&mut self, data: bool, byte: u8) {
        if data {
            self.data(byte);
        } else {
            self.command_byte(byte);
        }
    }

    fn data(&mut self, byte: u8) {
        self.data_bytes += 1;
        let at = usize::from(self.page) * self.columns + usize::from(self.column);
        if let Some(cell) = self.ram.get_mut(at) {
            *cell = byte;
        }
        if self.chip == Chip::Sh1106 {
            // The column pointer stops at the last column; the page never changes.
            if usize::from(self.column) + 1 < self.columns {
                self.column += 1;
            }
            return;
        }
        let (c0, c1) = self.column_window;
        let (p0, p1) = self.page_window;
        match self.mode {
            AddressingMode::Horizontal => {
                if self.column >= c1 {
                    self.column = c0;
                    self.page = if self.page >= p1 { p0 } else { self.page + 1 };
                } else {
                    self.column += 1;
                }
            }
            AddressingMode::Vertical => {
                if self.page >= p1 {
                    self.page = p0;
                    self.column = if self.column >= c1 { c0 } else { self.column + 1 };
                } else {
                    self.page += 1;
                }
            }
            AddressingMode::Page => {
                self.column = if self.column >= LAST_COLUMN { self.page_mode_start } else { self.column + 1 };
            }
        }
    }

    fn command_byte(&mut self, byte: u8) {
        if let Some((opcode, mut args, needed)) = self.pending.take() {
            args.push(byte);
            if args.len() < needed {
                self.pending = Some((opcode, args, needed));
            } else if self.chip == Chip::Sh1106 {
                self.sh1106_command(opcode, &args);
            } else {
                self.command(opcode, &args);
            }
            return;
        }
        if self.chip == Chip::Sh1106 {
            let needed = match byte {
                0x81 | 0xA8 | 0xAD | 0xD3 | 0xD5 | 0xD9 | 0xDA | 0xDB => 1,
                _ => 0,
            };
            if needed == 0 {
                self.sh1106_command(byte, &[]);
            } else {
                self.pending = Some((byte, Vec::with_capacity(needed), needed));
            }
            return;
        }
        let needed = match byte {
            0x20 | 0x81 | 0x8D | 0xA8 | 0xAD | 0xD3 | 0xD5 | 0xD9 | 0xDA | 0xDB => 1,
            0x21 | 0x22 | 0xA3 => 2,
            0x29 | 0x2A => 5,
            0x26 | 0x27 => 6,
            _ => 0,
        };
        if needed == 0 {
            self.command(byte, &[]);
        } else {
            self.pending = Some((byte, Vec::with_capacity(needed), needed));
        }
    }

    fn command(&mut self, opcode: u8, args: &[u8]) {
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        match opcode {
            0x00..=0x0F if self.mode == AddressingMode::Page => {
                self.page_mode_start = (self.page_mode_start & 0xF0) | opcode;
                self.column = self.page_mode_start;
            }
            0x10..=0x17 if self.mode == AddressingMode::Page => {
                self.page_mode_start = (self.page_mode_start & 0x0F) | ((opcode & 0x07) << 4);
                self.column = self.page_mode_start;
            }
            // Column start commands are for page mode only; the chip ignores them otherwise.
            0x00..=0x1F => {}
            0x20 => match arg(0) & 0x03 {
                0 => self.mode = AddressingMode::Horizontal,
                1 => self.mode = AddressingMode::Vertical,
                2 => self.mode = AddressingMode::Page,
                _ => self.errors.push("addressing mode 0x03 is invalid".into()),
            },
            0x21 => {
                let (start, end) = (arg(0) & 0x7F, arg(1) & 0x7F);
                self.column_window = (start, end.max(start));
                self.column = start;
            }
            0x22 => {
                let (start, end) = (arg(0) & 0x07, arg(1) & 0x07);
                self.page_window = (start, end.max(start));
                self.page = start;
            }
            0x26 | 0x27 | 0x29 | 0x2A | 0xA3 => {}
            0x2E => self.scrolling = false,
            0x2F => self.scrolling = true,
            0x40..=0x7F => self.start_line = opcode & 0x3F,
            0x81 => self.contrast = arg(0),
            0x8D => self.charge_pump = arg(0) & 0x04 != 0,
            0xA0 | 0xA1 => self.segment_remap = opcode == 0xA1,
            0xA4 | 0xA5 => self.entire_on = opcode == 0xA5,
            0xA6 | 0xA7 => self.inverted = opcode == 0xA7,
            0xA8 => {
                let ratio = arg(0) & 0x3F;
                if ratio < 15 {
                    self.errors.push(format!("multiplex ratio {ratio} is invalid"));
                } else {
                    self.multiplex = ratio;
                }
            }
            0xAE | 0xAF => self.display_on = opcode == 0xAF,
            0xB0..=0xB7 => {
                if self.mode == AddressingMode::Page {
                    self.page = opcode & 0x07;
                }
            }
            0xC0 | 0xC8 => self.com_reversed = opcode == 0xC8,
            0xD3 => self.display_offset = arg(0) & 0x3F,
            0xDA => self.com_alternative = arg(0) & 0x10 != 0,
            // Clock, pre-charge, VCOMH, internal IREF: analog settings, no effect here.
            0xAD | 0xD5 | 0xD9 | 0xDB => {}
            0xE3 => {}
            _ => self.errors.push(format!("unknown command {opcode:#04x}")),
        }
    }

    /// The SH1106 command set (datasheet "Commands" 1-21). Anything else, such as the SSD1306's
    /// 0x20-0x22 and 0x8D, is no command: it is recorded and has no effect, and its argument
    /// bytes arrive as commands of their own, as on the chip.
    fn sh1106_command(&mut self, opcode: u8, args: &[u8]) {
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        match opcode {
            0x00..=0x0F => self.column = (self.column & 0xF0) | opcode,
            0x10..=0x1F => {
                let column = (self.column & 0x0F) | ((opcode & 0x0F) << 4);
                if usize::from(column) < self.columns {
                    self.column = column;
                } else {
                    self.errors.push(format!("column {column} is beyond the SH1106's 132"));
                }
            }
            0x30..=0x33 => {}
            0x40..=0x7F => self.start_line = opcode & 0x3F,
            0x81 => self.contrast = arg(0),
            0xA0 | 0xA1 => self.segment_remap = opcode == 0xA1,
            0xA4 | 0xA5 => self.entire_on = opcode == 0xA5,
            0xA6 | 0xA7 => self.inverted = opcode == 0xA7,
            0xA8 => self.multiplex = (arg(0) & 0x3F).max(15),
            0xAD => self.charge_pump = arg(0) & 0x01 != 0,
            0xAE | 0xAF => self.display_on = opcode == 0xAF,
            0xB0..=0xB7 => self.page = opcode & 0x07,
            0xC0..=0xCF => self.com_reversed = opcode & 0x08 != 0,
            0xD3 => self.display_offset = arg(0) & 0x3F,
            0xDA => self.com_alternative = arg(0) & 0x10 != 0,
            // Clock, pre-charge, VCOM: analog settings, no effect here.
            0xD5 | 0xD9 | 0xDB => {}
            0xE0 | 0xE3 | 0xEE => {}
            _ => self.errors.push(format!("{opcode:#04x} is no SH1106 command")),
        }
    }

    /// The RAM column that the glass's column `x` shows: the SSD1306's glass spans its 128
    /// columns, the SH1106's the middle 128 of its 132; segment remap mirrors either.
    fn ram_column(&self, x: usize) -> usize {
        let offset = if self.chip == Chip::Sh1106 { COLUMN_OFFSET } else { 0 };
        if self.segment_remap { offset + x } else { offset + WIDTH - 1 - x }
    }

    /// The glass's 128 columns of RAM, in page layout.
    fn glass(&self) -> Frame {
        let mut pages = [0u8; FRAME_BYTES];
        for (i, byte) in pages.iter_mut().enumerate() {
            let (page, x) = (i / WIDTH, i % WIDTH);
            let offset = if self.chip == Chip::Sh1106 { COLUMN_OFFSET } else { 0 };
            *byte = self.ram.get(page * self.columns + offset + x).copied().unwrap_or(0);
        }
        Frame::from_pages(pages)
    }

    fn visible(&self) -> Frame {
        let mut frame = Frame::blank();
        if !self.display_on {
            return frame;
        }
        let half = HEIGHT / 2;
        // The pads of the COM outputs in the alternative configuration: the first 32 outputs
        // on the even pads, the rest on the odd ones (SSD1306 datasheet, Table 10-3).
        let alternative_pad = |com: usize| if com < half { 2 * com } else { 2 * (com - half) + 1 };
        let ratio = usize::from(self.multiplex) + 1;
        let glass_rows = self.panel.rows();
        for y in 0..glass_rows {
            // Modules wire their glass so that the setup the drivers send (reversed COM scan,
            // 0xC8, with the glass's own rows multiplexed and pad configuration) shows memory
            // upright: a 64-row glass row y is on the pad of COM 63 - y in the alternative
            // configuration, a 32-row one on pad 31 - y in the sequential.
            let pad = if glass_rows == HEIGHT { alternative_pad(HEIGHT - 1 - y) } else { half - 1 - y };
            // Which COM output drives that pad in the configuration set (0xDA).
            let com = match (self.com_alternative, pad % 2) {
                (false, _) => pad,
                (true, 0) => pad / 2,
                (true, _) => half + pad / 2,
            };
            // Outputs past the multiplex ratio are not driven. The scan runs from COM0 (0xC0)
            // or from COM[ratio - 1] down (0xC8).
            let Some(scan) = ratio.checked_sub(com + 1).filter(|_| com < ratio) else { continue };
            let scan = if self.com_reversed { scan } else { com };
            let row = (scan + usize::from(self.start_line) + usize::from(self.display_offset)) % HEIGHT;
            for x in 0..WIDTH {
                let at = (row / 8) * self.columns + self.ram_column(x);
                let bit = self.ram.get(at).is_some_and(|byte| byte & (1 << (row % 8)) != 0);
                let on = self.entire_on || bit;
                frame.set(x, y, on != self.inverted);
            }
        }
        frame
    }
}

#[derive(Debug)]
struct Shared {
    controller: Controller,
    /// The device does not answer its address (unplugged or broken).
    nack: bool,
    transactions: usize,
    power_cycles: u32,
}

/// The emulated controller on its bus: give it to a driver as its I2C bus. Clones share it.
#[derive(Debug, Clone)]
pub struct EmulatedSsd1306 {
    address: u8,
    shared: Arc<Mutex<Shared>>,
}

/// A test's view of an [`EmulatedSsd1306`]: what it shows, and a plug to pull.
#[derive(Debug, Clone)]
pub struct EmulatedHandle {
    shared: Arc<Mutex<Shared>>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A test that panicked while holding the lock leaves consistent state behind.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EmulatedSsd1306 {
    /// A powered-on SSD1306 answering at `address` (0x3C or 0x3D on real modules).
    pub fn new(address: u8) -> Self {
        Self::with_controller(address, Chip::Ssd1306)
    }

    /// A powered-on `chip` with a 128x64 glass answering at `address`.
    pub fn with_controller(address: u8, chip: Chip) -> Self {
        Self::with_panel(address, chip, PanelSize::Size128x64)
    }

    /// A powered-on `chip` with a `panel` glass answering at `address`.
    pub fn with_panel(address: u8, chip: Chip, panel: PanelSize) -> Self {
        let controller = Controller::power_on(chip, panel, SEED);
        let shared = Shared { controller, nack: false, transactions: 0, power_cycles: 0 };
        EmulatedSsd1306 { address, shared: Arc::new(Mutex::new(shared)) }
    }

    /// The handle for inspecting and unplugging this controller.
    pub fn handle(&self) -> EmulatedHandle {
        EmulatedHandle { shared: Arc::clone(&self.shared) }
    }
}

impl ErrorType for EmulatedSsd1306 {
    type Error = EmulatedI2cError;
}

impl embedded_hal::i2c::I2c for EmulatedSsd1306 {
    fn transaction(&mut self, address: u8, operations: &mut [Operation<'_>]) -> Result<(), Self::Error> {
        let mut shared = lock(&self.shared);
        if shared.nack || address != self.address {
            return Err(EmulatedI2cError(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)));
        }
        shared.transactions += 1;
        // Adjacent writes form one transfer on the wire, so they are decoded as one stream.
        let mut stream = Vec::new();
        for op in operations.iter() {
            match op {
                Operation::Write(bytes) => stream.extend_from_slice(bytes),
                Operation::Read(_) => {
                    shared
                        .controller
                        .errors
                        .push("read attempted: the SSD1306 is write-only over I2C".into());
                    return Err(EmulatedI2cError(ErrorKind::Other));
                }
            }
        }
        shared.controller.write(&stream);
        Ok(())
    }
}

impl EmulatedHandle {
    /// What the panel shows: blank when off, all lit for 0xA5, inverted for 0xA7; rows beyond a
    /// 128x32 glass are dark.
    pub fn visible(&self) -> Frame {
        lock(&self.shared).controller.visible()
    }

    /// The display memory behind the glass's 128 columns as it is, in page layout, regardless
    /// of on/off and inversion (on an SH1106: RAM columns 2..=129).
    pub fn gddram(&self) -> Frame {
        lock(&self.shared).controller.glass()
    }

    /// Whether the panel is on (0xAF).
    pub fn is_on(&self) -> bool {
        lock(&self.shared).controller.display_on
    }

    /// The contrast register (0x81).
    pub fn contrast(&self) -> u8 {
        lock(&self.shared).controller.contrast
    }

    /// Whether the picture is inverted (0xA7).
    pub fn is_inverted(&self) -> bool {
        lock(&self.shared).controller.inverted
    }

    /// Whether the panel's supply is on: the SSD1306 charge pump (0x8D 0x14) or the SH1106 DC-DC
    /// converter (0xAD 0x8B); a real panel stays dark without it.
    pub fn charge_pump(&self) -> bool {
        lock(&self.shared).controller.charge_pump
    }

    /// The memory addressing mode.
    pub fn addressing_mode(&self) -> AddressingMode {
        lock(&self.shared).controller.mode
    }

    /// The column window (0x21) and page window (0x22), inclusive.
    pub fn windows(&self) -> ((u8, u8), (u8, u8)) {
        let shared = lock(&self.shared);
        (shared.controller.column_window, shared.controller.page_window)
    }

    /// Data bytes written into display memory since power-on.
    pub fn data_bytes(&self) -> usize {
        lock(&self.shared).controller.data_bytes
    }

    /// I2C transactions acknowledged since the emulator was made.
    pub fn transactions(&self) -> usize {
        lock(&self.shared).transactions
    }

    /// Bytes the controller could not decode (unknown commands, invalid arguments, reads).
    pub fn protocol_errors(&self) -> Vec<String> {
        lock(&self.shared).controller.errors.clone()
    }

    /// Makes the controller stop (or resume) acknowledging its address, keeping its state: a
    /// flaky bus or loose contact.
    pub fn set_nack(&self, nack: bool) {
        lock(&self.shared).nack = nack;
    }

    /// Pulls the plug: no acknowledgement, and power is lost.
    pub fn unplug(&self) {
        lock(&self.shared).nack = true;
    }

    /// Plugs it back in: the controller powers on afresh (reset registers, noise in memory).
    pub fn replug(&self) {
        let mut shared = lock(&self.shared);
        power_cycle(&mut shared);
        shared.nack = false;
    }

    /// The supply dips and comes back (a loose lead, a brownout) without the bus noticing: the
    /// controller restarts in its power-on state with new noise in memory, and acknowledges
    /// every write as before.
    pub fn lose_power(&self) {
        power_cycle(&mut lock(&self.shared));
    }
}

/// Powers the controller on afresh; each cycle leaves different noise in memory.
fn power_cycle(shared: &mut Shared) {
    shared.power_cycles = shared.power_cycles.wrapping_add(1);
    let seed = SEED ^ shared.power_cycles.wrapping_mul(0x9E37_79B9);
    shared.controller = Controller::power_on(shared.controller.chip, shared.controller.panel, seed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::I2c;

    fn powered(address: u8) -> (EmulatedSsd1306, EmulatedHandle) {
        let bus = EmulatedSsd1306::new(address);
        let handle = bus.handle();
        (bus, handle)
    }

    /// Commands as the `ssd1306` crate sends them: one transaction per command, control 0x00.
    fn cmd(bus: &mut EmulatedSsd1306, bytes: &[u8]) {
        let mut tx = vec![0x00];
        tx.extend_from_slice(bytes);
        bus.write(0x3C, &tx).expect("ack");
    }

    fn data(bus: &mut EmulatedSsd1306, bytes: &[u8]) {
        let mut tx = vec![0x40];
        tx.extend_from_slice(bytes);
        bus.write(0x3C, &tx).expect("ack");
    }

    fn upright_on(bus: &mut EmulatedSsd1306) {
        cmd(bus, &[0xA1]);
        cmd(bus, &[0xC8]);
        cmd(bus, &[0xAF]);
    }

    #[test]
    fn horizontal_mode_wraps_within_the_windows() {
        let (mut bus, handle) = powered(0x3C);
        upright_on(&mut bus);
        cmd(&mut bus, &[0x20, 0x00]);
        cmd(&mut bus, &[0x21, 10, 11]);
        cmd(&mut bus, &[0x22, 2, 3]);
        // 2 columns x 2 pages, then wrap back to the window's start.
        data(&mut bus, &[0x01, 0x02, 0x03, 0x04, 0xFF]);
        let ram = handle.gddram();
        let at = |page: usize, col: usize| ram.pages()[page * WIDTH + col];
        assert_eq!((at(2, 10), at(2, 11), at(3, 10), at(3, 11)), (0xFF, 0x02, 0x03, 0x04));
        assert_eq!(handle.addressing_mode(), AddressingMode::Horizontal);
        assert_eq!(handle.windows(), ((10, 11), (2, 3)));
        assert!(handle.protocol_errors().is_empty());
    }

    #[test]
    fn vertical_mode_moves_down_the_pages_first() {
        let (mut bus, handle) = powered(0x3C);
        cmd(&mut bus, &[0x20, 0x01]);
        cmd(&mut bus, &[0x21, 0, 127]);
        cmd(&mut bus, &[0x22, 0, 1]);
        data(&mut bus, &[0x11, 0x22, 0x33]);
        let ram = handle.gddram();
        assert_eq!(ram.pages()[0], 0x11);
        assert_eq!(ram.pages()[WIDTH], 0x22);
        assert_eq!(ram.pages()[1], 0x33);
    }

    #[test]
    fn page_mode_wraps_to_the_start_column_on_the_same_page() {
        let (mut bus, handle) = powered(0x3C);
        assert_eq!(handle.addressing_mode(), AddressingMode::Page, "power-on mode");
        cmd(&mut bus, &[0xB5]);
        cmd(&mut bus, &[0x0E, 0x17]); // column 0x7E
        data(&mut bus, &[0xA1, 0xA2, 0xA3]);
        let ram = handle.gddram();
        let page5 = &ram.pages()[5 * WIDTH..6 * WIDTH];
        assert_eq!((page5[126], page5[127]), (0xA3, 0xA2), "the third byte wrapped to column 126");
        assert_ne!(ram.pages()[6 * WIDTH + 126], 0xA3, "stays on page 5");
    }

    #[test]
    fn continuation_control_bytes_mix_commands_and_data() {
        let (mut bus, handle) = powered(0x3C);
        // Co=1 D/C=0: command 0xB3; Co=1 D/C=0: 0x00; Co=1 D/C=1: data 0x5A; Co=0 D/C=1: data.
        bus.write(0x3C, &[0x80, 0xB3, 0x80, 0x00, 0x80, 0x10, 0xC0, 0x5A, 0x40, 0x6B, 0x7C]).expect("ack");
        let ram = handle.gddram();
        assert_eq!(&ram.pages()[3 * WIDTH..3 * WIDTH + 3], &[0x5A, 0x6B, 0x7C]);
        assert!(handle.protocol_errors().is_empty());
    }

    #[test]
    fn command_arguments_may_arrive_in_a_later_transaction() {
        let (mut bus, handle) = powered(0x3C);
        cmd(&mut bus, &[0x81]);
        assert_eq!(handle.contrast(), 0x7F);
        cmd(&mut bus, &[0x10]);
        assert_eq!(handle.contrast(), 0x10);
    }

    #[test]
    fn on_off_inversion_and_entire_on_shape_what_is_visible() {
        let (mut bus, handle) = powered(0x3C);
        cmd(&mut bus, &[0x20, 0x00]);
        cmd(&mut bus, &[0x21, 0, 127]);
        cmd(&mut bus, &[0x22, 0, 7]);
        let mut pages = [0u8; FRAME_BYTES];
        pages[0] = 0x01;
        data(&mut bus, &pages);
        assert_eq!(handle.visible(), Frame::blank(), "off shows nothing");
        upright_on(&mut bus);
        let visible = handle.visible();
        assert!(visible.get(0, 0));
        assert_eq!(visible.lit_pixels(), 1);
        cmd(&mut bus, &[0xA7]);
        assert_eq!(handle.visible().lit_pixels(), (WIDTH * HEIGHT - 1) as u32);
        cmd(&mut bus, &[0xA6]);
        cmd(&mut bus, &[0xA5]);
        assert_eq!(handle.visible().lit_pixels(), (WIDTH * HEIGHT) as u32);
        cmd(&mut bus, &[0xA4]);
        cmd(&mut bus, &[0xA0]);
        cmd(&mut bus, &[0xC0]);
        assert!(handle.visible().get(WIDTH - 1, HEIGHT - 1), "unremapped settings mirror the picture");
    }

    /// A 32-row glass shows memory rows 0..32 only when both the multiplex ratio (32) and the
    /// COM pads (sequential) are set for it; either one left at the 64-row value shows another
    /// picture, as on a real module (the wrong half, or rows interleaved).
    #[test]
    fn a_32_row_glass_needs_both_its_multiplex_ratio_and_its_com_pads() {
        let mut picture = Frame::blank();
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                picture.set(x, y, (x * 7 + y * 13) % 5 == 0 || y == 3);
            }
        }
        let top = picture.moved_rows(0, HEIGHT / 2, 0);
        for (ratio, pads, right) in
            [(0x1F, 0x02, true), (0x3F, 0x02, false), (0x1F, 0x12, false), (0x3F, 0x12, false)]
        {
            let mut bus = EmulatedSsd1306::with_panel(0x3C, Chip::Ssd1306, PanelSize::Size128x32);
            let handle = bus.handle();
            upright_on(&mut bus);
            cmd(&mut bus, &[0xA8, ratio, 0xDA, pads, 0x20, 0x00, 0x21, 0, 127, 0x22, 0, 7]);
            data(&mut bus, picture.pages());
            let shown = handle.visible();
            assert_eq!(shown == top, right, "ratio {ratio:#04x}, pads {pads:#04x}\n{}", shown.to_ascii());
            assert!(
                (HEIGHT / 2..HEIGHT).all(|y| (0..WIDTH).all(|x| !shown.get(x, y))),
                "no glass past row 32"
            );
        }
    }

    #[test]
    fn nack_unplug_and_wrong_address() {
        let (mut bus, handle) = powered(0x3D);
        assert!(bus.write(0x3C, &[0x00, 0xAF]).is_err(), "wrong address");
        bus.write(0x3D, &[0x00, 0xAF]).expect("ack");
        handle.set_nack(true);
        let err = bus.write(0x3D, &[0x00, 0xAE]).expect_err("nack");
        assert_eq!(
            embedded_hal::i2c::Error::kind(&err),
            ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
        );
        assert!(handle.is_on(), "a NACKed command has no effect");
        handle.set_nack(false);
        handle.unplug();
        assert!(bus.write(0x3D, &[0x00, 0xAE]).is_err());
        handle.replug();
        assert!(!handle.is_on(), "power-on state after replug");
        let mut buf = [0u8; 1];
        assert!(bus.read(0x3D, &mut buf).is_err(), "write-only over I2C");
    }

    #[test]
    fn unknown_commands_are_recorded() {
        let (mut bus, handle) = powered(0x3C);
        cmd(&mut bus, &[0xFF]);
        bus.write(0x3C, &[0x01]).expect("ack");
        let errors = handle.protocol_errors();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("0xff"), "{errors:?}");
    }

    #[test]
    fn power_loss_restarts_in_the_power_on_state_and_still_acknowledges() {
        let (mut bus, handle) = powered(0x3C);
        upright_on(&mut bus);
        cmd(&mut bus, &[0x8D, 0x14]);
        cmd(&mut bus, &[0x20, 0x00]);
        cmd(&mut bus, &[0x21, 10, 20]);
        cmd(&mut bus, &[0x22, 1, 2]);
        cmd(&mut bus, &[0x81, 0x22]);
        data(&mut bus, &[0xFF; 8]);
        let memory = handle.gddram();
        handle.lose_power();
        assert!(!handle.is_on(), "display off");
        assert!(!handle.charge_pump(), "charge pump disabled");
        assert_eq!(handle.addressing_mode(), AddressingMode::Page);
        assert_eq!(handle.windows(), ((0, 127), (0, 7)));
        assert_eq!(handle.contrast(), 0x7F);
        assert_ne!(handle.gddram(), memory, "new noise in memory");
        bus.write(0x3C, &[0x00, 0xAF]).expect("no I2C error: it acknowledges as before");
        assert!(handle.is_on());
    }

    #[test]
    fn the_sh1106_has_page_addressing_only_and_a_two_column_offset() {
        let mut bus = EmulatedSsd1306::with_controller(0x3C, Chip::Sh1106);
        let handle = bus.handle();
        assert!(!handle.is_on(), "power-on: display off");
        assert!(handle.charge_pump(), "power-on: DC-DC converter on");
        assert_eq!(handle.contrast(), 0x80);
        upright_on(&mut bus);
        // Page 1, column 0 (low nibble 0x00, high nibble 0x10): the first two bytes are off-glass.
        cmd(&mut bus, &[0xB1, 0x00, 0x10]);
        let mut row = [0u8; 132];
        row[2] = 0x01;
        row[129] = 0x80;
        data(&mut bus, &row);
        let visible = handle.visible();
        let lit = |frame: &Frame, rows: std::ops::Range<usize>| {
            rows.flat_map(|y| (0..WIDTH).map(move |x| (x, y))).filter(|&(x, y)| frame.get(x, y)).count()
        };
        assert!(visible.get(0, 8), "RAM column 2 is the glass's first column");
        assert!(visible.get(127, 15), "RAM column 129 is its last");
        assert_eq!(lit(&visible, 8..16), 2, "page 1 (the rest is power-on noise)");
        // The column stops at 131 and the page stays: nothing reaches the glass or page 2.
        data(&mut bus, &[0xFF; 8]);
        assert_eq!(handle.visible(), visible);
        // Horizontal addressing is no command: 0x20 is refused, its argument 0x00 is a column.
        cmd(&mut bus, &[0x20, 0x00]);
        assert_eq!(handle.addressing_mode(), AddressingMode::Page);
        assert!(
            handle.protocol_errors().iter().any(|e| e.contains("0x20")),
            "{:?}",
            handle.protocol_errors()
        );
    }
}

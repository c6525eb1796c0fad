//! An emulated SSD1306 controller on an emulated I2C bus, for tests.
//!
//! [`EmulatedSsd1306`] implements [`embedded_hal::i2c::I2c`] and decodes what a driver writes as
//! the SSD1306 datasheet describes it: control bytes (Co and D/C# bits), the command set with
//! its arguments (which may continue into a later transaction, as on the chip), the three memory
//! addressing modes with their column and page windows and wrap-around, and data writes into its
//! 128x64 GDDRAM. [`EmulatedHandle::visible`] is what the panel would show.
//!
//! Clones of the bus and the [`EmulatedHandle`] share one controller, so a test can unplug and
//! replug it, or make it NACK, while the driver owns the bus.
//!
//! Orientation: modules mount the panel so that segment remap on (0xA1) and reversed COM scan
//! (0xC8), which the `ssd1306` crate sends for `Rotate0`, show GDDRAM upright; the other
//! settings mirror the picture.

use std::sync::{Arc, Mutex, MutexGuard};

use embedded_hal::i2c::{ErrorKind, ErrorType, NoAcknowledgeSource, Operation};

use crate::frame::{FRAME_BYTES, Frame, HEIGHT, WIDTH};

const PAGES: u8 = (HEIGHT / 8) as u8;
const LAST_COLUMN: u8 = (WIDTH - 1) as u8;

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
    ram: [u8; FRAME_BYTES],
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
    /// The state after power-on reset (datasheet section 8.9); GDDRAM holds noise.
    fn power_on(seed: u32) -> Self {
        let mut ram = [0u8; FRAME_BYTES];
        let mut x = seed | 1;
        for byte in &mut ram {
            // xorshift: deterministic noise, so that a test sees whether memory was written.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *byte = x as u8;
        }
        Controller {
            ram,
            mode: AddressingMode::Page,
            column_window: (0, LAST_COLUMN),
            page_window: (0, PAGES - 1),
            column: 0,
            page: 0,
            page_mode_start: 0,
            display_on: false,
            contrast: 0x7F,
            inverted: false,
            entire_on: false,
            segment_remap: false,
            com_reversed: false,
            start_line: 0,
            display_offset: 0,
            multiplex: 63,
            charge_pump: false,
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
        self.ram[usize::from(self.page) * WIDTH + usize::from(self.column)] = byte;
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
            } else {
                self.command(opcode, &args);
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
            // Clock, pre-charge, COM pins, VCOMH, internal IREF: analog settings, no effect here.
            0xAD | 0xD5 | 0xD9 | 0xDA | 0xDB => {}
            0xE3 => {}
            _ => self.errors.push(format!("unknown command {opcode:#04x}")),
        }
    }

    fn visible(&self) -> Frame {
        let mut frame = Frame::blank();
        if !self.display_on {
            return frame;
        }
        for y in 0..HEIGHT {
            let scan = if self.com_reversed { y } else { HEIGHT - 1 - y };
            let lit_row = scan <= usize::from(self.multiplex);
            let row = (scan + usize::from(self.start_line) + usize::from(self.display_offset)) % HEIGHT;
            for x in 0..WIDTH {
                let column = if self.segment_remap { x } else { WIDTH - 1 - x };
                let bit = self.ram[(row / 8) * WIDTH + column] & (1 << (row % 8)) != 0;
                let on = lit_row && (self.entire_on || bit);
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
    /// A powered-on controller answering at `address` (0x3C or 0x3D on real modules).
    pub fn new(address: u8) -> Self {
        let controller = Controller::power_on(0x5EED_1306);
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
    /// What the panel shows: blank when off, all lit for 0xA5, inverted for 0xA7.
    pub fn visible(&self) -> Frame {
        lock(&self.shared).controller.visible()
    }

    /// The display memory as it is, in page layout, regardless of on/off and inversion.
    pub fn gddram(&self) -> Frame {
        Frame::from_pages(lock(&self.shared).controller.ram)
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

    /// Whether the charge pump is enabled (0x8D 0x14); a real panel stays dark without it.
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
        shared.power_cycles += 1;
        shared.controller = Controller::power_on(0x5EED_1306 ^ shared.power_cycles.wrapping_mul(0x9E37_79B9));
        shared.nack = false;
    }
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
}

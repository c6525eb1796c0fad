//! A whole 128x64 monochrome frame: what every display backend takes.
//!
//! Screens draw into a [`Frame`] with embedded-graphics; backends send it to an SSD1306, a
//! terminal, a PNG file or a link. Pixels are stored in the SSD1306's own page layout (8
//! vertical pixels per byte, 8 pages of 128 columns) so that sending a frame is a copy.

use embedded_graphics::Pixel;
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::{DrawTarget, OriginDimensions, Size};

/// Width of the display in pixels.
pub const WIDTH: usize = 128;
/// Height of the display in pixels.
pub const HEIGHT: usize = 64;
/// Bytes in one frame (one bit per pixel).
pub const FRAME_BYTES: usize = WIDTH * HEIGHT / 8;

/// A 128x64 1-bit frame in SSD1306 page layout.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    pages: [u8; FRAME_BYTES],
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({} pixels on)", self.lit_pixels())
    }
}

impl Default for Frame {
    fn default() -> Self {
        Self::blank()
    }
}

impl Frame {
    /// An all-dark frame.
    pub fn blank() -> Self {
        Frame { pages: [0; FRAME_BYTES] }
    }

    /// A frame from bytes in SSD1306 page layout (byte `page * 128 + column`, bit `y % 8`).
    pub fn from_pages(pages: [u8; FRAME_BYTES]) -> Self {
        Frame { pages }
    }

    /// The bytes in SSD1306 page layout.
    pub fn pages(&self) -> &[u8; FRAME_BYTES] {
        &self.pages
    }

    /// Whether the pixel at (x, y) is lit; out-of-range pixels are dark.
    pub fn get(&self, x: usize, y: usize) -> bool {
        x < WIDTH && y < HEIGHT && self.pages[(y / 8) * WIDTH + x] & (1 << (y % 8)) != 0
    }

    /// Lights or darkens the pixel at (x, y); out-of-range pixels are ignored (clipped).
    pub fn set(&mut self, x: usize, y: usize, on: bool) {
        if x < WIDTH && y < HEIGHT {
            let byte = &mut self.pages[(y / 8) * WIDTH + x];
            let bit = 1 << (y % 8);
            if on {
                *byte |= bit;
            } else {
                *byte &= !bit;
            }
        }
    }

    /// How many pixels are lit.
    pub fn lit_pixels(&self) -> u32 {
        self.pages.iter().map(|b| b.count_ones()).sum()
    }

    /// The frame moved by (dx, dy) pixels, with what moves off the edge dropped. Used to shift
    /// an idle picture against OLED burn-in.
    pub fn shifted(&self, dx: i32, dy: i32) -> Frame {
        let mut out = Frame::blank();
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                if self.get(x, y) {
                    let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                    if nx >= 0 && ny >= 0 {
                        out.set(nx as usize, ny as usize, true);
                    }
                }
            }
        }
        out
    }

    /// `count` rows of the frame from row `from` on, shown from row `to` on, every other row
    /// dark: what a panel shorter than the frame shows of it (rows past 64 are dropped).
    pub fn moved_rows(&self, from: usize, count: usize, to: usize) -> Frame {
        let mut out = Frame::blank();
        for y in 0..count {
            for x in 0..WIDTH {
                out.set(x, to + y, self.get(x, from + y));
            }
        }
        out
    }

    /// Rows of the frame as text, `#` for lit and `.` for dark: for test failure messages.
    pub fn to_ascii(&self) -> String {
        let mut s = String::with_capacity((WIDTH + 1) * HEIGHT);
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                s.push(if self.get(x, y) { '#' } else { '.' });
            }
            s.push('\n');
        }
        s
    }
}

/// A PNG that could not be made or read as a frame.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    /// Encoding failed.
    #[error("encoding PNG: {0}")]
    Encode(#[from] png::EncodingError),
    /// Decoding failed (not a PNG, truncated, ...).
    #[error("decoding PNG: {0}")]
    Decode(#[from] png::DecodingError),
    /// The picture is not 128x64 or a whole multiple of it.
    #[error("PNG is {width}x{height}, not 128x64 or a whole multiple of it")]
    Size {
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
    /// The scale is outside 1..=16.
    #[error("scale {0} is outside 1..=16")]
    Scale(u32),
}

impl Frame {
    /// The frame as a PNG: 8-bit grayscale, lit pixels white (255) on black (0), each pixel
    /// `scale` x `scale` (1 for goldens; more for pictures people look at).
    pub fn to_png(&self, scale: u32) -> Result<Vec<u8>, PngError> {
        self.to_png_rows(scale, HEIGHT)
    }

    /// [`Frame::to_png`] of the first `rows` rows only (at most 64): what a 128x32 panel shows.
    pub fn to_png_rows(&self, scale: u32, rows: usize) -> Result<Vec<u8>, PngError> {
        if !(1..=16).contains(&scale) {
            return Err(PngError::Scale(scale));
        }
        let s = scale as usize;
        let (w, h) = (WIDTH * s, rows.clamp(1, HEIGHT) * s);
        let mut pixels = vec![0u8; w * h];
        for (i, p) in pixels.iter_mut().enumerate() {
            if self.get((i % w) / s, (i / w) / s) {
                *p = 255;
            }
        }
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w as u32, h as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()?;
        Ok(out)
    }

    /// A frame from a PNG of 128x64 pixels or a whole multiple (each cell's top-left pixel
    /// counts), any color type: a pixel is lit when its luminance is at least half.
    pub fn from_png(bytes: &[u8]) -> Result<Frame, PngError> {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info()?;
        let size = reader.output_buffer_size().unwrap_or(0);
        let mut buf = vec![0u8; size];
        let info = reader.next_frame(&mut buf)?;
        let (width, height) = (info.width, info.height);
        let scale = width as usize / WIDTH;
        if scale == 0 || width as usize != WIDTH * scale || height as usize != HEIGHT * scale {
            return Err(PngError::Size { width, height });
        }
        let channels = info.color_type.samples();
        let mut frame = Frame::blank();
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                let at = (y * scale) * info.line_size + (x * scale) * channels;
                let px = &buf[at..at + channels];
                let luma = match channels {
                    1 | 2 => u32::from(px[0]),
                    _ => (u32::from(px[0]) * 299 + u32::from(px[1]) * 587 + u32::from(px[2]) * 114) / 1000,
                };
                frame.set(x, y, luma >= 128);
            }
        }
        Ok(frame)
    }
}

impl OriginDimensions for Frame {
    fn size(&self) -> Size {
        Size::new(WIDTH as u32, HEIGHT as u32)
    }
}

impl DrawTarget for Frame {
    type Color = BinaryColor;
    type Error = std::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(point, color) in pixels {
            if point.x >= 0 && point.y >= 0 {
                self.set(point.x as usize, point.y as usize, color.is_on());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::prelude::*;
    use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};

    #[test]
    fn pixels_land_in_ssd1306_page_layout() {
        let mut frame = Frame::blank();
        frame.set(0, 0, true);
        frame.set(5, 9, true);
        frame.set(127, 63, true);
        assert_eq!(frame.pages()[0], 0b1);
        assert_eq!(frame.pages()[WIDTH + 5], 0b10);
        assert_eq!(frame.pages()[7 * WIDTH + 127], 0b1000_0000);
        assert_eq!(frame.lit_pixels(), 3);
        frame.set(5, 9, false);
        assert!(!frame.get(5, 9));
    }

    #[test]
    fn drawing_clips_at_the_edges() {
        let mut frame = Frame::blank();
        Rectangle::new(Point::new(120, 60), Size::new(20, 20))
            .into_styled(PrimitiveStyle::with_fill(BinaryColor::On))
            .draw(&mut frame)
            .expect("infallible");
        assert_eq!(frame.lit_pixels(), 8 * 4);
        assert!(frame.get(127, 63));
    }

    fn sample() -> Frame {
        let mut frame = Frame::blank();
        for i in 0..64 {
            frame.set(i * 2, i, true);
        }
        frame.set(127, 0, true);
        frame
    }

    #[test]
    fn png_round_trips_at_any_scale() {
        for scale in [1, 3] {
            let bytes = sample().to_png(scale).expect("encode");
            assert_eq!(&bytes[1..4], b"PNG");
            assert_eq!(Frame::from_png(&bytes).expect("decode"), sample(), "scale {scale}");
        }
        assert!(matches!(sample().to_png(0), Err(PngError::Scale(0))));
    }

    #[test]
    fn png_of_the_wrong_size_or_not_a_png_is_an_error() {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 100, 64);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().expect("header");
        writer.write_image_data(&vec![255u8; 100 * 64 * 3]).expect("data");
        writer.finish().expect("finish");
        let err = Frame::from_png(&out).expect_err("wrong size");
        assert!(err.to_string().contains("100x64"), "{err}");
        assert!(matches!(Frame::from_png(b"not a png"), Err(PngError::Decode(_))));
    }

    #[test]
    fn rgb_pngs_are_read_by_luminance() {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 128, 64);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().expect("header");
        let mut data = vec![0u8; 128 * 64 * 3];
        data[..3].copy_from_slice(&[255, 255, 255]);
        data[3..6].copy_from_slice(&[0, 0, 255]);
        writer.write_image_data(&data).expect("data");
        writer.finish().expect("finish");
        let frame = Frame::from_png(&out).expect("decode");
        assert!(frame.get(0, 0));
        assert!(!frame.get(1, 0), "pure blue is dark");
        assert_eq!(frame.lit_pixels(), 1);
    }

    #[test]
    fn shifting_moves_and_drops_pixels() {
        let mut frame = Frame::blank();
        frame.set(0, 0, true);
        frame.set(127, 63, true);
        let shifted = frame.shifted(1, 2);
        assert!(shifted.get(1, 2));
        assert_eq!(shifted.lit_pixels(), 1);
    }
}

//! Drawing helpers shared by the screens: a canvas that records every text line it draws (so a
//! screen's caption is exactly what it shows), fonts, alignment, number formatting and wrapping.

use boltbox_board::{Frame, HEIGHT, WIDTH};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle, MonoTextStyleBuilder, ascii};
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::{Drawable, Point, Primitive, Size};
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};

use super::Rendered;
use super::panel::Band;

/// Header and small print: 10 px tall, 21 characters across. Never used for a headline value.
pub(crate) const SMALL: &MonoFont<'static> = &ascii::FONT_6X10;
/// Body text: 13 px tall, 21 characters across, bold so that it stays legible at arm's length.
pub(crate) const BODY: &MonoFont<'static> = &ascii::FONT_6X13_BOLD;
/// Values that matter but are not the headline: 13 px tall, 16 characters across.
pub(crate) const MEDIUM: &MonoFont<'static> = &ascii::FONT_8X13_BOLD;
/// Headline values: 20 px tall, 12 characters across.
pub(crate) const BIG: &MonoFont<'static> = &ascii::FONT_10X20;

/// The screen is 128 px wide; the cast is of a small constant.
pub(crate) const W: i32 = WIDTH as i32;
/// The screen is 64 px tall.
pub(crate) const H: i32 = HEIGHT as i32;
/// Blank columns kept at the left and right edges.
const MARGIN: i32 = 1;

/// Horizontal placement of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Center,
    Right,
}

/// Width in pixels of `text` in `font`.
pub(crate) fn text_width(text: &str, font: &MonoFont<'_>) -> i32 {
    let n = text.chars().count() as i32;
    if n == 0 {
        return 0;
    }
    n * font.character_size.width as i32 + (n - 1) * font.character_spacing as i32
}

/// The first font of `fonts` (largest first) in which `text` fits `width`, else the last.
pub(crate) fn fit<'f>(text: &str, width: i32, fonts: &[&'f MonoFont<'f>]) -> &'f MonoFont<'f> {
    fonts.iter().copied().find(|f| text_width(text, f) <= width).unwrap_or(fonts[fonts.len() - 1])
}

/// A frame being drawn plus the caption lines of what was drawn on it, and the rows each thing
/// drawn covers (so that a 128x32 panel can be shown whole things only, see [`super::panel`]).
pub(crate) struct Canvas {
    frame: Frame,
    lines: Vec<String>,
    bands: Vec<Band>,
}

impl Canvas {
    /// A blank canvas for the screen called `name` (the caption's first line).
    pub(crate) fn new(name: &str) -> Self {
        Canvas { frame: Frame::blank(), lines: vec![name.to_string()], bands: Vec::new() }
    }

    fn style(font: &'static MonoFont<'static>, inverted: bool) -> MonoTextStyle<'static, BinaryColor> {
        let (fg, bg) =
            if inverted { (BinaryColor::Off, BinaryColor::On) } else { (BinaryColor::On, BinaryColor::Off) };
        MonoTextStyleBuilder::new().font(font).text_color(fg).background_color(bg).build()
    }

    /// Records the rows that the glyphs of `text` ink, not the font's whole cell: a font's cell
    /// has blank rows above and below, which screens let the next line's cell overlap.
    fn covers_ink(&mut self, text: &str, font: &'static MonoFont<'static>, x: i32, y: i32) {
        let mut ink = Frame::blank();
        let style = MonoTextStyleBuilder::new().font(font).text_color(BinaryColor::On).build();
        match Text::with_baseline(text, Point::new(x, y), style, Baseline::Top).draw(&mut ink) {
            Ok(_) => {}
            Err(never) => match never {},
        }
        let inked = |row: &usize| (0..WIDTH).any(|col| ink.get(col, *row));
        let cell = y.max(0) as usize..(y + font.character_size.height as i32).clamp(0, H) as usize;
        if let (Some(top), Some(bottom)) = (cell.clone().find(inked), cell.rev().find(inked)) {
            self.covers(top as i32, (bottom - top + 1) as i32);
        }
    }

    /// Records that rows `y..y + h` have something drawn on them.
    fn covers(&mut self, y: i32, h: i32) {
        if let Some(band) = Band::of_rows(y, h) {
            self.bands.push(band);
        }
    }

    fn put(&mut self, text: &str, font: &'static MonoFont<'static>, x: i32, y: i32, inverted: bool) {
        if inverted {
            self.covers(y, font.character_size.height as i32);
        } else {
            self.covers_ink(text, font, x, y);
        }
        let text = Text::with_baseline(text, Point::new(x, y), Self::style(font, inverted), Baseline::Top);
        // Drawing on a Frame cannot fail (its error type is Infallible).
        match text.draw(&mut self.frame) {
            Ok(_) => {}
            Err(never) => match never {},
        }
    }

    /// Draws `text` with its top at `y`, aligned within the whole width, and records it.
    pub(crate) fn text(&mut self, text: &str, font: &'static MonoFont<'static>, y: i32, align: Align) {
        self.text_in(text, font, 0, W, y, align);
    }

    /// Draws `text` aligned within the columns `x0..x1` and records it.
    pub(crate) fn text_in(
        &mut self,
        text: &str,
        font: &'static MonoFont<'static>,
        x0: i32,
        x1: i32,
        y: i32,
        align: Align,
    ) {
        let w = text_width(text, font);
        // One pixel of margin at the sides: bold glyphs fill their whole cell, and a stroke on
        // the panel's last column reads as cut off.
        let x = match align {
            Align::Left => x0 + MARGIN,
            Align::Center => x0 + (x1 - x0 - w) / 2,
            Align::Right => x1 - w - MARGIN,
        };
        self.put(text, font, x, y, false);
        self.lines.push(text.to_string());
    }

    /// Draws `text` with its left edge at `x` without recording it (for secrets: seed words).
    pub(crate) fn text_in_unrecorded(
        &mut self,
        text: &str,
        font: &'static MonoFont<'static>,
        x: i32,
        y: i32,
    ) {
        self.put(text, font, x, y, false);
    }

    /// A label on the left and its value on the right of one line, recorded as one caption line.
    /// The value gets the largest of `fonts` that leaves room for the label; both share a bottom
    /// line so that mixed sizes read as one row.
    pub(crate) fn row(
        &mut self,
        label: &str,
        value: &str,
        y: i32,
        height: i32,
        fonts: &[&'static MonoFont<'static>],
    ) {
        let label_font = BODY;
        let room = W - text_width(label, label_font) - 4 - 2 * MARGIN;
        let font = fit(value, room, fonts);
        let bottom = y + height;
        self.put(label, label_font, MARGIN, bottom - label_font.character_size.height as i32, false);
        let x = W - MARGIN - text_width(value, font);
        self.put(value, font, x, bottom - font.character_size.height as i32, false);
        self.lines.push(format!("{label} {value}"));
    }

    /// The screen's title bar: white on black text inverted over a full-width bar, with an
    /// optional right-hand note (page number, alert count).
    pub(crate) fn header(&mut self, title: &str, note: &str) {
        self.header_in(title, note, W);
    }

    /// [`Canvas::header`] over the columns `0..width` only (beside a QR code).
    pub(crate) fn header_in(&mut self, title: &str, note: &str, width: i32) {
        self.fill(0, 0, width, 11);
        self.put(title, SMALL, 2, 1, true);
        if !note.is_empty() {
            self.put(note, SMALL, width - 2 - text_width(note, SMALL), 1, true);
            self.lines.push(format!("{title} {note}"));
        } else {
            self.lines.push(title.to_string());
        }
    }

    /// A filled rectangle.
    pub(crate) fn fill(&mut self, x: i32, y: i32, w: i32, h: i32) {
        self.rect(x, y, w, h, PrimitiveStyle::with_fill(BinaryColor::On));
    }

    fn rect(&mut self, x: i32, y: i32, w: i32, h: i32, style: PrimitiveStyle<BinaryColor>) {
        if w <= 0 || h <= 0 {
            return;
        }
        self.covers(y, h);
        let r = Rectangle::new(Point::new(x, y), Size::new(w as u32, h as u32)).into_styled(style);
        match r.draw(&mut self.frame) {
            Ok(_) => {}
            Err(never) => match never {},
        }
    }

    /// A horizontal bar filled to `fraction` (clamped to 0..=1), recorded as `caption`.
    pub(crate) fn bar(&mut self, x: i32, y: i32, w: i32, h: i32, fraction: f64, caption: &str) {
        self.rect(x, y, w, h, PrimitiveStyle::with_stroke(BinaryColor::On, 1));
        let inner = w - 4;
        let filled = (fraction.clamp(0.0, 1.0) * f64::from(inner)).round() as i32;
        self.fill(x + 2, y + 2, filled, h - 4);
        self.lines.push(caption.to_string());
    }

    /// Sets one pixel.
    pub(crate) fn pixel(&mut self, x: i32, y: i32, on: bool) {
        if x >= 0 && y >= 0 {
            self.covers(y, 1);
            self.frame.set(x as usize, y as usize, on);
        }
    }

    /// Adds a caption line for something drawn without text (a QR code).
    pub(crate) fn note(&mut self, line: String) {
        self.lines.push(line);
    }

    /// The finished screen.
    pub(crate) fn done(self) -> Rendered {
        Rendered { frame: self.frame, caption: self.lines.join("\n"), bands: Band::merged(self.bands) }
    }
}

/// `n` with a comma every three digits: 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Millisatoshis as satoshis: whole sats with separators, with the millisats as three decimals
/// only for amounts under 1,000 sat that are not whole (small routing fees are mostly
/// fractions of a sat, and "0" would hide them).
pub fn msat_as_sats(msat: u64) -> String {
    let (sats, rest) = (msat / 1000, msat % 1000);
    if sats < 1000 && rest != 0 { format!("{sats}.{rest:03}") } else { thousands(sats) }
}

/// A duration as the one or two largest units a glance needs: "45 s", "12 min", "3 h 5 min",
/// "2 d 4 h".
pub fn short_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 if (s % 3600) / 60 == 0 => format!("{} h", s / 3600),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ if (s % 86_400) / 3600 == 0 => format!("{} d", s / 86_400),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A byte count in the largest unit below 1024 with one decimal under 10: "812 KB", "3.4 MB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit > 0 && value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// Word-wraps `text` to lines of at most `width` characters; words longer than a line are cut.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..width).collect());
        }
        let word: String = word.into_iter().collect();
        if word.is_empty() {
            continue;
        }
        if line.is_empty() {
            line = word;
        } else if line.chars().count() + 1 + word.chars().count() <= width {
            line.push(' ');
            line.push_str(&word);
        } else {
            lines.push(std::mem::replace(&mut line, word));
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `text` wrapped to `width` characters and at most `max_lines` lines; when it is longer, the last
/// line ends in "..." so the user knows there is more (in the log).
pub fn wrap_lines(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let mut lines = wrap(text, width);
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(last) = lines.last_mut() {
            let keep = width.saturating_sub(4);
            if last.chars().count() > keep {
                let cut: String = last.chars().take(keep).collect();
                // Break at the last whole word when the cut falls inside one.
                let whole_word = last.chars().nth(keep) == Some(' ');
                *last = match cut.rsplit_once(' ') {
                    Some((words, _)) if !whole_word => words.to_string(),
                    _ => cut.trim_end().to_string(),
                };
            }
            last.push_str(" ...");
        }
    }
    lines
}

/// `text` cut to `max` characters, with a trailing "~" when something was cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('~');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn msat_shows_fractions_only_for_small_amounts() {
        assert_eq!(msat_as_sats(0), "0");
        assert_eq!(msat_as_sats(1_500), "1.500");
        assert_eq!(msat_as_sats(999_999), "999.999");
        assert_eq!(msat_as_sats(2_000), "2");
        assert_eq!(msat_as_sats(1_234_567_890), "1,234,567");
    }

    #[test]
    fn durations_keep_the_two_largest_units() {
        assert_eq!(short_duration(Duration::from_secs(45)), "45 s");
        assert_eq!(short_duration(Duration::from_secs(720)), "12 min");
        assert_eq!(short_duration(Duration::from_secs(3 * 3600)), "3 h");
        assert_eq!(short_duration(Duration::from_secs(3 * 3600 + 300)), "3 h 5 min");
        assert_eq!(short_duration(Duration::from_secs(2 * 86_400)), "2 d");
        assert_eq!(short_duration(Duration::from_secs(2 * 86_400 + 4 * 3600)), "2 d 4 h");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 400 * 1024), "3.4 MB");
        assert_eq!(bytes(812 * 1024), "812 KB");
    }

    #[test]
    fn wrap_breaks_at_words_and_cuts_long_ones() {
        assert_eq!(wrap("must be one of bitcoin, signet", 12), vec!["must be one", "of bitcoin,", "signet"]);
        assert_eq!(wrap("abcdefghij xy", 4), vec!["abcd", "efgh", "ij", "xy"]);
        assert!(wrap("   ", 5).is_empty());
    }

    #[test]
    fn wrap_lines_marks_what_did_not_fit() {
        assert_eq!(wrap_lines("one two three", 9, 2), vec!["one two", "three"]);
        assert_eq!(wrap_lines("one two three four", 9, 1), vec!["one ..."]);
        assert_eq!(wrap_lines("aaaa bbbbbbbbb c", 9, 2), vec!["aaaa", "bbbbb ..."]);
        assert_eq!(wrap_lines("ab cd efgh ij", 9, 1), vec!["ab cd ..."]);
    }

    #[test]
    fn clip_marks_a_cut() {
        assert_eq!(clip("boltbox", 10), "boltbox");
        assert_eq!(clip("a-very-long-alias", 8), "a-very-~");
    }

    #[test]
    fn fit_picks_the_largest_font_that_fits() {
        assert_eq!(text_width("abc", BIG), 30);
        let f = fit("1,234,567,890", 110, &[BIG, MEDIUM, SMALL]);
        assert_eq!(f.character_size, MEDIUM.character_size);
    }
}

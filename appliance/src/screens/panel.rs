//! A screen on a 128x32 panel (`[board] display_size = "128x32"`, 0.91" modules): every screen
//! is laid out for 128x64, and a 32-row glass shows it a band of whole lines at a time.
//!
//! A screen records the rows each thing it draws covers ([`Rendered::bands`]). [`parts`] cuts
//! a screen into parts of at most 32 rows, each made of whole bands (a text line, a label with
//! its value, the title bar, a QR code): nothing is ever cut through, so no line is shown half
//! and no QR code is cropped. [`Pager`] shows the parts in turn, [`PART_EVERY`] each; a screen
//! that fits is shown as drawn. The screens with a QR code draw it for the panel they are
//! given ([`crate::screens::network_qr`], [`crate::screens::funding`]): one pixel per module
//! on 32 rows, or a sentence saying where to get it instead when it does not fit.

use std::time::Duration;

use boltbox_board::{Frame, HEIGHT, PanelSize};

use super::Rendered;

/// How long a 128x32 panel shows each part of a screen that does not fit it.
pub const PART_EVERY: Duration = Duration::from_secs(3);

/// Rows `top..bottom` of a screen that something is drawn on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Band {
    /// The first row.
    pub top: u8,
    /// The row after the last.
    pub bottom: u8,
}

impl Band {
    /// Rows `y..y + h` clipped to the frame, or `None` if none of them is on it.
    pub(crate) fn of_rows(y: i32, h: i32) -> Option<Band> {
        let top = y.clamp(0, HEIGHT as i32);
        let bottom = y.saturating_add(h).clamp(0, HEIGHT as i32);
        (top < bottom).then_some(Band { top: top as u8, bottom: bottom as u8 })
    }

    /// Rows in the band.
    pub fn rows(self) -> usize {
        usize::from(self.bottom.saturating_sub(self.top))
    }

    /// The bands sorted, with those that share a row merged into one: things drawn side by
    /// side (a label and its value, a QR code and its modules) are one band.
    pub(crate) fn merged(mut bands: Vec<Band>) -> Vec<Band> {
        bands.sort_unstable();
        let mut out: Vec<Band> = Vec::with_capacity(bands.len());
        for band in bands {
            match out.last_mut() {
                Some(last) if band.top < last.bottom => last.bottom = last.bottom.max(band.bottom),
                _ => out.push(band),
            }
        }
        out
    }
}

/// The parts of a screen with these `bands` on a panel of `rows` rows, top to bottom, each
/// the rows of whole bands. One part (all rows) when everything fits. A band taller than the
/// panel (none of the screens has one: the tests check every sample) is a part of its own,
/// cut at the panel's height.
pub fn parts(bands: &[Band], rows: usize) -> Vec<Band> {
    let (Some(first), Some(last)) = (bands.first(), bands.last()) else {
        return vec![Band { top: 0, bottom: 0 }];
    };
    if usize::from(last.bottom) <= rows {
        return vec![Band { top: 0, bottom: last.bottom }];
    }
    let mut out: Vec<Band> = Vec::new();
    let mut part = *first;
    for band in &bands[1..] {
        if usize::from(band.bottom).saturating_sub(usize::from(part.top)) <= rows {
            part.bottom = band.bottom;
        } else {
            out.push(part);
            part = *band;
        }
    }
    out.push(part);
    out
}

/// The frame a panel of `rows` rows shows for `part` of `frame`: the part's rows moved up to
/// the top, or centred when it is shorter than the panel and not the screen's top (a part that
/// starts at row 0 stays where it was drawn, so that a screen that fits is shown as drawn).
/// Rows outside the part are dark.
pub fn part_frame(frame: &Frame, part: Band, rows: usize) -> Frame {
    frame.moved_rows(usize::from(part.top), part.rows().min(rows), part_offset(part, rows))
}

/// The row of a panel of `rows` rows that `part`'s first row is shown at.
fn part_offset(part: Band, rows: usize) -> usize {
    if part.top == 0 { 0 } else { rows.saturating_sub(part.rows()) / 2 }
}

/// Shows screens on a panel: as drawn on 128x64, a part at a time on 128x32.
#[derive(Debug, Clone)]
pub struct Pager {
    rows: usize,
    /// The screen shown (its caption's first line) and since when.
    showing: Option<(String, Duration)>,
}

impl Pager {
    /// A pager for a `panel`.
    pub fn new(panel: PanelSize) -> Pager {
        Pager { rows: panel.rows(), showing: None }
    }

    /// What the panel shows of `screen` at `now` (any monotonic time base): the screen itself
    /// if it fits, else the part due at `now` with "part i/n" added to its caption. A new
    /// screen (another name), or any screen after a button press (`pressed`: the next seed
    /// page or channel has the same name), starts at its first part.
    pub fn show(&mut self, screen: Rendered, now: Duration, pressed: bool) -> Rendered {
        if self.rows >= HEIGHT {
            return screen;
        }
        let name = screen.caption.lines().next().unwrap_or_default();
        let since = match &self.showing {
            Some((shown, since)) if shown == name && !pressed => *since,
            _ => {
                self.showing = Some((name.to_string(), now));
                now
            }
        };
        let parts = parts(&screen.bands, self.rows);
        let every = PART_EVERY.as_millis().max(1);
        let step = now.saturating_sub(since).as_millis() / every;
        let index = usize::try_from(step % parts.len().max(1) as u128).unwrap_or(0);
        let Some(&part) = parts.get(index) else { return screen };
        let frame = part_frame(&screen.frame, part, self.rows);
        let caption = if parts.len() > 1 {
            format!("{}\npart {}/{}", screen.caption, index + 1, parts.len())
        } else {
            screen.caption
        };
        let shift = part_offset(part, self.rows) as i32 - i32::from(part.top);
        let bands = screen
            .bands
            .iter()
            .filter(|b| part.top <= b.top && b.bottom <= part.bottom)
            .filter_map(|b| Band::of_rows(i32::from(b.top) + shift, b.rows() as i32))
            .collect();
        Rendered { frame, caption, bands }
    }
}

#[cfg(test)]
mod tests {
    use boltbox_board::WIDTH;

    use super::*;
    use crate::screens::samples;

    const ROWS: usize = 32;

    fn band(top: u8, bottom: u8) -> Band {
        Band { top, bottom }
    }

    #[test]
    fn bands_that_share_a_row_merge_and_touching_ones_do_not() {
        let merged = Band::merged(vec![band(30, 40), band(0, 11), band(14, 27), band(20, 28), band(40, 41)]);
        assert_eq!(merged, [band(0, 11), band(14, 28), band(30, 40), band(40, 41)]);
        assert_eq!(Band::of_rows(-5, 10), Some(band(0, 5)));
        assert_eq!(Band::of_rows(60, 10), Some(band(60, 64)));
        assert_eq!(Band::of_rows(70, 3), None);
    }

    #[test]
    fn parts_are_whole_bands_of_at_most_the_panels_rows() {
        // The home screen's shape: a title bar, a line, a headline value, a line.
        let bands = [band(0, 11), band(14, 27), band(28, 48), band(50, 63)];
        assert_eq!(parts(&bands, ROWS), [band(0, 27), band(28, 48), band(50, 63)]);
        assert_eq!(parts(&bands, 64), [band(0, 63)], "a screen that fits is one part");
        assert_eq!(parts(&[band(3, 30)], ROWS), [band(0, 30)]);
        assert_eq!(parts(&[], ROWS), [band(0, 0)]);
    }

    #[test]
    fn a_part_is_moved_up_or_centred_and_nothing_else_shows() {
        let mut frame = Frame::blank();
        for y in 0..64 {
            frame.set(y, y, true);
        }
        let shown = part_frame(&frame, band(28, 48), ROWS);
        for y in 0..64 {
            for x in 0..WIDTH {
                let expected = (6..26).contains(&y) && x == y + 22;
                assert_eq!(shown.get(x, y), expected, "({x}, {y})\n{}", shown.to_ascii());
            }
        }
        let top = part_frame(&frame, band(0, 20), ROWS);
        assert!(top.get(5, 5) && !top.get(25, 25), "a top part stays where it was drawn");
    }

    /// The promise of the module: on a 128x32 panel, every thing every screen draws is shown
    /// whole in some part, nothing outside the part is shown, and no band is taller than the
    /// panel (so nothing, a QR code least of all, is ever cut).
    #[test]
    fn every_sample_screen_is_shown_whole_a_part_at_a_time() {
        let tall: Vec<String> = samples::render_all_for(PanelSize::Size128x32)
            .into_iter()
            .flat_map(|(name, screen)| {
                screen.bands.into_iter().filter(|b| b.rows() > ROWS).map(move |b| format!("{name}: {b:?}"))
            })
            .collect();
        assert!(tall.is_empty(), "bands taller than the panel:\n{}", tall.join("\n"));
        for (name, screen) in samples::render_all_for(PanelSize::Size128x32) {
            let parts = parts(&screen.bands, ROWS);
            for b in &screen.bands {
                assert!(
                    parts.iter().any(|p| p.top <= b.top && b.bottom <= p.bottom),
                    "{name}: band {b:?} is in no part of {parts:?}"
                );
            }
            for p in &parts {
                assert!(p.rows() <= ROWS, "{name}: part {p:?}");
            }
            // Every lit pixel of the screen is in a band: the bands are the whole picture.
            for y in 0..HEIGHT {
                if (0..WIDTH).any(|x| screen.frame.get(x, y)) {
                    assert!(
                        screen.bands.iter().any(|b| usize::from(b.top) <= y && y < usize::from(b.bottom)),
                        "{name}: row {y} is drawn on but in no band"
                    );
                }
            }
        }
    }

    /// The screens that show text from outside (a reason from the OS or a server, a name the
    /// owner chose, a CLI argument) with glyphs that ink their cells' first and last rows, at
    /// every length that wraps: still no band taller than the panel, and the last frames
    /// (shutdown, config error) fit it whole.
    #[test]
    fn outside_text_never_makes_a_band_taller_than_the_panel() {
        use crate::screens::*;
        let small = PanelSize::Size128x32;
        for len in [1, 20, 21, 22, 43, 64, 90, 200] {
            let text: String = "g(j)[p]{q}y|".chars().cycle().take(len).collect();
            let mut status = samples::synced();
            status.alias = text.clone();
            let waiting_ =
                Waiting { what: text.clone(), reason: text.clone(), retry_in: Some(Duration::from_secs(4)) };
            let screens = [
                waiting(&waiting_),
                mirror_confirm(&Err(text.clone())),
                mirror_confirm(&Ok(text.clone())),
                restore_progress(Some(&text)),
                backup(&BackupProgress::Failed { reason: text.clone() }),
                not_saved(&text),
                restarting(&text),
                home(&status),
                screensaver(&status, 5, small),
                config_error(&text, &text, small),
            ];
            for screen in screens {
                let name = screen.caption.lines().next().unwrap_or_default().to_string();
                for b in &screen.bands {
                    assert!(b.rows() <= ROWS, "{name} with {len} characters: band {b:?}");
                }
            }
        }
        for phase in [
            ShutdownPhase::InProgress,
            ShutdownPhase::NothingToSave,
            ShutdownPhase::Stopped,
            ShutdownPhase::SafeToUnplug,
        ] {
            let last = shutdown(phase, small);
            assert_eq!(parts(&last.bands, ROWS).len(), 1, "{phase:?} is one part: {:?}", last.bands);
        }
        let error = config_error("chain.rpc_port", &"reason ".repeat(20), small);
        assert_eq!(parts(&error.bands, ROWS).len(), 1, "{:?}", error.bands);
    }

    #[test]
    fn the_pager_shows_the_parts_in_turn_and_starts_a_new_screen_at_its_first() {
        let home = crate::screens::home(&samples::synced());
        let n = parts(&home.bands, ROWS).len();
        assert!(n > 1, "the home screen does not fit 32 rows");
        let mut pager = Pager::new(PanelSize::Size128x32);
        let t0 = Duration::from_secs(100);
        let first = pager.show(home.clone(), t0, false);
        assert!(first.caption.ends_with(&format!("part 1/{n}")), "{}", first.caption);
        assert!((32..64).all(|y| (0..WIDTH).all(|x| !first.frame.get(x, y))), "rows past 32 are dark");
        let second = pager.show(home.clone(), t0 + PART_EVERY, false);
        assert!(second.caption.ends_with(&format!("part 2/{n}")), "{}", second.caption);
        assert_ne!(first.frame, second.frame);
        let again = pager.show(home.clone(), t0 + PART_EVERY * n as u32, false);
        assert_eq!(again.frame, first.frame, "the parts go round");
        let pressed = pager.show(home.clone(), t0 + PART_EVERY * (n as u32 + 1), true);
        assert_eq!(pressed.frame, first.frame, "a press starts the screen (the next seed page) over");
        assert!(second.bands.iter().all(|b| usize::from(b.bottom) <= ROWS), "{:?}", second.bands);

        let other = crate::screens::shutdown_confirm();
        let shown = pager.show(other.clone(), t0 + PART_EVERY * 7, false);
        let parts_of_other = parts(&other.bands, ROWS);
        assert_eq!(
            shown.frame,
            part_frame(&other.frame, parts_of_other[0], ROWS),
            "a new screen's first part"
        );

        let mut tall = Pager::new(PanelSize::Size128x64);
        assert_eq!(tall.show(home.clone(), t0, false), home, "a 128x64 panel shows the screen as drawn");
    }
}

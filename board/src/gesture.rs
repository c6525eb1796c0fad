//! Gestures from button edges: a pure state machine (no I/O, no clock of its own).
//!
//! Feed it every [`ButtonEdge`] with [`GestureMachine::edge`] and call [`GestureMachine::tick`]
//! regularly (every few tens of milliseconds) with the current time on the same monotonic base as
//! the edges and, when no edge is pending, the [`Levels`] read back from the lines; both return
//! the gestures recognised up to that time.
//!
//! Rules:
//! - Debounce: a button's level counts only once it has been stable for `debounce`; the change
//!   is dated at the raw edge that began the stable period. Shorter glitches are ignored.
//! - Short press: released before `long_press`, its press and release both seen as edges.
//! - Long press: reported once, at the first level read at or after `long_press` into the press
//!   (exactly at the threshold counts) that finds the line still pressed; the release reports
//!   nothing more. Without such a read there is no long press: edges alone never make one.
//! - Both held: once both buttons are down neither press becomes a short or long press (a long
//!   press already reported before the second button went down stays reported); when both have
//!   been down together for `both_held` and a level read finds both lines pressed,
//!   [`Gesture::BothHeld`] is reported once.
//! - Lost edges: the kernel can drop an edge. A same-direction repeat (a press while pressed, a
//!   release while released) means the opposite edge between them was lost; a level read that
//!   disagrees with the edges means the last edge was lost. Either way the press it happens in
//!   is *doubtful*: it gives no gesture at all (not even [`Gesture::Pressed`]), and the next
//!   gesture needs a release and a press seen as edges. A button already held when the machine
//!   starts is found by the first level read and is doubtful the same way, so it must be
//!   released and pressed again.
//! - Time never goes backwards: an edge or tick dated before the latest time seen is taken as
//!   happening at that latest time, so out-of-order input cannot fire a gesture twice.
//!
//! What this guarantees (the property test below checks it over random edge sequences with
//! edges dropped and duplicated): every [`Gesture::Short`], [`Gesture::Long`] and
//! [`Gesture::BothHeld`] is one the owner really made, provided levels are read at least every
//! `debounce` and the owner's presses and releases each last at least twice `debounce`.

use std::time::Duration;

use crate::buttons::{Button, ButtonEdge, ButtonError, Buttons};

/// Thresholds of the gesture machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GestureConfig {
    /// How long a level must be stable to count.
    pub debounce: Duration,
    /// How long a press lasts to be a long press.
    pub long_press: Duration,
    /// How long both buttons are held together to be [`Gesture::BothHeld`].
    pub both_held: Duration,
}

impl Default for GestureConfig {
    fn default() -> Self {
        GestureConfig {
            debounce: Duration::from_millis(30),
            long_press: Duration::from_secs(3),
            both_held: Duration::from_secs(5),
        }
    }
}

/// Thresholds that cannot work together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gesture thresholds: {0}")]
pub struct GestureConfigError(pub String);

impl GestureConfig {
    /// Checks that a short press is possible at all: `debounce < long_press`.
    pub fn validate(&self) -> Result<(), GestureConfigError> {
        if self.debounce >= self.long_press {
            return Err(GestureConfigError(format!(
                "debounce ({:?}) must be shorter than long_press ({:?})",
                self.debounce, self.long_press
            )));
        }
        if self.both_held.is_zero() {
            return Err(GestureConfigError("both_held must be longer than zero".into()));
        }
        Ok(())
    }
}

/// What the machine recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gesture {
    /// A debounced press began. Not an action: for waking the screen, which should then ignore
    /// the gesture that this press becomes.
    Pressed(Button),
    /// Pressed and released before the long-press threshold, alone.
    Short(Button),
    /// Held alone until the long-press threshold.
    Long(Button),
    /// Both buttons held together until the both-held threshold.
    BothHeld,
}

/// The two lines' levels read back from the backend at one moment: whether each button is
/// pressed (the wiring's polarity already applied), as [`Buttons::level`] reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Levels {
    /// Button A is pressed.
    pub a: bool,
    /// Button B is pressed.
    pub b: bool,
}

impl Levels {
    /// Reads both lines from `buttons`.
    pub fn read(buttons: &dyn Buttons) -> Result<Levels, ButtonError> {
        Ok(Levels { a: buttons.level(Button::A)?, b: buttons.level(Button::B)? })
    }

    /// Whether `button` is pressed.
    pub fn of(&self, button: Button) -> bool {
        match button {
            Button::A => self.a,
            Button::B => self.b,
        }
    }

    /// Records whether `button` is pressed.
    pub fn set(&mut self, button: Button, pressed: bool) {
        match button {
            Button::A => self.a = pressed,
            Button::B => self.b = pressed,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ButtonState {
    /// The level as last reported, before debouncing.
    raw: bool,
    /// When `raw` last changed.
    raw_since: Duration,
    /// `raw` came from a level read or a same-direction repeat, not from an edge of its own.
    raw_doubtful: bool,
    /// The debounced level.
    down: bool,
    /// When the current debounced press began.
    pressed_at: Duration,
    /// The current press has been reported as long.
    long_reported: bool,
    /// The current press was part of a both-held combination.
    in_combo: bool,
    /// The current press began without an edge or lost one: it gives no gesture.
    doubtful: bool,
}

impl ButtonState {
    /// An edge was lost: the current level period, and the press it is part of, are doubtful.
    fn lost_edge(&mut self, level: bool, at: Duration) {
        self.raw = level;
        self.raw_since = at;
        self.raw_doubtful = true;
        if self.down {
            self.doubtful = true;
        }
    }
}

/// The gesture state machine. See the module documentation for its rules.
#[derive(Debug, Clone)]
pub struct GestureMachine {
    config: GestureConfig,
    buttons: [ButtonState; 2],
    /// When both buttons went down together, while they still are.
    combo_since: Option<Duration>,
    combo_reported: bool,
    latest: Duration,
}

fn index(button: Button) -> usize {
    match button {
        Button::A => 0,
        Button::B => 1,
    }
}

const BUTTONS: [Button; 2] = [Button::A, Button::B];

impl GestureMachine {
    /// A machine with both buttons up until the first level read says otherwise.
    pub fn new(config: GestureConfig) -> Self {
        GestureMachine {
            config,
            buttons: [ButtonState::default(); 2],
            combo_since: None,
            combo_reported: false,
            latest: Duration::ZERO,
        }
    }

    /// The thresholds in use.
    pub fn config(&self) -> &GestureConfig {
        &self.config
    }

    /// Whether a button is down (debounced).
    pub fn is_down(&self, button: Button) -> bool {
        self.buttons[index(button)].down
    }

    /// Takes one raw edge; returns the gestures recognised up to its time.
    pub fn edge(&mut self, edge: ButtonEdge) -> Vec<Gesture> {
        let at = self.clamp(edge.at);
        let mut out = self.advance(at);
        let state = &mut self.buttons[index(edge.button)];
        if state.raw != edge.pressed {
            state.raw = edge.pressed;
            state.raw_since = at;
            state.raw_doubtful = false;
        } else if edge.at > state.raw_since {
            // A same-direction repeat: the opposite edge between them was lost. One dated no
            // later than the change it repeats is a copy of it (a duplicate, or the edge that a
            // level read already showed, delivered late): no edge fits between them.
            state.lost_edge(edge.pressed, at);
        }
        // A zero debounce commits at once.
        out.extend(self.advance(at));
        out
    }

    /// Lets time pass; returns the gestures recognised up to `now`.
    ///
    /// `levels`: the lines read back at `now`, given only when no edge is pending (read them
    /// after [`Buttons::next_edge`] timed out), else `None`. A level that disagrees with the
    /// edges is a lost edge; long presses and [`Gesture::BothHeld`] are reported only at a tick
    /// with levels that finds the lines still pressed.
    pub fn tick(&mut self, now: Duration, levels: Option<Levels>) -> Vec<Gesture> {
        let now = self.clamp(now);
        let mut out = self.advance(now);
        let Some(levels) = levels else { return out };
        for button in BUTTONS {
            let state = &mut self.buttons[index(button)];
            let level = levels.of(button);
            if state.raw != level {
                state.lost_edge(level, now);
            }
        }
        out.extend(self.advance(now));
        self.thresholds(now, levels, &mut out);
        out
    }

    fn clamp(&mut self, at: Duration) -> Duration {
        self.latest = self.latest.max(at);
        self.latest
    }

    /// Commits the level changes that have been stable long enough by `now`, in time order.
    fn advance(&mut self, now: Duration) -> Vec<Gesture> {
        let mut out = Vec::new();
        loop {
            let next = BUTTONS
                .iter()
                .filter(|&&b| {
                    let s = &self.buttons[index(b)];
                    s.raw != s.down && now.saturating_sub(s.raw_since) >= self.config.debounce
                })
                .min_by_key(|&&b| self.buttons[index(b)].raw_since)
                .copied();
            let Some(button) = next else { break };
            let at = self.buttons[index(button)].raw_since;
            self.commit(button, at, &mut out);
        }
        out
    }

    fn commit(&mut self, button: Button, at: Duration, out: &mut Vec<Gesture>) {
        let other_down = self.buttons[1 - index(button)].down;
        let long_press = self.config.long_press;
        let state = &mut self.buttons[index(button)];
        if state.raw {
            state.down = true;
            state.pressed_at = at;
            state.long_reported = false;
            state.in_combo = false;
            state.doubtful = state.raw_doubtful;
            if !state.doubtful {
                out.push(Gesture::Pressed(button));
            }
            if other_down {
                self.combo_since = Some(at);
                self.combo_reported = false;
                for s in &mut self.buttons {
                    s.in_combo = true;
                }
            }
        } else {
            state.down = false;
            let short = at.saturating_sub(state.pressed_at) < long_press;
            if short && !state.in_combo && !state.long_reported && !state.doubtful && !state.raw_doubtful {
                out.push(Gesture::Short(button));
            }
            self.combo_since = None;
        }
    }

    /// Reports the thresholds crossed by `now` by presses that `levels` show still held.
    fn thresholds(&mut self, now: Duration, levels: Levels, out: &mut Vec<Gesture>) {
        let held = |s: &ButtonState, button: Button| s.down && s.raw && !s.doubtful && levels.of(button);
        for button in BUTTONS {
            let state = &mut self.buttons[index(button)];
            if held(state, button)
                && !state.in_combo
                && !state.long_reported
                && now.saturating_sub(state.pressed_at) >= self.config.long_press
            {
                state.long_reported = true;
                out.push(Gesture::Long(button));
            }
        }
        let both = BUTTONS.iter().all(|&b| held(&self.buttons[index(b)], b));
        if let Some(since) = self.combo_since
            && both
            && !self.combo_reported
            && now.saturating_sub(since) >= self.config.both_held
        {
            self.combo_reported = true;
            out.push(Gesture::BothHeld);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Button::{A, B};
    use Gesture::{BothHeld, Long, Pressed, Short};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn down(button: Button, at: u64) -> ButtonEdge {
        ButtonEdge { button, pressed: true, at: ms(at) }
    }

    fn up(button: Button, at: u64) -> ButtonEdge {
        ButtonEdge { button, pressed: false, at: ms(at) }
    }

    /// Levels as a faithful line would read them: what the edges fed so far say.
    fn lines(m: &GestureMachine) -> Option<Levels> {
        Some(Levels { a: m.buttons[0].raw, b: m.buttons[1].raw })
    }

    /// A tick with levels read back that agree with the edges.
    fn read(m: &mut GestureMachine, at: u64) -> Vec<Gesture> {
        let levels = lines(m);
        m.tick(ms(at), levels)
    }

    /// Feeds edges and ticks (`None` edge = tick at that time, with levels that agree with the
    /// edges) and collects every gesture.
    fn run(steps: &[(u64, Option<ButtonEdge>)]) -> Vec<Gesture> {
        let mut machine = GestureMachine::new(GestureConfig::default());
        let mut out = Vec::new();
        for (t, edge) in steps {
            match edge {
                Some(e) => out.extend(machine.edge(*e)),
                None => out.extend(read(&mut machine, *t)),
            }
        }
        out
    }

    fn tick(t: u64) -> (u64, Option<ButtonEdge>) {
        (t, None)
    }

    fn e(edge: ButtonEdge) -> (u64, Option<ButtonEdge>) {
        (edge.at.as_millis() as u64, Some(edge))
    }

    #[test]
    fn a_short_press_is_reported_after_the_release_settles() {
        let mut m = GestureMachine::new(GestureConfig::default());
        assert_eq!(m.edge(down(A, 1000)), vec![]);
        assert_eq!(read(&mut m, 1029), vec![], "not yet stable");
        assert_eq!(read(&mut m, 1030), vec![Pressed(A)]);
        assert!(m.is_down(A));
        assert_eq!(m.edge(up(A, 1200)), vec![]);
        assert_eq!(read(&mut m, 1230), vec![Short(A)]);
        assert!(!m.is_down(A));
        assert_eq!(read(&mut m, 9000), vec![], "nothing more");
    }

    #[test]
    fn the_next_edge_settles_the_previous_one_without_ticks() {
        let got = run(&[e(down(B, 0)), e(up(B, 100)), e(down(A, 500))]);
        assert_eq!(got, vec![Pressed(B), Short(B)]);
    }

    #[test]
    fn contact_bounce_on_press_and_release_gives_one_short_press() {
        let got = run(&[
            e(down(A, 0)),
            e(up(A, 3)),
            e(down(A, 5)),
            e(up(A, 12)),
            e(down(A, 14)),
            tick(40),
            tick(44),
            e(up(A, 300)),
            e(down(A, 302)),
            e(up(A, 306)),
            tick(320),
            tick(336),
        ]);
        assert_eq!(got, vec![Pressed(A), Short(A)]);
    }

    #[test]
    fn a_glitch_shorter_than_debounce_is_ignored() {
        let got = run(&[e(down(A, 100)), e(up(A, 110)), tick(200), tick(5000)]);
        assert_eq!(got, vec![]);
    }

    #[test]
    fn a_release_without_a_press_is_ignored() {
        let got = run(&[e(up(A, 100)), tick(200), e(up(B, 300)), tick(400)]);
        assert_eq!(got, vec![]);
    }

    #[test]
    fn a_repeated_press_edge_is_a_lost_release_and_the_press_gives_nothing() {
        // The release between the two presses was lost: the press from 0 did not last 3 s.
        let got = run(&[e(down(A, 0)), tick(50), e(down(A, 2000)), tick(3000), tick(6000)]);
        assert_eq!(got, vec![Pressed(A)], "no long press from two presses run together");
        let got = run(&[e(down(A, 0)), tick(50), e(down(A, 2000)), e(up(A, 2100)), tick(2200)]);
        assert_eq!(got, vec![Pressed(A)], "nor a short press of unknown length");
        let got = run(&[
            e(down(A, 0)),
            e(down(A, 2000)),
            e(up(A, 2100)),
            tick(2200),
            e(down(A, 2500)),
            e(up(A, 2600)),
            tick(2700),
        ]);
        assert_eq!(got, vec![Pressed(A), Pressed(A), Short(A)], "a release and a press start afresh");
    }

    #[test]
    fn a_bounce_whose_press_edge_was_lost_is_not_a_short_press() {
        // Held from 0 to 4000; the release bounce at 1000 lost its second edge (down at 1005),
        // so the edges say "released at 1000" while the line stays pressed.
        let mut m = GestureMachine::new(GestureConfig::default());
        let pressed = Some(Levels { a: true, b: false });
        m.edge(down(A, 0));
        assert_eq!(m.tick(ms(50), pressed), vec![Pressed(A)]);
        m.edge(up(A, 1000));
        let mut got = Vec::new();
        for t in (1020..4000).step_by(20) {
            got.extend(m.tick(ms(t), pressed));
        }
        m.edge(up(A, 4000));
        got.extend(m.tick(ms(4100), Some(Levels::default())));
        assert_eq!(got, vec![], "neither a short press at 1030 nor a long one from a press in doubt");
        // A duplicated edge (same time) is a copy, not a lost opposite edge.
        let got = run(&[e(down(B, 0)), e(down(B, 0)), tick(50), e(up(B, 200)), e(up(B, 200)), tick(300)]);
        assert_eq!(got, vec![Pressed(B), Short(B)]);
    }

    #[test]
    fn a_long_press_needs_the_line_still_pressed_when_read() {
        let mut m = GestureMachine::new(GestureConfig::default());
        m.edge(down(A, 0));
        assert_eq!(m.tick(ms(3000), None), vec![Pressed(A)], "no level read: no long press yet");
        // The release edge was lost: the line reads released.
        assert_eq!(m.tick(ms(3010), Some(Levels { a: false, b: false })), vec![]);
        assert_eq!(m.tick(ms(9000), Some(Levels { a: false, b: false })), vec![], "nor a short press");
        assert!(!m.is_down(A));
        m.edge(down(A, 10_000));
        assert_eq!(m.tick(ms(13_000), Some(Levels { a: true, b: false })), vec![Pressed(A), Long(A)]);
    }

    #[test]
    fn a_lost_press_edge_found_by_a_level_read_gives_nothing() {
        let mut m = GestureMachine::new(GestureConfig::default());
        let held = Some(Levels { a: true, b: false });
        assert_eq!(m.tick(ms(0), held), vec![]);
        assert_eq!(m.tick(ms(5000), held), vec![], "no press, no long press");
        assert!(m.is_down(A), "but the button is known to be down");
        m.edge(up(A, 6000));
        assert_eq!(m.tick(ms(6100), Some(Levels::default())), vec![], "no short press either");
        let mut got = m.edge(down(A, 7000));
        got.extend(m.edge(up(A, 7100)));
        got.extend(m.tick(ms(7200), Some(Levels::default())));
        assert_eq!(got, vec![Pressed(A), Short(A)], "a press seen as edges is one again");
    }

    #[test]
    fn a_button_held_at_start_gives_nothing_until_released_and_pressed_again() {
        let mut m = GestureMachine::new(GestureConfig::default());
        let both = Some(Levels { a: true, b: true });
        // Held at boot (both: the seed-warning combination) and kept held past every threshold.
        for t in (0..20_000).step_by(20) {
            assert_eq!(m.tick(ms(t), both), vec![], "at {t} ms");
        }
        m.edge(up(B, 20_000));
        assert_eq!(m.tick(ms(20_100), Some(Levels { a: true, b: false })), vec![]);
        m.edge(down(B, 21_000));
        assert_eq!(m.tick(ms(21_100), Some(Levels { a: true, b: true })), vec![Pressed(B)]);
        assert_eq!(m.tick(ms(30_000), Some(Levels { a: true, b: true })), vec![], "A still held from boot");
    }

    #[test]
    fn a_long_press_is_reported_while_held_and_not_again_on_release() {
        let got =
            run(&[e(down(A, 0)), tick(100), tick(2999), tick(3000), tick(3500), e(up(A, 4000)), tick(5000)]);
        assert_eq!(got, vec![Pressed(A), Long(A)]);
    }

    #[test]
    fn a_long_press_exactly_at_the_threshold_counts() {
        let mut m = GestureMachine::new(GestureConfig::default());
        m.edge(down(B, 1000));
        assert_eq!(read(&mut m, 3999), vec![Pressed(B)]);
        assert_eq!(read(&mut m, 4000), vec![Long(B)]);
    }

    #[test]
    fn a_release_just_before_the_threshold_is_short() {
        let got = run(&[e(down(A, 0)), tick(2999), e(up(A, 2999)), tick(3100)]);
        assert_eq!(got, vec![Pressed(A), Short(A)]);
    }

    #[test]
    fn a_long_press_unseen_by_any_level_read_is_neither_long_nor_short() {
        let got = run(&[e(down(A, 0)), e(up(A, 3500)), tick(3600)]);
        assert_eq!(got, vec![Pressed(A)]);
    }

    #[test]
    fn bounce_on_release_of_a_long_press_reports_nothing_more() {
        let got =
            run(&[e(down(A, 0)), tick(3100), e(up(A, 4000)), e(down(A, 4004)), e(up(A, 4008)), tick(4100)]);
        assert_eq!(got, vec![Pressed(A), Long(A)]);
    }

    #[test]
    fn both_held_together_is_reported_once_and_suppresses_presses() {
        let got = run(&[
            e(down(A, 0)),
            e(down(B, 100)),
            tick(200),
            tick(3500),
            tick(5099),
            tick(5100),
            tick(6000),
            e(up(A, 7000)),
            e(up(B, 7100)),
            tick(8000),
        ]);
        assert_eq!(got, vec![Pressed(A), Pressed(B), BothHeld]);
    }

    #[test]
    fn overlapping_presses_released_early_give_nothing() {
        let got =
            run(&[e(down(A, 0)), e(down(B, 400)), e(up(A, 800)), e(up(B, 900)), tick(1000), tick(9000)]);
        assert_eq!(got, vec![Pressed(A), Pressed(B)]);
    }

    #[test]
    fn a_held_then_b_pressed_gives_no_short_or_long_for_either() {
        let got = run(&[
            e(down(A, 0)),
            tick(1000),
            e(down(B, 2000)),
            tick(2100),
            e(up(B, 2500)),
            tick(2600),
            tick(10_000),
            e(up(A, 11_000)),
            tick(12_000),
        ]);
        assert_eq!(got, vec![Pressed(A), Pressed(B)], "A was in a combination, even after B left");
    }

    #[test]
    fn a_long_press_reported_before_the_second_button_stays_and_combo_still_counts() {
        let got = run(&[e(down(A, 0)), tick(3000), e(down(B, 4000)), tick(8999), tick(9000)]);
        assert_eq!(got, vec![Pressed(A), Long(A), Pressed(B), BothHeld]);
    }

    #[test]
    fn combo_needs_both_held_together_for_the_whole_threshold() {
        let got = run(&[
            e(down(A, 0)),
            e(down(B, 0)),
            tick(4000),
            e(up(B, 4000)),
            e(down(B, 4500)),
            tick(9000),
            tick(9530),
        ]);
        assert_eq!(got, vec![Pressed(A), Pressed(B), Pressed(B), BothHeld]);
    }

    #[test]
    fn after_a_combo_a_new_press_is_normal_again() {
        let got = run(&[
            e(down(A, 0)),
            e(down(B, 0)),
            tick(5100),
            e(up(A, 6000)),
            e(up(B, 6000)),
            e(down(A, 7000)),
            e(up(A, 7100)),
            tick(7200),
        ]);
        assert_eq!(got, vec![Pressed(A), Pressed(B), BothHeld, Pressed(A), Short(A)]);
    }

    #[test]
    fn no_long_press_is_declared_for_a_time_no_level_read_saw() {
        // A held alone for 4 s before B, but no read while it was alone.
        let got = run(&[e(down(A, 0)), e(down(B, 4000)), e(up(B, 4100)), e(up(A, 4200)), tick(5000)]);
        assert_eq!(got, vec![Pressed(A), Pressed(B)]);
    }

    #[test]
    fn ticks_out_of_order_fire_nothing_twice() {
        let mut m = GestureMachine::new(GestureConfig::default());
        m.edge(down(A, 0));
        assert_eq!(read(&mut m, 3000), vec![Pressed(A), Long(A)]);
        assert_eq!(read(&mut m, 1000), vec![]);
        assert_eq!(read(&mut m, 2000), vec![]);
        assert_eq!(read(&mut m, 3000), vec![]);
    }

    #[test]
    fn an_edge_dated_in_the_past_is_taken_as_now() {
        let mut m = GestureMachine::new(GestureConfig::default());
        read(&mut m, 10_000);
        m.edge(down(A, 0));
        assert_eq!(read(&mut m, 10_029), vec![]);
        assert_eq!(read(&mut m, 10_030), vec![Pressed(A)]);
        m.edge(up(A, 5));
        assert_eq!(read(&mut m, 10_100), vec![Short(A)]);
    }

    #[test]
    fn thresholds_are_configurable() {
        let config = GestureConfig { debounce: ms(0), long_press: ms(500), both_held: ms(1000) };
        let mut m = GestureMachine::new(config);
        assert_eq!(m.edge(down(A, 0)), vec![Pressed(A)], "zero debounce commits at once");
        assert_eq!(read(&mut m, 500), vec![Long(A)]);
        assert_eq!(m.edge(up(A, 600)), vec![]);
        assert_eq!(m.edge(down(B, 700)), vec![Pressed(B)]);
        assert_eq!(m.edge(up(B, 800)), vec![Short(B)]);
    }

    #[test]
    fn config_validation_names_the_problem() {
        assert!(GestureConfig::default().validate().is_ok());
        let bad = GestureConfig { debounce: ms(3000), ..GestureConfig::default() };
        let err = bad.validate().expect_err("debounce too long");
        assert!(err.to_string().contains("debounce"), "{err}");
        let bad = GestureConfig { both_held: ms(0), ..GestureConfig::default() };
        assert!(bad.validate().expect_err("zero").to_string().contains("both_held"));
    }

    /// A model of the real buttons: true level timelines, the edges a kernel reports of them
    /// (some lost, some doubled), and the display loop reading edges and levels.
    mod property {
        use super::*;
        use proptest::prelude::*;

        const DEBOUNCE: u64 = 30;

        /// One button's true timeline: whether it is held at the start, then how long each
        /// level lasts (ms). Every level lasts at least twice the debounce.
        fn timeline() -> impl Strategy<Value = (bool, Vec<u64>)> {
            let period = prop_oneof![60u64..400, 400u64..3000, 3000u64..7000];
            (any::<bool>(), prop::collection::vec(period, 1..10))
        }

        /// A press as it really happened: `start` None when held since before the start.
        #[derive(Debug, Clone, Copy)]
        struct Press {
            start: Option<u64>,
            end: Option<u64>,
        }

        fn presses(held_at_start: bool, periods: &[u64]) -> (Vec<Press>, Vec<(u64, bool)>) {
            let mut presses = Vec::new();
            let mut edges = Vec::new();
            let mut level = held_at_start;
            let mut t = 0;
            if level {
                presses.push(Press { start: None, end: None });
            }
            for &period in periods {
                t += period;
                level = !level;
                edges.push((t, level));
                if level {
                    presses.push(Press { start: Some(t), end: None });
                } else if let Some(last) = presses.last_mut() {
                    last.end = Some(t);
                }
            }
            (presses, edges)
        }

        fn level_at(held_at_start: bool, edges: &[(u64, bool)], t: u64) -> bool {
            edges.iter().take_while(|(at, _)| *at <= t).last().map_or(held_at_start, |(_, level)| *level)
        }

        /// Finds an unused true press that `accept` takes, and uses it up.
        fn claim(presses: &[Press], used: &mut [bool], accept: impl Fn(&Press) -> bool) -> Option<usize> {
            let i = (0..presses.len()).find(|&i| !used[i] && accept(&presses[i]))?;
            used[i] = true;
            Some(i)
        }

        // 256 cases by proptest's default; `make reliability` sets PROPTEST_CASES higher.
        proptest! {
            #[test]
            fn gestures_are_only_ever_ones_the_owner_made(
                a in timeline(),
                b in timeline(),
                // Per reported edge: 0-5 delivered, 6-7 lost, 8-9 delivered twice.
                faults in prop::collection::vec(0u8..10, 40),
                // The display loop reads the levels at least every debounce.
                steps in prop::collection::vec(1..DEBOUNCE, 1..50),
            ) {
                let config = GestureConfig::default();
                let long = config.long_press.as_millis() as u64;
                let both_held = config.both_held.as_millis() as u64;
                let truth = [a, b];
                let modelled: Vec<_> = truth.iter().map(|(held, periods)| presses(*held, periods)).collect();
                // What the kernel reports, in time order.
                let mut reported = Vec::new();
                for (i, button) in BUTTONS.iter().enumerate() {
                    for &(at, pressed) in &modelled[i].1 {
                        reported.push(ButtonEdge { button: *button, pressed, at: ms(at) });
                    }
                }
                reported.sort_by_key(|e| e.at);
                let mut delivered = Vec::new();
                for (n, edge) in reported.iter().enumerate() {
                    match faults[n % faults.len()] {
                        6 | 7 => {}
                        8 | 9 => delivered.extend([*edge, *edge]),
                        _ => delivered.push(*edge),
                    }
                }
                let faultless = delivered == reported;
                let end = reported.last().map_or(0, |e| e.at.as_millis() as u64) + both_held + 1000;

                let mut machine = GestureMachine::new(config);
                let mut got: Vec<(u64, Gesture)> = Vec::new();
                let mut next = 0;
                let mut now = 0;
                let mut step = steps.iter().cycle();
                while now <= end {
                    while let Some(edge) = delivered.get(next).filter(|e| e.at <= ms(now)) {
                        got.extend(machine.edge(*edge).into_iter().map(|g| (now, g)));
                        got.extend(machine.tick(ms(now), None).into_iter().map(|g| (now, g)));
                        next += 1;
                    }
                    let levels = Levels {
                        a: level_at(truth[0].0, &modelled[0].1, now),
                        b: level_at(truth[1].0, &modelled[1].1, now),
                    };
                    got.extend(machine.tick(ms(now), Some(levels)).into_iter().map(|g| (now, g)));
                    now += step.next().copied().unwrap_or(1);
                }

                let mut used = [vec![false; modelled[0].0.len()], vec![false; modelled[1].0.len()]];
                let mut combos = Vec::new();
                for &(t, gesture) in &got {
                    let held_at = |p: &Press, since: u64| {
                        p.start.is_some_and(|s| s + since <= t) && p.end.is_none_or(|e| e > t)
                    };
                    match gesture {
                        Gesture::Pressed(_) => {}
                        Gesture::Short(button) => {
                            let i = index(button);
                            let found = claim(&modelled[i].0, &mut used[i], |p| match (p.start, p.end) {
                                (Some(s), Some(e)) => e <= t && e - s < long,
                                _ => false,
                            });
                            prop_assert!(found.is_some(), "{gesture:?} at {t} ms is no short press of the owner's: {got:?}");
                        }
                        Gesture::Long(button) => {
                            let i = index(button);
                            let found = claim(&modelled[i].0, &mut used[i], |p| held_at(p, long));
                            prop_assert!(found.is_some(), "{gesture:?} at {t} ms is no long press of the owner's: {got:?}");
                        }
                        Gesture::BothHeld => {
                            let pair = (0..modelled[0].0.len()).flat_map(|i| (0..modelled[1].0.len()).map(move |j| (i, j))).find(|&(i, j)| {
                                let (pa, pb) = (&modelled[0].0[i], &modelled[1].0[j]);
                                let together = pa.start.max(pb.start).unwrap_or(u64::MAX);
                                pa.start.is_some() && pb.start.is_some() && together.saturating_add(both_held) <= t
                                    && held_at(pa, 0) && held_at(pb, 0) && !combos.contains(&(i, j))
                            });
                            prop_assert!(pair.is_some(), "BothHeld at {t} ms: the owner did not hold both: {got:?}");
                            combos.extend(pair);
                        }
                    }
                }

                // Not vacuous: with every edge delivered once, each press alone is recognised.
                if faultless {
                    for (i, button) in BUTTONS.iter().enumerate() {
                        let others = &modelled[1 - i].0;
                        let alone = |s: u64, e: u64| {
                            others.iter().all(|o| {
                                let (os, oe) = (o.start.unwrap_or(0), o.end.unwrap_or(u64::MAX));
                                oe.saturating_add(DEBOUNCE) < s || os > e + DEBOUNCE
                            })
                        };
                        for p in &modelled[i].0 {
                            let (Some(s), Some(e)) = (p.start, p.end) else { continue };
                            let want = if e - s < long {
                                Gesture::Short(*button)
                            } else if e - s >= long + DEBOUNCE {
                                Gesture::Long(*button)
                            } else {
                                continue;
                            };
                            if alone(s, e) {
                                prop_assert!(
                                    got.iter().any(|&(t, g)| g == want && t >= s && t <= e + 2 * DEBOUNCE),
                                    "the press {s}..{e} ms gave no {want:?}: {got:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

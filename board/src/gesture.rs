//! Gestures from button edges: a pure state machine (no I/O, no clock of its own).
//!
//! Feed it every [`ButtonEdge`] with [`GestureMachine::edge`] and call [`GestureMachine::tick`]
//! regularly (every few tens of milliseconds) with the current time on the same monotonic base as
//! the edges; both return the gestures recognised up to that time.
//!
//! Rules:
//! - Debounce: a button's level counts only once it has been stable for `debounce`; the change
//!   is dated at the raw edge that began the stable period. Shorter glitches are ignored.
//! - Short press: released before `long_press`.
//! - Long press: reported once, as soon as a press has lasted `long_press` (exactly at the
//!   threshold counts), while still held; the release reports nothing more.
//! - Both held: once both buttons are down neither press becomes a short or long press (a long
//!   press already reported before the second button went down stays reported); when both have
//!   been down together for `both_held`, [`Gesture::BothHeld`] is reported once.
//! - Time never goes backwards: an edge or tick dated before the latest time seen is taken as
//!   happening at that latest time, so out-of-order input cannot fire a gesture twice.

use std::time::Duration;

use crate::buttons::{Button, ButtonEdge};

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

#[derive(Debug, Clone, Copy, Default)]
struct ButtonState {
    /// The level as last reported, before debouncing.
    raw: bool,
    /// When `raw` last changed.
    raw_since: Duration,
    /// The debounced level.
    down: bool,
    /// When the current debounced press began.
    pressed_at: Duration,
    /// The current press has been reported as long.
    long_reported: bool,
    /// The current press was part of a both-held combination.
    in_combo: bool,
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
    /// A machine with both buttons up.
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
        // A repeated level (e.g. a release without a press) is not a change.
        if state.raw != edge.pressed {
            state.raw = edge.pressed;
            state.raw_since = at;
        }
        // A zero debounce commits at once.
        out.extend(self.advance(at));
        out
    }

    /// Lets time pass; returns the gestures recognised up to `now`.
    pub fn tick(&mut self, now: Duration) -> Vec<Gesture> {
        let now = self.clamp(now);
        self.advance(now)
    }

    fn clamp(&mut self, at: Duration) -> Duration {
        self.latest = self.latest.max(at);
        self.latest
    }

    /// Commits the level changes that have been stable long enough by `now`, in time order,
    /// reporting thresholds crossed before each, then those crossed by `now`.
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
            self.thresholds(at, &mut out);
            self.commit(button, at, &mut out);
        }
        self.thresholds(now, &mut out);
        out
    }

    fn commit(&mut self, button: Button, at: Duration, out: &mut Vec<Gesture>) {
        let other_down = self.buttons[1 - index(button)].down;
        let state = &mut self.buttons[index(button)];
        if state.raw {
            *state = ButtonState { down: true, pressed_at: at, ..*state };
            state.long_reported = false;
            state.in_combo = false;
            out.push(Gesture::Pressed(button));
            if other_down {
                self.combo_since = Some(at);
                self.combo_reported = false;
                for s in &mut self.buttons {
                    s.in_combo = true;
                }
            }
        } else {
            state.down = false;
            if !state.in_combo && !state.long_reported {
                out.push(Gesture::Short(button));
            }
            self.combo_since = None;
        }
    }

    fn thresholds(&mut self, at: Duration, out: &mut Vec<Gesture>) {
        for button in BUTTONS {
            let state = &mut self.buttons[index(button)];
            if state.down
                && !state.in_combo
                && !state.long_reported
                && at.saturating_sub(state.pressed_at) >= self.config.long_press
            {
                state.long_reported = true;
                out.push(Gesture::Long(button));
            }
        }
        if let Some(since) = self.combo_since
            && !self.combo_reported
            && at.saturating_sub(since) >= self.config.both_held
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

    /// Feeds edges and ticks (`None` edge = tick at that time) and collects every gesture.
    fn run(steps: &[(u64, Option<ButtonEdge>)]) -> Vec<Gesture> {
        let mut machine = GestureMachine::new(GestureConfig::default());
        let mut out = Vec::new();
        for (t, edge) in steps {
            match edge {
                Some(e) => out.extend(machine.edge(*e)),
                None => out.extend(machine.tick(ms(*t))),
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
        assert_eq!(m.tick(ms(1029)), vec![], "not yet stable");
        assert_eq!(m.tick(ms(1030)), vec![Pressed(A)]);
        assert!(m.is_down(A));
        assert_eq!(m.edge(up(A, 1200)), vec![]);
        assert_eq!(m.tick(ms(1230)), vec![Short(A)]);
        assert!(!m.is_down(A));
        assert_eq!(m.tick(ms(9000)), vec![], "nothing more");
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
    fn a_repeated_press_edge_does_not_restart_the_press() {
        let got = run(&[e(down(A, 0)), tick(50), e(down(A, 2000)), tick(3000)]);
        assert_eq!(got, vec![Pressed(A), Long(A)], "the press began at 0, so it is long at 3000");
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
        assert_eq!(m.tick(ms(3999)), vec![Pressed(B)]);
        assert_eq!(m.tick(ms(4000)), vec![Long(B)]);
    }

    #[test]
    fn a_release_just_before_the_threshold_is_short() {
        let got = run(&[e(down(A, 0)), tick(2999), e(up(A, 2999)), tick(3100)]);
        assert_eq!(got, vec![Pressed(A), Short(A)]);
    }

    #[test]
    fn a_long_press_is_long_even_without_ticks_while_held() {
        let got = run(&[e(down(A, 0)), e(up(A, 3500)), tick(3600)]);
        assert_eq!(got, vec![Pressed(A), Long(A)]);
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
    fn thresholds_are_ordered_with_commits_when_ticks_are_missing() {
        // A held alone for 4 s before B: the long press happened before the combination began.
        let got = run(&[e(down(A, 0)), e(down(B, 4000)), e(up(B, 4100)), e(up(A, 4200)), tick(5000)]);
        assert_eq!(got, vec![Pressed(A), Long(A), Pressed(B)]);
    }

    #[test]
    fn ticks_out_of_order_fire_nothing_twice() {
        let mut m = GestureMachine::new(GestureConfig::default());
        m.edge(down(A, 0));
        assert_eq!(m.tick(ms(3000)), vec![Pressed(A), Long(A)]);
        assert_eq!(m.tick(ms(1000)), vec![]);
        assert_eq!(m.tick(ms(2000)), vec![]);
        assert_eq!(m.tick(ms(3000)), vec![]);
    }

    #[test]
    fn an_edge_dated_in_the_past_is_taken_as_now() {
        let mut m = GestureMachine::new(GestureConfig::default());
        m.tick(ms(10_000));
        m.edge(down(A, 0));
        assert_eq!(m.tick(ms(10_029)), vec![]);
        assert_eq!(m.tick(ms(10_030)), vec![Pressed(A)]);
        m.edge(up(A, 5));
        assert_eq!(m.tick(ms(10_100)), vec![Short(A)]);
    }

    #[test]
    fn thresholds_are_configurable() {
        let config = GestureConfig { debounce: ms(0), long_press: ms(500), both_held: ms(1000) };
        let mut m = GestureMachine::new(config);
        assert_eq!(m.edge(down(A, 0)), vec![Pressed(A)], "zero debounce commits at once");
        assert_eq!(m.tick(ms(500)), vec![Long(A)]);
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
}

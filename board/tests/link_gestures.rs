//! A host presses buttons over the link; the device's edges, dated on arrival, become gestures.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use boltbox_board::link::link_over_stream;
use boltbox_board::{Button, Buttons, Display, Frame, Gesture, GestureConfig, GestureMachine, LinkClient};

const WAIT: Duration = Duration::from_secs(10);

/// Reads edges until `count` have arrived, then lets the machine settle.
fn gestures(buttons: &mut dyn Buttons, machine: &mut GestureMachine, count: usize) -> Vec<Gesture> {
    let mut out = Vec::new();
    let mut last = Duration::ZERO;
    for _ in 0..count {
        let edge = buttons.next_edge(WAIT).expect("link up").expect("an edge in time");
        last = edge.at;
        out.extend(machine.edge(edge));
    }
    // Settles the last edge without moving the machine's time past edges still to come.
    out.extend(machine.tick(last + machine.config().debounce));
    out.retain(|g| !matches!(g, Gesture::Pressed(_)));
    out
}

#[test]
fn presses_over_the_link_become_short_and_long_gestures() {
    let (device, host) = UnixStream::pair().expect("pair");
    let (mut display, mut buttons) = link_over_stream(device).expect("device");
    let mut client = LinkClient::from_stream(host);
    // The hold is the press: 50 ms is short and 1.2 s long under these thresholds, with room
    // for a slow machine either way.
    let config = GestureConfig {
        debounce: Duration::from_millis(10),
        long_press: Duration::from_millis(600),
        both_held: Duration::from_secs(5),
    };
    let mut machine = GestureMachine::new(config);

    client.press(Button::A, Duration::from_millis(50)).expect("press");
    assert_eq!(gestures(&mut buttons, &mut machine, 2), [Gesture::Short(Button::A)]);

    client.press(Button::B, Duration::from_millis(1200)).expect("press");
    assert_eq!(gestures(&mut buttons, &mut machine, 2), [Gesture::Long(Button::B)]);

    let mut frame = Frame::blank();
    frame.set(3, 4, true);
    display.show(&frame, "after presses").expect("show");
    let got = client.wait_for_caption("after presses", WAIT).expect("frame");
    assert_eq!(got.frame, frame);
}

//! A host presses buttons over the link; the device's edges, dated on arrival, become gestures.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use boltbox_board::buttons::monotonic;
use boltbox_board::link::link_over_stream;
use boltbox_board::{
    Button, Buttons, Display, Frame, Gesture, GestureConfig, GestureMachine, Levels, LinkClient,
};

const WAIT: Duration = Duration::from_secs(10);
/// How long the loop waits for an edge before it reads the levels, as the display loop does.
const POLL: Duration = Duration::from_millis(20);

/// Reads edges until `count` have arrived, reading the levels whenever none is pending, then
/// lets the machine settle.
fn gestures(buttons: &mut dyn Buttons, machine: &mut GestureMachine, count: usize) -> Vec<Gesture> {
    let mut out = Vec::new();
    let mut last = Duration::ZERO;
    let deadline = monotonic() + WAIT;
    let mut seen = 0;
    while seen < count {
        assert!(monotonic() < deadline, "{seen} of {count} edges within {WAIT:?}");
        match buttons.next_edge(POLL).expect("link up") {
            Some(edge) => {
                last = edge.at;
                seen += 1;
                out.extend(machine.edge(edge));
            }
            None => out.extend(machine.tick(monotonic(), Levels::read(buttons).ok())),
        }
    }
    // Settles the last edge without moving the machine's time past edges still to come.
    out.extend(machine.tick(last + machine.config().debounce, Levels::read(buttons).ok()));
    out.retain(|g| !matches!(g, Gesture::Pressed(_)));
    out
}

#[test]
fn presses_over_the_link_become_short_and_long_gestures() {
    let (device, host) = UnixStream::pair().expect("pair");
    let (mut display, mut buttons) = link_over_stream(device).expect("device");
    let client = LinkClient::from_stream(host);
    // The hold is the press: 50 ms is short and 1.2 s long under these thresholds, with room
    // for a slow machine either way.
    let config = GestureConfig {
        debounce: Duration::from_millis(10),
        long_press: Duration::from_millis(600),
        both_held: Duration::from_secs(5),
    };
    let mut machine = GestureMachine::new(config);

    // The host presses while the device reads, as the display loop does: a long press is
    // declared only by a level read while the button is still held.
    let press = |mut client: LinkClient, button: Button, hold: u64| {
        std::thread::spawn(move || {
            client.press(button, Duration::from_millis(hold)).expect("press");
            client
        })
    };
    let host = press(client, Button::A, 50);
    assert_eq!(gestures(&mut buttons, &mut machine, 2), [Gesture::Short(Button::A)]);
    let host = press(host.join().expect("host"), Button::B, 1200);
    assert_eq!(gestures(&mut buttons, &mut machine, 2), [Gesture::Long(Button::B)]);
    let mut client = host.join().expect("host");

    let mut frame = Frame::blank();
    frame.set(3, 4, true);
    display.show(&frame, "after presses").expect("show");
    let got = client.wait_for_caption("after presses", WAIT).expect("frame");
    assert_eq!(got.frame, frame);
}

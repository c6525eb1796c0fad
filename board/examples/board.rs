//! Tries a board without the node: shows the last gesture and the display's health.
//!
//! `cargo run -p boltbox-board --example board -- sim` (or `auto`, or `link:PATH`). Hold both
//! buttons (`c` on the sim board) to quit.

use std::time::Duration;

use boltbox_board::buttons::monotonic;
use boltbox_board::{
    BoardConfig, Display, DisplayHealth, Frame, Gesture, GestureConfig, GestureMachine, Levels,
};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::FONT_6X10;
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::Text;

fn screen(lines: &[String]) -> Frame {
    let mut frame = Frame::blank();
    let style = MonoTextStyle::new(&FONT_6X10, BinaryColor::On);
    let border = Rectangle::new(Point::zero(), Size::new(128, 64))
        .into_styled(PrimitiveStyle::with_stroke(BinaryColor::On, 1));
    let _ = border.draw(&mut frame);
    for (i, line) in lines.iter().enumerate() {
        let _ = Text::new(line, Point::new(4, 12 + 12 * i as i32), style).draw(&mut frame);
    }
    frame
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let board = std::env::args().nth(1).unwrap_or_else(|| "sim".into());
    let config = BoardConfig { board, ..BoardConfig::default() };
    let gestures = GestureConfig::default();
    let mut board = boltbox_board::open_with_gestures(&config, &gestures)?;
    eprintln!("{}", board.chosen);
    let mut machine = GestureMachine::new(gestures);
    let mut last = String::from("none yet");
    loop {
        match board.buttons.next_edge(Duration::from_millis(100)) {
            Ok(Some(edge)) => machine.edge(edge),
            // No edge pending: the levels read now can be checked against the edges.
            Ok(None) => machine.tick(monotonic(), Levels::read(&*board.buttons).ok()),
            Err(e) => {
                last = format!("buttons: {e}");
                machine.tick(monotonic(), None)
            }
        }
        .into_iter()
        .for_each(|g| last = format!("{g:?}"));
        if last == format!("{:?}", Gesture::BothHeld) {
            board.display.show(&screen(&["bye".into()]), "bye")?;
            return Ok(());
        }
        let health = match board.display.health() {
            DisplayHealth::Present => "display ok".to_string(),
            DisplayHealth::Absent { failures, .. } => format!("display absent x{failures}"),
        };
        let lines = ["board demo".to_string(), format!("last: {last}"), health];
        board.display.show(&screen(&lines), &lines.join("\n"))?;
    }
}

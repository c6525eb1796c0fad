//! Running the tools the build uses, with errors that say which command failed and why.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::ImageError;

fn line(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn not_started(command: &Command, e: &std::io::Error) -> ImageError {
    let hint = if e.kind() == std::io::ErrorKind::NotFound { " (run `scripts/setup.sh image`)" } else { "" };
    ImageError::Tool { command: line(command), reason: format!("cannot start: {e}{hint}") }
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Runs a long step with its output on the terminal (mmdebstrap, cargo, xz), so that progress
/// shows; on failure the error points there.
pub(crate) fn stream(command: &mut Command) -> Result<(), ImageError> {
    let status = command.status().map_err(|e| not_started(command, &e))?;
    if status.success() {
        return Ok(());
    }
    Err(ImageError::Tool { command: line(command), reason: format!("{status}; its output is above") })
}

/// Runs a quick tool quietly, feeding it `input` if given, and returns its standard output; on
/// failure the error carries the tail of its error output.
pub(crate) fn output(command: &mut Command, input: Option<&[u8]>) -> Result<String, ImageError> {
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| not_started(command, &e))?;
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        pipe.write_all(input).map_err(|e| ImageError::Tool {
            command: line(command),
            reason: format!("writing its input: {e}"),
        })?;
    }
    let out = child.wait_with_output().map_err(|e| not_started(command, &e))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(ImageError::Tool {
        command: line(command),
        reason: format!("{}:\n{}", out.status, tail(&out.stderr)),
    })
}

/// Runs a quick tool quietly; see [`output`].
pub(crate) fn run(command: &mut Command) -> Result<(), ImageError> {
    output(command, None).map(drop)
}

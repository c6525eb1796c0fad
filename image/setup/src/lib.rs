//! boltbox-setup: the image's root-side helper for the unprivileged service. At boot
//! (`boltbox-setup.service`, before the network and boltbox start) it grows the data partition
//! to fill the card ([`grow`]) and applies the `[system]` section of the boot partition's
//! `boltbox.toml` ([`system`]): host name, wired network, Wi-Fi, SSH. Every step is
//! idempotent, so it runs on every boot and an edit of `boltbox.toml` takes effect at the next
//! one. It also mounts and unmounts USB sticks for backups ([`usb`]). docs/IMAGE.md describes it.

pub mod grow;
pub mod system;
pub mod usb;

use std::path::PathBuf;
use std::process::Command;

/// What can go wrong while setting the system up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The config file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `[system]` value that cannot be used: the field's full name and why.
    #[error("{field}: {reason}")]
    Config {
        /// e.g. `system.wifi.country`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a system file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A system command failed or could not be started.
    #[error("{command}: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and error output, or why it did not start.
        reason: String,
    },
    /// The data partition is not where or what it should be.
    #[error("data partition: {0}")]
    Partition(String),
}

/// The uid and gid of `user`, from /etc/passwd.
pub fn user_ids(user: &str) -> Result<(u32, u32), SetupError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io_error("reading /etc/passwd"))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&user))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .ok_or_else(|| SetupError::config("user", format!("no user {user} in /etc/passwd")))
}

impl SetupError {
    fn config(field: &str, reason: impl Into<String>) -> Self {
        SetupError::Config { field: field.to_string(), reason: reason.into() }
    }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
    let what = what.into();
    move |source| SetupError::Io { what, source }
}

/// Runs `command` to completion, feeding it `input` if given; a non-zero exit is an error
/// carrying its stderr.
fn run(command: &mut Command, input: Option<&str>) -> Result<(), SetupError> {
    use std::io::Write;
    use std::process::Stdio;
    let line = format!("{command:?}").replace('"', "");
    let failed = |reason: String| SetupError::Command { command: line.clone(), reason };
    let mut child = command
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).map_err(|e| failed(format!("writing its input: {e}")))?;
    }
    let output = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())))
    }
}

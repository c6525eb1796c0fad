//! `boltbox.toml`: the appliance's configuration file.
//!
//! Sections: `[node]` ([`NodeConfig`], see docs/CONFIG.md), `[board]` ([`BoardConfig`]),
//! `[ui]` ([`UiSettings`]), `[runtime]` ([`RuntimeOverrides`]), `[power]`
//! ([`PowerSettings`]) and `[backup]` ([`BackupSettings`]). Every field has a default and unknown fields are refused. Every error
//! names the field as written in the file (`node.alias`, `board.i2c_address`, `ui.long_press_ms`)
//! and says why, so that the OLED can tell the owner what to fix.
//! `appliance/boltbox.example.toml` is a commented example.

use std::path::{Path, PathBuf};
use std::time::Duration;

use boltbox_board::config::BoardKind;
use boltbox_board::{BoardConfig, GestureConfig};
use boltbox_executor::runtime::{BoardFacts, RuntimeError, RuntimeOverrides, RuntimePlan};
use boltbox_node::NodeConfig;
use serde::Deserialize;

use crate::ui::UiConfig;

/// A configuration that cannot be used: the field's full name as written in the file (e.g.
/// `node.alias`, `board.i2c_address`; the file's path when it cannot be read at all) and why.
pub use boltbox_node::ConfigError;

/// `[ui]`: button thresholds and display timings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiSettings {
    /// A button level must be stable this long to count (contact bounce).
    pub debounce_ms: u64,
    /// A press this long is a long press (A: shut down, B: back up).
    pub long_press_ms: u64,
    /// Both buttons held this long show the seed warning.
    pub both_held_ms: u64,
    /// Without a press for this long the display dims.
    pub dim_after_secs: u64,
    /// Without a press for this long the display blanks to the moving screensaver.
    pub blank_after_secs: u64,
    /// How often the screensaver moves (against burn-in).
    pub shift_every_secs: u64,
    /// Confirmation and warning screens go back after this long.
    pub confirm_timeout_secs: u64,
    /// The seed pages go back home after this long without a press.
    pub seed_timeout_secs: u64,
    /// Contrast when awake (0..=255).
    pub bright: u8,
    /// Contrast when dim or blank (0..=255).
    pub dim: u8,
}

impl Default for UiSettings {
    fn default() -> Self {
        let g = GestureConfig::default();
        let u = UiConfig::default();
        UiSettings {
            debounce_ms: millis(g.debounce),
            long_press_ms: millis(g.long_press),
            both_held_ms: millis(g.both_held),
            dim_after_secs: u.dim_after.as_secs(),
            blank_after_secs: u.blank_after.as_secs(),
            shift_every_secs: u.shift_every.as_secs(),
            confirm_timeout_secs: u.confirm_timeout.as_secs(),
            seed_timeout_secs: u.seed_timeout.as_secs(),
            bright: u.bright,
            dim: u.dim,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl UiSettings {
    /// The gesture machine's thresholds.
    pub fn gestures(&self) -> GestureConfig {
        GestureConfig {
            debounce: Duration::from_millis(self.debounce_ms),
            long_press: Duration::from_millis(self.long_press_ms),
            both_held: Duration::from_millis(self.both_held_ms),
        }
    }

    /// The UI's timings and contrast levels, for screens drawn for `panel` (`[board]`'s).
    pub fn ui(&self, panel: boltbox_board::PanelSize) -> UiConfig {
        UiConfig {
            dim_after: Duration::from_secs(self.dim_after_secs),
            blank_after: Duration::from_secs(self.blank_after_secs),
            shift_every: Duration::from_secs(self.shift_every_secs),
            confirm_timeout: Duration::from_secs(self.confirm_timeout_secs),
            seed_timeout: Duration::from_secs(self.seed_timeout_secs),
            ask_timeout: crate::mirror::ASK_WAIT,
            bright: self.bright,
            dim: self.dim,
            panel,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.debounce_ms >= self.long_press_ms {
            return Err(ConfigError::new(
                "ui.long_press_ms",
                format!("must be longer than debounce_ms ({} ms)", self.debounce_ms),
            ));
        }
        if self.both_held_ms == 0 {
            return Err(ConfigError::new("ui.both_held_ms", "must be longer than zero"));
        }
        if self.blank_after_secs < self.dim_after_secs {
            return Err(ConfigError::new(
                "ui.blank_after_secs",
                format!("must not be shorter than dim_after_secs ({} s)", self.dim_after_secs),
            ));
        }
        for (field, secs) in [
            ("ui.shift_every_secs", self.shift_every_secs),
            ("ui.confirm_timeout_secs", self.confirm_timeout_secs),
            ("ui.seed_timeout_secs", self.seed_timeout_secs),
        ] {
            if secs == 0 {
                return Err(ConfigError::new(field, "must be longer than zero"));
            }
        }
        Ok(())
    }
}

/// `[power]`: what happens after a safe shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowerSettings {
    /// The command (program and arguments) run once everything is persisted and "safe to
    /// unplug" is on the display. Unset: `["systemctl", "poweroff"]` on real hardware
    /// (`board = "auto"`), nothing on the sim and link boards. Empty: just exit.
    pub off_command: Option<Vec<String>>,
}

/// `[backup]`: where USB sticks appear, how they are unmounted, how many backups to keep and
/// when to warn about an old one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// Each directory directly under this one is an inserted stick (the image mounts USB
    /// partitions at `/run/boltbox/usb/<kernel name>`); backups go to `<stick>/boltbox-backups/`.
    pub sticks: PathBuf,
    /// After a backup the stick's name is written to this file and boltbox waits for the stick
    /// to be unmounted (a root-owned path unit on the image does it). With one, only mount
    /// points of FAT, exFAT or ext4 count as sticks. Unset: `/run/boltbox/eject` on real
    /// hardware (`board = "auto"`), none on the sim and link boards; `""`: none (a stick is
    /// then any directory and nothing is unmounted).
    pub eject_request: Option<PathBuf>,
    /// Backups of this node kept on a stick: the newest N (at least 1).
    pub keep: usize,
    /// The alerts page warns when the last verified backup is older than this many days (or
    /// there has never been one while the node has channels). 0: never.
    pub alert_after_days: u64,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            sticks: PathBuf::from("/run/boltbox/usb"),
            eject_request: None,
            keep: 5,
            alert_after_days: 7,
        }
    }
}

impl BackupSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.sticks.as_os_str().is_empty() {
            return Err(ConfigError::new("backup.sticks", "must not be empty"));
        }
        if self.keep == 0 {
            return Err(ConfigError::new("backup.keep", "must be at least 1 (the new backup)"));
        }
        Ok(())
    }
}

/// `[mirror]`: the live mirror of the channel state (docs/MIRROR.md): every commit of the
/// node's store also durable on a second medium before anyone is told it is. That medium is a
/// USB stick the owner chooses on the device ([`crate::mirror`]), or `dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorSettings {
    /// A fixed directory the mirror is written into instead of a chosen stick (its files go to
    /// `<dir>/boltbox-mirror/`), on another medium than the data partition. Unset or empty:
    /// the stick chosen on the device, if any.
    pub dir: Option<PathBuf>,
    /// `[mirror.vss]`: the remote mirror on VSS, if set.
    pub vss: Option<VssSettings>,
}

/// `[mirror.vss]`: the remote mirror on LDK's Versioned Storage Service
/// (`boltbox_node::mirror::vss`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VssSettings {
    /// The server's base URL, its `/vss` path included (`https://nas.lan:8443/vss`).
    pub url: String,
    /// A file holding a JWT for a server with the JWT authorizer; it must not be readable by
    /// group or others. Unset: the signature authorizer, with a key from the seed.
    pub token_file: Option<PathBuf>,
    /// A self-hosted server's certificate (PEM), the only one trusted for it (pinned).
    pub certificate: Option<PathBuf>,
}

impl VssSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.trim();
        let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
            return Err(ConfigError::new("mirror.vss.url", "must begin with https:// (or http://)"));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(ConfigError::new("mirror.vss.url", "has no host"));
        }
        if authority.contains('@') {
            // It would be shown in the log and on the OLED.
            return Err(ConfigError::new("mirror.vss.url", "must not hold credentials: use token_file"));
        }
        if self.certificate.is_some() && !url.starts_with("https://") {
            return Err(ConfigError::new(
                "mirror.vss.certificate",
                "a pinned certificate needs an https:// url",
            ));
        }
        for (field, path) in
            [("mirror.vss.token_file", &self.token_file), ("mirror.vss.certificate", &self.certificate)]
        {
            if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                return Err(ConfigError::new(field, "must be an absolute path"));
            }
        }
        Ok(())
    }

    /// What the remote mirror writes with, reading the token and certificate files: a clear
    /// reason when one cannot be used (the token's contents never appear in it).
    pub fn setup(
        &self,
        seed: &boltbox_node::Seed,
        config: &boltbox_node::NodeConfig,
        workers: boltbox_node::backup::Workers,
    ) -> Result<boltbox_node::mirror::vss::VssSetup, String> {
        // The token is read (and its file's mode checked) at each connection: a renewed token
        // is taken up without a restart.
        let auth = match &self.token_file {
            None => boltbox_node::mirror::vss::VssAuth::Signature,
            Some(path) => boltbox_node::mirror::vss::VssAuth::BearerFile(path.clone()),
        };
        let certificate = match &self.certificate {
            None => None,
            Some(path) => Some(
                std::fs::read(path).map_err(|e| format!("the VSS certificate {}: {e}", path.display()))?,
            ),
        };
        let node_id = seed.node_id(config.network).map_err(|e| e.to_string())?;
        Ok(boltbox_node::mirror::vss::VssSetup {
            url: self.url.trim().trim_end_matches('/').to_string(),
            auth,
            certificate,
            seed: seed.clone(),
            config: config.clone(),
            node_id,
            workers,
        })
    }
}

impl MirrorSettings {
    /// The mirror's directory, if one is set.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref().filter(|d| !d.as_os_str().is_empty())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(dir) = self.dir() {
            if !dir.is_absolute() {
                return Err(ConfigError::new(
                    "mirror.dir",
                    format!("{} is not an absolute path", dir.display()),
                ));
            }
        }
        self.vss.as_ref().map_or(Ok(()), VssSettings::validate)
    }
}

/// `[system]`: the OS settings of the boltbox image (host name, network, Wi-Fi, SSH). The
/// image's `boltbox-setup` validates and applies them at boot; boltbox keeps only the Wi-Fi
/// network's name, to say why there is no network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemSection {
    wifi_ssid: Option<String>,
}

impl SystemSection {
    /// The SSID of `[system.wifi]`, if Wi-Fi is configured.
    pub fn wifi_ssid(&self) -> Option<String> {
        self.wifi_ssid.clone()
    }
}

impl<'de> Deserialize<'de> for SystemSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(deserializer)?;
        let wifi_ssid = table
            .get("wifi")
            .and_then(|wifi| wifi.get("ssid"))
            .and_then(|ssid| ssid.as_str())
            .map(|ssid| ssid.chars().take(32).collect());
        Ok(SystemSection { wifi_ssid })
    }
}

/// The whole `boltbox.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    /// The Lightning node.
    pub node: NodeConfig,
    /// Display, buttons and which backends.
    pub board: BoardConfig,
    /// Button thresholds and display timings.
    pub ui: UiSettings,
    /// Overrides of the tuned tokio runtime.
    pub runtime: RuntimeOverrides,
    /// Power-off after a safe shutdown.
    pub power: PowerSettings,
    /// Backups to USB sticks.
    pub backup: BackupSettings,
    /// The live mirror.
    pub mirror: MirrorSettings,
    /// The image's OS settings, not boltbox's.
    pub system: SystemSection,
}

impl AppConfig {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<AppConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read: {e}")))?;
        Self::parse(&text)
    }

    /// Parses and validates the text of a config file.
    pub fn parse(text: &str) -> Result<AppConfig, ConfigError> {
        let mut config: AppConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        config.node.resolve_default_chain();
        config.validate()?;
        Ok(config)
    }

    /// Checks every section; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.node.validate()?;
        self.board.validate().map_err(|e| ConfigError::new(format!("board.{}", e.field), e.reason))?;
        self.ui.validate()?;
        // The overrides' ranges do not depend on the board, so any plausible facts check them
        // here, before the board is known; the real plan is derived from the board's facts.
        let nominal = BoardFacts { cores: 4, memory_bytes: 1 << 30 };
        RuntimePlan::derive(nominal)
            .and_then(|plan| plan.with_overrides(&self.runtime))
            .map_err(runtime_error)?;
        self.backup.validate()?;
        self.mirror.validate()?;
        if let Some([program, ..]) = self.power.off_command.as_deref() {
            if program.is_empty() {
                return Err(ConfigError::new("power.off_command", "the program name is empty"));
            }
        }
        Ok(())
    }

    /// The file a stick's name is written to for unmounting it, if any (see
    /// [`BackupSettings::eject_request`]).
    pub fn eject_request(&self) -> Option<PathBuf> {
        match &self.backup.eject_request {
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(path.clone()),
            None if self.board.validate() == Ok(BoardKind::Auto) => Some(PathBuf::from("/run/boltbox/eject")),
            None => None,
        }
    }

    /// The power-off command to run after a safe shutdown; empty: none, just exit.
    pub fn off_command(&self) -> Vec<String> {
        match &self.power.off_command {
            Some(command) => command.clone(),
            None if self.board.validate() == Ok(BoardKind::Auto) => {
                vec!["systemctl".into(), "poweroff".into()]
            }
            None => Vec::new(),
        }
    }
}

/// A runtime error as a config error naming the `[runtime]` field when it is about one.
pub fn runtime_error(e: RuntimeError) -> ConfigError {
    match e {
        RuntimeError::InvalidOverride { field, reason } => {
            ConfigError::new(format!("runtime.{field}"), reason)
        }
        other => ConfigError::new("runtime", other.to_string()),
    }
}

/// Whether the field holds a secret (a password, a key, a token): its value is never shown.
fn secret_field(field: &str) -> bool {
    let last = field.rsplit('.').next().unwrap_or(field);
    ["password", "secret", "token", "key"].iter().any(|word| last.contains(word))
}

/// The values written for secret fields in `text` (`rpc_password = ...`, `password = ...`), as
/// they appear there.
fn secret_values(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| secret_field(key.trim().trim_matches('"')))
        .map(|(_, value)| value.split('#').next().unwrap_or("").trim().trim_matches(['"', '\'']).to_string())
        .filter(|value| !value.is_empty())
        .collect()
}

/// `message` with every `` `quoted` `` part replaced by `***`: TOML quotes the value it found
/// ("invalid type: integer `12345`, expected a string").
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("`***`");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// A TOML syntax or type error, naming the field at the error's position; the value of a secret
/// field is not repeated.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = match e.message().trim() {
        "" => "not valid TOML here",
        message => message,
    };
    let mut field = e.span().map(|span| field_at(text, span.start)).unwrap_or_default();
    // Some errors point at the table rather than the key (tagged tables such as `node.chain`);
    // an unknown key is named in the message, so name it in the field too.
    let unknown = message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next());
    if let Some(key) = unknown.filter(|key| field != *key && !field.ends_with(&format!(".{key}"))) {
        field = if field.is_empty() { key.to_string() } else { format!("{field}.{key}") };
    }
    if field.is_empty() {
        field = "config".into();
    }
    // The error may name the table rather than the key (tagged tables such as `node.chain`): a
    // message that quotes a secret's value is redacted too.
    let secrets = secret_values(text);
    if secret_field(&field) || secrets.iter().any(|secret| message.contains(secret.as_str())) {
        return ConfigError::new(field, redact(message));
    }
    ConfigError::new(field, message)
}

/// The dotted name of the key at byte `offset`: the last `[table]` header before it, then the
/// key on its line. Keys inside inline tables are named by their outer key, which is enough to
/// find the line.
fn field_at(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let trimmed = line.trim();
        let header = trimmed.strip_prefix('[').and_then(|h| h.split(']').next());
        if let Some(header) = header {
            table = header.trim_start_matches('[').trim().to_string();
        }
        if offset < end || end == text.len() {
            let key = match trimmed.split_once('=') {
                Some((key, _)) if header.is_none() => key.trim().trim_matches('"').to_string(),
                _ => String::new(),
            };
            return match (table.is_empty(), key.is_empty()) {
                (true, _) => key,
                (false, true) => table,
                (false, false) => format!("{table}.{key}"),
            };
        }
        start = end;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[node]\nnetwork = \"regtest\"\n\n[node.chain]\nsource = \"bitcoind\"\n\
                           rpc_user = \"u\"\nrpc_password = \"p\"\n";

    fn error(text: &str) -> ConfigError {
        AppConfig::parse(text).expect_err("invalid")
    }

    #[test]
    fn the_example_file_parses_and_validates() {
        let text = include_str!("../boltbox.example.toml");
        let config = AppConfig::parse(text).expect("example config");
        assert_eq!(config.node.alias, "boltbox");
        assert_eq!(config.board.board, "auto");
        assert_eq!(config.ui, UiSettings::default());
        assert_eq!(config.off_command(), ["systemctl", "poweroff"]);
        assert_eq!(config.backup.keep, 5);
        assert_eq!(config.eject_request(), Some(PathBuf::from("/run/boltbox/eject")));
    }

    #[test]
    fn sticks_are_unmounted_only_on_real_hardware_unless_configured() {
        let link = format!("{MINIMAL}\n[board]\nboard = \"link:/tmp/x.sock\"\n");
        assert_eq!(AppConfig::parse(&link).expect("link").eject_request(), None);
        let none = format!("{MINIMAL}\n[backup]\neject_request = \"\"\n");
        assert_eq!(AppConfig::parse(&none).expect("none").eject_request(), None);
        let custom = format!("{MINIMAL}\n[backup]\neject_request = \"/run/e\"\n");
        assert_eq!(AppConfig::parse(&custom).expect("custom").eject_request(), Some(PathBuf::from("/run/e")));
    }

    #[test]
    fn the_image_template_runs_on_mainnet_with_no_edits() {
        let config = AppConfig::parse(include_str!("../../image/boltbox.toml")).expect("the shipped file");
        assert_eq!(config.node.network, boltbox_node::Network::Bitcoin);
        assert_eq!(
            config.node.chain,
            boltbox_node::ChainSource::Electrum { url: boltbox_node::config::MAINNET_ELECTRUM.into() }
        );
        let text = format!("{MINIMAL}\n[system]\nhostname = \"x\"\n\n[system.wifi]\nssid = \"y\"\n");
        let system = AppConfig::parse(&text).expect("system section").system;
        assert_eq!(system.wifi_ssid().as_deref(), Some("y"));
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let config = AppConfig::parse(MINIMAL).expect("minimal config");
        assert_eq!(config.board, BoardConfig::default());
        assert_eq!(config.ui.gestures(), GestureConfig::default());
        assert_eq!(config.ui.ui(config.board.panel()), UiConfig::default());
        assert_eq!(config.runtime, RuntimeOverrides::default());
    }

    #[test]
    fn power_off_defaults_to_systemd_only_on_real_hardware() {
        let link = format!("{MINIMAL}\n[board]\nboard = \"link:/tmp/x.sock\"\n");
        assert!(AppConfig::parse(&link).expect("link").off_command().is_empty());
        let empty = format!("{MINIMAL}\n[power]\noff_command = []\n");
        assert!(AppConfig::parse(&empty).expect("empty").off_command().is_empty());
        let custom = format!("{MINIMAL}\n[power]\noff_command = [\"halt\", \"-p\"]\n");
        assert_eq!(AppConfig::parse(&custom).expect("custom").off_command(), ["halt", "-p"]);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (format!("{MINIMAL}alias_typo = 1\n"), "node.chain.alias_typo"),
            ("[node]\nalias = 5\n".to_string(), "node.alias"),
            ("[node]\nalias = \"\"\n".to_string(), "node.alias"),
            ("[nod]\n".to_string(), "nod"),
            (format!("{MINIMAL}\n[board]\ni2c_address = 0x40\n"), "board.i2c_address"),
            (format!("{MINIMAL}\n[board]\nboard = \"hdmi\"\n"), "board.board"),
            (format!("{MINIMAL}\n[ui]\nlong_press_ms = 10\n"), "ui.long_press_ms"),
            (format!("{MINIMAL}\n[ui]\nlong_pres_ms = 10\n"), "ui.long_pres_ms"),
            (format!("{MINIMAL}\n[runtime]\nworker_threads = 0\n"), "runtime.worker_threads"),
            (format!("{MINIMAL}\n[power]\noff_command = [\"\"]\n"), "power.off_command"),
            (format!("{MINIMAL}\n[backup]\nkeep = 0\n"), "backup.keep"),
            (format!("{MINIMAL}\n[backup]\nsticks = \"\"\n"), "backup.sticks"),
            ("[node\n".to_string(), "node"),
        ];
        for (text, field) in cases {
            let e = error(&text);
            assert_eq!(e.field, field, "{text:?} gave {e}");
            assert!(!e.reason.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn a_secret_is_never_repeated_in_an_error() {
        let text = "[node]\nnetwork = \"regtest\"\n[node.chain]\nsource = \"bitcoind\"\nrpc_user = \"u\"\n\
                    rpc_password = 918273645\n";
        let e = error(text);
        assert!(e.field.starts_with("node.chain"), "{e}");
        assert!(!e.to_string().contains("918273645"), "{e}");
        let text = format!("{MINIMAL}\n[system.wifi]\nssid = \"home\"\npassword = 555123\n");
        // [system] belongs to the image's boltbox-setup; boltbox takes it whatever it holds.
        assert!(AppConfig::parse(&text).is_ok());
        let text = "[node]\nnetwork = \"regtest\"\n[node.chain]\nsource = \"esplora\"\n\
                    url = \"ftp://me:hunter2@esplora.example\"\n";
        let e = error(text);
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let e = AppConfig::load(Path::new("/nonexistent/boltbox.toml")).expect_err("missing");
        assert_eq!(e.field, "/nonexistent/boltbox.toml");
    }

    mod arbitrary_input {
        use proptest::prelude::*;

        use super::*;
        use crate::screens::{SystemInfo, samples};
        use crate::ui::{Context, Service, Ui};

        const SECTIONS: &[&str] = &[
            "node",
            "node.chain",
            "node.channel",
            "board",
            "ui",
            "runtime",
            "power",
            "backup",
            "system",
            "system.wifi",
        ];
        const KEYS: &[&str] = &[
            "alias",
            "network",
            "listen",
            "announce",
            "gossip",
            "trusted_peers",
            "rpc_host",
            "rpc_port",
            "rpc_password",
            "rpc_cookie",
            "url",
            "source",
            "cltv_expiry_delta",
            "forwarding_fee_proportional_millionths",
            "forwarding_fee_base_msat",
            "anchor_reserve_sats",
            "board",
            "i2c_address",
            "button_a",
            "gpio_chip",
            "debounce_ms",
            "long_press_ms",
            "both_held_ms",
            "dim_after_secs",
            "blank_after_secs",
            "shift_every_secs",
            "confirm_timeout_secs",
            "seed_timeout_secs",
            "bright",
            "dim",
            "worker_threads",
            "max_blocking_threads",
            "thread_stack_bytes",
            "engine_threads",
            "off_command",
            "keep",
            "alert_after_days",
            "sticks",
            "eject_request",
            "ssid",
            "password",
        ];

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                "\"[^\"\\\\]{0,40}\"",
                Just("true".to_string()),
                Just("[]".to_string()),
                Just("[\"\"]".to_string()),
                any::<f64>().prop_map(|f| format!("{f:?}")),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            /// Any text is a config or an error naming a field, never a panic.
            #[test]
            fn any_text_is_a_config_or_an_error(text in ".{0,300}") {
                if let Err(e) = AppConfig::parse(&text) {
                    prop_assert!(!e.field.is_empty() && !e.reason.is_empty());
                }
            }

            /// Any value of a known field is taken or refused, and a config that is taken is
            /// usable: the gestures, the UI's timings (ticked far into the future), the runtime
            /// plan and the commands derived from it do not panic.
            #[test]
            fn any_value_of_a_known_field_gives_a_usable_config_or_an_error(
                section in proptest::sample::select(SECTIONS),
                key in proptest::sample::select(KEYS),
                value in value(),
            ) {
                let text = format!(
                    "[node]\nnetwork = \"regtest\"\n[node.chain]\nsource = \"electrum\"\nurl = \"tcp://127.0.0.1:1\"\n\
                     [{section}]\n{key} = {value}\n"
                );
                let Ok(config) = AppConfig::parse(&text) else { return Ok(()) };
                let _ = config.ui.gestures();
                let _ = config.off_command();
                let _ = config.eject_request();
                let facts = BoardFacts { cores: 4, memory_bytes: 1 << 30 };
                let _ = RuntimePlan::derive(facts).and_then(|plan| plan.with_overrides(&config.runtime));
                let mut ui = Ui::new(config.ui.ui(config.board.panel()));
                let status = samples::synced();
                let system = SystemInfo::default();
                let none = || None;
                let ctx = Context {
                    status: &status,
                    system: &system,
                    ip: None,
                    backup_available: false,
                    backup: None,
                    shutdown: None,
                    seed: &none,
                    service: Service::Running,
                    seed_reminder: false,
                    mirror_ask: None,
                };
                for secs in [0, 1, 3600, u64::MAX / 4, u64::MAX] {
                    ui.tick(Duration::from_secs(secs), &[], &ctx);
                }
            }
        }
    }
}

//! The `[system]` section of `boltbox.toml`: host name, wired network, Wi-Fi and SSH. The
//! appliance ignores this section; this module validates it (errors name the field, like the
//! appliance's own), renders the system files, writes them under a root directory and turns the
//! matching services on or off.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::{SetupError, io_error, run};

/// `[system]` as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemConfig {
    /// The host name on the network.
    pub hostname: String,
    /// Public keys that may log in as root over SSH. Empty: SSH is off.
    pub ssh_authorized_keys: Vec<String>,
    /// `[system.network]`: the wired interface.
    pub network: WiredConfig,
    /// `[system.wifi]`: Wi-Fi, off when absent.
    pub wifi: Option<WifiConfig>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            hostname: "boltbox".into(),
            ssh_authorized_keys: Vec::new(),
            network: WiredConfig::default(),
            wifi: None,
        }
    }
}

/// `[system.network]`: DHCP unless `address` is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WiredConfig {
    /// A static address with its prefix length, e.g. `192.168.1.50/24`.
    pub address: Option<String>,
    /// The default gateway (with `address`).
    pub gateway: Option<String>,
    /// DNS servers, in addition to those DHCP gives.
    pub dns: Vec<String>,
}

/// `[system.wifi]`: one network, addressed by DHCP. Its `Debug` leaves the password out.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WifiConfig {
    /// The network's name.
    pub ssid: String,
    /// The WPA2/WPA3 passphrase; absent for an open network.
    pub password: Option<String>,
    /// The two-letter regulatory country, e.g. `DE`.
    pub country: Option<String>,
}

impl std::fmt::Debug for WifiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WifiConfig")
            .field("ssid", &self.ssid)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("country", &self.country)
            .finish()
    }
}

/// The whole file as this program sees it: only `[system]`; the appliance checks the rest.
#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    system: SystemConfig,
}

/// A validated wired setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wired {
    /// Static address and prefix length; `None`: DHCP.
    pub address: Option<(IpAddr, u8)>,
    /// Default gateway.
    pub gateway: Option<IpAddr>,
    /// Extra DNS servers.
    pub dns: Vec<IpAddr>,
}

/// A validated `[system]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct System {
    /// Host name.
    pub hostname: String,
    /// SSH public keys; empty: SSH off.
    pub ssh_keys: Vec<String>,
    /// Wired network.
    pub wired: Wired,
    /// Wi-Fi.
    pub wifi: Option<WifiConfig>,
}

/// Reads `[system]` from the `boltbox.toml` at `path`.
pub fn load(path: &Path) -> Result<System, SetupError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| SetupError::Read { path: path.to_path_buf(), source })?;
    parse(&text)
}

/// Parses and validates `[system]` from the text of a `boltbox.toml`.
pub fn parse(text: &str) -> Result<System, SetupError> {
    let file: File = toml::from_str(text).map_err(|e| {
        // The TOML error says which key; the appliance reports the file's other sections. The
        // value it quotes may be the Wi-Fi password: quoted values are not repeated.
        let message: String = e
            .message()
            .trim()
            .split('`')
            .enumerate()
            .map(|(i, part)| if i % 2 == 1 { "`***`" } else { part })
            .collect();
        SetupError::config("system", message)
    })?;
    validate(file.system)
}

fn validate(config: SystemConfig) -> Result<System, SetupError> {
    let hostname = config.hostname;
    let valid_label = !hostname.is_empty()
        && hostname.len() <= 63
        && hostname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !hostname.starts_with('-')
        && !hostname.ends_with('-');
    if !valid_label {
        return Err(SetupError::config(
            "system.hostname",
            format!("{hostname:?} is not a host name: 1-63 letters, digits and '-', not at either end"),
        ));
    }
    const KEY_TYPES: [&str; 7] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    for (i, key) in config.ssh_authorized_keys.iter().enumerate() {
        let mut words = key.split_whitespace();
        let known = words.next().is_some_and(|t| KEY_TYPES.contains(&t));
        if !known || words.next().is_none() || key.contains(['\n', '\r']) {
            return Err(SetupError::config(
                "system.ssh_authorized_keys",
                format!(
                    "entry {} is not an OpenSSH public key line (\"ssh-ed25519 AAAA... comment\")",
                    i + 1
                ),
            ));
        }
    }
    let wired = validate_wired(&config.network)?;
    if let Some(wifi) = &config.wifi {
        validate_wifi(wifi)?;
    }
    Ok(System { hostname, ssh_keys: config.ssh_authorized_keys, wired, wifi: config.wifi })
}

fn ip(field: &str, text: &str) -> Result<IpAddr, SetupError> {
    text.parse().map_err(|_| SetupError::config(field, format!("{text:?} is not an IP address")))
}

fn validate_wired(config: &WiredConfig) -> Result<Wired, SetupError> {
    let address = match &config.address {
        None => None,
        Some(text) => {
            let field = "system.network.address";
            let (addr, prefix) = text.split_once('/').ok_or_else(|| {
                SetupError::config(field, format!("{text:?} needs a prefix length, e.g. 192.168.1.50/24"))
            })?;
            let addr = ip(field, addr)?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = prefix.parse::<u8>().ok().filter(|p| (1..=max).contains(p)).ok_or_else(|| {
                SetupError::config(field, format!("prefix length {prefix:?} is not 1-{max}"))
            })?;
            Some((addr, prefix))
        }
    };
    let gateway = config.gateway.as_deref().map(|g| ip("system.network.gateway", g)).transpose()?;
    if gateway.is_some() && address.is_none() {
        return Err(SetupError::config(
            "system.network.gateway",
            "a gateway needs a static address; with DHCP the gateway comes from DHCP",
        ));
    }
    let dns = config.dns.iter().map(|d| ip("system.network.dns", d)).collect::<Result<_, _>>()?;
    Ok(Wired { address, gateway, dns })
}

fn validate_wifi(wifi: &WifiConfig) -> Result<(), SetupError> {
    if wifi.ssid.is_empty() || wifi.ssid.len() > 32 {
        return Err(SetupError::config("system.wifi.ssid", "must be 1 to 32 bytes"));
    }
    if let Some(password) = &wifi.password {
        let printable = password.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !(8..=63).contains(&password.len()) || !printable {
            return Err(SetupError::config(
                "system.wifi.password",
                "must be 8 to 63 printable ASCII characters (leave it out for an open network)",
            ));
        }
    }
    if let Some(country) = &wifi.country {
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(SetupError::config(
                "system.wifi.country",
                format!("{country:?} is not a two-letter country code such as \"DE\""),
            ));
        }
    }
    Ok(())
}

/// The systemd-networkd file for a static or DNS-amended wired setup; `None`: the image's
/// default (DHCP on every wired and wireless interface) applies.
pub fn wired_network_file(wired: &Wired) -> Option<String> {
    if wired.address.is_none() && wired.dns.is_empty() {
        return None;
    }
    let mut text = String::from(
        "# Written by boltbox-setup from [system.network] in /boot/firmware/boltbox.toml.\n\
         [Match]\nName=eth* en*\n\n[Network]\n",
    );
    match wired.address {
        Some((addr, prefix)) => text.push_str(&format!("Address={addr}/{prefix}\n")),
        None => text.push_str("DHCP=yes\n"),
    }
    if let Some(gateway) = wired.gateway {
        text.push_str(&format!("Gateway={gateway}\n"));
    }
    for dns in &wired.dns {
        text.push_str(&format!("DNS={dns}\n"));
    }
    Some(text)
}

/// The wpa_supplicant configuration for `wifi`. The SSID is written in hex so that any bytes
/// are safe; the passphrase between quotes (wpa_supplicant takes up to the last quote).
pub fn wpa_supplicant_file(wifi: &WifiConfig) -> String {
    let mut text = String::from(
        "# Written by boltbox-setup from [system.wifi] in /boot/firmware/boltbox.toml.\nupdate_config=0\n",
    );
    if let Some(country) = &wifi.country {
        text.push_str(&format!("country={country}\n"));
    }
    let ssid: String = wifi.ssid.bytes().map(|b| format!("{b:02x}")).collect();
    text.push_str(&format!("\nnetwork={{\n\tssid={ssid}\n"));
    match &wifi.password {
        Some(password) => text.push_str(&format!("\tpsk=\"{password}\"\n")),
        None => text.push_str("\tkey_mgmt=NONE\n"),
    }
    text.push_str("}\n");
    text
}

/// `/etc/hosts` with the `127.0.1.1` line naming `hostname` (Debian's convention), other
/// lines kept.
pub fn hosts_file(current: &str, hostname: &str) -> String {
    let mut text: String = current
        .lines()
        .filter(|line| !line.starts_with("127.0.1.1"))
        .map(|line| format!("{line}\n"))
        .collect();
    text.push_str(&format!("127.0.1.1\t{hostname}\n"));
    text
}

const WIRED_FILE: &str = "etc/systemd/network/10-boltbox-wired.network";
const WPA_FILE: &str = "etc/wpa_supplicant/wpa_supplicant-wlan0.conf";
const AUTHORIZED_KEYS: &str = "root/.ssh/authorized_keys";
const WIFI_UNIT: &str = "wpa_supplicant@wlan0.service";
const SSH_UNIT: &str = "ssh.service";

/// What [`write_files`] changed that the running system has to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The host name, to set on the running system.
    pub hostname: String,
    /// Whether Wi-Fi is configured (its service on) or not (off).
    pub wifi: bool,
    /// Whether SSH is enabled (keys given).
    pub ssh: bool,
    /// Whether host keys have to be made (SSH on and none there yet).
    pub host_keys_missing: bool,
}

/// Writes `path` under `root` with `mode` if its content differs; creates parent directories.
fn put(root: &Path, path: &str, text: &str, mode: u32) -> Result<(), SetupError> {
    let full = root.join(path);
    if std::fs::read_to_string(&full).is_ok_and(|old| old == text) {
        return Ok(());
    }
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(format!("creating {}", parent.display())))?;
    }
    // Written aside and renamed: a power cut leaves the old file or the new, never half.
    // Created with its mode (the umask can only take bits away), so that a passphrase is
    // never readable by others, not even for a moment.
    let temp = full.with_extension("boltbox-new");
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_error(format!("removing {}", temp.display()))(e));
        }
        _ => {}
    }
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(io_error(format!("creating {}", temp.display())))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_error(format!("setting the mode of {}", temp.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(format!("writing {}", temp.display())))?;
    std::fs::rename(&temp, &full).map_err(io_error(format!("replacing {}", full.display())))
}

fn remove(root: &Path, path: &str) -> Result<(), SetupError> {
    let full: PathBuf = root.join(path);
    match std::fs::remove_file(&full) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error(format!("removing {}", full.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Writes (or removes) the system files for `system` under `root` (`/` on the device).
pub fn write_files(root: &Path, system: &System) -> Result<Changes, SetupError> {
    put(root, "etc/hostname", &format!("{}\n", system.hostname), 0o644)?;
    let hosts_path = root.join("etc/hosts");
    let hosts = std::fs::read_to_string(&hosts_path).unwrap_or_default();
    put(root, "etc/hosts", &hosts_file(&hosts, &system.hostname), 0o644)?;
    match wired_network_file(&system.wired) {
        Some(text) => put(root, WIRED_FILE, &text, 0o644)?,
        None => remove(root, WIRED_FILE)?,
    }
    match &system.wifi {
        // The passphrase is a secret: readable by root only.
        Some(wifi) => put(root, WPA_FILE, &wpa_supplicant_file(wifi), 0o600)?,
        None => remove(root, WPA_FILE)?,
    }
    let ssh = !system.ssh_keys.is_empty();
    if ssh {
        let ssh_dir = root.join("root/.ssh");
        std::fs::create_dir_all(&ssh_dir).map_err(io_error(format!("creating {}", ssh_dir.display())))?;
        std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(format!("setting the mode of {}", ssh_dir.display())))?;
        put(root, AUTHORIZED_KEYS, &(system.ssh_keys.join("\n") + "\n"), 0o600)?;
    } else {
        remove(root, AUTHORIZED_KEYS)?;
    }
    let host_keys_missing = ssh && !root.join("etc/ssh/ssh_host_ed25519_key").exists();
    Ok(Changes { hostname: system.hostname.clone(), wifi: system.wifi.is_some(), ssh, host_keys_missing })
}

/// Makes the running system follow `changes`: host name, host keys, and the Wi-Fi and SSH
/// services enabled and started, or disabled and stopped. Starting is queued (`--no-block`):
/// this runs during boot, before the network is up.
pub fn apply(changes: &Changes) -> Result<(), SetupError> {
    run(Command::new("hostname").arg(&changes.hostname), None)?;
    if changes.host_keys_missing {
        // Made here, on the device, on the first boot with SSH on: never baked into the image.
        run(Command::new("ssh-keygen").arg("-A"), None)?;
    }
    for (unit, on) in [(WIFI_UNIT, changes.wifi), (SSH_UNIT, changes.ssh)] {
        let (enable, start) = if on { ("enable", "start") } else { ("disable", "stop") };
        // The link decides the next boots; this boot needs no daemon-reload for it (a reload
        // reruns every generator: seconds on a Pi, every boot).
        run(Command::new("systemctl").args(["--quiet", "--no-reload", enable, unit]), None)?;
        run(Command::new("systemctl").args(["--no-block", start, unit]), None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(text: &str) -> System {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn field(text: &str) -> String {
        match parse(text).expect_err(text) {
            SetupError::Config { field, reason } => {
                assert!(!reason.is_empty());
                field
            }
            other => panic!("{text:?}: {other}"),
        }
    }

    #[test]
    fn a_file_without_system_gets_the_defaults_and_other_sections_are_left_alone() {
        let s = system("[node]\nalias = \"x\"\n\n[board]\nboard = \"auto\"\n");
        assert_eq!(s.hostname, "boltbox");
        assert!(s.ssh_keys.is_empty() && s.wifi.is_none());
        assert_eq!(wired_network_file(&s.wired), None);
    }

    #[test]
    fn the_image_template_parses() {
        let s = system(include_str!("../../boltbox.toml"));
        assert_eq!(s.hostname, "boltbox");
        assert!(s.ssh_keys.is_empty(), "SSH is off in the shipped file");
    }

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(field("[system]\nhostname = \"-bad\"\n"), "system.hostname");
        assert_eq!(field("[system]\nhostname = \"a b\"\n"), "system.hostname");
        assert_eq!(
            field("[system]\nssh_authorized_keys = [\"password123\"]\n"),
            "system.ssh_authorized_keys"
        );
        assert_eq!(field("[system.network]\naddress = \"10.0.0.5\"\n"), "system.network.address");
        assert_eq!(field("[system.network]\naddress = \"10.0.0.5/33\"\n"), "system.network.address");
        assert_eq!(field("[system.network]\ngateway = \"10.0.0.1\"\n"), "system.network.gateway");
        assert_eq!(field("[system.network]\ndns = [\"one\"]\n"), "system.network.dns");
        assert_eq!(field("[system.wifi]\nssid = \"\"\n"), "system.wifi.ssid");
        assert_eq!(field("[system.wifi]\nssid = \"x\"\npassword = \"short\"\n"), "system.wifi.password");
        let e = parse("[system.wifi]\nssid = \"x\"\npassword = 87654321\n").expect_err("not a string");
        assert!(!e.to_string().contains("87654321"), "the password is not repeated: {e}");
        let wifi = WifiConfig { ssid: "x".into(), password: Some("hunter2hunter2".into()), country: None };
        assert!(!format!("{wifi:?}").contains("hunter2"));
        assert_eq!(field("[system.wifi]\nssid = \"x\"\ncountry = \"de\"\n"), "system.wifi.country");
        assert_eq!(field("[system]\nhostnme = \"x\"\n"), "system");
    }

    #[test]
    fn a_static_address_renders_a_networkd_file() {
        let s = system(
            "[system.network]\naddress = \"192.168.1.50/24\"\ngateway = \"192.168.1.1\"\n\
             dns = [\"192.168.1.1\", \"2001:db8::1\"]\n",
        );
        let file = wired_network_file(&s.wired).expect("a file");
        assert!(file.contains("Address=192.168.1.50/24\nGateway=192.168.1.1\n"), "{file}");
        assert!(file.contains("DNS=2001:db8::1\n") && !file.contains("DHCP"), "{file}");
    }

    #[test]
    fn wifi_writes_the_ssid_in_hex_and_keeps_the_passphrase_readable_by_root_only() {
        let s = system(
            "[system.wifi]\nssid = \"my \\\"net\\\"\"\npassword = \"pass \\\"word\\\" 1\"\ncountry = \"DE\"\n",
        );
        let text = wpa_supplicant_file(s.wifi.as_ref().expect("wifi"));
        assert!(text.contains("country=DE\n"), "{text}");
        assert!(text.contains("ssid=6d7920226e657422\n"), "{text}");
        assert!(text.contains("psk=\"pass \"word\" 1\"\n"), "{text}");
        let open = system("[system.wifi]\nssid = \"cafe\"\n");
        assert!(wpa_supplicant_file(open.wifi.as_ref().expect("wifi")).contains("key_mgmt=NONE"));

        let root = tempfile::tempdir().expect("tempdir");
        let changes = write_files(root.path(), &s).expect("write");
        assert!(changes.wifi && !changes.ssh);
        let mode = std::fs::metadata(root.path().join(WPA_FILE)).expect("wpa file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn ssh_is_on_only_with_keys_and_removing_them_turns_it_off() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("etc")).expect("etc");
        std::fs::write(root.path().join("etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\told\n")
            .expect("hosts");
        let on = system(
            "[system]\nhostname = \"node1\"\nssh_authorized_keys = [\"ssh-ed25519 AAAAC3Nza me@laptop\"]\n",
        );
        let changes = write_files(root.path(), &on).expect("write");
        assert!(changes.ssh && changes.host_keys_missing && !changes.wifi);
        let keys = std::fs::read_to_string(root.path().join(AUTHORIZED_KEYS)).expect("keys");
        assert_eq!(keys, "ssh-ed25519 AAAAC3Nza me@laptop\n");
        let hosts = std::fs::read_to_string(root.path().join("etc/hosts")).expect("hosts");
        assert_eq!(hosts, "127.0.0.1\tlocalhost\n127.0.1.1\tnode1\n");

        let off = system("[system]\nhostname = \"node1\"\n");
        let changes = write_files(root.path(), &off).expect("write");
        assert!(!changes.ssh && !changes.host_keys_missing);
        assert!(!root.path().join(AUTHORIZED_KEYS).exists());
    }

    mod arbitrary_input {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            /// Any `[system]` value is applied or refused with its field, never a panic, and a
            /// refused password is never repeated.
            #[test]
            fn any_system_value_is_taken_or_refused(
                key in proptest::sample::select(&["hostname", "ssh_authorized_keys", "address", "gateway", "dns", "ssid", "password", "country"][..]),
                table in proptest::sample::select(&["system", "system.network", "system.wifi"][..]),
                value in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), "\"[^\"\\\\]{0,70}\"", Just("[\"x\"]".to_string())],
            ) {
                let ssid = if table == "system.wifi" && key != "ssid" { "ssid = \"net\"\n" } else { "" };
                let text = format!("[{table}]\n{ssid}{key} = {value}\n");
                match parse(&text) {
                    Ok(system) => {
                        if let Some(wifi) = &system.wifi {
                            let _ = wpa_supplicant_file(wifi);
                        }
                        let _ = wired_network_file(&system.wired);
                        let _ = hosts_file("127.0.0.1 localhost\n", &system.hostname);
                    }
                    Err(e) if key == "password" => {
                        let secret = value.trim_matches('"');
                        prop_assert!(secret.len() < 4 || !e.to_string().contains(secret), "{}", e);
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

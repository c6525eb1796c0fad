//! The status screens that A pages through: home, channels, earnings, network, system, alerts.

use std::net::IpAddr;

use boltbox_board::PanelSize;
use boltbox_node::mirror::MirrorStatus;
use boltbox_node::mirror::vss::VssStatus;
use boltbox_node::{Network, Status};
use qrcode::{Color, EcLevel, QrCode};

use super::draw::{
    Align, BIG, BODY, Canvas, H, MEDIUM, SMALL, W, clip, fit, msat_as_sats, short_duration, thousands,
};
use super::{Rendered, SystemInfo};

/// Characters that fit in the title bar: 124 px of 6 px glyphs.
const HEADER_CHARS: usize = 20;

/// "!2" when there are alerts, so every status screen says that something needs a look.
fn badge(status: &Status) -> String {
    if status.alerts.is_empty() { String::new() } else { format!("!{}", status.alerts.len()) }
}

/// The title bar with `title` cut to leave room for `note`.
fn header(c: &mut Canvas, title: &str, note: &str) {
    let room = HEADER_CHARS.saturating_sub(note.chars().count() + usize::from(!note.is_empty()));
    c.header(&clip(title, room), note);
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Home: the alias, then sync progress while syncing, else the lightning (big) and on-chain
/// balances; the block height in the title bar once synced; peers and usable/total channels.
pub fn home(status: &Status) -> Rendered {
    let mut c = Canvas::new("home");
    let synced = status.running && !status.sync.syncing;
    let mut note = badge(status);
    // Once synced the height goes in the title bar, but only where the alias leaves room: the
    // alias is how the owner tells boxes apart (and what the image boot test looks for).
    let height = thousands(u64::from(status.sync.lightning_height));
    let with_height = if note.is_empty() { height } else { format!("{note} {height}") };
    if synced && status.alias.chars().count() + 1 + with_height.chars().count() <= HEADER_CHARS {
        note = with_height;
    }
    header(&mut c, &status.alias, &note);

    if !status.running {
        c.text("starting", BIG, 16, Align::Center);
        c.text("node not running yet", BODY, 36, Align::Center);
    } else if status.sync.syncing {
        let height = thousands(u64::from(status.sync.lightning_height));
        match (status.sync.progress(), status.sync.chain_tip) {
            (Some(p), Some(tip)) => {
                let percent = (p * 100.0).floor() as u32;
                c.text_in(&format!("{percent}%"), BIG, 0, 44, 14, Align::Left);
                c.bar(48, 16, W - 49, 16, p, &format!("sync {percent}%"));
                let line = format!("{height}/{}", thousands(u64::from(tip)));
                c.text(&line, fit(&line, W, &[BODY, SMALL]), 36, Align::Center);
            }
            _ => {
                c.text("syncing", BIG, 14, Align::Center);
                c.text(&format!("height {height}"), BODY, 36, Align::Center);
            }
        }
    } else {
        c.row("LN", &thousands(status.balances.lightning_sats), 13, 20, &[BIG, MEDIUM, BODY]);
        c.row("chain", &thousands(status.balances.onchain_total_sats), 36, 13, &[MEDIUM, BODY, SMALL]);
    }
    let channels = format!("{}/{} ch", status.usable_channels(), status.channels.len());
    c.text_in(&plural(status.peers_connected, "peer", "peers"), BODY, 0, W, 51, Align::Left);
    c.text_in(&channels, BODY, 0, W, 51, Align::Right);
    c.done()
}

/// The chain source in use and what it learns (the network page's second B).
pub fn chain_source(status: &Status) -> Rendered {
    let mut c = Canvas::new("chain source");
    header(&mut c, "chain source", &badge(status));
    let (kind, place) = status.chain_source.split_once(' ').unwrap_or((status.chain_source.as_str(), ""));
    c.text_in(if kind.is_empty() { "-" } else { kind }, BODY, 0, W, 12, Align::Left);
    for (i, line) in super::wrap_lines(place, 21, 2).iter().enumerate() {
        c.text_in(line, SMALL, 0, W, 25 + 10 * i as i32, Align::Left);
    }
    c.text_in("it sees your on-chain", SMALL, 0, W, 45, Align::Left);
    c.text_in("addresses and txs", SMALL, 0, W, 54, Align::Left);
    c.done()
}

/// One channel per page (`index` wraps around): peer id prefix and state, capacity, a bar of
/// our share, and what we can send (left) and receive (right), in sats.
pub fn channels(status: &Status, index: usize) -> Rendered {
    let mut c = Canvas::new("channels");
    let badge = badge(status);
    if status.channels.is_empty() {
        header(&mut c, "channels", &badge);
        c.text("no channels yet", BODY, 20, Align::Center);
        c.text("B: fund the node", SMALL, 38, Align::Center);
        c.text("then open a channel", SMALL, 49, Align::Center);
        return c.done();
    }
    let i = index % status.channels.len();
    let ch = &status.channels[i];
    header(&mut c, &format!("channel {}/{}", i + 1, status.channels.len()), &badge);
    let peer: String = ch.peer.chars().take(8).collect();
    c.text_in(&peer, MEDIUM, 0, W, 13, Align::Left);
    let state = if ch.pending {
        "pending"
    } else if ch.usable {
        "usable"
    } else {
        "offline"
    };
    c.text_in(state, BODY, 0, W, 13, Align::Right);
    c.row("capacity", &thousands(ch.capacity_sats), 27, 13, &[MEDIUM, BODY]);
    let total = ch.local_msat.saturating_add(ch.remote_msat);
    let share = if total == 0 { 0.0 } else { ch.local_msat as f64 / total as f64 };
    c.bar(1, 41, W - 2, 9, share, &format!("local {}%", (share * 100.0).round()));
    c.text_in(&thousands(ch.local_msat / 1000), BODY, 0, W, 51, Align::Left);
    c.text_in(&thousands(ch.remote_msat / 1000), BODY, 0, W, 51, Align::Right);
    c.done()
}

/// Routing fees earned today, in the last 7 days and in all, and payments sent and received.
pub fn earnings(status: &Status) -> Rendered {
    let mut c = Canvas::new("earnings");
    header(&mut c, "routing fees, sat", &badge(status));
    let e = &status.earnings;
    c.row("today", &msat_as_sats(e.today_msat), 13, 13, &[MEDIUM, BODY]);
    c.row("7 days", &msat_as_sats(e.week_msat), 26, 13, &[MEDIUM, BODY]);
    c.row("total", &msat_as_sats(e.total_msat), 39, 13, &[MEDIUM, BODY]);
    c.text_in(&format!("sent {}", status.payments.sent), BODY, 0, W, 51, Align::Left);
    c.text_in(&format!("recv {}", status.payments.received), BODY, 0, W, 51, Align::Right);
    c.done()
}

/// Accounts: how many, what they hold in all and in flight, and the two largest. Names are cut
/// to fit beside their balance.
pub fn accounts(status: &Status) -> Rendered {
    let mut c = Canvas::new("accounts");
    let a = &status.accounts;
    header(&mut c, &plural(a.count as usize, "account", "accounts"), &badge(status));
    if a.count == 0 {
        c.text("no accounts yet", BODY, 22, Align::Center);
        c.text("boltbox account new", BODY, 40, Align::Center);
        return c.done();
    }
    c.row("total", &msat_as_sats(a.total_msat), 13, 13, &[MEDIUM, BODY]);
    c.row("held", &msat_as_sats(a.held_msat), 26, 13, &[MEDIUM, BODY]);
    for (i, (name, msat)) in a.largest.iter().take(2).enumerate() {
        let sats = msat_as_sats(*msat);
        // 6 px glyphs: what the balance and a space leave of 20 columns.
        let room = 20usize.saturating_sub(sats.chars().count() + 1);
        c.row(&clip(name, room), &sats, 39 + 12 * i as i32, 13, &[BODY]);
    }
    c.done()
}

/// The port the node listens on, from the first listening address that has one.
fn listen_port(status: &Status) -> Option<u16> {
    status.listening.iter().find_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
}

/// The node's connection string `<node id>@<ip>:<port>`, or the bare node id when the address
/// is not known; none before the node has an id.
pub fn node_uri(status: &Status, ip: Option<IpAddr>) -> Option<String> {
    if status.node_id.is_empty() {
        return None;
    }
    Some(match (ip, listen_port(status)) {
        (Some(IpAddr::V4(ip)), Some(port)) => format!("{}@{ip}:{port}", status.node_id),
        (Some(IpAddr::V6(ip)), Some(port)) => format!("{}@[{ip}]:{port}", status.node_id),
        _ => status.node_id.clone(),
    })
}

/// Draws `code` with dark modules as unlit pixels on a lit box (a QR code is dark on light),
/// `scale` pixels per module, with a quiet zone of `quiet_x`/`quiet_y` pixels, at (x, y).
fn draw_qr(c: &mut Canvas, code: &QrCode, x: i32, y: i32, scale: i32, quiet_x: i32, quiet_y: i32) {
    let n = code.width() as i32;
    c.fill(x, y, n * scale + 2 * quiet_x, n * scale + 2 * quiet_y);
    for (i, color) in code.to_colors().into_iter().enumerate() {
        if color == Color::Dark {
            let (mx, my) = (i as i32 % n, i as i32 / n);
            for dy in 0..scale {
                for dx in 0..scale {
                    c.pixel(x + quiet_x + mx * scale + dx, y + quiet_y + my * scale + dy, false);
                }
            }
        }
    }
}

/// Pixels per module of an `n`-module QR code on `rows` rows with at least a module of quiet
/// zone above and below, or `None` when it does not fit even at one pixel per module.
fn qr_scale(n: i32, rows: i32) -> Option<i32> {
    let scale = rows / (n + 2);
    (scale >= 1).then_some(scale)
}

/// Instead of a QR code that does not fit the panel: where to get what it holds.
fn qr_too_big(c: &mut Canvas, cli: &str) {
    c.text("QR code too big", SMALL, 0, Align::Center);
    c.text("for this display:", SMALL, 11, Align::Center);
    c.text(cli, SMALL, 22, Align::Center);
}

fn network_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "mainnet",
        other => other.name(),
    }
}

/// Network: the IP address and port to reach the node, the chain, and the node URI as a QR
/// code (one pixel per module, which a phone reads from a hand's width away; B shows a bigger
/// one, see [`network_qr`]). On a 128x32 `panel` the URI's code does not fit and is left out
/// (the node id's, on B, does).
pub fn network(status: &Status, ip: Option<IpAddr>, panel: PanelSize) -> Rendered {
    let mut c = Canvas::new("network");
    let uri = node_uri(status, ip);
    // A URI is about 90 bytes: a version-5 code, 37 modules, plus a 4-module quiet zone.
    let code = uri.as_deref().and_then(|u| QrCode::with_error_correction_level(u, EcLevel::L).ok());
    let rows = panel.rows() as i32;
    let code = code.filter(|code| qr_scale(code.width() as i32, rows).is_some());
    let text_right = match &code {
        Some(code) => {
            let n = code.width() as i32;
            let quiet = ((H - n) / 2).clamp(0, 4);
            let size = n + 2 * quiet;
            let x = W - size;
            draw_qr(&mut c, code, x, (H - size) / 2, 1, quiet, quiet);
            x - 3
        }
        None => W,
    };
    header(&mut c, "network", &badge(status));
    let ip_text = ip.map_or_else(|| "no address".to_string(), |ip| ip.to_string());
    c.text_in(&ip_text, fit(&ip_text, text_right, &[BODY, SMALL]), 0, text_right, 14, Align::Left);
    let port = listen_port(status).map_or_else(|| "not listening".to_string(), |p| format!("port {p}"));
    c.text_in(&port, fit(&port, text_right, &[BODY, SMALL]), 0, text_right, 28, Align::Left);
    c.text_in(network_name(status.network), BODY, 0, text_right, 42, Align::Left);
    match (&uri, &code) {
        (Some(uri), Some(_)) => {
            c.text_in("B: big QR", SMALL, 0, text_right, 54, Align::Left);
            c.note(format!("qr {uri}"));
        }
        (Some(_), None) => c.text_in("B: node id QR", SMALL, 0, text_right, 54, Align::Left),
        (None, _) => c.text_in("no node id yet", SMALL, 0, text_right, 54, Align::Left),
    }
    c.done()
}

/// The node id as a full-screen QR code at two pixels per module (one on a 128x32 `panel`).
/// The id alone, in upper case, fits a version-3 code (29 modules, 58 px) that is easy to
/// scan; the whole URI would need a version-5 code, which only fits the 64 px height at one
/// pixel per module.
pub fn network_qr(status: &Status, panel: PanelSize) -> Rendered {
    let mut c = Canvas::new("network qr");
    let rows = panel.rows() as i32;
    let id = status.node_id.to_uppercase();
    let code = if id.is_empty() { None } else { QrCode::with_error_correction_level(&id, EcLevel::L).ok() };
    let Some(code) = code else {
        c.text("no node id yet", BODY, rows / 2 - 7, Align::Center);
        return c.done();
    };
    let n = code.width() as i32;
    let Some(scale) = qr_scale(n, rows) else {
        qr_too_big(&mut c, "boltbox status");
        return c.done();
    };
    let quiet_y = (rows - n * scale) / 2;
    let quiet_x = 4 * scale;
    let size_x = n * scale + 2 * quiet_x;
    let x = (W - size_x) / 2;
    draw_qr(&mut c, &code, x, (rows - n * scale - 2 * quiet_y) / 2, scale, quiet_x, quiet_y);
    let (upper, lower) = (rows / 2 - 10, rows / 2 + 1);
    c.text_in("node", SMALL, 0, x, upper, Align::Center);
    c.text_in("id", SMALL, 0, x, lower, Align::Center);
    c.text_in("B:", SMALL, x + size_x, W, upper, Align::Center);
    c.text_in("back", SMALL, x + size_x, W, lower, Align::Center);
    c.note(format!("qr {id}"));
    c.done()
}

/// An on-chain address to fund the node (B after the last channel), as a BIP 21 URI in a QR
/// code at two pixels per module (one on a 128x32 `panel`): upper case, so the code uses QR's
/// alphanumeric mode and a P2WPKH or P2TR address fits a version-3 code (29 modules, 58 px).
/// Until the node has revealed one ([`Status::funding_address`]) the screen says so.
pub fn funding(status: &Status, panel: PanelSize) -> Rendered {
    let mut c = Canvas::new("fund");
    let uri = status.funding_address.as_ref().map(|a| format!("bitcoin:{a}").to_uppercase());
    let code = uri.as_deref().and_then(|u| QrCode::with_error_correction_level(u, EcLevel::L).ok());
    let (Some(uri), Some(code)) = (uri, code) else {
        header(&mut c, "fund the node", &badge(status));
        let line = if status.running { "getting an address" } else { "the node is not running" };
        c.text(line, BODY, 28, Align::Center);
        c.text("B: back", SMALL, 49, Align::Center);
        return c.done();
    };
    let rows = panel.rows() as i32;
    let n = code.width() as i32;
    let Some(scale) = qr_scale(n, rows) else {
        qr_too_big(&mut c, "boltbox address");
        return c.done();
    };
    let quiet_y = (rows - n * scale) / 2;
    let quiet_x = 2 * scale;
    let size_x = n * scale + 2 * quiet_x;
    let x = W - size_x;
    draw_qr(&mut c, &code, x, (rows - n * scale - 2 * quiet_y) / 2, scale, quiet_x, quiet_y);
    if rows >= H {
        c.text_in("fund", SMALL, 0, x, 14, Align::Center);
        c.text_in("the node", SMALL, 0, x, 25, Align::Center);
        c.text_in("on-chain", SMALL, 0, x, 36, Align::Center);
        c.text_in("B: back", SMALL, 0, x, 54, Align::Center);
    } else {
        c.text_in("fund the node", SMALL, 0, x, 0, Align::Center);
        c.text_in("on-chain", SMALL, 0, x, 11, Align::Center);
        c.text_in("B: back", SMALL, 0, x, 22, Align::Center);
    }
    c.note(format!("qr {}", uri.to_lowercase()));
    c.done()
}

fn or_dash<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| "-".to_string(), show)
}

/// System: temperature and load, memory and disk use, executor workers, age of the last backup.
pub fn system(status: &Status, info: &SystemInfo) -> Rendered {
    let mut c = Canvas::new("system");
    header(&mut c, "system", &badge(status));
    let temp = or_dash(info.temperature_c, |t| format!("{t:.0} C"));
    let load = or_dash(info.load_1m, |l| format!("{l:.2}"));
    c.text_in(&format!("temp {temp}"), BODY, 0, W, 13, Align::Left);
    c.text_in(&format!("load {load}"), BODY, 0, W, 13, Align::Right);
    let mem = or_dash(info.memory, |m| format!("{}%", m.percent()));
    let disk = or_dash(info.disk, |d| format!("{}%", d.percent()));
    c.text_in(&format!("mem {mem}"), BODY, 0, W, 26, Align::Left);
    c.text_in(&format!("disk {disk}"), BODY, 0, W, 26, Align::Right);
    // With a live mirror its state matters more to the owner than the executor's workers.
    // (The stick's mirror first; a remote mirror that is lost shows in the alerts too.)
    match (mirror_line(&status.mirror), remote_mirror_line(&status.remote_mirror)) {
        (Some(state), _) => c.row("mirror", &state, 39, 13, &[BODY, SMALL]),
        (None, Some(state)) => c.row("vss", &state, 39, 13, &[BODY, SMALL]),
        (None, None) => c.row("workers", &or_dash(info.executor_workers, |n| n.to_string()), 39, 13, &[BODY]),
    }
    let backup = info
        .last_backup_age
        .map_or_else(|| "never".to_string(), |age| format!("{} ago", short_duration(age)));
    c.row("backup", &backup, 52, 12, &[BODY, SMALL]);
    c.done()
}

/// The live mirror's state in a few characters, if a mirror is chosen.
fn mirror_line(mirror: &MirrorStatus) -> Option<String> {
    match mirror {
        MirrorStatus::Off => None,
        MirrorStatus::Syncing { percent, .. } => Some(format!("sync {percent}%")),
        MirrorStatus::InSync { .. } => Some("in sync".into()),
        MirrorStatus::Lost { .. } => Some("LOST".into()),
    }
}

/// The remote mirror's state in a few characters, if one is set.
fn remote_mirror_line(remote: &VssStatus) -> Option<String> {
    match remote {
        VssStatus::Off => None,
        VssStatus::Syncing { percent, .. } => Some(format!("sync {percent}%")),
        VssStatus::InSync { .. } => Some("in sync".into()),
        VssStatus::Lost { behind, .. } => Some(format!("LOST -{behind}")),
        VssStatus::Refused { .. } => Some("REFUSED".into()),
    }
}

/// Alerts: one headline per line (three, then "+N more"), or "no alerts".
pub fn alerts(status: &Status) -> Rendered {
    let mut c = Canvas::new("alerts");
    let count = if status.alerts.is_empty() { String::new() } else { status.alerts.len().to_string() };
    header(&mut c, "alerts", &count);
    if status.alerts.is_empty() {
        c.text("no alerts", MEDIUM, 22, Align::Center);
        c.text("all good", SMALL, 42, Align::Center);
        return c.done();
    }
    let shown = if status.alerts.len() > 4 { 3 } else { status.alerts.len() };
    for (i, alert) in status.alerts.iter().take(shown).enumerate() {
        c.text_in(&clip(&alert.headline(), 21), BODY, 0, W, 13 + 13 * i as i32, Align::Left);
    }
    if status.alerts.len() > shown {
        c.text_in(&format!("+{} more", status.alerts.len() - shown), BODY, 0, W, 52, Align::Left);
    }
    c.done()
}

/// What an idle, blanked display shows: the alias (and the alert count) in small print at one
/// of many positions, picked by `step` (the UI advances it every few minutes), so that no pixel
/// stays lit for long against OLED burn-in while the box still shows it is alive.
pub fn screensaver(status: &Status, step: u64, panel: PanelSize) -> Rendered {
    let mut c = Canvas::new("screensaver");
    let rows = panel.rows() as i32;
    let mut text = clip(&status.alias, 16);
    if !status.alerts.is_empty() {
        text.push_str(&format!(" !{}", status.alerts.len()));
    }
    let free_x = (W - super::draw::text_width(&text, SMALL)).max(0) as u64 + 1;
    let free_y = (rows - SMALL.character_size.height as i32).max(0) as u64 + 1;
    // Steps by primes: successive positions are far apart and cycle through many before repeating.
    let x = (step.wrapping_mul(37) % free_x) as i32;
    let y = (step.wrapping_mul(23) % free_y) as i32;
    c.text_in(&text, SMALL, x, W, y, Align::Left);
    c.done()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::screens::samples;

    /// Reads the QR code back from the frame: module (mx, my) is dark when the pixel at its
    /// top-left is unlit.
    fn modules_in(frame: &boltbox_board::Frame, x: usize, y: usize, scale: usize, n: usize) -> Vec<bool> {
        (0..n * n).map(|i| !frame.get(x + (i % n) * scale, y + (i / n) * scale)).collect()
    }

    #[test]
    fn the_network_qr_code_is_drawn_module_for_module_on_a_lit_quiet_zone() {
        let status = samples::synced();
        let uri = node_uri(&status, Some(samples::SAMPLE_IP)).expect("uri");
        let code = QrCode::with_error_correction_level(&uri, EcLevel::L).expect("code");
        let n = code.width();
        assert_eq!(n, 37, "a URI is a version-5 code");
        let frame = network(&status, Some(samples::SAMPLE_IP), PanelSize::Size128x64).frame;
        let quiet = 4;
        let (x0, y0) = (128 - n - 2 * quiet, (64 - n - 2 * quiet) / 2);
        let dark: Vec<bool> = code.to_colors().iter().map(|c| *c == Color::Dark).collect();
        assert_eq!(modules_in(&frame, x0 + quiet, y0 + quiet, 1, n), dark);
        for i in 0..n + 2 * quiet {
            assert!(frame.get(x0 + i, y0), "quiet zone lit at the top");
            assert!(frame.get(x0, y0 + i), "quiet zone lit at the left");
        }
    }

    #[test]
    fn the_big_qr_code_has_two_pixels_per_module() {
        let status = samples::synced();
        let code =
            QrCode::with_error_correction_level(status.node_id.to_uppercase(), EcLevel::L).expect("code");
        let n = code.width();
        assert_eq!(n, 29, "an upper-case node id is a version-3 code");
        let frame = network_qr(&status, PanelSize::Size128x64).frame;
        let (x0, y0) = ((128 - (2 * n + 16)) / 2 + 8, (64 - 2 * n) / 2);
        let dark: Vec<bool> = code.to_colors().iter().map(|c| *c == Color::Dark).collect();
        assert_eq!(modules_in(&frame, x0, y0, 2, n), dark);
        assert_eq!(modules_in(&frame, x0 + 1, y0 + 1, 2, n), dark, "each module is 2x2");
    }

    #[test]
    fn the_funding_address_is_a_bip21_qr_code_at_two_pixels_per_module() {
        let status = samples::funded();
        let uri = "BITCOIN:BC1QAR0SRRR7XFKVY5L643LYDNW9RE59GTZZWF5MDQ";
        let code = QrCode::with_error_correction_level(uri, EcLevel::L).expect("code");
        let n = code.width();
        assert_eq!(n, 29, "an upper-case P2WPKH URI is a version-3 code");
        let shown = funding(&status, PanelSize::Size128x64);
        assert!(shown.caption.contains(&format!("qr {}", uri.to_lowercase())), "{}", shown.caption);
        let (x0, y0) = (128 - (2 * n + 8) + 4, (64 - 2 * n) / 2);
        let dark: Vec<bool> = code.to_colors().iter().map(|c| *c == Color::Dark).collect();
        assert_eq!(modules_in(&shown.frame, x0, y0, 2, n), dark);
        assert_eq!(modules_in(&shown.frame, x0 + 1, y0 + 1, 2, n), dark, "each module is 2x2");
        let waiting = funding(&samples::fresh(), PanelSize::Size128x64);
        assert!(waiting.caption.contains("getting an address"), "{}", waiting.caption);
    }

    #[test]
    fn on_a_128x32_panel_the_qr_codes_are_drawn_module_for_module_within_its_rows() {
        let small = PanelSize::Size128x32;
        let rows = 32;
        let status = samples::synced();
        let id = status.node_id.to_uppercase();
        let code = QrCode::with_error_correction_level(&id, EcLevel::L).expect("code");
        let n = code.width();
        let dark: Vec<bool> = code.to_colors().iter().map(|c| *c == Color::Dark).collect();
        let shown = network_qr(&status, small);
        let (x0, y0) = ((128 - (n + 8)) / 2 + 4, (rows - n) / 2);
        assert_eq!(modules_in(&shown.frame, x0, y0, 1, n), dark, "\n{}", shown.frame.to_ascii());
        for i in 0..n + 8 {
            assert!(shown.frame.get(x0 - 4 + i, y0 - 1), "quiet zone lit above the code");
            assert!(shown.frame.get(x0 - 4 + i, y0 + n), "quiet zone lit below the code");
        }
        assert!(shown.caption.contains(&format!("qr {id}")), "{}", shown.caption);

        let uri = "BITCOIN:BC1QAR0SRRR7XFKVY5L643LYDNW9RE59GTZZWF5MDQ";
        let code = QrCode::with_error_correction_level(uri, EcLevel::L).expect("code");
        let n = code.width();
        let dark: Vec<bool> = code.to_colors().iter().map(|c| *c == Color::Dark).collect();
        let shown = funding(&samples::funded(), small);
        let (x0, y0) = (128 - (n + 4) + 2, (rows - n) / 2);
        assert_eq!(modules_in(&shown.frame, x0, y0, 1, n), dark, "\n{}", shown.frame.to_ascii());
        for shown in [network_qr(&status, small), funding(&samples::funded(), small)] {
            assert!(shown.bands.iter().all(|b| usize::from(b.bottom) <= rows), "{:?}", shown.bands);
        }

        // The URI's version-5 code needs 39 rows: the network page leaves it out, says so by
        // offering the node id's, and does not claim a code it did not draw.
        let page = network(&status, Some(samples::SAMPLE_IP), small);
        assert!(!page.caption.contains("qr "), "{}", page.caption);
        assert!(page.caption.contains("B: node id QR"), "{}", page.caption);
        let saver = screensaver(&status, 7, small);
        assert!(saver.bands.iter().all(|b| usize::from(b.bottom) <= rows), "{:?}", saver.bands);
    }

    #[test]
    fn the_system_page_shows_the_mirror_in_place_of_the_workers_once_one_is_chosen() {
        let mut status = samples::synced();
        let info = samples::system_info();
        assert!(system(&status, &info).caption.contains("workers"));
        let dir = std::path::PathBuf::from("/stick");
        for (mirror, shown) in [
            (MirrorStatus::Syncing { dir: dir.clone(), percent: 40 }, "sync 40%"),
            (MirrorStatus::InSync { dir: dir.clone(), counter: 9 }, "in sync"),
            (MirrorStatus::Lost { dir: dir.clone(), reason: "gone".into(), since: 0 }, "LOST"),
        ] {
            status.mirror = mirror;
            let caption = system(&status, &info).caption;
            assert!(caption.contains("mirror") && caption.contains(shown), "{caption}");
            assert!(!caption.contains("workers"), "{caption}");
        }
    }

    #[test]
    fn the_system_page_shows_the_remote_mirror_when_no_stick_is_chosen() {
        let mut status = samples::synced();
        let info = samples::system_info();
        for (remote, shown) in [
            (VssStatus::Syncing { percent: 40, behind: 3 }, "sync 40%"),
            (VssStatus::InSync { counter: 9 }, "in sync"),
            (VssStatus::Lost { reason: "down".into(), since: 0, behind: 12 }, "LOST -12"),
            (VssStatus::Refused { reason: "another device".into() }, "REFUSED"),
        ] {
            status.remote_mirror = remote;
            let caption = system(&status, &info).caption;
            assert!(caption.contains("vss") && caption.contains(shown), "{caption}");
            assert!(!caption.contains("workers"), "{caption}");
        }
        // A chosen stick keeps its row; the remote mirror's trouble is in the alerts.
        status.mirror = MirrorStatus::InSync { dir: "/stick".into(), counter: 9 };
        let caption = system(&status, &info).caption;
        assert!(caption.contains("mirror") && !caption.contains("vss"), "{caption}");
    }

    #[test]
    fn node_uri_uses_the_address_and_the_listening_port() {
        let mut status = samples::synced();
        let id = status.node_id.clone();
        assert_eq!(node_uri(&status, Some(samples::SAMPLE_IP)), Some(format!("{id}@192.168.1.42:9735")));
        assert_eq!(
            node_uri(&status, Some(IpAddr::V6(Ipv6Addr::LOCALHOST))),
            Some(format!("{id}@[::1]:9735"))
        );
        assert_eq!(node_uri(&status, None), Some(id.clone()), "no address: the bare id");
        status.listening.clear();
        assert_eq!(node_uri(&status, Some(samples::SAMPLE_IP)), Some(id), "no port: the bare id");
        status.node_id.clear();
        assert_eq!(node_uri(&status, None), None);
    }

    #[test]
    fn home_shows_the_height_only_where_the_alias_leaves_room() {
        let fresh = home(&samples::fresh());
        assert!(fresh.caption.contains("boltbox 852,301"), "{}", fresh.caption);
        let synced = home(&samples::synced());
        assert!(synced.caption.contains("satoshi's box !2\n"), "{}", synced.caption);
    }

    #[test]
    fn home_while_syncing_without_a_known_tip_shows_the_height() {
        let mut status = samples::syncing();
        status.sync.chain_tip = None;
        let screen = home(&status);
        assert!(screen.caption.contains("syncing\nheight 524,288"), "{}", screen.caption);
    }

    #[test]
    fn channel_pages_wrap_and_show_the_state() {
        let status = samples::synced();
        assert_eq!(channels(&status, 3), channels(&status, 0));
        assert!(channels(&status, 2).caption.contains("offline"));
        assert!(channels(&samples::syncing(), 0).caption.contains("pending"));
    }

    #[test]
    fn more_than_four_alerts_end_in_a_count() {
        let mut status = samples::synced();
        for i in 0..4 {
            status.alerts.push(boltbox_node::Alert::PeerDown { peer: format!("03{i:062}") });
        }
        let screen = alerts(&status);
        assert!(screen.caption.ends_with("+3 more"), "{}", screen.caption);
    }

    #[test]
    fn the_screensaver_moves_but_stays_whole() {
        let status = samples::synced();
        let first = screensaver(&status, 0, PanelSize::Size128x64).frame;
        let lit = first.lit_pixels();
        let mut positions = std::collections::HashSet::new();
        for step in 0..50 {
            let frame = screensaver(&status, step, PanelSize::Size128x64).frame;
            assert_eq!(frame.lit_pixels(), lit, "step {step}: text cut at an edge");
            positions.insert(frame);
        }
        assert!(positions.len() > 40, "only {} positions", positions.len());
    }
}

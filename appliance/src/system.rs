//! Facts about the running machine for the system and network screens, read from /proc and
//! /sys. Each fact is optional: what cannot be read is shown as "-", never an error.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;

use crate::screens::{SystemInfo, Usage};

/// Reads the system screen's facts now. `data_dir` is the node's data directory (its
/// filesystem is the disk shown), `executor_workers` the runtime's worker threads.
pub fn read_system_info(data_dir: &Path, executor_workers: usize) -> SystemInfo {
    SystemInfo {
        temperature_c: read("/sys/class/thermal/thermal_zone0/temp").as_deref().and_then(parse_temperature),
        load_1m: read("/proc/loadavg").as_deref().and_then(parse_load),
        memory: read("/proc/meminfo").as_deref().and_then(parse_memory),
        disk: disk_usage(data_dir),
        executor_workers: Some(executor_workers),
        // Kept by the backup service, which the caller asks.
        last_backup_age: None,
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The thermal zone's millidegrees Celsius.
fn parse_temperature(text: &str) -> Option<f32> {
    let milli: i64 = text.trim().parse().ok()?;
    Some(milli as f32 / 1000.0)
}

/// The first field of /proc/loadavg.
fn parse_load(text: &str) -> Option<f32> {
    text.split_whitespace().next()?.parse().ok()
}

/// Memory in use (`MemTotal - MemAvailable`) and in all, from /proc/meminfo (kB).
fn parse_memory(text: &str) -> Option<Usage> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.strip_prefix(name)?.split_whitespace().next()?.parse().ok()?;
        kib.checked_mul(1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some(Usage { used: total.saturating_sub(available), total })
}

/// The filesystem holding `dir`: bytes in use and in all. A data dir not created yet counts
/// as its nearest existing parent.
fn disk_usage(dir: &Path) -> Option<Usage> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    let total = stat.f_blocks.checked_mul(stat.f_frsize)?;
    let free = stat.f_bfree.checked_mul(stat.f_frsize)?;
    Some(Usage { used: total.saturating_sub(free), total })
}

/// Where the image's boltbox-setup records that it could not grow the data partition.
pub const GROW_FAILED: &str = "/run/boltbox/data-grow-failed";

/// The alert for a data partition that did not grow on first boot, if `record` says so.
pub fn grow_alert(record: &Path) -> Option<boltbox_node::Alert> {
    let reason = boltbox_node::files::read_untrusted(record, 4096).ok()?;
    let reason = String::from_utf8_lossy(&reason).trim().to_string();
    Some(boltbox_node::Alert::Device {
        headline: "data not grown".into(),
        detail: format!("the data partition did not grow to fill the card ({reason}): it may fill up early"),
    })
}

/// The address other machines reach this one at: the source address the kernel picks for the
/// default route (a UDP "connect" sends nothing), or none without a route or when that is a
/// loopback address. That is the first non-loopback interface's address on a one-network
/// appliance, and the one that matters on a machine with several.
pub fn primary_ip() -> Option<IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // TEST-NET-1 (RFC 5737): never routed anywhere, only used to pick the route.
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_sys_formats() {
        assert_eq!(parse_temperature("48312\n"), Some(48.312));
        assert_eq!(parse_temperature("garbage"), None);
        assert_eq!(parse_load("0.52 0.58 0.59 1/389 12345\n"), Some(0.52));
        let meminfo = "MemTotal:        3884096 kB\nMemFree:  100 kB\nMemAvailable:    2884096 kB\n";
        assert_eq!(parse_memory(meminfo), Some(Usage { used: 1_000_000 * 1024, total: 3_884_096 * 1024 }));
        assert_eq!(parse_memory("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn a_data_partition_that_did_not_grow_is_an_alert() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = dir.path().join("data-grow-failed");
        assert_eq!(grow_alert(&record), None);
        std::fs::write(&record, "resize2fs failed\n").expect("write");
        let alert = grow_alert(&record).expect("an alert");
        assert_eq!(alert.headline(), "data not grown");
        assert!(alert.to_string().contains("resize2fs failed"), "{alert}");
    }

    #[test]
    fn reads_this_machine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let info = read_system_info(&dir.path().join("not-yet"), 3);
        assert_eq!(info.executor_workers, Some(3));
        let disk = info.disk.expect("the temp dir's filesystem");
        assert!(disk.total > 0 && disk.used <= disk.total, "{disk:?}");
        let memory = info.memory.expect("/proc/meminfo");
        assert!(memory.total > 0 && memory.used <= memory.total, "{memory:?}");
        assert!(info.load_1m.is_some());
    }

    mod arbitrary_input {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// What /proc and /sys hold is parsed or ignored, never a panic.
            #[test]
            fn any_proc_text_parses_or_is_ignored(text in "(MemTotal:|MemAvailable:|[0-9 .]|kB|\n|.){0,200}") {
                let _ = parse_memory(&text);
                let _ = parse_load(&text);
                let _ = parse_temperature(&text);
            }
        }
    }
}

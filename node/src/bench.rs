//! Benchmarks of the node's storage, printed by `cargo bench -p boltbox-node` and by
//! `boltbox bench` on the device. Every contender writes through LDK's `KVStoreSync` (what
//! the node does) with 1 KiB values and distinct keys per writer; a write counts once it has
//! returned, i.e. once it is durable.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ldk_node::io::sqlite_store::SqliteStore;
use ldk_node::lightning::util::persist::KVStoreSync;
use lightning_persister::fs_store::FilesystemStore;
use redb::TableDefinition;

use crate::store::Store;

/// One durable write of `value` under `key`.
type WriteFn = Box<dyn Fn(&str, Vec<u8>) -> std::io::Result<()> + Send + Sync>;

/// The stores compared, in table order.
pub const CONTENDERS: [&str; 4] = ["boltbox", "redb/write", "SqliteStore", "FilesystemStore"];
/// boltbox's store with the live mirror on, into `<cell>/stick/boltbox-mirror/` (the SD-card
/// model flushes it as a medium of its own, as the stick is on the device).
pub const MIRRORED: &str = "boltbox+mirror";

/// One measured cell.
#[derive(Debug, Clone)]
pub struct StoreRow {
    /// Which store.
    pub contender: &'static str,
    /// Concurrent writers.
    pub writers: usize,
    /// Durable writes per second.
    pub writes_per_sec: f64,
}

const PLAIN: TableDefinition<&str, &[u8]> = TableDefinition::new("plain");

fn open_contender(name: &str, dir: &Path) -> std::io::Result<WriteFn> {
    Ok(match name {
        "boltbox" => {
            let store = Store::open(&dir.join("boltbox.redb"))?;
            Box::new(move |k, v| Ok(KVStoreSync::write(&store, "bench", "", k, v)?))
        }
        MIRRORED => {
            use crate::mirror::{MirrorSetup, MirrorStatus};
            let seed = crate::Seed::generate();
            let node_id = seed.node_id(crate::Network::Regtest).map_err(std::io::Error::other)?;
            let store = Store::create_new(&dir.join("boltbox.redb"), Some(&node_id))?;
            // Snapshots are sealed on a runtime's workers, as in the node.
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build()?;
            store.mirror_to(MirrorSetup {
                dir: dir.join("stick"),
                seed,
                config: crate::NodeConfig {
                    network: crate::Network::Regtest,
                    ..crate::NodeConfig::default()
                },
                node_id,
                workers: crate::backup::Workers(runtime.handle().clone()),
            });
            // Measured from the mirror in sync: its first snapshot is not the steady state.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !matches!(store.mirror_status(), MirrorStatus::InSync { .. }) {
                if Instant::now() >= deadline {
                    return Err(std::io::Error::other(format!("the mirror: {:?}", store.mirror_status())));
                }
                KVStoreSync::write(&store, "bench", "", "sync", vec![0; 1024])?;
            }
            Box::new(move |k, v| {
                let _sealing = &runtime;
                Ok(KVStoreSync::write(&store, "bench", "", k, v)?)
            })
        }
        "redb/write" => {
            // redb without group commit: one write transaction (one fsync) per write.
            let db = Arc::new(redb::Database::create(dir.join("plain.redb")).map_err(std::io::Error::other)?);
            Box::new(move |k, v| {
                let txn = db.begin_write().map_err(std::io::Error::other)?;
                txn.open_table(PLAIN)
                    .map_err(std::io::Error::other)?
                    .insert(k, v.as_slice())
                    .map_err(std::io::Error::other)?;
                txn.commit().map_err(std::io::Error::other)
            })
        }
        "SqliteStore" => {
            let store = SqliteStore::new(dir.join("sqlite"), None, None)?;
            Box::new(move |k, v| Ok(KVStoreSync::write(&store, "bench", "", k, v)?))
        }
        "FilesystemStore" => {
            let store = FilesystemStore::new(dir.join("fs"));
            Box::new(move |k, v| Ok(KVStoreSync::write(&store, "bench", "", k, v)?))
        }
        other => return Err(std::io::Error::other(format!("unknown contender {other}"))),
    })
}

/// Measures durable writes/s of each of `contenders` ([`CONTENDERS`], [`MIRRORED`]) at each
/// writer count, `duration` per cell, in fresh directories under `dir`.
pub fn store_bench(
    dir: &Path,
    writers: &[usize],
    duration: Duration,
    contenders: &[&'static str],
) -> std::io::Result<Vec<StoreRow>> {
    let mut rows = Vec::new();
    for &n in writers {
        for &contender in contenders {
            let cell = dir.join(format!("{contender}-{n}").replace('/', "_"));
            std::fs::create_dir_all(&cell)?;
            let write = open_contender(contender, &cell)?;
            let done = AtomicU64::new(0);
            let start = Instant::now();
            let deadline = start + duration;
            std::thread::scope(|scope| -> std::io::Result<()> {
                let handles: Vec<_> = (0..n)
                    .map(|t| {
                        let (write, done) = (&write, &done);
                        scope.spawn(move || -> std::io::Result<()> {
                            let value = vec![t as u8; 1024];
                            let mut i = 0u64;
                            while Instant::now() < deadline {
                                write(&format!("w{t}k{i}"), value.clone())?;
                                done.fetch_add(1, Ordering::Relaxed);
                                i += 1;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().map_err(|_| std::io::Error::other("writer panicked"))??;
                }
                Ok(())
            })?;
            let secs = start.elapsed().as_secs_f64();
            rows.push(StoreRow {
                contender,
                writers: n,
                writes_per_sec: done.load(Ordering::Relaxed) as f64 / secs,
            });
            drop(write);
            std::fs::remove_dir_all(&cell)?;
        }
    }
    Ok(rows)
}

/// The rows as a table: writes/s per contender and boltbox's ratio to the better of LDK's
/// own stores (SqliteStore, FilesystemStore) and to plain redb; with [`MIRRORED`] rows, its
/// writes/s and their ratio to boltbox's without the mirror.
pub fn format_store_table(title: &str, rows: &[StoreRow]) -> String {
    let mirrored = rows.iter().any(|r| r.contender == MIRRORED);
    let mut out = format!("{title}\n");
    out.push_str(&format!(
        "{:>7} {:>11} {:>11} {:>11} {:>15} {:>12} {:>10}",
        "writers", "boltbox", "redb/write", "SqliteStore", "FilesystemStore", "÷ best LDK", "÷ redb"
    ));
    if mirrored {
        out.push_str(&format!(" {:>15} {:>14}", MIRRORED, "mirror on÷off"));
    }
    out.push('\n');
    let mut writer_counts: Vec<usize> = rows.iter().map(|r| r.writers).collect();
    writer_counts.dedup();
    for n in writer_counts {
        let get = |c: &str| {
            rows.iter().find(|r| r.writers == n && r.contender == c).map_or(0.0, |r| r.writes_per_sec)
        };
        let (ours, plain, sqlite, fs) =
            (get("boltbox"), get("redb/write"), get("SqliteStore"), get("FilesystemStore"));
        let best_ldk = sqlite.max(fs);
        out.push_str(&format!(
            "{n:>7} {ours:>11.0} {plain:>11.0} {sqlite:>11.0} {fs:>15.0} {:>11.1}x {:>9.1}x",
            ours / best_ldk.max(f64::MIN_POSITIVE),
            ours / plain.max(f64::MIN_POSITIVE),
        ));
        if mirrored {
            let on = get(MIRRORED);
            out.push_str(&format!(" {on:>15.0} {:>13.2}x", on / ours.max(f64::MIN_POSITIVE)));
        }
        out.push('\n');
    }
    out
}

/// The SD-card flush model: each benchmark runs once on the local disk, then re-executes itself
/// with `node/benches/sdcard_fsync.c` preloaded, so that both halves of its table come from one
/// run on one disk and every contender pays the same.
pub mod sdcard {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    /// Set in the re-executed run.
    const IN_MODEL: &str = "BOLTBOX_BENCH_SDCARD";
    /// Names the built shim (`make bench` sets it).
    const SHIM: &str = "BOLTBOX_SDCARD_SHIM";

    /// Whether this process is the run under the SD-card model.
    pub fn in_model() -> bool {
        std::env::var_os(IN_MODEL).is_some()
    }

    /// The milliseconds the shim adds to each flush, as configured.
    pub fn delay_ms() -> String {
        std::env::var("BOLTBOX_FSYNC_DELAY_MS").unwrap_or_else(|_| "10".into())
    }

    /// Runs this benchmark binary again under the model and returns the lines it printed, or
    /// `None` (after saying so) when no shim is configured.
    pub fn rerun_in_model() -> std::io::Result<Option<Vec<String>>> {
        let Some(shim) = std::env::var_os(SHIM) else {
            println!("(SD-card model skipped: set {SHIM}, as `make bench` does)");
            return Ok(None);
        };
        let mut child = Command::new(std::env::current_exe()?)
            .env("LD_PRELOAD", shim)
            .env(IN_MODEL, "1")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let lines = BufReader::new(stdout).lines().collect::<std::io::Result<Vec<_>>>()?;
        let status = child.wait()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("the SD-card run failed: {status}")));
        }
        Ok(Some(lines))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contender_writes_and_the_table_has_a_row_per_writer_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut contenders = CONTENDERS.to_vec();
        contenders.push(MIRRORED);
        let rows = store_bench(dir.path(), &[1, 2], Duration::from_millis(50), &contenders).expect("bench");
        assert_eq!(rows.len(), 2 * contenders.len());
        assert!(rows.iter().all(|r| r.writes_per_sec > 0.0), "{rows:?}");
        let table = format_store_table("t", &rows);
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.lines().nth(1).is_some_and(|l| l.contains("mirror on÷off")), "{table}");
    }
}

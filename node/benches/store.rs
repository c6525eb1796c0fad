//! `cargo bench -p boltbox-node --bench store`: durable writes/s of boltbox's store against
//! LDK's own stores and plain redb, on the local disk and under the SD-card flush model
//! (`sdcard_fsync.so` preloaded into a second run of this binary), side by side.

use std::time::Duration;

use boltbox_node::bench::{format_store_table, store_bench};

const WRITERS: [usize; 4] = [1, 4, 16, 64];

fn run(title: &str, secs: f64) {
    let dir = tempfile::tempdir_in(std::env::var_os("BOLTBOX_BENCH_DIR").unwrap_or_else(|| ".".into()))
        .expect("bench dir");
    let rows = store_bench(dir.path(), &WRITERS, Duration::from_secs_f64(secs)).expect("store bench");
    println!("{}", format_store_table(title, &rows));
}

fn main() {
    if std::env::var_os("BOLTBOX_BENCH_SDCARD").is_some() {
        let ms = std::env::var("BOLTBOX_FSYNC_DELAY_MS").unwrap_or_else(|_| "10".into());
        run(&format!("store, SD-card model ({ms} ms per fsync, one at a time): durable 1 KiB writes/s"), 3.0);
        return;
    }
    run("store, local disk: durable 1 KiB writes/s", 2.0);
    match std::env::var_os("BOLTBOX_SDCARD_SHIM") {
        Some(shim) => {
            let status = std::process::Command::new(std::env::current_exe().expect("exe"))
                .env("LD_PRELOAD", shim)
                .env("BOLTBOX_BENCH_SDCARD", "1")
                .status()
                .expect("run under the SD-card model");
            assert!(status.success(), "SD-card run failed");
        }
        None => println!("(SD-card model skipped: set BOLTBOX_SDCARD_SHIM, as `make bench` does)"),
    }
}

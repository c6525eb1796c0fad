//! `cargo bench -p boltbox-node --bench store`: durable writes/s of boltbox's store against
//! LDK's own stores and plain redb, and with its live mirror on, on the local disk and under the
//! SD-card flush model (`sdcard_fsync.so` preloaded into a second run of this binary; the
//! mirror's stick modelled as a medium of its own), side by side.

use std::time::Duration;

use boltbox_node::bench::{CONTENDERS, MIRRORED, format_store_table, sdcard, store_bench};

const WRITERS: [usize; 4] = [1, 4, 16, 64];

fn run(title: &str, secs: f64) {
    let dir = tempfile::tempdir_in(std::env::var_os("BOLTBOX_BENCH_DIR").unwrap_or_else(|| ".".into()))
        .expect("bench dir");
    let mut contenders = CONTENDERS.to_vec();
    contenders.push(MIRRORED);
    let rows =
        store_bench(dir.path(), &WRITERS, Duration::from_secs_f64(secs), &contenders).expect("store bench");
    println!("{}", format_store_table(title, &rows));
}

fn main() {
    if sdcard::in_model() {
        let ms = sdcard::delay_ms();
        run(&format!("store, SD-card model ({ms} ms per fsync, one at a time): durable 1 KiB writes/s"), 3.0);
        return;
    }
    run("store, local disk: durable 1 KiB writes/s", 2.0);
    for line in sdcard::rerun_in_model().expect("run under the SD-card model").unwrap_or_default() {
        println!("{line}");
    }
}

//! `cargo bench -p boltbox-node --bench backup_seal`: how fast a backup is sealed (encrypted and
//! authenticated in 64 KiB chunks) and opened (decrypted and checked), with the chunks on all
//! of this machine's cores against one worker, in the same run. In memory: the disk's share of
//! a backup is measured by the store benchmarks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use boltbox_node::backup::{BackupInput, Workers, open_backup, write_backup};
use boltbox_node::store::{Entry, Snapshot};
use boltbox_node::{Network, NodeConfig, Seed};

/// A store the size of a routing node's with the network graph in it.
const STORE_BYTES: usize = 32 << 20;
/// Values like channel monitors and graph pieces: a few KiB to a few hundred.
const VALUE_BYTES: usize = 16 << 10;
const ROUNDS: u32 = 5;

fn snapshot() -> Snapshot {
    // Incompressible-looking bytes, so that nothing is cheaper than it would be for real.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let entries = (0..STORE_BYTES / VALUE_BYTES)
        .map(|i| Entry {
            primary: "monitors".into(),
            secondary: String::new(),
            key: format!("{i:064x}"),
            value: (0..VALUE_BYTES)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect(),
        })
        .collect();
    Snapshot { commit_counter: 1, entries }
}

/// Median seconds of `ROUNDS` runs of `f`.
fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let seed = Seed::from_words(&("abandon ".repeat(23) + "art")).expect("seed");
    let config: NodeConfig = toml::from_str(
        "network = \"regtest\"\n[chain]\nsource = \"bitcoind\"\nrpc_user = \"u\"\nrpc_password = \"p\"\n",
    )
    .expect("config");
    let node_id = seed.node_id(Network::Regtest).expect("node id");
    let snapshot = snapshot();
    let input = BackupInput {
        seed: &seed,
        config: &config,
        node_id: &node_id,
        lineage_id: "00112233445566778899aabbccddeeff",
        snapshot: &snapshot,
        created_at: 0,
    };
    let mb = STORE_BYTES as f64 / (1 << 20) as f64;
    println!(
        "backup sealing and opening, {mb:.0} MiB store in {VALUE_BYTES}-byte values, median of {ROUNDS}, MiB/s"
    );
    println!("| workers | seal MiB/s | open MiB/s |");
    println!("|---|---|---|");
    let mut rates = Vec::new();
    for workers in [1, cores] {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(workers).build().expect("runtime");
        let pool = Workers(runtime.handle().clone());
        let mut file = Vec::new();
        let seal = median(|| {
            file.clear();
            write_backup(&input, &mut file, &pool, &mut |_| {}).expect("seal");
        });
        let file = Arc::new(file);
        let open = median(|| {
            open_backup(Arc::clone(&file), &seed, &pool, &mut |_| {}).expect("open");
        });
        let (seal, open) = (mb / seal.as_secs_f64(), mb / open.as_secs_f64());
        println!("| {workers} | {seal:.0} | {open:.0} |");
        rates.push((seal, open));
        if cores == 1 {
            break;
        }
    }
    if let [one, all] = rates[..] {
        println!("{cores} workers ÷ 1: seal {:.2}x, open {:.2}x", all.0 / one.0, all.1 / one.1);
    }
}

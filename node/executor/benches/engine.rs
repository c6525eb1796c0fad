//! `cargo bench -p boltbox-executor`: prints the engine's transfer benchmark as a table.

use std::num::NonZeroUsize;
use std::process::ExitCode;

use boltbox_executor::bench::{self, BenchConfig};

fn main() -> ExitCode {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    match bench::run(&BenchConfig::for_cores(cores)) {
        Ok(report) => {
            print!("{}", bench::format_table(&report));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("engine benchmark failed: {error}");
            ExitCode::FAILURE
        }
    }
}

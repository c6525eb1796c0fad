//! `boltbox bench`: the benchmarks on the device itself — the node's store against LDK's own
//! stores on the device's own disk (the SD card), and the executor's engine on its cores —
//! printed as tables with ratios.

use std::path::PathBuf;
use std::time::Duration;

use boltbox_executor::bench::{BenchConfig, format_table, run as run_engine};
use boltbox_node::bench::{CONTENDERS, format_store_table, store_bench};

/// What can go wrong running the benchmarks.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The scratch directory or a store failed.
    #[error("store benchmark in {dir}: {source}")]
    Store {
        /// The scratch directory.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The engine benchmark failed.
    #[error("engine benchmark: {0}")]
    Engine(#[from] boltbox_executor::bench::BenchError),
    /// The measurement time is not a duration.
    #[error("{0} seconds is not a time a measurement can take")]
    Seconds(f64),
}

/// How to run the benchmarks.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Scratch directory on the disk to measure (it is created, and emptied afterwards).
    pub dir: PathBuf,
    /// Seconds per store measurement.
    pub seconds: f64,
    /// Concurrent writers for the store measurements.
    pub writers: Vec<usize>,
    /// Engine threads: 1 up to this.
    pub cores: usize,
}

/// Runs both benchmarks and returns the two tables.
pub fn run(options: &BenchOptions) -> Result<String, BenchError> {
    let per_measurement = Duration::try_from_secs_f64(options.seconds)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
        .ok_or(BenchError::Seconds(options.seconds))?;
    let store_err = |source| BenchError::Store { dir: options.dir.clone(), source };
    let scratch =
        tempfile::Builder::new().prefix("boltbox-bench-").tempdir_in(&options.dir).map_err(store_err)?;
    let rows =
        store_bench(scratch.path(), &options.writers, per_measurement, &CONTENDERS).map_err(store_err)?;
    let mut out =
        format_store_table(&format!("store on {}: durable 1 KiB writes/s", options.dir.display()), &rows);
    out.push('\n');
    let report = run_engine(&BenchConfig::for_cores(options.cores))?;
    out.push_str(&format_table(&report));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_scratch_dir_is_a_clear_error() {
        let options = BenchOptions {
            dir: PathBuf::from("/nonexistent/boltbox-bench"),
            seconds: 0.01,
            writers: vec![1],
            cores: 1,
        };
        let err = run(&options).expect_err("no such dir");
        assert!(err.to_string().contains("/nonexistent/boltbox-bench"), "{err}");
    }

    #[test]
    fn a_measurement_time_that_is_no_duration_is_an_error_not_a_panic() {
        for seconds in [1e20, -1.0, 0.0, f64::NAN, f64::INFINITY, 3601.0] {
            let options = BenchOptions { dir: std::env::temp_dir(), seconds, writers: vec![1], cores: 1 };
            assert!(matches!(run(&options), Err(BenchError::Seconds(_))), "{seconds}");
        }
    }
}

//! The tokio runtime the Lightning node runs on, sized from the board.
//!
//! # The formula
//!
//! From the board's core count `c` and memory `m`:
//!
//! | quantity               | value                                   | why                                                    |
//! |------------------------|-----------------------------------------|--------------------------------------------------------|
//! | reserved cores         | `1` if `c ≥ 2`, else `0`                | the display and button loop (its own OS thread) and the kernel keep a core |
//! | worker threads         | `c − reserved` (so at least 1)          | async work never competes with the reserve             |
//! | blocking-pool bound    | `clamp(m / 32 MiB, 4, 64)`              | worst-case blocking stacks stay ≤ 1/16 of memory; ≥ 4 so a few slow fsyncs cannot block all file I/O; ≤ 64 because an SD card flushes one write at a time |
//! | thread stack           | 2 MiB                                   | Rust's and tokio's default, which LDK and BDK are tested with; memory is protected by bounding threads, not by shrinking stacks |
//! | thread names           | `boltbox-rt-N`                          | visible in `top -H`, `ps -L` and panic messages        |
//! | engine threads         | `c`                                     | an engine batch is a short CPU burst; it uses every core, the caller's thread included |
//!
//! With one core there is no core to reserve; the display thread then relies on the kernel's fair
//! scheduler, against one worker and a bounded blocking pool.
//!
//! Every field can be overridden ([`RuntimeOverrides`], e.g. from the `[runtime]` table of
//! `boltbox.toml`); the reserve is then whatever the overridden worker count leaves.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use thiserror::Error;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Memory per blocking thread in the formula: a 2 MiB stack is then at most 1/16 of memory.
const MEMORY_PER_BLOCKING_THREAD: u64 = 32 * MIB;
const MIN_BLOCKING_THREADS: usize = 4;
const MAX_BLOCKING_THREADS: usize = 64;
const DEFAULT_STACK_BYTES: usize = 2 * 1024 * 1024;
const DEFAULT_THREAD_NAME: &str = "boltbox-rt";

/// Override limits: wide enough for any sensible board, narrow enough to catch typos.
const MAX_THREADS_OVERRIDE: usize = 256;
const MAX_BLOCKING_OVERRIDE: usize = 512;
const MIN_STACK_OVERRIDE: usize = 64 * 1024;
const MAX_STACK_OVERRIDE: usize = 64 * 1024 * 1024;
/// Linux keeps 15 bytes of a thread name; the prefix leaves room for "-NNNN".
const MAX_THREAD_NAME_LEN: usize = 10;

/// Errors from detecting board facts, validating overrides and building the runtime.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// A file under /proc or /sys could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        error: io::Error,
    },
    /// A file under /proc or /sys did not have the expected format.
    #[error("cannot parse {what} from {text:?}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The offending text (at most one line of it).
        text: String,
    },
    /// Board facts that no board has (zero cores or zero memory).
    #[error("impossible board facts: {0}")]
    InvalidFacts(&'static str),
    /// An override is out of range; `field` is its name as written in the config.
    #[error("runtime override `{field}`: {reason}")]
    InvalidOverride {
        /// The override's field name.
        field: &'static str,
        /// Why it was rejected, with the accepted range.
        reason: String,
    },
    /// tokio could not start the runtime (e.g. thread creation failed).
    #[error("cannot build the tokio runtime: {0}")]
    Build(#[source] io::Error),
}

/// What the runtime is sized from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardFacts {
    /// Online CPU cores.
    pub cores: usize,
    /// Total memory in bytes.
    pub memory_bytes: u64,
}

impl BoardFacts {
    /// Reads the facts from /sys and /proc, for callers without board facts of their own.
    ///
    /// Cores are the online CPUs, further limited by this process's affinity and cgroup quota
    /// (what `std::thread::available_parallelism` reports) when that is smaller.
    pub fn detect() -> Result<Self, RuntimeError> {
        let online = parse_cpu_list(&read(Path::new("/sys/devices/system/cpu/online"))?)?;
        let cores = match std::thread::available_parallelism() {
            Ok(allowed) => online.min(allowed.get()),
            Err(_) => online,
        };
        let memory_bytes = parse_mem_total(&read(Path::new("/proc/meminfo"))?)?;
        Ok(Self { cores, memory_bytes })
    }
}

fn read(path: &Path) -> Result<String, RuntimeError> {
    std::fs::read_to_string(path).map_err(|error| RuntimeError::Read { path: path.to_owned(), error })
}

fn parse_error(what: &'static str, text: &str) -> RuntimeError {
    RuntimeError::Parse { what, text: text.lines().next().unwrap_or_default().to_owned() }
}

/// Counts the CPUs in a kernel CPU list such as `0-3,6,8-9` (the format of
/// /sys/devices/system/cpu/online).
pub fn parse_cpu_list(text: &str) -> Result<usize, RuntimeError> {
    let error = || parse_error("CPU list", text);
    let mut count = 0;
    for part in text.trim().split(',') {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (first, last),
            None => (part, part),
        };
        let first: usize = first.parse().map_err(|_| error())?;
        let last: usize = last.parse().map_err(|_| error())?;
        if last < first {
            return Err(error());
        }
        count += last - first + 1;
    }
    Ok(count)
}

/// Reads `MemTotal` (in kB, as the kernel writes it) from the text of /proc/meminfo, in bytes.
pub fn parse_mem_total(text: &str) -> Result<u64, RuntimeError> {
    let line = text
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .ok_or_else(|| parse_error("MemTotal", text))?;
    let mut fields = line.strip_prefix("MemTotal:").unwrap_or(line).split_whitespace();
    let kib: u64 = fields.next().and_then(|n| n.parse().ok()).ok_or_else(|| parse_error("MemTotal", line))?;
    if fields.next() != Some("kB") {
        return Err(parse_error("MemTotal", line));
    }
    kib.checked_mul(1024).ok_or_else(|| parse_error("MemTotal", line))
}

/// Field-by-field overrides of the formula; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeOverrides {
    /// tokio worker threads (1..=256).
    pub worker_threads: Option<usize>,
    /// Bound of tokio's blocking pool (1..=512).
    pub max_blocking_threads: Option<usize>,
    /// Stack size of every runtime thread in bytes (64 KiB..=64 MiB).
    pub thread_stack_bytes: Option<usize>,
    /// Thread name prefix: 1 to 10 characters of `[A-Za-z0-9_-]`; threads are `<prefix>-N`.
    pub thread_name: Option<String>,
    /// Threads of the parallel engine (1..=256).
    pub engine_threads: Option<usize>,
}

/// The runtime derived from the board, possibly overridden. See the module documentation for
/// the formula.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePlan {
    facts: BoardFacts,
    worker_threads: usize,
    max_blocking_threads: usize,
    thread_stack_bytes: usize,
    thread_name: String,
    engine_threads: usize,
}

impl RuntimePlan {
    /// Applies the formula to the board's facts.
    pub fn derive(facts: BoardFacts) -> Result<Self, RuntimeError> {
        if facts.cores == 0 {
            return Err(RuntimeError::InvalidFacts("zero cores"));
        }
        if facts.memory_bytes == 0 {
            return Err(RuntimeError::InvalidFacts("zero memory"));
        }
        let reserved = usize::from(facts.cores >= 2);
        let by_memory =
            usize::try_from(facts.memory_bytes / MEMORY_PER_BLOCKING_THREAD).unwrap_or(usize::MAX);
        Ok(Self {
            facts,
            worker_threads: facts.cores - reserved,
            max_blocking_threads: by_memory.clamp(MIN_BLOCKING_THREADS, MAX_BLOCKING_THREADS),
            thread_stack_bytes: DEFAULT_STACK_BYTES,
            thread_name: DEFAULT_THREAD_NAME.to_owned(),
            engine_threads: facts.cores,
        })
    }

    /// Replaces every field the overrides set, after checking it; the error names the field.
    pub fn with_overrides(mut self, overrides: &RuntimeOverrides) -> Result<Self, RuntimeError> {
        if let Some(n) = overrides.worker_threads {
            self.worker_threads = in_range("worker_threads", n, 1, MAX_THREADS_OVERRIDE)?;
        }
        if let Some(n) = overrides.max_blocking_threads {
            self.max_blocking_threads = in_range("max_blocking_threads", n, 1, MAX_BLOCKING_OVERRIDE)?;
        }
        if let Some(n) = overrides.thread_stack_bytes {
            self.thread_stack_bytes =
                in_range("thread_stack_bytes", n, MIN_STACK_OVERRIDE, MAX_STACK_OVERRIDE)?;
        }
        if let Some(name) = &overrides.thread_name {
            let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if name.is_empty() || name.len() > MAX_THREAD_NAME_LEN || !valid_chars {
                return Err(RuntimeError::InvalidOverride {
                    field: "thread_name",
                    reason: format!(
                        "must be 1 to {MAX_THREAD_NAME_LEN} characters of A-Z, a-z, 0-9, '-' or '_' (got {name:?})"
                    ),
                });
            }
            self.thread_name.clone_from(name);
        }
        if let Some(n) = overrides.engine_threads {
            self.engine_threads = in_range("engine_threads", n, 1, MAX_THREADS_OVERRIDE)?;
        }
        Ok(self)
    }

    /// The facts the plan was derived from.
    pub fn facts(&self) -> BoardFacts {
        self.facts
    }

    /// Cores left to the display and button loop and the rest of the system.
    pub fn reserved_cores(&self) -> usize {
        self.facts.cores.saturating_sub(self.worker_threads)
    }

    /// tokio worker threads.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads
    }

    /// Bound of tokio's blocking pool.
    pub fn max_blocking_threads(&self) -> usize {
        self.max_blocking_threads
    }

    /// Stack size of every runtime thread, in bytes.
    pub fn thread_stack_bytes(&self) -> usize {
        self.thread_stack_bytes
    }

    /// Thread name prefix; threads are named `<prefix>-N`.
    pub fn thread_name(&self) -> &str {
        &self.thread_name
    }

    /// Threads the parallel engine uses by default (see [`crate::engine::Parallel::from_plan`]).
    pub fn engine_threads(&self) -> usize {
        self.engine_threads
    }

    /// Starts the multi-threaded tokio runtime (I/O and time drivers enabled) and logs the plan.
    pub fn build(&self) -> Result<tokio::runtime::Runtime, RuntimeError> {
        let prefix = self.thread_name.clone();
        let next = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads)
            .max_blocking_threads(self.max_blocking_threads)
            .thread_stack_size(self.thread_stack_bytes)
            .thread_name_fn(move || format!("{prefix}-{}", next.fetch_add(1, Ordering::Relaxed)))
            .enable_all()
            .build()
            .map_err(RuntimeError::Build)?;
        tracing::info!("{self}");
        Ok(runtime)
    }
}

fn in_range(field: &'static str, value: usize, min: usize, max: usize) -> Result<usize, RuntimeError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(RuntimeError::InvalidOverride {
            field,
            reason: format!("must be in {min}..={max} (got {value})"),
        })
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Human-readable size: GiB with one decimal from 1 GiB up, else MiB, else KiB.
fn size(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

/// The one log line, e.g. `runtime: 2 cores, 1.0 GiB → 1 worker, 1 core reserved, ≤32 blocking
/// threads, 2 MiB stacks, threads boltbox-rt-N, engine 2 threads`.
impl fmt::Display for RuntimePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "runtime: {}, {} → {}, {} reserved, ≤{} blocking threads, {} stacks, threads {}-N, engine {}",
            plural(self.facts.cores, "core", "cores"),
            size(self.facts.memory_bytes),
            plural(self.worker_threads, "worker", "workers"),
            plural(self.reserved_cores(), "core", "cores"),
            self.max_blocking_threads,
            size(self.thread_stack_bytes as u64),
            self.thread_name,
            plural(self.engine_threads, "thread", "threads"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cores: usize, memory_bytes: u64) -> RuntimePlan {
        RuntimePlan::derive(BoardFacts { cores, memory_bytes }).expect("valid facts")
    }

    #[test]
    fn formula_reserves_a_core_when_there_is_more_than_one() {
        let cases = [(1, 0, 1), (2, 1, 1), (4, 1, 3), (8, 1, 7)];
        for (cores, reserved, workers) in cases {
            let p = plan(cores, GIB);
            assert_eq!((p.reserved_cores(), p.worker_threads()), (reserved, workers), "{cores} cores");
            assert_eq!(p.engine_threads(), cores);
        }
    }

    #[test]
    fn formula_bounds_the_blocking_pool_by_memory() {
        let cases = [(64 * MIB, 4), (512 * MIB, 16), (GIB, 32), (2 * GIB, 64), (4 * GIB, 64), (8 * GIB, 64)];
        for (memory, blocking) in cases {
            for cores in [1, 2, 4] {
                let p = plan(cores, memory);
                assert_eq!(p.max_blocking_threads(), blocking, "{} on {cores} cores", size(memory));
                assert_eq!(p.thread_stack_bytes(), 2 * 1024 * 1024);
                let stacks = p.max_blocking_threads() as u64 * p.thread_stack_bytes() as u64;
                // Below 128 MiB the floor of 4 threads wins over the 1/16 budget.
                assert!(memory < 128 * MIB || stacks <= memory / 16, "{} of stacks", size(stacks));
            }
        }
    }

    #[test]
    fn impossible_facts_are_rejected() {
        assert!(matches!(
            RuntimePlan::derive(BoardFacts { cores: 0, memory_bytes: GIB }),
            Err(RuntimeError::InvalidFacts(_))
        ));
        assert!(matches!(
            RuntimePlan::derive(BoardFacts { cores: 2, memory_bytes: 0 }),
            Err(RuntimeError::InvalidFacts(_))
        ));
    }

    #[test]
    fn display_is_the_log_line() {
        assert_eq!(
            plan(2, GIB).to_string(),
            "runtime: 2 cores, 1.0 GiB → 1 worker, 1 core reserved, ≤32 blocking threads, 2 MiB stacks, \
             threads boltbox-rt-N, engine 2 threads"
        );
        assert_eq!(
            plan(1, 512 * MIB).to_string(),
            "runtime: 1 core, 512 MiB → 1 worker, 0 cores reserved, ≤16 blocking threads, 2 MiB stacks, \
             threads boltbox-rt-N, engine 1 thread"
        );
        assert_eq!(
            plan(4, 8 * GIB).to_string(),
            "runtime: 4 cores, 8.0 GiB → 3 workers, 1 core reserved, ≤64 blocking threads, 2 MiB stacks, \
             threads boltbox-rt-N, engine 4 threads"
        );
    }

    #[test]
    fn overrides_replace_only_the_fields_they_set() {
        let overrides: RuntimeOverrides =
            toml::from_str("worker_threads = 4\nthread_name = \"ln\"").expect("valid overrides");
        let base = plan(4, 2 * GIB);
        let p = base.clone().with_overrides(&overrides).expect("in range");
        assert_eq!(p.worker_threads(), 4);
        assert_eq!(p.reserved_cores(), 0);
        assert_eq!(p.thread_name(), "ln");
        assert_eq!(p.max_blocking_threads(), base.max_blocking_threads());
        assert_eq!(p.thread_stack_bytes(), base.thread_stack_bytes());
        assert_eq!(p.engine_threads(), base.engine_threads());
        assert_eq!(base.clone().with_overrides(&RuntimeOverrides::default()).expect("empty"), base);
    }

    #[test]
    fn every_override_field_is_applied() {
        let overrides: RuntimeOverrides = toml::from_str(
            "worker_threads = 2\nmax_blocking_threads = 8\nthread_stack_bytes = 1048576\n\
             thread_name = \"node_rt\"\nengine_threads = 3",
        )
        .expect("valid overrides");
        let p = plan(1, GIB).with_overrides(&overrides).expect("in range");
        assert_eq!(
            (
                p.worker_threads(),
                p.max_blocking_threads(),
                p.thread_stack_bytes(),
                p.thread_name(),
                p.engine_threads()
            ),
            (2, 8, 1024 * 1024, "node_rt", 3)
        );
    }

    #[test]
    fn invalid_overrides_name_their_field() {
        let cases = [
            ("worker_threads = 0", "worker_threads"),
            ("worker_threads = 257", "worker_threads"),
            ("max_blocking_threads = 0", "max_blocking_threads"),
            ("thread_stack_bytes = 4096", "thread_stack_bytes"),
            ("thread_name = \"\"", "thread_name"),
            ("thread_name = \"much-too-long\"", "thread_name"),
            ("thread_name = \"a b\"", "thread_name"),
            ("engine_threads = 0", "engine_threads"),
        ];
        for (text, expected) in cases {
            let overrides: RuntimeOverrides = toml::from_str(text).expect("well-formed");
            match plan(2, GIB).with_overrides(&overrides) {
                Err(RuntimeError::InvalidOverride { field, .. }) => assert_eq!(field, expected, "{text}"),
                other => panic!("{text}: expected an invalid override, got {other:?}"),
            }
        }
        let message = plan(2, GIB)
            .with_overrides(&RuntimeOverrides { worker_threads: Some(0), ..RuntimeOverrides::default() })
            .expect_err("zero workers")
            .to_string();
        assert_eq!(message, "runtime override `worker_threads`: must be in 1..=256 (got 0)");
    }

    #[test]
    fn unknown_override_fields_are_rejected() {
        let error = toml::from_str::<RuntimeOverrides>("workers = 2").expect_err("unknown field");
        assert!(error.to_string().contains("unknown field `workers`"), "{error}");
    }

    #[test]
    fn parses_kernel_files() {
        assert_eq!(parse_cpu_list("0-3\n").expect("list"), 4);
        assert_eq!(parse_cpu_list("0").expect("single"), 1);
        assert_eq!(parse_cpu_list("0-1,4,6-7").expect("mixed"), 5);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        let meminfo = "MemTotal:        3884328 kB\nMemFree:          123 kB\n";
        assert_eq!(parse_mem_total(meminfo).expect("meminfo"), 3_884_328 * 1024);
        assert!(parse_mem_total("MemFree: 1 kB\n").is_err());
        assert!(parse_mem_total("MemTotal: lots\n").is_err());
    }

    #[test]
    fn detects_this_machine() {
        let facts = BoardFacts::detect().expect("Linux with /proc and /sys");
        assert!(facts.cores >= 1 && facts.memory_bytes > 0, "{facts:?}");
    }

    #[test]
    fn builds_a_runtime_with_named_threads() {
        let p = plan(2, GIB)
            .with_overrides(&RuntimeOverrides {
                thread_name: Some("bbtest".into()),
                ..RuntimeOverrides::default()
            })
            .expect("valid");
        let runtime = p.build().expect("runtime");
        let name = runtime
            .block_on(async {
                tokio::spawn(async { std::thread::current().name().map(str::to_owned) }).await
            })
            .expect("task completes");
        assert!(name.as_deref().is_some_and(|n| n.starts_with("bbtest-")), "{name:?}");
    }
}

//! Latency measurement shared by the examples and the command-line tool:
//! medians of repeated wall-clock runs, a thread-count scope, and the CPU
//! model every report must name.

use std::time::{Duration, Instant};

/// Wall-clock statistics of repeated runs of one job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median seconds per run.
    pub median: f64,
    /// Fastest run, seconds.
    pub min: f64,
    /// Runs timed (after one warm-up run).
    pub runs: usize,
}

impl Latency {
    /// The median in milliseconds.
    pub fn median_ms(&self) -> f64 {
        self.median * 1e3
    }
}

/// Times `job` after one warm-up run: at least `min_runs` runs and until
/// `budget` has passed (at most 10 000 runs); returns the median and minimum.
pub fn measure(mut job: impl FnMut(), min_runs: usize, budget: Duration) -> Latency {
    job();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_runs.max(1) || (start.elapsed() < budget && times.len() < 10_000) {
        let t = Instant::now();
        job();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Latency {
        median: times[times.len() / 2],
        min: times[0],
        runs: times.len(),
    }
}

/// Times `plan` on `x` with [`measure`] (`min_runs` runs after a warm-up,
/// no extra budget), stopping at the first error a run returns.
///
/// # Errors
/// The first error of [`Plan::run_all`](hasten_fastconv::Plan::run_all)
/// (e.g. an input of the wrong shape).
pub fn plan_latency(
    plan: &mut hasten_fastconv::Plan,
    x: &hasten_core::ndarray::Array4<f32>,
    min_runs: usize,
) -> hasten_core::Result<Latency> {
    let mut error = None;
    let latency = measure(
        || {
            if error.is_none() {
                if let Err(e) = plan.run_all(&[x]) {
                    error = Some(e);
                }
            }
        },
        min_runs,
        Duration::ZERO,
    );
    match error {
        Some(e) => Err(e),
        None => Ok(latency),
    }
}

/// Runs `f` inside a rayon pool of `threads` threads (every kernel of
/// `hasten-fastconv` parallelises over the current pool).
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// Seconds of CPU time spent so far by every thread of process `pid` (Linux
/// `/proc/PID/task/*/schedstat`), or `None` where the platform does not
/// report it. Divided by the thread count, a difference of two readings is
/// the wall time a run would take with the cores to itself — the figure to
/// compare on a machine shared with other busy processes (threads that spin
/// while waiting count as busy).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread may end between the listing and this read; its time is
        // gone from the process's account either way, so skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

/// The peak resident memory of this process so far, in bytes (Linux
/// `VmHWM` of `/proc/self/status`, the figure `getrusage`'s `ru_maxrss`
/// reports), or `None` where the platform does not report it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The Python that runs the onnxruntime scripts of `scripts/`:
/// `HASTEN_PYTHON` when set, else `root/.venv/bin/python` when present
/// (`scripts/setup-python.sh` makes it), else `python3` on the `PATH`.
pub fn python(root: &std::path::Path) -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("HASTEN_PYTHON") {
        return p.into();
    }
    let venv = root.join(".venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        "python3".into()
    }
}

/// The CPU model as the operating system names it (Linux `/proc/cpuinfo`),
/// or the architecture where it is not available.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_counts_runs_and_orders_statistics() {
        let mut calls = 0;
        let lat = measure(|| calls += 1, 7, Duration::ZERO);
        assert_eq!(lat.runs, 7);
        assert_eq!(calls, 8, "one warm-up run plus the timed runs");
        assert!(lat.min <= lat.median);
    }

    #[test]
    fn peak_rss_covers_a_touched_buffer() {
        if let Some(before) = peak_rss_bytes() {
            // 64 MiB written page by page must be resident at once.
            let mut big = vec![0u8; 64 << 20];
            for i in (0..big.len()).step_by(4096) {
                big[i] = 1;
            }
            std::hint::black_box(&big);
            let after = peak_rss_bytes().unwrap();
            assert!(after >= 64 << 20, "{after}");
            assert!(after >= before);
        }
    }

    #[test]
    fn with_threads_sets_the_pool_size() {
        assert_eq!(with_threads(3, rayon::current_num_threads), 3);
    }
}

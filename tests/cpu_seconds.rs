//! `hasten::bench::cpu_seconds` in a test binary of its own: the reading
//! sums the live threads of the process, so a test thread of another test
//! ending between two readings would take its time out of the difference.

use hasten::bench::cpu_seconds;
use std::time::{Duration, Instant};

/// Busy work until the reading has grown by 50 ms of CPU time. No bound on
/// the share of a core the thread gets: on a loaded machine (or under
/// `nice`) 50 ms of wall time may bring only a few ms of CPU time, so a
/// fixed wall-time budget made this test fail under load. The reading must
/// grow (a constant or missing reading fails after the generous wall-time
/// cap) and cannot exceed the wall time of the process's threads.
#[test]
fn cpu_seconds_grows_with_work_on_linux() {
    let pid = std::process::id();
    let Some(before) = cpu_seconds(pid) else {
        #[cfg(target_os = "linux")]
        panic!("Linux reports schedstat");
        #[cfg(not(target_os = "linux"))]
        return;
    };
    let t = Instant::now();
    let mut x = 1u64;
    let mut spent = 0.0;
    while spent < 0.05 && t.elapsed() < Duration::from_secs(120) {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        spent = cpu_seconds(pid).unwrap() - before;
    }
    let wall = t.elapsed().as_secs_f64();
    assert!(spent >= 0.05, "{wall} s of busy work counted {spent} s");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    // One more scheduler tick of slack for the readings' granularity.
    assert!(
        spent <= threads as f64 * wall + 0.01,
        "{spent} s of CPU time in {wall} s on {threads} threads"
    );
    assert!(cpu_seconds(u32::MAX).is_none());
}

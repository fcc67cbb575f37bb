//! `hasten::bench::cpu_seconds` in a test binary of its own: the reading
//! sums the live threads of the process, so a test thread of another test
//! ending between two readings would take its time out of the difference.

use hasten::bench::cpu_seconds;
use std::time::{Duration, Instant};

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
    while t.elapsed() < Duration::from_millis(50) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let spent = cpu_seconds(pid).unwrap() - before;
    assert!(spent >= 0.005, "50 ms of busy wall time counted {spent} s");
    assert!(cpu_seconds(u32::MAX).is_none());
}

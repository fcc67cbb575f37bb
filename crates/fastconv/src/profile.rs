//! Thread utilisation of a plan's steps, behind the `step-profile` feature:
//! every parallel task of the f32 kernels runs through [`task`], which, with
//! the feature on, logs when it started and ended on which thread; without
//! it, [`task`] is the identity and costs nothing. [`StepProfile`] turns one
//! step's log into the figures that show whether both cores were busy at
//! batch 1 (wall time ≈ CPU time ÷ threads): busy time against wall time,
//! the task count and their balance, and the time no task ran (the step's
//! serial part: set-up, joins, waking the workers).

#[cfg(feature = "step-profile")]
pub use enabled::*;

/// Runs one parallel task `f` (logged with the `step-profile` feature).
#[cfg(not(feature = "step-profile"))]
#[inline(always)]
pub(crate) fn task<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(feature = "step-profile")]
mod enabled {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// One task's run: the rayon thread index (`None` outside the pool),
    /// start and end.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Span {
        thread: Option<usize>,
        start: Instant,
        end: Instant,
    }

    /// Every task run since the last [`take`].
    static LOG: Mutex<Vec<Span>> = Mutex::new(Vec::new());

    /// Runs one parallel task `f`, logging its span.
    pub(crate) fn task<R>(f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let r = f();
        let span = Span {
            thread: rayon::current_thread_index(),
            start,
            end: Instant::now(),
        };
        LOG.lock().unwrap_or_else(|e| e.into_inner()).push(span);
        r
    }

    /// The spans logged so far, emptying the log.
    pub(crate) fn take() -> Vec<Span> {
        std::mem::take(&mut *LOG.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How one plan step used the threads (see [`crate::Plan::run_profiled`]).
    #[derive(Debug, Clone, PartialEq)]
    pub struct StepProfile {
        /// Wall time of the step.
        pub wall: Duration,
        /// Threads of the rayon pool it ran on.
        pub threads: usize,
        /// Parallel tasks it ran (0: the step ran serially on the caller).
        pub tasks: usize,
        /// Summed run time of its tasks.
        pub busy: Duration,
        /// Summed task time per thread (index = rayon thread index; tasks
        /// run outside the pool are counted on the last entry).
        pub per_thread: Vec<Duration>,
        /// The longest task.
        pub longest: Duration,
        /// Wall time during which at least one task ran.
        pub covered: Duration,
        /// Wall time during which at least two tasks ran at once.
        pub overlapped: Duration,
    }

    impl StepProfile {
        /// The profile of a step that ran from `start` for `wall` with the
        /// logged `spans` on a pool of `threads` threads.
        pub(crate) fn new(start: Instant, wall: Duration, threads: usize, spans: &[Span]) -> Self {
            let at = |t: Instant| t.saturating_duration_since(start).min(wall);
            let mut per_thread = vec![Duration::ZERO; threads + 1];
            let mut events = Vec::with_capacity(2 * spans.len());
            for s in spans {
                let d = s.end - s.start;
                per_thread[s.thread.unwrap_or(threads).min(threads)] += d;
                events.push((at(s.start), 1i32));
                events.push((at(s.end), -1i32));
            }
            // Ends before starts at equal times: back-to-back tasks on one
            // thread are not counted as two at once.
            events.sort();
            let (mut covered, mut overlapped) = (Duration::ZERO, Duration::ZERO);
            let (mut running, mut last) = (0i32, Duration::ZERO);
            for (t, delta) in events {
                if running >= 1 {
                    covered += t - last;
                }
                if running >= 2 {
                    overlapped += t - last;
                }
                running += delta;
                last = t;
            }
            if per_thread[threads].is_zero() {
                per_thread.pop();
            }
            StepProfile {
                wall,
                threads,
                tasks: spans.len(),
                busy: per_thread.iter().sum(),
                per_thread,
                longest: spans
                    .iter()
                    .map(|s| s.end - s.start)
                    .max()
                    .unwrap_or_default(),
                covered,
                overlapped,
            }
        }

        /// Busy time over `threads × wall`: 1 when every thread worked the
        /// whole step.
        pub fn utilisation(&self) -> f64 {
            ratio(self.busy, self.wall * self.threads as u32)
        }

        /// The part of the wall time no task ran (serial work and overhead).
        pub fn serial_fraction(&self) -> f64 {
            1.0 - ratio(self.covered, self.wall)
        }

        /// The busiest thread's time over the mean thread's: 1 when the
        /// threads had equal shares.
        pub fn imbalance(&self) -> f64 {
            let max = self.per_thread.iter().max().copied().unwrap_or_default();
            ratio(max * self.threads as u32, self.busy)
        }
    }

    /// `a / b`, 0 for an empty `b`.
    fn ratio(a: Duration, b: Duration) -> f64 {
        if b.is_zero() {
            0.0
        } else {
            a.as_secs_f64() / b.as_secs_f64()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sweep_counts_cover_and_overlap_of_planted_spans() {
            let t0 = Instant::now();
            let ms = |m: u64| t0 + Duration::from_millis(m);
            // Thread 0 runs 0–4 and 4–6, thread 1 runs 2–8; nothing 8–10.
            let spans = [
                Span {
                    thread: Some(0),
                    start: ms(0),
                    end: ms(4),
                },
                Span {
                    thread: Some(0),
                    start: ms(4),
                    end: ms(6),
                },
                Span {
                    thread: Some(1),
                    start: ms(2),
                    end: ms(8),
                },
            ];
            let p = StepProfile::new(t0, Duration::from_millis(10), 2, &spans);
            let d = Duration::from_millis;
            assert_eq!(p.tasks, 3);
            assert_eq!(p.per_thread, vec![d(6), d(6)]);
            assert_eq!(p.busy, d(12));
            assert_eq!(p.longest, d(6));
            assert_eq!(p.covered, d(8));
            assert_eq!(p.overlapped, d(4));
            assert!((p.utilisation() - 0.6).abs() < 1e-9);
            assert!((p.serial_fraction() - 0.2).abs() < 1e-9);
            assert!((p.imbalance() - 1.0).abs() < 1e-9);
        }
    }
}

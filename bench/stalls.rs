//! The benchmark's measure of the machine itself: a loop that does nothing
//! but read the monotonic clock, on whatever CPU it was started on. Any gap
//! between two readings is time the core was taken away (by the kernel, or
//! by the hypervisor from a virtual CPU). A server on that core cannot
//! answer within a millisecond a request that arrives during a longer gap,
//! so these gaps are the floor under the open-loop p99 (bench/NOTES.md).
//!
//! Usage: bench_stalls SECONDS
//! Prints one JSON object: gaps over 0.5 ms and over 1 ms, the time lost in
//! gaps over 1 ms, and the longest gap. Pinning is the caller's: bench/run.py
//! starts one per CPU with its affinity set before exec.

use std::time::{Duration, Instant};

/// A gap this long or longer is counted as a stall.
const SHORT: Duration = Duration::from_micros(500);
/// The p99 target's bound.
const LONG: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Stalls {
    over_short: u64,
    over_long: u64,
    lost_in_long: Duration,
    longest: Duration,
}

impl Stalls {
    fn add(&mut self, gap: Duration) {
        self.longest = self.longest.max(gap);
        if gap < SHORT {
            return;
        }
        self.over_short += 1;
        if gap >= LONG {
            self.over_long += 1;
            self.lost_in_long += gap;
        }
    }
}

fn watch(length: Duration) -> Stalls {
    let mut stalls = Stalls::default();
    let start = Instant::now();
    let mut last = start;
    loop {
        let now = Instant::now();
        stalls.add(now - last);
        last = now;
        if now - start >= length {
            return stalls;
        }
    }
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .unwrap_or_else(|| {
            eprintln!("usage: bench_stalls SECONDS");
            std::process::exit(2)
        });
    let stalls = watch(Duration::from_secs_f64(seconds));
    println!(
        "{{\"seconds\":{seconds},\"gaps_over_0_5_ms\":{},\"gaps_over_1_ms\":{},\
         \"lost_in_gaps_over_1_ms_ms\":{:.3},\"longest_ms\":{:.3}}}",
        stalls.over_short,
        stalls.over_long,
        stalls.lost_in_long.as_secs_f64() * 1e3,
        stalls.longest.as_secs_f64() * 1e3,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_sorted_by_length() {
        let mut stalls = Stalls::default();
        for micros in [10, 499, 500, 999, 1000, 3500] {
            stalls.add(Duration::from_micros(micros));
        }
        assert_eq!(stalls.over_short, 4);
        assert_eq!(stalls.over_long, 2);
        assert_eq!(stalls.lost_in_long, Duration::from_micros(4500));
        assert_eq!(stalls.longest, Duration::from_micros(3500));
    }

    #[test]
    fn the_longest_gap_is_kept_even_when_short() {
        let mut stalls = Stalls::default();
        stalls.add(Duration::from_micros(120));
        stalls.add(Duration::from_micros(40));
        assert_eq!(stalls.over_short, 0);
        assert_eq!(stalls.longest, Duration::from_micros(120));
    }
}

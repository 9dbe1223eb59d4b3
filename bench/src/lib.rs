//! What the latency benchmarks share: the summary of a row of samples, and the machine's load to print next to it.

use std::time::Duration;

/// p50, p99 and mean of one row of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

impl Summary {
    /// All zero for no samples.
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        let mean = total.checked_div(u32::try_from(sorted.len()).unwrap_or(u32::MAX)).unwrap_or_default();
        Summary { p50: percentile(&sorted, 50), p99: percentile(&sorted, 99), mean }
    }
}

/// The `q`-th percentile (0..=100) of sorted samples: the sample below which `q` % of them lie; zero for none.
pub fn percentile(sorted: &[Duration], q: usize) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n => sorted[(n * q / 100).min(n - 1)],
    }
}

/// Milliseconds, to three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The 1-minute load average, to judge how much else ran during the measurement.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_mean() {
        let samples: Vec<Duration> = (1..=200).rev().map(Duration::from_micros).collect();
        let s = Summary::of(&samples);
        assert_eq!(s.p50, Duration::from_micros(101));
        assert_eq!(s.p99, Duration::from_micros(199));
        assert_eq!(s.mean, Duration::from_nanos(100_500));
        assert_eq!(Summary::of(&[]), Summary::default());
        assert_eq!(percentile(&[Duration::from_millis(3)], 99), Duration::from_millis(3));
        assert_eq!(ms(Duration::from_micros(1500)), "1.500");
    }
}

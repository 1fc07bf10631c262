//! Figures, percentiles and process memory: the accounting helpers of the load
//! generator, kept free of I/O except the `/proc` readers.

use serde::Serialize;
use std::time::Duration;

/// One measured figure, printed as a JSON line for `bench/run.sh` to tabulate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// Scenario name (`reconnect`, `initial_sync`, …).
    pub scenario: String,
    /// What was measured (`wall_time`, `bytes_to_device`, …).
    pub metric: String,
    /// The value, in `unit`.
    pub value: f64,
    /// `ms`, `bytes`, `messages`, `changes/s`, `KiB`, `MiB`…
    pub unit: String,
    /// The scale it was measured at, or a caveat.
    pub note: String,
}

impl Figure {
    /// A figure.
    pub fn new(scenario: &str, metric: &str, value: f64, unit: &str, note: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            metric: metric.to_owned(),
            value,
            unit: unit.to_owned(),
            note: note.to_owned(),
        }
    }
}

/// Milliseconds of a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (0–100) of `samples` by the nearest-rank method; `None`
/// when there are no samples. Sorts `samples` in place.
pub fn percentile(samples: &mut [f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let p = p.clamp(0.0, 100.0);
    // Nearest rank: the smallest value with at least p% of the samples at or below it.
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    let index = rank.saturating_sub(1).min(samples.len() - 1);
    Some(samples[index])
}

/// The median of `samples` (nearest rank), or `None`.
pub fn median(samples: &mut [f64]) -> Option<f64> {
    percentile(samples, 50.0)
}

/// Memory figures of one process, from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Resident set size now.
    pub rss_kib: u64,
    /// Peak resident set size (since start or the last reset).
    pub hwm_kib: u64,
}

/// Parse `VmRSS` and `VmHWM` out of the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Memory {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// Memory of process `pid` (`None`: this process). Zeros where `/proc` is not
/// available.
pub fn memory(pid: Option<u32>) -> Memory {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
        .map(|text| parse_status(&text))
        .unwrap_or_default()
}

/// Reset the peak RSS of process `pid` (`None`: this process) to its current
/// RSS, so the next `VmHWM` is the peak of what follows. Returns whether it worked
/// (Linux only; allowed for our own children).
pub fn reset_peak(pid: Option<u32>) -> bool {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/clear_refs"),
        None => "/proc/self/clear_refs".to_owned(),
    };
    std::fs::write(path, b"5").is_ok()
}

/// Bytes and messages moved one way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Frame bytes, length prefixes included.
    pub bytes: u64,
    /// Frames.
    pub messages: u64,
}

impl Traffic {
    /// Count one frame of `len` bytes (prefix included).
    pub fn frame(&mut self, len: usize) {
        self.bytes += len as u64;
        self.messages += 1;
    }

    /// The sum of two tallies.
    pub fn plus(self, other: Traffic) -> Traffic {
        Traffic {
            bytes: self.bytes + other.bytes,
            messages: self.messages + other.messages,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        v.reverse();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut v, 100.0), Some(100.0));
        assert_eq!(percentile(&mut v, 0.0), Some(1.0));
        let mut one = vec![7.5];
        assert_eq!(percentile(&mut one, 99.0), Some(7.5));
        assert_eq!(median(&mut []), None);
        let mut small = vec![3.0, 1.0, 2.0, 10.0];
        assert_eq!(median(&mut small), Some(2.0));
        assert_eq!(percentile(&mut small, 99.0), Some(10.0));
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let text = "Name:\twaybill\nVmPeak:\t  900 kB\nVmHWM:\t   5120 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(
            parse_status(text),
            Memory {
                rss_kib: 4096,
                hwm_kib: 5120
            }
        );
        assert_eq!(parse_status("garbage"), Memory::default());
    }

    #[test]
    fn traffic_counts_frames() {
        let mut t = Traffic::default();
        t.frame(10);
        t.frame(4);
        assert_eq!(
            t,
            Traffic {
                bytes: 14,
                messages: 2
            }
        );
        assert_eq!(t.plus(t).bytes, 28);
    }

    #[test]
    fn own_memory_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(memory(None).rss_kib > 0);
        }
    }
}

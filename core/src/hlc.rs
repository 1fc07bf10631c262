//! Hybrid logical clock: wall-clock milliseconds plus a counter, so that timestamps
//! issued on one device are strictly increasing even when the phone's clock jumps
//! backwards, and a device that has seen a remote event never stamps a new one before it.

use autosurgeon::{Hydrate, Reconcile};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// A hybrid logical clock timestamp. Ordered by wall time, then counter.
///
/// Stored in documents as `{ "wall_ms": int, "counter": int }`; the event's `actor`
/// breaks ties between devices (see `model::lifecycle`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Reconcile,
    Hydrate,
    Serialize,
    Deserialize,
)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch, as the issuing device best knew them.
    pub wall_ms: i64,
    /// Logical counter for events within one millisecond (or while the wall clock lags).
    pub counter: i64,
}

impl Hlc {
    /// A timestamp at an exact wall time (counter 0); for tests and imports.
    pub fn at_wall_ms(wall_ms: i64) -> Self {
        Self {
            wall_ms,
            counter: 0,
        }
    }
}

impl std::fmt::Display for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.counter)
    }
}

/// A source of wall-clock time, so tests and simulations can control it.
pub trait WallClock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// The clock state of one device: the last timestamp it issued or observed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HlcState {
    last: Hlc,
}

impl HlcState {
    /// Resume from the last timestamp persisted by this device.
    pub fn resume(last: Hlc) -> Self {
        Self { last }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// Issue a new timestamp, strictly greater than every one issued or observed before.
    pub fn tick(&mut self, now_ms: i64) -> Hlc {
        self.last = if now_ms > self.last.wall_ms {
            Hlc {
                wall_ms: now_ms,
                counter: 0,
            }
        } else {
            Hlc {
                wall_ms: self.last.wall_ms,
                counter: self.last.counter.saturating_add(1),
            }
        };
        self.last
    }

    /// Take a remote timestamp into account so later local ones sort after it.
    pub fn observe(&mut self, remote: Hlc) {
        if remote > self.last {
            self.last = remote;
        }
    }
}

/// `ms` as an ISO 8601 UTC timestamp (`2026-03-01T12:00:00Z`), for messages an
/// operator reads.
pub fn utc_timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_the_wall_clock_goes_back() {
        let mut clock = HlcState::default();
        let a = clock.tick(1_000);
        let b = clock.tick(900);
        let c = clock.tick(1_000);
        let d = clock.tick(1_001);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert_eq!(
            d,
            Hlc {
                wall_ms: 1_001,
                counter: 0
            }
        );
    }

    #[test]
    fn observing_a_remote_timestamp_moves_the_clock_forward() {
        let mut clock = HlcState::default();
        clock.tick(1_000);
        clock.observe(Hlc {
            wall_ms: 5_000,
            counter: 7,
        });
        assert_eq!(
            clock.tick(1_200),
            Hlc {
                wall_ms: 5_000,
                counter: 8
            }
        );
        clock.observe(Hlc {
            wall_ms: 10,
            counter: 0,
        });
        assert_eq!(
            clock.last(),
            Hlc {
                wall_ms: 5_000,
                counter: 8
            }
        );
    }
}

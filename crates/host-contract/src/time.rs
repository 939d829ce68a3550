//! A host's time: nanoseconds since the start of a run (the simulation's, or the real shell's).
//!
//! The simulator's clock only moves when the event loop jumps to the next event, so a run of a
//! simulated hour takes as long as its events take to process. The real-socket shell counts the
//! same type from its own start, so a service sees one notion of time in both shells.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A point in a host's time, in nanoseconds since the run (or the shell) started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostTime(u64);

impl HostTime {
    /// The start of every run.
    pub const ZERO: HostTime = HostTime(0);
    /// The end of time: a window that never closes ends here.
    pub const MAX: HostTime = HostTime(u64::MAX);

    /// A time from nanoseconds since the start.
    pub const fn from_nanos(nanos: u64) -> HostTime {
        HostTime(nanos)
    }

    /// A time from microseconds since the start (saturating).
    pub const fn from_micros(micros: u64) -> HostTime {
        HostTime(micros.saturating_mul(1_000))
    }

    /// A time from milliseconds since the start (saturating).
    pub const fn from_millis(millis: u64) -> HostTime {
        HostTime(millis.saturating_mul(1_000_000))
    }

    /// A time from whole seconds since the start (saturating).
    pub const fn from_secs(secs: u64) -> HostTime {
        HostTime(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the start.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time elapsed since the start, as a [`Duration`].
    pub const fn since_start(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: HostTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at [`HostTime::MAX`] instead of wrapping.
    pub fn saturating_add(self, d: Duration) -> HostTime {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        HostTime(self.0.saturating_add(nanos))
    }
}

impl Add<Duration> for HostTime {
    type Output = HostTime;
    /// Saturating: a host's time never wraps.
    fn add(self, d: Duration) -> HostTime {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for HostTime {
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl Sub<HostTime> for HostTime {
    type Output = Duration;
    /// Saturating: a later `rhs` gives zero.
    fn sub(self, rhs: HostTime) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Display for HostTime {
    /// Seconds with microsecond precision, right-aligned so that trace lines line up:
    /// `   2.000000s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000_000;
        let micros = (self.0 % 1_000_000_000) / 1_000;
        let text = format!("{secs}.{micros:06}s");
        f.pad(&format!("{text:>12}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_seconds_with_microseconds_aligned() {
        assert_eq!(HostTime::from_secs(2).to_string(), "   2.000000s");
        assert_eq!(HostTime::from_micros(1_500_250).to_string(), "   1.500250s");
        assert_eq!(HostTime::from_nanos(999).to_string(), "   0.000000s");
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(HostTime::MAX + Duration::from_secs(1), HostTime::MAX);
        assert_eq!(HostTime::ZERO - HostTime::from_secs(1), Duration::ZERO);
        assert_eq!(
            HostTime::from_secs(3) - HostTime::from_secs(1),
            Duration::from_secs(2)
        );
        let mut t = HostTime::from_millis(5);
        t += Duration::from_millis(5);
        assert_eq!(t, HostTime::from_millis(10));
    }
}

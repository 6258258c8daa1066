//! Wall-clock time and whether it can be trusted.
//!
//! A kiosk without a real-time clock boots at the epoch or at its last
//! shutdown time until NTP answers; records taken before that are flagged
//! (`clock_synced = false`) so the school can review them. The real clock asks
//! the kernel (`adjtimex` reports STA_UNSYNC until a time daemon has
//! disciplined the clock) and systemd-timesyncd's marker file. The simulated
//! clock drives the demo and the tests through a compressed school day.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    /// Maps the wall-clock instant a source saw a code to the instant the
    /// rules should use (the identity except for the simulated clock).
    fn map(&self, seen: DateTime<Utc>) -> DateTime<Utc>;
    fn now(&self) -> DateTime<Utc> {
        self.map(Utc::now())
    }
    fn is_synchronized(&self) -> bool;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

/// Earliest plausible time: a clock before this build cannot be right.
const PLAUSIBLE_AFTER: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

impl Clock for SystemClock {
    fn map(&self, seen: DateTime<Utc>) -> DateTime<Utc> {
        seen
    }

    fn is_synchronized(&self) -> bool {
        if Utc::now().timestamp() < PLAUSIBLE_AFTER {
            return false;
        }
        if std::path::Path::new("/run/systemd/timesync/synchronized").exists() {
            return true;
        }
        kernel_reports_synchronized()
    }
}

fn kernel_reports_synchronized() -> bool {
    // SAFETY: adjtimex with modes = 0 only reads the kernel's clock state
    // into a zeroed struct we own.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    state != libc::TIME_ERROR && state >= 0 && (tx.status & libc::STA_UNSYNC) == 0
}

/// A clock that starts at `start` and runs `speed` times faster than real
/// time from the moment it was made. Reports itself synchronized.
#[derive(Debug, Clone)]
pub struct SimulatedClock {
    origin_real: DateTime<Utc>,
    origin_sim: DateTime<Utc>,
    speed: u32,
}

impl SimulatedClock {
    pub fn new(start: DateTime<Utc>, speed: u32) -> Self {
        SimulatedClock {
            origin_real: Utc::now(),
            origin_sim: start,
            speed: speed.max(1),
        }
    }
}

impl Clock for SimulatedClock {
    fn map(&self, seen: DateTime<Utc>) -> DateTime<Utc> {
        let elapsed = seen - self.origin_real;
        self.origin_sim + elapsed * self.speed as i32
    }

    fn is_synchronized(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clock_runs_fast_from_its_start() {
        let start = DateTime::parse_from_rfc3339("2026-11-23T07:00:00+08:00")
            .unwrap()
            .with_timezone(&Utc);
        let c = SimulatedClock::new(start, 60);
        let later = c.origin_real + chrono::Duration::seconds(2);
        assert_eq!(c.map(later), start + chrono::Duration::minutes(2));
        assert!(c.is_synchronized());
    }

    #[test]
    fn system_clock_is_identity() {
        let t = Utc::now();
        assert_eq!(SystemClock.map(t), t);
        // Whatever the host's NTP state, asking must not fail or panic.
        let _ = SystemClock.is_synchronized();
    }
}

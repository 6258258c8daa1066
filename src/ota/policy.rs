//! When an installed-or-downloaded update may be installed and the device
//! rebooted: pure, given the time and what the daemon and its store know.
//!
//! Order of the checks (the first that fails is the reason given):
//! 1. the server's maintenance window (`maintenanceWindow: unavailable`
//!    or `update: skip` means download only) — nothing overrides it;
//! 2. an idle scanner: no scan recorded within `quiet_minutes` — not even
//!    `forced` overrides it (a student at the kiosk comes first);
//! 3. unless forced: the local install window, no session's login or logout
//!    window, and a drained outbox (or one whose oldest row is older than
//!    `max_outbox_age_minutes`, so one dead cloud cannot block updates).
//!
//! The committed database is the reboot's job: the daemon is stopped in
//! order (its store checkpoints and closes) before the reboot.

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::InstallWindow;
use crate::domain::schedule::{Placement, Schedule};

/// What the agent learnt about the kiosk just now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KioskFacts {
    /// The newest recorded scan, if any.
    pub last_scan: Option<DateTime<Utc>>,
    /// Rows waiting in the sync outbox, and when the oldest was written.
    pub outbox_depth: u64,
    pub outbox_oldest: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub schedule: &'a Schedule,
    pub window: &'a InstallWindow,
    pub quiet_minutes: u32,
    pub max_outbox_age_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "wait", rename_all = "snake_case")]
pub enum WaitReason {
    ServerWindowClosed,
    OutsideInstallWindow,
    SessionWindow { session: String },
    RecentScan { minutes_ago: i64 },
    OutboxNotDrained { depth: u64 },
}

impl std::fmt::Display for WaitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitReason::ServerWindowClosed => write!(f, "server maintenance window closed"),
            WaitReason::OutsideInstallWindow => write!(f, "outside the local install window"),
            WaitReason::SessionWindow { session } => {
                write!(f, "inside the login or logout window of session {session}")
            }
            WaitReason::RecentScan { minutes_ago } => {
                write!(f, "a scan was recorded {minutes_ago} min ago")
            }
            WaitReason::OutboxNotDrained { depth } => {
                write!(f, "{depth} rows wait in the sync outbox")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Go,
    Wait(WaitReason),
}

/// Whether local time `t` lies in the window (which may wrap midnight;
/// `start == end` is all day).
pub fn in_window(window: &InstallWindow, t: NaiveTime) -> bool {
    let (s, e) = (window.start.0, window.end.0);
    if s == e {
        true
    } else if s < e {
        t >= s && t < e
    } else {
        t >= s || t < e
    }
}

pub fn decide(
    rules: &Rules<'_>,
    facts: &KioskFacts,
    now: DateTime<Utc>,
    forced: bool,
    server_window_open: bool,
) -> Decision {
    if !server_window_open {
        return Decision::Wait(WaitReason::ServerWindowClosed);
    }
    if let Some(last) = facts.last_scan {
        let ago = now.signed_duration_since(last);
        if ago < chrono::Duration::minutes(i64::from(rules.quiet_minutes)) {
            return Decision::Wait(WaitReason::RecentScan {
                minutes_ago: ago.num_minutes().max(0),
            });
        }
    }
    if forced {
        return Decision::Go;
    }
    let local = now.with_timezone(&rules.schedule.tz).time();
    if !in_window(rules.window, local) {
        return Decision::Wait(WaitReason::OutsideInstallWindow);
    }
    if let Placement::InSession(slot) = rules.schedule.place(now)
        && (slot.in_login_window || slot.in_logout_window)
    {
        return Decision::Wait(WaitReason::SessionWindow {
            session: slot.session,
        });
    }
    if facts.outbox_depth > 0 {
        let stale = facts.outbox_oldest.is_some_and(|oldest| {
            now.signed_duration_since(oldest)
                > chrono::Duration::minutes(i64::from(rules.max_outbox_age_minutes))
        });
        if !stale {
            return Decision::Wait(WaitReason::OutboxNotDrained {
                depth: facts.outbox_depth,
            });
        }
    }
    Decision::Go
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schedule::{ClockTime, ScheduleConfig};
    use chrono::TimeZone;

    fn schedule() -> Schedule {
        let cfg = ScheduleConfig {
            timezone: "UTC".into(),
            school_days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        };
        Schedule::from_config(&cfg, "schedule").unwrap()
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, h, m, 0).unwrap()
    }

    fn rules<'a>(s: &'a Schedule, w: &'a InstallWindow) -> Rules<'a> {
        Rules {
            schedule: s,
            window: w,
            quiet_minutes: 10,
            max_outbox_age_minutes: 60,
        }
    }

    #[test]
    fn windows_wrap_midnight_and_equal_bounds_mean_all_day() {
        let w = InstallWindow::default();
        assert!(in_window(&w, NaiveTime::from_hms_opt(23, 0, 0).unwrap()));
        assert!(in_window(&w, NaiveTime::from_hms_opt(4, 59, 0).unwrap()));
        assert!(!in_window(&w, NaiveTime::from_hms_opt(5, 0, 0).unwrap()));
        assert!(!in_window(&w, NaiveTime::from_hms_opt(12, 0, 0).unwrap()));
        let day = InstallWindow {
            start: ClockTime::hm(9, 0),
            end: ClockTime::hm(17, 0),
        };
        assert!(in_window(&day, NaiveTime::from_hms_opt(9, 0, 0).unwrap()));
        assert!(!in_window(&day, NaiveTime::from_hms_opt(17, 0, 0).unwrap()));
        let all = InstallWindow {
            start: ClockTime::hm(0, 0),
            end: ClockTime::hm(0, 0),
        };
        assert!(in_window(&all, NaiveTime::from_hms_opt(13, 0, 0).unwrap()));
    }

    #[test]
    fn a_quiet_night_with_a_drained_outbox_goes() {
        let (s, w) = (schedule(), InstallWindow::default());
        let facts = KioskFacts {
            last_scan: Some(at(16, 0)),
            ..Default::default()
        };
        assert_eq!(
            decide(&rules(&s, &w), &facts, at(22, 0), false, true),
            Decision::Go
        );
    }

    #[test]
    fn a_closed_window_waits_unless_forced() {
        let (s, w) = (schedule(), InstallWindow::default());
        let facts = KioskFacts::default();
        assert_eq!(
            decide(&rules(&s, &w), &facts, at(12, 0), false, true),
            Decision::Wait(WaitReason::OutsideInstallWindow)
        );
        assert_eq!(
            decide(&rules(&s, &w), &facts, at(12, 0), true, true),
            Decision::Go
        );
    }

    #[test]
    fn the_server_window_is_never_overridden() {
        let (s, w) = (schedule(), InstallWindow::default());
        assert_eq!(
            decide(
                &rules(&s, &w),
                &KioskFacts::default(),
                at(22, 0),
                true,
                false
            ),
            Decision::Wait(WaitReason::ServerWindowClosed)
        );
    }

    #[test]
    fn a_busy_scanner_waits_even_when_forced() {
        let (s, w) = (schedule(), InstallWindow::default());
        let facts = KioskFacts {
            last_scan: Some(at(21, 55)),
            ..Default::default()
        };
        for forced in [false, true] {
            assert_eq!(
                decide(&rules(&s, &w), &facts, at(22, 0), forced, true),
                Decision::Wait(WaitReason::RecentScan { minutes_ago: 5 })
            );
        }
    }

    #[test]
    fn login_and_logout_windows_wait_even_inside_the_install_window() {
        let s = schedule();
        let all_day = InstallWindow {
            start: ClockTime::hm(0, 0),
            end: ClockTime::hm(0, 0),
        };
        let session = &s.sessions[0];
        let login = session.login_open.0;
        let now = Utc
            .with_ymd_and_hms(
                2026,
                3,
                4,
                chrono::Timelike::hour(&login),
                chrono::Timelike::minute(&login),
                0,
            )
            .unwrap();
        assert_eq!(
            decide(
                &rules(&s, &all_day),
                &KioskFacts::default(),
                now,
                false,
                true
            ),
            Decision::Wait(WaitReason::SessionWindow {
                session: session.name.clone()
            })
        );
        let logout = session.logout_open.0;
        let now = Utc
            .with_ymd_and_hms(
                2026,
                3,
                4,
                chrono::Timelike::hour(&logout),
                chrono::Timelike::minute(&logout),
                0,
            )
            .unwrap();
        assert!(matches!(
            decide(
                &rules(&s, &all_day),
                &KioskFacts::default(),
                now,
                false,
                true
            ),
            Decision::Wait(WaitReason::SessionWindow { .. })
        ));
    }

    #[test]
    fn a_non_empty_outbox_waits_until_its_oldest_row_is_stale() {
        let (s, w) = (schedule(), InstallWindow::default());
        let fresh = KioskFacts {
            last_scan: None,
            outbox_depth: 3,
            outbox_oldest: Some(at(21, 30)),
        };
        assert_eq!(
            decide(&rules(&s, &w), &fresh, at(22, 0), false, true),
            Decision::Wait(WaitReason::OutboxNotDrained { depth: 3 })
        );
        let stale = KioskFacts {
            outbox_oldest: Some(at(20, 0)),
            ..fresh.clone()
        };
        assert_eq!(
            decide(&rules(&s, &w), &stale, at(22, 0), false, true),
            Decision::Go
        );
        // forced does not wait for the outbox.
        assert_eq!(
            decide(&rules(&s, &w), &fresh, at(22, 0), true, true),
            Decision::Go
        );
    }
}

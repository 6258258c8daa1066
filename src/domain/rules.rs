//! Attendance rules: given where a scan falls in the schedule and what the
//! store knows about the student today, decide what to record.
//!
//! - The first scan of a session inside its login window is a login,
//!   `present` or `late` by the session's threshold.
//! - A scan of a logged-in student inside the logout window is a logout. This
//!   switch is allowed even within the cooldown.
//! - A scan in the logout window with no login creates a record with only a
//!   time out, status `late` (the student was not seen on time); the school
//!   can correct it.
//! - A repeat of the last action within the cooldown is a duplicate: nothing
//!   is written and the student is told it was already recorded.
//! - Everything else is rejected with a reason the kiosk can show.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Serialize;

use super::payload::PayloadError;
use super::record::AttendanceStatus;
use super::schedule::{Placement, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanKind {
    Login,
    Logout,
}

impl ScanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanKind::Login => "login",
            ScanKind::Logout => "logout",
        }
    }
}

/// Why a scan was not recorded. Each has a stable code for events/metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("invalid card: {0}")]
    InvalidPayload(PayloadError),
    #[error("unknown student {0}")]
    UnknownStudent(String),
    #[error("student {0} is not active")]
    InactiveStudent(String),
    #[error("{0} is not a school day")]
    NotSchoolDay(NaiveDate),
    #[error("outside the session windows{}", .next_opens.map(|t| format!("; next login window opens at {}", t.format("%H:%M"))).unwrap_or_default())]
    OutsideSessions { next_opens: Option<NaiveTime> },
    #[error("the login window of {session} is closed")]
    LoginWindowClosed { session: String },
    #[error("already logged in for {session}; logout opens at {}", .logout_opens.format("%H:%M"))]
    AlreadyLoggedIn {
        session: String,
        logout_opens: NaiveTime,
    },
    #[error("already logged out for {session}")]
    AlreadyLoggedOut { session: String },
    #[error("the kiosk is not accepting scans: {0}")]
    Unavailable(String),
}

impl RejectReason {
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::InvalidPayload(_) => "invalid_payload",
            RejectReason::UnknownStudent(_) => "unknown_student",
            RejectReason::InactiveStudent(_) => "inactive_student",
            RejectReason::NotSchoolDay(_) => "not_school_day",
            RejectReason::OutsideSessions { .. } => "outside_sessions",
            RejectReason::LoginWindowClosed { .. } => "login_window_closed",
            RejectReason::AlreadyLoggedIn { .. } => "already_logged_in",
            RejectReason::AlreadyLoggedOut { .. } => "already_logged_out",
            RejectReason::Unavailable(_) => "unavailable",
        }
    }
}

/// What the roster says about the scanned student.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterEntry {
    Unknown,
    Inactive,
    Active,
}

/// The student's record for this session and date, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingRecord {
    pub id: uuid::Uuid,
    pub time_in: Option<DateTime<Utc>>,
    pub time_out: Option<DateTime<Utc>>,
    pub status: AttendanceStatus,
}

impl ExistingRecord {
    fn last_scan(&self) -> Option<DateTime<Utc>> {
        self.time_out.max(self.time_in)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create a new record (or fill an empty one set by the school) with a login.
    Login {
        slot: Slot,
        status: AttendanceStatus,
    },
    /// Set time out on the existing record, or create one with only a time out.
    Logout {
        slot: Slot,
        status: AttendanceStatus,
    },
    Duplicate {
        kind: ScanKind,
    },
    Reject(RejectReason),
}

/// Decides one scan. `now` is when the code was seen.
pub fn decide(
    placement: Placement,
    roster: RosterEntry,
    student: &str,
    existing: Option<&ExistingRecord>,
    now: DateTime<Utc>,
    cooldown: chrono::Duration,
) -> Decision {
    match roster {
        RosterEntry::Unknown => {
            return Decision::Reject(RejectReason::UnknownStudent(student.into()));
        }
        RosterEntry::Inactive => {
            return Decision::Reject(RejectReason::InactiveStudent(student.into()));
        }
        RosterEntry::Active => {}
    }
    let slot = match placement {
        Placement::InSession(slot) => slot,
        Placement::NotSchoolDay { school_date } => {
            return Decision::Reject(RejectReason::NotSchoolDay(school_date));
        }
        Placement::OutsideSessions { next_opens } => {
            return Decision::Reject(RejectReason::OutsideSessions { next_opens });
        }
    };
    let within_cooldown = |rec: &ExistingRecord| {
        rec.last_scan()
            .is_some_and(|last| now >= last && now - last < cooldown)
    };
    // A record the school created (absent/excused) with no scan yet behaves
    // like no record: the student did turn up.
    let existing = existing.filter(|r| r.time_in.is_some() || r.time_out.is_some());
    match existing {
        None if slot.in_login_window => {
            let status = if slot.late {
                AttendanceStatus::Late
            } else {
                AttendanceStatus::Present
            };
            Decision::Login { slot, status }
        }
        None if slot.in_logout_window => Decision::Logout {
            slot,
            status: AttendanceStatus::Late,
        },
        None => Decision::Reject(RejectReason::LoginWindowClosed {
            session: slot.session,
        }),
        Some(rec) if rec.time_out.is_none() => {
            if slot.in_logout_window {
                Decision::Logout {
                    slot,
                    status: rec.status,
                }
            } else if within_cooldown(rec) {
                Decision::Duplicate {
                    kind: ScanKind::Login,
                }
            } else {
                Decision::Reject(RejectReason::AlreadyLoggedIn {
                    session: slot.session,
                    logout_opens: slot.logout_opens,
                })
            }
        }
        Some(rec) => {
            if within_cooldown(rec) {
                Decision::Duplicate {
                    kind: ScanKind::Logout,
                }
            } else {
                Decision::Reject(RejectReason::AlreadyLoggedOut {
                    session: slot.session,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schedule::{Schedule, ScheduleConfig};
    use chrono::TimeZone;

    const COOLDOWN: i64 = 5;

    fn sched() -> Schedule {
        Schedule::from_config(&ScheduleConfig::default(), "schedule").unwrap()
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Manila
            .with_ymd_and_hms(2026, 11, 23, h, m, s)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn run(now: DateTime<Utc>, existing: Option<&ExistingRecord>) -> Decision {
        decide(
            sched().place(now),
            RosterEntry::Active,
            "S1",
            existing,
            now,
            chrono::Duration::minutes(COOLDOWN),
        )
    }

    fn rec(time_in: Option<DateTime<Utc>>, time_out: Option<DateTime<Utc>>) -> ExistingRecord {
        ExistingRecord {
            id: uuid::Uuid::nil(),
            time_in,
            time_out,
            status: AttendanceStatus::Present,
        }
    }

    #[test]
    fn first_scan_in_login_window_is_present_or_late() {
        assert!(matches!(
            run(at(6, 55, 0), None),
            Decision::Login {
                status: AttendanceStatus::Present,
                ..
            }
        ));
        assert!(matches!(
            run(at(7, 15, 0), None),
            Decision::Login {
                status: AttendanceStatus::Present,
                ..
            }
        ));
        assert!(matches!(
            run(at(7, 15, 1), None),
            Decision::Login {
                status: AttendanceStatus::Late,
                ..
            }
        ));
        assert!(matches!(
            run(at(7, 30, 0), None),
            Decision::Login {
                status: AttendanceStatus::Late,
                ..
            }
        ));
    }

    #[test]
    fn after_login_window_without_login_is_rejected() {
        assert_eq!(
            run(at(9, 0, 0), None),
            Decision::Reject(RejectReason::LoginWindowClosed {
                session: "morning".into()
            })
        );
    }

    #[test]
    fn repeat_within_cooldown_is_duplicate_then_rejected() {
        let r = rec(Some(at(7, 0, 0)), None);
        assert_eq!(
            run(at(7, 4, 59), Some(&r)),
            Decision::Duplicate {
                kind: ScanKind::Login
            }
        );
        assert!(matches!(
            run(at(7, 5, 0), Some(&r)),
            Decision::Reject(RejectReason::AlreadyLoggedIn { .. })
        ));
    }

    #[test]
    fn logout_switch_is_allowed_within_cooldown() {
        // Logged in at 11:29 (an adjusted record), logout window opens 11:30.
        let r = rec(Some(at(11, 29, 0)), None);
        assert!(matches!(
            run(at(11, 30, 0), Some(&r)),
            Decision::Logout { .. }
        ));
    }

    #[test]
    fn logout_keeps_login_status() {
        let mut r = rec(Some(at(7, 20, 0)), None);
        r.status = AttendanceStatus::Late;
        assert!(matches!(
            run(at(11, 45, 0), Some(&r)),
            Decision::Logout {
                status: AttendanceStatus::Late,
                ..
            }
        ));
    }

    #[test]
    fn after_logout() {
        let r = rec(Some(at(7, 0, 0)), Some(at(11, 40, 0)));
        assert_eq!(
            run(at(11, 41, 0), Some(&r)),
            Decision::Duplicate {
                kind: ScanKind::Logout
            }
        );
        assert!(matches!(
            run(at(11, 50, 0), Some(&r)),
            Decision::Reject(RejectReason::AlreadyLoggedOut { .. })
        ));
    }

    #[test]
    fn logout_without_login_is_recorded_late() {
        assert!(matches!(
            run(at(11, 45, 0), None),
            Decision::Logout {
                status: AttendanceStatus::Late,
                ..
            }
        ));
    }

    #[test]
    fn school_set_record_behaves_as_none() {
        let mut r = rec(None, None);
        r.status = AttendanceStatus::Absent;
        assert!(matches!(
            run(at(7, 0, 0), Some(&r)),
            Decision::Login {
                status: AttendanceStatus::Present,
                ..
            }
        ));
    }

    #[test]
    fn clock_going_backwards_is_not_a_duplicate() {
        // A record in the "future" (clock stepped back by NTP) never counts as
        // within the cooldown.
        let r = rec(Some(at(7, 10, 0)), None);
        assert!(matches!(
            run(at(7, 5, 0), Some(&r)),
            Decision::Reject(RejectReason::AlreadyLoggedIn { .. })
        ));
    }

    #[test]
    fn unknown_inactive_and_outside() {
        let now = at(7, 0, 0);
        let d = |roster| {
            decide(
                sched().place(now),
                roster,
                "S9",
                None,
                now,
                chrono::Duration::minutes(5),
            )
        };
        assert_eq!(
            d(RosterEntry::Unknown),
            Decision::Reject(RejectReason::UnknownStudent("S9".into()))
        );
        assert_eq!(
            d(RosterEntry::Inactive),
            Decision::Reject(RejectReason::InactiveStudent("S9".into()))
        );
        assert!(matches!(
            run(at(5, 0, 0), None),
            Decision::Reject(RejectReason::OutsideSessions { .. })
        ));
        let sunday = chrono_tz::Asia::Manila
            .with_ymd_and_hms(2026, 11, 22, 7, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert!(matches!(
            run(sunday, None),
            Decision::Reject(RejectReason::NotSchoolDay(_))
        ));
    }

    #[test]
    fn reasons_have_messages_and_codes() {
        let r = RejectReason::AlreadyLoggedIn {
            session: "morning".into(),
            logout_opens: NaiveTime::from_hms_opt(11, 30, 0).unwrap(),
        };
        assert_eq!(
            r.to_string(),
            "already logged in for morning; logout opens at 11:30"
        );
        assert_eq!(r.code(), "already_logged_in");
        let o = RejectReason::OutsideSessions { next_opens: None };
        assert_eq!(o.to_string(), "outside the session windows");
    }
}

//! The school's schedule: sessions with login and logout windows.
//!
//! All times are local wall-clock times in the school's time zone. A scan's
//! UTC instant is converted once, here, into a school date and a local time;
//! the school day therefore starts at local midnight, whatever the device's
//! own zone or DST. Windows never cross midnight (validated), so a local time
//! belongs to at most one session.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// `HH:MM` wall-clock time, serialised as such in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockTime(pub NaiveTime);

impl ClockTime {
    pub fn hm(h: u32, m: u32) -> Self {
        ClockTime(NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN))
    }
}

impl Serialize for ClockTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.format("%H:%M").to_string())
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NaiveTime::parse_from_str(&s, "%H:%M")
            .map(ClockTime)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a time of day as HH:MM")))
    }
}

/// One session of the school day (e.g. morning, afternoon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionWindow {
    pub name: String,
    /// Official start; lateness is measured from here.
    pub start: ClockTime,
    pub end: ClockTime,
    pub login_open: ClockTime,
    pub login_close: ClockTime,
    pub logout_open: ClockTime,
    pub logout_close: ClockTime,
    /// A login later than `start` + this many minutes is `late`.
    pub late_after_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// IANA zone name, e.g. "Asia/Manila".
    pub timezone: String,
    /// Days on which scans are recorded, e.g. ["mon","tue","wed","thu","fri"].
    pub school_days: Vec<String>,
    pub sessions: Vec<SessionWindow>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            timezone: "Asia/Manila".into(),
            school_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            sessions: vec![
                SessionWindow {
                    name: "morning".into(),
                    start: ClockTime::hm(7, 0),
                    end: ClockTime::hm(12, 0),
                    login_open: ClockTime::hm(6, 30),
                    login_close: ClockTime::hm(7, 30),
                    logout_open: ClockTime::hm(11, 30),
                    logout_close: ClockTime::hm(12, 30),
                    late_after_minutes: 15,
                },
                SessionWindow {
                    name: "afternoon".into(),
                    start: ClockTime::hm(13, 0),
                    end: ClockTime::hm(17, 0),
                    login_open: ClockTime::hm(12, 31),
                    login_close: ClockTime::hm(13, 30),
                    logout_open: ClockTime::hm(16, 30),
                    logout_close: ClockTime::hm(18, 0),
                    late_after_minutes: 15,
                },
            ],
        }
    }
}

/// A validation problem, with the config key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ScheduleError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        key: key.into(),
        message: message.into(),
    }
}

/// A validated schedule, ready for the rules.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub tz: Tz,
    pub school_days: Vec<Weekday>,
    pub sessions: Vec<SessionWindow>,
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Mon,
        "tue" | "tuesday" => Weekday::Tue,
        "wed" | "wednesday" => Weekday::Wed,
        "thu" | "thursday" => Weekday::Thu,
        "fri" | "friday" => Weekday::Fri,
        "sat" | "saturday" => Weekday::Sat,
        "sun" | "sunday" => Weekday::Sun,
        _ => return None,
    })
}

impl Schedule {
    /// Validates a schedule config; `prefix` is the config key it lives at.
    pub fn from_config(cfg: &ScheduleConfig, prefix: &str) -> Result<Self, ScheduleError> {
        let tz: Tz = cfg.timezone.parse().map_err(|_| {
            err(
                format!("{prefix}.timezone"),
                format!("{:?} is not an IANA time zone name", cfg.timezone),
            )
        })?;
        let mut school_days = Vec::new();
        for (i, d) in cfg.school_days.iter().enumerate() {
            let day = parse_weekday(d).ok_or_else(|| {
                err(
                    format!("{prefix}.school_days[{i}]"),
                    format!("{d:?} is not a weekday"),
                )
            })?;
            if !school_days.contains(&day) {
                school_days.push(day);
            }
        }
        if cfg.sessions.is_empty() {
            return Err(err(
                format!("{prefix}.sessions"),
                "at least one session is required",
            ));
        }
        let mut prev_close: Option<(usize, NaiveTime)> = None;
        for (i, s) in cfg.sessions.iter().enumerate() {
            let key = format!("{prefix}.sessions[{i}]");
            if s.name.trim().is_empty() || s.name.len() > 32 {
                return Err(err(format!("{key}.name"), "must be 1..=32 characters"));
            }
            if cfg.sessions[..i].iter().any(|o| o.name == s.name) {
                return Err(err(
                    format!("{key}.name"),
                    format!("duplicate session name {:?}", s.name),
                ));
            }
            let ordered = [
                ("login_open", s.login_open),
                ("login_close", s.login_close),
                ("logout_open", s.logout_open),
                ("logout_close", s.logout_close),
            ];
            for pair in ordered.windows(2) {
                if pair[0].1 >= pair[1].1 {
                    return Err(err(
                        format!("{key}.{}", pair[1].0),
                        format!(
                            "must be later than {} (windows may not overlap or cross midnight)",
                            pair[0].0
                        ),
                    ));
                }
            }
            if s.start >= s.end {
                return Err(err(format!("{key}.end"), "must be later than start"));
            }
            if s.start < s.login_open || s.start > s.login_close {
                return Err(err(
                    format!("{key}.start"),
                    "must lie inside the login window",
                ));
            }
            if s.late_after_minutes > 24 * 60 {
                return Err(err(
                    format!("{key}.late_after_minutes"),
                    "must be at most 1440",
                ));
            }
            if let Some((j, _)) = prev_close.filter(|(_, close)| s.login_open.0 <= *close) {
                return Err(err(
                    format!("{key}.login_open"),
                    format!(
                        "must be later than sessions[{j}].logout_close (sessions are in time order and do not overlap)"
                    ),
                ));
            }
            prev_close = Some((i, s.logout_close.0));
        }
        Ok(Schedule {
            tz,
            school_days,
            sessions: cfg.sessions.clone(),
        })
    }
}

/// Where an instant falls in the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub school_date: NaiveDate,
    pub session: String,
    pub local_time: NaiveTime,
    pub in_login_window: bool,
    pub in_logout_window: bool,
    /// Whether a login now would be late.
    pub late: bool,
    pub logout_opens: NaiveTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    InSession(Slot),
    NotSchoolDay {
        school_date: NaiveDate,
    },
    /// Outside every session's windows; `next_opens` is the next login window
    /// today, if any.
    OutsideSessions {
        next_opens: Option<NaiveTime>,
    },
}

impl Schedule {
    pub fn place(&self, at: DateTime<Utc>) -> Placement {
        let local = at.with_timezone(&self.tz);
        let school_date = local.date_naive();
        if !self.school_days.contains(&school_date.weekday()) {
            return Placement::NotSchoolDay { school_date };
        }
        let t = local.time();
        for s in &self.sessions {
            if t >= s.login_open.0 && t <= s.logout_close.0 {
                let late_at =
                    s.start.0 + chrono::Duration::minutes(i64::from(s.late_after_minutes));
                return Placement::InSession(Slot {
                    school_date,
                    session: s.name.clone(),
                    local_time: t,
                    in_login_window: t <= s.login_close.0,
                    in_logout_window: t >= s.logout_open.0,
                    late: t > late_at,
                    logout_opens: s.logout_open.0,
                });
            }
        }
        let next_opens = self
            .sessions
            .iter()
            .map(|s| s.login_open.0)
            .filter(|o| *o > t)
            .min();
        Placement::OutsideSessions { next_opens }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sched() -> Schedule {
        Schedule::from_config(&ScheduleConfig::default(), "schedule").unwrap()
    }

    /// 2026-11-23 is a Monday.
    fn manila(h: u32, m: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Manila
            .with_ymd_and_hms(2026, 11, 23, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn slot(p: Placement) -> Slot {
        match p {
            Placement::InSession(s) => s,
            other => panic!("expected a slot, got {other:?}"),
        }
    }

    #[test]
    fn default_schedule_is_valid() {
        let s = sched();
        assert_eq!(s.sessions.len(), 2);
        assert_eq!(s.school_days.len(), 5);
    }

    #[test]
    fn login_window_and_late_threshold() {
        let s = sched();
        let on_time = slot(s.place(manila(7, 15)));
        assert!(on_time.in_login_window && !on_time.late && !on_time.in_logout_window);
        assert_eq!(on_time.session, "morning");
        let late = slot(s.place(manila(7, 16)));
        assert!(late.in_login_window && late.late);
        let early = slot(s.place(manila(6, 30)));
        assert!(early.in_login_window && !early.late);
        let between = slot(s.place(manila(9, 0)));
        assert!(!between.in_login_window && !between.in_logout_window);
        let logout = slot(s.place(manila(11, 45)));
        assert!(logout.in_logout_window);
        assert_eq!(slot(s.place(manila(13, 5))).session, "afternoon");
    }

    #[test]
    fn outside_sessions_and_weekends() {
        let s = sched();
        assert_eq!(
            s.place(manila(6, 0)),
            Placement::OutsideSessions {
                next_opens: Some(NaiveTime::from_hms_opt(6, 30, 0).unwrap())
            }
        );
        assert_eq!(
            s.place(manila(19, 0)),
            Placement::OutsideSessions { next_opens: None }
        );
        let saturday = chrono_tz::Asia::Manila
            .with_ymd_and_hms(2026, 11, 28, 7, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert!(matches!(s.place(saturday), Placement::NotSchoolDay { .. }));
    }

    #[test]
    fn school_date_is_local_not_utc() {
        // 06:45 in Manila on Monday is 22:45 UTC on Sunday.
        let s = sched();
        let at = manila(6, 45);
        assert_eq!(
            at.date_naive(),
            NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
        );
        assert_eq!(
            slot(s.place(at)).school_date,
            NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
        );
    }

    #[test]
    fn dst_zone_is_handled() {
        let cfg = ScheduleConfig {
            timezone: "Europe/Berlin".into(),
            school_days: vec!["sun".into(), "mon".into()],
            ..ScheduleConfig::default()
        };
        let s = Schedule::from_config(&cfg, "schedule").unwrap();
        // 2026-03-29 is the spring-forward Sunday; 07:05 local is 05:05 UTC.
        let at = Utc.with_ymd_and_hms(2026, 3, 29, 5, 5, 0).unwrap();
        let sl = slot(s.place(at));
        assert_eq!(sl.local_time, NaiveTime::from_hms_opt(7, 5, 0).unwrap());
        assert!(!sl.late);
    }

    #[test]
    #[allow(clippy::field_reassign_with_default)]
    fn validation_names_the_key() {
        let mut cfg = ScheduleConfig::default();
        cfg.timezone = "Mars/Olympus".into();
        assert_eq!(
            Schedule::from_config(&cfg, "schedule").unwrap_err().key,
            "schedule.timezone"
        );

        let mut cfg = ScheduleConfig::default();
        cfg.sessions[0].login_close = ClockTime::hm(6, 0);
        assert_eq!(
            Schedule::from_config(&cfg, "schedule").unwrap_err().key,
            "schedule.sessions[0].login_close"
        );

        let mut cfg = ScheduleConfig::default();
        cfg.sessions[1].login_open = ClockTime::hm(12, 0);
        assert_eq!(
            Schedule::from_config(&cfg, "schedule").unwrap_err().key,
            "schedule.sessions[1].login_open"
        );

        let mut cfg = ScheduleConfig::default();
        cfg.school_days.push("caturday".into());
        assert_eq!(
            Schedule::from_config(&cfg, "schedule").unwrap_err().key,
            "schedule.school_days[5]"
        );

        let mut cfg = ScheduleConfig::default();
        cfg.sessions[1].name = "morning".into();
        assert_eq!(
            Schedule::from_config(&cfg, "schedule").unwrap_err().key,
            "schedule.sessions[1].name"
        );

        let mut cfg = ScheduleConfig::default();
        cfg.sessions[0].start = ClockTime::hm(8, 0);
        assert_eq!(
            Schedule::from_config(&cfg, "schedule").unwrap_err().key,
            "schedule.sessions[0].start"
        );
    }

    #[test]
    fn clock_time_serde() {
        let t: ClockTime = serde_json::from_str("\"07:30\"").unwrap();
        assert_eq!(t, ClockTime::hm(7, 30));
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"07:30\"");
        assert!(serde_json::from_str::<ClockTime>("\"7.30\"").is_err());
        assert!(serde_json::from_str::<ClockTime>("\"25:00\"").is_err());
    }
}

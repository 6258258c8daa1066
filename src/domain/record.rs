//! Attendance records and students as the domain sees them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A student's school number, validated: 1..=32 characters of
/// `[A-Za-z0-9._-]`. Validation happens once, at the edge (payload parsing,
/// roster import), so the rest of the code can trust it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StudentNumber(String);

pub const STUDENT_NUMBER_MAX_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StudentNumberError {
    #[error("student number is empty")]
    Empty,
    #[error("student number is {len} characters long, the limit is {STUDENT_NUMBER_MAX_LEN}")]
    TooLong { len: usize },
    #[error(
        "student number contains {found:?}; only letters, digits, '.', '_' and '-' are allowed"
    )]
    InvalidChar { found: char },
}

impl StudentNumber {
    pub fn parse(raw: &str) -> Result<Self, StudentNumberError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(StudentNumberError::Empty);
        }
        let len = s.chars().count();
        if len > STUDENT_NUMBER_MAX_LEN {
            return Err(StudentNumberError::TooLong { len });
        }
        if let Some(found) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(StudentNumberError::InvalidChar { found });
        }
        Ok(StudentNumber(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StudentNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StudentNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StudentNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The status of a student for one session of one school day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttendanceStatus {
    Present,
    Late,
    /// Set by the school (cloud side or admin), never by a scan.
    Absent,
    /// Set by the school (cloud side or admin), never by a scan.
    Excused,
}

impl AttendanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttendanceStatus::Present => "present",
            AttendanceStatus::Late => "late",
            AttendanceStatus::Absent => "absent",
            AttendanceStatus::Excused => "excused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "present" => AttendanceStatus::Present,
            "late" => AttendanceStatus::Late,
            "absent" => AttendanceStatus::Absent,
            "excused" => AttendanceStatus::Excused,
            _ => return None,
        })
    }
}

impl fmt::Display for AttendanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn student_numbers_are_trimmed_and_checked() {
        assert_eq!(
            StudentNumber::parse(" 2024-0001\r\n").unwrap().as_str(),
            "2024-0001"
        );
        assert_eq!(StudentNumber::parse("  "), Err(StudentNumberError::Empty));
        assert_eq!(
            StudentNumber::parse("a b"),
            Err(StudentNumberError::InvalidChar { found: ' ' })
        );
        assert_eq!(
            StudentNumber::parse("x'; DROP TABLE students;--"),
            Err(StudentNumberError::InvalidChar { found: '\'' })
        );
        assert_eq!(
            StudentNumber::parse(&"9".repeat(33)),
            Err(StudentNumberError::TooLong { len: 33 })
        );
        assert!(StudentNumber::parse(&"9".repeat(32)).is_ok());
        assert!(matches!(
            StudentNumber::parse("é1"),
            Err(StudentNumberError::InvalidChar { found: 'é' })
        ));
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            AttendanceStatus::Present,
            AttendanceStatus::Late,
            AttendanceStatus::Absent,
            AttendanceStatus::Excused,
        ] {
            assert_eq!(AttendanceStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(AttendanceStatus::parse("PRESENT"), None);
    }
}

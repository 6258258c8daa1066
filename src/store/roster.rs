//! The roster cache as the cloud pull writes it, and the sync engine's
//! small key/value state.
//!
//! A pull is applied one chunk per transaction ([`ROSTER_CHUNK`] rows at
//! most), each chunk advancing the cursor to its last row, so a scan waits
//! behind at most one chunk and a pull cut short resumes where it stopped.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, StudentRow, timestamp};

/// Largest number of roster rows one transaction writes.
pub const ROSTER_CHUNK: usize = 250;
/// Largest number of phone numbers one expiry transaction erases.
pub const EXPIRE_CHUNK: usize = 500;

const ROSTER_CURSOR: &str = "roster_cursor";
const ROSTER_PULLED_AT: &str = "roster_pulled_at";

/// Where the last roster pull stopped: the last row's `updated_at` (as the
/// server printed it) and student number (as the server sent it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RosterCursor {
    pub updated_at: String,
    pub student_number: String,
}

/// One row of a pulled page: where it moves the cursor, and the student if
/// the row was valid (`None`: skipped, counted by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    pub cursor: RosterCursor,
    pub student: Option<StudentRow>,
}

fn get_state(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM sync_state WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .optional()
}

fn set_state(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sync_state (key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        params![key, value, timestamp(Utc::now())],
    )?;
    Ok(())
}

impl Store {
    pub fn roster_cursor(&self) -> Result<Option<RosterCursor>, StoreError> {
        Ok(get_state(&self.conn, ROSTER_CURSOR)?.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Applies at most [`ROSTER_CHUNK`] rows of a pull in one transaction and
    /// moves the cursor to the last of them. `pull_complete` marks the end
    /// of a whole pull (the phone-number expiry counts from it). Returns the
    /// number of students written.
    pub fn apply_roster_chunk(
        &mut self,
        items: &[RosterItem],
        pull_complete: bool,
    ) -> Result<usize, StoreError> {
        debug_assert!(items.len() <= ROSTER_CHUNK);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut written = 0;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO students (student_number, full_name, grade, section, guardian_phone, active, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (student_number) DO UPDATE SET
                   full_name = excluded.full_name, grade = excluded.grade, section = excluded.section,
                   guardian_phone = excluded.guardian_phone, active = excluded.active,
                   updated_at = excluded.updated_at",
            )?;
            for it in items {
                if let Some(st) = &it.student {
                    up.execute(params![
                        st.student_number.as_str(),
                        st.full_name,
                        st.grade,
                        st.section,
                        st.guardian_phone,
                        st.active,
                        it.cursor.updated_at
                    ])?;
                    written += 1;
                }
            }
        }
        if let Some(last) = items.last() {
            let text = serde_json::to_string(&last.cursor)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            set_state(&tx, ROSTER_CURSOR, &text)?;
        }
        if pull_complete {
            set_state(&tx, ROSTER_PULLED_AT, &timestamp(Utc::now()))?;
        }
        tx.commit()?;
        Ok(written)
    }

    /// Privacy rule: when the roster has not been refreshed for `days`,
    /// erases up to [`EXPIRE_CHUNK`] cached guardian phone numbers. Returns
    /// how many; call again while it returns a full chunk.
    pub fn expire_phones_chunk(
        &mut self,
        days: u32,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        if days == 0 {
            return Ok(0);
        }
        let last = get_state(&self.conn, ROSTER_PULLED_AT)?
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc));
        let stale = match last {
            Some(t) => now - t > chrono::Duration::days(i64::from(days)),
            // Never pulled: the numbers came from a local import; leave them.
            None => false,
        };
        if !stale {
            return Ok(0);
        }
        Ok(self.conn.execute(
            "UPDATE students SET guardian_phone = NULL WHERE student_number IN
               (SELECT student_number FROM students WHERE guardian_phone IS NOT NULL LIMIT ?1)",
            [EXPIRE_CHUNK as i64],
        )?)
    }

    /// A guardian phone number (the SMS sender; never logged).
    pub fn guardian_phone(&self, student_number: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT guardian_phone FROM students WHERE student_number = ?1",
                [student_number],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Number of students with a cached phone number.
    pub fn phones_cached(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM students WHERE guardian_phone IS NOT NULL",
            [],
            |r| r.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::StudentNumber;
    use crate::store::open_for_tests;

    fn item(sn: &str, phone: Option<&str>, at: &str) -> RosterItem {
        RosterItem {
            cursor: RosterCursor {
                updated_at: at.into(),
                student_number: sn.into(),
            },
            student: StudentNumber::parse(sn).ok().map(|n| StudentRow {
                student_number: n,
                full_name: "N".into(),
                grade: String::new(),
                section: String::new(),
                guardian_phone: phone.map(str::to_string),
                active: true,
            }),
        }
    }

    #[test]
    fn a_chunk_moves_the_cursor_past_skipped_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = open_for_tests(dir.path());
        let rows = [
            item("A1", Some("+639171234567"), "2026-11-01T00:00:00Z"),
            item("bad number!", None, "2026-11-02T00:00:00Z"),
        ];
        assert_eq!(s.apply_roster_chunk(&rows, true).expect("apply"), 1);
        assert_eq!(
            s.roster_cursor().expect("cursor"),
            Some(rows[1].cursor.clone())
        );
        assert_eq!(
            s.stats(chrono::Utc::now().date_naive())
                .expect("stats")
                .students,
            1
        );
    }

    #[test]
    fn phone_numbers_expire_in_chunks_when_the_roster_is_stale() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = open_for_tests(dir.path());
        let many: Vec<_> = (0..(EXPIRE_CHUNK + 10))
            .map(|i| {
                item(
                    &format!("P{i}"),
                    Some("+639170000001"),
                    "2026-11-01T00:00:00Z",
                )
            })
            .collect();
        // Never pulled: locally imported numbers are left alone.
        assert_eq!(s.expire_phones_chunk(30, Utc::now()).expect("x"), 0);
        for c in many.chunks(ROSTER_CHUNK) {
            s.apply_roster_chunk(c, false).expect("apply");
        }
        s.apply_roster_chunk(&[], true).expect("complete");
        assert_eq!(s.expire_phones_chunk(30, Utc::now()).expect("x"), 0);
        assert_eq!(
            s.expire_phones_chunk(0, Utc::now() + chrono::Duration::days(999))
                .expect("x"),
            0
        );
        let later = Utc::now() + chrono::Duration::days(31);
        assert_eq!(s.expire_phones_chunk(30, later).expect("x"), EXPIRE_CHUNK);
        assert_eq!(s.expire_phones_chunk(30, later).expect("x"), 10);
        assert_eq!(s.expire_phones_chunk(30, later).expect("x"), 0);
        assert_eq!(s.phones_cached().expect("n"), 0);
    }
}

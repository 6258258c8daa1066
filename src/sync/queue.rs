//! The sync engine's checks on what it reads: outbox items before they go
//! into a batch, roster rows before they reach the store. Pure; the SQL is
//! in `crate::store` (outbox, roster, photos).
//!
//! Reasons are short codes (`payload_not_a_record`, `student_number_invalid`
//! ...): they go to logs and the quarantine, and never carry the offending
//! value (a payload may be anything; a roster row holds names and phones).

use std::collections::BTreeMap;

use chrono::DateTime;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::record::{AttendanceStatus, StudentNumber};
use crate::store::outbox::OutboxRow;
use crate::store::roster::{RosterCursor, RosterItem};
use crate::store::{AttendanceRecord, StudentRow};

/// Payloads larger than this are not attendance records.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

fn rfc3339(v: &str) -> bool {
    DateTime::parse_from_rfc3339(v).is_ok()
}

/// Checks an outbox item; on success the row to send (with the Storage
/// path of its photo, never the local one).
pub fn validate(row: &OutboxRow, device_id: &str) -> Result<AttendanceRecord, &'static str> {
    if row.payload.len() > MAX_PAYLOAD_BYTES {
        return Err("payload_too_large");
    }
    let mut p: AttendanceRecord =
        serde_json::from_str(&row.payload).map_err(|_| "payload_not_a_record")?;
    if p.id.to_string() != row.record_id {
        return Err("payload_id_mismatch");
    }
    match StudentNumber::parse(&p.student_number) {
        Ok(sn) if sn.as_str() == p.student_number => {}
        _ => return Err("student_number_invalid"),
    }
    if p.session.is_empty() || p.session.len() > 64 {
        return Err("session_invalid");
    }
    if p.time_in.is_none() && p.time_out.is_none() {
        return Err("no_time");
    }
    if p.time_in.as_deref().is_some_and(|t| !rfc3339(t))
        || p.time_out.as_deref().is_some_and(|t| !rfc3339(t))
        || !rfc3339(&p.created_at)
        || !rfc3339(&p.updated_at)
    {
        return Err("time_invalid");
    }
    if AttendanceStatus::parse(&p.status).is_none() {
        return Err("status_invalid");
    }
    if p.device_id != device_id {
        return Err("device_id_mismatch");
    }
    if p.source.is_empty() || p.source.len() > 32 {
        return Err("source_invalid");
    }
    p.photo_path = row.photo_remote_path.clone().filter(|r| !r.is_empty());
    Ok(p)
}

/// One record to send: its newest snapshot in the batch and every outbox
/// seq of the batch it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub row: AttendanceRecord,
    pub seqs: Vec<i64>,
}

/// A batch read from the outbox.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<BatchItem>,
    /// Items that failed validation: (seq, reason), to quarantine.
    pub invalid: Vec<(i64, &'static str)>,
    /// The highest seq read (the next batch starts after it).
    pub last_seq: i64,
}

/// Validates outbox rows (in seq order) and folds several snapshots of one
/// record into its newest.
pub fn fold_batch(rows: Vec<OutboxRow>, device_id: &str) -> Batch {
    let mut batch = Batch::default();
    let mut by_record: BTreeMap<Uuid, usize> = BTreeMap::new();
    for r in rows {
        batch.last_seq = batch.last_seq.max(r.seq);
        match validate(&r, device_id) {
            Ok(row) => match by_record.get(&row.id) {
                Some(&i) => {
                    let item = &mut batch.items[i];
                    item.seqs.push(r.seq);
                    item.row = row; // ordered by seq: the newest wins
                }
                None => {
                    by_record.insert(row.id, batch.items.len());
                    batch.items.push(BatchItem {
                        row,
                        seqs: vec![r.seq],
                    });
                }
            },
            Err(reason) => batch.invalid.push((r.seq, reason)),
        }
    }
    batch
}

/// A student row as PostgREST returns it.
#[derive(Debug, Clone, Deserialize)]
struct CloudStudent {
    student_number: String,
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    grade: Option<String>,
    #[serde(default)]
    section: Option<String>,
    #[serde(default)]
    guardian_phone: Option<String>,
    active: bool,
}

/// One pulled page, checked: the items for the store (invalid rows carry
/// no student but still move the cursor) and why rows were skipped.
#[derive(Debug, Default)]
pub struct RosterPage {
    pub items: Vec<RosterItem>,
    pub skipped: BTreeMap<&'static str, u64>,
}

/// Checks one page. A row without a usable cursor (`updated_at`,
/// `student_number` as strings) is skipped without moving the cursor; any
/// other invalid row is skipped and the cursor moves past it, so one bad
/// row never stops later pulls.
pub fn check_roster_page(rows: Vec<serde_json::Value>) -> RosterPage {
    let mut page = RosterPage::default();
    for v in rows {
        let cursor = match (
            v.get("updated_at").and_then(|u| u.as_str()),
            v.get("student_number").and_then(|s| s.as_str()),
        ) {
            (Some(u), Some(s)) if rfc3339(u) => RosterCursor {
                updated_at: u.to_string(),
                student_number: s.to_string(),
            },
            _ => {
                *page.skipped.entry("no_cursor").or_default() += 1;
                continue;
            }
        };
        // serde's message would echo the offending value: only its kind is kept.
        let student = match serde_json::from_value::<CloudStudent>(v) {
            Err(_) => Err("wrong_type"),
            Ok(c) => match StudentNumber::parse(&c.student_number) {
                Ok(sn) if sn.as_str() == c.student_number => Ok(StudentRow {
                    student_number: sn,
                    full_name: c.full_name.unwrap_or_default(),
                    grade: c.grade.unwrap_or_default(),
                    section: c.section.unwrap_or_default(),
                    guardian_phone: c.guardian_phone,
                    active: c.active,
                }),
                _ => Err("student_number_invalid"),
            },
        };
        match student {
            Ok(s) => page.items.push(RosterItem {
                cursor,
                student: Some(s),
            }),
            Err(reason) => {
                *page.skipped.entry(reason).or_default() += 1;
                page.items.push(RosterItem {
                    cursor,
                    student: None,
                });
            }
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(device: &str) -> OutboxRow {
        let id = Uuid::new_v4();
        let p = serde_json::json!({
            "id": id, "student_number": "2024-0001", "school_date": "2026-11-23", "session": "morning",
            "time_in": "2026-11-23T07:01:00.000Z", "time_out": null, "status": "present",
            "device_id": device, "photo_path": "/data/x.jpg", "clock_synced": true, "source": "replay",
            "created_at": "2026-11-23T07:01:00.000Z", "updated_at": "2026-11-23T07:01:00.000Z"
        });
        OutboxRow {
            seq: 1,
            record_id: id.to_string(),
            payload: p.to_string(),
            photo_remote_path: None,
        }
    }

    #[test]
    fn validation_accepts_the_store_format_and_names_problems() {
        let mut r = row("k1");
        r.photo_remote_path = Some("k1/2026-11-23/x.jpg".into());
        let ok = validate(&r, "k1").unwrap();
        assert_eq!(ok.photo_path.as_deref(), Some("k1/2026-11-23/x.jpg"));
        r.photo_remote_path = None;
        assert_eq!(
            validate(&r, "k1").unwrap().photo_path,
            None,
            "the local path never leaves"
        );
        assert_eq!(validate(&r, "k2").unwrap_err(), "device_id_mismatch");
        let mut other = r.clone();
        other.record_id = "other".into();
        assert_eq!(validate(&other, "k1").unwrap_err(), "payload_id_mismatch");
        let with = |from: &str, to: &str| {
            let mut x = r.clone();
            x.payload = x.payload.replace(from, to);
            assert_ne!(x.payload, r.payload);
            validate(&x, "k1").unwrap_err()
        };
        assert_eq!(with("\"present\"", "\"here\""), "status_invalid");
        assert_eq!(
            with(
                "\"time_in\":\"2026-11-23T07:01:00.000Z\"",
                "\"time_in\":\"yesterday\""
            ),
            "time_invalid"
        );
        assert_eq!(with("2024-0001", "x'; drop"), "student_number_invalid");
        assert_eq!(with("\"session\":\"morning\",", ""), "payload_not_a_record");
        let mut big = r.clone();
        big.payload = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_PAYLOAD_BYTES));
        assert_eq!(validate(&big, "k1").unwrap_err(), "payload_too_large");
    }

    #[test]
    fn roster_rows_are_checked_one_by_one_and_reasons_counted() {
        let rows = vec![
            serde_json::json!({"student_number": "A1", "full_name": "Ana Reyes", "guardian_phone": "+639171234567", "active": true, "updated_at": "2026-11-01T00:00:00+00:00"}),
            serde_json::json!({"student_number": "A2", "full_name": "Ben Cruz", "guardian_phone": 639171234568u64, "active": true, "updated_at": "2026-11-01T00:00:01+00:00"}),
            serde_json::json!({"student_number": "O\"Brien,1", "active": true, "updated_at": "2026-11-01T00:00:02+00:00"}),
            serde_json::json!({"student_number": "A4", "active": true}),
        ];
        let page = check_roster_page(rows);
        assert_eq!(page.items.len(), 3);
        assert!(page.items[0].student.is_some());
        assert!(page.items[1].student.is_none() && page.items[2].student.is_none());
        assert_eq!(page.items[2].cursor.student_number, "O\"Brien,1");
        assert_eq!(page.skipped.get("wrong_type"), Some(&1));
        assert_eq!(page.skipped.get("student_number_invalid"), Some(&1));
        assert_eq!(page.skipped.get("no_cursor"), Some(&1));
    }
}

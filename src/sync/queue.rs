//! The sync engine's local side: reading the outbox, validating items,
//! acknowledging and quarantining them, applying the roster, tracking photo
//! uploads. Every function here runs on the database thread (through
//! `StoreHandle::call`) and is short: one bounded query or one transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::record::{AttendanceStatus, StudentNumber};
use crate::store::timestamp;

/// Payloads larger than this are not attendance records.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// An outbox payload as the store writes it (`AttendanceRecord`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxPayload {
    id: Uuid,
    student_number: String,
    school_date: NaiveDate,
    session: String,
    time_in: Option<String>,
    time_out: Option<String>,
    status: String,
    device_id: String,
    #[allow(dead_code)]
    photo_path: Option<String>,
    clock_synced: bool,
    source: String,
    created_at: String,
    updated_at: String,
}

/// One attendance row as sent to PostgREST. `photo_path` is the object's
/// path in Storage (the local file path means nothing in the cloud).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WireRow {
    pub id: Uuid,
    pub student_number: String,
    pub school_date: NaiveDate,
    pub session: String,
    pub time_in: Option<String>,
    pub time_out: Option<String>,
    pub status: String,
    pub device_id: String,
    pub photo_path: Option<String>,
    pub clock_synced: bool,
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The columns of [`WireRow`], for PostgREST's `columns=` parameter.
pub const WIRE_COLUMNS: &str = "id,student_number,school_date,session,time_in,time_out,status,device_id,photo_path,clock_synced,source,created_at,updated_at";

fn rfc3339(field: &str, v: &str) -> Result<(), String> {
    DateTime::parse_from_rfc3339(v)
        .map(|_| ())
        .map_err(|e| format!("{field} {v:?} is not an RFC 3339 time: {e}"))
}

/// Checks an outbox item before it goes into a batch.
pub fn validate(
    record_id: &str,
    payload: &str,
    device_id: &str,
    photo_remote_path: Option<String>,
) -> Result<WireRow, String> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "payload is {} bytes, the limit is {MAX_PAYLOAD_BYTES}",
            payload.len()
        ));
    }
    let p: OutboxPayload =
        serde_json::from_str(payload).map_err(|e| format!("payload is not a record: {e}"))?;
    if p.id.to_string() != record_id {
        return Err(format!(
            "payload id {} differs from the outbox record_id {record_id:?}",
            p.id
        ));
    }
    StudentNumber::parse(&p.student_number)
        .map_err(|e| format!("student_number: {e}"))
        .and_then(|sn| {
            if sn.as_str() == p.student_number {
                Ok(())
            } else {
                Err("student_number has surrounding spaces".into())
            }
        })?;
    if p.session.is_empty() || p.session.len() > 64 {
        return Err("session must be 1..=64 characters".into());
    }
    if p.time_in.is_none() && p.time_out.is_none() {
        return Err("record has neither time_in nor time_out".into());
    }
    if let Some(t) = &p.time_in {
        rfc3339("time_in", t)?;
    }
    if let Some(t) = &p.time_out {
        rfc3339("time_out", t)?;
    }
    rfc3339("created_at", &p.created_at)?;
    rfc3339("updated_at", &p.updated_at)?;
    if AttendanceStatus::parse(&p.status).is_none() {
        return Err(format!("status {:?} is not a known status", p.status));
    }
    if p.device_id != device_id {
        return Err(format!(
            "device_id {:?} is not this kiosk's ({device_id:?}); the cloud would refuse it",
            p.device_id
        ));
    }
    if p.source.is_empty() || p.source.len() > 32 {
        return Err("source must be 1..=32 characters".into());
    }
    Ok(WireRow {
        id: p.id,
        student_number: p.student_number,
        school_date: p.school_date,
        session: p.session,
        time_in: p.time_in,
        time_out: p.time_out,
        status: p.status,
        device_id: p.device_id,
        photo_path: photo_remote_path,
        clock_synced: p.clock_synced,
        source: p.source,
        created_at: p.created_at,
        updated_at: p.updated_at,
    })
}

/// One record to send: its newest snapshot in the batch and every outbox
/// seq of the batch it covers.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub row: WireRow,
    pub seqs: Vec<i64>,
}

/// A batch read from the outbox.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<BatchItem>,
    /// Items that failed validation, already moved to the quarantine.
    pub quarantined: usize,
}

fn quarantine_seqs(
    tx: &rusqlite::Transaction<'_>,
    seqs: &[i64],
    reason: &str,
    http_status: Option<u16>,
    now: &str,
) -> rusqlite::Result<usize> {
    let mut copy = tx.prepare_cached(
        "INSERT OR REPLACE INTO outbox_quarantine
           (seq, topic, record_id, payload, created_at, attempts, reason, http_status, quarantined_at)
         SELECT seq, topic, record_id, payload, created_at, attempts, ?2, ?3, ?4 FROM outbox WHERE seq = ?1",
    )?;
    let mut del = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
    let mut n = 0;
    for s in seqs {
        copy.execute(params![s, reason, http_status, now])?;
        n += del.execute([s])?;
    }
    Ok(n)
}

/// Reads up to `limit` outbox rows in order, quarantines the invalid ones
/// (in the same transaction) and folds several snapshots of one record
/// into its newest.
pub fn load_batch(conn: &mut Connection, limit: usize, device_id: &str) -> rusqlite::Result<Batch> {
    load_batch_after(conn, 0, limit, device_id)
}

/// [`load_batch`] limited to outbox rows after `after_seq`: the batch that
/// follows one still in flight (seqs only grow).
pub fn load_batch_after(
    conn: &mut Connection,
    after_seq: i64,
    limit: usize,
    device_id: &str,
) -> rusqlite::Result<Batch> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows: Vec<(i64, String, String, Option<String>)> = {
        let mut st = tx.prepare_cached(
            "SELECT o.seq, o.record_id, o.payload, a.photo_remote_path
             FROM outbox o LEFT JOIN attendance a ON a.id = o.record_id
             WHERE o.topic = 'attendance' AND o.seq > ?2 ORDER BY o.seq LIMIT ?1",
        )?;
        st.query_map([limit as i64, after_seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?
    };
    let now = timestamp(Utc::now());
    let mut batch = Batch::default();
    let mut by_record: BTreeMap<Uuid, usize> = BTreeMap::new();
    for (seq, record_id, payload, remote) in rows {
        match validate(&record_id, &payload, device_id, remote) {
            Ok(row) => match by_record.get(&row.id) {
                Some(&i) => {
                    let item = &mut batch.items[i];
                    item.seqs.push(seq);
                    item.row = row; // ordered by seq: the newest wins
                }
                None => {
                    by_record.insert(row.id, batch.items.len());
                    batch.items.push(BatchItem {
                        row,
                        seqs: vec![seq],
                    });
                }
            },
            Err(reason) => {
                tracing::warn!(seq, record_id = %record_id, reason = %reason, "outbox item invalid: quarantined");
                batch.quarantined += quarantine_seqs(&tx, &[seq], &reason, None, &now)?;
            }
        }
    }
    tx.commit()?;
    Ok(batch)
}

/// After the cloud acknowledged `items`: removes their outbox rows and
/// marks the records synced, in one transaction. A record that got a newer
/// outbox row meanwhile stays unsynced until that one is sent too.
pub fn acknowledge(conn: &mut Connection, items: &[&BatchItem]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = timestamp(Utc::now());
    {
        let mut del = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
        let mut mark = tx.prepare_cached(
            "UPDATE attendance SET synced_at = ?2
             WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM outbox WHERE record_id = ?1)",
        )?;
        for item in items {
            for s in &item.seqs {
                del.execute([s])?;
            }
            mark.execute(params![item.row.id.to_string(), now])?;
        }
    }
    tx.commit()
}

/// Moves the outbox rows of records the server refused into the quarantine.
pub fn quarantine(
    conn: &mut Connection,
    items: &[(&BatchItem, String, u16)],
) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = timestamp(Utc::now());
    let mut n = 0;
    for (item, reason, status) in items {
        n += quarantine_seqs(&tx, &item.seqs, reason, Some(*status), &now)?;
    }
    tx.commit()?;
    Ok(n)
}

/// Notes a failed attempt on the rows of a batch (for the administrator).
pub fn note_failure(conn: &mut Connection, seqs: &[i64], error: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare_cached(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE seq = ?1",
        )?;
        for s in seqs {
            st.execute(params![s, error])?;
        }
    }
    tx.commit()
}

pub fn outbox_depth(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT count(*) FROM outbox WHERE topic = 'attendance'",
        [],
        |r| r.get(0),
    )
}

pub fn quarantine_depth(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM outbox_quarantine", [], |r| r.get(0))
}

pub fn get_state(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
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

pub const ROSTER_CURSOR: &str = "roster_cursor";
pub const ROSTER_PULLED_AT: &str = "roster_pulled_at";

/// Where the last roster pull stopped: the last row's `updated_at` (as the
/// server printed it) and student number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RosterCursor {
    pub updated_at: String,
    pub student_number: String,
}

/// A student row as PostgREST returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct CloudStudent {
    pub student_number: String,
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub grade: Option<String>,
    #[serde(default)]
    pub section: Option<String>,
    #[serde(default)]
    pub guardian_phone: Option<String>,
    pub active: bool,
    pub updated_at: String,
}

pub fn roster_cursor(conn: &Connection) -> rusqlite::Result<Option<RosterCursor>> {
    Ok(get_state(conn, ROSTER_CURSOR)?.and_then(|s| serde_json::from_str(&s).ok()))
}

/// Outcome of applying a pulled roster.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RosterApplied {
    pub upserted: usize,
    /// Rows with an invalid student number (logged, skipped).
    pub skipped: usize,
}

/// Applies a complete pull and advances the cursor, all in one transaction.
pub fn apply_roster(
    conn: &mut Connection,
    rows: &[CloudStudent],
    cursor: Option<&RosterCursor>,
) -> rusqlite::Result<RosterApplied> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = RosterApplied::default();
    {
        let mut up = tx.prepare_cached(
            "INSERT INTO students (student_number, full_name, grade, section, guardian_phone, active, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (student_number) DO UPDATE SET
               full_name = excluded.full_name, grade = excluded.grade, section = excluded.section,
               guardian_phone = excluded.guardian_phone, active = excluded.active,
               updated_at = excluded.updated_at",
        )?;
        for r in rows {
            match StudentNumber::parse(&r.student_number) {
                Ok(sn) => {
                    up.execute(params![
                        sn.as_str(),
                        r.full_name.clone().unwrap_or_default(),
                        r.grade.clone().unwrap_or_default(),
                        r.section.clone().unwrap_or_default(),
                        r.guardian_phone,
                        r.active,
                        r.updated_at
                    ])?;
                    out.upserted += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "roster row from the cloud skipped");
                    out.skipped += 1;
                }
            }
        }
    }
    if let Some(c) = cursor {
        let text = serde_json::to_string(c)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        set_state(&tx, ROSTER_CURSOR, &text)?;
    }
    set_state(&tx, ROSTER_PULLED_AT, &timestamp(Utc::now()))?;
    tx.commit()?;
    Ok(out)
}

/// Privacy rule: erases cached guardian phone numbers when the roster has
/// not been refreshed for `days`. Returns how many were erased.
pub fn expire_phones(
    conn: &mut Connection,
    days: u32,
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    if days == 0 {
        return Ok(0);
    }
    let last = get_state(conn, ROSTER_PULLED_AT)?
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc));
    let stale = match last {
        Some(t) => now - t > chrono::Duration::days(days as i64),
        // Never pulled: the numbers came from a local import; leave them.
        None => false,
    };
    if !stale {
        return Ok(0);
    }
    conn.execute(
        "UPDATE students SET guardian_phone = NULL WHERE guardian_phone IS NOT NULL",
        [],
    )
}

/// A photo waiting for upload.
#[derive(Debug, Clone)]
pub struct PendingPhoto {
    pub record_id: Uuid,
    pub school_date: NaiveDate,
    pub local_path: String,
}

pub fn pending_photos(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<PendingPhoto>> {
    let mut st = conn.prepare_cached(
        "SELECT id, school_date, photo_path FROM attendance
         WHERE photo_path IS NOT NULL AND photo_remote_path IS NULL
         ORDER BY created_at LIMIT ?1",
    )?;
    let rows = st
        .query_map([limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, date, path)| {
            Some(PendingPhoto {
                record_id: Uuid::parse_str(&id).ok()?,
                school_date: date.parse().ok()?,
                local_path: path,
            })
        })
        .collect())
}

/// Records the remote path of an uploaded photo and queues the record again
/// so the cloud row gets the path, in one transaction.
pub fn photo_uploaded(
    conn: &mut Connection,
    record_id: Uuid,
    remote_path: &str,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = timestamp(Utc::now());
    let id = record_id.to_string();
    tx.execute(
        "UPDATE attendance SET photo_remote_path = ?2, photo_uploaded_at = ?3 WHERE id = ?1",
        params![id, remote_path, now],
    )?;
    let payload = tx
        .query_row(
            "SELECT json_object('id', id, 'student_number', student_number, 'school_date', school_date,
               'session', session, 'time_in', time_in, 'time_out', time_out, 'status', status,
               'device_id', device_id, 'photo_path', photo_path,
               'clock_synced', json(CASE clock_synced WHEN 1 THEN 'true' ELSE 'false' END),
               'source', source, 'created_at', created_at, 'updated_at', updated_at)
             FROM attendance WHERE id = ?1",
            [&id],
            |r| r.get::<_, String>(0),
        )
        .optional()?;
    if let Some(p) = payload {
        tx.execute(
            "INSERT INTO outbox (topic, record_id, payload, created_at) VALUES ('attendance', ?1, ?2, ?3)",
            params![id, p, now],
        )?;
    }
    tx.commit()
}

/// A photo whose record could not be uploaded for good (missing, too big).
pub fn photo_unavailable(
    conn: &mut Connection,
    record_id: Uuid,
    why: &str,
) -> rusqlite::Result<()> {
    // The marker keeps the row out of `pending_photos`; the reason is logged.
    conn.execute(
        "UPDATE attendance SET photo_remote_path = '', photo_uploaded_at = ?2 WHERE id = ?1",
        params![record_id.to_string(), timestamp(Utc::now())],
    )?;
    tracing::warn!(record_id = %record_id, reason = why, "photo will not be uploaded");
    Ok(())
}

/// Local photo files that were uploaded and are older than the retention.
pub fn photos_to_delete(
    conn: &Connection,
    retention_days: u32,
    today: NaiveDate,
    limit: usize,
) -> rusqlite::Result<Vec<(Uuid, String)>> {
    let cutoff = today - chrono::Duration::days(retention_days as i64);
    let mut st = conn.prepare_cached(
        "SELECT id, photo_path FROM attendance
         WHERE photo_path IS NOT NULL AND photo_remote_path IS NOT NULL AND photo_remote_path != ''
           AND school_date <= ?1
         LIMIT ?2",
    )?;
    let rows = st
        .query_map(params![cutoff.to_string(), limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, p)| Some((Uuid::parse_str(&id).ok()?, p)))
        .collect())
}

/// The local copy of a photo is gone (deleted by retention).
pub fn photo_local_deleted(conn: &Connection, record_id: Uuid) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE attendance SET photo_path = NULL WHERE id = ?1",
        [record_id.to_string()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(device: &str) -> (String, String) {
        let id = Uuid::new_v4();
        let p = serde_json::json!({
            "id": id, "student_number": "2024-0001", "school_date": "2026-11-23", "session": "morning",
            "time_in": "2026-11-23T07:01:00.000Z", "time_out": null, "status": "present",
            "device_id": device, "photo_path": "/data/x.jpg", "clock_synced": true, "source": "replay",
            "created_at": "2026-11-23T07:01:00.000Z", "updated_at": "2026-11-23T07:01:00.000Z"
        });
        (id.to_string(), p.to_string())
    }

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c).unwrap();
        c
    }

    fn student(sn: &str, phone: Option<&str>, at: &str) -> CloudStudent {
        CloudStudent {
            student_number: sn.into(),
            full_name: Some("N".into()),
            grade: None,
            section: None,
            guardian_phone: phone.map(str::to_string),
            active: true,
            updated_at: at.into(),
        }
    }

    #[test]
    fn roster_apply_moves_the_cursor_and_skips_bad_numbers() {
        let mut c = db();
        let rows = [
            student("A1", Some("+639171234567"), "2026-11-01T00:00:00Z"),
            student("bad number!", None, "2026-11-02T00:00:00Z"),
        ];
        let cur = RosterCursor {
            updated_at: "2026-11-02T00:00:00Z".into(),
            student_number: "bad number!".into(),
        };
        let out = apply_roster(&mut c, &rows, Some(&cur)).unwrap();
        assert_eq!(
            out,
            RosterApplied {
                upserted: 1,
                skipped: 1
            }
        );
        assert_eq!(roster_cursor(&c).unwrap(), Some(cur));
        let n: i64 = c
            .query_row("SELECT count(*) FROM students", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn phone_numbers_expire_when_the_roster_is_stale() {
        let mut c = db();
        // Never pulled: locally imported numbers are left alone.
        c.execute(
            "INSERT INTO students (student_number, guardian_phone, updated_at) VALUES ('L1', '+639170000001', 'x')",
            [],
        )
        .unwrap();
        assert_eq!(expire_phones(&mut c, 30, Utc::now()).unwrap(), 0);
        apply_roster(
            &mut c,
            &[student("A1", Some("+639171234567"), "2026-11-01T00:00:00Z")],
            None,
        )
        .unwrap();
        assert_eq!(expire_phones(&mut c, 30, Utc::now()).unwrap(), 0);
        assert_eq!(
            expire_phones(&mut c, 0, Utc::now() + chrono::Duration::days(999)).unwrap(),
            0
        );
        let later = Utc::now() + chrono::Duration::days(31);
        assert_eq!(expire_phones(&mut c, 30, later).unwrap(), 2);
        let left: i64 = c
            .query_row(
                "SELECT count(*) FROM students WHERE guardian_phone IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn validation_accepts_the_store_format_and_names_problems() {
        let (id, p) = payload("k1");
        let row = validate(&id, &p, "k1", Some("k1/2026-11-23/x.jpg".into())).unwrap();
        assert_eq!(row.photo_path.as_deref(), Some("k1/2026-11-23/x.jpg"));
        assert!(
            validate(&id, &p, "k2", None)
                .unwrap_err()
                .contains("device_id")
        );
        assert!(
            validate("other", &p, "k1", None)
                .unwrap_err()
                .contains("record_id")
        );
        assert!(
            validate(&id, "{", "k1", None)
                .unwrap_err()
                .contains("not a record")
        );
        let bad = p.replace("present", "here");
        assert!(
            validate(&id, &bad, "k1", None)
                .unwrap_err()
                .contains("status")
        );
        let bad = p.replace(
            "\"time_in\":\"2026-11-23T07:01:00.000Z\"",
            "\"time_in\":\"yesterday\"",
        );
        assert_ne!(bad, p);
        assert!(
            validate(&id, &bad, "k1", None)
                .unwrap_err()
                .contains("time_in")
        );
        let bad = p.replace("2024-0001", "x'; drop");
        assert!(
            validate(&id, &bad, "k1", None)
                .unwrap_err()
                .contains("student_number")
        );
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_PAYLOAD_BYTES));
        assert!(
            validate(&id, &big, "k1", None)
                .unwrap_err()
                .contains("limit")
        );
    }
}

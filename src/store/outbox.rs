//! The outbox and its quarantine: typed operations for the sync engine and
//! the administrator. Each is one bounded query or one short transaction,
//! so a scan queued behind it on the database thread waits little.
//!
//! Invariants:
//! - an outbox row leaves the outbox only by acknowledgement (the record is
//!   then marked synced, unless a newer snapshot is queued) or by quarantine
//!   (copied first, in the same transaction);
//! - a quarantined row comes back only as a fresh snapshot of its record
//!   (never the stale payload), so a retry cannot overwrite newer cloud data.

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use uuid::Uuid;

use super::{AttendanceRecord, Store, StoreError, read_record, timestamp};

/// One outbox row as read for a batch (not yet validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub record_id: String,
    pub payload: String,
    /// The record's photo in Storage once uploaded (`Some("")`: never).
    pub photo_remote_path: Option<String>,
}

/// Rows to move into the quarantine, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineItem {
    pub seqs: Vec<i64>,
    /// A short reason code, never text from outside.
    pub reason: String,
    pub http_status: Option<u16>,
}

/// A quarantined row as the administrator sees it (no payload: it may hold
/// anything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantinedRow {
    pub seq: i64,
    pub record_id: String,
    pub reason: String,
    pub http_status: Option<u16>,
    pub attempts: i64,
    pub quarantined_at: String,
}

/// What a retry or discard did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QuarantineAction {
    /// Rows requeued (retry) or deleted (discard).
    pub done: usize,
    /// Quarantined rows whose record no longer exists (retry only; kept).
    pub missing_record: usize,
}

/// Queues the current state of record `id` (same transaction as its write).
pub(crate) fn enqueue_current(conn: &Connection, id: Uuid, now: &str) -> Result<(), StoreError> {
    let record = read_record(conn, id)?;
    conn.execute(
        "INSERT INTO outbox (topic, record_id, payload, created_at) VALUES ('attendance', ?1, ?2, ?3)",
        params![id.to_string(), record.to_payload()?, now],
    )?;
    Ok(())
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

impl Store {
    /// Up to `limit` attendance outbox rows after `after_seq`, in order
    /// (`after_seq = 0`: from the start). Uses `outbox_by_topic`.
    pub fn outbox_rows_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT o.seq, o.record_id, o.payload, a.photo_remote_path
             FROM outbox o LEFT JOIN attendance a ON a.id = o.record_id
             WHERE o.topic = 'attendance' AND o.seq > ?2 ORDER BY o.seq LIMIT ?1",
        )?;
        let rows = st
            .query_map(params![limit as i64, after_seq], |r| {
                Ok(OutboxRow {
                    seq: r.get(0)?,
                    record_id: r.get(1)?,
                    payload: r.get(2)?,
                    photo_remote_path: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// After the cloud proved it holds these records: removes their outbox
    /// rows and marks them synced, in one transaction. A record that got a
    /// newer outbox row meanwhile stays unsynced until that one is sent.
    pub fn acknowledge_outbox(&mut self, acked: &[(Uuid, Vec<i64>)]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = timestamp(Utc::now());
        {
            let mut del = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
            let mut mark = tx.prepare_cached(
                "UPDATE attendance SET synced_at = ?2
                 WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM outbox WHERE record_id = ?1)",
            )?;
            for (id, seqs) in acked {
                for s in seqs {
                    del.execute([s])?;
                }
                mark.execute(params![id.to_string(), now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Moves outbox rows into the quarantine (copy, then delete).
    pub fn quarantine_outbox(&mut self, items: &[QuarantineItem]) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = timestamp(Utc::now());
        let mut n = 0;
        for it in items {
            n += quarantine_seqs(&tx, &it.seqs, &it.reason, it.http_status, &now)?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Notes a failed attempt on outbox rows (for the administrator).
    pub fn note_outbox_failure(&mut self, seqs: &[i64], error: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE seq = ?1",
            )?;
            for s in seqs {
                st.execute(params![s, error])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn outbox_depth(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM outbox WHERE topic = 'attendance'",
            [],
            |r| r.get(0),
        )?)
    }

    pub fn quarantine_depth(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM outbox_quarantine", [], |r| r.get(0))?)
    }

    /// The quarantine, oldest first, at most `limit` rows.
    pub fn quarantined(&self, limit: usize) -> Result<Vec<QuarantinedRow>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, record_id, reason, http_status, attempts, quarantined_at
             FROM outbox_quarantine ORDER BY seq LIMIT ?1",
        )?;
        let rows = st
            .query_map([limit as i64], |r| {
                Ok(QuarantinedRow {
                    seq: r.get(0)?,
                    record_id: r.get(1)?,
                    reason: r.get(2)?,
                    http_status: r.get(3)?,
                    attempts: r.get(4)?,
                    quarantined_at: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn quarantine_selection(
        tx: &rusqlite::Transaction<'_>,
        seqs: Option<&[i64]>,
    ) -> rusqlite::Result<Vec<(i64, String)>> {
        match seqs {
            Some(seqs) => {
                let mut st = tx.prepare_cached(
                    "SELECT seq, record_id FROM outbox_quarantine WHERE seq = ?1",
                )?;
                let mut out = Vec::new();
                for s in seqs {
                    if let Some(row) = st
                        .query_row([s], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?
                    {
                        out.push(row);
                    }
                }
                Ok(out)
            }
            None => {
                let mut st = tx.prepare_cached(
                    "SELECT seq, record_id FROM outbox_quarantine ORDER BY seq LIMIT 1000",
                )?;
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
            }
        }
    }

    /// Requeues quarantined rows (`None`: up to 1000 of them) as a fresh
    /// snapshot of their record. Rows whose record is gone stay put.
    pub fn retry_quarantined(
        &mut self,
        seqs: Option<&[i64]>,
    ) -> Result<QuarantineAction, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = timestamp(Utc::now());
        let mut out = QuarantineAction::default();
        let rows = Self::quarantine_selection(&tx, seqs)?;
        for (seq, record_id) in rows {
            let id = Uuid::parse_str(&record_id).ok();
            let exists = match id {
                Some(id) => tx
                    .query_row(
                        "SELECT 1 FROM attendance WHERE id = ?1",
                        [id.to_string()],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some(),
                None => false,
            };
            match (id, exists) {
                (Some(id), true) => {
                    enqueue_current(&tx, id, &now)?;
                    tx.execute("DELETE FROM outbox_quarantine WHERE seq = ?1", [seq])?;
                    out.done += 1;
                }
                _ => out.missing_record += 1,
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Deletes quarantined rows for good (`None`: up to 1000 of them). The
    /// records stay, unsynced.
    pub fn discard_quarantined(
        &mut self,
        seqs: Option<&[i64]>,
    ) -> Result<QuarantineAction, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = QuarantineAction::default();
        for (seq, _) in Self::quarantine_selection(&tx, seqs)? {
            out.done += tx.execute("DELETE FROM outbox_quarantine WHERE seq = ?1", [seq])?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Writes records and their outbox rows as the scan path does, in one
    /// transaction (backlogs for tests and benchmarks, salvaged records).
    /// A record already present is updated in place.
    pub fn insert_records(&mut self, recs: &[AttendanceRecord]) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = timestamp(Utc::now());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO attendance (id, student_number, school_date, session, time_in, time_out,
                   status, device_id, photo_path, clock_synced, source, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (id) DO UPDATE SET time_in = excluded.time_in,
                   time_out = excluded.time_out, status = excluded.status,
                   updated_at = excluded.updated_at",
            )?;
            let mut ob = tx.prepare_cached(
                "INSERT INTO outbox (topic, record_id, payload, created_at) VALUES ('attendance', ?1, ?2, ?3)",
            )?;
            for r in recs {
                ins.execute(params![
                    r.id.to_string(),
                    r.student_number,
                    r.school_date.to_string(),
                    r.session,
                    r.time_in,
                    r.time_out,
                    r.status,
                    r.device_id,
                    r.photo_path,
                    r.clock_synced,
                    r.source,
                    r.created_at,
                    r.updated_at
                ])?;
                ob.execute(params![r.id.to_string(), r.to_payload()?, now])?;
            }
        }
        tx.commit()?;
        Ok(recs.len())
    }

    /// The record with this id, if any.
    pub fn record(&self, id: Uuid) -> Result<Option<AttendanceRecord>, StoreError> {
        Ok(read_record(&self.conn, id).optional()?)
    }

    /// Whether the record has been marked synced.
    pub fn is_synced(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT synced_at IS NOT NULL FROM attendance WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// Ids of every record marked synced (tests and tools; bounded by
    /// what the database holds).
    pub fn synced_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id FROM attendance WHERE synced_at IS NOT NULL")?;
        let ids = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ids
            .into_iter()
            .filter_map(|s| Uuid::parse_str(&s).ok())
            .collect())
    }

    /// Queues a raw outbox payload for record `record_id` without checking
    /// it: how a damaged item looks to the sync engine (tests of its
    /// validation; never used by the daemon).
    #[doc(hidden)]
    pub fn enqueue_raw_payload(
        &mut self,
        record_id: Uuid,
        payload: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO outbox (topic, record_id, payload, created_at) VALUES ('attendance', ?1, ?2, ?3)",
            params![record_id.to_string(), payload, timestamp(Utc::now())],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_for_tests;

    fn rec(i: usize) -> AttendanceRecord {
        let t = format!("2026-11-23T07:00:{:02}.000Z", i % 60);
        AttendanceRecord {
            id: Uuid::new_v4(),
            student_number: format!("S{i:04}"),
            school_date: "2026-11-23".parse().expect("date"),
            session: "morning".into(),
            time_in: Some(t.clone()),
            time_out: None,
            status: "present".into(),
            device_id: "kiosk-t".into(),
            photo_path: None,
            clock_synced: true,
            source: "replay".into(),
            created_at: t.clone(),
            updated_at: t,
        }
    }

    #[test]
    fn wire_columns_match_the_serialised_record() {
        let v = serde_json::to_value(rec(1)).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut cols: Vec<&str> = crate::store::WIRE_COLUMNS.split(',').collect();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        cols.sort();
        assert_eq!(keys_sorted, cols);
        // And the payload round-trips through the one definition.
        let r = rec(2);
        let back: AttendanceRecord =
            serde_json::from_str(&r.to_payload().expect("payload")).expect("parse");
        assert_eq!(back, r);
    }

    #[test]
    fn acknowledge_quarantine_retry_and_discard() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = open_for_tests(dir.path());
        let recs: Vec<_> = (0..5).map(rec).collect();
        s.insert_records(&recs).expect("insert");
        let rows = s.outbox_rows_after(0, 100).expect("rows");
        assert_eq!(rows.len(), 5);
        assert_eq!(
            s.outbox_rows_after(rows[2].seq, 100).expect("after").len(),
            2
        );
        s.acknowledge_outbox(&[(recs[0].id, vec![rows[0].seq])])
            .expect("ack");
        assert!(s.is_synced(recs[0].id).expect("q"));
        assert_eq!(s.outbox_depth().expect("d"), 4);
        let n = s
            .quarantine_outbox(&[QuarantineItem {
                seqs: vec![rows[1].seq, rows[2].seq],
                reason: "row_rejected:23514".into(),
                http_status: Some(400),
            }])
            .expect("quarantine");
        assert_eq!(n, 2);
        assert_eq!(s.outbox_depth().expect("d"), 2);
        let q = s.quarantined(10).expect("list");
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].reason, "row_rejected:23514");
        let retried = s.retry_quarantined(Some(&[q[0].seq])).expect("retry");
        assert_eq!(retried.done, 1);
        assert_eq!(s.outbox_depth().expect("d"), 3);
        // the requeued row is a fresh snapshot of the record
        let last = s.outbox_rows_after(0, 100).expect("rows");
        let requeued = last.last().expect("last");
        assert_eq!(requeued.record_id, recs[1].id.to_string());
        assert!(requeued.seq > rows[4].seq);
        let discarded = s.discard_quarantined(None).expect("discard");
        assert_eq!(discarded.done, 1);
        assert_eq!(s.quarantine_depth().expect("q"), 0);
        assert!(
            !s.is_synced(recs[2].id).expect("q"),
            "a discarded row's record stays unsynced"
        );
    }
}

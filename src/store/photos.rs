//! Evidence photos of records (attach, upload state, local retention) and
//! pruning of old synced records. Every query here has an index (migration
//! 3) and a bound, so none scans the whole table on the database thread.

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::outbox::enqueue_current;
use super::{Store, StoreError, timestamp};

/// Largest number of records one prune transaction deletes.
pub const PRUNE_CHUNK: usize = 500;

/// A photo waiting for upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPhoto {
    pub record_id: Uuid,
    pub school_date: NaiveDate,
    pub local_path: String,
}

impl Store {
    /// Links the evidence photo to record `record_id` unless it already has
    /// one (the first photo, normally the login's, is the evidence).
    /// Returns whether the photo was linked.
    pub fn attach_photo(&mut self, record_id: Uuid, photo_path: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE attendance SET photo_path = ?2 WHERE id = ?1 AND photo_path IS NULL",
            params![record_id.to_string(), photo_path],
        )?;
        Ok(n == 1)
    }

    /// Whether the record exists and has no photo yet.
    pub fn wants_photo(&self, record_id: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT photo_path IS NULL FROM attendance WHERE id = ?1",
                [record_id.to_string()],
                |r| r.get::<_, bool>(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// The record whose login or logout is exactly `seen_at` (a follower
    /// that lagged behind the event channel catches up through this).
    pub fn record_seen_at(&self, seen_at: DateTime<Utc>) -> Result<Option<Uuid>, StoreError> {
        let ts = timestamp(seen_at);
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT id FROM attendance WHERE time_in = ?1
                 UNION ALL SELECT id FROM attendance WHERE time_out = ?1 LIMIT 1",
                [&ts],
                |r| r.get(0),
            )
            .optional()?;
        Ok(id.and_then(|s| Uuid::parse_str(&s).ok()))
    }

    pub fn pending_photos(&self, limit: usize) -> Result<Vec<PendingPhoto>, StoreError> {
        let mut st = self.conn.prepare_cached(
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

    /// Records the remote path of an uploaded photo and queues the record
    /// again so the cloud row gets the path, in one transaction.
    pub fn photo_uploaded(&mut self, record_id: Uuid, remote_path: &str) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = timestamp(Utc::now());
        let n = tx.execute(
            "UPDATE attendance SET photo_remote_path = ?2, photo_uploaded_at = ?3 WHERE id = ?1",
            params![record_id.to_string(), remote_path, now],
        )?;
        if n == 1 {
            enqueue_current(&tx, record_id, &now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A photo that will never be uploaded (missing, too big, refused): the
    /// marker keeps the row out of [`Store::pending_photos`].
    pub fn photo_unavailable(&mut self, record_id: Uuid) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE attendance SET photo_remote_path = '', photo_uploaded_at = ?2 WHERE id = ?1",
            params![record_id.to_string(), timestamp(Utc::now())],
        )?;
        Ok(())
    }

    /// Local photo files that were uploaded and whose school date is at
    /// least `retention_days` before `today`.
    pub fn photos_to_delete(
        &self,
        retention_days: u32,
        today: NaiveDate,
        limit: usize,
    ) -> Result<Vec<(Uuid, String)>, StoreError> {
        let cutoff = today - chrono::Duration::days(i64::from(retention_days));
        let mut st = self.conn.prepare_cached(
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
    pub fn photo_local_deleted(&mut self, record_id: Uuid) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE attendance SET photo_path = NULL WHERE id = ?1",
            [record_id.to_string()],
        )?;
        Ok(())
    }

    /// Deletes up to [`PRUNE_CHUNK`] records that the cloud holds (synced,
    /// nothing queued for them) with a school date before `before`, and
    /// whose local photo is gone. Returns how many; call again while it
    /// returns a full chunk. Unsynced records are never deleted.
    pub fn prune_synced(&mut self, before: NaiveDate) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM attendance WHERE id IN (
               SELECT a.id FROM attendance a
               WHERE a.school_date < ?1 AND a.synced_at IS NOT NULL AND a.photo_path IS NULL
                 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.record_id = a.id)
               LIMIT ?2)",
            params![before.to_string(), PRUNE_CHUNK as i64],
        )?)
    }

    /// Records in the database (benchmarks, health).
    pub fn record_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM attendance", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AttendanceRecord;
    use crate::store::open_for_tests;

    fn rec(date: &str, t: &str) -> AttendanceRecord {
        AttendanceRecord {
            id: Uuid::new_v4(),
            student_number: "S1".into(),
            school_date: date.parse().expect("date"),
            session: "morning".into(),
            time_in: Some(t.into()),
            time_out: None,
            status: "present".into(),
            device_id: "kiosk-t".into(),
            photo_path: None,
            clock_synced: true,
            source: "camera".into(),
            created_at: t.into(),
            updated_at: t.into(),
        }
    }

    #[test]
    fn prune_keeps_unsynced_and_queued_records() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = open_for_tests(dir.path());
        let old_synced = rec("2025-01-10", "2025-01-10T00:00:00.000Z");
        let old_unsynced = rec("2025-01-11", "2025-01-11T00:00:00.000Z");
        let recent = rec("2026-11-20", "2026-11-20T00:00:00.000Z");
        s.insert_records(&[old_synced.clone(), old_unsynced.clone(), recent.clone()])
            .expect("insert");
        let rows = s.outbox_rows_after(0, 10).expect("rows");
        s.acknowledge_outbox(&[
            (old_synced.id, vec![rows[0].seq]),
            (recent.id, vec![rows[2].seq]),
        ])
        .expect("ack");
        let cutoff: NaiveDate = "2026-01-01".parse().expect("d");
        assert_eq!(s.prune_synced(cutoff).expect("prune"), 1);
        assert_eq!(s.prune_synced(cutoff).expect("prune"), 0);
        assert!(s.record(old_synced.id).expect("q").is_none());
        assert!(s.record(old_unsynced.id).expect("q").is_some());
        assert!(s.record(recent.id).expect("q").is_some());
    }

    #[test]
    fn photos_attach_once_by_record_id_and_upload_requeues_the_record() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = open_for_tests(dir.path());
        let r = rec("2026-11-23", "2026-11-23T00:00:00.000Z");
        s.insert_records(std::slice::from_ref(&r)).expect("insert");
        assert_eq!(
            s.record_seen_at("2026-11-23T00:00:00Z".parse().expect("t"))
                .expect("q"),
            Some(r.id)
        );
        assert!(s.wants_photo(r.id).expect("q"));
        assert!(s.attach_photo(r.id, "2026-11-23/a.jpg").expect("attach"));
        assert!(!s.attach_photo(r.id, "2026-11-23/b.jpg").expect("attach"));
        assert!(!s.wants_photo(r.id).expect("q"));
        let pending = s.pending_photos(10).expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].local_path, "2026-11-23/a.jpg");
        let before = s.outbox_depth().expect("d");
        s.photo_uploaded(r.id, "kiosk-t/2026-11-23/x.jpg")
            .expect("up");
        assert_eq!(s.outbox_depth().expect("d"), before + 1);
        let rows = s.outbox_rows_after(0, 10).expect("rows");
        let last = rows.last().expect("row");
        assert_eq!(
            last.photo_remote_path.as_deref(),
            Some("kiosk-t/2026-11-23/x.jpg")
        );
        let payload: AttendanceRecord = serde_json::from_str(&last.payload).expect("payload");
        assert_eq!(payload.photo_path.as_deref(), Some("2026-11-23/a.jpg"));
        assert!(s.pending_photos(10).expect("pending").is_empty());
    }
}

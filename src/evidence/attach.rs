//! Linking a saved photo to its attendance record, in its own transaction.
//!
//! The photo carries the scan's `seen_at`; the store wrote that instant as
//! the record's `time_in` (login) or `time_out` (logout). The first photo of
//! a record is kept (the login photo is the evidence of arrival). The photo
//! may be ready before the pipeline committed the record, so a miss is
//! retried a few times; a photo that finds no record (rejected or duplicate
//! scan) is deleted, and the record is never touched.

use std::time::Duration;

use rusqlite::OptionalExtension;
use uuid::Uuid;

use super::{AttachFn, SavedPhoto};
use crate::store::{Store, StoreError, StoreHandle, timestamp};

/// Links `photo` to the record whose login or logout is `photo.seen_at`.
/// Returns the record id, or None when there is no such record or it
/// already has a photo.
pub fn attach_in_store(store: &mut Store, photo: &SavedPhoto) -> Result<Option<Uuid>, StoreError> {
    let ts = timestamp(photo.seen_at);
    let id: Option<String> = store
        .connection()
        .query_row(
            "SELECT id FROM attendance WHERE (time_in = ?1 OR time_out = ?1) AND photo_path IS NULL",
            [&ts],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id.and_then(|s| Uuid::parse_str(&s).ok()) else {
        return Ok(None);
    };
    let path = photo.path.to_string_lossy();
    Ok(store.attach_photo(id, &path)?.then_some(id))
}

/// An [`AttachFn`] for the photo worker: runs [`attach_in_store`] on the
/// store thread through `store`, retrying `tries` times `every` apart while
/// the record is not there yet. `rt` is the daemon's runtime (the photo
/// worker is a plain thread).
pub fn store_attacher(
    store: StoreHandle,
    rt: tokio::runtime::Handle,
    tries: u32,
    every: Duration,
) -> AttachFn {
    Box::new(move |photo: SavedPhoto| {
        for attempt in 1..=tries.max(1) {
            let p = photo.clone();
            match rt.block_on(store.call(move |s| attach_in_store(s, &p))) {
                Ok(Ok(Some(id))) => {
                    tracing::info!(target: "evidence", record_id = %id, path = %photo.path.display(), "photo_attached");
                    return;
                }
                Ok(Ok(None)) if attempt < tries => std::thread::sleep(every),
                Ok(Ok(None)) => {
                    // Rejected or duplicate scan, or the record already has
                    // its photo: this one is evidence of nothing.
                    let removed = std::fs::remove_file(&photo.path).is_ok();
                    tracing::info!(target: "evidence", path = %photo.path.display(), removed,
                        "photo not attached: no record without a photo for this scan");
                    return;
                }
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(target: "evidence", error = %e, path = %photo.path.display(),
                        "photo not attached; the record is unchanged");
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::StudentNumber;
    use crate::input::SourceKind;
    use crate::store::{ScanOutcome, ScanRequest, StudentRow};
    use chrono::{DateTime, TimeZone, Utc};

    use crate::store::open_for_tests as open;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Manila
            .with_ymd_and_hms(2026, 11, 23, h, m, 0)
            .single()
            .expect("time")
            .with_timezone(&Utc)
    }

    fn photo(seen_at: DateTime<Utc>, name: &str) -> SavedPhoto {
        SavedPhoto {
            seen_at,
            payload: b"S1".to_vec(),
            path: format!("/data/attendance/photos/2026-11-23/{name}.jpg").into(),
            bytes: 1,
        }
    }

    #[test]
    fn attaches_to_the_scan_record_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = open(dir.path());
        s.import_students(&[StudentRow {
            student_number: StudentNumber::parse("S1").expect("sn"),
            full_name: "Student S1".into(),
            grade: "7".into(),
            section: "A".into(),
            guardian_phone: None,
            active: true,
        }])
        .expect("import");
        let req = |t| ScanRequest {
            student_number: StudentNumber::parse("S1").expect("sn"),
            seen_at: t,
            source: SourceKind::Camera,
            clock_synced: true,
        };
        let ScanOutcome::Recorded { record_id, .. } = s.record_scan(&req(at(7, 0))).expect("scan")
        else {
            panic!("not recorded")
        };
        // a photo of another instant finds nothing
        assert_eq!(
            attach_in_store(&mut s, &photo(at(7, 3), "x")).expect("q"),
            None
        );
        assert_eq!(
            attach_in_store(&mut s, &photo(at(7, 0), "login")).expect("q"),
            Some(record_id)
        );
        // the logout of the same record keeps the login photo
        s.record_scan(&req(at(11, 40))).expect("logout");
        assert_eq!(
            attach_in_store(&mut s, &photo(at(11, 40), "logout")).expect("q"),
            None
        );
        let path: String = s
            .connection()
            .query_row(
                "SELECT photo_path FROM attendance WHERE id = ?1",
                [record_id.to_string()],
                |r| r.get(0),
            )
            .expect("row");
        assert!(path.ends_with("login.jpg"));
    }

    #[test]
    fn attacher_links_through_the_store_thread_and_drops_orphans() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = open(dir.path());
        s.import_students(&[StudentRow {
            student_number: StudentNumber::parse("S2").expect("sn"),
            full_name: "Student S2".into(),
            grade: "7".into(),
            section: "A".into(),
            guardian_phone: None,
            active: true,
        }])
        .expect("import");
        let ScanOutcome::Recorded { record_id, .. } = s
            .record_scan(&ScanRequest {
                student_number: StudentNumber::parse("S2").expect("sn"),
                seen_at: at(7, 5),
                source: SourceKind::Camera,
                clock_synced: true,
            })
            .expect("scan")
        else {
            panic!("not recorded")
        };
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let (handle, _closed) = {
            let _g = rt.enter();
            StoreHandle::spawn(s, 8).expect("spawn")
        };
        let mut attach = store_attacher(
            handle.clone(),
            rt.handle().clone(),
            2,
            Duration::from_millis(10),
        );
        let mk = |name: &str, t| {
            let p = dir.path().join(name);
            std::fs::write(&p, b"jpeg").expect("write");
            SavedPhoto {
                seen_at: t,
                payload: b"S2".to_vec(),
                path: p,
                bytes: 4,
            }
        };
        let good = mk("good.jpg", at(7, 5));
        let orphan = mk("orphan.jpg", at(7, 6));
        attach(good.clone());
        attach(orphan.clone());
        assert!(good.path.exists());
        assert!(!orphan.path.exists(), "a photo of no record is removed");
        let path: String = rt
            .block_on(handle.call(move |s| {
                s.connection().query_row(
                    "SELECT photo_path FROM attendance WHERE id = ?1",
                    [record_id.to_string()],
                    |r| r.get::<_, String>(0),
                )
            }))
            .expect("call")
            .expect("row");
        assert_eq!(path, good.path.to_string_lossy());
    }
}

//! Linking evidence photos to records, by record id, following the
//! pipeline's `Recorded` events.
//!
//! The camera queues a photo job (the best frame of a short window after a
//! scan, not yet encoded) carrying the scan's `seen_at`. The pipeline
//! publishes `Recorded { record_id, seen_at, source, .. }` after the commit
//! and then moves its `decided` mark to that `seen_at`. So, for a job:
//! - an event with the same instant from the camera: the record's id, and
//!   the photo is encoded, saved and attached to that id;
//! - the `decided` mark reached the job's instant with no such event: the
//!   scan was a duplicate, rejected or failed, and nothing is encoded;
//! - the subscription lagged (events were overwritten): the record is looked
//!   up in the store by the scan's instant (indexed), so nothing depends on
//!   the channel.
//!
//! The first photo of a record is kept (the login photo is the evidence of
//! arrival); a later one is not encoded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::{PhotoFor, PhotoJob, PhotoLinker, SavedPhoto};
use crate::app::health::{Health, Level};
use crate::input::SourceKind;
use crate::store::StoreHandle;
use crate::store::event::{RecordEvents, Recorded};

/// Camera events kept for jobs still to come.
const RECENT: usize = 64;

/// The daemon's [`PhotoLinker`].
pub struct RecordLinker {
    store: StoreHandle,
    rt: tokio::runtime::Handle,
    events: broadcast::Receiver<Recorded>,
    decided: watch::Receiver<Option<DateTime<Utc>>>,
    /// The scan's time as the rules saw it (the clock's mapping; identity
    /// except for the simulated clock).
    map_time: Box<dyn Fn(DateTime<Utc>) -> DateTime<Utc> + Send>,
    recent: VecDeque<Recorded>,
    lagged: bool,
    closed: bool,
    wait: Duration,
    /// Where a database error of this follower shows (it never stops the
    /// daemon: the photo is dropped, the record stays as it is).
    health: Option<std::sync::Arc<Health>>,
    /// Database errors so far (shown with the health entry).
    errors: u64,
}

impl RecordLinker {
    /// `wait`: how long a job waits for its scan to be decided.
    pub fn new(
        store: StoreHandle,
        rt: tokio::runtime::Handle,
        events: &RecordEvents,
        map_time: Box<dyn Fn(DateTime<Utc>) -> DateTime<Utc> + Send>,
        wait: Duration,
    ) -> Self {
        RecordLinker {
            store,
            rt,
            events: events.subscribe(),
            decided: events.watch_decided(),
            map_time,
            recent: VecDeque::with_capacity(RECENT),
            lagged: false,
            closed: false,
            wait,
            health: None,
            errors: 0,
        }
    }

    /// Reports this follower's database errors under `photos` in `health`.
    pub fn with_health(mut self, health: std::sync::Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    fn failed(&mut self, e: &crate::store::StoreError) {
        self.errors += 1;
        if let Some(h) = &self.health {
            h.set(
                "photos",
                Level::Degraded,
                format!(
                    "photo linking hit a database error ({} so far; photos dropped, records unchanged): {e}",
                    self.errors
                ),
            );
        }
    }

    fn worked(&self) {
        if let Some(h) = &self.health {
            h.clear("photos");
        }
    }

    fn keep(&mut self, e: Recorded) {
        if e.source != SourceKind::Camera {
            return;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(e);
    }

    fn drain(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(e) => self.keep(e),
                Err(TryRecvError::Lagged(n)) => {
                    tracing::debug!(target: "evidence", missed = n, "photo follower lagged; using the database");
                    self.lagged = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => {
                    self.closed = true;
                    break;
                }
            }
        }
    }

    fn take(&mut self, seen_at: DateTime<Utc>) -> Option<Uuid> {
        let i = self.recent.iter().position(|e| e.seen_at == seen_at)?;
        self.recent.remove(i).map(|e| e.record_id)
    }

    fn lookup(&mut self, seen_at: DateTime<Utc>) -> Option<Uuid> {
        match self
            .rt
            .block_on(self.store.call(move |s| s.record_seen_at(seen_at)))
        {
            Ok(Ok(id)) => id,
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(target: "evidence", error = %e, "cannot look up the record of a photo");
                self.failed(&e);
                None
            }
        }
    }

    /// The record the scan at `seen_at` wrote, if it wrote one.
    fn resolve(&mut self, seen_at: DateTime<Utc>) -> Option<Uuid> {
        let deadline = Instant::now() + self.wait;
        loop {
            self.drain();
            if let Some(id) = self.take(seen_at) {
                return Some(id);
            }
            let decided = *self.decided.borrow_and_update();
            let timed_out = Instant::now() >= deadline;
            if self.lagged || self.closed || timed_out || decided >= Some(seen_at) {
                // The event is published before the mark moves: one more look.
                self.drain();
                if let Some(id) = self.take(seen_at) {
                    return Some(id);
                }
                if self.lagged || self.closed || timed_out {
                    self.lagged = false;
                    return self.lookup(seen_at);
                }
                return None;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let (events, decided) = (&mut self.events, &mut self.decided);
            let got = self.rt.block_on(async {
                tokio::time::timeout(remaining, async {
                    tokio::select! {
                        r = events.recv() => Some(r),
                        _ = decided.changed() => None,
                    }
                })
                .await
            });
            match got {
                Ok(Some(Ok(e))) => self.keep(e),
                Ok(Some(Err(RecvError::Lagged(_)))) => self.lagged = true,
                Ok(Some(Err(RecvError::Closed))) => self.closed = true,
                Ok(None) | Err(_) => {}
            }
        }
    }
}

impl PhotoLinker for RecordLinker {
    fn wanted(&mut self, job: &PhotoJob) -> Option<PhotoFor> {
        let seen_at = (self.map_time)(job.seen_at);
        let id = self.resolve(seen_at)?;
        match self
            .rt
            .block_on(self.store.call(move |s| s.wants_photo(id)))
        {
            Ok(Ok(true)) => Some(PhotoFor::Record(id)),
            Ok(Ok(false)) => {
                tracing::debug!(target: "evidence", record_id = %id, "record keeps its earlier photo");
                None
            }
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(target: "evidence", error = %e, "photo not taken; the record is unchanged");
                self.failed(&e);
                None
            }
        }
    }

    fn saved(&mut self, target: PhotoFor, photo: SavedPhoto) {
        let PhotoFor::Record(id) = target else {
            return;
        };
        let path = photo.path.to_string_lossy().into_owned();
        match self
            .rt
            .block_on(self.store.call(move |s| s.attach_photo(id, &path)))
        {
            Ok(Ok(true)) => {
                tracing::info!(target: "evidence", record_id = %id, path = %photo.path.display(), "photo_attached");
                self.worked();
            }
            Ok(Ok(false)) => {
                let removed = std::fs::remove_file(&photo.path).is_ok();
                tracing::info!(target: "evidence", record_id = %id, removed, "photo not attached: the record has one");
            }
            Ok(Err(e)) | Err(e) => {
                let removed = std::fs::remove_file(&photo.path).is_ok();
                tracing::warn!(target: "evidence", record_id = %id, error = %e, removed,
                    "photo not attached; the record is unchanged");
                self.failed(&e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::{AttendanceStatus, StudentNumber};
    use crate::domain::rules::ScanKind;
    use crate::input::decode::LumaFrame;
    use crate::store::{ScanOutcome, ScanRequest, StudentRow, open_for_tests};
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Manila
            .with_ymd_and_hms(2026, 11, 23, h, m, 0)
            .single()
            .expect("time")
            .with_timezone(&Utc)
    }

    fn job(seen_at: DateTime<Utc>) -> PhotoJob {
        PhotoJob {
            frame: LumaFrame::empty(),
            seen_at,
            payload: b"S1".to_vec(),
            date: seen_at.date_naive(),
        }
    }

    struct Rig {
        _dir: tempfile::TempDir,
        rt: tokio::runtime::Runtime,
        store: StoreHandle,
        events: RecordEvents,
        ids: Vec<Uuid>,
    }

    /// A store with a login at 07:00 and one at 07:05 (two students).
    fn rig() -> Rig {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = open_for_tests(dir.path());
        let mut ids = Vec::new();
        for (sn, t) in [("S1", at(7, 0)), ("S2", at(7, 5))] {
            s.import_students(&[StudentRow::bare(StudentNumber::parse(sn).expect("sn"))])
                .expect("import");
            let ScanOutcome::Recorded { record_id, .. } = s
                .record_scan(&ScanRequest {
                    student_number: StudentNumber::parse(sn).expect("sn"),
                    seen_at: t,
                    source: SourceKind::Camera,
                    clock_synced: true,
                })
                .expect("scan")
            else {
                panic!("not recorded")
            };
            ids.push(record_id);
        }
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let (store, _closed) = {
            let _g = rt.enter();
            StoreHandle::spawn(s, 8).expect("spawn")
        };
        Rig {
            _dir: dir,
            rt,
            store,
            events: RecordEvents::new(2),
            ids,
        }
    }

    fn recorded(id: Uuid, seen_at: DateTime<Utc>) -> Recorded {
        Recorded {
            record_id: id,
            student: StudentNumber::parse("S1").expect("sn"),
            kind: ScanKind::Login,
            status: AttendanceStatus::Present,
            seen_at,
            source: SourceKind::Camera,
        }
    }

    fn linker(r: &Rig) -> RecordLinker {
        RecordLinker::new(
            r.store.clone(),
            r.rt.handle().clone(),
            &r.events,
            Box::new(|t| t),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn a_recorded_scan_gets_its_photo_by_record_id_once() {
        let r = rig();
        let mut l = linker(&r);
        r.events.publish(recorded(r.ids[0], at(7, 0)));
        r.events.decided(at(7, 0));
        let target = l.wanted(&job(at(7, 0)));
        assert_eq!(target, Some(PhotoFor::Record(r.ids[0])));
        let path = r._dir.path().join("a.jpg");
        std::fs::write(&path, b"jpeg").expect("write");
        l.saved(
            PhotoFor::Record(r.ids[0]),
            SavedPhoto {
                seen_at: at(7, 0),
                payload: b"S1".to_vec(),
                path: path.clone(),
                bytes: 4,
            },
        );
        assert!(path.exists());
        // A second photo for the same record is not even encoded.
        r.events.publish(recorded(r.ids[0], at(11, 40)));
        r.events.decided(at(11, 40));
        assert_eq!(l.wanted(&job(at(11, 40))), None);
    }

    #[test]
    fn a_scan_that_was_not_recorded_gets_no_photo() {
        let r = rig();
        let mut l = linker(&r);
        // The pipeline decided 07:03 (a duplicate or a rejection): no event.
        r.events.decided(at(7, 3));
        let t = Instant::now();
        assert_eq!(l.wanted(&job(at(7, 3))), None);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "decided, not timed out"
        );
    }

    #[test]
    fn a_lagged_follower_finds_the_record_in_the_database() {
        let r = rig();
        let mut l = linker(&r);
        // Capacity 2: the 07:00 event is overwritten by later ones.
        r.events.publish(recorded(r.ids[0], at(7, 0)));
        for m in 10..14 {
            r.events.publish(recorded(Uuid::new_v4(), at(8, m)));
        }
        r.events.decided(at(8, 13));
        assert_eq!(l.wanted(&job(at(7, 0))), Some(PhotoFor::Record(r.ids[0])));
        // After the catch-up, events are matched from the channel again.
        r.events.publish(recorded(r.ids[1], at(7, 5)));
        assert_eq!(l.wanted(&job(at(7, 5))), Some(PhotoFor::Record(r.ids[1])));
    }

    #[test]
    fn a_database_error_shows_in_health_and_a_later_attach_clears_it() {
        let r = rig();
        let health = std::sync::Arc::new(Health::new(Duration::from_secs(10)));
        let mut l = linker(&r).with_health(health.clone());
        l.failed(&crate::store::StoreError::TaskGone);
        l.failed(&crate::store::StoreError::TaskGone);
        let report = health.report();
        let c = report.conditions.get("photos").expect("photos degraded");
        assert_eq!(c.level, Level::Degraded);
        assert!(c.reason.contains("2 so far"), "{}", c.reason);
        let path = r._dir.path().join("b.jpg");
        std::fs::write(&path, b"jpeg").expect("write");
        l.saved(
            PhotoFor::Record(r.ids[1]),
            SavedPhoto {
                seen_at: at(7, 5),
                payload: b"S2".to_vec(),
                path,
                bytes: 4,
            },
        );
        assert!(!health.report().conditions.contains_key("photos"));
    }
}

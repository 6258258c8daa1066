//! The engine's logic against the in-memory twin: batching, bisection,
//! quarantine, trust in answers, breaker, roster cursor.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::twin::{Fault, TwinCloud};
use super::*;
use crate::store::{AttendanceRecord, StoreHandle, open_for_tests};

const DEVICE: &str = "kiosk-t";

fn rec(i: usize) -> AttendanceRecord {
    let t = format!("2026-11-23T07:{:02}:{:02}.000Z", (i / 60) % 60, i % 60);
    AttendanceRecord {
        id: Uuid::new_v4(),
        student_number: format!("S{i:06}"),
        school_date: "2026-11-23".parse().expect("date"),
        session: "morning".into(),
        time_in: Some(t.clone()),
        time_out: None,
        status: "present".into(),
        device_id: DEVICE.into(),
        photo_path: None,
        clock_synced: true,
        source: "replay".into(),
        created_at: t.clone(),
        updated_at: t,
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    store: StoreHandle,
    twin: Arc<TwinCloud>,
    engine: SyncEngine<Arc<TwinCloud>>,
    metrics: Arc<SyncMetrics>,
    stop: CancellationToken,
}

fn config() -> SyncConfig {
    let mut c = SyncConfig {
        enabled: true,
        base_url: "https://cloud.invalid".into(),
        batch_size: 100,
        ..SyncConfig::default()
    };
    c.backoff.initial_ms = 1;
    c.backoff.max_ms = 2;
    c.breaker.failure_threshold = 1000;
    c.roster.enabled = false;
    c.photos.enabled = false;
    c
}

fn rig(cfg: SyncConfig, recs: Vec<AttendanceRecord>) -> Rig {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = open_for_tests(dir.path());
    s.insert_records(&recs).expect("backlog");
    let (store, _closed) = StoreHandle::spawn(s, 64).expect("spawn");
    let twin = Arc::new(TwinCloud::new());
    let metrics = Arc::new(SyncMetrics::default());
    let engine = SyncEngine::with_cloud(
        SyncSetup {
            config: cfg,
            device_id: DEVICE.into(),
            photos_dir: dir.path().join("photos"),
            store: store.clone(),
            credentials: Credentials {
                api_key: String::new(),
                device_jwt: String::new(),
            },
            metrics: metrics.clone(),
            events: None,
        },
        twin.clone(),
    );
    Rig {
        _dir: dir,
        store,
        twin,
        engine,
        metrics,
        stop: CancellationToken::new(),
    }
}

impl Rig {
    /// Runs attendance steps until the outbox is empty or `max` steps.
    async fn drain(&mut self, max: usize) {
        for _ in 0..max {
            let step = self.engine.attendance_step(&self.stop).await.expect("step");
            if let Step::Idle(d) = step {
                if d == Duration::MAX {
                    break;
                }
                tokio::time::sleep(d.min(Duration::from_millis(5))).await;
            }
        }
        self.engine.flush_ack().await.expect("flush");
    }

    async fn synced(&self) -> usize {
        self.store
            .call(|s| s.synced_ids())
            .await
            .expect("call")
            .expect("ids")
            .len()
    }

    async fn depths(&self) -> (i64, i64) {
        self.store
            .call(|s| Ok::<_, StoreError>((s.outbox_depth()?, s.quarantine_depth()?)))
            .await
            .expect("call")
            .expect("depths")
    }
}

#[tokio::test]
async fn a_backlog_drains_in_batches_and_is_marked_synced() {
    let recs: Vec<_> = (0..250).map(rec).collect();
    let mut r = rig(config(), recs);
    r.drain(20).await;
    assert_eq!(r.depths().await, (0, 0));
    assert_eq!(r.synced().await, 250);
    assert_eq!(r.twin.stored_ids().len(), 250);
    assert_eq!(r.twin.upsert_calls.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn poison_rows_are_isolated_by_bisection_and_quarantined() {
    let mut recs: Vec<_> = (0..300).map(rec).collect();
    for i in [17usize, 230] {
        recs[i].school_date = "1970-01-01".parse().expect("date");
    }
    let poison: Vec<Uuid> = [17usize, 230].iter().map(|&i| recs[i].id).collect();
    let mut r = rig(config(), recs);
    r.drain(50).await;
    assert_eq!(r.depths().await, (0, 2));
    assert_eq!(r.synced().await, 298);
    let q = r
        .store
        .call(|s| s.quarantined(10))
        .await
        .expect("call")
        .expect("list");
    let ids: Vec<String> = q.iter().map(|x| x.record_id.clone()).collect();
    for p in &poison {
        assert!(ids.contains(&p.to_string()));
    }
    assert!(
        q.iter()
            .all(|x| x.reason == "rejected:23514" && x.http_status == Some(400))
    );
    assert_eq!(r.metrics.status().quarantined, 2);
}

#[tokio::test]
async fn a_lost_response_is_retried_without_duplicates() {
    let recs: Vec<_> = (0..50).map(rec).collect();
    let mut r = rig(config(), recs);
    r.twin.push_upsert_fault(Fault::LostResponse);
    let first = r.engine.attendance_step(&r.stop).await.expect("step");
    assert!(matches!(first, Step::Idle(_)));
    r.engine.flush_ack().await.expect("flush");
    assert_eq!(r.synced().await, 0, "nothing is synced without an answer");
    assert_eq!(r.twin.stored_ids().len(), 50, "the cloud did store them");
    r.drain(20).await;
    assert_eq!(r.synced().await, 50);
    assert_eq!(r.twin.stored_ids().len(), 50, "the retry updated in place");
    assert_eq!(r.depths().await, (0, 0));
}

#[tokio::test]
async fn html_from_a_proxy_quarantines_nothing_and_marks_nothing_synced() {
    for fault in [
        Fault::html(
            400,
            "<html><h1>400 Request Header Or Cookie Too Large</h1></html>",
        ),
        Fault::html(200, "<html>Welcome to the captive portal</html>"),
        Fault::Reply(Reply {
            status: 400,
            content_type: None,
            body: Vec::new(),
        }),
        Fault::Reply(Reply::json(201, "[]")),
    ] {
        let recs: Vec<_> = (0..120).map(rec).collect();
        let mut r = rig(config(), recs);
        for _ in 0..6 {
            r.twin.push_upsert_fault(fault.clone());
        }
        for _ in 0..6 {
            let _ = r.engine.attendance_step(&r.stop).await.expect("step");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        r.engine.flush_ack().await.expect("flush");
        assert_eq!(
            r.depths().await,
            (120, 0),
            "{fault:?}: rows kept, none quarantined"
        );
        assert_eq!(r.synced().await, 0, "{fault:?}: nothing marked synced");
        assert!(r.metrics.status().last_error.is_some());
        // Once the proxy behaves, everything goes through.
        r.drain(40).await;
        assert_eq!(r.synced().await, 120, "{fault:?}");
        assert_eq!(r.depths().await, (0, 0));
    }
}

#[tokio::test]
async fn a_partial_answer_marks_only_the_shown_rows() {
    let recs: Vec<_> = (0..3).map(rec).collect();
    let shown = recs[0].id;
    let mut r = rig(config(), recs);
    r.twin.push_upsert_fault(Fault::Reply(Reply::json(
        201,
        format!(r#"[{{"id":"{shown}"}}]"#),
    )));
    let _ = r.engine.attendance_step(&r.stop).await.expect("step");
    r.engine.flush_ack().await.expect("flush");
    let synced = r
        .store
        .call(|s| s.synced_ids())
        .await
        .expect("c")
        .expect("ids");
    assert_eq!(synced, vec![shown]);
    assert_eq!(r.metrics.status().unconfirmed, 2);
    r.drain(10).await;
    assert_eq!(r.synced().await, 3);
}

#[tokio::test]
async fn a_damaged_outbox_item_is_quarantined_locally() {
    let recs: Vec<_> = (0..5).map(rec).collect();
    let id = recs[0].id;
    let mut r = rig(config(), recs);
    r.store
        .call(move |s| s.enqueue_raw_payload(id, "{\"id\": garbage"))
        .await
        .expect("call")
        .expect("raw");
    r.drain(10).await;
    assert_eq!(r.depths().await, (0, 1));
    let q = r
        .store
        .call(|s| s.quarantined(5))
        .await
        .expect("c")
        .expect("q");
    assert_eq!(q[0].reason, "invalid:payload_not_a_record");
    assert_eq!(r.twin.stored_ids().len(), 5);
}

fn student(sn: &str, at: &str) -> serde_json::Value {
    serde_json::json!({
        "student_number": sn, "full_name": "Maria Clara Santos", "grade": "7", "section": "A",
        "guardian_phone": "+639171112222", "active": true, "updated_at": at
    })
}

fn roster_config() -> SyncConfig {
    let mut c = config();
    c.roster.enabled = true;
    c.roster.page_size = 2;
    c.roster.interval_s = 3600;
    c
}

#[tokio::test]
async fn a_quoted_student_number_never_stops_the_roster() {
    let mut r = rig(roster_config(), Vec::new());
    r.twin.put_students([
        student("A1", "2026-11-01T00:00:00+00:00"),
        student("O\"Brien,1", "2026-11-01T00:00:01+00:00"),
        student("A3", "2026-11-01T00:00:02+00:00"),
        student("A4", "2026-11-01T00:00:03+00:00"),
        student("A5", "2026-11-01T00:00:04+00:00"),
    ]);
    for _ in 0..5 {
        let _ = r.engine.roster_step(&r.stop).await.expect("roster");
    }
    let st = r.metrics.status();
    assert_eq!(st.roster_error, None);
    assert_eq!(st.roster_rows, 4);
    assert_eq!(st.roster_skipped.get("student_number_invalid"), Some(&1));
    let cursor = r
        .store
        .call(|s| s.roster_cursor())
        .await
        .expect("c")
        .expect("cur");
    assert_eq!(cursor.map(|c| c.student_number).as_deref(), Some("A5"));
    // Three pages (2 + 2 + 1), then the pull is complete: no more requests.
    assert_eq!(r.twin.roster_calls.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_wrongly_typed_roster_row_is_left_out_and_counted() {
    let mut r = rig(roster_config(), Vec::new());
    let mut bad = student("B1", "2026-11-01T00:00:00+00:00");
    bad["guardian_phone"] = serde_json::json!(639171112222u64);
    r.twin
        .put_students([bad, student("B2", "2026-11-01T00:00:01+00:00")]);
    for _ in 0..3 {
        let _ = r.engine.roster_step(&r.stop).await.expect("roster");
    }
    let st = r.metrics.status();
    assert_eq!(st.roster_rows, 1);
    assert_eq!(st.roster_skipped.get("wrong_type"), Some(&1));
}

#[tokio::test]
async fn a_refused_roster_pull_is_reported_and_not_retried_in_a_loop() {
    let mut r = rig(roster_config(), Vec::new());
    r.twin.push_roster_fault(Fault::Reply(Reply::json(
        400,
        r#"{"code":"PGRST100","message":"failed to parse logic tree","details":null,"hint":null}"#,
    )));
    let step = r.engine.roster_step(&r.stop).await.expect("roster");
    let Step::Idle(d) = step else {
        panic!("progress after a refusal")
    };
    assert_eq!(d, Duration::from_secs(3600));
    for _ in 0..5 {
        let _ = r.engine.roster_step(&r.stop).await.expect("roster");
    }
    assert_eq!(r.twin.roster_calls.load(Ordering::Relaxed), 1);
    let st = r.metrics.status();
    assert!(
        st.roster_error
            .as_deref()
            .is_some_and(|e| e.contains("PGRST100")),
        "{st:?}"
    );
}

#[tokio::test]
async fn the_run_loop_wakes_on_a_recorded_event_and_stops_on_shutdown() {
    let mut cfg = config();
    cfg.poll_interval_ms = 3_600_000;
    let dir = tempfile::tempdir().expect("tmp");
    let s = open_for_tests(dir.path());
    let (store, _closed) = StoreHandle::spawn(s, 64).expect("spawn");
    let twin = Arc::new(TwinCloud::new());
    let events = Arc::new(RecordEvents::new(4));
    let engine = SyncEngine::with_cloud(
        SyncSetup {
            config: cfg,
            device_id: DEVICE.into(),
            photos_dir: dir.path().join("photos"),
            store: store.clone(),
            credentials: Credentials {
                api_key: String::new(),
                device_jwt: String::new(),
            },
            metrics: Arc::new(SyncMetrics::default()),
            events: Some(events.clone()),
        },
        twin.clone(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(engine.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = rec(1);
    let id = r.id;
    store
        .call(move |s| s.insert_records(&[r]))
        .await
        .expect("call")
        .expect("insert");
    events.publish(crate::store::event::Recorded {
        record_id: id,
        student: crate::domain::record::StudentNumber::parse("S000001").expect("sn"),
        kind: crate::domain::rules::ScanKind::Login,
        status: crate::domain::record::AttendanceStatus::Present,
        seen_at: Utc::now(),
        source: crate::input::SourceKind::Replay,
    });
    for _ in 0..200 {
        if twin.stored_ids().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        twin.stored_ids(),
        vec![id],
        "woken by the event, not the hour-long poll"
    );
    stop.cancel();
    task.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn a_local_database_error_is_counted_backed_off_and_survived() {
    let recs: Vec<_> = (0..30).map(rec).collect();
    let r = rig(config(), recs);
    r.store
        .call(|s| s.fail_writes_for_tests(true))
        .await
        .expect("call")
        .expect("fault on");
    let metrics = r.metrics.clone();
    let store = r.store.clone();
    let stop = r.stop.clone();
    let task = tokio::spawn(r.engine.run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metrics.local_error().is_none() {
        assert!(std::time::Instant::now() < deadline, "no local error seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !task.is_finished(),
        "a local database error never ends sync"
    );
    assert!(metrics.status().local_errors >= 1);
    let synced = |store: StoreHandle| async move {
        store
            .call(|s| s.synced_ids())
            .await
            .expect("call")
            .expect("ids")
            .len()
    };
    assert_eq!(
        synced(store.clone()).await,
        0,
        "nothing marked while writes fail"
    );
    // Space returns: the engine recovers by itself, nothing lost.
    store
        .call(|s| s.fail_writes_for_tests(false))
        .await
        .expect("call")
        .expect("fault off");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while synced(store.clone()).await < 30 {
        assert!(std::time::Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(r.twin.stored_ids().len(), 30);
    assert!(
        metrics.local_error().is_none(),
        "the error clears on recovery"
    );
    stop.cancel();
    task.await.expect("join").expect("clean stop");
}

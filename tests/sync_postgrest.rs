//! The sync engine against a REAL PostgreSQL and a REAL PostgREST 12 with
//! the shipped migrations (cloud/supabase/migrations) and a device JWT
//! signed with the test's secret. Run by tests/cloud/run.sh.

mod sync_common;

use std::collections::BTreeSet;

use attendance::domain::record::StudentNumber;
use attendance::input::SourceKind;
use attendance::store::{ScanOutcome, ScanRequest, StudentRow};
use sync_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_syncs_completely_without_duplicates_or_loss() {
    if !stack_enabled("backlog_syncs_completely_without_duplicates_or_loss") {
        return;
    }
    let stack = Stack::start();
    let local = local();
    // 3,000 logins, then a logout for every third: those records have two
    // outbox rows, and the cloud must end with the logout snapshot.
    let mut recs: Vec<_> = (0..3000).map(|i| record(i, DEVICE, "2026-11-23")).collect();
    let mut logouts = Vec::new();
    for r in recs.iter().step_by(3) {
        let mut o = r.clone();
        o.time_out = Some("2026-11-23T11:45:00.000Z".into());
        o.updated_at = "2026-11-23T11:45:00.000Z".into();
        logouts.push(o);
    }
    let backlog = recs.clone();
    local
        .handle
        .call(move |s| {
            insert_records(s, &backlog);
            insert_records(s, &logouts);
        })
        .await
        .unwrap();
    assert_eq!(
        local_count(&local.handle, "SELECT count(*) FROM outbox").await,
        4000
    );

    let run = start_engine(
        sync_config(&stack.rest_url(), ""),
        &local,
        device_jwt(DEVICE),
    );
    let h = local.handle.clone();
    wait_for(120, "outbox drained", async || {
        local_count(&h, "SELECT count(*) FROM outbox").await == 0
    })
    .await;
    // Read after the engine stopped: every counter update has landed.
    let metrics = run.metrics.clone();
    run.stop().await;
    let status = metrics.status();

    let local_ids: BTreeSet<String> = recs.drain(..).map(|r| r.id.to_string()).collect();
    assert_eq!(
        stack.count("SELECT count(*) FROM attendance"),
        3000,
        "no duplicate, no loss"
    );
    assert_eq!(stack.cloud_ids(), local_ids);
    assert_eq!(
        synced_ids(&local.handle).await,
        local_ids,
        "every record marked synced"
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM attendance WHERE time_out IS NOT NULL"),
        1000,
        "logouts updated the login rows in place"
    );
    assert_eq!(
        stack.count("SELECT count(DISTINCT school_id) FROM attendance WHERE school_id = 'sch-1'"),
        1
    );
    assert!(status.online && status.last_success.is_some(), "{status:?}");
    assert_eq!(status.quarantined, 0);
    assert!(
        status.requests <= 40,
        "batched: {} requests",
        status.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_whose_response_was_lost_does_not_duplicate() {
    if !stack_enabled("a_retried_batch_whose_response_was_lost_does_not_duplicate") {
        return;
    }
    let stack = Stack::start();
    let local = local();
    let recs: Vec<_> = (0..250).map(|i| record(i, DEVICE, "2026-11-24")).collect();
    let backlog = recs.clone();
    local
        .handle
        .call(move |s| insert_records(s, &backlog))
        .await
        .unwrap();
    // The proxy forwards the first batches to PostgREST (which commits
    // them) and then drops the answers, so the kiosk sees failures for
    // rows the cloud already holds.
    let proxy = Proxy::start(0, stack.rest_port, Mode::DropResponse);
    let run = start_engine(sync_config(&proxy.url(), ""), &local, device_jwt(DEVICE));
    wait_for(30, "a few lost responses", async || {
        proxy.requests.load(std::sync::atomic::Ordering::SeqCst) >= 3
    })
    .await;
    assert!(
        stack.count("SELECT count(*) FROM attendance") > 0,
        "the cloud committed rows whose acknowledgement was lost"
    );
    assert_eq!(
        local_count(
            &local.handle,
            "SELECT count(*) FROM attendance WHERE synced_at IS NOT NULL"
        )
        .await,
        0,
        "nothing is marked synced without an acknowledgement"
    );
    proxy.set(Mode::Forward);
    let h = local.handle.clone();
    wait_for(60, "outbox drained", async || {
        local_count(&h, "SELECT count(*) FROM outbox").await == 0
    })
    .await;
    run.stop().await;
    let ids: BTreeSet<String> = recs.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(stack.count("SELECT count(*) FROM attendance"), 250);
    assert_eq!(stack.cloud_ids(), ids);
    assert_eq!(synced_ids(&local.handle).await, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_refuses_other_devices_rows() {
    if !stack_enabled("row_level_security_refuses_other_devices_rows") {
        return;
    }
    let stack = Stack::start();
    stack.sql(
        "INSERT INTO students (school_id, student_number, guardian_phone) VALUES
           ('sch-1', 'A1', '+639171234567'), ('sch-2', 'B1', '+639170000000');",
    );
    let client = reqwest::Client::new();
    let url = stack.rest_url();
    let upsert = |jwt: String, row: serde_json::Value| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(format!("{url}/attendance?on_conflict=id"))
                .header("Authorization", format!("Bearer {jwt}"))
                .header("Prefer", "resolution=merge-duplicates,return=minimal")
                .json(&serde_json::json!([row]))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let mine = serde_json::to_value(record(1, DEVICE, "2026-11-23")).unwrap();
    assert_eq!(upsert(device_jwt(DEVICE), mine.clone()).await.0, 201);

    // kiosk-01 may not write a row claiming to be kiosk-02.
    let foreign = serde_json::to_value(record(2, OTHER_DEVICE, "2026-11-23")).unwrap();
    let (code, body) = upsert(device_jwt(DEVICE), foreign).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("row-level security"), "{body}");

    // kiosk-02 may not take over kiosk-01's row by reusing its id.
    let mut hijack = mine.clone();
    hijack["device_id"] = OTHER_DEVICE.into();
    hijack["status"] = "late".into();
    hijack["updated_at"] = "2030-01-01T00:00:00.000Z".into();
    let (code, body) = upsert(device_jwt(OTHER_DEVICE), hijack).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        stack
            .sql("SELECT device_id || ' ' || status FROM attendance")
            .trim(),
        "kiosk-01 present"
    );

    // A deactivated device can no longer write.
    stack.sql("UPDATE devices SET active = false WHERE device_id = 'kiosk-02'");
    let own2 = serde_json::to_value(record(3, OTHER_DEVICE, "2026-11-23")).unwrap();
    assert_eq!(upsert(device_jwt(OTHER_DEVICE), own2).await.0, 403);

    // Roster: only its own school's students; no devices, no SMS log.
    let get = |path: &str, jwt: Option<String>| {
        let mut rq = client.get(format!("{url}{path}"));
        if let Some(j) = jwt {
            rq = rq.header("Authorization", format!("Bearer {j}"));
        }
        async move {
            let r = rq.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (code, body) = get("/students?select=student_number", Some(device_jwt(DEVICE))).await;
    assert_eq!((code, body.as_str()), (200, r#"[{"student_number":"A1"}]"#));
    for path in ["/devices", "/sms_deliveries", "/schools"] {
        let (code, _) = get(path, Some(device_jwt(DEVICE))).await;
        assert!(code == 401 || code == 403, "{path}: {code}");
    }
    // Without a JWT (anonymous) nothing at all.
    for path in ["/students", "/attendance"] {
        let (code, _) = get(path, None).await;
        assert!(code == 401 || code == 403, "{path}: {code}");
    }
    // A JWT signed with another secret is refused.
    let forged = device_jwt(DEVICE).rsplit_once('.').unwrap().0.to_string() + ".AAAA";
    assert_eq!(get("/students", Some(forged)).await.0, 401);
    // Reading attendance: only its own rows.
    let (code, body) = get(
        "/attendance?select=device_id",
        Some(device_jwt(OTHER_DEVICE)),
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "[]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_rows_are_quarantined_and_the_rest_sync() {
    if !stack_enabled("poison_rows_are_quarantined_and_the_rest_sync") {
        return;
    }
    let stack = Stack::start();
    let local = local();
    let mut recs: Vec<_> = (0..300).map(|i| record(i, DEVICE, "2026-11-25")).collect();
    // Valid for the kiosk, refused by the cloud's check constraint: a kiosk
    // whose clock was never set dates a record in 1970.
    for i in [17usize, 230] {
        recs[i].school_date = "1970-01-01".parse().unwrap();
    }
    let backlog = recs.clone();
    local
        .handle
        .call(move |s| {
            insert_records(s, &backlog);
            // A corrupt outbox item (not a record): caught before sending.
            s.enqueue_raw_payload(backlog[0].id, "{\"id\": garbage")
                .unwrap();
        })
        .await
        .unwrap();
    let run = start_engine(
        sync_config(&stack.rest_url(), ""),
        &local,
        device_jwt(DEVICE),
    );
    let h = local.handle.clone();
    wait_for(60, "outbox drained", async || {
        local_count(&h, "SELECT count(*) FROM outbox").await == 0
    })
    .await;
    // Read after the engine stopped: every counter update has landed.
    let metrics = run.metrics.clone();
    run.stop().await;
    let status = metrics.status();

    assert_eq!(stack.count("SELECT count(*) FROM attendance"), 298);
    let expected: BTreeSet<String> = recs
        .iter()
        .filter(|r| r.school_date.to_string() != "1970-01-01")
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(stack.cloud_ids(), expected);
    let q = local_query(
        &local.handle,
        "SELECT record_id, reason, coalesce(http_status, 0) FROM outbox_quarantine ORDER BY seq",
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    )
    .await;
    assert_eq!(q.len(), 3, "{q:?}");
    let server: Vec<_> = q.iter().filter(|x| x.2 == 400).collect();
    assert_eq!(server.len(), 2, "{q:?}");
    for (id, reason, _) in &server {
        assert_eq!(
            reason, "rejected:23514",
            "PostgreSQL's check_violation, no text from outside"
        );
        assert!(id == &recs[17].id.to_string() || id == &recs[230].id.to_string());
    }
    assert!(
        q.iter()
            .any(|x| x.2 == 0 && x.1 == "invalid:payload_not_a_record"),
        "{q:?}"
    );
    assert_eq!(status.quarantined, 3);
    // Records with a quarantined change stay on the kiosk, not marked
    // synced: the two refused ones, and the one whose newer outbox item was
    // corrupt (its earlier snapshot did reach the cloud).
    let unsynced: BTreeSet<String> = local_query(
        &local.handle,
        "SELECT id FROM attendance WHERE synced_at IS NULL",
        |r| r.get(0),
    )
    .await
    .into_iter()
    .collect();
    let quarantined: BTreeSet<String> = q.iter().map(|x| x.0.clone()).collect();
    assert_eq!(unsynced, quarantined);
    assert_eq!(unsynced.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_pull_is_incremental_paginated_and_scoped_to_the_school() {
    if !stack_enabled("roster_pull_is_incremental_paginated_and_scoped_to_the_school") {
        return;
    }
    let stack = Stack::start();
    stack.sql(
        "INSERT INTO students (school_id, student_number, full_name, guardian_phone)
           SELECT 'sch-1', 'R' || lpad(g::text, 5, '0'), 'Student ' || g, '+63917' || lpad(g::text, 7, '0')
           FROM generate_series(1, 2500) g;
         INSERT INTO students (school_id, student_number) SELECT 'sch-2', 'X' || g FROM generate_series(1, 50) g;",
    );
    let local = local();
    let mut cfg = sync_config(&stack.rest_url(), "");
    cfg.roster.enabled = true;
    cfg.roster.page_size = 300;
    cfg.roster.interval_s = 1;
    let run = start_engine(cfg, &local, device_jwt(DEVICE));
    let h = local.handle.clone();
    wait_for(60, "roster pulled", async || {
        local_count(&h, "SELECT count(*) FROM students").await == 2500
    })
    .await;
    assert_eq!(
        local_count(
            &local.handle,
            "SELECT count(*) FROM students WHERE student_number LIKE 'X%'"
        )
        .await,
        0,
        "another school's students never reach the kiosk"
    );
    assert_eq!(
        local_count(
            &local.handle,
            "SELECT count(*) FROM students WHERE guardian_phone IS NOT NULL"
        )
        .await,
        2500
    );
    // The counter is bumped after the apply commits, so the rows can be seen first.
    let m = run.metrics.clone();
    wait_for(10, "roster counter", async || {
        m.status().roster_rows >= 2500
    })
    .await;
    let after_first = run.metrics.status().roster_rows;
    assert_eq!(after_first, 2500);

    // A new enrolment and a withdrawal: the next pull brings just those two.
    stack.sql(
        "INSERT INTO students (school_id, student_number, full_name) VALUES ('sch-1', 'NEW-1', 'New');
         UPDATE students SET active = false WHERE student_number = 'R00007';",
    );
    let m = run.metrics.clone();
    wait_for(30, "incremental pull", async || {
        m.status().roster_rows >= 2502
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        run.metrics.status().roster_rows,
        2502,
        "only changed rows are pulled again"
    );
    run.stop().await;
    assert_eq!(
        local_count(
            &local.handle,
            "SELECT count(*) FROM students WHERE student_number = 'R00007' AND active = 0"
        )
        .await,
        1
    );
    // The newly enrolled student can scan with the kiosk offline.
    let outcome = local
        .handle
        .call(|s| {
            s.record_scan(&ScanRequest {
                student_number: StudentNumber::parse("NEW-1").unwrap(),
                // Monday 2026-11-23 07:10 in Asia/Manila (default schedule).
                seen_at: "2026-11-22T23:10:00Z".parse().unwrap(),
                source: SourceKind::Replay,
                clock_synced: true,
            })
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome, ScanOutcome::Recorded { .. }),
        "{outcome:?}"
    );
    // Local imports still work beside the pulled roster.
    let summary = local
        .handle
        .call(|s| s.import_students(&[StudentRow::bare(StudentNumber::parse("LOCAL-1").unwrap())]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.inserted, 1);
}

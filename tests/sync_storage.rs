//! Photo upload to Supabase Storage.
//!
//! There is no Supabase Storage server we can run here, so this test uses a
//! small FAKE that checks each request the way Storage's
//! `POST /storage/v1/object/{bucket}/{path}` does: method, path, `apikey`,
//! `Authorization: Bearer`, `x-upsert: true`, content type, and the body
//! byte for byte. The same fake stands in for PostgREST's upsert endpoint
//! (checking its query string and `Prefer` header) to see the record sent
//! again with the remote photo path. Needs no external stack, so it runs in
//! a plain `cargo test` too.

mod sync_common;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use attendance::store::AttendanceRecord;
use sync_common::*;

#[derive(Default)]
struct Seen {
    uploads: Vec<(String, Vec<u8>)>,
    rows: Vec<serde_json::Value>,
    problems: Vec<String>,
    storage_calls: usize,
}

fn fake_supabase(jwt: String) -> (String, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let Some(req) = read_request(&mut s) else {
                continue;
            };
            let mut seen = s2.lock().unwrap();
            if req.header("apikey") != Some("test-anon-key") {
                let m = format!("{}: apikey header {:?}", req.path, req.header("apikey"));
                seen.problems.push(m);
            }
            if req.header("authorization") != Some(&format!("Bearer {jwt}")) {
                seen.problems
                    .push(format!("{}: bad authorization header", req.path));
            }
            if let Some(obj) = req.path.strip_prefix("/storage/v1/object/") {
                seen.storage_calls += 1;
                if req.method != "POST" {
                    seen.problems.push(format!("storage method {}", req.method));
                }
                if req.header("x-upsert") != Some("true") {
                    seen.problems.push("x-upsert header missing".into());
                }
                if req.header("content-type") != Some("image/jpeg") {
                    seen.problems
                        .push(format!("content-type {:?}", req.header("content-type")));
                }
                if seen.storage_calls == 1 {
                    // Storage is briefly unavailable: must be retried.
                    drop(seen);
                    respond(&mut s, 503, r#"{"statusCode":"503","error":"unavailable"}"#);
                    continue;
                }
                seen.uploads.push((obj.to_string(), req.body.clone()));
                drop(seen);
                respond(&mut s, 200, &format!(r#"{{"Key":"{obj}"}}"#));
            } else if req.path.starts_with("/rest/v1/attendance?") {
                if req.method != "POST"
                    || !req.path.contains("on_conflict=id")
                    || !req.path.contains("select=id")
                    || req.header("prefer")
                        != Some("resolution=merge-duplicates,return=representation")
                {
                    seen.problems
                        .push(format!("bad upsert request {} {}", req.method, req.path));
                }
                // Like PostgREST with return=representation and select=id.
                let ids = match serde_json::from_slice::<Vec<serde_json::Value>>(&req.body) {
                    Ok(rows) => {
                        let ids: Vec<serde_json::Value> = rows
                            .iter()
                            .map(|r| serde_json::json!({"id": r["id"]}))
                            .collect();
                        seen.rows.extend(rows);
                        ids
                    }
                    Err(e) => {
                        seen.problems.push(format!("upsert body: {e}"));
                        Vec::new()
                    }
                };
                drop(seen);
                respond(&mut s, 201, &serde_json::Value::Array(ids).to_string());
            } else {
                seen.problems
                    .push(format!("unexpected {} {}", req.method, req.path));
                drop(seen);
                respond(&mut s, 404, "{}");
            }
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_are_uploaded_to_storage_and_the_record_carries_the_path() {
    let jwt = device_jwt(DEVICE);
    let (url, seen) = fake_supabase(jwt.clone());
    let local = local();
    let photos = local.dir.path().join("photos");
    std::fs::create_dir_all(photos.join("2026-11-23")).unwrap();

    let mut with_photo: AttendanceRecord = record(1, DEVICE, "2026-11-23");
    let rel = format!("2026-11-23/{}.jpg", with_photo.id);
    with_photo.photo_path = Some(rel.clone());
    let jpeg: Vec<u8> = [0xFF, 0xD8, 0xFF, 0xE0]
        .into_iter()
        .chain((0..50_000u32).map(|i| (i * 7 % 251) as u8))
        .chain([0xFF, 0xD9])
        .collect();
    std::fs::write(photos.join(&rel), &jpeg).unwrap();
    let mut missing = record(2, DEVICE, "2026-11-23");
    missing.photo_path = Some("2026-11-23/gone.jpg".into());
    let recs = vec![with_photo.clone(), missing.clone()];
    local
        .handle
        .call(move |s| insert_records(s, &recs))
        .await
        .unwrap();

    let mut cfg = sync_config(&url, "/rest/v1");
    cfg.photos.enabled = true;
    cfg.photos.retention_days = 0;
    let run = start_engine(cfg, &local, jwt);
    let remote = format!("{DEVICE}/2026-11-23/{}.jpg", with_photo.id);
    let (s2, remote2) = (seen.clone(), remote.clone());
    let h = local.handle.clone();
    wait_for(
        30,
        "photo uploaded and record re-sent with its path",
        async || {
            let rows_ok = s2.lock().unwrap().rows.iter().any(|r| {
                r["id"] == with_photo.id.to_string() && r["photo_path"] == remote2.as_str()
            });
            rows_ok && local_count(&h, "SELECT count(*) FROM outbox").await == 0
        },
    )
    .await;
    let m = run.metrics.clone();
    run.stop().await;

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_eq!(seen.storage_calls, 2, "one 503, one retry");
    assert_eq!(seen.uploads.len(), 1);
    assert_eq!(seen.uploads[0].0, format!("attendance-photos/{remote}"));
    assert!(seen.uploads[0].1 == jpeg, "body differs from the file");
    // The local file path never goes to the cloud.
    assert!(seen.rows.iter().all(|r| {
        !r["photo_path"]
            .as_str()
            .is_some_and(|p| p.starts_with('/') || p == rel)
    }));
    let st = m.status();
    assert_eq!(st.photos_uploaded, 1);
    assert_eq!(
        st.breakers.get("storage"),
        Some(&attendance::sync::BreakerState::Closed)
    );

    let rows = local_query(
        &local.handle,
        "SELECT id, photo_path, photo_remote_path FROM attendance ORDER BY student_number",
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        },
    )
    .await;
    // Uploaded, and past retention (0 days): the local copy is gone.
    assert_eq!(rows[0].0, with_photo.id.to_string());
    assert_eq!(rows[0].1, None);
    assert_eq!(rows[0].2.as_deref(), Some(remote.as_str()));
    assert!(!photos.join(&rel).exists());
    // A missing file is reported and not retried forever.
    assert_eq!(rows[1].0, missing.id.to_string());
    assert_eq!(rows[1].2.as_deref(), Some(""));
}

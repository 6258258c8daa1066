//! Crash test: a daemon recording a stream of scans is killed with SIGKILL at
//! random points, again and again on the same data directory. After every
//! kill, each scan the daemon acknowledged (`scan_recorded` seen) must be in
//! the database exactly once, and the database must pass integrity_check.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 50;
const PER_ROUND: usize = 40;

#[test]
fn acknowledged_scans_survive_sigkill() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed: {seed} (set CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let kiosk = Kiosk::with_config(serde_json::json!({
        "sources": {"replay": {"enabled": true, "file": "REPLAY", "interval_ms": 1}}
    }));
    let replay = kiosk.dir.path().join("replay.txt");
    // Point the replay source at the per-round file.
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&kiosk.config).unwrap()).unwrap();
    cfg["sources"]["replay"]["file"] = serde_json::json!(replay);
    std::fs::write(&kiosk.config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    kiosk.import("C", ROUNDS * PER_ROUND);

    let mut acknowledged: HashMap<String, String> = HashMap::new(); // record id -> student
    let mut killed_mid_stream = 0;
    for round in 0..ROUNDS {
        // Each round scans its own students, so every scan is a new login.
        let payloads: Vec<String> = (0..PER_ROUND)
            .map(|i| format!("C-{:04}", round * PER_ROUND + i))
            .collect();
        std::fs::write(&replay, payloads.join("\n")).unwrap();
        let daemon = kiosk.spawn(&[]);
        daemon.wait_ready();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..120)));
        let seen = daemon.recorded_ids().len();
        let lines_before_kill = daemon.lines();
        daemon.kill9();
        if seen < PER_ROUND {
            killed_mid_stream += 1;
        }
        for l in &lines_before_kill {
            if event(l).as_deref() == Some("scan_recorded") {
                let id = field(l, "record_id").unwrap();
                let sn = field(l, "student_number").unwrap();
                assert!(
                    acknowledged.insert(id, sn).is_none(),
                    "a record id was acknowledged twice"
                );
            }
        }

        let db = kiosk.open_db();
        let ok: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "round {round}: integrity_check");
        let mut st = db
            .prepare("SELECT id, student_number FROM attendance")
            .unwrap();
        let rows: Vec<(String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let in_db: HashMap<&str, &str> =
            rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(in_db.len(), rows.len(), "record ids are unique");
        let students: HashSet<&str> = rows.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            students.len(),
            rows.len(),
            "one record per student per session: no duplicates"
        );
        for (id, sn) in &acknowledged {
            assert_eq!(
                in_db.get(id.as_str()),
                Some(&sn.as_str()),
                "round {round}: acknowledged record {id} lost"
            );
        }
        // Every record has its outbox row (same transaction).
        let orphans: i64 = db
            .query_row("SELECT count(*) FROM attendance a WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.record_id = a.id)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(orphans, 0, "round {round}: a record without its outbox row");
    }
    eprintln!(
        "{} acknowledged scans across {ROUNDS} kills ({killed_mid_stream} mid-stream), all present exactly once",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() >= ROUNDS,
        "the test must actually record scans"
    );
    assert!(
        killed_mid_stream >= ROUNDS / 5,
        "most kills should land mid-stream; got {killed_mid_stream}"
    );
}

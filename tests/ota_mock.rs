//! The real DDI client and fetcher against a small DDI server written from
//! the hawkBit spec (tests/ota_support): what goosebit 0.2.12 lacks —
//! cancelAction, maintenanceWindow, sha256-only artifacts, string action
//! ids — plus a download cut mid-way and resumed with Range by a restarted
//! agent, and a 404 download reported once.

mod ota_support;

use std::time::Duration;

use ota_support::*;
use serde_json::json;

fn bundle() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

#[test]
fn sha256_only_download_waits_for_the_server_window_then_installs() {
    let dir = tempfile::tempdir().unwrap();
    local(async {
        let mock = MockDdi::start().await;
        let b = bundle();
        mock.offer(
            "act-8",
            "2.0.0",
            &b,
            json!({"sha256": sha256_hex(&b)}),
            Some("unavailable"),
        );
        let mut a = agent(&mock.url, TENANT, dir.path(), "A", "boot-1", quick_config());
        a.start().await;
        assert!(
            run_until(&mut a, Duration::from_secs(20), |a| a.state.name()
                == "waiting_for_window")
            .await
        );
        assert!(
            a.rauc.snapshot().installed.is_empty(),
            "closed window: downloaded only"
        );
        let fb = mock.with(|s| s.feedback.clone());
        assert!(
            fb.iter().any(|f| f["status"]["execution"] == "downloaded"),
            "{fb:?}"
        );
        assert!(
            fb.iter()
                .any(|f| f["status"]["result"]["progress"]["of"] == b.len())
        );
        assert!(mock.with(|s| {
            s.auth_headers
                .iter()
                .all(|h| h.as_deref() == Some("TargetToken test-token"))
        }));
        assert_eq!(mock.with(|s| s.configs.len()), 1, "configData sent");
        mock.offer(
            "act-8",
            "2.0.0",
            &b,
            json!({"sha256": sha256_hex(&b)}),
            Some("available"),
        );
        assert!(
            run_until(&mut a, Duration::from_secs(20), |a| a.state.name()
                == "rebooting")
            .await
        );
        assert_eq!(a.rauc.snapshot().installed.len(), 1);
        assert!(mock.finals().is_empty(), "no success before the reboot");
    });
}

#[test]
fn cancel_is_honoured_during_the_download_and_rejected_after_the_install() {
    let dir = tempfile::tempdir().unwrap();
    local(async {
        let mock = MockDdi::start().await;
        let b = bundle();
        mock.with(|s| s.chunk_delay = Duration::from_millis(200));
        mock.offer("9", "2.0.0", &b, json!({"sha256": sha256_hex(&b)}), None);
        let mut a = agent(&mock.url, TENANT, dir.path(), "A", "boot-1", quick_config());
        a.start().await;
        assert!(
            run_until(&mut a, Duration::from_secs(10), |a| a.state.name()
                == "downloading")
            .await
        );
        mock.with(|s| s.cancel = Some("9".into()));
        assert!(
            run_until(&mut a, Duration::from_secs(10), |a| a.state.name()
                == "idle")
            .await
        );
        let c = mock.with(|s| s.cancel_feedback.clone());
        assert_eq!(c[0]["status"]["execution"], "closed");
        assert!(a.rauc.snapshot().installed.is_empty());

        // A new action, installed; then a cancel is rejected with the reason.
        mock.with(|s| s.chunk_delay = Duration::ZERO);
        mock.offer("10", "2.0.0", &b, json!({"sha256": sha256_hex(&b)}), None);
        *a.kiosk.facts.lock().unwrap() = Default::default();
        assert!(
            run_until(&mut a, Duration::from_secs(20), |a| a.state.name()
                == "rebooting")
            .await
        );
        mock.with(|s| s.cancel = Some("10".into()));
        assert!(
            run_until(&mut a, Duration::from_secs(5), |_| mock
                .with(|s| s.cancel_feedback.len() == 2))
            .await
        );
        let c = mock.with(|s| s.cancel_feedback[1].clone());
        assert_eq!(c["status"]["execution"], "rejected");
        assert_eq!(a.state.name(), "rebooting");
    });
}

#[test]
fn a_cut_download_resumes_with_range_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mock = rt.block_on(MockDdi::start());
    let mock_url = mock.url.clone();
    mock.offer("5", "2.0.0", &b, json!({"sha1": sha1_hex(&b)}), None);
    mock.with(|s| s.cut_after = Some(200_000));
    let ls = tokio::task::LocalSet::new();
    ls.block_on(&rt, async {
        let mut a = agent(&mock_url, TENANT, dir.path(), "A", "boot-1", quick_config());
        a.start().await;
        // The cut is a transient failure; stop the agent (a power cut) then.
        assert!(
            run_until(&mut a, Duration::from_secs(10), |a| a
                .stats
                .borrow()
                .download_failures
                > 0)
            .await
        );
        assert_eq!(a.state.name(), "downloading");
    });
    ls.block_on(&rt, async {
        let mut a = agent(&mock_url, TENANT, dir.path(), "A", "boot-2", quick_config());
        a.start().await;
        assert!(
            run_until(&mut a, Duration::from_secs(20), |a| a.state.name()
                == "rebooting")
            .await
        );
        let ranges = mock.with(|s| s.ranges.clone());
        assert_eq!(ranges[0], None);
        let r = ranges[1].clone().expect("second request has a Range");
        let from: u64 = r
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap();
        assert!(
            from > 0 && from <= 200_000 && from.is_multiple_of(65536),
            "{r}"
        );
    });
}

#[test]
fn a_404_download_is_reported_once_not_looped() {
    let dir = tempfile::tempdir().unwrap();
    local(async {
        let mock = MockDdi::start().await;
        let b = bundle();
        mock.offer("7", "2.0.0", &b, json!({"md5": "0".repeat(32)}), None);
        mock.with(|s| s.download_status = Some(404));
        let mut a = agent(&mock.url, TENANT, dir.path(), "A", "boot-1", quick_config());
        a.start().await;
        assert!(
            run_until(&mut a, Duration::from_secs(10), |a| a.state.name()
                == "idle"
                && !mock.finals().is_empty())
            .await
        );
        let f = mock.finals();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0]["status"]["result"]["finished"], "failure");
        assert_eq!(mock.with(|s| s.ranges.len()), 1, "one download request");
    });
}

#[test]
fn polls_back_off_on_429_and_honour_retry_after_floor() {
    let dir = tempfile::tempdir().unwrap();
    local(async {
        let mock = MockDdi::start().await;
        mock.with(|s| s.poll_errors.extend([429, 503]));
        let mut a = agent(&mock.url, TENANT, dir.path(), "A", "boot-1", quick_config());
        a.start().await;
        let d1 = a.poll_once().await;
        let d2 = a.poll_once().await;
        assert!(d1 >= Duration::from_secs(10) && d2 > d1, "{d1:?} {d2:?}");
        let ok = a.poll_once().await;
        // The server's sleep of 30 s with 10% jitter.
        assert!(
            ok >= Duration::from_secs(27) && ok <= Duration::from_secs(33),
            "{ok:?}"
        );
    });
}

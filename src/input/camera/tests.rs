use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::input::decode::Decoded;

/// Grabber driven by a script: `open_failures` failed opens, then frames,
/// failing every grab while `fail_grabs` says so.
struct Scripted {
    open_failures: usize,
    opens: Arc<AtomicUsize>,
    grabs: usize,
    fail_from: usize,
    fail_count: usize,
    pace: Duration,
}

impl FrameGrabber for Scripted {
    fn open(&mut self) -> Result<(), CameraError> {
        let n = self.opens.fetch_add(1, Ordering::SeqCst);
        if n < self.open_failures {
            return Err(CameraError::Open {
                path: "/dev/video9".into(),
                message: "No such device".into(),
            });
        }
        Ok(())
    }
    fn grab(&mut self, out: &mut RawFrame) -> Result<(), CameraError> {
        std::thread::sleep(self.pace);
        self.grabs += 1;
        if self.grabs > self.fail_from && self.grabs <= self.fail_from + self.fail_count {
            return Err(CameraError::Grab {
                path: "/dev/video9".into(),
                message: "select timeout".into(),
            });
        }
        out.format = Some(PixelFormat::Grey);
        out.width = 16;
        out.height = 8;
        out.stride = 0;
        out.data.clear();
        out.data.resize(128, self.grabs as u8);
        Ok(())
    }
    fn close(&mut self) {}
}

fn fast_cfg() -> CameraConfig {
    CameraConfig {
        enabled: true,
        retry_initial_ms: 10,
        retry_max_s: 1,
        max_consecutive_failures: 3,
        ..Default::default()
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Scripted {
    /// Opens at once and never fails a grab.
    fn steady(pace: Duration) -> Self {
        Scripted {
            open_failures: 0,
            opens: Arc::new(AtomicUsize::new(0)),
            grabs: 0,
            fail_from: usize::MAX / 2,
            fail_count: 0,
            pace,
        }
    }
}

/// A capture thread and a decode thread joined by a slot, wired as the
/// daemon wires them; the decoded scans arrive on the returned receiver.
struct Rig {
    health: CameraHealth,
    slot: Arc<Slot>,
    token: CancellationToken,
    cap: std::thread::JoinHandle<()>,
    dec: std::thread::JoinHandle<()>,
}

impl Rig {
    fn start(
        grabber: Scripted,
        decoder: impl QrDecoder + 'static,
        cfg: &CameraConfig,
        queue: usize,
    ) -> (Rig, tokio::sync::mpsc::Receiver<RawScan>) {
        let health = CameraHealth::new(Duration::from_secs(10));
        let slot = Arc::new(Slot::new());
        let token = CancellationToken::new();
        let (tx, rx) = tokio::sync::mpsc::channel(queue);
        let cap = {
            let (slot, health, token, cfg) =
                (slot.clone(), health.clone(), token.clone(), cfg.clone());
            std::thread::spawn(move || {
                capture_loop(Box::new(grabber), &cfg, &slot, &health, &token)
            })
        };
        let dec = {
            let (slot, health, token, cfg) =
                (slot.clone(), health.clone(), token.clone(), cfg.clone());
            std::thread::spawn(move || {
                let targets = DecodeTargets {
                    sink: tx,
                    photos: None,
                    today: Arc::new(|| chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("date")),
                };
                decode_loop(Box::new(decoder), &cfg, &slot, &health, &targets, &token)
            })
        };
        let rig = Rig {
            health,
            slot,
            token,
            cap,
            dec,
        };
        (rig, rx)
    }

    /// Stops both threads (each must have survived) and returns the health.
    fn stop(self) -> CameraHealth {
        self.token.cancel();
        self.slot.close();
        self.cap.join().expect("capture thread survived");
        self.dec.join().expect("decode thread survived");
        self.health
    }
}

#[test]
fn config_defaults_and_validation_name_the_key() {
    let c: CameraConfig = serde_json::from_str("{}").expect("defaults");
    assert_eq!(c, CameraConfig::default());
    c.validate().expect("valid");
    let c: CameraConfig = serde_json::from_str(r#"{"fps": 0, "format": "yuyv"}"#).expect("parse");
    assert_eq!(c.format, PixelFormat::Yuyv);
    assert!(
        c.validate()
            .expect_err("fps")
            .to_string()
            .starts_with("camera.fps")
    );
    assert!(serde_json::from_str::<CameraConfig>(r#"{"format": "h264"}"#).is_err());
    assert!(serde_json::from_str::<CameraConfig>(r#"{"resolution": 1}"#).is_err());
}

#[test]
fn grey_frames_with_stride_are_packed() {
    let raw = RawFrame {
        format: Some(PixelFormat::Grey),
        width: 3,
        height: 2,
        stride: 4,
        data: vec![1, 2, 3, 0, 4, 5, 6, 0],
    };
    let mut l = LumaFrame::empty();
    raw.to_luma(&mut l).expect("convert");
    assert_eq!(l.data(), &[1, 2, 3, 4, 5, 6]);
}

#[test]
fn slot_keeps_only_the_newest_frame() {
    let slot = Slot::new();
    let f = |v: u8| RawFrame {
        data: vec![v],
        ..Default::default()
    };
    assert!(slot.put(f(1)).is_none());
    let dropped = slot.put(f(2)).expect("first frame dropped");
    assert_eq!(dropped.data, vec![1]);
    assert_eq!(
        slot.take(Duration::from_millis(1)).expect("frame").data,
        vec![2]
    );
    assert!(slot.take(Duration::from_millis(1)).is_none());
    slot.close();
    assert!(
        slot.take(Duration::from_secs(5)).is_none(),
        "closed slot does not wait"
    );
}

#[test]
fn retries_at_start_then_recovers_after_consecutive_failures() {
    let opens = Arc::new(AtomicUsize::new(0));
    let grabber = Scripted {
        open_failures: 2,
        opens: opens.clone(),
        grabs: 0,
        fail_from: 20,
        fail_count: 3,
        pace: Duration::from_millis(2),
    };
    let cfg = fast_cfg();
    let health = CameraHealth::new(Duration::from_secs(10));
    let slot = Arc::new(Slot::new());
    let token = CancellationToken::new();
    let seen_degraded = Arc::new(Mutex::new(Vec::<String>::new()));
    let t = {
        let (slot, health, token) = (slot.clone(), health.clone(), token.clone());
        std::thread::spawn(move || capture_loop(Box::new(grabber), &cfg, &slot, &health, &token))
    };
    // Watch the states go by.
    let mut reached_ok_after_reopen = false;
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let s = health.status();
        if let CameraState::Degraded { reason } = &s.state {
            let mut v = seen_degraded.lock().expect("lock");
            if !v.contains(reason) {
                v.push(reason.clone());
            }
        }
        let _ = slot.take(Duration::from_millis(1));
        if s.state == CameraState::Ok && opens.load(Ordering::SeqCst) >= 4 {
            reached_ok_after_reopen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    token.cancel();
    t.join().expect("join");
    assert!(reached_ok_after_reopen, "camera came back");
    let reasons = seen_degraded.lock().expect("lock").clone();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("No such device") && r.contains("retrying")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("3 consecutive frame failures")),
        "{reasons:?}"
    );
    let st = health.status();
    assert_eq!(st.state, CameraState::Stopped);
    assert_eq!(st.reopens, 3, "2 failed opens + 1 reopen after failures");
}

#[test]
fn stalled_camera_reads_as_degraded() {
    let h = CameraHealth::new(Duration::from_millis(1));
    h.with(|i| {
        i.state = CameraState::Ok;
        i.last_frame = Some(Instant::now());
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        matches!(h.status().state, CameraState::Degraded { reason } if reason.contains("no frame"))
    );
}

struct SlowDecoder(Duration, Arc<AtomicUsize>);
impl QrDecoder for SlowDecoder {
    fn name(&self) -> String {
        "slow".into()
    }
    fn decode(&mut self, f: &LumaFrame) -> Vec<Decoded> {
        std::thread::sleep(self.0);
        self.1.fetch_add(1, Ordering::SeqCst);
        // "finds" the frame's first byte as payload every frame
        vec![Decoded {
            payload: vec![b'A' + (f.data()[0] % 2)],
            engine: "slow",
        }]
    }
}

#[test]
fn slow_decoder_drops_frames_and_repeats_are_suppressed() {
    let cfg = CameraConfig {
        repeat_suppress_ms: 60_000,
        ..fast_cfg()
    };
    let decoded = Arc::new(AtomicUsize::new(0));
    let (rig, mut rx) = Rig::start(
        Scripted::steady(Duration::from_millis(1)),
        SlowDecoder(Duration::from_millis(25), decoded.clone()),
        &cfg,
        16,
    );
    wait_until("10 decodes", Duration::from_secs(10), || {
        decoded.load(Ordering::SeqCst) >= 10
    });
    let st = rig.stop().status();
    assert!(st.dropped_frames > 0, "{st:?}");
    assert!(st.frames > decoded.load(Ordering::SeqCst) as u64);
    // payload alternates A/B with the frame counter, so both appear, but each
    // only while it differs from the previous one
    let mut got = Vec::new();
    while let Ok(s) = rx.try_recv() {
        assert_eq!(s.source, SourceKind::Camera);
        got.push(s.payload);
    }
    assert!(!got.is_empty());
    assert!(got.windows(2).all(|w| w[0] != w[1]), "repeats suppressed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_camera_scans_and_saves_a_photo() {
    let data = tempfile::tempdir().expect("tmp");
    let cfg = CameraConfig {
        enabled: true,
        demo: true,
        width: 640,
        height: 480,
        fps: 10,
        ..Default::default()
    };
    let saved = Arc::new(Mutex::new(Vec::new()));
    let s2 = saved.clone();
    let store = crate::evidence::PhotoStore::new(
        data.path(),
        crate::evidence::EvidenceConfig {
            min_free_mb: 0,
            min_free_percent: 0.0,
            warn_free_percent: 0.0,
            ..Default::default()
        },
    );
    let worker = crate::evidence::PhotoWorker::start(
        store,
        2,
        Box::new(move |p| s2.lock().expect("lock").push(p)),
    )
    .expect("worker");
    let src = CameraSource::new(cfg, DecoderConfig::default())
        .expect("demo camera")
        .with_photos(worker.sender(), Duration::from_millis(300));
    let health = src.health();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let token = CancellationToken::new();
    let task = tokio::spawn(Box::new(src).run(tx, token.clone()));
    let scan = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a scan within 20 s")
        .expect("scan");
    assert_eq!(scan.payload, demo::sample_roster()[0].as_bytes());
    assert_eq!(scan.source, SourceKind::Camera);
    assert_eq!(health.status().state, CameraState::Ok);
    // the photo arrives on its own, after the window
    let end = Instant::now() + Duration::from_secs(20);
    while saved.lock().expect("lock").is_empty() {
        assert!(Instant::now() < end, "photo saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel();
    task.await.expect("join").expect("clean stop");
    assert_eq!(health.status().state, CameraState::Stopped);
    let p = saved.lock().expect("lock")[0].clone();
    assert_eq!(p.payload, scan.payload);
    assert_eq!(p.seen_at, scan.seen_at);
    assert!(p.path.exists());
    drop(worker);
}

#[test]
fn probe_reads_the_demo_stream() {
    let cfg = CameraConfig {
        demo: true,
        width: 640,
        height: 480,
        fps: 100,
        ..Default::default()
    };
    let mut g = grabber_for(&cfg).expect("demo");
    let mut d = DecoderConfig::default().build();
    let r = probe(g.as_mut(), d.as_mut(), 5).expect("probe");
    assert_eq!(r.frames, 5);
    assert_eq!(r.failures, 0);
    assert!(r.description.starts_with("demo stream: Grey 640x480"));
    assert_eq!(
        r.payloads,
        vec![demo::sample_roster()[0].clone().into_bytes()]
    );
}

#[test]
fn probe_reports_a_dead_camera() {
    let mut g = Scripted {
        open_failures: 0,
        opens: Arc::new(AtomicUsize::new(0)),
        grabs: 0,
        fail_from: 0,
        fail_count: 100,
        pace: Duration::ZERO,
    };
    let mut d = DecoderConfig::default().build();
    let e = probe(&mut g, d.as_mut(), 3).expect_err("no frames");
    assert!(e.to_string().contains("select timeout"));
}

struct PanicsOnOdd;
impl QrDecoder for PanicsOnOdd {
    fn name(&self) -> String {
        "panics".into()
    }
    fn decode(&mut self, f: &LumaFrame) -> Vec<Decoded> {
        if f.data()[0] % 2 == 1 {
            panic!("decoder bug (expected by the test)");
        }
        vec![Decoded {
            payload: vec![f.data()[0]],
            engine: "panics",
        }]
    }
}

#[test]
fn a_panicking_decoder_does_not_stop_the_camera() {
    let (rig, mut rx) = Rig::start(
        Scripted::steady(Duration::from_millis(3)),
        PanicsOnOdd,
        &fast_cfg(),
        64,
    );
    let mut got = 0;
    let end = Instant::now() + Duration::from_secs(10);
    while got < 3 {
        assert!(Instant::now() < end, "scans keep coming after panics");
        if rx.try_recv().is_ok() {
            got += 1;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    rig.stop();
}

/// Auto-detection finds nothing for a while, then the camera is plugged in.
struct PluggedInLater {
    absent_opens: usize,
    opens: Arc<AtomicUsize>,
}

impl FrameGrabber for PluggedInLater {
    fn open(&mut self) -> Result<(), CameraError> {
        if self.opens.fetch_add(1, Ordering::SeqCst) < self.absent_opens {
            return Err(CameraError::Absent {
                message: "no V4L2 capture device among 0 video node(s)".into(),
            });
        }
        Ok(())
    }
    fn grab(&mut self, out: &mut RawFrame) -> Result<(), CameraError> {
        std::thread::sleep(Duration::from_millis(2));
        out.format = Some(PixelFormat::Grey);
        out.width = 16;
        out.height = 8;
        out.data.clear();
        out.data.resize(128, 0);
        Ok(())
    }
    fn close(&mut self) {}
}

#[test]
fn an_absent_camera_is_absent_not_degraded_until_plugged_in() {
    let opens = Arc::new(AtomicUsize::new(0));
    let grabber = PluggedInLater {
        absent_opens: 3,
        opens: opens.clone(),
    };
    let cfg = fast_cfg();
    let health = CameraHealth::new(Duration::from_secs(10));
    let slot = Arc::new(Slot::new());
    let token = CancellationToken::new();
    let t = {
        let (slot, health, token) = (slot.clone(), health.clone(), token.clone());
        std::thread::spawn(move || capture_loop(Box::new(grabber), &cfg, &slot, &health, &token))
    };
    let mut states = Vec::new();
    wait_until("camera ok", Duration::from_secs(10), || {
        let s = health.status().state;
        let _ = slot.take(Duration::from_millis(1));
        if states.last() != Some(&s) {
            states.push(s.clone());
        }
        s == CameraState::Ok
    });
    token.cancel();
    t.join().expect("join");
    assert!(opens.load(Ordering::SeqCst) >= 4);
    assert!(states.contains(&CameraState::Absent), "{states:?}");
    assert!(
        !states
            .iter()
            .any(|s| matches!(s, CameraState::Degraded { .. })),
        "{states:?}"
    );
    assert_eq!(
        serde_json::to_value(CameraState::Absent).expect("json"),
        serde_json::json!({"state": "absent"})
    );
}

//! Camera scan source: frames from a [`FrameGrabber`] (V4L2 through the
//! `v4l` crate, or the generated demo stream), QR decoding, and face photo
//! evidence.
//!
//! Threads, never the async runtime, do the blocking work:
//! - the capture thread opens the device (retrying with backoff), grabs
//!   frames and puts each into a one-slot hand-off that overwrites a frame
//!   the decoder has not taken yet (a slow decoder drops frames, nothing
//!   queues); after `max_consecutive_failures` failed grabs it reopens the
//!   device;
//! - the decode thread converts the newest frame to luma, runs the decoder,
//!   sends new payloads to the scan pipeline with `try_send` (a full pipeline
//!   drops the camera scan; the student sees no ack and shows the card
//!   again), and after a scan keeps the sharpest frame of the evidence
//!   window for the photo worker.
//!
//! [`CameraHealth`] reports `ok`, `starting` or `degraded` with the reason;
//! the daemon's /health shows it while the HID scanner keeps working.

pub mod demo;
pub mod detect;
#[cfg(feature = "camera")]
pub mod v4l2;
pub mod wiring;

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::decode::{DecoderConfig, LumaFrame, QrDecoder};
use super::{BoxFuture, RawScan, ScanSink, ScanSource, SourceError, SourceKind};
use crate::evidence::{PhotoJob, PhotoSender, SharpestFrame};

/// Pixel formats negotiated with the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
    /// 8-bit grey (the demo stream; some industrial cameras).
    Grey,
}

fn default_device() -> PathBuf {
    PathBuf::from(detect::AUTO)
}
fn default_format() -> PixelFormat {
    PixelFormat::Mjpeg
}
fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
fn default_fps() -> u32 {
    15
}
fn default_buffers() -> u32 {
    4
}
fn default_frame_timeout_ms() -> u64 {
    2000
}
fn default_max_failures() -> u32 {
    10
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_retry_max_s() -> u64 {
    30
}
fn default_stall_s() -> u64 {
    10
}
fn default_repeat_ms() -> u64 {
    3000
}

/// `camera` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    #[serde(default)]
    pub enabled: bool,
    /// `"auto"` (the first capture device, chosen again at every reopen;
    /// see [`detect`]), `/dev/videoN` or a stable `/dev/v4l/by-id/...` path.
    #[serde(default = "default_device")]
    pub device: PathBuf,
    #[serde(default = "default_format")]
    pub format: PixelFormat,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Driver buffers (mmap).
    #[serde(default = "default_buffers")]
    pub buffers: u32,
    /// A grab that takes longer counts as a failure.
    #[serde(default = "default_frame_timeout_ms")]
    pub frame_timeout_ms: u64,
    /// Consecutive failed grabs before the device is reopened.
    #[serde(default = "default_max_failures")]
    pub max_consecutive_failures: u32,
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_s")]
    pub retry_max_s: u64,
    /// No frame for this long makes health `degraded`.
    #[serde(default = "default_stall_s")]
    pub stall_s: u64,
    /// The same payload seen again within this time is not re-sent.
    #[serde(default = "default_repeat_ms")]
    pub repeat_suppress_ms: u64,
    /// Generated frames with QR codes of the sample roster (demo mode).
    #[serde(default)]
    pub demo: bool,
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            enabled: false,
            device: default_device(),
            format: default_format(),
            width: default_width(),
            height: default_height(),
            fps: default_fps(),
            buffers: default_buffers(),
            frame_timeout_ms: default_frame_timeout_ms(),
            max_consecutive_failures: default_max_failures(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_s: default_retry_max_s(),
            stall_s: default_stall_s(),
            repeat_suppress_ms: default_repeat_ms(),
            demo: false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CameraConfigError {
    #[error("camera.{key}: {value} is outside {range}")]
    Range {
        key: &'static str,
        value: u64,
        range: &'static str,
    },
    #[error("camera.device: must not be empty")]
    EmptyDevice,
}

fn check(
    key: &'static str,
    value: u64,
    lo: u64,
    hi: u64,
    range: &'static str,
) -> Result<(), CameraConfigError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(CameraConfigError::Range { key, value, range })
    }
}

impl CameraConfig {
    pub fn validate(&self) -> Result<(), CameraConfigError> {
        if self.device.as_os_str().is_empty() {
            return Err(CameraConfigError::EmptyDevice);
        }
        check("width", self.width.into(), 160, 4096, "160..=4096")?;
        check("height", self.height.into(), 120, 4096, "120..=4096")?;
        check("fps", self.fps.into(), 1, 120, "1..=120")?;
        check("buffers", self.buffers.into(), 2, 32, "2..=32")?;
        check(
            "frame_timeout_ms",
            self.frame_timeout_ms,
            50,
            60_000,
            "50..=60000",
        )?;
        check(
            "max_consecutive_failures",
            self.max_consecutive_failures.into(),
            1,
            1000,
            "1..=1000",
        )?;
        check(
            "retry_initial_ms",
            self.retry_initial_ms,
            10,
            60_000,
            "10..=60000",
        )?;
        check("retry_max_s", self.retry_max_s, 1, 3600, "1..=3600")?;
        check("stall_s", self.stall_s, 1, 3600, "1..=3600")?;
        check(
            "repeat_suppress_ms",
            self.repeat_suppress_ms,
            0,
            600_000,
            "0..=600000",
        )?;
        Ok(())
    }
}

/// One captured frame as the device delivered it.
#[derive(Debug, Clone, Default)]
pub struct RawFrame {
    pub format: Option<PixelFormat>,
    pub width: u32,
    pub height: u32,
    /// Bytes per line (YUYV / grey); 0 = packed.
    pub stride: usize,
    pub data: Vec<u8>,
}

impl RawFrame {
    /// Converts into `out` (reusing its allocation).
    pub fn to_luma(&self, out: &mut LumaFrame) -> Result<(), super::decode::luma::LumaError> {
        match self.format {
            Some(PixelFormat::Mjpeg) => out.fill_from_jpeg(&self.data),
            Some(PixelFormat::Yuyv) => {
                out.fill_from_yuyv(&self.data, self.width, self.height, self.stride)
            }
            Some(PixelFormat::Grey) | None => {
                let w = self.width as usize;
                let stride = if self.stride == 0 { w } else { self.stride };
                if stride == w {
                    *out = LumaFrame::new(self.width, self.height, self.data.clone())?;
                } else {
                    let packed = self
                        .data
                        .chunks(stride)
                        .take(self.height as usize)
                        .flat_map(|r| r.iter().take(w).copied())
                        .collect();
                    *out = LumaFrame::new(self.width, self.height, packed)?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("opening camera {path}: {message}")]
    Open { path: String, message: String },
    #[error("camera {path}: {message}")]
    Grab { path: String, message: String },
    /// `device = "auto"` and no camera is connected: not a fault (a kiosk
    /// may run on its USB scanner alone), shown as `absent` in health.
    #[error("no camera: {message}")]
    Absent { message: String },
}

/// Where frames come from: the V4L2 device or the demo generator.
pub trait FrameGrabber: Send {
    /// Opens (or reopens) and negotiates the format.
    fn open(&mut self) -> Result<(), CameraError>;
    /// Blocks for the next frame, writing it into `out` (reusing its buffer).
    fn grab(&mut self, out: &mut RawFrame) -> Result<(), CameraError>;
    /// Releases the device (before a reopen).
    fn close(&mut self);
    /// What was negotiated (for logs and `decode --camera`).
    fn describe(&self) -> String {
        String::new()
    }
}

/// Result of [`probe`].
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    pub description: String,
    pub frames: usize,
    pub failures: usize,
    pub elapsed: Duration,
    /// Distinct payloads decoded, in order of first sight.
    pub payloads: Vec<Vec<u8>>,
    /// Median conversion + decode time per frame.
    pub median_decode_ms: f64,
}

/// Opens `grabber`, grabs `frames` frames (giving up after as many failed
/// grabs), converts and decodes each: a hands-on check of a camera.
pub fn probe(
    grabber: &mut dyn FrameGrabber,
    decoder: &mut dyn QrDecoder,
    frames: usize,
) -> Result<ProbeReport, CameraError> {
    grabber.open()?;
    let mut report = ProbeReport {
        description: grabber.describe(),
        ..Default::default()
    };
    let start = Instant::now();
    let mut raw = RawFrame::default();
    let mut luma = LumaFrame::empty();
    let mut times = Vec::new();
    let mut last_err = None;
    while report.frames < frames && report.failures < frames.max(1) {
        match grabber.grab(&mut raw) {
            Err(e) => {
                report.failures += 1;
                last_err = Some(e);
            }
            Ok(()) => {
                report.frames += 1;
                let t = Instant::now();
                if raw.to_luma(&mut luma).is_err() {
                    report.failures += 1;
                    continue;
                }
                for d in decoder.decode(&luma) {
                    if !report.payloads.contains(&d.payload) {
                        report.payloads.push(d.payload);
                    }
                }
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    report.elapsed = start.elapsed();
    grabber.close();
    if report.frames == 0
        && let Some(e) = last_err
    {
        return Err(e);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    report.median_decode_ms = times.get(times.len() / 2).copied().unwrap_or(0.0);
    Ok(report)
}

/// The grabber for a config: demo stream or V4L2 device.
pub fn grabber_for(cfg: &CameraConfig) -> Result<Box<dyn FrameGrabber>, CameraError> {
    if cfg.demo {
        return Ok(Box::new(demo::DemoGrabber::new(cfg, demo::sample_roster())));
    }
    #[cfg(feature = "camera")]
    {
        Ok(Box::new(v4l2::V4lGrabber::new(cfg)))
    }
    #[cfg(not(feature = "camera"))]
    {
        Err(CameraError::Open {
            path: cfg.device.display().to_string(),
            message: "built without the `camera` feature (V4L2)".into(),
        })
    }
}

/// Camera state for /health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CameraState {
    Starting,
    Ok,
    Degraded {
        reason: String,
    },
    /// Auto-detection found no camera (looked for again at every retry).
    Absent,
    Stopped,
}

#[derive(Debug)]
struct HealthInner {
    state: CameraState,
    last_frame: Option<Instant>,
    frames: u64,
    dropped: u64,
    decoded: u64,
    reopens: u64,
}

/// Shared, cheap-to-read camera health.
#[derive(Debug, Clone)]
pub struct CameraHealth {
    inner: Arc<Mutex<HealthInner>>,
    stall: Duration,
}

/// A snapshot for /health and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CameraStatus {
    #[serde(flatten)]
    pub state: CameraState,
    pub frames: u64,
    pub dropped_frames: u64,
    pub decoded: u64,
    pub reopens: u64,
}

impl CameraHealth {
    pub fn new(stall: Duration) -> Self {
        CameraHealth {
            inner: Arc::new(Mutex::new(HealthInner {
                state: CameraState::Starting,
                last_frame: None,
                frames: 0,
                dropped: 0,
                decoded: 0,
                reopens: 0,
            })),
            stall,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HealthInner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn set(&self, state: CameraState) {
        self.with(|h| {
            if h.state != state {
                match &state {
                    CameraState::Degraded { reason } => {
                        tracing::warn!(target: "camera", %reason, "camera degraded")
                    }
                    CameraState::Ok => tracing::info!(target: "camera", "camera ok"),
                    CameraState::Absent => {
                        tracing::info!(target: "camera", "no camera connected; will keep looking")
                    }
                    _ => {}
                }
                h.state = state;
            }
        })
    }

    /// The current status; a camera with no frame for `stall_s` is degraded
    /// even if the capture thread has not noticed yet.
    pub fn status(&self) -> CameraStatus {
        self.with(|h| {
            let mut state = h.state.clone();
            if state == CameraState::Ok && h.last_frame.is_some_and(|t| t.elapsed() > self.stall) {
                state = CameraState::Degraded {
                    reason: format!("no frame for more than {} s", self.stall.as_secs()),
                };
            }
            CameraStatus {
                state,
                frames: h.frames,
                dropped_frames: h.dropped,
                decoded: h.decoded,
                reopens: h.reopens,
            }
        })
    }

    pub fn is_ok(&self) -> bool {
        self.status().state == CameraState::Ok
    }
}

/// One-slot hand-off: `put` overwrites an untaken frame (counted as dropped).
struct Slot {
    frame: Mutex<(Option<RawFrame>, bool)>,
    cv: Condvar,
}

impl Slot {
    fn new() -> Self {
        Slot {
            frame: Mutex::new((None, false)),
            cv: Condvar::new(),
        }
    }
    /// Returns the buffer of a replaced (dropped) frame for reuse.
    fn put(&self, f: RawFrame) -> Option<RawFrame> {
        let mut g = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        let old = g.0.replace(f);
        self.cv.notify_one();
        old
    }
    fn close(&self) {
        let mut g = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        g.1 = true;
        self.cv.notify_all();
    }
    /// Waits up to `timeout` for a frame; None when closed or timed out.
    fn take(&self, timeout: Duration) -> Option<RawFrame> {
        let g = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        let (mut g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |(f, closed)| f.is_none() && !*closed)
            .unwrap_or_else(|p| p.into_inner());
        g.0.take()
    }
}

fn sleep_cancellable(token: &CancellationToken, d: Duration) {
    let end = Instant::now() + d;
    while !token.is_cancelled() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// The capture loop (runs on its own thread until `token` is cancelled).
fn capture_loop(
    mut grabber: Box<dyn FrameGrabber>,
    cfg: &CameraConfig,
    slot: &Slot,
    health: &CameraHealth,
    token: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(cfg.retry_initial_ms);
    let max_backoff = Duration::from_secs(cfg.retry_max_s);
    let mut spare = RawFrame::default();
    let mut first = true;
    while !token.is_cancelled() {
        if !first {
            health.with(|h| h.reopens += 1);
        }
        first = false;
        if let Err(e) = grabber.open() {
            health.set(match e {
                CameraError::Absent { .. } => CameraState::Absent,
                e => CameraState::Degraded {
                    reason: format!("{e}; retrying in {} ms", backoff.as_millis()),
                },
            });
            sleep_cancellable(token, backoff);
            backoff = (backoff * 2).min(max_backoff);
            continue;
        }
        let mut failures = 0u32;
        let mut last_err = String::new();
        while !token.is_cancelled() {
            match grabber.grab(&mut spare) {
                Ok(()) => {
                    failures = 0;
                    backoff = Duration::from_millis(cfg.retry_initial_ms);
                    health.with(|h| {
                        h.frames += 1;
                        h.last_frame = Some(Instant::now());
                    });
                    health.set(CameraState::Ok);
                    let frame = std::mem::take(&mut spare);
                    if let Some(old) = slot.put(frame) {
                        health.with(|h| h.dropped += 1);
                        spare = old;
                    }
                }
                Err(e) => {
                    failures += 1;
                    last_err = e.to_string();
                    if failures >= cfg.max_consecutive_failures {
                        break;
                    }
                }
            }
        }
        grabber.close();
        if token.is_cancelled() {
            break;
        }
        health.set(CameraState::Degraded {
            reason: format!("{failures} consecutive frame failures ({last_err}); reopening"),
        });
        sleep_cancellable(token, backoff);
        backoff = (backoff * 2).min(max_backoff);
    }
    slot.close();
    health.set(CameraState::Stopped);
}

/// What the decode thread does with results.
pub struct DecodeTargets {
    pub sink: ScanSink,
    /// Photo evidence (None = no photos).
    pub photos: Option<(PhotoSender, Duration)>,
    /// School-local date for photo folders.
    pub today: Arc<dyn Fn() -> chrono::NaiveDate + Send + Sync>,
}

fn decode_loop(
    mut decoder: Box<dyn QrDecoder>,
    cfg: &CameraConfig,
    slot: &Slot,
    health: &CameraHealth,
    targets: &DecodeTargets,
    token: &CancellationToken,
) {
    let mut luma = LumaFrame::empty();
    let mut last: Option<(Vec<u8>, Instant)> = None;
    let repeat = Duration::from_millis(cfg.repeat_suppress_ms);
    // evidence window in progress: (deadline, picker, job template)
    let mut window: Option<(Instant, SharpestFrame, RawScan)> = None;
    let mut convert_errors = 0u64;
    let mut decoder_panics = 0u64;
    while !token.is_cancelled() {
        let Some(raw) = slot.take(Duration::from_millis(200)) else {
            if let Some((deadline, _, _)) = &window
                && Instant::now() >= *deadline
            {
                finish_window(window.take(), targets);
            }
            continue;
        };
        if let Err(e) = raw.to_luma(&mut luma) {
            convert_errors += 1;
            if convert_errors.is_power_of_two() {
                tracing::warn!(target: "camera", error = %e, count = convert_errors, "frame conversion failed");
            }
            continue;
        }
        if let Some((deadline, picker, _)) = &mut window {
            picker.offer(&luma);
            if Instant::now() >= *deadline {
                finish_window(window.take(), targets);
            }
        }
        // A decoder bug must not stop the camera: a panicking frame is
        // skipped and counted.
        let found = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoder.decode(&luma)
        })) {
            Ok(found) => found,
            Err(_) => {
                decoder_panics += 1;
                if decoder_panics.is_power_of_two() {
                    tracing::error!(target: "camera", count = decoder_panics, "QR decoder panicked on a frame; frame skipped");
                }
                continue;
            }
        };
        for d in found {
            let fresh = match &last {
                Some((p, at)) => *p != d.payload || at.elapsed() >= repeat,
                None => true,
            };
            if !fresh {
                continue;
            }
            last = Some((d.payload.clone(), Instant::now()));
            health.with(|h| h.decoded += 1);
            let scan = RawScan::now(d.payload, SourceKind::Camera);
            match targets.sink.try_send(scan.clone()) {
                Ok(()) => {
                    if let Some((_, dur)) = &targets.photos
                        && window.is_none()
                    {
                        let mut picker = SharpestFrame::default();
                        picker.offer(&luma);
                        window = Some((Instant::now() + *dur, picker, scan));
                    }
                }
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(target: "camera", reason = "pipeline busy", "scan_dropped");
                    last = None;
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}

fn finish_window(w: Option<(Instant, SharpestFrame, RawScan)>, targets: &DecodeTargets) {
    let (Some((_, mut picker, scan)), Some((photos, _))) = (w, &targets.photos) else {
        return;
    };
    if let Some(frame) = picker.take() {
        photos.offer(PhotoJob {
            frame,
            seen_at: scan.seen_at,
            payload: scan.payload,
            date: (targets.today)(),
        });
    }
}

/// The camera as a [`ScanSource`].
pub struct CameraSource {
    cfg: CameraConfig,
    decoder: DecoderConfig,
    grabber: Option<Box<dyn FrameGrabber>>,
    health: CameraHealth,
    photos: Option<PhotoSender>,
    photo_window: Duration,
    today: Arc<dyn Fn() -> chrono::NaiveDate + Send + Sync>,
}

impl CameraSource {
    /// A camera on the configured V4L2 device, or the demo stream when
    /// `cfg.demo` is set.
    pub fn new(cfg: CameraConfig, decoder: DecoderConfig) -> Result<Self, CameraError> {
        let grabber = grabber_for(&cfg)?;
        Ok(Self::with_grabber(cfg, decoder, grabber))
    }

    pub fn with_grabber(
        cfg: CameraConfig,
        decoder: DecoderConfig,
        grabber: Box<dyn FrameGrabber>,
    ) -> Self {
        let health = CameraHealth::new(Duration::from_secs(cfg.stall_s));
        CameraSource {
            cfg,
            decoder,
            grabber: Some(grabber),
            health,
            photos: None,
            photo_window: Duration::ZERO,
            today: Arc::new(|| chrono::Local::now().date_naive()),
        }
    }

    /// Enables face photos: after each scan the sharpest frame of `window`
    /// goes to `photos`.
    pub fn with_photos(mut self, photos: PhotoSender, window: Duration) -> Self {
        self.photos = Some(photos);
        self.photo_window = window;
        self
    }

    /// Overrides how the photo folder date is computed (school timezone).
    pub fn with_date_fn(mut self, today: Arc<dyn Fn() -> chrono::NaiveDate + Send + Sync>) -> Self {
        self.today = today;
        self
    }

    pub fn health(&self) -> CameraHealth {
        self.health.clone()
    }
}

impl ScanSource for CameraSource {
    fn name(&self) -> &str {
        "camera"
    }

    fn run(
        mut self: Box<Self>,
        sink: ScanSink,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let fail = |message: String| SourceError::Failed {
                source_name: "camera".into(),
                message,
            };
            self.cfg.validate().map_err(|e| fail(e.to_string()))?;
            self.decoder.validate().map_err(|e| fail(e.to_string()))?;
            let grabber = self
                .grabber
                .take()
                .ok_or_else(|| fail("camera source started twice".into()))?;
            let slot = Arc::new(Slot::new());
            // The threads stop on this token; it is cancelled on shutdown and
            // when the source is dropped.
            let token = shutdown.child_token();
            let _guard = token.clone().drop_guard();

            let capture = {
                let (cfg, slot, health, token) = (
                    self.cfg.clone(),
                    slot.clone(),
                    self.health.clone(),
                    token.clone(),
                );
                std::thread::Builder::new()
                    .name("camera-capture".into())
                    .spawn(move || capture_loop(grabber, &cfg, &slot, &health, &token))
                    .map_err(|e| fail(format!("starting capture thread: {e}")))?
            };
            let decode = {
                let (cfg, slot, health, token) = (
                    self.cfg.clone(),
                    slot.clone(),
                    self.health.clone(),
                    token.clone(),
                );
                let decoder = self.decoder.build();
                let targets = DecodeTargets {
                    sink,
                    photos: self.photos.clone().map(|p| (p, self.photo_window)),
                    today: self.today.clone(),
                };
                std::thread::Builder::new()
                    .name("camera-decode".into())
                    .spawn(move || decode_loop(decoder, &cfg, &slot, &health, &targets, &token))
                    .map_err(|e| fail(format!("starting decode thread: {e}")))?
            };
            tracing::info!(target: "camera", device = %self.cfg.device.display(),
                demo = self.cfg.demo, decoder = %self.decoder.build().name(), "camera source started");
            token.cancelled().await;
            slot.close();
            // join off the runtime
            let _ = tokio::task::spawn_blocking(move || {
                let _ = capture.join();
                let _ = decode.join();
            })
            .await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;

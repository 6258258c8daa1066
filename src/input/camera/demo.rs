//! The demo camera: a generated stream that shows the QR code of one sample
//! student after another (a couple of seconds each, with empty frames in
//! between), paced at the configured frame rate.

use std::time::{Duration, Instant};

use super::{CameraConfig, CameraError, FrameGrabber, PixelFormat, RawFrame};
use crate::input::decode::LumaFrame;
use crate::input::decode::synth::{Class, FrameSpec, Size, render};

/// Student numbers of the demo roster.
pub fn sample_roster() -> Vec<String> {
    crate::demo::roster()
        .into_iter()
        .filter(|s| s.active)
        .map(|s| s.student_number.to_string())
        .collect()
}

/// Seconds a card is shown, then seconds of empty frames.
const SHOW: Duration = Duration::from_secs(2);
const GAP: Duration = Duration::from_secs(3);

pub struct DemoGrabber {
    width: u32,
    height: u32,
    period: Duration,
    payloads: Vec<String>,
    /// Rendered lazily: per payload three views (card moving a little).
    cache: Vec<Option<[LumaFrame; 3]>>,
    empty: Option<LumaFrame>,
    started: Option<Instant>,
    next_at: Option<Instant>,
    frame_no: u64,
}

impl DemoGrabber {
    pub fn new(cfg: &CameraConfig, payloads: Vec<String>) -> Self {
        let n = payloads.len();
        DemoGrabber {
            width: cfg.width,
            height: cfg.height,
            period: Duration::from_secs_f64(1.0 / f64::from(cfg.fps.max(1))),
            payloads,
            cache: (0..n).map(|_| None).collect(),
            empty: None,
            started: None,
            next_at: None,
            frame_no: 0,
        }
    }

    fn spec(&self, class: Class, size: Size, payload: Option<String>, seed: u64) -> FrameSpec {
        FrameSpec {
            width: self.width,
            height: self.height,
            class,
            size,
            payload,
            seed,
        }
    }

    /// The frame to show at `elapsed` since start.
    fn frame_at(&mut self, elapsed: Duration) -> &LumaFrame {
        let cycle = SHOW + GAP;
        let k = (elapsed.as_millis() / cycle.as_millis()) as usize;
        let within = elapsed.as_millis() % cycle.as_millis();
        if self.payloads.is_empty() || within >= SHOW.as_millis() {
            if self.empty.is_none() {
                self.empty = Some(render(&self.spec(Class::Empty, Size::Mid, None, 1)));
            }
            return self.empty.get_or_insert_with(LumaFrame::empty);
        }
        let i = k % self.payloads.len();
        if self.cache[i].is_none() {
            let p = self.payloads[i].clone();
            let seed = 500 + i as u64 * 10;
            self.cache[i] = Some([
                render(&self.spec(Class::Clean, Size::Near, Some(p.clone()), seed)),
                render(&self.spec(Class::Rotated, Size::Near, Some(p.clone()), seed + 1)),
                render(&self.spec(Class::Perspective, Size::Mid, Some(p), seed + 2)),
            ]);
        }
        let view = (self.frame_no / 5 % 3) as usize;
        match &self.cache[i] {
            Some(frames) => &frames[view],
            None => self.empty.get_or_insert_with(LumaFrame::empty),
        }
    }
}

impl FrameGrabber for DemoGrabber {
    fn open(&mut self) -> Result<(), CameraError> {
        self.started.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn grab(&mut self, out: &mut RawFrame) -> Result<(), CameraError> {
        let now = Instant::now();
        if let Some(t) = self.next_at
            && t > now
        {
            std::thread::sleep(t - now);
        }
        self.next_at = Some(self.next_at.unwrap_or(now).max(now - self.period) + self.period);
        let started = *self.started.get_or_insert(now);
        let elapsed = started.elapsed();
        let (w, h) = (self.width, self.height);
        let frame = self.frame_at(elapsed);
        out.format = Some(PixelFormat::Grey);
        out.width = w;
        out.height = h;
        out.stride = 0;
        out.data.clear();
        out.data.extend_from_slice(frame.data());
        self.frame_no += 1;
        Ok(())
    }

    fn close(&mut self) {}

    fn describe(&self) -> String {
        format!(
            "demo stream: Grey {}x{}, {} sample cards",
            self.width,
            self.height,
            self.payloads.len()
        )
    }
}

//! V4L2 capture through the `v4l` crate (mmap streaming).

use std::path::{Path, PathBuf};
use std::time::Duration;

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::detect::{self, SysfsVideoNodes, VideoNodes};
use super::{CameraConfig, CameraError, FrameGrabber, PixelFormat, RawFrame};

pub struct V4lGrabber {
    cfg: CameraConfig,
    /// Lists the nodes for `device = "auto"`.
    nodes: Box<dyn VideoNodes>,
    /// The device in use: the configured path, or the detected one.
    current: PathBuf,
    // Declared before `device`: the stream must be dropped first.
    stream: Option<Stream<'static>>,
    device: Option<Device>,
    negotiated: Option<(PixelFormat, u32, u32, usize)>,
}

fn fourcc(f: PixelFormat) -> FourCC {
    match f {
        PixelFormat::Mjpeg => FourCC::new(b"MJPG"),
        PixelFormat::Yuyv => FourCC::new(b"YUYV"),
        PixelFormat::Grey => FourCC::new(b"GREY"),
    }
}

fn from_fourcc(f: FourCC) -> Option<PixelFormat> {
    match &f.repr {
        b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
        b"YUYV" => Some(PixelFormat::Yuyv),
        b"GREY" => Some(PixelFormat::Grey),
        _ => None,
    }
}

impl V4lGrabber {
    pub fn new(cfg: &CameraConfig) -> Self {
        Self::with_nodes(cfg, Box::new(SysfsVideoNodes::default()))
    }

    /// With another node lister (tests).
    pub fn with_nodes(cfg: &CameraConfig, nodes: Box<dyn VideoNodes>) -> Self {
        V4lGrabber {
            cfg: cfg.clone(),
            nodes,
            current: cfg.device.clone(),
            stream: None,
            device: None,
            negotiated: None,
        }
    }

    fn open_err(&self, message: String) -> CameraError {
        CameraError::Open {
            path: self.current.display().to_string(),
            message,
        }
    }

    /// The device to open now: detected again at every open in auto mode,
    /// so a camera plugged in (or replugged elsewhere) is found.
    fn resolve(&mut self) -> Result<(), CameraError> {
        if self.cfg.device != Path::new(detect::AUTO) {
            return Ok(());
        }
        let nodes = self.nodes.nodes();
        let Some(found) = detect::choose(&nodes) else {
            self.current = self.cfg.device.clone();
            return Err(CameraError::Absent {
                message: format!("no V4L2 capture device among {} video node(s)", nodes.len()),
            });
        };
        if found.dev != self.current {
            tracing::info!(target: "camera", device = %found.dev.display(), driver = %found.driver,
                bus = %found.bus, "camera detected");
        }
        self.current = found.dev.clone();
        Ok(())
    }

    /// What the driver agreed to: format, width, height, stride.
    pub fn negotiated(&self) -> Option<(PixelFormat, u32, u32, usize)> {
        self.negotiated
    }
}

impl FrameGrabber for V4lGrabber {
    fn open(&mut self) -> Result<(), CameraError> {
        self.close();
        self.resolve()?;
        let dev = Device::with_path(&self.current).map_err(|e| self.open_err(e.to_string()))?;
        let caps = dev
            .query_caps()
            .map_err(|e| self.open_err(format!("query capabilities: {e}")))?;
        // Try the configured format first, then the other ones we can convert.
        let mut order = vec![self.cfg.format];
        for f in [PixelFormat::Mjpeg, PixelFormat::Yuyv, PixelFormat::Grey] {
            if !order.contains(&f) {
                order.push(f);
            }
        }
        let mut chosen = None;
        for want in order {
            let mut fmt = dev
                .format()
                .map_err(|e| self.open_err(format!("get format: {e}")))?;
            fmt.width = self.cfg.width;
            fmt.height = self.cfg.height;
            fmt.fourcc = fourcc(want);
            let got = match dev.set_format(&fmt) {
                Ok(g) => g,
                Err(e) => {
                    tracing::debug!(target: "camera", ?want, error = %e, "format refused");
                    continue;
                }
            };
            if let Some(pf) = from_fourcc(got.fourcc) {
                if pf != self.cfg.format {
                    tracing::warn!(target: "camera", wanted = ?self.cfg.format, got = ?pf,
                        "configured pixel format not offered; using another one");
                }
                if (got.width, got.height) != (self.cfg.width, self.cfg.height) {
                    tracing::warn!(target: "camera", width = got.width, height = got.height,
                        "driver chose a different resolution");
                }
                chosen = Some((pf, got.width, got.height, got.stride as usize));
                break;
            }
        }
        let Some(chosen) = chosen else {
            return Err(self.open_err(format!(
                "{} ({}) offers none of MJPEG, YUYV, GREY",
                caps.card, caps.driver
            )));
        };
        if let Ok(params) = dev.params() {
            let mut p = params;
            p.interval = v4l::Fraction::new(1, self.cfg.fps);
            if let Err(e) = dev.set_params(&p) {
                tracing::debug!(target: "camera", error = %e, "frame rate not set");
            }
        }
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, self.cfg.buffers)
            .map_err(|e| self.open_err(format!("mmap buffers: {e}")))?;
        stream.set_timeout(Duration::from_millis(self.cfg.frame_timeout_ms));
        tracing::info!(target: "camera", card = %caps.card, driver = %caps.driver,
            format = ?chosen.0, width = chosen.1, height = chosen.2, "camera opened");
        self.negotiated = Some(chosen);
        self.stream = Some(stream);
        self.device = Some(dev);
        Ok(())
    }

    fn grab(&mut self, out: &mut RawFrame) -> Result<(), CameraError> {
        let path = self.current.display().to_string();
        let (Some(stream), Some((pf, w, h, stride))) = (self.stream.as_mut(), self.negotiated)
        else {
            return Err(CameraError::Grab {
                path,
                message: "not open".into(),
            });
        };
        let (buf, meta) = stream.next().map_err(|e| CameraError::Grab {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let used = (meta.bytesused as usize).min(buf.len());
        if used == 0 {
            return Err(CameraError::Grab {
                path,
                message: "empty buffer".into(),
            });
        }
        out.format = Some(pf);
        out.width = w;
        out.height = h;
        out.stride = stride;
        out.data.clear();
        // The one copy: the mmap buffer goes back to the driver.
        out.data.extend_from_slice(&buf[..used]);
        Ok(())
    }

    fn close(&mut self) {
        self.stream = None;
        self.device = None;
    }

    fn describe(&self) -> String {
        match self.negotiated {
            Some((f, w, h, stride)) => {
                let mut d = format!(
                    "{}: {f:?} {w}x{h} (bytes per line {stride})",
                    self.current.display()
                );
                // An admin checking a camera should see a fallback at once.
                if f != self.cfg.format {
                    d.push_str(&format!("; {:?} is not offered", self.cfg.format));
                }
                if (w, h) != (self.cfg.width, self.cfg.height) {
                    d.push_str(&format!(
                        "; {}x{} is not offered",
                        self.cfg.width, self.cfg.height
                    ));
                }
                d
            }
            None => format!("{}: not open", self.current.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::camera::detect::FixtureVideoNodes;
    use crate::input::fixtures::materialize;

    fn grabber(fixture: &str, dir: &Path, device: &str) -> (tempfile::TempDir, V4lGrabber) {
        let tree = materialize(fixture);
        let nodes = FixtureVideoNodes {
            class_dir: tree.path().join("class/video4linux"),
            dev_dir: dir.to_path_buf(),
        };
        let cfg = CameraConfig {
            enabled: true,
            device: device.into(),
            ..Default::default()
        };
        (tree, V4lGrabber::with_nodes(&cfg, Box::new(nodes)))
    }

    #[test]
    fn auto_without_a_camera_is_absent_not_an_open_error() {
        let dev = tempfile::tempdir().unwrap();
        let (_t, mut g) = grabber("pi4-no-camera.tree", dev.path(), "auto");
        let e = g.open().unwrap_err();
        assert!(matches!(e, CameraError::Absent { .. }), "{e}");
        assert!(e.to_string().contains("11 video node"), "{e}");
    }

    #[test]
    fn auto_opens_the_detected_node_and_a_fixed_path_is_kept() {
        let dev = tempfile::tempdir().unwrap();
        let (_t, mut g) = grabber("pi4-usb-webcam.tree", dev.path(), "auto");
        // The detected node is tried (it does not exist in the tempdir).
        match g.open().unwrap_err() {
            CameraError::Open { path, .. } => {
                assert_eq!(path, dev.path().join("video0").display().to_string())
            }
            e => panic!("{e}"),
        }
        let fixed = dev.path().join("by-id/usb-cam-video-index0");
        let (_t, mut g) = grabber("pi4-usb-webcam.tree", dev.path(), fixed.to_str().unwrap());
        match g.open().unwrap_err() {
            CameraError::Open { path, .. } => assert_eq!(path, fixed.display().to_string()),
            e => panic!("{e}"),
        }
    }
}

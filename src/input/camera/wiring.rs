//! One call for the daemon's wiring (src/app): builds the camera and HID
//! scanner sources, the LED feedback and the photo worker from their config
//! sections.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;

use super::{CameraConfig, CameraHealth, CameraSource};
use crate::evidence::{EvidenceConfig, PhotoLinker, PhotoStore, PhotoWorker};
use crate::feedback::Feedback;
use crate::feedback::leds::{LedFeedback, LedsConfig};
use crate::input::ScanSource;
use crate::input::decode::DecoderConfig;
use crate::input::hid::{HidScanner, HidScannerConfig, ScannerStatus};

/// The config sections owned by the inputs area.
#[derive(Clone, Copy)]
pub struct InputsSettings<'a> {
    pub camera: &'a CameraConfig,
    pub decoder: &'a DecoderConfig,
    pub hid_scanner: &'a HidScannerConfig,
    pub evidence: &'a EvidenceConfig,
    pub leds: &'a LedsConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    #[error(transparent)]
    Camera(#[from] super::CameraConfigError),
    #[error(transparent)]
    Decoder(#[from] crate::input::decode::DecoderConfigError),
    #[error(transparent)]
    Hid(#[from] crate::input::hid::HidConfigError),
    #[error(transparent)]
    Evidence(#[from] crate::evidence::EvidenceConfigError),
    #[error(transparent)]
    Leds(#[from] crate::feedback::leds::LedsConfigError),
    #[error("camera: {0}")]
    Open(#[from] super::CameraError),
    #[error("starting the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl InputsSettings<'_> {
    /// Validates every section (errors name the key).
    pub fn validate(&self) -> Result<(), InputsError> {
        self.camera.validate()?;
        self.decoder.validate()?;
        self.hid_scanner.validate()?;
        self.evidence.validate()?;
        self.leds.validate()?;
        Ok(())
    }
}

/// What the daemon starts and watches.
pub struct KioskInputs {
    /// Camera and/or HID scanner, as configured.
    pub sources: Vec<Box<dyn ScanSource>>,
    /// LED/buzzer feedback, to fan out next to the log feedback.
    pub feedback: Option<Arc<dyn Feedback>>,
    /// For /health: `degraded` with the reason while the camera is down.
    pub camera_health: Option<CameraHealth>,
    /// For /health: whether the HID scanner is connected.
    pub hid_status: Option<ScannerStatus>,
    /// Keep it alive for the daemon's lifetime; `join` after the sources
    /// stopped to let queued photos finish.
    pub photo_worker: Option<PhotoWorker>,
}

/// Builds the configured inputs. `attach` links a saved photo to its record
/// (None: photos are saved but not linked). `today` gives the school-local
/// date for photo folders (None: the system's local date).
pub fn build(
    s: InputsSettings<'_>,
    data_dir: &Path,
    attach: Option<Box<dyn PhotoLinker>>,
    today: Option<Arc<dyn Fn() -> NaiveDate + Send + Sync>>,
) -> Result<KioskInputs, InputsError> {
    s.validate()?;
    let mut out = KioskInputs {
        sources: Vec::new(),
        feedback: None,
        camera_health: None,
        hid_status: None,
        photo_worker: None,
    };
    if s.camera.enabled {
        let mut cam = CameraSource::new(s.camera.clone(), s.decoder.clone())?;
        if let Some(t) = today {
            cam = cam.with_date_fn(t);
        }
        if s.evidence.enabled {
            let store = PhotoStore::new(data_dir, s.evidence.clone());
            let started = match attach {
                Some(linker) => PhotoWorker::start_linked(store, 2, linker),
                None => PhotoWorker::start(
                    store,
                    2,
                    Box::new(
                        |p| tracing::debug!(target: "evidence", path = %p.path.display(), "photo not linked (no store hook)"),
                    ),
                ),
            };
            let worker = started.map_err(|source| InputsError::Thread {
                what: "photo",
                source,
            })?;
            cam = cam.with_photos(worker.sender(), Duration::from_millis(s.evidence.window_ms));
            out.photo_worker = Some(worker);
        }
        out.camera_health = Some(cam.health());
        out.sources.push(Box::new(cam));
    }
    if s.hid_scanner.enabled {
        let scanner = HidScanner::new(s.hid_scanner.clone());
        out.hid_status = Some(scanner.status());
        out.sources.push(Box::new(scanner));
    }
    if s.leds.enabled {
        let leds = LedFeedback::start(s.leds.clone()).map_err(|source| InputsError::Thread {
            what: "LED",
            source,
        })?;
        out.feedback = Some(Arc::new(leds));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_only_what_is_enabled() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cam, dec, hid, ev, leds) = (
            CameraConfig::default(),
            DecoderConfig::default(),
            HidScannerConfig::default(),
            EvidenceConfig::default(),
            LedsConfig::default(),
        );
        let s = InputsSettings {
            camera: &cam,
            decoder: &dec,
            hid_scanner: &hid,
            evidence: &ev,
            leds: &leds,
        };
        let k = build(s, dir.path(), None, None).expect("defaults: nothing enabled");
        assert!(k.sources.is_empty() && k.feedback.is_none() && k.camera_health.is_none());
        assert!(k.hid_status.is_none());

        let cam = CameraConfig {
            enabled: true,
            demo: true,
            ..Default::default()
        };
        let hid = HidScannerConfig {
            enabled: true,
            device_name: Some("scanner".into()),
            ..Default::default()
        };
        let leds = LedsConfig {
            enabled: true,
            sysfs_root: dir.path().join("leds"),
            green: Some("g".into()),
            ..Default::default()
        };
        let s = InputsSettings {
            camera: &cam,
            decoder: &dec,
            hid_scanner: &hid,
            evidence: &ev,
            leds: &leds,
        };
        let k = build(s, dir.path(), None, None).expect("all enabled");
        let names: Vec<&str> = k.sources.iter().map(|s| s.name()).collect();
        assert_eq!(names, vec!["camera", "hid_scanner"]);
        assert!(k.feedback.is_some() && k.camera_health.is_some() && k.photo_worker.is_some());
        assert!(k.hid_status.is_some());

        let bad = HidScannerConfig {
            enabled: true,
            ..Default::default()
        };
        let s = InputsSettings {
            hid_scanner: &bad,
            ..s
        };
        let e = build(s, dir.path(), None, None).err().expect("invalid");
        assert!(e.to_string().starts_with("hid_scanner"));
    }
}

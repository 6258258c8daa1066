//! Face photo evidence: the sharpest camera frame of a short window after an
//! accepted scan, saved as JPEG under `<data_dir>/photos/YYYY-MM-DD/`.
//!
//! Nothing here runs on the acknowledgement path: the camera hands a
//! [`PhotoJob`] to a [`PhotoWorker`] thread through a small bounded queue
//! (a full queue drops the photo, never the scan). The worker first asks its
//! [`PhotoLinker`] whether the scan was recorded (the pipeline's `Recorded`
//! event, see [`attach`]); only then does it check free space, encode and
//! write atomically (temporary file, fsync, rename, fsync of the folder) and
//! link the photo to the record by its id, in its own transaction. Nothing
//! is encoded for a duplicate or rejected scan.

pub mod attach;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::input::decode::LumaFrame;

fn default_true() -> bool {
    true
}
fn default_window_ms() -> u64 {
    600
}
fn default_quality() -> u8 {
    85
}
fn default_min_free_percent() -> f64 {
    5.0
}
fn default_min_free_mb() -> u64 {
    100
}
fn default_warn_free_percent() -> f64 {
    10.0
}

/// `evidence` section of the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// After a scan, frames of this window compete for the sharpest.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    #[serde(default = "default_quality")]
    pub jpeg_quality: u8,
    /// Photos are skipped when free space is below this share of the disk...
    #[serde(default = "default_min_free_percent")]
    pub min_free_percent: f64,
    /// ...or below this many MiB.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
    /// A warning is logged below this share (photos still saved).
    #[serde(default = "default_warn_free_percent")]
    pub warn_free_percent: f64,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            enabled: true,
            window_ms: default_window_ms(),
            jpeg_quality: default_quality(),
            min_free_percent: default_min_free_percent(),
            min_free_mb: default_min_free_mb(),
            warn_free_percent: default_warn_free_percent(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvidenceConfigError {
    #[error("evidence.window_ms: {0} is outside 0..=5000")]
    Window(u64),
    #[error("evidence.jpeg_quality: {0} is outside 30..=100")]
    Quality(u8),
    #[error("evidence.min_free_percent: {0} is outside 0..=90")]
    MinFree(f64),
    #[error("evidence.warn_free_percent: {0} must be between min_free_percent and 95")]
    WarnFree(f64),
}

impl EvidenceConfig {
    pub fn validate(&self) -> Result<(), EvidenceConfigError> {
        if self.window_ms > 5000 {
            return Err(EvidenceConfigError::Window(self.window_ms));
        }
        if !(30..=100).contains(&self.jpeg_quality) {
            return Err(EvidenceConfigError::Quality(self.jpeg_quality));
        }
        if !(0.0..=90.0).contains(&self.min_free_percent) {
            return Err(EvidenceConfigError::MinFree(self.min_free_percent));
        }
        if !(self.min_free_percent..=95.0).contains(&self.warn_free_percent) {
            return Err(EvidenceConfigError::WarnFree(self.warn_free_percent));
        }
        Ok(())
    }
}

/// Focus measure: mean squared 4-neighbour Laplacian on every second pixel
/// of every second row (a quarter of the pixels; ~1 ms at 720p).
pub fn sharpness(frame: &LumaFrame) -> f64 {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let d = frame.data();
    let mut acc = 0u64;
    let mut n = 0u64;
    for y in (1..h - 1).step_by(2) {
        let row = y * w;
        for x in (1..w - 1).step_by(2) {
            let c = d[row + x] as i32 * 4;
            let l = c
                - d[row + x - 1] as i32
                - d[row + x + 1] as i32
                - d[row - w + x] as i32
                - d[row + w + x] as i32;
            acc += (l * l) as u64;
            n += 1;
        }
    }
    acc as f64 / n as f64
}

/// Keeps the sharpest frame offered; copies a frame only when it wins, into
/// a reused buffer.
#[derive(Debug, Default)]
pub struct SharpestFrame {
    best: Option<(f64, LumaFrame)>,
}

impl SharpestFrame {
    pub fn offer(&mut self, frame: &LumaFrame) {
        let s = sharpness(frame);
        match &mut self.best {
            Some((score, kept)) if s > *score => {
                *score = s;
                kept.clone_from(frame);
            }
            Some(_) => {}
            None => self.best = Some((s, frame.clone())),
        }
    }
    pub fn score(&self) -> Option<f64> {
        self.best.as_ref().map(|b| b.0)
    }
    pub fn take(&mut self) -> Option<LumaFrame> {
        self.best.take().map(|b| b.1)
    }
}

/// A photo to save for one scan.
#[derive(Debug, Clone)]
pub struct PhotoJob {
    pub frame: LumaFrame,
    /// `seen_at` of the scan (the same value as in its [`crate::input::RawScan`]).
    pub seen_at: DateTime<Utc>,
    /// The scan's payload (to find the record; never logged or in file names).
    pub payload: Vec<u8>,
    /// School-local date: the folder name.
    pub date: NaiveDate,
}

/// A photo written and durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedPhoto {
    pub seen_at: DateTime<Utc>,
    pub payload: Vec<u8>,
    pub path: PathBuf,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error(
        "photo skipped: {free_mb} MiB ({free_percent:.1} %) free on {path}, below the configured minimum"
    )]
    LowSpace {
        path: String,
        free_mb: u64,
        free_percent: f64,
    },
    #[error("photo skipped: checking free space on {path}: {source}")]
    Space {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding JPEG: {0}")]
    Encode(String),
    #[error("writing photo {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Free space of the file system holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub avail_bytes: u64,
    pub total_bytes: u64,
}

pub trait SpaceProbe: Send + Sync {
    fn space(&self, path: &Path) -> std::io::Result<Space>;
}

/// statvfs(2).
#[derive(Debug, Default)]
pub struct StatvfsProbe;

impl SpaceProbe for StatvfsProbe {
    fn space(&self, path: &Path) -> std::io::Result<Space> {
        let s = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
        Ok(Space {
            avail_bytes: s.f_bavail.saturating_mul(s.f_frsize),
            total_bytes: s.f_blocks.saturating_mul(s.f_frsize),
        })
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A written, fsynced temporary file not yet visible under its final name.
#[derive(Debug)]
pub struct PendingFile {
    tmp: PathBuf,
    dest: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PhotoError + '_ {
    move |source| PhotoError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), PhotoError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes `bytes` to a hidden temporary file next to `dest` and fsyncs it.
pub fn write_pending(dest: &Path, bytes: &[u8]) -> Result<PendingFile, PhotoError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("photo");
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let r = f.write_all(bytes).and_then(|_| f.sync_all());
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    Ok(PendingFile {
        tmp,
        dest: dest.to_path_buf(),
    })
}

impl PendingFile {
    /// Renames into place and fsyncs the folder: after this returns the
    /// photo survives a power cut.
    pub fn commit(self) -> Result<PathBuf, PhotoError> {
        if let Err(e) = fs::rename(&self.tmp, &self.dest) {
            let _ = fs::remove_file(&self.tmp);
            return Err(io_err(&self.dest)(e));
        }
        fsync_dir(self.dest.parent().unwrap_or(Path::new(".")))?;
        Ok(self.dest)
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<PathBuf, PhotoError> {
    write_pending(dest, bytes)?.commit()
}

/// Encodes a luma frame as a greyscale JPEG.
pub fn encode_jpeg(frame: &LumaFrame, quality: u8) -> Result<Vec<u8>, PhotoError> {
    let mut out = Vec::with_capacity(frame.data().len() / 8);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(
            frame.data(),
            frame.width(),
            frame.height(),
            image::ExtendedColorType::L8,
        )
        .map_err(|e| PhotoError::Encode(e.to_string()))?;
    Ok(out)
}

/// Saves photos under `<data_dir>/photos/`.
pub struct PhotoStore {
    root: PathBuf,
    cfg: EvidenceConfig,
    probe: Box<dyn SpaceProbe>,
}

impl PhotoStore {
    pub fn new(data_dir: &Path, cfg: EvidenceConfig) -> Self {
        Self::with_probe(data_dir, cfg, Box::new(StatvfsProbe))
    }

    pub fn with_probe(data_dir: &Path, cfg: EvidenceConfig, probe: Box<dyn SpaceProbe>) -> Self {
        PhotoStore {
            root: data_dir.join("photos"),
            cfg,
            probe,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Errors with [`PhotoError::LowSpace`] when a photo must be skipped.
    pub fn check_space(&self) -> Result<(), PhotoError> {
        // The photos folder may not exist yet: measure the nearest ancestor.
        let mut p = self.root.as_path();
        while !p.exists() {
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        let s = self.probe.space(p).map_err(|source| PhotoError::Space {
            path: p.display().to_string(),
            source,
        })?;
        let free_mb = s.avail_bytes / (1024 * 1024);
        let free_percent = if s.total_bytes == 0 {
            0.0
        } else {
            100.0 * s.avail_bytes as f64 / s.total_bytes as f64
        };
        if free_percent < self.cfg.min_free_percent || free_mb < self.cfg.min_free_mb {
            return Err(PhotoError::LowSpace {
                path: p.display().to_string(),
                free_mb,
                free_percent,
            });
        }
        if free_percent < self.cfg.warn_free_percent {
            tracing::warn!(target: "evidence", free_mb, free_percent, "disk space is getting low");
        }
        Ok(())
    }

    /// File name: `HHMMSS-mmm-<first 8 hex of sha256(payload)>.jpg` (the
    /// payload itself is a credential and stays out of paths).
    pub fn path_for(&self, job: &PhotoJob) -> PathBuf {
        let digest = Sha256::digest(&job.payload);
        self.root
            .join(job.date.format("%Y-%m-%d").to_string())
            .join(format!(
                "{}-{}.jpg",
                job.seen_at.format("%H%M%S-%3f"),
                hex::encode(&digest[..4])
            ))
    }

    /// Checks space, encodes and writes atomically.
    pub fn save(&self, job: &PhotoJob) -> Result<SavedPhoto, PhotoError> {
        self.check_space()?;
        let jpeg = encode_jpeg(&job.frame, self.cfg.jpeg_quality)?;
        let dest = self.path_for(job);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            // make the new folders durable too
            fsync_dir(&self.root)?;
            if let Some(data_dir) = self.root.parent() {
                let _ = fsync_dir(data_dir);
            }
        }
        let path = write_atomic(&dest, &jpeg)?;
        Ok(SavedPhoto {
            seen_at: job.seen_at,
            payload: job.payload.clone(),
            path,
            bytes: jpeg.len() as u64,
        })
    }

    /// Removes temporary files left by a crash (hidden `.*.tmp-*` files).
    pub fn sweep_temp(&self) -> usize {
        let mut removed = 0;
        let Ok(days) = fs::read_dir(&self.root) else {
            return 0;
        };
        for day in days.flatten() {
            let Ok(files) = fs::read_dir(day.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.')
                    && name.contains(".tmp-")
                    && fs::remove_file(f.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// Called with each durable photo when photos are not linked to records
/// (tests, tools).
pub type AttachFn = Box<dyn FnMut(SavedPhoto) + Send>;

/// Whom a photo is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoFor {
    /// The record the scan created or completed.
    Record(uuid::Uuid),
    /// Saved without a record (no store hook).
    Unlinked,
}

/// Decides whether a photo is wanted and links it once saved. The daemon's
/// linker ([`attach::RecordLinker`]) follows the pipeline's events; a
/// failure there loses the link, never the record.
pub trait PhotoLinker: Send {
    /// Before anything is encoded: `None` when the scan was not recorded
    /// (duplicate, rejected, failed) or the record keeps an earlier photo.
    fn wanted(&mut self, job: &PhotoJob) -> Option<PhotoFor>;
    /// The photo is durable: link it.
    fn saved(&mut self, target: PhotoFor, photo: SavedPhoto);
}

/// Every photo saved, none linked: hands each to a callback.
struct Unlinked(AttachFn);

impl PhotoLinker for Unlinked {
    fn wanted(&mut self, _job: &PhotoJob) -> Option<PhotoFor> {
        Some(PhotoFor::Unlinked)
    }
    fn saved(&mut self, _target: PhotoFor, photo: SavedPhoto) {
        (self.0)(photo)
    }
}

/// The photo thread: receives jobs over a bounded queue and saves them.
pub struct PhotoWorker {
    tx: std::sync::mpsc::SyncSender<PhotoJob>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl PhotoWorker {
    /// Starts the thread saving every photo and handing it to `attach`;
    /// `queue` jobs may wait (further ones are dropped).
    pub fn start(store: PhotoStore, queue: usize, attach: AttachFn) -> std::io::Result<Self> {
        Self::start_linked(store, queue, Box::new(Unlinked(attach)))
    }

    /// Starts the thread; `linker` decides which photos are saved and
    /// links them.
    pub fn start_linked(
        store: PhotoStore,
        queue: usize,
        mut linker: Box<dyn PhotoLinker>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<PhotoJob>(queue.max(1));
        let handle = std::thread::Builder::new()
            .name("photo".into())
            .spawn(move || {
                let swept = store.sweep_temp();
                if swept > 0 {
                    tracing::info!(target: "evidence", swept, "removed temporary photo files left by a crash");
                }
                while let Ok(job) = rx.recv() {
                    let Some(target) = linker.wanted(&job) else {
                        tracing::debug!(target: "evidence", "photo not taken: the scan was not recorded");
                        continue;
                    };
                    let t = std::time::Instant::now();
                    match store.save(&job) {
                        Ok(saved) => {
                            tracing::info!(target: "evidence", path = %saved.path.display(),
                                bytes = saved.bytes, ms = t.elapsed().as_millis() as u64, "photo_saved");
                            linker.saved(target, saved);
                        }
                        Err(e) => tracing::warn!(target: "evidence", reason = %e, "photo_skipped"),
                    }
                }
            })?;
        Ok(PhotoWorker {
            tx,
            handle: Some(handle),
        })
    }

    /// A cloneable handle for producers.
    pub fn sender(&self) -> PhotoSender {
        PhotoSender(self.tx.clone())
    }

    /// Stops after the queued jobs are saved (all senders must be dropped).
    pub fn join(mut self) {
        drop(self.tx);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Producer side; never blocks.
#[derive(Clone)]
pub struct PhotoSender(std::sync::mpsc::SyncSender<PhotoJob>);

impl PhotoSender {
    /// Queues a job; returns false (and logs) when the queue is full.
    pub fn offer(&self, job: PhotoJob) -> bool {
        match self.0.try_send(job) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(target: "evidence", reason = "photo queue full or stopped", "photo_skipped");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;

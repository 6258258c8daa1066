use std::sync::{Arc, Mutex};

use super::*;
use crate::input::decode::synth::{Class, FrameSpec, Size, render};

struct FakeProbe(Space);
impl SpaceProbe for FakeProbe {
    fn space(&self, _: &Path) -> std::io::Result<Space> {
        Ok(self.0)
    }
}

const GIB: u64 = 1 << 30;

fn job(seed: u64) -> PhotoJob {
    let frame = render(&FrameSpec {
        width: 320,
        height: 240,
        class: Class::Clean,
        size: Size::Near,
        payload: Some("2024-0001".into()),
        seed,
    });
    PhotoJob {
        frame,
        seen_at: DateTime::parse_from_rfc3339("2026-11-23T07:41:05.250Z")
            .expect("time")
            .with_timezone(&Utc),
        payload: b"2024-0001".to_vec(),
        date: NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
    }
}

fn visible_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn saves_jpeg_under_dated_folder() {
    let data = tempfile::tempdir().expect("tmp");
    let store = PhotoStore::with_probe(
        data.path(),
        EvidenceConfig::default(),
        Box::new(FakeProbe(Space {
            avail_bytes: 50 * GIB,
            total_bytes: 64 * GIB,
        })),
    );
    let saved = store.save(&job(1)).expect("save");
    assert!(
        saved
            .path
            .starts_with(data.path().join("photos/2026-11-23"))
    );
    let name = saved
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name");
    assert!(
        name.starts_with("074105-250-") && name.ends_with(".jpg"),
        "{name}"
    );
    assert!(
        !name.contains("2024-0001"),
        "payload must not appear in file names"
    );
    let bytes = fs::read(&saved.path).expect("read");
    assert_eq!(bytes.len() as u64, saved.bytes);
    let back = LumaFrame::from_jpeg(&bytes).expect("valid jpeg");
    assert_eq!((back.width(), back.height()), (320, 240));
    // only the photo is visible, no temporary left behind
    let dir = saved.path.parent().expect("dir");
    assert_eq!(fs::read_dir(dir).expect("ls").count(), 1);
}

#[test]
fn crash_between_write_and_rename_leaves_no_visible_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let dest = dir.path().join("photo.jpg");
    let pending = write_pending(&dest, b"half of a jpeg").expect("write tmp");
    // the process dies here: the pending file is never committed
    std::mem::forget(pending);
    assert!(!dest.exists());
    assert!(visible_files(dir.path()).is_empty());
    // an existing photo is never replaced by a partial one either
    fs::write(&dest, b"old").expect("write");
    std::mem::forget(write_pending(&dest, b"new but never renamed").expect("tmp"));
    assert_eq!(fs::read(&dest).expect("read"), b"old");
    // commit makes it visible in one step
    write_pending(&dest, b"complete")
        .expect("tmp")
        .commit()
        .expect("commit");
    assert_eq!(fs::read(&dest).expect("read"), b"complete");
}

#[test]
fn sweep_removes_leftover_temporaries_only() {
    let data = tempfile::tempdir().expect("tmp");
    let store = PhotoStore::new(data.path(), EvidenceConfig::default());
    let day = store.root().join("2026-11-23");
    fs::create_dir_all(&day).expect("mkdir");
    std::mem::forget(write_pending(&day.join("a.jpg"), b"x").expect("tmp"));
    fs::write(day.join("b.jpg"), b"kept").expect("write");
    assert_eq!(store.sweep_temp(), 1);
    assert_eq!(visible_files(&day), vec!["b.jpg".to_string()]);
    assert_eq!(fs::read_dir(&day).expect("ls").count(), 1);
}

#[test]
fn low_space_skips_the_photo_with_a_reason() {
    let data = tempfile::tempdir().expect("tmp");
    let low_percent = PhotoStore::with_probe(
        data.path(),
        EvidenceConfig::default(),
        Box::new(FakeProbe(Space {
            avail_bytes: 3 * GIB,
            total_bytes: 100 * GIB,
        })),
    );
    let e = low_percent
        .save(&job(2))
        .expect_err("3 % free is below 5 %");
    assert!(
        matches!(e, PhotoError::LowSpace { free_mb: 3072, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("photo skipped"));
    let low_mb = PhotoStore::with_probe(
        data.path(),
        EvidenceConfig::default(),
        Box::new(FakeProbe(Space {
            avail_bytes: 50 << 20,
            total_bytes: 200 << 20,
        })),
    );
    assert!(matches!(
        low_mb.save(&job(3)),
        Err(PhotoError::LowSpace { free_mb: 50, .. })
    ));
    assert!(!data.path().join("photos").exists(), "nothing written");
}

#[test]
fn statvfs_probe_reads_real_numbers() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = StatvfsProbe.space(dir.path()).expect("statvfs");
    assert!(s.total_bytes > 0 && s.avail_bytes <= s.total_bytes);
}

#[test]
fn sharpest_frame_wins() {
    let sharp = job(4).frame;
    let mut blurred = sharp.clone();
    // 3x3 box blur
    let (w, h) = (blurred.width() as usize, blurred.height() as usize);
    let src = sharp.data().to_vec();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let mut s = 0u32;
            for dy in 0..3 {
                for dx in 0..3 {
                    s += src[(y + dy - 1) * w + x + dx - 1] as u32;
                }
            }
            blurred.data_mut()[y * w + x] = (s / 9) as u8;
        }
    }
    assert!(sharpness(&sharp) > 2.0 * sharpness(&blurred));
    let mut pick = SharpestFrame::default();
    pick.offer(&blurred);
    pick.offer(&sharp);
    pick.offer(&blurred);
    assert_eq!(pick.take().as_ref(), Some(&sharp));
    assert!(pick.take().is_none());
}

#[test]
fn worker_saves_and_attaches_and_never_blocks_the_producer() {
    let data = tempfile::tempdir().expect("tmp");
    let store = PhotoStore::with_probe(
        data.path(),
        EvidenceConfig::default(),
        Box::new(FakeProbe(Space {
            avail_bytes: 50 * GIB,
            total_bytes: 64 * GIB,
        })),
    );
    let attached = Arc::new(Mutex::new(Vec::new()));
    let a2 = attached.clone();
    let worker = PhotoWorker::start(
        store,
        1,
        Box::new(move |s| a2.lock().expect("lock").push(s)),
    )
    .expect("start");
    let tx = worker.sender();
    let base = job(10);
    let jobs: Vec<PhotoJob> = (0..20)
        .map(|i| {
            let mut j = base.clone();
            j.seen_at += chrono::Duration::milliseconds(i);
            j
        })
        .collect();
    let mut queued = 0;
    let t = std::time::Instant::now();
    for j in jobs {
        queued += tx.offer(j) as usize;
    }
    assert!(
        t.elapsed() < std::time::Duration::from_millis(200),
        "offer must not block"
    );
    assert!(queued >= 1);
    drop(tx);
    worker.join();
    let got = attached.lock().expect("lock");
    assert_eq!(got.len(), queued);
    assert!(
        got.iter()
            .all(|s| s.path.exists() && s.payload == b"2024-0001")
    );
}

#[test]
fn config_validation_names_the_key() {
    let c: EvidenceConfig = serde_json::from_str("{}").expect("defaults");
    assert_eq!(c, EvidenceConfig::default());
    c.validate().expect("valid");
    let c: EvidenceConfig = serde_json::from_str(r#"{"jpeg_quality": 5}"#).expect("parse");
    assert!(
        c.validate()
            .expect_err("q")
            .to_string()
            .starts_with("evidence.jpeg_quality")
    );
    let c: EvidenceConfig =
        serde_json::from_str(r#"{"min_free_percent": 20, "warn_free_percent": 10}"#)
            .expect("parse");
    assert!(
        c.validate()
            .expect_err("w")
            .to_string()
            .starts_with("evidence.warn_free_percent")
    );
    assert!(serde_json::from_str::<EvidenceConfig>(r#"{"quality": 80}"#).is_err());
}

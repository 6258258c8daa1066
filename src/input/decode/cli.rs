//! `attendance decode <image files...>`: run the configured decoder over
//! photos of printed cards and print, per file, the payload or that none was
//! found.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{DecoderConfig, LumaFrame, QrDecoder};

/// Outcome for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    Found(Vec<String>),
    NotFound,
    Unreadable(String),
}

/// Decodes one file with `decoder`.
pub fn decode_file(decoder: &mut dyn QrDecoder, path: &Path) -> FileOutcome {
    match LumaFrame::open(path) {
        Err(e) => FileOutcome::Unreadable(e.to_string()),
        Ok(frame) => {
            let found = decoder.decode(&frame);
            if found.is_empty() {
                FileOutcome::NotFound
            } else {
                FileOutcome::Found(
                    found
                        .into_iter()
                        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
                        .collect(),
                )
            }
        }
    }
}

/// Runs the subcommand, writing one line per file (`<path>: <payload>`,
/// `<path>: no code found` or `<path>: error: ...`) to `out`. Returns the
/// number of files with no code or an error; every file is processed.
pub fn run_to(
    config: &DecoderConfig,
    paths: &[PathBuf],
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    config.validate().context("decoder configuration")?;
    let mut decoder = config.build();
    let mut misses = 0;
    for path in paths {
        let line = match decode_file(decoder.as_mut(), path) {
            FileOutcome::Found(payloads) => payloads.join(" | "),
            FileOutcome::NotFound => {
                misses += 1;
                "no code found".to_string()
            }
            FileOutcome::Unreadable(e) => {
                misses += 1;
                format!("error: {e}")
            }
        };
        writeln!(out, "{}: {}", path.display(), line).context("writing output")?;
    }
    Ok(misses)
}

/// `decode` entry point: prints to stdout; fails (non-zero exit) when any
/// file had no code or could not be read, after reporting all of them.
pub fn run(config: &DecoderConfig, paths: &[PathBuf]) -> anyhow::Result<()> {
    if paths.is_empty() {
        anyhow::bail!("decode: give at least one image file (PNG, JPEG or PGM)");
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let misses = run_to(config, paths, &mut lock)?;
    if misses > 0 {
        anyhow::bail!("{misses} of {} file(s) had no readable code", paths.len());
    }
    Ok(())
}

/// `decode --camera DEVICE`: grabs `frames` frames from a V4L2 device (or
/// the demo stream with `demo`), decodes them and prints what was
/// negotiated, the frame rate and the codes seen. Fails when no frame
/// arrives.
pub fn run_camera(
    config: &DecoderConfig,
    camera: &crate::input::camera::CameraConfig,
    frames: usize,
) -> anyhow::Result<()> {
    use crate::input::camera::{grabber_for, probe};
    config.validate().context("decoder configuration")?;
    camera.validate().context("camera configuration")?;
    let mut grabber = grabber_for(camera)?;
    let mut decoder = config.build();
    let r = probe(grabber.as_mut(), decoder.as_mut(), frames)?;
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    println!("{}", r.description);
    println!(
        "{} frames in {:.1} s ({:.1} fps), {} failed grabs, median convert+decode {:.1} ms",
        r.frames,
        secs,
        r.frames as f64 / secs,
        r.failures,
        r.median_decode_ms
    );
    if r.payloads.is_empty() {
        println!("no code found");
    }
    for p in &r.payloads {
        println!("{}", String::from_utf8_lossy(p));
    }
    if r.frames == 0 {
        anyhow::bail!("no frame from the camera");
    }
    Ok(())
}

/// Camera settings for `decode --camera`: `device` is a V4L2 path or
/// `demo`; `format` is `mjpeg`, `yuyv` or `grey`.
pub fn camera_config(
    device: &Path,
    format: &str,
    width: u32,
    height: u32,
) -> anyhow::Result<crate::input::camera::CameraConfig> {
    let format = serde_json::from_value(serde_json::Value::String(format.to_ascii_lowercase()))
        .with_context(|| format!("--format {format}: expected mjpeg, yuyv or grey"))?;
    Ok(crate::input::camera::CameraConfig {
        enabled: true,
        demo: device == Path::new("demo"),
        device: device.to_path_buf(),
        format,
        width,
        height,
        ..Default::default()
    })
}

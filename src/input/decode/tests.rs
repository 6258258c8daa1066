//! Decoder tests on a small subset of the synthetic frame set. The full set
//! and the timings are in the benchmark (`cargo bench --bench decode`).

use super::synth::{Class, FrameSpec, Size, frame_set, render, sample_payload};
use super::*;

fn check(decoder: &mut dyn QrDecoder, specs: &[FrameSpec]) -> (usize, usize, usize) {
    let (mut found, mut wrong, mut false_pos) = (0, 0, 0);
    for spec in specs {
        let frame = render(spec);
        let got = decoder.decode(&frame);
        match &spec.payload {
            None => false_pos += got.len(),
            Some(p) => {
                if got.iter().any(|d| d.payload == p.as_bytes()) {
                    found += 1;
                }
                wrong += got.iter().filter(|d| d.payload != p.as_bytes()).count();
            }
        }
    }
    (found, wrong, false_pos)
}

fn subset(class: Class, sizes: &[Size], n: u64, res: (u32, u32)) -> Vec<FrameSpec> {
    let mut v = Vec::new();
    let mut i = 0;
    for &size in sizes {
        for _ in 0..n {
            v.push(FrameSpec {
                width: res.0,
                height: res.1,
                class,
                size,
                payload: (class != Class::Empty).then(|| sample_payload(i)),
                seed: 77_000 + (class as u64) * 1000 + i,
            });
            i += 1;
        }
    }
    v
}

#[test]
fn synthetic_frames_are_deterministic() {
    let spec = &frame_set(&[(320, 240)], 1)[5];
    assert_eq!(render(spec), render(spec));
}

/// Per-class floor for the default chain at 720p on this test's frames (two
/// per size, far to close; seeds differ from the benchmark's). Today it
/// reads 8 of 8 in every class but blur (5 of 8: blurred far codes are not
/// read; the benchmark's rates at 720p are clean, rotated and noise 100 %,
/// perspective 94 %, low contrast 88 %, blur 69 %). The floors sit one or
/// two frames below, so a change that loses codes fails here.
const DEFAULT_CHAIN_FLOOR_720P: [(Class, usize); 6] = [
    (Class::Clean, 7),
    (Class::Rotated, 7),
    (Class::Perspective, 6),
    (Class::Blur, 4),
    (Class::Noise, 7),
    (Class::LowContrast, 6),
];

#[test]
fn default_chain_detects_every_class_at_720p() {
    let mut dec = DecoderConfig::default().build();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let (mut total_found, mut total) = (0, 0);
    for (class, floor) in DEFAULT_CHAIN_FLOOR_720P {
        let specs = subset(class, &Size::ALL, 2, (1280, 720));
        let (found, wrong, _) = check(dec.as_mut(), &specs);
        total_found += found;
        total += specs.len();
        assert_eq!(wrong, 0, "{class:?}: wrong payloads");
        report.push(format!("{class:?} {found}/{}", specs.len()));
        if found < floor {
            failures.push(format!("{class:?}: found {found}, floor {floor}"));
        }
    }
    eprintln!("default chain at 720p: {}", report.join(", "));
    assert!(failures.is_empty(), "{failures:?}");
    // and at least 90 % over all classes (today 45 of 48)
    assert!(
        total_found * 100 >= total * 90,
        "found {total_found} of {total}"
    );
    let empty = subset(Class::Empty, &[Size::Mid], 4, (1280, 720));
    assert_eq!(check(dec.as_mut(), &empty).2, 0, "codes in empty frames");
}

#[test]
fn local_binarisation_reads_dim_codes() {
    // The reason rxing-local is in the default chain: dim, washed-out codes
    // next to clutter, which ZXing's hybrid binariser (plain rxing) loses.
    let specs = subset(Class::LowContrast, &Size::ALL, 3, (1280, 720));
    let mut local = DecoderStage::RxingLocal.build();
    let mut hybrid = DecoderStage::Rxing.build();
    let (found_local, wrong_local, _) = check(local.as_mut(), &specs);
    let (found_hybrid, wrong_hybrid, _) = check(hybrid.as_mut(), &specs);
    eprintln!(
        "low contrast: rxing-local {found_local}, rxing {found_hybrid} of {}",
        specs.len()
    );
    assert_eq!((wrong_local, wrong_hybrid), (0, 0));
    assert!(
        found_local >= 9 && found_local >= found_hybrid + 4,
        "rxing-local {found_local}, rxing {found_hybrid} of {}",
        specs.len()
    );
}

#[test]
fn no_engine_reports_codes_in_empty_frames() {
    let specs = subset(Class::Empty, &[Size::Mid], 6, (640, 480));
    for stage in [
        DecoderStage::Rqrr,
        DecoderStage::Quircs,
        DecoderStage::Rxing,
        DecoderStage::QuircsHalf,
        DecoderStage::RxingLocal,
        DecoderStage::RxingLocalHalf,
    ] {
        let mut dec = stage.build();
        let (_, _, fp) = check(dec.as_mut(), &specs);
        assert_eq!(fp, 0, "{stage:?} saw codes in empty frames");
    }
}

#[test]
fn every_engine_reads_a_clean_code_and_never_a_wrong_one() {
    let specs = subset(Class::Clean, &[Size::Near], 2, (1280, 720));
    for stage in [
        DecoderStage::Rqrr,
        DecoderStage::Quircs,
        DecoderStage::Rxing,
        DecoderStage::QuircsHalf,
        DecoderStage::RxingHalf,
        DecoderStage::RxingLocal,
        DecoderStage::RxingLocalHalf,
    ] {
        let mut dec = stage.build();
        let (found, wrong, _) = check(dec.as_mut(), &specs);
        assert_eq!(wrong, 0, "{stage:?}");
        assert_eq!(found, specs.len(), "{stage:?}");
    }
}

#[test]
fn cascade_falls_through_to_later_stages() {
    struct Never;
    impl QrDecoder for Never {
        fn name(&self) -> String {
            "never".into()
        }
        fn decode(&mut self, _: &LumaFrame) -> Vec<Decoded> {
            Vec::new()
        }
    }
    let mut c = Cascade::new(vec![Box::new(Never), DecoderStage::Quircs.build()]);
    assert_eq!(c.name(), "never > quircs");
    let specs = subset(Class::Clean, &[Size::Near], 1, (1280, 720));
    assert_eq!(check(&mut c, &specs), (1, 0, 0));
}

#[test]
fn decoders_survive_degenerate_frames() {
    let frames = [
        LumaFrame::new(1, 1, vec![0]).expect("1x1"),
        LumaFrame::new(64, 64, vec![255; 4096]).expect("white"),
        LumaFrame::new(
            64,
            64,
            (0..4096)
                .map(|i| if (i / 64 + i % 64) % 2 == 0 { 0 } else { 255 })
                .collect(),
        )
        .expect("checker"),
        LumaFrame::empty(),
    ];
    for stage in [
        DecoderStage::Rqrr,
        DecoderStage::Quircs,
        DecoderStage::Rxing,
        DecoderStage::QuircsHalf,
        DecoderStage::RxingHalf,
        DecoderStage::RxingLocal,
        DecoderStage::RxingLocalHalf,
    ] {
        let mut dec = stage.build();
        for f in &frames {
            assert!(dec.decode(f).is_empty(), "{stage:?}");
        }
    }
}

#[test]
fn config_validation_names_the_key() {
    let c: DecoderConfig = serde_json::from_str(r#"{"chain": []}"#).expect("parse");
    let e = c.validate().expect_err("empty");
    assert!(e.to_string().starts_with("decoder.chain"));
    let c: DecoderConfig =
        serde_json::from_str(r#"{"chain": ["quircs", "quircs"]}"#).expect("parse");
    assert!(c.validate().is_err());
    assert!(serde_json::from_str::<DecoderConfig>(r#"{"chains": []}"#).is_err());
    assert!(serde_json::from_str::<DecoderConfig>(r#"{"chain": ["zbar"]}"#).is_err());
    let d: DecoderConfig = serde_json::from_str("{}").expect("defaults");
    assert_eq!(d, DecoderConfig::default());
    d.validate().expect("default valid");
}

#[test]
fn cli_reports_each_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let spec = &subset(Class::Clean, &[Size::Near], 1, (640, 480))[0];
    let frame = render(spec);
    let png = dir.path().join("card.png");
    image::GrayImage::from_raw(640, 480, frame.data().to_vec())
        .expect("img")
        .save(&png)
        .expect("save png");
    let pgm = dir.path().join("blank.pgm");
    image::GrayImage::from_pixel(64, 64, image::Luma([200]))
        .save(&pgm)
        .expect("save pgm");
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"nope").expect("write");
    let mut out = Vec::new();
    let misses = cli::run_to(
        &DecoderConfig::default(),
        &[png.clone(), pgm.clone(), bad.clone()],
        &mut out,
    )
    .expect("run");
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(misses, 2);
    assert_eq!(
        lines[0],
        format!(
            "{}: {}",
            png.display(),
            spec.payload.as_deref().unwrap_or_default()
        )
    );
    assert_eq!(lines[1], format!("{}: no code found", pgm.display()));
    assert!(lines[2].starts_with(&format!("{}: error:", bad.display())));
}

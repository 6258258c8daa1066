//! Wrappers of the QR engines behind [`QrDecoder`].

use rxing::Reader;

use super::binarize::LocalMeanBinarizer;
use super::{Decoded, LumaFrame, QrDecoder};

/// `rqrr`: pure Rust port of quirc's ideas, with its own binarisation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rqrr;

impl QrDecoder for Rqrr {
    fn name(&self) -> String {
        "rqrr".into()
    }

    fn decode(&mut self, frame: &LumaFrame) -> Vec<Decoded> {
        let w = frame.width() as usize;
        let h = frame.height() as usize;
        if w == 0 || h == 0 {
            return Vec::new();
        }
        let data = frame.data();
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| data[y * w + x]);
        let mut out = Vec::new();
        for grid in img.detect_grids() {
            let mut payload = Vec::new();
            if grid.decode_to(&mut payload).is_ok() {
                push_unique(&mut out, payload, "rqrr");
            }
        }
        out
    }
}

/// `quircs`: a Rust translation of quirc.
#[derive(Default)]
pub struct Quircs {
    quirc: quircs::Quirc,
}

impl QrDecoder for Quircs {
    fn name(&self) -> String {
        "quircs".into()
    }

    fn decode(&mut self, frame: &LumaFrame) -> Vec<Decoded> {
        let w = frame.width() as usize;
        let h = frame.height() as usize;
        if w == 0 || h == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for code in self.quirc.identify(w, h, frame.data()).flatten() {
            if let Ok(data) = code.decode() {
                push_unique(&mut out, data.payload, "quircs");
            }
        }
        out
    }
}

/// `rxing`: a port of ZXing's QR reader (hybrid binariser), borrowing the
/// frame without a copy. `try_harder` scans every row for finder patterns
/// (slower, better on small codes).
#[derive(Debug, Default, Clone, Copy)]
pub struct Rxing {
    pub try_harder: bool,
}

impl QrDecoder for Rxing {
    fn name(&self) -> String {
        if self.try_harder {
            "rxing-hard".into()
        } else {
            "rxing".into()
        }
    }

    fn decode(&mut self, frame: &LumaFrame) -> Vec<Decoded> {
        let Ok(source) =
            rxing::Luma8Source::new_with_slice(frame.data(), frame.width(), frame.height())
        else {
            return Vec::new();
        };
        let mut bitmap = rxing::BinaryBitmap::new(rxing::common::HybridBinarizer::new(source));
        let mut reader = rxing::qrcode::QRCodeReader::new();
        // ZXing's reader can panic on pathological input in some versions; a
        // panic must not take the camera thread down with it.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode(&mut bitmap)));
        match result {
            // ZXing returns decoded text (its raw bytes are codewords, not
            // the payload); the ASCII/UTF-8 payloads we issue round-trip.
            Ok(Ok(r)) => {
                vec![Decoded {
                    payload: r.getText().as_bytes().to_vec(),
                    engine: "rxing",
                }]
            }
            _ => Vec::new(),
        }
    }
}

/// `rxing-local`: rxing's port of zxing-cpp's QR reader (its own finder
/// search and grid sampling, much better than the ZXing-Java port above on
/// keystoned and small codes) on a [`LocalMeanBinarizer`] instead of ZXing's
/// hybrid binariser (which loses dim, washed-out codes). `radius` is the
/// half-size of the threshold window in 8-pixel blocks.
#[derive(Debug, Clone, Copy)]
pub struct RxingLocal {
    pub radius: usize,
}

impl RxingLocal {
    /// Window of 15 blocks (120 px): wide enough for close codes' modules.
    pub const FULL: RxingLocal = RxingLocal { radius: 7 };
    /// Window of 5 blocks (40 px, 80 px of the original frame) for a
    /// half-size copy.
    pub const HALF: RxingLocal = RxingLocal { radius: 2 };
    /// Percent below the window mean that counts as dark.
    const BIAS: u32 = 5;
}

impl QrDecoder for RxingLocal {
    fn name(&self) -> String {
        "rxing-local".into()
    }

    fn decode(&mut self, frame: &LumaFrame) -> Vec<Decoded> {
        if frame.width() == 0 || frame.height() == 0 {
            return Vec::new();
        }
        let Ok(source) =
            rxing::Luma8Source::new_with_slice(frame.data(), frame.width(), frame.height())
        else {
            return Vec::new();
        };
        let mut bitmap =
            rxing::BinaryBitmap::new(LocalMeanBinarizer::new(source, self.radius, Self::BIAS));
        let hints = rxing::DecodeHints {
            PossibleFormats: Some([rxing::BarcodeFormat::QR_CODE].into_iter().collect()),
            ..Default::default()
        };
        // As above: a panic in the reader must not take the camera thread down.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rxing::qrcode::cpp_port::QrReader.decode_with_hints(&mut bitmap, &hints)
        }));
        match result {
            Ok(Ok(r)) => vec![Decoded {
                payload: r.getText().as_bytes().to_vec(),
                engine: "rxing-local",
            }],
            _ => Vec::new(),
        }
    }
}

/// Runs `inner` on a 2x2 box-averaged copy of the frame (a quarter of the
/// pixels). The scratch buffer is reused between frames.
pub struct Downscaled<D> {
    inner: D,
    scratch: LumaFrame,
}

impl<D: QrDecoder> Downscaled<D> {
    pub fn new(inner: D) -> Self {
        Downscaled {
            inner,
            scratch: LumaFrame::empty(),
        }
    }
}

impl<D: QrDecoder> QrDecoder for Downscaled<D> {
    fn name(&self) -> String {
        format!("{}@1/2", self.inner.name())
    }

    fn decode(&mut self, frame: &LumaFrame) -> Vec<Decoded> {
        frame.downscale2_into(&mut self.scratch);
        self.inner.decode(&self.scratch)
    }
}

fn push_unique(out: &mut Vec<Decoded>, payload: Vec<u8>, engine: &'static str) {
    if !out.iter().any(|d| d.payload == payload) {
        out.push(Decoded { payload, engine });
    }
}

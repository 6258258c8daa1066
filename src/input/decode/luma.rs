//! 8-bit luma frames and conversions from camera formats and image files.
//!
//! Conversions write into an existing [`LumaFrame`] so a capture loop reuses
//! one allocation: YUYV needs exactly one pass that picks every second byte,
//! MJPEG is decoded straight to a single luma plane (no RGB intermediate).

use std::path::Path;

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// Largest frame accepted from any source (8K x 8K); guards allocations
/// driven by a corrupt header.
pub const MAX_PIXELS: usize = 8192 * 8192;

#[derive(Debug, thiserror::Error)]
pub enum LumaError {
    #[error("frame {width}x{height} needs {needed} bytes, got {got}")]
    ShortBuffer {
        width: u32,
        height: u32,
        needed: usize,
        got: usize,
    },
    #[error("frame {width}x{height}: bytes per line {stride} is less than the row size")]
    BadStride {
        width: u32,
        height: u32,
        stride: usize,
    },
    #[error("frame {width}x{height} is empty or too large")]
    BadSize { width: u32, height: u32 },
    #[error("MJPEG frame: {0}")]
    Jpeg(String),
    #[error("reading image {path}: {source}")]
    Image {
        path: String,
        #[source]
        source: image::ImageError,
    },
}

/// A packed 8-bit greyscale frame (row stride == width).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LumaFrame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

fn check_size(width: u32, height: u32) -> Result<usize, LumaError> {
    let n = (width as usize).checked_mul(height as usize);
    match n {
        Some(n) if n > 0 && n <= MAX_PIXELS => Ok(n),
        _ => Err(LumaError::BadSize { width, height }),
    }
}

impl LumaFrame {
    /// A 0x0 frame, used as a reusable target.
    pub fn empty() -> Self {
        LumaFrame::default()
    }

    /// Wraps packed luma bytes (no copy).
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self, LumaError> {
        let needed = check_size(width, height)?;
        if data.len() != needed {
            return Err(LumaError::ShortBuffer {
                width,
                height,
                needed,
                got: data.len(),
            });
        }
        Ok(LumaFrame {
            width,
            height,
            data,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    fn reshape(&mut self, width: u32, height: u32, n: usize) {
        self.width = width;
        self.height = height;
        // resize keeps the allocation when the size does not change
        self.data.resize(n, 0);
    }

    /// Fills this frame with the Y channel of a packed YUYV (YUY2) buffer.
    /// `bytes_per_line` is the driver's stride (>= 2 * width).
    pub fn fill_from_yuyv(
        &mut self,
        src: &[u8],
        width: u32,
        height: u32,
        bytes_per_line: usize,
    ) -> Result<(), LumaError> {
        let n = check_size(width, height)?;
        let row = width as usize * 2;
        let stride = if bytes_per_line == 0 {
            row
        } else {
            bytes_per_line
        };
        if stride < row {
            return Err(LumaError::BadStride {
                width,
                height,
                stride,
            });
        }
        let needed = stride * (height as usize - 1) + row;
        if src.len() < needed {
            return Err(LumaError::ShortBuffer {
                width,
                height,
                needed,
                got: src.len(),
            });
        }
        self.reshape(width, height, n);
        let w = width as usize;
        for (y, out_row) in self.data.chunks_exact_mut(w).enumerate() {
            let in_row = &src[y * stride..y * stride + row];
            for (o, px) in out_row.iter_mut().zip(in_row.chunks_exact(2)) {
                *o = px[0];
            }
        }
        Ok(())
    }

    /// Fills this frame with the luma plane of a (M)JPEG image. Webcam MJPEG
    /// without Huffman tables is handled by the decoder's default tables.
    pub fn fill_from_jpeg(&mut self, jpeg: &[u8]) -> Result<(), LumaError> {
        let options = DecoderOptions::default()
            .jpeg_set_out_colorspace(ColorSpace::Luma)
            .set_max_width(8192)
            .set_max_height(8192);
        let mut dec = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
        dec.decode_headers()
            .map_err(|e| LumaError::Jpeg(e.to_string()))?;
        let (w, h) = dec
            .dimensions()
            .ok_or_else(|| LumaError::Jpeg("no dimensions after headers".into()))?;
        let (w, h) = (
            u32::try_from(w).map_err(|_| LumaError::Jpeg("width".into()))?,
            u32::try_from(h).map_err(|_| LumaError::Jpeg("height".into()))?,
        );
        let n = check_size(w, h)?;
        let out_len = dec
            .output_buffer_size()
            .ok_or_else(|| LumaError::Jpeg("unknown output size".into()))?;
        if out_len != n {
            return Err(LumaError::Jpeg(format!(
                "decoder wants {out_len} bytes for a {w}x{h} luma plane"
            )));
        }
        self.reshape(w, h, n);
        dec.decode_into(&mut self.data)
            .map_err(|e| LumaError::Jpeg(e.to_string()))?;
        Ok(())
    }

    /// Decodes an MJPEG frame into a new luma frame.
    pub fn from_jpeg(jpeg: &[u8]) -> Result<Self, LumaError> {
        let mut f = LumaFrame::empty();
        f.fill_from_jpeg(jpeg)?;
        Ok(f)
    }

    /// Reads a PNG, JPEG or PGM/PPM file as luma.
    pub fn open(path: &Path) -> Result<Self, LumaError> {
        let img = image::ImageReader::open(path)
            .map_err(|e| LumaError::Image {
                path: path.display().to_string(),
                source: image::ImageError::IoError(e),
            })?
            .with_guessed_format()
            .map_err(|e| LumaError::Image {
                path: path.display().to_string(),
                source: image::ImageError::IoError(e),
            })?
            .decode()
            .map_err(|e| LumaError::Image {
                path: path.display().to_string(),
                source: e,
            })?;
        let luma = img.into_luma8();
        let (w, h) = luma.dimensions();
        LumaFrame::new(w, h, luma.into_raw())
    }

    /// Writes a 2x2 box-averaged copy into `out` (odd last row/column dropped).
    pub fn downscale2_into(&self, out: &mut LumaFrame) {
        let w2 = self.width / 2;
        let h2 = self.height / 2;
        let n = w2 as usize * h2 as usize;
        out.width = w2;
        out.height = h2;
        out.data.resize(n, 0);
        if n == 0 {
            return;
        }
        let w = self.width as usize;
        for (y, orow) in out.data.chunks_exact_mut(w2 as usize).enumerate() {
            let r0 = &self.data[2 * y * w..2 * y * w + w];
            let r1 = &self.data[(2 * y + 1) * w..(2 * y + 1) * w + w];
            for (x, o) in orow.iter_mut().enumerate() {
                let s = r0[2 * x] as u16
                    + r0[2 * x + 1] as u16
                    + r1[2 * x] as u16
                    + r1[2 * x + 1] as u16;
                *o = ((s + 2) / 4) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_takes_every_luma_byte_and_honours_stride() {
        // 4x2 frame, stride 10 (2 bytes padding per line)
        let mut src = Vec::new();
        for y in 0..2u8 {
            for x in 0..4u8 {
                src.push(10 * y + x); // Y
                src.push(200); // U or V
            }
            src.extend_from_slice(&[99, 99]);
        }
        let mut f = LumaFrame::empty();
        f.fill_from_yuyv(&src, 4, 2, 10).expect("convert");
        assert_eq!((f.width(), f.height()), (4, 2));
        assert_eq!(f.data(), &[0, 1, 2, 3, 10, 11, 12, 13]);
    }

    #[test]
    fn yuyv_reuses_the_allocation() {
        let src = vec![7u8; 64 * 48 * 2];
        let mut f = LumaFrame::empty();
        f.fill_from_yuyv(&src, 64, 48, 0).expect("first");
        let p = f.data().as_ptr();
        f.fill_from_yuyv(&src, 64, 48, 128).expect("second");
        assert_eq!(p, f.data().as_ptr());
        assert!(f.data().iter().all(|&v| v == 7));
    }

    #[test]
    fn yuyv_rejects_short_buffers_and_bad_strides() {
        let mut f = LumaFrame::empty();
        assert!(matches!(
            f.fill_from_yuyv(&[0; 10], 4, 2, 0),
            Err(LumaError::ShortBuffer { needed: 16, .. })
        ));
        assert!(matches!(
            f.fill_from_yuyv(&[0; 64], 4, 2, 6),
            Err(LumaError::BadStride { .. })
        ));
        assert!(matches!(
            f.fill_from_yuyv(&[], 0, 2, 0),
            Err(LumaError::BadSize { .. })
        ));
    }

    fn encode_jpeg(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let mut img = image::RgbImage::new(w, h);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb(f(x, y));
        }
        let mut out = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&img)
            .expect("encode");
        out.into_inner()
    }

    #[test]
    fn mjpeg_decodes_to_luma_plane() {
        // left half dark red, right half light grey
        let jpeg = encode_jpeg(
            64,
            32,
            |x, _| if x < 32 { [120, 0, 0] } else { [200, 200, 200] },
        );
        let f = LumaFrame::from_jpeg(&jpeg).expect("decode");
        assert_eq!((f.width(), f.height()), (64, 32));
        let left = f.data()[16 * 64 + 8] as i32;
        let right = f.data()[16 * 64 + 56] as i32;
        // BT.601 luma of (120,0,0) is ~36, of grey 200 is 200
        assert!((left - 36).abs() <= 6, "left {left}");
        assert!((right - 200).abs() <= 4, "right {right}");
    }

    #[test]
    fn mjpeg_garbage_is_an_error_not_a_panic() {
        let mut f = LumaFrame::empty();
        assert!(f.fill_from_jpeg(b"not a jpeg").is_err());
        let mut jpeg = encode_jpeg(32, 32, |_, _| [1, 2, 3]);
        jpeg.truncate(jpeg.len() / 3);
        let _ = f.fill_from_jpeg(&jpeg); // may succeed partially, must not panic
    }

    #[test]
    fn downscale_averages_blocks() {
        let f = LumaFrame::new(4, 2, vec![0, 4, 8, 8, 4, 8, 8, 8]).expect("frame");
        let mut out = LumaFrame::empty();
        f.downscale2_into(&mut out);
        assert_eq!((out.width(), out.height()), (2, 1));
        assert_eq!(out.data(), &[4, 8]);
    }
}

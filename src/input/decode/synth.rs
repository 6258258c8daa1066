//! Deterministic synthetic camera frames with QR codes, for the decoder
//! benchmark, the decoder tests and the demo camera.
//!
//! A frame is a cluttered, unevenly lit background with (or without) one QR
//! code printed on a card, placed through a homography (rotation, scale,
//! perspective), then degraded (box blur, sensor noise, low contrast). All
//! randomness comes from a seeded SplitMix64, so a (spec, seed) pair always
//! yields the same pixels on every machine.

use qrcode::{Color, EcLevel, QrCode};

use super::LumaFrame;

/// Small deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
    /// Approximately normal (sum of four uniforms), mean 0, sd 1.
    pub fn normal(&mut self) -> f32 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 1.732
    }
}

/// What makes a frame hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Upright, in focus, good contrast (small tilt, light noise).
    Clean,
    /// Any in-plane angle.
    Rotated,
    /// Card tilted away from the camera (keystone).
    Perspective,
    /// Defocus / motion: box blur of 1-3 px radius.
    Blur,
    /// Heavy sensor noise.
    Noise,
    /// Dim, washed-out print.
    LowContrast,
    /// No code at all: clutter and code-like decoys only.
    Empty,
}

impl Class {
    pub const ALL: [Class; 7] = [
        Class::Clean,
        Class::Rotated,
        Class::Perspective,
        Class::Blur,
        Class::Noise,
        Class::LowContrast,
        Class::Empty,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Clean => "clean",
            Class::Rotated => "rotated",
            Class::Perspective => "perspective",
            Class::Blur => "blur",
            Class::Noise => "noise",
            Class::LowContrast => "low_contrast",
            Class::Empty => "empty",
        }
    }
}

/// How large the code appears: its side (without quiet zone) as a fraction
/// of the frame height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Size {
    /// 9-13 % of the height (a card held at arm's length or further).
    Far,
    /// 16-24 %.
    Mid,
    /// 30-42 %.
    Near,
    /// 55-75 % (card held right in front of the lens).
    Close,
}

impl Size {
    pub const ALL: [Size; 4] = [Size::Far, Size::Mid, Size::Near, Size::Close];
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Far => "far",
            Size::Mid => "mid",
            Size::Near => "near",
            Size::Close => "close",
        }
    }
    fn fraction(self, rng: &mut Rng) -> f32 {
        match self {
            Size::Far => rng.range(0.09, 0.13),
            Size::Mid => rng.range(0.16, 0.24),
            Size::Near => rng.range(0.30, 0.42),
            Size::Close => rng.range(0.55, 0.75),
        }
    }
}

/// One frame to generate.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    pub width: u32,
    pub height: u32,
    pub class: Class,
    pub size: Size,
    /// `None` for [`Class::Empty`].
    pub payload: Option<String>,
    pub seed: u64,
}

/// A sample payload: alternately a plain student number (QR version 1) and
/// a signed card `ATT1:<key>:<number>:<43-char signature>` (version 4), so
/// both module densities are exercised.
pub fn sample_payload(i: u64) -> String {
    let number = format!("2024-{:04}", 1 + i % 9000);
    if i.is_multiple_of(2) {
        number
    } else {
        let mut rng = Rng::new(i.wrapping_mul(7919));
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let sig: String = (0..43)
            .map(|_| B64[(rng.next_u64() % 64) as usize] as char)
            .collect();
        format!("ATT1:k1:{number}:{sig}")
    }
}

/// The benchmark set: for each resolution, every non-empty class at every
/// size `per_cell` times, plus `4 * per_cell` empty frames.
pub fn frame_set(resolutions: &[(u32, u32)], per_cell: u64) -> Vec<FrameSpec> {
    let mut out = Vec::new();
    let mut i = 0u64;
    for &(width, height) in resolutions {
        for class in Class::ALL {
            if class == Class::Empty {
                for _ in 0..4 * per_cell {
                    out.push(FrameSpec {
                        width,
                        height,
                        class,
                        size: Size::Mid,
                        payload: None,
                        seed: 1000 + i,
                    });
                    i += 1;
                }
                continue;
            }
            for size in Size::ALL {
                for _ in 0..per_cell {
                    out.push(FrameSpec {
                        width,
                        height,
                        class,
                        size,
                        payload: Some(sample_payload(i)),
                        seed: 1000 + i,
                    });
                    i += 1;
                }
            }
        }
    }
    out
}

/// Homography from the unit square to a quadrilateral (Heckbert's
/// square-to-quad): corners (0,0),(1,0),(1,1),(0,1) map to `q[0..4]`.
#[derive(Debug, Clone, Copy)]
struct Homography([f32; 9]);

impl Homography {
    fn square_to_quad(q: [(f32, f32); 4]) -> Self {
        let [(x0, y0), (x1, y1), (x2, y2), (x3, y3)] = q;
        let dx3 = x0 - x1 + x2 - x3;
        let dy3 = y0 - y1 + y2 - y3;
        if dx3.abs() < 1e-6 && dy3.abs() < 1e-6 {
            return Homography([x1 - x0, x3 - x0, x0, y1 - y0, y3 - y0, y0, 0.0, 0.0, 1.0]);
        }
        let dx1 = x1 - x2;
        let dx2 = x3 - x2;
        let dy1 = y1 - y2;
        let dy2 = y3 - y2;
        let det = dx1 * dy2 - dx2 * dy1;
        let g = (dx3 * dy2 - dx2 * dy3) / det;
        let h = (dx1 * dy3 - dx3 * dy1) / det;
        Homography([
            x1 - x0 + g * x1,
            x3 - x0 + h * x3,
            x0,
            y1 - y0 + g * y1,
            y3 - y0 + h * y3,
            y0,
            g,
            h,
            1.0,
        ])
    }

    fn inverse(&self) -> Self {
        let [a, b, c, d, e, f, g, h, i] = self.0;
        let co = [
            e * i - f * h,
            c * h - b * i,
            b * f - c * e,
            f * g - d * i,
            a * i - c * g,
            c * d - a * f,
            d * h - e * g,
            b * g - a * h,
            a * e - b * d,
        ];
        let det = a * co[0] + b * co[3] + c * co[6];
        let mut m = co;
        for v in &mut m {
            *v /= det;
        }
        Homography(m)
    }

    fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        let m = &self.0;
        let w = m[6] * x + m[7] * y + m[8];
        (
            (m[0] * x + m[1] * y + m[2]) / w,
            (m[3] * x + m[4] * y + m[5]) / w,
        )
    }
}

/// Renders `spec` into a new frame.
pub fn render(spec: &FrameSpec) -> LumaFrame {
    let mut frame = LumaFrame::empty();
    render_into(spec, &mut frame);
    frame
}

/// Renders `spec` into `out`, reusing its allocation.
pub fn render_into(spec: &FrameSpec, out: &mut LumaFrame) {
    let (w, h) = (spec.width as usize, spec.height as usize);
    let mut rng = Rng::new(spec.seed);
    let mut img = vec![0f32; w * h];

    // Background: lighting gradient plus clutter rectangles.
    let gx = rng.range(-40.0, 40.0) / w as f32;
    let gy = rng.range(-40.0, 40.0) / h as f32;
    let base = rng.range(90.0, 150.0);
    for y in 0..h {
        for x in 0..w {
            img[y * w + x] = base + gx * x as f32 + gy * y as f32;
        }
    }
    for _ in 0..12 {
        let rw = rng.range(0.05, 0.3) * w as f32;
        let rh = rng.range(0.05, 0.3) * h as f32;
        let rx = rng.range(0.0, w as f32 - rw);
        let ry = rng.range(0.0, h as f32 - rh);
        let v = rng.range(30.0, 220.0);
        fill_rect(&mut img, w, rx, ry, rw, rh, v);
    }
    if spec.class == Class::Empty {
        draw_decoys(&mut img, w, h, &mut rng);
    }

    let (contrast_dark, contrast_light) = match spec.class {
        Class::LowContrast => (rng.range(95.0, 115.0), rng.range(150.0, 170.0)),
        _ => (rng.range(20.0, 50.0), rng.range(200.0, 240.0)),
    };

    if let (Some(payload), true) = (&spec.payload, spec.class != Class::Empty) {
        let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
            .or_else(|_| QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::L));
        if let Ok(code) = code {
            let modules = code.width();
            let colors = code.to_colors();
            let quiet = 4usize;
            let total = (modules + 2 * quiet) as f32;
            let side = spec.size.fraction(&mut rng) * h as f32 * total / modules as f32;
            let angle = match spec.class {
                Class::Rotated => rng.range(0.0, std::f32::consts::TAU),
                Class::Perspective => rng.range(-0.35, 0.35),
                _ => rng.range(-0.08, 0.08),
            };
            // keystone: shrink one edge
            let (shrink, axis) = match spec.class {
                Class::Perspective => (rng.range(0.62, 0.80), (rng.next_u64() % 4) as usize),
                _ => (1.0, 0),
            };
            let margin = side * 0.75;
            let cx = if (w as f32) > 2.0 * margin {
                rng.range(margin, w as f32 - margin)
            } else {
                w as f32 / 2.0
            };
            let cy = if (h as f32) > 2.0 * margin {
                rng.range(margin, h as f32 - margin)
            } else {
                h as f32 / 2.0
            };
            let half = side / 2.0;
            let mut corners = [(-half, -half), (half, -half), (half, half), (-half, half)];
            if shrink < 1.0 {
                // shrink the two corners of edge `axis` towards each other
                let a = axis;
                let b = (axis + 1) % 4;
                let (ax, ay) = corners[a];
                let (bx, by) = corners[b];
                let (mx, my) = ((ax + bx) / 2.0, (ay + by) / 2.0);
                corners[a] = (mx + (ax - mx) * shrink, my + (ay - my) * shrink);
                corners[b] = (mx + (bx - mx) * shrink, my + (by - my) * shrink);
            }
            let (s, c) = angle.sin_cos();
            let quad = corners.map(|(x, y)| (cx + x * c - y * s, cy + x * s + y * c));
            let hom = Homography::square_to_quad(quad).inverse();

            let xs = quad.iter().map(|p| p.0);
            let ys = quad.iter().map(|p| p.1);
            let x0 = xs.clone().fold(f32::MAX, f32::min).floor().max(0.0) as usize;
            let x1 = (xs.fold(f32::MIN, f32::max).ceil() as usize).min(w);
            let y0 = ys.clone().fold(f32::MAX, f32::min).floor().max(0.0) as usize;
            let y1 = (ys.fold(f32::MIN, f32::max).ceil() as usize).min(h);
            const SS: [f32; 2] = [0.25, 0.75];
            for y in y0..y1 {
                for x in x0..x1 {
                    let mut acc = 0.0;
                    let mut hits = 0;
                    for sy in SS {
                        for sx in SS {
                            let (u, v) = hom.apply(x as f32 + sx, y as f32 + sy);
                            if !(0.0..1.0).contains(&u) || !(0.0..1.0).contains(&v) {
                                continue;
                            }
                            hits += 1;
                            let mx = (u * total) as usize;
                            let my = (v * total) as usize;
                            let dark = mx >= quiet
                                && my >= quiet
                                && mx < quiet + modules
                                && my < quiet + modules
                                && colors[(my - quiet) * modules + (mx - quiet)] == Color::Dark;
                            acc += if dark { contrast_dark } else { contrast_light };
                        }
                    }
                    if hits > 0 {
                        let p = &mut img[y * w + x];
                        *p = (*p * (4 - hits) as f32 + acc) / 4.0;
                    }
                }
            }
        }
    }

    // Camera softness everywhere, stronger for the blur class.
    let radius = match spec.class {
        Class::Blur => {
            if h >= 720 {
                2 + (rng.next_u64() % 2) as usize
            } else {
                1 + (rng.next_u64() % 2) as usize
            }
        }
        _ => 0,
    };
    if radius > 0 {
        box_blur(&mut img, w, h, radius);
        box_blur(&mut img, w, h, radius);
    }
    let sigma = match spec.class {
        Class::Noise => rng.range(14.0, 22.0),
        _ => 3.0,
    };
    let data = out_buffer(out, spec.width, spec.height);
    for (o, v) in data.iter_mut().zip(img.iter()) {
        let n = v + sigma * rng.normal();
        *o = n.clamp(0.0, 255.0) as u8;
    }
}

fn out_buffer(out: &mut LumaFrame, width: u32, height: u32) -> &mut [u8] {
    let n = width as usize * height as usize;
    if out.width() != width || out.height() != height {
        *out = LumaFrame::new(width, height, vec![0; n]).unwrap_or_default();
    }
    out.data_mut()
}

fn fill_rect(img: &mut [f32], w: usize, x: f32, y: f32, rw: f32, rh: f32, v: f32) {
    let h = img.len() / w;
    let (x0, y0) = (x.max(0.0) as usize, y.max(0.0) as usize);
    let x1 = ((x + rw) as usize).min(w);
    let y1 = ((y + rh) as usize).min(h);
    for yy in y0..y1 {
        for p in &mut img[yy * w + x0..yy * w + x1] {
            *p = v;
        }
    }
}

/// Things that look a little like codes: nested squares (finder-like, but
/// never three in a QR arrangement), stripes and checkerboards.
fn draw_decoys(img: &mut [f32], w: usize, h: usize, rng: &mut Rng) {
    for k in 0..6 {
        let s = rng.range(0.04, 0.15) * h as f32;
        let x = rng.range(0.0, w as f32 - s);
        let y = rng.range(0.0, h as f32 - s);
        match k % 3 {
            0 => {
                // finder-like 1:1:3:1:1 square
                let u = s / 7.0;
                fill_rect(img, w, x, y, s, s, 30.0);
                fill_rect(img, w, x + u, y + u, 5.0 * u, 5.0 * u, 220.0);
                fill_rect(img, w, x + 2.0 * u, y + 2.0 * u, 3.0 * u, 3.0 * u, 30.0);
            }
            1 => {
                let n = 4 + (rng.next_u64() % 8) as usize;
                let u = s / n as f32;
                for i in 0..n {
                    let v = if i % 2 == 0 { 30.0 } else { 220.0 };
                    fill_rect(img, w, x + i as f32 * u, y, u, s, v);
                }
            }
            _ => {
                let n = 6 + (rng.next_u64() % 10) as usize;
                let u = s / n as f32;
                for i in 0..n {
                    for j in 0..n {
                        let v = if (i + j) % 2 == 0 { 30.0 } else { 220.0 };
                        fill_rect(img, w, x + i as f32 * u, y + j as f32 * u, u, u, v);
                    }
                }
            }
        }
    }
}

/// Separable box blur of the given radius (in place, clamped edges).
fn box_blur(img: &mut [f32], w: usize, h: usize, r: usize) {
    let mut tmp = vec![0f32; w.max(h)];
    let norm = 1.0 / (2 * r + 1) as f32;
    for y in 0..h {
        let row = &mut img[y * w..y * w + w];
        for (x, t) in tmp.iter_mut().take(w).enumerate() {
            let mut s = 0.0;
            for k in 0..=2 * r {
                let xx = (x + k).saturating_sub(r).min(w - 1);
                s += row[xx];
            }
            *t = s * norm;
        }
        row.copy_from_slice(&tmp[..w]);
    }
    for x in 0..w {
        for (y, t) in tmp.iter_mut().take(h).enumerate() {
            let mut s = 0.0;
            for k in 0..=2 * r {
                let yy = (y + k).saturating_sub(r).min(h - 1);
                s += img[yy * w + x];
            }
            *t = s * norm;
        }
        for y in 0..h {
            img[y * w + x] = tmp[y];
        }
    }
}

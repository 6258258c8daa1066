//! QR decoding from 8-bit luma frames.
//!
//! Every decoder sits behind [`QrDecoder`]; the camera, the `decode`
//! subcommand and the benchmark all go through it. Three engines are wrapped
//! ([`engines::Rqrr`], [`engines::Quircs`], [`engines::Rxing`]), plus rxing's
//! zxing-cpp reader on our own local-mean binariser ([`engines::RxingLocal`],
//! [`binarize`]); each can run on a 2x downscaled copy
//! ([`engines::Downscaled`]), and a [`Cascade`] tries
//! a list of decoders in order and stops at the first that finds a code.
//! Which chain is the default was chosen by measurement: see
//! the decode section of `BENCHMARKS.md` (`cargo bench --bench decode`).

pub mod binarize;
pub mod cli;
pub mod engines;
pub mod luma;
pub mod synth;

use serde::Deserialize;

pub use luma::LumaFrame;

/// One code found in a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The payload bytes exactly as stored in the code.
    pub payload: Vec<u8>,
    /// Which engine produced it (for logs and the benchmark).
    pub engine: &'static str,
}

/// A QR decoder. Stateful engines keep scratch buffers between frames, so
/// decoding takes `&mut self`; each consumer (camera thread, CLI) owns one.
pub trait QrDecoder: Send {
    /// A short name for logs and the benchmark table.
    fn name(&self) -> String;
    /// All codes found in `frame`; empty when there is none. Never panics on
    /// any frame contents.
    fn decode(&mut self, frame: &LumaFrame) -> Vec<Decoded>;
}

impl<T: QrDecoder + ?Sized> QrDecoder for Box<T> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn decode(&mut self, frame: &LumaFrame) -> Vec<Decoded> {
        (**self).decode(frame)
    }
}

/// Tries decoders in order and returns the first non-empty result.
pub struct Cascade {
    stages: Vec<Box<dyn QrDecoder>>,
}

impl Cascade {
    pub fn new(stages: Vec<Box<dyn QrDecoder>>) -> Self {
        Cascade { stages }
    }
}

impl QrDecoder for Cascade {
    fn name(&self) -> String {
        self.stages
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(" > ")
    }

    fn decode(&mut self, frame: &LumaFrame) -> Vec<Decoded> {
        for stage in &mut self.stages {
            let found = stage.decode(frame);
            if !found.is_empty() {
                return found;
            }
        }
        Vec::new()
    }
}

/// One step of a configured decoder chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderStage {
    Rqrr,
    Quircs,
    Rxing,
    /// rxing with ZXing's "try harder" hint (every row scanned).
    RxingHard,
    /// rqrr on a 2x box-downscaled copy of the frame.
    RqrrHalf,
    /// quircs on a 2x box-downscaled copy of the frame.
    QuircsHalf,
    /// rxing on a 2x box-downscaled copy of the frame.
    RxingHalf,
    /// rxing's zxing-cpp QR reader on a local-mean binarisation.
    RxingLocal,
    /// `rxing_local` on a 2x box-downscaled copy of the frame.
    RxingLocalHalf,
}

impl DecoderStage {
    pub fn build(self) -> Box<dyn QrDecoder> {
        use engines::{Downscaled, Quircs, Rqrr, Rxing, RxingLocal};
        match self {
            DecoderStage::Rqrr => Box::new(Rqrr),
            DecoderStage::Quircs => Box::new(Quircs::default()),
            DecoderStage::Rxing => Box::new(Rxing { try_harder: false }),
            DecoderStage::RxingHard => Box::new(Rxing { try_harder: true }),
            DecoderStage::RqrrHalf => Box::new(Downscaled::new(Rqrr)),
            DecoderStage::QuircsHalf => Box::new(Downscaled::new(Quircs::default())),
            DecoderStage::RxingHalf => Box::new(Downscaled::new(Rxing { try_harder: false })),
            DecoderStage::RxingLocal => Box::new(RxingLocal::FULL),
            DecoderStage::RxingLocalHalf => Box::new(Downscaled::new(RxingLocal::HALF)),
        }
    }
}

/// The chain chosen by the benchmark (see BENCHMARKS.md, decode section):
/// rxing's zxing-cpp reader on a local-mean binarisation, first on a
/// half-size copy (most codes, about 1 ms), then at full size (small,
/// dim and keystoned codes), then quircs (a few keystoned and rotated far
/// codes the first two miss). It detects more than the previous default
/// (`rxing@1/2 > quircs > rxing`) at a lower median and a lower cost per
/// frame without a code (most frames of an idle kiosk).
pub const DEFAULT_CHAIN: &[DecoderStage] = &[
    DecoderStage::RxingLocalHalf,
    DecoderStage::RxingLocal,
    DecoderStage::Quircs,
];

fn default_chain() -> Vec<DecoderStage> {
    DEFAULT_CHAIN.to_vec()
}

/// `decoder` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// Engines tried in order on each frame; the first that finds a code wins.
    #[serde(default = "default_chain")]
    pub chain: Vec<DecoderStage>,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            chain: default_chain(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecoderConfigError {
    #[error("decoder.chain: must name at least one decoder")]
    EmptyChain,
    #[error("decoder.chain: {0:?} appears more than once")]
    Repeated(DecoderStage),
}

impl DecoderConfig {
    pub fn validate(&self) -> Result<(), DecoderConfigError> {
        if self.chain.is_empty() {
            return Err(DecoderConfigError::EmptyChain);
        }
        for (i, s) in self.chain.iter().enumerate() {
            if self.chain[..i].contains(s) {
                return Err(DecoderConfigError::Repeated(*s));
            }
        }
        Ok(())
    }

    /// Builds the configured decoder (a single engine or a cascade).
    pub fn build(&self) -> Box<dyn QrDecoder> {
        if self.chain.len() == 1 {
            self.chain[0].build()
        } else {
            Box::new(Cascade::new(self.chain.iter().map(|s| s.build()).collect()))
        }
    }
}

#[cfg(test)]
mod tests;

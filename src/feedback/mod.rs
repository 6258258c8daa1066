//! The acknowledgement port: how the kiosk tells the student what happened.
//!
//! The pipeline calls [`Feedback::acknowledge`] exactly once per scan, and for
//! an accepted scan only after the record's transaction is durable. An
//! implementation must return quickly (it runs on the scan path): hardware
//! adapters hand the pattern to their own task and return.

pub mod leds;

use crate::domain::record::AttendanceStatus;
use crate::domain::rules::{RejectReason, ScanKind};

/// What the student should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    Recorded {
        kind: ScanKind,
        status: AttendanceStatus,
    },
    /// A repeat within the cooldown; nothing new was written.
    Duplicate,
    Rejected(RejectReason),
}

impl Ack {
    /// What logs may say: codes only (a rejection's text may quote what a
    /// card carried).
    pub fn log_code(&self) -> String {
        match self {
            Ack::Recorded { kind, status } => {
                format!("recorded:{}:{}", kind.as_str(), status.as_str())
            }
            Ack::Duplicate => "duplicate".to_string(),
            Ack::Rejected(reason) => format!("rejected:{}", reason.code()),
        }
    }
}

pub trait Feedback: Send + Sync {
    fn acknowledge(&self, ack: &Ack);
}

/// Logs acknowledgements; the default until LEDs and a buzzer are configured.
#[derive(Debug, Default)]
pub struct LogFeedback;

impl Feedback for LogFeedback {
    fn acknowledge(&self, ack: &Ack) {
        tracing::debug!(target: "feedback", ack = %ack.log_code(), "acknowledge");
    }
}

/// Fans one acknowledgement out to several outputs (log + LEDs + buzzer).
pub struct FanoutFeedback(pub Vec<std::sync::Arc<dyn Feedback>>);

impl Feedback for FanoutFeedback {
    fn acknowledge(&self, ack: &Ack) {
        for f in &self.0 {
            f.acknowledge(ack);
        }
    }
}

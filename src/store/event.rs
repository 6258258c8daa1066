//! The `Recorded` event: published by the scan pipeline after a scan's
//! transaction has committed, followed by photos, sync and (later) SMS,
//! alerts and retention.
//!
//! Invariants:
//! 1. Publishing never blocks and never fails the scan path: the channel is a
//!    bounded `tokio::sync::broadcast`, whose `send` overwrites the oldest
//!    event for a subscriber that fell behind instead of waiting for it.
//! 2. The channel is never the durable copy. A subscriber that sees
//!    `RecvError::Lagged` catches up from the database (the outbox, the
//!    records); an event only says "look now".
//! 3. `decided` moves forward after every scan the pipeline has decided,
//!    recorded or not, so a follower waiting for one scan's outcome (the
//!    photo worker) knows when "no event" means "not recorded".

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::domain::record::{AttendanceStatus, StudentNumber};
use crate::domain::rules::ScanKind;
use crate::input::SourceKind;

/// One committed scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub record_id: Uuid,
    pub student: StudentNumber,
    pub kind: ScanKind,
    pub status: AttendanceStatus,
    /// The scan's instant as the rules saw it (and the record holds it).
    pub seen_at: DateTime<Utc>,
    pub source: SourceKind,
}

/// Default number of events a subscriber may fall behind before it lags.
pub const DEFAULT_CAPACITY: usize = 256;

/// The publishing side, shared by the pipeline and every follower.
#[derive(Debug)]
pub struct RecordEvents {
    recorded: broadcast::Sender<Recorded>,
    decided: watch::Sender<Option<DateTime<Utc>>>,
    published: AtomicU64,
}

impl RecordEvents {
    pub fn new(capacity: usize) -> Self {
        let (recorded, _) = broadcast::channel(capacity.max(1));
        let (decided, _) = watch::channel(None);
        RecordEvents {
            recorded,
            decided,
            published: AtomicU64::new(0),
        }
    }

    /// Publishes a committed scan. Never blocks; with no subscriber the
    /// event is simply dropped.
    pub fn publish(&self, event: Recorded) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let _ = self.recorded.send(event);
    }

    /// Notes that the scan seen at `seen_at` has been decided (after its
    /// `Recorded`, if any, was published).
    pub fn decided(&self, seen_at: DateTime<Utc>) {
        self.decided.send_replace(Some(seen_at));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Recorded> {
        self.recorded.subscribe()
    }

    pub fn watch_decided(&self) -> watch::Receiver<Option<DateTime<Utc>>> {
        self.decided.subscribe()
    }

    /// Events published since start.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

impl Default for RecordEvents {
    fn default() -> Self {
        RecordEvents::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    fn ev(i: u32) -> Recorded {
        Recorded {
            record_id: Uuid::new_v4(),
            student: StudentNumber::parse(&format!("S{i}")).expect("sn"),
            kind: ScanKind::Login,
            status: AttendanceStatus::Present,
            seen_at: Utc::now(),
            source: SourceKind::Replay,
        }
    }

    #[test]
    fn a_subscriber_that_never_reads_lags_and_publishing_goes_on() {
        let bus = RecordEvents::new(4);
        let mut stuck = bus.subscribe();
        for i in 0..100 {
            bus.publish(ev(i));
        }
        assert_eq!(bus.published(), 100);
        match stuck.try_recv() {
            Err(TryRecvError::Lagged(n)) => assert_eq!(n, 96),
            other => panic!("{other:?}"),
        }
        // After the lag it sees the newest events, still bounded.
        let mut seen = 0;
        while stuck.try_recv().is_ok() {
            seen += 1;
        }
        assert_eq!(seen, 4);
    }
}

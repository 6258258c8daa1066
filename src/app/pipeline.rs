//! The scan pipeline: raw payload -> card -> rules + durable write -> ack.
//!
//! One task runs it, so scans are decided in the order they were seen. The
//! acknowledgement (event `scan_recorded` and the feedback port) happens only
//! after the store has committed; a store failure is acknowledged as a
//! failure, never as a success. After the acknowledgement, a recorded scan
//! is published as a [`Recorded`] event (photos, sync and later SMS, alerts
//! follow it); publishing never waits for a follower.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::health::{Beat, Counters, Health, Level};
use crate::clock::Clock;
use crate::domain::payload::{self, Keyring, PayloadPolicy};
use crate::domain::rules::RejectReason;
use crate::feedback::{Ack, Feedback};
use crate::input::RawScan;
use crate::store::event::{RecordEvents, Recorded};
use crate::store::{ScanOutcome, ScanRequest, StoreHandle};

/// What a scan did, as reported to the control socket and tests.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ScanReport {
    Recorded {
        record_id: String,
        student_number: String,
        kind: String,
        status: String,
        school_date: String,
        session: String,
        correlation_id: String,
    },
    Duplicate {
        student_number: String,
        kind: String,
        correlation_id: String,
    },
    Rejected {
        reason_code: String,
        reason: String,
        correlation_id: String,
    },
}

/// A scan that wants its outcome back (the control socket).
pub type ScanWithReply = (RawScan, oneshot::Sender<ScanReport>);

pub struct Pipeline {
    pub store: StoreHandle,
    pub keyring: Keyring,
    pub policy: PayloadPolicy,
    pub clock: Arc<dyn Clock>,
    pub feedback: Arc<dyn Feedback>,
    pub health: Arc<Health>,
    pub events: Arc<RecordEvents>,
}

fn correlation_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// What the logs may say about a rejected payload: its length only. A card
/// payload is a credential and a JSON card may carry a name or a phone
/// number, so its content is never logged.
fn loggable(payload: &[u8]) -> String {
    format!("{} bytes", payload.len())
}

impl Pipeline {
    /// Runs until `shutdown`, then drains what is already queued.
    pub async fn run(
        self,
        mut scans: mpsc::Receiver<RawScan>,
        mut with_reply: mpsc::Receiver<ScanWithReply>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.health.beat(Beat::Pipeline);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(scan) = scans.recv() => { self.process(scan).await; }
                Some((scan, reply)) = with_reply.recv() => {
                    let report = self.process(scan).await;
                    let _ = reply.send(report);
                }
                _ = tick.tick() => {}
            }
        }
        // Intake has stopped (sources were cancelled first); finish what is queued.
        scans.close();
        with_reply.close();
        let mut drained = 0usize;
        while let Ok(scan) = scans.try_recv() {
            self.process(scan).await;
            drained += 1;
        }
        while let Ok((scan, reply)) = with_reply.try_recv() {
            let _ = reply.send(self.process(scan).await);
            drained += 1;
        }
        tracing::info!(drained, "scan pipeline stopped");
        Ok(())
    }

    /// Processes one scan end to end and acknowledges it.
    pub async fn process(&self, raw: RawScan) -> ScanReport {
        let cid = correlation_id();
        let span = tracing::info_span!("scan", cid = %cid, source = raw.source.as_str());
        self.process_inner(raw, cid).instrument(span).await
    }

    async fn process_inner(&self, raw: RawScan, cid: String) -> ScanReport {
        let started = Instant::now();
        let c = &self.health.counters;
        let card = match payload::parse(&raw.payload, &self.keyring, self.policy) {
            Ok(card) => card,
            Err(e) => {
                tracing::info!(reason_code = e.code(), payload = %loggable(&raw.payload), "scan_rejected");
                Counters::inc(&c.scans_rejected);
                let reason = RejectReason::InvalidPayload(e);
                self.feedback.acknowledge(&Ack::Rejected(reason.clone()));
                self.events.decided(self.clock.map(raw.seen_at));
                return rejected(&reason, cid);
            }
        };
        let seen_at = self.clock.map(raw.seen_at);
        let source = raw.source;
        let req = ScanRequest {
            student_number: card.student_number.clone(),
            seen_at,
            source,
            clock_synced: self.clock.is_synchronized(),
        };
        let result = self
            .store
            .call(move |s| s.record_scan(&req))
            .await
            .and_then(|r| r);
        let report = self.acknowledge(result, &card.student_number, seen_at, source, started, cid);
        self.events.decided(seen_at);
        report
    }

    fn acknowledge(
        &self,
        result: Result<ScanOutcome, crate::store::StoreError>,
        card_student: &crate::domain::record::StudentNumber,
        seen_at: chrono::DateTime<chrono::Utc>,
        source: crate::input::SourceKind,
        started: Instant,
        cid: String,
    ) -> ScanReport {
        let c = &self.health.counters;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(ScanOutcome::Recorded {
                record_id,
                student_number,
                kind,
                status,
                school_date,
                session,
            }) => {
                self.health.clear("store");
                Counters::inc(&c.scans_recorded);
                // The commit is durable: only now may the kiosk say "recorded".
                tracing::info!(
                    record_id = %record_id,
                    student_number = %student_number,
                    kind = kind.as_str(),
                    status = status.as_str(),
                    session = %session,
                    school_date = %school_date,
                    latency_ms = elapsed_ms,
                    "scan_recorded"
                );
                self.feedback.acknowledge(&Ack::Recorded { kind, status });
                self.events.publish(Recorded {
                    record_id,
                    student: student_number.clone(),
                    kind,
                    status,
                    seen_at,
                    source,
                });
                ScanReport::Recorded {
                    record_id: record_id.to_string(),
                    student_number: student_number.to_string(),
                    kind: kind.as_str().into(),
                    status: status.as_str().into(),
                    school_date: school_date.to_string(),
                    session,
                    correlation_id: cid,
                }
            }
            Ok(ScanOutcome::Duplicate {
                student_number,
                kind,
            }) => {
                Counters::inc(&c.scans_duplicate);
                tracing::info!(student_number = %student_number, kind = kind.as_str(), "scan_duplicate");
                self.feedback.acknowledge(&Ack::Duplicate);
                ScanReport::Duplicate {
                    student_number: student_number.to_string(),
                    kind: kind.as_str().into(),
                    correlation_id: cid,
                }
            }
            Ok(ScanOutcome::Rejected {
                student_number,
                reason,
            }) => {
                Counters::inc(&c.scans_rejected);
                tracing::info!(
                    student_number = student_number.as_ref().map(|s| s.as_str()),
                    reason_code = reason.code(),
                    reason = %reason,
                    "scan_rejected"
                );
                self.feedback.acknowledge(&Ack::Rejected(reason.clone()));
                rejected(&reason, cid)
            }
            Err(e) => {
                Counters::inc(&c.scans_failed);
                let why = if e.is_disk_full() {
                    "data partition is full".to_string()
                } else {
                    e.to_string()
                };
                self.health.set(
                    "store",
                    Level::Unhealthy,
                    format!("last write failed: {why}"),
                );
                tracing::error!(error = %e, student_number = %card_student, "scan_failed: not recorded");
                let reason = RejectReason::Unavailable(why);
                self.feedback.acknowledge(&Ack::Rejected(reason.clone()));
                rejected(&reason, cid)
            }
        }
    }
}

fn rejected(reason: &RejectReason, cid: String) -> ScanReport {
    ScanReport::Rejected {
        reason_code: reason.code().into(),
        reason: reason.to_string(),
        correlation_id: cid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_logged_by_length_only() {
        let card = br#"{"student_number": "Juan Dela Cruz", "phone": "+639171234567"}"#;
        let l = loggable(card);
        assert_eq!(l, format!("{} bytes", card.len()));
        assert!(!l.contains("Juan") && !l.contains("+63917"));
    }

    /// A subscriber that never reads (and one that is dropped) must not stop
    /// or hold back a single commit: every scan is recorded, every event
    /// published, and the stuck one only sees that it lagged. (Latency under
    /// load is measured by `benches/scan_load.rs`, not timed here.)
    #[tokio::test]
    async fn a_stuck_subscriber_never_holds_back_the_scan_path() {
        use crate::clock::SimulatedClock;
        use crate::domain::record::StudentNumber;
        use crate::domain::schedule::{Schedule, ScheduleConfig};
        use crate::feedback::LogFeedback;
        use crate::input::SourceKind;
        use crate::store::{Store, StudentRow};
        use tokio::sync::broadcast::error::TryRecvError;

        const SCANS: usize = 300;
        let dir = tempfile::tempdir().expect("tmp");
        let sched = Schedule::from_config(&ScheduleConfig::default(), "schedule").expect("sched");
        let mut store = Store::open(
            &dir.path().join("a.sqlite3"),
            "test",
            sched,
            chrono::Duration::minutes(5),
            std::time::Duration::from_secs(5),
        )
        .expect("open");
        let roster: Vec<StudentRow> = (0..SCANS)
            .map(|i| StudentRow::bare(StudentNumber::parse(&format!("T-{i:04}")).expect("sn")))
            .collect();
        store.import_students(&roster).expect("roster");
        let (handle, closed) = StoreHandle::spawn(store, 16).expect("spawn");
        // Capacity 4: the stuck subscriber overflows after four scans.
        let events = Arc::new(RecordEvents::new(4));
        let mut stuck = events.subscribe();
        drop(events.subscribe());
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-23T06:45:00+08:00")
            .expect("time")
            .to_utc();
        let pipeline = Pipeline {
            store: handle.clone(),
            keyring: Keyring::new(),
            policy: PayloadPolicy::default(),
            clock: Arc::new(SimulatedClock::new(start, 1)),
            feedback: Arc::new(LogFeedback),
            health: Arc::new(Health::new(std::time::Duration::from_secs(10))),
            events: events.clone(),
        };
        for i in 0..SCANS {
            let report = pipeline
                .process(RawScan::now(format!("T-{i:04}"), SourceKind::Replay))
                .await;
            assert!(matches!(report, ScanReport::Recorded { .. }), "{report:?}");
        }
        assert_eq!(events.published(), SCANS as u64);
        let n = handle
            .call(|s| s.record_count())
            .await
            .expect("call")
            .expect("count");
        assert_eq!(n, SCANS as i64, "every scan committed");
        match stuck.try_recv() {
            Err(TryRecvError::Lagged(missed)) => assert_eq!(missed, (SCANS - 4) as u64),
            other => panic!("the stuck subscriber should have lagged: {other:?}"),
        }
        drop(pipeline);
        drop(handle);
        closed.wait().await;
    }
}

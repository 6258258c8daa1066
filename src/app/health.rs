//! Liveness and health, shared by /health, STATUS= and the watchdog.
//!
//! Liveness: the scan pipeline and the database thread each "beat" when they
//! prove they work (the pipeline on every loop turn, the store on a real
//! query). The systemd watchdog is fed only while both beats are fresh, so a
//! wedged database or a stuck pipeline gets the daemon restarted.
//!
//! Health adds conditions reported by components: `degraded` (the kiosk still
//! records scans, e.g. the camera is gone but the USB scanner works) and
//! `unhealthy` (it does not, e.g. the database cannot write).
//!
//! Inputs (camera, HID scanner) also report whether they are connected. An
//! absent input is no fault (a kiosk may have only a scanner, and a camera
//! set to "auto" may be absent by design); only when every configured input
//! is absent is the kiosk degraded, because then it cannot take a scan.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Degraded,
    Unhealthy,
}

/// Whether a scan input is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Not known yet (the first search is still running).
    Starting,
    Present,
    Absent,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputReport {
    pub presence: Presence,
    /// The device in use, or why there is none.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub level: Level,
    pub reason: String,
}

/// Which loops must keep beating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Pipeline,
    Store,
}

pub struct Health {
    started: Instant,
    liveness_timeout: Duration,
    pipeline_ms: AtomicU64,
    store_ms: AtomicU64,
    conditions: Mutex<BTreeMap<String, Condition>>,
    inputs: Mutex<BTreeMap<String, InputReport>>,
    pub counters: Counters,
}

#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub scans_recorded: AtomicU64,
    pub scans_duplicate: AtomicU64,
    pub scans_rejected: AtomicU64,
    pub scans_failed: AtomicU64,
}

impl Counters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub status: Level,
    pub uptime_s: u64,
    pub pipeline_beat_age_ms: u64,
    pub store_beat_age_ms: u64,
    pub conditions: BTreeMap<String, Condition>,
    /// Configured scan inputs and whether each is connected.
    pub inputs: BTreeMap<String, InputReport>,
    pub scans_recorded: u64,
    pub scans_duplicate: u64,
    pub scans_rejected: u64,
    pub scans_failed: u64,
}

impl Health {
    pub fn new(liveness_timeout: Duration) -> Self {
        Health {
            started: Instant::now(),
            liveness_timeout,
            pipeline_ms: AtomicU64::new(0),
            store_ms: AtomicU64::new(0),
            conditions: Mutex::new(BTreeMap::new()),
            inputs: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn beat(&self, which: Beat) {
        let now = self.now_ms();
        match which {
            Beat::Pipeline => self.pipeline_ms.store(now, Ordering::Relaxed),
            Beat::Store => self.store_ms.store(now, Ordering::Relaxed),
        }
    }

    fn age(&self, which: Beat) -> u64 {
        let at = match which {
            Beat::Pipeline => self.pipeline_ms.load(Ordering::Relaxed),
            Beat::Store => self.store_ms.load(Ordering::Relaxed),
        };
        self.now_ms().saturating_sub(at)
    }

    /// Whether the loops that prove the device works are alive.
    pub fn alive(&self) -> bool {
        let limit = self.liveness_timeout.as_millis() as u64;
        self.age(Beat::Pipeline) <= limit && self.age(Beat::Store) <= limit
    }

    /// Sets (or with `Level::Ok`, clears) a component's condition.
    pub fn set(&self, component: &str, level: Level, reason: impl Into<String>) {
        let mut c = self.conditions.lock().unwrap_or_else(|p| p.into_inner());
        if level == Level::Ok {
            c.remove(component);
        } else {
            c.insert(
                component.to_string(),
                Condition {
                    level,
                    reason: reason.into(),
                },
            );
        }
    }

    pub fn clear(&self, component: &str) {
        self.set(component, Level::Ok, "");
    }

    /// Records whether a scan input is connected.
    pub fn set_input(&self, input: &str, presence: Presence, detail: impl Into<String>) {
        self.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                input.to_string(),
                InputReport {
                    presence,
                    detail: detail.into(),
                },
            );
    }

    pub fn report(&self) -> Report {
        let mut conditions = self
            .conditions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let inputs = self
            .inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !inputs.is_empty() && inputs.values().all(|i| i.presence == Presence::Absent) {
            let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
            conditions.insert(
                "inputs".into(),
                Condition {
                    level: Level::Degraded,
                    reason: format!("no scan input connected ({} absent)", names.join(", ")),
                },
            );
        }
        let mut status = conditions
            .values()
            .map(|c| c.level)
            .max()
            .unwrap_or(Level::Ok);
        if !self.alive() {
            status = Level::Unhealthy;
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Report {
            status,
            uptime_s: self.started.elapsed().as_secs(),
            pipeline_beat_age_ms: self.age(Beat::Pipeline),
            store_beat_age_ms: self.age(Beat::Store),
            conditions,
            inputs,
            scans_recorded: load(&self.counters.scans_recorded),
            scans_duplicate: load(&self.counters.scans_duplicate),
            scans_rejected: load(&self.counters.scans_rejected),
            scans_failed: load(&self.counters.scans_failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_beats_make_the_daemon_unhealthy() {
        let h = Health::new(Duration::from_millis(30));
        h.beat(Beat::Pipeline);
        h.beat(Beat::Store);
        assert!(h.alive());
        assert_eq!(h.report().status, Level::Ok);
        std::thread::sleep(Duration::from_millis(60));
        h.beat(Beat::Pipeline);
        assert!(!h.alive(), "store beat is stale");
        assert_eq!(h.report().status, Level::Unhealthy);
    }

    #[test]
    fn conditions_raise_the_level_and_clear() {
        let h = Health::new(Duration::from_secs(60));
        h.set("camera", Level::Degraded, "no device");
        assert_eq!(h.report().status, Level::Degraded);
        h.set("disk", Level::Unhealthy, "full");
        assert_eq!(h.report().status, Level::Unhealthy);
        h.clear("disk");
        h.clear("camera");
        assert_eq!(h.report().status, Level::Ok);
    }

    #[test]
    fn an_absent_input_is_reported_but_degrades_only_when_all_are_absent() {
        let h = Health::new(Duration::from_secs(60));
        h.beat(Beat::Pipeline);
        h.beat(Beat::Store);
        h.set_input("camera", Presence::Absent, "no camera");
        h.set_input("hid_scanner", Presence::Starting, "");
        assert_eq!(h.report().status, Level::Ok, "scanner may still appear");
        h.set_input("hid_scanner", Presence::Present, "/dev/input/event1");
        let r = h.report();
        assert_eq!(r.status, Level::Ok);
        assert_eq!(r.inputs["camera"].presence, Presence::Absent);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["inputs"]["camera"]["presence"], "absent");
        h.set_input("hid_scanner", Presence::Absent, "unplugged");
        let r = h.report();
        assert_eq!(r.status, Level::Degraded);
        assert!(
            r.conditions["inputs"]
                .reason
                .contains("camera, hid_scanner")
        );
    }
}

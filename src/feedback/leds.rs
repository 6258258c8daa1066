//! LEDs and a buzzer as Linux LED-class devices (`/sys/class/leds/<name>/`).
//!
//! Green means recorded, red means rejected; "late" and "unknown student"
//! have their own blink patterns, and the buzzer (an LED-class GPIO, e.g.
//! from the `gpio-leds` device tree binding) beeps along. `acknowledge`
//! only hands the pattern to the LED thread (never blocks the scan path); a
//! new acknowledgement preempts a pattern still playing. Configured devices
//! that do not exist are a logged warning, not an error.
//!
//! `green`/`red` = `"auto"` use the Raspberry Pi's own LEDs: the green
//! activity LED (`ACT`, named `led0` by kernels before 6.1) and the red
//! power LED (`PWR`, formerly `led1`), whichever name exists.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use serde::Deserialize;

use super::{Ack, Feedback};
use crate::domain::record::AttendanceStatus;
use crate::domain::rules::RejectReason;

fn default_root() -> PathBuf {
    PathBuf::from("/sys/class/leds")
}
fn default_on_ms() -> u64 {
    800
}
fn default_blink_ms() -> u64 {
    150
}
fn default_beep_ms() -> u64 {
    90
}

/// `leds` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedsConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Where LED-class devices live (changed only for tests).
    #[serde(default = "default_root")]
    pub sysfs_root: PathBuf,
    /// LED names under the root, e.g. `kiosk:green:status`, or `"auto"`
    /// for the Raspberry Pi's ACT (green) and PWR (red) LEDs.
    #[serde(default)]
    pub green: Option<String>,
    #[serde(default)]
    pub red: Option<String>,
    #[serde(default)]
    pub buzzer: Option<String>,
    /// Length of a solid "recorded" / "rejected" light.
    #[serde(default = "default_on_ms")]
    pub on_ms: u64,
    /// Half period of a blink.
    #[serde(default = "default_blink_ms")]
    pub blink_ms: u64,
    /// Length of a short beep.
    #[serde(default = "default_beep_ms")]
    pub beep_ms: u64,
}

impl Default for LedsConfig {
    fn default() -> Self {
        LedsConfig {
            enabled: false,
            sysfs_root: default_root(),
            green: None,
            red: None,
            buzzer: None,
            on_ms: default_on_ms(),
            blink_ms: default_blink_ms(),
            beep_ms: default_beep_ms(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedsConfigError {
    #[error("leds.{key}: LED name {value:?} must be a plain name (no '/', not empty)")]
    BadName { key: &'static str, value: String },
    #[error("leds.{key}: {value} is outside 10..=5000")]
    Duration { key: &'static str, value: u64 },
    #[error("leds.buzzer: \"auto\" is not available (a board has no buzzer LED); name the device")]
    AutoBuzzer,
}

impl LedsConfig {
    pub fn validate(&self) -> Result<(), LedsConfigError> {
        if self.buzzer.as_deref() == Some(AUTO) {
            return Err(LedsConfigError::AutoBuzzer);
        }
        for (key, v) in [
            ("green", &self.green),
            ("red", &self.red),
            ("buzzer", &self.buzzer),
        ] {
            if let Some(n) = v
                && (n.is_empty() || n.contains('/') || n == "." || n == "..")
            {
                return Err(LedsConfigError::BadName {
                    key,
                    value: n.clone(),
                });
            }
        }
        for (key, value) in [
            ("on_ms", self.on_ms),
            ("blink_ms", self.blink_ms),
            ("beep_ms", self.beep_ms),
        ] {
            if !(10..=5000).contains(&value) {
                return Err(LedsConfigError::Duration { key, value });
            }
        }
        Ok(())
    }
}

/// Which outputs a step turns on (everything else is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lights {
    pub green: bool,
    pub red: bool,
    pub buzzer: bool,
}

/// A pattern: lights held for a duration, one step after another; all off
/// at the end.
pub type Pattern = Vec<(Lights, Duration)>;

const OFF: Lights = Lights {
    green: false,
    red: false,
    buzzer: false,
};

fn blinks(n: usize, on: Lights, half: Duration) -> Pattern {
    let mut p = Vec::new();
    for _ in 0..n {
        p.push((on, half));
        p.push((OFF, half));
    }
    p
}

/// The pattern for an acknowledgement.
pub fn pattern_for(ack: &Ack, cfg: &LedsConfig) -> Pattern {
    let on = Duration::from_millis(cfg.on_ms);
    let blink = Duration::from_millis(cfg.blink_ms);
    let beep = Duration::from_millis(cfg.beep_ms);
    let g = Lights { green: true, ..OFF };
    let gb = Lights { buzzer: true, ..g };
    let r = Lights { red: true, ..OFF };
    let rb = Lights { buzzer: true, ..r };
    match ack {
        // on time: one beep, green steady
        Ack::Recorded {
            status: AttendanceStatus::Present | AttendanceStatus::Excused | AttendanceStatus::Absent,
            ..
        } => vec![(gb, beep), (g, on.saturating_sub(beep))],
        // late: recorded, but green blinks three times with two beeps
        Ack::Recorded {
            status: AttendanceStatus::Late,
            ..
        } => vec![
            (gb, beep),
            (g, blink.saturating_sub(beep)),
            (OFF, blink),
            (gb, beep),
            (g, blink.saturating_sub(beep)),
            (OFF, blink),
            (g, blink),
        ],
        // already recorded: a short green, no beep
        Ack::Duplicate => vec![(g, on / 3)],
        // unknown student: fast red blinking with a long beep
        Ack::Rejected(RejectReason::UnknownStudent(_)) => {
            let mut p = vec![(rb, on / 2)];
            p.extend(blinks(3, r, blink / 2));
            p
        }
        // any other rejection: red steady with two beeps
        Ack::Rejected(_) => vec![
            (rb, beep),
            (r, beep),
            (rb, beep),
            (r, on.saturating_sub(3 * beep)),
        ],
    }
}

/// One LED-class device.
#[derive(Debug)]
struct Led {
    name: String,
    brightness: PathBuf,
    max: String,
    warned: bool,
}

/// The value of `leds.green` / `leds.red` that picks the board's LED.
pub const AUTO: &str = "auto";

/// The LED-class names `"auto"` tries, newest kernel naming first.
fn auto_candidates(key: &str) -> &'static [&'static str] {
    match key {
        "green" => &["ACT", "led0"],
        "red" => &["PWR", "led1"],
        _ => &[],
    }
}

/// The LED name to use for `key`: the configured one, or for `"auto"` the
/// first candidate present under `root`.
pub fn resolve_name(root: &Path, key: &str, name: &str) -> Option<String> {
    if name != AUTO {
        return Some(name.to_string());
    }
    auto_candidates(key)
        .iter()
        .find(|c| root.join(c).join("brightness").exists())
        .map(|c| c.to_string())
}

impl Led {
    fn open(root: &Path, key: &str, name: &Option<String>) -> Option<Led> {
        let configured = name.as_ref()?;
        let Some(name) = resolve_name(root, key, configured) else {
            tracing::warn!(target: "feedback", led = key, root = %root.display(),
                "no board LED found for \"auto\"; this output is disabled");
            return None;
        };
        let name = &name;
        let dir = root.join(name);
        let brightness = dir.join("brightness");
        if !brightness.exists() {
            tracing::warn!(target: "feedback", led = key, name = %name, path = %dir.display(),
                "configured LED not present; this output is disabled");
            return None;
        }
        // A trigger (heartbeat, mmc0, ...) would fight us: switch it off.
        let trigger = dir.join("trigger");
        if trigger.exists()
            && let Err(e) = std::fs::write(&trigger, "none")
        {
            tracing::warn!(target: "feedback", name = %name, error = %e, "cannot clear LED trigger");
        }
        let max = std::fs::read_to_string(dir.join("max_brightness"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| s.parse::<u32>().is_ok_and(|v| v > 0))
            .unwrap_or_else(|| "1".into());
        Some(Led {
            name: name.clone(),
            brightness,
            max,
            warned: false,
        })
    }

    fn set(&mut self, on: bool) {
        let v = if on { self.max.as_str() } else { "0" };
        if let Err(e) = std::fs::write(&self.brightness, v)
            && !self.warned
        {
            self.warned = true;
            tracing::warn!(target: "feedback", name = %self.name, error = %e, "cannot set LED");
        }
    }
}

struct Outputs {
    green: Option<Led>,
    red: Option<Led>,
    buzzer: Option<Led>,
}

impl Outputs {
    fn show(&mut self, l: Lights) {
        for (led, on) in [
            (&mut self.green, l.green),
            (&mut self.red, l.red),
            (&mut self.buzzer, l.buzzer),
        ] {
            if let Some(led) = led {
                led.set(on);
            }
        }
    }
}

/// [`Feedback`] on LED-class devices.
pub struct LedFeedback {
    cfg: LedsConfig,
    tx: SyncSender<Pattern>,
}

impl LedFeedback {
    /// Opens the configured devices (missing ones are warned about and
    /// skipped) and starts the LED thread.
    pub fn start(cfg: LedsConfig) -> std::io::Result<Self> {
        let mut out = Outputs {
            green: Led::open(&cfg.sysfs_root, "green", &cfg.green),
            red: Led::open(&cfg.sysfs_root, "red", &cfg.red),
            buzzer: Led::open(&cfg.sysfs_root, "buzzer", &cfg.buzzer),
        };
        out.show(OFF);
        let (tx, rx) = mpsc::sync_channel::<Pattern>(4);
        std::thread::Builder::new()
            .name("leds".into())
            .spawn(move || {
                let mut next: Option<Pattern> = None;
                loop {
                    let pattern = match next.take() {
                        Some(p) => p,
                        None => match rx.recv() {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    };
                    for (lights, dur) in pattern {
                        out.show(lights);
                        match rx.recv_timeout(dur) {
                            Ok(p) => {
                                next = Some(p); // a newer ack preempts
                                break;
                            }
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => {
                                out.show(OFF);
                                return;
                            }
                        }
                    }
                    out.show(OFF);
                }
                out.show(OFF);
            })?;
        Ok(LedFeedback { cfg, tx })
    }
}

impl Feedback for LedFeedback {
    fn acknowledge(&self, ack: &Ack) {
        let p = pattern_for(ack, &self.cfg);
        tracing::debug!(target: "feedback", ack = %ack.log_code(), steps = p.len(), "led pattern");
        match self.tx.try_send(p) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(target: "feedback", "LED queue full; pattern skipped")
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!(target: "feedback", "LED thread stopped; pattern skipped")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::ScanKind;
    use std::time::Instant;

    fn fake_led(root: &Path, name: &str, max: &str) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("brightness"), "0").expect("w");
        std::fs::write(d.join("max_brightness"), max).expect("w");
        std::fs::write(d.join("trigger"), "[heartbeat] none").expect("w");
    }

    /// A plain file is not sysfs: the LED thread's write truncates before it
    /// writes, so a reader can catch it empty. Real LED attributes are
    /// written whole; read again until the value is there.
    fn read(root: &Path, name: &str) -> String {
        let path = root.join(name).join("brightness");
        for _ in 0..100 {
            let v = std::fs::read_to_string(&path).expect("read");
            if !v.is_empty() {
                return v;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        String::new()
    }

    fn cfg(root: &Path) -> LedsConfig {
        LedsConfig {
            enabled: true,
            sysfs_root: root.to_path_buf(),
            green: Some("kiosk:green".into()),
            red: Some("kiosk:red".into()),
            buzzer: Some("buzzer".into()),
            on_ms: 400,
            blink_ms: 50,
            beep_ms: 20,
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    const PRESENT: Ack = Ack::Recorded {
        kind: ScanKind::Login,
        status: AttendanceStatus::Present,
    };

    #[test]
    fn patterns_differ_per_outcome() {
        let c = LedsConfig::default();
        let present = pattern_for(&PRESENT, &c);
        let late = pattern_for(
            &Ack::Recorded {
                kind: ScanKind::Login,
                status: AttendanceStatus::Late,
            },
            &c,
        );
        let unknown = pattern_for(
            &Ack::Rejected(RejectReason::UnknownStudent("2026-9999".into())),
            &c,
        );
        let inactive = pattern_for(
            &Ack::Rejected(RejectReason::InactiveStudent("2026-0024".into())),
            &c,
        );
        assert!(present.iter().all(|(l, _)| !l.red) && present.iter().any(|(l, _)| l.green));
        assert!(late.iter().all(|(l, _)| !l.red));
        let beeps = |p: &Pattern| {
            p.windows(2)
                .filter(|w| w[0].0.buzzer && !w[1].0.buzzer)
                .count()
                + p.last().is_some_and(|l| l.0.buzzer) as usize
        };
        let blinks = |p: &Pattern, pick: fn(&Lights) -> bool| {
            p.windows(2)
                .filter(|w| pick(&w[0].0) && !pick(&w[1].0))
                .count()
                + 1
        };
        assert_eq!(beeps(&present), 1);
        assert_eq!(beeps(&late), 2);
        assert_eq!(blinks(&late, |l| l.green), 3);
        assert!(unknown.iter().all(|(l, _)| !l.green) && blinks(&unknown, |l| l.red) >= 3);
        assert_ne!(unknown, inactive);
        assert_eq!(beeps(&inactive), 2);
        assert!(
            pattern_for(&Ack::Duplicate, &c)
                .iter()
                .all(|(l, _)| !l.buzzer)
        );
        for p in [&present, &late, &unknown, &inactive] {
            let total: Duration = p.iter().map(|s| s.1).sum();
            assert!(total <= Duration::from_secs(2), "{total:?}");
        }
    }

    #[test]
    fn plays_on_fake_sysfs_and_ends_dark() {
        let root = tempfile::tempdir().expect("tmp");
        fake_led(root.path(), "kiosk:green", "255");
        fake_led(root.path(), "kiosk:red", "1");
        fake_led(root.path(), "buzzer", "1");
        let fb = LedFeedback::start(cfg(root.path())).expect("start");
        assert_eq!(
            std::fs::read_to_string(root.path().join("kiosk:green/trigger")).expect("r"),
            "none"
        );
        let t = Instant::now();
        fb.acknowledge(&PRESENT);
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "acknowledge returns at once"
        );
        wait_for("green on", || read(root.path(), "kiosk:green") == "255");
        assert_eq!(read(root.path(), "kiosk:red"), "0");
        wait_for("green off", || read(root.path(), "kiosk:green") == "0");
        fb.acknowledge(&Ack::Rejected(RejectReason::UnknownStudent("x".into())));
        wait_for("red on", || read(root.path(), "kiosk:red") == "1");
        wait_for("all off", || {
            read(root.path(), "kiosk:red") == "0" && read(root.path(), "buzzer") == "0"
        });
        assert_eq!(read(root.path(), "kiosk:green"), "0");
    }

    #[test]
    fn newer_ack_preempts_a_playing_pattern() {
        let root = tempfile::tempdir().expect("tmp");
        fake_led(root.path(), "kiosk:green", "1");
        fake_led(root.path(), "kiosk:red", "1");
        let mut c = cfg(root.path());
        c.on_ms = 5000;
        c.buzzer = None;
        let fb = LedFeedback::start(c).expect("start");
        fb.acknowledge(&PRESENT);
        wait_for("green on", || read(root.path(), "kiosk:green") == "1");
        fb.acknowledge(&Ack::Rejected(RejectReason::InactiveStudent("x".into())));
        wait_for("red replaces green", || {
            read(root.path(), "kiosk:red") == "1" && read(root.path(), "kiosk:green") == "0"
        });
    }

    #[test]
    fn absent_devices_are_skipped_not_fatal() {
        let root = tempfile::tempdir().expect("tmp");
        fake_led(root.path(), "kiosk:green", "1");
        // red and buzzer are configured but missing
        let fb = LedFeedback::start(cfg(root.path())).expect("missing LEDs are not an error");
        fb.acknowledge(&Ack::Rejected(RejectReason::InactiveStudent("x".into())));
        fb.acknowledge(&PRESENT);
        wait_for("green on", || read(root.path(), "kiosk:green") == "1");
        assert!(!root.path().join("kiosk:red").exists(), "nothing created");
        // a root that does not exist at all
        let mut c = cfg(&root.path().join("nope"));
        c.green = Some("x".into());
        LedFeedback::start(c).expect("start").acknowledge(&PRESENT);
    }

    #[test]
    fn config_validation_names_the_key() {
        let c: LedsConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(c, LedsConfig::default());
        c.validate().expect("valid");
        let c: LedsConfig = serde_json::from_str(r#"{"red": "../../etc"}"#).expect("parse");
        assert!(
            c.validate()
                .expect_err("bad")
                .to_string()
                .starts_with("leds.red")
        );
        let c: LedsConfig = serde_json::from_str(r#"{"beep_ms": 1}"#).expect("parse");
        assert!(
            c.validate()
                .expect_err("bad")
                .to_string()
                .starts_with("leds.beep_ms")
        );
        assert!(serde_json::from_str::<LedsConfig>(r#"{"blue": "x"}"#).is_err());
    }

    #[test]
    fn auto_uses_the_pi_leds_under_either_kernel_naming() {
        for (fixture, green, red, on) in [
            ("pi5-leds.tree", "ACT", "PWR", "1"),
            ("pi3-old-kernel-leds.tree", "led0", "led1", "255"),
        ] {
            let tree = crate::input::fixtures::materialize(fixture);
            let root = tree.path().join("class/leds");
            assert_eq!(resolve_name(&root, "green", AUTO).as_deref(), Some(green));
            assert_eq!(resolve_name(&root, "red", AUTO).as_deref(), Some(red));
            assert_eq!(resolve_name(&root, "buzzer", AUTO), None);
            let c = LedsConfig {
                enabled: true,
                sysfs_root: root.clone(),
                green: Some(AUTO.into()),
                red: Some(AUTO.into()),
                buzzer: None,
                on_ms: 60,
                blink_ms: 20,
                beep_ms: 10,
            };
            c.validate().expect("auto is valid");
            let fb = LedFeedback::start(c).expect("start");
            // The kernel trigger is switched off so it cannot fight the kiosk.
            let trigger = std::fs::read_to_string(root.join(green).join("trigger")).expect("read");
            assert_eq!(trigger, "none");
            // Start dark: the power LED's default-on is overridden.
            wait_for("red off", || read(&root, red) == "0");
            fb.acknowledge(&PRESENT);
            wait_for("green on", || read(&root, green) == on);
            wait_for("green off", || read(&root, green) == "0");
            fb.acknowledge(&Ack::Rejected(RejectReason::InactiveStudent("x".into())));
            wait_for("red on", || read(&root, red) == on);
        }
        // No board LEDs at all: "auto" disables the output, not the daemon.
        let empty = tempfile::tempdir().expect("tmp");
        assert_eq!(resolve_name(empty.path(), "green", AUTO), None);
        let mut c = cfg(empty.path());
        c.green = Some(AUTO.into());
        LedFeedback::start(c).expect("start").acknowledge(&PRESENT);
        let c = LedsConfig {
            buzzer: Some(AUTO.into()),
            ..Default::default()
        };
        assert!(
            c.validate()
                .expect_err("buzzer")
                .to_string()
                .starts_with("leds.buzzer")
        );
    }
}

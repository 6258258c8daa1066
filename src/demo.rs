//! Demo mode: a whole kiosk on a developer's machine.
//!
//! A local data folder, a sample roster, a demo signing key, and a generated
//! stream of scans played against a simulated school morning (the clock
//! starts at 06:50 on a school day and runs `speed` times faster), so within
//! a few minutes a new user sees on-time and late logins, a duplicate, cards
//! that are rejected and why, and the logouts.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{Datelike, NaiveTime, TimeZone, Utc, Weekday};

use crate::domain::payload;
use crate::domain::record::StudentNumber;
use crate::domain::schedule::ScheduleConfig;
use crate::store::StudentRow;

pub const DEMO_KEY_ID: &str = "demo1";

/// The sample roster: 24 students, the last one inactive.
pub fn roster() -> Vec<StudentRow> {
    let names = [
        "Ana Santos",
        "Ben Cruz",
        "Carla Reyes",
        "Dan Lim",
        "Ella Tan",
        "Fe Garcia",
        "Gio Ramos",
        "Hana Uy",
        "Ivan Dela Cruz",
        "Jun Mendoza",
        "Kim Bautista",
        "Lea Torres",
        "Miko Flores",
        "Nina Aquino",
        "Oscar Villanueva",
        "Pia Navarro",
        "Quinn Castillo",
        "Rosa Salazar",
        "Sam Ocampo",
        "Tess Padilla",
        "Uma Javier",
        "Vic Soriano",
        "Wes Aguilar",
        "Xia Morales",
    ];
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            Some(StudentRow {
                student_number: StudentNumber::parse(&format!("2026-{:04}", i + 1)).ok()?,
                full_name: (*name).into(),
                grade: format!("{}", 7 + i % 4),
                section: ["A", "B", "C"][i % 3].into(),
                guardian_phone: Some(format!("+6391700{:05}", i + 1)),
                active: i != names.len() - 1,
            })
        })
        .collect()
}

/// Creates (or reuses) the demo folder; returns the device config path.
pub fn prepare(dir: &Path, http_listen: &str) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let data_dir = dir.join("data");
    let keys = data_dir.join("secrets").join("qr-keys");
    fs::create_dir_all(&keys).with_context(|| format!("creating {}", keys.display()))?;
    fs::set_permissions(data_dir.join("secrets"), fs::Permissions::from_mode(0o700))?;
    let key_file = keys.join(format!("{DEMO_KEY_ID}.key"));
    if !key_file.exists() {
        let key: [u8; 32] = rand::random();
        fs::write(&key_file, hex::encode(key))
            .with_context(|| format!("writing {}", key_file.display()))?;
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600))?;
    }
    // Demo twins of the hardware: LED-class devices as plain files (the real
    // adapter writes them), and a generated camera stream of roster cards.
    let leds = dir.join("leds");
    for led in ["green", "red", "buzzer"] {
        let d = leds.join(led);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        for (file, value) in [
            ("brightness", "0"),
            ("trigger", "none"),
            ("max_brightness", "1"),
        ] {
            fs::write(d.join(file), value)
                .with_context(|| format!("writing {}", d.join(file).display()))?;
        }
    }
    let config = serde_json::json!({
        "device_id": "demo-kiosk",
        "data_dir": data_dir,
        "http": { "listen": http_listen },
        "log": { "level": "info,feedback=debug" },
        "schedule": ScheduleConfig::default(),
        "camera": { "enabled": true, "demo": true, "width": 640, "height": 480, "fps": 10 },
        "leds": { "enabled": true, "sysfs_root": leds, "green": "green", "red": "red", "buzzer": "buzzer" },
    });
    let path = dir.join("config.json");
    fs::write(&path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// 06:50 school time on today's date, or the next school day's.
pub fn morning_start(schedule: &crate::domain::schedule::Schedule) -> chrono::DateTime<Utc> {
    let mut date = Utc::now().with_timezone(&schedule.tz).date_naive();
    for _ in 0..7 {
        if schedule.school_days.contains(&date.weekday()) {
            break;
        }
        date = date.succ_opt().unwrap_or(date);
    }
    if schedule.school_days.is_empty() && date.weekday() == Weekday::Sun {
        date = date.succ_opt().unwrap_or(date);
    }
    let local = date.and_time(NaiveTime::from_hms_opt(6, 50, 0).unwrap_or(NaiveTime::MIN));
    schedule
        .tz
        .from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}

/// The scripted morning, as (real pause before, payload). `speed` is the
/// simulated clock's speed: one real second is `speed` school seconds.
pub fn script(speed: u32, key: &[u8]) -> anyhow::Result<Vec<(Duration, Vec<u8>)>> {
    let real = |school_minutes: f64| {
        Duration::from_secs_f64(school_minutes * 60.0 / f64::from(speed.max(1)))
    };
    let students = roster();
    let sn = |i: usize| students[i].student_number.to_string();
    let mut s: Vec<(Duration, Vec<u8>)> = Vec::new();
    // 06:50 -> 07:28: logins two school minutes apart; after 07:15 they are late.
    for i in 0..18 {
        s.push((real(2.0), sn(i).into_bytes()));
        if i == 3 {
            s.push((real(0.5), sn(i).into_bytes())); // a nervous double scan: duplicate
        }
        if i == 6 {
            s.push((real(0.5), b"2026-9999".to_vec())); // not on the roster
        }
        if i == 9 {
            s.push((real(0.5), b"{\"student_number\": \"2026-0010\"".to_vec())); // damaged code
        }
        if i == 12 {
            s.push((real(0.5), sn(23).into_bytes())); // inactive student
        }
    }
    // A signed card.
    let signed = payload::sign(DEMO_KEY_ID, key, &students[18].student_number)
        .map_err(anyhow::Error::msg)?;
    s.push((real(0.5), signed.into_bytes()));
    // 07:29 -> 09:00: someone arrives after the login window closed.
    s.push((real(90.0), sn(19).into_bytes()));
    // -> 11:31: logouts.
    s.push((real(151.0), sn(0).into_bytes()));
    for i in 1..12 {
        s.push((real(1.5), sn(i).into_bytes()));
    }
    Ok(s)
}

pub fn read_demo_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir
        .join("secrets")
        .join("qr-keys")
        .join(format!("{DEMO_KEY_ID}.key"));
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roster_is_valid_and_script_reaches_logouts() {
        assert_eq!(roster().len(), 24);
        assert!(!roster()[23].active);
        let s = script(120, &[7u8; 32]).unwrap();
        let total: Duration = s.iter().map(|(d, _)| *d).sum();
        // 06:50 + total*120 must pass 11:30 (280 school minutes).
        assert!(total.as_secs_f64() * 120.0 / 60.0 > 280.0);
        assert!(
            total.as_secs_f64() < 200.0,
            "the demo shows logouts within a few minutes"
        );
    }
}

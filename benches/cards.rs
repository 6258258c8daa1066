//! Card verification cost: how long the kiosk spends checking one card's
//! signature, `ATT2` (Ed25519) beside `ATT1` (HMAC-SHA256) and a plain card,
//! through the same `payload::parse` the scan pipeline calls. Writes the
//! `cards` section of BENCHMARKS.md.
//!
//! `cargo bench --bench cards` (release profile).

use std::time::Instant;

#[path = "report.rs"]
mod report;

use attendance::domain::payload::{self, CardSigningKey, Keyring, PayloadPolicy};
use attendance::domain::record::StudentNumber;

const ROUNDS: usize = 15;
const PER_ROUND: usize = 2000;

/// Median and p99 (over rounds) of the mean time per parse, in microseconds.
fn measure(payloads: &[String], keys: &Keyring) -> (f64, f64) {
    let policy = PayloadPolicy::default();
    let mut per_parse = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for p in payloads.iter().cycle().take(PER_ROUND) {
            let card = payload::parse(std::hint::black_box(p.as_bytes()), keys, policy);
            assert!(card.is_ok(), "{card:?}");
        }
        per_parse.push(t.elapsed().as_secs_f64() * 1e6 / PER_ROUND as f64);
    }
    per_parse.sort_by(f64::total_cmp);
    (
        per_parse[ROUNDS / 2],
        per_parse[((ROUNDS - 1) as f64 * 0.99).round() as usize],
    )
}

fn main() {
    let office = CardSigningKey::from_seed(&[42u8; 32]).expect("seed");
    let hmac_key = [7u8; 32];
    let mut keys = Keyring::new();
    keys.insert_public("s2026", &office.public_key())
        .expect("public key");
    keys.insert("k1", hmac_key.to_vec()).expect("hmac key");
    let students: Vec<StudentNumber> = (0..64)
        .map(|i| StudentNumber::parse(&format!("2026-{i:04}")).expect("number"))
        .collect();
    let ed: Vec<String> = students
        .iter()
        .map(|s| payload::sign_ed25519("s2026", &office, s).expect("sign"))
        .collect();
    let hmac: Vec<String> = students
        .iter()
        .map(|s| payload::sign("k1", &hmac_key, s).expect("sign"))
        .collect();
    let plain: Vec<String> = students.iter().map(|s| s.to_string()).collect();
    let (ed_med, ed_p99) = measure(&ed, &keys);
    let (hm_med, hm_p99) = measure(&hmac, &keys);
    let (pl_med, pl_p99) = measure(&plain, &keys);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let body = format!(
        "## Card verification\n\n\
         Command: `cargo bench --bench cards` (release profile; writes this section).  \n\
         Machine: {cpu}, one thread, other builds running. Each figure: median (and worst round) over \
         {ROUNDS} rounds of the mean time of {PER_ROUND} `payload::parse` calls on 64 different \
         valid cards (UTF-8 check, split, base64, signature check).\n\n\
         | card | per card, median | worst round | card length |\n\
         |---|---|---|---|\n\
         | `ATT2` Ed25519 (`verify_strict`) | {ed_med:.1} µs | {ed_p99:.1} µs | {} bytes |\n\
         | `ATT1` HMAC-SHA256 | {hm_med:.2} µs | {hm_p99:.2} µs | {} bytes |\n\
         | plain student number | {pl_med:.2} µs | {pl_p99:.2} µs | {} bytes |\n\n\
         Not measured on a Raspberry Pi; compare with the scan-to-durable-ack latency (core \
         section) and the per-frame decode time (decode section) on the same machine.",
        ed[0].len(),
        hmac[0].len(),
        plain[0].len()
    );
    println!("{body}");
    report::write_section("cards", &body);
}

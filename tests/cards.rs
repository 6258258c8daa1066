//! Ed25519 cards end to end with the real binary: the office makes a key
//! pair and signs cards; the kiosk holds only the public key, accepts the
//! cards and, with `scan.accept_hmac: false`, refuses HMAC cards.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

fn run(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn scan(k: &Kiosk, payload: &str) -> serde_json::Value {
    let out = k.cmd().args(["scan", payload]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "scan output: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn office_signs_kiosk_verifies_with_the_public_key_only() {
    let k = Kiosk::with_config(serde_json::json!({
        "scan": {"accept_unsigned": false, "accept_hmac": false},
    }));
    k.import("S", 3);
    let office = k.dir.path().join("office");
    let mut keygen = k.cmd();
    keygen.args(["cards", "keygen", "--key-id", "s2026", "--out"]);
    keygen.arg(&office);
    run(keygen);
    let secret = office.join("s2026.secret");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The kiosk gets the public key only (and an HMAC key from before).
    let keys = k.data.join("secrets/qr-keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(office.join("s2026.pub"), keys.join("s2026.pub")).unwrap();
    std::fs::write(keys.join("k1.key"), "ab".repeat(32)).unwrap();
    for f in ["s2026.pub", "k1.key"] {
        std::fs::set_permissions(keys.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    let mut sign = k.cmd();
    sign.args(["cards", "sign", "--key-id", "s2026", "--key"])
        .arg(&secret)
        .args(["S-0001", "S-0002"]);
    let cards = run(sign);
    let cards: Vec<&str> = cards.lines().collect();
    assert_eq!(cards.len(), 2);
    assert!(
        cards.iter().all(|c| c.starts_with("ATT2:s2026:")),
        "{cards:?}"
    );
    let mut hmac = k.cmd();
    hmac.args(["cards", "sign", "--key-id", "k1", "S-0000"]);
    let hmac_card = run(hmac);
    assert!(hmac_card.starts_with("ATT1:k1:S-0000:"), "{hmac_card}");

    let check = run({
        let mut c = k.cmd();
        c.arg("check-config");
        c
    });
    assert!(
        check.contains("ed25519_key_ids") && check.contains("s2026"),
        "{check}"
    );

    let d = k.spawn(&[]);
    d.wait_ready();
    let r = scan(&k, cards[0]);
    assert_eq!(r["outcome"], "recorded", "{r}");
    // A forged card for another student under the same signature.
    let forged = cards[1].replace("S-0002", "S-0000");
    let r = scan(&k, &forged);
    assert_eq!(r["outcome"], "rejected", "{r}");
    // An HMAC card, valid under the kiosk's old key, is refused by policy.
    let r = scan(&k, hmac_card.trim());
    assert_eq!(r["outcome"], "rejected", "{r}");
    d.wait_for("hmac refused", std::time::Duration::from_secs(5), |l| {
        l.contains("hmac_not_allowed")
    });
    let (status, lines) = d.terminate();
    assert!(status.success());
    // No signature or payload in the logs.
    let sig = cards[0].rsplit(':').next().unwrap();
    assert!(
        lines.iter().all(|l| !l.contains(sig)),
        "a card payload was logged"
    );
}

#[test]
fn check_config_accepts_the_auto_devices_the_image_ships() {
    let k = Kiosk::with_config(serde_json::json!({
        "camera": {"enabled": true, "device": "auto"},
        "hid_scanner": {"enabled": true, "device": "auto"},
        "leds": {"enabled": true, "green": "auto", "red": "auto"},
    }));
    let out = run({
        let mut c = k.cmd();
        c.arg("check-config");
        c
    });
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["camera"]["device"], "auto");
    assert_eq!(v["hid_scanner"]["device"], "auto");
    assert_eq!(v["hid_scanner"]["known_vendor_ids"][0], "0c2e");
    assert_eq!(v["leds"]["green"], "auto");

    std::fs::write(
        &k.config,
        r#"{"hid_scanner": {"enabled": true, "device": "event3"}}"#,
    )
    .unwrap();
    let out = k.cmd().arg("check-config").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hid_scanner.device"), "{err}");
}

//! Key events of a keyboard-emulating QR scanner to text.
//!
//! Scanners type the payload as a US-layout keyboard, holding Shift for
//! upper-case letters and symbols, and finish with Enter. [`KeyDecoder`] is a
//! pure state machine over (key code, value) pairs so it can be tested from
//! recorded event sequences.

use std::time::{Duration, Instant};

use evdev::KeyCode;

/// Character for a key under the US layout: (unshifted, shifted).
pub fn us_char(key: KeyCode) -> Option<(char, char)> {
    let k = key;
    let letters: [(KeyCode, char); 26] = [
        (KeyCode::KEY_A, 'a'),
        (KeyCode::KEY_B, 'b'),
        (KeyCode::KEY_C, 'c'),
        (KeyCode::KEY_D, 'd'),
        (KeyCode::KEY_E, 'e'),
        (KeyCode::KEY_F, 'f'),
        (KeyCode::KEY_G, 'g'),
        (KeyCode::KEY_H, 'h'),
        (KeyCode::KEY_I, 'i'),
        (KeyCode::KEY_J, 'j'),
        (KeyCode::KEY_K, 'k'),
        (KeyCode::KEY_L, 'l'),
        (KeyCode::KEY_M, 'm'),
        (KeyCode::KEY_N, 'n'),
        (KeyCode::KEY_O, 'o'),
        (KeyCode::KEY_P, 'p'),
        (KeyCode::KEY_Q, 'q'),
        (KeyCode::KEY_R, 'r'),
        (KeyCode::KEY_S, 's'),
        (KeyCode::KEY_T, 't'),
        (KeyCode::KEY_U, 'u'),
        (KeyCode::KEY_V, 'v'),
        (KeyCode::KEY_W, 'w'),
        (KeyCode::KEY_X, 'x'),
        (KeyCode::KEY_Y, 'y'),
        (KeyCode::KEY_Z, 'z'),
    ];
    if let Some((_, c)) = letters.iter().find(|(kc, _)| *kc == k) {
        return Some((*c, c.to_ascii_uppercase()));
    }
    let table: [(KeyCode, char, char); 33] = [
        (KeyCode::KEY_1, '1', '!'),
        (KeyCode::KEY_2, '2', '@'),
        (KeyCode::KEY_3, '3', '#'),
        (KeyCode::KEY_4, '4', '$'),
        (KeyCode::KEY_5, '5', '%'),
        (KeyCode::KEY_6, '6', '^'),
        (KeyCode::KEY_7, '7', '&'),
        (KeyCode::KEY_8, '8', '*'),
        (KeyCode::KEY_9, '9', '('),
        (KeyCode::KEY_0, '0', ')'),
        (KeyCode::KEY_MINUS, '-', '_'),
        (KeyCode::KEY_EQUAL, '=', '+'),
        (KeyCode::KEY_LEFTBRACE, '[', '{'),
        (KeyCode::KEY_RIGHTBRACE, ']', '}'),
        (KeyCode::KEY_BACKSLASH, '\\', '|'),
        (KeyCode::KEY_SEMICOLON, ';', ':'),
        (KeyCode::KEY_APOSTROPHE, '\'', '"'),
        (KeyCode::KEY_GRAVE, '`', '~'),
        (KeyCode::KEY_COMMA, ',', '<'),
        (KeyCode::KEY_DOT, '.', '>'),
        (KeyCode::KEY_SLASH, '/', '?'),
        (KeyCode::KEY_SPACE, ' ', ' '),
        (KeyCode::KEY_KP0, '0', '0'),
        (KeyCode::KEY_KP1, '1', '1'),
        (KeyCode::KEY_KP2, '2', '2'),
        (KeyCode::KEY_KP3, '3', '3'),
        (KeyCode::KEY_KP4, '4', '4'),
        (KeyCode::KEY_KP5, '5', '5'),
        (KeyCode::KEY_KP6, '6', '6'),
        (KeyCode::KEY_KP7, '7', '7'),
        (KeyCode::KEY_KP8, '8', '8'),
        (KeyCode::KEY_KP9, '9', '9'),
        (KeyCode::KEY_KPMINUS, '-', '-'),
    ];
    table
        .iter()
        .find(|(kc, _, _)| *kc == k)
        .map(|(_, a, b)| (*a, *b))
}

/// What one key event produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Nothing complete yet.
    Pending,
    /// Enter after at least one character: the payload.
    Payload(String),
    /// The payload grew past the limit; it is discarded up to the next Enter.
    Overflow,
    /// A key with no character (ignored, counted for logs).
    Unmapped(u16),
}

/// Turns key events into payloads.
#[derive(Debug)]
pub struct KeyDecoder {
    shift_left: bool,
    shift_right: bool,
    caps_lock: bool,
    buf: String,
    overflowed: bool,
    last_key: Option<Instant>,
    timeout: Duration,
    max_len: usize,
}

impl KeyDecoder {
    pub fn new(timeout: Duration, max_len: usize) -> Self {
        KeyDecoder {
            shift_left: false,
            shift_right: false,
            caps_lock: false,
            buf: String::new(),
            overflowed: false,
            last_key: None,
            timeout,
            max_len,
        }
    }

    /// Feeds one EV_KEY event (`value`: 1 press, 0 release, 2 autorepeat).
    pub fn key(&mut self, key: KeyCode, value: i32, now: Instant) -> KeyOutcome {
        match key {
            KeyCode::KEY_LEFTSHIFT => {
                self.shift_left = value != 0;
                return KeyOutcome::Pending;
            }
            KeyCode::KEY_RIGHTSHIFT => {
                self.shift_right = value != 0;
                return KeyOutcome::Pending;
            }
            _ => {}
        }
        if value != 1 {
            // releases and autorepeat carry no characters
            return KeyOutcome::Pending;
        }
        // A half-read payload older than the timeout is stale.
        self.expire(now);
        self.last_key = Some(now);
        match key {
            KeyCode::KEY_CAPSLOCK => {
                self.caps_lock = !self.caps_lock;
                KeyOutcome::Pending
            }
            KeyCode::KEY_ENTER | KeyCode::KEY_KPENTER => {
                self.last_key = None;
                let overflowed = std::mem::take(&mut self.overflowed);
                let text = std::mem::take(&mut self.buf);
                if overflowed {
                    KeyOutcome::Overflow
                } else if text.is_empty() {
                    KeyOutcome::Pending
                } else {
                    KeyOutcome::Payload(text)
                }
            }
            other => match us_char(other) {
                Some((lower, upper)) => {
                    let shift = self.shift_left || self.shift_right;
                    let c = if lower.is_ascii_alphabetic() {
                        if shift ^ self.caps_lock { upper } else { lower }
                    } else if shift {
                        upper
                    } else {
                        lower
                    };
                    if self.overflowed {
                        return KeyOutcome::Pending;
                    }
                    if self.buf.len() >= self.max_len {
                        self.buf.clear();
                        self.overflowed = true;
                        return KeyOutcome::Overflow;
                    }
                    self.buf.push(c);
                    KeyOutcome::Pending
                }
                None => KeyOutcome::Unmapped(other.code()),
            },
        }
    }

    /// When a half-read payload would time out (for the reader's timer).
    pub fn deadline(&self) -> Option<Instant> {
        if self.buf.is_empty() && !self.overflowed {
            return None;
        }
        self.last_key.map(|t| t + self.timeout)
    }

    /// Drops a half-read payload whose last key is older than the timeout;
    /// returns how many characters were dropped.
    pub fn expire(&mut self, now: Instant) -> Option<usize> {
        match self.deadline() {
            Some(d) if now >= d => {
                let n = self.buf.len();
                self.buf.clear();
                self.overflowed = false;
                self.last_key = None;
                Some(n)
            }
            _ => None,
        }
    }

    /// Forgets everything (device unplugged: modifier state is lost too).
    pub fn reset(&mut self) {
        *self = KeyDecoder::new(self.timeout, self.max_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a recording in the shape `evtest` prints, one event per line:
    /// `+<ms> type <t> code <c> value <v>`; EV_SYN / EV_MSC lines are kept
    /// and must be ignored by the decoder driver just like on a device.
    fn replay(rec: &str, dec: &mut KeyDecoder) -> Vec<KeyOutcome> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        for line in rec.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ms: u64 = f[0].trim_start_matches('+').parse().expect("time");
            let ty: u16 = f[2].parse().expect("type");
            let code: u16 = f[4].parse().expect("code");
            let value: i32 = f[6].parse().expect("value");
            if ty != 1 {
                continue; // EV_KEY only
            }
            let now = t0 + Duration::from_millis(ms);
            if let Some(n) = dec.expire(now) {
                out.push(KeyOutcome::Unmapped(9000 + n as u16)); // marker for "timed out"
            }
            match dec.key(KeyCode::new(code), value, now) {
                KeyOutcome::Pending => {}
                o => out.push(o),
            }
        }
        out
    }

    /// Builds a recording of `text` + Enter typed like a scanner: MSC_SCAN,
    /// key down, SYN, key up, SYN; Shift wrapped around shifted characters.
    fn record(text: &str, start_ms: u64, step_ms: u64) -> String {
        let mut s = String::new();
        let mut t = start_ms;
        let ev = |s: &mut String, t: u64, code: u16, value: i32| {
            s.push_str(&format!("+{t} type 4 code 4 value 458752\n"));
            s.push_str(&format!("+{t} type 1 code {code} value {value}\n"));
            s.push_str(&format!("+{t} type 0 code 0 value 0\n"));
        };
        for c in text.chars().chain(std::iter::once('\n')) {
            let (code, shift) = if c == '\n' {
                (KeyCode::KEY_ENTER, false)
            } else {
                let mut found = None;
                for code in 0..256u16 {
                    if let Some((a, b)) = us_char(KeyCode::new(code)) {
                        if a == c {
                            found = Some((KeyCode::new(code), false));
                            break;
                        }
                        if b == c {
                            found = Some((KeyCode::new(code), true));
                            break;
                        }
                    }
                }
                found.expect("typeable")
            };
            if shift {
                ev(&mut s, t, KeyCode::KEY_LEFTSHIFT.code(), 1);
            }
            ev(&mut s, t, code.code(), 1);
            t += step_ms;
            ev(&mut s, t, code.code(), 0);
            if shift {
                ev(&mut s, t, KeyCode::KEY_LEFTSHIFT.code(), 0);
            }
            t += step_ms;
        }
        s
    }

    #[test]
    fn recorded_plain_number() {
        // "2024-0001" + Enter in the shape evtest prints for a keyboard-mode
        // scanner (hand-written: EV_MSC scan codes, SYN reports, 1-2 ms keys).
        let rec = "
            +0 type 4 code 4 value 458783
            +0 type 1 code 3 value 1
            +0 type 0 code 0 value 0
            +2 type 1 code 3 value 0
            +2 type 0 code 0 value 0
            +4 type 1 code 11 value 1
            +4 type 0 code 0 value 0
            +6 type 1 code 11 value 0
            +8 type 1 code 3 value 1
            +10 type 1 code 3 value 0
            +12 type 1 code 5 value 1
            +14 type 1 code 5 value 0
            +16 type 1 code 12 value 1
            +18 type 1 code 12 value 0
            +20 type 1 code 11 value 1
            +21 type 1 code 11 value 0
            +22 type 1 code 11 value 1
            +23 type 1 code 11 value 0
            +24 type 1 code 11 value 1
            +25 type 1 code 11 value 0
            +26 type 1 code 2 value 1
            +27 type 1 code 2 value 0
            +28 type 1 code 28 value 1
            +29 type 1 code 28 value 0
            +29 type 0 code 0 value 0
        ";
        let mut dec = KeyDecoder::new(Duration::from_millis(300), 512);
        assert_eq!(
            replay(rec, &mut dec),
            vec![KeyOutcome::Payload("2024-0001".into())]
        );
    }

    #[test]
    fn signed_card_with_shift_and_symbols() {
        let payload = "ATT1:k1:2024-0153:Zx_9-QpL{a}|~\"?";
        let mut dec = KeyDecoder::new(Duration::from_millis(300), 512);
        let out = replay(&record(payload, 0, 2), &mut dec);
        assert_eq!(out, vec![KeyOutcome::Payload(payload.into())]);
    }

    #[test]
    fn right_shift_and_caps_lock() {
        let rec = "
            +0 type 1 code 54 value 1
            +0 type 1 code 30 value 1
            +1 type 1 code 30 value 0
            +1 type 1 code 54 value 0
            +2 type 1 code 58 value 1
            +2 type 1 code 58 value 0
            +3 type 1 code 48 value 1
            +3 type 1 code 48 value 0
            +4 type 1 code 42 value 1
            +4 type 1 code 46 value 1
            +4 type 1 code 46 value 0
            +4 type 1 code 42 value 0
            +5 type 1 code 96 value 1
        ";
        let mut dec = KeyDecoder::new(Duration::from_millis(300), 512);
        // A, caps on: B, caps+shift: c, keypad Enter
        assert_eq!(
            replay(rec, &mut dec),
            vec![KeyOutcome::Payload("ABc".into())]
        );
    }

    #[test]
    fn half_read_payload_times_out_and_next_one_is_clean() {
        let mut rec = record("2024-0001", 0, 2);
        // cut before Enter: drop the last 6 lines (Enter down/up)
        let lines: Vec<&str> = rec.lines().collect();
        let cut = lines[..lines.len() - 6].join("\n");
        rec = format!("{cut}\n{}", record("2024-0002", 2000, 2));
        let mut dec = KeyDecoder::new(Duration::from_millis(300), 512);
        let out = replay(&rec, &mut dec);
        assert_eq!(
            out,
            vec![
                KeyOutcome::Unmapped(9000 + 9),
                KeyOutcome::Payload("2024-0002".into())
            ]
        );
    }

    #[test]
    fn deadline_follows_the_last_key() {
        let mut dec = KeyDecoder::new(Duration::from_millis(300), 512);
        let t = Instant::now();
        assert_eq!(dec.deadline(), None);
        dec.key(KeyCode::KEY_1, 1, t);
        assert_eq!(dec.deadline(), Some(t + Duration::from_millis(300)));
        assert_eq!(dec.expire(t + Duration::from_millis(299)), None);
        assert_eq!(dec.expire(t + Duration::from_millis(300)), Some(1));
        assert_eq!(dec.deadline(), None);
    }

    #[test]
    fn overlong_payload_is_dropped_whole() {
        let mut dec = KeyDecoder::new(Duration::from_millis(300), 8);
        let out = replay(&record("123456789012", 0, 1), &mut dec);
        assert_eq!(out, vec![KeyOutcome::Overflow, KeyOutcome::Overflow]);
        let out = replay(&record("1234", 0, 1), &mut dec);
        assert_eq!(out, vec![KeyOutcome::Payload("1234".into())]);
    }

    #[test]
    fn autorepeat_unmapped_and_lone_enter() {
        let mut dec = KeyDecoder::new(Duration::from_millis(300), 64);
        let t = Instant::now();
        assert_eq!(dec.key(KeyCode::KEY_ENTER, 1, t), KeyOutcome::Pending);
        assert_eq!(dec.key(KeyCode::KEY_5, 1, t), KeyOutcome::Pending);
        assert_eq!(dec.key(KeyCode::KEY_5, 2, t), KeyOutcome::Pending);
        assert_eq!(
            dec.key(KeyCode::KEY_F1, 1, t),
            KeyOutcome::Unmapped(KeyCode::KEY_F1.code())
        );
        assert_eq!(
            dec.key(KeyCode::KEY_ENTER, 1, t),
            KeyOutcome::Payload("5".into())
        );
    }
}

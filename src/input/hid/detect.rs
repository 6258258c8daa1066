//! Finding the keyboard-wedge scanner for `hid_scanner.device = "auto"`.
//!
//! A USB scanner in keyboard mode is a USB HID keyboard; what tells it from
//! a real keyboard is its vendor or its name. The rule, in [`choose`]
//! (pure), over the USB devices with letter, digit and Enter keys:
//! 1. one whose USB vendor id is in `known_vendor_ids` (scanner makers);
//! 2. else one whose name says it is a scanner ("scanner", "barcode", ...);
//! 3. else, when exactly one USB keyboard is connected, that one: a kiosk has
//!    no typing keyboard, so the only keyboard plugged into it is its scanner;
//! 4. else (several unknown keyboards) none: grabbing a person's keyboard
//!    would be worse than asking the admin to name the device.
//!
//! Non-USB keyboards (the PS/2 port, GPIO buttons, virtual devices) are never
//! chosen. Several event nodes of one USB device count as one keyboard (the
//! lowest node is used).
//!
//! [`InputDevices`] lists the devices; [`SysfsInputDevices`] reads
//! `/sys/class/input/eventN/device/` (name, id/, capabilities/key), which
//! needs no access to the device nodes and costs a few file reads, so the
//! reader can poll it while waiting for a scanner to be plugged in. Tests
//! point it at a fake tree (`tests/fixtures/sysfs/*.tree`).

use std::path::{Path, PathBuf};

/// The `hid_scanner.device` value that asks for detection.
pub const AUTO: &str = "auto";

/// USB vendor ids of common scanner makers: Honeywell (and Metrologic)
/// 0c2e, Symbol/Zebra 05e0, Datalogic 05f9, Intermec 067e, Newland 1eab,
/// Mindeo 27dd.
pub fn default_known_vendor_ids() -> Vec<String> {
    ["0c2e", "05e0", "05f9", "067e", "1eab", "27dd"]
        .map(String::from)
        .to_vec()
}

const BUS_USB: u16 = 0x0003;

/// Linux key codes (linux/input-event-codes.h) a keyboard wedge must have.
const KEY_1: usize = 2;
const KEY_0: usize = 11;
const KEY_ENTER: usize = 28;
const KEY_A: usize = 30;
const KEY_Z: usize = 44;

/// One `/dev/input/eventN` as detection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDevice {
    pub event: PathBuf,
    pub number: u32,
    pub name: String,
    pub bustype: u16,
    pub vendor: u16,
    pub product: u16,
    /// Has letters, digits and Enter.
    pub keyboard: bool,
}

/// Why auto-detection chose a device, for the log and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    KnownVendor,
    Name,
    OnlyKeyboard,
}

/// The outcome of [`choose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Found(InputDevice, Reason),
    /// No USB keyboard at all.
    None,
    /// Several USB keyboards, none recognisably a scanner.
    Ambiguous(usize),
}

/// Parses a vendor id from config: 4 hex digits, optionally `0x`-prefixed.
pub fn parse_vendor_id(text: &str) -> Option<u16> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty() || t.len() > 4 {
        return None;
    }
    u16::from_str_radix(t, 16).ok()
}

fn looks_like_scanner(name: &str) -> bool {
    let n = name.to_lowercase();
    ["scanner", "barcode", "bar code", "qr code"]
        .iter()
        .any(|w| n.contains(w))
}

/// Picks the scanner among `devices` (see the module rule).
pub fn choose(devices: &[InputDevice], known_vendors: &[u16]) -> Choice {
    let mut usb: Vec<&InputDevice> = devices
        .iter()
        .filter(|d| d.keyboard && d.bustype == BUS_USB)
        .collect();
    usb.sort_by_key(|d| d.number);
    // One USB device may have several keyboard nodes.
    let mut distinct: Vec<&InputDevice> = Vec::new();
    for d in usb {
        if !distinct
            .iter()
            .any(|e| (e.vendor, e.product, &e.name) == (d.vendor, d.product, &d.name))
        {
            distinct.push(d);
        }
    }
    if let Some(d) = distinct.iter().find(|d| known_vendors.contains(&d.vendor)) {
        return Choice::Found((*d).clone(), Reason::KnownVendor);
    }
    if let Some(d) = distinct.iter().find(|d| looks_like_scanner(&d.name)) {
        return Choice::Found((*d).clone(), Reason::Name);
    }
    match distinct.as_slice() {
        [] => Choice::None,
        [only] => Choice::Found((*only).clone(), Reason::OnlyKeyboard),
        many => Choice::Ambiguous(many.len()),
    }
}

/// Lists the input devices present now; unreadable entries are left out.
pub trait InputDevices: Send + Sync {
    fn devices(&self) -> Vec<InputDevice>;
}

/// The real lister over sysfs.
#[derive(Debug, Clone)]
pub struct SysfsInputDevices {
    /// `/sys/class/input`.
    pub class_dir: PathBuf,
    /// `/dev/input`.
    pub dev_dir: PathBuf,
    /// Bits per word of the `capabilities/key` bitmap: the kernel's `long`.
    pub word_bits: usize,
}

impl Default for SysfsInputDevices {
    fn default() -> Self {
        SysfsInputDevices {
            class_dir: PathBuf::from("/sys/class/input"),
            dev_dir: PathBuf::from("/dev/input"),
            word_bits: 8 * std::mem::size_of::<libc::c_ulong>(),
        }
    }
}

/// Whether bit `bit` is set in a sysfs bitmap (hex words, most significant
/// first, each `word_bits` wide).
fn bitmap_has(text: &str, bit: usize, word_bits: usize) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    let index = bit / word_bits;
    let Some(word) = words.len().checked_sub(index + 1).map(|i| words[i]) else {
        return false;
    };
    u64::from_str_radix(word, 16).is_ok_and(|w| w >> (bit % word_bits) & 1 == 1)
}

fn read_hex_u16(path: &Path) -> Option<u16> {
    u16::from_str_radix(std::fs::read_to_string(path).ok()?.trim(), 16).ok()
}

impl InputDevices for SysfsInputDevices {
    fn devices(&self) -> Vec<InputDevice> {
        let Ok(rd) = std::fs::read_dir(&self.class_dir) else {
            return Vec::new();
        };
        let mut out: Vec<InputDevice> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let number: u32 = name.strip_prefix("event")?.parse().ok()?;
                let dev = e.path().join("device");
                let keys =
                    std::fs::read_to_string(dev.join("capabilities/key")).unwrap_or_default();
                let keyboard = [KEY_1, KEY_0, KEY_ENTER, KEY_A, KEY_Z]
                    .iter()
                    .all(|&k| bitmap_has(&keys, k, self.word_bits));
                Some(InputDevice {
                    event: self.dev_dir.join(&name),
                    number,
                    name: std::fs::read_to_string(dev.join("name"))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default(),
                    bustype: read_hex_u16(&dev.join("id/bustype"))?,
                    vendor: read_hex_u16(&dev.join("id/vendor")).unwrap_or(0),
                    product: read_hex_u16(&dev.join("id/product")).unwrap_or(0),
                    keyboard,
                })
            })
            .collect();
        out.sort_by_key(|d| d.number);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::fixtures::materialize;

    fn devices(fixture: &str) -> Vec<InputDevice> {
        let dir = materialize(fixture);
        SysfsInputDevices {
            class_dir: dir.path().join("class/input"),
            dev_dir: PathBuf::from("/dev/input"),
            word_bits: 64,
        }
        .devices()
    }

    fn known() -> Vec<u16> {
        default_known_vendor_ids()
            .iter()
            .filter_map(|v| parse_vendor_id(v))
            .collect()
    }

    fn chosen(fixture: &str) -> Choice {
        choose(&devices(fixture), &known())
    }

    #[test]
    fn known_vendor_wins_over_a_real_keyboard() {
        // A Pi with a USB keyboard (event0), a mouse, and a Honeywell scanner.
        let Choice::Found(d, reason) = chosen("pi-keyboard-and-honeywell.tree") else {
            panic!()
        };
        assert_eq!(
            (d.event, d.vendor, reason),
            (
                PathBuf::from("/dev/input/event3"),
                0x0c2e,
                Reason::KnownVendor
            )
        );
    }

    #[test]
    fn the_only_usb_keyboard_is_the_scanner() {
        // QEMU: the usb-kbd (vendor 0627) and a power button; no PS/2.
        let Choice::Found(d, reason) = chosen("qemu-usb-kbd.tree") else {
            panic!()
        };
        assert_eq!(d.name, "QEMU QEMU USB Keyboard");
        assert_eq!(reason, Reason::OnlyKeyboard);
        assert_eq!(d.event, PathBuf::from("/dev/input/event1"));
    }

    #[test]
    fn unknown_keyboards_are_not_guessed_between() {
        // Two unknown USB keyboards plus the PS/2 keyboard: ambiguous.
        assert_eq!(chosen("two-unknown-keyboards.tree"), Choice::Ambiguous(2));
        // A vendor list from config resolves it.
        let Choice::Found(d, Reason::KnownVendor) =
            choose(&devices("two-unknown-keyboards.tree"), &[0x1a86])
        else {
            panic!()
        };
        assert_eq!(d.vendor, 0x1a86);
        // Nothing but a mouse and a non-USB keyboard: none.
        assert_eq!(chosen("no-usb-keyboard.tree"), Choice::None);
        assert_eq!(choose(&[], &known()), Choice::None);
    }

    #[test]
    fn scanner_names_and_duplicate_nodes() {
        let d = |n: u32, name: &str, vendor: u16| InputDevice {
            event: PathBuf::from(format!("/dev/input/event{n}")),
            number: n,
            name: name.into(),
            bustype: BUS_USB,
            vendor,
            product: 1,
            keyboard: true,
        };
        let found = choose(
            &[
                d(0, "Dell KB216", 0x413c),
                d(4, "USB Barcode Scanner", 0x1234),
            ],
            &known(),
        );
        assert_eq!(
            found,
            Choice::Found(d(4, "USB Barcode Scanner", 0x1234), Reason::Name)
        );
        // Two nodes of one device are one keyboard; the lower node is used.
        let found = choose(&[d(7, "Gadget", 0x1111), d(6, "Gadget", 0x1111)], &known());
        assert_eq!(
            found,
            Choice::Found(d(6, "Gadget", 0x1111), Reason::OnlyKeyboard)
        );
    }

    #[test]
    fn vendor_ids_and_bitmaps_parse() {
        assert_eq!(parse_vendor_id("0c2e"), Some(0x0c2e));
        assert_eq!(parse_vendor_id("0x05E0"), Some(0x05e0));
        assert_eq!(parse_vendor_id("12345"), None);
        assert_eq!(parse_vendor_id("zz"), None);
        assert_eq!(parse_vendor_id(""), None);
        assert!(known().len() == default_known_vendor_ids().len());
        // 32-bit words (a 32-bit kernel) place the bits differently.
        assert!(bitmap_has("1 0", 32, 32));
        assert!(!bitmap_has("1 0", 32, 64));
        assert!(bitmap_has("10000000", 28, 32));
        assert!(bitmap_has("10000000 0", 60, 32));
        assert!(!bitmap_has("10000000 0", 28, 32));
        assert!(!bitmap_has("", 28, 64));
        assert!(!bitmap_has("zz", 0, 64));
    }
}

"""A USB QR scanner (keyboard wedge) on the kiosk.

QEMU's usb-kbd on the xHCI bus stands in for the scanner: the test types card
payloads on it through QMP `input-send-event`, exactly the key events a
scanner sends (US layout, Shift for symbols, Enter at the end). The daemon
finds it by name through the device configuration an admin would write,
grabs it, and records the scans; they are still there after a reboot.
"""

from conftest import OPEN_ALL_DAY

CARDS = {
    "2026-0001": "2026-0001",                           # plain card
    "2026-0002": '{"student_number":"2026-0002"}',      # JSON card: Shift, braces, quotes
}


def configure_scanner(m):
    cfg = dict(OPEN_ALL_DAY, hid_scanner={"enabled": True, "device_name": "QEMU USB Keyboard"})
    m.write_device_config(cfg)
    m.sh("{ echo student_number,full_name,grade,section,guardian_phone,active; "
         "echo 2026-0001,Ana Cruz,7,A,,true; echo 2026-0002,Ben Reyes,7,A,,true; } > /data/config/roster.csv")
    m.sh("systemctl restart attendance.service", timeout=120)
    m.wait_healthy(timeout=120)
    m.sh("attendance students import /data/config/roster.csv", timeout=60)


def exported(m) -> str:
    _, out = m.sh("attendance export --from $(date -u +%F) --to $(date -u +%F)")
    return out


def test_usb_scanner_scans_are_recorded_and_survive_reboot(machine):
    machine.start()
    machine.wait_healthy()
    configure_scanner(machine)
    machine.sh("timeout 60 sh -c 'until journalctl -u attendance.service -o cat | "
               "grep \"scanner connected\" | grep -q \"QEMU USB Keyboard\"; do sleep 1; done'", timeout=90)
    _, journal = machine.sh("journalctl -u attendance.service -o cat --no-pager")
    assert "cannot grab the scanner" not in journal, journal
    for sn, payload in CARDS.items():
        machine.scanner_type(payload + "\n")
        machine.sh(f"timeout 30 sh -c 'until journalctl -u attendance.service -o cat | "
                   f"grep scan_recorded | grep -q {sn}; do sleep 1; done'", timeout=60)
    # A half-typed payload (no Enter) is dropped after the timeout, and the
    # next card still reads cleanly.
    machine.scanner_type("2026-00")
    rc, _ = machine.sh("timeout 30 sh -c 'until journalctl -u attendance.service -o cat | "
                       "grep -q \"half-read scanner payload timed out\"; do sleep 1; done'",
                       timeout=60, check=False)
    if rc != 0:
        _, journal = machine.sh("journalctl -u attendance.service -o cat --no-pager | tail -20")
        machine.fail(f"the half-typed payload was not dropped:\n{journal}")
    machine.scanner_type("2026-0001\n")  # the same card again: a duplicate, not a garbled payload
    machine.sh("timeout 30 sh -c 'until journalctl -u attendance.service -o cat | "
               "grep scan_duplicate | grep -q 2026-0001; do sleep 1; done'", timeout=60)
    _, journal = machine.sh("journalctl -u attendance.service -o cat --no-pager")
    assert "scan_rejected" not in journal, journal
    before = exported(machine)
    for sn in CARDS:
        assert sn in before, before

    machine.reboot()
    machine.wait_healthy()
    after = exported(machine)
    for sn in CARDS:
        assert sum(sn in line for line in after.splitlines()) == 1, after

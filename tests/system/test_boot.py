"""Boot, read-only root, /data persistence, service and hardware watchdogs.

These checks share one fresh kiosk (module fixture `booted`), in file order:
the cheap read-only checks first, then the ones that disturb it (a stopped
daemon, a kernel hang, a power-off and a second boot).
"""

import json
import secrets
import time

WATCHDOG_SEC = 30  # attendance.service WatchdogSec (image-config)


def test_boot_to_ready_and_health(booted, figures):
    status, body = booted.http_get("/health")
    assert status == 200, body
    assert json.loads(body)["status"] == "ok"
    status, body = booted.http_get("/ping")
    assert (status, body.strip()) == (200, b"pong")
    # Type=notify: "active" means the daemon sent READY=1.
    _, out = booted.sh("systemctl show attendance.service -p Type -p ActiveState -p SubState --value")
    assert out.split() == ["notify", "active", "running"], out
    figures("boot_to_ready_s", booted.ready_after, "s",
            "QEMU start to first GET /health 200 from the host (tests/system test_boot_to_ready_and_health)")


def test_root_is_read_only_and_data_writable(booted):
    _, opts = booted.sh("findmnt -no OPTIONS /")
    assert "ro" in opts.strip().split(","), opts
    rc, out = booted.sh("touch /probe-write 2>&1", check=False)
    assert rc != 0 and "Read-only file system" in out, out
    _, data = booted.sh("findmnt -no FSTYPE,OPTIONS,SOURCE /data; blkid -o value -s LABEL $(findmnt -no SOURCE /data)")
    assert data.split()[0] == "ext4" and "rw" in data.split()[1].split(","), data
    assert data.split()[-1] == "data", data
    booted.sh("echo probe > /data/probe-write && rm /data/probe-write")
    # the daemon's database is on /data
    booted.sh("test -s /data/attendance/db/attendance.sqlite3")


def test_no_failed_units_and_slot_marked_good(booted):
    rc, state = booted.sh("timeout 120 systemctl is-system-running --wait", timeout=150, check=False)
    _, failed = booted.sh("systemctl list-units --failed --no-legend --plain")
    assert failed.strip() == "", f"failed units:\n{failed}"
    assert state.strip() == "running", state
    booted.sh("systemctl is-active attendance-mark-good.service")
    booted_slot, slots = booted.rauc_status()
    assert booted_slot == "A"
    assert slots["rootfs.0"]["boot_status"] == "good", slots


def test_service_watchdog_restarts_a_stopped_daemon(booted, figures):
    _, before = booted.sh("systemctl show attendance.service -p MainPID -p NRestarts --value")
    pid, restarts = before.split()
    t0 = time.time()
    booted.sh(f"kill -STOP {pid}")
    deadline = t0 + WATCHDOG_SEC + 90
    while True:
        _, now = booted.sh("systemctl show attendance.service -p MainPID -p NRestarts -p ActiveState --value")
        new_pid, new_restarts, active = now.split()
        if new_pid not in (pid, "0") and int(new_restarts) > int(restarts) and active == "active":
            break
        assert time.time() < deadline, f"daemon not restarted {deadline - t0:.0f} s after SIGSTOP: {now}"
        time.sleep(2)
    elapsed = time.time() - t0
    _, journal = booted.sh("journalctl -b -u attendance.service --no-pager | grep -i 'watchdog timeout' | tail -1")
    assert "watchdog" in journal.lower(), journal
    # the watchdog fires at most WatchdogSec after the last keep-alive, i.e.
    # within WatchdogSec of the stop; the rest is RestartSec=2 and the new
    # daemon's start up to READY under TCG.
    assert elapsed <= WATCHDOG_SEC + 60, elapsed
    booted.wait_healthy(timeout=120)
    figures("service_watchdog_restart_s", elapsed, "s",
            "SIGSTOP of the daemon to a new READY daemon (WatchdogSec=30, RestartSec=2) (tests/system test_service_watchdog)")


def test_hardware_watchdog_resets_a_hung_kernel(booted, figures):
    _, wd = booted.sh("cat /sys/class/watchdog/watchdog0/identity; "
                      "cat /sys/class/watchdog/watchdog0/timeout; ls /sys/class/watchdog/")
    assert wd.splitlines()[0].strip() == "i6300ESB timer", wd
    assert "watchdog1" not in wd, f"a second watchdog (iTCO_wdt?) is present: {wd}"
    booted.expect_reboot()
    mark = booted.offset()
    first_event = len(booted.events)
    booted.send_line("echo c > /proc/sysrq-trigger")
    booted.wait_for(r"sysrq: Trigger a crash|Kernel panic", 30, since=mark)
    t_hang = time.time()
    booted.wait_for(r"booting slot [AB]", 300, since=mark)
    t_boot = time.time() - t_hang
    events = booted.events[first_event:]
    fired = [e for e in events if e["event"] == "WATCHDOG"]
    assert fired and fired[0]["data"]["action"] == "reset", events
    # the reset is the watchdog's (QEMU ends on it and the harness powers on anew)
    resets = [e for e in events if e["event"] == "SHUTDOWN"]
    assert resets and resets[0]["data"]["reason"] == "guest-reset", events
    ts = fired[0]["timestamp"]
    t_reset = ts["seconds"] + ts["microseconds"] / 1e6 - t_hang
    booted.wait_healthy()
    figures("hang_to_watchdog_reset_s", t_reset, "s",
            "echo c > /proc/sysrq-trigger (panic=0) to QEMU's WATCHDOG reset event; RuntimeWatchdogSec=15s, "
            "i6300esb (tests/system test_hardware_watchdog)")
    figures("hang_to_grub_s", t_boot, "s",
            "the same hang to GRUB booting the slot again (adds a new QEMU and OVMF's cold start)")
    assert 0 < t_reset <= 15 + 5, t_reset


def test_data_survives_power_off(booted, figures):
    token = secrets.token_hex(8)
    booted.sh(f"echo {token} > /data/system-test-token && sync")
    _, db_before = booted.sh("stat -c %s /data/attendance/db/attendance.sqlite3")
    booted.poweroff()
    booted.start()
    after = booted.wait_healthy()
    _, out = booted.sh("cat /data/system-test-token")
    assert out.strip() == token
    booted.sh("test -s /data/attendance/db/attendance.sqlite3")
    _, failed = booted.sh("systemctl list-units --failed --no-legend --plain")
    assert failed.strip() == "", failed
    figures("second_boot_to_ready_s", after, "s", "QEMU start to /health 200 on the second boot (same disk)")

"""The update policy script (attendance-mark-good.service), run against fake
`rauc`, `attendance` and `systemctl` commands that record how they were called."""
import os
import pathlib

import pytest

from conftest import IMAGE_CONFIG, run

SCRIPT = IMAGE_CONFIG / "rootfs/usr/libexec/attendance/mark-good"
SHA_NEW = "9f" * 32
SHA_OLD = "1a" * 32

RAUC = """#!/bin/sh
echo "rauc $*" >> "$CALLS"
case "$*" in
  "status --detailed --output-format=shell")
    [ -n "${RAUC_FAILS:-}" ] && exit 1
    cat <<OUT
RAUC_SYSTEM_BOOTED_BOOTNAME='B'
RAUC_SLOTS='1 2'
RAUC_SLOT_STATE_1='booted'
RAUC_SLOT_BOOTNAME_1='B'
RAUC_SLOT_STATUS_CHECKSUM_SHA256_1='$BOOTED_SHA'
RAUC_SLOT_STATE_2='inactive'
RAUC_SLOT_BOOTNAME_2='A'
RAUC_SLOT_STATUS_CHECKSUM_SHA256_2='ffff'
OUT
    ;;
  "status mark-good booted") exit 0 ;;
  *) exit 3 ;;
esac
"""
ATTENDANCE = """#!/bin/sh
echo "attendance $*" >> "$CALLS"
exit $HEALTH_RC
"""
SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$CALLS"
"""


def policy(tmp: pathlib.Path, healthy: bool, booted_sha: str, proven: str | None = None, **extra):
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("rauc", RAUC), ("attendance", ATTENDANCE), ("systemctl", SYSTEMCTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    proven_dir = tmp / "proven"
    if proven is not None:
        proven_dir.mkdir(exist_ok=True)
        (proven_dir / "B").write_text(proven + "\n")
    calls = tmp / "calls"
    calls.write_text("")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(calls),
               HEALTH_RC="0" if healthy else "1", BOOTED_SHA=booted_sha,
               PROVEN_DIR=str(proven_dir), ATTENDANCE=str(bin_dir / "attendance"),
               HEALTH_WAIT_SECS="7", **extra)
    r = run(["sh", SCRIPT], env=env)
    return r, calls.read_text().splitlines(), proven_dir


def test_healthy_slot_is_marked_good_and_recorded_as_proven(tmp_path):
    r, calls, proven = policy(tmp_path, healthy=True, booted_sha=SHA_NEW)
    assert r.returncode == 0, r.stderr
    assert "attendance health --wait 7" in calls
    assert "rauc status mark-good booted" in calls
    assert calls.index("attendance health --wait 7") < calls.index("rauc status mark-good booted")
    assert (proven / "B").read_text().strip() == SHA_NEW
    assert not any(c.startswith("systemctl") for c in calls)


def test_new_release_that_never_gets_healthy_reboots_for_fallback(tmp_path):
    r, calls, proven = policy(tmp_path, healthy=False, booted_sha=SHA_NEW, proven=SHA_OLD)
    assert r.returncode == 1
    assert "systemctl --no-block reboot" in calls
    assert "rauc status mark-good booted" not in calls
    assert (proven / "B").read_text().strip() == SHA_OLD
    assert "newly installed slot B" in r.stderr


@pytest.mark.parametrize("sha,proven,why", [
    (SHA_NEW, SHA_NEW, "was healthy before"),   # a fault of the device, not of the release
    ("", None, "factory slot B"),                # never installed by RAUC
])
def test_no_reboot_loop_when_the_release_is_not_to_blame(tmp_path, sha, proven, why):
    r, calls, _ = policy(tmp_path, healthy=False, booted_sha=sha, proven=proven)
    assert r.returncode == 1
    assert not any(c.startswith("systemctl") for c in calls), calls
    assert "rauc status mark-good booted" not in calls
    assert why in r.stderr


def test_factory_slot_is_marked_good_without_a_proven_record(tmp_path):
    r, calls, proven = policy(tmp_path, healthy=True, booted_sha="")
    assert r.returncode == 0, r.stderr
    assert "rauc status mark-good booted" in calls
    assert not (proven / "B").exists()


def test_rauc_failure_is_an_error_not_a_reboot(tmp_path):
    r, calls, _ = policy(tmp_path, healthy=False, booted_sha=SHA_NEW, RAUC_FAILS="1")
    assert r.returncode == 1
    assert "does not name a booted slot" in r.stderr
    assert not any(c.startswith(("systemctl", "attendance")) for c in calls), calls

"""pytest fixtures for the kiosk system tests (see kiosk_vm.py)."""

import json
import os
import re
import shutil
import time
from pathlib import Path

import signal
import sys

import pytest

# `timeout` and CI cancel with SIGTERM: exit through Python so kiosk_vm's
# atexit handler kills the QEMU processes.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

from kiosk_vm import REPO, Machine

BUILD = Path(os.environ.get("KIOSK_BUILD_DIR", REPO / "qemu" / "build"))
OUT = Path(os.environ.get("KIOSK_TEST_OUT", BUILD / "system-tests"))
FIGURES = OUT / "figures.json"


@pytest.fixture(scope="session")
def image() -> Path:
    disk = BUILD / "disk.img"
    if not disk.is_file():
        pytest.fail(f"{disk} missing: build it with qemu/build-image (tests/system/run.sh does)")
    return disk


@pytest.fixture(scope="session")
def figures():
    """Measured figures, written to figures.json for the system section of BENCHMARKS.md."""
    OUT.mkdir(parents=True, exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}

    def record(name, value, unit, how):
        data[name] = {"value": round(value, 1) if isinstance(value, float) else value,
                      "unit": unit, "how": how, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        FIGURES.write_text(json.dumps(data, indent=2) + "\n")
    return record


def _workdir(request) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])[:80]
    d = OUT / request.node.module.__name__ / name
    shutil.rmtree(d, ignore_errors=True)
    return d


# A device configuration whose schedule takes logins all day until 22:00
# (fresh kiosks start at 08:00, see school_morning), every day of the week.
OPEN_ALL_DAY = {
    "schedule": {
        "timezone": "UTC",
        "school_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "sessions": [{
            "name": "allday", "start": "00:00", "end": "23:59",
            "login_open": "00:00", "login_close": "22:00",
            "logout_open": "22:01", "logout_close": "23:59", "late_after_minutes": 60,
        }],
    },
}


def school_morning() -> str:
    """Tomorrow 08:00 UTC: inside the tests' login window whenever the suite
    runs, and after the development certificates' notBefore (made today)."""
    day = time.gmtime(time.time() + 86400)
    return time.strftime("%Y-%m-%dT08:00:00", day)


@pytest.fixture
def machine(request, image):
    """A fresh kiosk (new qcow2 overlay, new UEFI vars) for one test; not
    started. Its clock starts on a school morning (see school_morning)."""
    m = Machine(_workdir(request), image, rtc_base=school_morning())
    yield m
    m.stop()


@pytest.fixture(scope="module")
def booted(request, image):
    """One fresh kiosk booted to a healthy daemon, shared by a module's cheap checks."""
    d = OUT / request.module.__name__ / "shared"
    shutil.rmtree(d, ignore_errors=True)
    m = Machine(d, image)
    m.start()
    m.ready_after = m.wait_healthy()
    yield m
    m.stop()

"""A/B update with signed verity bundles, refusal of foreign bundles, rollback.

One kiosk for the module, in file order: foreign bundles are refused (slot
state unchanged), a good bundle lands in slot B, boots, is marked good only
after the daemon is healthy and /data is intact; then a bundle whose daemon
crashes goes to slot A, is never marked good, and the kiosk falls back to B
by itself and stays there; then a bundle whose daemon runs (READY, watchdog
fed) but whose /health never answers goes to slot A, and the update policy
reboots it until the bootloader falls back to B.

Bundles are built at test time from slot images made by qemu/build-image
--slot-only, signed with the development keys the image trusts (or with a
second, foreign set of keys made here), and handed to the guest as read-only
virtio disks (no network needed).
"""

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import OUT
from kiosk_vm import REPO, Machine

KEYS = REPO / "qemu" / "cache" / "keys"
COMPATIBLE = "attendance-kiosk-qemux86-64"
SQUASHFS_ARGS = "-comp zstd -Xcompression-level 3"
BUNDLES = OUT / "bundles"


def build_slot(name: str, version: str, extra: list[str] = ()) -> Path:
    out = BUNDLES / name
    cmd = [str(REPO / "qemu/build-image"), "--slot-only", "--if-needed", "--out", str(out),
           "--image-version", version, "--binary", os.environ.get(
               "ATTENDANCE_BIN", str(REPO / "target/release/attendance"))]
    for e in extra:
        cmd += ["--extra", e]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out / "rootfs.ext4"


def build_bundle(rootfs: Path, out: Path, version: str, keys: Path = KEYS,
                 compatible: str = COMPATIBLE) -> float:
    out.unlink(missing_ok=True)
    t0 = time.time()
    subprocess.run([str(REPO / "ota/build-bundle"), "--rootfs", str(rootfs), "--compatible", compatible,
                    "--version", version, "--key", str(keys / "development-1.key.pem"),
                    "--cert", str(keys / "development-1.cert.pem"), str(out)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "RAUC_MKSQUASHFS_ARGS": SQUASHFS_ARGS})
    return time.time() - t0


@pytest.fixture(scope="module")
def bundles(figures):
    BUNDLES.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    good_rootfs = build_slot("v2", "system-test-v2")
    figures("slot_image_build_s", time.time() - t0, "s",
            "qemu/build-image --slot-only (base rootfs cached)")
    bad_cfg = BUNDLES / "bad-config.json"
    bad_cfg.write_text('{"this_key_does_not_exist": true}\n')
    bad_rootfs = build_slot("v3-unhealthy", "system-test-v3-unhealthy",
                            [f"{bad_cfg}:/etc/attendance/config.json"])
    # Runs fine but serves HTTP on another port than the one the device's
    # health check (and the admin) uses, so /health never answers there.
    # The bundle also shortens the health wait of its mark-good unit, the
    # knob the policy has, to keep the test short.
    mute_cfg = BUNDLES / "mute-config.json"
    mute_cfg.write_text('{"http": {"listen": "127.0.0.1:8090"}}\n')
    mute_dropin = BUNDLES / "mute-mark-good.conf"
    mute_dropin.write_text("[Service]\nEnvironment=HEALTH_WAIT_SECS=30\n")
    mute_rootfs = build_slot("v4-mute", "system-test-v4-mute",
                             [f"{mute_cfg}:/etc/attendance/config.json",
                              f"{mute_dropin}:/etc/systemd/system/attendance-mark-good.service.d/50-test.conf"])
    foreign = BUNDLES / "foreign-keys"
    subprocess.run(["sh", str(REPO / "ota/make-dev-keys"), str(foreign)], check=True,
                   stdout=subprocess.DEVNULL)
    b = {
        "good": BUNDLES / "good.raucb",
        "unhealthy": BUNDLES / "unhealthy.raucb",
        "mute": BUNDLES / "mute.raucb",
        "foreign_key": BUNDLES / "foreign-key.raucb",
        "foreign_compatible": BUNDLES / "foreign-compatible.raucb",
    }
    secs = build_bundle(good_rootfs, b["good"], "system-test-v2")
    figures("bundle_build_s", secs, "s",
            f"ota/build-bundle with RAUC_MKSQUASHFS_ARGS='{SQUASHFS_ARGS}' (verity, 512 MiB ext4 slot)")
    figures("bundle_size_mib", b["good"].stat().st_size / 2**20, "MiB", "size of the verity bundle above")
    build_bundle(bad_rootfs, b["unhealthy"], "system-test-v3-unhealthy")
    build_bundle(mute_rootfs, b["mute"], "system-test-v4-mute")
    build_bundle(good_rootfs, b["foreign_key"], "system-test-v2", keys=foreign)
    build_bundle(good_rootfs, b["foreign_compatible"], "system-test-v2",
                 compatible="attendance-kiosk-raspberrypi4-64")
    return b


@pytest.fixture(scope="module")
def kiosk(image, bundles):
    d = OUT / "test_update" / "shared"
    shutil.rmtree(d, ignore_errors=True)
    m = Machine(d, image)
    for name, path in bundles.items():
        m.add_drive(name.replace("_", "-"), path)
    m.start()
    m.wait_healthy()
    m.sh("timeout 120 sh -c 'until systemctl is-active -q attendance-mark-good; do sleep 1; done'", timeout=150)
    yield m
    m.stop()


def copy_bundle(m: Machine, bundles, name: str) -> str:
    size = bundles[name].stat().st_size
    dest = f"/data/{name}.raucb"
    m.sh(f"dd if=/dev/disk/by-id/virtio-{name.replace('_', '-')} of={dest} bs=1M iflag=count_bytes "
         f"count={size} status=none && test $(stat -c %s {dest}) = {size}", timeout=180)
    return dest


def grubenv(m: Machine) -> str:
    _, out = m.sh("grub-editenv /boot/EFI/BOOT/grubenv list")
    return out.strip()


def install_to_a_and_wait_for_fallback(kiosk: Machine, bundles, name: str) -> float:
    """From slot B: install bundle `name` (lands in A), reboot into it, wait
    until GRUB marks A bad and the daemon on B is healthy again; returns the
    seconds from the reboot to healthy."""
    booted, _ = kiosk.rauc_status()
    assert booted == "B", "runs after the good update"
    path = copy_bundle(kiosk, bundles, name)
    kiosk.sh(f"rauc install {path} 2>&1", timeout=600)
    kiosk.sh(f"rm -f {path}")
    env = grubenv(kiosk)
    assert "ORDER=A B" in env and "A_OK=1" in env, env
    t0 = time.time()
    kiosk.reboot()
    mark = kiosk.boot_mark
    kiosk.wait_for(r"booting slot A", 180, since=mark)
    # two in-guest reboots of slot A (each a new QEMU, see kiosk_vm) until GRUB gives up
    kiosk.wait_for(r"slot A: \d+ boots without mark-good, marking it bad", 1200, since=mark)
    kiosk.wait_for(r"booting slot B", 300, since=mark)
    kiosk.expect_reboot()  # waits below refer to output from here on
    kiosk.wait_healthy()
    return time.time() - t0


@pytest.mark.parametrize("name,reason", [
    ("foreign_key", "signature"),
    ("foreign_compatible", "compatible"),
])
def test_foreign_bundle_is_refused(kiosk, bundles, name, reason):
    env_before = grubenv(kiosk)
    booted_before, slots_before = kiosk.rauc_status()
    path = copy_bundle(kiosk, bundles, name)
    rc, out = kiosk.sh(f"rauc install {path} 2>&1", timeout=300, check=False)
    kiosk.sh(f"rm -f {path}")
    assert rc != 0, f"rauc install accepted the {name} bundle:\n{out}"
    assert reason in out.lower(), out
    assert grubenv(kiosk) == env_before
    booted_after, slots_after = kiosk.rauc_status()
    assert booted_after == booted_before == "A"
    assert slots_after["rootfs.1"].get("boot_status") == slots_before["rootfs.1"].get("boot_status")


def test_update_installs_to_other_slot_and_is_marked_good_after_health(kiosk, bundles, figures):
    # data the update must not touch
    token = hashlib.sha256(os.urandom(16)).hexdigest()
    kiosk.sh("install -d -o attendance -g attendance /data/attendance/photos/2026-01-01 && "
             f"echo {token} > /data/attendance/photos/2026-01-01/system-test.jpg && "
             "chown attendance:attendance /data/attendance/photos/2026-01-01/system-test.jpg && sync")
    _, db_before = kiosk.sh("ls -l /data/attendance/db/")
    path = copy_bundle(kiosk, bundles, "good")
    t0 = time.time()
    _, out = kiosk.sh(f"rauc install {path} 2>&1", timeout=600)
    install_s = time.time() - t0
    kiosk.sh(f"rm -f {path}")
    assert "succeeded" in out, out
    _, slots = kiosk.rauc_status()
    env = grubenv(kiosk)
    assert "ORDER=B A" in env and "B_OK=1" in env and "B_TRY=0" in env, env
    figures("bundle_install_s", install_s, "s", "rauc install of the bundle above in the guest (TCG), from /data")

    kiosk.reboot()
    kiosk.wait_for(r"booting slot B", 180)
    kiosk.wait_healthy()
    _, rel = kiosk.sh("cat /etc/kiosk-release")
    assert "VERSION=system-test-v2" in rel, rel
    kiosk.sh("timeout 180 sh -c 'until systemctl is-active -q attendance-mark-good; do sleep 1; done'",
             timeout=200)
    booted, slots = kiosk.rauc_status()
    assert booted == "B"
    assert slots["rootfs.1"]["boot_status"] == "good", slots
    # marked good only after the daemon was up (READY) and healthy
    _, ts = kiosk.sh("systemctl show attendance.service -p ActiveEnterTimestampMonotonic --value; "
                     "systemctl show attendance-mark-good.service -p ActiveEnterTimestampMonotonic --value")
    ready_us, good_us = (int(x) for x in ts.split())
    assert 0 < ready_us < good_us, ts
    _, journal = kiosk.sh("journalctl -b -u attendance-mark-good.service --no-pager -o cat")
    assert "rauc" in journal.lower() or "good" in journal.lower(), journal
    _, photo = kiosk.sh("cat /data/attendance/photos/2026-01-01/system-test.jpg")
    assert photo.strip() == token
    _, db_after = kiosk.sh("ls -l /data/attendance/db/")
    assert "attendance.sqlite3" in db_after and "attendance.sqlite3" in db_before


def test_crashing_update_rolls_back_and_stays_back(kiosk, bundles, figures):
    # the bad slot's daemon crash-loops, mark-good finds it never healthy and
    # reboots (attendance.service itself never reboots) until GRUB gives up
    secs = install_to_a_and_wait_for_fallback(kiosk, bundles, "unhealthy")
    figures("rollback_s", secs, "s",
            "reboot into an update whose daemon never gets healthy, to healthy again on the old slot")
    _, rel = kiosk.sh("cat /etc/kiosk-release")
    assert "VERSION=system-test-v2" in rel, rel
    kiosk.sh("timeout 180 sh -c 'until systemctl is-active -q attendance-mark-good; do sleep 1; done'",
             timeout=200)
    booted, slots = kiosk.rauc_status()
    assert booted == "B"
    assert slots["rootfs.0"]["boot_status"] == "bad", slots
    assert slots["rootfs.1"]["boot_status"] == "good", slots
    # the rollback sticks: another reboot stays on B
    kiosk.reboot()
    m = kiosk.wait_for(r"booting slot ([AB])", 180)
    assert m.group(1) == "B", "GRUB retried the bad slot"
    kiosk.wait_healthy()


def test_update_whose_health_never_answers_is_rebooted_back(kiosk, bundles, figures):
    # the mark-good script reboots the slot until GRUB gives up on it
    secs = install_to_a_and_wait_for_fallback(kiosk, bundles, "mute")
    figures("rollback_unhealthy_s", secs, "s",
            "reboot into an update whose daemon runs but never answers /health "
            "(HEALTH_WAIT_SECS=30), to healthy again on the old slot")
    booted, slots = kiosk.rauc_status()
    assert booted == "B"
    assert slots["rootfs.0"]["boot_status"] == "bad", slots
    # The reboots were the policy's, on a daemon that was up: the persistent
    # journal (on /data) has both boots of slot A.
    _, journal = kiosk.sh("journalctl -u attendance-mark-good.service --no-pager -o cat")
    assert journal.count("never healthy after 30s on newly installed slot A") == 2, journal
    _, ready = kiosk.sh("journalctl -u attendance.service --no-pager -o cat | grep -c 'http.*8090' || true")
    assert int(ready.strip() or 0) >= 2, "the mute daemon never started"

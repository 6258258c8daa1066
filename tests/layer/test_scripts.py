"""The first-boot scripts of image-config, run against files and loop devices."""
import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import IMAGE_CONFIG, run

LIBEXEC = IMAGE_CONFIG / "rootfs/usr/libexec/attendance"


def machine_id(tmp: pathlib.Path, current: str):
    etc = tmp / "machine-id"
    etc.write_text(current + "\n" if current else "")
    env = dict(os.environ, MACHINE_ID_STORE=str(tmp / "data/etc/machine-id"), MACHINE_ID_FILE=str(etc), NO_MOUNT="1")
    return run([LIBEXEC / "machine-id"], env=env)


def test_machine_id_first_boot_keeps_the_transient_id(tmp_path):
    first = "0123456789abcdef0123456789abcdef"
    r = machine_id(tmp_path, first)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data/etc/machine-id").read_text().strip() == first
    assert r.stdout == ""  # nothing to bind-mount: already in use


def test_machine_id_later_boots_use_the_stored_id(tmp_path):
    stored = "0123456789abcdef0123456789abcdef"
    (tmp_path / "data/etc").mkdir(parents=True)
    (tmp_path / "data/etc/machine-id").write_text(stored + "\n")
    r = machine_id(tmp_path, "ffffffffffffffffffffffffffffffff")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == stored  # would be bind-mounted over /etc/machine-id


def test_machine_id_corrupt_store_is_kept_aside_and_replaced(tmp_path):
    (tmp_path / "data/etc").mkdir(parents=True)
    (tmp_path / "data/etc/machine-id").write_text("garbage\n")
    r = machine_id(tmp_path, "")
    assert r.returncode == 0, r.stderr
    new = (tmp_path / "data/etc/machine-id").read_text().strip()
    assert len(new) == 32 and all(c in "0123456789abcdef" for c in new)
    assert (tmp_path / "data/etc/machine-id.invalid").read_text() == "garbage\n"


@pytest.fixture
def loopdev(tmp_path):
    """A 32 MiB loop device, or a skip when this machine has none usable."""
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("needs root and losetup for a loop device")
    img = tmp_path / "data.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    r = run(["losetup", "--find", "--show", img])
    if r.returncode != 0:
        pytest.skip(f"no usable loop device here: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def data_init(dev):
    env = dict(os.environ, DATA_DEVICE=dev, WAIT_SECS="1")
    return run([LIBEXEC / "data-init"], env=env)


def probe(dev, tag):
    return run(["blkid", "-p", "-o", "value", "-s", tag, dev]).stdout.strip()


def test_data_init_formats_a_blank_partition_once(loopdev):
    r = data_init(loopdev)
    assert r.returncode == 0, r.stderr
    assert "formatting ext4" in r.stderr
    assert probe(loopdev, "TYPE") == "ext4" and probe(loopdev, "LABEL") == "data"
    uuid = probe(loopdev, "UUID")
    r = data_init(loopdev)  # second boot: nothing to do, nothing lost
    assert r.returncode == 0, r.stderr
    assert "formatting" not in r.stderr and probe(loopdev, "UUID") == uuid


def test_data_init_refuses_a_foreign_file_system(loopdev):
    need = shutil.which("mkfs.vfat")
    if not need:
        pytest.fail("mkfs.vfat missing (dosfstools; run.sh installs it)")
    assert run(["mkfs.vfat", "-n", "DATA", loopdev]).returncode == 0
    r = data_init(loopdev)
    assert r.returncode == 1 and "refusing to format" in r.stderr
    assert probe(loopdev, "TYPE") == "vfat"


def test_data_init_refuses_ext4_with_another_label(loopdev):
    assert run(["mkfs.ext4", "-q", "-L", "photos", loopdev]).returncode == 0
    r = data_init(loopdev)
    assert r.returncode == 1 and "expected 'data'" in r.stderr
    assert probe(loopdev, "LABEL") == "photos"


def test_data_init_without_partition_fails_clearly(tmp_path):
    env = dict(os.environ, DATA_LABEL="no-such-label-here", WAIT_SECS="1")
    r = run([LIBEXEC / "data-init"], env=env)
    assert r.returncode == 1 and "no partition with file-system label" in r.stderr

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


def fake_disk(tmp: pathlib.Path, dev: str, parts: dict, disk_sectors: int) -> pathlib.Path:
    """A sysfs block tree: a disk named after the loop device's prefix
    ('loop') whose partitions are the given {name: (number, start, size)}."""
    part = pathlib.Path(dev).name
    disk = part.rstrip("0123456789")
    root = tmp / "sys"
    ddir = root / "devices" / disk
    ddir.mkdir(parents=True)
    (ddir / "size").write_text(f"{disk_sectors}\n")
    for name, (num, start, size) in parts.items():
        (ddir / name).mkdir()
        (ddir / name / "partition").write_text(f"{num}\n")
        (ddir / name / "start").write_text(f"{start}\n")
        (ddir / name / "size").write_text(f"{size}\n")
    cls = root / "class"
    cls.mkdir()
    (cls / disk).symlink_to(ddir)
    for name in parts:
        (cls / name).symlink_to(ddir / name)
    return cls


@pytest.fixture
def recorded_tools(tmp_path):
    """sfdisk and partx that record their arguments instead of repartitioning."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("sfdisk", "partx"):
        f = bindir / tool
        f.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n'
                     f'[ -t 0 ] || sed "s/^/  stdin: /" >> "{log}"\nexit 0\n')
        f.chmod(0o755)
    return bindir, log


def grow(dev, sysfs, bindir):
    env = dict(os.environ, DATA_DEVICE=dev, WAIT_SECS="1", SYSFS_BLOCK=str(sysfs),
               PATH=f"{bindir}:{os.environ['PATH']}")
    return run([LIBEXEC / "data-init"], env=env)


def test_data_init_grows_the_last_partition(loopdev, tmp_path, recorded_tools):
    bindir, log = recorded_tools
    assert run(["mkfs.ext4", "-q", "-L", "data", loopdev]).returncode == 0
    part = pathlib.Path(loopdev).name
    # partitions 1-3 before ours; ours (4) ends 1 GiB before the end of the disk
    parts = {"loop91": (1, 2048, 8192), "loop92": (2, 10240, 8192), part: (4, 18432, 65536)}
    sysfs = fake_disk(tmp_path, loopdev, parts, 18432 + 65536 + 2097152)
    r = grow(loopdev, sysfs, bindir)
    assert r.returncode == 0, r.stderr
    calls = log.read_text()
    assert "sfdisk --quiet --no-reread --no-tell-kernel -N 4 /dev/loop" in calls
    assert "stdin: , +" in calls
    assert "partx --update --nr 4 /dev/loop" in calls
    assert "growing partition 4" in r.stderr


def test_data_init_does_not_grow_a_partition_that_fills_the_disk(loopdev, tmp_path, recorded_tools):
    bindir, log = recorded_tools
    assert run(["mkfs.ext4", "-q", "-L", "data", loopdev]).returncode == 0
    part = pathlib.Path(loopdev).name
    sysfs = fake_disk(tmp_path, loopdev, {part: (4, 2048, 65536)}, 2048 + 65536 + 34)
    r = grow(loopdev, sysfs, bindir)
    assert r.returncode == 0, r.stderr
    assert not log.exists() and "already fills" in r.stderr


def test_data_init_does_not_grow_when_a_partition_follows(loopdev, tmp_path, recorded_tools):
    bindir, log = recorded_tools
    assert run(["mkfs.ext4", "-q", "-L", "data", loopdev]).returncode == 0
    part = pathlib.Path(loopdev).name
    sysfs = fake_disk(tmp_path, loopdev, {part: (3, 2048, 65536), "loop99": (4, 67584, 8192)}, 4 << 21)
    r = grow(loopdev, sysfs, bindir)
    assert r.returncode == 0, r.stderr
    assert not log.exists() and "not the last partition" in r.stderr

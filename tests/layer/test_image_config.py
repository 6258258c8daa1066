"""image-config: units verify, sandboxing score, tmpfiles/sysusers, drop-ins."""
import configparser
import os
import pathlib
import re
import shutil
import stat

import pytest

from conftest import IMAGE_CONFIG, LAYER, REPO, TARGETS, need, run

ROOTFS = IMAGE_CONFIG / "rootfs"
UNITDIR = ROOTFS / "usr/lib/systemd/system"
UNITS = sorted(p.name for p in UNITDIR.iterdir() if p.is_file())
EXPOSURE_MAX = 2.5


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read(UNITDIR / name)
    return cp


def multi(name: str, section: str, key: str) -> list[str]:
    """All values of a key that may repeat (configparser keeps the last)."""
    out, cur = [], None
    for line in (UNITDIR / name).read_text().splitlines():
        if line.startswith("["):
            cur = line.strip("[]")
        elif cur == section and line.startswith(key + "="):
            out.append(line.split("=", 1)[1])
    return out


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    """The host's systemd units + image-config + stand-in executables."""
    root = tmp_path_factory.mktemp("root")
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    r = run([IMAGE_CONFIG / "install.sh", root, "qemux86-64"])
    assert r.returncode == 0, r.stderr
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    # The daemon and rauc are not part of this test; everything else is real.
    for exe in ("attendance", "rauc"):
        f = root / "usr/bin" / exe
        f.write_text("#!/bin/sh\nexit 0\n")
        f.chmod(0o755)
    for exe in ("journalctl", "systemd-tmpfiles"):
        shutil.copy2(need(exe), root / "usr/bin" / exe)
    return root


def test_contract_values_of_the_daemon_unit():
    u = unit("attendance.service")
    s = u["Service"]
    assert s["Type"] == "notify"
    assert s["WatchdogSec"] == "30"
    assert s["Restart"] == "always"
    assert s["ExecStart"] == "/usr/bin/attendance run"
    assert s["User"] == s["Group"] == "attendance"
    assert s["SupplementaryGroups"].split() == ["video", "input"]
    assert multi("attendance.service", "Service", "ReadWritePaths")[0] == "/data/attendance"
    assert all(p == "/data/attendance" or p.startswith("-/sys/devices/")
               for p in multi("attendance.service", "Service", "ReadWritePaths")), "writes outside /data/attendance"
    for limit in ("MemoryMax", "CPUQuota", "TasksMax"):
        assert s.get(limit), f"{limit} missing"
    assert int(s["TimeoutStopSec"]) > 10  # the daemon stops within 10 s


def test_mark_good_waits_for_health():
    s = unit("attendance-mark-good.service")["Service"]
    assert s["ExecStart"] == "/usr/libexec/attendance/mark-good"
    wait = int(s["Environment"].split("HEALTH_WAIT_SECS=", 1)[1].split()[0])
    assert wait + 30 <= int(s["TimeoutStartSec"]), "the unit would be killed before the script decides"
    assert s["ReadWritePaths"] == "-/data/ota"
    u = unit("attendance-mark-good.service")["Unit"]
    # Wants, not Requires: a crashing daemon's failed start must not skip the
    # verdict (that is what rolls a crashing new release back).
    assert "attendance.service" in u["Wants"] and "attendance.service" in u["After"]
    assert "Requires" not in u


def test_the_daemon_unit_never_reboots_the_kiosk():
    u = unit("attendance.service")["Unit"]
    assert "StartLimitAction" not in u, "a healthy slot must not reboot-loop"
    assert u["StartLimitIntervalSec"] == "0", "restarted for ever, never left stopped"


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies(fake_root, name):
    need("systemd-analyze")
    r = run(["systemd-analyze", "verify", "--man=no", f"--root={fake_root}", name])
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not out, out


def test_drop_in_does_not_create_ordering_cycles(fake_root):
    r = run(["systemd-analyze", "verify", "--man=no", f"--root={fake_root}",
             "systemd-journal-flush.service", "sysinit.target", "local-fs.target", "multi-user.target"])
    out = r.stdout + r.stderr
    assert "cycle" not in out.lower(), out


def test_security_exposure(fake_root):
    r = run(["systemd-analyze", "security", "--offline=true", f"--root={fake_root}",
             f"--threshold={int(EXPOSURE_MAX * 10)}", "--no-pager", "attendance.service"])
    m = re.search(r"Overall exposure level for attendance\.service: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    score = float(m.group(1))
    print(f"attendance.service exposure {score}")
    assert score <= EXPOSURE_MAX and r.returncode == 0


def known_keys(conf: str) -> set[str]:
    """Keys systemd documents in its commented default config file."""
    for cand in (f"/etc/systemd/{conf}", f"/usr/share/doc/systemd/examples/{conf}", f"/usr/lib/systemd/{conf}"):
        if os.path.exists(cand):
            return set(re.findall(r"^#?([A-Za-z]+)=", pathlib.Path(cand).read_text(), re.M))
    pytest.fail(f"no {conf} on this host to compare with")


@pytest.mark.parametrize("dropin, conf, section", [
    ("usr/lib/systemd/system.conf.d/10-attendance-watchdog.conf", "system.conf", "Manager"),
    ("usr/lib/systemd/journald.conf.d/10-attendance.conf", "journald.conf", "Journal"),
])
def test_drop_in_keys_exist(dropin, conf, section):
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(ROOTFS / dropin)
    assert cp.sections() == [section]
    unknown = set(cp[section]) - known_keys(conf)
    assert not unknown, f"{dropin}: keys systemd does not know: {unknown}"


def test_watchdog_values():
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(ROOTFS / "usr/lib/systemd/system.conf.d/10-attendance-watchdog.conf")
    m = cp["Manager"]
    assert m["RuntimeWatchdogSec"] == "15s"  # bcm2835-wdt cannot do more
    assert m["RebootWatchdogSec"]


def test_sysusers_and_tmpfiles_build_the_data_layout(tmp_path):
    need("systemd-sysusers")
    need("systemd-tmpfiles")
    root = tmp_path / "root"
    r = run([IMAGE_CONFIG / "install.sh", root.mkdir() or root, "raspberrypi4-64"])
    assert r.returncode == 0, r.stderr
    # The distribution's own users and groups (root, video, input,
    # systemd-journal, ...), as an image has them.
    for f in pathlib.Path("/usr/lib/sysusers.d").glob("*.conf"):
        if f.name != "attendance.conf":
            shutil.copy(f, root / "usr/lib/sysusers.d" / f.name)
    r = run(["systemd-sysusers", f"--root={root}"])
    assert r.returncode == 0, r.stderr
    passwd = {l.split(":")[0]: l.split(":") for l in (root / "etc/passwd").read_text().splitlines()}
    groups = {l.split(":")[0]: l.split(":") for l in (root / "etc/group").read_text().splitlines()}
    assert "attendance" in passwd and passwd["attendance"][6].endswith("nologin")
    assert "attendance" in groups["video"][3].split(",") and "attendance" in groups["input"][3].split(",")
    uid = int(passwd["attendance"][2])
    assert uid < 1000, "not a system user"

    (root / "var/log").mkdir(parents=True)
    r = run(["systemd-tmpfiles", f"--root={root}", "--create", str(root / "usr/lib/tmpfiles.d/attendance.conf")])
    assert r.returncode == 0, r.stderr
    for sub, mode in (("attendance", 0o750), ("attendance/db", 0o750), ("attendance/photos", 0o750),
                      ("attendance/backups", 0o750), ("attendance/secrets", 0o700)):
        st = (root / "data" / sub).stat()
        assert st.st_uid == uid and stat.S_IMODE(st.st_mode) == mode, sub
    for sub in ("rauc", "config", "etc", "log/journal"):
        assert (root / "data" / sub).is_dir() and (root / "data" / sub).stat().st_uid == 0
    assert os.readlink(root / "var/log/journal") == "/data/log/journal"


@pytest.mark.parametrize("target", TARGETS)
def test_install_sh(tmp_path, target):
    r = run([IMAGE_CONFIG / "install.sh", tmp_path, target])
    assert r.returncode == 0, r.stderr
    for f in (ROOTFS.rglob("*")):
        if f.is_file():
            dst = tmp_path / f.relative_to(ROOTFS)
            assert dst.read_bytes() == f.read_bytes()
            want = 0o755 if "libexec" in f.parts else 0o644
            assert stat.S_IMODE(dst.stat().st_mode) == want, dst
    conf = (tmp_path / "etc/rauc/system.conf").read_text()
    assert f"compatible=attendance-kiosk-{target}" in conf
    wants = tmp_path / "etc/systemd/system"
    assert (wants / "multi-user.target.wants/attendance.service").is_symlink()
    assert (wants / "multi-user.target.wants/attendance-mark-good.service").is_symlink()
    assert (wants / "local-fs.target.wants/data.mount").is_symlink()
    assert (wants / "sysinit.target.wants/attendance-machine-id.service").is_symlink()
    assert (tmp_path / "etc/machine-id").read_text() == ""
    assert not (tmp_path / "etc/attendance/config.json").exists()


def test_led_rule_matches_the_unit_user():
    rule = (ROOTFS / "usr/lib/udev/rules.d/70-attendance-leds.rules").read_text()
    assert 'SUBSYSTEM=="leds"' in rule
    group = unit("attendance.service")["Service"]["Group"]
    assert f"chgrp {group} /sys%p/brightness /sys%p/trigger" in rule
    for line in rule.splitlines():
        if line and not line.startswith("#"):
            for exe in __import__("re").findall(r'RUN\+="(\S+)', line):
                assert exe.startswith("/usr/bin/") and os.path.exists(exe), exe


def test_install_sh_rejects_unknown_target(tmp_path):
    r = run([IMAGE_CONFIG / "install.sh", tmp_path, "beaglebone"])
    assert r.returncode == 2 and "unknown target" in r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("target", TARGETS)
def test_rauc_system_conf(target):
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(IMAGE_CONFIG / "targets" / target / "etc/rauc/system.conf")
    s = cp["system"]
    assert s["compatible"] == f"attendance-kiosk-{target}"
    assert s["bootloader"] == ("grub" if target == "qemux86-64" else "uboot")
    assert s["data-directory"] == "/data/rauc"
    assert "-plain" in s["bundle-formats"].split()
    slots = {k: cp[k] for k in cp.sections() if k.startswith("slot.rootfs.")}
    assert {v["bootname"] for v in slots.values()} == {"A", "B"}
    assert {v["device"] for v in slots.values()} == {"/dev/disk/by-partlabel/rootfs_a", "/dev/disk/by-partlabel/rootfs_b"}


def test_shell_scripts_pass_shellcheck():
    need("shellcheck")
    scripts = [*(ROOTFS / "usr/libexec/attendance").iterdir(), IMAGE_CONFIG / "install.sh",
               REPO / "ota/make-dev-keys", REPO / "ota/build-bundle", REPO / "tests/layer/run.sh"]
    r = run(["shellcheck", "-s", "sh", *[s for s in scripts if not str(s).endswith("run.sh")]])
    assert r.returncode == 0, r.stdout
    r = run(["shellcheck", "-s", "bash", REPO / "tests/layer/run.sh"])
    assert r.returncode == 0, r.stdout


def test_every_image_config_file_is_installed_by_a_recipe():
    """The QEMU image installs all of image-config/rootfs (install.sh), and
    so does attendance-image-config (its file list, made when bitbake parses
    it): a new file there is in both images with no recipe change."""
    import bbparse

    recipe = next(LAYER.glob("recipes-attendance/attendance/attendance-image-config_*.bb"))
    with bbparse.tempfile.TemporaryDirectory() as t:
        base = bbparse.base_config("qemux86-64", pathlib.Path(t))
        d = bbparse.parse_recipe(recipe, [], base)["d"]
    listed = set(d.getVar("ATTENDANCE_ROOTFS_FILES").split())
    root = IMAGE_CONFIG / "rootfs"
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    assert listed == on_disk, f"missing {sorted(on_disk - listed)}, extra {sorted(listed - on_disk)}"
    # And the do_install loop copies that list, whatever is in it.
    assert "for f in ${ATTENDANCE_ROOTFS_FILES}" in d.getVar("do_install", False)

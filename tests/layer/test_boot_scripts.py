"""Bootloader scripts: GRUB syntax, and both follow RAUC's variable names."""
import re

from conftest import LAYER, need, run

GRUB_CFG = LAYER / "recipes-bsp/grub/files/attendance-grub.cfg"
UBOOT_CMD = LAYER / "dynamic-layers/raspberrypi/recipes-bsp/rpi-u-boot-scr/files/boot.cmd.in"


def test_grub_cfg_syntax():
    need("grub-script-check")
    r = run(["grub-script-check", GRUB_CFG])
    assert r.returncode == 0, r.stdout + r.stderr


def test_grub_cfg_uses_rauc_grub_variables():
    text = GRUB_CFG.read_text()
    for var in ("ORDER", "A_OK", "A_TRY", "B_OK", "B_TRY"):
        assert re.search(rf"save_env .*\b{var}\b", text), var
    assert "rauc.slot=A" in text and "rauc.slot=B" in text
    assert "root=PARTLABEL=rootfs_a" in text and "root=PARTLABEL=rootfs_b" in text


def test_grub_cfg_syntax_error_is_caught(tmp_path):
    need("grub-script-check")
    bad = tmp_path / "bad.cfg"
    bad.write_text(GRUB_CFG.read_text().replace("fi\ndone", "done", 1))
    assert run(["grub-script-check", bad]).returncode != 0


def test_uboot_script_uses_rauc_uboot_variables():
    text = UBOOT_CMD.read_text()
    for var in ("BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT"):
        assert var in text
    assert "saveenv" in text and "rauc.slot=${raucslot}" in text
    assert "root=PARTLABEL=${rootlabel}" in text


def test_uboot_script_compiles():
    need("mkimage")
    text = (UBOOT_CMD.read_text().replace("@@KERNEL_IMAGETYPE@@", "Image")
            .replace("@@KERNEL_BOOTCMD@@", "booti").replace("@@BOOT_MEDIA@@", "mmc"))
    assert "@@" not in text
    import pathlib
    import tempfile
    with tempfile.TemporaryDirectory() as t:
        src = pathlib.Path(t) / "boot.cmd"
        src.write_text(text)
        r = run(["mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-d", src, pathlib.Path(t) / "boot.scr"])
        assert r.returncode == 0, r.stdout + r.stderr

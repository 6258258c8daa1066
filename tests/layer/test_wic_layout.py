"""Partition layout: both wic files and the QEMU test image agree."""
import json
import pathlib
import shlex

import pytest

import bbparse
from conftest import LAYER, REPO, TARGETS

CONTRACT = ["boot", "rootfs_a", "rootfs_b", "data"]


def size_mib(text: str) -> int:
    text = text.strip()
    units = {"K": 1 / 1024, "M": 1, "G": 1024}
    if text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(int(text) / 1024)  # wic default unit is KiB


def wic_layout(target: str) -> list[dict]:
    """Partitions of meta-attendance/files/wic/attendance-<target>.wks.in, expanded
    with the distro's variables the way bitbake expands .wks.in files."""
    base = bbparse.base_config(target, pathlib.Path(__import__("tempfile").mkdtemp()))
    text = base.expand((LAYER / "files" / "wic" / f"attendance-{target}.wks.in").read_text())
    parts = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0] != "part":
            continue
        opts, i = {}, 1
        if i < len(words) and not words[i].startswith("--"):
            opts["mountpoint"] = words[i]
            i += 1
        while i < len(words):
            key = words[i].lstrip("-")
            if "=" in key:
                key, val = key.split("=", 1)
                i += 1
            elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                val = words[i + 1]
                i += 2
            else:
                val, i = True, i + 1
            opts[key] = val
        size = opts.get("fixed-size") or opts.get("size")
        parts.append({
            "name": opts.get("part-name"),
            "label": opts.get("label"),
            "fstype": opts.get("fstype"),
            "size_mib": size_mib(size) if size else None,
            "fixed": "fixed-size" in opts,
            "gpt_type": opts.get("part-type"),
        })
    return parts


@pytest.mark.parametrize("target", TARGETS)
def test_wic_follows_the_contract(target):
    parts = wic_layout(target)
    assert [p["name"] for p in parts] == CONTRACT
    assert [p["label"] for p in parts] == CONTRACT
    assert parts[0]["fstype"] == "vfat"
    assert all(p["fstype"] == "ext4" for p in parts[1:])
    assert parts[1]["size_mib"] == parts[2]["size_mib"] and parts[1]["fixed"] and parts[2]["fixed"]
    assert not parts[3]["fixed"], "data is a minimum size: grown on first boot"
    assert all(p["size_mib"] for p in parts)


def test_both_targets_agree():
    a, b = (wic_layout(t) for t in TARGETS)
    assert [(p["name"], p["fstype"], p["size_mib"]) for p in a] == [(p["name"], p["fstype"], p["size_mib"]) for p in b]


def qemu_layout():
    files = sorted((REPO / "qemu").glob("layout.*"))
    if not files:
        pytest.skip("qemu/layout.* does not exist (the QEMU test image has not published its layout)")
    f = files[0]
    if f.suffix == ".json":
        data = json.loads(f.read_text())
    elif f.suffix in (".yml", ".yaml"):
        import yaml
        data = yaml.safe_load(f.read_text())
    else:
        pytest.fail(f"{f}: unknown layout format (expected .json or .yml)")
    parts = data["partitions"] if isinstance(data, dict) else data
    return f, parts


def test_qemu_image_agrees_with_wic():
    """The QEMU test image (qemu/layout.json, Debian) and the Yocto wic file
    agree on: partition names and order, file system types, the ESP's GPT
    type, the A/B slot size (a RAUC slot image must fit both), and the data
    file system label. boot and data sizes are minimums on both sides (data
    is grown on first boot), so they only have to be set."""
    f, parts = qemu_layout()
    wic = wic_layout("qemux86-64")
    names = [p.get("name") for p in parts]
    assert names == CONTRACT, f"{f.name}: partitions {names}, wic has {CONTRACT}"
    for q, w in zip(parts, wic):
        assert q.get("fstype") == w["fstype"], (f.name, q["name"], q.get("fstype"), w["fstype"])
        assert int(q.get("size_mib") or 0) > 0, (f.name, q["name"], "no size")
    for slot in (1, 2):
        assert int(parts[slot]["size_mib"]) == wic[slot]["size_mib"], (
            f"{f.name}: {parts[slot]['name']} is {parts[slot]['size_mib']} MiB, wic has {wic[slot]['size_mib']} MiB")
    if parts[0].get("gpt_type"):
        assert parts[0]["gpt_type"].upper() == wic[0]["gpt_type"].upper()
    assert parts[3].get("label", "data") == "data"


@pytest.mark.parametrize("target", TARGETS)
def test_wks_file_is_where_wic_looks(target):
    """oe-core's image_types_wic searches <each BBPATH entry>/files/wic (and
    the image recipe's directory) for WKS_FILE."""
    base = bbparse.base_config(target, pathlib.Path(__import__("tempfile").mkdtemp()))
    recipes, _ = bbparse.layer_files()
    image = next(r for r in recipes if r.name == "attendance-image.bb")
    d = bbparse.parse_recipe(image, [], base)["d"]
    wks = d.getVar("WKS_FILE")
    candidates = [image.parent / wks] + [pathlib.Path(p) / "files" / "wic" / wks
                                           for p in d.getVar("BBPATH").split(":") if p]
    assert any(c.is_file() for c in candidates), f"{wks} is not in any wic search directory"

"""oelint-adv over every recipe, bbappend, include and class of the layer."""
import pathlib

from conftest import LAYER, run, tool

HERE = pathlib.Path(__file__).resolve().parent


def suppressions() -> list[str]:
    rules = []
    for line in (HERE / "oelint-suppressions.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append(line)
    return rules


def oelint(files, cwd):
    cmd = [tool("oelint-adv"), "--release", "wrynose", "--extra-layer", "rauc", "--mode", "all",
           "--constantmods", f"+{HERE / 'oelint-constants.json'}", "--relpaths", "--quiet"]
    for rule in suppressions():
        cmd += ["--suppress", rule]
    return run(cmd + [str(f) for f in files], cwd=cwd)


def layer_files():
    pats = ("*.bb", "*.bbappend", "*.bbclass", "*.inc")
    return sorted(p.relative_to(LAYER) for pat in pats for p in LAYER.rglob(pat))


def test_layer_is_lint_clean():
    files = layer_files()
    assert len(files) >= 10
    r = oelint(files, LAYER)
    findings = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not findings, findings


def test_suppressions_are_justified():
    text = (HERE / "oelint-suppressions.txt").read_text().splitlines()
    for i, line in enumerate(text):
        if line.strip() and not line.startswith("#"):
            # Walk up over the rules of the same group to its comment.
            j = i - 1
            while j >= 0 and text[j].strip() and not text[j].startswith("#"):
                j -= 1
            assert j >= 0 and text[j].startswith("#"), f"suppression '{line}' has no reason above it"


def test_lint_catches_a_bad_recipe(tmp_path):
    bad = tmp_path / "bad_1.0.bb"
    bad.write_text('LICENSE = "MIT"\nSRC_URI_append = " file://x"\nDEPENDS = "b a"\n')
    r = oelint([bad.name], tmp_path)
    assert r.returncode != 0 and "oelint." in (r.stdout + r.stderr)

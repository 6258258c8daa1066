"""attendance-crates.inc lists exactly Cargo.lock's crates.io packages."""
import pathlib
import tomllib

import bbparse
from conftest import LAYER, REPO, run

SCRIPT = LAYER / "scripts" / "update-crates-inc"
INC = LAYER / "recipes-attendance" / "attendance" / "attendance-crates.inc"
RECIPE = next((LAYER / "recipes-attendance" / "attendance").glob("attendance_*.bb"))


def lock_crates(lock: pathlib.Path) -> dict:
    data = tomllib.loads(lock.read_text())
    out = {}
    for p in data["package"]:
        if p.get("source", "").startswith("registry+https://github.com/rust-lang/crates.io-index"):
            out[f"{p['name']}-{p['version']}"] = p["checksum"]
    return out


def recipe_crates(inc_text: str | None = None, tmp: pathlib.Path | None = None) -> dict:
    """Crates and checksums as bitbake sees them in the parsed recipe."""
    if inc_text is None:
        res = bbparse.parse_text(RECIPE.read_text().replace("require ${BPN}-crates.inc", f"require {INC}"),
                                 name=RECIPE.name)
    else:
        f = tmp / "crates.inc"
        f.write_text(inc_text)
        res = bbparse.parse_text(RECIPE.read_text().replace("require ${BPN}-crates.inc", f"require {f}"),
                                 name=RECIPE.name)
    d = res["d"]
    out = {}
    for uri in d.getVar("SRC_URI").split():
        if uri.startswith("crate://"):
            _, _, host, name, version = uri.split("/")[:5]
            assert host == "crates.io"
            key = f"{name}-{version}"
            out[key] = d.getVarFlag("SRC_URI", f"{key}.sha256sum")
    return out


def test_inc_matches_cargo_lock():
    want = lock_crates(REPO / "Cargo.lock")
    have = recipe_crates()
    assert want, "no crates.io packages in Cargo.lock?"
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    assert not (missing or extra or wrong), (
        f"attendance-crates.inc is stale (run meta-attendance/scripts/update-crates-inc): "
        f"missing {missing[:10]}, extra {extra[:10]}, wrong checksum {wrong[:10]}"
    )


def test_script_check_agrees():
    r = run([SCRIPT, "--check"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_stale_inc_is_detected(tmp_path):
    lock = tmp_path / "Cargo.lock"
    text = (REPO / "Cargo.lock").read_text()
    # A dependency bump: same crate, new version and checksum.
    data = tomllib.loads(text)
    victim = next(p for p in data["package"] if "checksum" in p)
    old = f'name = "{victim["name"]}"\nversion = "{victim["version"]}"'
    assert old in text
    text = text.replace(old, f'name = "{victim["name"]}"\nversion = "{victim["version"]}-bumped"', 1)
    text = text.replace(victim["checksum"], "0" * 64, 1)
    lock.write_text(text)
    r = run([SCRIPT, "--check", "--lock", lock])
    assert r.returncode == 1 and "stale" in r.stderr
    assert lock_crates(lock) != recipe_crates()


def test_regeneration_round_trip(tmp_path):
    inc = tmp_path / "attendance-crates.inc"
    r = run([SCRIPT, "--inc", inc])
    assert r.returncode == 0, r.stderr
    assert inc.read_text() == INC.read_text()
    assert recipe_crates(inc.read_text(), tmp_path) == lock_crates(REPO / "Cargo.lock")


def test_git_dependency_is_refused(tmp_path):
    lock = tmp_path / "Cargo.lock"
    lock.write_text('version = 4\n\n[[package]]\nname = "x"\nversion = "1.0.0"\n'
                    'source = "git+https://example.invalid/x#abc"\n')
    r = run([SCRIPT, "--check", "--lock", lock, "--inc", tmp_path / "none.inc"])
    assert r.returncode != 0 and "only crates.io" in (r.stdout + r.stderr)

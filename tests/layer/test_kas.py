"""kas files: valid against kas's own schema and every remote repo pinned."""
import argparse
import pathlib
import re

import pytest
import yaml
from kas.context import create_global_context
from kas.includehandler import IncludeHandler, LoadConfigException

from conftest import REPO

KAS_DIR = REPO / "recipes"
TOP = ("qemux86-64.yml", "raspberrypi4-64.yml")
SHA = re.compile(r"^[0-9a-f]{40}$")


class _Args(argparse.Namespace):
    """Command-line options kas would have parsed: all unset (no update, no
    checkout, no colour...)."""

    def __getattr__(self, name):
        return None


@pytest.fixture(autouse=True)
def kas_context(tmp_path, monkeypatch):
    """kas's loader reads its global context (work dir, environment)."""
    monkeypatch.setenv("KAS_WORK_DIR", str(tmp_path))
    create_global_context(_Args())


def load(path: pathlib.Path) -> dict:
    config, missing = IncludeHandler([str(path)], use_lock=False).get_config()
    assert not missing, f"{path.name}: includes from repos kas would have to fetch: {missing}"
    return config


@pytest.mark.parametrize("name", TOP)
def test_kas_file_validates_and_pins(name):
    cfg = load(KAS_DIR / name)
    assert cfg["machine"] == name.removesuffix(".yml")
    assert cfg["distro"] == "attendance-os"
    assert {"attendance-image", "attendance-bundle"} <= set(cfg["target"])
    repos = cfg["repos"]
    assert "meta-attendance" in (repos["attendance"]["layers"] or {})
    remote = {k: v for k, v in repos.items() if v and v.get("url")}
    assert {"bitbake", "openembedded-core", "meta-rauc"} <= set(remote)
    for key, repo in remote.items():
        assert SHA.match(str(repo.get("commit", ""))), f"{name}: repo {key} is not pinned to a full commit id"
        assert repo.get("branch"), f"{name}: repo {key} names no branch (kas checks the commit is on it)"
        assert not repo.get("refspec"), f"{name}: repo {key} uses the deprecated refspec"
        if key != "bitbake":
            assert repo["branch"] == "wrynose", f"{name}: {key} is not on the wrynose branch"
    if name.startswith("raspberrypi"):
        assert "meta-raspberrypi" in remote


def test_same_repo_same_commit_everywhere():
    seen = {}
    for f in sorted(KAS_DIR.glob("*.yml")):
        for key, repo in (yaml.safe_load(f.read_text()).get("repos") or {}).items():
            if repo and repo.get("url"):
                seen.setdefault(key, set()).add(repo["commit"])
    assert seen and all(len(c) == 1 for c in seen.values()), seen


def test_schema_violation_is_rejected(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("header:\n  version: 14\nrepos:\n  x:\n    url: https://example.invalid/x\n    comit: abc\n")
    with pytest.raises(LoadConfigException):
        IncludeHandler([str(bad)], use_lock=False).get_config()

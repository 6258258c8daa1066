import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
LAYER = REPO / "meta-attendance"
IMAGE_CONFIG = REPO / "image-config"
TARGETS = ("qemux86-64", "raspberrypi4-64")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def run(cmd, **kw):
    """Run a command, capture text output, never raise on exit status."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run([str(c) for c in cmd], **kw)


def tool(name: str) -> str:
    """A tool from this Python environment (pip) or else from PATH."""
    local = pathlib.Path(sys.executable).parent / name
    return str(local) if local.exists() else need(name)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is not installed (tests/layer/run.sh installs it)")
    return path


@pytest.fixture(scope="session")
def dev_keys(tmp_path_factory):
    """Two independent sets of development keys, made at test time."""
    root = tmp_path_factory.mktemp("keys")
    for name in ("good", "other"):
        r = run([REPO / "ota" / "make-dev-keys", root / name])
        assert r.returncode == 0, r.stderr
    return root

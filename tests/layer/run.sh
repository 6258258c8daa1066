#!/usr/bin/env bash
# Offline checks of the Yocto layer, the image configuration, the kas
# recipes and the OTA scripts. Installs its own tools (Debian packages and a
# Python virtual environment), is idempotent, and ends with the line
#   layer: N passed, N failed[, N skipped]
# Exit status is non-zero on any failure.
#
#   tests/layer/run.sh [pytest args...]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${LAYER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/attendance-layer-venv}"

log() { echo "layer: $*" >&2; }

# --- Debian packages -----------------------------------------------------
# tool -> package: systemd-analyze/sysusers/tmpfiles (systemd), rauc,
# openssl, mksquashfs (squashfs-tools), mkfs.ext4/e2fsck (e2fsprogs),
# blkid/losetup (util-linux, mount), sfdisk (fdisk), mkfs.vfat (dosfstools),
# grub-script-check (grub-common), mkimage (u-boot-tools), shellcheck.
apt_pkgs=(systemd rauc openssl squashfs-tools e2fsprogs util-linux mount fdisk
          dosfstools grub-common u-boot-tools shellcheck python3-venv git)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python tools (pinned: lint rules and schemas change between releases) --
pip_pkgs=(kas==5.5 oelint-adv==9.11.2 oelint-data==1.5.26 oelint-parser==8.13.2
          bitbake-setup==2.19.0 pytest==9.2.0 PyYAML jsonschema)
stamp="$venv/.attendance-layer-$(printf '%s\n' "${pip_pkgs[@]}" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    log "creating Python environment in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${pip_pkgs[@]}"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"

# --- run -------------------------------------------------------------------
junit="$(mktemp --suffix=.xml)"
trap 'rm -f "$junit"' EXIT
cd "$here"
set +e
"$venv/bin/python" -m pytest -p no:cacheprovider -q -rs --junitxml="$junit" "$@" .
status=$?
set -e

"$venv/bin/python" - "$junit" "$status" <<'PY'
import sys
import xml.etree.ElementTree as ET

junit, status = sys.argv[1], int(sys.argv[2])
try:
    root = ET.parse(junit).getroot()
except (ET.ParseError, FileNotFoundError):
    print("layer: 0 passed, 1 failed  (pytest produced no report)")
    sys.exit(1)
suites = [root] if root.tag == "testsuite" else list(root)
tests = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
passed = tests - failed - skipped
if status != 0 and failed == 0:
    failed = 1  # pytest failed outside any test (collection, usage)
line = f"layer: {passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or passed == 0 else 0)
PY

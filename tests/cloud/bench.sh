#!/usr/bin/env bash
# Sync drain benchmark: 50,000 records into a real PostgREST, batched vs one
# record per request, in one run. Writes the sync section of BENCHMARKS.md.
# Not part of CI (it takes minutes); SYNC_BENCH_RECORDS=N for a smaller run.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
LOG="$(mktemp -d /tmp/cloud-bench.XXXXXX)"
trap 'rm -rf "$LOG"' EXIT
say() { echo "cloud-bench: $*"; }
die() { echo "cloud-bench: ERROR: $*" >&2; exit 1; }
. "$ROOT/tests/cloud/stack.sh"
exec cargo bench --bench sync_drain

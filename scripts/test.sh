#!/usr/bin/env bash
# Runs the whole test suite: sets everything up (packages, cargo-pgrx, the extension,
# the worker), starts a throwaway PostgreSQL 15 cluster, runs tests/ against it, and
# always stops it. Extra arguments go to `cargo test` (e.g. a test name filter).
source "$(dirname "$0")/lib.sh"

setup_all

PG_SYNC_TEST_TMP="$(mktemp -d /tmp/pg_sync_test.XXXXXX)"
chmod 755 "$PG_SYNC_TEST_TMP"
export PG_SYNC_TEST_TMP

cleanup() {
    # The shared cluster and any cluster a killed test left behind.
    for data in "$PG_SYNC_TEST_TMP"/*/data; do
        [ -f "$data/postmaster.pid" ] && as_pg_user "$PG_SYNC_BINDIR/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1
    done
    rm -rf "$PG_SYNC_TEST_TMP"
}
trap cleanup EXIT

# The Debian packages, for the test that installs them (tests/tests/packages.rs).
log "building the Debian packages"
bash "$PG_SYNC_ROOT/scripts/package.sh" --no-build "$PG_SYNC_TEST_TMP/debs" >/dev/null
export PG_SYNC_DEBS="$PG_SYNC_TEST_TMP/debs"

port="$(free_port)"
log "starting a throwaway PostgreSQL cluster on port $port"
start_cluster "$PG_SYNC_TEST_TMP/shared" "$port" \
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=256MB"
export PG_SYNC_TEST_URL="postgres://postgres@127.0.0.1:$port/postgres"

log "running the tests"
cd "$PG_SYNC_ROOT"
if [ "$#" -eq 0 ]; then
    # Unit tests of the worker (value conversion, statement checks): no database needed.
    cargo test --release -p sync_worker --bins
    # The task-code runtime's pure-Python parts, with the interpreter the worker embeds.
    "$PYO3_PYTHON" -m pytest -q "$PG_SYNC_ROOT/tests/python"
fi
cargo test --release --no-fail-fast -p pg_sync_tests "$@" -- --test-threads="${PG_SYNC_TEST_THREADS:-4}"
if [ "$#" -eq 0 ]; then
    # Tests that measure latency (#[ignore]d above) run alone on a quiet machine.
    log "running the latency tests alone"
    cargo test --release -p pg_sync_tests --test webhooks --test buttons --test job_logs_live -- --ignored --test-threads=1 --nocapture
fi

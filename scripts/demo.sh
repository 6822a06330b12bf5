#!/usr/bin/env bash
# The README's first command: builds and installs pg_sync into a private PostgreSQL
# prefix, starts a throwaway cluster, loads the db2db demo (sql/demo), starts the worker,
# inserts a partner and shows its linked copy in the second database; then waits until
# Ctrl-C, which stops the worker and the cluster. Safe to run again (it starts afresh).
#
# Settings (environment): PG_SYNC_DEMO_DIR (default /tmp/pg_sync_demo),
# PG_SYNC_DEMO_PORT (PostgreSQL, 54329), PG_SYNC_DEMO_WEBHOOK_PORT (54330),
# PG_SYNC_DEMO_ADMIN_PORT (54331), PG_SYNC_DEMO_BASE_URL (public URL of the webhook
# server, default http://127.0.0.1:<webhook port>), PG_SYNC_DEMO_NO_WAIT=1 (exit after
# the check instead of waiting for Ctrl-C).
source "$(dirname "$0")/lib.sh"

setup_all

DEMO_DIR="${PG_SYNC_DEMO_DIR:-/tmp/pg_sync_demo}"
port="${PG_SYNC_DEMO_PORT:-54329}"
webhook_port="${PG_SYNC_DEMO_WEBHOOK_PORT:-54330}"
admin_port="${PG_SYNC_DEMO_ADMIN_PORT:-54331}"
base_url="${PG_SYNC_DEMO_BASE_URL:-http://127.0.0.1:$webhook_port}"
url="postgres://postgres@127.0.0.1:$port/postgres"
remote_url="postgres://postgres@127.0.0.1:$port/db2db_remote"
worker_log="$DEMO_DIR/worker.log"
demo_sql="$PG_SYNC_ROOT/sql/demo"
PSQL="$PG_SYNC_BINDIR/psql"
worker_pid=""

psql_q() { "$PSQL" -X -q -v ON_ERROR_STOP=1 "$@"; }

# A worker left by an earlier run that was killed rather than stopped (its pid file).
stop_old_worker() {
    local pid
    pid="$(cat "$DEMO_DIR/worker.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "sync_worker" ]; then
        log "stopping the worker of an earlier run (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
}

cleanup() {
    if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
        log "stopping the worker"
        kill "$worker_pid" 2>/dev/null || true
        wait "$worker_pid" 2>/dev/null || true
    fi
    rm -f "$DEMO_DIR/worker.pid"
    log "stopping the cluster"
    stop_cluster "$DEMO_DIR"
}

# Fail loudly: what the worker said, and what the jobs did.
fail_with_logs() {
    printf '\n\033[1;31m%s\033[0m\n\n--- last lines of %s ---\n' "$1" "$worker_log" >&2
    tail -n 40 "$worker_log" >&2 || true
    printf '\n--- jobs and log lines ---\n' >&2
    "$PSQL" -X "$url" -c "SELECT id, trigger_name, handler, state, error FROM sync.job ORDER BY id DESC LIMIT 10" \
        -c "SELECT job_id, level, message FROM sync.log ORDER BY id DESC LIMIT 20" >&2 || true
    exit 1
}

stop_old_worker
stop_cluster "$DEMO_DIR"
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
chmod 755 "$DEMO_DIR"
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting a throwaway PostgreSQL cluster in $DEMO_DIR on port $port"
start_cluster "$DEMO_DIR" "$port"
psql_q "$url" -c "CREATE EXTENSION pg_sync"

log "loading the db2db demo: the second database db2db_remote, setup SQL, import, secret"
psql_q "$url" -c "CREATE DATABASE db2db_remote"
psql_q "$remote_url" -f "$demo_sql/db2db_remote.sql"
psql_q "$url" -f "$demo_sql/db2db_setup.sql"
"$SYNC_WORKER_BIN" --database-url "$url" import "$demo_sql/db2db.json" >/dev/null
psql_q "$url" -v dsn="$remote_url" <<'SQL'
UPDATE sync.project_secret SET value = :'dsn'
WHERE key = 'POSTGRES_DSN' AND project_id = (SELECT id FROM sync.project WHERE name = 'db2db');
UPDATE sync.project SET active = true WHERE name = 'db2db';
SQL

log "starting the worker (log: $worker_log)"
"$SYNC_WORKER_BIN" --database-url "$url" --base-url "$base_url" \
    --webhook-listen "127.0.0.1:$webhook_port" --admin-listen "127.0.0.1:$admin_port" \
    >"$worker_log" 2>&1 &
worker_pid=$!
echo "$worker_pid" >"$DEMO_DIR/worker.pid"
for _ in $(seq 100); do
    kill -0 "$worker_pid" 2>/dev/null || fail_with_logs "the worker exited at start"
    [ "$("$PSQL" -X -qAt "$url" -c "SELECT count(*) FROM sync.live_workers()")" -gt 0 ] && break
    sleep 0.2
done
[ "$("$PSQL" -X -qAt "$url" -c "SELECT count(*) FROM sync.live_workers()")" -gt 0 ] \
    || fail_with_logs "the worker did not register within 20 s"

log "inserting a partner into the first database"
partner_id="$("$PSQL" -X -qAt -v ON_ERROR_STOP=1 "$url" \
    -c "INSERT INTO partner (name, email) VALUES ('Ada Lovelace', 'ada@example.com') RETURNING id")"
link_sql="SELECT count(*) FROM sync_search_links('db2db_partner', 'partner'::regclass, ARRAY[$partner_id])"
linked=0
for _ in $(seq 200); do
    if [ "$("$PSQL" -X -qAt "$url" -c "$link_sql")" = 1 ]; then linked=1; break; fi
    kill -0 "$worker_pid" 2>/dev/null || fail_with_logs "the worker died"
    sleep 0.1
done
[ "$linked" = 1 ] || fail_with_logs "partner $partner_id has no linked copy in db2db_remote after 20 s"

printf '\n\033[1mThe partner, in the first database (postgres):\033[0m\n'
"$PSQL" -X "$url" -c "SELECT * FROM partner WHERE id = $partner_id"
printf '\033[1mIts copy, in the second database (db2db_remote):\033[0m\n'
"$PSQL" -X "$remote_url" -c "SELECT * FROM partner WHERE origin_ref = 'pg_sync:$partner_id'"
printf '\033[1mThe link between them (sync.link):\033[0m\n'
"$PSQL" -X "$url" -c "SELECT * FROM sync_search_links('db2db_partner', 'partner'::regclass, ARRAY[$partner_id])"

psql_cmd="$(command -v psql >/dev/null && echo psql || echo "$PSQL")"
cat <<MSG
pg_sync is running: PostgreSQL on port $port, the worker (pid $worker_pid) with its
webhooks at $base_url/sync/webhook/<token> and its admin API on 127.0.0.1:$admin_port.

The web console: http://127.0.0.1:$admin_port/console/ (sign in as postgres, no
password: this throwaway cluster trusts local connections; docs/console.md).

  $psql_cmd '$url'         # pg_sync, the db2db project
  $psql_cmd '$remote_url'     # the second database

Things to try (docs/tutorial.md and docs/demos.md say more):
  INSERT INTO partner (name) VALUES ('Grace Hopper');        -- copied within a second
  -- change a copy in db2db_remote; the CHECK_REMOTE_PARTNERS cron pulls it back (every minute):
  UPDATE partner SET name = 'Ada King' WHERE origin_ref = 'pg_sync:$partner_id';   -- in db2db_remote
  SELECT sync_run_button('db2db', 'PUSH_ALL_PARTNERS');       -- copy partners that have no copy
  SELECT id, trigger_name, handler, state, result FROM sync.job ORDER BY id DESC LIMIT 5;
  SELECT created_at, level, message FROM sync.log_view WHERE project = 'db2db' ORDER BY id DESC LIMIT 10;
  curl -s 127.0.0.1:$admin_port/service/status; curl -s 127.0.0.1:$admin_port/metrics | head

The other demos run against the real APIs (tokens as secrets, then the SETUP buttons;
docs/demos.md). Load them with:
  $psql_cmd '$url' -f $demo_sql/github_trello_setup.sql
  $SYNC_WORKER_BIN --database-url '$url' import $demo_sql/github_trello.json
  $psql_cmd '$url' -f $demo_sql/telegram_setup.sql
  $SYNC_WORKER_BIN --database-url '$url' import $demo_sql/telegram.json
Their webhooks need a URL the services can reach: run this again with
PG_SYNC_DEMO_BASE_URL=https://<a tunnel to 127.0.0.1:$webhook_port>.

Worker log: $worker_log. Press Ctrl-C to stop the worker and the cluster.
MSG

if [ "${PG_SYNC_DEMO_NO_WAIT:-}" = 1 ]; then
    exit 0
fi
status=0
wait "$worker_pid" || status=$?
worker_pid=""
# A worker stopped by a signal exits 0 after its jobs finished.
[ "$status" = 0 ] || fail_with_logs "the worker exited with status $status"
log "the worker stopped"

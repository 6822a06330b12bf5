#!/usr/bin/env bash
# Sets up and runs the demo: builds and installs pg_sync into a private PostgreSQL
# prefix, starts a local throwaway cluster with the extension created, loads the demo
# project and runs the worker in the foreground (Ctrl-C stops everything).
source "$(dirname "$0")/lib.sh"

setup_all

DEMO_DIR="${PG_SYNC_DEMO_DIR:-/tmp/pg_sync_demo}"
port="${PG_SYNC_DEMO_PORT:-54329}"
stop_cluster "$DEMO_DIR"
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
chmod 755 "$DEMO_DIR"
trap 'stop_cluster "$DEMO_DIR"' EXIT

log "starting a throwaway PostgreSQL cluster in $DEMO_DIR on port $port"
start_cluster "$DEMO_DIR" "$port"
url="postgres://postgres@127.0.0.1:$port/postgres"
"$PG_SYNC_BINDIR/psql" -q -v ON_ERROR_STOP=1 "$url" -c "CREATE EXTENSION pg_sync"

cat <<MSG

pg_sync is installed in a throwaway cluster. Connect with:

    psql '$url'

Press Ctrl-C to stop the cluster.
MSG
while true; do sleep 3600; done

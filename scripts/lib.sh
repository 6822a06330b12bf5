# Shared shell helpers for scripts/demo.sh, scripts/test.sh, bench/* and .ci/run.
# Installs the toolchain pieces, builds the extension into a private PostgreSQL prefix.
#
# Why a private prefix: PostgreSQL only loads extensions from its own share/lib dirs.
# Copying Debian's PG 15 tree to a world-readable directory and installing pg_sync
# there keeps the system untouched, lets several checkouts test side by side, and
# works for the unprivileged `postgres` user even when the clone lives under /root.

set -euo pipefail

PG_SYNC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGRX_VERSION="0.18.0"
PG_MAJOR="15"
SYSTEM_PG_CONFIG="${SYSTEM_PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config}"
# The Python the worker embeds: Debian's, whose libpython lives in the system lib dir
# and is therefore found at run time on any Debian 12 machine without an rpath.
export PYO3_PYTHON="${PYO3_PYTHON:-/usr/bin/python3}"
export PATH="$HOME/.cargo/bin:$PATH"

# One prefix per checkout, outside the (possibly 0700) home directory.
_root_hash="$(printf '%s' "$PG_SYNC_ROOT" | md5sum | cut -c1-10)"
export PG_SYNC_PREFIX="${PG_SYNC_PREFIX:-/tmp/pg_sync_pg/${_root_hash}}"
export PG_SYNC_BINDIR="$PG_SYNC_PREFIX/lib/postgresql/$PG_MAJOR/bin"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages needed to build pgrx extensions and embed Python.
ensure_apt_packages() {
    # postgresql-$PG_MAJOR: the server binaries copied into the prefix (and the `postgres`
    # user clusters run as); build-essential, curl, ca-certificates: rustup and linking;
    # mypy, python3-typeshed, python3-pip, python3-venv: tests/python/test_task_stubs.py;
    # chromium, chromium-driver: the console's browser tests (tests/src/browser.rs).
    local pkgs=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang python3-dev python3-dateutil python3-tz python3-pytest mypy python3-typeshed python3-pip python3-venv pkg-config libssl-dev build-essential curl ca-certificates chromium chromium-driver)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Rust from rustup on a machine without it (Debian 12's rustc is too old for pgrx).
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        log "installing Rust with rustup (one-time)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
            | sh -s -- -y --profile minimal --no-modify-path >/dev/null
    fi
}

ensure_cargo_pgrx() {
    if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
        log "installing cargo-pgrx $PGRX_VERSION (one-time, a few minutes)"
        cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
    fi
    # pgrx needs to know where PostgreSQL 15 is; never let it download sources.
    local cfg="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
    if ! grep -qs "^pg$PG_MAJOR *= *\"$SYSTEM_PG_CONFIG\"" "$cfg"; then
        log "cargo pgrx init --pg$PG_MAJOR $SYSTEM_PG_CONFIG"
        cargo pgrx init "--pg$PG_MAJOR" "$SYSTEM_PG_CONFIG" >/dev/null
    fi
}

# Copy the system PostgreSQL tree once; PostgreSQL finds share/ and lib/ relative to
# its own binary, so the copy behaves like a full installation.
ensure_pg_prefix() {
    local bindir libdir sharedir
    bindir="$("$SYSTEM_PG_CONFIG" --bindir)"
    libdir="$("$SYSTEM_PG_CONFIG" --pkglibdir)"
    sharedir="$("$SYSTEM_PG_CONFIG" --sharedir)"
    local stamp="$PG_SYNC_PREFIX/.pg-version"
    local want
    want="$("$SYSTEM_PG_CONFIG" --version)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "preparing private PostgreSQL prefix in $PG_SYNC_PREFIX"
        rm -rf "$PG_SYNC_PREFIX"
        mkdir -p "$PG_SYNC_PREFIX/lib/postgresql/$PG_MAJOR" "$PG_SYNC_PREFIX/share/postgresql"
        cp -a "$bindir" "$PG_SYNC_PREFIX/lib/postgresql/$PG_MAJOR/bin"
        cp -a "$libdir" "$PG_SYNC_PREFIX/lib/postgresql/$PG_MAJOR/lib"
        cp -a "$sharedir" "$PG_SYNC_PREFIX/share/postgresql/$PG_MAJOR"
        echo "$want" >"$stamp"
    fi
    chmod -R a+rX "$(dirname "$PG_SYNC_PREFIX")"
}

# Build the extension with cargo-pgrx and copy the package into the prefix.
install_extension() {
    local out="$PG_SYNC_ROOT/target/pgrx-package"
    log "building the pg_sync extension"
    (cd "$PG_SYNC_ROOT/pg_sync" && cargo pgrx package --pg-config "$SYSTEM_PG_CONFIG" \
        --profile "${PG_SYNC_PROFILE:-release}" --out-dir "$out" >/dev/null)
    local pkglib share
    pkglib="$out$("$SYSTEM_PG_CONFIG" --pkglibdir)"
    share="$out$("$SYSTEM_PG_CONFIG" --sharedir)/extension"
    cp "$pkglib"/pg_sync.so "$PG_SYNC_PREFIX/lib/postgresql/$PG_MAJOR/lib/"
    cp "$share"/pg_sync* "$PG_SYNC_PREFIX/share/postgresql/$PG_MAJOR/extension/"
    # Install scripts of released versions, so that tests can install an old version
    # and upgrade it (cargo pgrx copies only upgrade scripts).
    cp "$PG_SYNC_ROOT"/pg_sync/sql/released/pg_sync--*.sql "$PG_SYNC_PREFIX/share/postgresql/$PG_MAJOR/extension/"
    chmod -R a+rX "$PG_SYNC_PREFIX"
}

build_worker() {
    log "building sync_worker"
    (cd "$PG_SYNC_ROOT" && cargo build --quiet --release -p sync_worker)
    export SYNC_WORKER_BIN="$PG_SYNC_ROOT/target/release/sync_worker"
}

setup_all() {
    ensure_apt_packages
    ensure_rust
    ensure_cargo_pgrx
    ensure_pg_prefix
    install_extension
    build_worker
}

# Run a command as the unprivileged `postgres` user when we are root: initdb and
# postgres refuse to run as root.
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# start_cluster DIR PORT [EXTRA_SERVER_OPTIONS]: a throwaway cluster listening on
# 127.0.0.1:PORT and a socket in DIR.
start_cluster() {
    local dir="$1" port="$2" extra="${3:-}"
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg_user "$PG_SYNC_BINDIR/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    as_pg_user "$PG_SYNC_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 $extra" start >/dev/null
}

stop_cluster() {
    local dir="$1"
    [ -f "$dir/data/postmaster.pid" ] || return 0
    as_pg_user "$PG_SYNC_BINDIR/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

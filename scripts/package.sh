#!/usr/bin/env bash
# Builds the two Debian packages of a release into target/debian/ (or $1):
# postgresql-15-pg-sync (the extension) and sync-worker (binary, unit, example config).
# Usage: scripts/package.sh [--no-build] [OUT_DIR]; --no-build packages what the last
# setup built (scripts/test.sh has just built it).
source "$(dirname "$0")/lib.sh"

build=1
if [ "${1:-}" = --no-build ]; then build=0; shift; fi
out="${1:-$PG_SYNC_ROOT/target/debian}"
if [ "$build" = 1 ]; then setup_all >&2; fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$PG_SYNC_ROOT/Cargo.toml" | head -1)"
arch="$(dpkg --print-architecture)"
maintainer="pg_sync developers <pg_sync@localhost>"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Debian's copyright file and the release notes, in both packages.
add_docs() {
    local root="$1" name="$2"
    install -d "$root/usr/share/doc/$name"
    install -m 0644 "$PG_SYNC_ROOT/LICENSE" "$root/usr/share/doc/$name/copyright"
    install -m 0644 "$PG_SYNC_ROOT/CHANGELOG.md" "$root/usr/share/doc/$name/CHANGELOG.md"
}

# Shared-library dependencies of the ELF files under $1, as dpkg-shlibdeps computes
# them (it wants a debian/control beside it).
shlib_depends() {
    local dir="$work/shlibs"
    mkdir -p "$dir/debian"
    printf 'Source: pg-sync\n\nPackage: pg-sync\nArchitecture: any\n' >"$dir/debian/control"
    (cd "$dir" && dpkg-shlibdeps -O "$@" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
}

build_deb() {
    local root="$1"
    find "$root" -type d -exec chmod 0755 {} +
    dpkg-deb --root-owner-group --build "$root" "$out" >&2
}

# --- postgresql-15-pg-sync: what `cargo pgrx package` laid out for Debian's PostgreSQL.
ext="postgresql-$PG_MAJOR-pg-sync"
root="$work/$ext"
mkdir -p "$root/DEBIAN"
cp -a "$PG_SYNC_ROOT/target/pgrx-package/usr" "$root/"
add_docs "$root" "$ext"
cat >"$root/DEBIAN/control" <<EOF
Package: $ext
Version: $version
Architecture: $arch
Maintainer: $maintainer
Depends: postgresql-$PG_MAJOR, $(shlib_depends "$root/usr/lib/postgresql/$PG_MAJOR/lib/pg_sync.so")
Section: database
Priority: optional
Description: pg_sync: integration projects inside PostgreSQL (extension)
 Projects, tasks, triggers, links between local rows and external records, and the
 job queue that sync_worker runs. CREATE EXTENSION pg_sync in each database; after
 an upgrade of this package, stop every sync_worker and run
 ALTER EXTENSION pg_sync UPDATE.
EOF
build_deb "$root"

# --- sync-worker: the binary, its systemd unit (contrib/, with the packaged path) and
# the example configuration (a conffile: upgrades keep local edits).
pkg="sync-worker"
root="$work/$pkg"
mkdir -p "$root/DEBIAN"
install -D -m 0755 "$PG_SYNC_ROOT/target/release/sync_worker" "$root/usr/bin/sync_worker"
install -D -m 0644 "$PG_SYNC_ROOT/contrib/worker.toml" "$root/etc/pg_sync/worker.toml"
install -D -m 0644 /dev/stdin "$root/lib/systemd/system/sync_worker.service" \
    < <(sed 's#/usr/local/bin/sync_worker#/usr/bin/sync_worker#g' "$PG_SYNC_ROOT/contrib/sync_worker.service")
add_docs "$root" "$pkg"
install -m 0644 "$PG_SYNC_ROOT/README.md" "$root/usr/share/doc/$pkg/README.md"
cp -r "$PG_SYNC_ROOT/docs" "$root/usr/share/doc/$pkg/docs"
echo /etc/pg_sync/worker.toml >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: $maintainer
Depends: $(shlib_depends "$root/usr/bin/sync_worker"), python3-dateutil, python3-tz, adduser
Recommends: $ext
Section: database
Priority: optional
Description: pg_sync worker: runs pg_sync jobs, webhooks and the admin API
 Claims jobs from a PostgreSQL database with the pg_sync extension, runs their
 Python task code in an embedded interpreter, serves webhooks and an admin HTTP
 API. Configure /etc/pg_sync/worker.toml and /etc/pg_sync/worker.env, then
 systemctl enable --now sync_worker.
EOF
# The unit runs as the system user pg_sync; the service is not started before it is
# configured.
cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    getent group pg_sync >/dev/null || addgroup --system pg_sync
    getent passwd pg_sync >/dev/null || adduser --system --ingroup pg_sync --no-create-home \
        --home /nonexistent --shell /usr/sbin/nologin pg_sync
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
EOF
cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
build_deb "$root"

ls "$out"/*_"$version"_"$arch".deb

#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the store matrix (docs/testing.md), from Debian's `postgresql` package:
#   scripts/postgres-throwaway.sh start DIR [PORT]   prints the ENCLAVE_TEST_DATABASE_URL to use
#   scripts/postgres-throwaway.sh stop DIR           stops it (the folder is then removed)
# initdb and postgres refuse to run as root, so as root the cluster runs under a dedicated system user
# (`pgtest`, made if missing) that owns every folder the server writes. Trust authentication on 127.0.0.1 only.
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$pgbin" ] || { echo "postgres-throwaway: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then su -s /bin/sh pgtest -c "$*"; else sh -c "$*"; fi
}

case "$cmd" in
  start)
    port=${3:-55432}
    if [ "$(id -u)" = 0 ]; then id pgtest >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin pgtest; fi
    mkdir -p "$dir"; chmod 755 "$dir"; mkdir -p "$dir/pg" "$dir/run"
    [ "$(id -u)" = 0 ] && chown pgtest "$dir/pg" "$dir/run"
    as_owner "$pgbin/initdb -D $dir/pg -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    # fsync off: the cluster lives as long as one test run and is never recovered after a machine crash.
    as_owner "$pgbin/pg_ctl -D $dir/pg -o '-p $port -k $dir/run -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200' -l $dir/run/pg.log -w -t 30 start" >/dev/null ||
      { cat "$dir/run/pg.log" >&2; exit 1; }
    "$pgbin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -c "CREATE ROLE enclave LOGIN CREATEDB PASSWORD 'throwaway'" -c "CREATE DATABASE enclave OWNER enclave" >/dev/null
    echo "postgres://enclave:throwaway@127.0.0.1:$port/enclave"
    ;;
  stop)
    [ -d "$dir/pg" ] && as_owner "$pgbin/pg_ctl -D $dir/pg -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2 ;;
esac

# Sourced by .ci/run: installs PostgreSQL from Debian's packages if missing, starts a throwaway
# cluster on 127.0.0.1:55432 (trust auth, data under /var/tmp), and exports
# STRATUS_TEST_POSTGRES for the test suite. `stop_postgres` ends it.
PG_PORT=55432
PG_DATA=/var/tmp/stratus-pg
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
if [ -f "$PG_DATA/postmaster.pid" ]; then as_pg "$PG_BIN/pg_ctl -D $PG_DATA -m immediate stop" >/dev/null 2>&1 || true; fi
rm -rf "$PG_DATA" && mkdir -p "$PG_DATA"
[ "$(id -u)" = 0 ] && chown postgres "$PG_DATA"
as_pg "$PG_BIN/initdb -D $PG_DATA -A trust -U postgres" >/dev/null
as_pg "$PG_BIN/pg_ctl -D $PG_DATA -o '-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1' -l $PG_DATA/log -w start" >/dev/null
export STRATUS_TEST_POSTGRES="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
stop_postgres() { as_pg "$PG_BIN/pg_ctl -D $PG_DATA -m fast stop" >/dev/null 2>&1 || true; }

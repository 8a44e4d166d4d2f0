#!/bin/sh
# enclave-postgres-entrypoint.sh: PostgreSQL 15 for docker-compose.ha.yml.
#
# As root (only to prepare): owns the data volume and the socket folder for `postgres`, and on the very first
# start (empty volume) creates the cluster with initdb, then the role and database the replicas use, with the
# password from POSTGRES_PASSWORD_FILE. Then postgres runs as user `postgres`, as PID 1 of the container's init.
#
#   POSTGRES_PASSWORD_FILE   the `enclave` role's password (the same file the replicas read)   required
#   POSTGRES_USER            role and database name (default enclave)
#   any arguments            passed to postgres (e.g. -c max_connections=200)
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
DB_USER=${POSTGRES_USER:-enclave}
PWFILE=${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE is required (the enclave role password file)}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

[ -r "$PWFILE" ] || { echo "enclave-postgres: cannot read POSTGRES_PASSWORD_FILE $PWFILE" >&2; exit 1; }
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"
chmod 2775 /var/run/postgresql

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # The secret is mode 0400 for the replicas' uid; postgres reads a private copy, removed right after.
  tmp=$(mktemp -d)
  tr -d '\r\n' < "$PWFILE" > "$tmp/pw"
  [ -s "$tmp/pw" ] || { echo "enclave-postgres: $PWFILE is empty" >&2; exit 1; }
  chown -R postgres:postgres "$tmp"
  # The superuser `postgres` has no password: it logs in only over the local socket (peer), e.g.
  # `docker-compose exec -u postgres db psql` or pg_dump. The replicas use `enclave` over TCP (scram).
  as_postgres initdb --pgdata="$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 > /dev/null
  {
    echo "host all all 0.0.0.0/0 scram-sha-256"
    echo "host all all ::/0 scram-sha-256"
  } >> "$PGDATA/pg_hba.conf"
  as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start > /dev/null
  # The password is read by psql itself (\set from the file), so it is on no command line; :'pw' quotes it.
  as_postgres psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -U postgres -d postgres \
    -v user="$DB_USER" <<SQL
\\set pw \`cat $tmp/pw\`
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
CREATE DATABASE :"user" OWNER :"user";
SQL
  as_postgres psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -U postgres -d "$DB_USER" \
    -c "REVOKE ALL ON SCHEMA public FROM PUBLIC" -c "ALTER SCHEMA public OWNER TO \"$DB_USER\""
  as_postgres pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
  rm -rf "$tmp"
  echo "enclave-postgres: created the cluster in $PGDATA with role and database \"$DB_USER\""
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" \
  -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"

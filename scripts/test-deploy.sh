#!/usr/bin/env bash
# test-deploy.sh - opt-in deployment test (`npm run test:deploy`; CI does not run it).
#
# Builds this repo's Dockerfile and runs its docker-compose.yml the way docs/deployment.md tells an
# operator to, then checks it from the host like a client would:
#   image (non-root, production deps only, better-sqlite3 loads), file secrets, HTTPS /health with the CA
#   pinned from the volume, the TLS SAN, port on 127.0.0.1 only, compose healthcheck, JSON logs without
#   secrets, login with the admin password secret, keystore + enclave creation, online backup and its restore,
#   `restart`, graceful stop (exit 0), `down` + `up -d` keeping the volume (same CA, enclave still there),
#   `down -v` leaving nothing behind.
#
# Docker engine: the one DOCKER_HOST (or the default socket) points at; otherwise the repository's own kit,
# tools/docker (a private engine for machines without one: see its README), whose engine is stopped again at
# the end if this script started it (scripts/lib/harness.sh). The stack gets its own project name, port, secrets and image tag, so it never
# touches a real deployment on the same host. The stack is removed (down -v) on every exit.
#
#   NO_CACHE=1      build without the layer cache (npm ci and the better-sqlite3 compile run again)
#   KEEP_ENGINE=1   leave a tools/docker engine this script started running
#
# Ends with "deploy: N passed, N failed"; exits non-zero on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

PROJECT=enclavedeploy$$
SERVICE=server
export ENCLAVE_IMAGE=ros2-enclave-server:deploy-test
export ENCLAVE_TLS_SAN=enclave.deploy-test.lan
KS=deploytest
ENCLAVE=/fleet/amr_01/driver
WORK=$(mktemp -d /tmp/enclave-deploy.XXXXXX)
LOGDIR=$WORK/logs
mkdir -p "$LOGDIR"
export ENCLAVE_SECRETS_DIR=$WORK/secrets
CA=$WORK/ca.cert.pem

# shellcheck source=lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
summary() { harness_summary deploy; }
abort() { bad "$*"; exit 1; }   # the EXIT trap cleans up and prints the summary

# ------------------------------------------------------------------------------------------ engine
harness_compose_engine || { summary; exit 1; }

compose() { "${COMPOSE[@]}" -p "$PROJECT" "$@"; }
cid() { compose ps -q "$SERVICE" 2>/dev/null | head -1; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$(cid)" 2>/dev/null; }
wait_health() { local _; for _ in $(seq 1 $(( $1 * 5 ))); do [ "$(health)" = healthy ] && return 0; sleep 0.2; done; return 1; }
in_ctr() { compose exec -T "$SERVICE" "$@"; }

cleanup() {
  if [ "$fail" -gt 0 ] && [ -n "$(cid)" ]; then
    compose logs --no-color --tail 40 > "$LOGDIR/server-tail.log" 2>&1 || true
    log "last server log lines (more in $LOGDIR):"; tail -15 "$LOGDIR/server-tail.log"
  fi
  harness_finish "$ENCLAVE_SECRETS_DIR" "$WORK/body" "$WORK"/*.db
}
trap cleanup EXIT
trap 'bad "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------------------------- secrets, settings
# As docs/deployment.md says: a 32-byte hex master key and an admin password, readable by uid 1000 only.
mkdir -p "$ENCLAVE_SECRETS_DIR" && chmod 0700 "$ENCLAVE_SECRETS_DIR"
openssl rand -hex 32 > "$ENCLAVE_SECRETS_DIR/master.key"
ADMIN_PASSWORD=$(openssl rand -base64 18 | tr '+/' '-_')
printf '%s\n' "$ADMIN_PASSWORD" > "$ENCLAVE_SECRETS_DIR/admin_password"
if [ "$(id -u)" = 0 ]; then
  chown 1000:1000 "$ENCLAVE_SECRETS_DIR/master.key" "$ENCLAVE_SECRETS_DIR/admin_password"
  chmod 0400 "$ENCLAVE_SECRETS_DIR/master.key" "$ENCLAVE_SECRETS_DIR/admin_password"
  secret_mode="owner 1000:1000, 0400"
else
  chmod 0444 "$ENCLAVE_SECRETS_DIR/master.key" "$ENCLAVE_SECRETS_DIR/admin_password"   # cannot chown without root
  secret_mode="0444 in a 0700 folder (not root)"
fi
PORT=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
export ENCLAVE_PUBLISH=127.0.0.1:$PORT
URL=https://127.0.0.1:$PORT
log "project $PROJECT, image $ENCLAVE_IMAGE, published on $ENCLAVE_PUBLISH, secrets in $ENCLAVE_SECRETS_DIR ($secret_mode)"
compose config -q > "$LOGDIR/config.log" 2>&1 || abort "docker-compose config: $(cat "$LOGDIR/config.log")"

# ------------------------------------------------------------------------------------------- build
build_opts=(); [ "${NO_CACHE:-0}" = 1 ] && build_opts=(--no-cache)
t=$(now)
if compose build "${build_opts[@]}" > "$LOGDIR/build.log" 2>&1; then
  T=$(secs "$t")
  if grep -Eq 'added [0-9]+ packages' "$LOGDIR/build.log"; then
    ok "docker-compose build in ${T}s; npm ci (build): $(grep -Eo 'added [0-9]+ packages in [^ ]+' "$LOGDIR/build.log" | head -1); release tarball $(grep -Eo 'ros2-enclave-server-[0-9.]+\.tgz: [^/]*' "$LOGDIR/build.log" | head -1), its npm ci --omit=dev: $(grep -Eo 'added [0-9]+ packages in [^ ]+' "$LOGDIR/build.log" | sed -n 2p)"
  elif grep -q 'Using cache' "$LOGDIR/build.log"; then
    ok "docker-compose build in ${T}s (dependency layers cached; NO_CACHE=1 runs npm ci again)"
  else bad "build finished but shows neither npm ci nor the cache (see $LOGDIR/build.log)"; fi
else
  tail -30 "$LOGDIR/build.log"; abort "docker-compose build (log: $LOGDIR/build.log)"
fi

# ------------------------------------------------------------------------------------------- image
run_img() { docker run --rm --network none --entrypoint "$1" "$ENCLAVE_IMAGE" "${@:2}"; }
user=$(docker image inspect -f '{{.Config.User}}' "$ENCLAVE_IMAGE")
size=$(docker image inspect -f '{{.Size}}' "$ENCLAVE_IMAGE" | awk '{printf "%d MB", $1/1e6}')
[ "$user" = node ] && ok "image $ENCLAVE_IMAGE ($size) runs as USER node" || bad "image USER is '$user', expected node"
contents=$(run_img ls -A /app | tr '\n' ' ')
[ "$contents" = "bin dist migrations node_modules npm-shrinkwrap.json package.json server " ] &&
  ok "image /app holds only: $contents" || bad "image /app holds: $contents"
extra=$(run_img sh -c 'cd /app && ls -d node_modules/typescript node_modules/tsx node_modules/supertest dist/test secrets data 2>/dev/null' | tr '\n' ' ')
[ -z "$extra" ] && ok "no dev dependencies, tests, secrets or data in the image" || bad "image contains: $extra"
sqlite=$(run_img node -e "const D=require('/app/node_modules/better-sqlite3');const d=new D(':memory:');console.log(d.prepare('select sqlite_version() v').get().v, process.getuid())" 2>&1)
[[ "$sqlite" =~ ^[0-9.]+\ 1000$ ]] && ok "better-sqlite3 loads in the runtime image as uid 1000 (SQLite $sqlite)" ||
  bad "better-sqlite3 does not load in the runtime image: $sqlite"

# ---------------------------------------------------------------------------------- up, HTTPS, TLS
https_ok() { curl -fsS -m 5 --cacert "$CA" "$URL/health" 2>/dev/null; }
wait_https() {   # SECONDS: fetch the CA from the volume when there is none yet, then /health must answer
  local _
  for _ in $(seq 1 $(( $1 * 5 ))); do
    [ -s "$CA" ] || docker cp "$(cid):/data/tls/ca.cert.pem" "$CA" > /dev/null 2>&1 || true
    [ -s "$CA" ] && [ "$(https_ok)" = '{"status":"ok"}' ] && return 0
    sleep 0.2
  done
  return 1
}
t=$(now)
compose up -d > "$LOGDIR/up.log" 2>&1 || { cat "$LOGDIR/up.log"; abort "up -d"; }
T_UP=$(secs "$t")
wait_https 60 || abort "no HTTPS answer on $URL/health within 60 s"
ok "up -d in ${T_UP}s; GET $URL/health -> $(https_ok) after $(secs "$t")s, with the CA copied out of the volume (docker cp)"
CA_SUM=$(sha256sum < "$CA" | cut -c1-64)
subject=$(openssl x509 -in "$CA" -noout -subject 2>/dev/null | sed 's/^subject=//')
code=0; curl -sS -m 5 -o /dev/null "$URL/health" 2> "$LOGDIR/unpinned.log" || code=$?
[ "$code" = 60 ] && ok "without the pinned CA the TLS handshake is refused (curl exit 60); CA:$subject" ||
  bad "unpinned request: curl exit $code (expected 60, certificate not trusted)"
san=$(curl -fsS -m 5 --cacert "$CA" --resolve "$ENCLAVE_TLS_SAN:$PORT:127.0.0.1" "https://$ENCLAVE_TLS_SAN:$PORT/health" 2>&1)
code=0; curl -sS -m 5 -o /dev/null --cacert "$CA" --resolve "not-in-the-cert.lan:$PORT:127.0.0.1" "https://not-in-the-cert.lan:$PORT/health" 2>> "$LOGDIR/unpinned.log" || code=$?
[ "$san" = '{"status":"ok"}' ] && [ "$code" = 60 ] && ok "ENCLAVE_TLS_SAN: https://$ENCLAVE_TLS_SAN:$PORT/health verifies -> $san (a name not in the certificate: curl exit 60)" ||
  bad "ENCLAVE_TLS_SAN=$ENCLAVE_TLS_SAN: '$san'; a name outside the certificate gave curl exit $code (expected 60)"
listen=$(ss -ltnH "sport = :$PORT" 2>/dev/null | awk '{print $4}' | sort -u | tr '\n' ' ')
[ "$listen" = "127.0.0.1:$PORT " ] && ok "port $PORT bound on 127.0.0.1 only" || bad "port $PORT bound on: '$listen'"
if wait_health 90; then ok "compose healthcheck: healthy $(secs "$t")s after up -d"; else bad "health is '$(health)', not healthy"; fi

# --------------------------------------------------------------------------- container and secrets
uid=$(in_ctr id -u | tr -d '\r')
init=$(docker inspect -f '{{.HostConfig.Init}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}' "$(cid)")
[ "$uid" = 1000 ] && [ "$init" = "true true [ALL]" ] && ok "container runs as uid $uid (node), init, read-only root, no capabilities" ||
  bad "container: uid=$uid init/readonly/capdrop=$init"
datamode=$(in_ctr stat -c '%a %U' /data | tr -d '\r')
[ "$datamode" = "700 node" ] && ok "/data volume is 0700, owned by node" || bad "/data is '$datamode', expected '700 node'"
leftover=$(in_ctr sh -c 'ls /data/master.key /data/initial-admin-password 2>/dev/null' | tr -d '\r' | tr '\n' ' ')
rw=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/run/secrets/master_key"}}{{.RW}}{{end}}{{end}}' "$(cid)")
readable=$(in_ctr sh -c 'test -r /run/secrets/master_key && test -r /run/secrets/admin_password && echo yes' | tr -d '\r')
[ -z "$leftover" ] && [ "$rw" = false ] && [ "$readable" = yes ] &&
  ok "secrets used from /run/secrets (read-only): no master.key or initial-admin-password in /data" ||
  bad "secrets: left in /data: '$leftover'; secret mount RW=$rw; readable by node: $readable"

# ------------------------------------------------------------------------------------------- API
TOKEN=
api() {   # METHOD PATH [JSON] -> prints the HTTP status; body in $WORK/body
  local args=(-sS -m 10 --cacert "$CA" -X "$1" -o "$WORK/body" -w '%{http_code}' -H 'Content-Type: application/json')
  [ -n "$TOKEN" ] && args+=(-H "Authorization: Bearer $TOKEN")
  [ $# -ge 3 ] && args+=(--data "$3")
  curl "${args[@]}" "$URL$2" 2>> "$LOGDIR/api.log" || echo " curl failed"
}
jget() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{const v=process.argv[1].split(".").reduce((o,k)=>o==null?o:o[k],JSON.parse(s));console.log(typeof v==="object"?JSON.stringify(v):v)}catch{console.log("")}})' "$1" < "$WORK/body"; }
login() {
  TOKEN=
  local body; body=$(node -e 'console.log(JSON.stringify({username:"admin",password:process.argv[1]}))' "$ADMIN_PASSWORD")
  local st; st=$(api POST /v1/auth/login "$body")
  [ "$st" = 200 ] && TOKEN=$(jget token)
  [ -n "$TOKEN" ]
}
has_enclave() { [ "$(api GET "/v1/keystores/$KS/enclaves")" = 200 ] && node -e 'const b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));process.exit(b.enclaves.some(e=>e.path===process.argv[2])?0:1)' "$WORK/body" "$ENCLAVE"; }

login && ok "POST /v1/auth/login as admin with the password from the admin_password secret -> token" ||
  bad "login with the secret's password failed: $(cat "$WORK/body" 2>/dev/null)"
st=$(api POST /v1/keystores "{\"name\":\"$KS\"}")
[ "$st" = 201 ] && ok "POST /v1/keystores {name:$KS} -> 201" || bad "create keystore -> $st $(cat "$WORK/body")"
st=$(api POST "/v1/keystores/$KS/enclaves" "{\"path\":\"$ENCLAVE\"}")
[ "$st" = 201 ] && ok "POST /v1/keystores/$KS/enclaves {path:$ENCLAVE} -> 201" || bad "create enclave -> $st $(cat "$WORK/body")"
has_enclave && ok "GET /v1/keystores/$KS/enclaves lists $ENCLAVE" || bad "enclave not listed: $(cat "$WORK/body")"

# ------------------------------------------------------------------------------------------- logs
docker logs "$(cid)" > "$LOGDIR/server-1.log" 2>&1
nonjson=$(node -e 'const l=require("fs").readFileSync(process.argv[1],"utf8").split("\n").filter(Boolean);let bad=0;for(const x of l){try{JSON.parse(x)}catch{bad++}}console.log(l.length+" "+bad)' "$LOGDIR/server-1.log")
leak=0
grep -qF "$ADMIN_PASSWORD" "$LOGDIR/server-1.log" && leak=1
grep -qF "$(cat "$ENCLAVE_SECRETS_DIR/master.key")" "$LOGDIR/server-1.log" && leak=1
if [ "${nonjson#* }" = 0 ] && grep -q '"msg":"listening"' "$LOGDIR/server-1.log" && [ "$leak" = 0 ]; then
  ok "logs: ${nonjson% *} JSON lines on stdout, 'listening' among them, neither secret in them"
else bad "logs: lines/non-JSON=$nonjson, leak=$leak (see $LOGDIR/server-1.log)"; fi

# ----------------------------------------------------------------------------------------- backup
t=$(now)
BK=/data/backup-$(date +%F).db
if in_ctr node bin/enclave-server.js backup "$BK" > "$LOGDIR/backup.log" 2>&1 &&
   docker cp "$(cid):$BK" "$WORK/backup.db" > /dev/null 2>&1 &&
   [ "$(head -c 15 "$WORK/backup.db")" = "SQLite format 3" ]; then
  ok "docker-compose exec $SERVICE node bin/enclave-server.js backup $BK: $(stat -c %s "$WORK/backup.db") bytes, SQLite, copied out with docker cp ($(secs "$t")s)"
else bad "backup failed: $(tail -3 "$LOGDIR/backup.log")"; fi
in_ctr rm -f "$BK" > /dev/null 2>&1
st=$(api POST /v1/keystores '{"name":"after-backup"}')   # made after the backup: a restore must drop it
[ "$st" = 201 ] || bad "create keystore after-backup -> $st $(cat "$WORK/body")"

# ---------------------------------------------------------------------------------------- restart
t=$(now)
compose restart > "$LOGDIR/restart.log" 2>&1 || bad "docker-compose restart"
T_R=$(secs "$t")
if wait_https 60 && login && has_enclave && [ "$(sha256sum < "$CA" | cut -c1-64)" = "$CA_SUM" ]; then
  ok "restart in ${T_R}s, answering after $(secs "$t")s; admin login, $KS:$ENCLAVE and the CA survived"
else bad "after restart: data or CA lost ($(cat "$WORK/body" 2>/dev/null))"; fi

# ------------------------------------------------------------------------------ graceful stop (SIGTERM)
C=$(cid)
t=$(now)
compose stop > "$LOGDIR/stop.log" 2>&1 || bad "docker-compose stop"
T_S=$(secs "$t")
exitcode=$(docker inspect -f '{{.State.Running}} {{.State.ExitCode}}' "$C" 2>/dev/null)
docker logs "$C" > "$LOGDIR/server-2.log" 2>&1
if [ "$exitcode" = "false 0" ] && grep -q '"signal":"SIGTERM"' "$LOGDIR/server-2.log"; then
  ok "stop took ${T_S}s: SIGTERM logged, exit code 0"
else bad "stop: exit code '$exitcode' (took ${T_S}s; see $LOGDIR/server-2.log)"; fi

# ------------------------------------------------------------------- down (volume kept) and up again
t=$(now)
compose down > "$LOGDIR/down.log" 2>&1 || bad "down"
vol=$(docker volume ls -q --filter "name=${PROJECT}_enclave-data")
[ -n "$vol" ] && ok "down in $(secs "$t")s; volume $vol kept" || bad "volume gone after plain down"
rm -f "$CA"   # fetch it again from the volume: it must be the same CA
t=$(now)
compose up -d > "$LOGDIR/up2.log" 2>&1 || bad "up -d (2)"
if wait_https 60 && [ "$(sha256sum < "$CA" | cut -c1-64)" = "$CA_SUM" ] && login && has_enclave; then
  ok "down + up -d: answering after $(secs "$t")s; same CA (sha256 ${CA_SUM:0:16}...), admin login, $KS:$ENCLAVE still listed"
else bad "after down + up -d: data or CA lost ($(cat "$WORK/body" 2>/dev/null))"; fi
docker logs "$(cid)" > "$LOGDIR/server-3.log" 2>&1
if grep -q '"msg":"listening"' "$LOGDIR/server-3.log" && ! grep -qE '"msg":"(applied migrations|created|issued TLS)' "$LOGDIR/server-3.log"; then
  ok "second start regenerated nothing (no migrations applied, no key, CA or certificate created)"
else bad "second start regenerated: $(grep -oE '"msg":"(applied migrations|created[^"]*|issued TLS[^"]*)' "$LOGDIR/server-3.log" | tr '\n' ' ')"; fi
if wait_health 90; then ok "healthy again $(secs "$t")s after up -d"; else bad "not healthy after down + up -d: $(health)"; fi

# ------------------------------------------------------------------------ restore the backup (docs)
t=$(now)
compose stop > "$LOGDIR/restore.log" 2>&1 &&
  compose run --rm -T "$SERVICE" sh -c 'rm -f /data/enclaves.db-wal /data/enclaves.db-shm && cat > /data/enclaves.db' \
    < "$WORK/backup.db" >> "$LOGDIR/restore.log" 2>&1 &&
  compose up -d >> "$LOGDIR/restore.log" 2>&1 || bad "restore commands failed (see $LOGDIR/restore.log)"
names=
if wait_https 60 && login && [ "$(api GET /v1/keystores)" = 200 ]; then
  names=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).keystores.map(k=>k.name).sort().join(","))' "$WORK/body")
fi
[ "$names" = "$KS" ] && has_enclave &&
  ok "restore (stop, run --rm ... cat > /data/enclaves.db, up -d) in $(secs "$t")s: keystores back to '$names', after-backup gone, $ENCLAVE listed" ||
  bad "after restore: keystores '$names' (expected '$KS'), body $(cat "$WORK/body" 2>/dev/null)"

# ------------------------------------------------------------------------------ down -v: nothing left
harness_down_v "$PROJECT"

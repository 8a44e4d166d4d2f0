#!/usr/bin/env bash
# test-deploy-ha.sh - opt-in test of the replicated deployment (`npm run test:deploy:ha`; CI does not run it).
#
# Builds the three images of docker-compose.ha.yml (server, PostgreSQL 15, HAProxy), brings the stack up the
# way docs/deployment.md ("High availability") tells an operator to, and checks it from the host like robots
# and admins would:
#   PostgreSQL 15 in its own image; /health through the balancer with the CA from deploy/ha/make-tls.sh pinned,
#   the same certificate from the balancer and from each replica; compose healthchecks and HAProxy's checks;
#   both replicas on PostgreSQL (one set of migrations, one admin); admin login, a keystore and an enclave
#   through the balancer; a token from replica A accepted by replica B; a real enclave-agent (enrolled and
#   long-polling through the balancer, 60 s polls not cut); a pg_dump backup; the replica holding the agent's
#   poll stopped (service keeps answering, the agent reconnects through the balancer and gets a new enclave),
#   then the other replica SIGKILLed (same again, with a rotation); PostgreSQL stopped (503 + Retry-After at
#   once, the agent keeps its enclaves) and started (served again); the pg_dump restore; `down -v` leaving
#   nothing behind.
#
# Each replica is also published on a port of its own, on 127.0.0.1, by a compose override this script writes
# (the deployment itself publishes only the balancer): that is how "a token from A works on B" is asked.
#
# Docker engine: the one DOCKER_HOST (or the default socket) points at; otherwise the repository's own kit,
# tools/docker, stopped again at the end if this script started it (scripts/lib/harness.sh). The stack gets its
# own project name, ports, secrets and image tags, so it never touches a real deployment on the same host, and
# is removed (down -v) on every exit.
#
#   NO_CACHE=1      build without the layer cache
#   NO_BUILD=1      use the images an earlier run built (same tags) instead of building
#   KEEP_ENGINE=1   leave a tools/docker engine this script started running
#
# Ends with "deploy-ha: N passed, N failed"; exits non-zero on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

PROJECT=enclaveha$$
export ENCLAVE_IMAGE=ros2-enclave-server:deploy-ha-test
export ENCLAVE_HA_TAG=deploy-test
LAN_NAME=enclave.deploy-ha-test.lan
KS=hatest
ENCLAVE=/fleet/amr_01/driver
ENCLAVE2=/fleet/amr_01/lidar
ROBOT=amr_01
WORK=$(mktemp -d /tmp/enclave-deploy-ha.XXXXXX)
LOGDIR=$WORK/logs
mkdir -p "$LOGDIR"
export ENCLAVE_SECRETS_DIR=$WORK/secrets
CA=$ENCLAVE_SECRETS_DIR/tls-ca.cert.pem
AGENT_STATE=$WORK/agent-state
AGENT_RUN=$(mktemp -d /dev/shm/enclave-ha.XXXXXX)
AGENT_LOG=$LOGDIR/agent.log
AGENT=(node --import tsx "$ROOT/client/agent/main.ts")
AGENT_PID=

# shellcheck source=lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
summary() { harness_summary deploy-ha; }
abort() { bad "$*"; exit 1; }   # the EXIT trap cleans up and prints the summary

# ------------------------------------------------------------------------------------------ engine
harness_compose_engine || { summary; exit 1; }

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.ha.yml -f "$WORK/replica-ports.yml" "$@"; }
cid() { compose ps -q "$1" 2>/dev/null | head -1; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$(cid "$1")" 2>/dev/null; }
psql_db() { compose exec -T -u postgres db psql -X -q -At -d enclave -c "$1" 2> /dev/null | tr -d '\r'; }
# HAProxy's view: "backend/server STATUS current-sessions" lines, from its stats page inside the container.
lb_stats() {
  docker exec "$(cid balancer)" node -e "require('http').get('http://127.0.0.1:8404/stats;csv',r=>{let s='';r.on('data',d=>s+=d).on('end',()=>{for(const l of s.split('\n')){const f=l.split(',');if(/^server-[ab]$/.test(f[1]))console.log(f[0]+'/'+f[1]+' '+f[17]+' '+f[4])}})}).on('error',()=>process.exit(1))" 2> /dev/null
}
lb_status() { lb_stats | awk -v s="$1" '$1 == s { print $2 }'; }        # lb_status ready/server-a -> UP / DOWN / MAINT
lb_limit() {   # the balancer's connection limit (its frontend's session limit), derived from the open-file limit
  docker exec "$(cid balancer)" node -e "require('http').get('http://127.0.0.1:8404/stats;csv',r=>{let s='';r.on('data',d=>s+=d).on('end',()=>{const l=s.split('\n').find(x=>x.startsWith('enclave,FRONTEND,'));console.log(l?l.split(',')[6]:'')})}).on('error',()=>process.exit(1))" 2> /dev/null
}
wait_for() {   # SECONDS CMD...: until CMD succeeds (tried every 0.2 s, and once more at the deadline)
  local end=$(( SECONDS + $1 )); shift
  while [ "$SECONDS" -lt "$end" ]; do "$@" && return 0; sleep 0.2; done
  "$@"
}

stop_agent() {
  [ -n "$AGENT_PID" ] || return 0
  kill -TERM "$AGENT_PID" 2> /dev/null
  local _; for _ in $(seq 1 50); do kill -0 "$AGENT_PID" 2> /dev/null || break; sleep 0.2; done
  kill -KILL "$AGENT_PID" 2> /dev/null
  wait "$AGENT_PID" 2> /dev/null; local code=$?
  AGENT_PID=
  return "$code"
}

cleanup() {
  stop_agent > /dev/null 2>&1
  if [ "$fail" -gt 0 ] && [ -n "$(cid server-a)$(cid server-b)" ]; then
    compose logs --no-color --tail 40 > "$LOGDIR/stack-tail.log" 2>&1 || true
    log "last log lines of the stack (more in $LOGDIR):"; tail -25 "$LOGDIR/stack-tail.log"
  fi
  harness_finish "$ENCLAVE_SECRETS_DIR" "$AGENT_STATE" "$AGENT_RUN" "$WORK/body" "$WORK"/*.dump
}
trap cleanup EXIT
trap 'bad "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------------------------- secrets, settings
# As docs/deployment.md says: master key, token secret, admin and database passwords readable by uid 1000
# only; the TLS CA and the one server certificate of both replicas from deploy/ha/make-tls.sh.
mkdir -p "$ENCLAVE_SECRETS_DIR" && chmod 0700 "$ENCLAVE_SECRETS_DIR"
openssl rand -hex 32 > "$ENCLAVE_SECRETS_DIR/master.key"
openssl rand -hex 32 > "$ENCLAVE_SECRETS_DIR/token.secret"
openssl rand -hex 24 > "$ENCLAVE_SECRETS_DIR/db_password"
ADMIN_PASSWORD=$(openssl rand -base64 18 | tr '+/' '-_')
printf '%s\n' "$ADMIN_PASSWORD" > "$ENCLAVE_SECRETS_DIR/admin_password"
SECRET_FILES=(master.key token.secret db_password admin_password)
if [ "$(id -u)" = 0 ]; then
  (cd "$ENCLAVE_SECRETS_DIR" && chown 1000:1000 "${SECRET_FILES[@]}" && chmod 0400 "${SECRET_FILES[@]}")
  secret_mode="owner 1000:1000, 0400"
else
  (cd "$ENCLAVE_SECRETS_DIR" && chmod 0444 "${SECRET_FILES[@]}")   # cannot chown without root
  secret_mode="0444 in a 0700 folder (not root)"
fi
deploy/ha/make-tls.sh --secrets "$ENCLAVE_SECRETS_DIR" "$LAN_NAME" > "$LOGDIR/make-tls.log" 2>&1 ||
  abort "deploy/ha/make-tls.sh: $(cat "$LOGDIR/make-tls.log")"
free_port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
PORT=$(free_port); PORT_A=$(free_port); PORT_B=$(free_port)
export ENCLAVE_PUBLISH=127.0.0.1:$PORT
URL=https://127.0.0.1:$PORT
URL_A=https://127.0.0.1:$PORT_A
URL_B=https://127.0.0.1:$PORT_B
cat > "$WORK/replica-ports.yml" <<EOF
# test-deploy-ha.sh only: each replica on a port of its own, to ask one replica directly.
version: "3.8"
services:
  server-a:
    ports: ["127.0.0.1:$PORT_A:8443"]
  server-b:
    ports: ["127.0.0.1:$PORT_B:8443"]
EOF
log "project $PROJECT, balancer on $ENCLAVE_PUBLISH (replicas: A $PORT_A, B $PORT_B), secrets in $ENCLAVE_SECRETS_DIR ($secret_mode)"
compose config -q > "$LOGDIR/config.log" 2>&1 || abort "docker-compose config: $(cat "$LOGDIR/config.log")"
"${COMPOSE[@]}" -f docker-compose.ha.yml config -q > /dev/null 2>&1 || abort "docker-compose.ha.yml alone does not validate"

# ------------------------------------------------------------------------------------------- build
build_opts=(); [ "${NO_CACHE:-0}" = 1 ] && build_opts=(--no-cache)
t=$(now)
if [ "${NO_BUILD:-0}" = 1 ]; then log "NO_BUILD=1: using the images $ENCLAVE_IMAGE, enclave-ha-postgres:$ENCLAVE_HA_TAG, enclave-ha-haproxy:$ENCLAVE_HA_TAG"
elif compose build "${build_opts[@]}" > "$LOGDIR/build.log" 2>&1; then ok "docker-compose build (server, PostgreSQL, HAProxy) in $(secs "$t")s"
else tail -30 "$LOGDIR/build.log"; abort "docker-compose build (log: $LOGDIR/build.log)"; fi
pgv=$(docker run --rm --network none --entrypoint postgres "enclave-ha-postgres:$ENCLAVE_HA_TAG" --version 2>&1)
hav=$(docker run --rm --network none --entrypoint haproxy "enclave-ha-haproxy:$ENCLAVE_HA_TAG" -v 2>&1 | head -1)
[[ $pgv == *"(PostgreSQL) 15."* ]] && [[ $hav == "HAProxy version 2."* ]] &&
  ok "images from Debian bookworm's packages: $pgv; ${hav% - *}" || bad "images: '$pgv' / '$hav'"

# ---------------------------------------------------------------------------------- up, TLS, health
https_ok() { curl -fsS -m 5 --cacert "$CA" "$1/health" 2> /dev/null; }
health_ok() { [ "$(https_ok "$URL")" = '{"status":"ok"}' ]; }
t=$(now)
compose up -d --no-build > "$LOGDIR/up.log" 2>&1 || { cat "$LOGDIR/up.log"; abort "up -d"; }
T_UP=$(secs "$t")
wait_for 90 health_ok || abort "no HTTPS answer on $URL/health within 90 s"
ok "up -d in ${T_UP}s; GET $URL/health through the balancer -> $(https_ok "$URL") after $(secs "$t")s, the CA from make-tls.sh pinned"
code=0; curl -sS -m 5 -o /dev/null "$URL/health" 2> /dev/null || code=$?
san=$(curl -fsS -m 5 --cacert "$CA" --resolve "$LAN_NAME:$PORT:127.0.0.1" "https://$LAN_NAME:$PORT/health" 2>&1)
[ "$code" = 60 ] && [ "$san" = '{"status":"ok"}' ] &&
  ok "unpinned: TLS refused (curl exit 60); https://$LAN_NAME:$PORT/health (a make-tls.sh name) verifies -> $san" ||
  bad "unpinned curl exit $code (expected 60); $LAN_NAME -> '$san'"
fingerprint() {   # the leaf certificate a TLS endpoint presents
  openssl s_client -connect "127.0.0.1:$1" -servername localhost < /dev/null 2> /dev/null |
    openssl x509 -noout -fingerprint -sha256 2> /dev/null | cut -d= -f2
}
wait_for 60 eval '[ -n "$(https_ok "$URL_A")" ] && [ -n "$(https_ok "$URL_B")" ]' || bad "replicas not answering on their own ports"
f_lb=$(fingerprint "$PORT"); f_a=$(fingerprint "$PORT_A"); f_b=$(fingerprint "$PORT_B")
f_file=$(openssl x509 -in "$ENCLAVE_SECRETS_DIR/tls-server.cert.pem" -noout -fingerprint -sha256 | cut -d= -f2)
[ -n "$f_lb" ] && [ "$f_lb" = "$f_a" ] && [ "$f_a" = "$f_b" ] && [ "$f_b" = "$f_file" ] &&
  ok "TLS passthrough: the balancer, replica A and replica B present the same certificate (sha256 ${f_lb:0:23}...), the tls_cert secret" ||
  bad "certificates differ: balancer $f_lb, A $f_a, B $f_b, secret $f_file"
listen=$(ss -ltnH "sport = :$PORT" 2> /dev/null | awk '{print $4}' | sort -u | tr '\n' ' ')
[ "$listen" = "127.0.0.1:$PORT " ] && ok "balancer port $PORT bound on 127.0.0.1 only" || bad "port $PORT bound on: '$listen'"
all_healthy() { for s in db server-a server-b balancer; do [ "$(health "$s")" = healthy ] || return 1; done; }
if wait_for 120 all_healthy; then ok "compose healthchecks: db, server-a, server-b, balancer healthy $(secs "$t")s after up -d"
else bad "health: db=$(health db) server-a=$(health server-a) server-b=$(health server-b) balancer=$(health balancer)"; fi
lb_up() { [ "$(lb_status ready/server-a)" = UP ] && [ "$(lb_status ready/server-b)" = UP ]; }
wait_for 30 lb_up && ok "HAProxy: both replicas UP in its checks (TLS verified against the CA, GET /ready -> 200): $(lb_stats | tr '\n' ';') connection limit $(lb_limit)" ||
  bad "HAProxy checks: $(lb_stats | tr '\n' ';')"

# --------------------------------------------------------------------------------- on PostgreSQL
compose logs --no-color server-a server-b > "$LOGDIR/servers-1.log" 2>&1
on_pg=$(grep '"store":"postgres"' "$LOGDIR/servers-1.log" | cut -d' ' -f1 | sort -u | wc -l)
restarts=$(docker inspect -f '{{.RestartCount}}' "$(cid server-a)" "$(cid server-b)" | tr '\n' ' ')
migrated=$(grep -c '"msg":"applied migrations"' "$LOGDIR/servers-1.log")
files=$(find migrations/postgres -name '*.sql' | wc -l)
rows=$(psql_db 'SELECT count(*) FROM schema_migrations')
users=$(psql_db 'SELECT count(*) FROM users')
data=$(docker exec "$(cid server-a)" ls -A /data 2> /dev/null | tr '\n' ' ')
[ "$on_pg" = 2 ] && [ "$migrated" = 1 ] && [ "$rows" = "$files" ] && [ "$users" = 1 ] && [ -z "$data" ] && [ "$restarts" = "0 0 " ] &&
  ok "both replicas started together on PostgreSQL (db:5432/enclave), none restarted: migrations applied once ($rows of $files in schema_migrations), one admin created, nothing in server-a's /data" ||
  bad "store: $on_pg replica(s) on postgres, restarts '$restarts', $migrated applied migrations, schema_migrations $rows of $files, users $users, /data '$data'"

# ------------------------------------------------------------------------------------------- API
TOKEN=
api() {   # BASE METHOD PATH [JSON] -> prints the HTTP status; body in $WORK/body, headers in $WORK/headers
  local args=(-sS -m 15 --cacert "$CA" -X "$2" -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' -H 'Content-Type: application/json')
  [ -n "$TOKEN" ] && args+=(-H "Authorization: Bearer $TOKEN")
  [ $# -ge 4 ] && args+=(--data "$4")
  curl "${args[@]}" "$1$3" 2>> "$LOGDIR/api.log" || echo " curl failed"
}
jget() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{const v=process.argv[1].split(".").reduce((o,k)=>o==null?o:o[k],JSON.parse(s));console.log(typeof v==="object"?JSON.stringify(v):v)}catch{console.log("")}})' "$1" < "$WORK/body"; }
login() {   # [BASE]: admin login, sets TOKEN
  TOKEN=
  local body; body=$(node -e 'console.log(JSON.stringify({username:"admin",password:process.argv[1]}))' "$ADMIN_PASSWORD")
  [ "$(api "${1:-$URL}" POST /v1/auth/login "$body")" = 200 ] && TOKEN=$(jget token)
  [ -n "$TOKEN" ]
}
enclave_paths() {   # BASE -> the keystore's enclave paths, sorted, comma-separated
  [ "$(api "$1" GET "/v1/keystores/$KS/enclaves")" = 200 ] &&
    node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).enclaves.map(e=>e.path).sort().join(","))' "$WORK/body"
}

login && ok "POST /v1/auth/login through the balancer, admin password from the secret -> token" ||
  bad "login through the balancer failed: $(cat "$WORK/body" 2> /dev/null)"
st1=$(api "$URL" POST /v1/keystores "{\"name\":\"$KS\"}")
st2=$(api "$URL" POST "/v1/keystores/$KS/enclaves" "{\"path\":\"$ENCLAVE\"}")
[ "$st1" = 201 ] && [ "$st2" = 201 ] && [ "$(enclave_paths "$URL")" = "$ENCLAVE" ] &&
  ok "through the balancer: POST /v1/keystores {name:$KS} -> 201, POST .../enclaves {path:$ENCLAVE} -> 201, listed" ||
  bad "keystore -> $st1, enclave -> $st2, listed: '$(enclave_paths "$URL")'"

login "$URL_A"; TOKEN_A=$TOKEN
on_b=$(enclave_paths "$URL_B"); st_b=$(api "$URL_B" GET /v1/session)
TOKEN=garbage.token.here; st_bad=$(api "$URL_B" GET /v1/session)
TOKEN=$TOKEN_A
[ -n "$TOKEN_A" ] && [ "$on_b" = "$ENCLAVE" ] && [ "$st_b" = 200 ] && [ "$st_bad" = 401 ] &&
  ok "a token from replica A (login on :$PORT_A) is accepted by replica B (:$PORT_B): GET /v1/session -> 200, $KS lists $on_b (a forged token: 401)" ||
  bad "token A on B: session $st_b, enclaves '$on_b', forged token -> $st_bad"

# ------------------------------------------------------------------------------------------- robot
st1=$(api "$URL" POST /v1/robots "{\"name\":\"$ROBOT\",\"labels\":{}}")
st2=$(api "$URL" POST /v1/bindings "{\"keystore\":\"$KS\",\"enclave\":\"$ENCLAVE\",\"robot\":\"$ROBOT\"}")
st3=$(api "$URL" POST "/v1/robots/$ROBOT/enrollment-tokens" '{}'); ENROLL_TOKEN=$(jget token)
if [ "$st1$st2$st3" = 201201201 ] && "${AGENT[@]}" enroll --server "$URL" --ca "$CA" --token "$ENROLL_TOKEN" --state-dir "$AGENT_STATE" > "$LOGDIR/enroll.log" 2>&1; then
  ok "robot $ROBOT created and bound to $KS:$ENCLAVE; enclave-agent enroll --server $URL (the balancer) --ca tls-ca.cert.pem"
else bad "robot $st1, binding $st2, token $st3; enroll: $(tail -3 "$LOGDIR/enroll.log")"; fi
"${AGENT[@]}" run --state-dir "$AGENT_STATE" --runtime-dir "$AGENT_RUN" --splay 0 --poll-wait 60 > "$AGENT_LOG" 2>&1 &
AGENT_PID=$!
agent_has() { [ -f "$AGENT_RUN/$KS/enclaves$1/key.pem" ]; }
agent_json() { "${AGENT[@]}" status --runtime-dir "$AGENT_RUN" --json 2> /dev/null; }
agent_field() { agent_json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{const v=JSON.parse(s)[process.argv[1]];console.log(v==null?"":typeof v==="object"?JSON.stringify(v):v)}catch{console.log("")}})' "$1"; }
t=$(now)
if wait_for 60 agent_has "$ENCLAVE" && wait_for 10 eval 'grep -q "ready:" "$AGENT_LOG"'; then
  T_READY=$(date +%s)
  ok "enclave-agent run (through the balancer, --poll-wait 60): $KS:$ENCLAVE on tmpfs after $(secs "$t")s, ready"
else bad "agent did not write $ENCLAVE: $(tail -5 "$AGENT_LOG")"; T_READY=$(date +%s); fi

# ------------------------------------------------------------------------------------------ logs
compose logs --no-color > "$LOGDIR/stack-1.log" 2>&1
leak=
for f in "${SECRET_FILES[@]}"; do grep -qF "$(tr -d '\n' < "$ENCLAVE_SECRETS_DIR/$f")" "$LOGDIR/stack-1.log" && leak="$leak $f"; done
grep -q 'BEGIN .*PRIVATE KEY' "$LOGDIR/stack-1.log" && leak="$leak private-key"
nonjson=$(grep -E '^server-[ab]_1' "$LOGDIR/stack-1.log" | sed 's/^[^|]*| //' | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const l=s.split("\n").filter(Boolean);let b=0;for(const x of l){try{JSON.parse(x)}catch{b++}}console.log(l.length+" "+b)})')
[ -z "$leak" ] && [ "${nonjson#* }" = 0 ] && ok "logs of all four services hold none of the secrets; the replicas' ${nonjson% *} lines are JSON" ||
  bad "logs: secrets found:${leak:- none}; replica lines/non-JSON: $nonjson (see $LOGDIR/stack-1.log)"

# ---------------------------------------------------------------------------------------- backup
t=$(now)
BACKUP=$WORK/enclave-$(date +%F).dump
compose exec -T -u postgres db pg_dump -Fc -d enclave > "$BACKUP" 2> "$LOGDIR/pg_dump.log"
[ "$(head -c 5 "$BACKUP")" = PGDMP ] &&
  ok "docker-compose exec -T -u postgres db pg_dump -Fc -d enclave > $(basename "$BACKUP"): $(stat -c %s "$BACKUP") bytes ($(secs "$t")s)" ||
  bad "pg_dump: $(cat "$LOGDIR/pg_dump.log")"
st=$(api "$URL" POST /v1/keystores '{"name":"after-backup"}')   # made after the backup: the restore drops it
[ "$st" = 201 ] || bad "create keystore after-backup -> $st $(cat "$WORK/body")"

# ------------------------------------------------------------------- a 60 s long poll, not cut
# The agent asks with wait=60; HAProxy's client/server timeouts (130 s) must let the server's 304 through.
left=$(( T_READY + 64 - $(date +%s) )); [ "$left" -gt 0 ] && sleep "$left"
contact=$(agent_field lastContact); lerr=$(agent_field lastError)
idle=$(( $(date -d "$contact" +%s 2> /dev/null || echo 0) - T_READY ))
if [ "$idle" -ge 58 ] && [ -z "$lerr" ] && ! grep -q 'server unreachable or failing' "$AGENT_LOG"; then
  ok "a 60 s long poll through the balancer was answered by the server (agent's last contact ${idle}s after ready, no error)"
else bad "long poll: last contact ${idle}s after ready, last error '$lerr': $(grep 'unreachable' "$AGENT_LOG" | tail -2)"; fi

# ----------------------------------------------------------- stop the replica holding the agent's poll
holder() {   # the replica(s) with an open connection in HAProxy's ready backend: the agent is the only client now
  lb_stats | awk '$1 ~ /^ready\// && $3 > 0 { sub("ready/", "", $1); print $1 }' | tr '\n' ' ' | sed 's/ $//'
}
HOLDER=$(holder)
[[ $HOLDER == *" "* ]] && log "both replicas hold a connection of the agent ($HOLDER): stopping the first"
HOLDER=${HOLDER%% *}
case "$HOLDER" in server-a) OTHER=server-b ;; server-b) OTHER=server-a ;; *) OTHER=; bad "no replica holds the agent's poll: $(lb_stats | tr '\n' ';')"; HOLDER=server-a; OTHER=server-b ;; esac
lines_before=$(wc -l < "$AGENT_LOG")
probe() {   # SECONDS: GET /health through the balancer every 0.2 s; prints "ok failed"
  local end=$(( $(date +%s) + $1 )) okn=0 failn=0
  while [ "$(date +%s)" -lt "$end" ]; do
    if health_ok; then okn=$((okn + 1)); else failn=$((failn + 1)); fi
    sleep 0.2
  done
  echo "$okn $failn"
}
probe 10 > "$WORK/probe" &
PROBE=$!
t=$(now)
compose stop "$HOLDER" > "$LOGDIR/stop.log" 2>&1 || bad "docker-compose stop $HOLDER"
T_STOP=$(secs "$t")
wait "$PROBE"; read -r p_ok p_fail < "$WORK/probe"
[ "$p_fail" = 0 ] && [ "$p_ok" -gt 20 ] &&
  ok "docker-compose stop $HOLDER (it held the agent's poll) in ${T_STOP}s; /health through the balancer every 0.2 s meanwhile: $p_ok answered, none failed" ||
  bad "during the stop of $HOLDER: $p_ok answered, $p_fail failed"
wait_for 20 eval '[ "$(lb_status ready/$HOLDER)" != UP ]' && login && [ "$(enclave_paths "$URL")" = "$ENCLAVE" ] &&
  ok "HAProxy took $HOLDER out ($(lb_status "ready/$HOLDER")); login and listing through the balancer still served (by $OTHER)" ||
  bad "after stopping $HOLDER: HAProxy $(lb_stats | tr '\n' ';'); login/list: $(cat "$WORK/body")"
t=$(now)
st1=$(api "$URL" POST "/v1/keystores/$KS/enclaves" "{\"path\":\"$ENCLAVE2\"}")
st2=$(api "$URL" POST /v1/bindings "{\"keystore\":\"$KS\",\"enclave\":\"$ENCLAVE2\",\"robot\":\"$ROBOT\"}")
if [ "$st1$st2" = 201201 ] && wait_for 45 agent_has "$ENCLAVE2"; then
  reconnect=$(tail -n +"$((lines_before + 1))" "$AGENT_LOG" | grep -m1 'server unreachable or failing' | sed 's/.*failing: //')
  ok "the agent reconnected through the balancer to $OTHER: a new enclave $KS:$ENCLAVE2 bound meanwhile was written $(secs "$t")s after the binding (its poll ended with: ${reconnect:-no error logged})"
else bad "agent after the stop of $HOLDER: enclave $st1, binding $st2; $(tail -4 "$AGENT_LOG")"; fi
wait_for 10 eval '[ "$(holder)" = "$OTHER" ]' && ok "HAProxy: the agent's poll is now held by $OTHER" || bad "poll holder now '$(holder)', expected $OTHER"

# -------------------------------------------------- back again, then SIGKILL the other replica
t=$(now)
compose start "$HOLDER" > "$LOGDIR/start.log" 2>&1 || bad "docker-compose start $HOLDER"
wait_for 60 eval '[ "$(lb_status ready/$HOLDER)" = UP ]' && ok "docker-compose start $HOLDER: UP in HAProxy again after $(secs "$t")s" ||
  bad "$HOLDER not back: $(lb_stats | tr '\n' ';')"
rev_before=$(agent_field revision)
t=$(now)
docker kill -s KILL "$(cid "$OTHER")" > /dev/null 2>&1 || bad "docker kill -s KILL $OTHER"
wait_for 20 eval '[ "$(lb_status ready/$OTHER)" != UP ]'
if login && [ "$(enclave_paths "$URL")" = "$ENCLAVE,$ENCLAVE2" ]; then
  ok "SIGKILL of $OTHER: out of HAProxy's pool ($(lb_status "ready/$OTHER")) when its stats were next read, $(secs "$t")s after the kill; login and listing through the balancer still served"
else bad "after SIGKILL of $OTHER: $(lb_stats | tr '\n' ';'); $(cat "$WORK/body")"; fi
t=$(now)
st=$(api "$URL" POST "/v1/keystores/$KS/enclaves/${ENCLAVE#/}/rotate" '{}')
if [ "$st" = 200 ] && wait_for 45 eval '[ -n "$(agent_field revision)" ] && [ "$(agent_field revision)" != "$rev_before" ]' &&
   wait_for 10 eval 'grep -q "enclave $KS:$ENCLAVE updated" "$AGENT_LOG"'; then
  ok "the agent reconnected to $HOLDER: rotation of $ENCLAVE reached it $(secs "$t")s after the request ($(grep "enclave $KS:$ENCLAVE updated" "$AGENT_LOG" | tail -1 | sed 's/.*updated: //'))"
else bad "rotation -> $st; agent revision $rev_before -> $(agent_field revision): $(tail -4 "$AGENT_LOG")"; fi
compose up -d --no-build > "$LOGDIR/up2.log" 2>&1 || bad "up -d after the SIGKILL"
wait_for 60 lb_up && ok "up -d: $OTHER back, both replicas UP" || bad "after up -d: $(lb_stats | tr '\n' ';')"

# ----------------------------------------------------------------------------- PostgreSQL down
t=$(now)
compose stop db > "$LOGDIR/stop-db.log" 2>&1 || bad "docker-compose stop db"
T_DB=$(secs "$t")
t=$(now)
st=$(api "$URL" GET /v1/keystores); T_503=$(secs "$t")
retry=$(grep -i '^retry-after:' "$WORK/headers" | tr -d '\r' | awk '{print $2}')
code=$(jget error.code)
[ "$st" = 503 ] && [ -n "$retry" ] && [ "${T_503%%.*}" -lt 6 ] &&
  ok "PostgreSQL stopped (${T_DB}s): GET /v1/keystores through the balancer -> 503 $code, Retry-After: $retry, in ${T_503}s" ||
  bad "with PostgreSQL stopped: GET /v1/keystores -> $st ($code) in ${T_503}s, Retry-After '$retry'"
wait_for 20 eval '[ "$(lb_status ready/server-a)" != UP ] && [ "$(lb_status ready/server-b)" != UP ]'
sts=
for _ in 1 2 3 4; do t=$(now); sts="$sts $(api "$URL" GET /v1/keystores)/$(secs "$t")s"; done
h=$(https_ok "$URL")
[ "$h" = '{"status":"ok"}' ] && [ "$(lb_status live/server-a)$(lb_status live/server-b)" = UPUP ] &&
  [ "$(printf '%s\n' $sts | cut -d/ -f1 | sort -u)" = 503 ] &&
  ok "HAProxy: no replica ready, traffic goes to the live backend: /health -> ok, requests ->$sts" ||
  bad "PostgreSQL down: /health '$h', HAProxy $(lb_stats | tr '\n' ';'), requests:$sts"
sleep 8   # the agent's next polls meet the outage
held=$(agent_field enclaves | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).length)}catch{console.log(0)}})')
if agent_has "$ENCLAVE" && agent_has "$ENCLAVE2" && kill -0 "$AGENT_PID" 2> /dev/null; then
  ok "the agent keeps both enclaves on tmpfs during the outage (status: $held held, last error: $(agent_field lastError | cut -c1-80))"
else bad "agent during the outage: $(tail -3 "$AGENT_LOG")"; fi
t=$(now)
compose start db > "$LOGDIR/start-db.log" 2>&1 || bad "docker-compose start db"
served() { [ "$(api "$URL" GET /v1/keystores)" = 200 ]; }
if wait_for 60 served; then ok "PostgreSQL started: GET /v1/keystores through the balancer -> 200 again after $(secs "$t")s"
else bad "not served after PostgreSQL came back: $(cat "$WORK/body")"; fi
wait_for 60 lb_up && ok "HAProxy: both replicas ready again after $(secs "$t")s" || bad "after PostgreSQL restart: $(lb_stats | tr '\n' ';')"
if wait_for 60 eval '[ -z "$(agent_field lastError)" ] && "${AGENT[@]}" status --runtime-dir "$AGENT_RUN" > /dev/null 2>&1'; then
  ok "the agent is in contact again $(secs "$t")s after the restart (enclave-agent status exits 0)"
else bad "agent after the outage: $(agent_field lastError)"; fi

# --------------------------------------------------------------------------- restore (docs)
stop_agent; code=$?
[ "$code" = 0 ] && [ -z "$(ls -A "$AGENT_RUN")" ] && ok "agent stopped (SIGTERM): exit 0, runtime folder purged" ||
  bad "agent stop: exit $code, left in $AGENT_RUN: $(ls -A "$AGENT_RUN" | tr '\n' ' ')"
t=$(now)
{
  compose stop server-a server-b &&
  compose exec -T -u postgres db dropdb enclave &&
  compose exec -T -u postgres db createdb -O enclave enclave &&
  compose exec -T -u postgres db pg_restore --no-owner --role=enclave -d enclave < "$BACKUP" &&
  compose start server-a server-b
} > "$LOGDIR/restore.log" 2>&1 || bad "restore commands failed (see $LOGDIR/restore.log)"
names=
if wait_for 60 eval 'login && [ "$(api "$URL" GET /v1/keystores)" = 200 ]'; then
  names=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).keystores.map(k=>k.name).sort().join(","))' "$WORK/body")
fi
[ "$names" = "$KS" ] && [ "$(enclave_paths "$URL")" = "$ENCLAVE" ] &&
  ok "restore (stop both replicas, dropdb, createdb, pg_restore, start) in $(secs "$t")s: keystores back to '$names', $ENCLAVE listed, after-backup and $ENCLAVE2 gone" ||
  bad "after restore: keystores '$names' (expected '$KS'), enclaves '$(enclave_paths "$URL")'"

# ------------------------------------------------------------------------------ down -v: nothing left
harness_down_v "$PROJECT"

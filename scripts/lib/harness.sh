# harness.sh - shared by the opt-in Docker tests (scripts/test-deploy.sh, test-deploy-ha.sh, test-package.sh).
# Source it after setting ROOT (the repository) and LOGDIR; it never exits by itself.
#
#   ok MSG / bad MSG          count a check and print it ("ok   - " / "FAIL - ", with the time)
#   harness_summary NAME      "NAME: N passed, N failed" (the closing line CI and people read)
#   harness_engine [ARGS]     a Docker engine. Without ARGS: the one DOCKER_HOST (or the default socket) points
#                             at, else the repository's own kit (tools/docker/docker-up.sh). With ARGS (e.g.
#                             --plain-debian NAME: an image only the kit makes): always the kit's engine.
#                             harness_engine_stop stops the kit's engine if it was started here
#                             (KEEP_ENGINE=1 leaves it running)
#   harness_compose_engine    harness_engine plus COMPOSE=(docker-compose) or (docker compose), counted as one check
#   harness_down_v PROJECT    `compose down -v` (the caller's compose function), then nothing of PROJECT may be left
#   harness_finish [PATH...]  for the EXIT trap: the stack removed (down -v), then PATHs (secrets, copies), the
#                             engine stopped if started here, the summary; exits 1 after any failure
# shellcheck shell=bash

DOCKERKIT=$ROOT/tools/docker
pass=0 fail=0
T0=$(date +%s%N)
now() { date +%s%N; }
secs() { local ms=$(( ($(now) - $1) / 1000000 )); printf '%d.%02d' $((ms / 1000)) $((ms % 1000 / 10)); }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }
ok() { pass=$((pass + 1)); log "ok   - $*"; }
bad() { fail=$((fail + 1)); log "FAIL - $*"; }
harness_summary() { log "total $(secs "$T0")s; logs: $LOGDIR"; echo "$1: $pass passed, $fail failed"; }

engine_started=0
engine_note=
# harness_engine [docker-up.sh ARGS]: 0 when an engine answers (DOCKER_HOST exported), else 1 after bad()
harness_engine() {
  local env_line kit_sock
  if [ $# -eq 0 ] && docker version > /dev/null 2>&1; then
    engine_note="running engine at ${DOCKER_HOST:-the default socket}"
    return 0
  fi
  [ -x "$DOCKERKIT/docker-up.sh" ] || { bad "no Docker engine and no $DOCKERKIT/docker-up.sh"; return 1; }
  kit_sock=unix://${DOCKERKIT_DIR:-/var/tmp/dockerkit}/docker.sock
  DOCKER_HOST=$kit_sock docker version > /dev/null 2>&1 || engine_started=1
  if ! env_line=$("$DOCKERKIT/docker-up.sh" "$@" 2> "$LOGDIR/docker-up.log"); then
    tail -20 "$LOGDIR/docker-up.log"
    bad "tools/docker/docker-up.sh $* failed (log: $LOGDIR/docker-up.log)"
    return 1
  fi
  eval "$env_line"
  if [ "$engine_started" = 1 ]; then engine_note="started the kit's engine (tools/docker)"; else engine_note="the kit's engine was running (tools/docker)"; fi
}

harness_engine_stop() {
  [ "$engine_started" = 1 ] && [ "${KEEP_ENGINE:-0}" != 1 ] || return 0
  if "$DOCKERKIT/docker-down.sh" >> "$LOGDIR/cleanup.log" 2>&1; then log "stopped the engine this script started"
  else log "docker-down.sh failed (see $LOGDIR/cleanup.log)"; fi
}

# harness_compose_engine: 0 with an engine and COMPOSE set (one ok line), else 1 after bad()
harness_compose_engine() {
  local t; t=$(now)
  harness_engine || return 1
  if command -v docker-compose > /dev/null 2>&1; then COMPOSE=(docker-compose)
  elif docker compose version > /dev/null 2>&1; then COMPOSE=(docker compose)
  else bad "neither docker-compose nor 'docker compose' is installed"; return 1; fi
  ok "engine ready in $(secs "$t")s ($engine_note; $(docker version --format 'server {{.Server.Version}}' 2>/dev/null), $("${COMPOSE[@]}" version --short 2>/dev/null | head -1))"
}

# harness_down_v PROJECT: the stack goes with its volumes and networks, and nothing of it is left
harness_down_v() {
  local t left_c left_v left_n; t=$(now)
  compose down -v > "$LOGDIR/down-v.log" 2>&1 || bad "down -v"
  left_c=$(docker ps -aq --filter "label=com.docker.compose.project=$1" | wc -l)
  left_v=$(docker volume ls -q --filter "name=${1}_" | wc -l)
  left_n=$(docker network ls -q --filter "name=${1}_" | wc -l)
  if [ "$left_c$left_v$left_n" = 000 ]; then ok "down -v in $(secs "$t")s; no containers, volumes or networks left"
  else bad "after down -v: $left_c containers, $left_v volumes, $left_n networks left"; fi
}

harness_finish() {
  compose down -v --remove-orphans > "$LOGDIR/cleanup.log" 2>&1 || true
  rm -rf "$@"
  harness_engine_stop
  summary
  [ "$fail" = 0 ] || exit 1
}

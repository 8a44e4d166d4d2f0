# lib.sh - shared by docker-up.sh and docker-down.sh (sourced; needs DIR and PIDFILE).
# shellcheck shell=bash

# our_pid: the PID in our pidfile if that process is a dockerd using our data-root
our_pid() {
  local pid cmd
  [ -s "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cmd=$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline") || return 1
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */dockerd ]] || return 1
  [[ " $cmd" == *" --data-root $DIR/data "* ]] || return 1
  echo "$pid"
}

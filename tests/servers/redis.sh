#!/usr/bin/env bash
# Redis for the queue-worker tier (tests/integrations): Debian's redis-server, never left running as a daemon.
#
#   bash tests/servers/redis.sh install    # apt-get install redis-server when it is missing (idempotent)
#   bash tests/servers/redis.sh status     # what is installed, and whether a system daemon holds port 6379
#
# The tests start their own redis-server processes (unix socket, append-only file in a temporary
# folder), tracked and stopped by PID. A system daemon is no use to them, and one that apt starts
# would sit on port 6379 for good, so the install keeps apt from starting it (policy-rc.d answers
# 101, "action forbidden") and stops one that runs anyway (systemd, an earlier install).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

POLICY=/usr/sbin/policy-rc.d
PIDFILE=/run/redis/redis-server.pid

log() { printf '[redis] %s\n' "$*" >&2; }
die() { printf '[redis] ERROR: %s\n' "$*" >&2; exit 1; }

lock() {
  # Serialise concurrent installs (the policy-rc.d file is shared state).
  mkdir -p .cache
  if command -v flock >/dev/null; then
    exec 8>".cache/.redis.lock"
    flock 8
  fi
}

stop_daemon() {
  if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
    log "stopping and disabling the redis-server system service (the tests run their own)"
    systemctl stop redis-server || true
    systemctl disable redis-server >/dev/null 2>&1 || true
  fi
  if [[ -f "$PIDFILE" ]]; then
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -qa redis-server "/proc/$pid/cmdline" 2>/dev/null; then
      log "stopping the redis-server daemon (PID $pid from $PIDFILE)"
      kill -TERM "$pid" || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
}

cmd_install() {
  if command -v redis-server >/dev/null; then
    log "already installed: $(redis-server --version | cut -d' ' -f1-3)"
    stop_daemon
    return 0
  fi
  [[ $EUID -eq 0 ]] || die "redis-server is missing; install it as root: apt-get install -y redis-server"
  command -v apt-get >/dev/null || die "redis-server is missing and there is no apt-get; install Redis >= 7.0"
  local t0=$SECONDS made_policy=0
  if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\n# written by tests/servers/redis.sh during an install: no daemon starts\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    made_policy=1
    trap 'if [[ $made_policy == 1 ]]; then rm -f "$POLICY"; fi' EXIT
  fi
  local candidate
  candidate="$(apt-cache policy redis-server 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
    log "apt-get update (no redis-server candidate in the package lists yet)"
    apt-get update -qq
  fi
  log "apt-get install -y redis-server"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
    || { log "install failed; apt-get update and retry"; apt-get update -qq; \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
  if [[ $made_policy == 1 ]]; then rm -f "$POLICY"; made_policy=0; fi
  stop_daemon
  command -v redis-server >/dev/null || die "apt-get finished but redis-server is not on PATH"
  log "installed $(redis-server --version | cut -d' ' -f1-3) in $((SECONDS - t0)) s"
}

cmd_status() {
  if command -v redis-server >/dev/null; then echo "redis-server: $(redis-server --version | cut -d' ' -f1-3)"
  else echo "redis-server: MISSING (bash tests/servers/redis.sh install)"; fi
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "daemon: RUNNING (PID $(cat "$PIDFILE"))"
  else echo "daemon: not running"; fi
}

case "${1:-}" in
  install) shift; lock; cmd_install "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# make down: stop what flows/serve.sh started (worker, then server), by the PIDs in PREFECT_HOME/run/.
#
# Each was started in a session of its own; its process group and every descendant (flow runs started
# by the worker live in sessions of their own) get SIGTERM, then SIGKILL after a grace period
# (DOWN_GRACE_SECONDS, default 15). Nothing is stopped by name.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
RUN_DIR="$PREFECT_HOME/run"
GRACE="${DOWN_GRACE_SECONDS:-15}"

# descendants PID: every descendant of PID, from the process table.
descendants() {
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      found[root] = 1; changed = 1
      while (changed) { changed = 0
        for (p in parent) if (!(p in found) && (parent[p] in found)) { found[p] = 1; changed = 1 } }
      for (p in found) if (p != root) print p
    }'
}

stop() {
  local name="$1" pidfile="$RUN_DIR/$1.pid"
  [ -f "$pidfile" ] || return 0
  local pid; pid="$(cat "$pidfile")"
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "down: $name (pid $pid) is not running"
    rm -f "$pidfile"
    return 0
  fi
  local others; others="$(descendants "$pid")"
  echo "down: stopping $name (pid $pid${others:+, and its processes $(echo $others)})"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for p in $others; do kill -TERM "$p" 2>/dev/null; done
  local waited=0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$((GRACE * 10))" ]; do sleep 0.1; waited=$((waited + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    echo "down: $name did not stop within ${GRACE}s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  fi
  for p in $others; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  rm -f "$pidfile"
}

stop worker
stop server
rm -f "$RUN_DIR/api_url"
echo "down: done (logs kept in $RUN_DIR)"

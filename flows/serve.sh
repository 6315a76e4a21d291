#!/usr/bin/env bash
# make serve: a local Prefect server, the work pool, the lmm-api limit, the deployments and a worker.
#
# Everything listens on 127.0.0.1 and lives under PREFECT_HOME (default .prefect/ in the repository): the
# SQLite database, and run/ with the PIDs, logs and the API URL. Analytics are off. Running it again is
# safe: what already runs is left alone, a stopped worker is started again, deployments are updated.
# flows/down.sh stops what it started, by PID.
#
# Environment:
#   VENV                 virtual environment with geopixeld and prefect (default .venv)
#   PREFECT_HOME         Prefect's home (default ./.prefect)
#   PREFECT_PORT         port of the local server (default 4200)
#   PREFECT_API_URL      an existing Prefect server to use instead of starting one
#   LMM_API_LIMIT        slots of the lmm-api concurrency limit (default 2 describe batches at once)
#   PREFECT_UI           "false" starts the server without its UI (default true)
#   PREFECT_WORKER_QUERY_SECONDS   how often the worker polls for runs (default 5)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
PREFECT="$VENV/bin/prefect"
[ -x "$PREFECT" ] || { echo "serve: $PREFECT not found (set VENV, or run make setup)" >&2; exit 1; }

export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export PREFECT_WORKER_QUERY_SECONDS="${PREFECT_WORKER_QUERY_SECONDS:-5}"
export GEOPIXELD_ROOT="$ROOT"
PORT="${PREFECT_PORT:-4200}"
POOL=geopixeld-process
RUN_DIR="$PREFECT_HOME/run"
mkdir -p "$RUN_DIR"

alive() { [ -f "$RUN_DIR/$1.pid" ] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

# launch NAME CMD...: start CMD in a session of its own (so down.sh can stop its whole process group),
# output to run/NAME.log, PID to run/NAME.pid.
launch() {
  local name="$1"; shift
  "$PY" - "$RUN_DIR/$name.log" "$@" >"$RUN_DIR/$name.pid" <<'EOF'
import subprocess, sys
log = open(sys.argv[1], "ab")
proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True)
print(proc.pid)
EOF
}

local_url="http://127.0.0.1:$PORT/api"
if [ -n "${PREFECT_API_URL:-}" ] && [ "$PREFECT_API_URL" != "$local_url" ]; then
  echo "serve: using the Prefect server at $PREFECT_API_URL (PREFECT_API_URL); not starting one"
else
  export PREFECT_API_URL="$local_url"
  if alive server; then
    echo "serve: Prefect server already running (pid $(cat "$RUN_DIR/server.pid"))"
  else
    if "$PY" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $PORT)) != 0)"; then
      echo "serve: port $PORT is taken by another process; set PREFECT_PORT" >&2
      exit 1
    fi
    ui_flag=()
    [ "${PREFECT_UI:-true}" = "false" ] && ui_flag=(--no-ui)
    launch server "$PREFECT" server start --host 127.0.0.1 --port "$PORT" "${ui_flag[@]}"
    echo "serve: starting the Prefect server on 127.0.0.1:$PORT (pid $(cat "$RUN_DIR/server.pid"), log $RUN_DIR/server.log)"
  fi
fi

# Wait until the API answers.
"$PY" - "$PREFECT_API_URL" <<'EOF' || { echo "serve: no answer from $PREFECT_API_URL/health" >&2; tail -n 30 "$RUN_DIR/server.log" >&2 2>/dev/null; exit 1; }
import sys, time, urllib.request
url = sys.argv[1].rstrip("/") + "/health"
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(1)
EOF
if [ "$PREFECT_API_URL" = "$local_url" ] && ! alive server; then
  echo "serve: the server exited (is port $PORT taken? set PREFECT_PORT):" >&2
  tail -n 30 "$RUN_DIR/server.log" >&2
  exit 1
fi
echo "$PREFECT_API_URL" >"$RUN_DIR/api_url"
echo "serve: API ready at $PREFECT_API_URL"

# Work pool and concurrency limit (through the API: the CLI's `work-pool create` would fetch the
# collection registry from the internet), then the deployments of prefect.yaml.
"$PY" -m flows.cli setup --pool "$POOL" --lmm-limit "${LMM_API_LIMIT:-2}"
"$PREFECT" --no-prompt deploy --all --prefect-file "$ROOT/prefect.yaml"

if alive worker; then
  echo "serve: worker already running (pid $(cat "$RUN_DIR/worker.pid"))"
else
  launch worker "$PREFECT" worker start --pool "$POOL" --type process --install-policy never
  sleep 2
  alive worker || { echo "serve: the worker stopped at once:" >&2; tail -n 30 "$RUN_DIR/worker.log" >&2; exit 1; }
  echo "serve: worker started (pid $(cat "$RUN_DIR/worker.pid"), log $RUN_DIR/worker.log)"
fi

ui="${PREFECT_API_URL%/api}"
cat <<EOF

Prefect is ready: UI $ui, API $PREFECT_API_URL, pool $POOL, limit lmm-api.
Next:
  export PREFECT_API_URL=$PREFECT_API_URL PREFECT_HOME=$PREFECT_HOME
  $PREFECT deployment run 'build-geopixeld/local' --watch       # the bundled iSAID sample
  $PREFECT deployment run 'build-geopixeld/local' --param source='["tests/data/dota"]' --param format=dota \\
      --param out=build/geopixeld/dota --param name=geopixeld-dota --watch
  outputs: build/geopixeld/<name>/ (report/summary.md), releases: build/geopixeld/releases/
  stop everything: make down
EOF

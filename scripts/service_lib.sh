# Shared by scripts/slurm_cluster.sh and scripts/lab_stack.sh (sourced, not run): logging and
# pid-file handling of the local services they start. Set SERVICE_LOG_NAME before sourcing.

log() { printf '[%s] %s\n' "${SERVICE_LOG_NAME}" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "${SERVICE_LOG_NAME}" "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

pid_alive() {
    # pid_alive <pidfile>: the pid in the file exists
    local f="$1" pid
    [ -s "$f" ] || return 1
    pid="$(cat "$f")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

kill_pidfile() {
    # kill_pidfile <pidfile> <name> [group]: TERM, up to 10 s, then KILL; "group" signals the
    # process group too (a service started with setsid: its group holds its workers)
    local f="$1" name="$2" group="${3:-}" pid
    pid_alive "$f" || {
        rm -f "$f"
        return 0
    }
    pid="$(cat "$f")"
    log "stopping ${name} (pid ${pid})"
    signal() {
        if [ -n "$group" ]; then
            kill "-$1" -- "-${pid}" 2>/dev/null || kill "-$1" "$pid" 2>/dev/null || true
        else
            kill "-$1" "$pid" 2>/dev/null || true
        fi
    }
    signal TERM
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        signal KILL
    fi
    rm -f "$f"
}

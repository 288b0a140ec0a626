#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the `slurm` tests and local sweeps.
#
#   bash scripts/slurm_local.sh start    install what is missing (Debian packages), write
#                                        /etc/slurm/{slurm,slurmdbd}.conf, start the daemons and
#                                        wait until the node is idle; a no-op when already up
#   bash scripts/slurm_local.sh stop     end the daemons (queued jobs survive in the saved state)
#   bash scripts/slurm_local.sh status   print the daemons, sinfo and squeue (exit 3 when down)
#
# Needs root. Containers have no systemd, so the daemons are started directly: munged (auth),
# mariadbd + slurmdbd (accounting, so that `sacct` and therefore submitit's job states work),
# slurmctld and slurmd. The configs go where Debian's slurm looks by default, so sinfo, sbatch,
# squeue, scancel, scontrol and sacct work without extra environment. Everything listens on
# loopback or Unix sockets only. SLURM_LOCAL_WAIT_S (default 90) bounds each wait.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/sbin:/sbin:$PATH" # the daemons live in sbin

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATES="$HERE/slurm"
ETC=/etc/slurm
MARKER="advflat-local-cluster"
LOG_DIR=/var/log/slurm
LAUNCH_LOG="$LOG_DIR/launch.log"
MUNGE_KEY=/etc/munge/munge.key
NODE="$(hostname -s)"
WAIT_S="${SLURM_LOCAL_WAIT_S:-90}"

# Pid file and process name of each daemon, in start order.
declare -A PIDFILE=(
    [munged]=/run/munge/munged.pid
    [mariadbd]=/run/mysqld/mysqld.pid
    [slurmdbd]=/run/slurmdbd.pid
    [slurmctld]=/run/slurmctld.pid
    [slurmd]=/run/slurmd.pid
)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
LOGS=("$LAUNCH_LOG" /var/log/munge/munged.log "$LOG_DIR/mariadb.log" "$LOG_DIR/slurmdbd.log"
    "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log")

log() { echo "slurm_local: $*" >&2; }

die() {
    log "ERROR: $*"
    local f
    for f in "${LOGS[@]}"; do
        if [[ -s $f ]]; then
            echo "---- last lines of $f ----" >&2
            tail -n 12 "$f" >&2
        fi
    done
    exit 1
}

# Pid of the daemon when its pid file names a live process of that program: guards against
# stale files, pids reused after a machine restart, and zombies (in a container nobody may reap
# a daemon that exited, so its /proc entry lingers).
daemon_pid() {
    local name=$1 pid stat
    pid="$(cat "${PIDFILE[$name]}" 2>/dev/null)" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    # /proc/PID/stat is "PID (COMM) STATE ..."; COMM is cut at 15 characters.
    [[ $stat =~ ^$pid\ \(([^\)]*)\)\ ([A-Z]) ]] || return 1
    [[ $name == "${BASH_REMATCH[1]}"* && ${BASH_REMATCH[2]} != Z ]] || return 1
    echo "$pid"
}

alive() { daemon_pid "$1" >/dev/null; }

# Runs a daemon's start command; its output goes to a file, never to our stdout: a caller reading
# our output through a pipe would otherwise wait for the daemon to exit.
launch() {
    echo "[$(date -Is)] $*" >>"$LAUNCH_LOG"
    "$@" </dev/null >>"$LAUNCH_LOG" 2>&1 || die "'$*' failed"
}

wait_for() {
    local check=$1 deadline=$((SECONDS + WAIT_S))
    until "$check"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

munge_up() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
mariadb_up() { mariadb-admin --silent ping >/dev/null 2>&1; }
slurmdbd_up() { sacctmgr -n list cluster >/dev/null 2>&1; }
slurmctld_up() { scontrol ping 2>/dev/null | grep -q "is UP"; }
node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1; }

node_ready() {
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

# A node that registered can still sit in DOWN/DRAIN from an earlier run's state: resume it.
node_idle() {
    case "$(node_state)" in
        down | drained | draining) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 ;;
    esac
    node_ready
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]} with apt-get (about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold)
    local out=/tmp/slurm_local_apt.log
    # A fresh machine may have no package lists yet: update once, only when the install fails.
    if ! "${apt[@]}" "${missing[@]}" >"$out" 2>&1; then
        apt-get update -q >>"$out" 2>&1 || true
        if ! "${apt[@]}" "${missing[@]}" >>"$out" 2>&1; then
            tail -n 30 "$out" >&2
            die "apt-get install ${missing[*]} failed (full log: $out)"
        fi
    fi
}

# slurm.conf for this machine; a tenth of the memory is left to the OS.
render() {
    local name=$1 cpus mem_total
    cpus="$(nproc)"
    mem_total="$(free -m | awk '/^Mem:/ {print $2}')"
    sed -e "s/@HOST@/$NODE/g" -e "s/@CPUS@/$cpus/g" -e "s/@MEMORY_MB@/$((mem_total * 9 / 10))/g" \
        "$TEMPLATES/$name.template"
}

# Writes /etc/slurm/NAME from its template; returns 0 when the file changed. Never overwrites a
# file that this script did not write (a machine with a real slurm setup).
write_config() {
    local name=$1 mode=$2 path="$ETC/$1" new
    new="$(render "$name")"
    if [[ -e $path ]] && ! grep -q "$MARKER" "$path"; then
        die "$path exists and was not written by this script; refusing to overwrite it"
    fi
    [[ -e $path ]] && [[ "$(cat "$path")" == "$new" ]] && return 1
    mkdir -p "$ETC"
    printf '%s\n' "$new" >"$path"
    chmod "$mode" "$path"
    log "wrote $path (node $NODE)"
}

start_munged() {
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating $MUNGE_KEY"
        mkdir -p "$(dirname "$MUNGE_KEY")"
        mungekey --create --keyfile="$MUNGE_KEY" >>"$LAUNCH_LOG" 2>&1 ||
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
    # munged refuses keys and directories that others can read or write.
    chown -R munge:munge /etc/munge
    chmod 0700 /etc/munge
    chmod 0400 "$MUNGE_KEY"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    alive munged || launch runuser -u munge -- /usr/sbin/munged
    wait_for munge_up || die "munge cannot encode and decode a credential"
}

start_mariadbd() {
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        launch mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db
    fi
    if ! alive mariadbd; then
        # mariadbd stays in the foreground: detach it in its own session, output to its log.
        echo "[$(date -Is)] mariadbd" >>"$LAUNCH_LOG"
        setsid mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid --skip-networking \
            --innodb-lock-wait-timeout=900 \
            </dev/null >>"$LOG_DIR/mariadb.log" 2>&1 &
    fi
    wait_for mariadb_up || die "mariadbd is not answering"
}

start_slurmdbd() {
    alive slurmdbd || launch slurmdbd
    wait_for slurmdbd_up || die "slurmdbd is not answering"
}

start_slurmctld() {
    mkdir -p /var/spool/slurmctld
    alive slurmctld || launch slurmctld
    wait_for slurmctld_up || die "slurmctld is not answering"
}

start_slurmd() {
    mkdir -p /var/spool/slurmd
    alive slurmd || launch slurmd
    wait_for node_idle || die "node $NODE is not idle but '$(node_state)'"
}

running() {
    local d
    for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
    slurmctld_up && node_ready
}

start() {
    [[ $EUID -eq 0 ]] || die "run as root (apt-get and the daemons need it)"
    install_packages
    mkdir -p "$LOG_DIR"
    local changed=0 d
    write_config slurm.conf 0644 && changed=1
    write_config slurmdbd.conf 0600 && changed=1 # slurmdbd refuses a readable config
    if ((changed)); then
        stop_daemons # daemons of an older config must not keep running
    elif running; then
        log "OK: already running"
        sinfo
        return 0
    fi
    for d in "${DAEMONS[@]}"; do "start_$d"; done
    log "OK: cluster up"
    sinfo
}

stop_daemon() {
    local name=$1 pid i
    pid="$(daemon_pid "$name")" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 2 * WAIT_S; i++)); do
        alive "$name" || return 0
        sleep 0.5
    done
    log "$name (pid $pid) did not stop on SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

stop_daemons() {
    local i
    # `scontrol shutdown` makes slurmctld save its state (queued jobs survive) and stops slurmd.
    if command -v scontrol >/dev/null && slurmctld_up; then
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_daemon "${DAEMONS[i]}"; done
}

stop() {
    [[ $EUID -eq 0 ]] || die "run as root"
    stop_daemons
    log "OK: stopped"
}

status() {
    local d pid
    for d in "${DAEMONS[@]}"; do
        if pid="$(daemon_pid "$d")"; then echo "$d: running (pid $pid)"; else echo "$d: stopped"; fi
    done
    if command -v sinfo >/dev/null && slurmctld_up; then
        sinfo
        squeue
        return 0
    fi
    log "cluster is not running"
    return 3
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac

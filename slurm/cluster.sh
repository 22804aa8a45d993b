#!/usr/bin/env bash
# A real single-node Slurm cluster with accounting on this machine, for tests and for trying the harness.
#
#   bash slurm/cluster.sh start    # munge, MariaDB, slurmdbd, slurmctld, slurmd; cancels jobs a crashed cluster left
#                                  # in its state; waits until the node is idle
#   bash slurm/cluster.sh status   # exit 0 only when every daemon runs and the node answers
#   bash slurm/cluster.sh stop     # cancels jobs, then stops every daemon by the PID in its pid file
#   bash slurm/cluster.sh clean    # stop, then delete the state directory (next start is from scratch)
#
# Everything (configs, pid files, logs, job state, the accounting database) lives under one state directory,
# $SCALING_SLURM_DIR (default /tmp/scaling-slurm). Clients find the cluster through SLURM_CONF, which `start`
# prints as an `export` line. State is kept across stop/start, so job IDs keep increasing and submitit
# folders named after job IDs never collide (a fresh StateSaveLocation restarts job IDs at 1).
#
# Needs root (daemons run as root, munged as the munge user) and the packages from slurm/install.sh.
# Works without systemd: every daemon is started by hand, because policy-rc.d may forbid service starts.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"   # the daemons live in sbin, which a non-login PATH may lack

S="$(realpath -m "${SCALING_SLURM_DIR:-/tmp/scaling-slurm}")"
CLUSTER_NAME="${SCALING_SLURM_CLUSTER:-scaling}"
DB_PORT="${SCALING_SLURM_DB_PORT:-3306}"   # MariaDB listens on 127.0.0.1 only
DB_PASS="slurmpw"                          # local-only accounting database, never reachable from outside
START_TIMEOUT_S="${SCALING_SLURM_TIMEOUT:-60}"
HOST="$(hostname -s)"

CONF="$S/slurm.conf"
MUNGE_SOCKET="$S/munge/munge.socket.2"
DB_SOCKET="$S/db/mysqld.sock"
# Pid files in stop order (compute daemon first, munge last); the daemon's command name follows the colon.
PIDFILES=("$S/slurmd.pid:slurmd" "$S/slurmctld.pid:slurmctld" "$S/slurmdbd.pid:slurmdbd"
          "$S/db/mysqld.pid:mariadbd" "$S/munge/munged.pid:munged")

export SLURM_CONF="$CONF"   # daemons and clients read it; slurmdbd reads slurmdbd.conf next to it

log() { echo "slurm/cluster.sh: $*"; }
die() { echo "slurm/cluster.sh: error: $*" >&2; exit 1; }

# Print the last lines of a log file to stderr, to explain a failure.
show_log() {
    local file="$1"
    echo "----- last lines of $file -----" >&2
    if [[ -f "$file" ]]; then tail -n 25 "$file" >&2; else echo "(no such file)" >&2; fi
    echo "-----" >&2
}

# True while a process exists and is not a zombie (the sandbox's init reaps orphans only every second or so).
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ "${stat##*) }" != Z* ]]
}

# The live PID recorded in a pid file, if the process with it is the expected daemon (guards against reuse).
live_pid() {
    local file="$1" name="$2" pid
    [[ -s "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [[ -n "$pid" ]] && alive "$pid" || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name"* ]] || return 1
    echo "$pid"
}

# Poll a command until it succeeds; on timeout print the given log and fail with a message.
wait_for() {
    local what="$1" logfile="$2" timeout_s="$3"; shift 3
    local deadline=$((SECONDS + timeout_s))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            show_log "$logfile"
            die "timed out after ${timeout_s}s waiting for $what (full logs under $S/log)"
        fi
        sleep 0.5
    done
}

require_root_and_packages() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (the daemons run as root and munged as the munge user)"
    local missing=() bin
    for bin in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sinfo sacctmgr; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    ((${#missing[@]} == 0)) || die "missing ${missing[*]}: run 'bash slurm/install.sh' first"
}

node_state() { timeout 10 sinfo -h -n "$HOST" -o %t 2>/dev/null | head -n 1; }

# True when every daemon runs and the controller answers with a usable node state.
is_running() {
    local entry
    for entry in "${PIDFILES[@]}"; do
        live_pid "${entry%%:*}" "${entry##*:}" >/dev/null || return 1
    done
    [[ "$(node_state)" =~ ^(idle|mix|alloc|comp)$ ]]
}

start_munge() {
    mkdir -p "$S/munge"
    chown munge:munge "$S/munge"
    chmod 0755 "$S/munge"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$S/munge/munged.pid" \
        --log-file="$S/munge/munged.log" --seed-file="$S/munge/munged.seed" \
        || { show_log "$S/munge/munged.log"; die "munged failed to start"; }
    wait_for "munged" "$S/munge/munged.log" 10 bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
}

db_query() { mariadb --no-defaults -S "$DB_SOCKET" -uroot -e "$1"; }

start_mariadb() {
    mkdir -p "$S/db"
    if [[ ! -d "$S/db/data/mysql" ]]; then
        mariadb-install-db --no-defaults --datadir="$S/db/data" --user=root \
            --auth-root-authentication-method=normal >"$S/log/mariadb-install.log" 2>&1 \
            || { show_log "$S/log/mariadb-install.log"; die "mariadb-install-db failed"; }
    fi
    # mariadbd stays in the foreground: detach it into its own session so it outlives this script.
    setsid -f mariadbd --no-defaults --datadir="$S/db/data" --socket="$DB_SOCKET" --pid-file="$S/db/mysqld.pid" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --user=root \
        --log-error="$S/log/mariadb.log" </dev/null >/dev/null 2>&1
    wait_for "MariaDB on $DB_SOCKET" "$S/log/mariadb.log" 30 db_query "SELECT 1"
    db_query "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

# slurm.conf and slurmdbd.conf, rewritten on every start so they follow this machine's hardware.
write_configs() {
    local node_line cpus real_mem usable_mem
    node_line="$(slurmd -C | grep '^NodeName=')" || die "'slurmd -C' printed no NodeName line"
    cpus="$(grep -o 'CPUs=[0-9]*' <<<"$node_line" | cut -d= -f2)"
    real_mem="$(grep -o 'RealMemory=[0-9]*' <<<"$node_line" | cut -d= -f2)"
    # Declare 90% of the memory: a node whose real memory falls below RealMemory is drained.
    usable_mem=$((real_mem * 9 / 10))
    node_line="${node_line/RealMemory=$real_mem/RealMemory=$usable_mem}"

    cat >"$S/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$HOST
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=$S/slurmdbd.pid
LogFile=$S/log/slurmdbd.log
EOF
    chmod 600 "$S/slurmdbd.conf"

    # The munge socket goes in AuthInfo here, in slurmdbd.conf, and in AccountingStoragePass: without the
    # last one, sacct and slurmctld look for /run/munge and fail with "Protocol authentication error".
    cat >"$CONF" <<EOF
ClusterName=$CLUSTER_NAME
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
# No cgroups in the sandbox: track processes by parent PID; task/affinity pins each job to its CPUs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
AccountingStoragePort=6819
AccountingStoragePass=$MUNGE_SOCKET
SchedulerType=sched/backfill
# Look at pending jobs every 2 s (default 60 s main loop, 30 s backfill): a one-node test cluster can afford it.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job without --mem gets its CPUs' share of memory rather than the whole node.
DefMemPerCPU=$((usable_mem / cpus))
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or times out.
KillWait=10
$node_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

cluster_registered() {
    timeout 10 sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER_NAME"
}

# Accounting must know the cluster before slurmctld starts; slurmdbd takes a moment to accept requests.
register_cluster() {
    local deadline=$((SECONDS + 30))
    until cluster_registered; do
        if ((SECONDS >= deadline)); then
            show_log "$S/log/slurmdbd.log"
            die "could not add cluster $CLUSTER_NAME to slurmdbd within 30s"
        fi
        timeout 10 sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null 2>&1 || sleep 0.5
    done
}

# The ids of every queued job (an array once), space-separated; empty when none.
queued_jobs() { timeout 10 squeue -h -o %F 2>/dev/null | sort -u | xargs; }

# Jobs in the queue when the daemons were not running are leftovers of a cluster that did not stop cleanly (a
# crash, a killed machine): slurmctld recovers them from StateSaveLocation, but their processes are gone, so a
# recovered "running" job holds the node until its time limit. Cancel them, so that every start begins empty.
cancel_leftover_jobs() {
    wait_for "slurmctld to answer" "$S/log/slurmctld.log" 30 timeout 10 squeue -h
    local jobs
    jobs="$(queued_jobs)" || die "squeue failed: cannot list the jobs left in $S/state"
    [[ -n "$jobs" ]] || return 0
    log "cancelling job(s) $jobs left in $S/state by a cluster that did not stop cleanly"
    # shellcheck disable=SC2086  # one argument per job id
    timeout 10 scancel --quiet $jobs || die "scancel of the leftover jobs failed"
}

wait_node_idle() {
    local deadline=$((SECONDS + START_TIMEOUT_S)) state=""
    while true; do
        state="$(node_state || true)"
        [[ "$state" == idle ]] && return 0
        live_pid "$S/slurmctld.pid" slurmctld >/dev/null || { show_log "$S/log/slurmctld.log"; die "slurmctld exited"; }
        live_pid "$S/slurmd.pid" slurmd >/dev/null || { show_log "$S/log/slurmd.log"; die "slurmd exited"; }
        if ((SECONDS >= deadline)); then
            show_log "$S/log/slurmctld.log"
            show_log "$S/log/slurmd.log"
            die "node $HOST is '${state:-unreachable}', not idle, after ${START_TIMEOUT_S}s"
        fi
        sleep 0.5
    done
}

print_env() {
    log "cluster '$CLUSTER_NAME' is up; point clients at it with:"
    echo "export SLURM_CONF=$CONF"
}

# Slurm's ports are fixed (slurmctld 6817, slurmd 6818, slurmdbd 6819), so one cluster per machine.
require_free_ports() {
    local port
    for port in 6817 6818 6819 "$DB_PORT"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is already in use (another Slurm cluster or database?); stop it first, or for MariaDB" \
                "choose another port with SCALING_SLURM_DB_PORT"
        fi
    done
}

cmd_start() {
    require_root_and_packages
    if is_running; then
        log "already running"
        print_env
        return 0
    fi
    cmd_stop >/dev/null   # leftovers of a half-started or crashed cluster
    require_free_ports
    mkdir -p "$S/state" "$S/spool" "$S/log"
    start_munge
    start_mariadb
    write_configs
    slurmdbd || { show_log "$S/log/slurmdbd.log"; die "slurmdbd failed to start"; }
    register_cluster
    slurmctld || { show_log "$S/log/slurmctld.log"; die "slurmctld failed to start"; }
    slurmd || { show_log "$S/log/slurmd.log"; die "slurmd failed to start"; }
    cancel_leftover_jobs
    wait_node_idle
    print_env
}

# Cancel every job first, so no job step outlives its slurmd; then stop daemons by PID, in order.
cmd_stop() {
    local entry file name pid pids=() names=()
    if live_pid "$S/slurmctld.pid" slurmctld >/dev/null && [[ -f "$CONF" ]]; then
        local jobs
        jobs="$(queued_jobs || true)"
        # shellcheck disable=SC2086  # one argument per job id
        [[ -z "$jobs" ]] || timeout 10 scancel --quiet $jobs >/dev/null 2>&1 || true
        local deadline=$((SECONDS + 20))
        while [[ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]] && ((SECONDS < deadline)); do sleep 0.5; done
        [[ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]] || log "warning: jobs still listed after 20s; stopping anyway"
    fi
    # Read every PID before killing anything: slurmd deletes its pid file as it exits.
    for entry in "${PIDFILES[@]}"; do
        file="${entry%%:*}" name="${entry##*:}"
        if pid="$(live_pid "$file" "$name")"; then pids+=("$pid"); names+=("$name"); fi
    done
    local i
    for i in "${!pids[@]}"; do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while alive "${pids[$i]}" && ((SECONDS < deadline)); do sleep 0.1; done
        if alive "${pids[$i]}"; then
            log "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for 20s; sending SIGKILL"
            kill -KILL "${pids[$i]}" 2>/dev/null || true
            while alive "${pids[$i]}"; do sleep 0.1; done
        fi
        log "stopped ${names[$i]} (pid ${pids[$i]})"
    done
    ((${#pids[@]} > 0)) || log "not running"
}

cmd_status() {
    local entry name pid ok=0
    for entry in "${PIDFILES[@]}"; do
        name="${entry##*:}"
        if pid="$(live_pid "${entry%%:*}" "$name")"; then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s stopped\n' "$name"
            ok=1
        fi
    done
    local state
    state="$( (live_pid "$S/slurmctld.pid" slurmctld >/dev/null && node_state) || true)"
    printf '%-10s %s\n' "node" "${state:-unreachable}"
    echo "SLURM_CONF=$CONF"
    ((ok == 0)) && [[ "$state" =~ ^(idle|mix|alloc|comp)$ ]]
}

cmd_clean() {
    cmd_stop
    [[ "$S" == /* && "$S" != / ]] || die "refusing to delete state directory '$S'"
    rm -rf "$S"
    log "removed $S"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    *) echo "usage: $0 start|stop|status|clean   (state dir: \$SCALING_SLURM_DIR, default /tmp/scaling-slurm)" >&2
       exit 2 ;;
esac

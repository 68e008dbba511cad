#!/usr/bin/env bash
# `make test-cluster`: start a one-node SLURM on this host, run a command against it (the cluster
# tests), and stop every daemon it started, whatever the command's outcome.
#
#   bash tests/cluster/slurm_cluster.sh COMMAND [ARG...]
#
# As root: installs what is missing of slurmctld, slurmd, slurm-client, munge, slurmdbd and
# MariaDB (apt-get), then starts, from a temporary folder that holds all their state, logs, pid
# files and sockets: munged (as the munge user, on its own socket: a munged already running on the
# host is left alone), MariaDB (bound to 127.0.0.1) with slurmdbd for the accounting that sacct
# reads, slurmctld and slurmd, from the configs in this folder (slurm.conf.in, slurmdbd.conf.in)
# with free ports. COMMAND then runs with SLURM_CONF naming that cluster, KFAC_BENCH_SLURM=1 (the
# cluster tests skip without it) and KFAC_BENCH_SLURM_DIR (the temporary folder). On exit (also on
# a failure or Ctrl-C) the jobs are cancelled, the daemons stopped by the pids they recorded, and
# the folder removed (KEEP_SLURM_DIR=1 keeps it, with the logs).
#
# Exit status: COMMAND's. Where SLURM cannot run here (not root, no apt-get, a package that does not
# install, a daemon that does not come up) it prints a line starting with "SKIPPED:" and the reason,
# and exits 0, so that CI on a machine without SLURM goes on; REQUIRE_SLURM=1 makes that exit 1.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server-core mariadb-client-core)
DIR=""
STARTED=()        # "name pid" of every daemon this script started, in start order

say() { echo "test-cluster: $*" >&2; }

skip() {
    echo "SKIPPED: make test-cluster (the SLURM tests): $*" >&2
    if [[ "${REQUIRE_SLURM:-0}" == 1 ]]; then
        echo "test-cluster: REQUIRE_SLURM=1, so this is an error" >&2
        exit 1
    fi
    exit 0
}

show_logs() {
    [[ -n "$DIR" && -d "$DIR/log" ]] || return 0
    for f in "$DIR"/log/*.log "$DIR"/log/*.out "$DIR"/munge/munged.log; do
        [[ -s "$f" && "$f" != *install* ]] || continue
        echo "---- last lines of $f" >&2
        tail -n 15 "$f" >&2
    done
}

alive() {   # running (a zombie is not)
    kill -0 "$1" 2>/dev/null || return 1
    [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

stop_pid() {   # name pid: SIGTERM, up to 20 s, then SIGKILL
    local name=$1 pid=$2 i
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 100; i++)); do
            alive "$pid" || break
            sleep 0.2
        done
        if alive "$pid"; then
            say "$name (pid $pid) did not stop on SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null    # reaped: a child of this script
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    if [[ -n "${SLURM_CONF:-}" && -f "${SLURM_CONF:-}" ]] && ((${#STARTED[@]})); then
        # the test jobs first, so that no job step outlives its slurmd
        scancel --full --quiet --user=root 2>/dev/null
        for ((i = 0; i < 50; i++)); do
            [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
            sleep 0.2
        done
    fi
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do    # reverse order: slurmd ... munged
        stop_pid ${STARTED[i]}
    done
    if [[ -n "$DIR" ]]; then
        if [[ "${KEEP_SLURM_DIR:-0}" == 1 ]]; then
            say "kept $DIR (KEEP_SLURM_DIR=1)"
        else
            rm -rf "$DIR"
        fi
    fi
    exit "$rc"
}

free_port() {   # a TCP port nothing listens on, from 20000-29999
    local p
    while :; do
        p=$((20000 + RANDOM % 10000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

wait_for() {   # seconds description command...: poll the command until it succeeds
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    show_logs
    skip "$what did not come up within ${seconds} s (the logs above say why)"
}

(($#)) || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }

# ---------------------------------------------------------------------------------- preconditions
[[ "$(id -u)" == 0 ]] || skip "not root (uid $(id -u)): starting slurmd, slurmctld and munged needs root"
command -v dpkg-query >/dev/null || skip "no dpkg-query: this script installs SLURM with Debian's packages"
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || skip "packages missing (${missing[*]}) and no apt-get to install them"
    say "installing ${missing[*]} (apt-get)"
    # policy-rc.d or not, nothing is started here: the daemons below run from the temporary folder
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
            >/tmp/kfac-bench-slurm-apt.log 2>&1; then
        say "apt-get install failed; apt-get update, then once more"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>/tmp/kfac-bench-slurm-apt.log 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
            >>/tmp/kfac-bench-slurm-apt.log 2>&1 \
            || { tail -n 5 /tmp/kfac-bench-slurm-apt.log >&2
                 skip "apt-get could not install ${missing[*]} (log: /tmp/kfac-bench-slurm-apt.log)"; }
    fi
fi
for exe in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/slurmdbd /usr/sbin/mariadbd \
           /usr/bin/mariadb-install-db /usr/bin/mariadb /usr/bin/sbatch /usr/bin/sacct; do
    [[ -x "$exe" ]] || skip "$exe is missing although its package is installed"
done
getent passwd munge >/dev/null || skip "no munge user (the munge package creates it)"

# ---------------------------------------------------------------------------------- the cluster
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
DIR="$(mktemp -d /tmp/kfac-bench-slurm.XXXXXX)" || skip "cannot create a temporary folder"
chmod 755 "$DIR"     # munged (the munge user) reaches its socket in it
mkdir -p "$DIR"/{state,spool,run,log,munge,db}
HOST="$(hostname -s)"
CTLD_PORT=$(free_port); SLURMD_PORT=$(free_port); DBD_PORT=$(free_port); DB_PORT=$(free_port)
fill() {
    sed -e "s|@HOST@|$HOST|g" -e "s|@DIR@|$DIR|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
        -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" "$1"
}
fill "$HERE/slurm.conf.in" >"$DIR/slurm.conf"
fill "$HERE/slurmdbd.conf.in" >"$DIR/slurmdbd.conf"
chmod 600 "$DIR/slurmdbd.conf"      # slurmdbd refuses a readable one
export SLURM_CONF="$DIR/slurm.conf"  # slurmdbd.conf is looked for beside it
say "one-node SLURM in $DIR (host $HOST, slurmctld port $CTLD_PORT)"

# munged: its own key copy and socket
chown munge:munge "$DIR/munge"
if [[ -r /etc/munge/munge.key ]]; then
    install -o munge -g munge -m 400 /etc/munge/munge.key "$DIR/munge/munge.key"
else
    runuser -u munge -- mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null 2>&1 \
        || skip "no /etc/munge/munge.key and mungekey could not create one"
fi
start() {   # name command...: a daemon in the foreground, child of this script (reaped, stopped by pid)
    local name=$1
    shift
    "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
    STARTED+=("$name $!")
}
start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
    --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" --log-file="$DIR/munge/munged.log" \
    --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed"
wait_for 30 "munged" /usr/bin/munge -S "$DIR/munge/munge.socket" -n

# MariaDB for slurmdbd
/usr/bin/mariadb-install-db --no-defaults --datadir="$DIR/db/data" --user=root --skip-test-db \
    >"$DIR/log/mariadb-install.log" 2>&1 || { show_logs; skip "mariadb-install-db failed"; }
start mariadbd /usr/sbin/mariadbd --no-defaults --user=root --datadir="$DIR/db/data" \
    --socket="$DIR/db/mysqld.sock" --pid-file="$DIR/db/mysqld.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --skip-grant-tables --skip-name-resolve --innodb-buffer-pool-size=32M --log-error="$DIR/log/mariadb.log"
wait_for 60 "MariaDB" /usr/bin/mariadb --no-defaults -S "$DIR/db/mysqld.sock" -e "select 1"

start slurmdbd /usr/sbin/slurmdbd -D
wait_for 60 "slurmdbd" sacctmgr -n list cluster
start slurmctld /usr/sbin/slurmctld -D
start slurmd /usr/sbin/slurmd -D
node_idle() { [[ "$(sinfo -h -N -o %T 2>/dev/null)" == idle ]]; }
wait_for 60 "slurmctld and slurmd (sinfo: the node idle)" node_idle
# the cluster registers with slurmdbd a moment after it starts: sacct must answer before the tests
registered() { sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx kfacbench; }
wait_for 60 "the accounting (sacctmgr: cluster kfacbench)" registered
say "up: $(sinfo -h -N -o '%N %T, %c CPUs'); sacct answers; daemons (name pid): ${STARTED[*]}"

# ---------------------------------------------------------------------------------- the command
export KFAC_BENCH_SLURM=1 KFAC_BENCH_SLURM_DIR="$DIR"
"$@"
rc=$?
if [[ -s "$DIR/report.txt" ]]; then
    echo "---- cluster tests, what they did:" >&2
    cat "$DIR/report.txt" >&2
fi
((rc == 0)) || show_logs
exit "$rc"

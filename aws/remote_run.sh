#!/usr/bin/env bash
# Runs on the instance (uploaded by `aws_helper.py exec`, driven by run_aws.bash): keeps a training run
# going when the SSH connection that started it drops, and lets a new connection follow it.
#
#   remote_run.sh start NAME WORKDIR LOG -- COMMAND...   start COMMAND in WORKDIR, detached, output to LOG
#   remote_run.sh follow NAME [LINES]                    print LOG (from line 1, or its last LINES) as it
#                                                        grows; exit with COMMAND's exit status
set -euo pipefail

RUNS_DIR=$HOME/.carla-rllib/runs
ENV_FILE=$HOME/.carla-rllib/env.sh     # written by aws/install/install.sh
POLL_S=1

die() { echo "remote_run.sh: $*" >&2; exit 2; }
running() { [[ -f $RUNS_DIR/$1.pid ]] && kill -0 "$(cat "$RUNS_DIR/$1.pid")" 2>/dev/null; }

start() {
    local name=$1 workdir=$2 log=$3
    shift 4  # NAME WORKDIR LOG --
    [[ -f $ENV_FILE ]] || die "$ENV_FILE missing: this instance was not set up by aws/install/install.sh"
    running "$name" && die "a run named $name is already going on this instance"
    mkdir -p "$RUNS_DIR"
    cd "$workdir"
    mkdir -p "$(dirname "$log")"
    rm -f "$RUNS_DIR/$name.status"
    realpath "$log" > "$RUNS_DIR/$name.log"
    # shellcheck source=/dev/null
    . "$ENV_FILE"
    # nohup + setsid: no hang-up from the SSH session, and a process group of its own.
    # shellcheck disable=SC2016  # expanded by the inner bash, from its environment and arguments
    STATUS_FILE=$RUNS_DIR/$name.status LOG=$log nohup setsid bash -c \
        '"$@" > "$LOG" 2>&1; echo $? > "$STATUS_FILE"' run "$@" < /dev/null > /dev/null 2>&1 &
    echo $! > "$RUNS_DIR/$name.pid"
    echo "started run $name (pid $!): $*"
}

follow() {
    local name=$1 lines=${2:-+1} tail_pid
    [[ -f $RUNS_DIR/$name.log ]] || die "no run named $name on this instance"
    tail -n "$lines" -F "$(cat "$RUNS_DIR/$name.log")" 2>/dev/null &
    tail_pid=$!
    while [[ ! -f $RUNS_DIR/$name.status ]] && running "$name"; do
        sleep "$POLL_S"
    done
    sleep "$POLL_S"  # let tail print the last lines
    kill "$tail_pid" 2>/dev/null || true
    [[ -s $RUNS_DIR/$name.status ]] || die "run $name ended without an exit status (killed?)"
    exit "$(cat "$RUNS_DIR/$name.status")"
}

case ${1:-} in
    start) shift; start "$@" ;;
    follow) shift; follow "$@" ;;
    *) die "usage: remote_run.sh start NAME WORKDIR LOG -- COMMAND... | follow NAME [LINES]" ;;
esac

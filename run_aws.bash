#!/usr/bin/env bash
# Trains on an EC2 instance made from `aws_helper.py create-image`: starts it, uploads the project,
# runs SCRIPT CONFIG there detached from SSH (a dropped connection is re-attached, the run goes on),
# streams its output, fetches the results folder, and stops the instance on any exit, kill included.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: run_aws.bash -i INSTANCE [-s SCRIPT] [-c CONFIG] [-n NAME] [-d DIR] [-r] [-o] [-k] [-- EXTRA_ARGS...]
  -i INSTANCE  EC2 instance id (from `aws_helper.py launch`)
  -s SCRIPT    training script (default dqn_train.py), run on the instance from the project folder as
               python SCRIPT CONFIG -d DIR -n NAME [--restore] [--overwrite] EXTRA_ARGS...
  -c CONFIG    its configuration file (default dqn_config.yaml)
  -n NAME      experiment name (default dqn_example); the run's output goes to DIR/NAME.log
  -d DIR       results folder, relative to the project on the instance (default results);
               fetched into ./DIR at the end
  -r           restore: continue from the last checkpoint of DIR/NAME
  -o           overwrite: start afresh even if DIR/NAME exists
  -k           keep the instance running at the end (default: stop it, whatever happens)
SCRIPT and CONFIG may lie outside the project: they are uploaded next to it.
Environment: PYTHON (runs aws_helper.py; default .venv/bin/python), and aws_helper.py's CARLA_RLLIB_* settings.
EOF
}
die() { echo "run_aws.bash: error: $*" >&2; exit 2; }
note() { echo "run_aws.bash: $*" >&2; }

PROJECT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REMOTE_PROJECT=carla-rllib  # where create-image put the project on the instance (aws/image.py REMOTE_PROJECT_DIR)
INPUTS_DIR=.run_aws         # inside REMOTE_PROJECT: SCRIPT and CONFIG given from outside the project
MAX_RECONNECTS=10
RECONNECT_DELAY_S=1  # short: aws_helper.py exec itself waits (--ssh-timeout) for SSH to answer again
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    [[ -x $PROJECT_DIR/.venv/bin/python ]] && PYTHON=$PROJECT_DIR/.venv/bin/python
fi

INSTANCE="" SCRIPT=$PROJECT_DIR/dqn_train.py CONFIG=$PROJECT_DIR/dqn_config.yaml NAME=dqn_example DIRECTORY=results
RESTORE=false OVERWRITE=false KEEP=false
while getopts ":i:s:c:n:d:rokh" opt; do
    case $opt in
        i) INSTANCE=$OPTARG ;;
        s) SCRIPT=$OPTARG ;;
        c) CONFIG=$OPTARG ;;
        n) NAME=$OPTARG ;;
        d) DIRECTORY=${OPTARG%/} ;;
        r) RESTORE=true ;;
        o) OVERWRITE=true ;;
        k) KEEP=true ;;
        h) usage; exit 0 ;;
        :) die "-$OPTARG needs a value (see -h)" ;;
        *) die "unknown option -$OPTARG (see -h)" ;;
    esac
done
shift $((OPTIND - 1))
EXTRA_ARGS=("$@")

[[ -n $INSTANCE ]] || die "-i INSTANCE is required (see -h)"
[[ -f $SCRIPT ]] || die "training script not found: $SCRIPT"
[[ -f $CONFIG ]] || die "config file not found: $CONFIG"
[[ $NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "-n NAME may hold letters, digits, '.', '_' and '-' only (got '$NAME')"
case $DIRECTORY in
    "" | /* | "~"* | .. | ../* | */.. | */../*) die "-d DIR must be a folder inside the project, relative (got '$DIRECTORY')" ;;
esac

CHILD=""
helper() {  # aws_helper.py, in the background so that a signal runs our trap at once
    "$PYTHON" "$PROJECT_DIR/aws_helper.py" "$@" &
    CHILD=$!
    local status=0
    wait "$CHILD" || status=$?
    CHILD=""
    return "$status"
}

# shellcheck disable=SC2317  # run from traps, which shellcheck does not follow
on_signal() {
    trap '' INT TERM HUP
    note "interrupted"
    if [[ -n $CHILD ]]; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    exit "$1"
}

# shellcheck disable=SC2317  # run from traps, which shellcheck does not follow
on_exit() {
    local status=$?
    trap '' INT TERM HUP
    if $KEEP; then
        note "$INSTANCE keeps running (-k); stop it with: $PYTHON aws_helper.py stop --instance-id $INSTANCE"
    else
        note "stopping $INSTANCE"
        "$PYTHON" "$PROJECT_DIR/aws_helper.py" stop --instance-id "$INSTANCE" \
            || note "warning: could not stop $INSTANCE: stop it yourself (EC2 console or aws_helper.py stop)"
    fi
    exit "$status"
}

remote_path() {  # prints where a local file is on the instance, relative to the project, uploading it if needed
    local absolute
    absolute=$(realpath "$1")
    if [[ $absolute == "$PROJECT_DIR"/* ]]; then
        printf '%s\n' "${absolute#"$PROJECT_DIR"/}"
    else
        helper put --instance-id "$INSTANCE" --source "$absolute" --target "$REMOTE_PROJECT/$INPUTS_DIR" >&2
        printf '%s\n' "$INPUTS_DIR/$(basename "$absolute")"
    fi
}

remote_run() {  # aws/remote_run.sh on the instance, with its arguments quoted for the remote shell
    helper exec --instance-id "$INSTANCE" --script "$PROJECT_DIR/aws/remote_run.sh" --script-args "$(printf '%q ' "$@")"
}

state=$(helper info --instance-id "$INSTANCE" --field state) || exit 2
case $state in
    shutting-down | terminated) die "instance $INSTANCE is $state" ;;
esac
trap on_exit EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

helper start --instance-id "$INSTANCE"
helper put --instance-id "$INSTANCE" --source "$PROJECT_DIR/" --target "$REMOTE_PROJECT" --exclude "/$DIRECTORY/"
command=(python "$(remote_path "$SCRIPT")" "$(remote_path "$CONFIG")" -d "$DIRECTORY" -n "$NAME")
if $RESTORE; then command+=(--restore); fi
if $OVERWRITE; then command+=(--overwrite); fi
command+=("${EXTRA_ARGS[@]}")
remote_run start "$NAME" "$REMOTE_PROJECT" "$DIRECTORY/$NAME.log" -- "${command[@]}"

lines=+1 reconnects=0
while true; do
    status=0
    remote_run follow "$NAME" "$lines" || status=$?
    ((status == 255)) || break  # 255: ssh lost the connection; anything else is the run's own exit status
    ((++reconnects <= MAX_RECONNECTS)) || die "lost the SSH connection $MAX_RECONNECTS times; giving up"
    note "SSH connection lost; the run goes on on the instance. Reconnecting in $RECONNECT_DELAY_S s..."
    sleep "$RECONNECT_DELAY_S"
    lines=20
done

note "fetching $DIRECTORY"
helper get --instance-id "$INSTANCE" --source "$REMOTE_PROJECT/$DIRECTORY/" --target "$DIRECTORY"
if ((status == 0)); then
    note "run $NAME finished; results in ./$DIRECTORY"
else
    note "run $NAME failed (exit status $status); its output: ./$DIRECTORY/$NAME.log"
fi
exit "$status"

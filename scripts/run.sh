#!/usr/bin/env bash
# Run hlsgate on its shipped config from a fresh checkout: installs what building needs
# (Rust, a C compiler, cmake) when missing, builds in release mode (cargo's progress is
# shown; the first build takes several minutes, later ones seconds) and starts `serve`.
#   scripts/run.sh                  # in the foreground: Ctrl-C stops it
#   scripts/run.sh --background     # returns once it listens; log in data/hlsgate.log
#   scripts/run.sh --stop           # stops the one --background started
#   scripts/run.sh --reload         # applies an edited config to it (SIGHUP to the PID in
#                                   # data/hlsgate.pid) and says whether it was taken
#   scripts/run.sh -c my.yaml       # any other config (either way)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/need.sh
mode=foreground
args=()
for a in "$@"; do
    case $a in
    --background) mode=background ;;
    --stop) mode=stop ;;
    --reload) mode=reload ;;
    *) args+=("$a") ;;
    esac
done
PIDFILE=data/hlsgate.pid
LOG=data/hlsgate.log
# Whether the hlsgate --background started is running.
running() { [ -s $PIDFILE ] && kill -0 "$(cat $PIDFILE)" 2>/dev/null; }

if [ $mode = stop ]; then
    if running; then
        pid=$(cat $PIDFILE)
        kill -TERM "$pid"
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f $PIDFILE
        echo ">> hlsgate (pid $pid) stopped" >&2
    else
        rm -f $PIDFILE
        echo ">> no hlsgate started by scripts/run.sh --background is running" >&2
    fi
    exit 0
fi

if [ $mode = reload ]; then
    if ! running; then
        echo "!! no hlsgate started by scripts/run.sh --background is running" >&2
        exit 1
    fi
    pattern='config reloaded|config reload refused'
    before=$(grep -cE "$pattern" $LOG || true)
    kill -HUP "$(cat $PIDFILE)"
    for _ in $(seq 100); do
        now=$(grep -cE "$pattern" $LOG || true)
        if [ "$now" -gt "$before" ]; then
            line=$(grep -E "$pattern" $LOG | tail -1)
            if echo "$line" | grep -q refused; then
                echo "!! the config was refused; hlsgate keeps the previous one:" >&2
                echo "$line" >&2
                exit 1
            fi
            echo ">> config reloaded (pid $(cat $PIDFILE))" >&2
            exit 0
        fi
        sleep 0.1
    done
    echo "!! hlsgate did not report the reload within 10 s; see $LOG" >&2
    exit 1
fi

need_build
echo ">> building hlsgate (release; the first build takes several minutes)" >&2
cargo build --release
mkdir -p data
if [ $mode = foreground ]; then
    echo ">> starting target/release/hlsgate serve ${args[*]:-} -- ready at the line \"running\"; Ctrl-C stops it" >&2
    exec target/release/hlsgate serve "${args[@]}"
fi

if running; then
    echo "!! already running (pid $(cat $PIDFILE)); scripts/run.sh --stop first" >&2
    exit 1
fi
: >$LOG
target/release/hlsgate serve "${args[@]}" >>$LOG 2>&1 </dev/null &
pid=$!
echo $pid >$PIDFILE
for _ in $(seq 300); do
    if grep -q ' running (SIGHUP' $LOG; then
        grep -E 'listening|metrics at' $LOG | sed 's/^/   /' >&2
        echo ">> hlsgate serve is running (pid $pid, log $LOG); stop it with scripts/run.sh --stop" >&2
        exit 0
    fi
    if ! kill -0 $pid 2>/dev/null; then
        rm -f $PIDFILE
        echo "!! hlsgate did not start:" >&2
        cat $LOG >&2
        exit 1
    fi
    sleep 0.1
done
echo "!! hlsgate did not report it was running within 30 s; see $LOG" >&2
exit 1

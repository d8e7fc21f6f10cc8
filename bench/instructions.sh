#!/usr/bin/env bash
# Instructions per request on the cached live playlist over plain HTTP/1.1, counted by
# valgrind's callgrind: exact and repeatable where this VM's wall-clock CPU figures move by
# ±15 % between runs (bench/README, "Third stop"). Each build is started under callgrind on
# bench/hlsgate.yaml's config (other ports), warmed with WARM requests, its counters zeroed,
# then asked N more; the total over those N, divided by N, is the figure. The bare Pingora
# probe (examples/bare_pingora.rs) answering the same bytes is the floor.
#
#   bench/instructions.sh                    this tree's build and the bare probe
#   OLD_BIN=/path/to/hlsgate bench/instructions.sh    and another build beside them
#   N=20000 TOP=25 bench/instructions.sh     (TOP: the costliest functions of each)
#   KEEP=/tmp/cg bench/instructions.sh       keep the callgrind dumps there (for
#                                            callgrind_annotate --inclusive=yes)
#
# Caveats: valgrind's CPU has no SHA extensions (HMAC-SHA256 runs the portable code, about
# 7k instructions a request more than the real one), and it counts each byte of a
# `rep movsb` copy as an instruction. Compare builds with each other, not with wall time.
. "$(dirname "$0")/lib.sh"
need valgrind valgrind

N=${N:-20000}
WARM=${WARM:-3000}
TOP=${TOP:-15}
URL_PATH=$(hlsgate_url live index.m3u8 | sed 's#^http://127.0.0.1:18080##')

# Self cost of each function in a callgrind dump, per request: "total" then the TOP ones.
summarise() { # file
    python3 - "$1" "$N" "$TOP" <<'EOF'
import collections, re, sys
names, cost, cur, skip = {}, collections.Counter(), None, False
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        if m.group(1) == "fn":
            cur = names.get(m.group(2))
        continue
    if line.startswith("calls="):
        skip = True  # the next cost line is the call's inclusive cost
        continue
    if line[:1].isdigit() or line[:1] in "+-*":
        parts = line.split()
        if skip:
            skip = False
        elif len(parts) >= 2 and cur:
            cost[cur] += int(parts[1])
n, top = int(sys.argv[2]), int(sys.argv[3])
total = sum(cost.values())
print(f"   {total / n:,.0f} instructions per request")
for f, c in cost.most_common(top):
    print(f"   {c / n:9,.0f} {100 * c / total:5.1f}%  {f[:110]}")
EOF
}

# run label port cmd...: the command under callgrind, serving on 127.0.0.1:port
run() {
    local label=$1 port=$2 pid
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$RUN/cg.$label.%p" "$@" >"$RUN/cg.$label.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 600); do curl -s -o /dev/null "127.0.0.1:$port/" && break; sleep 0.2; done
    local url=http://127.0.0.1:$port$URL_PATH
    [ "$label" = bare ] && url=http://127.0.0.1:$port/live
    h2load -t1 -c8 -n"$WARM" --h1 "$url" >/dev/null 2>&1
    callgrind_control -z "$pid" >/dev/null 2>&1
    h2load -t1 -c8 -n"$N" --h1 "$url" >"$RUN/h2load.$label.txt" 2>&1
    grep -q "status codes: $N 2xx" "$RUN/h2load.$label.txt" || { echo "!! $label: not all $N requests were 2xx" >&2; cat "$RUN/h2load.$label.txt" >&2; exit 1; }
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo ">> $label"
    summarise "$(ls "$RUN"/cg."$label".*.1)"
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$RUN"/cg."$label".*.1 "$KEEP/cg.$label"; fi
}

need h2load nghttp2-client
# this tree's build and OLD_BIN: the bench config on ports 181xx (no TLS listener, no upgrade socket)
sed -E -e '/^  (tls|upgrade_socket):/d' -e 's/127.0.0.1:180(80|83|89)/127.0.0.1:181\1/' \
    -e 's#sqlite://data/bench.db#sqlite://data/bench-cg.db#' "$HLSGATE_CONFIG" >"$RUN/cg.yaml"
run new 18180 target/release/hlsgate edge -c "$RUN/cg.yaml"
[ -n "${OLD_BIN:-}" ] && run old 18180 "$OLD_BIN" edge -c "$RUN/cg.yaml"
start_bare "$RUN/data/live/index.m3u8"
kill "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true
run bare 18190 target/release/examples/bare_pingora 127.0.0.1:18190 "$RUN/data/live/index.m3u8" 2 false

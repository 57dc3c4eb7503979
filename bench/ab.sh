#!/bin/sh
# bench/ab.sh: the library of two builds side by side, for a before/after
# comparison in one session (the ratios of separate `make bench` runs move
# with the machine's load more than most code changes do).
#
#     sh bench/ab.sh OLD_BUILDDIR NEW_BUILDDIR [ROUNDS [CONNS...]]
#
# Each build dir is a configured tree where `make bench/usock_echo
# bench/echo_load bench/baseline_epoll` was run.  For each round and each
# connection count (default 1000 10000) it runs, one after the other:
# NEW's baseline_epoll, OLD and NEW usock_echo on epoll, OLD and NEW on ev;
# 64 B ping-pong, 1024 B buffer, 3 s after 1 s of warm-up, server on CPU 0
# and NEW's echo_load on CPU 1.  One line per run: CONNS KIND rt/s and
# server CPU per round trip; take the medians (or the pairwise ratios).
set -u
OLD=$1/bench NEW=$2/bench
R=${3:-5}
shift 2
[ $# -gt 0 ] && shift
CONNS=${*:-1000 10000}
ulimit -n "$(ulimit -Hn)"
. "$(dirname "$0")/common.sh" # PIN0, PIN1, wait_port
out=$(mktemp "${TMPDIR:-/tmp}/usocket-ab.XXXXXX") || exit 1
trap 'rm -f "$out"' EXIT
run() { # LABEL DIR PROG ENV CONNS
    : >"$out"
    env $4 $PIN0 "$2/$3" 0 1024 >"$out" 2>&1 &
    spid=$!
    port=$(wait_port "$out")
    r=$($PIN1 "$NEW/echo_load" -p "$port" -c "$5" -s 64 -d 3 -w 1 -P "$spid" -K 0)
    kill "$spid"
    wait "$spid" 2>/dev/null
    echo "$5 $1 $(echo "$r" | tr ' ' '\n' |
        grep -E '^(rtt_per_s|srv_cpu_us_per_rt|errors)=' | tr '\n' ' ')"
}
for i in $(seq "$R"); do
    for c in $CONNS; do
        run base "$NEW" baseline_epoll "" "$c"
        run old-epoll "$OLD" usock_echo USOCKET_REACTOR=epoll "$c"
        run new-epoll "$NEW" usock_echo USOCKET_REACTOR=epoll "$c"
        run old-ev "$OLD" usock_echo USOCKET_REACTOR=ev "$c"
        run new-ev "$NEW" usock_echo USOCKET_REACTOR=ev "$c"
    done
done

#!/bin/sh
# bench/profile.sh BENCHDIR KIND CONNS [SECONDS] — where a server's CPU goes.
#
# Starts server KIND (base: baseline_epoll, ev, poll or epoll: usock_echo on that
# reactor) pinned to CPU 0, loads it with echo_load (CONNS connections, 64 B
# ping-pong) on CPU 1, samples the server with
# `perf record -e cpu-clock -g` for SECONDS (3) after a 2 s warm-up, and
# prints the share of samples spent in user space (everything outside the
# kernel) and the top user-space symbols.  Sampled shares are steady to
# about ±1% between runs, where CPU per round trip is not: this is what
# bench/RESULTS.md uses to decide optimisations.  The perf data is left in
# $TMPDIR/usock-profile.KIND.data for `perf report` / `perf annotate`.
# Needs perf; the server is killed by its PID on exit.
set -u

B=${1:?usage: profile.sh BENCHDIR base|ev|poll|epoll CONNS [SECONDS]}
KIND=${2:?kind}
CONNS=${3:?conns}
SECS=${4:-3}
OUT=${TMPDIR:-/tmp}/usock-profile.$KIND.data
SPID=
TMP=$(mktemp -d "${TMPDIR:-/tmp}/usock-profile.XXXXXX") || exit 1
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM HUP

. "$(dirname "$0")/common.sh"
command -v perf >/dev/null 2>&1 || { echo "profile.sh: perf not found" >&2; exit 1; }
case $KIND in
base | ev | poll | epoll) ;;
*) echo "profile.sh: KIND is base, ev, poll or epoll" >&2; exit 2 ;;
esac
ulimit -n "$(ulimit -Hn)" 2>/dev/null

env "$(srv_env "$KIND")" $PIN0 "$B/$(srv_cmd "$KIND")" 0 > "$TMP/srv.out" &
SPID=$!
PORT=$(wait_port "$TMP/srv.out")
[ -n "$PORT" ] || { echo "profile.sh: server did not start" >&2; exit 1; }
# The libtool wrapper (if any) execs the real program in the same process.
$PIN1 "$B/echo_load" -p "$PORT" -c "$CONNS" -s 64 -d $((SECS + 3)) -w 1 \
    -P "$SPID" > "$TMP/load.out" &
LPID=$!
sleep 2
perf record -q -e cpu-clock -F 5000 -g -p "$SPID" -o "$OUT" -- \
    sleep "$SECS" > /dev/null 2>&1
wait "$LPID"
echo "$KIND, $CONNS connections: $(cat "$TMP/load.out")"
perf report -i "$OUT" --no-children --sort dso --stdio -g none 2>/dev/null |
    awk '/%/ { v = $1; sub(/%/, "", v); if ($2 ~ /kernel/) k += v; else u += v }
         END { printf "user-space share of the server: %.2f%% (kernel %.2f%%)\n", u, k }'
echo "top user-space symbols (share of all samples):"
perf report -i "$OUT" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
    grep '%' | grep -v 'kernel' | head -12

#!/bin/sh
# multicore.sh: examples/multicore_echo_server spreads connections over
# its threads (one hub and one SO_REUSEPORT listener each), hands accepted
# sockets to other hubs with -x (usock_hub_post), and shuts down
# gracefully on SIGTERM with 1,000 clients connected: every client sees
# its connection closed, the server exits 0 within 3 s with no task alive
# and no descriptor leaked.
#
#     EXAMPLES=BUILD/examples sh tests/multicore.sh
#
# Skips (77) when python3 is missing.  Runs on both reactors (poll only
# in a build without libev).
: "${EXAMPLES:=$(pwd)/examples}"
bin=$EXAMPLES/multicore_echo_server

if ! command -v python3 >/dev/null 2>&1; then
    echo "SKIP: python3 is not installed"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/usocket-mc.XXXXXX") || exit 1
pid=
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
failed=0
ok() { echo "ok - $1"; }
not_ok() { echo "not ok - $1"; failed=1; }

# start ARGS...: start the server on a free port; sets pid and port.
start() {
    : >"$tmp/out"
    "$bin" -q "$@" 127.0.0.1:0 >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    i=0
    while ! grep -q '^listening on' "$tmp/out" && [ $i -lt 100 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/out")
}

# stop: SIGTERM, wait at most 3 s for exit; sets rc and stats.
stop() {
    kill -TERM "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 30 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "# still running 3 s after SIGTERM"
        kill -KILL "$pid"
    fi
    wait "$pid"
    rc=$?
    pid=
    stats=$(grep '^multicore_echo_server: threads=' "$tmp/out")
    echo "# $stats"
}

# clients N: N concurrent CPython clients, 20 echoes each.
clients() {
    timeout 60 python3 - "$port" "$1" <<'PY'
import socket, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
bad = []
def client(i):
    try:
        s = socket.create_connection(("127.0.0.1", port), 5)
        s.settimeout(5)
        f = s.makefile("rb")
        for k in range(20):
            line = b"client %d line %d\n" % (i, k)
            s.sendall(line)
            if f.readline() != line:
                bad.append(i)
                return
        f.close()
        s.close()
    except OSError as e:
        bad.append((i, e))
ts = [threading.Thread(target=client, args=(i,)) for i in range(n)]
for t in ts: t.start()
for t in ts: t.join()
sys.exit(1 if bad else 0)
PY
}

# check_stats THREADS CONNS RULE: RULE "spread" (every thread served one
# at least) or "even" (round robin: CONNS / THREADS each).
check_stats() {
    python3 - "$stats" "$1" "$2" "$3" <<'PY'
import re, sys
line, threads, conns, rule = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
m = re.match(r"multicore_echo_server: threads=(\d+) connections=(\d+) per_thread=([\d,]+) alive=(\d+) leaked_fds=(-?\d+)$", line)
if not m:
    sys.exit("no stats line")
per = [int(x) for x in m[3].split(",")]
if int(m[1]) != threads or len(per) != threads:
    sys.exit("threads")
if int(m[2]) != conns or sum(per) != conns:
    sys.exit("connections=%s, expected %d" % (m[2], conns))
if rule == "spread" and min(per) == 0:
    sys.exit("a thread served nothing: %s" % m[3])
if rule == "even" and per != [conns // threads] * threads:
    sys.exit("not round robin: %s" % m[3])
if int(m[4]) != 0 or int(m[5]) != 0:
    sys.exit("alive=%s leaked_fds=%s" % (m[4], m[5]))
PY
}

# The ev reactor only when built with libev (config.h of the build tree,
# the directory make check runs tests in).
reactors="ev poll"
if [ -f config.h ] && ! grep -q '^#define HAVE_LIBEV 1' config.h; then
    reactors=poll
fi
# The epoll reactor too when built (config.h of the build tree).
if [ -f config.h ] && grep -q '^#define HAVE_EPOLL 1' config.h; then
    reactors="$reactors epoll"
fi
for reactor in $reactors; do
    export USOCKET_REACTOR=$reactor

    start -t 2
    if clients 40; then ok "$reactor: 40 clients on 2 threads"; else not_ok "$reactor: 40 clients on 2 threads"; fi
    stop
    [ "$rc" = 0 ] && ok "$reactor: SIGTERM exits 0" || not_ok "$reactor: SIGTERM exit $rc"
    if check_stats 2 40 spread; then ok "$reactor: connections landed on both hubs"
    else not_ok "$reactor: connections landed on both hubs"; fi

    start -t 3 -x
    if clients 30; then ok "$reactor: 30 clients handed out by thread 0"; else not_ok "$reactor: 30 clients handed out"; fi
    stop
    [ "$rc" = 0 ] && ok "$reactor: hand-off: SIGTERM exits 0" || not_ok "$reactor: hand-off: SIGTERM exit $rc"
    if check_stats 3 30 even; then ok "$reactor: usock_hub_post handed every socket to the next hub"
    else not_ok "$reactor: usock_hub_post hand-off"; fi

    # Graceful shutdown with 1,000 clients connected (and idle).
    start -t 1
    if timeout 60 python3 - "$port" "$pid" <<'PY'
import os, resource, select, signal, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < 1100:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
socks = []
for i in range(1000):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.settimeout(5)
    socks.append(s)
for s in socks:
    s.sendall(b"x")
for s in socks:
    if s.recv(1) != b"x":
        sys.exit("no echo")
t0 = time.time()
os.kill(pid, signal.SIGTERM)
closed = 0
for s in socks:
    left = max(0.1, t0 + 3 - time.time())
    s.settimeout(left)
    try:
        if s.recv(1) == b"":
            closed += 1
    except OSError:
        pass
took = time.time() - t0
print("# %d of 1000 connections closed by the server %.3f s after SIGTERM" % (closed, took))
sys.exit(0 if closed == 1000 and took < 3 else 1)
PY
    then ok "$reactor: SIGTERM with 1000 clients: every connection closed within 3 s"
    else not_ok "$reactor: SIGTERM with 1000 clients"; fi
    # The server had the signal already: stop only waits for it.
    stop
    [ "$rc" = 0 ] && ok "$reactor: 1000 clients: exit 0" || not_ok "$reactor: 1000 clients: exit $rc"
    if check_stats 1 1000 spread; then ok "$reactor: 1000 clients: all tasks done, no fd leaked"
    else not_ok "$reactor: 1000 clients: stats"; fi
done
exit $failed

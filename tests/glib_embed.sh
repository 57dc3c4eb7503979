#!/bin/sh
# glib_embed.sh: examples/glib_embed (usocket tasks inside a GMainLoop,
# driven through usock_hub_fd/usock_hub_timeout/usock_hub_run_nowait)
# serves an nc client and 100 concurrent CPython clients (100 echo tasks
# at once), the glib timer
# keeps ticking meanwhile, and SIGTERM shuts it down gracefully (exit 0
# with its stats line).
#
#     EXAMPLES=BUILD/examples sh tests/glib_embed.sh
#
# Skips (77) when the example was not built (no glib-2.0 or no libev) or
# python3/nc are missing.
: "${EXAMPLES:=$(pwd)/examples}"
bin=$EXAMPLES/glib_embed

if [ ! -x "$bin" ]; then
    echo "SKIP: examples/glib_embed was not built (glib-2.0 development files or libev missing)"
    exit 77
fi
for tool in python3 nc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool is not installed"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/usocket-glib.XXXXXX") || exit 1
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
failed=0
ok() { echo "ok - $1"; }
not_ok() { echo "not ok - $1"; failed=1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
USOCKET_REACTOR=ev "$bin" -q "127.0.0.1:$port" >"$tmp/out" 2>"$tmp/err" &
pid=$!

# Wait (5 s at most) for the listener; this probe is one connection.
python3 - "$port" <<'PY' || { not_ok "glib_embed listens"; cat "$tmp/err"; exit 1; }
import socket, sys, time
end = time.time() + 5
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
        break
    except OSError:
        if time.time() > end:
            sys.exit(1)
        time.sleep(0.05)
PY
ok "glib_embed listens"

got=$(printf 'hello glib\n' | timeout 10 nc -N 127.0.0.1 "$port")
if [ "$got" = "hello glib" ]; then ok "nc echo"; else not_ok "nc echo: got '$got'"; fi

# 100 clients at once, 50 round trips each, 10 ms apart: about a second of
# traffic during which the glib timer must keep ticking.
if timeout 30 python3 - "$port" <<'PY'
import socket, sys, threading
port = int(sys.argv[1])
bad = []
def client(i):
    try:
        s = socket.create_connection(("127.0.0.1", port), 5)
        s.settimeout(5)
        f = s.makefile("rb")
        for k in range(50):
            line = b"client %d line %d\n" % (i, k)
            s.sendall(line)
            if f.readline() != line:
                bad.append(i)
                return
            threading.Event().wait(0.01)
        s.close()
    except OSError as e:
        bad.append((i, e))
ts = [threading.Thread(target=client, args=(i,)) for i in range(100)]
for t in ts: t.start()
for t in ts: t.join()
sys.exit(1 if bad else 0)
PY
then ok "100 CPython clients echo"; else not_ok "100 CPython clients echo"; fi

kill -TERM "$pid"
t0=$(date +%s.%N)
rc=0
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 "$pid" 2>/dev/null; then
    not_ok "SIGTERM: still running after 3 s"
    kill -KILL "$pid"
fi
wait "$pid"; rc=$?
pid=
[ "$rc" = 0 ] && ok "SIGTERM: exit 0" || not_ok "SIGTERM: exit $rc"

line=$(grep '^glib_embed: connections=' "$tmp/out")
echo "# $line"
if python3 - "$line" <<'PY'
import re, sys
m = re.match(r"glib_embed: connections=(\d+) ticks=(\d+) uptime=([\d.]+) max_tick_late_ms=([\d.-]+)$", sys.argv[1])
if not m:
    sys.exit("no stats line")
conns, ticks, up, late = int(m[1]), int(m[2]), float(m[3]), float(m[4])
if conns != 102:
    sys.exit("connections=%d, expected 102" % conns)
# A 100 ms glib timer over `up` seconds: most ticks came, none very late.
if ticks < 0.7 * up / 0.1 - 2:
    sys.exit("ticks=%d in %.3f s" % (ticks, up))
if late > 250:
    sys.exit("a tick came %.1f ms late" % late)
PY
then ok "stats: every connection counted, the glib timer kept firing"
else not_ok "stats line"; fi
exit $failed

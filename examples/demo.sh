#!/bin/sh
# demo.sh: 1,000 clients, 100 round trips each, against the task server.
#
#     sh examples/demo.sh BUILD_EXAMPLES_DIR        (what `make demo` runs)
#
# Starts threaded_echo_server on a free port, runs demo_clients against it,
# stops the server, and exits with the clients' status.  The programs may be
# libtool wrapper scripts: they exec the real binary, so $! is the server.

usage() {
    echo "usage: sh $0 BUILD_EXAMPLES_DIR" >&2
    exit 2
}

[ $# -eq 1 ] || usage
dir=$1
if [ ! -x "$dir/threaded_echo_server" ] || [ ! -x "$dir/demo_clients" ]; then
    usage
fi

# Both sides need more than 1,024 fds; the programs raise their own limit
# too.  `ulimit -n` is not POSIX but dash, bash, ksh and busybox have it.
# shellcheck disable=SC3045
ulimit -n "$(ulimit -Hn)" 2>/dev/null || :

pid=
cpid=
out=$(mktemp "${TMPDIR:-/tmp}/usocket-demo.XXXXXX") || exit 1

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    if [ -n "$cpid" ]; then
        kill "$cpid" 2>/dev/null
        wait "$cpid" 2>/dev/null
        cpid=
    fi
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        pid=
    fi
    rm -f "$out"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$dir/threaded_echo_server" -q 0 >"$out" &
pid=$!

# Wait at most 10 s for "listening on 127.0.0.1:PORT".
port=
tenths=0
while [ "$tenths" -lt 100 ]; do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$out")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    if sleep 0.1 2>/dev/null; then
        tenths=$((tenths + 1))
    else
        sleep 1
        tenths=$((tenths + 10))
    fi
done
if [ -z "$port" ]; then
    echo "demo: the server did not start listening" >&2
    cat "$out" >&2
    exit 1
fi

# In the background, so that a signal's trap runs at once (the shell only
# runs traps between commands, and `wait` is one it interrupts).
if command -v timeout >/dev/null 2>&1; then
    timeout 300 "$dir/demo_clients" "$port" 1000 100 &
else
    "$dir/demo_clients" "$port" 1000 100 &
fi
cpid=$!
wait "$cpid"
status=$?
cpid=

kill "$pid"
wait "$pid"
server=$?
pid=
if [ "$server" -ne 0 ]; then
    echo "demo: the server exited with status $server" >&2
fi
exit "$status"

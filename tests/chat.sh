#!/bin/sh
# chat.sh: examples/chat_server against CPython clients and nc, on each
# reactor: lines reach the others in order during a flood, a client that
# never reads is dropped without holding up the others, a client killed
# mid-stream (nc, SIGKILL) does not disturb the server.
#
#     EXAMPLES=BUILD/examples TOP_SRCDIR=SRC sh tests/chat.sh
#
# Exit status: 0 when every check passed, 1 when one failed, 77 (skip) when
# python3 or nc is missing.  The server is killed by PID on exit.

here=$(cd "$(dirname "$0")" && pwd)
: "${EXAMPLES:=$(pwd)/examples}"
: "${TOP_SRCDIR:=$here/..}"

for tool in python3 nc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool is not installed"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/usocket-chat.XXXXXX") || exit 1
spid=
failed=0

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    if [ -n "$spid" ]; then
        kill "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

reactors="default poll"
# The epoll reactor too when built (config.h of the build tree).
if [ -f config.h ] && grep -q '^#define HAVE_EPOLL 1' config.h; then
    reactors="$reactors epoll"
fi
if [ -n "${USOCKET_REACTOR:-}" ]; then
    reactors=$USOCKET_REACTOR
fi
for r in $reactors; do
    if [ "$r" = default ]; then
        unset USOCKET_REACTOR
    else
        USOCKET_REACTOR=$r
        export USOCKET_REACTOR
    fi
    # One output file per run: the background shell truncates its file
    # only after the fork, so a shared one could still show the previous
    # server's port when first read here.
    out=$tmp/server-$r.out
    : >"$out"
    "$EXAMPLES/chat_server" 0 >"$out" 2>&1 &
    spid=$!
    port=
    i=0
    while [ $i -lt 100 ] && [ -z "$port" ]; do
        port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out")
        [ -n "$port" ] || sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$port" ]; then
        echo "not ok - chat ($r): the server did not start"
        sed 's/^/#   /' "$out"
        failed=1
    else
        timeout 60 python3 "$TOP_SRCDIR/tests/interop/chat_clients.py" "$port" nc |
            sed "s/^\(\(not \)\{0,1\}ok - chat\)/\1 ($r)/" >"$tmp/result"
        cat "$tmp/result"
        if grep -q '^not ok' "$tmp/result" || ! grep -q '^ok' "$tmp/result"; then
            failed=1
            echo "# server output:"
            sed 's/^/#   /' "$out"
        fi
        if ! kill -0 "$spid" 2>/dev/null; then
            echo "not ok - chat ($r): the server died"
            failed=1
        fi
    fi
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
    spid=
done
exit $failed

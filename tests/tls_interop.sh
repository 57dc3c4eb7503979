#!/bin/sh
# tls_interop.sh: our TLS examples against CPython's ssl module, curl and
# openssl s_server, on both reactors.
#
#     EXAMPLES=BUILD/examples TOP_SRCDIR=SRC sh tests/tls_interop.sh
#
# One TAP-style line per check.  Exit 0 when all passed, 1 when one failed,
# 77 (skip, with the reason) when TLS is not built or python3/openssl is
# missing.  Certificates come from tests/tls_certs.sh in a mktemp folder;
# every server is killed by PID on exit; every client runs under timeout.
here=$(cd "$(dirname "$0")" && pwd)
: "${EXAMPLES:=$(pwd)/examples}"
: "${TOP_SRCDIR:=$here/..}"
py=$TOP_SRCDIR/tests/interop

if [ ! -x "$EXAMPLES/tls_echo_server" ]; then
    echo "SKIP: TLS is not built (configure --without-openssl, or no OpenSSL 3)"
    exit 77
fi
for tool in python3 openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool is not installed"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/usocket-tls.XXXXXX") || exit 1
pids=
failed=0
cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sh "$TOP_SRCDIR/tests/tls_certs.sh" "$tmp" || { echo "not ok - certificates"; exit 1; }

# start NAME CMD...: run a server in the background, wait for its
# "listening on 127.0.0.1:PORT" line, set $port.
start() {
    name=$1
    shift
    : >"$tmp/$name.out" # before the fork: the child truncates it late
    "$@" >"$tmp/$name.out" 2>&1 &
    pids="$pids $!"
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/$name.out")
        [ -n "$port" ] && return 0
        sleep 0.05
    done
    echo "not ok - $name did not start: $(cat "$tmp/$name.out")"
    failed=1
    return 1
}

expect='-->> hello, i am server
-->>Loop_msg:Hello,i am a client!'

tls_reactors="ev poll"
# The epoll reactor too when built (config.h of the build tree).
if [ -f config.h ] && grep -q '^#define HAVE_EPOLL 1' config.h; then
    tls_reactors="$tls_reactors epoll"
fi
for reactor in $tls_reactors; do
    export USOCKET_REACTOR=$reactor
    if start "tls_echo_server.$reactor" "$EXAMPLES/tls_echo_server" -q \
        --cert "$tmp/server.pem" --key "$tmp/server.key" 0; then
        out=$(timeout 30 python3 "$py/tls_client.py" "$port" "$tmp/ca.pem" 2>&1)
        if [ "$out" = "$expect" ]; then
            echo "ok - CPython ssl client -> tls_echo_server ($reactor)"
        else
            echo "not ok - CPython ssl client -> tls_echo_server ($reactor): $out"
            failed=1
        fi
    fi
done

if start tls_server.py python3 "$py/tls_server.py" "$tmp/server.pem" "$tmp/server.key"; then
    for reactor in $tls_reactors; do
        out=$(USOCKET_REACTOR=$reactor timeout 30 "$EXAMPLES/tls_client" --ca "$tmp/ca.pem" "$port" 2>&1)
        if [ "$out" = "$expect" ]; then
            echo "ok - tls_client ($reactor) -> CPython ssl server"
        else
            echo "not ok - tls_client ($reactor) -> CPython ssl server: $out"
            failed=1
        fi
        out=$(USOCKET_REACTOR=$reactor timeout 30 "$EXAMPLES/tls_client" "$port" 2>&1)
        case $out in
        *"certificate verify failed"*) echo "ok - tls_client ($reactor) refuses an unknown CA" ;;
        *) echo "not ok - tls_client ($reactor) accepted an unverified server: $out"; failed=1 ;;
        esac
    done
fi
exit $failed

#!/bin/sh
# interop.sh: usocket's examples against CPython's socket module, nc and
# socat, and our clients against the CPython servers of the tutorials.
#
#     EXAMPLES=BUILD/examples TOP_SRCDIR=SRC sh tests/interop.sh
#
# `make check` sets both (AM_TESTS_ENVIRONMENT).  Each check prints one TAP
# style line, "ok - ..." or "not ok - ..."; the checks that talk to our C
# programs run once on the default reactor and once with
# USOCKET_REACTOR=poll.  Exit status: 0 when every check passed, 1 when one
# failed, 77 (skip) when python3, nc or socat is missing.  Multicast (which
# needs a private network namespace) and ping (a raw socket) run only as
# root, and print a SKIP line otherwise.
#
# Every server is killed by PID on exit; every client runs under
# `timeout 30`.  Temporary files live in a `mktemp -d` folder, removed on
# exit (srcdir may be read-only, as under distcheck).

here=$(cd "$(dirname "$0")" && pwd)
: "${EXAMPLES:=$(pwd)/examples}"
: "${TOP_SRCDIR:=$here/..}"
py=$TOP_SRCDIR/tests/interop

for tool in python3 nc socat; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool is not installed"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/usocket-interop.XXXXXX") || exit 1
pids=
failed=0
spid=
sport=

# shellcheck disable=SC2317 # run by the EXIT trap
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

ok() {
    echo "ok - $1"
}

not_ok() {
    echo "not ok - $1"
    failed=1
}

# check NAME EXPECTED ACTUAL_FILE: the file holds exactly EXPECTED (with
# printf's %b escapes, so "\n" is a newline).
check() {
    printf '%b' "$2" >"$tmp/expected"
    if cmp -s "$tmp/expected" "$3"; then
        ok "$1"
    else
        not_ok "$1"
        echo "# expected:"
        sed 's/^/#   /' "$tmp/expected"
        echo "# got:"
        sed 's/^/#   /' "$3"
        if [ -s "$3.err" ]; then
            echo "# stderr:"
            sed 's/^/#   /' "$3.err"
        fi
    fi
}

# serve NAME SED_SCRIPT CMD...: start a server writing to $tmp/NAME.out,
# its standard input from $stdin (an asynchronous command would get
# /dev/null), and wait (10 s at most) until the sed script finds its port in
# the output.  Sets $spid and $sport; $sport is empty when the server did
# not come up.
stdin=/dev/null
serve() {
    sname=$1
    sscript=$2
    shift 2
    : >"$tmp/$sname.out"
    "$@" <"$stdin" >"$tmp/$sname.out" 2>"$tmp/$sname.err" &
    spid=$!
    pids="$pids $spid"
    sport=
    i=0
    while [ $i -lt 100 ]; do
        sport=$(sed -n "$sscript" "$tmp/$sname.out")
        if [ -n "$sport" ]; then
            return 0
        fi
        if ! kill -0 "$spid" 2>/dev/null; then
            break
        fi
        sleep 0.1
        i=$((i + 1))
    done
    echo "# $sname did not start:"
    sed 's/^/#   /' "$tmp/$sname.err"
    return 1
}

# stop: end the last server started.
stop() {
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
}

# wait_for FILE TEXT: wait (10 s at most) until FILE contains TEXT.
wait_for() {
    i=0
    while [ $i -lt 100 ]; do
        if grep -qF "$2" "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

tcp_port='s/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p'
udp_port='s/^bind udp on \([0-9][0-9]*\)\.\.\.$/\1/p'
seed_tcp='-->> hello, i am server\n-->>Loop_msg:Hello,i am a client!\n'
seed_udp='hello,hello!\nhello,world!\nhello,python!\nhello,android!\n'
seed_udp="${seed_udp}hello,java!\n"

# 1. The tutorial's CPython TCP client against both echo servers.
check_tcp_servers() {
    for srv in threaded_echo_server pthread_echo_server; do
        if serve "$srv" "$tcp_port" "$EXAMPLES/$srv" -q 0; then
            out=$tmp/pyclient.$srv
            timeout 30 python3 "$py/tcp_client.py" "$sport" >"$out" \
                2>"$out.err"
            check "$tag CPython tcp_client.py against $srv" "$seed_tcp" "$out"
            stop
        else
            not_ok "$tag CPython tcp_client.py against $srv (no server)"
        fi
    done
}

# 2. The tutorial's CPython UDP client against udp_server.
check_udp_server() {
    if serve udp_server "$udp_port" "$EXAMPLES/udp_server" 0; then
        out=$tmp/pyudpclient
        timeout 30 python3 "$py/udp_client.py" "$sport" >"$out" 2>"$out.err"
        check "$tag CPython udp_client.py against udp_server" "$seed_udp" \
            "$out"
        stop
    else
        not_ok "$tag CPython udp_client.py against udp_server (no server)"
    fi
}

# 3. Our clients against the tutorial's CPython servers.
check_py_servers() {
    if serve pytcpserver "$tcp_port" python3 "$py/tcp_server.py" 0; then
        out=$tmp/tcp_client
        timeout 30 "$EXAMPLES/tcp_client" "$sport" >"$out" 2>"$out.err"
        check "$tag tcp_client against CPython tcp_server.py" "$seed_tcp" \
            "$out"
        stop
    else
        not_ok "$tag tcp_client against CPython tcp_server.py (no server)"
    fi
    if serve pyudpserver "$udp_port" python3 "$py/udp_server.py" 0; then
        out=$tmp/udp_client
        timeout 30 "$EXAMPLES/udp_client" "$sport" >"$out" 2>"$out.err"
        check "$tag udp_client against CPython udp_server.py" "$seed_udp" \
            "$out"
        stop
    else
        not_ok "$tag udp_client against CPython udp_server.py (no server)"
    fi
}

# 4. A dialogue with nc: "ping", wait for the answer, then "exit".
check_nc() {
    name="$tag nc against threaded_echo_server"
    if ! serve ncserver "$tcp_port" "$EXAMPLES/threaded_echo_server" -q 0; then
        not_ok "$name (no server)"
        return
    fi
    out=$tmp/nc
    rm -f "$tmp/ncin"
    mkfifo "$tmp/ncin"
    timeout 30 nc -N 127.0.0.1 "$sport" <"$tmp/ncin" >"$out" 2>"$out.err" &
    ncpid=$!
    pids="$pids $ncpid"
    exec 3>"$tmp/ncin"
    printf 'ping' >&3
    wait_for "$out" 'Loop_msg:ping!'
    printf 'exit' >&3
    exec 3>&-
    wait "$ncpid"
    check "$name" 'hello, i am serverLoop_msg:ping!' "$out"
    stop
}

# 5. socat against udp_server and against unix_echo -s.
check_socat() {
    if serve socatudp "$udp_port" "$EXAMPLES/udp_server" 0; then
        out=$tmp/socatudp
        printf 'abc' | timeout 30 socat -t 1 - "UDP:127.0.0.1:$sport" \
            >"$out" 2>"$out.err"
        check "$tag socat against udp_server" 'hello,abc!' "$out"
        stop
    else
        not_ok "$tag socat against udp_server (no server)"
    fi
    sock=$tmp/echo.sock
    if serve unixecho 's/^listening on \(.*\)$/\1/p' \
        "$EXAMPLES/unix_echo" -s "$sock"; then
        out=$tmp/socatunix
        printf 'x\n' | timeout 30 socat -t 2 - "UNIX-CONNECT:$sock" \
            >"$out" 2>"$out.err"
        check "$tag socat against unix_echo -s" 'x\n' "$out"
        stop
        if [ -e "$sock" ]; then
            not_ok "$tag unix_echo -s removes its socket file"
        else
            ok "$tag unix_echo -s removes its socket file"
        fi
    else
        not_ok "$tag socat against unix_echo -s (no server)"
    fi
}

# 6. The Waffle Nano server (a line of stdin per client) with the CPython
# Waffle client and with tcp_client -r; it exits 0 at the end of its input.
check_waffle() {
    printf 'hello waffle\nhello waffle\n' >"$tmp/lines"
    stdin=$tmp/lines
    if ! serve waffle "$tcp_port" "$EXAMPLES/tcp_server" -q 0; then
        stdin=/dev/null
        not_ok "$tag tcp_server (no server)"
        return
    fi
    stdin=/dev/null
    out=$tmp/waffle.py
    timeout 30 python3 "$py/waffle_client.py" "$sport" >"$out" 2>"$out.err"
    check "$tag CPython waffle_client.py against tcp_server" \
        'hello waffle\n' "$out"
    out=$tmp/waffle.c
    timeout 30 "$EXAMPLES/tcp_client" -r "$sport" >"$out" 2>"$out.err"
    check "$tag tcp_client -r against tcp_server" 'hello waffle\n' "$out"
    # A third client meets the end of the input: an empty answer.
    timeout 30 "$EXAMPLES/tcp_client" -r "$sport" >/dev/null 2>&1
    i=0
    while kill -0 "$spid" 2>/dev/null && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$spid" 2>/dev/null; then
        not_ok "$tag tcp_server exits 0 at the end of its input"
        stop
    elif wait "$spid"; then
        ok "$tag tcp_server exits 0 at the end of its input"
    else
        not_ok "$tag tcp_server exits 0 at the end of its input"
    fi
}

# 7. http_get against CPython's http.server (which answers HTTP/1.0).
check_http() {
    mkdir -p "$tmp/www"
    printf 'hello from usocket\nsecond line\n' >"$tmp/www/file.txt"
    if ! serve http 's/^Serving HTTP on .* port \([0-9][0-9]*\) .*/\1/p' \
        python3 -u -m http.server --bind 127.0.0.1 --directory "$tmp/www" 0
    then
        not_ok "$tag http_get (no http.server)"
        return
    fi
    out=$tmp/http
    if timeout 30 "$EXAMPLES/http_get" 127.0.0.1 "$sport" /file.txt \
        >"$out" 2>"$out.err"; then
        check "$tag http_get of a file" \
            'HTTP/1.0 200 OK\n\nhello from usocket\nsecond line\n' "$out"
    else
        not_ok "$tag http_get of a file exits 0"
    fi
    if timeout 30 "$EXAMPLES/http_get" 127.0.0.1 "$sport" /missing \
        >"$out" 2>"$out.err"; then
        not_ok "$tag http_get of a missing file exits non-zero"
    elif head -n 1 "$out" | grep -q '^HTTP/1\.[01] 404 '; then
        ok "$tag http_get of a missing file exits non-zero"
    else
        not_ok "$tag http_get of a missing file prints its 404"
    fi
    stop
}

# 8. Multicast over lo, in a private network namespace (root only).
check_multicast() {
    name="$tag multicast"
    if [ "$(id -u)" != 0 ]; then
        echo "ok - $name # SKIP not root"
        return
    fi
    if ! command -v ip >/dev/null 2>&1 || ! unshare -n true 2>/dev/null; then
        echo "ok - $name # SKIP no ip(8) or no unshare -n"
        return
    fi
    out=$tmp/multicast
    # shellcheck disable=SC2016 # expanded by the inner shell
    timeout 30 unshare -n sh -c '
        ip link set lo up && ip link set lo multicast on &&
            ip route add 224.0.0.0/4 dev lo || exit 1
        "$1/multicast_listener" 239.1.2.3 5007 >"$2" &
        i=0
        until grep -q "^listening on" "$2" || [ $i -ge 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        "$1/multicast_sender" 239.1.2.3 5007 "hello multicast" 3
        wait $!' sh "$EXAMPLES" "$out" 2>"$out.err"
    rc=$?
    sed -n '2,$p' "$out" >"$out.msg" 2>/dev/null
    if [ $rc -eq 0 ] && grep -q '^127\.0\.0\.1:[0-9]*: hello multicast$' \
        "$out.msg"; then
        ok "$name"
    else
        not_ok "$name (exit $rc)"
        sed 's/^/#   /' "$out" "$out.err" 2>/dev/null
    fi
}

# 9. ping 127.0.0.1 with a raw socket (root only).
check_ping() {
    name="$tag ping -c 2 127.0.0.1"
    if [ "$(id -u)" != 0 ]; then
        echo "ok - $name # SKIP not root"
        return
    fi
    out=$tmp/ping
    if timeout 30 "$EXAMPLES/ping" -c 2 127.0.0.1 >"$out" 2>"$out.err" &&
        [ "$(grep -c '^64 bytes from 127\.0\.0\.1: icmp_seq=[12] time=' \
            "$out")" = 2 ]; then
        ok "$name"
    else
        not_ok "$name"
        sed 's/^/#   /' "$out" "$out.err"
    fi
}

# 10. unix_echo without -s: server and client in one process.
check_unix_echo() {
    out=$tmp/unixdemo
    timeout 30 "$EXAMPLES/unix_echo" "$tmp/demo.sock" >"$out" 2>"$out.err"
    check "$tag unix_echo (path)" 'hello\nunix\nsockets\n' "$out"
    timeout 30 "$EXAMPLES/unix_echo" "@usocket-interop-$$" >"$out" \
        2>"$out.err"
    check "$tag unix_echo (abstract name)" 'hello\nunix\nsockets\n' "$out"
}

interop_reactors="default poll"
# The epoll reactor too when built (config.h of the build tree).
if [ -f config.h ] && grep -q '^#define HAVE_EPOLL 1' config.h; then
    interop_reactors="$interop_reactors epoll"
fi
for reactor in $interop_reactors; do
    tag="[$reactor]"
    if [ "$reactor" = default ]; then
        USOCKET_REACTOR=
    else
        USOCKET_REACTOR=$reactor
    fi
    export USOCKET_REACTOR
    check_tcp_servers
    check_udp_server
    check_py_servers
    check_nc
    check_socat
    check_waffle
    check_http
    check_multicast
    check_ping
    check_unix_echo
done

exit $failed

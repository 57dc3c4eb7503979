#!/bin/sh
# http.sh: examples/http_server against real clients — curl (keep-alive
# with two URLs on one connection, HEAD, 404), ab -k (2,000 requests, 20 at
# a time, no failure), CPython's http.client and raw sockets
# (tests/http/client.py: pipelining, keep-alive, malformed requests, paths
# escaping ROOT, slowloris) — once on each reactor (ev when built with
# libev, and poll).
#
#     EXAMPLES=BUILD/examples TOP_SRCDIR=SRC sh tests/http.sh
#
# `make check` sets both.  One TAP-style line per check; exit 0 when all
# passed, 1 when one failed, 77 (skip, with the reason) when curl, ab or
# python3 is missing.  Servers are killed by PID; clients run under
# `timeout`; temporary files live in a mktemp -d folder.

here=$(cd "$(dirname "$0")" && pwd)
: "${EXAMPLES:=$(pwd)/examples}"
: "${TOP_SRCDIR:=$here/..}"

for tool in curl ab python3 timeout; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool is not installed"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/usocket-http.XXXXXX") || exit 1
spid=
failed=0
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

ok() { echo "ok - $1"; }
not_ok() {
    echo "not ok - $1"
    failed=1
    shift
    for f in "$@"; do
        [ -f "$f" ] && head -c 2000 "$f" | sed 's/^/#   /'
    done
}

# The served folder, and files and links outside it.
www=$tmp/www
mkdir -p "$www/sub" "$tmp/outside"
awk 'BEGIN { for (i = 0; i < 1024; i++) printf "%c", 97 + i % 26 }' \
    > "$www/f1k.txt"
printf '<html><body>hello</body></html>\n' > "$www/index.html"
printf 'body { color: red }\n' > "$www/style.css"
printf 'sub a\n' > "$www/sub/a.txt"
printf 'SECRET\n' > "$tmp/outside/secret.txt"
ln -s "$tmp/outside" "$www/out"
ln -s "$tmp/outside/secret.txt" "$www/outfile.txt"
ln -s f1k.txt "$www/inlink.txt"

reactors=poll
if grep -q 'define HAVE_LIBEV 1' "$EXAMPLES/../config.h" 2>/dev/null; then
    reactors="ev poll"
fi
if grep -q 'define HAVE_EPOLL 1' "$EXAMPLES/../config.h" 2>/dev/null; then
    reactors="$reactors epoll"
fi
timeout_s=1

for r in $reactors; do
    : > "$tmp/srv.out"
    USOCKET_REACTOR=$r "$EXAMPLES/http_server" -q -t "$timeout_s" \
        -r "$www" 0 > "$tmp/srv.out" 2> "$tmp/srv.err" &
    spid=$!
    port=
    i=0
    while [ -z "$port" ] && [ $i -lt 100 ]; do
        port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' \
            "$tmp/srv.out")
        [ -n "$port" ] || sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$port" ]; then
        not_ok "$r: http_server did not start" "$tmp/srv.err"
        continue
    fi
    url=http://127.0.0.1:$port

    # curl: two URLs on one kept-alive connection.
    if timeout 30 curl -sv -o "$tmp/c1" -o "$tmp/c2" "$url/f1k.txt" \
        "$url/sub/a.txt" 2> "$tmp/curl.err" &&
        cmp -s "$tmp/c1" "$www/f1k.txt" && cmp -s "$tmp/c2" "$www/sub/a.txt" &&
        grep -q 'Re-using existing connection' "$tmp/curl.err"; then
        ok "$r: curl: two URLs on one connection, bodies match"
    else
        not_ok "$r: curl: two URLs on one connection" "$tmp/curl.err"
    fi
    # curl: HEAD.
    if timeout 30 curl -sI "$url/f1k.txt" > "$tmp/head" &&
        grep -q '^HTTP/1.1 200 OK' "$tmp/head" &&
        grep -qi '^Content-Length: 1024' "$tmp/head" &&
        grep -qi '^Content-Type: text/plain' "$tmp/head"; then
        ok "$r: curl: HEAD"
    else
        not_ok "$r: curl: HEAD" "$tmp/head"
    fi
    # curl: 404, and a Range request answered in full (Range is refused).
    code=$(timeout 30 curl -s -o /dev/null -w '%{http_code}' "$url/nothing")
    if [ "$code" = 404 ]; then
        ok "$r: curl: 404"
    else
        not_ok "$r: curl: 404 (got $code)"
    fi
    # ab: keep-alive, 2,000 requests, 20 at a time.
    if timeout 60 ab -q -k -n 2000 -c 20 "$url/f1k.txt" > "$tmp/ab" 2>&1 &&
        grep -q '^Complete requests: *2000$' "$tmp/ab" &&
        grep -q '^Failed requests: *0$' "$tmp/ab" &&
        grep -q '^Keep-Alive requests: *2000$' "$tmp/ab" &&
        ! grep -q 'Non-2xx' "$tmp/ab"; then
        ok "$r: ab -k -n 2000 -c 20: 2000 complete, 0 failed, all kept alive"
    else
        not_ok "$r: ab -k -n 2000 -c 20" "$tmp/ab"
    fi
    # CPython's http.client and raw requests.
    timeout 120 python3 "$TOP_SRCDIR/tests/http/client.py" "$port" "$www" \
        "$timeout_s" > "$tmp/py" 2>&1
    rc=$?
    sed "s/^\(not \)*ok - /&$r: /" "$tmp/py"
    if [ $rc != 0 ]; then
        failed=1
        grep -q '^not ok' "$tmp/py" || echo "not ok - $r: client.py exited $rc"
    fi
    if kill -0 "$spid" 2>/dev/null; then
        ok "$r: http_server still running"
    else
        not_ok "$r: http_server died" "$tmp/srv.err"
    fi
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
    spid=
done
exit $failed

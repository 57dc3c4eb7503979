#!/bin/sh
# bench/http.sh BUILDDIR — examples/http_server against nginx under wrk
# (issue 12), run by bench/run.sh (POSIX sh).
#
# Both servers serve the same 1 KiB file from a temporary folder, pinned to
# CPU 0; wrk (one thread, keep-alive) runs on CPU 1, at 100 and 1,000
# connections.  nginx is Debian's nginx-light, started here with its own
# configuration as its users tune it: one worker, access_log off, sendfile
# on, tcp_nopush on, keep-alive with no request limit, open_file_cache on,
# daemon off, every path in the temporary folder.  The two servers run in
# turn, the order reversed every other round; a ratio is taken within a
# round and the median over rounds is reported, with the server's CPU per
# request (its threads' utime+stime from /proc, 10 ms ticks) beside it.
#
#   HTTP_ROUNDS (default 5; BENCH_QUICK=1: 2), HTTP_SECONDS (3; quick: 1)
#
# Skipped, with the reason printed, when wrk or nginx is missing.  Every
# server started here is killed by its PID on exit.
set -u

B=${1:-.}
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    ROUNDS=${HTTP_ROUNDS:-2} SECS=${HTTP_SECONDS:-1}
else
    ROUNDS=${HTTP_ROUNDS:-5} SECS=${HTTP_SECONDS:-3}
fi
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
SRV=$B/../examples/http_server

if ! command -v wrk >/dev/null 2>&1; then
    echo "  http: SKIP: wrk is not installed (Debian package wrk)"
    exit 0
fi
if [ ! -x "$SRV" ]; then
    echo "  http: SKIP: $SRV was not built"
    exit 0
fi

. "$(dirname "$0")/common.sh"

T=$(mktemp -d "${TMPDIR:-/tmp}/usock-http.XXXXXX") || exit 1
SPID=
cleanup() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# nginx's worker may run as nobody: the files must be world-readable.
chmod 755 "$T"
mkdir -p "$T/www" "$T/ngx"
chmod 755 "$T/www"
awk 'BEGIN { for (i = 0; i < 1024; i++) printf "%c", 97 + i % 26 }' \
    > "$T/www/f1k.txt"
chmod 644 "$T/www/f1k.txt"

free_port() {
    python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

have_nginx=1
if [ ! -x "$NGINX" ]; then
    echo "  http: nginx is not installed (Debian package nginx-light): usocket alone"
    have_nginx=0
fi

# ticks PID: utime+stime of every thread of PID and of its children.
ticks() {
    for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        awk '{ print $14 + $15 }' /proc/"$p"/stat 2>/dev/null
    done | awk '{ s += $1 } END { print s + 0 }'
}

# start_usock / start_nginx: set SPID and PORT.
start_usock() {
    : > "$T/srv.out"
    $PIN0 "$SRV" -q -r "$T/www" 0 > "$T/srv.out" 2>&1 &
    SPID=$!
    PORT=$(wait_port "$T/srv.out")
}
start_nginx() {
    PORT=$(free_port)
    cat > "$T/ngx/nginx.conf" <<EOF
worker_processes 1;
worker_cpu_affinity 1;
daemon off;
pid $T/ngx/nginx.pid;
error_log $T/ngx/error.log;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
events { worker_connections 8192; }
http {
    default_type application/octet-stream;
    types { text/plain txt; }
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    client_body_temp_path $T/ngx/body;
    proxy_temp_path $T/ngx/proxy;
    fastcgi_temp_path $T/ngx/fastcgi;
    uwsgi_temp_path $T/ngx/uwsgi;
    scgi_temp_path $T/ngx/scgi;
    server {
        listen 127.0.0.1:$PORT reuseport backlog=4096;
        root $T/www;
    }
}
EOF
    ulimit -n "$(ulimit -Hn)" 2>/dev/null
    $PIN0 "$NGINX" -p "$T/ngx" -e "$T/ngx/error.log" -c "$T/ngx/nginx.conf" \
        > "$T/ngx/out" 2>&1 &
    SPID=$!
    i=0
    until curl -s -o /dev/null "http://127.0.0.1:$PORT/f1k.txt" ||
        [ $i -ge 100 ]; do
        sleep 0.05
        i=$((i + 1))
    done
}
stop_srv() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
    SPID=
}

# run KIND CONNS ROUND: one wrk run, recorded in $T/rec.
run() {
    "start_$1"
    if [ -z "$PORT" ]; then
        echo "  http $1: server did not start" >&2
        stop_srv
        return
    fi
    # A short warm-up fills the caches and opens the connections.
    $PIN1 wrk -t1 -c"$2" -d1 "http://127.0.0.1:$PORT/f1k.txt" >/dev/null 2>&1
    t0=$(ticks "$SPID")
    out=$($PIN1 wrk -t1 -c"$2" -d"$SECS" "http://127.0.0.1:$PORT/f1k.txt" 2>&1)
    t1=$(ticks "$SPID")
    stop_srv
    rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
    errs=$(echo "$out" | sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p')
    sock=$(echo "$out" | sed -n 's/.*Socket errors: *\(.*\)/\1/p')
    cpu=$(awk -v d=$((t1 - t0)) -v r="${rps:-0}" -v s="$SECS" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.2f", (r > 0 ? d / hz * 1e6 / (r * s) : 0) }')
    echo "$1 $2 $3 ${rps:-0} $cpu ${errs:-0}" >> "$T/rec"
    echo "  [$3] http $1 c$2: ${rps:-0} req/s, $cpu us/req (server CPU)," \
        "non-2xx ${errs:-0}${sock:+, socket errors: $sock}" >&2
}

r=1
while [ $r -le "$ROUNDS" ]; do
    for c in 100 1000; do
        if [ $((r % 2)) = 1 ] || [ $have_nginx = 0 ]; then
            list="usock nginx"
        else
            list="nginx usock"
        fi
        for k in $list; do
            [ $k = nginx ] && [ $have_nginx = 0 ] && continue
            run $k $c $r
        done
    done
    r=$((r + 1))
done

echo "HTTP/1.1, wrk -t1 keep-alive, 1 KiB file (http_server on CPU 0, wrk on CPU 1; $ROUNDS rounds of ${SECS}s):"
awk -v nginx=$have_nginx '
function med(list,    a, n, i, j, t) {
    n = split(list, a, " ")
    if (n == 0) return 0
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) {
            t = a[j]; a[j] = a[j-1]; a[j-1] = t
        }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
{ rps[$1, $2, $3] = $4; cpu[$1, $2, $3] = $5; err[$1, $2] += $6
  rounds[$2, $3] = 1; all[$1, $2] = all[$1, $2] " " $4; c[$1, $2] = c[$1, $2] " " $5 }
END {
    for (k in rounds) {
        split(k, p, SUBSEP)
        if (rps["nginx", p[1], p[2]] > 0 && rps["usock", p[1], p[2]] > 0)
            ratio[p[1]] = ratio[p[1]] " " rps["usock", p[1], p[2]] / rps["nginx", p[1], p[2]]
    }
    for (i = 1; i <= 2; i++) {
        n = i == 1 ? 100 : 1000; t = i == 1 ? 1.25 : 1.10
        line = sprintf("  http_server %4d conns: %d req/s, %.2f us/req, non-2xx %d",
            n, med(all["usock", n]), med(c["usock", n]), err["usock", n])
        if (nginx) {
            r = med(ratio[n])
            line = line sprintf("; nginx %d req/s, %.2f us/req; ratio %.2fx (target >= %.2fx) %s",
                med(all["nginx", n]), med(c["nginx", n]), r, t, r >= t ? "ok" : "MISS")
        }
        print line
    }
}' "$T/rec"

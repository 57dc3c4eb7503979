#!/bin/sh
# bench/tls.sh BENCHDIR — the TLS part of `make bench` (bench/run.sh runs
# it; POSIX sh).
#
# Servers run pinned to CPU 0, the load generator (bench/tls_load, usocket
# tasks on one thread, verifying nothing) to CPU 1.  Against the baseline
# (bench/tls_baseline: blocking OpenSSL 3, a thread per connection) and
# usocket (bench/usock_tls_echo: a task per connection), same RSA-2048
# certificate, ROUNDS rounds (3; BENCH_QUICK=1: 1), the order reversed
# every other round, medians reported:
#   - TLS 1.3 handshakes per second (8 clients: connect, handshake, a 1-byte
#     echo, clean close) and the server's CPU time per handshake;
#   - bulk echo of 64 KiB messages (4 connections): MB/s and the server's
#     CPU time per GB;
#   - memory: the server's RSS growth per connection with 1,000 idle TLS
#     connections held, minus the same for 1,000 plain connections
#     (bench/usock_echo), against the target of 32 KiB.
# Every server started here is killed by its PID.
set -u
B=${1:-.}
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then ROUNDS=1 D=1; else ROUNDS=3 D=3; fi
if [ ! -x "$B/usock_tls_echo" ]; then
    echo "TLS: not built (configure found no OpenSSL 3): skipped"
    exit 0
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/usock-tls-bench.XXXXXX") || exit 1
SPID=
cleanup() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
. "$(dirname "$0")/common.sh"

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/key.pem" \
    -out "$T/cert.pem" -subj /CN=localhost -days 2 2>/dev/null || {
    echo "TLS: openssl could not make a certificate: skipped"
    exit 0
}

# start PROG [ARGS...]: a server on a free port; sets SPID and PORT.
start() {
    prog=$1
    shift
    : >"$T/srv.out"
    $PIN0 "$B/$prog" 0 "$@" >"$T/srv.out" 2>&1 &
    SPID=$!
    PORT=$(wait_port "$T/srv.out")
}
stop() {
    kill "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    SPID=
}
# run KIND MODE ARGS...: one measurement, its key=value line to records.
run() {
    kind=$1
    shift
    case $kind in
    base) start tls_baseline "$T/cert.pem" "$T/key.pem" ;;
    usock) start usock_tls_echo "$T/cert.pem" "$T/key.pem" ;;
    plain) start usock_echo ;;
    esac
    if [ -z "$PORT" ]; then
        echo "TLS: the $kind server did not start: $(cat "$T/srv.out")"
        stop
        return
    fi
    line=$($PIN1 "$B/tls_load" "$1" "$PORT" "$SPID" "$2" ${3:-} 2>&1)
    echo "kind=$kind $line" >>"$T/rec"
    stop
}

: >"$T/rec"
r=1
while [ $r -le "$ROUNDS" ]; do
    if [ $((r % 2)) = 1 ]; then order="base usock"; else order="usock base"; fi
    for k in $order; do
        run "$k" hs "$D" 8
        run "$k" bulk "$D" 4
    done
    r=$((r + 1))
done
run usock idle 1000
run plain plain 1000

awk '
function val(line, key,    i, n, f) {
    n = split(line, f, " ")
    for (i = 1; i <= n; i++) if (index(f[i], key "=") == 1) return substr(f[i], length(key) + 2) + 0
    return -1
}
function med(list,    n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n ? a[int((n + 1) / 2)] : -1
}
{
    k = val($0, "kind") ; split($1, kk, "="); k = kk[2]
    if ($0 ~ /mode=hs/) { hs[k] = hs[k] " " val($0, "per_s"); hc[k] = hc[k] " " val($0, "srv_cpu_us_per_op"); he[k] += val($0, "errors") }
    if ($0 ~ /mode=bulk/) { bw[k] = bw[k] " " val($0, "mb_per_s"); bc[k] = bc[k] " " val($0, "srv_cpu_ms_per_gb"); be[k] += val($0, "errors") }
    if ($0 ~ /mode=idle/) idle = val($0, "bytes_per_conn")
    if ($0 ~ /mode=plain/) plain = val($0, "bytes_per_conn")
    if ($0 !~ /mode=/) print "  (failed run: " $0 ")"
}
END {
    print "TLS (measured with the other processes of this machine running):"
    bh = med(hs["base"]); uh = med(hs["usock"]); bhc = med(hc["base"]); uhc = med(hc["usock"])
    if (bh > 0) printf "  handshakes/s: usocket %.0f, baseline %.0f: %.2fx (target >= 0.95x) %s;" \
        " server CPU/handshake %.0f vs %.0f us (%.2fx); errors %d\n", uh, bh, uh / bh,
        (uh / bh >= 0.95 ? "ok" : "MISS"), uhc, bhc, (bhc > 0 ? uhc / bhc : 0), he["usock"] + he["base"]
    bb = med(bw["base"]); ub = med(bw["usock"]); bbc = med(bc["base"]); ubc = med(bc["usock"])
    if (bb > 0) printf "  bulk echo 64 KiB: usocket %.0f MB/s, baseline %.0f MB/s: %.2fx (target >= 0.95x) %s;" \
        " server CPU/GB %.0f vs %.0f ms (%.2fx); errors %d\n", ub, bb, ub / bb,
        (ub / bb >= 0.95 ? "ok" : "MISS"), ubc, bbc, (bbc > 0 ? ubc / bbc : 0), be["usock"] + be["base"]
    if (idle > 0 && plain >= 0) printf "  idle TLS connection: %.1f KiB beyond a plain one (%.1f vs %.1f KiB RSS each, 1,000 held)" \
        " (target <= 32 KiB) %s\n", (idle - plain) / 1024, idle / 1024, plain / 1024,
        ((idle - plain) / 1024 <= 32 ? "ok" : "MISS")
}' "$T/rec"

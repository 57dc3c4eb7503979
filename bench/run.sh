#!/bin/sh
# bench/run.sh BENCHDIR — the driver of `make bench` (POSIX sh).
#
# Every server runs pinned to CPU 0, every load generator to CPU 1.  For
# each scenario the hand-written baseline and the subjects run one after
# the other, PAIRS rounds (7; BENCH_QUICK=1: 2), the order reversed every
# other round; each ratio (subject / baseline) is taken within a round and
# the median over rounds is reported.  The load generator reads the
# server's CPU time (its threads' run time from /proc/PID/task/*/schedstat,
# in ns; /proc/PID/stat utime+stime when that is missing) and memory
# (VmRSS, VmHWM) at the edges of its measurement window, so CPU per round
# trip covers the window only; round trips are counted as the server saw
# them (echoes still queued at the generator at each edge corrected for).
# System calls per round trip come from extra counting rounds (3; quick:
# 1; the median is reported: how many events one epoll_wait returns, and
# so its share, depends on how the two sides' speeds happen to lock)
# under `perf stat -e raw_syscalls:sys_enter`, enabled and disabled
# by the generator at the window's edges through perf's control fifo (exact
# counts); when perf cannot count, from `strace -c -f` over one short whole
# run instead (setup included: approximate).  Every server started here is
# killed by its PID on exit.
set -u

B=${1:-.}
QUICK=${BENCH_QUICK:-0}
[ "$QUICK" = 1 ] || QUICK=0
if [ "$QUICK" = 1 ]; then
    PAIRS=2 D=1 W=0.3 CD=0.5 CW=0.1 COUNTS=1
else
    PAIRS=7 D=3 W=1 CD=1 CW=0.3 COUNTS=3
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/usock-bench.XXXXXX") || exit 1
REC=$TMP/records
: > "$REC"
SPID= PPID_PERF=

cleanup() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null
    [ -n "$PPID_PERF" ] && kill "$PPID_PERF" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

. "$(dirname "$0")/common.sh"

# Can perf count system calls of a command it starts?
COUNT=none
if command -v perf >/dev/null 2>&1 &&
    perf stat -x, -e raw_syscalls:sys_enter -o "$TMP/p" true 2>/dev/null &&
    grep -q '^[0-9][0-9]*,.*raw_syscalls' "$TMP/p" 2>/dev/null; then
    COUNT=perf
    mkfifo "$TMP/ctl" "$TMP/ack"
elif command -v strace >/dev/null 2>&1; then
    COUNT=strace
fi

# start KIND ARG MODE: MODE plain, perf or strace.  Sets SPID and PORT.
start() {
    prog=$B/$(srv_cmd "$1")
    : > "$TMP/srv.out"
    case $3 in
    perf)
        env "$(srv_env "$1")" perf stat -x, -o "$TMP/perf.out" \
            -e raw_syscalls:sys_enter -D -1 \
            --control "fifo:$TMP/ctl,$TMP/ack" -- \
            $PIN0 "$prog" 0 "$2" > "$TMP/srv.out" 2>/dev/null &
        PPID_PERF=$! ;;
    strace)
        env "$(srv_env "$1")" strace -c -f -o "$TMP/strace.out" \
            $PIN0 "$prog" 0 "$2" > "$TMP/srv.out" 2>/dev/null &
        PPID_PERF=$! ;;
    *)
        env "$(srv_env "$1")" $PIN0 "$prog" 0 "$2" > "$TMP/srv.out" &
        SPID=$! ;;
    esac
    PORT=$(wait_port "$TMP/srv.out")
    if [ "$3" != plain ]; then
        # The server is the child of perf/strace (taskset execs into it).
        SPID=$(cat /proc/"$PPID_PERF"/task/*/children 2>/dev/null |
            awk '{print $1}')
    fi
}

stop() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null
    [ -n "$SPID" ] && wait "$SPID" 2>/dev/null
    if [ -n "$PPID_PERF" ]; then
        wait "$PPID_PERF" 2>/dev/null
    fi
    SPID= PPID_PERF=
}

# field NAME LINE
field() {
    v=$(echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p")
    echo "${v:-0}"
}

# one SCEN KIND CONNS SIZE ARG ROUND MODE: a run, recorded in $REC.
one() {
    scen=$1 kind=$2 conns=$3 size=$4 arg=$5 round=$6 mode=$7
    case " $SKIP_KINDS " in *" $kind "*) return ;; esac
    if [ "$mode" = plain ]; then d=$D w=$W; else d=$CD w=$CW; fi
    start "$kind" "$arg" "$mode"
    if [ -z "$PORT" ] || [ -z "$SPID" ]; then
        echo "  $scen $kind: server did not start" >&2
        stop
        return
    fi
    ctl=
    [ "$mode" = perf ] && ctl="-C $TMP/ctl -A $TMP/ack"
    case $kind in
    u*) out=$($PIN1 "$B/udp_load" -p "$PORT" -s "$size" -d "$d" -w "$w" \
        -P "$SPID" $ctl) ;;
    *) out=$($PIN1 "$B/echo_load" -p "$PORT" -c "$conns" -s "$size" \
        -d "$d" -w "$w" -P "$SPID" ${PIN0:+-K 0} $ctl) ;;
    esac
    stop
    sys=-
    if [ "$mode" = perf ]; then
        n=$(sed -n 's/^\([0-9][0-9]*\),.*raw_syscalls.*/\1/p' "$TMP/perf.out")
        sys=$(awk -v n="${n:-0}" -v r="$(field rts "$out")" \
            'BEGIN { printf "%.3f", (r > 0 ? n / r : 0) }')
    elif [ "$mode" = strace ]; then
        n=$(awk '$NF == "total" { print $4 }' "$TMP/strace.out")
        sys=$(awk -v n="${n:-0}" -v r="$(field rts "$out")" \
            'BEGIN { printf "%.3f", (r > 0 ? n / r : 0) }')
    fi
    printf '%s %s %s %s %s %s %s %s %s %s %s %s\n' "$scen" "$kind" \
        "$round" "$(field rtt_per_s "$out")" \
        "$(field srv_cpu_us_per_rt "$out")" "$(field srv_hwm_kib "$out")" \
        "$(field srv_rss0_kib "$out")" "$(field srv_rss_kib "$out")" \
        "$(field errors "$out")" "$(field conns "$out")" "$sys" \
        "$(field cpu_busy_us_per_rt "$out")" >> "$REC"
    echo "  [$round] $scen $kind: $out" >&2
}

# Scenarios: NAME CONNS SIZE BUFARG KINDS (the first kind is the baseline).
SCENARIOS='c1 1 64 1024 base,ev,poll,epoll
c100 100 64 1024 base,ev,poll,epoll,pthread,naive,libuv,st,go
c1000 1000 64 1024 base,ev,poll,epoll,pthread,naive,libuv,st,go
c10000 10000 64 1024 base,ev,poll,epoll,pthread,naive,libuv,st,go
bulk 1 65536 65536 base,ev,poll,epoll,naive
u1 1 64 1 ubase,uev
u100 100 64 100 ubase,uev'

# round R MODE: every scenario once; odd rounds run the kinds reversed.
round() {
    echo "$SCENARIOS" | while read -r scen conns size arg kinds; do
        list=$(echo "$kinds" | tr ',' ' ')
        if [ $(($1 % 2)) = 0 ]; then
            list=$(echo "$list" | awk '{ for (i = NF; i > 0; i--)
                printf "%s ", $i }')
        fi
        for k in $list; do
            one "$scen" "$k" "$conns" "$size" "$arg" "$1" "$2"
        done
    done
}

# ---------------------------------------------------------------------------
#  Peers (issue 12): libuv, State Threads and Go beside the epoll baseline,
#  each skipped with its reason when its package is missing.  Go is built
#  here with the local toolchain: no network, GOCACHE in $TMP.
# ---------------------------------------------------------------------------
SKIP_KINDS=
# The epoll reactor only where it is built (Linux: HAVE_EPOLL in config.h).
if ! grep -q '^#define HAVE_EPOLL 1' "$B/../config.h" 2>/dev/null; then
    SKIP_KINDS="$SKIP_KINDS epoll"
    echo "reactor epoll skipped: not built (no sys/epoll.h)"
fi
# The default reactor carries the issue 12 targets: the first backend
# default_ops() in reactor/reactor.c returns (ev when built with libev).
DEFAULT=$(awk '/^static const struct usock__reactor_ops \*default_ops/ { f = 1 }
    f && /return &usock__reactor_/ { sub(/.*&usock__reactor_/, ""); sub(/;.*/, "");
    print; exit }' "$(dirname "$0")/../reactor/reactor.c" 2>/dev/null)
case " $SKIP_KINDS " in *" $DEFAULT "*) DEFAULT=poll ;; esac
if [ "$DEFAULT" = ev ] && ! grep -q '^#define HAVE_LIBEV 1' "$B/../config.h" 2>/dev/null; then
    DEFAULT=poll
fi
[ -n "$DEFAULT" ] || DEFAULT=ev
echo "default reactor (the targets' rows): $DEFAULT"
[ -x "$B/uv_echo" ] || { SKIP_KINDS="$SKIP_KINDS libuv"
    echo "peer libuv skipped: bench/uv_echo not built (libuv1-dev missing at configure time)"; }
[ -x "$B/st_echo" ] || { SKIP_KINDS="$SKIP_KINDS st"
    echo "peer st skipped: bench/st_echo not built (libst-dev missing at configure time)"; }
if ! command -v go >/dev/null 2>&1; then
    SKIP_KINDS="$SKIP_KINDS go"
    echo "peer go skipped: no go command (golang-go missing)"
elif ! (cd "$(dirname "$0")" && GOCACHE="$TMP/gocache" GOPATH="$TMP/gopath" \
    GO111MODULE=off GOPROXY=off GOFLAGS= GOTOOLCHAIN=local \
    go build -o "$B/go_echo" go_echo.go) > "$TMP/go.err" 2>&1; then
    SKIP_KINDS="$SKIP_KINDS go"
    echo "peer go skipped: go build failed: $(head -c 300 "$TMP/go.err")"
fi

START=$(date +%s)
echo "usocket bench: $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' \
    /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "mode: $([ $QUICK = 1 ] && echo quick || echo full): $PAIRS rounds of" \
    "${D}s (+${W}s warm-up); servers on CPU 0, load on CPU 1;" \
    "system calls counted by: $COUNT"
echo "running (one line per run on stderr) ..."
# Counting rounds are numbered 0, -1, -2 …; the report takes the median.
c=0
while [ $c -lt "$COUNTS" ] && [ "$COUNT" != none ]; do
    round "-$c" "$COUNT"
    c=$((c + 1))
done
r=1
while [ $r -le "$PAIRS" ]; do
    round "$r" plain
    r=$((r + 1))
done

# Held at the fd limit: 19,000 connections answering, one process each side.
HELD=$(ulimit -Hn)
if [ "$HELD" = unlimited ] || [ "$HELD" -ge 19100 ]; then
    start ev 1024 plain
    hout=$($PIN1 "$B/echo_load" -p "$PORT" -c 19000 -s 64 -d 1 -w 0.3 \
        -P "$SPID")
    stop
else
    hout="conns=0 errors=0 (hard fd limit $HELD < 19100)"
fi
echo "  held 19000 ev: $hout" >&2

# 100,000 tasks run under the system's own vm.max_map_count (stacks are
# carved from chunks, src/stack.c): it is reported, never raised.
echo "micro-benchmarks ..." >&2
MICRO=$(BENCH_QUICK=$QUICK $PIN0 "$B/micro" 2>&1)
echo "$MICRO" | sed 's/^/  /' >&2

# ---------------------------------------------------------------------------
#  Report: medians of the per-round ratios, every figure beside its target.
# ---------------------------------------------------------------------------
echo
echo "== results ($(date -u '+%Y-%m-%d %H:%M UTC'), $PAIRS rounds," \
    "syscalls by $COUNT, $(($(date +%s) - START)) s) =="
awk -v pairs="$PAIRS" -v count="$COUNT" -v held="$hout" -v micro="$MICRO" \
    -v def="$DEFAULT" '
function med(list,    a, n, i, j, t) {
    n = split(list, a, " ")
    if (n == 0) return -1
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) {
            t = a[j]; a[j] = a[j-1]; a[j-1] = t
        }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
function mark(ok) { return ok ? "ok" : "MISS" }
function upto(v, lim, unit) {
    return sprintf("(target <= %s %s) %s", lim, unit, mark(v <= lim))
}
function basekind(s) { return s ~ /^u/ ? "ubase" : "base" }
{
    s = $1; k = $2; r = $3
    if (r <= 0) { if ($11 != "-") sys[s, k] = sys[s, k] " " $11; next }
    rtt[s, k, r] = $4; cpu[s, k, r] = $5; busy[s, k, r] = $12
    hwm[s, k] = hwm[s, k] " " $6
    if ($10 > 0) perconn[s, k] = perconn[s, k] " " ($8 - $7) * 1024 / $10
    abscpu[s, k] = abscpu[s, k] " " $5
    absrtt[s, k] = absrtt[s, k] " " $4
    err[s, k] += $9
    rounds[s, k, r] = 1
}
END {
    for (key in rounds) {
        split(key, p, SUBSEP); s = p[1]; k = p[2]; r = p[3]
        b = basekind(s)
        if (k == b || !((s, b, r) in rounds)) continue
        if (cpu[s, b, r] > 0)
            rc[s, k] = rc[s, k] " " cpu[s, k, r] / cpu[s, b, r]
        if (rtt[s, b, r] > 0)
            rr[s, k] = rr[s, k] " " rtt[s, k, r] / rtt[s, b, r]
        if (busy[s, b, r] > 0 && busy[s, k, r] > 0)
            rb[s, k] = rb[s, k] " " busy[s, k, r] / busy[s, b, r]
    }
    print "TCP echo, 64 B, one message in flight per connection" \
        " (cpu/rt: the server process; cpu0/rt: all busy time of CPU 0," \
        " softirq work in ksoftirqd included):"
    # Issue 12: the default reactor (def) >= 0.95x rt/s and <= 1.10x
    # cpu/rt at 100/1,000/10,000 connections; the others report only
    # (poll keeps its own cpu/rt bound at 100 when it is not the default).
    nr = split("ev poll epoll", rk, " ")
    for (i = 1; i <= nr; i++) {
        k = rk[i]; d = k == def
        line(k, "c1", "1 conn", 0, 0, 0)
        line(k, "c100", "100 conns" (d ? " (default)" : ""),
            d ? 1.10 : (k == "poll" ? 1.25 : 0), d, d ? 0.95 : 0)
        line(k, "c1000", "1000 conns" (d ? " (default)" : ""),
            d ? 1.10 : 0, d, d ? 0.95 : 0)
        line(k, "c10000", "10000 conns" (d ? " (default)" : ""),
            d ? 1.10 : 0, d, d ? 0.95 : 0)
    }
    line("pthread", "c100", "100 conns", 0, 0, 0)
    line("pthread", "c1000", "1000 conns", 0, 0, 0)
    line("pthread", "c10000", "10000 conns", 0, 0, 0)
    np2 = split("naive libuv st go", pk2, " ")
    for (i = 1; i <= np2; i++)
        for (j = 1; j <= 3; j++)
            line(pk2[i], j == 1 ? "c100" : j == 2 ? "c1000" : "c10000",
                j == 1 ? "100 conns" : j == 2 ? "1000 conns" : "10000 conns",
                0, 0, 0)
    # Peers side by side (issue 12): ratios to the epoll baseline.
    print "Peers side by side (rt/s and server CPU per round trip as" \
        " ratios to the epoll baseline, median of rounds; RSS growth per" \
        " connection):"
    printf "  %-8s %-26s %-26s %-26s\n", "server", "100 conns", \
        "1,000 conns", "10,000 conns"
    np = split("ev poll epoll naive libuv st go pthread", pk, " ")
    for (i = 1; i <= np; i++) {
        k = pk[i]; row = sprintf("  %-8s", k); any = 0
        for (j = 1; j <= 3; j++) {
            s = j == 1 ? "c100" : j == 2 ? "c1000" : "c10000"
            if ((s, k) in abscpu && med(absrtt[s, k]) <= 0) {
                any = 1
                row = row sprintf(" %-26s", "no answers")
            } else if ((s, k) in abscpu) {
                any = 1
                row = row sprintf(" %-26s", sprintf("%.2fx %.2fx %.1fKiB",
                    med(rr[s, k]), med(rc[s, k]), med(perconn[s, k]) / 1024))
            } else
                row = row sprintf(" %-26s", "-")
        }
        if (any) print row
    }
    print "  (each cell: rt/s ratio, cpu/rt ratio, RSS per connection;" \
        " naive = 16 KiB recv + sendall, untuned)"
    print "Memory at 10,000 connections" \
        " (server VmRSS growth per connection; peak VmHWM):"
    for (i = 1; i <= 4; i++) {
        k = i == 1 ? "base" : i == 2 ? "ev" : i == 3 ? "poll" : "epoll"
        if (!(("c10000", k) in abscpu)) continue
        pc = med(perconn["c10000", k]) / 1024
        printf "  %-7s %.2f KiB/conn%s  VmHWM %.1f MiB\n", k, pc,
            k == "base" ? "" : sprintf(" (target <= 8 KiB) %s", mark(pc <= 8)),
            med(hwm["c10000", k]) / 1024
    }
    printf "  pthread at 1000 conns: %.2f KiB/conn, VmHWM %.1f MiB\n",
        med(perconn["c1000", "pthread"]) / 1024,
        med(hwm["c1000", "pthread"]) / 1024
    print "Bulk, 1 connection x 64 KiB messages:"
    line("ev", "bulk", "bulk", 0, 0, 0.95)
    line("poll", "bulk", "bulk", 0, 0, 0.95)
    line("epoll", "bulk", "bulk", 0, 0, 0.95)
    # naive: 16 KiB buffer, recv then sendall, no option set (issue 12):
    # Nagle plus delayed ACKs would stall it unless TCP_NODELAY is default.
    line("naive", "bulk", "bulk", 0, 0, 0.90)
    print "UDP ping-pong (baseline: blocking recvfrom/sendto loop;" \
        " 100 sockets: epoll):"
    line("uev", "u1", "1 socket", 0, 0, 0.90)
    line("uev", "u100", "100 sockets", 0, 0, 0.90)
    split(held, h, " "); hc = 0; he = -1
    for (i in h) {
        if (h[i] ~ /^conns=/) hc = substr(h[i], 7) + 0
        if (h[i] ~ /^errors=/) he = substr(h[i], 8) + 0
    }
    print "At the fd limit:"
    printf "  ev held %d connections answering, %d errors" \
        " (target 19000, 0) %s\n", hc, he, mark(hc >= 19000 && he == 0)
    print "Micro-benchmarks:"
    n = split(micro, m, "\n")
    for (i = 1; i <= n; i++) {
        v = m[i]; sub(/^[^=]*=/, "", v); v += 0; t = ""
        if (m[i] ~ /^ctx_switch_ns=/) t = upto(v, 20, "ns")
        if (m[i] ~ /^spawn_finish_ns=/) t = upto(v, 200, "ns")
        if (m[i] ~ /^recv_ready_extra_ns=/) t = upto(v, 50, "ns")
        if (m[i] ~ /^idle_task_bytes=/) t = upto(v, 8192, "bytes")
        if (m[i] ~ /^tasks_100k_spawned=/) {
            t = "(target 100000) MISS"; short = 1
        }
        if (m[i] ~ /^tasks_100k_rss_mib=/)
            t = short ? "(target < 800 MiB for 100000) n/a: fewer tasks" \
                : upto(v, 800, "MiB")
        if (m[i] != "") printf "  %s %s\n", m[i], t
    }
}
# One scenario line: ratios of kind k to the baseline, with targets
# (0: no target, report only).
function line(k, s, label, tcpu, tsys, trtt,    c, r, sb, sk, ok, out) {
    b = basekind(s)
    if (!((s, k) in abscpu)) return
    c = med(rc[s, k]); r = med(rr[s, k])
    out = sprintf("  %-7s %-11s: cpu/rt %.2fx", k, label, c)
    if (tcpu) out = out sprintf(" (target <= %.2fx) %s", tcpu, mark(c <= tcpu))
    sb = med(sys[s, b]); sk = med(sys[s, k])
    if (sk >= 0) {
        out = out sprintf("  syscalls/rt %.2f vs %.2f", sk, sb)
        if (tsys) out = out sprintf(" (target <= 1.05x the baseline) %s",
            mark(sb > 0 && sk / sb <= 1.05))
    }
    if ((s, k) in rb) out = out sprintf("  cpu0/rt %.2fx", med(rb[s, k]))
    out = out sprintf("  rt/s %.2fx", r)
    if (trtt) out = out sprintf(" (target >= %.2fx) %s", trtt, mark(r >= trtt))
    out = out sprintf("  [%s %.2f us/rt %d rt/s;" \
        " %s %.2f us/rt %d rt/s; errors %d]", b, med(abscpu[s, b]),
        med(absrtt[s, b]), k, med(abscpu[s, k]), med(absrtt[s, k]),
        err[s, k] + err[s, b])
    print out
}' "$REC"

# ---------------------------------------------------------------------------
#  HTTP: examples/http_server against nginx under wrk (issue 12).
# ---------------------------------------------------------------------------
echo
sh "$(dirname "$0")/http.sh" "$B"

# ---------------------------------------------------------------------------
#  Every core: examples/multicore_echo_server (a hub and an SO_REUSEPORT
#  listener per thread) at 1 and 2 threads against usock_echo (one hub: the
#  threaded_echo_server pattern without its greeting), 100 connections of
#  64 B.  Nothing is pinned: on a 2-CPU machine the load generator shares
#  the cores with the server's threads, so -t 2 gains less than 2x.
# ---------------------------------------------------------------------------
MC=$B/../examples/multicore_echo_server
# mc_rtt PROG ARGS...: start a server printing "listening on …:PORT", load
# it for D seconds, print its rt/s.
mc_rtt() {
    : > "$TMP/mc.out"
    env USOCKET_REACTOR=ev "$@" > "$TMP/mc.out" 2>/dev/null &
    SPID=$!
    p=$(wait_port "$TMP/mc.out")
    out=
    [ -n "$p" ] && out=$("$B/echo_load" -p "$p" -c 100 -s 64 -d "$D" \
        -w "$W" -P "$SPID")
    kill "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    SPID=
    echo "  every core: $* -> $out" >&2
    field rtt_per_s "$out"
}
mc_median() {
    tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END {
        print NR == 0 ? 0 : NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
if [ -x "$MC" ]; then
    one= t1= t2=
    n=$((QUICK ? 1 : 3))
    while [ "$n" -gt 0 ]; do
        one="$one $(mc_rtt "$B/usock_echo" 0 16384)"
        t1="$t1 $(mc_rtt "$MC" -q -t 1 127.0.0.1:0)"
        t2="$t2 $(mc_rtt "$MC" -q -t 2 127.0.0.1:0)"
        n=$((n - 1))
    done
    one=$(echo "$one" | mc_median) t1=$(echo "$t1" | mc_median)
    t2=$(echo "$t2" | mc_median)
    echo "Every core (100 conns, 64 B, unpinned: the load generator shares" \
        "the $(nproc) CPUs; measure on an idle machine):"
    awk -v o="$one" -v a="$t1" -v b="$t2" 'BEGIN {
        f = "  usock_echo (1 hub) %d rt/s; multicore_echo_server"
        f = f " -t 1 %d rt/s (%.2fx), -t 2 %d rt/s (%.2fx)\n"
        printf f, o, a, (o > 0 ? a / o : 0), b, (o > 0 ? b / o : 0) }'
fi
# Channels: items/s beside Go's channels (bench/chan.sh).
echo "channels ..." >&2
sh "$(dirname "$0")/chan.sh" "$B" "$QUICK"
sh "$(dirname "$0")/tls.sh" "$B" # TLS: handshakes/s, bulk MB/s, memory per idle connection

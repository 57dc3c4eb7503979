#!/bin/sh
# bench/chan.sh BENCHDIR [QUICK] — channels in `make bench`: items per
# second through a usock channel (bench/chan_bench) beside Go's channels
# (bench/chan.go, built with the `go` tool into a temporary folder, with
# GOCACHE and GOPATH there too).  One hub is compared with GOMAXPROCS=1,
# two hubs with two OS threads.  Prints one line per scenario; without
# `go` the Go column says why it is missing.
B=${1:-.}
QUICK=${2:-${BENCH_QUICK:-0}}
[ "$QUICK" = 1 ] && Q=quick || Q=
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/usock-chan.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

US=$("$B/chan_bench" $Q 2>&1)
GO=
why=
if ! command -v go >/dev/null 2>&1; then
    why="go is not installed (golang-go)"
elif ! (cd "$tmp" && cp "$here/chan.go" . &&
    GOCACHE=$tmp/cache GOPATH=$tmp/gopath GO111MODULE=off GOFLAGS= \
        go build -o chan_go chan.go) >"$tmp/build.log" 2>&1; then
    why="go build failed: $(head -1 "$tmp/build.log")"
else
    GO=$(GOMAXPROCS=1 "$tmp/chan_go" $Q; "$tmp/chan_go" $Q)
fi

echo "Channels (items/s, 8-byte items; best of 3 runs):"
for s in hub1_cap0 hub1_cap128 hub2_cap0 hub2_cap128; do
    u=$(echo "$US" | sed -n "s/^$s=\([0-9]*\) items\/s$/\1/p")
    g=$(echo "$GO" | sed -n "s/^$s=\([0-9]*\) items\/s$/\1/p")
    if [ -z "$u" ]; then
        echo "  $s: usock failed: $US"
        continue
    fi
    if [ -z "$g" ]; then
        printf '  %-12s usock %10d  Go: skipped, %s\n' "$s" "$u" "${why:-no figure}"
        continue
    fi
    t=
    case $s in hub1_*) t=" (target >= 1.00x Go) $(awk -v u="$u" -v g="$g" 'BEGIN { print (u >= g ? "ok" : "MISS") }')" ;; esac
    printf '  %-12s usock %10d  Go %10d  %sx%s\n' "$s" "$u" "$g" \
        "$(awk -v u="$u" -v g="$g" 'BEGIN { printf "%.2f", u / g }')" "$t"
done

#!/bin/sh
# make fuzz: build the libFuzzer harnesses with clang (-fsanitize=fuzzer,
# address,undefined) against the library's sources, replay each one's seed
# corpus and kept crashes (tests/fuzz/corpus/<harness>/), then fuzz each
# for FUZZ_SECONDS (0: replay only).  Exit 77 with a message when clang
# or its libFuzzer runtime is missing.
#   run.sh CC SECONDS SRCDIR BUILDDIR "EV_LIBS" SOURCES...
set -u
CC=$1 SECS=$2 SRC=$3 BUILD=$4 LIBS=$5
shift 5
OUT=$BUILD/tests/fuzz
HARNESSES="fuzz_addr fuzz_rbuf fuzz_getaddrinfo"
# The TLS record path, when the library is built with OpenSSL (the caller
# passes OPENSSL_CFLAGS in the environment, OPENSSL_LIBS in LIBS).
if grep -q '^#define HAVE_OPENSSL 1' "$BUILD/config.h" 2>/dev/null; then
    HARNESSES="$HARNESSES fuzz_tls"
fi

if ! command -v "$CC" >/dev/null 2>&1; then
    echo "fuzz: $CC not found: skipped" >&2
    exit 77
fi
mkdir -p "$OUT/obj"
probe=$OUT/obj/probe.c
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}' >"$probe"
if ! "$CC" -fsanitize=fuzzer "$probe" -o "$OUT/obj/probe" 2>/dev/null; then
    echo "fuzz: $CC has no libFuzzer runtime (libclang-rt-*-dev): skipped" >&2
    exit 77
fi
FLAGS="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
INC="-I$BUILD -I$SRC/include -I$SRC/src -I$SRC/reactor -D_GNU_SOURCE -DHAVE_CONFIG_H -pthread ${OPENSSL_CFLAGS:-}"
objs=""
for f in "$@"; do
    o=$OUT/obj/$(echo "$f" | tr / _).o
    "$CC" $FLAGS -fsanitize=fuzzer-no-link $INC -c "$SRC/$f" -o "$o" || exit 1
    objs="$objs $o"
done
status=0
for h in $HARNESSES; do
    "$CC" $FLAGS -fsanitize=fuzzer $INC "$SRC/tests/fuzz/$h.c" $objs $LIBS \
        -o "$OUT/$h" || exit 1
    seeds=$SRC/tests/fuzz/corpus/$h
    work=$OUT/work/$h
    mkdir -p "$work"
    # Replay: every seed and every kept crash, once.
    if ! "$OUT/$h" -runs=0 "$seeds" >"$OUT/$h.replay.log" 2>&1; then
        echo "fuzz: $h fails on its corpus (see $OUT/$h.replay.log)" >&2
        status=1
        continue
    fi
    if [ "$SECS" -gt 0 ]; then
        (cd "$OUT" && ./"$h" -max_total_time="$SECS" -print_final_stats=1 \
            "$work" "$seeds" >"$h.log" 2>&1)
        rc=$?
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$h.log")
        if [ $rc -ne 0 ]; then
            echo "fuzz: $h: crash after ${runs:-?} runs; the input is in $OUT (crash-*): keep it in $seeds" >&2
            status=1
        else
            echo "fuzz: $h: $SECS s, ${runs:-?} runs, no crash"
        fi
    else
        echo "fuzz: $h: corpus replayed"
    fi
done
exit $status

#!/bin/sh
# make soak: RELIABILITY.md L01, L02, L04, L07, L08, L09, S04 (bench/soak.c), one line
# each, under a global bound of SOAK_LIMIT seconds (600) and a limit per
# scenario; exit 1 when a scenario fails or cannot finish in its limit.
#   soak.sh PATH_TO_SOAK
set -u
SOAK=$1
LIMIT=${SOAK_LIMIT:-600}
start=$(date +%s)
status=0
# scenario, its own limit in seconds (60 s of traffic + connects for L01)
for spec in l04:120 l07:75 l01:130 l02:180 l08:45 l09:45 s04:45; do
    name=${spec%%:*} lim=${spec#*:}
    left=$((LIMIT - ($(date +%s) - start)))
    if [ "$left" -lt "$lim" ]; then
        lim=$left
    fi
    if [ "$lim" -le 5 ]; then
        echo "$name: FAIL: not run, the global limit of $LIMIT s is spent"
        status=1
        continue
    fi
    timeout -k 5 "$lim" "$SOAK" "$name"
    rc=$?
    case $rc in
        0) ;;
        77) ;; # its SKIP line is printed
        124|137) echo "$name: FAIL: over its limit of $lim s"; status=1 ;;
        *) status=1 ;;
    esac
done
echo "soak: $(( $(date +%s) - start )) s in all"
exit $status

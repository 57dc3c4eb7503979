#!/bin/sh
# gateway.sh: examples/gateway against a real mosquitto broker (see
# tests/gateway.py for what is checked; tests/gateway_tls.sh runs its TLS
# cases).
#
#     EXAMPLES=BUILD/examples TOP_SRCDIR=SRC sh tests/gateway.sh
#
# Skips (77) only when mosquitto, mosquitto_sub or mosquitto_pub is missing
# (./bootstrap installs mosquitto and mosquitto-clients), or when the
# gateway was not built (it needs libev).
here=$(cd "$(dirname "$0")" && pwd)
: "${EXAMPLES:=$(pwd)/examples}"
: "${TOP_SRCDIR:=$here/..}"

PATH=$PATH:/usr/sbin:/usr/local/sbin
for tool in mosquitto mosquitto_sub mosquitto_pub; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool is not installed (packages mosquitto, mosquitto-clients)"
        exit 77
    fi
done
if [ ! -x "$EXAMPLES/gateway" ]; then
    echo "SKIP: examples/gateway was not built (it needs libev)"
    exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "FAIL: python3 is needed to drive the gateway test"
    exit 1
fi
EXAMPLES=$EXAMPLES exec timeout 300 python3 "$TOP_SRCDIR/tests/gateway.py"

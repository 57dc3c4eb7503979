#!/bin/sh
# gateway_tls.sh: examples/gateway --tls --ca against a real mosquitto
# broker listening over TLS (see tests/gateway.py --tls for what is
# checked; tests/gateway.sh runs the same cases in plain TCP).
#
#     EXAMPLES=BUILD/examples TOP_SRCDIR=SRC sh tests/gateway_tls.sh
#
# Skips (77) when mosquitto, mosquitto_sub or mosquitto_pub is missing
# (./bootstrap installs mosquitto and mosquitto-clients), when the gateway
# was not built (it needs libev), when TLS is not built into usocket
# (configure --without-openssl, or no OpenSSL 3), or when openssl (for
# tests/tls_certs.sh) is missing.
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
# The TLS examples are built exactly when TLS is built in.
if [ ! -x "$EXAMPLES/tls_echo_server" ]; then
    echo "SKIP: TLS is not built (configure --without-openssl, or no OpenSSL 3)"
    exit 77
fi
if ! command -v openssl >/dev/null 2>&1; then
    echo "SKIP: openssl is not installed (tests/tls_certs.sh needs it)"
    exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "FAIL: python3 is needed to drive the gateway test"
    exit 1
fi
EXAMPLES=$EXAMPLES exec timeout 300 python3 "$TOP_SRCDIR/tests/gateway.py" --tls

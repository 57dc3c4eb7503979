/*
 * libFuzzer harness (RELIABILITY.md B01, B02, B03, S03): usock_getaddrinfo's
 * argument checking, numeric hosts only (AI_NUMERICHOST is always set: no
 * DNS, no worker thread).  Input: 4 port bytes, 1 family byte, 1 type
 * byte, 2 flag bytes, 1 byte "host is NULL", then the host text.
 */
#include "config.h"

#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <usocket.h>

static const int families[] = {0, AF_INET, AF_INET6, AF_UNIX, 12345};
static const int types[] = {0, SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, 77};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char host[1200];
    usock_addrinfo_t *res = (usock_addrinfo_t *)1;

    if (size < 9) {
        return 0;
    }
    int port = (int)((uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 |
                     (uint32_t)data[2] << 8 | data[3]);
    int family = families[data[4] % 5];
    int type = types[data[5] % 5];
    int flags = (data[6] << 8 | data[7]) | AI_NUMERICHOST;
    size_t k = size - 9 < sizeof host - 1 ? size - 9 : sizeof host - 1;
    memcpy(host, data + 9, k);
    host[k] = '\0';
    int rc = usock_getaddrinfo(data[8] & 1 ? NULL : host, port, family, type,
                               flags, &res);
    if (rc == 0) {
        if (port < 0 || port > 65535) {
            abort(); /* B01: never a silent wrap */
        }
        for (usock_addrinfo_t *r = res; r; r = r->next) {
            if (r->addr.len == 0 || r->addr.len > sizeof r->addr.u ||
                usock_addr_port(&r->addr) != port) {
                abort();
            }
        }
    } else if (res != NULL) {
        abort(); /* a failure leaves *res NULL */
    }
    usock_freeaddrinfo(res);
    return 0;
}

/*
 * libFuzzer harness (RELIABILITY.md S03, B04, S07): the address parser and
 * formatter.  Input: 1 mode byte, 2 port bytes, then the text.
 *   mode even: usock_addr_ip(text, port); when it parses, format it, cut
 *     the host back out of "host:port" / "[host]:port", parse that again:
 *     the same address.
 *   mode odd: the same for usock_addr_unix(text).
 *   always: the raw bytes as a usock_addr_t of any family and length go
 *     to usock_addr_format with every buffer size up to the need (no read
 *     past the address, always NUL-terminated, ENOSPC when short).
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <usocket.h>

static void same(const usock_addr_t *a, const usock_addr_t *b)
{
    if (a->len != b->len || memcmp(&a->u, &b->u, a->len) != 0) {
        abort();
    }
}

static void round_trip(int unix_path, const char *text, int port)
{
    usock_addr_t a, b;
    char out[256];

    if ((unix_path ? usock_addr_unix(&a, text)
                   : usock_addr_ip(&a, text, port)) != 0) {
        return;
    }
    if (usock_addr_format(&a, out, sizeof out) != out) {
        abort(); /* a parsed address always formats */
    }
    if (unix_path) {
        if (usock_addr_unix(&b, out) != 0) {
            abort();
        }
        same(&a, &b);
        return;
    }
    char *colon = strrchr(out, ':');
    if (colon == NULL) {
        abort();
    }
    *colon = '\0';
    char *host = out;
    if (host[0] == '[') {
        size_t k = strlen(host);
        if (k < 2 || host[k - 1] != ']') {
            abort();
        }
        host[k - 1] = '\0';
        host++;
    }
    if (atoi(colon + 1) != port || usock_addr_ip(&b, host, port) != 0) {
        abort();
    }
    same(&a, &b);
}

static void format_raw(const uint8_t *data, size_t size)
{
    usock_addr_t a;
    char out[300];

    memset(&a, 0, sizeof a);
    memcpy(&a, data, size < sizeof a ? size : sizeof a);
    for (size_t n = 0; n <= sizeof out; n += n < 8 ? 1 : 37) {
        size_t k = n < sizeof out ? n : sizeof out;
        memset(out, 'x', sizeof out);
        const char *r = usock_addr_format(&a, out, k);
        if (k > 0 && memchr(out, '\0', k) == NULL) {
            abort();
        }
        if (r == NULL && errno != EINVAL && errno != ENOSPC) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[512];

    format_raw(data, size);
    if (size < 3) {
        return 0;
    }
    size_t k = size - 3 < sizeof text - 1 ? size - 3 : sizeof text - 1;
    memcpy(text, data + 3, k);
    text[k] = '\0';
    round_trip(data[0] & 1, text, (data[1] << 8 | data[2]) % 65536);
    return 0;
}

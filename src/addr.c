/*
 * Addresses: the usock_addr_t value type.  Parsing is numeric only (no name
 * resolution, so it never blocks and never needs a task); formatting
 * produces the "host:port" forms CPython users expect.
 *
 * What the parser accepts, and what it refuses on purpose:
 *
 *   ""                    0.0.0.0 (AF_INET, INADDR_ANY), as CPython does
 *   "10.0.0.1"            dotted quad only: "127.1", "0x7f.0.0.1", "1.2.3.4.5"
 *                         and "256.1.1.1" are EINVAL (inet_pton rules)
 *   "::1", "::ffff:1.2.3.4"
 *                         AF_INET6, kept as written (no v4-mapped folding)
 *   "fe80::1%lo"          AF_INET6 with a scope: an interface name, or a
 *   "fe80::1%2"           decimal interface index
 *   " 1.2.3.4", "[::1]"   EINVAL: no spaces, no brackets
 *
 * A usock_addr_t that a call here fails on is left empty (all zero, len 0).
 */
#include "config.h"

#include <usocket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for any formatted address: "@" + a 107-byte abstract name, a
 * 108-byte path, or "[v6%ifname]:65535". */
#define FORMAT_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) + 64)

/* The errno values if_nametoindex(3) may give that are not "no such
 * interface": they are passed through instead of EINVAL. */
static int resource_error(int e)
{
    return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

/* Parse the scope after '%': a decimal index or an interface name. */
static int parse_scope(const char *s, uint32_t *id)
{
    if (*s == '\0') {
        errno = EINVAL;
        return -1;
    }
    if (strspn(s, "0123456789") == strlen(s)) {
        errno = 0;
        unsigned long long v = strtoull(s, NULL, 10);
        if (errno != 0 || v > UINT32_MAX) {
            errno = EINVAL;
            return -1;
        }
        *id = (uint32_t)v;
        return 0;
    }
    unsigned int idx = if_nametoindex(s);
    if (idx == 0) {
        errno = resource_error(errno) ? errno : EINVAL;
        return -1;
    }
    *id = idx;
    return 0;
}

/* Parse an IPv6 address with an optional "%scope" into a->u.in6. */
static int parse_ip6(usock_addr_t *a, const char *ip)
{
    char host[INET6_ADDRSTRLEN];
    const char *pct = strchr(ip, '%');
    size_t len = pct != NULL ? (size_t)(pct - ip) : strlen(ip);
    uint32_t scope = 0;

    if (len >= sizeof host) {
        errno = EINVAL;
        return -1;
    }
    memcpy(host, ip, len);
    host[len] = '\0';
    if (inet_pton(AF_INET6, host, &a->u.in6.sin6_addr) != 1) {
        errno = EINVAL;
        return -1;
    }
    if (pct != NULL && parse_scope(pct + 1, &scope) < 0) {
        return -1;
    }
    a->u.in6.sin6_family = AF_INET6;
    a->u.in6.sin6_scope_id = scope;
    a->len = sizeof a->u.in6;
    return 0;
}

/*
 * Fill `a` from a numeric IPv4 or IPv6 address and a port in 0..65535.
 * "" means 0.0.0.0.  Returns 0, or -1 with errno EINVAL (NULL argument,
 * malformed address, unknown scope, port out of range); resource errors of
 * the scope lookup (EMFILE, ENFILE, ENOBUFS, ENOMEM) are passed through.
 */
int usock_addr_ip(usock_addr_t *a, const char *ip, int port)
{
    const struct in_addr any = {.s_addr = htonl(INADDR_ANY)};
    struct in_addr v4;

    if (a == NULL) {
        errno = EINVAL;
        return -1;
    }
    memset(a, 0, sizeof *a);
    if (ip == NULL || port < 0 || port > 65535) {
        errno = EINVAL;
        return -1;
    }
    if (*ip == '\0' || inet_pton(AF_INET, ip, &v4) == 1) {
        a->u.in4.sin_family = AF_INET;
        a->u.in4.sin_addr = *ip == '\0' ? any : v4;
        a->u.in4.sin_port = htons((uint16_t)port);
        a->len = sizeof a->u.in4;
        return 0;
    }
    if (parse_ip6(a, ip) < 0) {
        int e = errno;
        memset(a, 0, sizeof *a);
        errno = e;
        return -1;
    }
    a->u.in6.sin6_port = htons((uint16_t)port);
    return 0;
}

/*
 * Fill `a` with an AF_UNIX address.  A path is stored with its NUL (len =
 * offsetof(sun_path) + strlen + 1); "@name" is a Linux abstract name
 * (sun_path[0] = '\0', then the name, no NUL counted in len).  Returns 0,
 * or -1 with errno EINVAL (NULL or "") or ENAMETOOLONG (does not fit).
 */
int usock_addr_unix(usock_addr_t *a, const char *path)
{
    size_t room = sizeof a->u.un.sun_path;
    size_t len;

    if (a == NULL) {
        errno = EINVAL;
        return -1;
    }
    memset(a, 0, sizeof *a);
    if (path == NULL || *path == '\0') {
        errno = EINVAL;
        return -1;
    }
    /* Both forms use one byte besides the name: the NUL after a path, the
     * NUL in front of an abstract name. */
    len = path[0] == '@' ? strlen(path + 1) : strlen(path);
    if (len + 1 > room) {
        errno = ENAMETOOLONG;
        return -1;
    }
    a->u.un.sun_family = AF_UNIX;
    if (path[0] == '@') {
        memcpy(a->u.un.sun_path + 1, path + 1, len);
    } else {
        memcpy(a->u.un.sun_path, path, len);
    }
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    return 0;
}

/*
 * The port of an AF_INET or AF_INET6 address.  Returns it (0..65535), or -1
 * with errno EINVAL (NULL) or EAFNOSUPPORT (any other family, or empty).
 */
int usock_addr_port(const usock_addr_t *a)
{
    if (a == NULL) {
        errno = EINVAL;
        return -1;
    }
    switch (a->u.sa.sa_family) {
    case AF_INET:
        return ntohs(a->u.in4.sin_port);
    case AF_INET6:
        return ntohs(a->u.in6.sin6_port);
    default:
        errno = EAFNOSUPPORT;
        return -1;
    }
}

/* "1.2.3.4:80" into out (FORMAT_MAX bytes). */
static int format_in4(const usock_addr_t *a, char *out)
{
    char host[INET_ADDRSTRLEN];

    if (a->len < sizeof a->u.in4 ||
        inet_ntop(AF_INET, &a->u.in4.sin_addr, host, sizeof host) == NULL) {
        return -1;
    }
    snprintf(out, FORMAT_MAX, "%s:%d", host, ntohs(a->u.in4.sin_port));
    return 0;
}

/* "[::1]:80" or "[fe80::1%lo]:80" into out (FORMAT_MAX bytes). */
static int format_in6(const usock_addr_t *a, char *out)
{
    const struct sockaddr_in6 *in6 = &a->u.in6;
    char host[INET6_ADDRSTRLEN];
    char scope[IF_NAMESIZE + 12] = "";
    char ifname[IF_NAMESIZE];

    if (a->len < sizeof *in6 ||
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host) == NULL) {
        return -1;
    }
    if (in6->sin6_scope_id != 0) {
        if (if_indextoname(in6->sin6_scope_id, ifname) != NULL) {
            snprintf(scope, sizeof scope, "%%%s", ifname);
        } else {
            snprintf(scope, sizeof scope, "%%%u",
                     (unsigned int)in6->sin6_scope_id);
        }
    }
    snprintf(out, FORMAT_MAX, "[%s%s]:%d", host, scope, ntohs(in6->sin6_port));
    return 0;
}

/*
 * A path as is, "@name" for an abstract name, "" for an unnamed socket
 * (len == offsetof(sun_path), as getsockname gives for an unbound one).
 * The name is read only within len, and ends at its first NUL byte.
 */
static int format_un(const usock_addr_t *a, char *out)
{
    size_t base = offsetof(struct sockaddr_un, sun_path);
    size_t n;

    if (a->len < base) {
        return -1;
    }
    n = a->len - base;
    if (n > sizeof a->u.un.sun_path) {
        n = sizeof a->u.un.sun_path;
    }
    if (n > 0 && a->u.un.sun_path[0] == '\0') {
        out[0] = '@';
        n = strnlen(a->u.un.sun_path + 1, n - 1);
        memcpy(out + 1, a->u.un.sun_path + 1, n);
        out[n + 1] = '\0';
        return 0;
    }
    n = strnlen(a->u.un.sun_path, n);
    memcpy(out, a->u.un.sun_path, n);
    out[n] = '\0';
    return 0;
}

/*
 * Format `a` into buf (n bytes): "1.2.3.4:80", "[::1]:80", "[fe80::1%lo]:80"
 * (the scope as an interface name when it still exists, else its number), a
 * path as is, or "@name".  Returns buf, or NULL with errno EINVAL (NULL
 * argument, an empty address, an unknown family or a len too short for its
 * family) or ENOSPC (n too small; when n > 0, buf then holds the
 * NUL-terminated prefix that fits).
 */
const char *usock_addr_format(const usock_addr_t *a, char *buf, size_t n)
{
    char out[FORMAT_MAX];
    size_t len;
    int rc = -1;

    if (buf == NULL) {
        errno = EINVAL;
        return NULL;
    }
    if (n > 0) {
        buf[0] = '\0';
    }
    if (a != NULL && a->len > 0 && a->len <= sizeof a->u) {
        switch (a->u.sa.sa_family) {
        case AF_INET:
            rc = format_in4(a, out);
            break;
        case AF_INET6:
            rc = format_in6(a, out);
            break;
        case AF_UNIX:
            rc = format_un(a, out);
            break;
        }
    }
    if (rc < 0) {
        errno = EINVAL;
        return NULL;
    }
    len = strlen(out);
    if (len >= n) {
        if (n > 0) {
            memcpy(buf, out, n - 1);
            buf[n - 1] = '\0';
        }
        errno = ENOSPC;
        return NULL;
    }
    memcpy(buf, out, len + 1);
    return buf;
}

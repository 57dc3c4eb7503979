/*
 * Socket options and names.  Timeouts are in deadline.c.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "internal.h"

int usock_setsockopt(usock_t *s, int level, int opt, const void *v,
                     socklen_t len)
{
    if (!s || (!v && len)) {
        return usock__fail(EINVAL);
    }
    if (usock__closed(s)) {
        return -1;
    }
    return setsockopt(s->fd, level, opt, v, len);
}

int usock_getsockopt(usock_t *s, int level, int opt, void *v, socklen_t *len)
{
    if (!s || !v || !len) {
        return usock__fail(EINVAL);
    }
    if (usock__closed(s)) {
        return -1;
    }
    return getsockopt(s->fd, level, opt, v, len);
}

int usock_setsockopt_int(usock_t *s, int level, int opt, int v)
{
    return usock_setsockopt(s, level, opt, &v, sizeof(v));
}

/* Fill a from getsockname(2)/getpeername(2). */
static int get_name(usock_t *s, usock_addr_t *a,
                    int (*fn)(int, struct sockaddr *, socklen_t *))
{
    if (!s || !a) {
        return usock__fail(EINVAL);
    }
    if (usock__closed(s)) {
        return -1;
    }
    memset(a, 0, sizeof(*a));
    a->len = sizeof(a->u);
    if (fn(s->fd, &a->u.sa, &a->len) < 0) {
        a->len = 0;
        return -1;
    }
    return 0;
}

int usock_getpeername(usock_t *s, usock_addr_t *a)
{
    return get_name(s, a, getpeername);
}

int usock_getsockname(usock_t *s, usock_addr_t *a)
{
    return get_name(s, a, getsockname);
}

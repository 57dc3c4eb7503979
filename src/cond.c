/*
 * Conditions: a FIFO of waiting tasks and threads, woken one at a time or
 * all at once.  No memory: a signal with nobody waiting is lost, as with
 * State Threads' st_cond and pthread condition variables.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "internal.h"
#include "waitq.h"

struct usock_cond {
    struct usock__sync s; /* first: destroy gets it back as the cond */
    struct usock__waitq q;
};

static void cond_destroy(struct usock__sync *o)
{
    free(o);
}

usock_cond_t *usock_cond_new(void)
{
    struct usock_cond *c = calloc(1, sizeof(*c));

    if (!c) {
        errno = ENOMEM;
        return NULL;
    }
    if (usock__sync_init(&c->s, cond_destroy) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

int usock_cond_wait(usock_cond_t *c, double timeout)
{
    int64_t ns = usock__sync_timeout(timeout), dl;
    struct usock__qwait w;
    int r;

    if (!c || ns == -2) {
        return usock__fail(EINVAL);
    }
    if ((r = usock__sync_may_wait(ns, &dl)) != 0) {
        return usock__fail(r);
    }
    pthread_mutex_lock(&c->s.lock);
    w.item = NULL;
    r = usock__sync_wait(&c->s, &c->q, &w, dl);
    return r ? usock__fail(r) : 0;
}

int usock_cond_signal(usock_cond_t *c)
{
    if (!c) {
        return usock__fail(EINVAL);
    }
    pthread_mutex_lock(&c->s.lock);
    usock__waitq_wake(&c->q, 0, NULL, NULL);
    pthread_mutex_unlock(&c->s.lock);
    return 0;
}

int usock_cond_broadcast(usock_cond_t *c)
{
    if (!c) {
        return usock__fail(EINVAL);
    }
    pthread_mutex_lock(&c->s.lock);
    while (usock__waitq_wake(&c->q, 0, NULL, NULL)) {
    }
    pthread_mutex_unlock(&c->s.lock);
    return 0;
}

void usock_cond_free(usock_cond_t *c)
{
    if (!c) {
        return;
    }
    pthread_mutex_lock(&c->s.lock);
    while (usock__waitq_wake(&c->q, EBADF, NULL, NULL)) {
    }
    pthread_mutex_unlock(&c->s.lock);
    usock__sync_unref(&c->s);
}

/*
 * Channels: a ring buffer of `capacity` fixed-size items, a FIFO of
 * blocked senders (only while the buffer is full) and one of blocked
 * receivers (only while it is empty), under one mutex.
 *
 *   struct usock_chan
 *   ┌──────────────────────────────┐
 *   │ s: lock, refs                │
 *   │ sendq ──▶ senders (item = what they send, on their stacks)
 *   │ recvq ──▶ receivers (item = where the item goes)
 *   │ ring: [head, head + count) mod capacity, item_size each
 *   │ closed                       │
 *   └──────────────────────────────┘
 *
 * A send that finds a receiver waiting copies its item straight into the
 * receiver's buffer; a receive that takes from a full buffer moves the
 * oldest blocked sender's item into the freed slot.  With capacity 0 items
 * only ever go from a sender to a receiver directly.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "waitq.h"

struct usock_chan {
    struct usock__sync s; /* first: destroy gets it back as the chan */
    struct usock__waitq sendq, recvq;
    size_t item_size, cap;
    size_t head, count;
    int closed;
    char *ring;
};

static void chan_destroy(struct usock__sync *o)
{
    free(o);
}

usock_chan_t *usock_chan_new(size_t item_size, size_t capacity)
{
    struct usock_chan *ch;

    if (item_size == 0) {
        errno = EINVAL;
        return NULL;
    }
    if (capacity > (SIZE_MAX - sizeof(*ch)) / item_size) {
        errno = ENOMEM;
        return NULL;
    }
    ch = calloc(1, sizeof(*ch) + item_size * capacity);
    if (!ch) {
        errno = ENOMEM;
        return NULL;
    }
    if (usock__sync_init(&ch->s, chan_destroy) < 0) {
        free(ch);
        return NULL;
    }
    ch->item_size = item_size;
    ch->cap = capacity;
    ch->ring = (char *)(ch + 1);
    return ch;
}

static char *slot(struct usock_chan *ch, size_t i)
{
    return ch->ring + ((ch->head + i) % ch->cap) * ch->item_size;
}

/* Fill functions for usock__waitq_wake: copy to a receiver, or from a
 * sender. */
static void give(struct usock__qwait *w, void *arg)
{
    struct usock_chan *ch = container_of(w->obj, struct usock_chan, s);
    memcpy(w->item, arg, ch->item_size);
}

static void take(struct usock__qwait *w, void *arg)
{
    struct usock_chan *ch = container_of(w->obj, struct usock_chan, s);
    memcpy(arg, w->item, ch->item_size);
}

int usock_chan_send(usock_chan_t *ch, const void *item, double timeout)
{
    int64_t ns = usock__sync_timeout(timeout), dl;
    struct usock__qwait w;
    int r;

    if (!ch || !item || ns == -2) {
        return usock__fail(EINVAL);
    }
    pthread_mutex_lock(&ch->s.lock);
    if (ch->closed) {
        r = EPIPE;
    } else if (usock__waitq_wake(&ch->recvq, 0, give, (void *)item)) {
        r = 0;
    } else if (ch->count < ch->cap) {
        memcpy(slot(ch, ch->count), item, ch->item_size);
        ch->count++;
        r = 0;
    } else if ((r = usock__sync_may_wait(ns, &dl)) == 0) {
        w.item = (void *)item;
        r = usock__sync_wait(&ch->s, &ch->sendq, &w, dl);
        return r ? usock__fail(r) : 0;
    }
    pthread_mutex_unlock(&ch->s.lock);
    return r ? usock__fail(r) : 0;
}

int usock_chan_recv(usock_chan_t *ch, void *item, double timeout)
{
    int64_t ns = usock__sync_timeout(timeout), dl;
    struct usock__qwait w;
    int r = 0;

    if (!ch || !item || ns == -2) {
        return usock__fail(EINVAL);
    }
    pthread_mutex_lock(&ch->s.lock);
    if (ch->count > 0) {
        memcpy(item, slot(ch, 0), ch->item_size);
        ch->head = (ch->head + 1) % ch->cap;
        ch->count--;
        /* A slot is free: the oldest blocked sender's item goes last. */
        if (usock__waitq_wake(&ch->sendq, 0, take, slot(ch, ch->count))) {
            ch->count++;
        }
    } else if (usock__waitq_wake(&ch->sendq, 0, take, item)) {
        r = 0; /* rendezvous */
    } else if (ch->closed) {
        r = EPIPE;
    } else if ((r = usock__sync_may_wait(ns, &dl)) == 0) {
        w.item = item;
        r = usock__sync_wait(&ch->s, &ch->recvq, &w, dl);
        return r ? usock__fail(r) : 0;
    }
    pthread_mutex_unlock(&ch->s.lock);
    return r ? usock__fail(r) : 0;
}

/* Wake every waiter of both queues with `result`. */
static void wake_all(struct usock_chan *ch, int result)
{
    while (usock__waitq_wake(&ch->sendq, result, NULL, NULL)) {
    }
    while (usock__waitq_wake(&ch->recvq, result, NULL, NULL)) {
    }
}

int usock_chan_close(usock_chan_t *ch)
{
    int r = 0;

    if (!ch) {
        return usock__fail(EINVAL);
    }
    pthread_mutex_lock(&ch->s.lock);
    if (ch->closed) {
        r = EPIPE;
    } else {
        ch->closed = 1;
        wake_all(ch, EPIPE);
    }
    pthread_mutex_unlock(&ch->s.lock);
    return r ? usock__fail(r) : 0;
}

size_t usock_chan_len(const usock_chan_t *ch)
{
    struct usock_chan *c = (struct usock_chan *)ch;
    size_t n;

    if (!c) {
        return 0;
    }
    pthread_mutex_lock(&c->s.lock);
    n = c->count;
    pthread_mutex_unlock(&c->s.lock);
    return n;
}

void usock_chan_free(usock_chan_t *ch)
{
    if (!ch) {
        return;
    }
    pthread_mutex_lock(&ch->s.lock);
    wake_all(ch, EBADF);
    pthread_mutex_unlock(&ch->s.lock);
    usock__sync_unref(&ch->s);
}

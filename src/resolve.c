/*
 * Name resolution that never stalls the hub.  Numeric hosts are converted
 * in place; every other name is resolved by getaddrinfo(3) on a worker
 * thread (glibc's resolver blocks and needs more stack than a task has)
 * while the calling task waits on its hub.  The worker hands the result
 * back through the hub's inbox; if the task gave up meanwhile (timeout,
 * deadline, cancel), the late result is freed there.  A hub whose thread
 * exits while workers still run stays allocated until the last of them is
 * done (usock__hub_job_done), and their results are freed by the workers.
 *
 *   task ──job──▶ queue ──▶ worker thread: getaddrinfo ──job_done──▶ hub
 *     ▲                                                               │
 *     └──────────── usock__wake(job->w, 0) ◀── done() ────────────────┘
 *
 * The workers are a bounded pool shared by every hub: at most WORKERS
 * threads, started when a job finds none idle, each leaving after IDLE_S
 * seconds without work; jobs beyond that wait in a FIFO queue.  A job
 * whose task gives up while it is still queued is taken out and freed at
 * once.  (c-ares would need no threads, but it is another dependency and
 * does not follow nsswitch.conf the way glibc's getaddrinfo does: files,
 * mdns, myhostname, NIS; a pool keeps glibc's answers and bounds the
 * threads.)
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* Test hook: called by the worker before getaddrinfo. */
USOCK__HIDDEN void (*usock__resolve_hook)(const char *host);

struct job {
    struct job *next;        /* in the queue */
    int queued;              /* in the queue, not yet taken by a worker */
    struct usock_hub *hub;
    struct usock__wait *w;   /* the waiting task's record; NULL: gave up */
    char *host;
    char port[8];
    struct addrinfo hints;
    struct addrinfo *res;
    int rc, err;
};

static void job_free(struct job *j)
{
    if (j->res) {
        freeaddrinfo(j->res);
    }
    free(j->host);
    free(j);
}

/* On the hub: the worker is done. */
static void done(void *arg)
{
    struct job *j = arg;

    if (j->w) {
        usock__wake(j->w, 0);
    } else {
        job_free(j);
    }
}

/* The pool (under pool.lock). */
#define WORKERS 16
#define IDLE_S 5
static struct {
    pthread_mutex_t lock;
    pthread_cond_t work;
    struct job *head, *tail; /* the queue, oldest first */
    int threads, idle;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL,
          0, 0};

/* Test hook: the most workers there ever were at once. */
USOCK__HIDDEN int usock__resolve_peak;

static void run_job(struct job *j)
{
    void (*hook)(const char *) =
        __atomic_load_n(&usock__resolve_hook, __ATOMIC_ACQUIRE);
    if (hook) {
        hook(j->host);
    }
    j->rc = getaddrinfo(j->host, j->port, &j->hints, &j->res);
    j->err = errno;
    int r;
    while ((r = usock__hub_job_done(j->hub, done, j)) < 0) {
        /* Out of memory for the message: try again shortly. */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (r > 0) {
        /* The hub's thread has exited (and with it the waiting task). */
        job_free(j);
    }
}

static void *worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        struct job *j = pool.head;
        if (j == NULL) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += IDLE_S;
            pool.idle++;
            int rc = pthread_cond_timedwait(&pool.work, &pool.lock, &until);
            pool.idle--;
            if (rc == ETIMEDOUT && pool.head == NULL) {
                break;
            }
            continue;
        }
        pool.head = j->next;
        if (pool.head == NULL) {
            pool.tail = NULL;
        }
        j->queued = 0;
        pthread_mutex_unlock(&pool.lock);
        run_job(j);
        pthread_mutex_lock(&pool.lock);
    }
    pool.threads--;
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

/* Queue j and make sure a worker will take it.  0, or an errno value
 * (when no worker exists and none could be started; j is not queued). */
static int submit(struct job *j)
{
    int rc = 0;

    pthread_mutex_lock(&pool.lock);
    j->next = NULL;
    j->queued = 1;
    if (pool.tail) {
        pool.tail->next = j;
    } else {
        pool.head = j;
    }
    pool.tail = j;
    if (pool.idle == 0 && pool.threads < WORKERS) {
        pthread_attr_t attr;
        pthread_t tid;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&tid, &attr, worker, NULL);
        pthread_attr_destroy(&attr);
        if (rc == 0) {
            pool.threads++;
            if (pool.threads > usock__resolve_peak) {
                usock__resolve_peak = pool.threads;
            }
        } else if (pool.threads > 0) {
            rc = 0; /* the workers there are will get to it */
        }
    } else {
        pthread_cond_signal(&pool.work);
    }
    if (rc != 0) {
        /* No worker at all, so the queue held only j: take it out. */
        pool.head = pool.tail = NULL;
        j->queued = 0;
    }
    pthread_mutex_unlock(&pool.lock);
    return rc;
}

/* The task gave up (timeout, cancel, its thread's exit): a job still
 * queued is taken out and freed now; one a worker runs is freed by
 * done() or by the worker. */
static void job_unlink(struct usock__wait *w)
{
    struct job *j = w->owner;
    int taken = 0;

    j->w = NULL;
    pthread_mutex_lock(&pool.lock);
    if (j->queued) {
        struct job **p = &pool.head, *prev = NULL;
        while (*p != j) {
            prev = *p;
            p = &(*p)->next;
        }
        *p = j->next;
        if (pool.tail == j) {
            pool.tail = prev;
        }
        j->queued = 0;
        taken = 1;
    }
    pthread_mutex_unlock(&pool.lock);
    if (taken) {
        usock__hub_job_cancel(j->hub);
        job_free(j);
    }
}

void usock__resolve_fork(int phase)
{
    if (phase == 0) {
        pthread_mutex_lock(&pool.lock);
    } else if (phase == 1) {
        pthread_mutex_unlock(&pool.lock);
    } else {
        /* The child: no workers; the queued jobs were the parent's. */
        pthread_mutex_init(&pool.lock, NULL);
        pthread_cond_init(&pool.work, NULL);
        pool.head = pool.tail = NULL;
        pool.threads = pool.idle = 0;
    }
}

/* Convert a getaddrinfo list.  0, or EAI_MEMORY. */
static int convert(const struct addrinfo *ai, usock_addrinfo_t **res)
{
    usock_addrinfo_t **tail = res;

    *res = NULL;
    for (; ai; ai = ai->ai_next) {
        usock_addrinfo_t *r = usock__calloc(1, sizeof(*r));
        if (!r || ai->ai_addrlen > sizeof(r->addr.u)) {
            free(r);
            goto fail;
        }
        r->family = ai->ai_family;
        r->type = ai->ai_socktype;
        r->proto = ai->ai_protocol;
        r->canonname = strdup(ai->ai_canonname ? ai->ai_canonname : "");
        memcpy(&r->addr.u, ai->ai_addr, ai->ai_addrlen);
        r->addr.len = ai->ai_addrlen;
        *tail = r;
        tail = &r->next;
        if (!r->canonname) {
            goto fail;
        }
    }
    return 0;
fail:
    usock_freeaddrinfo(*res);
    *res = NULL;
    return EAI_MEMORY;
}

/* Run the job on a worker while the task waits (the job is freed here or
 * by whoever ends it).  0, or an EAI_* code. */
static int resolve_off_hub(struct job *j, usock_addrinfo_t **res)
{
    struct usock_hub *h = usock__hub_get();
    struct usock__wait w = {.unlink = job_unlink, .owner = j};
    int rc;

    if (!h || usock__hub_reactor(h) < 0) {
        job_free(j);
        return EAI_SYSTEM;
    }
    j->hub = h;
    /* The record is unlinked (by done() or the waker) before we return. */
    /* cppcheck-suppress autoVariables */
    j->w = &w;
    usock__hub_job_start(h);
    rc = submit(j);
    if (rc != 0) {
        usock__hub_job_cancel(h);
        job_free(j);
        errno = rc;
        return EAI_SYSTEM;
    }
    rc = usock__park(h, &w, usock__deadline(-1));
    if (rc != 0) {
        errno = rc; /* the worker's late result is freed by done() */
        return EAI_SYSTEM;
    }
    rc = j->rc;
    if (rc == 0) {
        rc = convert(j->res, res);
    } else if (rc == EAI_SYSTEM) {
        errno = j->err;
    }
    job_free(j);
    return rc;
}

/* A numeric host (or none) needs no resolver: 1 if handled, with *rc. */
static int numeric(struct job *j, usock_addrinfo_t **res, int *rc)
{
    struct addrinfo ai = j->hints;
    unsigned char raw[sizeof(struct in6_addr)];
    usock_addr_t a;
    const char *ip = j->host;

    if (!ip) {
        ip = (j->hints.ai_flags & AI_PASSIVE)
                 ? (j->hints.ai_family == AF_INET6 ? "::" : "0.0.0.0")
                 : (j->hints.ai_family == AF_INET6 ? "::1" : "127.0.0.1");
    }
    if (inet_pton(AF_INET, ip, raw) != 1 && inet_pton(AF_INET6, ip, raw) != 1) {
        return 0;
    }
    if (usock_addr_ip(&a, ip, atoi(j->port)) < 0 ||
        (j->hints.ai_family && j->hints.ai_family != a.u.sa.sa_family)) {
        *rc = EAI_ADDRFAMILY;
        return 1;
    }
    ai.ai_family = a.u.sa.sa_family;
    ai.ai_addr = &a.u.sa;
    ai.ai_addrlen = a.len;
    ai.ai_canonname = NULL;
    ai.ai_next = NULL;
    struct addrinfo types[3] = {ai, ai, ai};
    int st[3] = {SOCK_STREAM, SOCK_DGRAM, SOCK_RAW};
    int pr[3] = {IPPROTO_TCP, IPPROTO_UDP, 0};
    size_t k = 0;
    for (size_t i = 0; i < 3; i++) {
        if (!j->hints.ai_socktype || j->hints.ai_socktype == st[i]) {
            types[k] = ai;
            types[k].ai_socktype = st[i];
            types[k].ai_protocol = j->hints.ai_protocol ? j->hints.ai_protocol : pr[i];
            if (k) {
                types[k - 1].ai_next = &types[k];
            }
            k++;
        }
    }
    *rc = k ? convert(types, res) : EAI_SOCKTYPE;
    return 1;
}

int usock_getaddrinfo(const char *host, int port, int family, int type,
                      int flags, usock_addrinfo_t **res)
{
    struct job *j;
    int rc;

    if (!res) {
        errno = EINVAL;
        return EAI_SYSTEM;
    }
    *res = NULL;
    if (port < 0 || port > 65535) {
        return EAI_SERVICE;
    }
    if (host && strlen(host) > 1024) {
        return EAI_NONAME;
    }
    if (usock__cancelled()) {
        errno = ECANCELED;
        return EAI_SYSTEM;
    }
    j = usock__calloc(1, sizeof(*j));
    if (!j || (host && !(j->host = strdup(host)))) {
        free(j);
        return EAI_MEMORY;
    }
    snprintf(j->port, sizeof(j->port), "%d", port);
    j->hints.ai_family = family;
    j->hints.ai_socktype = type;
    j->hints.ai_flags = flags | AI_NUMERICSERV;
    if (numeric(j, res, &rc)) {
        job_free(j);
        return rc;
    }
    if (flags & AI_NUMERICHOST) {
        job_free(j);
        return EAI_NONAME;
    }
    return resolve_off_hub(j, res);
}

void usock_freeaddrinfo(usock_addrinfo_t *res)
{
    while (res) {
        usock_addrinfo_t *next = res->next;
        free(res->canonname);
        free(res);
        res = next;
    }
}

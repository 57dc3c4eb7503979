/*
 * Suite "load": the load and size rows of RELIABILITY.md (L02, L05, L06,
 * L08, L09, S01, S04, C04), one case per row, each on every reactor, with
 * the row's expected behaviour asserted.  Sizes are scaled for make check
 * (the full sizes of L01, L02, L04, L07, L08 and L09 are bench/soak's);
 * each case prints what it measured, and what it scaled.  Under valgrind
 * the largest cases are scaled down further (the case says so) and memory
 * is counted as the heap in use (valgrind's mallinfo), since the process's resident
 * set is then valgrind's own.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <linux/sockios.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <usocket.h>

#include "helpers.h"
#include "internal.h"

#ifdef USOCK__ASAN
void __sanitizer_purge_allocator(void); /* <sanitizer/allocator_interface.h>, not installed by Debian gcc */
#endif

/* The most one socket's own read buffer holds (src/stream.c RB_MAX,
 * usocket(7) "The read buffer's bound"). */
#define RB_BOUND 65536

#define MIB (1024.0 * 1024.0)

/* ---- shared helpers ------------------------------------------------------ */

static const char *reactor(void)
{
    const char *r = getenv("USOCKET_REACTOR");
    return r != NULL ? r : "?";
}

/* n, or n_vg under valgrind or ThreadSanitizer (said on stdout).  TSan
 * counts each task as a thread (fibers) and dies past 8,128 of them. */
static long scaled(const char *row, long n, long n_vg)
{
    const char *why = test_under_valgrind() ? "valgrind" : NULL;

#ifdef USOCK__TSAN
    why = "ThreadSanitizer (at most 8128 fibers)";
    n_vg = n_vg > 4000 ? 4000 : n_vg;
#endif
    if (why == NULL) {
        return n;
    }
    printf("%s [%s]: scaled from %ld to %ld under %s\n", row, reactor(), n,
           n_vg, why);
    return n_vg;
}

/* 1 when the row's memory bound is checked here; else 0, with the reason
 * printed: ASan's quarantine keeps freed blocks (up to 256 MiB) out of
 * reuse, and TSan's shadow and per-fiber state grow the resident set with
 * every byte the program touches.  The fd counts and the library's own
 * figures are still checked; the bounds hold in the plain and valgrind
 * runs. */
static int mem_checked(const char *row, int under_asan)
{
    const char *why = NULL;

#ifdef USOCK__ASAN
    if (under_asan) {
        why = "ASan (quarantine)";
    }
#else
    (void)under_asan;
#endif
#ifdef USOCK__TSAN
    why = "ThreadSanitizer (shadow memory)";
#endif
    if (why != NULL) {
        printf("%s [%s]: memory bound not checked under %s\n", row,
               reactor(), why);
    }
    return why == NULL;
}

/* Open fds of the process, from /proc/self/fd. */
static int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    const struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n - 1; /* the directory's own fd */
}

/* Memory held by the process, in bytes: its resident set, or under
 * valgrind the heap in use (valgrind's resident set is its own).  Under
 * ASan the allocator's quarantine and caches are given back first. */
static long mem_now(void)
{
    long pages = 0, size;
    FILE *f;

#ifdef USOCK__ASAN
    __sanitizer_purge_allocator();
#endif
    if (test_under_valgrind()) {
        /* valgrind answers mallinfo (not mallinfo2) with its own heap. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        struct mallinfo mi = mallinfo();
#pragma GCC diagnostic pop
        return (long)(unsigned)mi.uordblks + (long)(unsigned)mi.hblkhd;
    }
    f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%ld %ld", &size, &pages), 2);
    fclose(f);
    return pages * sysconf(_SC_PAGESIZE);
}

static const char *mem_name(void)
{
    return test_under_valgrind() ? "heap" : "rss";
}

/* xorshift64*: the same sequence every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

/* Uniform in [lo, hi). */
static double rng_between(double lo, double hi)
{
    return lo + (hi - lo) * (double)(rng() >> 11) / 9007199254740992.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A loopback TCP listener (not in the helpers' registry), backlog `n`,
 * with SO_RCVBUF `rcvbuf` when it is above 0 (the accepted sockets
 * inherit it). */
static usock_t *listener(int n, int rcvbuf, usock_addr_t *a)
{
    usock_t *l = ck_assert_nonnull((usock_socket)(AF_INET, SOCK_STREAM, 0));

    ck_assert_ok(usock_addr_ip(a, "127.0.0.1", 0));
    if (rcvbuf > 0) {
        ck_assert_ok(usock_setsockopt_int(l, SOL_SOCKET, SO_RCVBUF, rcvbuf));
    }
    ck_assert_ok(usock_bind(l, a));
    ck_assert_ok(usock_listen(l, n));
    ck_assert_ok(usock_getsockname(l, a));
    return l;
}

/* n connected pairs through l: c[i] connected to s[i] (accepted), both
 * blocking with a 10 s timeout for the setup; SO_SNDBUF `sndbuf` on the
 * connecting side when above 0. */
static void pairs(usock_t *l, const usock_addr_t *a, int n, int sndbuf,
                  usock_t **c, usock_t **s)
{
    ck_assert_ok(usock_settimeout(l, 10.0));
    for (int i = 0; i < n; i++) {
        c[i] = (usock_socket)(AF_INET, SOCK_STREAM, 0);
        ck_assert_msg(c[i] != NULL, "socket %d: %s", i, test_errname(errno));
        if (sndbuf > 0) {
            ck_assert_ok(
                usock_setsockopt_int(c[i], SOL_SOCKET, SO_SNDBUF, sndbuf));
        }
        ck_assert_ok(usock_settimeout(c[i], 10.0));
        ck_assert_msg(usock_connect(c[i], a) == 0, "connect %d: %s", i,
                      test_errname(errno));
        s[i] = (usock_accept)(l, NULL);
        ck_assert_msg(s[i] != NULL, "accept %d: %s", i, test_errname(errno));
    }
}

static void close_all(usock_t **v, int n)
{
    for (int i = 0; i < n; i++) {
        ck_assert_ok((usock_close)(v[i]));
    }
}

/* ---- L02: connect/close churn ------------------------------------------- */

/* Clients connect, wait for the server's close (end of stream), close;
 * the acceptor accepts and closes at once, so the server side takes the
 * TIME_WAIT and the clients' ephemeral ports are free again. */
struct churn {
    usock_addr_t addr;
    usock_t *l;
    int per_client, total;
    int errors, first_err, accepted;
};

static void churn_note(struct churn *c, int e)
{
    if (c->errors++ == 0) {
        c->first_err = e;
    }
}

static void churn_client(void *arg)
{
    struct churn *c = arg;
    char b;

    for (int i = 0; i < c->per_client; i++) {
        usock_t *s = (usock_socket)(AF_INET, SOCK_STREAM, 0);

        if (s == NULL) {
            churn_note(c, errno);
            continue;
        }
        if (usock_settimeout(s, 10.0) != 0 || usock_connect(s, &c->addr) != 0) {
            churn_note(c, errno);
        } else if (usock_recv(s, &b, 1) != 0) {
            churn_note(c, errno != 0 ? errno : -1);
        }
        (usock_close)(s);
    }
}

static void churn_acceptor(void *arg)
{
    struct churn *c = arg;

    for (int i = 0; i < c->total; i++) {
        usock_t *s = (usock_accept)(c->l, NULL);

        if (s == NULL) {
            churn_note(c, errno);
            return;
        }
        c->accepted++;
        (usock_close)(s);
    }
}

/* `cycles` connect/close cycles, `par` clients in parallel. */
static void churn(struct churn *c, int cycles, int par)
{
    c->per_client = cycles / par;
    c->total = c->per_client * par;
    c->errors = c->accepted = 0;
    ck_assert_int_gt(usock_spawn(churn_acceptor, c), 0);
    for (int i = 0; i < par; i++) {
        ck_assert_int_gt(usock_spawn(churn_client, c), 0);
    }
    ck_assert_ok(usock_run());
    ck_assert_msg(c->errors == 0, "%d failed cycles; the first: %s",
                  c->errors, test_errname(c->first_err));
    ck_assert_int_eq(c->accepted, c->total);
}

START_TEST(l02_churn)
{
    enum { PAR = 100 };
    long cycles = scaled("L02", 20000, 2000);
    struct churn c = {0};
    long mem0, mem1;
    int fd_start, fd0, fd1;
    double t0;

    c.l = listener(1024, 0, &c.addr);
    fd_start = fd_count();
    ck_assert_ok(usock_settimeout(c.l, 10.0 * test_mult()));
    /* A warm-up round makes what a churn keeps for good (the task
     * stacks, the reactor's tables): the baseline is after it. */
    churn(&c, 2000, PAR);
    fd0 = fd_count();
    mem0 = mem_now();
    t0 = usock_now();
    churn(&c, (int)cycles, PAR);
    t0 = usock_now() - t0;
    fd1 = fd_count();
    mem1 = mem_now();
    printf("L02 [%s]: %d cycles, %d in parallel, %.2f s (%.0f/s); fds %d "
           "before, %d after the warm-up, %d after; %s %+.3f MiB\n",
           reactor(), c.total, PAR, t0, c.total / t0, fd_start, fd0, fd1,
           mem_name(), (mem1 - mem0) / MIB);
    ck_assert_int_eq(fd0, fd_start);
    ck_assert_int_eq(fd1, fd_start);
    if (mem_checked("L02", 1)) {
        ck_assert_msg(mem1 - mem0 < 1024 * 1024, "%s grew by %ld bytes",
                      mem_name(), mem1 - mem0);
    }
    ck_assert_ok((usock_close)(c.l));
}
END_TEST

/* ---- L05: UDP flood against a 10 ms ticker ------------------------------- */

struct flood {
    int port;
    double secs;
    int go, stop;        /* the sender started; it finished (atomics) */
    long sent;
    long received;
    int recv_done;
    int ticks;           /* ticks measured while the flood ran */
    double max_gap;
};

/* A plain thread sending 64-byte datagrams as fast as it can. */
static void *flood_sender(void *arg)
{
    struct flood *f = arg;
    struct sockaddr_in to = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)f->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char buf[64] = "flood";
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    double end;

    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
        __atomic_store_n(&f->stop, 1, __ATOMIC_SEQ_CST);
        return NULL;
    }
    end = usock_now() + f->secs;
    __atomic_store_n(&f->go, 1, __ATOMIC_SEQ_CST);
    while (usock_now() < end) {
        for (int i = 0; i < 64; i++) {
            f->sent += send(fd, buf, sizeof buf, 0) > 0;
        }
    }
    __atomic_store_n(&f->stop, 1, __ATOMIC_SEQ_CST);
    close(fd);
    return NULL;
}

struct flood_rx {
    struct flood *f;
    usock_t *s;
};

static void flood_receiver(void *arg)
{
    struct flood_rx *rx = arg;
    char buf[2048];
    usock_addr_t from;

    /* Until the sender is done and the queue is empty for 0.3 s. */
    for (;;) {
        ssize_t n = usock_recvfrom(rx->s, buf, sizeof buf, &from);

        if (n > 0) {
            rx->f->received++;
        } else if (__atomic_load_n(&rx->f->stop, __ATOMIC_SEQ_CST)) {
            break;
        }
    }
    rx->f->recv_done = 1;
}

static void ticker(void *arg)
{
    struct flood *f = arg;
    double last = usock_now();
    int was_on = 0;

    while (!f->recv_done) {
        usock_sleep(0.010);
        double now = usock_now();
        int on = __atomic_load_n(&f->go, __ATOMIC_SEQ_CST) &&
                 !__atomic_load_n(&f->stop, __ATOMIC_SEQ_CST);
        /* A gap counts when the flood ran at both of its ends. */
        if (was_on && on) {
            f->ticks++;
            if (now - last > f->max_gap) {
                f->max_gap = now - last;
            }
        }
        was_on = on;
        last = now;
    }
}

START_TEST(l05_udp_flood)
{
    static struct flood f;
    struct flood_rx rx;
    usock_addr_t a;
    pthread_t th;
    double bound = 0.050 * test_mult();

    f = (struct flood){.secs = 1.0};
    rx.f = &f;
    rx.s = ck_assert_nonnull(usock_socket(AF_INET, SOCK_DGRAM, 0));
    ck_assert_ok(usock_addr_ip(&a, "127.0.0.1", 0));
    ck_assert_ok(usock_bind(rx.s, &a));
    ck_assert_ok(usock_getsockname(rx.s, &a));
    ck_assert_ok(usock_settimeout(rx.s, 0.3));
    f.port = usock_addr_port(&a);
    ck_assert_int_gt(usock_spawn(ticker, &f), 0);
    ck_assert_int_gt(usock_spawn(flood_receiver, &rx), 0);
    ck_assert_int_eq(pthread_create(&th, NULL, flood_sender, &f), 0);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    printf("L05 [%s]: %ld datagrams sent in %.1f s, %ld received; %d ticks "
           "of 10 ms during the flood, largest gap %.1f ms (bound %.0f ms)\n",
           reactor(), f.sent, f.secs, f.received, f.ticks, f.max_gap * 1e3,
           bound * 1e3);
    ck_assert_int_gt(f.sent, 0);
    ck_assert_int_gt(f.received, 0);
    /* The ticker ran during the flood, at least a tenth of its ticks. */
    ck_assert_int_ge(f.ticks, (int)(f.secs / 0.010 / 10 / test_mult()));
    ck_assert_msg(f.max_gap <= bound, "largest ticker gap %.1f ms > %.0f ms",
                  f.max_gap * 1e3, bound * 1e3);
    ck_assert_ok(usock_close(rx.s));
}
END_TEST

/* ---- L06: TCP fairness -------------------------------------------------- */

#define L06_CLIENTS 100
#define L06_MSG 32
#define L06_MAX_SAMPLES 256

struct fair {
    usock_addr_t echo_addr, bulk_addr;
    double secs;
    int bulk_on;         /* the bulk sender is sending (atomic) */
    int bulk_err;
    long long bulk_sent, bulk_received;
    int client_err, client_first_err;
    int nsamples[L06_CLIENTS];
    double samples[L06_CLIENTS][L06_MAX_SAMPLES];
};

/* A plain thread sending 64 KiB writes as fast as it can for f->secs. */
static void *bulk_sender(void *arg)
{
    struct fair *f = arg;
    static char chunk[1 << 16];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    double end;

    if (fd < 0 || connect(fd, &f->bulk_addr.u.sa, f->bulk_addr.len) != 0) {
        __atomic_store_n(&f->bulk_err, errno, __ATOMIC_SEQ_CST);
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    end = usock_now() + f->secs;
    __atomic_store_n(&f->bulk_on, 1, __ATOMIC_SEQ_CST);
    while (usock_now() < end) {
        ssize_t n = send(fd, chunk, sizeof chunk, MSG_NOSIGNAL);
        if (n < 0) {
            __atomic_store_n(&f->bulk_err, errno, __ATOMIC_SEQ_CST);
            break;
        }
        f->bulk_sent += n;
    }
    __atomic_store_n(&f->bulk_on, 0, __ATOMIC_SEQ_CST);
    close(fd);
    return NULL;
}

/* Server side: drain the bulk connection; echo the slow ones. */
struct drain {
    usock_t *s;
    long long got;
};

static void drain_task(void *arg)
{
    static char buf[1 << 16];
    struct drain *d = arg;
    ssize_t n;

    while ((n = usock_recv(d->s, buf, sizeof buf)) > 0) {
        d->got += n;
    }
}

static void echo_task(void *arg)
{
    usock_t *s = arg;
    char buf[256];
    ssize_t n;

    while ((n = usock_recv(s, buf, sizeof buf)) > 0) {
        if (usock_sendall(s, buf, (size_t)n) != 0) {
            break;
        }
    }
}

struct slow_client {
    struct fair *f;
    int i;
};

static void slow_client_task(void *arg)
{
    struct slow_client *sc = arg;
    struct fair *f = sc->f;
    char out[L06_MSG], in[L06_MSG];
    usock_t *s = (usock_socket)(AF_INET, SOCK_STREAM, 0);
    double end;
    int e = 0;

    if (s == NULL) {
        e = errno;
        goto out;
    }
    usock_setsockopt_int(s, IPPROTO_TCP, TCP_NODELAY, 1);
    usock_settimeout(s, 10.0);
    if (usock_connect(s, &f->echo_addr) != 0) {
        e = errno;
        goto out;
    }
    /* Until the bulk sender starts, then for as long as it sends. */
    end = usock_now() + 10.0;
    while (!__atomic_load_n(&f->bulk_on, __ATOMIC_SEQ_CST) &&
           usock_now() < end &&
           __atomic_load_n(&f->bulk_err, __ATOMIC_SEQ_CST) == 0) {
        usock_sleep(0.002);
    }
    while (__atomic_load_n(&f->bulk_on, __ATOMIC_SEQ_CST)) {
        usock_sleep(rng_between(0.010, 0.050));
        memset(out, 'a' + sc->i % 26, sizeof out);
        double t0 = usock_now();
        if (usock_sendall(s, out, sizeof out) != 0 ||
            usock_read(s, in, sizeof in) != (ssize_t)sizeof in) {
            e = errno != 0 ? errno : -1;
            break;
        }
        double rtt = usock_now() - t0;
        if (memcmp(in, out, sizeof in) != 0) {
            e = -1;
            break;
        }
        if (__atomic_load_n(&f->bulk_on, __ATOMIC_SEQ_CST) &&
            f->nsamples[sc->i] < L06_MAX_SAMPLES) {
            f->samples[sc->i][f->nsamples[sc->i]++] = rtt;
        }
    }
out:
    if (e != 0 && __atomic_fetch_add(&f->client_err, 1, __ATOMIC_SEQ_CST) == 0) {
        f->client_first_err = e;
    }
    if (s != NULL) {
        (usock_close)(s);
    }
}

/* The slow clients' thread: its own hub, one task per client. */
static void *slow_clients(void *arg)
{
    struct fair *f = arg;
    static struct slow_client sc[L06_CLIENTS];

    for (int i = 0; i < L06_CLIENTS; i++) {
        sc[i] = (struct slow_client){f, i};
        if (usock_spawn(slow_client_task, &sc[i]) <= 0) {
            __atomic_fetch_add(&f->client_err, 1, __ATOMIC_SEQ_CST);
        }
    }
    usock_run();
    return NULL;
}

START_TEST(l06_tcp_fairness)
{
    static struct fair f;
    static double all[L06_CLIENTS * L06_MAX_SAMPLES];
    usock_t *echo[L06_CLIENTS];
    struct drain d = {0};
    pthread_t clients, bulk;
    double bound = 0.020 * test_mult();
    size_t n = 0;

    f = (struct fair){.secs = 2.0};
    usock_t *le = listener(256, 0, &f.echo_addr);
    usock_t *lb = listener(16, 0, &f.bulk_addr);
    ck_assert_ok(usock_settimeout(le, 10.0 * test_mult()));
    ck_assert_ok(usock_settimeout(lb, 10.0 * test_mult()));
    ck_assert_int_eq(pthread_create(&clients, NULL, slow_clients, &f), 0);
    for (int i = 0; i < L06_CLIENTS; i++) {
        echo[i] = (usock_accept)(le, NULL);
        ck_assert_msg(echo[i] != NULL, "accept %d: %s", i,
                      test_errname(errno));
        ck_assert_ok(usock_setsockopt_int(echo[i], IPPROTO_TCP, TCP_NODELAY,
                                          1));
        ck_assert_int_gt(usock_spawn(echo_task, echo[i]), 0);
    }
    ck_assert_int_eq(pthread_create(&bulk, NULL, bulk_sender, &f), 0);
    d.s = (usock_accept)(lb, NULL);
    ck_assert_msg(d.s != NULL, "accept bulk: %s", test_errname(errno));
    ck_assert_int_gt(usock_spawn(drain_task, &d), 0);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(pthread_join(bulk, NULL), 0);
    ck_assert_int_eq(pthread_join(clients, NULL), 0);
    close_all(echo, L06_CLIENTS);
    ck_assert_ok((usock_close)(d.s));
    ck_assert_ok((usock_close)(le));
    ck_assert_ok((usock_close)(lb));
    ck_assert_msg(f.bulk_err == 0, "bulk sender: %s",
                  test_errname(f.bulk_err));
    ck_assert_msg(f.client_err == 0, "%d slow clients failed; the first: %s",
                  f.client_err, test_errname(f.client_first_err));
    for (int i = 0; i < L06_CLIENTS; i++) {
        for (int j = 0; j < f.nsamples[i]; j++) {
            all[n++] = f.samples[i][j];
        }
    }
    ck_assert_uint_ge(n, L06_CLIENTS); /* about 40 each at 10-50 ms */
    qsort(all, n, sizeof all[0], cmp_double);
    double p50 = all[n / 2], p99 = all[(n * 99) / 100], mx = all[n - 1];
    printf("L06 [%s]: bulk %.0f MiB/s (%lld B) for %.1f s; %zu round trips "
           "of %d slow clients: p50 %.2f ms, p99 %.2f ms, max %.2f ms "
           "(bound p99 %.0f ms)\n",
           reactor(), d.got / MIB / f.secs, d.got, f.secs, n, L06_CLIENTS,
           p50 * 1e3, p99 * 1e3, mx * 1e3, bound * 1e3);
    ck_assert_int_eq(d.got, f.bulk_sent);
    ck_assert_msg(p99 <= bound, "slow clients' p99 %.2f ms > %.0f ms",
                  p99 * 1e3, bound * 1e3);
}
END_TEST

/* The mechanism behind L05 and L06, deterministic: a reader whose socket
 * always has data gives the other ready tasks a turn after at most 32
 * reads (src/io.c RECV_BURST), instead of reading until the kernel's
 * queue is empty.  (L06 above fails without it when the machine is
 * busy: p99 25-41 ms measured beside a valgrind run.) */
struct burst {
    usock_t *s;
    long queued, got;
    int flag, reads, reads_before_flag;
};

static void burst_reader(void *arg)
{
    struct burst *b = arg;
    char buf[512];

    b->reads_before_flag = -1;
    while (b->got < b->queued) {
        if (b->flag && b->reads_before_flag < 0) {
            b->reads_before_flag = b->reads;
        }
        ssize_t n = usock_recv(b->s, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        b->got += n;
        b->reads++;
    }
    if (b->reads_before_flag < 0) {
        b->reads_before_flag = b->reads; /* it read everything first */
    }
}

static void burst_flag(void *arg)
{
    ((struct burst *)arg)->flag = 1;
}

START_TEST(l06_bounded_reads)
{
    static char out[1 << 16];
    struct burst b = {0};
    usock_t *c;
    ssize_t k;

    ck_assert_ok(test_pair(&c, &b.s));
    ck_assert_ok(usock_settimeout(c, 0));
    k = usock_write(c, out, sizeof out); /* what the kernel takes at once */
    ck_assert_int_gt(k, 64 * 512);
    b.queued = k;
    ck_assert_ok(usock_settimeout(b.s, 5.0));
    ck_assert_int_gt(usock_spawn(burst_reader, &b), 0);
    ck_assert_int_gt(usock_spawn(burst_flag, &b), 0);
    ck_assert_ok(usock_run());
    printf("L06 [%s]: a reader with %ld bytes queued let another task run "
           "after %d reads of 512 B (of %d)\n",
           reactor(), b.queued, b.reads_before_flag, b.reads);
    ck_assert_int_eq(b.got, b.queued);
    ck_assert_int_le(b.reads_before_flag, 32);
    ck_assert_ok(usock_close(c));
    ck_assert_ok(usock_close(b.s));
}
END_TEST

/* ---- L08: timers at scale ------------------------------------------------ */

#define L08_MAX 100000

static double l08_dur[L08_MAX];   /* each task's sleep */
static double l08_t0[L08_MAX];    /* when it called usock_sleep */
static double l08_wake[L08_MAX];  /* when the sleep returned */
static int l08_seq[L08_MAX];      /* its place in the start order */
static double l08_started[L08_MAX + 1]; /* t0 by start order */
static int l08_woken[L08_MAX];    /* task indexes in wake-up order */
static int l08_nstarted, l08_nwoken, l08_failed, l08_first_err;
static long l08_n, l08_rss_peak;

static void l08_task(void *arg)
{
    int i = (int)(intptr_t)arg;
    int seq = l08_nstarted++;
    double t0 = usock_now();

    l08_seq[i] = seq;
    l08_started[seq] = t0;
    l08_t0[i] = t0;
    if (l08_nstarted == l08_n) {
        l08_rss_peak = mem_now(); /* every task is alive now */
    }
    if (usock_sleep(l08_dur[i]) != 0 && l08_failed++ == 0) {
        l08_first_err = errno;
    }
    l08_wake[i] = usock_now();
    l08_woken[l08_nwoken++] = i;
}

START_TEST(l08_timers)
{
    double span = 2.0, t0, maxlo = -1.0, late = 0.0, took;
    long mem0, bad_order = 0, early = 0, inversions = 0;
    int first_bad = -1;

    l08_n = scaled("L08", L08_MAX, 10000);
    for (long i = 0; i < l08_n; i++) {
        l08_dur[i] = rng_between(0.0, span);
    }
    mem0 = mem_now();
    t0 = usock_now();
    for (long i = 0; i < l08_n; i++) {
        ck_assert_int_gt(usock_spawn(l08_task, (void *)(intptr_t)i), 0);
    }
    ck_assert_ok(usock_run());
    took = usock_now() - t0;
    ck_assert_msg(l08_failed == 0, "%d sleeps failed; the first: %s",
                  l08_failed, test_errname(l08_first_err));
    ck_assert_int_eq(l08_nwoken, l08_n);
    /*
     * The library reads the clock for a task's deadline inside
     * usock_sleep: after the task's own t0 and before the next task
     * started (tasks run one at a time).  So task i's deadline lies in
     * [t0_i + d_i, t0_next + d_i].  None early: it woke at or after
     * t0_i + d_i (1 ns of slack for the rounding of the doubles).  In
     * order: no task woke after one whose whole interval lies above its
     * own (for the wake-up order, each task's upper end is at least the
     * largest lower end of those woken before it).
     */
    l08_started[l08_n] = 1e300; /* after the last: no bound */
    for (long k = 0; k < l08_n; k++) {
        int i = l08_woken[k];
        double lo = l08_t0[i] + l08_dur[i];
        double hi = l08_started[l08_seq[i] + 1] + l08_dur[i];

        if (l08_wake[i] < lo - 1e-9) {
            early++;
        }
        if (l08_wake[i] - lo > late) {
            late = l08_wake[i] - lo;
        }
        if (lo < maxlo) {
            inversions++; /* within the clock reads' window: allowed */
        }
        if (hi < maxlo && bad_order++ == 0) {
            first_bad = (int)k;
        }
        if (lo > maxlo) {
            maxlo = lo;
        }
    }
    printf("L08 [%s]: %ld tasks slept a random 0-%.0f s (the row's 10^6 and "
           "0-10 s are soak's): all fired in %.2f s, %ld early, %ld out of "
           "order (%ld within the clock reads' window), latest %.2f ms late; "
           "%s %+.1f MiB at the peak (%.1f KiB per task)\n",
           reactor(), l08_n, span, took, early, bad_order, inversions,
           late * 1e3, mem_name(), (l08_rss_peak - mem0) / MIB,
           (l08_rss_peak - mem0) / 1024.0 / (double)l08_n);
    ck_assert_msg(early == 0, "%ld tasks woke before their deadline", early);
    ck_assert_msg(bad_order == 0,
                  "%ld wake-ups out of deadline order, the first at %d",
                  bad_order, first_bad);
}
END_TEST

/* ---- L09: backpressure --------------------------------------------------- */

#define L09_MAX 1000
#define L09_BYTES (1 << 20)

struct l09 {
    usock_t *c, *s;
    double timeout;
    int use_write;       /* usock_write (the count) or usock_sendall */
    ssize_t rc;
    int err;
    double took;
};

static unsigned char l09_src[L09_BYTES];
static long l09_mem_mid;

static void l09_task(void *arg)
{
    struct l09 *x = arg;
    double t0 = usock_now();

    errno = 0;
    x->rc = x->use_write ? usock_write(x->c, l09_src, L09_BYTES)
                         : usock_sendall(x->c, l09_src, L09_BYTES);
    x->err = errno;
    x->took = usock_now() - t0;
}

/* Measures memory while every sender waits. */
static void l09_probe(void *arg)
{
    double half = *(const double *)arg / 2;

    usock_sleep(half);
    l09_mem_mid = mem_now();
}

/* Bytes of a connection in the kernel's queues: unsent or unacked on the
 * sending side, unread on the receiving one. */
static long queued(usock_t *c, usock_t *s)
{
    int out = 0, in = 0;

    ck_assert_ok(ioctl(usock_fileno(c), SIOCOUTQ, &out));
    ck_assert_ok(ioctl(usock_fileno(s), FIONREAD, &in));
    return (long)out + in;
}

START_TEST(l09_backpressure)
{
    static struct l09 x[L09_MAX];
    static usock_t *c[L09_MAX], *s[L09_MAX];
    double timeout = 1.0;
    long mem0, written = 0, sent_all = 0, bad_count = 0;
    int n = L09_MAX, not_timedout = 0, first = -1;
    double most = 0, least = 1e9;
    usock_addr_t a;
    usock_t *l;

    ck_assert_msg(raise_nofile(2 * L09_MAX + 64) == 0,
                  "cannot raise RLIMIT_NOFILE to %d", 2 * L09_MAX + 64);
    /* Small kernel buffers, so that 1 MB cannot fit in them. */
    l = listener(L09_MAX, 16384, &a);
    pairs(l, &a, n, 16384, c, s);
    memset(l09_src, 'x', sizeof l09_src);
    mem0 = mem_now();
    for (int i = 0; i < n; i++) {
        x[i] = (struct l09){.c = c[i], .s = s[i], .timeout = timeout,
                            .use_write = i & 1};
        ck_assert_ok(usock_settimeout(c[i], timeout));
        ck_assert_int_gt(usock_spawn(l09_task, &x[i]), 0);
    }
    ck_assert_int_gt(usock_spawn(l09_probe, &timeout), 0);
    ck_assert_ok(usock_run());
    for (int i = 0; i < n; i++) {
        long q = queued(c[i], s[i]);

        if (x[i].err != ETIMEDOUT ||
            (x[i].use_write ? x[i].rc <= 0 || x[i].rc >= L09_BYTES
                            : x[i].rc != -1)) {
            if (not_timedout++ == 0) {
                first = i;
            }
        }
        if (x[i].use_write) {
            written += x[i].rc > 0 ? x[i].rc : 0;
            bad_count += x[i].rc != q; /* the count is what went out */
        } else {
            sent_all += q;
        }
        most = x[i].took > most ? x[i].took : most;
        least = x[i].took < least ? x[i].took : least;
    }
    printf("L09 [%s]: %d connections (the row's 10k is soak's), peers never "
           "read, each sends 1 MiB with timeout %.1f s: %d not ETIMEDOUT; "
           "usock_write counts %.1f KiB on average (%ld not the bytes "
           "queued), sendall's queued %.1f KiB on average; calls took "
           "%.3f-%.3f s; %s %+.1f MiB while all waited (cap %d x 64 KiB = "
           "%.1f MiB)\n",
           reactor(), n, timeout, not_timedout, written / 1024.0 / (n / 2),
           bad_count, sent_all / 1024.0 / (n - n / 2), least, most,
           mem_name(), (l09_mem_mid - mem0) / MIB, n,
           (double)n * RB_BOUND / MIB);
    ck_assert_msg(not_timedout == 0,
                  "%d calls did not fail with ETIMEDOUT; the first (%d) "
                  "returned %zd %s",
                  not_timedout, first, first >= 0 ? x[first].rc : 0,
                  first >= 0 ? test_errname(x[first].err) : "");
    ck_assert_msg(bad_count == 0,
                  "%ld usock_write counts differ from the bytes queued",
                  bad_count);
    ck_assert_msg(least >= timeout - 1e-6 &&
                      most <= timeout + 1.0 * test_mult(),
                  "calls took %.3f-%.3f s for a timeout of %.1f s", least,
                  most, timeout);
    if (mem_checked("L09", 0)) {
        ck_assert_msg(l09_mem_mid - mem0 <= (long)n * RB_BOUND,
                      "%s grew by %ld bytes for %d connections", mem_name(),
                      l09_mem_mid - mem0, n);
    }
    close_all(c, n);
    close_all(s, n);
    ck_assert_ok((usock_close)(l));
}
END_TEST

/* ---- S01: 100 MB without a newline through readline ---------------------- */

#define S01_PATTERN (1 << 20)

static unsigned char s01_pat[S01_PATTERN];

struct s01_sender {
    usock_t *s;
    long total;
    int rc;
};

static void s01_send(void *arg)
{
    struct s01_sender *ss = arg;

    ss->rc = -1;
    for (long sent = 0; sent < ss->total;) {
        long k = ss->total - sent < S01_PATTERN ? ss->total - sent
                                                : S01_PATTERN;
        if (usock_sendall(ss->s, s01_pat, (size_t)k) != 0) {
            return;
        }
        sent += k;
    }
    ss->rc = usock_shutdown(ss->s, SHUT_WR);
}

/* buf[0..n) is the stream's bytes from offset `at`. */
static int s01_same(const char *buf, size_t n, long at)
{
    size_t off = (size_t)(at % S01_PATTERN);

    while (n > 0) {
        size_t k = S01_PATTERN - off < n ? S01_PATTERN - off : n;
        if (memcmp(buf, s01_pat + off, k) != 0) {
            return 0;
        }
        buf += k;
        n -= k;
        off = 0;
    }
    return 1;
}

START_TEST(s01_readline_no_newline)
{
    static char buf[RB_BOUND + 1];
    struct s01_sender ss;
    long total = scaled("S01", 100L * 1000 * 1000, 10L * 1000 * 1000);
    long got = 0, calls = 0;
    size_t maxcap = 0;
    usock_t *a, *b;
    double t0;
    int id;

    for (size_t i = 0; i < S01_PATTERN; i++) {
        unsigned char v = (unsigned char)(i * 31 + (i >> 12));
        s01_pat[i] = v == '\n' ? 'n' : v;
    }
    ck_assert_ok(test_pair(&a, &b));
    ss = (struct s01_sender){b, total, -2};
    id = usock_spawn(s01_send, &ss);
    ck_assert_int_gt(id, 0);
    t0 = usock_now();
    /* The first half with n = 4096, the rest with n = 65,537: the largest
     * buffer whose n - 1 the bound still holds. */
    for (;;) {
        size_t n = got < total / 2 ? 4096 : sizeof buf;
        ssize_t r = usock_readline(a, buf, n);

        ck_assert_msg(r >= 0, "readline: %s", test_errname(errno));
        maxcap = a->rb.cap > maxcap ? a->rb.cap : maxcap;
        ck_assert_msg(a->rb.cap <= RB_BOUND, "the socket's buffer is %zu B",
                      a->rb.cap);
        if (r == 0) {
            break;
        }
        calls++;
        if (got + r < total) {
            ck_assert_msg((size_t)r == n - 1, "call %ld returned %zd, not %zu",
                          calls, r, n - 1);
        } else {
            ck_assert_int_eq(got + r, total);
        }
        ck_assert_int_eq(buf[r], '\0');
        ck_assert_ptr_null(memchr(buf, '\n', (size_t)r));
        ck_assert_msg(s01_same(buf, (size_t)r, got), "bytes differ at %ld",
                      got);
        got += r;
    }
    t0 = usock_now() - t0;
    ck_assert_ok(usock_join(id, 10.0));
    ck_assert_int_eq(ss.rc, 0);
    printf("S01 [%s]: %ld bytes without '\\n' in %ld readline calls (n - 1 "
           "each) in %.2f s; the socket's buffer at most %zu B (bound %d)\n",
           reactor(), got, calls, t0, maxcap, RB_BOUND);
    ck_assert_int_eq(got, total);
    ck_assert_ok(usock_close(a));
    ck_assert_ok(usock_close(b));
}
END_TEST

/* ---- S04: memory per connection ----------------------------------------- */

#define S04_MAX 1000

START_TEST(s04_memory_per_connection)
{
    static usock_t *c[S04_MAX], *s[S04_MAX];
    static unsigned char burst[1 << 20];
    char line[128];
    int n = S04_MAX;
    long mem0, mem1, sent = 0, unread = 0, held = 0;
    usock_addr_t a;
    usock_t *l;

    ck_assert_msg(raise_nofile(2 * S04_MAX + 64) == 0,
                  "cannot raise RLIMIT_NOFILE to %d", 2 * S04_MAX + 64);
    l = listener(S04_MAX, 0, &a);
    pairs(l, &a, n, 0, c, s);
    memset(burst, 'z', sizeof burst); /* no newline */
    mem0 = mem_now();
    /* Each peer sends a 1 MiB burst, as much as the kernel takes without
     * waiting; nothing reads it but one small readline each. */
    for (int i = 0; i < n; i++) {
        ssize_t k;

        ck_assert_ok(usock_settimeout(c[i], 0));
        k = usock_write(c[i], burst, sizeof burst);
        ck_assert_msg(k > 0, "burst %d: %s", i, test_errname(errno));
        sent += k;
    }
    for (int i = 0; i < n; i++) {
        int q = 0;

        ck_assert_ok(usock_settimeout(s[i], 5.0));
        ck_assert_count(usock_readline(s[i], line, sizeof line),
                        (long)sizeof line - 1);
        ck_assert_uint_le(s[i]->rb.cap, RB_BOUND);
        held += (long)s[i]->rb.cap;
        ck_assert_ok(ioctl(usock_fileno(s[i]), FIONREAD, &q));
        unread += q;
    }
    mem1 = mem_now();
    printf("S04 [%s]: %d connections (the row's 10k is soak's), %.1f KiB "
           "sent to each on average, %.1f KiB left unread in the kernel; one "
           "readline of %zu B each: the library holds %.1f KiB per "
           "connection in read buffers, %s %+.1f MiB in all (bound %d x "
           "%d B = %.1f MiB)\n",
           reactor(), n, sent / 1024.0 / n, unread / 1024.0 / n, sizeof line,
           held / 1024.0 / n, mem_name(), (mem1 - mem0) / MIB, n, RB_BOUND,
           (double)n * RB_BOUND / MIB);
    ck_assert_int_le(held, (long)n * RB_BOUND);
    if (mem_checked("S04", 0)) {
        ck_assert_msg(mem1 - mem0 <= (long)n * RB_BOUND,
                      "%s grew by %ld bytes for %d connections", mem_name(),
                      mem1 - mem0, n);
    }
    close_all(c, n);
    close_all(s, n);
    ck_assert_ok((usock_close)(l));
}
END_TEST

/* ---- C04: mass cancel ---------------------------------------------------- */

#define C04_MAX 100000

static usock_cond_t *c04_cond;
static int c04_blocked, c04_cancelled, c04_other, c04_other_err;

/* Half wait on a condition (no timeout), half sleep for an hour. */
static void c04_task(void *arg)
{
    int r;

    c04_blocked++;
    if ((intptr_t)arg & 1) {
        r = usock_sleep(3600.0);
    } else {
        r = usock_cond_wait(c04_cond, USOCK_NONE);
    }
    if (r == -1 && errno == ECANCELED) {
        c04_cancelled++;
    } else if (c04_other++ == 0) {
        c04_other_err = r == 0 ? 0 : errno;
    }
}

START_TEST(c04_mass_cancel)
{
    static int ids[C04_MAX];
    long n = scaled("C04", C04_MAX, 10000);
    double bound = 1.0 * test_mult(), t0, took;

    c04_cond = ck_assert_nonnull(usock_cond_new());
    for (long i = 0; i < n; i++) {
        ids[i] = usock_spawn(c04_task, (void *)(intptr_t)i);
        ck_assert_int_gt(ids[i], 0);
    }
    /* Let every task block. */
    for (int k = 0; k < 100 && c04_blocked < n; k++) {
        ck_assert_ok(usock_sleep(0.01));
    }
    ck_assert_int_eq(c04_blocked, n);
    ck_assert_uint_eq(usock__live_tasks(), (size_t)n);
    t0 = usock_now();
    for (long i = 0; i < n; i++) {
        ck_assert_ok(usock_cancel(ids[i]));
    }
    ck_assert_ok(usock_run());
    took = usock_now() - t0;
    printf("C04 [%s]: %ld blocked tasks (half in a condition wait, half "
           "asleep) cancelled: all exited in %.3f s (bound %.1f s); %zu left "
           "alive\n",
           reactor(), n, took, bound, usock__live_tasks());
    ck_assert_msg(c04_other == 0, "%d tasks did not end with ECANCELED (%s)",
                  c04_other, test_errname(c04_other_err));
    ck_assert_int_eq(c04_cancelled, n);
    ck_assert_uint_eq(usock__live_tasks(), 0);
    ck_assert_msg(took <= bound, "took %.3f s > %.1f s", took, bound);
    usock_cond_free(c04_cond);
}
END_TEST

static void add_load(TCase *tc)
{
    tcase_add_test(tc, l02_churn);
    tcase_add_test(tc, l05_udp_flood);
    tcase_add_test(tc, l06_tcp_fairness);
    tcase_add_test(tc, l06_bounded_reads);
    tcase_add_test(tc, l08_timers);
    tcase_add_test(tc, l09_backpressure);
    tcase_add_test(tc, s01_readline_no_newline);
    tcase_add_test(tc, s04_memory_per_connection);
    tcase_add_test(tc, c04_mass_cancel);
}

static Suite *load_suite(void)
{
    Suite *s = suite_create("load");

    /* 60 s a case (Check's CK_TIMEOUT_MULTIPLIER widens it: 20 times
     * under make check-valgrind). */
    add_reactor_tcases(s, "load", add_load, 60);
    return s;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    return test_main(load_suite());
}

/*
 * micro: the micro-benchmarks of `make bench`, one "name=value unit" line
 * each.  Links the internal core, so the raw context switch is measured
 * without the hub (src/ctx.h, src/stack.h).
 *
 *   ctx_switch_ns           usock__ctx_switch ping-pong between 2 contexts
 *   yield_switch_ns         usock_yield between 2 tasks, per switch
 *   spawn_finish_ns         usock_spawn + finish, batches of 1000
 *   idle_task_bytes         RSS of 10,000 tasks blocked in usock_sleep(3600)
 *   recv_ready_extra_ns     usock_recv with data ready, minus recv(2)
 *   tasks_100k_rss_mib      100,000 tasks asleep, each its own deadline
 *   conns_held              connections held and answering in-process
 *
 * micro [quick]   ("quick" or BENCH_QUICK=1: fewer iterations)
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <usocket.h>

#include "ctx.h"
#include "stack.h"

static int quick;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Resident set size of this process, in bytes. */
static long rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL) {
        return -1;
    }
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) {
        rss = -1;
    }
    fclose(f);
    return rss * sysconf(_SC_PAGESIZE);
}

/* ------------------------------------------------------------------------ */
/*  Raw context switch                                                      */
/* ------------------------------------------------------------------------ */

static struct usock__ctx main_ctx, co_ctx;

static void co_fn(void *arg)
{
    (void)arg;
    for (;;) {
        usock__ctx_switch(&co_ctx, &main_ctx);
    }
}

static void bench_ctx(void)
{
    struct usock__stack st;
    long n = quick ? 2000000 : 10000000;
    double best = 1e9;

    if (usock__stack_get(&st, 64 * 1024) < 0) {
        printf("ctx_switch_ns=error %s\n", strerror(errno));
        return;
    }
    usock__ctx_make(&co_ctx, st.lo, st.size, co_fn, NULL);
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            usock__ctx_switch(&main_ctx, &co_ctx);
        }
        double ns = (now_s() - t0) * 1e9 / (2.0 * (double)n);
        best = ns < best ? ns : best;
    }
    /* The coroutine never finishes: its stack is simply left mapped. */
    printf("ctx_switch_ns=%.1f ns\n", best);
}

/* ------------------------------------------------------------------------ */
/*  Yield, spawn                                                            */
/* ------------------------------------------------------------------------ */

static long yield_n;

static void yielder(void *arg)
{
    (void)arg;
    for (long i = 0; i < yield_n; i++) {
        usock_yield();
    }
}

static void bench_yield(void)
{
    double t0;

    yield_n = quick ? 500000 : 2000000;
    usock_spawn(yielder, NULL);
    usock_spawn(yielder, NULL);
    t0 = now_s();
    usock_run();
    printf("yield_switch_ns=%.1f ns\n",
           (now_s() - t0) * 1e9 / (2.0 * (double)yield_n));
}

static void nothing(void *arg)
{
    (void)arg;
}

/* ns per task spawned and finished, in batches of `batch` then usock_run,
 * after one batch not timed (the first batch of a size maps and touches its
 * stacks; later ones take them from the thread's cache): *cold gets the ns
 * per task of that first batch, when not NULL. */
static double spawn_batches(int batch, long total, double *cold)
{
    long batches = total / batch;
    double t0 = now_s();

    for (int i = 0; i < batch; i++) {
        if (usock_spawn(nothing, NULL) < 0) {
            return -1;
        }
    }
    usock_run();
    if (cold) {
        *cold = (now_s() - t0) * 1e9 / (double)batch;
    }
    t0 = now_s();
    for (long b = 0; b < batches; b++) {
        for (int i = 0; i < batch; i++) {
            if (usock_spawn(nothing, NULL) < 0) {
                return -1;
            }
        }
        usock_run();
    }
    return (now_s() - t0) * 1e9 / (double)(batch * batches);
}

static void bench_spawn(void)
{
    long total = quick ? 20000 : 200000;
    double cold = 0;
    double warm = spawn_batches(1000, total, &cold);

    printf("spawn_finish_ns=%.1f ns (batches of 1000, after one untimed "
           "batch)\n", warm);
    printf("spawn_finish_first_ns=%.1f ns (the first batch of 1000: stacks "
           "mapped and touched)\n", cold);
    printf("spawn_finish_cached_ns=%.1f ns (batches of %d: every stack "
           "from the cache)\n",
           spawn_batches(512, total, NULL), 512);
}

/* ------------------------------------------------------------------------ */
/*  Many blocked tasks                                                      */
/* ------------------------------------------------------------------------ */

static int spawn_errno;
static long blocked_rss;
static long blocked_maps;

/* Lines of /proc/self/maps: the process's kernel mappings. */
static long count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int c;

    if (!f) {
        return -1;
    }
    while ((c = getc(f)) != EOF) {
        n += c == '\n';
    }
    fclose(f);
    return n;
}

static long max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long maps = 0;

    if (f) {
        maps = fscanf(f, "%ld", &maps) == 1 ? maps : 0;
        fclose(f);
    }
    return maps;
}

static void sleeper(void *arg)
{
    usock_sleep(*(double *)arg);
}

/* Spawn n sleepers (each sleeping secs[i]), let them block, report the RSS
 * growth, then cancel them.  Returns how many could be spawned. */
static int sleepers(int n, double *secs, long *grow, double *spawn_s)
{
    int *ids = malloc(sizeof(int) * (size_t)n);
    long before;
    double t0;
    int k;

    if (ids == NULL) {
        return 0;
    }
    before = rss_bytes();
    t0 = now_s();
    for (k = 0; k < n; k++) {
        if ((ids[k] = usock_spawn(sleeper, &secs[k])) < 0) {
            spawn_errno = errno;
            break;
        }
    }
    usock_yield(); /* every sleeper runs once and blocks */
    *spawn_s = now_s() - t0;
    blocked_rss = rss_bytes();
    blocked_maps = count_maps();
    *grow = blocked_rss - before;
    for (int i = 0; i < k; i++) {
        usock_cancel(ids[i]);
    }
    usock_run();
    free(ids);
    return k;
}

static void bench_idle(void)
{
    int n = 10000, k;
    double *secs = malloc(sizeof(double) * (size_t)n), sp;
    long grow;

    for (int i = 0; i < n; i++) {
        secs[i] = 3600;
    }
    k = sleepers(n, secs, &grow, &sp);
    if (k < n) {
        printf("idle_task_bytes=error only %d of %d tasks (%s)\n", k, n,
               strerror(spawn_errno));
    } else {
        printf("idle_task_bytes=%ld bytes\n", grow / n);
    }
    free(secs);
}

static void bench_100k(void)
{
    int n = 100000, k;
    double *secs = malloc(sizeof(double) * (size_t)n), sp;
    long grow;

    for (int i = 0; i < n; i++) {
        secs[i] = 3600 + i * 1e-3; /* each its own deadline */
    }
    k = sleepers(n, secs, &grow, &sp);
    if (k < n) {
        printf("tasks_100k_spawned=%d tasks (stopped by %s; "
               "vm.max_map_count=%ld)\n", k, strerror(spawn_errno),
               max_map_count());
    }
    printf("tasks_100k_rss_mib=%.1f MiB (process RSS with %d tasks blocked; "
           "+%.0f bytes per task; %.2f s to spawn and block)\n",
           (double)blocked_rss / 1048576.0, k, k ? (double)grow / k : 0.0, sp);
    printf("tasks_100k_maps=%ld mappings (in /proc/self/maps with the tasks "
           "blocked; vm.max_map_count %ld, not raised)\n", blocked_maps,
           max_map_count());
    free(secs);
}

/* ------------------------------------------------------------------------ */
/*  A blocking call that succeeds at once                                   */
/* ------------------------------------------------------------------------ */

/* A connected AF_UNIX stream pair of usocket objects. */
static int unix_pair(usock_t **a, usock_t **b)
{
    char name[64];
    usock_addr_t addr;
    usock_t *l = usock_socket(AF_UNIX, SOCK_STREAM, 0);

    snprintf(name, sizeof name, "@usock-micro-%d", (int)getpid());
    *a = usock_socket(AF_UNIX, SOCK_STREAM, 0);
    if (!l || !*a || usock_addr_unix(&addr, name) < 0 ||
        usock_bind(l, &addr) < 0 || usock_listen(l, 4) < 0 ||
        usock_connect(*a, &addr) < 0 || (*b = usock_accept(l, NULL)) == NULL) {
        return -1;
    }
    usock_close(l);
    return 0;
}

/* Queue `bytes` bytes into rx from tx (raw sends). */
static int fill(usock_t *tx, size_t bytes)
{
    static char chunk[8192];

    for (size_t done = 0; done < bytes; done += sizeof chunk) {
        if (send(usock_fileno(tx), chunk, sizeof chunk, 0) !=
            (ssize_t)sizeof chunk) {
            return -1;
        }
    }
    return 0;
}

/* ns per 64-byte receive with data already queued, through usock_recv or
 * recv(2): only the receives are timed, in blocks of 1024 that alternate
 * between the two; the fastest block of each counts (the least disturbed
 * by the rest of the machine). */
static int recv_blocks(usock_t *tx, usock_t *rx, long blocks, double best[2])
{
    int rfd = usock_fileno(rx);
    char buf[64];

    best[0] = best[1] = 1e9;
    for (long b = 0; b < blocks; b++) {
        int use = (int)(b & 1);
        if (fill(tx, 8 * 8192) < 0) {
            return -1;
        }
        double t0 = now_s();
        for (long i = 0; i < 1024; i++) {
            ssize_t r = use ? usock_recv(rx, buf, sizeof buf)
                            : recv(rfd, buf, sizeof buf, 0);
            if (r != (ssize_t)sizeof buf) {
                return -1;
            }
        }
        double ns = (now_s() - t0) * 1e9 / 1024.0;
        best[use] = ns < best[use] ? ns : best[use];
    }
    return 0;
}

static void bench_recv_ready(void)
{
    usock_t *a, *b;
    double best[2];

    if (unix_pair(&a, &b) < 0 ||
        recv_blocks(a, b, quick ? 400 : 2000, best) < 0) {
        printf("recv_ready_extra_ns=error %s\n", strerror(errno));
        return;
    }
    printf("recv_ready_extra_ns=%.1f ns (usock_recv %.1f ns, recv(2) %.1f "
           "ns, 64 B with data queued; fastest block of 1024)\n",
           best[1] - best[0], best[1], best[0]);
    usock_close(a);
    usock_close(b);
}

/* ------------------------------------------------------------------------ */
/*  Connections held in one process                                         */
/* ------------------------------------------------------------------------ */

static usock_addr_t held_addr;
static int held_ok;

/* Server side of one connection: echo one byte, then wait for EOF. */
static void held_server(void *arg)
{
    usock_t *c = arg;
    char ch;

    while (usock_recv(c, &ch, 1) == 1) {
        usock_sendall(c, &ch, 1);
    }
    usock_close(c);
}

static void held_acceptor(void *arg)
{
    usock_t *l = arg;
    usock_t *c;

    while ((c = usock_accept(l, NULL)) != NULL) {
        if (usock_spawn(held_server, c) < 0) {
            usock_close(c);
        }
    }
}

/* Open n client connections, then ping each once: counts the answers. */
static void held_clients(void *arg)
{
    int n = *(int *)arg, k;
    usock_t **cs = calloc((size_t)n, sizeof *cs);
    char ch = 'x';

    for (k = 0; cs && k < n; k++) {
        cs[k] = usock_socket(AF_INET, SOCK_STREAM, 0);
        if (!cs[k] || usock_connect(cs[k], &held_addr) < 0) {
            if (cs[k]) {
                usock_close(cs[k]);
            }
            break;
        }
    }
    for (int i = 0; i < k; i++) {
        if (usock_sendall(cs[i], &ch, 1) == 0 &&
            usock_recv(cs[i], &ch, 1) == 1) {
            held_ok++;
        }
    }
    for (int i = 0; i < k; i++) {
        usock_close(cs[i]);
    }
    free(cs);
}

static void bench_held(void)
{
    struct rlimit rl;
    usock_t *l = usock_socket(AF_INET, SOCK_STREAM, 0);
    int n, acc, cl;

    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    n = rl.rlim_max >= 40000 ? 19000 : (int)(rl.rlim_max - 100) / 2;
    if (!l || usock_addr_ip(&held_addr, "127.0.0.1", 0) < 0 ||
        usock_bind(l, &held_addr) < 0 || usock_listen(l, -1) < 0 ||
        usock_getsockname(l, &held_addr) < 0) {
        printf("conns_held=error %s\n", strerror(errno));
        return;
    }
    usock_setstacksize(16 * 1024);
    acc = usock_spawn(held_acceptor, l);
    cl = usock_spawn(held_clients, &n);
    usock_join(cl, USOCK_NONE);
    usock_cancel(acc);
    usock_run();
    usock_close(l);
    usock_setstacksize(64 * 1024);
    printf("conns_held=%d conns (both ends in this process, fd hard limit "
           "%ld; asked %d)\n", held_ok, (long)rl.rlim_max, n);
}

int main(int argc, char **argv)
{
    const char *q = getenv("BENCH_QUICK");

    quick = (argc > 1 && strcmp(argv[1], "quick") == 0) || (q && *q == '1');
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_ctx();
    bench_yield();
    bench_spawn();
    bench_idle();
    bench_recv_ready();
    bench_100k();
    bench_held();
    return 0;
}

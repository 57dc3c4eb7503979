/*
 * multicore_echo_server: an echo server on every core.
 *
 *     multicore_echo_server [-t N] [-x] [-q] [ADDR:]PORT
 *
 * N threads (-t, default 2), each with its own hub and its own listener on
 * the same port with SO_REUSEPORT, so the kernel spreads the connections
 * over the threads; each connection is a task of the thread that accepted
 * it, echoing what it receives.  With -x (hand-off) only thread 0 listens
 * and hands each accepted socket to the next thread in turn, as the
 * argument of usock_hub_post: the socket is then a task's of that thread.
 *
 * PORT 0 picks a free port; "listening on ADDR:PORT" is printed once every
 * thread is ready.  SIGINT or SIGTERM shut it down gracefully: the main
 * thread, which does nothing else, waits for them with sigwait(3) and
 * calls usock_hub_shutdown on every hub; each listener's accept and each
 * client's recv then fail with ECANCELED, the tasks close their sockets
 * and return, each thread's usock_run returns, and the threads are joined.
 * On exit it prints (stdout)
 *
 *     multicore_echo_server: threads=N connections=TOTAL per_thread=A,B,.. \
 *         alive=0 leaked_fds=0
 *
 * (alive: tasks left on the hubs; leaked_fds: descriptors open at exit that
 * were not open before the threads started) and exits 0.
 */
#include <usocket.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define MAX_THREADS 64

struct worker {
    int index;
    pthread_t th;
    usock_hub_t *hub;
    usock_t *listener;       /* NULL for a thread that only takes hand-offs */
    long accepted;           /* connections served by this thread */
    int run_rc;              /* what its usock_run returned */
};

static struct worker workers[MAX_THREADS];
static int nworkers = 2;
static int handoff;
static int quiet;
static pthread_barrier_t ready;
static long tasks_alive; /* spawned and not yet returned (atomic) */

/* ---- on each thread: plain blocking code --------------------------------- */

static void echo(void *arg)
{
    usock_t *c = arg;
    char buf[16384];
    ssize_t n;

    __atomic_add_fetch(&tasks_alive, 1, __ATOMIC_RELAXED);
    while ((n = usock_recv(c, buf, sizeof buf)) > 0) {
        if (usock_sendall(c, buf, (size_t)n) < 0) {
            break;
        }
    }
    usock_close(c);
    __atomic_sub_fetch(&tasks_alive, 1, __ATOMIC_RELAXED);
}

/* A socket handed over by thread 0 (usock_hub_post): now this thread's. */
static void echo_handed(void *arg)
{
    struct worker *self = NULL;
    usock_hub_t *h = usock_hub_self();

    for (int i = 0; i < nworkers; i++) {
        if (workers[i].hub == h) {
            self = &workers[i];
        }
    }
    if (self != NULL) {
        self->accepted++;
    }
    echo(arg);
}

static void acceptor(void *arg)
{
    struct worker *w = arg;
    int next = 0;
    usock_t *c;

    /* After usock_hub_shutdown, accept fails with ECANCELED. */
    while ((c = usock_accept(w->listener, NULL)) != NULL) {
        if (handoff) {
            struct worker *to = &workers[next];
            next = (next + 1) % nworkers;
            if (to != w) {
                /* The socket is the argument: the other hub's task owns
                 * it from here on.  ESHUTDOWN: that hub is stopping. */
                if (usock_hub_post(to->hub, echo_handed, c) < 0) {
                    usock_close(c);
                }
                continue;
            }
        }
        w->accepted++;
        if (usock_spawn(echo, c) < 0) {
            usock_close(c);
        }
    }
    usock_close(w->listener);
}

/* Keeps a hand-off thread's usock_run waiting until the shutdown. */
static void keep_alive(void *arg)
{
    (void)arg;
    while (usock_sleep(3600) == 0) {
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    w->hub = usock_hub_self();
    if (w->listener != NULL) {
        usock_spawn(acceptor, w);
    } else {
        usock_spawn(keep_alive, NULL);
    }
    pthread_barrier_wait(&ready);
    w->run_rc = usock_run(); /* 0 once usock_hub_shutdown has ended every task */
    return NULL;
}

/* ---- the main thread ------------------------------------------------------ */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static usock_t *listen_on(const char *ip, int port)
{
    usock_addr_t a;
    usock_t *l;

    if (usock_addr_ip(&a, ip, port) < 0) {
        return NULL;
    }
    l = usock_socket(strchr(ip, ':') ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    if (l == NULL) {
        return NULL;
    }
    usock_setsockopt_int(l, SOL_SOCKET, SO_REUSEADDR, 1);
    if (usock_setsockopt_int(l, SOL_SOCKET, SO_REUSEPORT, 1) < 0 ||
        usock_bind(l, &a) < 0 || usock_listen(l, 1024) < 0) {
        usock_close(l);
        return NULL;
    }
    return l;
}

static int usage(void)
{
    fprintf(stderr, "usage: multicore_echo_server [-t N] [-x] [-q] "
                    "[ADDR:]PORT\n");
    return 2;
}

int main(int argc, char **argv)
{
    char ip[64] = "127.0.0.1";
    const char *spec = NULL;
    usock_addr_t bound;
    char where[96];
    sigset_t sigs;
    struct rlimit rl;
    int port, sig;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            nworkers = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-x") == 0) {
            handoff = 1;
        } else if (strcmp(argv[i], "-q") == 0) {
            quiet = 1;
        } else if (spec == NULL) {
            spec = argv[i];
        } else {
            return usage();
        }
    }
    if (spec == NULL || nworkers < 1 || nworkers > MAX_THREADS) {
        return usage();
    }
    const char *colon = strrchr(spec, ':');
    if (colon != NULL) {
        snprintf(ip, sizeof ip, "%.*s", (int)(colon - spec), spec);
        spec = colon + 1;
    }
    port = atoi(spec);
    /* Many clients: as many descriptors as we may have. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* The signals go to sigwait below, in this thread only: block them
     * before any thread starts (threads inherit the mask). */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    int fds_before = count_fds();

    /* The listeners, made here so that port 0 picks one port for all. */
    for (int i = 0; i < nworkers; i++) {
        workers[i].index = i;
        if (i > 0 && handoff) {
            continue;
        }
        workers[i].listener = listen_on(ip, port);
        if (workers[i].listener == NULL) {
            fprintf(stderr, "multicore_echo_server: listen on %s:%d: %s\n",
                    ip, port, strerror(errno));
            return 1;
        }
        if (port == 0 && usock_getsockname(workers[i].listener, &bound) == 0) {
            port = usock_addr_port(&bound);
        }
    }
    pthread_barrier_init(&ready, NULL, (unsigned)nworkers + 1);
    for (int i = 0; i < nworkers; i++) {
        if (pthread_create(&workers[i].th, NULL, worker_main, &workers[i])) {
            fprintf(stderr, "multicore_echo_server: pthread_create failed\n");
            return 1;
        }
    }
    pthread_barrier_wait(&ready);
    snprintf(where, sizeof where, "%s:%d", ip, port);
    printf("listening on %s\n", where);
    fflush(stdout);
    if (!quiet) {
        fprintf(stderr, "multicore_echo_server: %d threads%s\n", nworkers,
                handoff ? ", thread 0 hands connections out" : "");
    }

    /* Graceful shutdown: wait for the signal, then stop every hub. */
    while (sigwait(&sigs, &sig) != 0) {
    }
    if (!quiet) {
        fprintf(stderr, "multicore_echo_server: signal %d, shutting down\n",
                sig);
    }
    for (int i = 0; i < nworkers; i++) {
        usock_hub_shutdown(workers[i].hub);
    }
    long total = 0;
    int failed = 0;
    for (int i = 0; i < nworkers; i++) {
        pthread_join(workers[i].th, NULL);
        total += workers[i].accepted;
        failed |= workers[i].run_rc != 0;
    }
    long alive = __atomic_load_n(&tasks_alive, __ATOMIC_RELAXED);
    pthread_barrier_destroy(&ready);
    printf("multicore_echo_server: threads=%d connections=%ld per_thread=",
           nworkers, total);
    for (int i = 0; i < nworkers; i++) {
        printf("%s%ld", i ? "," : "", workers[i].accepted);
    }
    printf(" alive=%ld leaked_fds=%d\n", alive, count_fds() - fds_before);
    return failed ? 1 : 0;
}

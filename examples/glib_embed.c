/*
 * glib_embed: usocket tasks inside a glib main loop.
 *
 *   glib_embed [-q] [ADDR:]PORT
 *
 * An echo server (one task per client, blocking-style code) served from a
 * GMainLoop, the way a glib daemon (NetworkManager, ModemManager, BlueZ)
 * would host usocket.  The loop watches usock_hub_fd() with g_unix_fd_add
 * and keeps one timeout source armed for usock_hub_timeout(); whenever
 * either fires it calls usock_hub_run_nowait().  The daemon's own work
 * goes on meanwhile: a glib timer ticks every 100 ms, and on SIGTERM or
 * SIGINT (g_unix_signal_add) the loop shuts the hub down gracefully,
 * waits for the tasks to finish, and prints
 *
 *   glib_embed: connections=N ticks=N uptime=S max_tick_late_ms=M
 *
 * Needs the ev reactor (usock_hub_fd fails with ENOTSUP on the poll one).
 */
#include <errno.h>
#include <glib-unix.h>
#include <glib.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <usocket.h>

#define TICK_MS 100

static GMainLoop *loop;
static guint hub_timer;    /* the timeout source for usock_hub_timeout */
static int quiet;
static int stopping;
static long connections;
static long ticks;
static gint64 last_tick, started;
static double max_late_ms;

/* ---- the usocket side: plain blocking code ------------------------------ */

static void echo_client(void *arg)
{
    usock_t *c = arg;
    char buf[4096];
    ssize_t n;

    while ((n = usock_recv(c, buf, sizeof buf)) > 0) {
        if (usock_sendall(c, buf, (size_t)n) < 0) {
            break;
        }
    }
    usock_close(c);
}

static void acceptor(void *arg)
{
    usock_t *l = arg;
    usock_t *c;

    /* After usock_hub_shutdown, accept fails with ECANCELED. */
    while ((c = usock_accept(l, NULL)) != NULL) {
        connections++;
        if (usock_spawn(echo_client, c) < 0) {
            usock_close(c);
        }
    }
    usock_close(l);
}

/* ---- the glib side: drive the hub --------------------------------------- */

static gboolean on_hub_time(gpointer unused);

static void run_hub(void)
{
    int alive = usock_hub_run_nowait();

    if (hub_timer != 0) {
        g_source_remove(hub_timer);
        hub_timer = 0;
    }
    if (stopping && alive == 0) {
        g_main_loop_quit(loop); /* every task has finished */
        return;
    }
    /* Re-arm for the hub's next deadline, rounded up to glib's ms. */
    double t = usock_hub_timeout();
    if (t != USOCK_NONE) {
        hub_timer = g_timeout_add_full(G_PRIORITY_DEFAULT, (guint)ceil(t * 1e3),
                                       on_hub_time, NULL, NULL);
    }
}

static gboolean on_hub_fd(gint fd, GIOCondition cond, gpointer unused)
{
    run_hub();
    return G_SOURCE_CONTINUE;
}

static gboolean on_hub_time(gpointer unused)
{
    hub_timer = 0; /* this source ends here */
    run_hub();
    return G_SOURCE_REMOVE;
}

/* The daemon's own timer: how late is each tick? */
static gboolean on_tick(gpointer unused)
{
    gint64 now = g_get_monotonic_time();
    double late = (double)(now - last_tick) / 1e3 - TICK_MS;

    if (late > max_late_ms) {
        max_late_ms = late;
    }
    last_tick = now;
    ticks++;
    return G_SOURCE_CONTINUE;
}

/* Graceful shutdown: every task's blocking call returns ECANCELED, the
 * tasks close their sockets and return, then run_hub quits the loop. */
static gboolean on_signal(gpointer unused)
{
    if (!quiet) {
        fprintf(stderr, "glib_embed: shutting down\n");
    }
    stopping = 1;
    usock_hub_shutdown(usock_hub_self());
    run_hub();
    return G_SOURCE_CONTINUE;
}

static int usage(void)
{
    fprintf(stderr, "usage: glib_embed [-q] [ADDR:]PORT\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *spec, *colon;
    char ip[64] = "127.0.0.1";
    usock_addr_t a;
    usock_t *l;
    int argi = 1, fd;

    if (argi < argc && strcmp(argv[argi], "-q") == 0) {
        quiet = 1;
        argi++;
    }
    if (argi != argc - 1) {
        return usage();
    }
    spec = argv[argi];
    colon = strrchr(spec, ':');
    if (colon != NULL) {
        snprintf(ip, sizeof ip, "%.*s", (int)(colon - spec), spec);
        spec = colon + 1;
    }
    if (usock_addr_ip(&a, ip, atoi(spec)) < 0) {
        return usage();
    }
    if ((fd = usock_hub_fd()) < 0) {
        fprintf(stderr, "glib_embed: usock_hub_fd: %s\n", strerror(errno));
        return 1;
    }
    l = usock_socket(strchr(ip, ':') ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    if (l == NULL) {
        perror("glib_embed: socket");
        return 1;
    }
    usock_setsockopt_int(l, SOL_SOCKET, SO_REUSEADDR, 1);
    if (usock_bind(l, &a) < 0 || usock_listen(l, -1) < 0) {
        perror("glib_embed: listen");
        return 1;
    }
    usock_spawn(acceptor, l);

    loop = g_main_loop_new(NULL, FALSE);
    g_unix_fd_add(fd, G_IO_IN, on_hub_fd, NULL);
    g_unix_signal_add(SIGTERM, on_signal, NULL);
    g_unix_signal_add(SIGINT, on_signal, NULL);
    started = last_tick = g_get_monotonic_time();
    g_timeout_add(TICK_MS, on_tick, NULL);
    run_hub(); /* the acceptor is ready: start it, arm the timer */
    if (!quiet) {
        fprintf(stderr, "glib_embed: echo server on %s:%s\n", ip, spec);
    }
    g_main_loop_run(loop);

    printf("glib_embed: connections=%ld ticks=%ld uptime=%.3f "
           "max_tick_late_ms=%.1f\n",
           connections, ticks,
           (double)(g_get_monotonic_time() - started) / 1e6, max_late_ms);
    g_main_loop_unref(loop);
    return 0;
}

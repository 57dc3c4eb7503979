/*
 * chan_bench: items per second through a usock channel, one "name=value
 * items/s" line per scenario (bench/chan.go measures the same with Go's
 * channels):
 *
 *   hub1_cap0     one hub: a sender task and a receiver task, capacity 0
 *   hub1_cap128   the same, capacity 128
 *   hub2_cap0     two threads, each with its own hub: the sender task on
 *                 one, the receiver task on the other, capacity 0
 *   hub2_cap128   the same, capacity 128
 *
 * Items are 8-byte integers; the receiver checks that they arrive in order.
 * Each scenario runs RUNS times and the best rate is printed.
 *
 * chan_bench [quick]   ("quick" or BENCH_QUICK=1: fewer items)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <usocket.h>

#define RUNS 3

static long n_items;

struct pair {
    usock_chan_t *ch;
    long bad;
};

static void sender(void *arg)
{
    struct pair *p = arg;

    for (long i = 0; i < n_items; i++) {
        if (usock_chan_send(p->ch, &i, USOCK_NONE) < 0) {
            p->bad++;
            return;
        }
    }
}

static void receiver(void *arg)
{
    struct pair *p = arg;
    long v;

    for (long i = 0; i < n_items; i++) {
        if (usock_chan_recv(p->ch, &v, USOCK_NONE) < 0 || v != i) {
            p->bad++;
            return;
        }
    }
}

static void *thread_main(void *arg)
{
    void **a = arg;

    usock_spawn((void (*)(void *))a[0], a[1]);
    usock_run();
    return NULL;
}

/* Items per second of one run, or -1. */
static double run(size_t cap, int two_hubs)
{
    struct pair p = {usock_chan_new(sizeof(long), cap), 0};
    double t0, t;

    if (!p.ch) {
        return -1;
    }
    t0 = usock_now();
    if (two_hubs) {
        pthread_t a, b;
        void *sa[2] = {(void *)sender, &p}, *ra[2] = {(void *)receiver, &p};
        pthread_create(&b, NULL, thread_main, ra);
        pthread_create(&a, NULL, thread_main, sa);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
    } else {
        usock_spawn(receiver, &p);
        usock_spawn(sender, &p);
        usock_run();
    }
    t = usock_now() - t0;
    usock_chan_free(p.ch);
    return p.bad ? -1 : (double)n_items / t;
}

static void scenario(const char *name, size_t cap, int two_hubs)
{
    double best = -1;

    for (int i = 0; i < RUNS; i++) {
        double r = run(cap, two_hubs);
        if (r < 0) {
            printf("%s=error\n", name);
            return;
        }
        best = r > best ? r : best;
    }
    printf("%s=%.0f items/s\n", name, best);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *q = getenv("BENCH_QUICK");
    int quick = (argc > 1 && strcmp(argv[1], "quick") == 0) ||
                (q && strcmp(q, "1") == 0);

    n_items = quick ? 200000 : 2000000;
    scenario("hub1_cap0", 0, 0);
    scenario("hub1_cap128", 128, 0);
    n_items /= 4;
    scenario("hub2_cap0", 0, 1);
    scenario("hub2_cap128", 128, 1);
    return 0;
}

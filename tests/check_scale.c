/*
 * Suite "scale" (tagged slow): 2,000 connections on one thread, 64 plain
 * pthreads against a task server, 64 threads each with its own hub, and
 * writes of more than 2 GiB in one call.
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <usocket.h>

#include "helpers.h"

#define MSG_LEN 32

/* The seed pattern's deal_client: echo until end of stream. */
static int servers_done;

static void deal_client(void *arg)
{
    usock_t *c = arg;
    char buf[1024];
    ssize_t n;

    while ((n = usock_recv(c, buf, sizeof buf)) > 0) {
        if (usock_sendall(c, buf, (size_t)n) != 0) {
            break;
        }
    }
    if (n == 0) {
        __atomic_add_fetch(&servers_done, 1, __ATOMIC_SEQ_CST);
    }
    usock_close(c);
}

/* One client: connect, `rounds` checked round trips, close.  0 on success,
 * else the errno of the failure (or -1 for corrupt data). */
static int client(const usock_addr_t *a, int id, int rounds)
{
    usock_t *s = usock_socket(AF_INET, SOCK_STREAM, 0);
    char out[64], in[MSG_LEN];
    int rc = 0;

    if (s == NULL) {
        return errno;
    }
    usock_settimeout(s, 30.0);
    if (usock_connect(s, a) != 0) {
        rc = errno;
    }
    for (int j = 0; j < rounds && rc == 0; j++) {
        snprintf(out, sizeof out, "client %6d round %4d ........", id, j);
        if (usock_sendall(s, out, MSG_LEN) != 0 ||
            usock_read(s, in, MSG_LEN) != MSG_LEN) {
            rc = errno != 0 ? errno : -1;
        } else if (memcmp(in, out, MSG_LEN) != 0) {
            rc = -1;
        }
    }
    usock_close(s);
    return rc;
}

struct client_arg {
    usock_addr_t addr;
    int id, rounds, rc;
};

static void client_task(void *arg)
{
    struct client_arg *ca = arg;

    errno = 0;
    ca->rc = client(&ca->addr, ca->id, ca->rounds);
}

static void *client_thread(void *arg)
{
    struct client_arg *ca = arg;

    errno = 0;
    ca->rc = client(&ca->addr, ca->id, ca->rounds);
    return NULL;
}

/* Accept n connections on l, one deal_client task each. */
static void serve(usock_t *l, int n)
{
    ck_assert_ok(usock_settimeout(l, 30.0 * test_mult()));
    for (int i = 0; i < n; i++) {
        usock_t *c = usock_accept(l, NULL);

        ck_assert_msg(c != NULL, "accept %d: %s", i, test_errname(errno));
        ck_assert_int_gt(usock_spawn(deal_client, c), 0);
    }
}

static void assert_clients_ok(const struct client_arg *ca, int n)
{
    int bad = 0, first = -1;

    for (int i = 0; i < n; i++) {
        if (ca[i].rc != 0) {
            bad++;
            first = first < 0 ? i : first;
        }
    }
    ck_assert_msg(bad == 0, "%d clients failed; client %d: %s", bad, first,
                  first >= 0 ? test_errname(ca[first].rc) : "");
}

START_TEST(connections_2000_one_thread)
{
    enum { N = 2000 };
    static struct client_arg ca[N];
    usock_addr_t a;
    usock_t *l;

    ck_assert_msg(raise_nofile(2 * N + 100) == 0, "cannot raise RLIMIT_NOFILE");
    l = ck_assert_nonnull(usock_socket(AF_INET, SOCK_STREAM, 0));
    ck_assert_ok(usock_addr_ip(&a, "127.0.0.1", 0));
    ck_assert_ok(usock_bind(l, &a));
    ck_assert_ok(usock_listen(l, -1));
    ck_assert_ok(usock_getsockname(l, &a));
    for (int i = 0; i < N; i++) {
        ca[i] = (struct client_arg){a, i, 10, -2};
        ck_assert_int_gt(usock_spawn(client_task, &ca[i]), 0);
    }
    serve(l, N);
    ck_assert_ok(usock_run());
    assert_clients_ok(ca, N);
    ck_assert_int_eq(servers_done, N);
}
END_TEST

START_TEST(pthreads_64_against_tasks)
{
    enum { N = 64 };
    static struct client_arg ca[N];
    pthread_t th[N];
    usock_addr_t a;
    usock_t *l = test_listener(&a);

    for (int i = 0; i < N; i++) {
        ca[i] = (struct client_arg){a, i, 100, -2};
        ck_assert_int_eq(pthread_create(&th[i], NULL, client_thread, &ca[i]),
                         0);
    }
    serve(l, N);
    ck_assert_ok(usock_run());
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    }
    assert_clients_ok(ca, N);
    ck_assert_int_eq(servers_done, N);
}
END_TEST

/* 64 threads, each with its own hub: a listener, 10 server tasks and 10
 * client tasks, all on that thread. */
struct hub_thread {
    int rc;
    int clients_ok;
};

static void *hub_thread(void *arg)
{
    enum { K = 10 };
    struct hub_thread *ht = arg;
    struct client_arg ca[K];
    usock_addr_t a;
    usock_t *l = usock_socket(AF_INET, SOCK_STREAM, 0);

    ht->rc = -1;
    if (l == NULL || usock_addr_ip(&a, "127.0.0.1", 0) != 0 ||
        usock_bind(l, &a) != 0 || usock_listen(l, -1) != 0 ||
        usock_getsockname(l, &a) != 0) {
        return NULL;
    }
    for (int i = 0; i < K; i++) {
        ca[i] = (struct client_arg){a, i, 20, -2};
        if (usock_spawn(client_task, &ca[i]) <= 0) {
            return NULL;
        }
    }
    usock_settimeout(l, 30.0);
    for (int i = 0; i < K; i++) {
        usock_t *c = usock_accept(l, NULL);

        if (c == NULL || usock_spawn(deal_client, c) <= 0) {
            return NULL;
        }
    }
    ht->rc = usock_run();
    for (int i = 0; i < K; i++) {
        ht->clients_ok += ca[i].rc == 0;
    }
    usock_close(l);
    return NULL;
}

START_TEST(threads_64_own_hubs)
{
    enum { N = 64 };
    static struct hub_thread ht[N];
    pthread_t th[N];

    ck_assert_msg(raise_nofile(N * 24 + 100) == 0,
                  "cannot raise RLIMIT_NOFILE");
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(pthread_create(&th[i], NULL, hub_thread, &ht[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    }
    for (int i = 0; i < N; i++) {
        ck_assert_msg(ht[i].rc == 0, "thread %d: run failed", i);
        ck_assert_int_eq(ht[i].clients_ok, 10);
    }
    ck_assert_int_eq(servers_done, N * 10);
}
END_TEST

struct counter_sink {
    usock_t *s;
    size_t got, nonzero;
};

static void counter_sink_task(void *arg)
{
    struct counter_sink *k = arg;
    static unsigned char buf[1 << 20];
    ssize_t n;

    while ((n = usock_recv(k->s, buf, sizeof buf)) > 0) {
        k->nonzero += buf[0] != 0 || buf[n - 1] != 0;
        k->got += (size_t)n;
    }
}

/* B12: one write and one sendall of 2^31 + 1 bytes each are split and
 * fully counted. */
START_TEST(write_over_2gib)
{
    size_t n = ((size_t)1 << 31) + 1;
    struct counter_sink k = {NULL, 0, 0};
    void *zeros;
    usock_t *c;
    int id;

    /* Untouched anonymous memory reads as zeros and costs no RAM. */
    zeros = mmap(NULL, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS |
                 MAP_NORESERVE, -1, 0);
    ck_assert_ptr_ne(zeros, MAP_FAILED);
    test_pair(&c, &k.s);
    id = usock_spawn(counter_sink_task, &k);
    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_settimeout(c, 60.0));
    ck_assert_count(usock_write(c, zeros, n), (long)n);
    ck_assert_ok(usock_sendall(c, zeros, n));
    ck_assert_ok(usock_shutdown(c, SHUT_WR));
    ck_assert_ok(usock_join(id, 60.0));
    ck_assert_uint_eq(k.got, 2 * n);
    ck_assert_uint_eq(k.nonzero, 0);
    munmap(zeros, n);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_set_tags(tc, "slow");
    tcase_add_test(tc, connections_2000_one_thread);
    tcase_add_test(tc, pthreads_64_against_tasks);
    tcase_add_test(tc, threads_64_own_hubs);
    tcase_add_test(tc, write_over_2gib);
}

static Suite *scale_suite(void)
{
    Suite *s = suite_create("scale");

    add_reactor_tcases(s, "scale", add_tests, 60);
    return s;
}

int main(void)
{
    return test_main(scale_suite());
}

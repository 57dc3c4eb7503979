/*
 * demo_clients: many seed clients at once, in one process and one thread.
 *
 *     demo_clients PORT NCLIENTS ROUNDS
 *
 * Each client is a task: it connects to 127.0.0.1:PORT, checks the greeting,
 * then ROUNDS times sends "c<id>-r<n>" and checks that the reply is exactly
 * "Loop_msg:c<id>-r<n>!", then sends "exit" and closes.  Every socket has a
 * 30 s timeout, so nothing hangs.  At the end one line sums it up:
 *
 *     demo: clients=1000 round_trips=100000 errors=0 seconds=1.23
 *
 * Exit status: 0 when every round trip succeeded, 1 otherwise, 2 on bad
 * arguments.
 */
#include <usocket.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define GREETING      "hello, i am server"
#define PREFIX        "Loop_msg:"
#define TIMEOUT       30.0
#define CONNECT_TRIES 5
#define MAX_REPORTS   10 /* error messages printed; the rest are counted */

static int port, rounds;
static long round_trips, errors;

/* Count one error; print the first few. */
static void fail(int id, const char *what, int e)
{
    errors++;
    if (errors <= MAX_REPORTS) {
        fprintf(stderr, "demo: client %d: %s: %s\n", id, what,
                e != 0 ? strerror(e) : "unexpected data");
    }
}

/* A connected socket, retrying a refused or busy connect a few times. */
static usock_t *connect_retry(int id)
{
    usock_addr_t a;
    usock_t *s;
    int e = 0;

    if (usock_addr_ip(&a, "127.0.0.1", port) < 0) {
        fail(id, "address", errno);
        return NULL;
    }
    for (int i = 0; i < CONNECT_TRIES; i++) {
        if (i > 0 && usock_sleep(0.05 * i) < 0) {
            break;
        }
        if ((s = usock_socket(AF_INET, SOCK_STREAM, 0)) == NULL) {
            fail(id, "socket", errno);
            return NULL;
        }
        if (usock_settimeout(s, TIMEOUT) == 0 && usock_connect(s, &a) == 0) {
            return s;
        }
        e = errno;
        usock_close(s);
        if (e != ECONNREFUSED && e != EAGAIN) {
            break;
        }
    }
    fail(id, "connect", e);
    return NULL;
}

/* Read exactly strlen(want) bytes and compare them with want. */
static int expect(usock_t *s, int id, const char *want, const char *what)
{
    char buf[128];
    size_t n = strlen(want);
    ssize_t got = usock_read(s, buf, n);

    if (got < 0) {
        fail(id, what, errno);
        return -1;
    }
    if ((size_t)got != n || memcmp(buf, want, n) != 0) {
        fail(id, what, 0);
        return -1;
    }
    return 0;
}

/* One round: send "c<id>-r<n>", expect "Loop_msg:c<id>-r<n>!". */
static int round_trip(usock_t *s, int id, int r)
{
    char msg[48], want[64];

    snprintf(msg, sizeof msg, "c%d-r%d", id, r);
    snprintf(want, sizeof want, PREFIX "%s!", msg);
    if (usock_sendall(s, msg, strlen(msg)) < 0) {
        fail(id, "send", errno);
        return -1;
    }
    if (expect(s, id, want, "reply") < 0) {
        return -1;
    }
    round_trips++;
    return 0;
}

/* The task body: one whole client session. */
static void client(void *arg)
{
    int id = (int)(intptr_t)arg;
    usock_t *s = connect_retry(id);

    if (s == NULL) {
        return;
    }
    if (expect(s, id, GREETING, "greeting") < 0) {
        goto out;
    }
    for (int r = 0; r < rounds; r++) {
        if (round_trip(s, id, r) < 0) {
            goto out;
        }
    }
    if (usock_sendall(s, "exit", 4) < 0) {
        fail(id, "send exit", errno);
    }
out:
    if (usock_close(s) < 0) {
        fail(id, "close", errno);
    }
}

/* Raise the soft fd limit to the hard one: 1,000 clients need > 1024. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            perror("demo: setrlimit");
        }
    }
}

/* A decimal argument in [lo, hi], or -1. */
static long number(const char *s, long lo, long hi)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    return v;
}

int main(int argc, char **argv)
{
    long n = -1;
    double t0;

    if (argc == 4) {
        port = (int)number(argv[1], 1, 65535);
        n = number(argv[2], 1, 1000000);
        rounds = (int)number(argv[3], 0, 100000000);
    }
    if (argc != 4 || port < 0 || n < 0 || rounds < 0) {
        fprintf(stderr, "usage: %s PORT NCLIENTS ROUNDS\n", argv[0]);
        return 2;
    }
    raise_nofile();
    t0 = usock_now();
    for (long i = 0; i < n; i++) {
        if (usock_spawn(client, (void *)(intptr_t)i) < 0) {
            fail((int)i, "spawn", errno);
        }
    }
    if (usock_run() < 0) {
        fail(-1, "run", errno);
    }
    printf("demo: clients=%ld round_trips=%ld errors=%ld seconds=%.2f\n", n,
           round_trips, errors, usock_now() - t0);
    return errors == 0 && round_trips == n * (long)rounds ? 0 : 1;
}

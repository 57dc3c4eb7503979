/*
 * tls_load: the TLS load generator of `make bench` (bench/tls.sh), written
 * with usocket tasks on one thread; it verifies nothing (USOCK_CERT_NONE),
 * so its side of a handshake stays cheap.
 *
 *   tls_load hs    PORT SERVER_PID SECONDS CONC   handshakes: connect, wrap,
 *                                                 1-byte echo, close
 *   tls_load bulk  PORT SERVER_PID SECONDS CONC   64 KiB messages echoed
 *   tls_load idle  PORT SERVER_PID N              hold N TLS connections
 *   tls_load plain PORT SERVER_PID N              hold N plain connections
 *
 * Prints one line of key=value: the operations per second and the
 * server's CPU time per operation (/proc/PID/stat utime+stime, all
 * threads), or for idle/plain the server's RSS growth per connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <usocket.h>

#define MSG (64 * 1024)

static int port, conc;
static double until;
static long ops, errors;
static usock_tls_t *tls;
static int use_tls = 1;
static usock_t **held;

static double srv_cpu(int pid)
{
    char path[64], buf[1024];
    unsigned long ut = 0, st = 0;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    /* fields after the name: state(3) ... utime(14) stime(15) */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                     &ut, &st) != 2) {
        return -1;
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long srv_rss_kb(int pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return kb;
}

static usock_t *open_conn(void)
{
    usock_addr_t a;
    usock_t *s = usock_socket(AF_INET, SOCK_STREAM, 0);
    char c = 'x';

    if (!s) {
        return NULL;
    }
    if (usock_settimeout(s, 20) < 0 || usock_addr_ip(&a, "127.0.0.1", port) < 0 ||
        usock_connect(s, &a) < 0 || (use_tls && usock_tls_wrap(s, tls, NULL) < 0) ||
        usock_sendall(s, &c, 1) < 0 || usock_read(s, &c, 1) != 1) {
        usock_close(s);
        return NULL;
    }
    return s;
}

static void hs_task(void *arg)
{
    (void)arg;
    while (usock_now() < until) {
        usock_t *s = open_conn();
        if (!s) {
            errors++;
            continue;
        }
        /* End cleanly: shut down, read to the server's end, close. */
        char b[64];
        usock_shutdown(s, SHUT_WR);
        while (usock_recv(s, b, sizeof b) > 0) {
        }
        usock_close(s);
        ops++;
    }
}

static void bulk_task(void *arg)
{
    static char out[MSG];
    char *in = malloc(MSG);
    usock_t *s = open_conn();

    (void)arg;
    if (!s || !in) {
        errors++;
        free(in);
        return;
    }
    while (usock_now() < until) {
        if (usock_sendall(s, out, MSG) < 0 || usock_read(s, in, MSG) != MSG) {
            errors++;
            break;
        }
        ops++;
    }
    usock_close(s);
    free(in);
}

static void idle_task(void *arg)
{
    long i = (long)arg;
    held[i] = open_conn();
    if (!held[i]) {
        errors++;
    }
}

int main(int argc, char **argv)
{
    struct rlimit rl;

    if (argc < 5) {
        fprintf(stderr, "usage: tls_load hs|bulk|idle|plain PORT SERVER_PID "
                        "SECONDS|N [CONC]\n");
        return 2;
    }
    const char *mode = argv[1];
    port = atoi(argv[2]);
    int pid = atoi(argv[3]);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    usock_setstacksize(128 * 1024);
    tls = usock_tls_new(USOCK_TLS_CLIENT);
    if (!tls || usock_tls_set_verify(tls, USOCK_CERT_NONE) < 0) {
        perror("tls_load");
        return 1;
    }
    if (!strcmp(mode, "idle") || !strcmp(mode, "plain")) {
        long n = atol(argv[4]);
        use_tls = !strcmp(mode, "idle");
        held = calloc((size_t)n, sizeof(*held));
        /* Warm up: one connection, so the server's one-time allocations
         * are not counted. */
        usock_t *w = open_conn();
        usock_sleep(0.2);
        long before = srv_rss_kb(pid);
        for (long i = 0; i < n; i++) {
            usock_spawn(idle_task, (void *)i);
            if (i % 50 == 49) {
                usock_run();
            }
        }
        usock_run();
        usock_sleep(0.5);
        long after = srv_rss_kb(pid);
        printf("mode=%s conns=%ld errors=%ld rss_before_kb=%ld rss_after_kb=%ld "
               "bytes_per_conn=%.0f\n",
               mode, n - errors, errors, before, after,
               (double)(after - before) * 1024.0 / (double)(n - errors));
        for (long i = 0; i < n; i++) {
            if (held[i]) {
                usock_close(held[i]);
            }
        }
        if (w) {
            usock_close(w);
        }
        return errors ? 1 : 0;
    }
    double secs = atof(argv[4]);
    conc = argc > 5 ? atoi(argv[5]) : 8;
    double c0 = srv_cpu(pid), t0 = usock_now();
    until = t0 + secs;
    for (int i = 0; i < conc; i++) {
        usock_spawn(!strcmp(mode, "hs") ? hs_task : bulk_task, NULL);
    }
    usock_run();
    double el = usock_now() - t0, cpu = srv_cpu(pid) - c0;
    if (!strcmp(mode, "hs")) {
        printf("mode=hs ops=%ld errors=%ld per_s=%.1f srv_cpu_us_per_op=%.1f\n",
               ops, errors, (double)ops / el, ops ? cpu * 1e6 / (double)ops : 0);
    } else {
        double mb = (double)ops * MSG / 1e6;
        printf("mode=bulk msgs=%ld errors=%ld mb_per_s=%.1f srv_cpu_ms_per_gb=%.1f\n",
               ops, errors, mb / el, mb > 0 ? cpu * 1e3 / (mb / 1e3) : 0);
    }
    return 0;
}

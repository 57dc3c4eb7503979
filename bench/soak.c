/*
 * soak: the scenarios of `make soak` (RELIABILITY.md L01, L02, L04, L07,
 * L08, L09, S04).
 *
 *   soak l01|l02|l04|l07|l08|l09|s04
 *
 * L01, L02 and L07 fork a usocket echo server (one thread, one task per
 * connection, in its own process) and drive it from this process with a
 * plain epoll client; the server's RSS, fd count and CPU time are read
 * from /proc/PID.  L04 runs in one process: a sender task and the
 * receiving main context on one hub, over loopback TCP.  L08 runs 10^6
 * sleeping tasks on one hub; L09 10,000 usocket connections whose peers (a
 * forked plain process) never read; S04 10,000 usocket connections whose
 * peers (likewise) each send a 1 MiB burst that is read 127 bytes deep.  Every client
 * socket is closed with SO_LINGER {1, 0} (a reset), so no TIME_WAIT is
 * left on the ephemeral ports.  One line per scenario; exit 0 when its
 * criterion holds, 1 when not, 77 when it cannot run here.  Sizes can be
 * scaled down for a quick try: SOAK_L01_CONNS, SOAK_L01_SECONDS,
 * SOAK_L02_CYCLES, SOAK_L07_CONNS, SOAK_L04_BYTES, SOAK_L08_TASKS,
 * SOAK_L08_SECONDS, SOAK_L09_CONNS, SOAK_L09_TIMEOUT, SOAK_S04_CONNS;
 * SOAK_P99_MS (10).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <usocket.h>

#include "loadstat.h"

#ifdef HAVE_SOAK_OPENSSL
#include <openssl/evp.h>
#endif

#define MSG 32
#define STACK_KIB 64 /* usocket's default task stack */

static long envl(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? atol(v) : dflt;
}

static int fd_count(pid_t pid)
{
    char path[64];
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d) {
        return -1;
    }
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

/* utime + stime of pid, in ms (loadstat's clock ticks). */
static long cpu_ms(pid_t pid)
{
    long long t = proc_cpu((int)pid);

    return t < 0 ? -1 : (long)(t * 1000 / sysconf(_SC_CLK_TCK));
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ------------------------------------------------------------------ */
/* The server: usocket, one task per connection, echo.                 */

static void echo_task(void *arg)
{
    usock_t *c = arg;
    char buf[1024];
    ssize_t n;
    while ((n = usock_recv(c, buf, sizeof buf)) > 0) {
        if (usock_sendall(c, buf, (size_t)n) < 0) {
            break;
        }
    }
    usock_close(c);
}

static void server_main(int wfd, int backlog)
{
    usock_addr_t a;
    usock_t *s = usock_socket(AF_INET, SOCK_STREAM, 0);
    if (!s || usock_addr_ip(&a, "127.0.0.1", 0) < 0 ||
        usock_setsockopt_int(s, SOL_SOCKET, SO_REUSEADDR, 1) < 0 ||
        usock_bind(s, &a) < 0 || usock_listen(s, backlog) < 0 ||
        usock_getsockname(s, &a) < 0) {
        perror("soak server");
        _exit(1);
    }
    int port = usock_addr_port(&a);
    if (write(wfd, &port, sizeof port) != (ssize_t)sizeof port) {
        _exit(1);
    }
    close(wfd);
    for (;;) {
        usock_t *c = usock_accept(s, NULL);
        if (!c) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
                usock_sleep(0.01);
            }
            continue;
        }
        usock_setsockopt_int(c, IPPROTO_TCP, TCP_NODELAY, 1);
        if (usock_spawn(echo_task, c) < 0) {
            usock_close(c);
        }
    }
}

static pid_t server_pid;

/* Fork the scenario's peer process into server_pid (stop_server ends it).
 * Returns 0 in the child, which dies with this process; the child's pid,
 * or -1, here. */
static pid_t fork_peer(void)
{
    pid_t parent = getpid();

    server_pid = fork();
    if (server_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(1);
        }
    }
    return server_pid;
}

/* n connections, or as many as RLIMIT_NOFILE leaves room for (with 64 fds
 * to spare), saying so under the row's name. */
static long conns_within_nofile(const char *row, long n)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)n + 64 > rl.rlim_cur) {
        long can = (long)rl.rlim_cur - 64;
        printf("%s: RLIMIT_NOFILE %ld holds %ld connections per process, "
               "not %ld\n", row, (long)rl.rlim_cur, can, n);
        n = can;
    }
    return n;
}

static int start_server(int backlog)
{
    int p[2], port = -1;
    if (pipe(p) != 0) {
        return -1;
    }
    if (fork_peer() < 0) {
        return -1;
    }
    if (server_pid == 0) {
        signal(SIGPIPE, SIG_DFL); /* the library must not raise it */
        close(p[0]);
        server_main(p[1], backlog);
        _exit(0);
    }
    close(p[1]);
    if (read(p[0], &port, sizeof port) != (ssize_t)sizeof port) {
        port = -1;
    }
    close(p[0]);
    return port;
}

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        server_pid = 0;
    }
}

/* ------------------------------------------------------------------ */
/* The epoll client side.                                               */

static struct sockaddr_in srv;

static int open_conn(int ep, uint32_t id)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&srv, sizeof srv) != 0 &&
        errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = id};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int sock_error(int fd)
{
    int e = 0;
    socklen_t len = sizeof e;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len);
    return e;
}

static int setup_client(int backlog)
{
    int port = start_server(backlog);
    if (port <= 0) {
        fprintf(stderr, "soak: server did not start\n");
        return -1;
    }
    memset(&srv, 0, sizeof srv);
    srv.sin_family = AF_INET;
    srv.sin_port = htons((uint16_t)port);
    srv.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    usleep(100000);
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Wait until the server's fd count stays the same for 300 ms (at most
 * limit_ms); returns it. */
static int settle_fds(int limit_ms, int target)
{
    int last = fd_count(server_pid), same = 0;
    for (int t = 0; t < limit_ms; t += 50) {
        usleep(50000);
        int n = fd_count(server_pid);
        if (n == target) {
            return n;
        }
        same = n == last ? same + 1 : 0;
        last = n;
        if (target < 0 && same >= 6) {
            break;
        }
    }
    return last;
}

/* L01: N connections, one 32-byte message per second each, for SECS. */
struct c01 {
    int fd;
    int got;
    int inflight;
    int64_t sent;
};

static int l01(void)
{
    long n = envl("SOAK_L01_CONNS", 10000), secs = envl("SOAK_L01_SECONDS", 60);
    long p99_limit_us = envl("SOAK_P99_MS", 10) * 1000;
    struct c01 *c = calloc((size_t)n, sizeof *c);
    size_t cap = (size_t)(n * (secs + 2)), nlat = 0;
    uint32_t *lat = malloc(cap * sizeof *lat);
    long errors = 0, connected = 0;
    char msg[MSG], buf[MSG];
    memset(msg, 'x', sizeof msg);
    if (!c || !lat || setup_client(-1) < 0) {
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    long rss0 = proc_kib((int)server_pid, "VmRSS");
    struct epoll_event evs[512];
    /* Connect, at most 256 in progress at once, within 60 s. */
    long next = 0, pending = 0;
    int64_t dl = now_ns() + 60 * (int64_t)1000000000;
    while ((next < n || pending > 0) && now_ns() < dl) {
        while (next < n && pending < 256) {
            c[next].fd = open_conn(ep, (uint32_t)next);
            if (c[next].fd < 0) {
                errors++;
            } else {
                pending++;
            }
            next++;
        }
        int k = epoll_wait(ep, evs, 512, 100);
        for (int i = 0; i < k; i++) {
            struct c01 *x = &c[evs[i].data.u32];
            pending--;
            if (sock_error(x->fd) != 0) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
                close(x->fd);
                x->fd = -1;
                continue;
            }
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[i].data.u32};
            epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &ev);
            connected++;
        }
    }
    errors += pending;
    usleep(300000);
    long rss1 = proc_kib((int)server_pid, "VmRSS");
    /* Messages: the j-th is due at t0 + j/n s, on connection j % n. */
    int64_t t0 = now_ns(), end = t0 + secs * (int64_t)1000000000;
    long j = 0, total = n * secs;
    while (1) {
        int64_t t = now_ns();
        while (j < total && t0 + (int64_t)((double)j * 1e9 / (double)n) <= t) {
            struct c01 *x = &c[j % n];
            j++;
            if (x->fd < 0) {
                continue;
            }
            if (x->inflight) {
                errors++; /* its last echo took over a second */
                continue;
            }
            if (send(x->fd, msg, MSG, MSG_NOSIGNAL) != MSG) {
                errors++;
                continue;
            }
            x->inflight = 1;
            x->got = 0;
            x->sent = t;
        }
        if (t >= end + 1000000000LL || (j >= total && t >= end)) {
            int busy = 0;
            for (long i = 0; i < n; i++) {
                busy += c[i].inflight;
            }
            if (busy == 0 || t >= end + 1000000000LL) {
                errors += busy;
                break;
            }
        }
        int k = epoll_wait(ep, evs, 512, 1);
        for (int i = 0; i < k; i++) {
            struct c01 *x = &c[evs[i].data.u32];
            if (x->fd < 0) {
                continue;
            }
            ssize_t r = recv(x->fd, buf, (size_t)(MSG - x->got), 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) {
                    continue;
                }
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
                close(x->fd);
                x->fd = -1;
                continue;
            }
            x->got += (int)r;
            if (x->got == MSG && x->inflight) {
                x->inflight = 0;
                if (nlat < cap) {
                    lat[nlat++] = (uint32_t)((now_ns() - x->sent) / 1000);
                }
            }
        }
    }
    long rss2 = proc_kib((int)server_pid, "VmRSS");
    for (long i = 0; i < n; i++) {
        if (c[i].fd >= 0) {
            close(c[i].fd);
        }
    }
    close(ep);
    stop_server();
    qsort(lat, nlat, sizeof *lat, cmp_u32);
    uint32_t p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[nlat * 99 / 100] : 0,
             mx = nlat ? lat[nlat - 1] : 0;
    long grown = rss2 > rss1 ? rss2 : rss1;
    double per = connected ? (double)(grown - rss0) / (double)connected : 0;
    int ok = errors == 0 && connected == n && p99 <= p99_limit_us &&
             per <= STACK_KIB + 16 && (long)nlat == total;
    printf("L01 conns=%ld secs=%ld msgs=%zu errors=%ld p50_us=%u p99_us=%u "
           "max_us=%u rss_base_kib=%ld rss_kib=%ld per_conn_kib=%.1f "
           "(limit %d) %s\n",
           connected, secs, nlat, errors, p50, p99, mx, rss0, grown, per,
           STACK_KIB + 16, ok ? "PASS" : "FAIL");
    free(c);
    free(lat);
    return ok ? 0 : 1;
}

/* L02: CYCLES connect/close cycles, 100 in parallel. */
static int churn(int ep, int *fds, long cycles, long *errors)
{
    long started = 0, done = 0;
    struct epoll_event evs[128];
    int64_t dl = now_ns() + 400 * (int64_t)1000000000;
    for (int i = 0; i < 100 && started < cycles; i++, started++) {
        fds[i] = open_conn(ep, (uint32_t)i);
        if (fds[i] < 0) {
            (*errors)++;
            return -1;
        }
    }
    while (done < cycles && now_ns() < dl) {
        int k = epoll_wait(ep, evs, 128, 1000);
        for (int i = 0; i < k; i++) {
            uint32_t id = evs[i].data.u32;
            if (sock_error(fds[id]) != 0) {
                (*errors)++;
            }
            close(fds[id]); /* SO_LINGER {1, 0}: a reset */
            fds[id] = -1;
            done++;
            if (started < cycles) {
                started++;
                fds[id] = open_conn(ep, id);
                if (fds[id] < 0) {
                    (*errors)++;
                    done++;
                }
            }
        }
    }
    return done >= cycles ? 0 : -1;
}

static int l02(void)
{
    long cycles = envl("SOAK_L02_CYCLES", 1000000), errors = 0;
    int fds[100];
    if (setup_client(-1) < 0) {
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int fd_idle = fd_count(server_pid);
    /* Warm-up: the stack cache and the allocator reach their steady
     * state; the baseline is taken after it. */
    churn(ep, fds, 10000, &errors);
    int fd0 = settle_fds(5000, fd_idle);
    long rss0 = proc_kib((int)server_pid, "VmRSS");
    int64_t t0 = now_ns();
    int r = churn(ep, fds, cycles, &errors);
    double secs = (double)(now_ns() - t0) / 1e9;
    int fd1 = settle_fds(10000, fd0);
    usleep(200000);
    long rss1 = proc_kib((int)server_pid, "VmRSS");
    close(ep);
    stop_server();
    int ok = r == 0 && errors == 0 && fd1 == fd0 && rss1 - rss0 < 1024;
    printf("L02 cycles=%ld parallel=100 secs=%.1f rate_per_s=%.0f errors=%ld "
           "fds_base=%d fds_after=%d rss_base_kib=%ld rss_after_kib=%ld "
           "(client close: SO_LINGER {1,0}) %s\n",
           cycles, secs, (double)cycles / secs, errors, fd0, fd1, rss0, rss1,
           ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}

/* L07: N connects at once against backlog 128. */
static int l07(void)
{
    long n = envl("SOAK_L07_CONNS", 10000);
    long accepted = 0, refused = 0, errors = 0, open_failed = 0;
    int *fds = malloc((size_t)n * sizeof *fds);
    char *state = calloc((size_t)n, 1);
    if (!fds || !state || setup_client(128) < 0) {
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    long cpu0 = cpu_ms(server_pid);
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        fds[i] = open_conn(ep, (uint32_t)i);
        if (fds[i] < 0) {
            if (errno == ECONNREFUSED) {
                refused++;
            } else {
                open_failed++;
            }
        }
    }
    double issue_s = (double)(now_ns() - t0) / 1e9;
    long left = n - refused - open_failed;
    struct epoll_event evs[512];
    int64_t dl = t0 + 60 * (int64_t)1000000000;
    while (left > 0 && now_ns() < dl) {
        int k = epoll_wait(ep, evs, 512, 100);
        for (int i = 0; i < k; i++) {
            uint32_t id = evs[i].data.u32;
            int fd = fds[id], fin = 0;
            if (state[id] == 0) {
                int e = sock_error(fd);
                if (e == 0 && send(fd, "a", 1, MSG_NOSIGNAL) == 1) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = id};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
                    state[id] = 1;
                } else if (e == ECONNREFUSED || e == ECONNRESET ||
                           errno == ECONNRESET) {
                    refused++;
                    fin = 1;
                } else {
                    errors++;
                    fin = 1;
                }
            } else {
                char b;
                ssize_t r = recv(fd, &b, 1, 0);
                if (r == 1) {
                    accepted++; /* the server's task echoed: accepted */
                    fin = 1;
                } else if (r < 0 && errno == EAGAIN) {
                    continue;
                } else {
                    refused++; /* reset by the server's kernel */
                    fin = 1;
                }
            }
            if (fin) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                fds[id] = -1;
                left--;
            }
        }
    }
    double storm_s = (double)(now_ns() - t0) / 1e9;
    long cpu1 = cpu_ms(server_pid);
    errors += left + open_failed;
    for (long i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    close(ep);
    /* No busy loop: the server idles once the storm is over. */
    usleep(500000);
    long cpu2 = cpu_ms(server_pid);
    usleep(1000000);
    long idle_ms = cpu_ms(server_pid) - cpu2;
    stop_server();
    int ok = errors == 0 && accepted + refused == n && idle_ms < 50;
    printf("L07 connects=%ld backlog=128 issued_in_s=%.2f storm_s=%.2f "
           "accepted=%ld refused=%ld errors=%ld server_cpu_ms=%ld "
           "server_idle_cpu_ms_per_s=%ld %s\n",
           n, issue_s, storm_s, accepted, refused, errors, cpu1 - cpu0,
           idle_ms, ok ? "PASS" : "FAIL");
    free(fds);
    free(state);
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* L04: one usock_sendall of 2 GiB + 1 byte.                            */

#ifdef HAVE_SOAK_OPENSSL
struct l04 {
    unsigned char *buf;
    size_t len;
    int port;
    int rc, err;
};

static void sender(void *arg)
{
    struct l04 *x = arg;
    usock_addr_t a;
    usock_t *c = usock_socket(AF_INET, SOCK_STREAM, 0);
    x->rc = -1;
    if (c && usock_setsockopt_int(c, SOL_SOCKET, SO_SNDBUF, 65536) == 0 &&
        usock_addr_ip(&a, "127.0.0.1", x->port) == 0 &&
        usock_connect(c, &a) == 0) {
        x->rc = usock_sendall(c, x->buf, x->len);
    }
    x->err = errno;
    usock_close(c);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void hex(const unsigned char *d, char *out)
{
    for (int i = 0; i < 32; i++) {
        sprintf(out + 2 * i, "%02x", d[i]);
    }
}

static int l04(void)
{
    size_t len = (size_t)envl("SOAK_L04_BYTES", (2L << 30) + 1);
    static unsigned char rbuf[1 << 18];
    struct l04 x = {.len = len};
    usock_addr_t a;
    x.buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (x.buf == MAP_FAILED) {
        printf("SKIP: L04: no memory for %zu bytes\n", len);
        return 77;
    }
    for (size_t i = 0; i + 8 <= len; i += 8) {
        uint64_t r = next_rand();
        memcpy(x.buf + i, &r, 8);
    }
    x.buf[len - 1] = 0xa5;
    unsigned char md_s[32], md_r[32];
    unsigned int mdlen;
    EVP_Digest(x.buf, len, md_s, &mdlen, EVP_sha256(), NULL);

    usock_t *l = usock_socket(AF_INET, SOCK_STREAM, 0);
    if (!l || usock_setsockopt_int(l, SOL_SOCKET, SO_RCVBUF, 65536) < 0 ||
        usock_addr_ip(&a, "127.0.0.1", 0) < 0 || usock_bind(l, &a) < 0 ||
        usock_listen(l, 8) < 0 || usock_getsockname(l, &a) < 0) {
        perror("L04 listen");
        return 1;
    }
    x.port = usock_addr_port(&a);
    int64_t t0 = now_ns();
    int task = usock_spawn(sender, &x);
    usock_t *c = task > 0 ? usock_accept(l, NULL) : NULL;
    if (!c) {
        perror("L04 accept");
        return 1;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    size_t total = 0;
    long nrecv = 0, nread = 0, failed = 0;
    for (;;) {
        uint64_t r = next_rand();
        size_t n = 1 + (size_t)((r >> 8) % ((size_t)1 << (r % 19)));
        ssize_t got;
        if (r & 0x80) {
            got = usock_read(c, rbuf, n);
            nread++;
        } else {
            got = usock_recv(c, rbuf, n);
            nrecv++;
        }
        if (got < 0) {
            failed = errno;
            break;
        }
        if (got == 0) {
            break;
        }
        EVP_DigestUpdate(md, rbuf, (size_t)got);
        total += (size_t)got;
    }
    EVP_DigestFinal_ex(md, md_r, &mdlen);
    EVP_MD_CTX_free(md);
    usock_join(task, 10);
    double secs = (double)(now_ns() - t0) / 1e9;
    usock_close(c);
    usock_close(l);
    char hs[65], hr[65];
    hex(md_s, hs);
    hex(md_r, hr);
    int ok = x.rc == 0 && failed == 0 && total == len &&
             memcmp(md_s, md_r, 32) == 0;
    printf("L04 bytes=%zu received=%zu secs=%.1f MB_per_s=%.0f recv_calls=%ld "
           "read_calls=%ld sendall=%d%s%s sha256_sent=%.16s… sha256_recv=%.16s… %s\n",
           len, total, secs, (double)total / secs / 1e6, nrecv, nread, x.rc,
           x.rc ? "/" : "", x.rc ? strerror(x.err) : "", hs, hr,
           ok ? "PASS" : "FAIL");
    munmap(x.buf, len);
    return ok ? 0 : 1;
}
#else
static int l04(void)
{
    printf("SKIP: L04: built without OpenSSL (its SHA-256)\n");
    return 77;
}
#endif

/* ------------------------------------------------------------------ */
/* L08: 10^6 tasks sleep a random 0-10 s (one thread, one hub).          */

static double *l08_dur, *l08_t0, *l08_wake, *l08_started;
static int *l08_seq, *l08_woken;
static long l08_n, l08_nstarted, l08_nwoken, l08_failed, l08_rss_peak;

static void l08_task(void *arg)
{
    long i = (long)(intptr_t)arg, seq = l08_nstarted++;
    double t0 = usock_now();

    l08_seq[i] = (int)seq;
    l08_started[seq] = t0;
    l08_t0[i] = t0;
    if (l08_nstarted == l08_n) {
        l08_rss_peak = proc_kib((int)getpid(), "VmRSS");
    }
    if (usock_sleep(l08_dur[i]) != 0) {
        l08_failed++;
    }
    l08_wake[i] = usock_now();
    l08_woken[l08_nwoken++] = (int)i;
}

static int l08(void)
{
    long n = envl("SOAK_L08_TASKS", 1000000);
    double span = (double)envl("SOAK_L08_SECONDS", 10);
    size_t d = sizeof(double), k = sizeof(int);
    l08_n = n;
    l08_dur = malloc((size_t)n * d);
    l08_t0 = malloc((size_t)n * d);
    l08_wake = malloc((size_t)n * d);
    l08_started = malloc((size_t)(n + 1) * d);
    l08_seq = malloc((size_t)n * k);
    l08_woken = malloc((size_t)n * k);
    if (!l08_dur || !l08_t0 || !l08_wake || !l08_started || !l08_seq ||
        !l08_woken) {
        printf("SKIP: L08: no memory for the records of %ld tasks\n", n);
        return 77;
    }
    uint64_t r = 0x2545f4914f6cdd1dULL;
    for (long i = 0; i < n; i++) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        l08_dur[i] = span * (double)(r >> 11) / 9007199254740992.0;
    }
    long rss0 = proc_kib((int)getpid(), "VmRSS");
    int64_t t0 = now_ns();
    long spawned = 0;
    for (; spawned < n; spawned++) {
        if (usock_spawn(l08_task, (void *)(intptr_t)spawned) <= 0) {
            break;
        }
    }
    if (spawned < n) {
        /* Report what the machine holds, then let those run. */
        printf("L08: spawn %ld failed: %s; running %ld tasks\n", spawned + 1,
               strerror(errno), spawned);
        l08_n = n = spawned;
    }
    usock_run();
    double secs = (double)(now_ns() - t0) / 1e9;
    /* As tests/check_load.c: a task's deadline, read by the library inside
     * usock_sleep, lies in [t0_i + d_i, t0_next + d_i]. */
    long early = 0, bad = 0;
    double maxlo = -1, late = 0;
    l08_started[n] = 1e300;
    for (long j = 0; j < l08_nwoken; j++) {
        int i = l08_woken[j];
        double lo = l08_t0[i] + l08_dur[i];
        double hi = l08_started[l08_seq[i] + 1] + l08_dur[i];
        early += l08_wake[i] < lo - 1e-9;
        late = l08_wake[i] - lo > late ? l08_wake[i] - lo : late;
        bad += hi < maxlo;
        maxlo = lo > maxlo ? lo : maxlo;
    }
    int ok = spawned == envl("SOAK_L08_TASKS", 1000000) && l08_failed == 0 &&
             l08_nwoken == n && early == 0 && bad == 0;
    printf("L08 tasks=%ld sleep_s=0-%.0f secs=%.1f fired=%ld failed=%ld "
           "early=%ld out_of_order=%ld max_late_ms=%.1f rss_base_kib=%ld "
           "rss_peak_kib=%ld per_task_kib=%.2f %s\n",
           n, span, secs, l08_nwoken, l08_failed, early, bad, late * 1e3,
           rss0, l08_rss_peak,
           n ? (double)(l08_rss_peak - rss0) / (double)n : 0.0,
           ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* L09: 10k connections whose peers never read each send 1 MiB with a    */
/* 5 s timeout.  The peers are a forked plain process that accepts and   */
/* holds them (so each process needs 10k fds, not 20k).                  */

#define L09_BYTES (1 << 20)

struct l09 {
    usock_t *c;
    ssize_t rc;
    int err;
    double took;
};

static unsigned char l09_src[L09_BYTES];
static long l09_rss_mid;

static void l09_task(void *arg)
{
    struct l09 *x = arg;
    double t0 = usock_now();
    errno = 0;
    x->rc = usock_write(x->c, l09_src, L09_BYTES);
    x->err = errno;
    x->took = usock_now() - t0;
}

static void l09_probe(void *arg)
{
    usock_sleep(*(const double *)arg / 2);
    l09_rss_mid = proc_kib((int)getpid(), "VmRSS");
}

static int l09(void)
{
    long n = conns_within_nofile("L09", envl("SOAK_L09_CONNS", 10000));
    double timeout = (double)envl("SOAK_L09_TIMEOUT", 5);
    int p[2], port = -1, one = 1, small = 16384;
    if (pipe(p) != 0) {
        return 1;
    }
    if (fork_peer() == 0) {
        /* The peers: accept everything, never read. */
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 ||
            listen(l, 4096) != 0 ||
            getsockname(l, (struct sockaddr *)&a, &len) != 0) {
            _exit(1);
        }
        port = ntohs(a.sin_port);
        if (write(p[1], &port, sizeof port) != (ssize_t)sizeof port) {
            _exit(1);
        }
        for (;;) {
            if (accept4(l, NULL, NULL, SOCK_CLOEXEC) < 0 && errno != EINTR) {
                usleep(1000);
            }
        }
    }
    close(p[1]);
    if (server_pid < 0 || read(p[0], &port, sizeof port) != (ssize_t)sizeof port) {
        printf("L09: the peer process did not start\n");
        stop_server();
        return 1;
    }
    close(p[0]);
    struct l09 *x = calloc((size_t)n, sizeof *x);
    usock_addr_t a;
    long errors = 0;
    if (!x || usock_addr_ip(&a, "127.0.0.1", port) != 0) {
        stop_server();
        return 1;
    }
    for (long i = 0; i < n; i++) {
        x[i].c = usock_socket(AF_INET, SOCK_STREAM, 0);
        if (!x[i].c ||
            usock_setsockopt_int(x[i].c, SOL_SOCKET, SO_SNDBUF, small) != 0 ||
            usock_settimeout(x[i].c, 10.0) != 0 ||
            usock_connect(x[i].c, &a) != 0) {
            printf("L09: connection %ld: %s\n", i, strerror(errno));
            stop_server();
            return 1;
        }
        usock_setsockopt_int(x[i].c, IPPROTO_TCP, TCP_NODELAY, one);
    }
    memset(l09_src, 'x', sizeof l09_src);
    long rss0 = proc_kib((int)getpid(), "VmRSS");
    for (long i = 0; i < n; i++) {
        usock_settimeout(x[i].c, timeout);
        if (usock_spawn(l09_task, &x[i]) <= 0) {
            errors++;
        }
    }
    usock_spawn(l09_probe, &timeout);
    int64_t t0 = now_ns();
    usock_run();
    double secs = (double)(now_ns() - t0) / 1e9;
    long not_timedout = 0, bad_count = 0;
    double bytes = 0, least = 1e9, most = 0;
    for (long i = 0; i < n; i++) {
        int out = 0;
        ioctl(usock_fileno(x[i].c), SIOCOUTQ, &out);
        not_timedout += x[i].err != ETIMEDOUT || x[i].rc <= 0 ||
                        x[i].rc >= L09_BYTES;
        /* What went out and is not in our queue was delivered to the
         * peer's kernel: at least the unacked part is ours. */
        bad_count += x[i].rc < out;
        bytes += x[i].rc > 0 ? (double)x[i].rc : 0;
        least = x[i].took < least ? x[i].took : least;
        most = x[i].took > most ? x[i].took : most;
        usock_close(x[i].c);
    }
    stop_server();
    long cap_kib = 64; /* the read buffer's bound, per connection */
    int ok = errors == 0 && not_timedout == 0 && bad_count == 0 &&
             least >= timeout - 1e-6 && most <= timeout + 1.0 &&
             l09_rss_mid - rss0 <= n * cap_kib;
    printf("L09 conns=%ld bytes_each=%d timeout_s=%.0f secs=%.1f "
           "not_etimedout=%ld mean_sent_kib=%.1f took_s=%.3f-%.3f "
           "rss_base_kib=%ld rss_waiting_kib=%ld limit_kib=%ld %s\n",
           n, L09_BYTES, timeout, secs, not_timedout, bytes / 1024.0 / (double)n,
           least, most, rss0, l09_rss_mid, n * cap_kib, ok ? "PASS" : "FAIL");
    free(x);
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* S04: 10,000 connections each receive an unread 1 MB burst; the     */
/* library holds at most its read-buffer cap per connection.          */

#define S04_BURST (1 << 20)

/* The peers (a forked plain process): n connections to port, then one
 * non-blocking 1 MiB send on each (as much as the kernel takes); the
 * total sent goes to wfd, then it waits to be killed. */
static void s04_peers(long n, int port, int wfd)
{
    static char burst[S04_BURST];
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int *fd = calloc((size_t)n, sizeof *fd);
    long long sent = 0;

    memset(burst, 'z', sizeof burst); /* no newline */
    if (!fd) {
        _exit(1);
    }
    for (long i = 0; i < n; i++) {
        fd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd[i] < 0 ||
            connect(fd[i], (struct sockaddr *)&sa, sizeof sa) != 0) {
            _exit(1);
        }
    }
    for (long i = 0; i < n; i++) {
        ssize_t k = send(fd[i], burst, sizeof burst,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        sent += k > 0 ? k : 0;
    }
    if (write(wfd, &sent, sizeof sent) != (ssize_t)sizeof sent) {
        _exit(1);
    }
    for (;;) {
        pause();
    }
}

static int s04(void)
{
    long n = conns_within_nofile("S04", envl("SOAK_S04_CONNS", 10000));
    long cap_kib = 64; /* the read buffer's bound, per connection */
    usock_addr_t a;
    usock_t *l = usock_socket(AF_INET, SOCK_STREAM, 0), **s;
    int p[2];

    if (!l || usock_addr_ip(&a, "127.0.0.1", 0) != 0 ||
        usock_bind(l, &a) != 0 || usock_listen(l, 4096) != 0 ||
        usock_getsockname(l, &a) != 0 || pipe(p) != 0) {
        printf("S04: listener: %s\n", strerror(errno));
        return 1;
    }
    if (fork_peer() == 0) {
        close(p[0]);
        s04_peers(n, usock_addr_port(&a), p[1]);
    }
    close(p[1]);
    s = calloc((size_t)n, sizeof *s);
    if (server_pid < 0 || !s || usock_settimeout(l, 10.0) != 0) {
        printf("S04: the peer process did not start\n");
        stop_server();
        return 1;
    }
    for (long i = 0; i < n; i++) {
        s[i] = usock_accept(l, NULL);
        if (!s[i]) {
            printf("S04: accept %ld: %s\n", i, strerror(errno));
            stop_server();
            return 1;
        }
    }
    long long sent = 0, unread = 0;
    if (read(p[0], &sent, sizeof sent) != (ssize_t)sizeof sent) {
        printf("S04: the peers did not send\n");
        stop_server();
        return 1;
    }
    close(p[0]);
    /* One small readline each: 127 bytes, no newline in the burst. */
    long rss0 = proc_kib((int)getpid(), "VmRSS"), short_reads = 0;
    char line[128];
    for (long i = 0; i < n; i++) {
        int q = 0;
        usock_settimeout(s[i], 5.0);
        short_reads += usock_readline(s[i], line, sizeof line) !=
                       (ssize_t)sizeof line - 1;
        ioctl(usock_fileno(s[i]), FIONREAD, &q);
        unread += q;
    }
    long rss1 = proc_kib((int)getpid(), "VmRSS");
    for (long i = 0; i < n; i++) {
        usock_close(s[i]);
    }
    usock_close(l);
    stop_server();
    free(s);
    int ok = short_reads == 0 && rss1 - rss0 <= n * cap_kib;
    printf("S04 conns=%ld burst_b=%d mean_sent_kib=%.1f "
           "mean_unread_in_kernel_kib=%.1f readline_b=%zu short_reads=%ld "
           "rss_before_kib=%ld rss_after_kib=%ld growth_kib_per_conn=%.2f "
           "limit_kib=%ld %s\n",
           n, S04_BURST, (double)sent / 1024.0 / (double)n,
           (double)unread / 1024.0 / (double)n, sizeof line - 1, short_reads,
           rss0, rss1, (double)(rss1 - rss0) / (double)n, n * cap_kib,
           ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (argc == 2 && strcmp(argv[1], "l01") == 0) {
        return l01();
    }
    if (argc == 2 && strcmp(argv[1], "l02") == 0) {
        return l02();
    }
    if (argc == 2 && strcmp(argv[1], "l04") == 0) {
        return l04();
    }
    if (argc == 2 && strcmp(argv[1], "l07") == 0) {
        return l07();
    }
    if (argc == 2 && strcmp(argv[1], "l08") == 0) {
        return l08();
    }
    if (argc == 2 && strcmp(argv[1], "l09") == 0) {
        return l09();
    }
    if (argc == 2 && strcmp(argv[1], "s04") == 0) {
        return s04();
    }
    fprintf(stderr, "usage: soak l01|l02|l04|l07|l08|l09|s04\n");
    return 2;
}

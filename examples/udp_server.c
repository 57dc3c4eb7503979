/*
 * udp_server: the UDP server of the Python socket tutorial.
 *
 *     udp_server [-q] PORT
 *
 * It binds 127.0.0.1:PORT (0 picks a free port) and prints "bind udp on
 * PORT..." once it has.  For each datagram d (up to 1024 bytes) from
 * IP:PORT it prints "received from IP:PORT." and sends "hello,d!" back.
 * -q stops the per-datagram lines.  SIGINT or SIGTERM stop the server: it
 * closes the socket and exits 0.
 *
 * Try it with udp_client, or `echo -n abc | socat - UDP:127.0.0.1:PORT`.
 */
#include <usocket.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DATAGRAM 1024

static volatile sig_atomic_t stop;
static int quiet;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* SIGINT and SIGTERM set `stop`; recvfrom's timeout lets main see it. */
static int install_handlers(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
        perror("sigaction");
        return -1;
    }
    return 0;
}

/* A UDP socket bound to 127.0.0.1:port, announced on stdout. */
static usock_t *bind_on(int port)
{
    usock_addr_t a;
    usock_t *s = usock_socket(AF_INET, SOCK_DGRAM, 0);

    if (s == NULL) {
        perror("udp_server: socket");
        return NULL;
    }
    if (usock_addr_ip(&a, "127.0.0.1", port) < 0 || usock_bind(s, &a) < 0 ||
        usock_settimeout(s, 0.2) < 0 || usock_getsockname(s, &a) < 0 ||
        (port = usock_addr_port(&a)) < 0) {
        perror("udp_server: bind");
        usock_close(s);
        return NULL;
    }
    printf("bind udp on %d...\n", port);
    fflush(stdout);
    return s;
}

/* Answer one datagram d from `from` with "hello,d!". */
static void answer(usock_t *s, const char *d, size_t n,
                   const usock_addr_t *from)
{
    char reply[sizeof "hello,!" + MAX_DATAGRAM];
    char who[128];

    if (usock_addr_format(from, who, sizeof who) == NULL) {
        snprintf(who, sizeof who, "?");
    }
    if (!quiet) {
        printf("received from %s.\n", who);
    }
    memcpy(reply, "hello,", 6);
    memcpy(reply + 6, d, n);
    reply[6 + n] = '!';
    if (usock_sendto(s, reply, n + 7, from) < 0) {
        fprintf(stderr, "udp_server: sendto %s: %s\n", who, strerror(errno));
    }
}

/* Serve until a signal (0) or an error that will not go away (-1). */
static int serve(usock_t *s)
{
    char buf[MAX_DATAGRAM];
    usock_addr_t from;

    while (!stop) {
        ssize_t n = usock_recvfrom(s, buf, sizeof buf, &from);
        int e = errno;

        if (n >= 0) {
            answer(s, buf, (size_t)n, &from);
            continue;
        }
        if (e == ETIMEDOUT || e == EINTR) {
            continue;
        }
        /* Other errors (an ICMP error of an earlier reply ...) are reported
         * and the server goes on. */
        fprintf(stderr, "udp_server: recvfrom: %s\n", strerror(e));
        if (e == EBADF || e == EINVAL || e == ECANCELED) {
            return -1;
        }
    }
    return 0;
}

/* Parse "[-q] PORT"; returns the port, or -1 after printing the usage. */
static int parse_args(int argc, char **argv)
{
    char *end;
    long port;
    int i = 1;

    if (i < argc && strcmp(argv[i], "-q") == 0) {
        quiet = 1;
        i++;
    }
    if (argc - i != 1) {
        goto usage;
    }
    errno = 0;
    port = strtol(argv[i], &end, 10);
    if (errno != 0 || end == argv[i] || *end != '\0' || port < 0 ||
        port > 65535) {
        goto usage;
    }
    return (int)port;
usage:
    fprintf(stderr, "usage: %s [-q] PORT   (PORT 0 picks a free port)\n",
            argv[0]);
    return -1;
}

int main(int argc, char **argv)
{
    int port = parse_args(argc, argv);
    usock_t *s;
    int rc;

    if (port < 0) {
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (install_handlers() < 0 || (s = bind_on(port)) == NULL) {
        return 1;
    }
    rc = serve(s);
    if (usock_close(s) < 0) {
        perror("udp_server: close");
        rc = -1;
    }
    return rc < 0 ? 1 : 0;
}

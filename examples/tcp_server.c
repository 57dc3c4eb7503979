/*
 * tcp_server: the Waffle Nano TCP server of the usocket documentation.
 *
 *     tcp_server [-q] PORT
 *
 * It listens on 127.0.0.1:PORT (backlog 5; 0 picks a free port) and prints
 * "listening on 127.0.0.1:PORT" once it does.  Then, for each client: accept
 * the connection, read one line from standard input (the seed's input()),
 * send it without its trailing newline, and close the connection.  At the
 * end of standard input it exits 0.  -q stops the per-connection lines.
 * SIGINT or SIGTERM stop the server: it closes the listener and exits 0.
 *
 * Try it with `tcp_client -r PORT`, or the seed's client in CPython.
 */
#include <usocket.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t stop;
static int quiet;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* SIGINT and SIGTERM set `stop`; accept's timeout lets main see it.  No
 * SA_RESTART, so a read of standard input is interrupted too. */
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

/* A listening socket on 127.0.0.1:port, announced on stdout. */
static usock_t *listen_on(int port)
{
    usock_addr_t a;
    char name[64];
    usock_t *s = usock_socket(AF_INET, SOCK_STREAM, 0);

    if (s == NULL) {
        perror("tcp_server: socket");
        return NULL;
    }
    if (usock_setsockopt_int(s, SOL_SOCKET, SO_REUSEADDR, 1) < 0 ||
        usock_addr_ip(&a, "127.0.0.1", port) < 0 || usock_bind(s, &a) < 0 ||
        usock_listen(s, 5) < 0 || usock_settimeout(s, 0.2) < 0 ||
        usock_getsockname(s, &a) < 0 ||
        usock_addr_format(&a, name, sizeof name) == NULL) {
        perror("tcp_server: listen");
        usock_close(s);
        return NULL;
    }
    printf("listening on %s\n", name);
    fflush(stdout);
    return s;
}

/* Wait for a client, waking every 0.2 s to look at `stop`.  NULL when
 * stopped or on an error that will not go away (after printing it). */
static usock_t *next_client(usock_t *s, char *who, size_t n)
{
    usock_addr_t peer;

    while (!stop) {
        usock_t *c = usock_accept(s, &peer);
        int e = errno;

        if (c != NULL) {
            if (usock_addr_format(&peer, who, n) == NULL) {
                snprintf(who, n, "?");
            }
            return c;
        }
        if (e == ETIMEDOUT || e == ECONNABORTED || e == EINTR) {
            continue;
        }
        fprintf(stderr, "tcp_server: accept: %s\n", strerror(e));
        if (e == EBADF || e == EINVAL || e == ECANCELED) {
            return NULL;
        }
    }
    return NULL;
}

/* Send the line (without its newline) to c.  A client that went away is
 * reported, not fatal. */
static void answer(usock_t *c, const char *who, char *line, ssize_t len)
{
    if (len > 0 && line[len - 1] == '\n') {
        line[--len] = '\0';
    }
    if (usock_sendall(c, line, (size_t)len) < 0) {
        fprintf(stderr, "tcp_server: sending to %s: %s\n", who,
                strerror(errno));
    } else if (!quiet) {
        printf("sent %zd bytes to %s\n", len, who);
    }
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
    fprintf(stderr,
            "usage: %s [-q] PORT   (PORT 0 picks a free port)\n"
            "  Each client gets one line of standard input.\n",
            argv[0]);
    return -1;
}

/* Serve until standard input ends (0), a signal (0) or an error (-1). */
static int serve(usock_t *s)
{
    char who[128], *line = NULL;
    size_t cap = 0;
    int rc = 0;

    for (;;) {
        usock_t *c = next_client(s, who, sizeof who);
        ssize_t len;

        if (c == NULL) {
            rc = stop ? 0 : -1;
            break;
        }
        if (!quiet) {
            printf("Accept new conn from %s\n", who);
        }
        len = getline(&line, &cap, stdin);
        if (len >= 0) {
            answer(c, who, line, len);
        } else if (ferror(stdin) && !stop) {
            perror("tcp_server: standard input");
            rc = -1;
        }
        if (usock_close(c) < 0) {
            perror("tcp_server: close");
        }
        if (len < 0) {
            break;
        }
    }
    free(line);
    return rc;
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
    if (install_handlers() < 0 || (s = listen_on(port)) == NULL) {
        return 1;
    }
    rc = serve(s);
    usock_close(s);
    return rc < 0 ? 1 : 0;
}

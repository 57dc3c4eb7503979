/*
 * tls_echo_server: threaded_echo_server over TLS -- the "one thread per
 * client" server of the Python socket tutorials, with usocket tasks, each
 * client's task running its own TLS handshake (usock_tls_wrap) first.
 *
 *     tls_echo_server [-q] --cert CERT.pem --key KEY.pem PORT
 *
 * A handshake that fails or takes longer than 10 s drops that client only
 * (and prints why, unless -q).
 * It listens on 127.0.0.1:PORT (0 picks a free port) and prints
 * "listening on 127.0.0.1:PORT" once it does.  Each client is greeted with
 * "hello, i am server"; every message m it sends (one recv of up to 1024
 * bytes) is answered with "Loop_msg:" m "!", until it sends "exit", closes
 * the connection or fails.  -q stops the per-connection lines.  SIGINT or
 * SIGTERM stop the server: it closes the listener and exits 0.
 *
 * main is the seed pattern: for (;;) { accept; usock_spawn(deal_client) }.
 */
#include <usocket.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define GREETING "hello, i am server"
#define PREFIX   "Loop_msg:"

static volatile sig_atomic_t stop;
static int quiet;
static usock_tls_t *tls;
static const char *cert, *key;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* Serve one client: greet, then answer each message until "exit". */
static void deal_client(void *arg)
{
    usock_t *c = arg;
    usock_addr_t peer;
    char who[128] = "?";
    char buf[1024], reply[sizeof PREFIX + sizeof buf + 1];
    ssize_t n;

    if (usock_getpeername(c, &peer) == 0) {
        usock_addr_format(&peer, who, sizeof who);
    }
    if (!quiet) {
        printf("Accept new conn from %s\n", who);
    }
    if (usock_settimeout(c, 10) < 0 || usock_tls_wrap(c, tls, NULL) < 0) {
        if (!quiet) {
            const char *why = usock_tls_error(c);
            printf("TLS handshake with %s: %s%s%s\n", who, strerror(errno),
                   why ? ": " : "", why ? why : "");
        }
        goto out;
    }
    usock_settimeout(c, USOCK_NONE);
    if (usock_sendall(c, GREETING, strlen(GREETING)) < 0) {
        goto out;
    }
    while ((n = usock_recv(c, buf, sizeof buf)) > 0) {
        if (n == 4 && memcmp(buf, "exit", 4) == 0) {
            break;
        }
        memcpy(reply, PREFIX, strlen(PREFIX));
        memcpy(reply + strlen(PREFIX), buf, (size_t)n);
        reply[strlen(PREFIX) + (size_t)n] = '!';
        if (usock_sendall(c, reply, strlen(PREFIX) + (size_t)n + 1) < 0) {
            break;
        }
    }
out:
    usock_close(c);
    if (!quiet) {
        printf("conn from %s close.\n", who);
    }
}

/* Raise the soft fd limit to the hard one, so 1,000 clients fit. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            perror("setrlimit");
        }
    }
}

/* SIGINT and SIGTERM set `stop`; accept's timeout lets main see it. */
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
        perror("socket");
        return NULL;
    }
    if (usock_setsockopt_int(s, SOL_SOCKET, SO_REUSEADDR, 1) < 0 ||
        usock_addr_ip(&a, "127.0.0.1", port) < 0 || usock_bind(s, &a) < 0 ||
        usock_listen(s, -1) < 0 || usock_settimeout(s, 0.2) < 0 ||
        usock_getsockname(s, &a) < 0 ||
        usock_addr_format(&a, name, sizeof name) == NULL) {
        perror("listen");
        usock_close(s);
        return NULL;
    }
    printf("listening on %s\n", name);
    fflush(stdout);
    return s;
}

/* Accept errors that will not go away by themselves: stop serving.  The
 * others (EMFILE, ECONNABORTED, ENOMEM ...) are reported and retried. */
static int fatal(int e)
{
    return e == EBADF || e == EINVAL || e == ECANCELED || e == EOPNOTSUPP;
}

/* Parse "[-q] --cert F --key F PORT"; returns the port, or -1 after
 * printing the usage. */
static int parse_args(int argc, char **argv)
{
    char *end;
    long port;
    int i = 1;

    for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        if (strcmp(argv[i], "-q") == 0) {
            quiet = 1;
        } else if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc) {
            cert = argv[++i];
        } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
            key = argv[++i];
        } else {
            goto usage;
        }
    }
    if (argc - i != 1 || !cert || !key) {
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
            "usage: %s [-q] --cert CERT.pem --key KEY.pem PORT   (PORT 0 "
            "picks a free port)\n",
            argv[0]);
    return -1;
}

int main(int argc, char **argv)
{
    int port = parse_args(argc, argv);
    usock_t *s, *c;

    if (port < 0) {
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    raise_nofile();
    tls = usock_tls_new(USOCK_TLS_SERVER);
    if (tls == NULL || usock_tls_load_cert(tls, cert, key) < 0) {
        fprintf(stderr, "tls_echo_server: %s: %s\n", cert, strerror(errno));
        return 1;
    }
    if (install_handlers() < 0 || (s = listen_on(port)) == NULL) {
        return 1;
    }
    while (!stop) {
        c = usock_accept(s, NULL);
        if (c == NULL) {
            int e = errno;

            if (e == ETIMEDOUT) {
                continue;
            }
            fprintf(stderr, "accept: %s\n", strerror(e));
            if (fatal(e)) {
                usock_close(s);
                return 1;
            }
            continue;
        }
        if (usock_spawn(deal_client, c) < 0) {
            fprintf(stderr, "spawn: %s\n", strerror(errno));
            usock_close(c);
        }
    }
    usock_close(s);
    usock_tls_free(tls);
    return 0;
}

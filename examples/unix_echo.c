/*
 * unix_echo: an echo server and client over AF_UNIX stream sockets.
 *
 *     unix_echo [-s] ADDRESS
 *
 * ADDRESS is a filesystem path, or "@name" for a Linux abstract name.
 *
 * With -s it only serves: it prints "listening on ADDRESS", then echoes
 * every client's bytes back until the client closes, one task per client.
 * SIGINT or SIGTERM stop it: it removes the socket file (not an abstract
 * name) and exits 0.
 *
 * Without -s it does both in one process: a server task and a client task
 * that sends "hello\n", "unix\n" and "sockets\n" and prints each line that
 * comes back, then it removes the socket file and exits 0:
 *
 *     hello
 *     unix
 *     sockets
 *
 * Exit status: 0 on success, 1 on any error, 2 on bad arguments.
 */
#include <usocket.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static const char *address;
static int client_failed;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* SIGINT and SIGTERM set `stop`; accept's timeout lets the server see it. */
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

/* Echo one client's bytes until it closes. */
static void echo(void *arg)
{
    usock_t *c = arg;
    char buf[4096];
    ssize_t n;

    while ((n = usock_recv(c, buf, sizeof buf)) > 0) {
        if (usock_sendall(c, buf, (size_t)n) < 0) {
            break;
        }
    }
    if (n < 0 && errno != ECONNRESET && errno != ECANCELED) {
        fprintf(stderr, "unix_echo: echo: %s\n", strerror(errno));
    }
    usock_close(c);
}

/* A socket listening on `address`, or NULL after printing why. */
static usock_t *listen_on(void)
{
    usock_addr_t a;
    usock_t *s;

    if (usock_addr_unix(&a, address) < 0) {
        fprintf(stderr, "unix_echo: %s: %s\n", address, strerror(errno));
        return NULL;
    }
    if ((s = usock_socket(AF_UNIX, SOCK_STREAM, 0)) == NULL) {
        perror("unix_echo: socket");
        return NULL;
    }
    if (usock_bind(s, &a) < 0 || usock_listen(s, -1) < 0 ||
        usock_settimeout(s, 0.2) < 0) {
        fprintf(stderr, "unix_echo: listen on %s: %s\n", address,
                strerror(errno));
        usock_close(s);
        return NULL;
    }
    return s;
}

/* Accept clients, one echo task each, until a signal or a cancel. */
static void serve(void *arg)
{
    usock_t *s = arg;

    while (!stop) {
        usock_t *c = usock_accept(s, NULL);
        int e = errno;

        if (c == NULL) {
            if (e == ETIMEDOUT || e == ECONNABORTED || e == EINTR) {
                continue;
            }
            if (e == ECANCELED) {
                return;
            }
            fprintf(stderr, "unix_echo: accept: %s\n", strerror(e));
            if (e == EBADF || e == EINVAL) {
                return;
            }
            continue;
        }
        if (usock_spawn(echo, c) < 0) {
            fprintf(stderr, "unix_echo: spawn: %s\n", strerror(errno));
            usock_close(c);
        }
    }
}

/* The client task: send three lines, print each echo. */
static void client(void *arg)
{
    static const char *const lines[] = {"hello\n", "unix\n", "sockets\n"};
    char buf[64];
    usock_addr_t a;
    usock_t *c = usock_socket(AF_UNIX, SOCK_STREAM, 0);
    size_t i;

    (void)arg;
    client_failed = 1;
    if (c == NULL || usock_settimeout(c, 10) < 0 ||
        usock_addr_unix(&a, address) < 0 || usock_connect(c, &a) < 0) {
        fprintf(stderr, "unix_echo: connect: %s\n", strerror(errno));
        goto out;
    }
    for (i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        ssize_t n;

        if (usock_sendall(c, lines[i], strlen(lines[i])) < 0 ||
            (n = usock_readline(c, buf, sizeof buf)) < 0) {
            fprintf(stderr, "unix_echo: client: %s\n", strerror(errno));
            goto out;
        }
        if (n == 0) {
            fprintf(stderr, "unix_echo: client: the server closed\n");
            goto out;
        }
        fwrite(buf, 1, (size_t)n, stdout);
    }
    client_failed = 0;
out:
    if (c != NULL) {
        usock_close(c);
    }
}

/* Parse "[-s] ADDRESS"; returns 1 for -s, 0 without, -1 after the usage. */
static int parse_args(int argc, char **argv)
{
    int serve_only = argc == 3 && strcmp(argv[1], "-s") == 0;

    if (argc != 2 + serve_only || argv[argc - 1][0] == '\0' ||
        argv[argc - 1][0] == '-') {
        fprintf(stderr,
                "usage: %s [-s] ADDRESS   (a path, or @name for an abstract "
                "name)\n"
                "  -s: serve only; without it, serve and run a client\n",
                argv[0]);
        return -1;
    }
    address = argv[argc - 1];
    return serve_only;
}

/* Serve and talk to ourselves: the client task, then stop the server. */
static int demo(usock_t *s)
{
    int server = usock_spawn(serve, s);
    int talker = server < 0 ? -1 : usock_spawn(client, NULL);

    if (talker < 0) {
        perror("unix_echo: spawn");
        if (server > 0) {
            usock_cancel(server);
        }
        usock_run();
        return -1;
    }
    if (usock_join(talker, USOCK_NONE) < 0 || usock_cancel(server) < 0 ||
        usock_run() < 0) {
        perror("unix_echo: join");
        return -1;
    }
    return client_failed ? -1 : 0;
}

int main(int argc, char **argv)
{
    int serve_only = parse_args(argc, argv);
    usock_t *s;
    int rc = 0;

    if (serve_only < 0) {
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (install_handlers() < 0 || (s = listen_on()) == NULL) {
        return 1;
    }
    if (serve_only) {
        printf("listening on %s\n", address);
        fflush(stdout);
        serve(s);
    } else {
        rc = demo(s);
    }
    usock_close(s);
    if (address[0] != '@' && unlink(address) < 0) {
        perror("unix_echo: unlink");
        rc = -1;
    }
    return rc < 0 ? 1 : 0;
}

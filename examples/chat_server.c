/*
 * chat_server: a line-based broadcast chat server written with channels.
 *
 *     chat_server [-q] [-n QUEUE] [-g GRACE] PORT
 *
 * It listens on 127.0.0.1:PORT (0 picks a free port) and prints
 * "listening on 127.0.0.1:PORT" once it does.  Every line a client sends
 * goes to every other client as "[N] line", where N is the sender's number
 * (the server also announces "* N joined" and "* N left").
 *
 * Each client has two tasks and a bounded queue (a channel of QUEUE lines,
 * default 64):
 *
 *   reader task:  usock_readline ──▶ usock_chan_send(other->queue)
 *                                          for each other client
 *   writer task:  usock_chan_recv(queue) ──▶ usock_sendall
 *
 * A reader hands each line to the other clients' queues.  When one is
 * full, the reader waits for room at most GRACE seconds (-g, default 1):
 * a flood then slows down to the pace of the slowest reader, while a
 * client whose queue stays full (it does not read) is dropped, so it holds
 * up the others for one grace period at most.  A writer that cannot send
 * within WRITE_TIMEOUT seconds drops its client too.  -q stops the
 * per-connection lines on stdout.  SIGINT or SIGTERM stop the server.
 */
#include <usocket.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_LEN 512
#define WRITE_TIMEOUT 10.0
#define SNDBUF (16 * 1024) /* per client: bounds what the kernel holds */

struct line {
    size_t len;
    char text[LINE_MAX_LEN + 16];
};

struct client {
    int num;
    usock_t *s;
    usock_chan_t *queue;
    int writer;               /* task id */
    int dropped;
    int refs;
    struct client *next;
};

/* All tasks run on the one hub of main's thread: the list needs no lock. */
static struct client *clients;
static int quiet;
static size_t queue_len = 64;
static double grace = 1.0;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* Drop c: stop its writer and make its reader see the end of the stream.
 * The reader then cleans up. */
static void drop(struct client *c, const char *why)
{
    if (c->dropped) {
        return;
    }
    c->dropped = 1; /* also set once its reader is done with the socket */
    if (!quiet) {
        printf("dropping client %d: %s\n", c->num, why);
        fflush(stdout);
    }
    usock_chan_close(c->queue);
    usock_cancel(c->writer);
    usock_shutdown(c->s, SHUT_RDWR);
}

/* Let go of c; the last holder frees it (its reader holds it, and so does
 * every broadcast that is about to hand it a line). */
static void client_put(struct client *c)
{
    if (--c->refs == 0) {
        usock_chan_free(c->queue);
        free(c);
    }
}

/* Hand l to every client but `from`.  A full queue holds up this reader
 * (and so, through TCP, its own client: a flood slows down to the pace of
 * the slowest reader) for at most `grace` seconds; a client whose queue is
 * still full then is dropped.  Dropping closes its queue, which also ends
 * at once the waits of other readers stuck on it: a client that does not
 * read at all costs the others one grace period, once.  Clients come and
 * go while we wait, so we work on a snapshot of the list, holding each. */
static void broadcast(const struct client *from, const struct line *l)
{
    struct client **v, *c;
    size_t n = 0, i;

    for (c = clients; c; c = c->next) {
        n++;
    }
    if (n == 0 || (v = malloc(n * sizeof(*v))) == NULL) {
        return;
    }
    for (n = 0, c = clients; c; c = c->next) {
        if (c != from && !c->dropped) {
            c->refs++;
            v[n++] = c;
        }
    }
    for (i = 0; i < n; i++) {
        c = v[i];
        if (!c->dropped && usock_chan_send(c->queue, l, 0) < 0) {
            if (errno == EAGAIN && usock_chan_send(c->queue, l, grace) == 0) {
                /* room came in time */
            } else if (errno != EPIPE) {
                drop(c, errno == ETIMEDOUT ? "too slow" : strerror(errno));
            }
        }
        client_put(c);
    }
    free(v);
}

static void announce(const struct client *from, const char *what)
{
    struct line l;
    int n = snprintf(l.text, sizeof l.text, "* %d %s\n", from->num, what);

    l.len = (size_t)n;
    broadcast(from, &l);
}

/* The writer: everything queued for this client goes out, in order. */
static void writer_task(void *arg)
{
    struct client *c = arg;
    struct line l;

    while (usock_chan_recv(c->queue, &l, USOCK_NONE) == 0) {
        double prev = usock_setdeadline(usock_now() + WRITE_TIMEOUT);
        ssize_t n = usock_sendall(c->s, l.text, l.len);
        usock_setdeadline(prev);
        if (n < 0) {
            drop(c, strerror(errno));
            break;
        }
    }
}

static void unlink_client(struct client *c)
{
    struct client **p = &clients;

    while (*p != c) {
        p = &(*p)->next;
    }
    *p = c->next;
}

/* The reader: one per client, and the owner of its client. */
static void reader_task(void *arg)
{
    struct client *c = arg;
    char buf[LINE_MAX_LEN];
    struct line l;
    ssize_t n;

    announce(c, "joined");
    while ((n = usock_readline(c->s, buf, sizeof buf)) > 0) {
        int k = snprintf(l.text, sizeof l.text, "[%d] %s%s", c->num, buf,
                         buf[n - 1] == '\n' ? "" : "\n");
        l.len = (size_t)k;
        broadcast(c, &l);
    }
    unlink_client(c);
    if (!c->dropped) {
        usock_chan_close(c->queue); /* the writer sends what is queued */
    }
    usock_join(c->writer, WRITE_TIMEOUT + 1);
    c->dropped = 1;
    usock_close(c->s);
    if (!quiet) {
        printf("client %d gone\n", c->num);
        fflush(stdout);
    }
    announce(c, "left");
    client_put(c);
}

static int add_client(usock_t *s, int num)
{
    struct client *c = calloc(1, sizeof(*c));

    if (!c || !(c->queue = usock_chan_new(sizeof(struct line), queue_len))) {
        free(c);
        return -1;
    }
    c->num = num;
    c->s = s;
    c->refs = 1;
    usock_setsockopt_int(s, SOL_SOCKET, SO_SNDBUF, SNDBUF);
    c->writer = usock_spawn(writer_task, c);
    if (c->writer < 0 || usock_spawn(reader_task, c) < 0) {
        if (c->writer > 0) {
            usock_cancel(c->writer);
            usock_chan_close(c->queue);
            usock_join(c->writer, USOCK_NONE);
        }
        usock_chan_free(c->queue);
        free(c);
        return -1;
    }
    c->next = clients;
    clients = c;
    if (!quiet) {
        printf("client %d joined\n", num);
        fflush(stdout);
    }
    return 0;
}

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

static int usage(void)
{
    fprintf(stderr, "usage: chat_server [-q] [-n QUEUE] [-g GRACE] PORT\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    usock_t *l, *s;
    int i = 1, num = 0;
    long port;
    char *end;

    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-q") == 0) {
            quiet = 1;
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            queue_len = strtoul(argv[++i], &end, 10);
            if (*end || queue_len == 0) {
                return usage();
            }
        } else if (strcmp(argv[i], "-g") == 0 && i + 1 < argc) {
            grace = strtod(argv[++i], &end);
            if (*end || !(grace >= 0)) {
                return usage();
            }
        } else {
            return usage();
        }
    }
    if (i + 1 != argc) {
        return usage();
    }
    port = strtol(argv[i], &end, 10);
    if (*end || port < 0 || port > 65535) {
        return usage();
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if ((l = listen_on((int)port)) == NULL) {
        return 1;
    }
    while (!stop) {
        if ((s = usock_accept(l, NULL)) == NULL) {
            if (errno != ETIMEDOUT && errno != EINTR && errno != ECONNABORTED) {
                perror("accept");
            }
            continue;
        }
        if (add_client(s, ++num) < 0) {
            perror("client");
            usock_close(s);
        }
    }
    usock_close(l);
    for (struct client *c = clients; c; c = c->next) {
        drop(c, "server stopping");
    }
    usock_run();
    return 0;
}

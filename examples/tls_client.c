/*
 * tls_client: tcp_client over TLS -- the client of the Python socket
 * tutorial, wrapping its socket with usock_tls_wrap after the connect.
 *
 *     tls_client [--ca FILE] [--insecure] PORT [MESSAGE]
 *     tls_client [--ca FILE] [--insecure] -r PORT
 *
 * The server's certificate must be valid for "localhost", issued by a CA of
 * the system trust store or of FILE (--ca); --insecure accepts any.  Try it
 * against tls_echo_server.
 *
 * It connects to 127.0.0.1:PORT, prints the server's greeting, sends MESSAGE
 * (default "Hello,i am a client"), prints the reply, sends "exit" and
 * closes:
 *
 *     -->> hello, i am server
 *     -->>Loop_msg:Hello,i am a client!
 *
 * With -r it is the Waffle Nano client instead: it connects, receives once
 * (one recv of up to 1024 bytes), prints what came followed by a newline,
 * and closes.  Try it against tcp_server.
 *
 * Replies are read with usock_read of their exact length, so however TCP
 * splits them, each arrives whole.  Every call is bounded by a 10 s timeout.
 * Exit status: 0 on success, 1 on any error, 2 on bad arguments.
 */
#include <usocket.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GREETING        "hello, i am server"
#define PREFIX          "Loop_msg:"
#define DEFAULT_MESSAGE "Hello,i am a client"

/* The server reads a message with one recv of at most 1024 bytes. */
#define MAX_MESSAGE 1024

/* Read exactly n bytes into buf (n + 1 bytes) and NUL-terminate them. */
static int read_exact(usock_t *s, char *buf, size_t n, const char *what)
{
    ssize_t got = usock_read(s, buf, n);

    if (got < 0) {
        fprintf(stderr, "tls_client: reading the %s: %s\n", what,
                strerror(errno));
        return -1;
    }
    buf[got] = '\0';
    if ((size_t)got < n) {
        fprintf(stderr, "tls_client: the server closed before the %s\n", what);
        return -1;
    }
    return 0;
}

/* Send the whole of msg. */
static int send_all(usock_t *s, const char *msg)
{
    if (usock_sendall(s, msg, strlen(msg)) < 0) {
        fprintf(stderr, "tls_client: sending \"%s\": %s\n", msg,
                strerror(errno));
        return -1;
    }
    return 0;
}

/* The conversation: greeting, one message and its reply, then "exit". */
static int talk(usock_t *s, const char *msg)
{
    char buf[sizeof PREFIX + MAX_MESSAGE + 1];

    if (read_exact(s, buf, strlen(GREETING), "greeting") < 0) {
        return -1;
    }
    printf("-->> %s\n", buf);
    if (strcmp(buf, GREETING) != 0) {
        fprintf(stderr, "tls_client: unexpected greeting\n");
        return -1;
    }
    if (send_all(s, msg) < 0 ||
        read_exact(s, buf, strlen(PREFIX) + strlen(msg) + 1, "reply") < 0) {
        return -1;
    }
    printf("-->>%s\n", buf);
    return send_all(s, "exit");
}

/* The Waffle client: one recv of up to 1024 bytes, printed. */
static int receive_once(usock_t *s)
{
    char buf[1024];
    ssize_t n = usock_recv(s, buf, sizeof buf);

    if (n < 0) {
        fprintf(stderr, "tls_client: recv: %s\n", strerror(errno));
        return -1;
    }
    printf("%.*s\n", (int)n, buf);
    return 0;
}

static const char *ca_file;
static int insecure;

/* The handshake, verifying the server as "localhost". */
static int start_tls(usock_t *s)
{
    usock_tls_t *t = usock_tls_new(USOCK_TLS_CLIENT);
    int rc = -1;

    if (t == NULL) {
        fprintf(stderr, "tls_client: TLS: %s\n", strerror(errno));
        return -1;
    }
    if (ca_file && usock_tls_load_ca(t, ca_file, NULL) < 0) {
        fprintf(stderr, "tls_client: %s: %s\n", ca_file, strerror(errno));
    } else if (insecure && usock_tls_set_verify(t, USOCK_CERT_NONE) < 0) {
        fprintf(stderr, "tls_client: TLS: %s\n", strerror(errno));
    } else if (usock_tls_wrap(s, t, "localhost") < 0) {
        const char *why = usock_tls_error(s);
        fprintf(stderr, "tls_client: TLS handshake: %s%s%s\n",
                strerror(errno), why ? ": " : "", why ? why : "");
    } else {
        rc = 0;
    }
    usock_tls_free(t);
    return rc;
}

/* A TLS socket connected to 127.0.0.1:port, or NULL after printing why. */
static usock_t *connect_to(int port)
{
    usock_addr_t a;
    usock_t *s = usock_socket(AF_INET, SOCK_STREAM, 0);

    if (s == NULL) {
        fprintf(stderr, "tls_client: socket: %s\n", strerror(errno));
        return NULL;
    }
    if (usock_settimeout(s, 10) < 0 ||
        usock_addr_ip(&a, "127.0.0.1", port) < 0 || usock_connect(s, &a) < 0) {
        fprintf(stderr, "tls_client: connect to 127.0.0.1:%d: %s\n", port,
                strerror(errno));
        usock_close(s);
        return NULL;
    }
    if (start_tls(s) < 0) {
        usock_close(s);
        return NULL;
    }
    return s;
}

/* Parse "PORT [MESSAGE]" or "-r PORT"; returns the port, or -1 after the
 * usage.  *msg is NULL for -r. */
static int parse_args(int argc, char **argv, const char **msg)
{
    char *end;
    long port;
    char *prog = argv[0];

    while (argc > 1 && strncmp(argv[1], "--", 2) == 0) {
        if (strcmp(argv[1], "--insecure") == 0) {
            insecure = 1;
            argv++, argc--;
        } else if (strcmp(argv[1], "--ca") == 0 && argc > 2) {
            ca_file = argv[2];
            argv += 2, argc -= 2;
        } else {
            goto usage;
        }
    }
    argv[0] = prog;

    if (argc == 3 && strcmp(argv[1], "-r") == 0) {
        errno = 0;
        port = strtol(argv[2], &end, 10);
        if (errno != 0 || end == argv[2] || *end != '\0' || port < 1 ||
            port > 65535) {
            goto usage;
        }
        *msg = NULL;
        return (int)port;
    }
    if (argc < 2 || argc > 3) {
        goto usage;
    }
    errno = 0;
    port = strtol(argv[1], &end, 10);
    if (errno != 0 || end == argv[1] || *end != '\0' || port < 1 ||
        port > 65535) {
        goto usage;
    }
    *msg = argc == 3 ? argv[2] : DEFAULT_MESSAGE;
    /* "exit" would end the session, "" would wait for nothing. */
    if (**msg == '\0' || strlen(*msg) > MAX_MESSAGE ||
        strcmp(*msg, "exit") == 0) {
        goto usage;
    }
    return (int)port;
usage:
    fprintf(stderr,
            "usage: %s [--ca FILE] [--insecure] PORT [MESSAGE]   (MESSAGE: "
            "1..%d bytes, not \"exit\")\n"
            "       %s [--ca FILE] [--insecure] -r PORT   (receive once and "
            "print it)\n",
            prog, MAX_MESSAGE, prog);
    return -1;
}

int main(int argc, char **argv)
{
    const char *msg = NULL;
    int port = parse_args(argc, argv, &msg);
    usock_t *s;
    int rc;

    if (port < 0) {
        return 2;
    }
    if ((s = connect_to(port)) == NULL) {
        return 1;
    }
    rc = msg ? talk(s, msg) : receive_once(s);
    if (usock_close(s) < 0) {
        fprintf(stderr, "tls_client: close: %s\n", strerror(errno));
        rc = -1;
    }
    return rc < 0 ? 1 : 0;
}

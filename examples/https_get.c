/*
 * https_get: http_get over TLS -- the QuecPython HTTP GET example with
 * usock_tls_wrap after the connect.
 *
 *     https_get [--ca FILE] [--insecure] HOST PORT [PATH]
 *
 * The server's certificate is verified by default, against the system's
 * trust store or the CAs in FILE (--ca), for the name HOST (SNI carries
 * it; a numeric HOST is checked as an IP address).  --insecure accepts any
 * certificate (USOCK_CERT_NONE).  A failed verification prints OpenSSL's
 * reason (usock_tls_error).
 *
 * It resolves HOST (a name or a numeric address, IPv4 or IPv6) with
 * usock_getaddrinfo, tries each address until a connect succeeds (10 s
 * each), sends
 *
 *     GET PATH HTTP/1.1\r\nHost: HOST\r\nConnection: close\r\n\r\n
 *
 * (PATH defaults to "/"), reads the status line and the headers with
 * usock_readline, then the body until the server closes (or, when the
 * answer is chunked, chunk by chunk).  It prints the status line, an empty
 * line and the body.  Every call is bounded by a 10 s timeout.
 *
 * Exit status: 0 iff the status is 2xx; 1 for another status or any error;
 * 2 on bad arguments.
 */
#include <usocket.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TIMEOUT 10.0

/* Read one whole line into buf (n bytes), its end of line removed.  A line
 * longer than buf keeps its first n-1 bytes; the rest is read and dropped.
 * Returns 0, or -1 after printing why (EOF included). */
static int read_line(usock_t *s, char *buf, size_t n, const char *what)
{
    char rest[256];
    ssize_t got = usock_readline(s, buf, n);
    int whole = got > 0 && buf[got - 1] == '\n';
    size_t len;

    while (got > 0 && !whole) {
        /* The line goes on past buf: read the rest and drop it. */
        ssize_t m = usock_readline(s, rest, sizeof rest);

        if (m <= 0) {
            got = m;
            break;
        }
        whole = rest[m - 1] == '\n';
    }
    if (got <= 0) {
        fprintf(stderr, "https_get: reading the %s: %s\n", what,
                got == 0 ? "connection closed" : strerror(errno));
        return -1;
    }
    len = strlen(buf);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
        buf[--len] = '\0';
    }
    return 0;
}

/* A socket connected to one of host's addresses, or NULL after printing
 * why every one failed. */
static usock_t *connect_any(const char *host, int port)
{
    usock_addrinfo_t *res, *ai;
    usock_t *s = NULL;
    char name[128];
    int rc = usock_getaddrinfo(host, port, AF_UNSPEC, SOCK_STREAM, 0, &res);

    if (rc != 0) {
        fprintf(stderr, "https_get: %s: %s\n", host,
                rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return NULL;
    }
    for (ai = res; ai != NULL && s == NULL; ai = ai->next) {
        if (usock_addr_format(&ai->addr, name, sizeof name) == NULL) {
            snprintf(name, sizeof name, "?");
        }
        s = usock_socket(ai->family, ai->type, ai->proto);
        if (s == NULL) {
            fprintf(stderr, "https_get: socket: %s\n", strerror(errno));
            continue;
        }
        if (usock_settimeout(s, TIMEOUT) < 0 ||
            usock_connect(s, &ai->addr) < 0) {
            fprintf(stderr, "https_get: connect to %s: %s\n", name,
                    strerror(errno));
            usock_close(s);
            s = NULL;
        }
    }
    usock_freeaddrinfo(res);
    return s;
}

/* Send the request. */
static int send_request(usock_t *s, const char *host, const char *path)
{
    char req[4096];
    /* An IPv6 literal goes in brackets in the Host header. */
    int v6 = strchr(host, ':') != NULL;
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s%s%s\r\n"
                     "Connection: close\r\n\r\n",
                     path, v6 ? "[" : "", host, v6 ? "]" : "");

    if (n < 0 || (size_t)n >= sizeof req) {
        fprintf(stderr, "https_get: the request is too long\n");
        return -1;
    }
    if (usock_sendall(s, req, (size_t)n) < 0) {
        fprintf(stderr, "https_get: sending the request: %s\n",
                strerror(errno));
        return -1;
    }
    return 0;
}

/* Read the status line into status (n bytes) and the headers; *chunked
 * tells whether the body comes in chunks.  Returns 0 or -1. */
static int read_head(usock_t *s, char *status, size_t n, int *chunked)
{
    char line[1024];
    const char *te = "Transfer-Encoding:";

    if (read_line(s, status, n, "status line") < 0) {
        return -1;
    }
    if (strncmp(status, "HTTP/", 5) != 0 || strchr(status, ' ') == NULL) {
        fprintf(stderr, "https_get: not an HTTP answer: %s\n", status);
        return -1;
    }
    *chunked = 0;
    for (;;) {
        if (read_line(s, line, sizeof line, "headers") < 0) {
            return -1;
        }
        if (line[0] == '\0') {
            return 0;
        }
        if (strncasecmp(line, te, strlen(te)) == 0 &&
            strstr(line + strlen(te), "chunked") != NULL) {
            *chunked = 1;
        }
    }
}

/* Copy exactly n bytes (n == 0: until EOF) of the body to stdout. */
static int copy_body(usock_t *s, size_t n)
{
    char buf[4096];
    int until_eof = n == 0;

    while (until_eof || n > 0) {
        size_t want = !until_eof && n < sizeof buf ? n : sizeof buf;
        ssize_t got = until_eof ? usock_recv(s, buf, want)
                                : usock_read(s, buf, want);

        if (got < 0 || (!until_eof && (size_t)got < want)) {
            fprintf(stderr, "https_get: reading the body: %s\n",
                    got < 0 ? strerror(errno) : "connection closed");
            return -1;
        }
        if (got == 0) {
            break;
        }
        if (fwrite(buf, 1, (size_t)got, stdout) != (size_t)got) {
            perror("https_get: stdout");
            return -1;
        }
        n -= until_eof ? 0 : (size_t)got;
    }
    return 0;
}

/* Copy a chunked body to stdout: "SIZE\r\n" DATA "\r\n" ... "0\r\n",
 * then trailers up to an empty line. */
static int copy_chunks(usock_t *s)
{
    char line[256], *end;
    unsigned long size;

    for (;;) {
        if (read_line(s, line, sizeof line, "chunk size") < 0) {
            return -1;
        }
        errno = 0;
        size = strtoul(line, &end, 16);
        if (errno != 0 || end == line) {
            fprintf(stderr, "https_get: bad chunk size: %s\n", line);
            return -1;
        }
        if (size == 0) {
            break;
        }
        if (copy_body(s, size) < 0 ||
            read_line(s, line, sizeof line, "chunk end") < 0) {
            return -1;
        }
    }
    do {
        if (read_line(s, line, sizeof line, "trailers") < 0) {
            return -1;
        }
    } while (line[0] != '\0');
    return 0;
}

static const char *ca_file;
static char **shifted; /* argv from HOST on, less one */
static int insecure;

/* Parse "[--ca FILE] [--insecure] HOST PORT [PATH]"; returns the port, or
 * -1 after the usage.  argv is left pointing at HOST as argv[1]. */
static int parse_args(int argc, char **argv, const char **path)
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

    if (argc < 3 || argc > 4) {
        goto usage;
    }
    errno = 0;
    port = strtol(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0' || port < 1 ||
        port > 65535) {
        goto usage;
    }
    shifted = argv;
    *path = argc == 4 ? argv[3] : "/";
    /* Neither may break the request's lines. */
    if (argv[1][0] == '\0' || strpbrk(argv[1], " \r\n/") != NULL ||
        (*path)[0] != '/' || strpbrk(*path, " \r\n") != NULL) {
        goto usage;
    }
    return argc;
usage:
    fprintf(stderr,
            "usage: %s [--ca FILE] [--insecure] HOST PORT [PATH]   (PATH "
            "starts with '/'; default \"/\")\n",
            prog);
    return -1;
}

/* The handshake, verifying the server as HOST unless --insecure. */
static int start_tls(usock_t *s, const char *host)
{
    usock_tls_t *t = usock_tls_new(USOCK_TLS_CLIENT);
    int rc = -1;

    if (t == NULL) {
        fprintf(stderr, "https_get: TLS: %s\n", strerror(errno));
        return -1;
    }
    if (ca_file && usock_tls_load_ca(t, ca_file, NULL) < 0) {
        fprintf(stderr, "https_get: %s: %s\n", ca_file, strerror(errno));
    } else if (insecure && usock_tls_set_verify(t, USOCK_CERT_NONE) < 0) {
        fprintf(stderr, "https_get: TLS: %s\n", strerror(errno));
    } else if (usock_tls_wrap(s, t, host) < 0) {
        const char *why = usock_tls_error(s);
        fprintf(stderr, "https_get: TLS handshake: %s%s%s\n", strerror(errno),
                why ? ": " : "", why ? why : "");
    } else {
        rc = 0;
    }
    usock_tls_free(t); /* the socket keeps what it needs */
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int n = parse_args(argc, argv, &path);
    char status[1024];
    int chunked = 0, rc = -1, port;
    usock_t *s;

    if (n < 0) {
        return 2;
    }
    argv = shifted;
    port = atoi(argv[2]);
    if ((s = connect_any(argv[1], port)) == NULL) {
        return 1;
    }
    if (start_tls(s, argv[1]) < 0) {
        usock_close(s);
        return 1;
    }
    if (send_request(s, argv[1], path) == 0 &&
        read_head(s, status, sizeof status, &chunked) == 0) {
        printf("%s\n\n", status);
        rc = chunked ? copy_chunks(s) : copy_body(s, 0);
    }
    usock_close(s);
    if (fflush(stdout) != 0) {
        perror("https_get: stdout");
        rc = -1;
    }
    if (rc < 0) {
        return 1;
    }
    /* "HTTP/1.1 204 ...": the code follows the first space. */
    return strncmp(strchr(status, ' ') + 1, "2", 1) == 0 ? 0 : 1;
}

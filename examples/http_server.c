/*
 * http_server: a static-file HTTP/1.1 server, one task per connection,
 * written in the blocking style (usock_readline for the request and header
 * lines, usock_sendall for the reply).
 *
 *     http_server [-q] [-r ROOT] [-t SECONDS] PORT
 *
 * It serves the files under ROOT (default: the current directory) on
 * 127.0.0.1:PORT (0 picks a free port) and prints "listening on
 * 127.0.0.1:PORT" once it listens.  -q stops the one line per request on
 * stderr; -t sets the whole-request timeout (default 10 s).
 *
 * What it does:
 *   - GET and HEAD; any other method gets 405 (with Allow: GET, HEAD).
 *   - Keep-alive (HTTP/1.1 by default, HTTP/1.0 with "Connection:
 *     keep-alive") and pipelining (requests are answered in order; the
 *     bytes after one request stay in the socket's read buffer for the
 *     next usock_readline).  "Connection: close" is honoured.
 *   - Content-Length always; Content-Type from the file name's extension.
 *   - 400 for a malformed request (bad request line, a header line without
 *     a colon or folded, no Host in HTTP/1.1, a bad Content-Length, a NUL
 *     byte), 414 for a request line over 8 KiB, 431 for headers over
 *     16 KiB (both then close the connection), 501 for a request body in
 *     Transfer-Encoding.  A request body given by Content-Length (at most
 *     1 MiB) is read and dropped.
 *   - Paths: the target is percent-decoded, a ".." segment (encoded or not)
 *     gets 403, and the file found is resolved with realpath(3), which must
 *     lie under ROOT (a symlink out of it gets 403); a directory serves its
 *     index.html.  Missing: 404.
 *   - A whole-request timeout: the request line and headers must arrive
 *     within SECONDS of the request's start (usock_setdeadline), so a
 *     slowloris client, which sends a header byte now and then, is cut off
 *     with 408; an idle keep-alive connection is closed after SECONDS too.
 *     Writing the reply gets SECONDS again.
 *   - Files up to 64 KiB are cached as whole responses (status line,
 *     headers and body), so a hit is one usock_sendall.  An entry is used
 *     for at most one second; after that the path is resolved, checked and
 *     read again (so a file replaced by a symlink out of ROOT is refused
 *     within a second).  The Date header is that of the entry.
 *
 * Not done: Range (the whole file is sent with 200), conditional requests,
 * chunked request bodies, absolute-form targets.
 */
#define _GNU_SOURCE
#include <usocket.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_REQ 8192          /* request line, without its CRLF */
#define HEADERS_MAX (16 * 1024)    /* all header lines, CRLFs included */
#define BODY_MAX (1024 * 1024)     /* a request body we read and drop */
#define CACHE_FILE_MAX (64 * 1024) /* files cached as whole responses */
#define CACHE_TOTAL_MAX ((size_t)64 * 1024 * 1024)
#define CACHE_BUCKETS 4096

static int quiet;
static double req_timeout = 10.0;
static char root[PATH_MAX];
static size_t root_len;

/* ---- the response cache ------------------------------------------------- */

struct entry {
    struct entry *next;
    char *key;      /* the decoded path of the request */
    char *resp;     /* status line, headers, blank line, body */
    size_t hlen;    /* bytes of resp up to and including the blank line */
    size_t len;     /* all of resp */
    time_t made;    /* when resp was built (seconds) */
};

static struct entry *buckets[CACHE_BUCKETS];
static size_t cache_bytes;

static unsigned hash(const char *s)
{
    uint32_t h = 2166136261u;

    while (*s) {
        h = (h ^ (unsigned char)*s++) * 16777619u;
    }
    return h % CACHE_BUCKETS;
}

static struct entry **cache_find(const char *key)
{
    struct entry **p = &buckets[hash(key)];

    while (*p && strcmp((*p)->key, key) != 0) {
        p = &(*p)->next;
    }
    return p;
}

static void cache_drop(struct entry **p)
{
    struct entry *e = *p;

    *p = e->next;
    cache_bytes -= e->len + strlen(e->key);
    free(e->key);
    free(e->resp);
    free(e);
}

/* ---- helpers ------------------------------------------------------------ */

/* The Date header's value for now, made once per second. */
static const char *http_date(time_t now)
{
    static time_t last = -1;
    static char buf[64];

    if (now != last) {
        struct tm tm;

        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

static const char *content_type(const char *path)
{
    static const char *const types[][2] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"txt", "text/plain; charset=utf-8"},
        {"css", "text/css"},
        {"js", "text/javascript"},
        {"json", "application/json"},
        {"xml", "application/xml"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"svg", "image/svg+xml"},
        {"ico", "image/x-icon"},
        {"webp", "image/webp"},
        {"pdf", "application/pdf"},
        {"wasm", "application/wasm"},
        {"woff2", "font/woff2"},
        {"mp4", "video/mp4"},
    };
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');

    if (dot) {
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            if (strcasecmp(dot + 1, types[i][0]) == 0) {
                return types[i][1];
            }
        }
    }
    return "application/octet-stream";
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* RFC 9110 tchar. */
static int is_tchar(int c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Percent-decodes the path part of an origin-form target into out (size n)
 * and checks its segments.  0, or the status to answer: 400 (not origin
 * form, a bad escape, a NUL), 403 (a ".." segment), 414 (too long). */
static int decode_path(const char *target, char *out, size_t n)
{
    size_t o = 0;
    const char *p = target;

    if (*p != '/') {
        return 400;
    }
    for (; *p && *p != '?' && *p != '#'; p++) {
        int c = (unsigned char)*p;

        if (c == '%') {
            int hi = hexval((unsigned char)p[1]);
            int lo = hi < 0 ? -1 : hexval((unsigned char)p[2]);

            if (lo < 0) {
                return 400;
            }
            c = hi * 16 + lo;
            p += 2;
        }
        if (c == 0) {
            return 400;
        }
        if (o + 1 >= n) {
            return 414;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    /* No "." or ".." segment may survive (empty ones are harmless). */
    for (const char *s = out; *s;) {
        const char *e = strchr(s + 1, '/');
        size_t len = (e ? (size_t)(e - s) : strlen(s)) - 1;

        if ((len == 2 && s[1] == '.' && s[2] == '.') ||
            (len == 1 && s[1] == '.')) {
            return 403;
        }
        if (!e) {
            break;
        }
        s = e;
    }
    return 0;
}

/* ---- one connection ----------------------------------------------------- */

struct conn {
    usock_t *s;
    int keep;        /* keep the connection after this reply */
    int head;        /* HEAD: no body */
    int http10;
};

static int send_all(struct conn *c, const void *buf, size_t n)
{
    return usock_sendall(c->s, buf, n);
}

/* Sends a short status reply (keep-alive unless c->keep is 0). */
static int send_status(struct conn *c, int code, const char *reason,
                       const char *extra)
{
    char buf[512];
    char body[96];
    int bn = snprintf(body, sizeof body, "%d %s\n", code, reason);
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\n"
                     "Server: usocket-http\r\n"
                     "Date: %s\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %d\r\n"
                     "%s%s"
                     "\r\n%s",
                     code, reason, http_date(time(NULL)), bn, extra ? extra : "",
                     !c->keep ? "Connection: close\r\n"
                     : c->http10 ? "Connection: keep-alive\r\n" : "",
                     c->head ? "" : body);
    return send_all(c, buf, (size_t)n);
}

/* Builds the response head for a file of `size` bytes into buf. */
static size_t file_head(char *buf, size_t n, const char *path, off_t size,
                        time_t mtime)
{
    char lm[64];
    struct tm tm;

    gmtime_r(&mtime, &tm);
    strftime(lm, sizeof lm, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return (size_t)snprintf(buf, n,
                            "HTTP/1.1 200 OK\r\n"
                            "Server: usocket-http\r\n"
                            "Date: %s\r\n"
                            "Content-Type: %s\r\n"
                            "Content-Length: %lld\r\n"
                            "Last-Modified: %s\r\n"
                            "\r\n",
                            http_date(time(NULL)), content_type(path),
                            (long long)size, lm);
}

/* Sends a cached response, with the connection header this request
 * needs (the cached head has none: HTTP/1.1 keep-alive). */
static int send_cached(struct conn *c, const struct entry *e)
{
    const char *conn_hdr = !c->keep    ? "Connection: close\r\n\r\n"
                           : c->http10 ? "Connection: keep-alive\r\n\r\n"
                                       : NULL;
    size_t body = c->head ? 0 : e->len - e->hlen;
    char buf[2048];

    if (!conn_hdr) {
        return send_all(c, e->resp, e->hlen + body);
    }
    size_t ch = strlen(conn_hdr);
    size_t total = e->hlen - 2 + ch + body;

    if (total <= sizeof buf) {
        memcpy(buf, e->resp, e->hlen - 2);
        memcpy(buf + e->hlen - 2, conn_hdr, ch);
        memcpy(buf + e->hlen - 2 + ch, e->resp + e->hlen, body);
        return send_all(c, buf, total);
    }
    if (send_all(c, e->resp, e->hlen - 2) < 0 ||
        send_all(c, conn_hdr, ch) < 0) {
        return -1;
    }
    return send_all(c, e->resp + e->hlen, body);
}

/* Resolves the decoded path under ROOT: the real path goes to real.
 * 0, or the status to answer (403, 404). */
static int resolve(const char *path, char *real)
{
    char full[PATH_MAX + 16];
    struct stat st;
    size_t pl = strlen(path);

    if (root_len + pl + sizeof "/index.html" > sizeof full) {
        return 404;
    }
    memcpy(full, root, root_len);
    memcpy(full + root_len, path, pl + 1);
    if (path[pl - 1] == '/') {
        strcat(full, "index.html");
    }
    if (!realpath(full, real)) {
        return errno == EACCES ? 403 : 404;
    }
    if (strncmp(real, root, root_len) != 0 ||
        (real[root_len] != '/' && real[root_len] != '\0')) {
        return 403;
    }
    if (stat(real, &st) == 0 && S_ISDIR(st.st_mode)) {
        size_t rl = strlen(real);

        if (rl + sizeof "/index.html" > PATH_MAX) {
            return 404;
        }
        memcpy(real + rl, "/index.html", sizeof "/index.html");
        /* index.html itself may be a symlink: resolve it again. */
        strcpy(full, real);
        if (!realpath(full, real)) {
            return errno == EACCES ? 403 : 404;
        }
        if (strncmp(real, root, root_len) != 0 ||
            (real[root_len] != '/' && real[root_len] != '\0')) {
            return 403;
        }
    }
    return 0;
}

/* Serves GET or HEAD of the decoded path.  0 to go on, -1 to close. */
static int serve_file(struct conn *c, const char *path)
{
    char real[PATH_MAX];
    struct entry **p = cache_find(path);
    time_t now = time(NULL);
    struct stat st;
    int fd, code;

    if (*p) {
        if ((*p)->made == now) {
            return send_cached(c, *p);
        }
        cache_drop(p);
    }
    code = resolve(path, real);
    if (code != 0) {
        return send_status(c, code, code == 403 ? "Forbidden" : "Not Found",
                           NULL);
    }
    fd = open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return send_status(c, errno == EACCES ? 403 : 404,
                           errno == EACCES ? "Forbidden" : "Not Found", NULL);
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return send_status(c, 404, "Not Found", NULL);
    }
    char head[512];
    size_t hlen = file_head(head, sizeof head, real, st.st_size, st.st_mtime);

    if (st.st_size <= CACHE_FILE_MAX &&
        cache_bytes + hlen + (size_t)st.st_size < CACHE_TOTAL_MAX) {
        struct entry *e = calloc(1, sizeof *e);
        char *resp = malloc(hlen + (size_t)st.st_size);
        char *key = strdup(path);
        size_t got = 0;

        while (e && resp && key && got < (size_t)st.st_size) {
            ssize_t r = read(fd, resp + hlen + got, (size_t)st.st_size - got);

            if (r <= 0) {
                break;
            }
            got += (size_t)r;
        }
        if (e && resp && key && got == (size_t)st.st_size) {
            close(fd);
            memcpy(resp, head, hlen);
            e->key = key;
            e->resp = resp;
            e->hlen = hlen;
            e->len = hlen + got;
            e->made = now;
            e->next = buckets[hash(path)];
            buckets[hash(path)] = e;
            cache_bytes += e->len + strlen(key);
            return send_cached(c, e);
        }
        free(e);
        free(resp);
        free(key);
        if (lseek(fd, 0, SEEK_SET) < 0) {
            close(fd);
            return -1;
        }
    }
    /* Not cached: the head, then the file in blocks. */
    int rc = 0;
    if (!c->keep || c->http10) {
        hlen -= 2;
        hlen += (size_t)snprintf(head + hlen, sizeof head - hlen, "%s",
                                 !c->keep ? "Connection: close\r\n\r\n"
                                          : "Connection: keep-alive\r\n\r\n");
    }
    if (send_all(c, head, hlen) < 0) {
        rc = -1;
    }
    if (rc == 0 && !c->head) {
        size_t bufsize = 64 * 1024;
        char *buf = malloc(bufsize);
        off_t left = st.st_size;

        while (buf && left > 0) {
            ssize_t r = read(fd, buf, bufsize);

            if (r <= 0 || send_all(c, buf, (size_t)r) < 0) {
                break;
            }
            left -= r;
        }
        /* A file that shrank under us: the length sent was a lie. */
        if (!buf || left > 0) {
            rc = -1;
        }
        free(buf);
    }
    close(fd);
    return rc;
}

/* Closes after an error reply: stop writing, then read and drop what the
 * client still sends (for a short while), so that the close does not
 * reset the connection before the client has read the reply. */
static void linger_close(usock_t *s)
{
    char buf[4096];
    size_t dropped = 0;

    usock_setdeadline(usock_now() + 1.0);
    usock_shutdown(s, SHUT_WR);
    for (;;) {
        ssize_t n = usock_recv(s, buf, sizeof buf);

        if (n <= 0 || (dropped += (size_t)n) > 256 * 1024) {
            break;
        }
    }
}

/* Strips the line's CRLF (or LF); returns the new length. */
static size_t chomp(char *line, size_t n)
{
    if (n && line[n - 1] == '\n') {
        n--;
    }
    if (n && line[n - 1] == '\r') {
        n--;
    }
    line[n] = '\0';
    return n;
}

/* Does the comma-separated list `v` contain token `t` (any case)? */
static int has_token(const char *v, const char *t)
{
    size_t tl = strlen(t);

    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',') {
            v++;
        }
        const char *e = v;
        while (*e && *e != ',') {
            e++;
        }
        const char *end = e;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }
        if ((size_t)(end - v) == tl && strncasecmp(v, t, tl) == 0) {
            return 1;
        }
        v = e;
    }
    return 0;
}

enum { GO_ON = 0, CLOSE = -1, BAD = -2 };

/* Reads one request and answers it.  GO_ON to read the next one, CLOSE to
 * close, BAD to close after a lingering read (the reply was an error). */
static int one_request(struct conn *c, char *line, size_t cap)
{
    char method[32], path[PATH_MAX];
    char *target, *version, *sp;
    ssize_t n;
    size_t len, hbytes = 0;
    int have_host = 0, code, blank = 0;
    long long clen = -1;
    int conn_close = 0, conn_keep = 0;

    c->keep = 0;
    c->head = 0;
    c->http10 = 0;
    usock_setdeadline(usock_now() + req_timeout);
    /* The request line (a few empty lines before it are ignored). */
    for (;;) {
        n = usock_readline(c->s, line, LINE_MAX_REQ + 3);
        if (n <= 0) {
            return CLOSE; /* end of stream, timeout while idle, error */
        }
        len = (size_t)n;
        if (line[len - 1] != '\n') {
            if (len < LINE_MAX_REQ + 2) {
                return CLOSE; /* the peer closed in mid-line */
            }
            return send_status(c, 414, "URI Too Long", NULL) < 0 ? CLOSE : BAD;
        }
        if (strlen(line) != len) {
            return send_status(c, 400, "Bad Request", NULL) < 0 ? CLOSE : BAD;
        }
        len = chomp(line, len);
        if (len > LINE_MAX_REQ) {
            return send_status(c, 414, "URI Too Long", NULL) < 0 ? CLOSE : BAD;
        }
        if (len > 0) {
            break;
        }
        if (++blank > 4) {
            return send_status(c, 400, "Bad Request", NULL) < 0 ? CLOSE : BAD;
        }
    }
    /* METHOD SP target SP HTTP/1.x */
    sp = strchr(line, ' ');
    target = sp ? sp + 1 : NULL;
    version = target ? strchr(target, ' ') : NULL;
    if (!sp || !version || (size_t)(sp - line) >= sizeof method ||
        sp == line || version == target || strchr(version + 1, ' ') ||
        strncmp(version + 1, "HTTP/1.", 7) != 0 ||
        (version[8] != '0' && version[8] != '1') || version[9] != '\0') {
        return send_status(c, 400, "Bad Request", NULL) < 0 ? CLOSE : BAD;
    }
    memcpy(method, line, (size_t)(sp - line));
    method[sp - line] = '\0';
    for (const char *m = method; *m; m++) {
        if (!is_tchar((unsigned char)*m)) {
            return send_status(c, 400, "Bad Request", NULL) < 0 ? CLOSE : BAD;
        }
    }
    *version++ = '\0';
    c->http10 = version[7] == '0';
    c->head = strcmp(method, "HEAD") == 0;
    code = decode_path(target, path, sizeof path);
    /* The headers. */
    for (;;) {
        size_t room = HEADERS_MAX - hbytes;

        if (room == 0) {
            c->keep = 0;
            return send_status(c, 431, "Request Header Fields Too Large",
                               NULL) < 0 ? CLOSE : BAD;
        }
        n = usock_readline(c->s, line, (room < cap ? room : cap - 1) + 1);
        if (n < 0 && errno == ETIMEDOUT) {
            c->keep = 0;
            send_status(c, 408, "Request Timeout", NULL);
            return CLOSE;
        }
        if (n <= 0) {
            return CLOSE;
        }
        len = (size_t)n;
        hbytes += len;
        if (line[len - 1] != '\n') {
            if (hbytes < HEADERS_MAX && len < cap - 1) {
                return CLOSE; /* the peer closed in mid-line */
            }
            c->keep = 0;
            return send_status(c, 431, "Request Header Fields Too Large",
                               NULL) < 0 ? CLOSE : BAD;
        }
        if (strlen(line) != len) {
            return send_status(c, 400, "Bad Request", NULL) < 0 ? CLOSE : BAD;
        }
        len = chomp(line, len);
        if (len == 0) {
            break;
        }
        char *colon = strchr(line, ':');
        if (!colon || colon == line || line[0] == ' ' || line[0] == '\t') {
            return send_status(c, 400, "Bad Request", NULL) < 0 ? CLOSE : BAD;
        }
        for (const char *h = line; h < colon; h++) {
            if (!is_tchar((unsigned char)*h)) {
                return send_status(c, 400, "Bad Request", NULL) < 0 ? CLOSE
                                                                    : BAD;
            }
        }
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') {
            v++;
        }
        if (strcasecmp(line, "Host") == 0) {
            have_host++;
        } else if (strcasecmp(line, "Connection") == 0) {
            conn_close |= has_token(v, "close");
            conn_keep |= has_token(v, "keep-alive");
        } else if (strcasecmp(line, "Content-Length") == 0) {
            char *end;
            long long l;

            errno = 0;
            l = strtoll(v, &end, 10);
            while (*end == ' ' || *end == '\t') {
                end++;
            }
            if (*v < '0' || *v > '9' || *end || errno || l < 0 ||
                (clen >= 0 && clen != l)) {
                return send_status(c, 400, "Bad Request", NULL) < 0 ? CLOSE
                                                                    : BAD;
            }
            clen = l;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            return send_status(c, 501, "Not Implemented", NULL) < 0 ? CLOSE
                                                                    : BAD;
        }
    }
    if ((!c->http10 && have_host != 1) || have_host > 1) {
        return send_status(c, 400, "Bad Request", NULL) < 0 ? CLOSE : BAD;
    }
    c->keep = c->http10 ? conn_keep && !conn_close : !conn_close;
    /* A body we do not want: read it and drop it. */
    if (clen > BODY_MAX) {
        c->keep = 0;
        return send_status(c, 413, "Content Too Large", NULL) < 0 ? CLOSE
                                                                   : BAD;
    }
    while (clen > 0) {
        n = usock_read(c->s, line, clen < (long long)cap ? (size_t)clen : cap);
        if (n <= 0) {
            return CLOSE;
        }
        clen -= n;
    }
    /* Writing the reply gets a timeout of its own. */
    usock_setdeadline(usock_now() + req_timeout);
    if (strcmp(method, "GET") != 0 && !c->head) {
        code = 405;
    }
    if (!quiet) {
        fprintf(stderr, "%s %s %d\n", method, code == 0 ? path : "-",
                code ? code : 200);
    }
    switch (code) {
    case 0:
        break;
    case 405:
        return send_status(c, 405, "Method Not Allowed",
                           "Allow: GET, HEAD\r\n") < 0 || !c->keep
                   ? CLOSE
                   : GO_ON;
    case 403:
    case 414:
    case 400:
        if (code != 403) {
            c->keep = 0;
        }
        return send_status(c, code,
                           code == 403   ? "Forbidden"
                           : code == 414 ? "URI Too Long"
                                         : "Bad Request",
                           NULL) < 0 || !c->keep
                   ? CLOSE
                   : GO_ON;
    default:
        return CLOSE;
    }
    if (serve_file(c, path) < 0 || !c->keep) {
        return CLOSE;
    }
    return GO_ON;
}

static void deal_client(void *arg)
{
    struct conn c = {.s = arg};
    char line[HEADERS_MAX + 4];
    int r;

    while ((r = one_request(&c, line, sizeof line)) == GO_ON) {
    }
    if (r == BAD) {
        linger_close(c.s);
    }
    usock_close(c.s);
}

int main(int argc, char **argv)
{
    const char *dir = ".";
    usock_addr_t a;
    usock_t *s;
    struct rlimit rl;
    char name[64];
    int opt;

    while ((opt = getopt(argc, argv, "qr:t:")) != -1) {
        switch (opt) {
        case 'q':
            quiet = 1;
            break;
        case 'r':
            dir = optarg;
            break;
        case 't':
            req_timeout = atof(optarg);
            break;
        default:
            goto usage;
        }
    }
    if (optind != argc - 1 || req_timeout <= 0) {
    usage:
        fprintf(stderr,
                "usage: http_server [-q] [-r ROOT] [-t SECONDS] PORT\n");
        return 2;
    }
    if (!realpath(dir, root)) {
        perror(dir);
        return 1;
    }
    root_len = strlen(root);
    if (root_len == 1) {
        root_len = 0; /* ROOT is "/": every real path is under it */
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    s = usock_socket(AF_INET, SOCK_STREAM, 0);
    if (s == NULL || usock_addr_ip(&a, "127.0.0.1", atoi(argv[optind])) < 0 ||
        usock_setsockopt_int(s, SOL_SOCKET, SO_REUSEADDR, 1) < 0 ||
        usock_bind(s, &a) < 0 || usock_listen(s, -1) < 0 ||
        usock_getsockname(s, &a) < 0) {
        perror("http_server");
        return 1;
    }
    printf("listening on %s\n", usock_addr_format(&a, name, sizeof name));
    fflush(stdout);
    for (;;) {
        usock_t *c = usock_accept(s, NULL);

        if (c == NULL) {
            continue;
        }
        if (usock_spawn(deal_client, c) < 0) {
            usock_close(c);
        }
    }
}

/*
 * uv_echo: the libuv peer of `make bench` — the echo server as libuv's
 * users write it: callbacks, a 1 KiB buffer per connection (BUFSIZE),
 * uv_try_write first and a queued uv_write for what did not fit,
 * TCP_NODELAY on each accepted connection (as every bench server).
 *
 *   uv_echo PORT [BUFSIZE]      (PORT 0: a free port)
 *
 * Prints "listening on 127.0.0.1:N".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <uv.h>

static size_t bufsize = 1024;
static uv_loop_t *loop;

struct conn {
    uv_tcp_t tcp;
    char *buf;
};

struct wreq {
    uv_write_t req;
    uv_buf_t b;
};

static void on_close(uv_handle_t *h)
{
    struct conn *c = h->data;

    free(c->buf);
    free(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct conn *c = h->data;

    (void)hint;
    *b = uv_buf_init(c->buf, (unsigned)bufsize);
}

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;

    (void)status;
    free(w->b.base);
    free(w);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (n == 0) {
        return;
    }
    uv_buf_t out = uv_buf_init(b->base, (unsigned)n);
    int done = uv_try_write(s, &out, 1);

    if (done == UV_EAGAIN) {
        done = 0;
    }
    if (done < 0) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (done < n) {
        struct wreq *w = malloc(sizeof *w);

        w->b = uv_buf_init(malloc((size_t)(n - done)), (unsigned)(n - done));
        memcpy(w->b.base, b->base + done, (size_t)(n - done));
        uv_write(&w->req, s, &w->b, 1, on_written);
    }
}

static void on_conn(uv_stream_t *server, int status)
{
    struct conn *c;

    if (status < 0) {
        return;
    }
    c = malloc(sizeof *c);
    c->buf = malloc(bufsize);
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv)
{
    uv_tcp_t server;
    struct sockaddr_in a;
    struct rlimit rl;
    int len = sizeof a;

    if (argc < 2) {
        fprintf(stderr, "usage: uv_echo PORT [BUFSIZE]\n");
        return 2;
    }
    if (argc > 2) {
        bufsize = (size_t)atol(argv[2]);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    loop = uv_default_loop();
    uv_tcp_init(loop, &server);
    uv_ip4_addr("127.0.0.1", atoi(argv[1]), &a);
    if (uv_tcp_bind(&server, (const struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)&server, SOMAXCONN, on_conn) != 0 ||
        uv_tcp_getsockname(&server, (struct sockaddr *)&a, &len) != 0) {
        fprintf(stderr, "uv_echo: cannot listen\n");
        return 1;
    }
    printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}

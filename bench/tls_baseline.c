/*
 * tls_baseline: the baseline TLS echo server of `make bench`: plain
 * blocking OpenSSL 3, one POSIX thread per connection (SSL_set_fd on a
 * blocking socket, SSL_accept, SSL_read -> SSL_write), with the same
 * configuration usocket uses (TLS 1.2+, partial writes, released buffers).
 *
 *   tls_baseline PORT CERT KEY [BUFSIZE]   (PORT 0: a free port; 16384)
 *
 * Prints "listening on 127.0.0.1:N".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static SSL_CTX *ctx;
static size_t bufsize = 16384;

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    SSL *ssl = SSL_new(ctx);
    char *buf = malloc(bufsize);

    if (ssl && buf && SSL_set_fd(ssl, fd) == 1 && SSL_accept(ssl) == 1) {
        size_t n, w;
        while (SSL_read_ex(ssl, buf, bufsize, &n) == 1) {
            size_t off = 0;
            while (off < n && SSL_write_ex(ssl, buf + off, n - off, &w) == 1) {
                off += w;
            }
            if (off < n) {
                break;
            }
        }
        SSL_shutdown(ssl);
    }
    ERR_clear_error();
    SSL_free(ssl);
    free(buf);
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    struct rlimit rl;
    pthread_attr_t at;
    int s, one = 1;

    if (argc < 4) {
        fprintf(stderr, "usage: tls_baseline PORT CERT KEY [BUFSIZE]\n");
        return 2;
    }
    if (argc > 4) {
        bufsize = (size_t)atol(argv[4]);
    }
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1) {
        fprintf(stderr, "tls_baseline: certificate\n");
        return 1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    s = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 4096) < 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) < 0) {
        perror("tls_baseline");
        return 1;
    }
    printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    for (;;) {
        pthread_t t;
        int c = accept(s, NULL, NULL);
        if (c < 0) {
            continue;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (pthread_create(&t, &at, serve, (void *)(intptr_t)c) != 0) {
            close(c);
        }
    }
}

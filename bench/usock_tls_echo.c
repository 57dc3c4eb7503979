/*
 * usock_tls_echo: the TLS echo server of `make bench` (bench/tls.sh): the
 * seed pattern over TLS, one task per client that runs usock_tls_wrap, then
 * loops usock_recv -> usock_sendall.
 *
 *   usock_tls_echo PORT CERT KEY [BUFSIZE]   (PORT 0: a free port; 16384)
 *
 * Prints "listening on 127.0.0.1:N".
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <usocket.h>

static size_t bufsize = 16384;
static usock_tls_t *tls;

static void deal_client(void *arg)
{
    usock_t *c = arg;
    char buf[bufsize];
    ssize_t n;

    if (usock_tls_wrap(c, tls, NULL) == 0) {
        while ((n = usock_recv(c, buf, sizeof buf)) > 0) {
            if (usock_sendall(c, buf, (size_t)n) < 0) {
                break;
            }
        }
    }
    usock_close(c);
}

int main(int argc, char **argv)
{
    usock_addr_t a;
    usock_t *s;
    struct rlimit rl;
    char name[64];

    if (argc < 4) {
        fprintf(stderr, "usage: usock_tls_echo PORT CERT KEY [BUFSIZE]\n");
        return 2;
    }
    if (argc > 4) {
        bufsize = (size_t)atol(argv[4]);
    }
    if (bufsize > 16 * 1024 && usock_setstacksize(bufsize + 64 * 1024) < 0) {
        perror("usock_setstacksize");
        return 1;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    tls = usock_tls_new(USOCK_TLS_SERVER);
    if (tls == NULL || usock_tls_load_cert(tls, argv[2], argv[3]) < 0) {
        perror("usock_tls_echo: certificate");
        return 1;
    }
    s = usock_socket(AF_INET, SOCK_STREAM, 0);
    if (s == NULL || usock_addr_ip(&a, "127.0.0.1", atoi(argv[1])) < 0 ||
        usock_setsockopt_int(s, SOL_SOCKET, SO_REUSEADDR, 1) < 0 ||
        usock_bind(s, &a) < 0 || usock_listen(s, -1) < 0 ||
        usock_getsockname(s, &a) < 0) {
        perror("usock_tls_echo");
        return 1;
    }
    printf("listening on %s\n", usock_addr_format(&a, name, sizeof name));
    fflush(stdout);
    for (;;) {
        usock_t *c = usock_accept(s, NULL);

        if (c == NULL) {
            continue;
        }
        usock_setsockopt_int(c, IPPROTO_TCP, TCP_NODELAY, 1);
        if (usock_spawn(deal_client, c) < 0) {
            usock_close(c);
        }
    }
}

/*
 * pthread_echo: the one-OS-thread-per-connection echo server of `make
 * bench`, on usocket: main accepts, and each client gets a detached
 * pthread that loops usock_recv -> usock_sendall.  Such threads have no
 * tasks, so their waits are direct poll(2) calls on the one fd.
 *
 *   pthread_echo PORT [BUFSIZE]    (PORT 0: a free port; BUFSIZE 1024)
 *
 * Prints "listening on 127.0.0.1:N".
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <usocket.h>

static size_t bufsize = 1024;

static void *deal_client(void *arg)
{
    usock_t *c = arg;
    char *buf = malloc(bufsize);
    ssize_t n;

    while (buf && (n = usock_recv(c, buf, bufsize)) > 0) {
        if (usock_sendall(c, buf, (size_t)n) < 0) {
            break;
        }
    }
    free(buf);
    usock_close(c);
    return NULL;
}

static usock_t *listener(int port)
{
    usock_addr_t a;
    usock_t *s = usock_socket(AF_INET, SOCK_STREAM, 0);
    char name[64];

    if (s == NULL || usock_addr_ip(&a, "127.0.0.1", port) < 0 ||
        usock_setsockopt_int(s, SOL_SOCKET, SO_REUSEADDR, 1) < 0 ||
        usock_bind(s, &a) < 0 || usock_listen(s, -1) < 0 ||
        usock_getsockname(s, &a) < 0) {
        perror("pthread_echo");
        exit(1);
    }
    printf("listening on %s\n", usock_addr_format(&a, name, sizeof name));
    fflush(stdout);
    return s;
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    pthread_attr_t attr;
    usock_t *s;

    if (argc < 2) {
        fprintf(stderr, "usage: pthread_echo PORT [BUFSIZE]\n");
        return 2;
    }
    if (argc > 2) {
        bufsize = (size_t)atol(argv[2]);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    s = listener(atoi(argv[1]));
    for (;;) {
        usock_t *c = usock_accept(s, NULL);
        pthread_t t;

        if (c == NULL) {
            continue;
        }
        usock_setsockopt_int(c, IPPROTO_TCP, TCP_NODELAY, 1);
        if (pthread_create(&t, &attr, deal_client, c) != 0) {
            usock_close(c);
        }
    }
}

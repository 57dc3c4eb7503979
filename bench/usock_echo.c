/*
 * usock_echo: the task-per-connection echo server of `make bench`, written
 * exactly as the seed pattern of DESIGN.md: main accepts and spawns one
 * task per client, which loops usock_recv -> usock_sendall.
 *
 *   usock_echo PORT [BUFSIZE]      (PORT 0: a free port; BUFSIZE 1024)
 *
 * The reactor is chosen by USOCKET_REACTOR (ev or poll).  The per-task
 * buffer lives on the task's stack; a buffer above 16 KiB gets a stack
 * large enough for it.  Prints "listening on 127.0.0.1:N".
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <usocket.h>

static size_t bufsize = 1024;

static void deal_client(void *arg)
{
    usock_t *c = arg;
    char buf[bufsize];
    ssize_t n;

    while ((n = usock_recv(c, buf, sizeof buf)) > 0) {
        if (usock_sendall(c, buf, (size_t)n) < 0) {
            break;
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

    if (argc < 2) {
        fprintf(stderr, "usage: usock_echo PORT [BUFSIZE]\n");
        return 2;
    }
    if (argc > 2) {
        bufsize = (size_t)atol(argv[2]);
    }
    if (bufsize > 16 * 1024 && usock_setstacksize(bufsize + 32 * 1024) < 0) {
        perror("usock_setstacksize");
        return 1;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    s = usock_socket(AF_INET, SOCK_STREAM, 0);
    if (s == NULL || usock_addr_ip(&a, "127.0.0.1", atoi(argv[1])) < 0 ||
        usock_setsockopt_int(s, SOL_SOCKET, SO_REUSEADDR, 1) < 0 ||
        usock_bind(s, &a) < 0 || usock_listen(s, -1) < 0 ||
        usock_getsockname(s, &a) < 0) {
        perror("usock_echo");
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

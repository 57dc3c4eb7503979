/*
 * naive_echo: the echo server a new user writes first, nothing tuned: one
 * task per connection, a 16 KiB buffer on the task's stack (the default
 * 64 KiB stack), usock_recv then usock_sendall, no socket option set.
 * Whether it is fast is up to the library's defaults (TCP_NODELAY, ...).
 *
 *   naive_echo PORT                 (PORT 0: a free port)
 *
 * The reactor is chosen by USOCKET_REACTOR.  Prints "listening on
 * 127.0.0.1:N".
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <usocket.h>

static void deal_client(void *arg)
{
    usock_t *c = arg;
    char buf[16384];
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
        fprintf(stderr, "usage: naive_echo PORT\n");
        return 2;
    }
    /* Only so that 10,000 connections fit; a user would do the same. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    s = usock_socket(AF_INET, SOCK_STREAM, 0);
    if (s == NULL || usock_addr_ip(&a, "127.0.0.1", atoi(argv[1])) < 0 ||
        usock_setsockopt_int(s, SOL_SOCKET, SO_REUSEADDR, 1) < 0 ||
        usock_bind(s, &a) < 0 || usock_listen(s, -1) < 0 ||
        usock_getsockname(s, &a) < 0) {
        perror("naive_echo");
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

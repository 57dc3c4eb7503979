/*
 * usock_udp: the usocket UDP echo server of `make bench`: one task per
 * socket, each a usock_recvfrom -> usock_sendto loop.
 *
 *   usock_udp PORT [NSOCKS]        (PORT 0: free ports)
 *
 * The reactor is chosen by USOCKET_REACTOR.  Prints
 * "listening on 127.0.0.1:N[,N…]".
 */
#include <stdio.h>
#include <stdlib.h>

#include <usocket.h>

static void echo_task(void *arg)
{
    usock_t *s = arg;
    usock_addr_t from;
    char buf[2048];
    ssize_t n;

    while ((n = usock_recvfrom(s, buf, sizeof buf, &from)) >= 0) {
        usock_sendto(s, buf, (size_t)n, &from);
    }
    usock_close(s);
}

static usock_t *open_sock(int port)
{
    usock_addr_t a;
    usock_t *s = usock_socket(AF_INET, SOCK_DGRAM, 0);

    if (s == NULL || usock_addr_ip(&a, "127.0.0.1", port) < 0 ||
        usock_bind(s, &a) < 0 || usock_getsockname(s, &a) < 0) {
        perror("usock_udp");
        exit(1);
    }
    printf("%d", usock_addr_port(&a));
    return s;
}

int main(int argc, char **argv)
{
    int port, n = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: usock_udp PORT [NSOCKS]\n");
        return 2;
    }
    port = atoi(argv[1]);
    if (argc > 2 && (n = atoi(argv[2])) < 1) {
        n = 1;
    }
    printf("listening on 127.0.0.1:");
    for (int i = 0; i < n; i++) {
        usock_t *s = open_sock(port ? port + i : 0);
        if (usock_spawn(echo_task, s) < 0) {
            perror("usock_spawn");
            return 1;
        }
        printf(i + 1 < n ? "," : "\n");
    }
    fflush(stdout);
    return usock_run() < 0;
}

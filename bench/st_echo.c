/*
 * st_echo: the State Threads peer of `make bench` — one st_thread per
 * connection (64 KiB stack), st_read into a 1 KiB buffer (BUFSIZE), then
 * st_write of what came, on ST's epoll event system (ST_EVENTSYS_ALT) or,
 * when the library was built without it (Debian's is), on poll(2) — ST's
 * default there is select(2), which stops at 1,024 fds; TCP_NODELAY on
 * each accepted connection (as every bench server).  The event system is
 * printed on stderr.
 *
 *   st_echo PORT [BUFSIZE]      (PORT 0: a free port)
 *
 * Prints "listening on 127.0.0.1:N".
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <st.h>

static size_t bufsize = 1024;

static void *deal_client(void *arg)
{
    st_netfd_t c = arg;
    char *buf = malloc(bufsize);
    ssize_t n;

    while (buf && (n = st_read(c, buf, bufsize, ST_UTIME_NO_TIMEOUT)) > 0) {
        if (st_write(c, buf, (size_t)n, ST_UTIME_NO_TIMEOUT) != n) {
            break;
        }
    }
    free(buf);
    st_netfd_close(c);
    return NULL;
}

int main(int argc, char **argv)
{
    struct sockaddr_in a = {0};
    socklen_t len = sizeof a;
    struct rlimit rl;
    st_netfd_t l;
    int fd, one = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: st_echo PORT [BUFSIZE]\n");
        return 2;
    }
    if (argc > 2) {
        bufsize = (size_t)atol(argv[2]);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* ALT is a silent no-op in a build without epoll: then ask for poll. */
    if (st_set_eventsys(ST_EVENTSYS_ALT) < 0 ||
        (strcmp(st_get_eventsys_name(), "epoll") != 0 &&
         st_set_eventsys(ST_EVENTSYS_POLL) < 0) ||
        st_init() < 0) {
        perror("st_init");
        return 1;
    }
    fprintf(stderr, "st_echo: event system %s\n", st_get_eventsys_name());
    fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(fd, SOMAXCONN) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0 ||
        (l = st_netfd_open_socket(fd)) == NULL) {
        perror("st_echo");
        return 1;
    }
    printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        st_netfd_t c = st_accept(l, NULL, NULL, ST_UTIME_NO_TIMEOUT);

        if (c == NULL) {
            continue;
        }
        setsockopt(st_netfd_fileno(c), IPPROTO_TCP, TCP_NODELAY, &one,
                   sizeof one);
        if (st_thread_create(deal_client, c, 0, 64 * 1024) == NULL) {
            st_netfd_close(c);
        }
    }
}

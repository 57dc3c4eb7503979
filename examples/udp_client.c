/*
 * udp_client: the UDP client of the Python socket tutorial.
 *
 *     udp_client PORT
 *
 * It sends "hello", "world", "python", "android" and "java" to
 * 127.0.0.1:PORT, one datagram each, and prints each reply (one recv of up
 * to 1024 bytes, 5 s timeout).  Against udp_server the output is:
 *
 *     hello,hello!
 *     hello,world!
 *     hello,python!
 *     hello,android!
 *     hello,java!
 *
 * Exit status: 0 on success, 1 on any error (a lost reply included), 2 on
 * bad arguments.
 */
#include <usocket.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Send each word to `to` and print the reply. */
static int exchange(usock_t *s, const usock_addr_t *to)
{
    static const char *const words[] = {"hello", "world", "python", "android",
                                        "java"};
    char buf[1024];
    size_t i;

    for (i = 0; i < sizeof words / sizeof words[0]; i++) {
        ssize_t n;

        if (usock_sendto(s, words[i], strlen(words[i]), to) < 0) {
            fprintf(stderr, "udp_client: sendto: %s\n", strerror(errno));
            return -1;
        }
        n = usock_recv(s, buf, sizeof buf);
        if (n < 0) {
            fprintf(stderr, "udp_client: recv: %s\n", strerror(errno));
            return -1;
        }
        printf("%.*s\n", (int)n, buf);
    }
    return 0;
}

/* Parse "PORT"; returns the port, or -1 after printing the usage. */
static int parse_args(int argc, char **argv)
{
    char *end;
    long port;

    if (argc != 2) {
        goto usage;
    }
    errno = 0;
    port = strtol(argv[1], &end, 10);
    if (errno != 0 || end == argv[1] || *end != '\0' || port < 1 ||
        port > 65535) {
        goto usage;
    }
    return (int)port;
usage:
    fprintf(stderr, "usage: %s PORT   (the udp_server on 127.0.0.1:PORT)\n",
            argv[0]);
    return -1;
}

int main(int argc, char **argv)
{
    int port = parse_args(argc, argv);
    usock_addr_t to;
    usock_t *s;
    int rc;

    if (port < 0) {
        return 2;
    }
    s = usock_socket(AF_INET, SOCK_DGRAM, 0);
    if (s == NULL) {
        perror("udp_client: socket");
        return 1;
    }
    if (usock_settimeout(s, 5) < 0 ||
        usock_addr_ip(&to, "127.0.0.1", port) < 0) {
        perror("udp_client: settimeout");
        usock_close(s);
        return 1;
    }
    rc = exchange(s, &to);
    if (usock_close(s) < 0) {
        perror("udp_client: close");
        rc = -1;
    }
    return rc < 0 ? 1 : 0;
}

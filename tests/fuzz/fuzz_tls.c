/*
 * libFuzzer harness (issue 9 item 6): the TLS record path (src/tls.c) fed
 * random bytes.  A socketpair: one end is a usocket socket wrapped in TLS,
 * the other end (the peer) is written by the harness, chunk by chunk, with
 * the input's bytes; after each chunk the usocket side runs one step with
 * timeout 0 (usock_tls_wrap to continue the handshake, or usock_recv once
 * it is done), so the chunking reaches OpenSSL's record reassembly as the
 * input says.  At the end the peer shuts its write side and the usocket
 * side runs to its end under a short timeout: the run is bounded by the
 * input's length (and checked against a wall-clock deadline).
 *
 * Input: byte 0 is the mode,
 *   bit 0: the usocket side is the client (1) or the server (0);
 *   bit 1: run a real handshake with a usocket peer first, then feed the
 *          bytes after it (the record layer of an established session).
 * Then chunks: a length byte (1 + b % 128 bytes follow).  After the
 * handshake the length byte's top bit chooses how the chunk goes: set, as
 * application data through the peer's TLS session (a valid record); clear,
 * raw onto the wire (garbage in the session's record stream).
 *
 * The certificate below is a self-signed test fixture (EC P-256, CN
 * localhost, valid to 2126) made once with openssl req -x509; not a secret.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static const char fixture_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQggBk178PH42HC8k4j\n"
    "di9N3u427PCNq2H6lgfxupfIEqyhRANCAAQ1YyqRYgptLjpvQmirDDI45xc2sgMF\n"
    "9YmSTcVKg5M3PViAibObf0laqlsFuAQw8N17FAnkKvhZI0eE394cfyvd\n"
    "-----END PRIVATE KEY-----\n"
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBrTCCAVOgAwIBAgIUCV17W+J0cFEX+s7rc5JLwZ3Nr/owCgYIKoZIzj0EAwIw\n"
    "KzESMBAGA1UEAwwJbG9jYWxob3N0MRUwEwYDVQQKDAx1c29ja2V0IGZ1enowIBcN\n"
    "MjYxMjAzMTgyOTU5WhgPMjEyNjExMDkxODI5NTlaMCsxEjAQBgNVBAMMCWxvY2Fs\n"
    "aG9zdDEVMBMGA1UECgwMdXNvY2tldCBmdXp6MFkwEwYHKoZIzj0CAQYIKoZIzj0D\n"
    "AQcDQgAENWMqkWIKbS46b0JoqwwyOOcXNrIDBfWJkk3FSoOTNz1YgImzm39JWqpb\n"
    "BbgEMPDdexQJ5Cr4WSNHhN/eHH8r3aNTMFEwHQYDVR0OBBYEFCnu0lqVhi4p2ayS\n"
    "x7HbLDxKMb+ZMB8GA1UdIwQYMBaAFCnu0lqVhi4p2aySx7HbLDxKMb+ZMA8GA1Ud\n"
    "EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAJBkQp2cHzUXxV3y3rmeDyDt\n"
    "ZL2Sri4FXp3NnfVzcfIsAiBIDJO8nu5J8PiV/uxCE7KFlOKx8zwD2QF2vTGR90d2\n"
    "Pw==\n"
    "-----END CERTIFICATE-----\n";

#define DEADLINE_NS (10LL * 1000000000LL) /* one input, end to end */
#define STEPS 64                          /* final steps after the EOF */

static usock_tls_t *server_cfg, *client_cfg;
static char sink[65536];

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_tls: %s\n", what);
        abort();
    }
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[] = "/tmp/fuzz_tls.XXXXXX";
    int fd = mkstemp(path);
    check(fd >= 0, "mkstemp");
    check(write(fd, fixture_pem, sizeof fixture_pem - 1) ==
              (ssize_t)(sizeof fixture_pem - 1),
          "write fixture");
    close(fd);
    server_cfg = usock_tls_new(USOCK_TLS_SERVER);
    client_cfg = usock_tls_new(USOCK_TLS_CLIENT);
    check(server_cfg && client_cfg, "usock_tls_new");
    check(usock_tls_load_cert(server_cfg, path, NULL) == 0, "load_cert");
    check(usock_tls_set_verify(client_cfg, USOCK_CERT_NONE) == 0,
          "set_verify");
    unlink(path);
    return 0;
}

/* Read and drop what the usocket side wrote (its handshake records and
 * alerts), so its writes never block. */
static void drain(int fd)
{
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
}

/* The errnos a step may end with; anything else is a bug in the mapping
 * of OpenSSL's failures to DESIGN.md's errors. */
static int expected_errno(int e)
{
    return e == EAGAIN || e == EPROTO || e == ECONNRESET ||
           e == EKEYREJECTED || e == EPIPE || e == ENOTCONN;
}

/* One step on s: continue the handshake, or read once it is done.  1: the
 * side can go on; 0: it ended (EOF or a failure). */
static int step(usock_t *s, int *done, const char *host)
{
    if (!*done) {
        int r = usock_tls_wrap(s, NULL, host);
        if (r == 0) {
            *done = 1;
            return 1;
        }
        check(errno != 0 && expected_errno(errno), "wrap: unexpected errno");
        return errno == EAGAIN;
    }
    for (;;) {
        ssize_t r = usock_recv(s, sink, sizeof sink);
        if (r > 0) {
            continue;
        }
        if (r == 0) {
            return 0;
        }
        check(errno != 0 && expected_errno(errno), "recv: unexpected errno");
        return errno == EAGAIN;
    }
}

/* Handshake between s and a usocket peer p, both timeout 0, in turns:
 * 0 when both completed, -1 when one failed (not EAGAIN). */
static int pair_handshake(usock_t *s, usock_tls_t *scfg, const char *shost,
                          usock_t *p, usock_tls_t *pcfg, const char *phost)
{
    int rs = usock_tls_wrap(s, scfg, shost), es = errno;
    int rp = usock_tls_wrap(p, pcfg, phost), ep = errno;
    for (int i = 0; i < 32 && (rs != 0 || rp != 0); i++) {
        if ((rs != 0 && es != EAGAIN) || (rp != 0 && ep != EAGAIN)) {
            break;
        }
        if (rs != 0) {
            rs = usock_tls_wrap(s, NULL, shost);
            es = errno;
        }
        if (rp != 0) {
            rp = usock_tls_wrap(p, NULL, phost);
            ep = errno;
        }
    }
    if (rs != 0 || rp != 0) {
        fprintf(stderr, "fuzz_tls: handshake: %d/%s, %d/%s\n", rs,
                rs ? strerror(es) : "ok", rp, rp ? strerror(ep) : "ok");
        return -1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    long long start = now_ns();
    int client = data[0] & 1, after = data[0] & 2;
    const char *host = client ? "localhost" : NULL;
    usock_tls_t *cfg = client ? client_cfg : server_cfg;
    int sv[2];
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                     sv) == 0,
          "socketpair");
    usock_t *s = usock__wrap(sv[0], AF_UNIX, SOCK_STREAM, 0);
    check(s != NULL, "wrap s");
    usock_settimeout(s, 0);
    usock_t *p = NULL;
    int done = 0, live = 1;

    if (after) {
        p = usock__wrap(sv[1], AF_UNIX, SOCK_STREAM, 0);
        check(p != NULL, "wrap p");
        usock_settimeout(p, 0);
        check(pair_handshake(s, cfg, host, p,
                             client ? server_cfg : client_cfg,
                             client ? NULL : "localhost") == 0,
              "handshake between two usocket sockets failed");
        done = 1;
    } else {
        int r = usock_tls_wrap(s, cfg, host);
        if (r == 0) {
            done = 1;
        } else {
            check(errno == EAGAIN, "first wrap step: not EAGAIN");
        }
    }

    size_t pos = 1;
    while (live && pos < size) {
        size_t n = 1 + (data[pos] & 0x7f);
        int as_record = after && (data[pos] & 0x80);
        pos++;
        if (n > size - pos) {
            n = size - pos;
        }
        if (n == 0) {
            break;
        }
        drain(sv[1]);
        if (as_record) {
            ssize_t w = usock_send(p, data + pos, n);
            check(w == (ssize_t)n, "peer send");
        } else {
            ssize_t w = send(sv[1], data + pos, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0) {
                /* s stopped reading (failed) and its buffer is full. */
                check(errno == EAGAIN || errno == EPIPE, "raw send");
                break;
            }
        }
        pos += n;
        live = step(s, &done, host);
        check(now_ns() - start < DEADLINE_NS, "deadline passed (hang?)");
    }

    /* The peer's EOF; s runs to its end under a short timeout. */
    drain(sv[1]);
    shutdown(sv[1], SHUT_WR);
    usock_settimeout(s, 0.01);
    for (int i = 0; live && i < STEPS; i++) {
        drain(sv[1]);
        live = step(s, &done, host);
        check(now_ns() - start < DEADLINE_NS, "deadline passed (hang?)");
    }
    check(!live, "no end after the peer's EOF");

    usock_close(s);
    if (p) {
        usock_close(p);
    } else {
        close(sv[1]);
    }
    return 0;
}

/*
 * What every file of the library (src/ and reactor/) shares below any of
 * its own headers: hidden visibility, container_of, branch hints, the
 * errno helper of failing calls, and which sanitizer the build runs under.
 * Nothing here knows about sockets, tasks, hubs or reactors.
 */
#ifndef USOCKET_BASE_H
#define USOCKET_BASE_H

#include <errno.h>
#include <stddef.h>

/* Hidden visibility for everything shared between files of the library. */
#define USOCK__HIDDEN __attribute__((visibility("hidden")))

#define container_of(ptr, type, member)                                        \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* USOCK__ASAN: built with AddressSanitizer (gcc or clang); USOCK__TSAN:
 * with ThreadSanitizer.  Stack switches must tell them (hub.h, stack.c). */
#if defined(__SANITIZE_ADDRESS__)
#define USOCK__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define USOCK__ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define USOCK__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define USOCK__TSAN 1
#endif
#endif

/* Fail with errno e: returns -1. */
static inline int usock__fail(int e)
{
    errno = e;
    return -1;
}

#endif /* USOCKET_BASE_H */

/*
 * What the two load generators (echo_load, udp_load) share: the clock, a
 * latency histogram, readings of the server's CPU time and memory from
 * /proc, and perf's control fifo.  No usocket here.
 */
#ifndef USOCK_BENCH_LOADSTAT_H
#define USOCK_BENCH_LOADSTAT_H

#include <stdint.h>

#define NBUCKETS (64 * 8)

/* A latency histogram: log buckets, 8 per power of two of nanoseconds. */
struct hist {
    uint64_t b[NBUCKETS];
    uint64_t count;
};

/* Monotonic nanoseconds. */
int64_t now_ns(void);
/* Count one round trip of `ns` nanoseconds. */
void hist_add(struct hist *h, uint64_t ns);
/* The p-quantile (0..1), in ns (the middle of its bucket); 0 when empty. */
double hist_percentile(const struct hist *h, double p);
/* utime + stime of pid, in clock ticks; -1 when unreadable. */
long long proc_cpu(int pid);
/* A "Key:  N kB" line of /proc/pid/status, in KiB; -1 when unreadable. */
long proc_kib(int pid, const char *key);
/* CPU time of every thread of pid, in ns (schedstat; else stat ticks). */
double cpu_ns(int pid);
/* Busy time of CPU `cpu` (user, nice, system, irq and softirq from
 * /proc/stat, 10 ms ticks), in ns: everything that ran there, the kernel's
 * ksoftirqd threads included; -1 when unreadable. */
double cpu_busy_ns(int cpu);
/* Tell perf stat (--control fifo:ctl,ack) to "enable" or "disable" its
 * counters and wait for its ack; nothing when ctl or ack is NULL. */
void perf_ctl(const char *ctl, const char *ack, const char *cmd);

#endif

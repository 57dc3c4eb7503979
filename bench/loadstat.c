/*
 * Measurement helpers shared by the load generators: see loadstat.h.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loadstat.h"

int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Log buckets: 8 per power of two. */
static int bucket(uint64_t ns)
{
    int msb;

    if (ns < 8) {
        return (int)ns;
    }
    msb = 63 - __builtin_clzll(ns);
    return msb * 8 + (int)((ns >> (msb - 3)) & 7);
}

static double bucket_mid(int b)
{
    int msb = b / 8;
    double lo;

    if (b < 8) {
        return b;
    }
    lo = (double)(1ULL << msb) * (1.0 + (b % 8) / 8.0);
    return lo + (double)(1ULL << msb) / 16.0;
}

void hist_add(struct hist *h, uint64_t ns)
{
    int k = bucket(ns);

    h->b[k < NBUCKETS ? k : NBUCKETS - 1]++;
    h->count++;
}

double hist_percentile(const struct hist *h, double p)
{
    uint64_t want = (uint64_t)(p * (double)h->count), seen = 0;

    for (int k = 0; k < NBUCKETS; k++) {
        seen += h->b[k];
        if (seen > want) {
            return bucket_mid(k);
        }
    }
    return 0;
}

/* utime + stime of pid, in clock ticks; -1 when unreadable. */
long long proc_cpu(int pid)
{
    char path[64], buf[1024];
    long long ut, st;
    FILE *f;
    char *p;
    size_t n;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if ((f = fopen(path, "r")) == NULL) {
        return -1;
    }
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if ((p = strrchr(buf, ')')) == NULL) {
        return -1;
    }
    /* After ")": state(3) … utime is field 14, stime 15. */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld",
               &ut, &st) != 2) {
        return -1;
    }
    return ut + st;
}

/* A "Key:  N kB" line of /proc/pid/status, in KiB; -1 when unreadable. */
long proc_kib(int pid, const char *key)
{
    char path[64], line[256];
    size_t kl = strlen(key);
    long v = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if ((f = fopen(path, "r")) == NULL) {
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* CPU time of every thread of pid, in ns: the sum of the threads'
 * sum_exec_runtime (/proc/PID/task/TID/schedstat, exact), or utime+stime
 * from /proc/PID/stat (10 ms ticks) when schedstat is missing. */
double cpu_ns(int p)
{
    char path[64], line[128];
    double sum = 0;
    struct dirent *d;
    DIR *dir;
    int found = 0;

    snprintf(path, sizeof path, "/proc/%d/task", p);
    if ((dir = opendir(path)) != NULL) {
        while ((d = readdir(dir)) != NULL) {
            char sp[300];
            FILE *f;
            if (d->d_name[0] == '.') {
                continue;
            }
            snprintf(sp, sizeof sp, "/proc/%d/task/%s/schedstat", p,
                     d->d_name);
            if ((f = fopen(sp, "r")) != NULL) {
                if (fgets(line, sizeof line, f)) {
                    sum += strtod(line, NULL);
                    found = 1;
                }
                fclose(f);
            }
        }
        closedir(dir);
    }
    if (found) {
        return sum;
    }
    return (double)proc_cpu(p) * 1e9 / (double)sysconf(_SC_CLK_TCK);
}

double cpu_busy_ns(int cpu)
{
    char line[256], want[16];
    unsigned long long v[7] = {0};
    double r = -1;
    FILE *f = fopen("/proc/stat", "r");

    if (f == NULL) {
        return -1;
    }
    snprintf(want, sizeof want, "cpu%d ", cpu);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, want, strlen(want)) == 0 &&
            sscanf(line + strlen(want), "%llu %llu %llu %llu %llu %llu %llu",
                   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]) == 7) {
            /* user nice system idle iowait irq softirq */
            r = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) * 1e9 /
                (double)sysconf(_SC_CLK_TCK);
            break;
        }
    }
    fclose(f);
    return r;
}

void perf_ctl(const char *ctl, const char *ackf, const char *cmd)
{
    static int cfd = -1, afd = -1;
    char ack[16];

    if (ctl == NULL || ackf == NULL) {
        return;
    }
    if (cfd < 0) {
        cfd = open(ctl, O_WRONLY);
        afd = open(ackf, O_RDONLY);
    }
    if (cfd < 0 || afd < 0) {
        return;
    }
    if (write(cfd, cmd, strlen(cmd)) < 0) {
        return;
    }
    if (read(afd, ack, sizeof ack) < 0) {
        return;
    }
}


/*
 * wakeup-cost: what one notification costs a back-end that does nothing else.
 *
 * A child process plays the smallest possible vhost-user queue worker: it
 * sleeps in poll(2) on a "kick" eventfd, reads it, and writes a "call"
 * eventfd; no ring, no I/O. The parent plays the guest: it kicks, waits for
 * the call, then stays busy for GAP microseconds (as a TCG vCPU thread does
 * between two requests) before kicking again. The child's CPU time
 * (/proc/PID/schedstat, nanoseconds) divided by the number of kicks is the
 * floor for any back-end that wakes once per kick on this machine.
 *
 * Build and run: bench/wakeup-cost.sh (or: cc -O2 -o wakeup-cost wakeup-cost.c)
 * Usage: wakeup-cost [KICKS [GAP_US]]   (defaults 20000 and 100)
 */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Nanoseconds the task has run on a CPU (first field of /proc/PID/schedstat). */
static unsigned long long run_ns(pid_t pid)
{
    char path[64];
    unsigned long long ns = 0;
    snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f || fscanf(f, "%llu", &ns) != 1) {
        fprintf(stderr, "wakeup-cost: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    return ns;
}

static void worker(int kick, int call)
{
    struct pollfd p = { .fd = kick, .events = POLLIN };
    uint64_t v;
    for (;;) {
        if (poll(&p, 1, -1) < 0)
            continue;
        if (read(kick, &v, sizeof v) != sizeof v)
            continue;
        v = 1;
        if (write(call, &v, sizeof v) != sizeof v)
            _exit(1);
    }
}

int main(int argc, char **argv)
{
    long kicks = argc > 1 ? atol(argv[1]) : 20000;
    long gap_us = argc > 2 ? atol(argv[2]) : 100;
    if (kicks <= 0 || gap_us < 0) {
        fprintf(stderr, "usage: wakeup-cost [KICKS [GAP_US]]\n");
        return 2;
    }
    int kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int call = eventfd(0, EFD_CLOEXEC);
    if (kick < 0 || call < 0) {
        perror("eventfd");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0)
        worker(kick, call);

    uint64_t v;
    /* warm-up round trip, then measure */
    v = 1;
    if (write(kick, &v, sizeof v) != sizeof v || read(call, &v, sizeof v) != sizeof v)
        return 1;
    unsigned long long cpu0 = run_ns(child);
    double t0 = now_s();
    for (long i = 0; i < kicks; i++) {
        v = 1;
        if (write(kick, &v, sizeof v) != sizeof v || read(call, &v, sizeof v) != sizeof v)
            return 1;
        double until = now_s() + (double)gap_us * 1e-6;
        while (now_s() < until) {
        }
    }
    double elapsed = now_s() - t0;
    unsigned long long cpu1 = run_ns(child);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    printf("kicks=%ld gap_us=%ld worker_cpu_us_per_kick=%.2f round_trip_us=%.2f\n",
           kicks, gap_us, (double)(cpu1 - cpu0) / 1e3 / (double)kicks,
           elapsed / (double)kicks * 1e6 - (double)gap_us);
    return 0;
}

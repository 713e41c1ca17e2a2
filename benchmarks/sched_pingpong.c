/* How a background hog's OS priority delays a ping-pong of two normal processes.
 *
 * What kgweave's serving path looks like to the scheduler, without kgweave: a client and a
 * server process pass one byte back and forth through pipes, each doing WORK_MS of CPU work
 * per message (the server all of it, the client half), while a hog process (THREADS busy
 * threads: the updater's torch threads) runs beside them with the policy or nice value
 * given. Prints the round trip's percentiles. Linux only.
 *
 *     cc -O2 -pthread -o /tmp/sched_pingpong benchmarks/sched_pingpong.c
 *     for hog in none idle 19 10 0; do /tmp/sched_pingpong $hog 2 1.0; done
 *
 * hog: "none" (no hog), "idle" (SCHED_IDLE), or a nice value (0-19). Results in
 * docs/benchmarks.md ("The scheduler's part").
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void spin(double seconds) {
    double began = now();
    while (now() - began < seconds) {
    }
}

static void *busy(void *unused) {
    volatile unsigned long x = 0;
    (void)unused;
    for (;;) x++;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s none|idle|NICE THREADS WORK_MS\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    int threads = atoi(argv[2]);
    double work = atof(argv[3]) * 1e-3;
    pid_t hog = fork();
    if (hog == 0) {
        if (!strcmp(mode, "none")) pause();
        if (!strcmp(mode, "idle")) {
            struct sched_param p = {0};
            sched_setscheduler(0, SCHED_IDLE, &p);
        } else {
            setpriority(PRIO_PROCESS, 0, atoi(mode));
        }
        pthread_t t;
        for (int i = 1; i < threads; i++) pthread_create(&t, NULL, busy, NULL);
        busy(NULL);
    }
    int there[2], back[2];
    if (pipe(there) || pipe(back)) return 1;
    pid_t server = fork();
    if (server == 0) {
        char c;
        for (;;) {
            if (read(there[0], &c, 1) != 1) _exit(0);
            spin(work);
            if (write(back[1], &c, 1) != 1) _exit(1);
        }
    }
    usleep(200000);
    int n = 8000;
    double *rtt = malloc(n * sizeof(double));
    char c = 'x';
    for (int i = 0; i < n; i++) {
        double began = now();
        if (write(there[1], &c, 1) != 1 || read(back[0], &c, 1) != 1) return 1;
        spin(work / 2);
        rtt[i] = (now() - began) * 1e3;
    }
    kill(hog, SIGKILL);
    kill(server, SIGKILL);
    waitpid(hog, NULL, 0);
    waitpid(server, NULL, 0);
    qsort(rtt, n, sizeof(double), by_value);
    printf("hog %-4s x%d, work %.1f ms: round trip p50 %.3f p99 %.3f p99.9 %.3f max %.3f ms\n",
           mode, threads, work * 1e3, rtt[n / 2], rtt[n * 99 / 100], rtt[n * 999 / 1000],
           rtt[n - 1]);
    return 0;
}

/* pthread barriers, clock_gettime, nanosleep under -std=c11 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "timed_run.h"

static pthread_barrier_t start_line;
static atomic_int stop, failed;
static unsigned int samples[BENCH_MAX_SAMPLES]; /* ns, capped at UINT_MAX */
static atomic_uint nsamples;

struct thread {
    pthread_t tid;
    bench_worker_fn fn;
    void *arg;
    unsigned long count;
    /* keep each thread's count on its own cache line */
    char pad[64];
};

void bench_ready(void)
{
    pthread_barrier_wait(&start_line);
}

int bench_running(void)
{
    return !atomic_load_explicit(&stop, memory_order_relaxed);
}

void bench_fail(void)
{
    atomic_store(&failed, 1);
    atomic_store(&stop, 1);
}

long long bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void bench_record_ns(long long ns)
{
    unsigned int i = atomic_fetch_add_explicit(&nsamples, 1, memory_order_relaxed);

    if (i < BENCH_MAX_SAMPLES)
        samples[i] = ns < 0 ? 0 : ns > (long long)UINT_MAX ? UINT_MAX : (unsigned int)ns;
}

static int by_value(const void *a, const void *b)
{
    unsigned int x = *(const unsigned int *)a, y = *(const unsigned int *)b;

    return (x > y) - (x < y);
}

/* " p50_us=<f> p99_us=<f>" of the recorded latencies, or "" when none were recorded. */
static void print_percentiles(void)
{
    size_t n = atomic_load(&nsamples);

    if (n == 0)
        return;
    if (n > BENCH_MAX_SAMPLES)
        n = BENCH_MAX_SAMPLES;
    qsort(samples, n, sizeof(samples[0]), by_value);
    printf(" p50_us=%.1f p99_us=%.1f", samples[(n - 1) / 2] / 1e3,
           samples[(size_t)((double)(n - 1) * 0.99)] / 1e3);
}

static void *trampoline(void *arg)
{
    struct thread *t = arg;

    t->count = t->fn(t->arg);
    return NULL;
}

static double clock_s(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int bench_run(const char *prog, int nthreads, double seconds, bench_worker_fn fn, void **args)
{
    struct thread *threads = calloc((size_t)nthreads, sizeof(*threads));
    struct timespec slice;
    unsigned long total = 0;
    double t0, t1, c0, c1;
    int i;

    if (threads == NULL || pthread_barrier_init(&start_line, NULL, (unsigned)nthreads + 1) != 0) {
        perror(prog);
        free(threads);
        return 1;
    }
    for (i = 0; i < nthreads; i++) {
        threads[i].fn = fn;
        threads[i].arg = args[i];
        if (pthread_create(&threads[i].tid, NULL, trampoline, &threads[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    /* every worker has done its setup: start the clock */
    pthread_barrier_wait(&start_line);
    t0 = clock_s(CLOCK_MONOTONIC);
    c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    slice.tv_sec = (time_t)seconds;
    slice.tv_nsec = (long)((seconds - (double)slice.tv_sec) * 1e9);
    while (bench_running() && nanosleep(&slice, &slice) != 0 && errno == EINTR)
        ;
    atomic_store(&stop, 1);
    for (i = 0; i < nthreads; i++) {
        pthread_join(threads[i].tid, NULL);
        total += threads[i].count;
    }
    t1 = clock_s(CLOCK_MONOTONIC);
    c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    pthread_barrier_destroy(&start_line);
    free(threads);
    if (atomic_load(&failed)) {
        fprintf(stderr, "%s: an operation failed during the run\n", prog);
        return 1;
    }
    /* cpu_s: CPU time of the whole process during the run; steadier than wall time on a
     * shared machine, since other load slows a run down without adding to it. */
    printf("ops_per_sec=%.1f threads=%d sigs=%lu cpu_s=%.3f", (double)total / (t1 - t0), nthreads,
           total, c1 - c0);
    print_percentiles();
    printf("\n");
    fflush(stdout);
    return 0;
}

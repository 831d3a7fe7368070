/*
 * The timed run both signing benchmarks share: N worker threads do their untimed setup,
 * the clock starts when all are ready, they loop until the time is up (or one fails), and
 * the run prints "ops_per_sec=<f> threads=<n> sigs=<n> cpu_s=<f>".
 */
#ifndef CTOK_BENCH_TIMED_RUN_H
#define CTOK_BENCH_TIMED_RUN_H

/* A worker: setup, then bench_ready(), then operations while bench_running(); returns how
 * many it completed. On a failure it calls bench_fail() (after bench_ready()) and returns. */
typedef unsigned long (*bench_worker_fn)(void *arg);

void bench_ready(void);
int bench_running(void);
void bench_fail(void);

/* Optional per-operation latency: a worker that times its operations reports each one's
 * duration here (thread-safe; the first BENCH_MAX_SAMPLES are kept), and bench_run's line
 * then ends with " p50_us=<f> p99_us=<f>". */
#define BENCH_MAX_SAMPLES (1u << 20)
void bench_record_ns(long long ns);
long long bench_now_ns(void);

/* Runs fn(args[i]) in nthreads threads for seconds of wall time and prints the result
 * line; returns 0, or 1 if a worker failed (nothing is printed then). */
int bench_run(const char *prog, int nthreads, double seconds, bench_worker_fn fn, void **args);

#endif

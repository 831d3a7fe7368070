/*
 * The bare libcurl request loop the cloud benchmarks share (ctok-bench-kms-bare,
 * ctok-bench-akv-bare): each worker thread owns one kept-alive libcurl handle, makes one
 * untimed warm-up request (the TLS handshake happens before the clock starts, as for ctok's
 * first signature), then times every request with timed_run.c's latency samples.
 */
#ifndef CTOK_BENCH_CURL_LOOP_H
#define CTOK_BENCH_CURL_LOOP_H

#include <stddef.h>

#include <curl/curl.h>

struct bench_buf {
    char data[16384];
    size_t len; /* data is NUL-terminated; a longer response is cut */
};

/* One request on h, the response collected into resp (emptied first); 1 when it succeeded. */
typedef int (*bench_request_fn)(CURL *h, struct bench_buf *resp);

struct bench_curl_conf {
    const char *prog;    /* for messages */
    const char *url;     /* the request URL */
    const char *ca_file; /* the test CA */
    const char *body;    /* POST body */
    bench_request_fn once;
};

/* CURLOPT_WRITEFUNCTION collecting into a struct bench_buf. */
size_t bench_collect(char *p, size_t size, size_t n, void *arg);

/* Reads the first line of a secret file into out; 1 when it is not empty. */
int bench_read_secret(const char *path, char *out, size_t room);

/* The bench_worker_fn: arg is a const struct bench_curl_conf *. */
unsigned long bench_curl_worker(void *arg);

/* Performs the request set up on h; 1 when HTTP 200 with want in the body, else prints the
 * status and the start of the body and returns 0. */
int bench_perform(CURL *h, struct bench_buf *resp, const char *prog, const char *want);

#endif

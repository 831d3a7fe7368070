/* The bare libcurl request loop of the cloud benchmarks: see curl_loop.h. */
#define _POSIX_C_SOURCE 200809L

#include "curl_loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timed_run.h"

size_t bench_collect(char *p, size_t size, size_t n, void *arg)
{
    struct bench_buf *b = arg;
    size_t len = size * n;

    if (len > sizeof(b->data) - 1 - b->len)
        len = sizeof(b->data) - 1 - b->len;
    memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return size * n;
}

int bench_read_secret(const char *path, char *out, size_t room)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL) {
        perror(path);
        return 0;
    }
    n = fread(out, 1, room - 1, f);
    fclose(f);
    out[n] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    return out[0] != '\0';
}

int bench_perform(CURL *h, struct bench_buf *resp, const char *prog, const char *want)
{
    long status = 0;
    int ok;

    resp->len = 0;
    resp->data[0] = '\0';
    ok = curl_easy_perform(h) == CURLE_OK &&
         curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200 &&
         strstr(resp->data, want) != NULL;
    if (!ok)
        fprintf(stderr, "%s: HTTP %ld: %.300s\n", prog, status, resp->data);
    return ok;
}

unsigned long bench_curl_worker(void *arg)
{
    const struct bench_curl_conf *c = arg;
    struct bench_buf *resp = malloc(sizeof(*resp));
    CURL *h = curl_easy_init();
    unsigned long n = 0;

    if (resp == NULL || h == NULL) {
        bench_ready();
        bench_fail();
        free(resp);
        curl_easy_cleanup(h);
        return 0;
    }
    resp->len = 0;
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(c->body));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, bench_collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    /* warm-up: the TLS handshake happens before the clock starts, as ctok's first signature */
    if (!c->once(h, resp)) {
        bench_ready();
        bench_fail();
    } else {
        bench_ready();
        while (bench_running()) {
            long long t0 = bench_now_ns();

            if (!c->once(h, resp)) {
                bench_fail();
                break;
            }
            bench_record_ns(bench_now_ns() - t0);
            n++;
        }
    }
    curl_easy_cleanup(h);
    free(resp);
    return n;
}

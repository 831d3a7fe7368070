/*
 * ctok-bench-kms-bare: the cloud limit of BENCHMARKS.md. The same KMS Sign request ctok sends
 * (POST /, TrentService.Sign, MessageType DIGEST, the same headers, SigV4-signed afresh for
 * each request with kms/sigv4.c) from N threads, each over its own kept-alive libcurl
 * connection, for S seconds; no OpenSSL provider, no token layer, no JSON parsing beyond
 * checking for the signature. Prints the line of timed_run.c with p50_us/p99_us.
 *
 * The secret access key is read from a file (--secret-file), never from argv.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "../kms/sigv4.h"
#include "curl_loop.h"
#include "timed_run.h"

#define MAX_THREADS 64

static const char *url, *ca_file, *region, *akid, *key_id, *alg = "ECDSA_SHA_256";
static char secret[256], host[256], body[512];

static void usage(FILE *f)
{
    fprintf(f, "usage: ctok-bench-kms-bare --url URL --ca-file PEM --region R --akid ID\n"
               "         --secret-file FILE --key-id ID [--alg KMS-SIGNING-ALGORITHM]\n"
               "         [--threads N] [--seconds S]\n"
               "  prints: ops_per_sec=<f> threads=<n> sigs=<n> cpu_s=<f> p50_us=<f> p99_us=<f>\n");
}

/* One signed Sign request on the thread's connection; 1 when HTTP 200 with a Signature. */
static int sign_once(CURL *h, struct bench_buf *resp)
{
    char date[17], auth[512], l_host[300], l_date[40], l_auth[600];
    const char *target = "TrentService.Sign";
    struct ctok_sigv4_header hd[4] = {{"content-type", "application/x-amz-json-1.1"},
                                      {"host", host},
                                      {"x-amz-date", date},
                                      {"x-amz-target", target}};
    struct curl_slist *lines = NULL;
    struct tm tm;
    time_t t = time(NULL);
    int ok;

    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%Y%m%dT%H%M%SZ", &tm);
    {
        struct ctok_sigv4_req r = {.method = "POST",
                                   .path = "/",
                                   .query = "",
                                   .headers = hd,
                                   .n_headers = 4,
                                   .body = body,
                                   .body_len = strlen(body),
                                   .amz_date = date,
                                   .region = region,
                                   .service = "kms"};

        if (!ctok_sigv4_sign(&r, akid, secret, auth, sizeof(auth), NULL, NULL))
            return 0;
    }
    snprintf(l_host, sizeof(l_host), "Host: %s", host);
    snprintf(l_date, sizeof(l_date), "X-Amz-Date: %s", date);
    snprintf(l_auth, sizeof(l_auth), "Authorization: %s", auth);
    lines = curl_slist_append(lines, "Content-Type: application/x-amz-json-1.1");
    lines = curl_slist_append(lines, l_host);
    lines = curl_slist_append(lines, l_date);
    lines = curl_slist_append(lines, "X-Amz-Target: TrentService.Sign");
    lines = curl_slist_append(lines, l_auth);
    lines = curl_slist_append(lines, "Expect:");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, lines);
    ok = bench_perform(h, resp, "ctok-bench-kms-bare", "\"Signature\"");
    curl_slist_free_all(lines);
    return ok;
}

int main(int argc, char **argv)
{
    const char *secret_file = NULL;
    int nthreads = 1, i, rc;
    double seconds = 2.0;
    void *args[MAX_THREADS] = {0};
    struct bench_curl_conf conf = {"ctok-bench-kms-bare", NULL, NULL, body, sign_once};
    CURLU *u;
    char *h = NULL, *port = NULL;

    for (i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];

        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--ca-file") == 0)
            ca_file = v;
        else if (strcmp(a, "--region") == 0)
            region = v;
        else if (strcmp(a, "--akid") == 0)
            akid = v;
        else if (strcmp(a, "--secret-file") == 0)
            secret_file = v;
        else if (strcmp(a, "--key-id") == 0)
            key_id = v;
        else if (strcmp(a, "--alg") == 0)
            alg = v;
        else if (strcmp(a, "--threads") == 0)
            nthreads = atoi(v);
        else if (strcmp(a, "--seconds") == 0)
            seconds = strtod(v, NULL);
        else
            break;
    }
    if (i != argc || url == NULL || ca_file == NULL || region == NULL || akid == NULL ||
        secret_file == NULL || key_id == NULL || nthreads < 1 || nthreads > MAX_THREADS ||
        !(seconds > 0)) {
        usage(stderr);
        return 2;
    }
    if (!bench_read_secret(secret_file, secret, sizeof(secret)))
        return 2;
    /* the host header as ctok signs it: host[:port] of the endpoint */
    u = curl_url();
    if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK) {
        fprintf(stderr, "ctok-bench-kms-bare: bad --url %s\n", url);
        return 2;
    }
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
        snprintf(host, sizeof(host), "%s:%s", h, port);
    else
        snprintf(host, sizeof(host), "%s", h);
    curl_free(h);
    curl_free(port);
    curl_url_cleanup(u);
    /* a SHA-256 digest, base64: the Sign body ctok sends for a 32-byte digest */
    snprintf(body, sizeof(body),
             "{\"KeyId\":\"%s\",\"Message\":\"n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=\","
             "\"MessageType\":\"DIGEST\",\"SigningAlgorithm\":\"%s\"}",
             key_id, alg);
    conf.url = url;
    conf.ca_file = ca_file;
    for (i = 0; i < nthreads; i++)
        args[i] = &conf;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = bench_run("ctok-bench-kms-bare", nthreads, seconds, bench_curl_worker, args);
    curl_global_cleanup();
    OPENSSL_cleanse(secret, sizeof(secret));
    return rc;
}

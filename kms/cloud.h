/*
 * What every cloud client (kms/awscall.c, kms/azcall.c, kms/aad.c) does around an HTTP
 * request the same way: the outcome of one attempt, the retry loop with jittered exponential
 * backoff (and Retry-After), and the one error a failed call raises. The clients supply the
 * attempt (signing, bearer tokens) and which failures are worth retrying.
 */
#ifndef CTOK_KMS_CLOUD_H
#define CTOK_KMS_CLOUD_H

#include <stddef.h>
#include <jansson.h>

#include "http.h"

#define CTOK_CLOUD_TYPE_MAX 128
#define CTOK_CLOUD_MSG_MAX 512
/* A Retry-After is honoured up to this: a signature is waited for by a handshake */
#define CTOK_CLOUD_RETRY_AFTER_MAX_MS 5000

/* One attempt's failure. status: HTTP status, 0 no response (transport), -1 local failure. */
struct ctok_cloud_outcome {
    int reason; /* CTOK_R_* */
    long status;
    int timed_out;
    long retry_after_ms;            /* the response's Retry-After, 0 if none */
    char type[CTOK_CLOUD_TYPE_MAX]; /* the service's error code */
    char msg[CTOK_CLOUD_MSG_MAX];
};

struct ctok_cloud_try {
    int max_retries;
    long base_ms, throttled_base_ms; /* backoff bases; both doubled per retry, capped at 2 s */
    /* One attempt: 1 done; 0 failed, o says why; -1 failed with an error raised. refresh: the
     * previous attempt was refused by stale() */
    int (*attempt)(void *arg, int refresh, struct ctok_cloud_outcome *o);
    /* The credentials were stale (revoked, expired early): refresh once, not counted. May be NULL
     */
    int (*stale)(void *arg, const struct ctok_cloud_outcome *o);
    int (*retryable)(const struct ctok_cloud_outcome *o);
    void *arg;
};

/* Runs attempts until one succeeds, a failure is not retryable, or max_retries retries are
 * spent. Returns the last attempt's 1/0/-1; *attempts counts them. */
int ctok_cloud_run(const struct ctok_cloud_try *t, struct ctok_cloud_outcome *o, int *attempts);

/* Where a call went, for its error: "token 'x': key 'k': op: ..." */
struct ctok_cloud_where {
    const char *tokname;
    const char *kind; /* "key" */
    const char *url;  /* named when it cannot be reached */
    long timeout_ms;
};
/* Raises the one error for a failed call (o from its last attempt). */
void ctok_cloud_raise(const struct ctok_cloud_where *w, const char *object, const char *op,
                      const struct ctok_cloud_outcome *o, int attempts, long ms);

/* o for a transport failure (ctok_http_do returned 0) */
void ctok_cloud_transport(struct ctok_cloud_outcome *o, const struct ctok_http_resp *r);
/* The JSON object of a successful response into *out; empty_ok: an empty body is {}. 1 ok;
 * 0 with o saying "malformed response". */
int ctok_cloud_json(const struct ctok_http_resp *r, int empty_ok, json_t **out,
                    struct ctok_cloud_outcome *o);
/* src (may be NULL) into dst, truncated, control characters replaced: fit for a message */
void ctok_cloud_field(char *dst, size_t len, const char *src);
long ctok_cloud_now_ms(void);

#endif

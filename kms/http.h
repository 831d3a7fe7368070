/*
 * A small HTTP client over libcurl for the cloud backends (AWS KMS, Azure Key Vault): a
 * pool of reusable easy handles per token (keep-alive, one TLS handshake per connection),
 * TLS always verified (against ca_file when given), connect and total time-outs, libcurl's
 * proxy variables honoured. Safe across fork: a child never touches its parent's
 * connections. Raises no errors itself: the caller names token and object.
 */
#ifndef CTOK_KMS_HTTP_H
#define CTOK_KMS_HTTP_H

#include <pthread.h>
#include <stddef.h>

#define CTOK_HTTP_MAX_BODY (1024 * 1024) /* a larger response is an error, not a buffer */

struct ctok_http_pool;

struct ctok_http_req {
    const char *method; /* "GET", "POST", "PUT" */
    const char *url;
    const char *const *headers; /* "Name: value" lines, NULL-terminated; may hold secrets */
    const void *body;
    size_t body_len;
    long timeout_ms;         /* 0: the pool's */
    int direct;              /* 1: never through a proxy (link-local metadata services) */
    long connect_timeout_ms; /* 0: timeout_ms */
};

struct ctok_http_resp {
    long status; /* 0 when no response arrived */
    char *body;  /* NUL-terminated; free with ctok_http_resp_clear */
    size_t body_len;
    char errortype[128]; /* the x-amzn-errortype header, up to ':' */
    long retry_after_ms; /* the Retry-After header (delay-seconds), 0 when absent */
    int timed_out;       /* transport: the time-out ended the attempt */
    char error[320];     /* transport: curl's description */
};

/* ca_file NULL: the system's CAs. No I/O. */
struct ctok_http_pool *ctok_http_pool_new(const char *ca_file, long timeout_ms);
void ctok_http_pool_free(struct ctok_http_pool *p);
/* One request on a pooled handle. 1: a response arrived (any status); 0: none (resp->error). */
int ctok_http_do(struct ctok_http_pool *p, const struct ctok_http_req *req,
                 struct ctok_http_resp *resp);
void ctok_http_resp_clear(struct ctok_http_resp *resp);
/*
 * Mutexes that fork must not copy while held (pool and credential locks): registered ones
 * are taken before fork() and released after in parent and child, so a child never
 * inherits one locked by a thread it does not have. Hold one only briefly, never across I/O.
 */
void ctok_http_fork_guard(pthread_mutex_t *m, int add);
/* The proxy libcurl takes from the environment for url, without user info, or "" */
void ctok_http_proxy_for(const char *url, char *buf, size_t len);

#endif

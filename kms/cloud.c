/*
 * The retry loop and error raising shared by the AWS and Azure clients (kms/cloud.h).
 * Backoff: equal jitter, half fixed and half random of min(2 s, base * 2^n): the SDKs' bases
 * (AWS 100 ms, 500 ms throttled), with a 2 s cap instead of their 20 s because a signature is
 * waited for by a TLS handshake. A Retry-After from the service raises the wait to what it
 * asks, up to CTOK_CLOUD_RETRY_AFTER_MAX_MS. Worst case for a call: (max_retries + 1) *
 * timeout_ms plus at most max_retries * 5 s of waiting.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cloud.h"
#include "../store/err.h"
#include "../store/token.h"

#define BACKOFF_CAP_MS 2000

long ctok_cloud_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ctok_cloud_field(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src != NULL ? src : "");
    for (char *s = dst; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

/* xorshift: jitter needs no cryptographic randomness, nor a call into a provider */
static unsigned jitter(unsigned range)
{
    static __thread unsigned long s;

    if (s == 0)
        s = ((unsigned long)time(NULL) << 20) ^ (unsigned long)getpid() ^
            (unsigned long)(uintptr_t)&s;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return range ? (unsigned)(s % range) : 0;
}

static void backoff(int attempt, long base, long retry_after_ms)
{
    long d = base;
    struct timespec ts;

    for (int i = 0; i < attempt && d < BACKOFF_CAP_MS; i++)
        d *= 2;
    if (d > BACKOFF_CAP_MS)
        d = BACKOFF_CAP_MS;
    d = d / 2 + jitter((unsigned)(d / 2 + 1));
    if (retry_after_ms > CTOK_CLOUD_RETRY_AFTER_MAX_MS)
        retry_after_ms = CTOK_CLOUD_RETRY_AFTER_MAX_MS;
    if (d < retry_after_ms)
        d = retry_after_ms;
    ts.tv_sec = d / 1000;
    ts.tv_nsec = (d % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0)
        ;
}

int ctok_cloud_run(const struct ctok_cloud_try *t, struct ctok_cloud_outcome *o, int *attempts)
{
    int n = 0, refresh = 0, refreshed = 0, rc;

    for (;;) {
        n++;
        memset(o, 0, sizeof(*o));
        if ((rc = t->attempt(t->arg, refresh, o)) != 0)
            break;
        refresh = 0;
        if (!refreshed && t->stale != NULL && t->stale(t->arg, o)) {
            refresh = refreshed = 1;
            continue;
        }
        if (n > t->max_retries + refreshed || o->status < 0 || (o->status > 0 && !t->retryable(o)))
            break;
        backoff(n - 1 - refreshed,
                o->reason == CTOK_R_THROTTLED ? t->throttled_base_ms : t->base_ms,
                o->retry_after_ms);
    }
    *attempts = n;
    return rc;
}

void ctok_cloud_raise(const struct ctok_cloud_where *w, const char *object, const char *op,
                      const struct ctok_cloud_outcome *o, int attempts, long ms)
{
    char obj[300] = "", tries[48] = "", proxy[200];

    if (object != NULL)
        snprintf(obj, sizeof(obj), "%s '%s': ", w->kind, object);
    if (attempts > 1)
        snprintf(tries, sizeof(tries), " (%d attempts, %ld ms)", attempts, ms);
    if (o->status == 0 && o->timed_out) {
        CTOK_ERR(CTOK_R_TIMEOUT, "token '%s': %s%s %s timed out after %ld ms%s", w->tokname, obj,
                 op, w->url, w->timeout_ms, tries);
    } else if (o->status < 0) {
        CTOK_ERR(o->reason, "token '%s': %s%s: %s", w->tokname, obj, op, o->msg);
    } else if (o->status == 0) {
        ctok_http_proxy_for(w->url, proxy, sizeof(proxy));
        CTOK_ERR(o->reason, "token '%s': %s%s: cannot reach %s%s%s: %s%s", w->tokname, obj, op,
                 w->url, proxy[0] ? " through proxy " : "", proxy, o->msg, tries);
    } else {
        CTOK_ERR(o->reason, "token '%s': %s%s: HTTP %ld %s%s%s%s", w->tokname, obj, op, o->status,
                 o->type[0] ? o->type : "error", o->msg[0] ? ": " : "", o->msg, tries);
    }
}

void ctok_cloud_transport(struct ctok_cloud_outcome *o, const struct ctok_http_resp *r)
{
    o->status = 0;
    o->reason = r->timed_out ? CTOK_R_TIMEOUT : CTOK_R_NETWORK;
    o->timed_out = r->timed_out;
    ctok_cloud_field(o->msg, sizeof(o->msg), r->error);
}

int ctok_cloud_json(const struct ctok_http_resp *r, int empty_ok, json_t **out,
                    struct ctok_cloud_outcome *o)
{
    json_error_t err;

    if (empty_ok && r->body_len == 0)
        *out = json_object();
    else
        *out = json_loadb(r->body != NULL ? r->body : "", r->body_len, 0, &err);
    if (json_is_object(*out))
        return 1;
    if (*out == NULL && empty_ok && r->body_len == 0)
        snprintf(err.text, sizeof(err.text), "out of memory");
    json_decref(*out);
    *out = NULL;
    o->status = r->status;
    o->reason = CTOK_R_BACKEND;
    snprintf(o->type, sizeof(o->type), "malformed response");
    ctok_cloud_field(o->msg, sizeof(o->msg), err.text);
    return 0;
}

/*
 * ctok_aws_call: one KMS operation over the JSON protocol, signed with SigV4, retried on
 * throttling, 429, 500/502/503/504, connection errors and per-attempt time-outs, never on
 * other 4xx, through the shared loop of kms/cloud.c (backoff base 100 ms, 500 ms when
 * throttled: the SDKs' bases).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "curl_lazy.h"
#include <openssl/crypto.h>

#include "awsint.h"
#include "cloud.h"
#include "sigv4.h"
#include "../store/err.h"
#include "../store/token.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_THROTTLED_MS 500

static __thread char last_type[CTOK_AWS_TYPE_MAX];

const char *ctok_aws_last_error_type(void)
{
    return last_type;
}

/* ---- the client ---- */

static int endpoint_parts(struct ctok_aws *a)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *url = NULL;
    int ok = 0;

    if (u == NULL || curl_url_set(u, CURLUPART_URL, a->url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK)
        goto end;
    if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0)
        goto end;
    curl_url_get(u, CURLUPART_PORT, &port, 0);
    if (port != NULL && strcmp(port, strcmp(scheme, "https") == 0 ? "443" : "80") != 0) {
        size_t n = strlen(host) + strlen(port) + 2;

        if ((a->host = OPENSSL_malloc(n)) != NULL)
            snprintf(a->host, n, "%s:%s", host, port);
    } else {
        a->host = OPENSSL_strdup(host);
    }
    a->path = OPENSSL_strdup(*path ? path : "/");
    OPENSSL_free(a->url);
    a->url = OPENSSL_strdup(url);
    ok = a->host != NULL && a->path != NULL && a->url != NULL;
end:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(url);
    curl_url_cleanup(u);
    return ok;
}

static int valid_region(const char *r)
{
    if (r == NULL || *r == '\0' || strlen(r) > 32)
        return 0;
    for (; *r; r++)
        if (!((*r >= 'a' && *r <= 'z') || (*r >= '0' && *r <= '9') || *r == '-'))
            return 0;
    return 1;
}

static char *strdup_or_null(const char *s, int *oom)
{
    char *d = s != NULL ? OPENSSL_strdup(s) : NULL;

    if (s != NULL && d == NULL)
        *oom = 1;
    return d;
}

struct ctok_aws *ctok_aws_new(const struct ctok_aws_conf *c)
{
    const char *tok = c->tokname != NULL ? c->tokname : "?";
    const char *imds = c->imds_endpoint;
    struct ctok_aws *a;
    char def[128];
    int oom = 0;

    if (!valid_region(c->region)) {
        CTOK_ERR(CTOK_R_CONFIG, "token '%s': region '%s' is not an AWS region name", tok,
                 c->region != NULL ? c->region : "");
        return NULL;
    }
    if (!c->use_role && (c->access_key_id == NULL || *c->access_key_id == '\0')) {
        CTOK_ERR(CTOK_R_CONFIG, "token '%s': auth_method 'keys' needs access_key_id", tok);
        return NULL;
    }
    if ((a = OPENSSL_zalloc(sizeof(*a))) == NULL)
        goto oom;
    if (imds == NULL || *imds == '\0')
        imds = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (imds == NULL || *imds == '\0')
        imds = "http://169.254.169.254";
    snprintf(def, sizeof(def), "https://kms.%s.amazonaws.com/", c->region);
    pthread_mutex_init(&a->lock, NULL);
    ctok_http_fork_guard(&a->lock, 1);
    a->tokname = strdup_or_null(tok, &oom);
    a->region = strdup_or_null(c->region, &oom);
    a->url = strdup_or_null(c->endpoint != NULL && *c->endpoint ? c->endpoint : def, &oom);
    a->imds = strdup_or_null(imds, &oom);
    a->akid = strdup_or_null(c->use_role ? NULL : c->access_key_id, &oom);
    /* the IMDS base without a trailing slash: paths start with one */
    if (a->imds != NULL && *a->imds && a->imds[strlen(a->imds) - 1] == '/')
        a->imds[strlen(a->imds) - 1] = '\0';
    a->use_role = c->use_role;
    a->timeout_ms = c->timeout_ms > 0 ? c->timeout_ms : 10000;
    a->max_retries = c->max_retries >= 0 ? c->max_retries : 3;
    if (oom || (a->pool = ctok_http_pool_new(c->ca_file, a->timeout_ms)) == NULL)
        goto oom;
    if (!endpoint_parts(a)) {
        CTOK_ERR(CTOK_R_CONFIG, "token '%s': endpoint '%s' is not an http(s) URL", tok,
                 c->endpoint);
        ctok_aws_free(a);
        return NULL;
    }
    return a;
oom:
    ctok_aws_free(a);
    CTOK_ERR(CTOK_R_INTERNAL, "token '%s': out of memory", tok);
    return NULL;
}

void ctok_aws_free(struct ctok_aws *a)
{
    if (a == NULL)
        return;
    ctok_http_fork_guard(&a->lock, 0);
    ctok_aws_creds_clear(&a->cur);
    ctok_http_pool_free(a->pool);
    pthread_mutex_destroy(&a->lock);
    OPENSSL_free(a->tokname);
    OPENSSL_free(a->region);
    OPENSSL_free(a->url);
    OPENSSL_free(a->host);
    OPENSSL_free(a->path);
    OPENSSL_free(a->imds);
    OPENSSL_free(a->akid);
    OPENSSL_free(a);
}

/* ---- errors ---- */

void ctok_aws_parse_error(const char *body, size_t len, const char *hdr_type, char *type,
                          size_t type_len, char *msg, size_t msg_len)
{
    json_t *j = body != NULL && len > 0 ? json_loadb(body, len, 0, NULL) : NULL;
    const char *t = NULL, *m = NULL, *hash;

    if (json_is_object(j)) {
        t = json_string_value(json_object_get(j, "__type"));
        if (t == NULL || *t == '\0')
            t = json_string_value(json_object_get(j, "code"));
        m = json_string_value(json_object_get(j, "message"));
        if (m == NULL)
            m = json_string_value(json_object_get(j, "Message"));
    }
    if (t == NULL || *t == '\0')
        t = hdr_type;
    /* "com.amazonaws.kms#NotFoundException" names the type after the last '#' */
    if (t != NULL && (hash = strrchr(t, '#')) != NULL)
        t = hash + 1;
    ctok_cloud_field(type, type_len, t);
    ctok_cloud_field(msg, msg_len, m);
    json_decref(j);
}

static int reason_for(long status, const char *type)
{
    static const char *const creds[] = {"UnrecognizedClientException",
                                        "InvalidSignatureException",
                                        "IncompleteSignature",
                                        "IncompleteSignatureException",
                                        "ExpiredTokenException",
                                        "RequestExpired",
                                        "InvalidClientTokenId",
                                        "MissingAuthenticationToken",
                                        "MissingAuthenticationTokenException"};

    if (strcmp(type, "AccessDeniedException") == 0)
        return CTOK_R_DENIED;
    for (size_t i = 0; i < sizeof(creds) / sizeof(creds[0]); i++)
        if (strcmp(type, creds[i]) == 0)
            return CTOK_R_CREDENTIALS;
    if (strcmp(type, "NotFoundException") == 0)
        return CTOK_R_NOT_FOUND;
    if (strcmp(type, "ThrottlingException") == 0 || status == 429)
        return CTOK_R_THROTTLED;
    if (status == 403 && *type == '\0')
        return CTOK_R_DENIED;
    return CTOK_R_BACKEND;
}

/* ---- one attempt ---- */

static int send_signed(struct ctok_aws *a, struct ctok_aws_creds *c, const char *target,
                       const char *body, struct ctok_http_resp *resp, char *why, size_t why_len)
{
    char date[17], auth[512], l_host[300], l_date[40], l_target[128], *l_token = NULL;
    const char *lines[8];
    struct ctok_sigv4_header h[5];
    size_t n = 0, k = 0;
    struct tm tm;
    time_t t = time(NULL);
    int ok;

    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%Y%m%dT%H%M%SZ", &tm);
    h[n++] = (struct ctok_sigv4_header){"content-type", "application/x-amz-json-1.1"};
    h[n++] = (struct ctok_sigv4_header){"host", a->host};
    h[n++] = (struct ctok_sigv4_header){"x-amz-date", date};
    if (c->token != NULL)
        h[n++] = (struct ctok_sigv4_header){"x-amz-security-token", c->token};
    h[n++] = (struct ctok_sigv4_header){"x-amz-target", target};
    {
        struct ctok_sigv4_req r = {.method = "POST",
                                   .path = a->path,
                                   .query = "",
                                   .headers = h,
                                   .n_headers = n,
                                   .body = body,
                                   .body_len = strlen(body),
                                   .amz_date = date,
                                   .region = a->region,
                                   .service = "kms"};
        char a_line[sizeof(auth) + 16];

        if (strncmp(c->key_day, date, 8) != 0) {
            if (!ctok_sigv4_derive_key(c->secret, date, a->region, "kms", c->key)) {
                snprintf(why, why_len, "cannot sign the request");
                return -1;
            }
            memcpy(c->key_day, date, 8);
            c->key_day[8] = '\0';
            ctok_aws_creds_keep_key(a, c);
        }
        if (!ctok_sigv4_sign_key(&r, c->akid, c->key, auth, sizeof(auth), NULL, NULL)) {
            snprintf(why, why_len, "cannot sign the request");
            return -1;
        }
        snprintf(l_host, sizeof(l_host), "Host: %s", a->host);
        snprintf(l_date, sizeof(l_date), "X-Amz-Date: %s", date);
        snprintf(l_target, sizeof(l_target), "X-Amz-Target: %s", target);
        snprintf(a_line, sizeof(a_line), "Authorization: %s", auth);
        lines[k++] = "Content-Type: application/x-amz-json-1.1";
        lines[k++] = l_host;
        lines[k++] = l_date;
        lines[k++] = l_target;
        lines[k++] = a_line;
        if (c->token != NULL) {
            size_t tl = strlen(c->token) + 24;

            if ((l_token = OPENSSL_malloc(tl)) == NULL) {
                snprintf(why, why_len, "out of memory");
                OPENSSL_cleanse(a_line, sizeof(a_line));
                return -1;
            }
            snprintf(l_token, tl, "X-Amz-Security-Token: %s", c->token);
            lines[k++] = l_token;
        }
        lines[k] = NULL;
        {
            struct ctok_http_req req = {.method = "POST",
                                        .url = a->url,
                                        .headers = lines,
                                        .body = body,
                                        .body_len = strlen(body)};

            ok = ctok_http_do(a->pool, &req, resp);
        }
        OPENSSL_cleanse(a_line, sizeof(a_line));
        OPENSSL_cleanse(auth, sizeof(auth));
        if (l_token != NULL)
            OPENSSL_clear_free(l_token, strlen(l_token));
    }
    return ok;
}

/* ---- the call ---- */

struct call {
    struct ctok_aws *a;
    const char *target, *body;
    json_t **out;
};

static int attempt(void *arg, int refresh, struct ctok_cloud_outcome *o)
{
    struct call *k = arg;
    struct ctok_aws_creds c;
    struct ctok_http_resp r;
    int rc;

    if (!ctok_aws_creds_get(k->a, &c, refresh))
        return -1; /* raised */
    rc = send_signed(k->a, &c, k->target, k->body, &r, o->msg, sizeof(o->msg));
    ctok_aws_creds_clear(&c);
    if (rc < 0) {
        o->reason = CTOK_R_INTERNAL;
        o->status = -1;
        return 0;
    }
    if (rc == 0) {
        ctok_cloud_transport(o, &r);
        return 0;
    }
    o->status = r.status;
    o->retry_after_ms = r.retry_after_ms;
    if (r.status == 200) {
        rc = ctok_cloud_json(&r, 0, k->out, o);
        ctok_http_resp_clear(&r);
        return rc;
    }
    ctok_aws_parse_error(r.body, r.body_len, r.errortype, o->type, sizeof(o->type), o->msg,
                         sizeof(o->msg));
    ctok_http_resp_clear(&r);
    o->reason = reason_for(o->status, o->type);
    return 0;
}

/* role credentials revoked or expired early: fetch new ones once, then sign again */
static int stale(void *arg, const struct ctok_cloud_outcome *o)
{
    return ((struct call *)arg)->a->use_role && strcmp(o->type, "ExpiredTokenException") == 0;
}

static int retryable(const struct ctok_cloud_outcome *o)
{
    return o->status == 429 || o->status == 500 || o->status == 502 || o->status == 503 ||
           o->status == 504 || strcmp(o->type, "ThrottlingException") == 0;
}

int ctok_aws_call(struct ctok_aws *a, const char *op, const char *object, json_t *in, json_t **out)
{
    char target[96], *body;
    struct ctok_cloud_outcome o;
    long start = ctok_cloud_now_ms();
    int n = 0, rc;

    *out = NULL;
    last_type[0] = '\0';
    snprintf(target, sizeof(target), "TrentService.%s", op);
    if ((body = in != NULL ? json_dumps(in, JSON_COMPACT) : strdup("{}")) == NULL) {
        CTOK_ERR(CTOK_R_INTERNAL, "token '%s': %s: cannot encode the request", a->tokname, op);
        return 0;
    }
    {
        struct call k = {a, target, body, out};
        struct ctok_cloud_try t = {.max_retries = a->max_retries,
                                   .base_ms = 100,
                                   .throttled_base_ms = 500,
                                   .attempt = attempt,
                                   .stale = stale,
                                   .retryable = retryable,
                                   .arg = &k};
        struct ctok_cloud_where w = {a->tokname, "key", a->url, a->timeout_ms};

        rc = ctok_cloud_run(&t, &o, &n);
        if (rc == 0) {
            ctok_cloud_field(last_type, sizeof(last_type), o.type);
            ctok_cloud_raise(&w, object, op, &o, n, ctok_cloud_now_ms() - start);
        }
    }
    CTOK_DBG("token '%s': aws %s%s%s%s: %s %ld, %d attempt(s), %ld ms", a->tokname, op,
             object ? " '" : "", object ? object : "", object ? "'" : "",
             rc == 1 ? "HTTP" : "failed", rc == 1 ? 200L : o.status, n,
             ctok_cloud_now_ms() - start);
    OPENSSL_cleanse(body, strlen(body)); /* a Decrypt's ciphertext, a Sign's digest */
    free(body);
    return rc == 1;
}

/*
 * ctok_az_call: one Key Vault REST request with the client's access token, through the
 * shared retry loop of kms/cloud.c: retried on 429 (waiting what Retry-After asks, up to
 * CTOK_CLOUD_RETRY_AFTER_MAX_MS), 408, 500/502/503/504 (not 501/505, as the SDKs) and
 * connection errors or time-outs, never on other 4xx; a 401 fetches a new token once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "azint.h"
#include "../store/err.h"
#include "../store/token.h"

static __thread char last_code[CTOK_CLOUD_TYPE_MAX];

const char *ctok_az_last_error_code(void)
{
    return last_code;
}

/* ---- errors ---- */

void ctok_az_parse_error(const char *body, size_t len, char *code, size_t code_len, char *msg,
                         size_t msg_len)
{
    json_t *j = body != NULL && len > 0 ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *c = NULL, *m = NULL;

    if (json_is_object(e)) { /* Key Vault */
        c = json_string_value(json_object_get(e, "code"));
        m = json_string_value(json_object_get(e, "message"));
    } else if (json_is_string(e)) { /* Azure AD */
        c = json_string_value(e);
        m = json_string_value(json_object_get(j, "error_description"));
    }
    ctok_cloud_field(code, code_len, c);
    ctok_cloud_field(msg, msg_len, m);
    json_decref(j);
}

static int vault_reason(long status)
{
    switch (status) {
    case 401:
        return CTOK_R_CREDENTIALS;
    case 403:
        return CTOK_R_DENIED;
    case 404:
        return CTOK_R_NOT_FOUND;
    case 429:
        return CTOK_R_THROTTLED;
    default:
        return CTOK_R_BACKEND;
    }
}

int ctok_az_retryable(const struct ctok_cloud_outcome *o)
{
    return o->status == 408 || o->status == 429 || o->status == 500 || o->status == 502 ||
           o->status == 503 || o->status == 504;
}

/* ---- the call ---- */

struct call {
    struct ctok_az *a;
    const char *method, *url, *body;
    json_t **out;
    unsigned long gen;               /* the token the last attempt carried */
    int token_failed;                /* 1: tok_o says why; -1: raised */
    struct ctok_cloud_outcome tok_o; /* the token fetch's failure */
};

static int attempt(void *arg, int refresh, struct ctok_cloud_outcome *o)
{
    struct call *k = arg;
    struct ctok_http_resp r;
    char *tok = NULL, *auth;
    size_t n;
    int rc = ctok_az_token_get(k->a, refresh ? k->gen : 0, &tok, &k->gen, &k->tok_o);

    if (rc != 1) {
        k->token_failed = rc < 0 ? -1 : 1;
        return -1; /* no retry here: the token fetch had its own */
    }
    n = strlen(tok) + 32;
    if ((auth = OPENSSL_malloc(n)) == NULL) {
        OPENSSL_clear_free(tok, strlen(tok));
        o->status = -1;
        o->reason = CTOK_R_INTERNAL;
        snprintf(o->msg, sizeof(o->msg), "out of memory");
        return 0;
    }
    snprintf(auth, n, "Authorization: Bearer %s", tok);
    OPENSSL_clear_free(tok, strlen(tok));
    {
        const char *hdrs[] = {auth, "Content-Type: application/json", "Accept: application/json",
                              NULL};
        struct ctok_http_req req = {.method = k->method,
                                    .url = k->url,
                                    .headers = hdrs,
                                    .body = k->body,
                                    .body_len = k->body != NULL ? strlen(k->body) : 0};

        rc = ctok_http_do(k->a->pool, &req, &r);
    }
    OPENSSL_clear_free(auth, strlen(auth));
    if (!rc) {
        ctok_cloud_transport(o, &r);
        return 0;
    }
    o->status = r.status;
    o->retry_after_ms = r.retry_after_ms;
    if (r.status >= 200 && r.status < 300) {
        rc = ctok_cloud_json(&r, 1, k->out, o);
    } else {
        ctok_az_parse_error(r.body, r.body_len, o->type, sizeof(o->type), o->msg, sizeof(o->msg));
        o->reason = vault_reason(r.status);
        rc = 0;
    }
    if (r.body != NULL)
        OPENSSL_cleanse(r.body, r.body_len); /* a decrypt's plaintext */
    ctok_http_resp_clear(&r);
    return rc;
}

/* a token refused (revoked, or expired early): a new one, once */
static int stale(void *arg, const struct ctok_cloud_outcome *o)
{
    (void)arg;
    return o->status == 401;
}

/* vault_url + path (or path when it is a full URL under vault_url: a nextLink) + api-version
 * unless the URL has one */
static char *full_url(struct ctok_az *a, const char *path)
{
    size_t vl = strlen(a->vault_url), n;
    const char *base = a->vault_url;
    int has = strstr(path, "api-version=") != NULL;
    char *u;

    if (strncmp(path, a->vault_url, vl) == 0 && (path[vl] == '/' || path[vl] == '?'))
        base = "";
    else if (path[0] != '/')
        return NULL;
    n = strlen(base) + strlen(path) + strlen(a->api_version) + 16;
    if ((u = OPENSSL_malloc(n)) == NULL)
        return NULL;
    if (has)
        snprintf(u, n, "%s%s", base, path);
    else
        snprintf(u, n, "%s%s%capi-version=%s", base, path, strchr(path, '?') ? '&' : '?',
                 a->api_version);
    return u;
}

/* The operation an error names: a POST's action ("sign", "decrypt", "create"), else the
 * method ("get", "delete") */
static void op_name(const char *method, const char *path, char *op, size_t len)
{
    size_t n = strcspn(path, "?");
    const char *s = path + n;

    while (s > path && s[-1] != '/')
        s--;
    if (strcmp(method, "POST") == 0 && s < path + n)
        snprintf(op, len, "%.*s", (int)(path + n - s), s);
    else
        for (size_t i = 0; i < len; i++)
            if ((op[i] = (char)(method[i] >= 'A' && method[i] <= 'Z' ? method[i] + 32
                                                                     : method[i])) == '\0')
                break;
    op[len - 1] = '\0';
}

int ctok_az_login(struct ctok_az *a)
{
    struct ctok_cloud_outcome o = {0};
    unsigned long gen;
    char *tok;
    int rc = ctok_az_token_get(a, 0, &tok, &gen, &o);

    if (rc == 1) {
        OPENSSL_clear_free(tok, strlen(tok));
        return 1;
    }
    if (rc == 0) {
        struct ctok_cloud_where w = {a->tokname, "key", a->token_url, a->timeout_ms};

        ctok_cloud_field(last_code, sizeof(last_code), o.type);
        ctok_cloud_raise(&w, NULL,
                         a->auth == CTOK_AZ_MANAGED_IDENTITY ? "login: managed identity token"
                                                             : "login: Azure AD token",
                         &o, 1, 0);
    }
    return 0;
}

/* the path for debug output: no query (a nextLink's skip token), bounded */
static void debug_path(const char *path, char *buf, size_t len)
{
    size_t n = strcspn(path, "?");

    snprintf(buf, len, "%.*s", (int)(n < len ? n : len - 1), path);
}

int ctok_az_call(struct ctok_az *a, const char *method, const char *path, const char *object,
                 json_t *in, json_t **out)
{
    char *url, *body = NULL, op[160], dpath[200];
    struct ctok_cloud_outcome o = {0};
    long start = ctok_cloud_now_ms();
    int n = 0, rc;

    *out = NULL;
    last_code[0] = '\0';
    op_name(method, path, op, 64);
    if ((url = full_url(a, path)) == NULL ||
        (in != NULL && (body = json_dumps(in, JSON_COMPACT)) == NULL)) {
        CTOK_ERR(url == NULL ? CTOK_R_INVALID_ARG : CTOK_R_INTERNAL,
                 "token '%s': %s%s%s%s: cannot make a request for path '%s'", a->tokname,
                 object ? "key '" : "", object ? object : "", object ? "': " : "", method, path);
        OPENSSL_free(url);
        return 0;
    }
    {
        struct call k = {.a = a, .method = method, .url = url, .body = body, .out = out};
        struct ctok_cloud_try t = {.max_retries = a->max_retries,
                                   .base_ms = 100,
                                   .throttled_base_ms = 500,
                                   .attempt = attempt,
                                   .stale = stale,
                                   .retryable = ctok_az_retryable,
                                   .arg = &k};
        struct ctok_cloud_where w = {a->tokname, "key", a->vault_url, a->timeout_ms};

        rc = ctok_cloud_run(&t, &o, &n);
        if (k.token_failed) {
            o = k.tok_o;
            rc = k.token_failed < 0 ? -1 : 0;
            w.url = a->token_url;
            snprintf(op + strlen(op), sizeof(op) - strlen(op), ": %s token",
                     a->auth == CTOK_AZ_MANAGED_IDENTITY ? "managed identity" : "Azure AD");
            n = 1;
        }
        if (rc == 0) {
            ctok_cloud_field(last_code, sizeof(last_code), o.type);
            ctok_cloud_raise(&w, object, op, &o, n, ctok_cloud_now_ms() - start);
        }
    }
    debug_path(path, dpath, sizeof(dpath));
    CTOK_DBG("token '%s': azure %s %s: %s %ld, %d attempt(s), %ld ms", a->tokname, method, dpath,
             rc == 1 ? "HTTP" : "failed", o.status, n, ctok_cloud_now_ms() - start);
    OPENSSL_free(url);
    if (body != NULL)
        OPENSSL_clear_free(body, strlen(body)); /* a decrypt's ciphertext, a sign's digest */
    return rc == 1;
}

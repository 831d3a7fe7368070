/*
 * Azure AD access tokens for Key Vault: v2 client credentials with a client secret or a
 * client-assertion JWT (as MSAL sends it: PS256, x5t#S256, aud/iss/sub/jti/nbf/iat/exp, signed
 * by the backend through conf->sign), or the VM's managed identity. One token per client,
 * shared by its threads: refreshed 5 minutes before expiry (half its life if it is short) by
 * the first thread to see it due, while the others keep using it; a thread with no valid token
 * waits for the fetch instead of starting another. The lock is never held across the network.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "curl_lazy.h"
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "azint.h"
#include "../store/err.h"
#include "../store/token.h"

#define REFRESH_MARGIN 300 /* seconds before expiry, as the SDKs do */
#define ASSERTION_LIFE 600 /* exp = nbf + 600, as MSAL */
#define SIG_MAX 1024       /* an RSA-8192 signature */
#define DEFAULT_LOGIN "https://login.microsoftonline.com"
#define DEFAULT_MI "http://169.254.169.254/metadata/identity/oauth2/token"
#define DEFAULT_SCOPE "https://vault.azure.net/.default"

/* ---- the client ---- */

static char *dup_or_null(const char *s, int *oom)
{
    char *d = s != NULL ? OPENSSL_strdup(s) : NULL;

    if (s != NULL && d == NULL)
        *oom = 1;
    return d;
}

static void clear_str(char **s)
{
    if (*s != NULL)
        OPENSSL_clear_free(*s, strlen(*s));
    *s = NULL;
}

/* base64url without padding (JWT, x5t#S256) */
static char *b64url(const uint8_t *d, size_t n)
{
    char *s = OPENSSL_malloc(4 * ((n + 2) / 3) + 1);
    int len;

    if (s == NULL)
        return NULL;
    len = EVP_EncodeBlock((unsigned char *)s, d, (int)n);
    while (len > 0 && s[len - 1] == '=')
        len--;
    s[len] = '\0';
    for (char *p = s; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    return s;
}

static int valid_tenant(const char *t)
{
    if (t == NULL || *t == '\0' || strlen(t) > 128)
        return 0;
    for (; *t; t++)
        if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') || (*t >= '0' && *t <= '9') ||
              *t == '-' || *t == '.'))
            return 0;
    return 1;
}

static const char *conf_check(const struct ctok_az_conf *c)
{
    if (c->vault_url == NULL || strncmp(c->vault_url, "https://", 8) != 0 || !c->vault_url[8])
        return "vault_url must be an https URL (the access token never travels in clear)";
    if (c->login_url != NULL && *c->login_url && strncmp(c->login_url, "https://", 8) != 0)
        return "login_url must be an https URL";
    if (c->auth != CTOK_AZ_SECRET && c->auth != CTOK_AZ_CERTIFICATE &&
        c->auth != CTOK_AZ_MANAGED_IDENTITY)
        return "auth_method must be secret, certificate or managed_identity";
    if (c->auth == CTOK_AZ_MANAGED_IDENTITY)
        return NULL;
    if (!valid_tenant(c->tenant_id))
        return "tenant_id is missing or not a tenant id or domain";
    if (c->client_id == NULL || *c->client_id == '\0')
        return "client_id is missing";
    if (c->auth == CTOK_AZ_CERTIFICATE &&
        (c->cert_der == NULL || c->cert_der_len == 0 || c->sign == NULL))
        return "certificate authentication needs the binding's certificate and key";
    return NULL;
}

static char *token_url(const struct ctok_az_conf *c)
{
    const char *login = c->login_url != NULL && *c->login_url ? c->login_url : DEFAULT_LOGIN;
    size_t ll = strlen(login), n;
    char *u;

    if (c->auth == CTOK_AZ_MANAGED_IDENTITY)
        return OPENSSL_strdup(c->mi_endpoint != NULL && *c->mi_endpoint ? c->mi_endpoint
                                                                        : DEFAULT_MI);
    while (ll > 0 && login[ll - 1] == '/')
        ll--;
    n = ll + strlen(c->tenant_id) + 32;
    if ((u = OPENSSL_malloc(n)) != NULL)
        snprintf(u, n, "%.*s/%s/oauth2/v2.0/token", (int)ll, login, c->tenant_id);
    return u;
}

struct ctok_az *ctok_az_new(const struct ctok_az_conf *c)
{
    const char *tok = c->tokname != NULL ? c->tokname : "?", *bad = conf_check(c);
    struct ctok_az *a;
    int oom = 0;

    if (bad != NULL) {
        CTOK_ERR(CTOK_R_CONFIG, "token '%s': %s", tok, bad);
        return NULL;
    }
    if ((a = OPENSSL_zalloc(sizeof(*a))) == NULL)
        goto oom;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->fetched_cond, NULL);
    ctok_http_fork_guard(&a->lock, 1);
    a->tokname = dup_or_null(tok, &oom);
    a->vault_url = dup_or_null(c->vault_url, &oom);
    a->scope = dup_or_null(c->scope != NULL && *c->scope ? c->scope : DEFAULT_SCOPE, &oom);
    a->tenant_id = dup_or_null(c->tenant_id, &oom);
    a->client_id = dup_or_null(c->client_id != NULL && *c->client_id ? c->client_id : NULL, &oom);
    a->api_version =
        dup_or_null(c->api_version != NULL && *c->api_version ? c->api_version : "7.4", &oom);
    oom |= (a->token_url = token_url(c)) == NULL;
    a->auth = c->auth;
    a->timeout_ms = c->timeout_ms > 0 ? c->timeout_ms : 10000;
    a->max_retries = c->max_retries >= 0 ? c->max_retries : 3;
    a->sign = c->sign;
    a->sign_arg = c->sign_arg;
    if (c->auth == CTOK_AZ_CERTIFICATE) {
        uint8_t md[SHA256_DIGEST_LENGTH];

        SHA256(c->cert_der, c->cert_der_len, md);
        oom |= (a->x5t = b64url(md, sizeof(md))) == NULL;
    }
    if (a->vault_url != NULL) /* "https://v.vault.azure.net/" names the same vault */
        for (size_t n = strlen(a->vault_url); n > 8 && a->vault_url[n - 1] == '/'; n--)
            a->vault_url[n - 1] = '\0';
    if (oom || (a->pool = ctok_http_pool_new(c->ca_file, a->timeout_ms)) == NULL)
        goto oom;
    return a;
oom:
    ctok_az_free(a);
    CTOK_ERR(CTOK_R_INTERNAL, "token '%s': out of memory", tok);
    return NULL;
}

void ctok_az_free(struct ctok_az *a)
{
    if (a == NULL)
        return;
    ctok_http_fork_guard(&a->lock, 0);
    clear_str(&a->secret);
    clear_str(&a->token);
    ctok_http_pool_free(a->pool);
    pthread_cond_destroy(&a->fetched_cond);
    pthread_mutex_destroy(&a->lock);
    OPENSSL_free(a->tokname);
    OPENSSL_free(a->vault_url);
    OPENSSL_free(a->scope);
    OPENSSL_free(a->tenant_id);
    OPENSSL_free(a->client_id);
    OPENSSL_free(a->api_version);
    OPENSSL_free(a->token_url);
    OPENSSL_free(a->x5t);
    OPENSSL_free(a);
}

int ctok_az_set_secret(struct ctok_az *a, const char *secret, size_t len)
{
    char *s;

    if (a->auth != CTOK_AZ_SECRET) {
        CTOK_ERR(CTOK_R_CONFIG, "token '%s': only auth_method 'secret' takes a client secret",
                 a->tokname);
        return 0;
    }
    while (len > 0 &&
           (secret[len - 1] == '\n' || secret[len - 1] == '\r' || secret[len - 1] == ' '))
        len--;
    if (len == 0 || memchr(secret, '\0', len) != NULL) {
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s': the client secret is empty or not text", a->tokname);
        return 0;
    }
    if ((s = OPENSSL_malloc(len + 1)) == NULL) {
        CTOK_ERR(CTOK_R_INTERNAL, "token '%s': out of memory", a->tokname);
        return 0;
    }
    memcpy(s, secret, len);
    s[len] = '\0';
    pthread_mutex_lock(&a->lock);
    clear_str(&a->secret);
    a->secret = s;
    pthread_mutex_unlock(&a->lock);
    return 1;
}

void ctok_az_logout(struct ctok_az *a)
{
    pthread_mutex_lock(&a->lock);
    clear_str(&a->secret);
    clear_str(&a->token);
    a->expires = a->fetched = 0;
    pthread_mutex_unlock(&a->lock);
}

unsigned long ctok_az_token_requests(struct ctok_az *a)
{
    unsigned long n;

    pthread_mutex_lock(&a->lock);
    n = a->n_token_requests;
    pthread_mutex_unlock(&a->lock);
    return n;
}

/* ---- the token response ---- */

int ctok_az_parse_token(const char *body, size_t len, char **token, long *expires_in, char *why,
                        size_t why_len)
{
    json_t *j = body != NULL ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_t *t, *e, *ty;
    const char *k;
    json_t *v;
    long exp = 0;
    int ok = 0;

    *token = NULL;
    *expires_in = 0;
    if (!json_is_object(j)) {
        snprintf(why, why_len, "the token response is not a JSON object");
        goto end;
    }
    t = json_object_get(j, "access_token");
    e = json_object_get(j, "expires_in");
    ty = json_object_get(j, "token_type");
    if (!json_is_string(t) || json_string_length(t) == 0 ||
        strlen(json_string_value(t)) != json_string_length(t)) {
        snprintf(why, why_len, "the token response has no access_token");
        goto end;
    }
    for (const char *p = json_string_value(t); *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) { /* it goes into a header line */
            snprintf(why, why_len, "the access_token is not a header value");
            goto end;
        }
    if (ty != NULL && (!json_is_string(ty) || strcasecmp(json_string_value(ty), "Bearer") != 0)) {
        snprintf(why, why_len, "the token_type is not Bearer");
        goto end;
    }
    if (json_is_integer(e)) {
        exp = (long)(json_integer_value(e) > 0x7fffffff ? 0x7fffffff : json_integer_value(e));
    } else if (json_is_string(e)) { /* managed identity: "3599" */
        const char *s = json_string_value(e);
        char *end;

        exp = strtol(s, &end, 10);
        if (end == s || *end != '\0')
            exp = 0;
    }
    if (exp <= 0) {
        snprintf(why, why_len, "the token response has no positive expires_in");
        goto end;
    }
    if ((*token = OPENSSL_strdup(json_string_value(t))) == NULL) {
        snprintf(why, why_len, "out of memory");
        goto end;
    }
    *expires_in = exp;
    ok = 1;
end:
    if (j != NULL) {
        /* the response held the token: cleanse jansson's copies before they are freed */
        json_object_foreach(j, k, v) if (json_is_string(v))
            OPENSSL_cleanse((void *)json_string_value(v), json_string_length(v));
        json_decref(j);
    }
    return ok;
}

/* ---- requests for a token ---- */

static int add_param(char **buf, size_t *len, const char *name, const char *value)
{
    char *esc = curl_easy_escape(NULL, value, 0), *b;
    size_t n;

    if (esc == NULL)
        return 0;
    n = *len + strlen(name) + strlen(esc) + 3;
    if ((b = OPENSSL_malloc(n)) == NULL) {
        OPENSSL_cleanse(esc, strlen(esc));
        curl_free(esc);
        return 0;
    }
    snprintf(b, n, "%s%s%s=%s", *buf != NULL ? *buf : "", *buf != NULL ? "&" : "", name, esc);
    OPENSSL_cleanse(esc, strlen(esc));
    curl_free(esc);
    if (*buf != NULL)
        OPENSSL_clear_free(*buf, *len + 1);
    *buf = b;
    *len = strlen(b);
    return 1;
}

static void uuid4(char out[37])
{
    uint8_t r[16];

    if (RAND_bytes(r, sizeof(r)) != 1) /* jti only needs to be unique */
        for (size_t i = 0; i < sizeof(r); i++)
            r[i] = (uint8_t)(rand() ^ (int)ctok_cloud_now_ms() ^ (int)i);
    r[6] = (r[6] & 0x0f) | 0x40;
    r[8] = (r[8] & 0x3f) | 0x80;
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
             r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
             r[14], r[15]);
}

static char *b64url_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER), *b;

    if (s == NULL)
        return NULL;
    b = b64url((const uint8_t *)s, strlen(s));
    free(s);
    return b;
}

/* The client assertion: a JWT as MSAL makes it. NULL: out of memory (o says so), or the
 * signer failed (*raised set). */
static char *assertion(struct ctok_az *a, int *raised)
{
    time_t now = time(NULL);
    char jti[37], *h = NULL, *c = NULL, *in = NULL, *s = NULL, *jwt = NULL;
    uint8_t sig[SIG_MAX];
    size_t siglen = sizeof(sig), n;
    json_t *hj, *cj;

    uuid4(jti);
    hj = json_pack("{s:s, s:s, s:s}", "alg", "PS256", "typ", "JWT", "x5t#S256", a->x5t);
    cj = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", a->token_url, "iss", a->client_id,
                   "sub", a->client_id, "jti", jti, "nbf", (json_int_t)now, "iat", (json_int_t)now,
                   "exp", (json_int_t)(now + ASSERTION_LIFE));
    if (hj == NULL || cj == NULL || (h = b64url_json(hj)) == NULL || (c = b64url_json(cj)) == NULL)
        goto end;
    n = strlen(h) + strlen(c) + 2;
    if ((in = OPENSSL_malloc(n)) == NULL)
        goto end;
    snprintf(in, n, "%s.%s", h, c);
    if (!a->sign(a->sign_arg, (const uint8_t *)in, strlen(in), sig, &siglen)) {
        *raised = 1;
        goto end;
    }
    if (siglen > sizeof(sig) || (s = b64url(sig, siglen)) == NULL)
        goto end;
    n = strlen(in) + strlen(s) + 2;
    if ((jwt = OPENSSL_malloc(n)) != NULL)
        snprintf(jwt, n, "%s.%s", in, s);
end:
    json_decref(hj);
    json_decref(cj);
    OPENSSL_free(h);
    OPENSSL_free(c);
    OPENSSL_free(in);
    OPENSSL_free(s);
    OPENSSL_cleanse(sig, sizeof(sig));
    return jwt;
}

/* The form of a client-credentials request; NULL with *raised when the signer failed */
static char *aad_form(struct ctok_az *a, int *raised)
{
    char *form = NULL, *secret = NULL, *jwt = NULL;
    size_t len = 0;
    int ok;

    if (a->auth == CTOK_AZ_SECRET) {
        pthread_mutex_lock(&a->lock);
        secret = a->secret != NULL ? OPENSSL_strdup(a->secret) : NULL;
        pthread_mutex_unlock(&a->lock);
        if (secret == NULL)
            return NULL;
    } else if ((jwt = assertion(a, raised)) == NULL) {
        return NULL;
    }
    ok = add_param(&form, &len, "client_id", a->client_id) &&
         add_param(&form, &len, "scope", a->scope) &&
         add_param(&form, &len, "grant_type", "client_credentials") &&
         (secret != NULL ? add_param(&form, &len, "client_secret", secret)
                         : add_param(&form, &len, "client_assertion_type",
                                     "urn:ietf:params:oauth:client-assertion-type:jwt-bearer") &&
                               add_param(&form, &len, "client_assertion", jwt));
    clear_str(&secret);
    clear_str(&jwt);
    if (!ok && form != NULL)
        clear_str(&form);
    return form;
}

/* GET {mi}?api-version=2018-02-01&resource=<scope without /.default>[&client_id=] */
static char *mi_url(struct ctok_az *a)
{
    char *res = OPENSSL_strdup(a->scope), *esc, *cid = NULL, *u = NULL;
    size_t n = strlen(a->scope);

    if (res == NULL)
        return NULL;
    if (n > 9 && strcmp(res + n - 9, "/.default") == 0)
        res[n - 9] = '\0';
    esc = curl_easy_escape(NULL, res, 0);
    if (a->client_id != NULL) /* a user-assigned identity */
        cid = curl_easy_escape(NULL, a->client_id, 0);
    if (esc != NULL && (a->client_id == NULL || cid != NULL)) {
        n = strlen(a->token_url) + strlen(esc) + (cid ? strlen(cid) : 0) + 64;
        if ((u = OPENSSL_malloc(n)) != NULL)
            snprintf(u, n, "%s%capi-version=2018-02-01&resource=%s%s%s", a->token_url,
                     strchr(a->token_url, '?') ? '&' : '?', esc, cid ? "&client_id=" : "",
                     cid ? cid : "");
    }
    curl_free(esc);
    curl_free(cid);
    OPENSSL_free(res);
    return u;
}

static int aad_reason(long status)
{
    if (status == 429)
        return CTOK_R_THROTTLED;
    if (status >= 500 || status == 408)
        return CTOK_R_BACKEND;
    return CTOK_R_CREDENTIALS; /* invalid_client, unauthorized_client, invalid_request ... */
}

struct fetch {
    struct ctok_az *a;
    char *token;
    long expires_in;
};

static int fetch_attempt(void *arg, int refresh, struct ctok_cloud_outcome *o)
{
    struct fetch *f = arg;
    struct ctok_az *a = f->a;
    const char *form_hdr[] = {"Content-Type: application/x-www-form-urlencoded",
                              "Accept: application/json", NULL};
    const char *mi_hdr[] = {"Metadata: true", "Accept: application/json", NULL};
    struct ctok_http_req req = {.method = "POST", .headers = form_hdr};
    struct ctok_http_resp r;
    char *form = NULL, *url = NULL;
    int raised = 0, rc;

    (void)refresh;
    if (a->auth == CTOK_AZ_MANAGED_IDENTITY) {
        req.method = "GET";
        req.headers = mi_hdr;
        req.direct = 1; /* as the SDKs: the identity endpoint never through a proxy */
        req.connect_timeout_ms = CTOK_AZ_MI_CONNECT_MS;
        if ((req.url = url = mi_url(a)) == NULL)
            goto oom;
    } else {
        if ((form = aad_form(a, &raised)) == NULL) {
            if (raised)
                return -1;
            if (a->auth == CTOK_AZ_SECRET && a->secret == NULL) {
                o->status = -1;
                o->reason = CTOK_R_NO_CODE;
                snprintf(o->msg, sizeof(o->msg), "no client secret (log in first)");
                return 0;
            }
            goto oom;
        }
        req.url = a->token_url;
        req.body = form;
        req.body_len = strlen(form);
    }
    pthread_mutex_lock(&a->lock);
    a->n_token_requests++;
    pthread_mutex_unlock(&a->lock);
    rc = ctok_http_do(a->pool, &req, &r);
    clear_str(&form);
    OPENSSL_free(url);
    if (!rc) {
        ctok_cloud_transport(o, &r);
        return 0;
    }
    o->status = r.status;
    o->retry_after_ms = r.retry_after_ms;
    if (r.status == 200) {
        rc = ctok_az_parse_token(r.body, r.body_len, &f->token, &f->expires_in, o->msg,
                                 sizeof(o->msg));
        if (!rc) {
            o->reason = CTOK_R_CREDENTIALS;
            snprintf(o->type, sizeof(o->type), "malformed token response");
        }
    } else {
        ctok_az_parse_error(r.body, r.body_len, o->type, sizeof(o->type), o->msg, sizeof(o->msg));
        o->reason = aad_reason(r.status);
        rc = 0;
    }
    if (r.body != NULL)
        OPENSSL_cleanse(r.body, r.body_len);
    ctok_http_resp_clear(&r);
    return rc;
oom:
    clear_str(&form);
    o->status = -1;
    o->reason = CTOK_R_INTERNAL;
    snprintf(o->msg, sizeof(o->msg), "out of memory");
    return 0;
}

/* One token from Azure AD or the identity endpoint, with the retries of a vault call */
static int fetch(struct ctok_az *a, char **token, long *expires_in, struct ctok_cloud_outcome *o)
{
    struct fetch f = {a, NULL, 0};
    struct ctok_cloud_try t = {.max_retries = a->max_retries,
                               .base_ms = 100,
                               .throttled_base_ms = 500,
                               .attempt = fetch_attempt,
                               .retryable = ctok_az_retryable,
                               .arg = &f};
    long start = ctok_cloud_now_ms();
    int n = 0, rc = ctok_cloud_run(&t, o, &n);

    CTOK_DBG("token '%s': azure %s token: %s %ld, %d attempt(s), %ld ms", a->tokname,
             a->auth == CTOK_AZ_MANAGED_IDENTITY ? "managed identity" : "Azure AD",
             rc == 1 ? "HTTP" : "failed", rc == 1 ? 200L : o->status, n,
             ctok_cloud_now_ms() - start);
    *token = f.token;
    *expires_in = f.expires_in;
    return rc;
}

/* ---- the shared token ---- */

static int due(const struct ctok_az *a, time_t now)
{
    time_t margin = (a->expires - a->fetched) / 2;

    /* real tokens live an hour or more: 5 minutes; short ones: half their life */
    if (margin > REFRESH_MARGIN)
        margin = REFRESH_MARGIN;
    return now >= a->expires - margin;
}

static int copy_token(struct ctok_az *a, char **tok, unsigned long *gen)
{
    *gen = a->gen;
    return (*tok = OPENSSL_strdup(a->token)) != NULL;
}

int ctok_az_token_get(struct ctok_az *a, unsigned long stale_gen, char **tok, unsigned long *gen,
                      struct ctok_cloud_outcome *o)
{
    char *fresh = NULL;
    long life = 0;
    int rc, usable, stale;

    *tok = NULL;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        time_t now = time(NULL);
        int busy = a->refreshing == ctok_self_pid();

        stale = stale_gen != 0 && a->gen == stale_gen;
        usable = a->token != NULL && now < a->expires && !stale;
        if (usable && (!due(a, now) || busy)) {
            rc = copy_token(a, tok, gen);
            pthread_mutex_unlock(&a->lock);
            goto copied;
        }
        if (!busy)
            break;
        /* another thread fetches and nothing valid is left: wait for its token */
        {
            struct timespec ts;

            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&a->fetched_cond, &a->lock, &ts);
        }
    }
    a->refreshing = ctok_self_pid();
    pthread_mutex_unlock(&a->lock);

    rc = fetch(a, &fresh, &life, o);

    pthread_mutex_lock(&a->lock);
    a->refreshing = 0;
    if (rc == 1) {
        clear_str(&a->token);
        a->token = fresh;
        a->fetched = time(NULL);
        a->expires = a->fetched + life;
        a->gen++;
    }
    pthread_cond_broadcast(&a->fetched_cond);
    /* a failed refresh before expiry is no failure yet: go on with what is valid */
    usable = a->token != NULL && time(NULL) < a->expires && (rc == 1 || !stale);
    if (usable)
        rc = copy_token(a, tok, gen);
    else if (rc == 1)
        rc = 0; /* valid for less than a second: say so */
    pthread_mutex_unlock(&a->lock);
    if (!usable && o->reason == 0) {
        o->status = -1;
        o->reason = CTOK_R_CREDENTIALS;
        snprintf(o->msg, sizeof(o->msg), "the access token expired as it arrived");
    }
    return usable ? rc : (rc < 0 ? -1 : 0);
copied:
    if (!rc) {
        o->status = -1;
        o->reason = CTOK_R_INTERNAL;
        snprintf(o->msg, sizeof(o->msg), "out of memory");
    }
    return rc;
}

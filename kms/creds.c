/*
 * AWS credentials: access keys from the token's auth code, or the EC2 instance role's
 * temporary credentials over IMDSv2. Role credentials are refreshed before Expiration by
 * whichever thread first sees them due; the fetch runs without the credentials lock, so
 * other threads keep signing with the still-valid set meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "awsint.h"
#include "../store/err.h"
#include "../store/token.h"

#define REFRESH_MARGIN 300 /* seconds before Expiration, as the SDKs do */
#define IMDS_TOKEN_TTL "21600"

static char *dup_secret(const char *s, size_t n)
{
    char *d = OPENSSL_malloc(n + 1);

    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void clear_str(char **s)
{
    if (*s != NULL)
        OPENSSL_clear_free(*s, strlen(*s));
    *s = NULL;
}

void ctok_aws_creds_clear(struct ctok_aws_creds *c)
{
    clear_str(&c->akid);
    clear_str(&c->secret);
    clear_str(&c->token);
    c->expires = c->fetched = 0;
    OPENSSL_cleanse(c->key, sizeof(c->key));
    c->key_day[0] = '\0';
}

static int creds_copy(const struct ctok_aws_creds *from, struct ctok_aws_creds *to)
{
    memset(to, 0, sizeof(*to));
    to->akid = OPENSSL_strdup(from->akid);
    to->secret = OPENSSL_strdup(from->secret);
    to->token = from->token != NULL ? OPENSSL_strdup(from->token) : NULL;
    to->expires = from->expires;
    to->fetched = from->fetched;
    memcpy(to->key_day, from->key_day, sizeof(to->key_day));
    memcpy(to->key, from->key, sizeof(to->key));
    if (to->akid == NULL || to->secret == NULL || (from->token != NULL && to->token == NULL)) {
        ctok_aws_creds_clear(to);
        return 0;
    }
    return 1;
}

int ctok_aws_set_secret(struct ctok_aws *a, const char *code, size_t len)
{
    const char *nl = memchr(code, '\n', len);
    size_t slen = nl != NULL ? (size_t)(nl - code) : len;
    struct ctok_aws_creds c = {0};
    int oom;

    if (a->use_role) {
        CTOK_ERR(CTOK_R_CONFIG, "token '%s': auth_method 'role' takes no secret", a->tokname);
        return 0;
    }
    while (slen > 0 && (code[slen - 1] == '\r' || code[slen - 1] == ' '))
        slen--;
    if (slen == 0) {
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s': the secret access key is empty", a->tokname);
        return 0;
    }
    c.akid = OPENSSL_strdup(a->akid);
    c.secret = dup_secret(code, slen);
    oom = c.akid == NULL || c.secret == NULL;
    if (nl != NULL) {
        size_t tlen = len - (size_t)(nl + 1 - code);
        const char *t = nl + 1;

        while (tlen > 0 && (t[tlen - 1] == '\n' || t[tlen - 1] == '\r' || t[tlen - 1] == ' '))
            tlen--;
        if (tlen > 0)
            oom |= (c.token = dup_secret(t, tlen)) == NULL;
    }
    if (oom) {
        ctok_aws_creds_clear(&c);
        CTOK_ERR(CTOK_R_INTERNAL, "token '%s': out of memory", a->tokname);
        return 0;
    }
    pthread_mutex_lock(&a->lock);
    ctok_aws_creds_clear(&a->cur);
    a->cur = c;
    pthread_mutex_unlock(&a->lock);
    return 1;
}

void ctok_aws_logout(struct ctok_aws *a)
{
    pthread_mutex_lock(&a->lock);
    ctok_aws_creds_clear(&a->cur);
    pthread_mutex_unlock(&a->lock);
}

int ctok_aws_login(struct ctok_aws *a)
{
    struct ctok_aws_creds c;

    if (!ctok_aws_creds_get(a, &c, a->use_role))
        return 0;
    ctok_aws_creds_clear(&c);
    return 1;
}

/* ---- parsers ---- */

time_t ctok_aws_parse_time(const char *s)
{
    struct tm tm = {0};
    int n = 0;

    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                            &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
        return -1;
    s += n;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++)
            ;
    if (strcmp(s, "Z") != 0 || tm.tm_year < 1970 || tm.tm_mon < 1 || tm.tm_mon > 12 ||
        tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

static const char *str_field(json_t *o, const char *name)
{
    const char *v = json_string_value(json_object_get(o, name));

    return v != NULL && *v != '\0' && strlen(v) == json_string_length(json_object_get(o, name))
               ? v
               : NULL;
}

int ctok_aws_parse_imds_creds(const char *doc, size_t len, struct ctok_aws_creds *out, char *why,
                              size_t why_len)
{
    json_t *j = json_loadb(doc, len, JSON_REJECT_DUPLICATES, NULL);
    const char *code, *akid, *secret, *token, *exp;
    int ok = 0;

    memset(out, 0, sizeof(*out));
    if (!json_is_object(j)) {
        snprintf(why, why_len, "the credential document is not a JSON object");
        goto end;
    }
    code = str_field(j, "Code");
    akid = str_field(j, "AccessKeyId");
    secret = str_field(j, "SecretAccessKey");
    token = str_field(j, "Token");
    exp = str_field(j, "Expiration");
    if (code == NULL || strcmp(code, "Success") != 0) {
        /* Code is a word like "Success" or "AssumeRoleUnauthorizedAccess": safe to show */
        snprintf(why, why_len, "the credential document says Code '%.64s'",
                 code != NULL ? code : "");
        for (char *p = why; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
        goto end;
    }
    if (akid == NULL || secret == NULL || token == NULL || exp == NULL) {
        snprintf(why, why_len, "the credential document lacks %s",
                 akid == NULL     ? "AccessKeyId"
                 : secret == NULL ? "SecretAccessKey"
                 : token == NULL  ? "Token"
                                  : "Expiration");
        goto end;
    }
    if ((out->expires = ctok_aws_parse_time(exp)) == (time_t)-1) {
        snprintf(why, why_len, "the credential document's Expiration is not an ISO 8601 time");
        goto end;
    }
    out->akid = OPENSSL_strdup(akid);
    out->secret = OPENSSL_strdup(secret);
    out->token = OPENSSL_strdup(token);
    if (out->akid == NULL || out->secret == NULL || out->token == NULL) {
        snprintf(why, why_len, "out of memory");
        goto end;
    }
    ok = 1;
end:
    if (!ok)
        ctok_aws_creds_clear(out);
    if (j != NULL) {
        /* the document held the secret: cleanse jansson's copies before they are freed */
        const char *k;
        json_t *v;

        json_object_foreach(j, k, v) if (json_is_string(v))
            OPENSSL_cleanse((void *)json_string_value(v), json_string_length(v));
        json_decref(j);
    }
    return ok;
}

/* ---- IMDSv2 ---- */

struct fetch_error {
    int reason;
    char msg[400];
};

static int imds_get(struct ctok_aws *a, const char *method, const char *path,
                    const char *const *headers, struct ctok_http_resp *r, struct fetch_error *e)
{
    char url[512];
    struct ctok_http_req req = {.method = method,
                                .url = url,
                                .headers = headers,
                                .timeout_ms = CTOK_IMDS_TIMEOUT_MS,
                                .direct = 1}; /* as the SDKs: IMDS never through a proxy */

    snprintf(url, sizeof(url), "%s%s", a->imds, path);
    if (!ctok_http_do(a->pool, &req, r)) {
        e->reason = r->timed_out ? CTOK_R_TIMEOUT : CTOK_R_NETWORK;
        snprintf(e->msg, sizeof(e->msg), "instance metadata service %s: %s", a->imds, r->error);
        return 0;
    }
    if (r->status != 200 || r->body == NULL || r->body_len == 0) {
        e->reason = CTOK_R_CREDENTIALS;
        snprintf(e->msg, sizeof(e->msg), "instance metadata service %s: HTTP %ld for %s %s",
                 a->imds, r->status, method, path);
        ctok_http_resp_clear(r);
        return 0;
    }
    return 1;
}

static int role_fetch(struct ctok_aws *a, struct ctok_aws_creds *out, struct fetch_error *e)
{
    static const char list[] = "/latest/meta-data/iam/security-credentials/";
    const char *ttl[] = {"X-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL, NULL};
    char tokhdr[256], path[sizeof(list) + 128], *nl;
    const char *with_token[] = {tokhdr, NULL};
    struct ctok_http_resp r;
    int ok = 0;

    if (!imds_get(a, "PUT", "/latest/api/token", ttl, &r, e))
        return 0;
    if (r.body_len > 200 || strpbrk(r.body, "\r\n") != NULL) {
        e->reason = CTOK_R_CREDENTIALS;
        snprintf(e->msg, sizeof(e->msg), "instance metadata service %s: malformed token", a->imds);
        OPENSSL_cleanse(r.body, r.body_len);
        ctok_http_resp_clear(&r);
        return 0;
    }
    snprintf(tokhdr, sizeof(tokhdr), "X-aws-ec2-metadata-token: %s", r.body);
    OPENSSL_cleanse(r.body, r.body_len);
    ctok_http_resp_clear(&r);
    if (!imds_get(a, "GET", list, with_token, &r, e))
        goto end;
    if ((nl = strpbrk(r.body, "\r\n")) != NULL)
        *nl = '\0'; /* the first role */
    if (strlen(r.body) == 0 || strlen(r.body) > 127 || strpbrk(r.body, "/?#% ") != NULL) {
        e->reason = CTOK_R_CREDENTIALS;
        snprintf(e->msg, sizeof(e->msg), "instance metadata service %s: no usable role name",
                 a->imds);
        ctok_http_resp_clear(&r);
        goto end;
    }
    snprintf(path, sizeof(path), "%s%s", list, r.body);
    ctok_http_resp_clear(&r);
    if (!imds_get(a, "GET", path, with_token, &r, e))
        goto end;
    if (!ctok_aws_parse_imds_creds(r.body, r.body_len, out, e->msg + 200, sizeof(e->msg) - 200)) {
        e->reason = CTOK_R_CREDENTIALS;
        memmove(e->msg, e->msg + 200, strlen(e->msg + 200) + 1);
    } else {
        out->fetched = time(NULL);
        ok = 1;
    }
    OPENSSL_cleanse(r.body, r.body_len);
    ctok_http_resp_clear(&r);
end:
    OPENSSL_cleanse(tokhdr, sizeof(tokhdr));
    return ok;
}

/* ---- the credentials a call signs with ---- */

static int due(const struct ctok_aws_creds *c, time_t now)
{
    time_t margin = (c->expires - c->fetched) / 2;

    /* real role credentials live hours: 5 minutes; short test ones: half their life */
    if (margin > REFRESH_MARGIN)
        margin = REFRESH_MARGIN;
    return now >= c->expires - margin;
}

int ctok_aws_creds_get(struct ctok_aws *a, struct ctok_aws_creds *out, int force)
{
    time_t now = time(NULL);
    struct ctok_aws_creds fresh;
    struct fetch_error e = {0};
    int usable, ok;

    pthread_mutex_lock(&a->lock);
    if (!a->use_role) {
        ok = a->cur.secret != NULL && creds_copy(&a->cur, out);
        pthread_mutex_unlock(&a->lock);
        if (!ok)
            CTOK_ERR(CTOK_R_NO_CODE, "token '%s': no secret access key (log in first)", a->tokname);
        return ok;
    }
    usable = !force && a->cur.secret != NULL && now < a->cur.expires;
    if (usable && (!due(&a->cur, now) || a->refreshing == ctok_self_pid())) {
        ok = creds_copy(&a->cur, out);
        pthread_mutex_unlock(&a->lock);
        if (!ok)
            CTOK_ERR(CTOK_R_INTERNAL, "token '%s': out of memory", a->tokname);
        return ok;
    }
    a->refreshing = ctok_self_pid();
    pthread_mutex_unlock(&a->lock);

    ok = role_fetch(a, &fresh, &e);

    pthread_mutex_lock(&a->lock);
    a->refreshing = 0;
    if (ok) {
        CTOK_DBG("token '%s': instance role credentials fetched, valid for %ld s", a->tokname,
                 (long)(fresh.expires - fresh.fetched));
        ctok_aws_creds_clear(&a->cur);
        a->cur = fresh;
    }
    /* a failed refresh before Expiration is no failure yet: sign on with what is valid */
    usable = a->cur.secret != NULL && time(NULL) < a->cur.expires && (ok || !force);
    ok = usable && creds_copy(&a->cur, out);
    pthread_mutex_unlock(&a->lock);
    if (!ok)
        CTOK_ERR(e.reason ? e.reason : CTOK_R_CREDENTIALS, "token '%s': instance role: %s",
                 a->tokname, e.msg[0] ? e.msg : "no valid credentials");
    return ok;
}

void ctok_aws_creds_keep_key(struct ctok_aws *a, const struct ctok_aws_creds *c)
{
    pthread_mutex_lock(&a->lock);
    if (a->cur.secret != NULL && strcmp(a->cur.secret, c->secret) == 0 &&
        strcmp(a->cur.akid, c->akid) == 0) {
        memcpy(a->cur.key_day, c->key_day, sizeof(a->cur.key_day));
        memcpy(a->cur.key, c->key, sizeof(a->cur.key));
    }
    pthread_mutex_unlock(&a->lock);
}

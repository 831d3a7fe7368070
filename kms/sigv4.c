/*
 * SigV4 with OpenSSL's SHA-256 and HMAC. The derived key depends only on secret, date, region
 * and service: ctok_sigv4_derive_key gives it to a caller that keeps it for the day beside the
 * secret (kms/creds.c), ctok_sigv4_sign derives it afresh for each request.
 * SHA-256 and an HMAC-SHA256 template context are fetched once per process:
 * EVP_Q_digest/EVP_Q_mac fetch on every use: 32 us a signature that way, 23 us now (KMS Sign
 * request, this machine; the rest is SHA-256 itself: 5 HMACs and 2 digests).
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "sigv4.h"

#define SHA256_LEN 32
#define MAX_SIGNED_HEADERS 16

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static pthread_once_t algs_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256;
static EVP_MAC_CTX *hmac_template; /* HMAC with SHA-256, no key: dup'd per signature */

static void algs_fetch(void)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                           OSSL_PARAM_construct_end()};

    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (mac != NULL && (hmac_template = EVP_MAC_CTX_new(mac)) != NULL &&
        !EVP_MAC_CTX_set_params(hmac_template, params)) {
        EVP_MAC_CTX_free(hmac_template);
        hmac_template = NULL;
    }
    EVP_MAC_free(mac); /* the context keeps its own reference */
}

static int sha256_hex(const void *data, size_t len, char out[2 * SHA256_LEN + 1])
{
    unsigned char md[SHA256_LEN];
    unsigned int mdlen = 0;

    if (!EVP_Digest(data, len, md, &mdlen, sha256, NULL))
        return 0;
    hex(md, mdlen, out);
    return 1;
}

static int hmac(EVP_MAC_CTX *c, const void *key, size_t klen, const char *msg,
                unsigned char out[SHA256_LEN])
{
    size_t n = 0;

    return EVP_MAC_init(c, key, klen, NULL) &&
           EVP_MAC_update(c, (const unsigned char *)msg, strlen(msg)) &&
           EVP_MAC_final(c, out, &n, SHA256_LEN) && n == SHA256_LEN;
}

/* A growing string; on failure len stays and ok drops to 0. */
struct buf {
    char *s;
    size_t len, cap;
    int ok;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (!b->ok)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *t = OPENSSL_realloc(b->s, cap);

        if (t == NULL) {
            b->ok = 0;
            return;
        }
        b->s = t;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s)
{
    if (s != NULL)
        put(b, s, strlen(s));
}

/* The value trimmed, each run of spaces inside it as one space. */
static void put_value(struct buf *b, const char *v)
{
    const char *end = v + strlen(v);

    while (*v == ' ' || *v == '\t')
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (; v < end; v++) {
        if ((*v == ' ' || *v == '\t') && (v[1] == ' ' || v[1] == '\t'))
            continue;
        put(b, *v == '\t' ? " " : v, 1);
    }
}

static void put_lower(struct buf *b, const char *s)
{
    for (; *s; s++) {
        char c = (char)tolower((unsigned char)*s);

        put(b, &c, 1);
    }
}

/* Header indices in canonical (lower-case name) order. */
static int sorted(const struct ctok_sigv4_req *r, size_t *idx)
{
    if (r->n_headers == 0 || r->n_headers > MAX_SIGNED_HEADERS)
        return 0;
    for (size_t i = 0; i < r->n_headers; i++)
        idx[i] = i;
    /* insertion sort: qsort's comparator would need a global */
    for (size_t i = 1; i < r->n_headers; i++)
        for (size_t j = i;
             j > 0 && strcasecmp(r->headers[idx[j - 1]].name, r->headers[idx[j]].name) > 0; j--) {
            size_t t = idx[j];

            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    return 1;
}

static int algs_ready(void)
{
    pthread_once(&algs_once, algs_fetch);
    return sha256 != NULL && hmac_template != NULL;
}

static int derive(EVP_MAC_CTX *c, const char *secret, const char *date, const char *region,
                  const char *service, unsigned char key[SHA256_LEN])
{
    size_t slen = secret != NULL ? strlen(secret) : 0;
    char day[9], *k0 = secret != NULL ? OPENSSL_malloc(slen + 5) : NULL;
    int ok;

    if (k0 == NULL)
        return 0;
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, secret, slen + 1);
    snprintf(day, sizeof(day), "%.8s", date);
    ok = hmac(c, k0, slen + 4, day, key) && hmac(c, key, SHA256_LEN, region, key) &&
         hmac(c, key, SHA256_LEN, service, key) && hmac(c, key, SHA256_LEN, "aws4_request", key);
    OPENSSL_clear_free(k0, slen + 5);
    return ok;
}

int ctok_sigv4_derive_key(const char *secret, const char *date, const char *region,
                          const char *service, unsigned char key[CTOK_SIGV4_KEY_LEN])
{
    EVP_MAC_CTX *c = algs_ready() ? EVP_MAC_CTX_dup(hmac_template) : NULL;
    int ok = c != NULL && derive(c, secret, date, region, service, key);

    EVP_MAC_CTX_free(c); /* HMAC cleanses its key state */
    return ok;
}

/* One request signed with the day's key, or (key NULL) with the key derived from secret. */
static int sign_with(EVP_MAC_CTX *c, const struct ctok_sigv4_req *r, const char *akid,
                     const char *secret, const unsigned char *key, char *auth, size_t auth_len,
                     char **canonical, char **to_sign)
{
    struct buf creq = {.ok = 1}, sts = {.ok = 1}, names = {.ok = 1};
    size_t idx[MAX_SIGNED_HEADERS];
    char h[2 * SHA256_LEN + 1], scope[128], sig[2 * SHA256_LEN + 1];
    unsigned char derived[SHA256_LEN], mac[SHA256_LEN];
    int ok = 0, n;

    if (strlen(r->amz_date) != 16 || !sorted(r, idx))
        return 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (i > 0)
            puts_(&names, ";");
        put_lower(&names, r->headers[idx[i]].name);
    }
    puts_(&creq, r->method);
    puts_(&creq, "\n");
    puts_(&creq, r->path);
    puts_(&creq, "\n");
    puts_(&creq, r->query);
    puts_(&creq, "\n");
    for (size_t i = 0; i < r->n_headers; i++) {
        put_lower(&creq, r->headers[idx[i]].name);
        puts_(&creq, ":");
        put_value(&creq, r->headers[idx[i]].value);
        puts_(&creq, "\n");
    }
    puts_(&creq, "\n");
    if (names.ok)
        puts_(&creq, names.s);
    puts_(&creq, "\n");
    if (!sha256_hex(r->body != NULL ? r->body : "", r->body_len, h))
        goto end;
    puts_(&creq, h);
    n = snprintf(scope, sizeof(scope), "%.8s/%s/%s/aws4_request", r->amz_date, r->region,
                 r->service);
    if (!creq.ok || !names.ok || n < 0 || (size_t)n >= sizeof(scope) ||
        !sha256_hex(creq.s, creq.len, h))
        goto end;
    puts_(&sts, "AWS4-HMAC-SHA256\n");
    puts_(&sts, r->amz_date);
    puts_(&sts, "\n");
    puts_(&sts, scope);
    puts_(&sts, "\n");
    puts_(&sts, h);
    if (!sts.ok ||
        (key == NULL && !derive(c, secret, r->amz_date, r->region, r->service, derived)) ||
        !hmac(c, key != NULL ? key : derived, SHA256_LEN, sts.s, mac))
        goto end;
    hex(mac, SHA256_LEN, sig);
    n = snprintf(auth, auth_len,
                 "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s", akid, scope,
                 names.s, sig);
    ok = n > 0 && (size_t)n < auth_len;
end:
    OPENSSL_cleanse(derived, sizeof(derived));
    OPENSSL_cleanse(mac, sizeof(mac));
    if (ok && canonical != NULL)
        *canonical = OPENSSL_strdup(creq.s);
    if (ok && to_sign != NULL)
        *to_sign = OPENSSL_strdup(sts.s);
    OPENSSL_free(creq.s);
    OPENSSL_free(sts.s);
    OPENSSL_free(names.s);
    return ok;
}

int ctok_sigv4_sign_key(const struct ctok_sigv4_req *r, const char *akid,
                        const unsigned char key[CTOK_SIGV4_KEY_LEN], char *auth, size_t auth_len,
                        char **canonical, char **to_sign)
{
    EVP_MAC_CTX *c = algs_ready() ? EVP_MAC_CTX_dup(hmac_template) : NULL;
    int ok = c != NULL && sign_with(c, r, akid, NULL, key, auth, auth_len, canonical, to_sign);

    EVP_MAC_CTX_free(c); /* HMAC cleanses its key state */
    return ok;
}

int ctok_sigv4_sign(const struct ctok_sigv4_req *r, const char *akid, const char *secret,
                    char *auth, size_t auth_len, char **canonical, char **to_sign)
{
    EVP_MAC_CTX *c = algs_ready() ? EVP_MAC_CTX_dup(hmac_template) : NULL;
    int ok = c != NULL && sign_with(c, r, akid, secret, NULL, auth, auth_len, canonical, to_sign);

    EVP_MAC_CTX_free(c);
    return ok;
}

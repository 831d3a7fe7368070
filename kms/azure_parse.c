/* Azure Key Vault response parsers (azure_parse.h): pure, every field checked, fuzzed. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>

#include "azure_parse.h"

#define AZ_B64URL "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

int ctok_az_name_ok(const char *s, int version)
{
    size_t n = s != NULL ? strlen(s) : 0;

    return n > 0 && n < (version ? AZ_VERSION_MAX : AZ_NAME_MAX) &&
           strspn(s, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-") == n;
}

int ctok_az_parse_id(const char *url, const char *coll, char name[AZ_NAME_MAX],
                     char version[AZ_VERSION_MAX])
{
    const char *p, *slash;
    size_t clen = strlen(coll), n;

    /* scheme://host[:port] then /<coll>/<name>[/<version>] */
    if (url == NULL || (p = strstr(url, "://")) == NULL || (p = strchr(p + 3, '/')) == NULL ||
        strncmp(p + 1, coll, clen) != 0 || p[1 + clen] != '/')
        return 0;
    p += 2 + clen;
    slash = strchr(p, '/');
    n = slash != NULL ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= AZ_NAME_MAX)
        return 0;
    memcpy(name, p, n);
    name[n] = '\0';
    version[0] = '\0';
    if (slash != NULL && slash[1] != '\0') {
        if (strlen(slash + 1) >= AZ_VERSION_MAX)
            return 0;
        strcpy(version, slash + 1);
        if (!ctok_az_name_ok(version, 1))
            return 0;
    }
    return ctok_az_name_ok(name, 0);
}

void ctok_az_b64url_encode(const uint8_t *in, size_t len, char *out)
{
    static const char a[] = AZ_B64URL;
    size_t o = 0;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t left = len - i;

        if (left > 1)
            v |= (uint32_t)in[i + 1] << 8;
        if (left > 2)
            v |= in[i + 2];
        out[o++] = a[(v >> 18) & 63];
        out[o++] = a[(v >> 12) & 63];
        if (left > 1)
            out[o++] = a[(v >> 6) & 63];
        if (left > 2)
            out[o++] = a[v & 63];
    }
    out[o] = '\0';
}

int ctok_az_b64url_decode(const char *in, uint8_t *out, size_t *len)
{
    size_t n = strlen(in), o = 0, bits = 0;
    uint32_t acc = 0;

    /* padding is tolerated at the end only, and only as much as completes a quantum */
    while (n > 0 && in[n - 1] == '=' && strlen(in) - n < 2)
        n--;
    if (n % 4 == 1 || (n < strlen(in) && strlen(in) % 4 != 0))
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *c = memchr(AZ_B64URL, in[i], 64);

        if (c == NULL || in[i] == '\0')
            return 0;
        acc = (acc << 6) | (uint32_t)(c - AZ_B64URL);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= *len)
                return 0;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* the bits left over must be zero (one encoding per value) */
    if ((acc & ((1u << bits) - 1)) != 0)
        return 0;
    *len = o;
    return 1;
}

/* A base64url field, decoded into a fresh buffer (OPENSSL_free). */
static uint8_t *field_bytes(const json_t *o, const char *field, size_t max, size_t *len)
{
    const char *s = json_string_value(json_object_get(o, field));
    uint8_t *b;

    if (s == NULL || strlen(s) == 0 || strlen(s) / 4 * 3 + 3 > max + 3)
        return NULL;
    *len = strlen(s) / 4 * 3 + 3;
    if ((b = OPENSSL_malloc(*len)) == NULL)
        return NULL;
    if (!ctok_az_b64url_decode(s, b, len) || *len == 0) {
        OPENSSL_free(b);
        return NULL;
    }
    return b;
}

static EVP_PKEY *fromdata(OSSL_LIB_CTX *libctx, const char *propq, const char *alg,
                          OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = bld != NULL ? OSSL_PARAM_BLD_to_param(bld) : NULL;
    EVP_PKEY_CTX *ctx = params != NULL ? EVP_PKEY_CTX_new_from_name(libctx, alg, propq) : NULL;
    EVP_PKEY *pkey = NULL;

    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

/* n, e: 1024..16384 bit modulus, odd exponent of at most 64 bits */
static int rsa_pub(const json_t *jwk, OSSL_LIB_CTX *libctx, const char *propq, struct az_key *out)
{
    size_t nlen = 0, elen = 0;
    uint8_t *n = field_bytes(jwk, "n", 2048, &nlen), *e = field_bytes(jwk, "e", 8, &elen);
    BIGNUM *bn = n != NULL ? BN_bin2bn(n, (int)nlen, NULL) : NULL;
    BIGNUM *be = e != NULL ? BN_bin2bn(e, (int)elen, NULL) : NULL;
    OSSL_PARAM_BLD *bld = NULL;
    int ok = 0;

    if (bn == NULL || be == NULL || BN_num_bits(bn) < 1024 || !BN_is_odd(be) || BN_is_one(be))
        goto end;
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        goto end;
    out->bits = BN_num_bits(bn);
    out->pub = fromdata(libctx, propq, "RSA", bld);
    out->type = CTOK_KT_RSA;
    ok = out->pub != NULL;
end:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    OPENSSL_free(n);
    OPENSSL_free(e);
    return ok;
}

static const struct {
    const char *crv, *group;
    int bits;
} curves[] = {
    {"P-256", "P-256", 256},
    {"P-384", "P-384", 384},
    {"P-521", "P-521", 521},
};

/* crv, x, y: a point of a NIST curve (checked on the curve by fromdata) */
static int ec_pub(const json_t *jwk, OSSL_LIB_CTX *libctx, const char *propq, struct az_key *out)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    size_t xlen = 0, ylen = 0, flen, ci;
    uint8_t *x, *y, pt[1 + 2 * 66];
    OSSL_PARAM_BLD *bld;
    int ok = 0;

    if (crv == NULL || strlen(crv) >= sizeof(out->crv))
        return 0;
    strcpy(out->crv, crv);
    for (ci = 0; ci < sizeof(curves) / sizeof(curves[0]); ci++)
        if (strcmp(crv, curves[ci].crv) == 0)
            break;
    if (ci == sizeof(curves) / sizeof(curves[0])) {
        out->type = CTOK_KT_NONE; /* P-256K and others: listed as unusable */
        return 1;
    }
    flen = ((size_t)curves[ci].bits + 7) / 8;
    x = field_bytes(jwk, "x", flen, &xlen);
    y = field_bytes(jwk, "y", flen, &ylen);
    if (x == NULL || y == NULL || xlen > flen || ylen > flen)
        goto end;
    /* RFC 7518 wants full-length coordinates; a shortened one is padded, not refused */
    memset(pt, 0, sizeof(pt));
    pt[0] = 4;
    memcpy(pt + 1 + flen - xlen, x, xlen);
    memcpy(pt + 1 + 2 * flen - ylen, y, ylen);
    bld = OSSL_PARAM_BLD_new();
    if (bld != NULL &&
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curves[ci].group, 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * flen))
        out->pub = fromdata(libctx, propq, "EC", bld);
    OSSL_PARAM_BLD_free(bld);
    out->bits = curves[ci].bits;
    out->type = CTOK_KT_EC;
    ok = out->pub != NULL;
end:
    OPENSSL_free(x);
    OPENSSL_free(y);
    return ok;
}

static int parse_ops(const json_t *list, unsigned int *ops)
{
    static const char *const names[] = {"sign", "verify", "decrypt", "encrypt"};
    size_t i;
    json_t *e;

    *ops = 0;
    if (list == NULL)
        return 1;
    if (!json_is_array(list))
        return 0;
    json_array_foreach(list, i, e)
    {
        const char *s = json_string_value(e);

        if (s == NULL)
            return 0;
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
            if (strcmp(s, names[k]) == 0)
                *ops |= 1u << k;
    }
    return 1;
}

int ctok_az_parse_jwk(const json_t *jwk, OSSL_LIB_CTX *libctx, const char *propq,
                      struct az_key *out)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *kid = json_string_value(json_object_get(jwk, "kid"));
    int ok;

    memset(out, 0, sizeof(*out));
    out->enabled = 1;
    if (!json_is_object(jwk) || kty == NULL || strlen(kty) >= sizeof(out->kty) ||
        !parse_ops(json_object_get(jwk, "key_ops"), &out->ops))
        return 0;
    if (kid != NULL && !ctok_az_parse_id(kid, "keys", out->name, out->version))
        return 0;
    strcpy(out->kty, kty);
    if (strcmp(kty, "RSA") == 0 || strcmp(kty, "RSA-HSM") == 0)
        ok = rsa_pub(jwk, libctx, propq, out);
    else if (strcmp(kty, "EC") == 0 || strcmp(kty, "EC-HSM") == 0)
        ok = ec_pub(jwk, libctx, propq, out);
    else
        ok = 1; /* oct, oct-HSM: not a key ctok uses */
    if (!ok)
        ctok_az_key_clear(out);
    return ok;
}

int ctok_az_parse_key(const json_t *r, OSSL_LIB_CTX *libctx, const char *propq, struct az_key *out)
{
    const json_t *attrs = json_object_get(r, "attributes");
    const json_t *enabled = json_object_get(attrs, "enabled");

    if (!ctok_az_parse_jwk(json_object_get(r, "key"), libctx, propq, out))
        return 0;
    /* a bundle names its version: that is what sign and decrypt address */
    if (out->version[0] == '\0' || (attrs != NULL && !json_is_object(attrs)) ||
        (enabled != NULL && !json_is_boolean(enabled))) {
        ctok_az_key_clear(out);
        return 0;
    }
    out->enabled = enabled == NULL || json_is_true(enabled);
    return 1;
}

void ctok_az_key_clear(struct az_key *k)
{
    EVP_PKEY_free(k->pub);
    memset(k, 0, sizeof(*k));
}

int ctok_az_parse_list(const json_t *r, const char *coll, char ***v, size_t *n, char **next)
{
    const json_t *list = json_object_get(r, "value"), *nl = json_object_get(r, "nextLink");
    const char *field = strcmp(coll, "keys") == 0 ? "kid" : "id";
    size_t i, n0 = *n;
    json_t *e;
    char **nv;

    *next = NULL;
    if (!json_is_array(list) || (nl != NULL && !json_is_null(nl) && !json_is_string(nl)))
        return 0;
    if (json_array_size(list) > 100000 ||
        (nv = realloc(*v, (n0 + json_array_size(list) + 1) * sizeof(**v))) == NULL)
        return 0;
    *v = nv;
    json_array_foreach(list, i, e)
    {
        char name[AZ_NAME_MAX], version[AZ_VERSION_MAX];

        if (!ctok_az_parse_id(json_string_value(json_object_get(e, field)), coll, name, version) ||
            ((*v)[*n] = strdup(name)) == NULL) {
            /* the page fails whole: the earlier pages stay the caller's */
            while (*n > n0)
                free((*v)[--*n]);
            return 0;
        }
        (*n)++;
    }
    if (json_is_string(nl) && json_string_length(nl) > 0 &&
        (*next = strdup(json_string_value(nl))) == NULL)
        return 0;
    return 1;
}

void ctok_az_names_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int ctok_az_parse_cert(const json_t *r, OSSL_LIB_CTX *libctx, const char *propq, X509 **cert,
                       char key_name[AZ_NAME_MAX])
{
    const char *cer = json_string_value(json_object_get(r, "cer"));
    const char *kid = json_string_value(json_object_get(r, "kid"));
    char version[AZ_VERSION_MAX];
    size_t room, len;
    uint8_t *der;
    const uint8_t *p;
    X509 *x = NULL;
    int ok = 0;

    *cert = NULL;
    if (cer == NULL || strlen(cer) == 0 || strlen(cer) > 1 << 20 || strlen(cer) % 4 != 0)
        return 0;
    if (kid != NULL ? !ctok_az_parse_id(kid, "keys", key_name, version)
                    : !ctok_az_parse_id(json_string_value(json_object_get(r, "id")), "certificates",
                                        key_name, version))
        return 0;
    room = strlen(cer) / 4 * 3;
    if ((der = OPENSSL_malloc(room)) == NULL)
        return 0;
    /* cer is standard base64 (with padding), unlike the JWK's base64url */
    if (EVP_DecodeBlock(der, (const unsigned char *)cer, (int)strlen(cer)) != (int)room)
        goto end;
    len = room - (cer[strlen(cer) - 1] == '=') - (cer[strlen(cer) - 2] == '=');
    p = der;
    if ((x = X509_new_ex(libctx, propq)) == NULL || d2i_X509(&x, &p, (long)len) == NULL ||
        p != der + len)
        goto end;
    *cert = x;
    x = NULL;
    ok = 1;
end:
    X509_free(x);
    OPENSSL_free(der);
    return ok;
}

int ctok_az_parse_value(const json_t *r, uint8_t *out, size_t *len)
{
    const char *v = json_string_value(json_object_get(r, "value"));

    /* an empty result ("==") is no signature or plaintext of any key */
    return v != NULL && v[0] != '\0' && ctok_az_b64url_decode(v, out, len) && *len > 0;
}

int ctok_az_parse_deleted(const json_t *r, char date[11], char *recovery, size_t recovery_len)
{
    const json_t *d = json_object_get(r, "scheduledPurgeDate");
    const json_t *rid = json_object_get(r, "recoveryId");
    struct tm tm;
    time_t t;

    date[0] = '\0';
    if (recovery_len > 0)
        recovery[0] = '\0';
    if (!json_is_object(r) || (d != NULL && !json_is_integer(d)) ||
        (rid != NULL && !json_is_string(rid)))
        return 0;
    if (d != NULL) {
        if (json_integer_value(d) < 0 || json_integer_value(d) > 253402300799LL)
            return 0;
        t = (time_t)json_integer_value(d);
        if (gmtime_r(&t, &tm) == NULL || strftime(date, 11, "%Y-%m-%d", &tm) != 10)
            return 0;
    }
    if (rid != NULL && recovery_len > 0) {
        snprintf(recovery, recovery_len, "%s", json_string_value(rid));
        for (char *c = recovery; *c != '\0'; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
    }
    return 1;
}

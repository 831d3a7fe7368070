/* Small helpers shared by every layer: key type names, key ids, key specs. */
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <unistd.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>

#include "backend.h"

static pid_t self_pid;

static void self_pid_renew(void)
{
    __atomic_store_n(&self_pid, getpid(), __ATOMIC_RELAXED);
}

/* At load, before any ctok call: every other ctok fork handler is registered after this one,
 * so in a child this one runs first (glibc runs child handlers in registration order). */
__attribute__((constructor)) static void self_pid_init(void)
{
    self_pid_renew();
    pthread_atfork(NULL, NULL, self_pid_renew);
}

pid_t ctok_self_pid(void)
{
    return __atomic_load_n(&self_pid, __ATOMIC_RELAXED);
}

const char *ctok_key_type_name(enum ctok_key_type t)
{
    switch (t) {
    case CTOK_KT_RSA:
        return "RSA";
    case CTOK_KT_RSA_PSS:
        return "RSA-PSS";
    case CTOK_KT_EC:
        return "EC";
    case CTOK_KT_ED25519:
        return "ED25519";
    default:
        return "unknown";
    }
}

enum ctok_key_type ctok_key_type_of(const EVP_PKEY *pkey)
{
    if (pkey == NULL)
        return CTOK_KT_NONE;
    if (EVP_PKEY_is_a(pkey, "RSA"))
        return CTOK_KT_RSA;
    if (EVP_PKEY_is_a(pkey, "RSA-PSS"))
        return CTOK_KT_RSA_PSS;
    if (EVP_PKEY_is_a(pkey, "EC"))
        return CTOK_KT_EC;
    if (EVP_PKEY_is_a(pkey, "ED25519"))
        return CTOK_KT_ED25519;
    return CTOK_KT_NONE;
}

int ctok_pub_id(const EVP_PKEY *pub, uint8_t id[20])
{
    X509_PUBKEY *xpk = NULL;
    const unsigned char *bits;
    int bits_len;
    int ok = 0;

    if (!X509_PUBKEY_set(&xpk, (EVP_PKEY *)pub))
        return 0;
    if (X509_PUBKEY_get0_param(NULL, &bits, &bits_len, NULL, xpk))
        ok = EVP_Digest(bits, bits_len, id, NULL, EVP_sha1(), NULL);
    X509_PUBKEY_free(xpk);
    return ok;
}

static const struct {
    const char *name;
    const char *group;
} curves[] = {
    {"P-256", "prime256v1"},    {"prime256v1", "prime256v1"}, {"secp256r1", "prime256v1"},
    {"P-384", "secp384r1"},     {"secp384r1", "secp384r1"},   {"P-521", "secp521r1"},
    {"secp521r1", "secp521r1"},
};

#define RSA_MIN_BITS 2048
static char text_of_keyspecs[320];

/* What ctok_keyspec_parse accepts, from its own table: errors and the tool's help say it. */
static void keyspec_describe(void)
{
    size_t n = (size_t)snprintf(text_of_keyspecs, sizeof(text_of_keyspecs),
                                "rsa:BITS (%d to %d, a multiple of 8; rsa alone: rsa:%d), ",
                                RSA_MIN_BITS, CTOK_MAX_RSA_BITS, RSA_MIN_BITS);

    for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]) && n < sizeof(text_of_keyspecs); i++)
        n += (size_t)snprintf(text_of_keyspecs + n, sizeof(text_of_keyspecs) - n, "ec:%s, ",
                              curves[i].name);
    if (n < sizeof(text_of_keyspecs))
        snprintf(text_of_keyspecs + n, sizeof(text_of_keyspecs) - n, "ed25519");
}

int ctok_keyspec_parse(const char *s, struct ctok_keyspec *spec)
{
    memset(spec, 0, sizeof(*spec));
    if (strncasecmp(s, "rsa", 3) == 0 && (s[3] == '\0' || s[3] == ':')) {
        char *end;
        long bits = s[3] == ':' ? strtol(s + 4, &end, 10) : RSA_MIN_BITS;

        if ((s[3] == ':' && *end != '\0') || bits < RSA_MIN_BITS || bits > CTOK_MAX_RSA_BITS ||
            bits % 8) {
            CTOK_ERR(CTOK_R_INVALID_ARG,
                     "key spec '%s': RSA size must be %d to %d bits, a multiple of 8; "
                     "accepted: %s",
                     s, RSA_MIN_BITS, CTOK_MAX_RSA_BITS, ctok_keyspec_accepted());
            return 0;
        }
        spec->type = CTOK_KT_RSA;
        spec->bits = (int)bits;
        return 1;
    }
    if (strcasecmp(s, "ed25519") == 0) {
        spec->type = CTOK_KT_ED25519;
        spec->bits = 253;
        return 1;
    }
    if (strncasecmp(s, "ec:", 3) == 0) {
        for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++) {
            if (strcasecmp(s + 3, curves[i].name) == 0) {
                spec->type = CTOK_KT_EC;
                spec->group = curves[i].group;
                return 1;
            }
        }
    }
    CTOK_ERR(CTOK_R_INVALID_ARG, "key spec '%s': %s; accepted: %s", s,
             strncasecmp(s, "ec:", 3) == 0 ? "unknown curve" : "unknown key type",
             ctok_keyspec_accepted());
    return 0;
}

const char *ctok_keyspec_accepted(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, keyspec_describe);
    return text_of_keyspecs;
}

void ctok_hex(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

/* One half of r || s as the content of a DER INTEGER (unsigned, minimal); its length. */
static size_t der_uint(const uint8_t *v, size_t len, uint8_t *out)
{
    size_t n;

    while (len > 1 && v[0] == 0) {
        v++;
        len--;
    }
    n = 2 + (v[0] & 0x80 ? 1 : 0) + len;
    *out++ = 0x02;
    *out++ = (uint8_t)(n - 2);
    if (v[0] & 0x80)
        *out++ = 0;
    memcpy(out, v, len);
    return n;
}

/*
 * Encoded here rather than through ECDSA_SIG and i2d: two BIGNUMs and an i2d cost about
 * 9,000 instructions per signature, this a few hundred (the same DER; tests/token_only.c).
 */
int ctok_ecdsa_rs_to_der(const uint8_t *rs, size_t rslen, uint8_t *der, size_t *derlen)
{
    uint8_t ints[2 * (3 + 66)];
    size_t half = rslen / 2, n, hdr;

    if (rslen == 0 || rslen % 2 != 0 || rslen > 2 * 66)
        return 0;
    n = der_uint(rs, half, ints);
    n += der_uint(rs + half, half, ints + n);
    hdr = n < 128 ? 2 : 3;
    if (hdr + n > *derlen)
        return 0;
    der[0] = 0x30;
    if (n < 128) {
        der[1] = (uint8_t)n;
    } else {
        der[1] = 0x81;
        der[2] = (uint8_t)n;
    }
    memcpy(der + hdr, ints, n);
    *derlen = hdr + n;
    return 1;
}

/* One DER INTEGER at *p (before end), non-negative, as half bytes (left-padded) at out. */
static int der_uint_get(const uint8_t **p, const uint8_t *end, uint8_t *out, size_t half)
{
    const uint8_t *v = *p;
    size_t len;

    if (end - v < 2 || v[0] != 0x02 || (len = v[1]) == 0 || len > (size_t)(end - v - 2) ||
        (v[2] & 0x80) != 0)
        return 0;
    v += 2;
    *p = v + len;
    while (len > 1 && v[0] == 0) {
        v++;
        len--;
    }
    if (len > half)
        return 0;
    memset(out, 0, half - len);
    memcpy(out + half - len, v, len);
    return 1;
}

int ctok_ecdsa_der_to_rs(const uint8_t *der, size_t derlen, uint8_t *rs, size_t half)
{
    const uint8_t *p = der + 2, *end = der + derlen;
    size_t n;

    if (derlen < 2 || der[0] != 0x30)
        return 0;
    n = der[1];
    if (n == 0x81 && derlen >= 3) {
        n = der[2];
        p++;
    } else if (n >= 0x80) {
        return 0;
    }
    return n == (size_t)(end - p) && der_uint_get(&p, end, rs, half) &&
           der_uint_get(&p, end, rs + half, half) && p == end;
}

int ctok_x963_kdf(OSSL_LIB_CTX *libctx, const char *propq, const char *md, const uint8_t *z,
                  size_t zlen, const uint8_t *info, size_t infolen, uint8_t *out, size_t outlen)
{
    EVP_KDF *kdf = EVP_KDF_fetch(libctx, OSSL_KDF_NAME_X963KDF, propq);
    EVP_KDF_CTX *kc = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM p[4], *q = p;
    int ok;

    *q++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)md, 0);
    *q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)z, zlen);
    if (infolen > 0)
        *q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, infolen);
    *q = OSSL_PARAM_construct_end();
    ok = kc != NULL && EVP_KDF_derive(kc, out, outlen, p) > 0;
    EVP_KDF_CTX_free(kc); /* cleanses its copy of z */
    EVP_KDF_free(kdf);
    return ok;
}

/* Small helpers shared by every layer: key type names, key ids, key specs. */
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/x509.h>

#include "backend.h"

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

int ctok_keyspec_parse(const char *s, struct ctok_keyspec *spec)
{
    memset(spec, 0, sizeof(*spec));
    if (strncasecmp(s, "rsa", 3) == 0 && (s[3] == '\0' || s[3] == ':')) {
        char *end;
        long bits = s[3] == ':' ? strtol(s + 4, &end, 10) : 2048;

        if ((s[3] == ':' && *end != '\0') || bits < 2048 || bits > CTOK_MAX_RSA_BITS || bits % 8) {
            CTOK_ERR(CTOK_R_INVALID_ARG,
                     "key spec '%s': RSA size must be 2048 to %d bits, a multiple of 8 "
                     "(e.g. rsa:2048, rsa:3072, rsa:4096, rsa:8192)",
                     s, CTOK_MAX_RSA_BITS);
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
    CTOK_ERR(CTOK_R_INVALID_ARG,
             "key spec '%s': expected rsa:BITS (2048 to %d), ec:P-256, ec:P-384, ec:P-521 or "
             "ed25519",
             s, CTOK_MAX_RSA_BITS);
    return 0;
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

int ctok_ecdsa_rs_to_der(const uint8_t *rs, size_t rslen, uint8_t *der, size_t *derlen)
{
    ECDSA_SIG *es;
    BIGNUM *r, *s;
    unsigned char *out = NULL;
    int len;

    if (rslen == 0 || rslen % 2 != 0 || rslen > 2 * 66)
        return 0;
    es = ECDSA_SIG_new();
    r = BN_bin2bn(rs, (int)rslen / 2, NULL);
    s = BN_bin2bn(rs + rslen / 2, (int)rslen / 2, NULL);
    if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return 0;
    }
    len = i2d_ECDSA_SIG(es, &out);
    ECDSA_SIG_free(es);
    if (len <= 0 || (size_t)len > *derlen) {
        OPENSSL_free(out);
        return 0;
    }
    memcpy(der, out, (size_t)len);
    *derlen = (size_t)len;
    OPENSSL_free(out);
    return 1;
}

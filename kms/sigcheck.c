/* The signatures cloud key services make (sigcheck.h). */
#include <openssl/rsa.h>

#include "sigcheck.h"

static int sha2(const EVP_MD *md)
{
    int nid = md != NULL ? EVP_MD_get_type(md) : 0;

    return nid == NID_sha256 || nid == NID_sha384 || nid == NID_sha512;
}

const EVP_MD *ctok_kms_sign_md(const char *service, ctok_key *key, const char *object,
                               const EVP_MD *curve_md, const char *curve,
                               const struct ctok_sig_params *p, size_t tbslen, int *pss)
{
    const char *tn = ctok_token_name(key->tok);
    const EVP_MD *md = p->md;

    *pss = 0;
    if (key->type == CTOK_KT_EC) {
        /* a bare digest of the curve's length is the curve's hash */
        if (md == NULL && curve_md != NULL && tbslen == (size_t)EVP_MD_get_size(curve_md))
            md = curve_md;
        if (curve_md != NULL && md != NULL && EVP_MD_get_type(md) == EVP_MD_get_type(curve_md))
            return curve_md;
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s': %s signs with key spec %s only %s digests, not %s", tn,
                 object, service, curve, curve_md != NULL ? EVP_MD_get0_name(curve_md) : "?",
                 md != NULL ? EVP_MD_get0_name(md) : "raw data");
        return NULL;
    }
    if (p->pad != RSA_PKCS1_PSS_PADDING && p->pad != RSA_PKCS1_PADDING) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s': %s signs RSA only with PKCS#1 v1.5 or PSS padding (no "
                 "raw RSA)",
                 tn, object, service);
        return NULL;
    }
    if (!sha2(md)) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s': %s signs RSA digests of SHA-256, SHA-384 or SHA-512, not "
                 "%s",
                 tn, object, service, md != NULL ? EVP_MD_get0_name(md) : "raw data");
        return NULL;
    }
    if (p->pad == RSA_PKCS1_PSS_PADDING) {
        const EVP_MD *mgf1 = p->mgf1 != NULL ? p->mgf1 : md;

        if (EVP_MD_get_type(mgf1) != EVP_MD_get_type(md)) {
            CTOK_ERR(CTOK_R_UNSUPPORTED,
                     "token '%s': key '%s': %s signs RSA-PSS only with MGF1 over the message "
                     "digest (%s), not %s",
                     tn, object, service, EVP_MD_get0_name(md), EVP_MD_get0_name(mgf1));
            return NULL;
        }
        if (p->saltlen != EVP_MD_get_size(md)) {
            CTOK_ERR(CTOK_R_UNSUPPORTED,
                     "token '%s': key '%s': %s signs RSA-PSS only with salt length = digest "
                     "length (%d), not %d",
                     tn, object, service, EVP_MD_get_size(md), p->saltlen);
            return NULL;
        }
        *pss = 1;
    }
    return md;
}

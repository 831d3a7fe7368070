/*
 * What the cloud key services sign (AWS KMS, Azure Key Vault: the same shapes): a digest of
 * SHA-256, -384 or -512; EC keys with their curve's own hash; RSA with PKCS#1 v1.5 or PSS
 * with MGF1 over the message digest and salt length = digest length; no raw RSA.
 */
#ifndef CTOK_KMS_SIGCHECK_H
#define CTOK_KMS_SIGCHECK_H

#include "../store/backend.h"

/*
 * The digest a signature with these parameters is requested with, or NULL with one
 * CTOK_R_UNSUPPORTED raised ("token 'T': key 'K': <service> signs ..."). curve_md: an EC
 * key's hash (NULL: a curve the service does not sign with), curve its name for errors; a
 * bare digest of the curve hash's length names that hash. *pss: 1 for PSS.
 */
const EVP_MD *ctok_kms_sign_md(const char *service, ctok_key *key, const char *object,
                               const EVP_MD *curve_md, const char *curve,
                               const struct ctok_sig_params *p, size_t tbslen, int *pss);

#endif

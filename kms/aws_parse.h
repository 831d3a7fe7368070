/*
 * The AWS KMS responses the awskms backend reads (ListAliases, GetPublicKey, Sign and
 * Decrypt, CreateKey, ScheduleKeyDeletion), as pure functions of the parsed JSON: no I/O,
 * no token, every field checked, so the fuzz targets (tests/fuzz/fuzz_kms_*.c) run the
 * very code the backend runs. 1 on success, 0 on a malformed response (nothing raised:
 * the caller names the token and the key).
 */
#ifndef CTOK_KMS_AWS_PARSE_H
#define CTOK_KMS_AWS_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "../store/token.h"

/* A KMS key id ("1234abcd-12ab-...", "mrk-..."): what ctok uses as the object id. */
#define KMS_KEY_ID_MAX 64

/* Signing and encryption algorithms, as bits. */
enum {
    KMS_RSA_PKCS1_SHA_256 = 1 << 0,
    KMS_RSA_PKCS1_SHA_384 = 1 << 1,
    KMS_RSA_PKCS1_SHA_512 = 1 << 2,
    KMS_RSA_PSS_SHA_256 = 1 << 3,
    KMS_RSA_PSS_SHA_384 = 1 << 4,
    KMS_RSA_PSS_SHA_512 = 1 << 5,
    KMS_ECDSA_SHA_256 = 1 << 6,
    KMS_ECDSA_SHA_384 = 1 << 7,
    KMS_ECDSA_SHA_512 = 1 << 8,
    KMS_OAEP_SHA_1 = 1 << 9,
    KMS_OAEP_SHA_256 = 1 << 10,
};
/* The AWS name of one algorithm bit ("RSASSA_PSS_SHA_256"), or NULL. */
const char *ctok_kms_alg_name(unsigned int alg);

struct kms_alias {
    char *name; /* without "alias/" */
    char key_id[KMS_KEY_ID_MAX];
};
/*
 * One ListAliases page, appended to *v / *n: aliases that point at a key, except AWS's own
 * (alias/aws/...). *marker: NextMarker when Truncated (free()), else NULL.
 */
int ctok_kms_parse_aliases(const json_t *r, struct kms_alias **v, size_t *n, char **marker);
void ctok_kms_aliases_free(struct kms_alias *v, size_t n);

struct kms_pubkey {
    char key_id[KMS_KEY_ID_MAX];
    EVP_PKEY *pub;           /* in the library context asked for */
    enum ctok_key_type type; /* CTOK_KT_NONE: a key ctok cannot use (symmetric, other curves) */
    char spec[32];           /* "RSA_2048", "ECC_NIST_P256" */
    char usage[32];          /* "SIGN_VERIFY", "ENCRYPT_DECRYPT" */
    unsigned int algs;       /* KMS_* it offers */
};
/* GetPublicKey. The public key must match KeySpec. */
int ctok_kms_parse_pubkey(const json_t *r, OSSL_LIB_CTX *libctx, const char *propq,
                          struct kms_pubkey *out);
void ctok_kms_pubkey_clear(struct kms_pubkey *k);

/* A base64 blob field (Sign: "Signature", Decrypt: "Plaintext") into out[*len] (in: room). */
int ctok_kms_parse_blob(const json_t *r, const char *field, uint8_t *out, size_t *len);

/* CreateKey: KeyMetadata.KeyId. */
int ctok_kms_parse_create_key(const json_t *r, char key_id[KMS_KEY_ID_MAX]);

/* ScheduleKeyDeletion: DeletionDate (epoch seconds or ISO text) as "YYYY-MM-DD", and the
 * waiting period (PendingWindowInDays; 0 if absent). */
int ctok_kms_parse_deletion(const json_t *r, char date[11], int *days);

/* The key id of a key id or key ARN (".../key/<id>"); 0 if it is not one. */
int ctok_kms_key_id(const char *s, char key_id[KMS_KEY_ID_MAX]);

#endif

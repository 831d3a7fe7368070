/*
 * The Key Vault responses the azurekv backend reads (key and certificate bundles, their JWK,
 * list pages, sign/decrypt values, deleted-key bundles), as pure functions of the parsed
 * JSON: no I/O, no token, every field checked, so the fuzz targets (tests/fuzz/fuzz_az_*.c)
 * run the very code the backend runs. 1 on success, 0 on a malformed response (nothing
 * raised: the caller names the token and the key).
 */
#ifndef CTOK_KMS_AZURE_PARSE_H
#define CTOK_KMS_AZURE_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "../store/token.h"

/* Key Vault object names are 1-127 of [0-9a-zA-Z-]; versions are 32 hex digits. */
#define AZ_NAME_MAX 128
#define AZ_VERSION_MAX 64

/* key_ops, as bits */
enum { AZ_OP_SIGN = 1, AZ_OP_VERIFY = 2, AZ_OP_DECRYPT = 4, AZ_OP_ENCRYPT = 8 };

/* Is s a Key Vault object name (or, version != 0, a version)? */
int ctok_az_name_ok(const char *s, int version);

/*
 * A kid or certificate id ("https://v.vault.azure.net/keys/<name>[/<version>]"): coll is
 * "keys" or "certificates"; version gets "" when the URL has none.
 */
int ctok_az_parse_id(const char *url, const char *coll, char name[AZ_NAME_MAX],
                     char version[AZ_VERSION_MAX]);

struct az_key {
    char name[AZ_NAME_MAX];
    char version[AZ_VERSION_MAX];
    char kty[16];            /* "RSA", "RSA-HSM", "EC", "EC-HSM", ... */
    char crv[16];            /* EC: "P-256", ... */
    int bits;                /* RSA modulus size, EC field size */
    enum ctok_key_type type; /* CTOK_KT_NONE: a key ctok cannot use (oct, P-256K) */
    EVP_PKEY *pub;           /* in the library context asked for; NULL when type is NONE */
    unsigned int ops;        /* AZ_OP_* of key_ops */
    int enabled;             /* attributes.enabled (absent: 1) */
};
/* A JWK (RFC 7517 as Key Vault sends it: kid, kty, key_ops, n/e or crv/x/y). */
int ctok_az_parse_jwk(const json_t *jwk, OSSL_LIB_CTX *libctx, const char *propq,
                      struct az_key *out);
/* A key bundle {key: JWK, attributes}: the JWK's kid must name a key version. */
int ctok_az_parse_key(const json_t *r, OSSL_LIB_CTX *libctx, const char *propq, struct az_key *out);
void ctok_az_key_clear(struct az_key *k);

/*
 * One list page {value: [{kid | id, ...}], nextLink}: the names of coll ("keys": kid,
 * "certificates": id) appended to *v / *n; *next: nextLink when there is one (free()), else
 * NULL. Entries that do not name an object of coll fail the page.
 */
int ctok_az_parse_list(const json_t *r, const char *coll, char ***v, size_t *n, char **next);
void ctok_az_names_free(char **v, size_t n);

/* A certificate bundle {id, kid, cer (base64 DER)}: the certificate, and the name of its key. */
int ctok_az_parse_cert(const json_t *r, OSSL_LIB_CTX *libctx, const char *propq, X509 **cert,
                       char key_name[AZ_NAME_MAX]);

/* A sign or decrypt result {kid, value: base64url} into out[*len] (in: room). */
int ctok_az_parse_value(const json_t *r, uint8_t *out, size_t *len);

/* A deleted-key bundle: scheduledPurgeDate (epoch seconds) as "YYYY-MM-DD" ("" if absent), and
 * recoveryId (may be absent: "") cut to recovery_len - 1. */
int ctok_az_parse_deleted(const json_t *r, char date[11], char *recovery, size_t recovery_len);

/* base64url without padding (RFC 7515): encode into out (room 4 * ceil(len / 3) + 1) and
 * decode into out[*len] (in: room); decode refuses anything but the URL-safe alphabet. */
void ctok_az_b64url_encode(const uint8_t *in, size_t len, char *out);
int ctok_az_b64url_decode(const char *in, uint8_t *out, size_t *len);

#endif

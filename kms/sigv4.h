/*
 * AWS Signature Version 4 (AWS4-HMAC-SHA256) for one request, as in CLOUD-PROTOCOLS.md:
 * canonical request, string to sign, the HMAC key chain, the Authorization header value.
 * Pure: no clock, no network; tests/sigv4_vectors.c checks it against AWS's test suite.
 */
#ifndef CTOK_KMS_SIGV4_H
#define CTOK_KMS_SIGV4_H

#include <stddef.h>

struct ctok_sigv4_header {
    const char *name;  /* any case; signed in lower case */
    const char *value; /* trimmed, inner runs of spaces collapsed, when signed */
};

struct ctok_sigv4_req {
    const char *method;
    const char *path;                        /* already URI-encoded ("/" for KMS) */
    const char *query;                       /* canonical query string, or "" */
    const struct ctok_sigv4_header *headers; /* the headers to sign (host, x-amz-date, ...) */
    size_t n_headers;
    const void *body;
    size_t body_len;
    const char *amz_date; /* "YYYYMMDDTHHMMSSZ", also sent as X-Amz-Date */
    const char *region;
    const char *service;
};

#define CTOK_SIGV4_KEY_LEN 32

/*
 * The signing key of a day: the HMAC chain "AWS4" + secret, date ("YYYYMMDD"), region,
 * service, "aws4_request". It signs every request of that UTC day for that region and
 * service, so a caller may keep it beside the secret it comes from (4 of a request's 5 HMACs).
 * 1 ok, 0 on out of memory.
 */
int ctok_sigv4_derive_key(const char *secret, const char *date, const char *region,
                          const char *service, unsigned char key[CTOK_SIGV4_KEY_LEN]);

/* As ctok_sigv4_sign, with the key ctok_sigv4_derive_key gave for r's day, region, service. */
int ctok_sigv4_sign_key(const struct ctok_sigv4_req *r, const char *akid,
                        const unsigned char key[CTOK_SIGV4_KEY_LEN], char *auth, size_t auth_len,
                        char **canonical, char **to_sign);

/*
 * Writes "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..." into auth.
 * canonical/to_sign, when not NULL, receive copies of the intermediate strings (OPENSSL_free)
 * for tests. 1 ok, 0 on bad input or out of memory (no error raised).
 */
int ctok_sigv4_sign(const struct ctok_sigv4_req *r, const char *akid, const char *secret,
                    char *auth, size_t auth_len, char **canonical, char **to_sign);

#endif

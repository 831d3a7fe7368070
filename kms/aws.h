/*
 * The AWS KMS client a backend builds on (kms/aws.c): credentials (access keys or the EC2
 * instance role over IMDSv2), SigV4 signing, the JSON protocol, retry with backoff and one
 * clear error per failed call. Everything network-facing lives behind ctok_aws_call.
 */
#ifndef CTOK_KMS_AWS_H
#define CTOK_KMS_AWS_H

#include <stddef.h>
#include <jansson.h>

struct ctok_aws_conf {
    const char *tokname;       /* for errors: "token 'x': ..." */
    const char *region;        /* required */
    const char *endpoint;      /* NULL: https://kms.<region>.amazonaws.com */
    int use_role;              /* 1: EC2 instance role over IMDSv2; 0: access keys */
    const char *access_key_id; /* keys */
    const char
        *imds_endpoint;  /* NULL: $AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254 */
    const char *ca_file; /* NULL: system CAs; TLS verification is never off */
    long timeout_ms;     /* total per attempt; default 10000 */
    int max_retries;     /* default 3 */
};
struct ctok_aws;
struct ctok_aws *ctok_aws_new(const struct ctok_aws_conf *c); /* copies what it keeps; no I/O */
void ctok_aws_free(struct ctok_aws *a);
/* keys: the token's auth code = secret access key, optionally "\n" + session token. Copied, old
 * zeroized. */
int ctok_aws_set_secret(struct ctok_aws *a, const char *code, size_t len);
/* role: fetch credentials now (login); keys: check a secret is set. 1 ok, 0 error raised. */
int ctok_aws_login(struct ctok_aws *a);
void ctok_aws_logout(struct ctok_aws *a); /* zeroize credentials */
/* POST TrentService.<op> with the JSON body in (borrowed); *out = parsed JSON response (caller
 * json_decref). Retries throttling/429/5xx/connection errors within max_retries (jittered
 * exponential backoff), refreshes role credentials before Expiration. On failure raises ONE
 * CTOK_ERR naming the token, object (key or alias; may be NULL) and cause, with reason
 * NETWORK/TIMEOUT/THROTTLED/DENIED/CREDENTIALS/NOT_FOUND/BACKEND ("token 'k': key 'alias/x':
 * HTTP 400 AccessDeniedException: ..."), and returns 0. Thread-safe; never holds a lock across
 * the network except its own pool's briefly; safe after fork (the child never reuses the
 * parent's connections). */
int ctok_aws_call(struct ctok_aws *a, const char *op, const char *object, json_t *in, json_t **out);
/* The error type (__type without "#" prefix) of the last failed call in this thread, or "" */
const char *ctok_aws_last_error_type(void);

#endif

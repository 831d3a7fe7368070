/*
 * Inside the AWS client (kms/creds.c, kms/awscall.c): the client's state, credentials, and
 * the response parsers, which are pure functions so that tests/fuzz can reach them without
 * a network. Not for backends: they use kms/aws.h.
 */
#ifndef CTOK_KMS_AWSINT_H
#define CTOK_KMS_AWSINT_H

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "aws.h"
#include "http.h"
#include "sigv4.h"

/* One set of credentials; every string is owned and cleansed when cleared. */
struct ctok_aws_creds {
    char *akid;
    char *secret;
    char *token;    /* session token, or NULL */
    time_t expires; /* role: Expiration; keys: 0 */
    time_t fetched;
    /* the SigV4 signing key of one UTC day ("" none yet), derived from secret and cleansed
     * with it: a request then costs 1 HMAC instead of 5 (ctok_aws_creds_keep_key) */
    char key_day[9];
    unsigned char key[CTOK_SIGV4_KEY_LEN];
};

struct ctok_aws {
    char *tokname, *region;
    char *url;  /* the endpoint, normalized */
    char *host; /* Host header: host[:port] (the port when it is not the scheme's default) */
    char *path; /* the endpoint's path, "/" by default */
    char *imds; /* role: the IMDS base URL */
    char *akid; /* keys: the configured access key id */
    int use_role, max_retries;
    long timeout_ms;
    struct ctok_http_pool *pool;
    pthread_mutex_t lock; /* guards cur and refreshing; never held across I/O */
    struct ctok_aws_creds cur;
    pid_t refreshing; /* the process whose thread fetches role credentials, or 0 */
};

#define CTOK_IMDS_TIMEOUT_MS 1000
#define CTOK_AWS_TYPE_MAX 128
#define CTOK_AWS_MSG_MAX 512

void ctok_aws_creds_clear(struct ctok_aws_creds *c);
/*
 * A copy of credentials valid for signing now (ctok_aws_creds_clear it). Role credentials are
 * fetched when missing, expired or near Expiration (or always with force); a thread that finds
 * another fetching signs on with the still-valid ones. 1 ok, 0 with one error raised.
 */
int ctok_aws_creds_get(struct ctok_aws *a, struct ctok_aws_creds *out, int force);
/* c's signing key (derived for a new day) kept in the token's credentials, if they are still
 * the ones c was copied from. */
void ctok_aws_creds_keep_key(struct ctok_aws *a, const struct ctok_aws_creds *c);

/* An IMDS credential document {Code, AccessKeyId, SecretAccessKey, Token, Expiration} into out
 * (fetched not set). 1 ok; 0 with the cause in why (no secret in it). */
int ctok_aws_parse_imds_creds(const char *doc, size_t len, struct ctok_aws_creds *out, char *why,
                              size_t why_len);
/* An ISO 8601 UTC time "2026-11-29T08:03:57Z" (fractions allowed) to time_t; -1 if invalid. */
time_t ctok_aws_parse_time(const char *s);
/* An error response: type from __type (after any '#'), else code, else hdr_type (the
 * x-amzn-errortype header; may be NULL); message from message/Message. Both always
 * NUL-terminated, "" when absent, control characters replaced. */
void ctok_aws_parse_error(const char *body, size_t len, const char *hdr_type, char *type,
                          size_t type_len, char *msg, size_t msg_len);

#endif

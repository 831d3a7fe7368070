/*
 * Inside the Azure client (kms/aad.c, kms/azcall.c): its state, the access-token cache and
 * the response parsers, pure functions so that tests/fuzz reach them without a network. Not
 * for backends: they use kms/azure.h.
 */
#ifndef CTOK_KMS_AZINT_H
#define CTOK_KMS_AZINT_H

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "azure.h"
#include "cloud.h"
#include "http.h"

#define CTOK_AZ_MI_CONNECT_MS 1000 /* the identity endpoint is link-local: as IMDS */

struct ctok_az {
    char *tokname, *vault_url, *scope, *tenant_id, *client_id, *api_version;
    char *token_url; /* AAD: {login_url}/{tenant}/oauth2/v2.0/token; MI: the endpoint */
    enum ctok_az_auth auth;
    long timeout_ms;
    int max_retries;
    char *x5t; /* certificate: base64url(SHA-256(cert DER)) */
    int (*sign)(void *arg, const uint8_t *data, size_t len, uint8_t *sig, size_t *siglen);
    void *sign_arg;
    struct ctok_http_pool *pool;
    pthread_mutex_t lock; /* guards what follows; never held across I/O */
    pthread_cond_t fetched_cond;
    char *secret; /* the client secret, cleansed on logout */
    char *token;  /* the access token, cleansed when replaced */
    time_t expires, fetched;
    unsigned long gen; /* which token: a 401 refreshes only the token it was given for */
    pid_t refreshing;  /* the process whose thread fetches a token, or 0 */
    unsigned long n_token_requests;
};

/*
 * A copy of an access token valid now (OPENSSL_clear_free it) and its generation. Fetched
 * when missing, near expiry, or when stale_gen (non-zero) names the current one; threads
 * that find another fetching keep using a still-valid token, or wait for the fetch.
 * 1 ok; 0 with o saying why (AAD's answer, or the transport); -1 with an error raised.
 */
int ctok_az_token_get(struct ctok_az *a, unsigned long stale_gen, char **tok, unsigned long *gen,
                      struct ctok_cloud_outcome *o);
/* Which failures to try again: 408, 429, 500/502/503/504 (not 501/505), no response */
int ctok_az_retryable(const struct ctok_cloud_outcome *o);

/* A token response {access_token, expires_in (number or string), token_type}: *token (OPENSSL_
 * malloc'd, cleanse it) and *expires_in (seconds, > 0). 1 ok; 0 with the cause in why (never
 * the token). */
int ctok_az_parse_token(const char *body, size_t len, char **token, long *expires_in, char *why,
                        size_t why_len);
/* An error body: Key Vault {"error":{"code","message"}} or Azure AD {error, error_description}.
 * Both always NUL-terminated, "" when absent, control characters replaced. */
void ctok_az_parse_error(const char *body, size_t len, char *code, size_t code_len, char *msg,
                         size_t msg_len);

#endif

/*
 * The Azure Key Vault client a backend builds on (kms/azure_kv.c): Azure AD access tokens
 * (client secret, client-assertion JWT signed by the backend's binding key, or the VM's managed
 * identity), cached and shared by threads, and Key Vault REST calls with retries and one clear
 * error per failed call. Everything network-facing lives behind ctok_az_call.
 */
#ifndef CTOK_KMS_AZURE_H
#define CTOK_KMS_AZURE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

enum ctok_az_auth { CTOK_AZ_SECRET = 1, CTOK_AZ_CERTIFICATE, CTOK_AZ_MANAGED_IDENTITY };
struct ctok_az_conf {
    const char *tokname; /* errors: "token 'x': ..." */
    const char
        *vault_url; /* "https://<name>.vault.azure.net" or a Managed HSM URL, no trailing '/' */
    const char
        *scope; /* "https://vault.azure.net/.default" or "https://managedhsm.azure.net/.default" */
    const char *tenant_id, *client_id;
    enum ctok_az_auth auth;
    const char *login_url;   /* NULL: https://login.microsoftonline.com */
    const char *mi_endpoint; /* NULL: http://169.254.169.254/metadata/identity/oauth2/token */
    const char *api_version; /* NULL: "7.4" */
    const char *ca_file;     /* NULL: system CAs; verification never off */
    long timeout_ms;         /* default 10000 */
    int max_retries;         /* default 3 */
    /* CTOK_AZ_CERTIFICATE: the binding certificate (DER, copied: x5t#S256) and a signer for the
     * client assertion: sign must write the PS256 signature (RSA-PSS, SHA-256, MGF1-SHA-256,
     * salt 32) of data into sig (*siglen in: room, out: length); 1 ok, 0 error raised */
    const uint8_t *cert_der;
    size_t cert_der_len;
    int (*sign)(void *arg, const uint8_t *data, size_t len, uint8_t *sig, size_t *siglen);
    void *sign_arg;
};
struct ctok_az;
struct ctok_az *ctok_az_new(const struct ctok_az_conf *c); /* copies; no I/O */
void ctok_az_free(struct ctok_az *a);
int ctok_az_set_secret(struct ctok_az *a, const char *secret, size_t len); /* CTOK_AZ_SECRET */
int ctok_az_login(struct ctok_az *a);   /* gets an access token now; 1 ok, 0 error raised */
void ctok_az_logout(struct ctok_az *a); /* zeroizes secret and token */
/* method "GET"|"POST"|"DELETE"; path "/keys/k/v/sign" relative to vault_url, or a full URL that
 * starts with vault_url (nextLink); api-version is added. body: JSON or NULL. *out: parsed JSON
 * response (caller json_decref; {} for an empty body). Access token fetched/refreshed as needed
 * (cached until 5 min before expiry, shared by threads; a 401 refreshes once). On failure ONE
 * CTOK_ERR naming the token, object (may be NULL), operation, HTTP status and
 * "error.code: message" (AAD: "error: error_description"), reasons as for AWS
 * (403 → DENIED, 401/AAD invalid_client → CREDENTIALS, 404 KeyNotFound → NOT_FOUND, 429 beyond
 * retries → THROTTLED, curl time-out → TIMEOUT, connection → NETWORK), returns 0. */
int ctok_az_call(struct ctok_az *a, const char *method, const char *path, const char *object,
                 json_t *in, json_t **out);

/* Added: the service's error code of the last failed call in this thread ("KeyNotFound",
 * "invalid_client"), or "" */
const char *ctok_az_last_error_code(void);
/* Added: Azure AD token requests made by this client (tests, bench) */
unsigned long ctok_az_token_requests(struct ctok_az *a);

#endif

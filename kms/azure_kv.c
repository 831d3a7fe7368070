/*
 * The azurekv token type: one token is one Azure Key Vault (or Managed HSM) seen by one
 * Azure AD app or managed identity. Its objects are the vault's keys, each as a private and a
 * public object with label = id = the key name (its current version), and the vault's
 * certificates, which share their key's name (so certificate-first lookup works natively).
 *
 * Versions: `object=<name>` is the key's current version, read once per process (the key
 * bundle is cached per token); `object=<name>/<version>` (or id=<name>/<version>, the same
 * bytes) pins one version, for a certificate issued to an older key.
 *
 * Calls: GET /keys (paged), GET /keys/<name>/[<version>], POST .../sign|decrypt, POST
 * /keys/<name>/create, DELETE /keys/<name>, GET /certificates (paged) and
 * /certificates/<name>/ (azkv.h names the files). Access tokens, HTTP and retries are
 * ctok_az_call's (kms/aad.c, kms/azcall.c); the responses are read by the pure parsers of
 * azure_parse.c.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "../store/backend.h"
#include "azkv.h"
#include "conf.h"

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_RETRIES 3

/* ---- configuration ---- */

static const char *cfg_path(ctok_token *tok)
{
    return ctok_ctx_config_path(ctok_token_ctx(tok));
}

/* One of the words a field allows; *out the index, def when absent. */
static int conf_enum(ctok_token *tok, const json_t *conf, const char *field,
                     const char *const *words, int def, int *out)
{
    const char *s;
    char all[200] = "";

    if (!ctok_kms_conf_str(tok, conf, field, &s))
        return 0;
    *out = def;
    if (s == NULL)
        return 1;
    for (int i = 0; words[i] != NULL; i++) {
        if (strcmp(s, words[i]) == 0) {
            *out = i;
            return 1;
        }
        snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s%s", i ? ", " : "", words[i]);
    }
    CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': \"%s\" must be one of %s, not '%s'", cfg_path(tok),
             ctok_token_name(tok), field, all, s);
    return 0;
}

static const char *const auth_words[] = {"secret", "certificate", "managed_identity", NULL};
static const enum ctok_az_auth auth_vals[] = {CTOK_AZ_SECRET, CTOK_AZ_CERTIFICATE,
                                              CTOK_AZ_MANAGED_IDENTITY};
static const char *const vault_words[] = {"standard", "premium", NULL};

/* vault_name → https://<name>.vault.azure.net, else vault_url; the scope follows the host. */
static int conf_vault(struct az_tok *kt, const char *name, const char *url)
{
    ctok_token *tok = kt->tok;
    char buf[300];

    if ((name == NULL) == (url == NULL)) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': azurekv token needs \"vault_name\" (the vault's name) or "
                 "\"vault_url\" (https://...), one of them",
                 cfg_path(tok), ctok_token_name(tok));
        return 0;
    }
    if (name != NULL) {
        /* vault names: 3-24 letters, digits and '-' */
        if (strlen(name) < 3 || strlen(name) > 24 ||
            strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") !=
                strlen(name)) {
            CTOK_ERR(CTOK_R_CONFIG,
                     "%s: token '%s': \"vault_name\" must be 3 to 24 letters, digits and '-', "
                     "not '%s'",
                     cfg_path(tok), ctok_token_name(tok), name);
            return 0;
        }
        snprintf(buf, sizeof(buf), "https://%s.vault.azure.net", name);
        url = buf;
    } else if (!ctok_kms_conf_url(tok, "vault_url", url, 0)) {
        return 0;
    } else if (strcspn(url, "?#") >= sizeof(buf)) {
        /* cut to fit, it would name another vault */
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': \"vault_url\" is longer than %zu characters (before any '?')",
                 cfg_path(tok), ctok_token_name(tok), sizeof(buf) - 1);
        return 0;
    } else {
        /* paths are appended to it: no '/' at the end */
        snprintf(buf, sizeof(buf), "%.*s", (int)strcspn(url, "?#"), url);
        while (strlen(buf) > 8 && buf[strlen(buf) - 1] == '/')
            buf[strlen(buf) - 1] = '\0';
        url = buf;
    }
    if (json_object_set_new(kt->conf, "vault_url", json_string(url)) != 0)
        return 0;
    kt->c.vault_url = json_string_value(json_object_get(kt->conf, "vault_url"));
    kt->c.scope = strstr(kt->c.vault_url, ".managedhsm.") != NULL
                      ? "https://managedhsm.azure.net/.default"
                      : "https://vault.azure.net/.default";
    return 1;
}

static int az_configure(ctok_token *tok, const json_t *conf)
{
    struct az_tok *kt = calloc(1, sizeof(*kt));
    struct ctok_az_conf *c;
    const char *name, *url;
    long timeout, retries;
    int auth, vt;

    if (kt == NULL || (kt->conf = json_deep_copy(conf)) == NULL) {
        free(kt);
        return 0;
    }
    pthread_mutex_init(&kt->lock, NULL);
    kt->tok = tok;
    ctok_token_set_be(tok, kt);
    c = &kt->c;
    c->tokname = ctok_token_name(tok);
    conf = kt->conf;
    if (!conf_enum(tok, conf, "vault_type", vault_words, 0, &vt) ||
        !conf_enum(tok, conf, "auth_method", auth_words, 0, &auth) ||
        !ctok_kms_conf_str(tok, conf, "vault_name", &name) ||
        !ctok_kms_conf_str(tok, conf, "vault_url", &url) ||
        !ctok_kms_conf_str(tok, conf, "tenant_id", &c->tenant_id) ||
        !ctok_kms_conf_str(tok, conf, "client_id", &c->client_id) ||
        !ctok_kms_conf_str(tok, conf, "binding", &kt->binding) ||
        !ctok_kms_conf_str(tok, conf, "login_url", &c->login_url) ||
        !ctok_kms_conf_str(tok, conf, "mi_endpoint", &c->mi_endpoint) ||
        !ctok_kms_conf_str(tok, conf, "api_version", &c->api_version) ||
        !ctok_kms_conf_str(tok, conf, "ca_file", &c->ca_file) ||
        !ctok_kms_conf_int(tok, conf, "timeout_ms", 100, 600000, DEFAULT_TIMEOUT_MS, &timeout) ||
        !ctok_kms_conf_int(tok, conf, "max_retries", 0, 10, DEFAULT_RETRIES, &retries) ||
        !ctok_kms_conf_url(tok, "login_url", c->login_url, 0) ||
        !ctok_kms_conf_url(tok, "mi_endpoint", c->mi_endpoint, 1) || !conf_vault(kt, name, url))
        return 0;
    kt->premium = vt == 1;
    c->auth = auth_vals[auth];
    c->timeout_ms = timeout;
    c->max_retries = (int)retries;
    if (c->auth != CTOK_AZ_MANAGED_IDENTITY && (c->tenant_id == NULL || c->client_id == NULL)) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': auth_method %s needs \"tenant_id\" and \"client_id\" (the app "
                 "registration)",
                 cfg_path(tok), ctok_token_name(tok), auth_words[auth]);
        return 0;
    }
    if ((c->auth == CTOK_AZ_CERTIFICATE) != (kt->binding != NULL)) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': \"binding\" (a ctok: URI naming the key and certificate the "
                 "client assertion is signed with) %s",
                 cfg_path(tok), ctok_token_name(tok),
                 kt->binding != NULL ? "is for auth_method certificate only"
                                     : "is what auth_method certificate needs");
        return 0;
    }
    /* certificate auth: the client is made at login, once the binding is resolved */
    return c->auth == CTOK_AZ_CERTIFICATE || (kt->az = ctok_az_new(c)) != NULL;
}

/* The binding key belongs to another token: released before any token is closed. */
static void az_release(ctok_token *tok)
{
    struct az_tok *kt = KT(tok);

    if (kt != NULL && kt->bkey != NULL) {
        ctok_key_unref(kt->bkey);
        kt->bkey = NULL;
    }
}

static void az_close(ctok_token *tok)
{
    struct az_tok *kt = KT(tok);

    if (kt == NULL)
        return;
    ctok_azkv_cache_clear(kt);
    ctok_az_free(kt->az);
    if (kt->bkey != NULL)
        ctok_key_unref(kt->bkey);
    OPENSSL_free(kt->cert_der);
    json_decref(kt->conf);
    pthread_mutex_destroy(&kt->lock);
    free(kt);
    ctok_token_set_be(tok, NULL);
}

static int az_open(ctok_token *tok)
{
    (void)tok;
    return 1; /* nothing to read before an access token */
}

/* Only a client secret is an auth code: a managed identity needs none, and the binding key
 * of certificate auth is activated with its own token's code. */
static int az_needs_code(ctok_token *tok)
{
    return KT(tok)->c.auth == CTOK_AZ_SECRET;
}

static unsigned int az_hidden(ctok_token *tok)
{
    (void)tok;
    return CTOK_OBJ_ANY; /* nothing can be listed without an access token */
}

/* ---- certificate auth: the binding ---- */

/* The client assertion's PS256 signature, made by the binding key wherever it lives. */
static int binding_sign(void *arg, const uint8_t *data, size_t len, uint8_t *sig, size_t *siglen)
{
    struct az_tok *kt = arg;
    struct ctok_sig_params p = {RSA_PKCS1_PSS_PADDING, EVP_sha256(), EVP_sha256(), 32, NULL, 0};
    uint8_t md[32];

    if (!EVP_Digest(data, len, md, NULL, EVP_sha256(), NULL))
        return 0;
    return ctok_key_sign(kt->bkey, &p, md, sizeof(md), sig, siglen);
}

/* The found object of a type, or NULL. */
static const struct ctok_found *found_of(const struct ctok_found *f, size_t n,
                                         enum ctok_obj_type type)
{
    for (size_t i = 0; i < n; i++)
        if (f[i].type == type)
            return &f[i];
    return NULL;
}

/*
 * Resolves "binding" (another token's key and its certificate, found certificate-first) into
 * the binding key handle and certificate DER. 1 ok, 0 error raised.
 */
static int bind(struct az_tok *kt)
{
    ctok_token *tok = kt->tok;
    const char *tn = ctok_token_name(tok);
    struct ctok_uri u;
    struct ctok_found *f = NULL;
    const struct ctok_found *cert, *priv;
    unsigned char *der = NULL;
    size_t n = 0;
    int len, ok = 0;

    memset(&u, 0, sizeof(u));
    if (!ctok_uri_parse(kt->binding, &u))
        return 0;
    if (u.token == NULL || strcmp(u.token, tn) == 0) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': \"binding\" must name another token (token=...) that holds the "
                 "key and certificate of the app registration%s",
                 cfg_path(tok), tn, u.token != NULL ? ", not this one" : "");
        goto end;
    }
    if (!ctok_find(ctok_token_ctx(tok), &u, CTOK_OBJ_CERT | CTOK_OBJ_PRIVATE, NULL, &f, &n))
        goto end;
    cert = found_of(f, n, CTOK_OBJ_CERT);
    priv = found_of(f, n, CTOK_OBJ_PRIVATE);
    if (cert == NULL || priv == NULL || priv->key_type != CTOK_KT_RSA) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "token '%s': binding (token '%s'): %s; certificate auth needs an RSA key and its "
                 "certificate (PS256)",
                 tn, u.token,
                 cert == NULL   ? "no certificate found"
                 : priv == NULL ? "no private key found for the certificate"
                                : "the key is not an RSA key");
        goto end;
    }
    if (ctok_token_login(priv->tok, NULL, NULL) <= 0 ||
        (kt->bkey = ctok_token_key(priv->tok, priv->id, priv->id_len)) == NULL)
        goto end;
    if ((len = i2d_X509(cert->cert, &der)) <= 0)
        goto end;
    kt->cert_der = der;
    kt->c.cert_der = der;
    kt->c.cert_der_len = (size_t)len;
    kt->c.sign = binding_sign;
    kt->c.sign_arg = kt;
    ok = 1;
end:
    ctok_found_free(f, n);
    ctok_uri_clear(&u);
    return ok;
}

/* Secret: the code is the client secret. Certificate: the binding, once. Then a token now. */
static int az_login(ctok_token *tok, const char *code, size_t len)
{
    struct az_tok *kt = KT(tok);

    if (kt->c.auth == CTOK_AZ_SECRET && code == NULL) {
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s': auth method secret needs the client secret",
                 ctok_token_name(tok));
        return -1;
    }
    if (kt->c.auth == CTOK_AZ_CERTIFICATE && kt->az == NULL &&
        (!bind(kt) || (kt->az = ctok_az_new(&kt->c)) == NULL))
        return -1;
    if (kt->c.auth == CTOK_AZ_SECRET && !ctok_az_set_secret(kt->az, code, len))
        return -1;
    if (ctok_az_login(kt->az))
        return 1;
    /* a secret or an assertion Azure AD refused is a rejected code; anything else is not */
    return ctok_err_last_reason() == CTOK_R_CREDENTIALS && kt->c.auth == CTOK_AZ_SECRET ? 0 : -1;
}

/* `ctok token create`: an access token that works, proven with the smallest listing. */
static int az_create(ctok_token *tok, const char *code, size_t len)
{
    json_t *resp = NULL;
    int ok;

    if (ctok_token_login_with(tok, code, len) <= 0)
        return 0;
    ok = ctok_az_call(KT(tok)->az, "GET", "/keys?maxresults=1", NULL, NULL, &resp);
    json_decref(resp);
    return ok;
}

static const struct ctok_tool_field az_tool_fields[] = {
    {"vault-name", "vault_name", CTOK_FIELD_STRING, 0,
     "the vault's name (https://<name>.vault.azure.net)", NULL},
    {"vault-url", "vault_url", CTOK_FIELD_STRING, 0,
     "the vault's URL instead (a Managed HSM: https://<name>.managedhsm.azure.net)", NULL},
    {"vault-type", "vault_type", CTOK_FIELD_STRING, 0,
     "standard (RSA, EC keys) or premium (HSM-protected RSA-HSM, EC-HSM keys)", "standard"},
    {"tenant-id", "tenant_id", CTOK_FIELD_STRING, 0, "the Azure AD tenant (directory) id", NULL},
    {"client-id", "client_id", CTOK_FIELD_STRING, 0,
     "the app registration's client id (managed identity: a user-assigned one)", NULL},
    {"auth-method", "auth_method", CTOK_FIELD_STRING, 0,
     "secret (client secret from the auth source), certificate (a key and certificate "
     "named by --binding) or managed_identity",
     "secret"},
    {"binding", "binding", CTOK_FIELD_STRING, 0,
     "auth method certificate: a ctok: URI naming the key and certificate (token=...;object=...)",
     NULL},
    {"login-url", "login_url", CTOK_FIELD_STRING, 0,
     "the Azure AD authority (https://login.microsoftonline.com)", NULL},
    {"mi-endpoint", "mi_endpoint", CTOK_FIELD_STRING, 0,
     "the managed-identity endpoint (auth method managed_identity)", NULL},
    {"api-version", "api_version", CTOK_FIELD_STRING, 0, "the Key Vault REST api-version (7.4)",
     NULL},
    {"ca-file", "ca_file", CTOK_FIELD_PATH, 0, "CA certificates for the vault's and Azure AD's TLS",
     NULL},
    {"timeout-ms", "timeout_ms", CTOK_FIELD_INT, 0, "time-out of one attempt (100..600000)", NULL},
    {"max-retries", "max_retries", CTOK_FIELD_INT, 0,
     "retries of throttled or failed calls (0..10)", NULL},
    {"certificates", "certificates", CTOK_FIELD_PATHS, 0,
     "certificate files or folders, bound to the keys they certify (repeatable)", NULL},
    {0},
};

/* What Key Vault holds: RSA 2048..4096 signing and decrypting (RSA1_5, RSA-OAEP, RSA-OAEP-256);
 * EC P-256..P-521 signing with their curve's hash (kms/sigcheck.h). */
static const struct ctok_key_kind az_kinds[] = {
    {CTOK_KT_RSA, 2048, 4096, CTOK_USE_SIGN | CTOK_USE_DECRYPT,
     1u << RSA_PKCS1_PADDING | 1u << RSA_PKCS1_OAEP_PADDING, 0},
    {CTOK_KT_EC, 256, 521, CTOK_USE_SIGN, 0, CTOK_KIND_CURVE_HASH},
    {CTOK_KT_NONE, 0, 0, 0, 0, 0},
};

const struct ctok_backend ctok_azurekv_backend = {
    .type = "azurekv",
    .tool_fields = az_tool_fields,
    .needs_code = az_needs_code,
    .find = ctok_azkv_find,
    .create = az_create,
    .discover = ctok_azkv_discover,
    .key_kinds = az_kinds,
    .configure = az_configure,
    .open = az_open,
    .login = az_login,
    .enumerate = ctok_azkv_enumerate,
    .hidden = az_hidden,
    .key_load = ctok_azkv_key_load,
    .key_free = ctok_azkv_key_free,
    .sign = ctok_azkv_sign,
    .sign_rs = 1, /* ES*: JWS's r || s */
    .decrypt = ctok_azkv_decrypt,
    .generate = ctok_azkv_generate,
    .remove = ctok_azkv_remove,
    .release = az_release,
    .close = az_close,
};

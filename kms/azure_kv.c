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
 * /certificates/<name>/. Access tokens, HTTP and retries are ctok_az_call's (kms/aad.c,
 * kms/azcall.c); the responses are read by the pure parsers of azure_parse.c.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "../store/backend.h"
#include "azure.h"
#include "azure_parse.h"
#include "conf.h"
#include "sigcheck.h"

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_RETRIES 3
#define REF_MAX (AZ_NAME_MAX + AZ_VERSION_MAX) /* "name/version" */

/* A key bundle as the vault described it, under the reference it was asked by. */
struct kcached {
    struct kcached *next;
    char ref[REF_MAX];
    struct az_key k;
};

/* A vault certificate by name; cert NULL: the vault has none of that name. */
struct ccached {
    struct ccached *next;
    char name[AZ_NAME_MAX];
    X509 *cert;
};

struct az_tok {
    ctok_token *tok;
    json_t *conf;          /* a copy of the entry: the strings of c point into it */
    struct ctok_az_conf c; /* what ctok_az_new gets (certificate: at login) */
    struct ctok_az *az;    /* NULL until made */
    const char *binding;   /* certificate auth: the ctok: URI of key and certificate */
    ctok_key *bkey;        /* certificate auth: the binding key */
    uint8_t *cert_der;     /* certificate auth: the binding certificate */
    int premium;
    pthread_mutex_t lock; /* the caches and az; never held across a call */
    struct kcached *keys;
    struct ccached *certs;
};
#define KT(tok) ((struct az_tok *)ctok_token_be(tok))

/* What a key handle keeps: enough to sign without asking the cache again. */
struct az_keyh {
    char name[AZ_NAME_MAX];
    char version[AZ_VERSION_MAX];
    char object[REF_MAX]; /* errors name it */
    char crv[16];
    unsigned int ops;
};

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

static void cache_clear(struct az_tok *kt)
{
    while (kt->keys != NULL) {
        struct kcached *e = kt->keys;

        kt->keys = e->next;
        ctok_az_key_clear(&e->k);
        free(e);
    }
    while (kt->certs != NULL) {
        struct ccached *e = kt->certs;

        kt->certs = e->next;
        X509_free(e->cert);
        free(e);
    }
}

static void az_close(ctok_token *tok)
{
    struct az_tok *kt = KT(tok);

    if (kt == NULL)
        return;
    cache_clear(kt);
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
    struct ctok_sig_params p = {RSA_PKCS1_PSS_PADDING, EVP_sha256(), EVP_sha256(), 32};
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

/* ---- the key and certificate caches ---- */

/* "name" or "name/version" into its parts; 0 if it is not a Key Vault reference. */
static int split_ref(const char *ref, char name[AZ_NAME_MAX], char version[AZ_VERSION_MAX])
{
    const char *slash = strchr(ref, '/');
    size_t n = slash != NULL ? (size_t)(slash - ref) : strlen(ref);

    if (n >= AZ_NAME_MAX || (slash != NULL && strlen(slash + 1) >= AZ_VERSION_MAX))
        return 0;
    memcpy(name, ref, n);
    name[n] = '\0';
    strcpy(version, slash != NULL ? slash + 1 : "");
    return ctok_az_name_ok(name, 0) && (slash == NULL || ctok_az_name_ok(version, 1));
}

/* A copy of a cached key for a caller (its own reference to the public key). */
static int take(const struct az_key *k, struct az_key *out)
{
    *out = *k;
    return out->pub == NULL || EVP_PKEY_up_ref(out->pub);
}

/*
 * The key a reference names, from the cache or one GET /keys/<name>/[<version>] (error raised
 * naming the key; ctok_err_last_reason() says why). 1 found, -1 failed.
 */
static int lookup(struct az_tok *kt, const char *ref, struct az_key *out)
{
    char name[AZ_NAME_MAX], version[AZ_VERSION_MAX], path[REF_MAX + 16];
    struct kcached *e;
    struct az_key k;
    json_t *resp = NULL;
    int ok;

    pthread_mutex_lock(&kt->lock);
    for (e = kt->keys; e != NULL && strcmp(e->ref, ref) != 0; e = e->next)
        ;
    ok = e != NULL && take(&e->k, out);
    pthread_mutex_unlock(&kt->lock);
    if (e != NULL)
        return ok ? 1 : -1;

    if (!split_ref(ref, name, version)) {
        CTOK_ERR(CTOK_R_NOT_FOUND,
                 "token '%s': key '%s': a Key Vault key is named by 1-127 letters, digits and "
                 "'-' (a version pinned as name/version)",
                 ctok_token_name(kt->tok), ref);
        return -1;
    }
    snprintf(path, sizeof(path), "/keys/%s/%s", name, version);
    if (!ctok_az_call(kt->az, "GET", path, ref, NULL, &resp))
        return -1;
    ok = ctok_az_parse_key(resp, ctok_ctx_libctx(ctok_token_ctx(kt->tok)),
                           ctok_ctx_propq(ctok_token_ctx(kt->tok)), &k);
    json_decref(resp);
    if (!ok || strcmp(k.name, name) != 0 || (version[0] && strcmp(k.version, version) != 0)) {
        if (ok)
            ctok_az_key_clear(&k);
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': key '%s': the vault answered what ctok cannot read",
                 ctok_token_name(kt->tok), ref);
        return -1;
    }
    CTOK_DBG("token '%s': key '%s' is version %s (%s%s%s, %s)", ctok_token_name(kt->tok), ref,
             k.version, k.kty, k.crv[0] ? " " : "", k.crv, k.enabled ? "enabled" : "disabled");

    pthread_mutex_lock(&kt->lock);
    /* another thread may have asked too: the first answer stays */
    for (e = kt->keys; e != NULL && strcmp(e->ref, ref) != 0; e = e->next)
        ;
    if (e == NULL && (e = calloc(1, sizeof(*e))) != NULL) {
        snprintf(e->ref, sizeof(e->ref), "%s", ref);
        e->k = k;
        k.pub = NULL;
        e->next = kt->keys;
        kt->keys = e;
    }
    ok = e != NULL && take(&e->k, out);
    pthread_mutex_unlock(&kt->lock);
    ctok_az_key_clear(&k);
    return ok ? 1 : -1;
}

/*
 * The vault certificate of a name, from the cache or one GET /certificates/<name>/: 1 and
 * *cert (up-ref'd), 0 the vault has none (nothing raised), -1 failed (error raised).
 */
static int cert_lookup(struct az_tok *kt, const char *name, X509 **cert)
{
    char path[AZ_NAME_MAX + 32], key_name[AZ_NAME_MAX];
    struct ccached *e;
    json_t *resp = NULL;
    X509 *x = NULL;
    int r;

    *cert = NULL;
    pthread_mutex_lock(&kt->lock);
    for (e = kt->certs; e != NULL && strcmp(e->name, name) != 0; e = e->next)
        ;
    if (e != NULL && e->cert != NULL && X509_up_ref(e->cert))
        *cert = e->cert;
    pthread_mutex_unlock(&kt->lock);
    if (e != NULL)
        return *cert != NULL;

    snprintf(path, sizeof(path), "/certificates/%s/", name);
    ctok_err_mark();
    if (!ctok_az_call(kt->az, "GET", path, name, NULL, &resp)) {
        if (ctok_err_last_reason() != CTOK_R_NOT_FOUND) {
            ctok_err_clear_mark();
            return -1;
        }
        ctok_err_pop_to_mark(); /* a key without a certificate: the usual case */
        r = 0;
    } else {
        ctok_err_clear_mark();
        r = ctok_az_parse_cert(resp, ctok_ctx_libctx(ctok_token_ctx(kt->tok)),
                               ctok_ctx_propq(ctok_token_ctx(kt->tok)), &x, key_name);
        json_decref(resp);
        if (!r) {
            CTOK_ERR(CTOK_R_BACKEND,
                     "token '%s': certificate '%s': the vault answered what ctok cannot read",
                     ctok_token_name(kt->tok), name);
            return -1;
        }
    }
    pthread_mutex_lock(&kt->lock);
    for (e = kt->certs; e != NULL && strcmp(e->name, name) != 0; e = e->next)
        ;
    if (e == NULL && (e = calloc(1, sizeof(*e))) != NULL) {
        snprintf(e->name, sizeof(e->name), "%s", name);
        e->cert = x;
        x = NULL;
        e->next = kt->certs;
        kt->certs = e;
    }
    if (e != NULL && e->cert != NULL && X509_up_ref(e->cert))
        *cert = e->cert;
    pthread_mutex_unlock(&kt->lock);
    X509_free(x);
    return *cert != NULL;
}

/* Forgets every version of a key name and its certificate (removed or made anew). */
static void cache_drop(struct az_tok *kt, const char *name)
{
    size_t n = strlen(name);

    pthread_mutex_lock(&kt->lock);
    for (struct kcached **pe = &kt->keys; *pe != NULL;) {
        struct kcached *e = *pe;

        if (strncmp(e->ref, name, n) == 0 && (e->ref[n] == '\0' || e->ref[n] == '/')) {
            *pe = e->next;
            ctok_az_key_clear(&e->k);
            free(e);
        } else {
            pe = &e->next;
        }
    }
    for (struct ccached **pc = &kt->certs; *pc != NULL;) {
        struct ccached *c = *pc;

        if (strcmp(c->name, name) == 0) {
            *pc = c->next;
            X509_free(c->cert);
            free(c);
        } else {
            pc = &c->next;
        }
    }
    pthread_mutex_unlock(&kt->lock);
}

/* ---- objects ---- */

/* Reports a key as its private and public objects, as the types ask. */
static int report(ctok_token *tok, const char *ref, const struct az_key *k, unsigned int types,
                  ctok_object_cb cb, void *arg)
{
    struct ctok_object o = {
        CTOK_OBJ_PRIVATE, ref, (const uint8_t *)ref, strlen(ref), k->type, NULL, k->pub};

    if ((types & CTOK_OBJ_PRIVATE) && !cb(tok, &o, arg))
        return 0;
    o.type = CTOK_OBJ_PUBLIC;
    return !(types & CTOK_OBJ_PUBLIC) || cb(tok, &o, arg);
}

static int report_cert(ctok_token *tok, const char *name, X509 *cert, ctok_object_cb cb, void *arg)
{
    EVP_PKEY *pub = X509_get0_pubkey(cert);
    struct ctok_object o = {CTOK_OBJ_CERT,
                            name,
                            (const uint8_t *)name,
                            strlen(name),
                            pub != NULL ? ctok_key_type_of(pub) : CTOK_KT_NONE,
                            cert,
                            pub};

    return cb(tok, &o, arg);
}

/*
 * Every name of a collection ("keys", "certificates"), paged via nextLink. 1 ok; 0 failed
 * (error raised; ctok_err_last_reason() says why).
 */
static int list_names(struct az_tok *kt, const char *coll, char ***v, size_t *n)
{
    char path[64], *next = NULL;
    int ok = 1;

    *v = NULL;
    *n = 0;
    snprintf(path, sizeof(path), "/%s?maxresults=25", coll);
    do {
        json_t *resp = NULL;

        ok = ctok_az_call(kt->az, "GET", next != NULL ? next : path, NULL, NULL, &resp);
        free(next);
        next = NULL;
        if (ok && !ctok_az_parse_list(resp, coll, v, n, &next)) {
            CTOK_ERR(CTOK_R_BACKEND,
                     "token '%s': the list of %s the vault answered is not one "
                     "ctok can read",
                     ctok_token_name(kt->tok), coll);
            ok = 0;
        }
        json_decref(resp);
    } while (ok && next != NULL);
    free(next);
    if (!ok) {
        ctok_az_names_free(*v, *n);
        *v = NULL;
        *n = 0;
    }
    return ok;
}

/*
 * A listed key: 1 usable, 0 skipped (gone since the listing, disabled, not a key ctok uses: a
 * debug line says so and no error is left), -1 failed.
 */
static int listed_key(struct az_tok *kt, const char *name, struct az_key *k)
{
    int r;

    ctok_err_mark();
    r = lookup(kt, name, k);
    if (r < 0 && ctok_err_last_reason() == CTOK_R_NOT_FOUND) {
        ctok_err_pop_to_mark();
        return 0;
    }
    ctok_err_clear_mark();
    if (r > 0 && (k->type == CTOK_KT_NONE || !k->enabled)) {
        CTOK_DBG("token '%s': key '%s' (%s) skipped: %s", ctok_token_name(kt->tok), name, k->kty,
                 k->enabled ? "not a key ctok signs with" : "disabled");
        ctok_az_key_clear(k);
        return 0;
    }
    return r;
}

/* The vault certificates, each with its name; a client not allowed to list certificates
 * (a key-only access policy) sees none, with a debug line. */
static int enumerate_certs(struct az_tok *kt, ctok_object_cb cb, void *arg)
{
    char **v;
    size_t n;
    int ok = 1;

    ctok_err_mark();
    if (!list_names(kt, "certificates", &v, &n)) {
        if (ctok_err_last_reason() != CTOK_R_DENIED) {
            ctok_err_clear_mark();
            return 0;
        }
        CTOK_DBG("token '%s': certificates not listed: the vault denies it",
                 ctok_token_name(kt->tok));
        ctok_err_pop_to_mark();
        return 1;
    }
    ctok_err_clear_mark();
    for (size_t i = 0; ok && i < n; i++) {
        X509 *x;
        int r = cert_lookup(kt, v[i], &x);

        ok = r >= 0 && (r == 0 || report_cert(kt->tok, v[i], x, cb, arg));
        X509_free(x);
    }
    ctok_az_names_free(v, n);
    return ok;
}

static int az_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg)
{
    struct az_tok *kt = KT(tok);
    char **v;
    size_t n;
    int ok = 1;

    if (!ctok_token_is_active(tok))
        return 1; /* everything is hidden until login */
    if (!list_names(kt, "keys", &v, &n))
        return 0;
    for (size_t i = 0; ok && i < n; i++) {
        struct az_key k;
        int r = listed_key(kt, v[i], &k);

        if (r < 0)
            ok = 0;
        else if (r > 0)
            ok = report(tok, v[i], &k, CTOK_OBJ_PRIVATE | CTOK_OBJ_PUBLIC, cb, arg);
        if (r > 0)
            ctok_az_key_clear(&k);
    }
    ctok_az_names_free(v, n);
    return ok && enumerate_certs(kt, cb, arg);
}

/* The reference a label and/or id names ("" if they disagree or name nothing here). */
static void find_ref(const char *label, const uint8_t *id, size_t id_len, char ref[REF_MAX])
{
    ref[0] = '\0';
    if (id != NULL) {
        if (id_len == 0 || id_len >= REF_MAX || memchr(id, '\0', id_len) != NULL)
            return;
        memcpy(ref, id, id_len);
        ref[id_len] = '\0';
        if (label != NULL && strcmp(label, ref) != 0)
            ref[0] = '\0';
    } else if (strlen(label) < REF_MAX) {
        strcpy(ref, label);
    }
}

/* A key usable for signing now, or a clear error. */
static int usable(ctok_token *tok, const char *ref, const struct az_key *k)
{
    if (k->type == CTOK_KT_NONE) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s' is a %s%s%s key: ctok uses RSA and EC P-256/P-384/P-521 "
                 "keys",
                 ctok_token_name(tok), ref, k->kty, k->crv[0] ? " " : "", k->crv);
        return 0;
    }
    if (!k->enabled) {
        CTOK_ERR(CTOK_R_DENIED, "token '%s': key '%s' is disabled in the vault",
                 ctok_token_name(tok), ref);
        return 0;
    }
    return 1;
}

/* Targeted lookup: one GET of the key and (certificates wanted) one of the certificate. */
static int az_find(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
                   unsigned int types, ctok_object_cb cb, void *arg)
{
    struct az_tok *kt = KT(tok);
    char ref[REF_MAX], name[AZ_NAME_MAX], version[AZ_VERSION_MAX];
    struct az_key k;
    X509 *x = NULL;
    int r;

    if (!ctok_token_is_active(tok))
        return 1;
    if (label == NULL && id == NULL) {
        struct ctok_filter f = {NULL, NULL, 0, types, cb, arg};

        return az_enumerate(tok, ctok_filter_cb, &f);
    }
    find_ref(label, id, id_len, ref);
    if (!split_ref(ref, name, version))
        return 1; /* names nothing a vault can hold */
    if (types & CTOK_OBJ_CERT && version[0] == '\0') {
        if ((r = cert_lookup(kt, name, &x)) < 0)
            return 0;
        r = r == 0 || report_cert(tok, name, x, cb, arg);
        X509_free(x);
        if (!r)
            return 0;
    }
    if ((types & (CTOK_OBJ_PRIVATE | CTOK_OBJ_PUBLIC)) == 0)
        return 1;
    ctok_err_mark();
    r = lookup(kt, ref, &k);
    if (r < 0 && ctok_err_last_reason() == CTOK_R_NOT_FOUND) {
        ctok_err_pop_to_mark(); /* nothing by that name: the token layer says so */
        return 1;
    }
    ctok_err_clear_mark();
    if (r < 0)
        return 0; /* denied, throttled...: that error is the answer */
    r = usable(tok, ref, &k) && report(tok, ref, &k, types, cb, arg);
    ctok_az_key_clear(&k);
    return r;
}

static int az_key_load(ctok_token *tok, ctok_key *key)
{
    struct az_tok *kt = KT(tok);
    char ref[REF_MAX];
    struct az_key k;
    struct az_keyh *h;

    find_ref(NULL, key->id, key->id_len, ref);
    if (lookup(kt, ref, &k) < 0)
        return 0;
    if (!usable(tok, ref, &k) || (h = calloc(1, sizeof(*h))) == NULL) {
        ctok_az_key_clear(&k);
        return 0;
    }
    memcpy(h->name, k.name, sizeof(h->name));
    memcpy(h->version, k.version, sizeof(h->version));
    memcpy(h->crv, k.crv, sizeof(h->crv));
    snprintf(h->object, sizeof(h->object), "%s", ref);
    h->ops = k.ops;
    key->type = k.type;
    key->pub = k.pub; /* the reference lookup took */
    key->be_data = h;
    key->label = strdup(ref);
    return key->label != NULL;
}

static void az_key_free(ctok_key *key)
{
    free(key->be_data);
    key->be_data = NULL;
}

/* ---- signing and decryption ---- */

/* The hash an EC key signs with in Key Vault: its curve's. */
static const EVP_MD *curve_md(const char *crv)
{
    return strcmp(crv, "P-256") == 0   ? EVP_sha256()
           : strcmp(crv, "P-384") == 0 ? EVP_sha384()
           : strcmp(crv, "P-521") == 0 ? EVP_sha512()
                                       : NULL;
}

/* The JWA algorithm for a request into buf ("RS256", "PS384", "ES512"), or NULL with
 * CTOK_R_UNSUPPORTED raised. */
static const char *sign_alg(ctok_key *key, const struct az_keyh *h, const struct ctok_sig_params *p,
                            size_t tbslen, char buf[8])
{
    int pss;
    const EVP_MD *md =
        ctok_kms_sign_md("Key Vault", key, h->object, curve_md(h->crv), h->crv, p, tbslen, &pss);

    if (md == NULL)
        return NULL;
    snprintf(buf, 8, "%s%d",
             key->type == CTOK_KT_EC ? "ES"
             : pss                   ? "PS"
                                     : "RS",
             EVP_MD_get_size(md) * 8);
    return buf;
}

/* key_ops must allow op (a key without key_ops allows what the vault allows). */
static int op_allowed(ctok_key *key, const struct az_keyh *h, unsigned int op, const char *name)
{
    if (h->ops == 0 || (h->ops & op) != 0)
        return 1;
    CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': key '%s': its key_ops do not include %s",
             ctok_token_name(key->tok), h->object, name);
    return 0;
}

/* POST /keys/<name>/<version>/<op> {alg, value: base64url(in)}, its value into out. */
static int value_call(ctok_key *key, const char *op, const char *alg, const uint8_t *in,
                      size_t inlen, uint8_t *out, size_t *outlen)
{
    const struct az_keyh *h = key->be_data;
    struct az_tok *kt = KT(key->tok);
    size_t b64len = 4 * ((inlen + 2) / 3) + 1;
    char *b64 = OPENSSL_malloc(b64len), path[REF_MAX + 32];
    json_t *req = NULL, *resp = NULL;
    int ok = 0;

    if (b64 == NULL)
        return 0;
    ctok_az_b64url_encode(in, inlen, b64);
    snprintf(path, sizeof(path), "/keys/%s/%s/%s", h->name, h->version, op);
    req = json_pack("{s:s, s:s}", "alg", alg, "value", b64);
    if (req == NULL || !ctok_az_call(kt->az, "POST", path, h->object, req, &resp))
        goto end;
    ok = ctok_az_parse_value(resp, out, outlen);
    if (!ok)
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': %s answered what ctok cannot read (or more than the %zu "
                 "bytes expected)",
                 ctok_token_name(key->tok), h->object, op, *outlen);
end:
    if (resp != NULL) {
        /* a decrypt answer is a secret: its text does not outlive the call in our heap */
        char *v = (char *)json_string_value(json_object_get(resp, "value"));

        if (v != NULL)
            OPENSSL_cleanse(v, strlen(v));
    }
    json_decref(resp);
    json_decref(req);
    OPENSSL_clear_free(b64, b64len);
    return ok;
}

static int az_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                   size_t tbslen, uint8_t *sig, size_t *siglen)
{
    const struct az_keyh *h = key->be_data;
    char buf[8];
    const char *alg = sign_alg(key, h, p, tbslen, buf);
    uint8_t rs[2 * 66];
    size_t rslen = sizeof(rs);

    if (alg == NULL || !op_allowed(key, h, AZ_OP_SIGN, "sign"))
        return 0;
    if (key->type != CTOK_KT_EC)
        return value_call(key, "sign", alg, tbs, tbslen, sig, siglen);
    /* ES*: JWS form r || s, DER for X.509, TLS and CMS */
    if (!value_call(key, "sign", alg, tbs, tbslen, rs, &rslen))
        return 0;
    if (ctok_ecdsa_rs_to_der(rs, rslen, sig, siglen))
        return 1;
    CTOK_ERR(CTOK_R_BACKEND, "token '%s': key '%s': the %zu-byte ECDSA signature is not r || s",
             ctok_token_name(key->tok), h->object, rslen);
    return 0;
}

static int az_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                      size_t inlen, uint8_t *out, size_t *outlen)
{
    const struct az_keyh *h = key->be_data;
    const EVP_MD *md = p->oaep_md != NULL ? p->oaep_md : EVP_sha1();
    const EVP_MD *mgf1 = p->mgf1 != NULL ? p->mgf1 : md;
    int nid = EVP_MD_get_type(md);
    const char *alg = NULL;

    if (p->pad == RSA_PKCS1_PADDING)
        alg = "RSA1_5";
    else if (p->pad == RSA_PKCS1_OAEP_PADDING && EVP_MD_get_type(mgf1) == nid && p->label_len == 0)
        alg = nid == NID_sha1 ? "RSA-OAEP" : nid == NID_sha256 ? "RSA-OAEP-256" : NULL;
    if (alg == NULL || key->type != CTOK_KT_RSA) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s': Key Vault decrypts only with RSA keys, RSA-OAEP with "
                 "SHA-1 or SHA-256 (MGF1 the same, no label) or PKCS#1 v1.5",
                 ctok_token_name(key->tok), h->object);
        return 0;
    }
    return op_allowed(key, h, AZ_OP_DECRYPT, "decrypt") &&
           value_call(key, "decrypt", alg, in, inlen, out, outlen);
}

/* ---- key management ---- */

/* The create request for a key spec, or NULL with the error raised. */
static json_t *create_req(struct az_tok *kt, const char *alias, const struct ctok_keyspec *s)
{
    const char *hsm = kt->premium ? "-HSM" : "", *crv = NULL;
    char kty[16];

    if (s->type == CTOK_KT_EC && s->group != NULL) {
        if (strcmp(s->group, "P-256") == 0 || strcmp(s->group, "prime256v1") == 0 ||
            strcmp(s->group, "secp256r1") == 0)
            crv = "P-256";
        else if (strcmp(s->group, "P-384") == 0 || strcmp(s->group, "secp384r1") == 0)
            crv = "P-384";
        else if (strcmp(s->group, "P-521") == 0 || strcmp(s->group, "secp521r1") == 0)
            crv = "P-521";
    }
    if (crv != NULL) {
        snprintf(kty, sizeof(kty), "EC%s", hsm);
        return json_pack("{s:s, s:s, s:[s,s]}", "kty", kty, "crv", crv, "key_ops", "sign",
                         "verify");
    }
    if (s->type == CTOK_KT_RSA && (s->bits == 2048 || s->bits == 3072 || s->bits == 4096)) {
        snprintf(kty, sizeof(kty), "RSA%s", hsm);
        return json_pack("{s:s, s:i, s:[s,s]}", "kty", kty, "key_size", s->bits, "key_ops", "sign",
                         "verify");
    }
    CTOK_ERR(CTOK_R_UNSUPPORTED,
             "token '%s': key '%s': Key Vault keys are rsa:2048, rsa:3072, rsa:4096, ec:P-256, "
             "ec:P-384 or ec:P-521",
             ctok_token_name(kt->tok), alias);
    return NULL;
}

/*
 * Key Vault's create makes a new version of an existing name: so a name in use is refused
 * first (its GET answering KeyNotFound is the good answer). The new key may sign and verify
 * only (key_ops), as EJBCA's signing keys do.
 */
static int az_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec)
{
    struct az_tok *kt = KT(tok);
    char path[AZ_NAME_MAX + 16];
    struct az_key k;
    json_t *req, *resp = NULL;
    int r;

    if (!ctok_az_name_ok(alias, 0)) {
        CTOK_ERR(CTOK_R_INVALID_ARG,
                 "token '%s': key '%s': a Key Vault key name is 1-127 letters, digits and '-'",
                 ctok_token_name(tok), alias);
        return 0;
    }
    if ((req = create_req(kt, alias, spec)) == NULL)
        return 0;
    ctok_err_mark();
    r = lookup(kt, alias, &k);
    if (r > 0) {
        ctok_err_clear_mark();
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': key '%s' exists already (version %s)",
                 ctok_token_name(tok), alias, k.version);
        ctok_az_key_clear(&k);
        json_decref(req);
        return 0;
    }
    if (ctok_err_last_reason() != CTOK_R_NOT_FOUND) {
        ctok_err_clear_mark();
        json_decref(req);
        return 0;
    }
    ctok_err_pop_to_mark();
    snprintf(path, sizeof(path), "/keys/%s/create", alias);
    r = ctok_az_call(kt->az, "POST", path, alias, req, &resp);
    json_decref(req);
    if (r) {
        r = ctok_az_parse_key(resp, ctok_ctx_libctx(ctok_token_ctx(tok)),
                              ctok_ctx_propq(ctok_token_ctx(tok)), &k);
        if (!r)
            CTOK_ERR(CTOK_R_BACKEND,
                     "token '%s': key '%s': create answered what ctok cannot read (the key may "
                     "exist now)",
                     ctok_token_name(tok), alias);
        else
            CTOK_DBG("token '%s': created key '%s' version %s (%s)", ctok_token_name(tok), alias,
                     k.version, k.kty);
        if (r)
            ctok_az_key_clear(&k);
    }
    json_decref(resp);
    cache_drop(kt, alias);
    return r;
}

/* DELETE /keys/<name>: soft delete (recoverable until purged), as the note says. */
static int az_remove(ctok_token *tok, const char *alias, char *note, size_t notelen)
{
    struct az_tok *kt = KT(tok);
    char path[AZ_NAME_MAX + 16], date[11], rid[300];
    json_t *resp = NULL;
    int ok;

    if (!ctok_az_name_ok(alias, 0)) {
        CTOK_ERR(CTOK_R_NOT_FOUND,
                 "token '%s': key '%s': a Key Vault key name is 1-127 letters, digits and '-'",
                 ctok_token_name(tok), alias);
        return 0;
    }
    snprintf(path, sizeof(path), "/keys/%s", alias);
    if (!ctok_az_call(kt->az, "DELETE", path, alias, NULL, &resp))
        return 0;
    ok = ctok_az_parse_deleted(resp, date, rid, sizeof(rid));
    json_decref(resp);
    cache_drop(kt, alias);
    if (!ok)
        snprintf(note, notelen, "deleted (the vault's answer says no more)");
    else if (date[0] != '\0')
        snprintf(note, notelen, "soft-deleted; purge scheduled for %s (recovery id %s)", date,
                 rid[0] ? rid : "none given");
    else
        snprintf(note, notelen, "deleted (the vault keeps no deleted keys: no recovery)");
    return 1;
}

/* The tool's discovery: every key with kty/crv/size, enabled, and whether a certificate of
 * its name exists. */
static json_t *az_discover(ctok_token *tok)
{
    struct az_tok *kt = KT(tok);
    char **v, **cv = NULL;
    size_t n, cn = 0;
    json_t *out;

    if (!list_names(kt, "keys", &v, &n))
        return NULL;
    ctok_err_mark();
    if (!list_names(kt, "certificates", &cv, &cn))
        CTOK_DBG("token '%s': certificates not listed", ctok_token_name(tok));
    ctok_err_pop_to_mark();
    if ((out = json_array()) == NULL)
        goto end;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_pack("{s:s}", "name", v[i]);
        struct az_key k;
        int cert = 0;

        for (size_t j = 0; j < cn && !cert; j++)
            cert = strcmp(cv[j], v[i]) == 0;
        ctok_err_mark();
        if (lookup(kt, v[i], &k) > 0) {
            json_object_set_new(e, "version", json_string(k.version));
            json_object_set_new(e, "kty", json_string(k.kty));
            if (k.crv[0])
                json_object_set_new(e, "crv", json_string(k.crv));
            else if (k.bits)
                json_object_set_new(e, "key_size", json_integer(k.bits));
            json_object_set_new(e, "enabled", json_boolean(k.enabled));
            ctok_az_key_clear(&k);
        } else {
            json_object_set_new(e, "unavailable",
                                json_string(ctok_reason_string(ctok_err_last_reason())));
        }
        ctok_err_pop_to_mark();
        json_object_set_new(e, "certificate", json_boolean(cert));
        json_array_append_new(out, e);
    }
end:
    ctok_az_names_free(v, n);
    ctok_az_names_free(cv, cn);
    return out;
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

const struct ctok_backend ctok_azurekv_backend = {
    .type = "azurekv",
    .tool_fields = az_tool_fields,
    .needs_code = az_needs_code,
    .find = az_find,
    .create = az_create,
    .discover = az_discover,
    .configure = az_configure,
    .open = az_open,
    .login = az_login,
    .enumerate = az_enumerate,
    .hidden = az_hidden,
    .key_load = az_key_load,
    .key_free = az_key_free,
    .sign = az_sign,
    .decrypt = az_decrypt,
    .generate = az_generate,
    .remove = az_remove,
    .close = az_close,
};

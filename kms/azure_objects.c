/* The azurekv backend's objects (azkv.h): the key and certificate caches, listings,
 * targeted lookups and key handles. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "azkv.h"

/* ---- the key and certificate caches ---- */

void ctok_azkv_cache_clear(struct az_tok *kt)
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
int ctok_azkv_lookup(struct az_tok *kt, const char *ref, struct az_key *out)
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
void ctok_azkv_cache_drop(struct az_tok *kt, const char *name)
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
int ctok_azkv_list_names(struct az_tok *kt, const char *coll, char ***v, size_t *n)
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
    r = ctok_azkv_lookup(kt, name, k);
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
    if (!ctok_azkv_list_names(kt, "certificates", &v, &n)) {
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

int ctok_azkv_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg)
{
    struct az_tok *kt = KT(tok);
    char **v;
    size_t n;
    int ok = 1;

    if (!ctok_token_is_active(tok))
        return 1; /* everything is hidden until login */
    if (!ctok_azkv_list_names(kt, "keys", &v, &n))
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
int ctok_azkv_find(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
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

        return ctok_azkv_enumerate(tok, ctok_filter_cb, &f);
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
    r = ctok_azkv_lookup(kt, ref, &k);
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

int ctok_azkv_key_load(ctok_token *tok, ctok_key *key)
{
    struct az_tok *kt = KT(tok);
    char ref[REF_MAX];
    struct az_key k;
    struct az_keyh *h;

    find_ref(NULL, key->id, key->id_len, ref);
    if (ctok_azkv_lookup(kt, ref, &k) < 0)
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
    /* key_ops: what the key does; a key without them does what the vault allows */
    if (k.ops != 0)
        key->usage = (k.ops & AZ_OP_SIGN ? CTOK_USE_SIGN : 0) |
                     (k.ops & AZ_OP_DECRYPT ? CTOK_USE_DECRYPT : 0);
    key->type = k.type;
    key->pub = k.pub; /* the reference lookup took */
    key->be_data = h;
    key->label = strdup(ref);
    return key->label != NULL;
}

void ctok_azkv_key_free(ctok_key *key)
{
    free(key->be_data);
    key->be_data = NULL;
}

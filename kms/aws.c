/*
 * The awskms token type: one token is one AWS account and region, its objects are the
 * aliases that point at asymmetric keys (label = alias without "alias/", id = key id text).
 * Only the operations of the seed's access policy are used: ListAliases, GetPublicKey (once
 * per key per process: a per-token cache), Sign, CreateKey + CreateAlias, ScheduleKeyDeletion,
 * and Decrypt when granted. HTTP, SigV4, credentials and retries are ctok_aws_call's
 * (kms/awscall.c); the responses are read by the pure parsers of aws_parse.c.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>

#include "../store/backend.h"
#include "aws.h"
#include "aws_parse.h"
#include "conf.h"
#include "sigcheck.h"

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_RETRIES 3
#define DEFAULT_DELETION_DAYS 30
#define ORPHAN_DELETION_DAYS 7

/* A key as GetPublicKey described it, and the alias it was first seen under. */
struct cached {
    struct cached *next;
    struct kms_pubkey k;
    char *alias; /* may be NULL (found by key id) */
};

/* alias -> key id: what GetPublicKey("alias/x") answered */
struct alias_map {
    struct alias_map *next;
    char *alias;
    char key_id[KMS_KEY_ID_MAX];
};

struct kms_tok {
    ctok_token *tok;
    struct ctok_aws *aws;
    int use_role;
    int deletion_days;
    pthread_mutex_t lock; /* the caches; never held across a call */
    struct cached *keys;
    struct alias_map *aliases;
};
/* the backend's data of a token: the one place that reaches into the token (backend.h's
 * ctok_token_be / ctok_token_set_be once the token layer has them) */
#define KT(tok) ((struct kms_tok *)ctok_token_be(tok))
#define SET_KT(tok, kt) ctok_token_set_be((tok), (kt))

/* What a key handle keeps: enough to sign without asking the cache again. */
struct kms_keyh {
    char key_id[KMS_KEY_ID_MAX];
    char object[300]; /* "alias/x" or the key id: errors name it */
    char spec[32];
    char usage[32];
    unsigned int algs;
};

/* ---- configuration ---- */

static int aws_configure(ctok_token *tok, const json_t *conf)
{
    const char *path = ctok_ctx_config_path(ctok_token_ctx(tok)), *method;
    struct ctok_aws_conf c = {.tokname = ctok_token_name(tok)};
    struct kms_tok *kt;
    long timeout, retries, days;

    if (!ctok_kms_conf_str(tok, conf, "region", &c.region) ||
        !ctok_kms_conf_str(tok, conf, "auth_method", &method) ||
        !ctok_kms_conf_str(tok, conf, "access_key_id", &c.access_key_id) ||
        !ctok_kms_conf_str(tok, conf, "endpoint", &c.endpoint) ||
        !ctok_kms_conf_str(tok, conf, "imds_endpoint", &c.imds_endpoint) ||
        !ctok_kms_conf_str(tok, conf, "ca_file", &c.ca_file) ||
        !ctok_kms_conf_int(tok, conf, "timeout_ms", 100, 600000, DEFAULT_TIMEOUT_MS, &timeout) ||
        !ctok_kms_conf_int(tok, conf, "max_retries", 0, 10, DEFAULT_RETRIES, &retries) ||
        !ctok_kms_conf_int(tok, conf, "deletion_window_days", 7, 30, DEFAULT_DELETION_DAYS,
                           &days) ||
        !ctok_kms_conf_url(tok, "endpoint", c.endpoint, 0) ||
        !ctok_kms_conf_url(tok, "imds_endpoint", c.imds_endpoint, 1))
        return 0;
    if (c.region == NULL ||
        strspn(c.region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(c.region)) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': awskms token needs \"region\" (such as \"eu-west-1\")%s%s", path,
                 ctok_token_name(tok), c.region != NULL ? ", not " : "",
                 c.region != NULL ? c.region : "");
        return 0;
    }
    if (method != NULL && strcmp(method, "keys") != 0 && strcmp(method, "role") != 0) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': \"auth_method\" must be keys or role, not '%s'",
                 path, ctok_token_name(tok), method);
        return 0;
    }
    c.use_role = method != NULL && strcmp(method, "role") == 0;
    if (!c.use_role && c.access_key_id == NULL) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': auth_method keys needs \"access_key_id\" (the secret access key "
                 "comes from \"auth\")",
                 path, ctok_token_name(tok));
        return 0;
    }
    c.timeout_ms = timeout;
    c.max_retries = (int)retries;
    if ((kt = calloc(1, sizeof(*kt))) == NULL)
        return 0;
    pthread_mutex_init(&kt->lock, NULL);
    kt->tok = tok;
    kt->use_role = c.use_role;
    kt->deletion_days = (int)days;
    SET_KT(tok, kt);
    return (kt->aws = ctok_aws_new(&c)) != NULL;
}

static void cache_clear(struct kms_tok *kt)
{
    while (kt->keys != NULL) {
        struct cached *e = kt->keys;

        kt->keys = e->next;
        ctok_kms_pubkey_clear(&e->k);
        free(e->alias);
        free(e);
    }
    while (kt->aliases != NULL) {
        struct alias_map *m = kt->aliases;

        kt->aliases = m->next;
        free(m->alias);
        free(m);
    }
}

static void aws_close(ctok_token *tok)
{
    struct kms_tok *kt = KT(tok);

    if (kt == NULL)
        return;
    cache_clear(kt);
    ctok_aws_free(kt->aws);
    pthread_mutex_destroy(&kt->lock);
    free(kt);
    SET_KT(tok, NULL);
}

static int aws_open(ctok_token *tok)
{
    (void)tok;
    return 1; /* nothing to read before credentials */
}

static int aws_needs_code(ctok_token *tok)
{
    return !KT(tok)->use_role;
}

/* Keys: the code is the secret access key [+ "\n" + session token]. Role: IMDSv2 now. */
static int aws_login(ctok_token *tok, const char *code, size_t len)
{
    struct kms_tok *kt = KT(tok);

    if (!kt->use_role && code == NULL) {
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s': auth method keys needs the secret access key",
                 ctok_token_name(tok));
        return -1;
    }
    if (!kt->use_role && !ctok_aws_set_secret(kt->aws, code, len))
        return -1;
    return ctok_aws_login(kt->aws) ? 1 : -1;
}

static unsigned int aws_hidden(ctok_token *tok)
{
    (void)tok;
    return CTOK_OBJ_ANY; /* nothing can be listed without credentials */
}

/* ---- the public-key cache ---- */

/* Lock held. */
static struct cached *cache_find(struct kms_tok *kt, const char *key_id)
{
    for (struct cached *e = kt->keys; e != NULL; e = e->next)
        if (strcmp(e->k.key_id, key_id) == 0)
            return e;
    return NULL;
}

/* Lock held. */
static struct alias_map *alias_find(struct kms_tok *kt, const char *alias)
{
    for (struct alias_map *m = kt->aliases; m != NULL; m = m->next)
        if (strcmp(m->alias, alias) == 0)
            return m;
    return NULL;
}

/* Alias points at e's key: remembered for lookups by alias and for naming the key. Lock held. */
static void note_alias(struct kms_tok *kt, struct cached *e, const char *alias)
{
    struct alias_map *m;

    if (e->alias == NULL)
        e->alias = strdup(alias);
    if (alias_find(kt, alias) != NULL || (m = calloc(1, sizeof(*m))) == NULL)
        return;
    if ((m->alias = strdup(alias)) == NULL) {
        free(m);
        return;
    }
    memcpy(m->key_id, e->k.key_id, sizeof(m->key_id));
    m->next = kt->aliases;
    kt->aliases = m;
}

/* A copy of a cached entry for a caller (its own reference to the public key). Lock held. */
static int take(const struct cached *e, struct kms_pubkey *out, char *alias, size_t aliaslen)
{
    *out = e->k;
    if (out->pub != NULL && !EVP_PKEY_up_ref(out->pub))
        return 0;
    if (alias != NULL && e->alias != NULL)
        snprintf(alias, aliaslen, "%s", e->alias);
    return 1;
}

/*
 * The key an alias (alias != NULL) or a key id names, from the cache or one GetPublicKey
 * (error raised naming the key). alias_out (may be NULL) gets the alias known for the key.
 * -1: the call failed; its error is raised and ctok_aws_last_error_type() says why.
 */
static int lookup(struct kms_tok *kt, const char *alias, const char *key_id, struct kms_pubkey *out,
                  char *alias_out, size_t aliaslen)
{
    char object[300];
    struct cached *e, *ne;
    struct alias_map *m;
    struct kms_pubkey k;
    json_t *req, *resp = NULL;
    int ok;

    pthread_mutex_lock(&kt->lock);
    m = alias != NULL ? alias_find(kt, alias) : NULL;
    e = cache_find(kt, m != NULL ? m->key_id : key_id != NULL ? key_id : "");
    ok = e != NULL && take(e, out, alias_out, aliaslen);
    pthread_mutex_unlock(&kt->lock);
    if (e != NULL)
        return ok ? 1 : -1;

    if (alias != NULL)
        snprintf(object, sizeof(object), "alias/%s", alias);
    else
        snprintf(object, sizeof(object), "%s", key_id);
    req = json_pack("{s:s}", "KeyId", object);
    ok = req != NULL && ctok_aws_call(kt->aws, "GetPublicKey", object, req, &resp);
    json_decref(req);
    if (!ok)
        return -1;
    ok = ctok_kms_parse_pubkey(resp, ctok_ctx_libctx(ctok_token_ctx(kt->tok)),
                               ctok_ctx_propq(ctok_token_ctx(kt->tok)), &k);
    json_decref(resp);
    if (!ok) {
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': GetPublicKey answered what ctok cannot read",
                 ctok_token_name(kt->tok), object);
        return -1;
    }
    CTOK_DBG("token '%s': key '%s' is %s (%s, %s)", ctok_token_name(kt->tok), object, k.key_id,
             k.spec, k.usage[0] ? k.usage : "?");

    pthread_mutex_lock(&kt->lock);
    /* another thread may have asked too: the first answer stays */
    if ((e = cache_find(kt, k.key_id)) == NULL && (ne = calloc(1, sizeof(*ne))) != NULL) {
        ne->k = k;
        k.pub = NULL;
        ne->next = kt->keys;
        kt->keys = ne;
        e = ne;
    }
    if (e != NULL && alias != NULL)
        note_alias(kt, e, alias);
    ok = e != NULL && take(e, out, alias_out, aliaslen);
    pthread_mutex_unlock(&kt->lock);
    ctok_kms_pubkey_clear(&k);
    if (ok && alias != NULL && alias_out != NULL)
        snprintf(alias_out, aliaslen, "%s", alias);
    return ok ? 1 : -1;
}

/* A listing saw alias name point at key_id: errors and handles name the key by it. */
static void remember_alias(struct kms_tok *kt, const char *name, const char *key_id)
{
    struct cached *e;

    pthread_mutex_lock(&kt->lock);
    if ((e = cache_find(kt, key_id)) != NULL)
        note_alias(kt, e, name);
    pthread_mutex_unlock(&kt->lock);
}

/* Forgets a key and the aliases that point at it (it was removed). */
static void cache_drop(struct kms_tok *kt, const char *key_id)
{
    struct cached **pe;
    struct alias_map **pm;

    pthread_mutex_lock(&kt->lock);
    for (pe = &kt->keys; *pe != NULL;) {
        struct cached *e = *pe;

        if (strcmp(e->k.key_id, key_id) == 0) {
            *pe = e->next;
            ctok_kms_pubkey_clear(&e->k);
            free(e->alias);
            free(e);
        } else {
            pe = &e->next;
        }
    }
    for (pm = &kt->aliases; *pm != NULL;) {
        struct alias_map *m = *pm;

        if (strcmp(m->key_id, key_id) == 0) {
            *pm = m->next;
            free(m->alias);
            free(m);
        } else {
            pm = &m->next;
        }
    }
    pthread_mutex_unlock(&kt->lock);
}

/* A key the service refuses to describe or use for now: listed as absent, not as an error. */
static int key_unavailable(void)
{
    const char *t = ctok_aws_last_error_type();

    return strcmp(t, "DisabledException") == 0 || strcmp(t, "KMSInvalidStateException") == 0 ||
           strcmp(t, "NotFoundException") == 0 || strcmp(t, "UnsupportedOperationException") == 0;
}

/* ---- objects ---- */

/* Reports a key as its private and public objects, as the types ask. */
static int report(ctok_token *tok, const char *label, const struct kms_pubkey *k,
                  unsigned int types, ctok_object_cb cb, void *arg)
{
    struct ctok_object o = {CTOK_OBJ_PRIVATE,
                            label,
                            (const uint8_t *)k->key_id,
                            strlen(k->key_id),
                            k->type,
                            NULL,
                            k->pub};

    if ((types & CTOK_OBJ_PRIVATE) && !cb(tok, &o, arg))
        return 0;
    o.type = CTOK_OBJ_PUBLIC;
    return !(types & CTOK_OBJ_PUBLIC) || cb(tok, &o, arg);
}

/* Every alias of the account with its key id (ListAliases, paged). */
static int list_aliases(struct kms_tok *kt, struct kms_alias **v, size_t *n)
{
    char *marker = NULL;
    int ok = 1;

    *v = NULL;
    *n = 0;
    do {
        json_t *req = json_pack("{s:i}", "Limit", 100), *resp = NULL;

        if (req != NULL && marker != NULL)
            json_object_set_new(req, "Marker", json_string(marker));
        free(marker);
        marker = NULL;
        ok = req != NULL && ctok_aws_call(kt->aws, "ListAliases", NULL, req, &resp);
        json_decref(req);
        if (ok && !ctok_kms_parse_aliases(resp, v, n, &marker)) {
            CTOK_ERR(CTOK_R_BACKEND, "token '%s': ListAliases answered what ctok cannot read",
                     ctok_token_name(kt->tok));
            ok = 0;
        }
        json_decref(resp);
    } while (ok && marker != NULL);
    free(marker);
    if (!ok) {
        ctok_kms_aliases_free(*v, *n);
        *v = NULL;
        *n = 0;
    }
    return ok;
}

/*
 * The key of an alias for a listing: 1 found, 0 skipped (disabled, pending deletion, not an
 * asymmetric key ctok uses: a debug line says so and no error is left), -1 failed.
 */
static int listed_key(struct kms_tok *kt, const struct kms_alias *a, struct kms_pubkey *k)
{
    int r;

    ctok_err_mark();
    r = lookup(kt, NULL, a->key_id, k, NULL, 0);
    if (r < 0 && key_unavailable()) {
        CTOK_DBG("token '%s': alias '%s' (key %s) skipped: %s", ctok_token_name(kt->tok), a->name,
                 a->key_id, ctok_aws_last_error_type());
        ctok_err_pop_to_mark();
        return 0;
    }
    ctok_err_clear_mark();
    if (r > 0)
        remember_alias(kt, a->name, a->key_id);
    if (r > 0 && k->type == CTOK_KT_NONE) {
        CTOK_DBG("token '%s': alias '%s' (key %s, %s) skipped: not a key ctok signs with",
                 ctok_token_name(kt->tok), a->name, a->key_id, k->spec);
        ctok_kms_pubkey_clear(k);
        return 0;
    }
    return r;
}

static int aws_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg)
{
    struct kms_tok *kt = KT(tok);
    struct kms_alias *v;
    size_t n;
    int ok = 1;

    if (!ctok_token_is_active(tok))
        return 1; /* everything is hidden until login */
    if (!list_aliases(kt, &v, &n))
        return 0;
    for (size_t i = 0; ok && i < n; i++) {
        struct kms_pubkey k;
        int r = listed_key(kt, &v[i], &k);

        if (r < 0)
            ok = 0;
        else if (r > 0)
            ok = report(tok, v[i].name, &k, CTOK_OBJ_PRIVATE | CTOK_OBJ_PUBLIC, cb, arg);
        if (r > 0)
            ctok_kms_pubkey_clear(&k);
    }
    ctok_kms_aliases_free(v, n);
    return ok;
}

/* Targeted lookup: one GetPublicKey (or none, cached), never a listing. */
static int aws_find(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
                    unsigned int types, ctok_object_cb cb, void *arg)
{
    struct kms_tok *kt = KT(tok);
    char key_id[KMS_KEY_ID_MAX], alias[256] = "";
    struct kms_pubkey k;
    int r;

    if (!ctok_token_is_active(tok) || (types & (CTOK_OBJ_PRIVATE | CTOK_OBJ_PUBLIC)) == 0)
        return 1;
    if (label == NULL && id == NULL)
        return aws_enumerate(tok, cb, arg);
    if (id != NULL) {
        /* an id that cannot be a key id names nothing here */
        if (id_len == 0 || id_len >= sizeof(key_id))
            return 1;
        memcpy(key_id, id, id_len);
        key_id[id_len] = '\0';
        if (memchr(id, '\0', id_len) != NULL || !ctok_kms_key_id(key_id, key_id))
            return 1;
    }
    ctok_err_mark();
    r = lookup(kt, label, id != NULL ? key_id : NULL, &k, alias, sizeof(alias));
    if (r < 0 && strcmp(ctok_aws_last_error_type(), "NotFoundException") == 0) {
        /* nothing by that name: the token layer says so */
        ctok_err_pop_to_mark();
        return 1;
    }
    ctok_err_clear_mark();
    if (r < 0)
        return 0; /* disabled, pending deletion, denied...: that error is the answer */
    if (k.type == CTOK_KT_NONE) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s' is a %s key: ctok uses RSA and ECC "
                 "NIST keys (RSA_2048/3072/4096, ECC_NIST_P256/P384/P521)",
                 ctok_token_name(tok), label != NULL ? label : key_id, k.spec);
        ctok_kms_pubkey_clear(&k);
        return 0;
    }
    r = 1;
    if (id == NULL || strcmp(k.key_id, key_id) == 0)
        r = report(tok, label != NULL ? label : alias[0] ? alias : k.key_id, &k, types, cb, arg);
    ctok_kms_pubkey_clear(&k);
    return r;
}

static int aws_key_load(ctok_token *tok, ctok_key *key)
{
    struct kms_tok *kt = KT(tok);
    char key_id[KMS_KEY_ID_MAX], alias[256] = "";
    struct kms_pubkey k;
    struct kms_keyh *h;

    if (key->id_len == 0 || key->id_len >= sizeof(key_id) ||
        memchr(key->id, '\0', key->id_len) != NULL)
        goto bad;
    memcpy(key_id, key->id, key->id_len);
    key_id[key->id_len] = '\0';
    if (!ctok_kms_key_id(key_id, key_id))
        goto bad;
    if (lookup(kt, NULL, key_id, &k, alias, sizeof(alias)) < 0)
        return 0;
    if (k.type == CTOK_KT_NONE || (h = calloc(1, sizeof(*h))) == NULL) {
        if (k.type == CTOK_KT_NONE)
            CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': key '%s' is a %s key, not one ctok uses",
                     ctok_token_name(tok), key_id, k.spec);
        ctok_kms_pubkey_clear(&k);
        return 0;
    }
    memcpy(h->key_id, k.key_id, sizeof(h->key_id));
    if (alias[0] != '\0')
        snprintf(h->object, sizeof(h->object), "alias/%s", alias);
    else
        snprintf(h->object, sizeof(h->object), "%s", k.key_id);
    memcpy(h->spec, k.spec, sizeof(h->spec));
    memcpy(h->usage, k.usage, sizeof(h->usage));
    h->algs = k.algs;
    key->type = k.type;
    key->pub = k.pub; /* the reference lookup took */
    key->be_data = h;
    key->label = strdup(alias[0] != '\0' ? alias : k.key_id);
    return key->label != NULL;
bad:
    CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': an AWS KMS key id is its UUID text; this id is not one",
             ctok_token_name(tok));
    return 0;
}

static void aws_key_free(ctok_key *key)
{
    free(key->be_data);
    key->be_data = NULL;
}

/* ---- signing and decryption ---- */

/* The KMS algorithm for a digest: 256, 384, 512 pick the first, second, third bit. */
static unsigned int by_digest(const EVP_MD *md, unsigned int sha256_bit)
{
    switch (md != NULL ? EVP_MD_get_type(md) : 0) {
    case NID_sha256:
        return sha256_bit;
    case NID_sha384:
        return sha256_bit << 1;
    case NID_sha512:
        return sha256_bit << 2;
    }
    return 0;
}

/* The hash an ECDSA key must sign with in KMS: its curve's. */
static const EVP_MD *curve_md(const char *spec)
{
    return strcmp(spec, "ECC_NIST_P256") == 0   ? EVP_sha256()
           : strcmp(spec, "ECC_NIST_P384") == 0 ? EVP_sha384()
           : strcmp(spec, "ECC_NIST_P521") == 0 ? EVP_sha512()
                                                : NULL;
}

/* The SigningAlgorithm for a request, or 0 with CTOK_R_UNSUPPORTED raised. */
static unsigned int sign_alg(ctok_key *key, const struct kms_keyh *h,
                             const struct ctok_sig_params *p, size_t tbslen)
{
    int pss;
    const EVP_MD *md =
        ctok_kms_sign_md("AWS KMS", key, h->object, curve_md(h->spec), h->spec, p, tbslen, &pss);

    return md == NULL                ? 0
           : key->type == CTOK_KT_EC ? by_digest(md, KMS_ECDSA_SHA_256)
           : pss                     ? by_digest(md, KMS_RSA_PSS_SHA_256)
                                     : by_digest(md, KMS_RSA_PKCS1_SHA_256);
}

/* One KMS call with a base64 input field, answered by a base64 output field into out. */
static int blob_call(ctok_key *key, const char *op, json_t *req, const char *in_field,
                     const uint8_t *in, size_t inlen, const char *out_field, uint8_t *out,
                     size_t *outlen)
{
    const struct kms_keyh *h = key->be_data;
    struct kms_tok *kt = KT(key->tok);
    size_t b64len = 4 * ((inlen + 2) / 3) + 1;
    char *b64 = OPENSSL_malloc(b64len);
    json_t *resp = NULL;
    int ok = 0;

    if (req == NULL || b64 == NULL)
        goto end;
    EVP_EncodeBlock((unsigned char *)b64, in, (int)inlen);
    if (json_object_set_new(req, "KeyId", json_string(h->key_id)) != 0 ||
        json_object_set_new(req, in_field, json_string(b64)) != 0 ||
        !ctok_aws_call(kt->aws, op, h->object, req, &resp))
        goto end;
    ok = ctok_kms_parse_blob(resp, out_field, out, outlen);
    if (!ok)
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': %s answered what ctok cannot read (or "
                 "more than the %zu bytes expected)",
                 ctok_token_name(key->tok), h->object, op, *outlen);
end:
    if (resp != NULL) {
        /* a Decrypt answer is a secret: its text does not outlive the call in our heap */
        char *v = (char *)json_string_value(json_object_get(resp, out_field));

        if (v != NULL)
            OPENSSL_cleanse(v, strlen(v));
    }
    json_decref(resp);
    json_decref(req);
    OPENSSL_clear_free(b64, b64len);
    return ok;
}

static int aws_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                    size_t tbslen, uint8_t *sig, size_t *siglen)
{
    const struct kms_keyh *h = key->be_data;
    unsigned int alg = sign_alg(key, h, p, tbslen);

    if (alg == 0)
        return 0;
    if ((h->algs & alg) == 0 && h->algs != 0) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': key '%s' (%s, %s) does not offer %s",
                 ctok_token_name(key->tok), h->object, h->spec, h->usage, ctok_kms_alg_name(alg));
        return 0;
    }
    return blob_call(key, "Sign",
                     json_pack("{s:s, s:s}", "MessageType", "DIGEST", "SigningAlgorithm",
                               ctok_kms_alg_name(alg)),
                     "Message", tbs, tbslen, "Signature", sig, siglen);
}

static int aws_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                       size_t inlen, uint8_t *out, size_t *outlen)
{
    const struct kms_keyh *h = key->be_data;
    const EVP_MD *md = p->oaep_md != NULL ? p->oaep_md : EVP_sha1();
    const EVP_MD *mgf1 = p->mgf1 != NULL ? p->mgf1 : md;
    int nid = EVP_MD_get_type(md);
    unsigned int alg = nid == NID_sha1 ? KMS_OAEP_SHA_1 : nid == NID_sha256 ? KMS_OAEP_SHA_256 : 0;

    if (p->pad != RSA_PKCS1_OAEP_PADDING || alg == 0 || EVP_MD_get_type(mgf1) != nid ||
        p->label_len != 0) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s': AWS KMS decrypts only RSA-OAEP with SHA-1 or SHA-256 "
                 "(MGF1 the same, no label)",
                 ctok_token_name(key->tok), h->object);
        return 0;
    }
    if ((h->algs & alg) == 0) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': key '%s' (%s, %s) does not offer %s",
                 ctok_token_name(key->tok), h->object, h->spec, h->usage, ctok_kms_alg_name(alg));
        return 0;
    }
    return blob_call(key, "Decrypt",
                     json_pack("{s:s}", "EncryptionAlgorithm", ctok_kms_alg_name(alg)),
                     "CiphertextBlob", in, inlen, "Plaintext", out, outlen);
}

/* ---- key management ---- */

static const char *key_spec(const struct ctok_keyspec *s)
{
    if (s->type == CTOK_KT_RSA)
        return s->bits == 2048   ? "RSA_2048"
               : s->bits == 3072 ? "RSA_3072"
               : s->bits == 4096 ? "RSA_4096"
                                 : NULL;
    if (s->type == CTOK_KT_EC && s->group != NULL) {
        if (strcmp(s->group, "P-256") == 0 || strcmp(s->group, "prime256v1") == 0 ||
            strcmp(s->group, "secp256r1") == 0)
            return "ECC_NIST_P256";
        if (strcmp(s->group, "P-384") == 0 || strcmp(s->group, "secp384r1") == 0)
            return "ECC_NIST_P384";
        if (strcmp(s->group, "P-521") == 0 || strcmp(s->group, "secp521r1") == 0)
            return "ECC_NIST_P521";
    }
    return NULL;
}

/* ScheduleKeyDeletion: 1 and note filled, or 0 with the error raised. */
static int schedule_deletion(struct kms_tok *kt, const char *key_id, const char *object, int days,
                             char *note, size_t notelen)
{
    json_t *req = json_pack("{s:s, s:i}", "KeyId", key_id, "PendingWindowInDays", days);
    json_t *resp = NULL;
    char date[11];
    int ok = req != NULL && ctok_aws_call(kt->aws, "ScheduleKeyDeletion", object, req, &resp);
    int got;

    json_decref(req);
    if (ok && !ctok_kms_parse_deletion(resp, date, &got)) {
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': ScheduleKeyDeletion answered what ctok cannot read",
                 ctok_token_name(kt->tok), object);
        ok = 0;
    }
    json_decref(resp);
    if (ok)
        snprintf(note, notelen,
                 "deletion scheduled for %s (%d-day waiting period; AWS CancelKeyDeletion undoes "
                 "it)",
                 date, got > 0 ? got : days);
    return ok;
}

static int aws_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec)
{
    struct kms_tok *kt = KT(tok);
    const char *ks = key_spec(spec), *why;
    char object[300], key_id[KMS_KEY_ID_MAX], desc[300], note[200];
    struct kms_pubkey k;
    json_t *req, *resp = NULL;
    int r;

    if (ks == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s': AWS KMS keys are rsa:2048, rsa:3072, rsa:4096, ec:P-256, "
                 "ec:P-384 or ec:P-521",
                 ctok_token_name(tok), alias);
        return 0;
    }
    /* an alias that exists is refused before a key is made: NotFound is the good answer */
    ctok_err_mark();
    r = lookup(kt, alias, NULL, &k, NULL, 0);
    if (r > 0) {
        ctok_err_clear_mark();
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': alias '%s' exists already (key %s)",
                 ctok_token_name(tok), alias, k.key_id);
        ctok_kms_pubkey_clear(&k);
        return 0;
    }
    if (strcmp(ctok_aws_last_error_type(), "NotFoundException") != 0) {
        ctok_err_clear_mark();
        return 0;
    }
    ctok_err_pop_to_mark();

    snprintf(object, sizeof(object), "alias/%s", alias);
    snprintf(desc, sizeof(desc), "ctok: %s", alias);
    req =
        json_pack("{s:s, s:s, s:s}", "KeySpec", ks, "KeyUsage", "SIGN_VERIFY", "Description", desc);
    r = req != NULL && ctok_aws_call(kt->aws, "CreateKey", object, req, &resp);
    json_decref(req);
    if (r && !ctok_kms_parse_create_key(resp, key_id)) {
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': key '%s': CreateKey answered what ctok cannot read",
                 ctok_token_name(tok), object);
        r = 0;
    }
    json_decref(resp);
    resp = NULL;
    if (!r)
        return 0;
    CTOK_DBG("token '%s': created key %s (%s) for '%s'", ctok_token_name(tok), key_id, ks, object);

    req = json_pack("{s:s, s:s}", "AliasName", object, "TargetKeyId", key_id);
    ctok_err_mark();
    r = req != NULL && ctok_aws_call(kt->aws, "CreateAlias", object, req, &resp);
    json_decref(req);
    json_decref(resp);
    if (r) {
        ctok_err_clear_mark();
        return 1;
    }
    /* the key has no name: do not leave it behind, and say what became of it */
    why = ctok_aws_last_error_type();
    snprintf(desc, sizeof(desc), "%s", why[0] ? why : "no answer");
    ctok_err_pop_to_mark();
    if (schedule_deletion(kt, key_id, key_id, ORPHAN_DELETION_DAYS, note, sizeof(note)))
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': CreateAlias failed (%s); the key just created (%s) has "
                 "no alias and its %s",
                 ctok_token_name(tok), object, desc, key_id, note);
    else
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': CreateAlias failed (%s) and the key just created (%s) "
                 "could not be scheduled for deletion: delete it in AWS",
                 ctok_token_name(tok), object, desc, key_id);
    return 0;
}

static int aws_remove(ctok_token *tok, const char *alias, char *note, size_t notelen)
{
    struct kms_tok *kt = KT(tok);
    char object[300];
    struct kms_pubkey k;

    if (lookup(kt, alias, NULL, &k, NULL, 0) < 0)
        return 0;
    snprintf(object, sizeof(object), "alias/%s", alias);
    if (!schedule_deletion(kt, k.key_id, object, kt->deletion_days, note, notelen)) {
        ctok_kms_pubkey_clear(&k);
        return 0;
    }
    cache_drop(kt, k.key_id);
    ctok_kms_pubkey_clear(&k);
    return 1;
}

/* The tool's discovery: every alias with its key id, KeySpec and KeyUsage (or why not). */
static json_t *aws_discover(ctok_token *tok)
{
    struct kms_tok *kt = KT(tok);
    struct kms_alias *v;
    size_t n;
    json_t *out;

    if (!list_aliases(kt, &v, &n) || (out = json_array()) == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        struct kms_pubkey k;
        json_t *e = json_pack("{s:s, s:s}", "alias", v[i].name, "key_id", v[i].key_id);
        int r;

        ctok_err_mark();
        r = lookup(kt, NULL, v[i].key_id, &k, NULL, 0);
        if (r > 0) {
            json_object_set_new(e, "key_spec", json_string(k.spec));
            json_object_set_new(e, "key_usage", json_string(k.usage));
            ctok_kms_pubkey_clear(&k);
        } else {
            json_object_set_new(e, "unavailable", json_string(ctok_aws_last_error_type()));
        }
        ctok_err_pop_to_mark();
        json_array_append_new(out, e);
    }
    ctok_kms_aliases_free(v, n);
    return out;
}

/* `ctok token create`: credentials that work, proven with the smallest listing. */
static int aws_create(ctok_token *tok, const char *code, size_t len)
{
    struct kms_tok *kt = KT(tok);
    json_t *req, *resp = NULL;
    int ok;

    if (ctok_token_login_with(tok, code, len) <= 0)
        return 0;
    req = json_pack("{s:i}", "Limit", 1);
    ok = req != NULL && ctok_aws_call(kt->aws, "ListAliases", NULL, req, &resp);
    json_decref(req);
    json_decref(resp);
    return ok;
}

static const struct ctok_tool_field aws_tool_fields[] = {
    {"region", "region", CTOK_FIELD_STRING, 1, "the AWS region (eu-west-1)", NULL},
    {"auth-method", "auth_method", CTOK_FIELD_STRING, 0,
     "keys (access key id + secret access key from the auth source) or role (EC2 instance role)",
     "keys"},
    {"access-key-id", "access_key_id", CTOK_FIELD_STRING, 0, "the access key id (auth method keys)",
     NULL},
    {"endpoint", "endpoint", CTOK_FIELD_STRING, 0,
     "the KMS endpoint URL, https:// (FIPS or VPC endpoints)", NULL},
    {"imds-endpoint", "imds_endpoint", CTOK_FIELD_STRING, 0,
     "the instance metadata service URL (auth method role)", NULL},
    {"ca-file", "ca_file", CTOK_FIELD_PATH, 0, "CA certificates for the endpoint's TLS", NULL},
    {"timeout-ms", "timeout_ms", CTOK_FIELD_INT, 0, "time-out of one attempt (100..600000)", NULL},
    {"max-retries", "max_retries", CTOK_FIELD_INT, 0,
     "retries of throttled or failed calls (0..10)", NULL},
    {"deletion-window-days", "deletion_window_days", CTOK_FIELD_INT, 0,
     "waiting period of a removed key's deletion (7..30, default 30)", NULL},
    {"certificates", "certificates", CTOK_FIELD_PATHS, 0,
     "certificate files or folders, bound to the keys they certify (repeatable)", NULL},
    {0},
};

const struct ctok_backend ctok_awskms_backend = {
    .type = "awskms",
    .tool_fields = aws_tool_fields,
    .needs_code = aws_needs_code,
    .find = aws_find,
    .create = aws_create,
    .discover = aws_discover,
    .configure = aws_configure,
    .open = aws_open,
    .login = aws_login,
    .enumerate = aws_enumerate,
    .hidden = aws_hidden,
    .key_load = aws_key_load,
    .key_free = aws_key_free,
    .sign = aws_sign,
    .decrypt = aws_decrypt,
    .generate = aws_generate,
    .remove = aws_remove,
    .close = aws_close,
};

/*
 * The awskms token type: one token is one AWS account and region, its objects are the
 * aliases that point at asymmetric keys (label = alias without "alias/", id = key id text).
 * Only the operations of the seed's access policy are used: ListAliases, GetPublicKey (once
 * per key per process: a per-token cache), Sign, CreateKey + CreateAlias, ScheduleKeyDeletion,
 * and Decrypt when granted. HTTP, SigV4, credentials and retries are ctok_aws_call's
 * (kms/awscall.c); the responses are read by the pure parsers of aws_parse.c. This file:
 * configuration, login, the public-key cache, listing, lookup, key handles and the table;
 * kms/aws_keyops.c: signing, decryption, key management, discovery (kms/awskms.h).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>

#include "awskms.h"
#include "conf.h"

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_RETRIES 3

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
int ctok_awskms_lookup(struct kms_tok *kt, const char *alias, const char *key_id,
                       struct kms_pubkey *out, char *alias_out, size_t aliaslen)
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
void ctok_awskms_cache_drop(struct kms_tok *kt, const char *key_id)
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
int ctok_awskms_list_aliases(struct kms_tok *kt, struct kms_alias **v, size_t *n)
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
    r = ctok_awskms_lookup(kt, NULL, a->key_id, k, NULL, 0);
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
    if (!ctok_awskms_list_aliases(kt, &v, &n))
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
    r = ctok_awskms_lookup(kt, label, id != NULL ? key_id : NULL, &k, alias, sizeof(alias));
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
    if (ctok_awskms_lookup(kt, NULL, key_id, &k, alias, sizeof(alias)) < 0)
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
    /* KeyUsage: what the key does; a key that does not say is left to the service */
    key->usage = strcmp(k.usage, "SIGN_VERIFY") == 0       ? CTOK_USE_SIGN
                 : strcmp(k.usage, "ENCRYPT_DECRYPT") == 0 ? CTOK_USE_DECRYPT
                 : strcmp(k.usage, "KEY_AGREEMENT") == 0   ? CTOK_USE_DERIVE
                                                           : CTOK_USE_ALL;
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

/* What AWS KMS holds (KeySpec): RSA_2048..4096 signing or decrypting with RSA-OAEP only;
 * ECC_NIST_P256..P521 signing with their curve's hash (kms/sigcheck.h). */
static const struct ctok_key_kind aws_kinds[] = {
    {CTOK_KT_RSA, 2048, 4096, CTOK_USE_SIGN | CTOK_USE_DECRYPT, 1u << RSA_PKCS1_OAEP_PADDING, 0},
    {CTOK_KT_EC, 256, 521, CTOK_USE_SIGN, 0, CTOK_KIND_CURVE_HASH},
    {CTOK_KT_NONE, 0, 0, 0, 0, 0},
};

const struct ctok_backend ctok_awskms_backend = {
    .type = "awskms",
    .tool_fields = aws_tool_fields,
    .needs_code = aws_needs_code,
    .find = aws_find,
    .create = aws_create,
    .discover = ctok_awskms_discover,
    .key_kinds = aws_kinds,
    .configure = aws_configure,
    .open = aws_open,
    .login = aws_login,
    .enumerate = aws_enumerate,
    .hidden = aws_hidden,
    .key_load = aws_key_load,
    .key_free = aws_key_free,
    .sign = ctok_awskms_sign,
    .decrypt = ctok_awskms_decrypt,
    .generate = ctok_awskms_generate,
    .remove = ctok_awskms_remove,
    .close = aws_close,
};

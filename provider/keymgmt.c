/*
 * keymgmt for RSA, RSA-PSS, EC and Ed25519. libssl and X.509 accept only the standard
 * key type names, so ctok registers them; generation and import of ordinary keys can
 * therefore land here, and are passed through to the application's other providers in
 * a child library context. A token key holds only its public key outside the token.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "prov.h"

static OSSL_FUNC_keymgmt_free_fn km_free;
static OSSL_FUNC_keymgmt_load_fn km_load;
static OSSL_FUNC_keymgmt_has_fn km_has;
static OSSL_FUNC_keymgmt_validate_fn km_validate;
static OSSL_FUNC_keymgmt_match_fn km_match;
static OSSL_FUNC_keymgmt_import_fn km_import;
static OSSL_FUNC_keymgmt_export_fn km_export;
static OSSL_FUNC_keymgmt_get_params_fn km_get_params;
static OSSL_FUNC_keymgmt_set_params_fn km_set_params;
static OSSL_FUNC_keymgmt_dup_fn km_dup;
static OSSL_FUNC_keymgmt_gen_set_template_fn km_gen_set_template;
static OSSL_FUNC_keymgmt_gen_set_params_fn km_gen_set_params;
static OSSL_FUNC_keymgmt_gen_fn km_gen;
static OSSL_FUNC_keymgmt_gen_cleanup_fn km_gen_cleanup;

/* ---- key objects ---- */

/* Which parts an ordinary key carries; probed once, when the key changes. */
static int probe_has(const EVP_PKEY *pkey, enum ctok_key_type t)
{
    int has = OSSL_KEYMGMT_SELECT_ALL_PARAMETERS;
    BIGNUM *bn = NULL;
    size_t len = 0;

    if (pkey == NULL)
        return 0;
    ERR_set_mark();
    if (t == CTOK_KT_RSA || t == CTOK_KT_RSA_PSS) {
        if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &bn))
            has |= OSSL_KEYMGMT_SELECT_PUBLIC_KEY;
        BN_free(bn);
        bn = NULL;
        if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &bn))
            has |= OSSL_KEYMGMT_SELECT_PRIVATE_KEY;
        BN_clear_free(bn);
    } else {
        if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, NULL, 0, &len) &&
            len > 0)
            has |= OSSL_KEYMGMT_SELECT_PUBLIC_KEY;
        if (t == CTOK_KT_EC) {
            if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &bn))
                has |= OSSL_KEYMGMT_SELECT_PRIVATE_KEY;
            BN_clear_free(bn);
        } else if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, NULL, 0, &len) &&
                   len > 0) {
            has |= OSSL_KEYMGMT_SELECT_PRIVATE_KEY;
        }
    }
    ERR_pop_to_mark();
    return has;
}

struct ctok_pkey *ctok_pkey_new(struct ctok_provctx *pctx, enum ctok_key_type t)
{
    struct ctok_pkey *k = calloc(1, sizeof(*k));

    if (k != NULL) {
        k->pctx = pctx;
        k->type = t;
    }
    return k;
}

/*
 * EJBCA's "explicit ECC parameters" (ICAO CSCA and DS certificates): the public key the
 * token's keys show to encoders (CSRs, certificates) carries the curve's parameters, not
 * its name.
 */
static EVP_PKEY *public_for(ctok_key *key)
{
    EVP_PKEY *pub = ctok_key_pub(key), *dup;

    if (ctok_key_type(key) != CTOK_KT_EC || !ctok_token_explicit_ecc(ctok_key_token(key)))
        return EVP_PKEY_up_ref(pub) ? pub : NULL;
    dup = EVP_PKEY_dup(pub);
    if (dup != NULL && !EVP_PKEY_set_utf8_string_param(dup, OSSL_PKEY_PARAM_EC_ENCODING,
                                                       OSSL_PKEY_EC_ENCODING_EXPLICIT)) {
        EVP_PKEY_free(dup);
        dup = NULL;
    }
    return dup;
}

struct ctok_pkey *ctok_pkey_from_token(struct ctok_provctx *pctx, ctok_key *key)
{
    struct ctok_pkey *k = ctok_pkey_new(pctx, ctok_key_type(key));
    EVP_PKEY *pub = k != NULL ? public_for(key) : NULL;

    if (pub == NULL) {
        free(k);
        return NULL;
    }
    k->pkey = pub;
    k->tok = ctok_key_ref(key);
    k->has = OSSL_KEYMGMT_SELECT_ALL;
    return k;
}

struct ctok_pkey *ctok_pkey_copy(const struct ctok_pkey *src)
{
    struct ctok_pkey *k = ctok_pkey_new(src->pctx, src->type);

    if (k == NULL)
        return NULL;
    if (src->pkey != NULL && !EVP_PKEY_up_ref(src->pkey)) {
        free(k);
        return NULL;
    }
    k->pkey = src->pkey;
    k->tok = src->tok != NULL ? ctok_key_ref(src->tok) : NULL;
    k->has = src->has;
    return k;
}

void ctok_pkey_free(struct ctok_pkey *k)
{
    if (k == NULL)
        return;
    EVP_PKEY_free(k->pkey);
    ctok_key_unref(k->tok);
    free(k);
}

size_t ctok_pkey_max_size(const struct ctok_pkey *k)
{
    int n = k->pkey != NULL ? EVP_PKEY_get_size(k->pkey) : 0;

    return n > 0 ? (size_t)n : 0;
}

static void km_free(void *vk)
{
    ctok_pkey_free(vk);
}

/* The STORE loader hands over a pointer to its key object; take our own reference. */
static void *km_load(const void *reference, size_t reference_sz)
{
    const struct ctok_pkey *src;

    if (reference == NULL || reference_sz != sizeof(src))
        return NULL;
    memcpy(&src, reference, sizeof(src));
    return ctok_pkey_copy(src);
}

static int km_has(const void *vk, int selection)
{
    const struct ctok_pkey *k = vk;

    if (k == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0)
        return 1;
    return (selection & OSSL_KEYMGMT_SELECT_KEYPAIR & ~k->has) == 0;
}

static int km_match(const void *va, const void *vb, int selection)
{
    const struct ctok_pkey *a = va, *b = vb;

    if (a->pkey == NULL || b->pkey == NULL)
        return 0;
    if (a->tok != NULL && a->tok == b->tok)
        return 1;
    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0)
        return EVP_PKEY_parameters_eq(a->pkey, b->pkey) == 1;
    /* token keys compare by public key: the private half never leaves the token */
    return EVP_PKEY_eq(a->pkey, b->pkey) == 1;
}

static int km_validate(const void *vk, int selection, int checktype)
{
    const struct ctok_pkey *k = vk;
    EVP_PKEY_CTX *c;
    int r;

    (void)checktype;
    if (k->pkey == NULL)
        return 0;
    c = EVP_PKEY_CTX_new_from_pkey(ctok_prov_child(k->pctx), k->pkey, k->pctx->propq);
    if (c == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && k->tok == NULL)
        r = (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) ? EVP_PKEY_check(c)
                                                         : EVP_PKEY_private_check(c);
    else if (selection & OSSL_KEYMGMT_SELECT_KEYPAIR)
        r = EVP_PKEY_public_check(c);
    else
        r = EVP_PKEY_param_check(c);
    EVP_PKEY_CTX_free(c);
    return r == 1 || r == -2; /* -2: nothing to check for this key type */
}

/* An ordinary key from parameters, in the child context. */
static EVP_PKEY *fromdata(struct ctok_provctx *pctx, enum ctok_key_type t, int selection,
                          const OSSL_PARAM params[])
{
    EVP_PKEY_CTX *c =
        EVP_PKEY_CTX_new_from_name(ctok_prov_child(pctx), ctok_key_type_name(t), pctx->propq);
    EVP_PKEY *pkey = NULL;

    if (c == NULL || EVP_PKEY_fromdata_init(c) <= 0 ||
        EVP_PKEY_fromdata(c, &pkey, selection, (OSSL_PARAM *)params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(c);
    return pkey;
}

static int km_import(void *vk, int selection, const OSSL_PARAM params[])
{
    struct ctok_pkey *k = vk;
    EVP_PKEY *pkey;

    if (k->tok != NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0)
        selection |= OSSL_KEYMGMT_SELECT_ALL_PARAMETERS;
    pkey = fromdata(k->pctx, k->type, selection, params);
    if (pkey == NULL)
        return 0;
    EVP_PKEY_free(k->pkey);
    k->pkey = pkey;
    k->has = probe_has(pkey, k->type);
    return 1;
}

static int km_export(void *vk, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    struct ctok_pkey *k = vk;
    EVP_PKEY *priv;
    int ok;

    if (k->pkey == NULL)
        return 0;
    if (k->tok == NULL || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) == 0)
        return EVP_PKEY_export(k->pkey, selection, cb, cbarg);
    /* a private key leaves a token only when the token allows export */
    priv = ctok_key_export_private(k->tok);
    if (priv == NULL)
        return 0;
    ok = EVP_PKEY_export(priv, selection, cb, cbarg);
    EVP_PKEY_free(priv);
    return ok;
}

static int km_get_params(void *vk, OSSL_PARAM params[])
{
    struct ctok_pkey *k = vk;

    if (k->pkey == NULL)
        return 0;
    /* a token key's pkey is public-only: nothing private can be read through it */
    return EVP_PKEY_get_params(k->pkey, params);
}

static int km_set_params(void *vk, const OSSL_PARAM params[])
{
    struct ctok_pkey *k = vk;

    if (params == NULL || params[0].key == NULL)
        return 1;
    if (k->tok != NULL || k->pkey == NULL) {
        if (k->tok != NULL)
            CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s', key '%s': token keys cannot be modified",
                     ctok_token_name(ctok_key_token(k->tok)), ctok_key_label(k->tok));
        return 0;
    }
    if (!EVP_PKEY_set_params(k->pkey, (OSSL_PARAM *)params))
        return 0;
    k->has = probe_has(k->pkey, k->type);
    return 1;
}

static void *km_dup(const void *vk, int selection)
{
    const struct ctok_pkey *src = vk;
    struct ctok_pkey *k;
    OSSL_PARAM *params = NULL;

    if (src->pkey == NULL || (selection & OSSL_KEYMGMT_SELECT_KEYPAIR))
        return ctok_pkey_copy(src); /* pkeys are never modified in place but by set_params */
    /*
     * Parameters only (EVP_PKEY_copy_parameters, e.g. the peer key of CMS ECDH): a new
     * ordinary key without key material, even when copied from a token key.
     */
    k = ctok_pkey_new(src->pctx, src->type);
    if (k == NULL)
        return NULL;
    if (EVP_PKEY_todata(src->pkey, selection, &params))
        k->pkey = fromdata(src->pctx, src->type, selection, params);
    OSSL_PARAM_free(params);
    if (k->pkey == NULL) {
        ctok_pkey_free(k);
        return NULL;
    }
    k->has = probe_has(k->pkey, k->type);
    return k;
}

/* ---- generation: always of ordinary keys, passed through ---- */

struct genctx {
    struct ctok_provctx *pctx;
    enum ctok_key_type type;
    int selection;
    OSSL_PARAM *params; /* accumulated by gen_set_params, applied at gen time */
    EVP_PKEY *template;
};

static void *gen_init(void *provctx, enum ctok_key_type t, int selection, const OSSL_PARAM params[])
{
    struct genctx *g = calloc(1, sizeof(*g));

    if (g == NULL)
        return NULL;
    g->pctx = provctx;
    g->type = t;
    g->selection = selection;
    if (!km_gen_set_params(g, params)) {
        km_gen_cleanup(g);
        return NULL;
    }
    return g;
}

static int km_gen_set_template(void *vg, void *vtempl)
{
    struct genctx *g = vg;
    struct ctok_pkey *t = vtempl;

    if (t == NULL || t->pkey == NULL || !EVP_PKEY_up_ref(t->pkey))
        return 0;
    EVP_PKEY_free(g->template);
    g->template = t->pkey;
    return 1;
}

static int km_gen_set_params(void *vg, const OSSL_PARAM params[])
{
    struct genctx *g = vg;
    OSSL_PARAM *merged, *deep;

    if (params == NULL || params[0].key == NULL)
        return 1;
    /* merge keeps the newer value of a key but copies no data: take a deep copy */
    merged = OSSL_PARAM_merge(g->params, params);
    deep = merged != NULL ? OSSL_PARAM_dup(merged) : NULL;
    OPENSSL_free(merged);
    if (deep == NULL)
        return 0;
    OSSL_PARAM_free(g->params);
    g->params = deep;
    return 1;
}

struct gen_cb {
    OSSL_CALLBACK *cb;
    void *arg;
};

/* Progress of the inner generation, reported to the application as it would see it. */
static int gen_progress(EVP_PKEY_CTX *c)
{
    struct gen_cb *g = EVP_PKEY_CTX_get_app_data(c);
    int potential = EVP_PKEY_CTX_get_keygen_info(c, 0);
    int iteration = EVP_PKEY_CTX_get_keygen_info(c, 1);
    OSSL_PARAM p[] = {OSSL_PARAM_int(OSSL_GEN_PARAM_POTENTIAL, &potential),
                      OSSL_PARAM_int(OSSL_GEN_PARAM_ITERATION, &iteration), OSSL_PARAM_END};

    return g->cb(p, g->arg);
}

static void *km_gen(void *vg, OSSL_CALLBACK *cb, void *cbarg)
{
    struct gen_cb progress = {cb, cbarg};
    struct genctx *g = vg;
    struct ctok_provctx *pctx = g->pctx;
    EVP_PKEY_CTX *c;
    EVP_PKEY *pkey = NULL;
    struct ctok_pkey *k = NULL;
    int keypair = (g->selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;

    c = g->template != NULL
            ? EVP_PKEY_CTX_new_from_pkey(ctok_prov_child(pctx), g->template, pctx->propq)
            : EVP_PKEY_CTX_new_from_name(ctok_prov_child(pctx), ctok_key_type_name(g->type),
                                         pctx->propq);
    CTOK_DBG("keymgmt: pass-through %s of %s", keypair ? "keygen" : "paramgen",
             ctok_key_type_name(g->type));
    if (c != NULL && cb != NULL) {
        EVP_PKEY_CTX_set_app_data(c, &progress);
        EVP_PKEY_CTX_set_cb(c, gen_progress);
    }
    if (c == NULL || (keypair ? EVP_PKEY_keygen_init(c) : EVP_PKEY_paramgen_init(c)) <= 0 ||
        (g->params != NULL && !EVP_PKEY_CTX_set_params(c, g->params)) ||
        EVP_PKEY_generate(c, &pkey) <= 0)
        goto end;
    k = ctok_pkey_new(pctx, g->type);
    if (k == NULL)
        goto end;
    k->pkey = pkey;
    pkey = NULL;
    k->has = probe_has(k->pkey, k->type);
end:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(c);
    return k;
}

static void km_gen_cleanup(void *vg)
{
    struct genctx *g = vg;

    if (g == NULL)
        return;
    OSSL_PARAM_free(g->params);
    EVP_PKEY_free(g->template);
    free(g);
}

/* ---- per key type: the parts that differ ---- */

static const OSSL_PARAM *types_or_empty(const OSSL_PARAM *p)
{
    static const OSSL_PARAM empty[] = {OSSL_PARAM_END};

    return p != NULL ? p : empty;
}

#define KEYMGMT_TYPE(fam, T, SIGNAME, CIPHERNAME, KEXNAME)                                         \
    static void *fam##_new(void *provctx)                                                          \
    {                                                                                              \
        return ctok_pkey_new(provctx, T);                                                          \
    }                                                                                              \
    static void *fam##_gen_init(void *provctx, int selection, const OSSL_PARAM params[])           \
    {                                                                                              \
        return gen_init(provctx, T, selection, params);                                            \
    }                                                                                              \
    static const OSSL_PARAM *fam##_gettable(void *provctx)                                         \
    {                                                                                              \
        return types_or_empty(EVP_KEYMGMT_gettable_params(ctok_prov_keymgmt(provctx, T)));         \
    }                                                                                              \
    static const OSSL_PARAM *fam##_settable(void *provctx)                                         \
    {                                                                                              \
        return types_or_empty(EVP_KEYMGMT_settable_params(ctok_prov_keymgmt(provctx, T)));         \
    }                                                                                              \
    static const OSSL_PARAM *fam##_gen_settable(void *genctx, void *provctx)                       \
    {                                                                                              \
        (void)genctx;                                                                              \
        return types_or_empty(EVP_KEYMGMT_gen_settable_params(ctok_prov_keymgmt(provctx, T)));     \
    }                                                                                              \
    static const char *fam##_query(int op)                                                         \
    {                                                                                              \
        switch (op) {                                                                              \
        case OSSL_OP_SIGNATURE:                                                                    \
            return SIGNAME;                                                                        \
        case OSSL_OP_ASYM_CIPHER:                                                                  \
            return CIPHERNAME;                                                                     \
        case OSSL_OP_KEYEXCH:                                                                      \
            return KEXNAME;                                                                        \
        }                                                                                          \
        return NULL;                                                                               \
    }                                                                                              \
    const OSSL_DISPATCH ctok_##fam##_keymgmt_functions[] = {                                       \
        {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))fam##_new},                                        \
        {OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))km_free},                                         \
        {OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))km_load},                                         \
        {OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))km_has},                                           \
        {OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))km_match},                                       \
        {OSSL_FUNC_KEYMGMT_VALIDATE, (void (*)(void))km_validate},                                 \
        {OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))km_import},                                     \
        {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))key_types},                               \
        {OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))km_export},                                     \
        {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))key_types},                               \
        {OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))km_get_params},                             \
        {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))fam##_gettable},                       \
        {OSSL_FUNC_KEYMGMT_SET_PARAMS, (void (*)(void))km_set_params},                             \
        {OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, (void (*)(void))fam##_settable},                       \
        {OSSL_FUNC_KEYMGMT_DUP, (void (*)(void))km_dup},                                           \
        {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))fam##_query},                     \
        {OSSL_FUNC_KEYMGMT_GEN_INIT, (void (*)(void))fam##_gen_init},                              \
        {OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, (void (*)(void))km_gen_set_template},                 \
        {OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, (void (*)(void))km_gen_set_params},                     \
        {OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, (void (*)(void))fam##_gen_settable},               \
        {OSSL_FUNC_KEYMGMT_GEN, (void (*)(void))km_gen},                                           \
        {OSSL_FUNC_KEYMGMT_GEN_CLEANUP, (void (*)(void))km_gen_cleanup},                           \
        {0, NULL}};

/*
 * import/export types: the union of what the key types carry. OpenSSL 3.0 has no
 * public way to ask the inner keymgmt, and these lists only guide parameter builders.
 */
static const OSSL_PARAM *key_types(int selection)
{
    static const OSSL_PARAM t[] = {
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_D, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_FACTOR1, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_FACTOR2, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_EXPONENT1, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_EXPONENT2, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_COEFFICIENT1, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_RSA_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_RSA_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_RSA_PSS_SALTLEN, NULL),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_FIELD_TYPE, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_P, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_A, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_B, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_EC_GENERATOR, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_ORDER, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_COFACTOR, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_EC_SEED, NULL, 0),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_USE_COFACTOR_ECDH, NULL),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_PRIV_KEY, NULL, 0),
        OSSL_PARAM_END};

    (void)selection;
    return t;
}

KEYMGMT_TYPE(rsa, CTOK_KT_RSA, CTOK_NAME_SIG_RSA, CTOK_NAME_CIPHER_RSA, NULL)
KEYMGMT_TYPE(rsapss, CTOK_KT_RSA_PSS, CTOK_NAME_SIG_RSA, NULL, NULL)
KEYMGMT_TYPE(ec, CTOK_KT_EC, CTOK_NAME_SIG_ECDSA, NULL, CTOK_NAME_KEX_ECDH)
KEYMGMT_TYPE(ed25519, CTOK_KT_ED25519, CTOK_NAME_SIG_ED25519, NULL, NULL)

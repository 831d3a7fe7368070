/*
 * ECDH under the private name CTOK-ECDH. A token key derives on its token; ordinary
 * keys (TLS key shares that landed in ctok's EC keymgmt) are delegated to an inner
 * context in the child library context.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>

#include "prov.h"

static OSSL_FUNC_keyexch_newctx_fn kx_newctx;
static OSSL_FUNC_keyexch_init_fn kx_init;
static OSSL_FUNC_keyexch_set_peer_fn kx_set_peer;
static OSSL_FUNC_keyexch_derive_fn kx_derive;
static OSSL_FUNC_keyexch_freectx_fn kx_freectx;
static OSSL_FUNC_keyexch_dupctx_fn kx_dupctx;
static OSSL_FUNC_keyexch_set_ctx_params_fn kx_set_ctx_params;
static OSSL_FUNC_keyexch_settable_ctx_params_fn kx_settable_ctx_params;
static OSSL_FUNC_keyexch_get_ctx_params_fn kx_get_ctx_params;
static OSSL_FUNC_keyexch_gettable_ctx_params_fn kx_gettable_ctx_params;

struct kxctx {
    struct ctok_provctx *pctx;
    struct ctok_pkey *key, *peer;
    EVP_PKEY_CTX *inner; /* pass-through keys */
    /* token keys: the token derives Z; an X9.63 KDF, if asked for, runs here */
    int x963;
    char kdf_md[64];
    size_t kdf_outlen;
    unsigned char *ukm;
    size_t ukm_len;
};

static void *kx_newctx(void *provctx)
{
    struct kxctx *c = calloc(1, sizeof(*c));

    if (c != NULL)
        c->pctx = provctx;
    return c;
}

static void kx_freectx(void *vc)
{
    struct kxctx *c = vc;

    if (c == NULL)
        return;
    ctok_pkey_free(c->key);
    ctok_pkey_free(c->peer);
    EVP_PKEY_CTX_free(c->inner);
    OPENSSL_free(c->ukm);
    free(c);
}

static void *kx_dupctx(void *vc)
{
    struct kxctx *src = vc, *c = kx_newctx(src->pctx);

    if (c == NULL)
        return NULL;
    c->x963 = src->x963;
    memcpy(c->kdf_md, src->kdf_md, sizeof(c->kdf_md));
    c->kdf_outlen = src->kdf_outlen;
    c->ukm_len = src->ukm_len;
    if ((src->key != NULL && (c->key = ctok_pkey_copy(src->key)) == NULL) ||
        (src->peer != NULL && (c->peer = ctok_pkey_copy(src->peer)) == NULL) ||
        (src->inner != NULL && (c->inner = EVP_PKEY_CTX_dup(src->inner)) == NULL) ||
        (src->ukm != NULL && (c->ukm = OPENSSL_memdup(src->ukm, src->ukm_len)) == NULL)) {
        kx_freectx(c);
        return NULL;
    }
    return c;
}

static int kx_init(void *vc, void *vkey, const OSSL_PARAM params[])
{
    struct kxctx *c = vc;
    struct ctok_pkey *k = vkey;

    if (k == NULL || k->pkey == NULL)
        return 0;
    CTOK_DBG("keyexch: init (%s)", k->tok != NULL ? "token key" : "pass-through key");
    ctok_pkey_free(c->key);
    EVP_PKEY_CTX_free(c->inner);
    c->inner = NULL;
    if ((c->key = ctok_pkey_copy(k)) == NULL)
        return 0;
    if (k->tok != NULL) /* rule use: ctok_key_derive checks it */
        return kx_set_ctx_params(c, params);
    c->inner = EVP_PKEY_CTX_new_from_pkey(ctok_prov_child(c->pctx), k->pkey, c->pctx->propq);
    return c->inner != NULL && EVP_PKEY_derive_init_ex(c->inner, params) > 0;
}

static int kx_set_peer(void *vc, void *vpeer)
{
    struct kxctx *c = vc;
    struct ctok_pkey *peer = vpeer;

    if (peer == NULL || peer->pkey == NULL)
        return 0;
    ctok_pkey_free(c->peer);
    if ((c->peer = ctok_pkey_copy(peer)) == NULL)
        return 0;
    return c->inner == NULL || EVP_PKEY_derive_set_peer(c->inner, peer->pkey) > 0;
}

static int kx_derive(void *vc, unsigned char *secret, size_t *secretlen, size_t outlen)
{
    struct kxctx *c = vc;
    unsigned char z[CTOK_MAX_SECRET];
    size_t zlen = sizeof(z);
    int ok;

    if (c->inner != NULL) {
        *secretlen = outlen;
        return EVP_PKEY_derive(c->inner, secret, secretlen) > 0;
    }
    if (c->key == NULL || c->peer == NULL)
        return 0;
    if (secret == NULL) {
        *secretlen = c->x963 ? c->kdf_outlen : (size_t)(EVP_PKEY_get_bits(c->key->pkey) + 7) / 8;
        return 1;
    }
    if (!c->x963) {
        *secretlen = outlen;
        return ctok_key_derive(c->key->tok, c->peer->pkey, secret, secretlen);
    }
    if (outlen < c->kdf_outlen)
        return 0;
    ok = ctok_key_derive(c->key->tok, c->peer->pkey, z, &zlen) &&
         ctok_x963_kdf(ctok_prov_child(c->pctx), c->pctx->propq, c->kdf_md, z, zlen, c->ukm,
                       c->ukm_len, secret, c->kdf_outlen);
    OPENSSL_cleanse(z, sizeof(z));
    *secretlen = c->kdf_outlen;
    return ok;
}

static int kx_set_ctx_params(void *vc, const OSSL_PARAM params[])
{
    struct kxctx *c = vc;
    const OSSL_PARAM *p;

    if (params == NULL || params[0].key == NULL)
        return 1;
    if (c->inner != NULL)
        return EVP_PKEY_CTX_set_params(c->inner, params);
    /* the token derives the plain shared secret; a KDF over it runs here */
    if ((p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_KDF_TYPE)) != NULL) {
        char name[64];

        if (!ctok_param_utf8(p, name, sizeof(name)))
            return 0;
        if (*name != '\0' && strcasecmp(name, OSSL_KDF_NAME_X963KDF) != 0) {
            CTOK_ERR(CTOK_R_UNSUPPORTED,
                     "ECDH with a token key: KDF '%s' is not supported "
                     "(X963KDF is)",
                     name);
            return 0;
        }
        c->x963 = *name != '\0';
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_KDF_DIGEST)) != NULL &&
        !ctok_param_utf8(p, c->kdf_md, sizeof(c->kdf_md)))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_KDF_OUTLEN)) != NULL &&
        !OSSL_PARAM_get_size_t(p, &c->kdf_outlen))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_EXCHANGE_PARAM_KDF_UKM)) != NULL) {
        void *ukm = NULL;
        size_t len = 0;

        if (!OSSL_PARAM_get_octet_string(p, &ukm, 0, &len))
            return 0;
        OPENSSL_free(c->ukm);
        c->ukm = ukm;
        c->ukm_len = len;
    }
    return 1;
}

static int kx_get_ctx_params(void *vc, OSSL_PARAM params[])
{
    struct kxctx *c = vc;

    return c->inner != NULL ? EVP_PKEY_CTX_get_params(c->inner, params) : 1;
}

static const OSSL_PARAM *kx_settable_ctx_params(void *vc, void *provctx)
{
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_int(OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE, NULL),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_DIGEST_PROPS, NULL, 0),
        OSSL_PARAM_size_t(OSSL_EXCHANGE_PARAM_KDF_OUTLEN, NULL),
        OSSL_PARAM_octet_string(OSSL_EXCHANGE_PARAM_KDF_UKM, NULL, 0),
        OSSL_PARAM_END};

    (void)vc;
    (void)provctx;
    return p;
}

static const OSSL_PARAM *kx_gettable_ctx_params(void *vc, void *provctx)
{
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_int(OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE, NULL),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_DIGEST, NULL, 0),
        OSSL_PARAM_size_t(OSSL_EXCHANGE_PARAM_KDF_OUTLEN, NULL),
        OSSL_PARAM_DEFN(OSSL_EXCHANGE_PARAM_KDF_UKM, OSSL_PARAM_OCTET_PTR, NULL, 0),
        OSSL_PARAM_END};

    (void)vc;
    (void)provctx;
    return p;
}

const OSSL_DISPATCH ctok_ecdh_keyexch_functions[] = {
    {OSSL_FUNC_KEYEXCH_NEWCTX, (void (*)(void))kx_newctx},
    {OSSL_FUNC_KEYEXCH_INIT, (void (*)(void))kx_init},
    {OSSL_FUNC_KEYEXCH_SET_PEER, (void (*)(void))kx_set_peer},
    {OSSL_FUNC_KEYEXCH_DERIVE, (void (*)(void))kx_derive},
    {OSSL_FUNC_KEYEXCH_FREECTX, (void (*)(void))kx_freectx},
    {OSSL_FUNC_KEYEXCH_DUPCTX, (void (*)(void))kx_dupctx},
    {OSSL_FUNC_KEYEXCH_SET_CTX_PARAMS, (void (*)(void))kx_set_ctx_params},
    {OSSL_FUNC_KEYEXCH_SETTABLE_CTX_PARAMS, (void (*)(void))kx_settable_ctx_params},
    {OSSL_FUNC_KEYEXCH_GET_CTX_PARAMS, (void (*)(void))kx_get_ctx_params},
    {OSSL_FUNC_KEYEXCH_GETTABLE_CTX_PARAMS, (void (*)(void))kx_gettable_ctx_params},
    {0, NULL}};

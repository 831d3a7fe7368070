/*
 * RSA encryption/decryption under the private name CTOK-RSA. A token key decrypts on
 * its token; encryption (public) and every operation of pass-through keys are
 * delegated to an inner context in the child library context.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "prov.h"

static OSSL_FUNC_asym_cipher_newctx_fn ac_newctx;
static OSSL_FUNC_asym_cipher_freectx_fn ac_freectx;
static OSSL_FUNC_asym_cipher_dupctx_fn ac_dupctx;
static OSSL_FUNC_asym_cipher_encrypt_init_fn ac_encrypt_init;
static OSSL_FUNC_asym_cipher_encrypt_fn ac_encrypt;
static OSSL_FUNC_asym_cipher_decrypt_init_fn ac_decrypt_init;
static OSSL_FUNC_asym_cipher_decrypt_fn ac_decrypt;
static OSSL_FUNC_asym_cipher_get_ctx_params_fn ac_get_ctx_params;
static OSSL_FUNC_asym_cipher_gettable_ctx_params_fn ac_gettable_ctx_params;
static OSSL_FUNC_asym_cipher_set_ctx_params_fn ac_set_ctx_params;
static OSSL_FUNC_asym_cipher_settable_ctx_params_fn ac_settable_ctx_params;

struct acctx {
    struct ctok_provctx *pctx;
    struct ctok_pkey *key;
    EVP_PKEY_CTX *inner; /* delegate mode */
    int token;           /* token mode: decrypting with a token key */
    int pad;
    EVP_MD *md, *mgf1;
    unsigned char *label;
    size_t label_len;
    unsigned int client_version, negotiated_version;
};

static void *ac_newctx(void *provctx)
{
    struct acctx *c = calloc(1, sizeof(*c));

    if (c != NULL)
        c->pctx = provctx;
    return c;
}

static void reset(struct acctx *c)
{
    ctok_pkey_free(c->key);
    EVP_PKEY_CTX_free(c->inner);
    EVP_MD_free(c->md);
    EVP_MD_free(c->mgf1);
    OPENSSL_free(c->label);
    c->key = NULL;
    c->inner = NULL;
    c->md = c->mgf1 = NULL;
    c->label = NULL;
    c->label_len = 0;
    c->token = 0;
    c->pad = RSA_PKCS1_PADDING;
    c->client_version = c->negotiated_version = 0;
}

static void ac_freectx(void *vc)
{
    struct acctx *c = vc;

    if (c == NULL)
        return;
    reset(c);
    free(c);
}

static void *ac_dupctx(void *vc)
{
    struct acctx *src = vc, *c = ac_newctx(src->pctx);

    if (c == NULL)
        return NULL;
    *c = *src;
    c->key = NULL;
    c->inner = NULL;
    c->md = c->mgf1 = NULL;
    c->label = NULL;
    if ((src->key != NULL && (c->key = ctok_pkey_copy(src->key)) == NULL) ||
        (src->inner != NULL && (c->inner = EVP_PKEY_CTX_dup(src->inner)) == NULL) ||
        (src->md != NULL && !EVP_MD_up_ref(src->md))) {
        ac_freectx(c);
        return NULL;
    }
    c->md = src->md;
    if (src->mgf1 != NULL && EVP_MD_up_ref(src->mgf1))
        c->mgf1 = src->mgf1;
    if (src->label != NULL && (c->label = OPENSSL_memdup(src->label, src->label_len)) == NULL) {
        ac_freectx(c);
        return NULL;
    }
    return c;
}

static const char *tokname(const struct acctx *c)
{
    return ctok_token_name(ctok_key_token(c->key->tok));
}

static int fetch_md(struct acctx *c, const OSSL_PARAM *p, EVP_MD **dst)
{
    char name[64];
    EVP_MD *md;

    if (!ctok_param_utf8(p, name, sizeof(name)))
        return 0;
    md = ctok_prov_md(c->pctx, name);
    if (md == NULL) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s', key '%s': unknown digest '%s'", tokname(c),
                 ctok_key_label(c->key->tok), name);
        return 0;
    }
    EVP_MD_free(*dst);
    *dst = md;
    return 1;
}

static int token_set_params(struct acctx *c, const OSSL_PARAM params[])
{
    const OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE)) != NULL) {
        static const struct ctok_param_name names[] = {{"none", RSA_NO_PADDING},
                                                       {"pkcs1", RSA_PKCS1_PADDING},
                                                       {"oaep", RSA_PKCS1_OAEP_PADDING}};
        int mode = -1;

        if (!ctok_param_int_or_name(p, names, sizeof(names) / sizeof(names[0]), 0, &mode))
            return 0;
        if (mode != RSA_NO_PADDING && mode != RSA_PKCS1_PADDING && mode != RSA_PKCS1_OAEP_PADDING &&
            mode != RSA_PKCS1_WITH_TLS_PADDING) {
            CTOK_ERR(CTOK_R_UNSUPPORTED,
                     "token '%s', key '%s': RSA padding mode %d not supported "
                     "for decryption",
                     tokname(c), ctok_key_label(c->key->tok), mode);
            return 0;
        }
        c->pad = mode;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST)) != NULL &&
        !fetch_md(c, p, &c->md))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST)) != NULL &&
        !fetch_md(c, p, &c->mgf1))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL)) != NULL) {
        void *label = NULL;
        size_t len = 0;

        if (!OSSL_PARAM_get_octet_string(p, &label, 0, &len))
            return 0;
        OPENSSL_free(c->label);
        c->label = label;
        c->label_len = len;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION)) != NULL &&
        !OSSL_PARAM_get_uint(p, &c->client_version))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION)) !=
            NULL &&
        !OSSL_PARAM_get_uint(p, &c->negotiated_version))
        return 0;
    return 1;
}

static int begin(struct acctx *c, void *vkey, const char *fn)
{
    struct ctok_pkey *k = vkey;

    if (k == NULL || k->pkey == NULL)
        return -1;
    CTOK_DBG("asym-cipher: %s (%s %s)", fn, ctok_key_type_name(k->type),
             k->tok != NULL ? "token key" : "pass-through key");
    reset(c);
    if ((c->key = ctok_pkey_copy(k)) == NULL)
        return -1;
    return k->tok != NULL;
}

static int new_inner(struct acctx *c)
{
    c->inner = EVP_PKEY_CTX_new_from_pkey(ctok_prov_child(c->pctx), c->key->pkey, c->pctx->propq);
    return c->inner != NULL;
}

static int ac_encrypt_init(void *vc, void *vkey, const OSSL_PARAM params[])
{
    struct acctx *c = vc;

    return begin(c, vkey, "encrypt_init") >= 0 && new_inner(c) &&
           EVP_PKEY_encrypt_init_ex(c->inner, params) > 0;
}

static int ac_encrypt(void *vc, unsigned char *out, size_t *outlen, size_t outsize,
                      const unsigned char *in, size_t inlen)
{
    struct acctx *c = vc;

    *outlen = outsize;
    return EVP_PKEY_encrypt(c->inner, out, outlen, in, inlen) > 0;
}

static int ac_decrypt_init(void *vc, void *vkey, const OSSL_PARAM params[])
{
    struct acctx *c = vc;
    int t = begin(c, vkey, "decrypt_init");

    if (t < 0)
        return 0;
    if (!t)
        return new_inner(c) && EVP_PKEY_decrypt_init_ex(c->inner, params) > 0;
    c->token = 1; /* rule use: ctok_key_decrypt checks it */
    return token_set_params(c, params);
}

static int ac_decrypt(void *vc, unsigned char *out, size_t *outlen, size_t outsize,
                      const unsigned char *in, size_t inlen)
{
    struct acctx *c = vc;
    struct ctok_dec_params dp = {
        c->pad, c->md, c->mgf1, c->label, c->label_len, c->client_version, c->negotiated_version};

    if (!c->token) {
        *outlen = outsize;
        return EVP_PKEY_decrypt(c->inner, out, outlen, in, inlen) > 0;
    }
    if (out == NULL) {
        *outlen = c->pad == RSA_PKCS1_WITH_TLS_PADDING ? 48 : ctok_pkey_max_size(c->key);
        return 1;
    }
    *outlen = outsize;
    return ctok_key_decrypt(c->key->tok, &dp, in, inlen, out, outlen);
}

static int ac_get_ctx_params(void *vc, OSSL_PARAM params[])
{
    struct acctx *c = vc;
    OSSL_PARAM *p;

    if (c->key == NULL)
        return 0;
    if (!c->token)
        return EVP_PKEY_CTX_get_params(c->inner, params);
    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE)) != NULL &&
        p->data_type == OSSL_PARAM_INTEGER && !OSSL_PARAM_set_int(p, c->pad))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST)) != NULL &&
        !OSSL_PARAM_set_utf8_string(p, c->md != NULL ? EVP_MD_get0_name(c->md) : "SHA1"))
        return 0;
    return 1;
}

static int ac_set_ctx_params(void *vc, const OSSL_PARAM params[])
{
    struct acctx *c = vc;

    if (params == NULL || params[0].key == NULL)
        return 1;
    if (c->key == NULL)
        return 0;
    return c->token ? token_set_params(c, params) : EVP_PKEY_CTX_set_params(c->inner, params);
}

static const OSSL_PARAM *ac_gettable_ctx_params(void *vc, void *provctx)
{
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, OSSL_PARAM_OCTET_PTR, NULL, 0),
        OSSL_PARAM_END};

    (void)vc;
    (void)provctx;
    return p;
}

static const OSSL_PARAM *ac_settable_ctx_params(void *vc, void *provctx)
{
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST_PROPS, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST_PROPS, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, NULL, 0),
        OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, NULL),
        OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, NULL),
        OSSL_PARAM_END};

    (void)vc;
    (void)provctx;
    return p;
}

const OSSL_DISPATCH ctok_rsa_asym_cipher_functions[] = {
    {OSSL_FUNC_ASYM_CIPHER_NEWCTX, (void (*)(void))ac_newctx},
    {OSSL_FUNC_ASYM_CIPHER_FREECTX, (void (*)(void))ac_freectx},
    {OSSL_FUNC_ASYM_CIPHER_DUPCTX, (void (*)(void))ac_dupctx},
    {OSSL_FUNC_ASYM_CIPHER_ENCRYPT_INIT, (void (*)(void))ac_encrypt_init},
    {OSSL_FUNC_ASYM_CIPHER_ENCRYPT, (void (*)(void))ac_encrypt},
    {OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, (void (*)(void))ac_decrypt_init},
    {OSSL_FUNC_ASYM_CIPHER_DECRYPT, (void (*)(void))ac_decrypt},
    {OSSL_FUNC_ASYM_CIPHER_GET_CTX_PARAMS, (void (*)(void))ac_get_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_GETTABLE_CTX_PARAMS, (void (*)(void))ac_gettable_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS, (void (*)(void))ac_set_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS, (void (*)(void))ac_settable_ctx_params},
    {0, NULL}};

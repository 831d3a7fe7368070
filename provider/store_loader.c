/*
 * STORE loader for ctok: URIs. open() only parses: the token is logged in inside load(),
 * where the passphrase callback is available (OpenSSL 3.0 has no open_ex). Private keys
 * leave as opaque references to ctok's keymgmt, never as key data.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/core_object.h>
#include <openssl/store.h>
#include <openssl/x509.h>

#include "prov.h"

static OSSL_FUNC_store_open_fn st_open;
static OSSL_FUNC_store_settable_ctx_params_fn st_settable_ctx_params;
static OSSL_FUNC_store_set_ctx_params_fn st_set_ctx_params;
static OSSL_FUNC_store_load_fn st_load;
static OSSL_FUNC_store_eof_fn st_eof;
static OSSL_FUNC_store_close_fn st_close;

struct stctx {
    struct ctok_provctx *pctx;
    struct ctok_uri uri;
    unsigned int expect; /* CTOK_OBJ_* wanted by the application */
    struct ctok_found *found;
    size_t n, next;
    int searched;
};

static void *st_open(void *provctx, const char *uri)
{
    struct stctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->pctx = provctx;
    c->expect = CTOK_OBJ_ANY;
    if (!ctok_uri_parse(uri, &c->uri)) {
        free(c);
        return NULL;
    }
    if (ctok_debug_on) {
        char shown[512];

        ctok_uri_redact(uri, shown, sizeof(shown));
        CTOK_DBG("store: open %s", shown);
    }
    return c;
}

static const OSSL_PARAM *st_settable_ctx_params(void *provctx)
{
    static const OSSL_PARAM p[] = {OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL),
                                   OSSL_PARAM_utf8_string(OSSL_STORE_PARAM_PROPERTIES, NULL, 0),
                                   OSSL_PARAM_octet_string(OSSL_STORE_PARAM_SUBJECT, NULL, 0),
                                   OSSL_PARAM_octet_string(OSSL_STORE_PARAM_ISSUER, NULL, 0),
                                   OSSL_PARAM_BN(OSSL_STORE_PARAM_SERIAL, NULL, 0),
                                   OSSL_PARAM_utf8_string(OSSL_STORE_PARAM_ALIAS, NULL, 0),
                                   OSSL_PARAM_octet_string(OSSL_STORE_PARAM_FINGERPRINT, NULL, 0),
                                   OSSL_PARAM_utf8_string(OSSL_STORE_PARAM_DIGEST, NULL, 0),
                                   OSSL_PARAM_utf8_string(OSSL_STORE_PARAM_INPUT_TYPE, NULL, 0),
                                   OSSL_PARAM_END};

    (void)provctx;
    return p;
}

/* OSSL_STORE calls this without a NULL check when the caller passes anything. */
static int st_set_ctx_params(void *vc, const OSSL_PARAM params[])
{
    struct stctx *c = vc;
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT);
    int expect;

    if (p != NULL && OSSL_PARAM_get_int(p, &expect)) {
        switch (expect) {
        case OSSL_STORE_INFO_CERT:
            c->expect = CTOK_OBJ_CERT;
            break;
        case OSSL_STORE_INFO_PUBKEY:
            c->expect = CTOK_OBJ_PUBLIC;
            break;
        case OSSL_STORE_INFO_PKEY:
            c->expect = CTOK_OBJ_PRIVATE;
            break;
        case OSSL_STORE_INFO_CRL:
        case OSSL_STORE_INFO_PARAMS:
            c->expect = 0; /* tokens hold none */
            break;
        default:
            c->expect = CTOK_OBJ_ANY;
        }
    }
    /* other criteria narrow what the application keeps; it filters what we return */
    return 1;
}

static int emit_data(OSSL_CALLBACK *cb, void *cbarg, int objtype, const char *data_type,
                     const char *structure, const unsigned char *der, size_t len)
{
    OSSL_PARAM p[5], *q = p;

    *q++ = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &objtype);
    if (data_type != NULL)
        *q++ = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)data_type, 0);
    if (structure != NULL)
        *q++ = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE, (char *)structure,
                                                0);
    *q++ = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, (void *)der, len);
    *q = OSSL_PARAM_construct_end();
    return cb(p, cbarg);
}

static int load_cert(struct ctok_found *f, OSSL_CALLBACK *cb, void *cbarg)
{
    unsigned char *der = NULL;
    int len = i2d_X509(f->cert, &der), ok;

    if (len <= 0)
        return 0;
    ok = emit_data(cb, cbarg, OSSL_OBJECT_CERT, NULL, "Certificate", der, (size_t)len);
    OPENSSL_free(der);
    return ok;
}

static int load_public(struct ctok_found *f, OSSL_CALLBACK *cb, void *cbarg)
{
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(f->pub, &der), ok;

    if (len <= 0)
        return 0;
    ok = emit_data(cb, cbarg, OSSL_OBJECT_PKEY, ctok_key_type_name(f->key_type),
                   "SubjectPublicKeyInfo", der, (size_t)len);
    OPENSSL_free(der);
    return ok;
}

static int load_private(struct stctx *c, struct ctok_found *f, OSSL_CALLBACK *cb, void *cbarg,
                        OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    struct ctok_pkey *k = ctok_prov_private_key(c->pctx, &c->uri, f, pw_cb, pw_cbarg);
    int ok;

    if (k == NULL)
        return 0;
    ok = ctok_prov_emit_key(k, cb, cbarg);
    ctok_pkey_free(k); /* keymgmt load took its own reference */
    return ok;
}

/* An object label as one error line may show it: control characters as '?', cut to outlen - 1. */
static void shown_label(const char *label, char *out, size_t outlen)
{
    size_t i = 0;

    for (; label != NULL && label[i] != '\0' && i + 1 < outlen; i++)
        out[i] = (unsigned char)label[i] < 0x20 || label[i] == 0x7f ? '?' : label[i];
    out[i] = '\0';
}

static int st_load(void *vc, OSSL_CALLBACK *object_cb, void *object_cbarg,
                   OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    struct stctx *c = vc;
    struct ctok_found *f;
    ctok_ctx *tokens;

    if (!c->searched) {
        struct ctok_pw_ui pw = {pw_cb, pw_cbarg};
        struct ctok_ui ui = {ctok_pw_get_code, &pw};

        c->searched = 1;
        tokens = ctok_prov_tokens(c->pctx);
        if (tokens == NULL || !ctok_find(tokens, &c->uri, c->expect, &ui, &c->found, &c->n))
            return 0;
        CTOK_DBG("store: %zu object(s) match", c->n);
        if (c->n == 0) {
            char label[129];

            shown_label(c->uri.object, label, sizeof(label));
            CTOK_ERR(CTOK_R_NOT_FOUND, "no %s matches %s%s%s%s%s%s",
                     c->expect == CTOK_OBJ_PRIVATE ? "private key"
                     : c->expect == CTOK_OBJ_CERT  ? "certificate"
                                                   : "object",
                     c->uri.token != NULL ? "token '" : "any token",
                     c->uri.token != NULL ? c->uri.token : "", c->uri.token != NULL ? "'" : "",
                     c->uri.object != NULL ? ", object '" : "", label,
                     c->uri.object != NULL ? "'" : "");
            return 0;
        }
    }
    if (c->next >= c->n)
        return 0;
    f = &c->found[c->next++];
    switch (f->type) {
    case CTOK_OBJ_CERT:
        return load_cert(f, object_cb, object_cbarg);
    case CTOK_OBJ_PUBLIC:
        return load_public(f, object_cb, object_cbarg);
    case CTOK_OBJ_PRIVATE:
        return load_private(c, f, object_cb, object_cbarg, pw_cb, pw_cbarg);
    }
    return 0;
}

static int st_eof(void *vc)
{
    struct stctx *c = vc;

    /* before the first load the answer is unknown: say "not yet" */
    return c->searched && c->next >= c->n;
}

static int st_close(void *vc)
{
    struct stctx *c = vc;

    ctok_found_free(c->found, c->n);
    ctok_uri_clear(&c->uri);
    free(c);
    return 1;
}

const OSSL_DISPATCH ctok_store_functions[] = {
    {OSSL_FUNC_STORE_OPEN, (void (*)(void))st_open},
    {OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))st_settable_ctx_params},
    {OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))st_set_ctx_params},
    {OSSL_FUNC_STORE_LOAD, (void (*)(void))st_load},
    {OSSL_FUNC_STORE_EOF, (void (*)(void))st_eof},
    {OSSL_FUNC_STORE_CLOSE, (void (*)(void))st_close},
    {0, NULL}};

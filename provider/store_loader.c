/*
 * STORE loader for ctok: URIs. open() only parses: the token is logged in inside load(),
 * where the passphrase callback is available (OpenSSL 3.0 has no open_ex). Private keys
 * leave as opaque references to ctok's keymgmt, never as key data.
 */
#include <limits.h>
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
    /* OSSL_STORE search criteria, owned: crit points into them */
    X509_NAME *subject, *issuer;
    ASN1_INTEGER *serial;
    char *alias;
    unsigned char *fingerprint;
    char digest[64];
    struct ctok_criteria crit;
    int has_crit;
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

/* A DER name criterion (subject, issuer) into *name; 0 with the error raised. */
static int get_name(const OSSL_PARAM *p, const char *what, X509_NAME **name)
{
    const void *der;
    const unsigned char *q;
    size_t len;

    if (!OSSL_PARAM_get_octet_string_ptr(p, &der, &len) || (q = der, len > LONG_MAX) ||
        (X509_NAME_free(*name), *name = d2i_X509_NAME(NULL, &q, (long)len)) == NULL) {
        CTOK_ERR(CTOK_R_BAD_URI, "store search: the %s is not a DER-encoded name", what);
        return 0;
    }
    return 1;
}

static int get_serial(const OSSL_PARAM *p, ASN1_INTEGER **serial)
{
    BIGNUM *bn = NULL;
    int ok = OSSL_PARAM_get_BN(p, &bn) &&
             (ASN1_INTEGER_free(*serial), *serial = BN_to_ASN1_INTEGER(bn, NULL)) != NULL;

    BN_free(bn);
    if (!ok)
        CTOK_ERR(CTOK_R_BAD_URI, "store search: the serial number is not an integer");
    return ok;
}

/* Search criteria (storeutl -subject, -issuer -serial, -alias, -fingerprint). */
static int set_criteria(struct stctx *c, const OSSL_PARAM params[])
{
    const OSSL_PARAM *p;
    size_t len = 0;

    if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_SUBJECT)) != NULL &&
        !get_name(p, "subject", &c->subject))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_ISSUER)) != NULL &&
        !get_name(p, "issuer", &c->issuer))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_SERIAL)) != NULL &&
        !get_serial(p, &c->serial))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_ALIAS)) != NULL) {
        OPENSSL_free(c->alias);
        c->alias = NULL;
        if (!OSSL_PARAM_get_utf8_string(p, &c->alias, 0))
            return 0;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_FINGERPRINT)) != NULL) {
        OPENSSL_free(c->fingerprint);
        c->fingerprint = NULL;
        if (!OSSL_PARAM_get_octet_string(p, (void **)&c->fingerprint, 0, &len))
            return 0;
        c->crit.fingerprint_len = len;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_DIGEST)) != NULL) {
        char *d = c->digest;

        if (!OSSL_PARAM_get_utf8_string(p, &d, sizeof(c->digest)))
            return 0;
    }
    c->crit.subject = c->subject;
    c->crit.issuer = c->issuer;
    c->crit.serial = c->serial;
    c->crit.alias = c->alias;
    c->crit.fingerprint = c->fingerprint;
    c->has_crit = c->subject != NULL || c->issuer != NULL || c->serial != NULL ||
                  c->alias != NULL || c->fingerprint != NULL;
    return 1;
}

/* The fingerprint's digest, as named by the application (SHA-1 when it names none). */
static int fetch_digest(struct stctx *c)
{
    EVP_MD *md;

    if (c->fingerprint == NULL || c->crit.digest != NULL)
        return 1;
    md = ctok_prov_md(c->pctx, c->digest[0] != '\0' ? c->digest : "SHA1");
    if (md == NULL) {
        CTOK_ERR(CTOK_R_BAD_URI, "store search: unknown fingerprint digest '%s'", c->digest);
        return 0;
    }
    if (c->crit.fingerprint_len != (size_t)EVP_MD_get_size(md)) {
        EVP_MD_free(md);
        CTOK_ERR(CTOK_R_BAD_URI, "store search: a %s fingerprint has %d bytes, not %zu",
                 c->digest[0] != '\0' ? c->digest : "SHA1", EVP_MD_get_size(md),
                 c->crit.fingerprint_len);
        return 0;
    }
    c->crit.digest = md;
    return 1;
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
    return set_criteria(c, params);
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
        if (tokens == NULL || !fetch_digest(c) ||
            !ctok_find_where(tokens, &c->uri, c->has_crit ? &c->crit : NULL, c->expect, &ui,
                             &c->found, &c->n))
            return 0;
        CTOK_DBG("store: %zu object(s) match", c->n);
        /* a search that finds nothing is no error, as in OpenSSL's own file store */
        if (c->n == 0 && !c->has_crit) {
            char label[129];

            ctok_prov_shown_label(c->uri.object, label, sizeof(label));
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
    X509_NAME_free(c->subject);
    X509_NAME_free(c->issuer);
    ASN1_INTEGER_free(c->serial);
    OPENSSL_free(c->alias);
    OPENSSL_free(c->fingerprint);
    EVP_MD_free((EVP_MD *)c->crit.digest);
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

/* OSSL_provider_init, the algorithm tables, TLS-GROUP capabilities and error upcalls. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdio.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/core_object.h>
#include <openssl/prov_ssl.h>

#include "prov.h"

#define PROPS "provider=ctok"

static OSSL_FUNC_core_get_params_fn *c_get_params;
static OSSL_FUNC_core_new_error_fn *c_new_error;
static OSSL_FUNC_core_set_error_debug_fn *c_set_error_debug;
static OSSL_FUNC_core_vset_error_fn *c_vset_error;
static const OSSL_CORE_HANDLE *err_handle;

static void prov_err_sink(int reason, const char *file, int line, const char *func, const char *fmt,
                          va_list ap)
{
    if (c_new_error == NULL || c_vset_error == NULL)
        return;
    c_new_error(err_handle);
    if (c_set_error_debug != NULL)
        c_set_error_debug(err_handle, file, line, func);
    c_vset_error(err_handle, (uint32_t)reason, fmt, ap);
}

static const OSSL_ALGORITHM keymgmt_algs[] = {
    {"RSA:rsaEncryption:1.2.840.113549.1.1.1", PROPS, ctok_rsa_keymgmt_functions,
     "ctok RSA keys (token keys and pass-through)"},
    {"RSA-PSS:RSASSA-PSS:1.2.840.113549.1.1.10", PROPS, ctok_rsapss_keymgmt_functions,
     "ctok RSA-PSS keys"},
    {"EC:id-ecPublicKey:1.2.840.10045.2.1", PROPS, ctok_ec_keymgmt_functions, "ctok EC keys"},
    {"ED25519:1.3.101.112", PROPS, ctok_ed25519_keymgmt_functions, "ctok Ed25519 keys"},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM signature_algs[] = {
    {CTOK_NAME_SIG_RSA, PROPS, ctok_rsa_signature_functions, NULL},
    {CTOK_NAME_SIG_ECDSA, PROPS, ctok_ecdsa_signature_functions, NULL},
    {CTOK_NAME_SIG_ED25519, PROPS, ctok_ed25519_signature_functions, NULL},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM asym_cipher_algs[] = {
    {CTOK_NAME_CIPHER_RSA, PROPS, ctok_rsa_asym_cipher_functions, NULL}, {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM keyexch_algs[] = {
    {CTOK_NAME_KEX_ECDH, PROPS, ctok_ecdh_keyexch_functions, NULL}, {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM store_algs[] = {
    {"ctok", PROPS, ctok_store_functions, "ctok: URIs of crypto token objects"},
    {"pkcs11", PROPS, ctok_store_functions, "pkcs11: URIs (RFC 7512) on ctok's PKCS#11 tokens"},
    {NULL, NULL, NULL, NULL}};

/*
 * Key-reference PEM files: a PEM-to-DER step that only takes the "CTOK URI" label, and
 * DER-to-key steps named after the key types (OpenSSL collects decoders by key type).
 */
#define URI_DECODER_PROPS "provider=ctok,input=der,structure=ctok-uri"
static const OSSL_ALGORITHM decoder_algs[] = {
    {"DER", "provider=ctok,input=pem", ctok_pem_decoder_functions, "CTOK URI PEM to DER"},
    {"RSA:rsaEncryption:1.2.840.113549.1.1.1", URI_DECODER_PROPS, ctok_rsa_uri_decoder_functions,
     NULL},
    {"RSA-PSS:RSASSA-PSS:1.2.840.113549.1.1.10", URI_DECODER_PROPS,
     ctok_rsapss_uri_decoder_functions, NULL},
    {"EC:id-ecPublicKey:1.2.840.10045.2.1", URI_DECODER_PROPS, ctok_ec_uri_decoder_functions, NULL},
    {"ED25519:1.3.101.112", URI_DECODER_PROPS, ctok_ed25519_uri_decoder_functions, NULL},
    {NULL, NULL, NULL, NULL}};

/*
 * TEXT encoders for ctok's key types (printing a token key without exporting it). They have
 * no import_object, so OpenSSL offers them only ctok's own keys.
 */
#define TEXT_ENCODER_PROPS "provider=ctok,output=text"
static const OSSL_ALGORITHM encoder_algs[] = {
    {"RSA:rsaEncryption:1.2.840.113549.1.1.1", TEXT_ENCODER_PROPS, ctok_text_encoder_functions,
     NULL},
    {"RSA-PSS:RSASSA-PSS:1.2.840.113549.1.1.10", TEXT_ENCODER_PROPS, ctok_text_encoder_functions,
     NULL},
    {"EC:id-ecPublicKey:1.2.840.10045.2.1", TEXT_ENCODER_PROPS, ctok_text_encoder_functions, NULL},
    {"ED25519:1.3.101.112", TEXT_ENCODER_PROPS, ctok_text_encoder_functions, NULL},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM *prov_query(void *provctx, int op, int *no_cache)
{
    (void)provctx;
    *no_cache = 0;
    switch (op) {
    case OSSL_OP_KEYMGMT:
        return keymgmt_algs;
    case OSSL_OP_SIGNATURE:
        return signature_algs;
    case OSSL_OP_ASYM_CIPHER:
        return asym_cipher_algs;
    case OSSL_OP_KEYEXCH:
        return keyexch_algs;
    case OSSL_OP_STORE:
        return store_algs;
    case OSSL_OP_DECODER:
        return decoder_algs;
    case OSSL_OP_ENCODER:
        return encoder_algs;
    }
    return NULL;
}

/*
 * TLS groups for the curves ctok's EC keymgmt carries: when that keymgmt wins the
 * "EC" fetch, libssl keeps only groups its provider advertises.
 */
struct tls_group {
    const char *name, *internal;
    unsigned int id, secbits;
};
static const struct tls_group groups[] = {
    {"secp256r1", "prime256v1", 23, 128}, {"P-256", "prime256v1", 23, 128},
    {"secp384r1", "secp384r1", 24, 192},  {"P-384", "secp384r1", 24, 192},
    {"secp521r1", "secp521r1", 25, 256},  {"P-521", "secp521r1", 25, 256},
};

static int prov_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb,
                                 void *arg)
{
    (void)provctx;
    if (strcasecmp(capability, "TLS-GROUP") != 0)
        return 0;
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
        unsigned int id = groups[i].id, sec = groups[i].secbits;
        int mintls = TLS1_VERSION, maxtls = 0, mindtls = DTLS1_VERSION, maxdtls = 0;
        OSSL_PARAM p[] = {
            OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME, (char *)groups[i].name, 0),
            OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME_INTERNAL,
                                   (char *)groups[i].internal, 0),
            OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_ALG, "EC", 0),
            OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_ID, &id),
            OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_SECURITY_BITS, &sec),
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_TLS, &mintls),
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_TLS, &maxtls),
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_DTLS, &mindtls),
            OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_DTLS, &maxdtls),
            OSSL_PARAM_END};

        p[0].data_size = strlen(groups[i].name) + 1;
        p[1].data_size = strlen(groups[i].internal) + 1;
        p[2].data_size = 3;
        if (!cb(p, arg))
            return 0;
    }
    return 1;
}

static const OSSL_PARAM *prov_gettable_params(void *provctx)
{
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0),
        OSSL_PARAM_DEFN("ctok-config", OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_DEFN("ctok-config-from", OSSL_PARAM_UTF8_PTR, NULL, 0),
        OSSL_PARAM_END};

    (void)provctx;
    return p;
}

static int prov_get_params(void *provctx, OSSL_PARAM params[])
{
    struct ctok_provctx *pctx = provctx;
    enum ctok_config_from from;
    /* the tokens config this provider uses (ctok doctor reports it) and where it came from */
    const char *cfg = ctok_config_pick(NULL, pctx->config_path, &from);
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, "ctok-config")) != NULL && !OSSL_PARAM_set_utf8_ptr(p, cfg))
        return 0;
    if ((p = OSSL_PARAM_locate(params, "ctok-config-from")) != NULL &&
        !OSSL_PARAM_set_utf8_ptr(p, ctok_config_from_name(from)))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL &&
        !OSSL_PARAM_set_utf8_ptr(p, "ctok crypto token provider"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) != NULL &&
        !OSSL_PARAM_set_utf8_ptr(p, CTOK_VERSION))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL &&
        !OSSL_PARAM_set_int(p, 1))
        return 0;
    return 1;
}

static const OSSL_ITEM *prov_reason_strings(void *provctx)
{
    static const OSSL_ITEM items[] = {
#define CTOK_ITEM(name, num, str) {num, str},
        CTOK_REASONS(CTOK_ITEM)
#undef CTOK_ITEM
            {0, NULL}};

    (void)provctx;
    return items;
}

static void prov_teardown(void *vctx)
{
    struct ctok_provctx *pctx = vctx;

    ctok_ctx_free(pctx->tokens);
    for (size_t i = 0; i < sizeof(pctx->km) / sizeof(pctx->km[0]); i++)
        EVP_KEYMGMT_free(pctx->km[i]);
    for (int i = 0; i < pctx->n_mds; i++)
        EVP_MD_free(pctx->mds[i].md);
    OSSL_LIB_CTX_free(pctx->child);
    OSSL_LIB_CTX_free(pctx->bio_libctx);
    free(pctx->config_path);
    pthread_mutex_destroy(&pctx->lock);
    free(pctx);
}

/*
 * The child library context is made on first use: a process that never touches a ctok
 * key or an ordinary key that lands in ctok's keymgmt does not pay for it.
 */
OSSL_LIB_CTX *ctok_prov_child(struct ctok_provctx *pctx)
{
    OSSL_LIB_CTX *child = __atomic_load_n(&pctx->child, __ATOMIC_ACQUIRE);

    if (child != NULL)
        return child;
    pthread_mutex_lock(&pctx->lock);
    if (pctx->child == NULL) {
        child = OSSL_LIB_CTX_new_child(pctx->handle, pctx->core_in);
        if (child == NULL)
            CTOK_ERR(CTOK_R_INTERNAL, "cannot create a child library context");
        __atomic_store_n(&pctx->child, child, __ATOMIC_RELEASE);
    }
    child = pctx->child;
    pthread_mutex_unlock(&pctx->lock);
    return child;
}

/*
 * Read without the lock: an entry is complete before n_mds (release) counts it, and entries
 * live until teardown. Every signature init looks a digest up here; with the provider's
 * mutex around it, all signing threads of a process took one lock per signature.
 */
static EVP_MD *cached_md(struct ctok_provctx *pctx, const char *name)
{
    int n = __atomic_load_n(&pctx->n_mds, __ATOMIC_ACQUIRE);

    for (int i = 0; i < n; i++)
        if (strcmp(pctx->mds[i].name, name) == 0)
            return pctx->mds[i].md;
    return NULL;
}

EVP_MD *ctok_prov_md(struct ctok_provctx *pctx, const char *name)
{
    OSSL_LIB_CTX *child;
    EVP_MD *md = cached_md(pctx, name);
    int n;

    if (md != NULL)
        return EVP_MD_up_ref(md) ? md : NULL;
    child = ctok_prov_child(pctx);
    md = child != NULL ? EVP_MD_fetch(child, name, pctx->propq) : NULL;
    if (md == NULL || strlen(name) >= sizeof(pctx->mds[0].name))
        return md;
    pthread_mutex_lock(&pctx->lock);
    n = pctx->n_mds;
    if (cached_md(pctx, name) == NULL && n < (int)(sizeof(pctx->mds) / sizeof(pctx->mds[0])) &&
        EVP_MD_up_ref(md)) {
        strcpy(pctx->mds[n].name, name);
        pctx->mds[n].md = md;
        __atomic_store_n(&pctx->n_mds, n + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&pctx->lock);
    return md;
}

int ctok_param_utf8(const OSSL_PARAM *p, char *buf, size_t bufsz)
{
    const char *s = NULL;
    size_t n;

    if (p->data_type == OSSL_PARAM_UTF8_STRING)
        s = p->data;
    else if (p->data_type == OSSL_PARAM_UTF8_PTR && p->data != NULL &&
             p->data_size >= sizeof(char *))
        s = *(const char *const *)p->data;
    if (s == NULL) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "parameter '%s': a UTF8 string is expected", p->key);
        return 0;
    }
    n = OPENSSL_strnlen(s, p->data_type == OSSL_PARAM_UTF8_STRING ? p->data_size : bufsz);
    if (n >= bufsz) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "parameter '%s': the value is too long (at most %zu bytes)",
                 p->key, bufsz - 1);
        return 0;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    return 1;
}

int ctok_param_int_or_name(const OSSL_PARAM *p, const struct ctok_param_name *names, size_t n,
                           int numeric, int *out)
{
    char s[32], *end = s;
    long v;

    if (p->data_type != OSSL_PARAM_UTF8_STRING && p->data_type != OSSL_PARAM_UTF8_PTR) {
        if (OSSL_PARAM_get_int(p, out))
            return 1;
        CTOK_ERR(CTOK_R_INVALID_ARG, "parameter '%s': an integer or a name is expected", p->key);
        return 0;
    }
    if (!ctok_param_utf8(p, s, sizeof(s)))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].value;
            return 1;
        }
    errno = 0;
    v = numeric && s[0] != '\0' ? strtol(s, &end, 10) : 0;
    if (numeric && s[0] != '\0' && *end == '\0' && errno == 0 && v >= INT_MIN && v <= INT_MAX) {
        *out = (int)v;
        return 1;
    }
    CTOK_ERR(CTOK_R_INVALID_ARG, "parameter '%s': unknown value '%s'", p->key, s);
    return 0;
}

ctok_ctx *ctok_prov_tokens(struct ctok_provctx *pctx)
{
    OSSL_LIB_CTX *child = ctok_prov_child(pctx); /* before the lock: it takes it too */
    ctok_ctx *c;

    if (child == NULL)
        return NULL;
    pthread_mutex_lock(&pctx->lock);
    if (pctx->tokens == NULL)
        pctx->tokens =
            ctok_ctx_new(child, pctx->propq, ctok_config_pick(NULL, pctx->config_path, NULL));
    c = pctx->tokens;
    pthread_mutex_unlock(&pctx->lock);
    return c;
}

EVP_KEYMGMT *ctok_prov_keymgmt(struct ctok_provctx *pctx, enum ctok_key_type t)
{
    EVP_KEYMGMT *km = __atomic_load_n(&pctx->km[t], __ATOMIC_ACQUIRE);

    if (km == NULL) {
        km = EVP_KEYMGMT_fetch(ctok_prov_child(pctx), ctok_key_type_name(t), pctx->propq);
        if (km != NULL) {
            EVP_KEYMGMT *expected = NULL;

            if (!__atomic_compare_exchange_n(&pctx->km[t], &expected, km, 0, __ATOMIC_ACQ_REL,
                                             __ATOMIC_ACQUIRE)) {
                EVP_KEYMGMT_free(km);
                km = expected;
            }
        }
    }
    return km;
}

struct ctok_pkey *ctok_prov_private_key(struct ctok_provctx *pctx, const struct ctok_uri *u,
                                        const struct ctok_found *f, OSSL_PASSPHRASE_CALLBACK *pw_cb,
                                        void *pw_cbarg)
{
    struct ctok_pw_ui pw = {pw_cb, pw_cbarg};
    struct ctok_ui ui = {ctok_pw_get_code, &pw};
    struct ctok_pin pin = {u->pin_value, u->pin_source};
    struct ctok_pkey *k;
    ctok_key *key;

    /* refused before any login; the key operations check the rule again */
    if (!ctok_token_authorize(f->tok, CTOK_PERM_USE, "key load", f->label))
        return NULL;
    if (!ctok_token_login(f->tok, &pin, &ui))
        return NULL;
    key = ctok_token_key(f->tok, f->id, f->id_len);
    if (key == NULL)
        return NULL;
    k = ctok_pkey_from_token(pctx, key);
    ctok_key_unref(key);
    return k;
}

int ctok_prov_emit_key(struct ctok_pkey *k, OSSL_CALLBACK *cb, void *cbarg)
{
    int objtype = OSSL_OBJECT_PKEY;
    OSSL_PARAM p[4];

    p[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &objtype);
    p[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE,
                                            (char *)ctok_key_type_name(k->type), 0);
    p[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &k, sizeof(k));
    p[3] = OSSL_PARAM_construct_end();
    return cb(p, cbarg);
}

void ctok_prov_shown_label(const char *label, char *out, size_t outlen)
{
    size_t i = 0;

    for (; label != NULL && label[i] != '\0' && i + 1 < outlen; i++)
        out[i] = (unsigned char)label[i] < 0x20 || label[i] == 0x7f ? '?' : label[i];
    out[i] = '\0';
}

OSSL_LIB_CTX *ctok_prov_bio_libctx(struct ctok_provctx *pctx)
{
    OSSL_LIB_CTX *lc;

    pthread_mutex_lock(&pctx->lock);
    if (pctx->bio_libctx == NULL)
        pctx->bio_libctx = OSSL_LIB_CTX_new_from_dispatch(pctx->handle, pctx->core_in);
    lc = pctx->bio_libctx;
    pthread_mutex_unlock(&pctx->lock);
    return lc;
}

int ctok_pw_get_code(void *arg, const char *info, char *buf, size_t bufsz, size_t *len)
{
    struct ctok_pw_ui *ui = arg;
    OSSL_PARAM p[2] = {OSSL_PARAM_utf8_string(OSSL_PASSPHRASE_PARAM_INFO, (char *)info, 0),
                       OSSL_PARAM_END};

    unsigned long e;
    int r;

    if (ui == NULL || ui->cb == NULL)
        return -1;
    p[0].data_size = strlen(info) + 1;
    /*
     * OSSL_STORE and the decoders always pass a callback; without a UI from the application it
     * fails in ossl_pw_get_passphrase with "No password method specified" (3.0.19:
     * ERR_R_PASSED_INVALID_ARGUMENT; ERR_R_PASSED_NULL_PARAMETER in earlier releases): the
     * application has no prompt, and ctok asks on the terminal itself. Any other failure is the
     * user's "no".
     */
    ERR_set_mark();
    r = ui->cb(buf, bufsz - 1, len, p, ui->arg);
    e = r ? 0 : ERR_peek_last_error();
    if (!r && ERR_GET_LIB(e) == ERR_LIB_CRYPTO &&
        (ERR_GET_REASON(e) == ERR_R_PASSED_INVALID_ARGUMENT ||
         ERR_GET_REASON(e) == ERR_R_PASSED_NULL_PARAMETER)) {
        ERR_pop_to_mark();
        return -1;
    }
    ERR_clear_last_mark();
    return r;
}

static const OSSL_DISPATCH prov_functions[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))prov_teardown},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))prov_query},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))prov_gettable_params},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))prov_get_params},
    {OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))prov_get_capabilities},
    {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))prov_reason_strings},
    {0, NULL}};

__attribute__((visibility("default"))) int OSSL_provider_init(const OSSL_CORE_HANDLE *handle,
                                                              const OSSL_DISPATCH *in,
                                                              const OSSL_DISPATCH **out,
                                                              void **provctx)
{
    struct ctok_provctx *pctx;
    char *cfg = NULL, *dbg = NULL, *name = NULL;
    OSSL_PARAM core_params[] = {
        OSSL_PARAM_utf8_ptr("ctok-config", &cfg, 0), OSSL_PARAM_utf8_ptr("ctok-debug", &dbg, 0),
        OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_CORE_PROV_NAME, &name, 0), OSSL_PARAM_END};
    const char *env = getenv("CTOK_DEBUG");

    for (const OSSL_DISPATCH *f = in; f->function_id != 0; f++) {
        switch (f->function_id) {
        case OSSL_FUNC_CORE_GET_PARAMS:
            c_get_params = OSSL_FUNC_core_get_params(f);
            break;
        case OSSL_FUNC_CORE_NEW_ERROR:
            c_new_error = OSSL_FUNC_core_new_error(f);
            break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
            c_set_error_debug = OSSL_FUNC_core_set_error_debug(f);
            break;
        case OSSL_FUNC_CORE_VSET_ERROR:
            c_vset_error = OSSL_FUNC_core_vset_error(f);
            break;
        }
    }
    if (c_get_params != NULL && !c_get_params(handle, core_params))
        return 0;
    if ((env != NULL && *env != '\0' && strcmp(env, "0") != 0) ||
        (dbg != NULL && *dbg != '\0' && strcmp(dbg, "0") != 0 && strcmp(dbg, "no") != 0))
        ctok_debug_on = 1;
    pctx = calloc(1, sizeof(*pctx));
    if (pctx == NULL)
        return 0;
    pthread_mutex_init(&pctx->lock, NULL);
    pctx->handle = handle;
    err_handle = handle;
    ctok_err_set_sink(prov_err_sink);
    BIO_snprintf(pctx->propq, sizeof(pctx->propq), "provider!=%s",
                 name != NULL && *name != '\0' ? name : "ctok");
    if (cfg != NULL && *cfg != '\0' && (pctx->config_path = strdup(cfg)) == NULL)
        goto err;
    /* the core's dispatch table is static in libcrypto: kept for the child context */
    pctx->core_in = in;
    *provctx = pctx;
    *out = prov_functions;
    CTOK_DBG("provider loaded as '%s', config %s", name != NULL ? name : "ctok",
             ctok_config_pick(NULL, cfg, NULL));
    return 1;
err:
    prov_teardown(pctx);
    return 0;
}

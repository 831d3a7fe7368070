/*
 * Decoders for key-reference PEM files. Every PEM read in the process passes through the
 * PEM step, so it reads only up to the first BEGIN line and leaves any other label alone
 * (OpenSSL seeks back for the next decoder). The DER step resolves the URI exactly as the
 * STORE loader would, and hands OpenSSL the token key as an object reference.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/core_object.h>
#include <openssl/evp.h>

#include "prov.h"

static OSSL_FUNC_decoder_newctx_fn dec_newctx;
static OSSL_FUNC_decoder_freectx_fn dec_freectx;
static OSSL_FUNC_decoder_decode_fn pem_decode;

/* ctok's own key references, and pkcs11-provider's (a pkcs11: URI inside) */
static const char *const labels[] = {CTOK_KEYREF_PEM_LABEL, CTOK_P11PROV_PEM_LABEL};
#define MAX_BODY 8192               /* a key reference's DER: a URI, far below this */
#define MAX_TEXT (MAX_BODY / 3 * 4) /* its base64 text */
#define MAX_PREAMBLE 65536          /* text before the BEGIN line that is read at all */

struct decctx {
    struct ctok_provctx *pctx;
    enum ctok_key_type type; /* DER step: the key type this instance produces */
};

static void *dec_newctx(void *provctx)
{
    struct decctx *c = calloc(1, sizeof(*c));

    if (c != NULL)
        c->pctx = provctx;
    return c;
}

static void dec_freectx(void *vc)
{
    free(vc);
}

static void chomp(char *line)
{
    size_t n = strlen(line);

    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
}

/*
 * The base64 text of a CTOK URI block at the start of in, newlines dropped, in text; 0 if the
 * first block is not one. Reads at most MAX_PREAMBLE bytes before the BEGIN line and MAX_TEXT
 * characters of body: every PEM read in the process passes here, huge files included.
 */
static int read_text(BIO *in, BUF_MEM *text, const char **label)
{
    char line[256], end[64];
    size_t seen = 0, n, k;

    /* text before the first block is allowed, as in any PEM file */
    do {
        if (seen > MAX_PREAMBLE || BIO_gets(in, line, sizeof(line)) <= 0)
            return 0;
        seen += strlen(line);
        chomp(line);
    } while (strncmp(line, "-----BEGIN ", 11) != 0);
    for (k = 0; k < sizeof(labels) / sizeof(labels[0]); k++)
        if (strncmp(line + 11, labels[k], strlen(labels[k])) == 0 &&
            strcmp(line + 11 + strlen(labels[k]), "-----") == 0)
            break;
    if (k == sizeof(labels) / sizeof(labels[0]))
        return 0; /* somebody else's PEM: a certificate, a key, ... */
    *label = labels[k];
    snprintf(end, sizeof(end), "-----END %s-----", labels[k]);
    for (;;) {
        if (BIO_gets(in, line, sizeof(line)) <= 0)
            return -1;
        chomp(line);
        if (strcmp(line, end) == 0)
            return 1;
        n = strlen(line);
        if (text->length + n > MAX_TEXT || !BUF_MEM_grow(text, text->length + n))
            return -1;
        memcpy(text->data + text->length - n, line, n);
    }
}

/*
 * The DER body of a CTOK URI PEM block at the start of in: 1, or 0 if the first block is not
 * one, or -1 (error raised) if it is one but damaged.
 * The text is decoded in one go into a buffer sized for it: EVP_DecodeUpdate also flushes
 * characters it kept from earlier calls, so a per-line bound does not bound what it writes.
 */
static int read_block(BIO *in, unsigned char **der, int *derlen, const char **label)
{
    BUF_MEM *text = BUF_MEM_new();
    EVP_ENCODE_CTX *b64 = NULL;
    unsigned char *out = NULL;
    int r = text != NULL ? read_text(in, text, label) : -1, n, total = 0, ok = 0;

    if (r == 0)
        goto end;
    b64 = EVP_ENCODE_CTX_new();
    /* 4 base64 characters make at most 3 bytes */
    out = r > 0 ? OPENSSL_malloc(text->length / 4 * 3 + 3) : NULL;
    if (b64 == NULL || out == NULL)
        goto end;
    EVP_DecodeInit(b64);
    if (EVP_DecodeUpdate(b64, out, &total, (unsigned char *)text->data, (int)text->length) < 0 ||
        EVP_DecodeFinal(b64, out + total, &n) < 0)
        goto end;
    *der = out;
    *derlen = total + n;
    out = NULL;
    ok = 1;
end:
    if (r != 0 && !ok) {
        ok = -1;
        CTOK_ERR(CTOK_R_BAD_URI, "a '%s' PEM block is damaged or longer than %d characters", *label,
                 MAX_TEXT);
    }
    EVP_ENCODE_CTX_free(b64);
    OPENSSL_free(out);
    BUF_MEM_free(text);
    return ok;
}

/*
 * The private keys a key reference names: 1 with at least one in *f (free it and u), 2 if
 * only a login could tell (nothing to free), else 0 with the reference's own error raised.
 * The search itself never logs in, and opens only tokens that permit 'use'. ui == NULL
 * (the PEM step) stops there; the DER step, which hands the application its key, then logs
 * in where the key may hide, with the token's configured auth or the application's ui.
 */
static int find_ref(struct decctx *c, char *uri, const struct ctok_ui *ui, struct ctok_uri *u,
                    struct ctok_found **f, size_t *n)
{
    ctok_ctx *tokens = ctok_prov_tokens(c->pctx);
    const unsigned int ref = CTOK_OBJ_PRIVATE | CTOK_FIND_USE;
    int ok = ctok_keyref_uri_parse(uri, u);

    OPENSSL_free(uri);
    if (!ok)
        return 0;
    ok = tokens != NULL ? ctok_find(tokens, u, ref | CTOK_FIND_NO_LOGIN, NULL, f, n) : 0;
    if (ok == 2 && ui != NULL) {
        ctok_found_free(*f, *n);
        ok = ctok_find(tokens, u, ref, ui, f, n);
    }
    if (ok == 1 && *n == 0) {
        CTOK_ERR(CTOK_R_NOT_FOUND, "key reference: no private key matches %s%s%s%s",
                 u->token != NULL ? "token '" : "any token", u->token != NULL ? u->token : "",
                 u->token != NULL ? "'" : "", u->object != NULL ? " with that object label" : "");
        ok = 0;
    }
    if (ok != 1) {
        ctok_found_free(*f, *n);
        ctok_uri_clear(u);
    }
    return ok;
}

/* Does the reference name a private key, as far as can be told without logging in? */
static int resolvable(struct decctx *c, const unsigned char *der, size_t len, const char *label)
{
    char *uri = ctok_keyref_decode(der, len);
    struct ctok_found *f = NULL;
    struct ctok_uri u;
    size_t n = 0;
    int r;

    if (uri == NULL) {
        CTOK_ERR(CTOK_R_BAD_URI, "a '%s' PEM block holds no key reference", label);
        return 0;
    }
    r = find_ref(c, uri, NULL, &u, &f, &n);
    if (r == 1) {
        ctok_found_free(f, n);
        ctok_uri_clear(&u);
    }
    return r != 0;
}

static int pem_decode(void *vc, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                      void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    struct decctx *c = vc;
    OSSL_LIB_CTX *lc = ctok_prov_bio_libctx(c->pctx);
    BIO *in = lc != NULL ? BIO_new_from_core_bio(lc, cin) : NULL;
    unsigned char *der = NULL;
    int len = 0, objtype = OSSL_OBJECT_PKEY, ok = 1, r;
    const char *label = CTOK_KEYREF_PEM_LABEL;

    (void)selection;
    (void)pw_cb;
    (void)pw_cbarg;
    if (in == NULL)
        return 0;
    r = read_block(in, &der, &len, &label);
    if (r != 0) {
        /*
         * A damaged block, or a reference to nothing, fails here with its own error: past
         * this step the file loader decodes by value, and OpenSSL 3.0 drops errors of that
         * path.
         */
        if (r < 0 || !resolvable(c, der, (size_t)len, label)) {
            OPENSSL_free(der);
            BIO_free(in);
            return 0;
        }
    }
    if (der != NULL) {
        OSSL_PARAM p[4] = {
            OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE, "ctok-uri", 0),
            OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, der, (size_t)len),
            OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &objtype), OSSL_PARAM_END};

        CTOK_DBG("decoder: key-reference PEM found");
        ok = data_cb(p, data_cbarg);
    }
    OPENSSL_free(der);
    BIO_free(in);
    return ok; /* empty-handed is not an error */
}

/*
 * A key reference is a private key: the DER step serves a caller that asks for one (or for
 * anything, selection 0) and no other. OpenSSL asks before it puts the step in a decoder
 * context, so parsing a certificate's public key (every certificate a process reads: CA
 * bundles, TLS peers) leaves ctok's DER steps out altogether.
 */
static int uri_does_selection(void *provctx, int selection)
{
    (void)provctx;
    return selection == 0 || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0;
}

/*
 * DER step: the URI in the body, resolved like a STORE URI, restricted to one key type. Only
 * a caller that asks for a private key gets one: reading a reference as a public key (or as
 * anything else) opens no session and logs in nowhere.
 */
static int uri_decode(struct decctx *c, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                      void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    OSSL_LIB_CTX *lc = ctok_prov_bio_libctx(c->pctx);
    BIO *in = lc != NULL ? BIO_new_from_core_bio(lc, cin) : NULL;
    unsigned char buf[MAX_BODY];
    int len = in != NULL ? BIO_read(in, buf, sizeof(buf)) : -1, ok = 1;
    struct ctok_pw_ui pw = {pw_cb, pw_cbarg};
    struct ctok_ui ui = {ctok_pw_get_code, &pw};
    struct ctok_uri u;
    struct ctok_found *f = NULL;
    size_t n = 0;
    char *uri;

    BIO_free(in);
    if (!uri_does_selection(NULL, selection))
        return 1;
    if (len <= 0 || (uri = ctok_keyref_decode(buf, (size_t)len)) == NULL)
        return 1; /* not a key reference: another decoder's business */
    if (find_ref(c, uri, &ui, &u, &f, &n) != 1)
        return 0;
    if (f[0].key_type == c->type || f[0].key_type == CTOK_KT_NONE) {
        struct ctok_pkey *k = ctok_prov_private_key(c->pctx, &u, &f[0], pw_cb, pw_cbarg);

        /* the key's real type is known once it is loaded: other instances take the others */
        ok = k != NULL;
        if (k != NULL && k->type == c->type)
            ok = ctok_prov_emit_key(k, data_cb, data_cbarg);
        ctok_pkey_free(k);
    }
    ctok_found_free(f, n);
    ctok_uri_clear(&u);
    return ok;
}

#define URI_DECODER(fam, T)                                                                        \
    static void *fam##_newctx(void *provctx)                                                       \
    {                                                                                              \
        struct decctx *c = dec_newctx(provctx);                                                    \
        if (c != NULL)                                                                             \
            c->type = T;                                                                           \
        return c;                                                                                  \
    }                                                                                              \
    static int fam##_decode(void *vc, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *cb,        \
                            void *cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)          \
    {                                                                                              \
        return uri_decode(vc, cin, selection, cb, cbarg, pw_cb, pw_cbarg);                         \
    }                                                                                              \
    const OSSL_DISPATCH ctok_##fam##_uri_decoder_functions[] = {                                   \
        {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))uri_does_selection},                    \
        {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))fam##_newctx},                                  \
        {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx},                                  \
        {OSSL_FUNC_DECODER_DECODE, (void (*)(void))fam##_decode},                                  \
        {0, NULL}};

URI_DECODER(rsa, CTOK_KT_RSA)
URI_DECODER(rsapss, CTOK_KT_RSA_PSS)
URI_DECODER(ec, CTOK_KT_EC)
URI_DECODER(ed25519, CTOK_KT_ED25519)

const OSSL_DISPATCH ctok_pem_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))pem_decode},
    {0, NULL}};

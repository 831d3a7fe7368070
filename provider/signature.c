/*
 * Signatures under ctok's private names (CTOK-RSA, CTOK-ECDSA, CTOK-ED25519): only
 * ctok's keymgmt asks for them. A token key signs on its token, digest-first: ctok
 * hashes in software and the backend signs the digest. Everything else (verification,
 * and every operation of pass-through keys) is delegated to an inner context in the
 * child library context, so its parameters mean exactly what OpenSSL says they mean.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "prov.h"

static OSSL_FUNC_signature_freectx_fn sig_freectx;
static OSSL_FUNC_signature_dupctx_fn sig_dupctx;
static OSSL_FUNC_signature_sign_init_fn sig_sign_init;
static OSSL_FUNC_signature_sign_fn sig_sign;
static OSSL_FUNC_signature_verify_init_fn sig_verify_init;
static OSSL_FUNC_signature_verify_fn sig_verify;
static OSSL_FUNC_signature_verify_recover_init_fn sig_verify_recover_init;
static OSSL_FUNC_signature_verify_recover_fn sig_verify_recover;
static OSSL_FUNC_signature_digest_sign_init_fn sig_digest_sign_init;
static OSSL_FUNC_signature_digest_sign_update_fn sig_digest_sign_update;
static OSSL_FUNC_signature_digest_sign_final_fn sig_digest_sign_final;
static OSSL_FUNC_signature_digest_sign_fn sig_digest_sign;
static OSSL_FUNC_signature_digest_verify_init_fn sig_digest_verify_init;
static OSSL_FUNC_signature_digest_verify_update_fn sig_digest_verify_update;
static OSSL_FUNC_signature_digest_verify_final_fn sig_digest_verify_final;
static OSSL_FUNC_signature_digest_verify_fn sig_digest_verify;
static OSSL_FUNC_signature_get_ctx_params_fn sig_get_ctx_params;
static OSSL_FUNC_signature_gettable_ctx_params_fn sig_gettable_ctx_params;
static OSSL_FUNC_signature_set_ctx_params_fn sig_set_ctx_params;
static OSSL_FUNC_signature_settable_ctx_params_fn sig_settable_ctx_params;

struct sigctx {
    struct ctok_provctx *pctx;
    struct ctok_pkey *key;
    /* delegate mode */
    EVP_PKEY_CTX *inner;
    EVP_MD_CTX *inner_md; /* owns its EVP_PKEY_CTX */
    /* token mode: signing with a token key */
    int token;
    EVP_MD *md;
    EVP_MD_CTX *mdctx;
    EVP_MD *mgf1;
    int pad;
    int saltlen;
    /* the message of a DigestSign, kept when the key may need it (CTOK_KEY_WANTS_MESSAGE) */
    int keep_msg;
    uint8_t *msg;
    size_t msglen, msgcap;
};

/* A kept message beyond this is refused: the token would have to take it in one C_Sign. */
#define MAX_KEPT_MESSAGE ((size_t)64 << 20)

static void *sig_newctx(void *provctx, const char *propq)
{
    struct sigctx *c = calloc(1, sizeof(*c));

    (void)propq;
    if (c != NULL)
        c->pctx = provctx;
    return c;
}

static void reset(struct sigctx *c)
{
    ctok_pkey_free(c->key);
    EVP_PKEY_CTX_free(c->inner);
    EVP_MD_CTX_free(c->inner_md);
    EVP_MD_free(c->md);
    EVP_MD_CTX_free(c->mdctx);
    EVP_MD_free(c->mgf1);
    c->key = NULL;
    c->inner = NULL;
    c->inner_md = NULL;
    c->md = NULL;
    c->mdctx = NULL;
    c->mgf1 = NULL;
    c->token = 0;
    free(c->msg); /* a message is no secret */
    c->msg = NULL;
    c->msglen = c->msgcap = 0;
    c->keep_msg = 0;
}

static void sig_freectx(void *vc)
{
    struct sigctx *c = vc;

    if (c == NULL)
        return;
    reset(c);
    free(c);
}

/* EVP_MD_CTX_dup arrived in OpenSSL 3.1 */
static EVP_MD_CTX *md_ctx_dup(const EVP_MD_CTX *src)
{
    EVP_MD_CTX *d = EVP_MD_CTX_new();

    if (d != NULL && !EVP_MD_CTX_copy_ex(d, src)) {
        EVP_MD_CTX_free(d);
        d = NULL;
    }
    return d;
}

static void *sig_dupctx(void *vc)
{
    struct sigctx *src = vc, *c = sig_newctx(src->pctx, NULL);

    if (c == NULL)
        return NULL;
    c->token = src->token;
    c->pad = src->pad;
    c->saltlen = src->saltlen;
    c->keep_msg = src->keep_msg;
    if (src->msglen > 0) {
        c->msg = malloc(src->msglen);
        if (c->msg == NULL) {
            sig_freectx(c);
            return NULL;
        }
        memcpy(c->msg, src->msg, src->msglen);
        c->msglen = c->msgcap = src->msglen;
    }
    if (src->md != NULL && EVP_MD_up_ref(src->md))
        c->md = src->md;
    if (src->mgf1 != NULL && EVP_MD_up_ref(src->mgf1))
        c->mgf1 = src->mgf1;
    if ((src->md != NULL && c->md == NULL) || (src->mgf1 != NULL && c->mgf1 == NULL) ||
        (src->key != NULL && (c->key = ctok_pkey_copy(src->key)) == NULL) ||
        (src->inner != NULL && (c->inner = EVP_PKEY_CTX_dup(src->inner)) == NULL) ||
        (src->inner_md != NULL && (c->inner_md = md_ctx_dup(src->inner_md)) == NULL) ||
        (src->mdctx != NULL && (c->mdctx = md_ctx_dup(src->mdctx)) == NULL)) {
        sig_freectx(c);
        return NULL;
    }
    return c;
}

static const char *kind(const struct ctok_pkey *k)
{
    return k->tok != NULL ? "token key" : "pass-through key";
}

/* Sets up c for an operation on key k; returns 1 if the token signs (token mode). */
static int begin(struct sigctx *c, void *vkey, const char *fn)
{
    struct ctok_pkey *k = vkey;

    if (k == NULL || k->pkey == NULL)
        return -1;
    CTOK_DBG("signature: %s (%s %s)", fn, ctok_key_type_name(k->type), kind(k));
    reset(c);
    c->key = ctok_pkey_copy(k);
    if (c->key == NULL)
        return -1;
    return k->tok != NULL;
}

static int new_inner(struct sigctx *c)
{
    c->inner = EVP_PKEY_CTX_new_from_pkey(ctok_prov_child(c->pctx), c->key->pkey, c->pctx->propq);
    return c->inner != NULL;
}

/* ---- token mode parameters ---- */

static int is_rsa(const struct sigctx *c)
{
    return c->key->type == CTOK_KT_RSA || c->key->type == CTOK_KT_RSA_PSS;
}

static int fetch_md(struct sigctx *c, const char *name, EVP_MD **dst)
{
    EVP_MD *md = ctok_prov_md(c->pctx, name);

    if (md == NULL) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s', key '%s': unknown digest '%s'",
                 ctok_token_name(ctok_key_token(c->key->tok)), ctok_key_label(c->key->tok), name);
        return 0;
    }
    EVP_MD_free(*dst);
    *dst = md;
    return 1;
}

static const struct ctok_param_name pad_names[] = {{"none", RSA_NO_PADDING},
                                                   {"pkcs1", RSA_PKCS1_PADDING},
                                                   {"pss", RSA_PKCS1_PSS_PADDING},
                                                   {"oaep", RSA_PKCS1_OAEP_PADDING},
                                                   {"x931", RSA_X931_PADDING}};

static const struct ctok_param_name salt_names[] = {{"digest", RSA_PSS_SALTLEN_DIGEST},
                                                    {"max", RSA_PSS_SALTLEN_MAX},
                                                    {"auto", RSA_PSS_SALTLEN_AUTO},
                                                    {"auto-digestmax", -4}};

static int token_set_params(struct sigctx *c, const OSSL_PARAM params[])
{
    const OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL) {
        char name[64];

        if (!ctok_param_utf8(p, name, sizeof(name)) || !fetch_md(c, name, &c->md))
            return 0;
        if (c->mdctx != NULL && !EVP_DigestInit_ex2(c->mdctx, c->md, NULL))
            return 0;
    }
    if (!is_rsa(c))
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL) {
        int mode = -1;

        if (!ctok_param_int_or_name(p, pad_names, sizeof(pad_names) / sizeof(pad_names[0]), 0,
                                    &mode))
            return 0;
        if (mode != RSA_PKCS1_PADDING && mode != RSA_PKCS1_PSS_PADDING && mode != RSA_NO_PADDING) {
            CTOK_ERR(CTOK_R_UNSUPPORTED,
                     "token '%s', key '%s': RSA padding mode not supported "
                     "for signing (use pkcs1, pss or none)",
                     ctok_token_name(ctok_key_token(c->key->tok)), ctok_key_label(c->key->tok));
            return 0;
        }
        if (c->key->type == CTOK_KT_RSA_PSS && mode != RSA_PKCS1_PSS_PADDING) {
            CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s', key '%s': an RSA-PSS key signs only with PSS",
                     ctok_token_name(ctok_key_token(c->key->tok)), ctok_key_label(c->key->tok));
            return 0;
        }
        c->pad = mode;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL) {
        int len = -100;

        if (!ctok_param_int_or_name(p, salt_names, sizeof(salt_names) / sizeof(salt_names[0]), 1,
                                    &len))
            return 0;
        if (len < -4)
            return 0;
        c->saltlen = len;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
        char name[64];

        if (!ctok_param_utf8(p, name, sizeof(name)) || !fetch_md(c, name, &c->mgf1))
            return 0;
    }
    return 1;
}

/* The PSS salt length in bytes for signing, from the requested value. */
static int resolved_salt(const struct sigctx *c)
{
    int hlen = c->md != NULL ? EVP_MD_get_size(c->md) : 32;
    int emlen = (EVP_PKEY_get_bits(c->key->pkey) - 1 + 7) / 8;
    int max = emlen - hlen - 2;

    switch (c->saltlen) {
    case RSA_PSS_SALTLEN_DIGEST:
        return hlen;
    case RSA_PSS_SALTLEN_MAX:
    case RSA_PSS_SALTLEN_AUTO:
        return max;
    case -4:
        return hlen < max ? hlen : max;
    }
    return c->saltlen;
}

/*
 * An RSA-PSS key's restrictions as OpenSSL applies them: its digest unless the caller
 * named one, and its salt length (verifiers of such a key expect exactly that one).
 */
static int pss_restrictions(struct sigctx *c, int md_given)
{
    char name[64];
    int salt;

    if (c->key->type != CTOK_KT_RSA_PSS)
        return 1;
    ERR_set_mark();
    if (EVP_PKEY_get_int_param(c->key->pkey, OSSL_PKEY_PARAM_RSA_PSS_SALTLEN, &salt) && salt >= 0)
        c->saltlen = salt;
    if (!EVP_PKEY_get_utf8_string_param(c->key->pkey, OSSL_PKEY_PARAM_RSA_DIGEST, name,
                                        sizeof(name), NULL))
        name[0] = '\0';
    ERR_pop_to_mark();
    if (md_given || name[0] == '\0')
        return 1;
    return fetch_md(c, name, &c->md) && fetch_md(c, name, &c->mgf1) &&
           (c->mdctx == NULL || EVP_DigestInit_ex2(c->mdctx, c->md, NULL));
}

static int token_init(struct sigctx *c, int md_given, const OSSL_PARAM params[])
{
    c->token = 1;
    c->pad = c->key->type == CTOK_KT_RSA_PSS ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING;
    c->saltlen = RSA_PSS_SALTLEN_AUTO; /* rule use: ctok_key_sign checks it */
    return pss_restrictions(c, md_given) && token_set_params(c, params);
}

/*
 * Raw RSA (pad-mode none) signs a block exactly the modulus size and numerically below the
 * modulus, as OpenSSL's RSA does; a token would left-pad a shorter block, or fail with a reason
 * of its own. Checked here so that every backend behaves the same.
 */
static int raw_input_ok(const struct sigctx *c, const unsigned char *tbs, size_t tbslen)
{
    size_t nlen = (size_t)(EVP_PKEY_get_bits(c->key->pkey) + 7) / 8;
    BIGNUM *n = NULL, *m = NULL;
    const char *why = NULL;

    if (tbslen != nlen) {
        why = tbslen < nlen ? "shorter than" : "longer than";
    } else if (!EVP_PKEY_get_bn_param(c->key->pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
               (m = BN_bin2bn(tbs, (int)tbslen, NULL)) == NULL) {
        why = "not comparable with";
    } else if (BN_cmp(m, n) >= 0) {
        why = "numerically not below";
    }
    BN_free(n);
    BN_free(m);
    if (why != NULL)
        CTOK_ERR(CTOK_R_INVALID_ARG,
                 "token '%s', key '%s': raw RSA input of %zu bytes is %s the %zu-byte modulus",
                 ctok_token_name(ctok_key_token(c->key->tok)), ctok_key_label(c->key->tok), tbslen,
                 why, nlen);
    return why == NULL;
}

/* msg: the message tbs is the digest of, when kept (DigestSign), else NULL. */
static int token_sign(struct sigctx *c, unsigned char *sig, size_t *siglen, size_t sigsize,
                      const unsigned char *tbs, size_t tbslen, const uint8_t *msg, size_t msglen)
{
    struct ctok_sig_params sp = {c->pad, c->md, c->mgf1 != NULL ? c->mgf1 : c->md, 0, msg, msglen};
    size_t max = ctok_pkey_max_size(c->key);

    if (sig == NULL) {
        *siglen = max;
        return 1;
    }
    if (sigsize < max) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "signature buffer too small (%zu < %zu)", sigsize, max);
        return 0;
    }
    if (c->md != NULL && c->key->type != CTOK_KT_ED25519 &&
        tbslen != (size_t)EVP_MD_get_size(c->md)) {
        CTOK_ERR(CTOK_R_INVALID_ARG,
                 "token '%s', key '%s': data to sign is %zu bytes, the %s "
                 "digest is %d",
                 ctok_token_name(ctok_key_token(c->key->tok)), ctok_key_label(c->key->tok), tbslen,
                 EVP_MD_get0_name(c->md), EVP_MD_get_size(c->md));
        return 0;
    }
    if (c->pad == RSA_NO_PADDING && !raw_input_ok(c, tbs, tbslen))
        return 0;
    if (c->pad == RSA_PKCS1_PSS_PADDING)
        sp.saltlen = resolved_salt(c);
    *siglen = sigsize;
    return ctok_key_sign(c->key->tok, &sp, tbs, tbslen, sig, siglen);
}

/* ---- sign / verify on digests ---- */

static int sig_sign_init(void *vc, void *vkey, const OSSL_PARAM params[])
{
    struct sigctx *c = vc;
    int t = begin(c, vkey, "sign_init");

    if (t < 0)
        return 0;
    if (t)
        return token_init(c, 1, params);
    return new_inner(c) && EVP_PKEY_sign_init_ex(c->inner, params) > 0;
}

static int sig_sign(void *vc, unsigned char *sig, size_t *siglen, size_t sigsize,
                    const unsigned char *tbs, size_t tbslen)
{
    struct sigctx *c = vc;

    if (c->token)
        return token_sign(c, sig, siglen, sigsize, tbs, tbslen, NULL, 0);
    *siglen = sigsize;
    return EVP_PKEY_sign(c->inner, sig, siglen, tbs, tbslen) > 0;
}

static int sig_verify_init(void *vc, void *vkey, const OSSL_PARAM params[])
{
    struct sigctx *c = vc;

    return begin(c, vkey, "verify_init") >= 0 && new_inner(c) &&
           EVP_PKEY_verify_init_ex(c->inner, params) > 0;
}

static int sig_verify(void *vc, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
                      size_t tbslen)
{
    struct sigctx *c = vc;

    return EVP_PKEY_verify(c->inner, sig, siglen, tbs, tbslen) > 0;
}

static int sig_verify_recover_init(void *vc, void *vkey, const OSSL_PARAM params[])
{
    struct sigctx *c = vc;

    return begin(c, vkey, "verify_recover_init") >= 0 && new_inner(c) &&
           EVP_PKEY_verify_recover_init_ex(c->inner, params) > 0;
}

static int sig_verify_recover(void *vc, unsigned char *rout, size_t *routlen, size_t routsize,
                              const unsigned char *sig, size_t siglen)
{
    struct sigctx *c = vc;

    *routlen = routsize;
    return EVP_PKEY_verify_recover(c->inner, rout, routlen, sig, siglen) > 0;
}

/* ---- digest-sign / digest-verify ---- */

static int inner_digest_init(struct sigctx *c, const char *mdname, int sign,
                             const OSSL_PARAM params[])
{
    c->inner_md = EVP_MD_CTX_new();
    if (c->inner_md == NULL)
        return 0;
    return sign ? EVP_DigestSignInit_ex(c->inner_md, NULL, mdname, ctok_prov_child(c->pctx),
                                        c->pctx->propq, c->key->pkey, params) > 0
                : EVP_DigestVerifyInit_ex(c->inner_md, NULL, mdname, ctok_prov_child(c->pctx),
                                          c->pctx->propq, c->key->pkey, params) > 0;
}

static int sig_digest_sign_init(void *vc, const char *mdname, void *vkey, const OSSL_PARAM params[])
{
    struct sigctx *c = vc;
    int t = begin(c, vkey, "digest_sign_init");

    if (t < 0)
        return 0;
    if (!t)
        return inner_digest_init(c, mdname, 1, params);
    if (mdname != NULL && *mdname != '\0') {
        if (c->key->type == CTOK_KT_ED25519) {
            CTOK_ERR(CTOK_R_INVALID_ARG, "Ed25519 signs the message itself: no digest");
            return 0;
        }
        if (!fetch_md(c, mdname, &c->md))
            return 0;
    }
    if (c->key->type != CTOK_KT_ED25519) {
        if (c->md == NULL && !fetch_md(c, "SHA256", &c->md))
            return 0;
        c->mdctx = EVP_MD_CTX_new();
        if (c->mdctx == NULL || !EVP_DigestInit_ex2(c->mdctx, c->md, NULL))
            return 0;
        c->keep_msg = (ctok_key_flags(c->key->tok) & CTOK_KEY_WANTS_MESSAGE) != 0;
    }
    return token_init(c, mdname != NULL && *mdname != '\0', params);
}

/* Appends to the kept message (keys that sign the message itself on the token). */
static int keep(struct sigctx *c, const unsigned char *data, size_t len)
{
    if (len > MAX_KEPT_MESSAGE - c->msglen) {
        CTOK_ERR(CTOK_R_INVALID_ARG,
                 "token '%s', key '%s': the key signs the whole message on the token, and "
                 "ctok keeps at most %zu MiB of it",
                 ctok_token_name(ctok_key_token(c->key->tok)), ctok_key_label(c->key->tok),
                 MAX_KEPT_MESSAGE >> 20);
        return 0;
    }
    if (c->msglen + len > c->msgcap) {
        size_t cap = c->msgcap > 0 ? c->msgcap : 4096;
        uint8_t *m;

        while (cap < c->msglen + len)
            cap *= 2;
        if (cap > MAX_KEPT_MESSAGE)
            cap = MAX_KEPT_MESSAGE;
        if ((m = realloc(c->msg, cap)) == NULL)
            return 0;
        c->msg = m;
        c->msgcap = cap;
    }
    memcpy(c->msg + c->msglen, data, len);
    c->msglen += len;
    return 1;
}

static int sig_digest_sign_update(void *vc, const unsigned char *data, size_t len)
{
    struct sigctx *c = vc;

    if (!c->token)
        return EVP_DigestSignUpdate(c->inner_md, data, len) > 0;
    if (c->keep_msg && len > 0 && !keep(c, data, len))
        return 0;
    return c->mdctx != NULL && EVP_DigestUpdate(c->mdctx, data, len);
}

static int sig_digest_sign_final(void *vc, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    struct sigctx *c = vc;
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen;

    if (!c->token) {
        *siglen = sigsize;
        return EVP_DigestSignFinal(c->inner_md, sig, siglen) > 0;
    }
    if (sig == NULL) /* a size query must not finalize */
        return token_sign(c, NULL, siglen, 0, NULL, 0, NULL, 0);
    if (c->mdctx == NULL || !EVP_DigestFinal_ex(c->mdctx, dgst, &dlen))
        return 0;
    /* an empty kept message is still the message: never NULL when kept */
    return token_sign(c, sig, siglen, sigsize, dgst, dlen,
                      c->keep_msg ? (c->msg != NULL ? c->msg : dgst) : NULL, c->msglen);
}

static int sig_digest_sign(void *vc, unsigned char *sig, size_t *siglen, size_t sigsize,
                           const unsigned char *tbs, size_t tbslen)
{
    struct sigctx *c = vc;

    if (!c->token) {
        *siglen = sigsize;
        return EVP_DigestSign(c->inner_md, sig, siglen, tbs, tbslen) > 0;
    }
    if (c->key->type != CTOK_KT_ED25519)
        return sig_digest_sign_update(c, tbs, tbslen) &&
               sig_digest_sign_final(c, sig, siglen, sigsize);
    return token_sign(c, sig, siglen, sigsize, tbs, tbslen, NULL, 0);
}

static int sig_digest_verify_init(void *vc, const char *mdname, void *vkey,
                                  const OSSL_PARAM params[])
{
    struct sigctx *c = vc;

    return begin(c, vkey, "digest_verify_init") >= 0 && inner_digest_init(c, mdname, 0, params);
}

static int sig_digest_verify_update(void *vc, const unsigned char *data, size_t len)
{
    struct sigctx *c = vc;

    return EVP_DigestVerifyUpdate(c->inner_md, data, len) > 0;
}

static int sig_digest_verify_final(void *vc, const unsigned char *sig, size_t siglen)
{
    struct sigctx *c = vc;

    return EVP_DigestVerifyFinal(c->inner_md, sig, siglen) > 0;
}

static int sig_digest_verify(void *vc, const unsigned char *sig, size_t siglen,
                             const unsigned char *tbs, size_t tbslen)
{
    struct sigctx *c = vc;

    return EVP_DigestVerify(c->inner_md, sig, siglen, tbs, tbslen) > 0;
}

/* ---- parameters ---- */

static EVP_PKEY_CTX *inner_pkey_ctx(struct sigctx *c)
{
    return c->inner_md != NULL ? EVP_MD_CTX_get_pkey_ctx(c->inner_md) : c->inner;
}

/*
 * The token key's public half imported anew into the child context's own key manager
 * (provider!=ctok). Whatever key manager holds c->key->pkey (a backend may have decoded it
 * anywhere; with base loaded the application's context gave ctok's own EC key manager), the
 * verify context below is then OpenSSL's.
 */
static EVP_PKEY *child_public(struct sigctx *c)
{
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *f = NULL;
    EVP_PKEY *k = NULL;

    if (EVP_PKEY_todata(c->key->pkey, EVP_PKEY_PUBLIC_KEY, &params) &&
        (f = EVP_PKEY_CTX_new_from_name(ctok_prov_child(c->pctx),
                                        EVP_PKEY_get0_type_name(c->key->pkey), c->pctx->propq)) !=
            NULL &&
        EVP_PKEY_fromdata_init(f) > 0)
        (void)EVP_PKEY_fromdata(f, &k, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(f);
    OSSL_PARAM_free(params);
    return k;
}

/*
 * The AlgorithmIdentifier of what the token will sign: asked of a verify context on the
 * public key set up with the same parameters, so it is the encoding OpenSSL itself uses.
 */
static int token_algorithm_id(struct sigctx *c, OSSL_PARAM *p)
{
    static const unsigned char ed25519_aid[] = {0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70};
    EVP_PKEY_CTX *v = NULL;
    EVP_PKEY *pub;
    OSSL_PARAM q[6], *qp = q;
    int salt = resolved_salt(c), ok;

    if (c->key->type == CTOK_KT_ED25519)
        return OSSL_PARAM_set_octet_string(p, ed25519_aid, sizeof(ed25519_aid));
    if ((pub = child_public(c)) != NULL)
        v = EVP_PKEY_CTX_new_from_pkey(ctok_prov_child(c->pctx), pub, c->pctx->propq);
    EVP_PKEY_free(pub); /* v holds its own reference */
    if (c->md != NULL)
        *qp++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST,
                                                 (char *)EVP_MD_get0_name(c->md), 0);
    if (is_rsa(c)) {
        *qp++ = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PAD_MODE, &c->pad);
        if (c->pad == RSA_PKCS1_PSS_PADDING) {
            *qp++ = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, &salt);
            if (c->mgf1 != NULL)
                *qp++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST,
                                                         (char *)EVP_MD_get0_name(c->mgf1), 0);
        }
    }
    *qp = OSSL_PARAM_construct_end();
    ok = v != NULL && EVP_PKEY_verify_init_ex(v, q) > 0;
    if (ok) {
        OSSL_PARAM r[2] = {*p, OSSL_PARAM_END};

        ok = EVP_PKEY_CTX_get_params(v, r);
        p->return_size = r[0].return_size;
    }
    EVP_PKEY_CTX_free(v);
    if (!ok)
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s', key '%s': no signature AlgorithmIdentifier for %s with %s",
                 ctok_token_name(ctok_key_token(c->key->tok)), ctok_key_label(c->key->tok),
                 ctok_key_type_name(c->key->type), c->md != NULL ? EVP_MD_get0_name(c->md) : "-");
    return ok;
}

static int sig_get_ctx_params(void *vc, OSSL_PARAM params[])
{
    struct sigctx *c = vc;
    OSSL_PARAM *p;

    if (c->key == NULL)
        return 0;
    if (!c->token)
        return EVP_PKEY_CTX_get_params(inner_pkey_ctx(c), params);
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) != NULL &&
        !token_algorithm_id(c, p))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL &&
        !OSSL_PARAM_set_utf8_string(p, c->md != NULL ? EVP_MD_get0_name(c->md) : ""))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST_SIZE)) != NULL &&
        !OSSL_PARAM_set_size_t(p, c->md != NULL ? (size_t)EVP_MD_get_size(c->md) : 0))
        return 0;
    if (!is_rsa(c))
        return 1;
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL) {
        if (p->data_type == OSSL_PARAM_INTEGER) {
            if (!OSSL_PARAM_set_int(p, c->pad))
                return 0;
        } else {
            for (size_t i = 0; i < sizeof(pad_names) / sizeof(pad_names[0]); i++)
                if (pad_names[i].value == c->pad &&
                    !OSSL_PARAM_set_utf8_string(p, pad_names[i].name))
                    return 0;
        }
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL) {
        if (p->data_type == OSSL_PARAM_INTEGER) {
            if (!OSSL_PARAM_set_int(p, c->saltlen))
                return 0;
        } else {
            char buf[16];

            snprintf(buf, sizeof(buf), "%d", resolved_salt(c));
            if (!OSSL_PARAM_set_utf8_string(p, buf))
                return 0;
        }
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
        const EVP_MD *m = c->mgf1 != NULL ? c->mgf1 : c->md;

        if (!OSSL_PARAM_set_utf8_string(p, m != NULL ? EVP_MD_get0_name(m) : ""))
            return 0;
    }
    return 1;
}

static int sig_set_ctx_params(void *vc, const OSSL_PARAM params[])
{
    struct sigctx *c = vc;

    if (params == NULL || params[0].key == NULL)
        return 1;
    if (c->key == NULL)
        return 0;
    if (!c->token)
        return EVP_PKEY_CTX_set_params(inner_pkey_ctx(c), params);
    return token_set_params(c, params);
}

static const OSSL_PARAM *sig_gettable_ctx_params(void *vc, void *provctx)
{
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_size_t(OSSL_SIGNATURE_PARAM_DIGEST_SIZE, NULL),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_END};

    (void)vc;
    (void)provctx;
    return p;
}

static const OSSL_PARAM *sig_settable_ctx_params(void *vc, void *provctx)
{
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES, NULL, 0),
        OSSL_PARAM_END};

    (void)vc;
    (void)provctx;
    return p;
}

#define SIG_COMMON                                                                                 \
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))sig_newctx},                                      \
        {OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))sig_freectx},                                \
        {OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))sig_dupctx},                                  \
        {OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))sig_sign_init},                            \
        {OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))sig_sign},                                      \
        {OSSL_FUNC_SIGNATURE_VERIFY_INIT, (void (*)(void))sig_verify_init},                        \
        {OSSL_FUNC_SIGNATURE_VERIFY, (void (*)(void))sig_verify},                                  \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))sig_digest_sign_init},              \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))sig_digest_verify_init},          \
        {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))sig_get_ctx_params},                  \
        {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))sig_gettable_ctx_params},        \
        {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))sig_set_ctx_params},                  \
    {                                                                                              \
        OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))sig_settable_ctx_params           \
    }

#define SIG_STREAMING                                                                              \
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))sig_digest_sign_update},              \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))sig_digest_sign_final},            \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))sig_digest_verify_update},      \
    {                                                                                              \
        OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, (void (*)(void))sig_digest_verify_final           \
    }

const OSSL_DISPATCH ctok_rsa_signature_functions[] = {
    SIG_COMMON,
    SIG_STREAMING,
    {OSSL_FUNC_SIGNATURE_VERIFY_RECOVER_INIT, (void (*)(void))sig_verify_recover_init},
    {OSSL_FUNC_SIGNATURE_VERIFY_RECOVER, (void (*)(void))sig_verify_recover},
    {0, NULL}};

const OSSL_DISPATCH ctok_ecdsa_signature_functions[] = {SIG_COMMON, SIG_STREAMING, {0, NULL}};

/* Ed25519 is one-shot only: no streaming functions, as in OpenSSL's own. */
const OSSL_DISPATCH ctok_ed25519_signature_functions[] = {
    SIG_COMMON,
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))sig_digest_sign},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, (void (*)(void))sig_digest_verify},
    {0, NULL}};

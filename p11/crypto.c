/*
 * Mechanisms (PKCS#11 "signing", "decryption", "key derivation"): digest-first signing
 * with the token's raw mechanisms, RSA decryption, ECDH. One helper runs an operation on
 * a pooled session and, after a connection failure, recovers and retries it once.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "p11.h"

typedef CK_RV (*p11_op_fn)(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, void *arg);

/* The session copy of token object obj (with CKA_ID id) in session s. Lock held. */
static struct p11_copy *copy_of(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                                const ctok_key *key)
{
    for (size_t i = 0; i < pt->n_copies; i++) {
        struct p11_copy *c = &pt->copies[i];

        if (c->s == s && c->obj == obj && c->id_len == key->id_len &&
            memcmp(c->id, key->id, key->id_len) == 0)
            return c;
    }
    return NULL;
}

/*
 * The key to sign with in session s: a session copy of the private key made in s itself
 * (C_CopyObject, CKA_TOKEN false), once per pooled session and token object. Modules sign
 * with in-memory session objects much faster than with token objects they must read back,
 * and SoftHSM fastest with a copy owned by the signing session: ECDSA P-256 21k/s against
 * 17k/s with a copy shared by all sessions and 12.8k/s with the token object. The copy is
 * the token object's, not the key handle's: one copy per key handle piled up (4,000 loads
 * of a key left 4,003 private-key objects and RSS 9 -> 42 MB), and destroying it with the
 * handle still grows SoftHSM, which frees a destroyed session object only at C_Finalize.
 * Copies die with their session (closed by the one thread holding it) or module
 * generation, so none is destroyed under a signature. A module that refuses copies is
 * used with the token object.
 */
static CK_RV key_handle(struct p11_tok *pt, ctok_key *key, CK_SESSION_HANDLE s, unsigned int gen,
                        CK_OBJECT_HANDLE *h)
{
    struct p11_key *k = key->be_data;
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE t = {CKA_TOKEN, &no, sizeof(no)};
    CK_OBJECT_HANDLE obj, copy = CK_INVALID_HANDLE;
    struct p11_copy *c;
    CK_RV rv = CKR_OK;
    int refused;

    /* k->h changes only with the generation, and not while a region of this one is open */
    if (__atomic_load_n(&k->gen, __ATOMIC_ACQUIRE) == gen) {
        obj = __atomic_load_n(&k->h, __ATOMIC_RELAXED);
    } else {
        pthread_mutex_lock(&k->lock);
        if (k->gen != gen && (rv = ctok_p11_find_key(pt, s, CKO_PRIVATE_KEY, key->id, key->id_len,
                                                     &obj)) == CKR_OK) {
            __atomic_store_n(&k->h, obj, __ATOMIC_RELAXED);
            __atomic_store_n(&k->gen, gen, __ATOMIC_RELEASE);
        }
        obj = k->h;
        pthread_mutex_unlock(&k->lock);
        if (rv != CKR_OK)
            return rv;
    }
    refused = __atomic_load_n(&k->copy_refused, __ATOMIC_RELAXED);
    *h = obj;
    pthread_mutex_lock(&pt->lock);
    if ((c = copy_of(pt, s, obj, key)) != NULL)
        *h = c->h;
    pthread_mutex_unlock(&pt->lock);
    if (c != NULL)
        return CKR_OK;
    if (refused || P11_QUIET(pt->m, C_CopyObject, (s, obj, &t, 1, &copy)) != CKR_OK) {
        if (!refused) {
            CTOK_DBG("pkcs11: token '%s': the module makes no session copy of '%s': signing with "
                     "the token object",
                     ctok_token_name(pt->tok), key->label);
            __atomic_store_n(&k->copy_refused, 1, __ATOMIC_RELAXED);
        }
        return CKR_OK;
    }
    pthread_mutex_lock(&pt->lock);
    /* s is this thread's: no other copy of obj in s can have been made meanwhile */
    if (gen == pt->gen && pt->n_copies < sizeof(pt->copies) / sizeof(pt->copies[0])) {
        c = &pt->copies[pt->n_copies++];
        c->s = s;
        c->obj = obj;
        memcpy(c->id, key->id, key->id_len);
        c->id_len = key->id_len;
        c->h = *h = copy;
        copy = CK_INVALID_HANDLE;
    }
    pthread_mutex_unlock(&pt->lock);
    if (copy != CK_INVALID_HANDLE) /* no room: the token object serves */
        (void)P11_QUIET(pt->m, C_DestroyObject, (s, copy));
    return CKR_OK;
}

/*
 * Runs op on a pooled session. A connection failure (also while finding the key again)
 * re-initializes the module outside the region and retries the operation once.
 */
static const char FINDING[] = "finding the key";

static int run(ctok_key *key, const char *what, p11_op_fn op, void *arg)
{
    struct p11_tok *pt = P11TOK(key->tok);
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE h;
    unsigned int gen = 0;
    CK_RV rv = CKR_OK;
    const char *step = what;

    for (int attempt = 0; attempt < 2; attempt++) {
        if (!ctok_token_is_active(key->tok)) {
            char why[400];

            ctok_token_inactive_why(key->tok, why, sizeof(why));
            CTOK_ERR(CTOK_R_NO_CODE,
                     "token '%s', key '%s': the token was reconnected and must be activated "
                     "again (%s)",
                     ctok_token_name(key->tok), key->label, why);
            return 0;
        }
        if (!ctok_p11_enter_token(pt))
            return 0;
        if (!ctok_p11_session_get(pt, &s, &gen, &rv)) {
            ctok_p11_leave(pt->m);
            if (rv == CKR_OK)
                return 0; /* the slot is gone or login failed: already reported */
            step = "C_OpenSession";
        } else {
            rv = key_handle(pt, key, s, gen, &h);
            step = rv == CKR_OK ? what : FINDING;
            if (rv == CKR_OK) {
                ctok_p11_forget_failed();
                rv = op(pt, s, h, arg);
                step = rv == CKR_OK ? what : ctok_p11_last_failed(what, NULL);
            }
            ctok_p11_session_put(pt, s, gen);
            ctok_p11_leave(pt->m);
        }
        if (rv == CKR_OK)
            return 1;
        if (rv == CKR_KEY_HANDLE_INVALID && step == FINDING) {
            CTOK_ERR(CTOK_R_NOT_FOUND,
                     "token '%s', key '%s': the private key is no longer on "
                     "the token",
                     ctok_token_name(key->tok), key->label);
            return 0;
        }
        /* recovery happens outside the region: re-initialization waits for all to leave */
        if (attempt > 0 || !ctok_p11_rv_is_disconnect(rv) || !ctok_p11_recover(pt, gen, rv, step))
            break;
    }
    if (!ctok_token_is_active(key->tok))
        CTOK_ERR(CTOK_R_NO_CODE,
                 "token '%s', key '%s': the token was reconnected and must be "
                 "activated again",
                 ctok_token_name(key->tok), key->label);
    else
        CTOK_ERR(CTOK_R_BACKEND, "token '%s', key '%s': %s failed: %s", ctok_token_name(key->tok),
                 key->label, step, ctok_p11_rv_name(rv));
    return 0;
}

static int md_mechs(const EVP_MD *md, CK_MECHANISM_TYPE *hash, CK_RSA_PKCS_MGF_TYPE *mgf)
{
    static const struct {
        int nid;
        CK_MECHANISM_TYPE hash;
        CK_RSA_PKCS_MGF_TYPE mgf;
    } t[] = {{NID_sha1, CKM_SHA_1, CKG_MGF1_SHA1},
             {NID_sha224, CKM_SHA224, CKG_MGF1_SHA224},
             {NID_sha256, CKM_SHA256, CKG_MGF1_SHA256},
             {NID_sha384, CKM_SHA384, CKG_MGF1_SHA384},
             {NID_sha512, CKM_SHA512, CKG_MGF1_SHA512}};

    for (size_t i = 0; md != NULL && i < sizeof(t) / sizeof(t[0]); i++)
        if (EVP_MD_get_type(md) == t[i].nid) {
            if (hash != NULL)
                *hash = t[i].hash;
            if (mgf != NULL)
                *mgf = t[i].mgf;
            return 1;
        }
    return 0;
}

/* DER DigestInfo { algorithm, digest } for CKM_RSA_PKCS signatures. */
static int digest_info(const EVP_MD *md, const uint8_t *dgst, size_t dlen, uint8_t **out,
                       int *outlen)
{
    X509_SIG *sig = X509_SIG_new();
    X509_ALGOR *alg;
    ASN1_OCTET_STRING *os;

    if (sig == NULL)
        return 0;
    X509_SIG_getm(sig, &alg, &os);
    *out = NULL;
    *outlen = -1;
    if (X509_ALGOR_set0(alg, OBJ_nid2obj(EVP_MD_get_type(md)), V_ASN1_NULL, NULL) &&
        ASN1_OCTET_STRING_set(os, dgst, (int)dlen))
        *outlen = i2d_X509_SIG(sig, out);
    X509_SIG_free(sig);
    return *outlen > 0;
}

/*
 * After C_SignInit / C_DecryptInit of an always-authenticate key: the context-specific login.
 * When it fails the operation the init began is ended by the call that would have used it (a
 * failed C_Sign / C_Decrypt ends it, as the standard says), so the pooled session stays usable.
 */
static CK_RV context_login(struct p11_tok *pt, CK_SESSION_HANDLE s, const ctok_key *key, int sign)
{
    uint8_t in[1] = {0}, out[1024];
    CK_ULONG outlen = sizeof(out);
    CK_RV rv;

    if (!((struct p11_key *)key->be_data)->always_auth)
        return CKR_OK;
    rv = ctok_p11_context_login(pt, s, key);
    if (rv != CKR_OK) {
        if (sign)
            (void)P11_QUIET(pt->m, C_Sign, (s, in, sizeof(in), out, &outlen));
        else
            (void)P11_QUIET(pt->m, C_Decrypt, (s, in, sizeof(in), out, &outlen));
    }
    return rv;
}

struct sign_op {
    CK_MECHANISM mech;
    const uint8_t *in;
    CK_ULONG inlen;
    uint8_t out[1024];
    CK_ULONG outlen;
    const ctok_key *key; /* p11auth: an always-authenticate key logs in after C_SignInit */
};

static CK_RV do_sign(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, void *arg)
{
    struct sign_op *o = arg;
    CK_RV rv = P11_CALL(pt->m, C_SignInit, (s, &o->mech, h));

    o->outlen = sizeof(o->out);
    if (rv == CKR_OK)
        rv = context_login(pt, s, o->key, 1);
    if (rv == CKR_OK)
        rv = P11_CALL(pt->m, C_Sign, (s, (CK_BYTE_PTR)o->in, o->inlen, o->out, &o->outlen));
    return rv;
}

int ctok_p11_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs, size_t tbslen,
                  uint8_t *sig, size_t *siglen)
{
    struct sign_op o = {{0, NULL, 0}, tbs, (CK_ULONG)tbslen, {0}, 0, key};
    CK_RSA_PKCS_PSS_PARAMS pss;
    uint8_t *di = NULL;
    int dilen, ok = 0;

    switch (key->type) {
    case CTOK_KT_RSA:
    case CTOK_KT_RSA_PSS:
        if (p->pad == RSA_PKCS1_PSS_PADDING) {
            if (!md_mechs(p->md, &pss.hashAlg, NULL) ||
                !md_mechs(p->mgf1 != NULL ? p->mgf1 : p->md, NULL, &pss.mgf)) {
                CTOK_ERR(CTOK_R_UNSUPPORTED,
                         "token '%s', key '%s': RSA-PSS needs a SHA-1 or "
                         "SHA-2 digest",
                         ctok_token_name(key->tok), key->label);
                return 0;
            }
            pss.sLen = (CK_ULONG)p->saltlen;
            o.mech.mechanism = CKM_RSA_PKCS_PSS;
            o.mech.pParameter = &pss;
            o.mech.ulParameterLen = sizeof(pss);
        } else if (p->pad == RSA_NO_PADDING) {
            o.mech.mechanism = CKM_RSA_X_509;
        } else {
            o.mech.mechanism = CKM_RSA_PKCS;
            if (p->md != NULL) {
                if (!digest_info(p->md, tbs, tbslen, &di, &dilen))
                    return 0;
                o.in = di;
                o.inlen = (CK_ULONG)dilen;
            }
        }
        break;
    case CTOK_KT_EC:
        o.mech.mechanism = CKM_ECDSA; /* over the digest: SoftHSM's CKM_ECDSA_SHA* is broken */
        break;
    case CTOK_KT_ED25519:
        o.mech.mechanism = CKM_EDDSA;
        break;
    default:
        return 0;
    }
    if (!run(key, "C_Sign", do_sign, &o))
        goto end;
    if (key->type == CTOK_KT_EC) {
        /* the token gives r || s; X.509, TLS and CMS want DER */
        if (!ctok_ecdsa_rs_to_der(o.out, o.outlen, sig, siglen))
            goto end;
    } else {
        if (o.outlen > *siglen)
            goto end;
        memcpy(sig, o.out, o.outlen);
        *siglen = o.outlen;
    }
    ok = 1;
end:
    OPENSSL_free(di);
    return ok;
}

struct dec_op {
    CK_MECHANISM mech;
    const uint8_t *in;
    CK_ULONG inlen;
    uint8_t *out;
    CK_ULONG outlen;
    const ctok_key *key; /* an always-authenticate key logs in after C_DecryptInit */
};

static CK_RV do_decrypt(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, void *arg)
{
    struct dec_op *o = arg;
    CK_ULONG cap = o->outlen;
    CK_RV rv = P11_CALL(pt->m, C_DecryptInit, (s, &o->mech, h));

    if (rv == CKR_OK)
        rv = context_login(pt, s, o->key, 0);
    if (rv == CKR_OK)
        rv = P11_CALL(pt->m, C_Decrypt, (s, (CK_BYTE_PTR)o->in, o->inlen, o->out, &cap));
    o->outlen = cap;
    return rv;
}

/* All-ones when a == b, else zero; no branch on the data. */
static unsigned int ct_eq(unsigned int a, unsigned int b)
{
    unsigned int x = a ^ b;

    return 0u - (((x | (0u - x)) >> (sizeof(x) * 8 - 1)) ^ 1u);
}

/*
 * TLS 1.2 RSA key exchange (RFC 5246 7.4.7.1): the block is decrypted raw (CKM_RSA_X_509)
 * and checked here in constant time: a bad block yields a random premaster, never an error
 * or a different timing, so the token's own padding check cannot become an oracle. The
 * premaster is always 48 bytes, so every position in the block is known in advance.
 */
static int tls_premaster(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                         size_t inlen, uint8_t *out, size_t *outlen)
{
    uint8_t em[1024], rnd[48];
    struct dec_op o = {{CKM_RSA_X_509, NULL, 0}, in, (CK_ULONG)inlen, em, sizeof(em), key};
    size_t k = (size_t)(EVP_PKEY_get_bits(key->pub) + 7) / 8;
    unsigned int good;
    int ok;

    if (*outlen < 48 || k < 48 + 11 || k > sizeof(em) || RAND_bytes(rnd, sizeof(rnd)) != 1)
        return 0;
    ERR_set_mark();
    ok = run(key, "C_Decrypt", do_decrypt, &o);
    ERR_pop_to_mark();
    /* a failed raw decryption is as good as a bad block: the random premaster goes on */
    good = ct_eq((unsigned int)ok, 1) & ct_eq((unsigned int)o.outlen, (unsigned int)k);
    if (!ok || o.outlen != k)
        memset(em, 0, sizeof(em));
    good &= ct_eq(em[0], 0) & ct_eq(em[1], 2);
    for (size_t i = 2; i < k - 49; i++)
        good &= ~ct_eq(em[i], 0); /* PS: non-zero */
    good &= ct_eq(em[k - 49], 0);
    good &= ct_eq(em[k - 48], (p->tls_client_version >> 8) & 0xff) &
            ct_eq(em[k - 47], p->tls_client_version & 0xff);
    for (size_t i = 0; i < 48; i++)
        out[i] = (uint8_t)((em[k - 48 + i] & good) | (rnd[i] & ~good));
    *outlen = 48;
    OPENSSL_cleanse(em, sizeof(em));
    return 1;
}

int ctok_p11_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                     size_t inlen, uint8_t *out, size_t *outlen)
{
    uint8_t buf[1024];
    struct dec_op o = {{CKM_RSA_PKCS, NULL, 0}, in, (CK_ULONG)inlen, buf, sizeof(buf), key};
    CK_RSA_PKCS_OAEP_PARAMS oaep;
    int ok;

    if (key->type != CTOK_KT_RSA)
        return 0;
    if (p->pad == RSA_PKCS1_OAEP_PADDING) {
        const EVP_MD *md = p->oaep_md != NULL ? p->oaep_md : EVP_sha1();

        if (!md_mechs(md, &oaep.hashAlg, NULL) ||
            !md_mechs(p->mgf1 != NULL ? p->mgf1 : md, NULL, &oaep.mgf)) {
            CTOK_ERR(CTOK_R_UNSUPPORTED,
                     "token '%s', key '%s': OAEP needs a SHA-1 or SHA-2 "
                     "digest",
                     ctok_token_name(key->tok), key->label);
            return 0;
        }
        oaep.source = CKZ_DATA_SPECIFIED;
        oaep.pSourceData = (void *)p->label;
        oaep.ulSourceDataLen = p->label_len;
        o.mech.mechanism = CKM_RSA_PKCS_OAEP;
        o.mech.pParameter = &oaep;
        o.mech.ulParameterLen = sizeof(oaep);
    } else if (p->pad == RSA_NO_PADDING) {
        o.mech.mechanism = CKM_RSA_X_509;
    }
    if (p->pad == RSA_PKCS1_WITH_TLS_PADDING)
        return tls_premaster(key, p, in, inlen, out, outlen);
    ok = run(key, "C_Decrypt", do_decrypt, &o);
    if (ok && o.outlen <= *outlen) {
        memcpy(out, buf, o.outlen);
        *outlen = o.outlen;
    } else {
        ok = 0;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return ok;
}

struct derive_op {
    CK_ECDH1_DERIVE_PARAMS params;
    CK_ULONG len;
    uint8_t *out;
};

static CK_RV do_derive(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, void *arg)
{
    struct derive_op *o = arg;
    CK_MECHANISM mech = {CKM_ECDH1_DERIVE, &o->params, sizeof(o->params)};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof(cls)},       {CKA_KEY_TYPE, &kt, sizeof(kt)},
        {CKA_TOKEN, &no, sizeof(no)},         {CKA_SENSITIVE, &no, sizeof(no)},
        {CKA_EXTRACTABLE, &yes, sizeof(yes)}, {CKA_VALUE_LEN, &o->len, sizeof(o->len)}};
    CK_OBJECT_HANDLE secret;
    CK_ATTRIBUTE v = {CKA_VALUE, o->out, o->len};
    CK_RV rv = P11_CALL(pt->m, C_DeriveKey, (s, &mech, h, t, sizeof(t) / sizeof(t[0]), &secret));

    if (rv != CKR_OK)
        return rv;
    rv = P11_CALL(pt->m, C_GetAttributeValue, (s, secret, &v, 1));
    o->len = v.ulValueLen;
    (void)P11_CALL(pt->m, C_DestroyObject, (s, secret));
    return rv;
}

int ctok_p11_derive(ctok_key *key, EVP_PKEY *peer, uint8_t *secret, size_t *len)
{
    uint8_t point[200];
    size_t plen = 0;
    struct derive_op o;

    if (key->type != CTOK_KT_EC ||
        !EVP_PKEY_get_octet_string_param(peer, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                         sizeof(point), &plen))
        return 0;
    memset(&o, 0, sizeof(o));
    o.params.kdf = CKD_NULL;
    o.params.pPublicData = point;
    o.params.ulPublicDataLen = plen;
    o.len = (CK_ULONG)(EVP_PKEY_get_bits(key->pub) + 7) / 8;
    o.out = secret;
    if (*len < o.len || !run(key, "C_DeriveKey", do_derive, &o))
        return 0;
    *len = o.len;
    return 1;
}

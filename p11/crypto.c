/*
 * Mechanisms (PKCS#11 "signing", "decryption", "key derivation"): digest-first signing
 * with the token's raw mechanisms, RSA decryption, ECDH. One helper runs an operation on
 * a pooled session and, after a connection failure, recovers and retries it once.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
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

/* A digest's PKCS#11 names: the hash, its MGF1, and its hash-and-sign mechanisms. */
static const struct md_mech {
    int nid;
    CK_MECHANISM_TYPE hash;
    CK_RSA_PKCS_MGF_TYPE mgf;
    CK_MECHANISM_TYPE rsa, pss, ecdsa;
    const char *name; /* OpenSSL's */
} md_table[] = {{NID_sha1, CKM_SHA_1, CKG_MGF1_SHA1, CKM_SHA1_RSA_PKCS, CKM_SHA1_RSA_PKCS_PSS,
                 CKM_ECDSA_SHA1, "SHA1"},
                {NID_sha224, CKM_SHA224, CKG_MGF1_SHA224, CKM_SHA224_RSA_PKCS,
                 CKM_SHA224_RSA_PKCS_PSS, CKM_ECDSA_SHA224, "SHA224"},
                {NID_sha256, CKM_SHA256, CKG_MGF1_SHA256, CKM_SHA256_RSA_PKCS,
                 CKM_SHA256_RSA_PKCS_PSS, CKM_ECDSA_SHA256, "SHA256"},
                {NID_sha384, CKM_SHA384, CKG_MGF1_SHA384, CKM_SHA384_RSA_PKCS,
                 CKM_SHA384_RSA_PKCS_PSS, CKM_ECDSA_SHA384, "SHA384"},
                {NID_sha512, CKM_SHA512, CKG_MGF1_SHA512, CKM_SHA512_RSA_PKCS,
                 CKM_SHA512_RSA_PKCS_PSS, CKM_ECDSA_SHA512, "SHA512"}};
#define N_MD (sizeof(md_table) / sizeof(md_table[0]))

static const struct md_mech *md_mech(const EVP_MD *md)
{
    for (size_t i = 0; md != NULL && i < N_MD; i++)
        if (EVP_MD_get_type(md) == md_table[i].nid)
            return &md_table[i];
    return NULL;
}

static int md_mechs(const EVP_MD *md, CK_MECHANISM_TYPE *hash, CK_RSA_PKCS_MGF_TYPE *mgf)
{
    const struct md_mech *m = md_mech(md);

    if (m == NULL)
        return 0;
    if (hash != NULL)
        *hash = m->hash;
    if (mgf != NULL)
        *mgf = m->mgf;
    return 1;
}

/* The digest row of a hash-and-sign mechanism (and which kind it is), or NULL. */
static const struct md_mech *hash_and_sign(CK_MECHANISM_TYPE t, int *pss)
{
    for (size_t i = 0; i < N_MD; i++)
        if (t == md_table[i].rsa || t == md_table[i].pss || t == md_table[i].ecdsa) {
            if (pss != NULL)
                *pss = t == md_table[i].pss;
            return &md_table[i];
        }
    return NULL;
}

static const char *mech_name(CK_MECHANISM_TYPE t, char *buf, size_t len)
{
    static const struct {
        CK_MECHANISM_TYPE t;
        const char *name;
    } names[] = {{CKM_RSA_PKCS, "CKM_RSA_PKCS"},
                 {CKM_RSA_X_509, "CKM_RSA_X_509"},
                 {CKM_RSA_PKCS_PSS, "CKM_RSA_PKCS_PSS"},
                 {CKM_RSA_PKCS_OAEP, "CKM_RSA_PKCS_OAEP"},
                 {CKM_ECDSA, "CKM_ECDSA"},
                 {CKM_EDDSA, "CKM_EDDSA"},
                 {CKM_ECDH1_DERIVE, "CKM_ECDH1_DERIVE"}};
    int pss;
    const struct md_mech *m = hash_and_sign(t, &pss);

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].t == t)
            return names[i].name;
    if (m != NULL)
        snprintf(buf, len,
                 t == m->ecdsa ? "CKM_ECDSA_%s"
                 : pss         ? "CKM_%s_RSA_PKCS_PSS"
                               : "CKM_%s_RSA_PKCS",
                 m->name);
    else
        snprintf(buf, len, "0x%lx", (unsigned long)t);
    return buf;
}

static int allows(const struct p11_key *k, CK_MECHANISM_TYPE t)
{
    for (size_t i = 0; i < k->n_allowed; i++)
        if (k->allowed[i] == t)
            return 1;
    return !k->restricted;
}

/* "CKM_SHA256_RSA_PKCS_PSS, CKM_ECDSA": the key's allowed mechanisms, for errors. */
static void allowed_list(const struct p11_key *k, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < k->n_allowed && used < len; i++) {
        char buf[48];
        int n = snprintf(out + used, len - used, "%s%s", i > 0 ? ", " : "",
                         mech_name(k->allowed[i], buf, sizeof(buf)));

        used += n > 0 ? (size_t)n : 0;
    }
}

/*
 * An RSA-PSS key from the RSA public key pub: restricted to md (MGF1 the same, salt the
 * digest length) unless md is NULL. In the library context the token's keys live in.
 */
static EVP_PKEY *pss_public(ctok_token *tok, EVP_PKEY *pub, const char *md)
{
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    BIGNUM *n = NULL, *e = NULL;
    EVP_PKEY_CTX *c = NULL;
    EVP_PKEY *k = NULL;
    const EVP_MD *d = md != NULL ? EVP_get_digestbyname(md) : NULL;
    int ok = b != NULL && EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n) &&
             EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_E, &e) &&
             OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, n) &&
             OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, e);

    if (ok && md != NULL)
        ok = d != NULL && OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_RSA_DIGEST, md, 0) &&
             OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_RSA_MGF1_DIGEST, md, 0) &&
             OSSL_PARAM_BLD_push_int(b, OSSL_PKEY_PARAM_RSA_PSS_SALTLEN, EVP_MD_get_size(d));
    if (ok && (params = OSSL_PARAM_BLD_to_param(b)) != NULL &&
        (c = EVP_PKEY_CTX_new_from_name(ctok_ctx_libctx(ctok_token_ctx(tok)), "RSA-PSS",
                                        ctok_ctx_propq(ctok_token_ctx(tok)))) != NULL &&
        EVP_PKEY_fromdata_init(c) > 0 && EVP_PKEY_fromdata(c, &k, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        k = NULL;
    EVP_PKEY_CTX_free(c);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(b);
    BN_free(n);
    BN_free(e);
    return k;
}

/*
 * p11mech, at key_load: a key allowed hash-and-sign mechanisms wants the whole message of
 * a DigestSign; an RSA key allowed only PSS mechanisms is an RSA-PSS key, restricted to
 * the digest its hash-and-sign mechanisms name when they name one and the raw
 * CKM_RSA_PKCS_PSS is not allowed.
 */
int ctok_p11_key_mechs(ctok_key *key)
{
    struct p11_key *k = key->be_data;
    const struct md_mech *only = NULL;
    int all_pss = key->type == CTOK_KT_RSA, several = 0, pss;
    EVP_PKEY *p;

    if (!k->restricted)
        return 1;
    for (size_t i = 0; i < k->n_allowed; i++) {
        const struct md_mech *m = hash_and_sign(k->allowed[i], &pss);

        if (m != NULL)
            key->flags |= CTOK_KEY_WANTS_MESSAGE;
        if (k->allowed[i] == CKM_RSA_PKCS_PSS)
            several = 1; /* any digest */
        else if (m == NULL || !pss)
            all_pss = 0;
        else if (only != NULL && only != m)
            several = 1;
        else
            only = m;
    }
    if (!all_pss)
        return 1;
    p = pss_public(key->tok, key->pub, several || only == NULL ? NULL : only->name);
    if (p == NULL) {
        CTOK_ERR(CTOK_R_BACKEND, "token '%s', key '%s': cannot make the RSA-PSS public key",
                 ctok_token_name(key->tok), key->label);
        return 0;
    }
    EVP_PKEY_free(key->pub);
    key->pub = p;
    key->type = CTOK_KT_RSA_PSS;
    CTOK_DBG("pkcs11: token '%s', key '%s': allowed only PSS: an RSA-PSS key (%s)",
             ctok_token_name(key->tok), key->label,
             several || only == NULL ? "any digest" : only->name);
    return 1;
}

/*
 * DER DigestInfo { { digest OID, NULL }, OCTET STRING digest } for CKM_RSA_PKCS signatures,
 * into out (cap bytes). Written directly: X509_SIG_new, i2d_X509_SIG and free cost ~7,500
 * instructions per signature. Every length is below 128 (OIDs of a few bytes, digests of at
 * most 64), so each is one byte.
 */
static int digest_info(const EVP_MD *md, const uint8_t *dgst, size_t dlen, uint8_t *out, size_t cap,
                       size_t *outlen)
{
    const ASN1_OBJECT *oid = OBJ_nid2obj(EVP_MD_get_type(md));
    const unsigned char *oder = oid != NULL ? OBJ_get0_data(oid) : NULL;
    size_t olen = oid != NULL ? OBJ_length(oid) : 0, alg = 2 + olen + 2, inner = 2 + alg + 2 + dlen;
    uint8_t *p = out;

    if (oder == NULL || olen == 0 || inner > 127 || 2 + inner > cap)
        return 0;
    *p++ = 0x30;
    *p++ = (uint8_t)inner;
    *p++ = 0x30;
    *p++ = (uint8_t)alg;
    *p++ = 0x06;
    *p++ = (uint8_t)olen;
    memcpy(p, oder, olen);
    p += olen;
    *p++ = 0x05;
    *p++ = 0x00;
    *p++ = 0x04;
    *p++ = (uint8_t)dlen;
    memcpy(p, dgst, dlen);
    *outlen = 2 + inner;
    return 1;
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

/*
 * The mechanism for a signature: raw over ctok's digest (tbs) when the key allows it,
 * else hash-and-sign over the whole message (p->msg) on the token. *raw_out says which.
 */
static int choose(ctok_key *key, const struct ctok_sig_params *p, CK_MECHANISM_TYPE raw,
                  CK_MECHANISM_TYPE hs, struct sign_op *o, int *raw_out)
{
    const struct p11_key *k = key->be_data;
    char allowed[400], b1[48], b2[48];

    *raw_out = allows(k, raw);
    if (*raw_out) {
        o->mech.mechanism = raw;
        return 1;
    }
    allowed_list(k, allowed, sizeof(allowed));
    if (hs != 0 && allows(k, hs)) {
        if (p->msg != NULL) {
            o->mech.mechanism = hs;
            o->in = p->msg;
            o->inlen = (CK_ULONG)p->msglen;
            return 1;
        }
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s', key '%s': the key allows only %s: the token hashes the message "
                 "itself, so it cannot sign a bare digest; sign the message instead (openssl "
                 "dgst -sign, openssl pkeyutl -sign -rawin)",
                 ctok_token_name(key->tok), key->label, allowed);
        return 0;
    }
    if (hs != 0)
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s', key '%s': the key allows only %s, neither %s nor %s: choose a "
                 "digest and padding it allows",
                 ctok_token_name(key->tok), key->label, allowed, mech_name(raw, b1, sizeof(b1)),
                 mech_name(hs, b2, sizeof(b2)));
    else
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s', key '%s': the key allows only %s, not %s: choose a digest and "
                 "padding it allows",
                 ctok_token_name(key->tok), key->label, allowed, mech_name(raw, b1, sizeof(b1)));
    return 0;
}

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
    /* o.out is left as it is: an initializer would zero its 1 KiB on every signature */
    struct sign_op o;
    const struct md_mech *m = md_mech(p->md);
    CK_RSA_PKCS_PSS_PARAMS pss;
    uint8_t di[2 + 127];
    size_t dilen;
    int raw;

    o.mech = (CK_MECHANISM){0, NULL, 0};
    o.in = tbs;
    o.inlen = (CK_ULONG)tbslen;
    o.outlen = 0;
    o.key = key;
    switch (key->type) {
    case CTOK_KT_RSA:
    case CTOK_KT_RSA_PSS:
        if (p->pad == RSA_PKCS1_PSS_PADDING) {
            if (m == NULL || !md_mechs(p->mgf1 != NULL ? p->mgf1 : p->md, NULL, &pss.mgf)) {
                CTOK_ERR(CTOK_R_UNSUPPORTED,
                         "token '%s', key '%s': RSA-PSS needs a SHA-1 or "
                         "SHA-2 digest",
                         ctok_token_name(key->tok), key->label);
                return 0;
            }
            pss.hashAlg = m->hash;
            pss.sLen = (CK_ULONG)p->saltlen;
            if (!choose(key, p, CKM_RSA_PKCS_PSS, m->pss, &o, &raw))
                return 0;
            o.mech.pParameter = &pss;
            o.mech.ulParameterLen = sizeof(pss);
        } else if (p->pad == RSA_NO_PADDING) {
            if (!choose(key, p, CKM_RSA_X_509, 0, &o, &raw))
                return 0;
        } else {
            if (!choose(key, p, CKM_RSA_PKCS, m != NULL ? m->rsa : 0, &o, &raw))
                return 0;
            if (raw && p->md != NULL) {
                if (!digest_info(p->md, tbs, tbslen, di, sizeof(di), &dilen))
                    return 0;
                o.in = di;
                o.inlen = (CK_ULONG)dilen;
            }
        }
        break;
    case CTOK_KT_EC:
        /* raw over the digest where allowed: SoftHSM's CKM_ECDSA_SHA* is broken or absent */
        if (!choose(key, p, CKM_ECDSA, m != NULL ? m->ecdsa : 0, &o, &raw))
            return 0;
        break;
    case CTOK_KT_ED25519:
        o.mech.mechanism = CKM_EDDSA;
        break;
    default:
        return 0;
    }
    /* ECDSA as the token gives it, r || s (the backend's sign_rs): the token layer converts */
    if (!run(key, "C_Sign", do_sign, &o))
        return 0;
    if (o.outlen > *siglen)
        return 0;
    memcpy(sig, o.out, o.outlen);
    *siglen = o.outlen;
    return 1;
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
                                         sizeof(point), &plen)) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s', key '%s': ECDH needs an EC key and an EC peer",
                 ctok_token_name(key->tok), key->label);
        return 0;
    }
    memset(&o, 0, sizeof(o));
    o.params.kdf = CKD_NULL;
    o.params.pPublicData = point;
    o.params.ulPublicDataLen = plen;
    o.len = (CK_ULONG)(EVP_PKEY_get_bits(key->pub) + 7) / 8;
    o.out = secret;
    if (*len < o.len) { /* the token layer gives a buffer for any curve */
        CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s', key '%s': shared secret buffer too small",
                 ctok_token_name(key->tok), key->label);
        return 0;
    }
    if (!run(key, "C_DeriveKey", do_derive, &o))
        return 0;
    *len = o.len;
    return 1;
}

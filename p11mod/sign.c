/*
 * Signing through the token layer's one sign call (ctok_key_sign: a digest and its
 * parameters, or the message for EdDSA). Hash-and-sign mechanisms hash here, as the provider
 * does; ECDSA signatures come from the token layer as PKCS#11's r || s (ctok_key_sign_raw:
 * no DER round trip).
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "p11mod.h"

/* No signature ctok makes is longer (CTOK_MAX_RSA_BITS): a bound on a PSS salt. */
#define SIG_MAX 1024

static const struct {
    CK_MECHANISM_TYPE mech; /* hash-and-sign mechanism */
    CK_MECHANISM_TYPE hash; /* the hash mechanism (PSS's hashAlg) */
    CK_RSA_PKCS_MGF_TYPE mgf;
    const char *md;
} hashes[] = {
    {0, CKM_SHA_1, CKG_MGF1_SHA1, "SHA1"},
    {0, CKM_SHA224, CKG_MGF1_SHA224, "SHA224"},
    {CKM_SHA256_RSA_PKCS, CKM_SHA256, CKG_MGF1_SHA256, "SHA256"},
    {CKM_SHA384_RSA_PKCS, CKM_SHA384, CKG_MGF1_SHA384, "SHA384"},
    {CKM_SHA512_RSA_PKCS, CKM_SHA512, CKG_MGF1_SHA512, "SHA512"},
    {CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, 0, "SHA256"},
    {CKM_SHA384_RSA_PKCS_PSS, CKM_SHA384, 0, "SHA384"},
    {CKM_SHA512_RSA_PKCS_PSS, CKM_SHA512, 0, "SHA512"},
    {CKM_ECDSA_SHA256, CKM_SHA256, 0, "SHA256"},
    {CKM_ECDSA_SHA384, CKM_SHA384, 0, "SHA384"},
    {CKM_ECDSA_SHA512, CKM_SHA512, 0, "SHA512"},
};
#define N_HASHES (sizeof(hashes) / sizeof(hashes[0]))

/*
 * The digests, fetched from the default library context once and kept for the life of the
 * process (reachable from here, never freed: OpenSSL's own exit handler may run first). A
 * legacy EVP_MD (EVP_get_digestbyname) makes EVP_DigestInit_ex fetch on every signature: time
 * spent, and libcrypto's name and method-store locks taken outside the fork gate
 * (p11/module.c), where a fork() could leave them held in the child.
 */
static const char *const md_names[] = {"SHA1", "SHA224", "SHA256", "SHA384", "SHA512"};
#define N_MDS (sizeof(md_names) / sizeof(md_names[0]))
static EVP_MD *fetched[N_MDS];

static const EVP_MD *md_named(const char *name)
{
    for (size_t i = 0; i < N_MDS; i++) {
        EVP_MD *md, *none = NULL;

        if (strcmp(md_names[i], name) != 0)
            continue;
        if ((md = __atomic_load_n(&fetched[i], __ATOMIC_ACQUIRE)) != NULL)
            return md;
        if ((md = EVP_MD_fetch(NULL, name, NULL)) == NULL)
            return NULL;
        /* two threads fetching at once: the first stored wins */
        if (!__atomic_compare_exchange_n(&fetched[i], &none, md, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            EVP_MD_free(md);
            md = none;
        }
        return md;
    }
    return NULL;
}

/* The digest of a hash-and-sign mechanism (NULL: a raw one). */
static const EVP_MD *mech_md(CK_MECHANISM_TYPE m)
{
    for (size_t i = 0; i < N_HASHES; i++)
        if (hashes[i].mech == m)
            return md_named(hashes[i].md);
    return NULL;
}

static const EVP_MD *hash_md(CK_MECHANISM_TYPE hash)
{
    for (size_t i = 0; i < N_HASHES; i++)
        if (hashes[i].hash == hash)
            return md_named(hashes[i].md);
    return NULL;
}

static const EVP_MD *mgf_md(CK_RSA_PKCS_MGF_TYPE mgf)
{
    for (size_t i = 0; i < N_HASHES; i++)
        if (hashes[i].mgf != 0 && hashes[i].mgf == mgf)
            return md_named(hashes[i].md);
    return NULL;
}

static int is_pss(CK_MECHANISM_TYPE m)
{
    return m == CKM_RSA_PKCS_PSS || m == CKM_SHA256_RSA_PKCS_PSS || m == CKM_SHA384_RSA_PKCS_PSS ||
           m == CKM_SHA512_RSA_PKCS_PSS;
}

void mod_sign_clear(struct mod_sign *op)
{
    ctok_key_unref(op->key);
    /* raw mechanisms have neither: no calls into libcrypto for them */
    if (op->mdctx != NULL)
        EVP_MD_CTX_free(op->mdctx);
    if (op->buf != NULL)
        OPENSSL_clear_free(op->buf, op->len);
    memset(op, 0, sizeof(*op));
}

/* The mechanism's parameters: PSS's, checked against the mechanism's hash; none else. */
static CK_RV params(struct mod_sign *op, const CK_MECHANISM *m)
{
    const CK_RSA_PKCS_PSS_PARAMS *pss = m->pParameter;

    if (!is_pss(m->mechanism))
        return m->pParameter == NULL && m->ulParameterLen == 0 ? CKR_OK
                                                               : CKR_MECHANISM_PARAM_INVALID;
    if (pss == NULL || m->ulParameterLen != sizeof(*pss))
        return CKR_MECHANISM_PARAM_INVALID;
    op->md = hash_md(pss->hashAlg);
    op->mgf1 = mgf_md(pss->mgf);
    if (op->md == NULL || op->mgf1 == NULL || pss->sLen > (CK_ULONG)SIG_MAX ||
        (op->mdctx != NULL && EVP_MD_get_type(op->md) != EVP_MD_CTX_get_type(op->mdctx)))
        return CKR_MECHANISM_PARAM_INVALID;
    op->saltlen = (int)pss->sLen;
    return CKR_OK;
}

CK_RV mod_op_key(struct mod_slot *slot, CK_OBJECT_HANDLE kh, CK_MECHANISM_TYPE mech, CK_FLAGS op,
                 ctok_key **key)
{
    struct mod_obj *o = mod_object_get(slot, kh);
    CK_RV rv;

    *key = NULL;
    if (o == NULL)
        return CKR_KEY_HANDLE_INVALID;
    if (o->cls != CKO_PRIVATE_KEY)
        return CKR_KEY_FUNCTION_NOT_PERMITTED;
    if (!mod_slot_has_mech(slot, mech, op, NULL))
        return CKR_MECHANISM_INVALID;
    if (!mod_key_type_can(o->key_type, mech, op))
        return CKR_KEY_TYPE_INCONSISTENT;
    if ((*key = ctok_token_key(slot->tok, o->id, o->id_len)) == NULL)
        return mod_rv_from_error(CKR_DEVICE_ERROR);
    /* refused here, before any call to the token, as the token would refuse it */
    if ((rv = mod_key_permits(*key, mech, op)) != CKR_OK) {
        ctok_key_unref(*key);
        *key = NULL;
    }
    return rv;
}

/* The signature's size: the modulus; ECDSA r || s; Ed25519 64 bytes. */
static size_t sig_size(const struct mod_sign *op)
{
    EVP_PKEY *pub = ctok_key_pub(op->key);
    int bits = EVP_PKEY_get_bits(pub);

    switch (ctok_key_type(op->key)) {
    case CTOK_KT_EC:
        return 2 * (((size_t)bits + 7) / 8);
    case CTOK_KT_ED25519:
        return 64;
    default:
        return (size_t)EVP_PKEY_get_size(pub);
    }
}

CK_RV C_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE kh)
{
    struct mod_session *s;
    const EVP_MD *md;
    CK_RV rv;

    if ((rv = mod_enter_op(h, m, CKF_SIGN, &s)) != CKR_OK)
        return rv;
    s->sign.mech = m->mechanism;
    if ((md = mech_md(m->mechanism)) != NULL) {
        s->sign.md = md;
        if ((s->sign.mdctx = EVP_MD_CTX_new()) == NULL ||
            !EVP_DigestInit_ex(s->sign.mdctx, md, NULL))
            rv = CKR_HOST_MEMORY;
    }
    if (rv == CKR_OK)
        rv = mod_op_key(mod_slot_get(s->slot), kh, m->mechanism, CKF_SIGN, &s->sign.key);
    if (rv == CKR_OK)
        rv = params(&s->sign, m);
    if (rv == CKR_OK) {
        s->sign.size = sig_size(&s->sign);
        s->signing = 1;
    } else
        mod_sign_clear(&s->sign);
    mod_leave();
    return rv;
}

/* CKM_RSA_PKCS signs a DigestInfo: when it names a digest ctok knows, the digest and its md
 * go to the token (a KMS signs only those); any other input is signed as the block it is. */
static void digest_info(struct ctok_sig_params *sp, const uint8_t **tbs, size_t *len)
{
    const uint8_t *p = *tbs;
    X509_SIG *di = d2i_X509_SIG(NULL, &p, (long)*len);
    const X509_ALGOR *alg;
    const ASN1_OCTET_STRING *dg;
    const ASN1_OBJECT *oid;
    const EVP_MD *md;
    const char *sn;

    if (di != NULL && p == *tbs + *len) {
        X509_SIG_get0(di, &alg, &dg);
        X509_ALGOR_get0(&oid, NULL, NULL, alg);
        sn = OBJ_nid2sn(OBJ_obj2nid(oid));
        if ((md = sn != NULL ? md_named(sn) : NULL) == NULL)
            md = EVP_get_digestbyobj(oid); /* one ctok does not hash with (MD5, SHA-3) */
        if (md != NULL && ASN1_STRING_length(dg) == EVP_MD_get_size(md)) {
            sp->md = md;
            *len = (size_t)ASN1_STRING_length(dg);
            /* the digest in the caller's buffer: the OCTET STRING ends the DigestInfo */
            *tbs = p - *len;
        }
    }
    X509_SIG_free(di);
}

/* Signs tbs (the digest of a hash-and-sign mechanism, else the data) into out (room for
 * op->size). No module lock held. */
static CK_RV sign(struct mod_sign *op, const uint8_t *tbs, size_t len, uint8_t *out, size_t *outlen)
{
    struct ctok_sig_params sp = {RSA_PKCS1_PADDING, op->md, op->mgf1, 0, NULL, 0};
    enum ctok_key_type kt = ctok_key_type(op->key);
    size_t size = op->size, siglen = size;

    if (op->mech == CKM_RSA_PKCS) {
        if (len + 11 > size)
            return CKR_DATA_LEN_RANGE;
        digest_info(&sp, &tbs, &len);
    } else if (is_pss(op->mech)) {
        sp.pad = RSA_PKCS1_PSS_PADDING;
        sp.saltlen = op->saltlen;
    }
    if (sp.md != NULL && kt != CTOK_KT_ED25519 && len != (size_t)EVP_MD_get_size(sp.md))
        return CKR_DATA_LEN_RANGE;
    if (!ctok_key_sign_raw(op->key, &sp, tbs, len, out, &siglen))
        return mod_rv_from_error(CKR_FUNCTION_FAILED);
    *outlen = siglen;
    return CKR_OK;
}

/*
 * The end of an operation: a size query (out NULL) or a buffer too small keeps it; anything
 * else ends it. The session's operation is taken out under the lock and signed without it.
 */
static CK_RV finish(CK_SESSION_HANDLE h, const uint8_t *data, size_t len, int final, uint8_t *out,
                    CK_ULONG_PTR outlen)
{
    struct mod_session *s;
    struct mod_sign op;
    uint8_t dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    size_t size, n = 0;
    CK_RV rv;

    if (outlen == NULL || (!final && data == NULL && len > 0))
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    if (!s->signing) {
        mod_leave();
        return CKR_OPERATION_NOT_INITIALIZED;
    }
    size = s->sign.size;
    if (out == NULL || *outlen < size) {
        *outlen = size;
        mod_leave();
        return out == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL;
    }
    op = s->sign;
    memset(&s->sign, 0, sizeof(s->sign));
    s->signing = 0;
    mod_leave();
    if (op.mdctx != NULL) {
        if ((!final && !EVP_DigestUpdate(op.mdctx, data, len)) ||
            !EVP_DigestFinal_ex(op.mdctx, dgst, &dlen))
            rv = CKR_FUNCTION_FAILED;
        else
            rv = sign(&op, dgst, dlen, out, &n);
    } else {
        rv = final ? sign(&op, op.buf, op.len, out, &n) : sign(&op, data, len, out, &n);
    }
    if (rv == CKR_OK)
        *outlen = n;
    mod_sign_clear(&op);
    return rv;
}

CK_RV C_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
             CK_ULONG_PTR siglen)
{
    return finish(h, data, len, 0, sig, siglen);
}

CK_RV C_SignFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG_PTR siglen)
{
    return finish(h, NULL, 0, 1, sig, siglen);
}

/* Raw mechanisms keep the data for C_SignFinal. */
CK_RV C_SignUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len)
{
    struct mod_session *s;
    struct mod_sign *op;
    uint8_t *buf;
    CK_RV rv;

    if (data == NULL && len > 0)
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    op = &s->sign;
    if (!s->signing)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else if (op->mdctx != NULL)
        rv = EVP_DigestUpdate(op->mdctx, data, len) ? CKR_OK : CKR_FUNCTION_FAILED;
    else if (len > 0 && (buf = OPENSSL_clear_realloc(op->buf, op->len, op->len + len)) == NULL)
        rv = CKR_HOST_MEMORY;
    else if (len > 0) {
        memcpy(buf + op->len, data, len);
        op->buf = buf;
        op->len += len;
    }
    if (rv != CKR_OK && rv != CKR_OPERATION_NOT_INITIALIZED) {
        mod_sign_clear(op);
        s->signing = 0;
    }
    mod_leave();
    return rv;
}

/* For the mechanisms of other files that name a hash and an MGF (OAEP). */
const EVP_MD *mod_hash_md(CK_MECHANISM_TYPE hash)
{
    return hash_md(hash);
}

const EVP_MD *mod_mgf_md(CK_RSA_PKCS_MGF_TYPE mgf)
{
    return mgf_md(mgf);
}

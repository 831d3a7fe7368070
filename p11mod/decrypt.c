/*
 * RSA decryption (CKM_RSA_PKCS, CKM_RSA_PKCS_OAEP) through the token layer's one decrypt call,
 * ctok_key_decrypt. Single-part only, as the spec has the mechanisms.
 *
 * What a token refuses is answered at C_DecryptInit, where applications expect it (OpenSC's
 * pkcs11-tool --test skips a mechanism refused there with CKR_MECHANISM_INVALID or
 * CKR_MECHANISM_PARAM_INVALID, and aborts on anything later): SoftHSM decrypts OAEP only with
 * SHA-1 and no label, a KMS only OAEP with SHA-1 or SHA-256 and no label, and the token layer
 * does not say so. So the first C_DecryptInit of a key with a mechanism and parameters (hash,
 * MGF, a label or none) tries them: a block encrypted here with the public key goes to the
 * token, and what the token did is kept for the slot until C_Finalize. That first use costs
 * one decryption on the token (and its audit entry, when the token records use).
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>

#include "p11mod.h"

/* The longest OAEP label taken: applications label with a name or a context string. */
#define LABEL_MAX 1024

void mod_decrypt_clear(struct mod_decrypt *op)
{
    ctok_key_unref(op->key);
    OPENSSL_clear_free(op->label, op->label_len);
    memset(op, 0, sizeof(*op));
}

/* CK_RSA_PKCS_OAEP_PARAMS as the spec has them, into op (its label copied). */
static CK_RV oaep_params(struct mod_decrypt *op, const CK_MECHANISM *m)
{
    const CK_RSA_PKCS_OAEP_PARAMS *p = m->pParameter;

    if (p == NULL || m->ulParameterLen != sizeof(*p))
        return CKR_MECHANISM_PARAM_INVALID;
    op->oaep_md = mod_hash_md(p->hashAlg);
    op->mgf1 = mod_mgf_md(p->mgf);
    /* the label's source: CKZ_DATA_SPECIFIED, or none for no label (OpenSC's pkcs11-tool) */
    if (op->oaep_md == NULL || op->mgf1 == NULL ||
        (p->source != CKZ_DATA_SPECIFIED && (p->source != 0 || p->ulSourceDataLen != 0)) ||
        (p->pSourceData == NULL && p->ulSourceDataLen != 0) || p->ulSourceDataLen > LABEL_MAX)
        return CKR_MECHANISM_PARAM_INVALID;
    if (p->ulSourceDataLen > 0) {
        if ((op->label = OPENSSL_memdup(p->pSourceData, p->ulSourceDataLen)) == NULL)
            return CKR_HOST_MEMORY;
        op->label_len = p->ulSourceDataLen;
    }
    return CKR_OK;
}

static void dec_params(const struct mod_decrypt *op, struct ctok_dec_params *dp)
{
    memset(dp, 0, sizeof(*dp));
    dp->pad = op->mech == CKM_RSA_PKCS_OAEP ? RSA_PKCS1_OAEP_PADDING : RSA_PKCS1_PADDING;
    dp->oaep_md = op->oaep_md;
    dp->mgf1 = op->mgf1;
    dp->label = op->label;
    dp->label_len = op->label_len;
}

/* What is remembered of op: its key's id, mechanism and parameters. */
static void seen_of(const struct mod_decrypt *op, const CK_MECHANISM *m, struct mod_dec_seen *w)
{
    const uint8_t *id = ctok_key_id(op->key, &w->id_len);
    const CK_RSA_PKCS_OAEP_PARAMS *p = m->mechanism == CKM_RSA_PKCS_OAEP ? m->pParameter : NULL;

    memset(w->id, 0, sizeof(w->id));
    w->id_len = w->id_len < CTOK_MAX_ID ? w->id_len : CTOK_MAX_ID;
    memcpy(w->id, id, w->id_len);
    w->mech = m->mechanism;
    w->hash = p != NULL ? p->hashAlg : 0;
    w->mgf = p != NULL ? p->mgf : 0;
    w->label = op->label_len > 0;
    w->rv = CKR_OK;
}

static const struct mod_dec_seen *seen_find(const struct mod_slot *slot,
                                            const struct mod_dec_seen *w)
{
    for (size_t i = 0; i < slot->n_dec_seen; i++) {
        const struct mod_dec_seen *e = &slot->dec_seen[i];

        if (e->id_len == w->id_len && memcmp(e->id, w->id, w->id_len) == 0 && e->mech == w->mech &&
            e->hash == w->hash && e->mgf == w->mgf && e->label == w->label)
            return e;
    }
    return NULL;
}

/* Remembers w (best effort: without memory the next C_DecryptInit tries again). */
static void seen_add(struct mod_slot *slot, const struct mod_dec_seen *w)
{
    struct mod_dec_seen *l = realloc(slot->dec_seen, (slot->n_dec_seen + 1) * sizeof(*l));

    if (l == NULL)
        return;
    slot->dec_seen = l;
    l[slot->n_dec_seen++] = *w;
}

/* Encrypts msg with op's public key as op would decrypt it (ct: the key's size). */
static int encrypt_here(const struct mod_decrypt *op, const uint8_t *msg, size_t len, uint8_t *ct,
                        size_t *ctlen)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(ctok_ctx_libctx(mod.ctx), ctok_key_pub(op->key),
                                                 ctok_ctx_propq(mod.ctx));
    uint8_t *label = NULL;
    int ok = c != NULL && EVP_PKEY_encrypt_init(c) > 0;

    if (ok && op->mech == CKM_RSA_PKCS_OAEP) {
        ok = EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) > 0 &&
             EVP_PKEY_CTX_set_rsa_oaep_md(c, op->oaep_md) > 0 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(c, op->mgf1) > 0;
        if (ok && op->label_len > 0) /* the context takes the copy */
            ok = (label = OPENSSL_memdup(op->label, op->label_len)) != NULL &&
                 EVP_PKEY_CTX_set0_rsa_oaep_label(c, label, (int)op->label_len) > 0;
        if (!ok && label != NULL && EVP_PKEY_CTX_get0_rsa_oaep_label(c, NULL) <= 0)
            OPENSSL_free(label);
    } else if (ok) {
        ok = EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) > 0;
    }
    ok = ok && EVP_PKEY_encrypt(c, ct, ctlen, msg, len) > 0;
    EVP_PKEY_CTX_free(c);
    return ok;
}

/*
 * Does the token decrypt with op (no lock held)? CKR_OK; CKR_MECHANISM_INVALID or
 * CKR_MECHANISM_PARAM_INVALID when it refused or decrypted to something else (a label it
 * ignored); or the code of a reason that may pass (login, permission, network), not kept.
 */
static CK_RV try_on_token(const struct mod_decrypt *op)
{
    static const uint8_t msg[] = "ctok-p11.so decryption check";
    uint8_t ct[CTOK_MAX_RSA_BITS / 8], pt[CTOK_MAX_RSA_BITS / 8];
    size_t ctlen = sizeof(ct), ptlen = sizeof(pt);
    CK_RV refused =
        op->mech == CKM_RSA_PKCS_OAEP ? CKR_MECHANISM_PARAM_INVALID : CKR_MECHANISM_INVALID;
    struct ctok_dec_params dp;
    CK_RV rv = CKR_OK;

    dec_params(op, &dp);
    if (!encrypt_here(op, msg, sizeof(msg), ct, &ctlen))
        return refused; /* e.g. a label or hash too long for the key's size */
    if (!ctok_key_decrypt(op->key, &dp, ct, ctlen, pt, &ptlen))
        /* a reason of its own (login, permission, network) says it; else the token refused */
        rv = mod_rv_from_error(refused);
    else if (ptlen != sizeof(msg) || memcmp(pt, msg, ptlen) != 0)
        rv = refused;
    OPENSSL_cleanse(pt, sizeof(pt));
    return rv;
}

CK_RV C_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE kh)
{
    struct mod_session *s;
    struct mod_decrypt op;
    struct mod_dec_seen want;
    const struct mod_dec_seen *seen;
    CK_RV rv, again;

    if ((rv = mod_enter_op(h, m, CKF_DECRYPT, &s)) != CKR_OK)
        return rv;
    memset(&op, 0, sizeof(op));
    op.mech = m->mechanism;
    if (m->mechanism == CKM_RSA_PKCS_OAEP)
        rv = oaep_params(&op, m);
    else if (m->pParameter != NULL || m->ulParameterLen != 0)
        rv = CKR_MECHANISM_PARAM_INVALID;
    if (rv == CKR_OK)
        rv = mod_op_key(mod_slot_get(s->slot), kh, m->mechanism, CKF_DECRYPT, &op.key);
    if (rv == CKR_OK) {
        seen_of(&op, m, &want);
        if ((seen = seen_find(mod_slot_get(s->slot), &want)) != NULL) {
            rv = seen->rv;
        } else {
            /* the token decrypts without the module's lock */
            mod_leave();
            rv = try_on_token(&op);
            if ((again = mod_enter_op(h, m, CKF_DECRYPT, &s)) != CKR_OK) {
                mod_decrypt_clear(&op);
                return again;
            }
            want.rv = rv;
            if (rv == CKR_OK || rv == CKR_MECHANISM_INVALID || rv == CKR_MECHANISM_PARAM_INVALID)
                seen_add(mod_slot_get(s->slot), &want);
        }
    }
    if (rv == CKR_OK) {
        s->dec = op;
        s->decrypting = 1;
    } else {
        mod_decrypt_clear(&op);
    }
    mod_leave();
    return rv;
}

/*
 * The plaintext's length is known only once decrypted: a size query answers the modulus size;
 * a buffer smaller than the plaintext gets CKR_BUFFER_TOO_SMALL and the operation stays. The
 * operation is taken out of the session under the lock and run without it.
 */
CK_RV C_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out,
                CK_ULONG_PTR outlen)
{
    struct mod_session *s;
    struct mod_decrypt op;
    uint8_t plain[CTOK_MAX_RSA_BITS / 8];
    size_t size, n = sizeof(plain);
    struct ctok_dec_params dp;
    CK_RV rv;

    if (outlen == NULL || (in == NULL && inlen > 0))
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    if (!s->decrypting) {
        mod_leave();
        return CKR_OPERATION_NOT_INITIALIZED;
    }
    size = (size_t)EVP_PKEY_get_size(ctok_key_pub(s->dec.key));
    if (out == NULL) {
        *outlen = size;
        mod_leave();
        return CKR_OK;
    }
    op = s->dec;
    memset(&s->dec, 0, sizeof(s->dec));
    s->decrypting = 0;
    mod_leave();
    dec_params(&op, &dp);
    if (inlen != size) {
        rv = CKR_ENCRYPTED_DATA_LEN_RANGE;
    } else {
        /* C_DecryptInit saw the token decrypt with these parameters: the data is at fault */
        if (!ctok_key_decrypt(op.key, &dp, in, inlen, plain, &n))
            rv = mod_rv_from_error(CKR_ENCRYPTED_DATA_INVALID);
        else if (*outlen < n)
            rv = CKR_BUFFER_TOO_SMALL;
        else
            memcpy(out, plain, n);
        *outlen = rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL ? n : *outlen;
    }
    OPENSSL_cleanse(plain, sizeof(plain));
    if (rv == CKR_BUFFER_TOO_SMALL && mod_enter_session(h, &s) == CKR_OK) {
        /* the application asks again with a larger buffer: the operation goes back */
        if (!s->decrypting) {
            s->dec = op;
            s->decrypting = 1;
            memset(&op, 0, sizeof(op));
        }
        mod_leave();
    }
    mod_decrypt_clear(&op);
    return rv;
}

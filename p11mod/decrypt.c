/*
 * RSA decryption (CKM_RSA_PKCS) through the token layer's one decrypt call, ctok_key_decrypt.
 * Single-part only, as the spec has the mechanism. OAEP is not offered yet: SoftHSM takes only
 * SHA-1 for it and refuses the rest at C_DecryptInit, which OpenSC's pkcs11-tool --test fails
 * on (SoftHSM's own module too); what the module may promise there is for the next step.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>

#include "p11mod.h"

void mod_decrypt_clear(struct mod_decrypt *op)
{
    ctok_key_unref(op->key);
    memset(op, 0, sizeof(*op));
}

CK_RV C_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE kh)
{
    struct mod_session *s;
    CK_RV rv;

    if ((rv = mod_enter_op(h, m, CKF_DECRYPT, &s)) != CKR_OK)
        return rv;
    s->dec.mech = m->mechanism;
    if (m->pParameter != NULL || m->ulParameterLen != 0)
        rv = CKR_MECHANISM_PARAM_INVALID;
    else
        rv = mod_op_key(mod_slot_get(s->slot), kh, m->mechanism, CKF_DECRYPT, &s->dec.key);
    if (rv == CKR_OK)
        s->decrypting = 1;
    else
        mod_decrypt_clear(&s->dec);
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
    struct ctok_dec_params dp = {RSA_PKCS1_PADDING, NULL, NULL, NULL, 0, 0, 0};
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
    if (inlen != size) {
        rv = CKR_ENCRYPTED_DATA_LEN_RANGE;
    } else {
        if (!ctok_key_decrypt(op.key, &dp, in, inlen, plain, &n))
            rv = mod_rv_from_error(CKR_FUNCTION_FAILED);
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

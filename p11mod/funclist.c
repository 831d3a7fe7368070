/*
 * The function list (Cryptoki 2.40) and the module's one export, C_GetFunctionList. What
 * the module does not do yet returns CKR_FUNCTION_NOT_SUPPORTED, as the spec allows.
 */
#include <limits.h>
#include <openssl/rand.h>

#include "p11mod.h"

#define NOT_SUPPORTED(name, ...)                                                                   \
    static CK_RV ns_##name(__VA_ARGS__)                                                            \
    {                                                                                              \
        return CKR_FUNCTION_NOT_SUPPORTED;                                                         \
    }

NOT_SUPPORTED(InitToken, CK_SLOT_ID, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR)
NOT_SUPPORTED(InitPIN, CK_SESSION_HANDLE, CK_UTF8CHAR_PTR, CK_ULONG)
NOT_SUPPORTED(SetPIN, CK_SESSION_HANDLE, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR, CK_ULONG)
NOT_SUPPORTED(GetOperationState, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(SetOperationState, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_OBJECT_HANDLE,
              CK_OBJECT_HANDLE)
NOT_SUPPORTED(CopyObject, CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG,
              CK_OBJECT_HANDLE_PTR)
NOT_SUPPORTED(GetObjectSize, CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ULONG_PTR)
NOT_SUPPORTED(SetAttributeValue, CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG)
NOT_SUPPORTED(EncryptInit, CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE)
NOT_SUPPORTED(Encrypt, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(EncryptUpdate, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(EncryptFinal, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(DecryptUpdate, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(DecryptFinal, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(DigestInit, CK_SESSION_HANDLE, CK_MECHANISM_PTR)
NOT_SUPPORTED(Digest, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(DigestUpdate, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG)
NOT_SUPPORTED(DigestKey, CK_SESSION_HANDLE, CK_OBJECT_HANDLE)
NOT_SUPPORTED(DigestFinal, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(SignRecoverInit, CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE)
NOT_SUPPORTED(SignRecover, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(VerifyInit, CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE)
NOT_SUPPORTED(Verify, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG)
NOT_SUPPORTED(VerifyUpdate, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG)
NOT_SUPPORTED(VerifyFinal, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG)
NOT_SUPPORTED(VerifyRecoverInit, CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE)
NOT_SUPPORTED(VerifyRecover, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(DigestEncryptUpdate, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
              CK_ULONG_PTR)
NOT_SUPPORTED(DecryptDigestUpdate, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
              CK_ULONG_PTR)
NOT_SUPPORTED(SignEncryptUpdate, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
              CK_ULONG_PTR)
NOT_SUPPORTED(DecryptVerifyUpdate, CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
              CK_ULONG_PTR)
NOT_SUPPORTED(GenerateKey, CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_ATTRIBUTE_PTR, CK_ULONG,
              CK_OBJECT_HANDLE_PTR)
NOT_SUPPORTED(WrapKey, CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE,
              CK_BYTE_PTR, CK_ULONG_PTR)
NOT_SUPPORTED(UnwrapKey, CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_BYTE_PTR,
              CK_ULONG, CK_ATTRIBUTE_PTR, CK_ULONG, CK_OBJECT_HANDLE_PTR)
NOT_SUPPORTED(WaitForSlotEvent, CK_FLAGS, CK_SLOT_ID_PTR, CK_VOID_PTR)

/* Random bytes from OpenSSL's generator: a session's token may have none of its own. */
static CK_RV generate_random(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG len)
{
    struct mod_session *s;
    CK_RV rv;

    if ((out == NULL && len > 0) || len > INT_MAX)
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    mod_leave();
    return len == 0 || RAND_bytes(out, (int)len) == 1 ? CKR_OK : CKR_FUNCTION_FAILED;
}

static CK_RV seed_random(CK_SESSION_HANDLE h, CK_BYTE_PTR seed, CK_ULONG len)
{
    (void)h, (void)seed, (void)len;
    return CKR_RANDOM_SEED_NOT_SUPPORTED;
}

/* Legacy functions: the spec's answer for a module without parallel functions. */
static CK_RV legacy(CK_SESSION_HANDLE h)
{
    (void)h;
    return CKR_FUNCTION_NOT_PARALLEL;
}

static CK_RV get_function_list(CK_FUNCTION_LIST_PTR_PTR list);

static CK_FUNCTION_LIST functions = {
    {2, 40}, /* whatever version pkcs11.h is: interface.c offers 3.0 */
    mod_C_Initialize,
    mod_C_Finalize,
    mod_C_GetInfo,
    get_function_list,
    mod_C_GetSlotList,
    mod_C_GetSlotInfo,
    mod_C_GetTokenInfo,
    C_GetMechanismList,
    C_GetMechanismInfo,
    ns_InitToken,
    ns_InitPIN,
    ns_SetPIN,
    C_OpenSession,
    C_CloseSession,
    C_CloseAllSessions,
    C_GetSessionInfo,
    ns_GetOperationState,
    ns_SetOperationState,
    C_Login,
    C_Logout,
    C_CreateObject,
    ns_CopyObject,
    C_DestroyObject,
    ns_GetObjectSize,
    C_GetAttributeValue,
    ns_SetAttributeValue,
    C_FindObjectsInit,
    C_FindObjects,
    C_FindObjectsFinal,
    ns_EncryptInit,
    ns_Encrypt,
    ns_EncryptUpdate,
    ns_EncryptFinal,
    C_DecryptInit,
    C_Decrypt,
    ns_DecryptUpdate,
    ns_DecryptFinal,
    ns_DigestInit,
    ns_Digest,
    ns_DigestUpdate,
    ns_DigestKey,
    ns_DigestFinal,
    C_SignInit,
    C_Sign,
    C_SignUpdate,
    C_SignFinal,
    ns_SignRecoverInit,
    ns_SignRecover,
    ns_VerifyInit,
    ns_Verify,
    ns_VerifyUpdate,
    ns_VerifyFinal,
    ns_VerifyRecoverInit,
    ns_VerifyRecover,
    ns_DigestEncryptUpdate,
    ns_DecryptDigestUpdate,
    ns_SignEncryptUpdate,
    ns_DecryptVerifyUpdate,
    ns_GenerateKey,
    C_GenerateKeyPair,
    ns_WrapKey,
    ns_UnwrapKey,
    C_DeriveKey,
    seed_random,
    generate_random,
    legacy,
    legacy,
    ns_WaitForSlotEvent,
};

static CK_RV get_function_list(CK_FUNCTION_LIST_PTR_PTR list)
{
    if (list == NULL)
        return CKR_ARGUMENTS_BAD;
    *list = &functions;
    return CKR_OK;
}

CK_FUNCTION_LIST *mod_function_list(void)
{
    return &functions;
}

P11MOD_EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    return get_function_list(list);
}

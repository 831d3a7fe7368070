/* The shim's function table and its configuration (config.c): what shim.c and config.c share.
 * README.md describes the CTOK_SHIM_* variables. */
#ifndef CTOK_P11SHIM_SHIM_H
#define CTOK_P11SHIM_SHIM_H

#include <limits.h>

#include <p11-kit/pkcs11.h>

#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"

/* The 2.40 function list, in order. */
// clang-format off
#define LIST_FUNCTIONS(X) \
    X(C_Initialize) \
    X(C_Finalize) \
    X(C_GetInfo) \
    X(C_GetFunctionList) \
    X(C_GetSlotList) \
    X(C_GetSlotInfo) \
    X(C_GetTokenInfo) \
    X(C_GetMechanismList) \
    X(C_GetMechanismInfo) \
    X(C_InitToken) \
    X(C_InitPIN) \
    X(C_SetPIN) \
    X(C_OpenSession) \
    X(C_CloseSession) \
    X(C_CloseAllSessions) \
    X(C_GetSessionInfo) \
    X(C_GetOperationState) \
    X(C_SetOperationState) \
    X(C_Login) \
    X(C_Logout) \
    X(C_CreateObject) \
    X(C_CopyObject) \
    X(C_DestroyObject) \
    X(C_GetObjectSize) \
    X(C_GetAttributeValue) \
    X(C_SetAttributeValue) \
    X(C_FindObjectsInit) \
    X(C_FindObjects) \
    X(C_FindObjectsFinal) \
    X(C_EncryptInit) \
    X(C_Encrypt) \
    X(C_EncryptUpdate) \
    X(C_EncryptFinal) \
    X(C_DecryptInit) \
    X(C_Decrypt) \
    X(C_DecryptUpdate) \
    X(C_DecryptFinal) \
    X(C_DigestInit) \
    X(C_Digest) \
    X(C_DigestUpdate) \
    X(C_DigestKey) \
    X(C_DigestFinal) \
    X(C_SignInit) \
    X(C_Sign) \
    X(C_SignUpdate) \
    X(C_SignFinal) \
    X(C_SignRecoverInit) \
    X(C_SignRecover) \
    X(C_VerifyInit) \
    X(C_Verify) \
    X(C_VerifyUpdate) \
    X(C_VerifyFinal) \
    X(C_VerifyRecoverInit) \
    X(C_VerifyRecover) \
    X(C_DigestEncryptUpdate) \
    X(C_DecryptDigestUpdate) \
    X(C_SignEncryptUpdate) \
    X(C_DecryptVerifyUpdate) \
    X(C_GenerateKey) \
    X(C_GenerateKeyPair) \
    X(C_WrapKey) \
    X(C_UnwrapKey) \
    X(C_DeriveKey) \
    X(C_SeedRandom) \
    X(C_GenerateRandom) \
    X(C_GetFunctionStatus) \
    X(C_CancelFunction) \
    X(C_WaitForSlotEvent)
// clang-format on

/* What the shim counts: the list, and the C_UnlockPIN extension. */
enum fn {
#define X(name) FN_##name,
    LIST_FUNCTIONS(X)
#undef X
        FN_C_UnlockPIN,
    FN_COUNT
};

extern const char *const shim_fn_names[FN_COUNT];

struct config {
    char module[PATH_MAX];
    char log_path[PATH_MAX];
    int log_all, log_detail;
    int version_set;
    CK_VERSION version;
    int multipin;
    char card_label[2][33]; /* the SoftHSM labels of the two halves of the card */
    int private_certs;
    unsigned long fail_at[FN_COUNT]; /* 0: never */
    CK_RV fail_rv[FN_COUNT];
    unsigned long fail_once_at[FN_COUNT]; /* CTOK_SHIM_FAIL_ONCE: only that call; 0: never */
    CK_RV fail_once_rv[FN_COUNT];
    unsigned long disconnect_every; /* 0: never */
    CK_RV disconnect_rv;
    int no_unlock;
    unsigned long pin_tries;  /* CTOK_SHIM_PIN_TRIES: 0 never locks */
    char pin_state[PATH_MAX]; /* its counter file, shared by processes */
};

/* Reads every CTOK_SHIM_* variable into c; 0 (after a message on stderr) on a malformed one. */
int shim_parse_config(struct config *c);

/* Parses "<major>.<minor>": 1 and *out set, 0 for none (NULL or empty), -1 if malformed. */
int shim_parse_version(CK_VERSION *out, const char *v);

#endif

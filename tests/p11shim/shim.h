/* The shim's function table and its configuration (config.c): what shim.c, config.c, frame.c
 * and card.c share. README.md describes the CTOK_SHIM_* variables. */
#ifndef CTOK_P11SHIM_SHIM_H
#define CTOK_P11SHIM_SHIM_H

#include <limits.h>
#include <pthread.h>
#include <sys/types.h>

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

/* ---- the state shim.c keeps; g_lock guards it, never across a call into the module ---- */
extern pthread_mutex_t g_lock;
extern CK_FUNCTION_LIST_PTR g_soft; /* the wrapped module's list */
extern struct config g_cfg;
extern int g_initialized;
extern pid_t g_init_pid;
extern unsigned long g_calls[FN_COUNT]; /* from the last C_Initialize */
extern int g_disconnected;

/* ---- the frame around every call (frame.c) ---- */
struct call {
    enum fn fn;
    int log, detail;
    int injected;    /* the result is CTOK_SHIM_FAIL's */
    char extra[200]; /* CTOK_SHIM_LOG_DETAIL: slot, token, user */
};

/* Calls between shim_enter and shim_leave, any thread: a fork() while some run is logged. */
extern unsigned long g_in_flight;
/* Counts the call; CKR_OK when it may go on to the module, else what it returns instead. */
CK_RV shim_enter(struct call *c, enum fn fn);
/* Logs the call (when it is logged) and returns rv. */
CK_RV shim_leave(struct call *c, CK_RV rv);
/* CTOK_SHIM_LOG_DETAIL's " slot=... token=...", " user=..." and " mech=..." on the call. */
void shim_detail_slot(struct call *c, CK_SLOT_ID slot);
void shim_detail_session(struct call *c, CK_SESSION_HANDLE s);
void shim_detail_user(struct call *c, CK_USER_TYPE user);
void shim_detail_mech(struct call *c, CK_MECHANISM_PTR m);
void shim_log_line(const char *path, const char *name, const char *rv, const char *extra);
void shim_log_write(const char *path, enum fn fn, CK_RV rv, const char *extra);
/* Is fn logged under configuration c? */
int shim_logged(const struct config *c, enum fn fn);

/* ---- the card the shim plays (card.c) ---- */
/* Blank-pads text into a PKCS#11 string field. */
void shim_pad(CK_UTF8CHAR *field, size_t size, const char *text);
/* Which half of the two-PIN card a SoftHSM token is: 0, 1, or -1 for neither. */
int shim_card_half(const CK_TOKEN_INFO *ti);
/* The token info as the card shows it: its half's label, CKF_LOGIN_REQUIRED for private certs. */
void shim_present_token(CK_TOKEN_INFO *ti);
/* CTOK_SHIM_PIN_TRIES: CKR_PIN_LOCKED before a user PIN check when no try is left; after it,
 * count a wrong PIN or reset on a good one; show the count in C_GetTokenInfo's flags. */
CK_RV shim_pin_locked(CK_SESSION_HANDLE s);
void shim_pin_checked(CK_SESSION_HANDLE s, CK_RV rv);
void shim_pin_flags(CK_SLOT_ID slot, CK_TOKEN_INFO *ti);

#endif

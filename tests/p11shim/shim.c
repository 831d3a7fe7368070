/* ctok-p11shim: a PKCS#11 test module that forwards every function of the 2.40 function list
 * to SoftHSM2 (or CTOK_SHIM_MODULE) and, configured by CTOK_SHIM_* environment variables read
 * at C_Initialize, plays the tokens ctok must cope with: a two-PIN card, a 2.11 module, private
 * certificates, failing and disconnecting HSMs, the C_UnlockPIN extension; and logs the calls
 * tests assert on. README.md in this folder is the interface.
 *
 * Locking: g_init_lock serializes C_Initialize/C_Finalize; g_lock guards the state below and
 * is only ever held for a few instructions, never across a call into the wrapped module.
 * The frame around every call (counting, injected failures, the log) is frame.c's; the card
 * it plays (labels, retry counter) card.c's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/types.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "ckr.h"
#include "shim.h"

#define EXPORT __attribute__((visibility("default")))
#define CARD_SLOT_DESCRIPTION "Card Reader"

static pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
/* Loaded once and kept for the life of the process: unloading SoftHSM is what crashes. */
static void *g_dl;
CK_FUNCTION_LIST_PTR g_soft;
struct config g_cfg;
int g_initialized;
pid_t g_init_pid;
static unsigned long g_initialize_calls; /* C_Initialize counts for the whole process */
unsigned long g_calls[FN_COUNT];         /* the rest from the last C_Initialize */
static unsigned long g_signs;            /* successful C_Sign since the last C_Initialize */
int g_disconnected;

static CK_FUNCTION_LIST g_list;

static const CK_VERSION default_version = {CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR};

static CK_RV shim_C_SignInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    struct call c;
    CK_RV rv = shim_enter(&c, FN_C_SignInit);

    if (rv == CKR_OK) {
        shim_detail_session(&c, s);
        shim_detail_mech(&c, m);
        rv = g_soft->C_SignInit(s, m, k);
    }
    return shim_leave(&c, rv);
}

/* ---- forwarded as they are ---- */

/* The first parameter names the session (FWD_S) or slot (FWD_SLOT) for the detail log. */
#define FWD_S(name, params, args)                                                                  \
    static CK_RV shim_##name params                                                                \
    {                                                                                              \
        struct call c;                                                                             \
        CK_RV rv = shim_enter(&c, FN_##name);                                                      \
        if (rv == CKR_OK) {                                                                        \
            shim_detail_session(&c, s);                                                            \
            rv = g_soft->name args;                                                                \
        }                                                                                          \
        return shim_leave(&c, rv);                                                                 \
    }
#define FWD_SLOT(name, params, args)                                                               \
    static CK_RV shim_##name params                                                                \
    {                                                                                              \
        struct call c;                                                                             \
        CK_RV rv = shim_enter(&c, FN_##name);                                                      \
        if (rv == CKR_OK) {                                                                        \
            shim_detail_slot(&c, slot);                                                            \
            rv = g_soft->name args;                                                                \
        }                                                                                          \
        return shim_leave(&c, rv);                                                                 \
    }
#define FWD(name, params, args)                                                                    \
    static CK_RV shim_##name params                                                                \
    {                                                                                              \
        struct call c;                                                                             \
        CK_RV rv = shim_enter(&c, FN_##name);                                                      \
        if (rv == CKR_OK)                                                                          \
            rv = g_soft->name args;                                                                \
        return shim_leave(&c, rv);                                                                 \
    }

/* A cryptographic call that fails ends its operation (PKCS#11 2.40 5.2): when CTOK_SHIM_FAIL
 * fails one, the module's operation is ended the only way 2.40 has, by finishing it into a
 * scratch buffer, so the next C_*Init does not meet CKR_OPERATION_ACTIVE. */
#define FWD_OP(name, params, args, end)                                                            \
    static CK_RV shim_##name params                                                                \
    {                                                                                              \
        struct call c;                                                                             \
        CK_RV rv = shim_enter(&c, FN_##name);                                                      \
        if (rv == CKR_OK) {                                                                        \
            shim_detail_session(&c, s);                                                            \
            rv = g_soft->name args;                                                                \
        } else if (c.injected) {                                                                   \
            CK_BYTE scratch[SCRATCH];                                                              \
            CK_ULONG sl = sizeof(scratch);                                                         \
            (void)scratch;                                                                         \
            (void)sl;                                                                              \
            (void)g_soft->end;                                                                     \
        }                                                                                          \
        return shim_leave(&c, rv);                                                                 \
    }
#define SCRATCH 16384

typedef CK_SESSION_HANDLE S;
typedef CK_OBJECT_HANDLE O;
typedef CK_MECHANISM_PTR M;
typedef CK_ATTRIBUTE_PTR A;
typedef CK_BYTE_PTR B;
typedef CK_ULONG_PTR LP;

FWD(C_GetSlotList, (CK_BBOOL present, CK_SLOT_ID_PTR list, LP count), (present, list, count))
FWD(C_WaitForSlotEvent, (CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR r), (flags, slot, r))
FWD_SLOT(C_GetMechanismList, (CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, LP count),
         (slot, list, count))
FWD_SLOT(C_GetMechanismInfo, (CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info),
         (slot, type, info))
FWD_SLOT(C_InitToken, (CK_SLOT_ID slot, B pin, CK_ULONG len, B label), (slot, pin, len, label))
FWD_SLOT(C_OpenSession,
         (CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
          CK_SESSION_HANDLE_PTR s),
         (slot, flags, app, notify, s))
FWD_SLOT(C_CloseAllSessions, (CK_SLOT_ID slot), (slot))
FWD_S(C_CloseSession, (S s), (s))
FWD_S(C_GetSessionInfo, (S s, CK_SESSION_INFO_PTR info), (s, info))
FWD_S(C_GetOperationState, (S s, B state, LP len), (s, state, len))
FWD_S(C_SetOperationState, (S s, B state, CK_ULONG len, O enc, O auth), (s, state, len, enc, auth))
FWD_S(C_Logout, (S s), (s))
FWD_S(C_CreateObject, (S s, A t, CK_ULONG n, CK_OBJECT_HANDLE_PTR o), (s, t, n, o))
FWD_S(C_CopyObject, (S s, O o, A t, CK_ULONG n, CK_OBJECT_HANDLE_PTR no), (s, o, t, n, no))
FWD_S(C_DestroyObject, (S s, O o), (s, o))
FWD_S(C_GetObjectSize, (S s, O o, LP size), (s, o, size))
FWD_S(C_GetAttributeValue, (S s, O o, A t, CK_ULONG n), (s, o, t, n))
FWD_S(C_SetAttributeValue, (S s, O o, A t, CK_ULONG n), (s, o, t, n))
FWD_S(C_FindObjectsInit, (S s, A t, CK_ULONG n), (s, t, n))
FWD_S(C_FindObjectsFinal, (S s), (s))
FWD_S(C_EncryptInit, (S s, M m, O k), (s, m, k))
FWD_OP(C_Encrypt, (S s, B in, CK_ULONG il, B out, LP ol), (s, in, il, out, ol),
       C_Encrypt(s, in, il, scratch, &sl))
FWD_OP(C_EncryptUpdate, (S s, B in, CK_ULONG il, B out, LP ol), (s, in, il, out, ol),
       C_EncryptFinal(s, scratch, &sl))
FWD_OP(C_EncryptFinal, (S s, B out, LP ol), (s, out, ol), C_EncryptFinal(s, scratch, &sl))
FWD_S(C_DecryptInit, (S s, M m, O k), (s, m, k))
FWD_OP(C_Decrypt, (S s, B in, CK_ULONG il, B out, LP ol), (s, in, il, out, ol),
       C_Decrypt(s, in, il, scratch, &sl))
FWD_OP(C_DecryptUpdate, (S s, B in, CK_ULONG il, B out, LP ol), (s, in, il, out, ol),
       C_DecryptFinal(s, scratch, &sl))
FWD_OP(C_DecryptFinal, (S s, B out, LP ol), (s, out, ol), C_DecryptFinal(s, scratch, &sl))
FWD_S(C_DigestInit, (S s, M m), (s, m))
FWD_OP(C_Digest, (S s, B in, CK_ULONG il, B out, LP ol), (s, in, il, out, ol),
       C_Digest(s, in, il, scratch, &sl))
FWD_OP(C_DigestUpdate, (S s, B in, CK_ULONG il), (s, in, il), C_DigestFinal(s, scratch, &sl))
FWD_OP(C_DigestKey, (S s, O k), (s, k), C_DigestFinal(s, scratch, &sl))
FWD_OP(C_DigestFinal, (S s, B out, LP ol), (s, out, ol), C_DigestFinal(s, scratch, &sl))
FWD_OP(C_SignUpdate, (S s, B in, CK_ULONG il), (s, in, il), C_SignFinal(s, scratch, &sl))
FWD_OP(C_SignFinal, (S s, B out, LP ol), (s, out, ol), C_SignFinal(s, scratch, &sl))
FWD_S(C_SignRecoverInit, (S s, M m, O k), (s, m, k))
FWD_S(C_SignRecover, (S s, B in, CK_ULONG il, B out, LP ol), (s, in, il, out, ol))
FWD_S(C_VerifyInit, (S s, M m, O k), (s, m, k))
FWD_OP(C_Verify, (S s, B in, CK_ULONG il, B sig, CK_ULONG siglen), (s, in, il, sig, siglen),
       C_Verify(s, in, il, sig, sl))
FWD_S(C_VerifyUpdate, (S s, B in, CK_ULONG il), (s, in, il))
FWD_S(C_VerifyFinal, (S s, B sig, CK_ULONG sl), (s, sig, sl))
FWD_S(C_VerifyRecoverInit, (S s, M m, O k), (s, m, k))
FWD_S(C_VerifyRecover, (S s, B sig, CK_ULONG sl, B out, LP ol), (s, sig, sl, out, ol))
FWD_S(C_DigestEncryptUpdate, (S s, B in, CK_ULONG il, B out, LP ol), (s, in, il, out, ol))
FWD_S(C_DecryptDigestUpdate, (S s, B in, CK_ULONG il, B out, LP ol), (s, in, il, out, ol))
FWD_S(C_SignEncryptUpdate, (S s, B in, CK_ULONG il, B out, LP ol), (s, in, il, out, ol))
FWD_S(C_DecryptVerifyUpdate, (S s, B in, CK_ULONG il, B out, LP ol), (s, in, il, out, ol))
FWD_S(C_GenerateKey, (S s, M m, A t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k), (s, m, t, n, k))
FWD_S(C_GenerateKeyPair,
      (S s, M m, A pub, CK_ULONG npub, A priv, CK_ULONG npriv, CK_OBJECT_HANDLE_PTR hpub,
       CK_OBJECT_HANDLE_PTR hpriv),
      (s, m, pub, npub, priv, npriv, hpub, hpriv))
FWD_S(C_WrapKey, (S s, M m, O wk, O k, B out, LP ol), (s, m, wk, k, out, ol))
FWD_S(C_UnwrapKey, (S s, M m, O uk, B in, CK_ULONG il, A t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k),
      (s, m, uk, in, il, t, n, k))
FWD_S(C_DeriveKey, (S s, M m, O base, A t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k),
      (s, m, base, t, n, k))
FWD_S(C_SeedRandom, (S s, B seed, CK_ULONG len), (s, seed, len))
FWD_S(C_GenerateRandom, (S s, B out, CK_ULONG len), (s, out, len))
FWD_S(C_GetFunctionStatus, (S s), (s))
FWD_S(C_CancelFunction, (S s), (s))

/* ---- initialization ---- */

static CK_RV load_module(const char *path)
{
    CK_C_GetFunctionList get;

    if (g_soft)
        return CKR_OK;
    g_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!g_dl) {
        fprintf(stderr, "ctok-p11shim: cannot load %s: %s\n", path, dlerror());
        return CKR_GENERAL_ERROR;
    }
    get = (CK_C_GetFunctionList)dlsym(g_dl, "C_GetFunctionList");
    if (!get || get(&g_soft) != CKR_OK || !g_soft) {
        fprintf(stderr, "ctok-p11shim: %s has no usable C_GetFunctionList\n", path);
        g_soft = NULL;
        dlclose(g_dl);
        g_dl = NULL;
        return CKR_GENERAL_ERROR;
    }
    return CKR_OK;
}

static int forked_child(void)
{
    int child;

    pthread_mutex_lock(&g_lock);
    child = g_initialized && g_init_pid != getpid();
    pthread_mutex_unlock(&g_lock);
    return child;
}

static CK_RV shim_C_Initialize(CK_VOID_PTR args)
{
    static struct config next; /* guarded by g_init_lock; too big for a thread's stack */
    CK_RV rv = CKR_OK;
    unsigned long n;

    pthread_mutex_lock(&g_init_lock);
    if (!shim_parse_config(&next)) {
        pthread_mutex_unlock(&g_init_lock);
        return CKR_GENERAL_ERROR;
    }
    pthread_mutex_lock(&g_lock);
    n = ++g_initialize_calls;
    pthread_mutex_unlock(&g_lock);
    if (next.fail_at[FN_C_Initialize] && n >= next.fail_at[FN_C_Initialize])
        rv = next.fail_rv[FN_C_Initialize];
    else if (next.fail_once_at[FN_C_Initialize] == n)
        rv = next.fail_once_rv[FN_C_Initialize];
    if (rv == CKR_OK)
        rv = load_module(next.module);
    if (rv == CKR_OK && forked_child()) {
        /* The child's copy of the parent's module goes first: SoftHSM keeps it across fork. */
        (void)g_soft->C_Finalize(NULL);
        pthread_mutex_lock(&g_lock);
        g_initialized = 0;
        pthread_mutex_unlock(&g_lock);
    }
    if (rv == CKR_OK)
        rv = g_soft->C_Initialize(args);
    if (rv == CKR_OK) {
        pthread_mutex_lock(&g_lock);
        g_cfg = next;
        g_initialized = 1;
        g_init_pid = getpid();
        memset(g_calls, 0, sizeof(g_calls));
        g_calls[FN_C_Initialize] = n;
        g_signs = 0;
        g_disconnected = 0;
        g_list.version = g_cfg.version_set ? g_cfg.version : default_version;
        pthread_mutex_unlock(&g_lock);
    }
    if (shim_logged(&next, FN_C_Initialize))
        shim_log_write(next.log_path, FN_C_Initialize, rv, NULL);
    pthread_mutex_unlock(&g_init_lock);
    return rv;
}

static CK_RV shim_C_Finalize(CK_VOID_PTR reserved)
{
    struct call c;
    CK_RV rv;

    pthread_mutex_lock(&g_init_lock);
    rv = shim_enter(&c, FN_C_Finalize);
    if (rv == CKR_OK) {
        rv = g_soft->C_Finalize(reserved);
        if (rv == CKR_OK || rv == CKR_CRYPTOKI_NOT_INITIALIZED) {
            pthread_mutex_lock(&g_lock);
            g_initialized = 0;
            g_disconnected = 0;
            pthread_mutex_unlock(&g_lock);
        }
    }
    rv = shim_leave(&c, rv);
    pthread_mutex_unlock(&g_init_lock);
    return rv;
}

static CK_RV shim_C_GetInfo(CK_INFO_PTR info)
{
    struct call c;
    CK_RV rv = shim_enter(&c, FN_C_GetInfo);

    if (rv == CKR_OK)
        rv = g_soft->C_GetInfo(info);
    if (rv == CKR_OK) {
        pthread_mutex_lock(&g_lock);
        if (g_cfg.version_set)
            info->cryptokiVersion = g_cfg.version;
        pthread_mutex_unlock(&g_lock);
    }
    return shim_leave(&c, rv);
}

/* ---- the behaviours ---- */

static CK_RV shim_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
    struct call c;
    CK_RV rv = shim_enter(&c, FN_C_GetSlotInfo);

    if (rv == CKR_OK) {
        shim_detail_slot(&c, slot);
        rv = g_soft->C_GetSlotInfo(slot, info);
    }
    if (rv == CKR_OK && (info->flags & CKF_TOKEN_PRESENT)) {
        CK_TOKEN_INFO ti;
        if (g_soft->C_GetTokenInfo(slot, &ti) == CKR_OK && shim_card_half(&ti) >= 0)
            shim_pad(info->slotDescription, sizeof(info->slotDescription), CARD_SLOT_DESCRIPTION);
    }
    return shim_leave(&c, rv);
}

static CK_RV shim_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
    struct call c;
    CK_RV rv = shim_enter(&c, FN_C_GetTokenInfo);

    if (rv == CKR_OK) {
        shim_detail_slot(&c, slot);
        rv = g_soft->C_GetTokenInfo(slot, info);
    }
    if (rv == CKR_OK) {
        shim_present_token(info);
        shim_pin_flags(slot, info);
    }
    return shim_leave(&c, rv);
}

static CK_RV shim_C_Login(S s, CK_USER_TYPE user, B pin, CK_ULONG len)
{
    struct call c;
    CK_RV rv = shim_enter(&c, FN_C_Login);

    if (rv == CKR_OK) {
        shim_detail_session(&c, s);
        if (user == CKU_USER)
            rv = shim_pin_locked(s);
        if (rv == CKR_OK)
            rv = g_soft->C_Login(s, user, pin, len);
        if (user == CKU_USER)
            shim_pin_checked(s, rv == CKR_USER_ALREADY_LOGGED_IN ? CKR_OK : rv);
    }
    shim_detail_user(&c, user);
    return shim_leave(&c, rv);
}

static int user_logged_in(S s)
{
    CK_SESSION_INFO si;

    if (g_soft->C_GetSessionInfo(s, &si) != CKR_OK)
        return 0;
    return si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS;
}

static int is_certificate(S s, O o)
{
    CK_OBJECT_CLASS cls;
    CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof(cls)};

    return g_soft->C_GetAttributeValue(s, o, &a, 1) == CKR_OK && cls == CKO_CERTIFICATE;
}

/* CTOK_SHIM_PRIVATE_CERTS: certificates exist only for a token the user is logged in to.
 * The token's own session state is the login state, so C_Logout, C_CloseAllSessions,
 * closing the last session and C_Finalize all end it as the standard says. */
static CK_RV shim_C_FindObjects(S s, CK_OBJECT_HANDLE_PTR objects, CK_ULONG max, LP count)
{
    struct call c;
    CK_RV rv = shim_enter(&c, FN_C_FindObjects);
    int hide;

    if (rv != CKR_OK)
        return shim_leave(&c, rv);
    shim_detail_session(&c, s);
    pthread_mutex_lock(&g_lock);
    hide = g_cfg.private_certs;
    pthread_mutex_unlock(&g_lock);
    if (!hide || !objects || !count || max == 0 || user_logged_in(s))
        return shim_leave(&c, g_soft->C_FindObjects(s, objects, max, count));

    /* Keep asking until the caller's buffer is full or the search is over, so a short
     * answer still means "no more objects". */
    CK_ULONG got = 0;
    while (got < max) {
        CK_ULONG n = 0;
        rv = g_soft->C_FindObjects(s, objects + got, max - got, &n);
        if (rv != CKR_OK || n == 0)
            break;
        CK_ULONG base = got;
        for (CK_ULONG i = 0; i < n; i++) {
            CK_OBJECT_HANDLE o = objects[base + i];
            if (!is_certificate(s, o))
                objects[got++] = o;
        }
    }
    *count = rv == CKR_OK ? got : 0;
    return shim_leave(&c, rv);
}

/* CTOK_SHIM_DISCONNECT_EVERY: the Nth successful signature since C_Initialize is the last
 * one; a signature that completes after that is lost with the connection. */
static CK_RV count_signature(void)
{
    CK_RV rv = CKR_OK;

    pthread_mutex_lock(&g_lock);
    if (g_disconnected) {
        rv = g_cfg.disconnect_rv;
    } else if (g_cfg.disconnect_every) {
        if (++g_signs >= g_cfg.disconnect_every)
            g_disconnected = 1;
    }
    pthread_mutex_unlock(&g_lock);
    return rv;
}

static CK_RV shim_C_Sign(S s, B in, CK_ULONG il, B sig, LP sl)
{
    struct call c;
    CK_RV rv = shim_enter(&c, FN_C_Sign);

    if (rv == CKR_OK) {
        shim_detail_session(&c, s);
        rv = g_soft->C_Sign(s, in, il, sig, sl);
        /* A length query (no buffer) produces no signature. */
        if (rv == CKR_OK && sig)
            rv = count_signature();
    } else if (c.injected) {
        CK_BYTE scratch[SCRATCH];
        CK_ULONG len = sizeof(scratch);
        (void)g_soft->C_Sign(s, in, il, scratch, &len);
    }
    if (c.detail && !sig) {
        size_t len = strlen(c.extra);
        snprintf(c.extra + len, sizeof(c.extra) - len, " length-query");
    }
    return shim_leave(&c, rv);
}

/* With CTOK_SHIM_PIN_TRIES, C_SetPIN checks the old PIN against the counter as C_Login does,
 * and setting a PIN with C_InitPIN (the SO's) unlocks it. */
static CK_RV shim_C_SetPIN(S s, B old, CK_ULONG old_len, B pin, CK_ULONG len)
{
    struct call c;
    CK_RV rv = shim_enter(&c, FN_C_SetPIN);

    if (rv == CKR_OK) {
        shim_detail_session(&c, s);
        rv = shim_pin_locked(s);
        if (rv == CKR_OK)
            rv = g_soft->C_SetPIN(s, old, old_len, pin, len);
        shim_pin_checked(s, rv);
    }
    return shim_leave(&c, rv);
}

static CK_RV init_pin(S s, B pin, CK_ULONG len)
{
    CK_RV rv = g_soft->C_InitPIN(s, pin, len);

    if (rv == CKR_OK)
        shim_pin_checked(s, rv);
    return rv;
}

static CK_RV shim_C_InitPIN(S s, B pin, CK_ULONG len)
{
    struct call c;
    CK_RV rv = shim_enter(&c, FN_C_InitPIN);

    if (rv == CKR_OK) {
        shim_detail_session(&c, s);
        rv = init_pin(s, pin, len);
    }
    return shim_leave(&c, rv);
}

/* The card extension (seed 004): like C_SetPIN with the PUK, which is the token's SO PIN. */
EXPORT CK_RV C_UnlockPIN(CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR puk, CK_ULONG puk_len,
                         CK_UTF8CHAR_PTR pin, CK_ULONG pin_len)
{
    struct call c;
    CK_RV rv = shim_enter(&c, FN_C_UnlockPIN);
    int no_unlock;

    if (rv == CKR_OK) {
        shim_detail_session(&c, s);
        pthread_mutex_lock(&g_lock);
        no_unlock = g_cfg.no_unlock;
        pthread_mutex_unlock(&g_lock);
        if (no_unlock)
            rv = CKR_FUNCTION_NOT_SUPPORTED;
    }
    if (rv == CKR_OK) {
        rv = g_soft->C_Login(s, CKU_SO, puk, puk_len);
        if (rv == CKR_OK) {
            CK_RV out;
            rv = init_pin(s, pin, pin_len);
            out = g_soft->C_Logout(s);
            if (rv == CKR_OK)
                rv = out;
        }
    }
    return shim_leave(&c, rv);
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    CK_VERSION version = default_version;

    if (!list)
        return CKR_ARGUMENTS_BAD;
    /* The list's version is read before C_Initialize, so CTOK_SHIM_VERSION is read here too. */
    if (shim_parse_version(&version, getenv("CTOK_SHIM_VERSION")) <= 0)
        version = default_version;
    pthread_mutex_lock(&g_lock);
    g_list.version = version;
    pthread_mutex_unlock(&g_lock);
    *list = &g_list;
    return CKR_OK;
}

/* A fork while another thread holds a lock must not leave the child's copy locked. A fork
 * while calls are in flight (the child would inherit the wrapped module mid-call) is logged. */
static void before_fork(void)
{
    unsigned long n;

    pthread_mutex_lock(&g_init_lock);
    pthread_mutex_lock(&g_lock);
    n = __atomic_load_n(&g_in_flight, __ATOMIC_SEQ_CST);
    if (n > 0 && g_cfg.log_path[0]) {
        char extra[40];

        snprintf(extra, sizeof(extra), " in_flight=%lu", n);
        shim_log_line(g_cfg.log_path, "fork", "mid-call", extra);
    }
}

static void after_fork(void)
{
    pthread_mutex_unlock(&g_lock);
    pthread_mutex_unlock(&g_init_lock);
}

__attribute__((constructor)) static void shim_load(void)
{
    pthread_atfork(before_fork, after_fork, after_fork);
}

static CK_RV shim_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    return C_GetFunctionList(list);
}

static CK_FUNCTION_LIST g_list = {.version = {CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR},
#define X(name) .name = shim_##name,
                                  LIST_FUNCTIONS(X)
#undef X
};

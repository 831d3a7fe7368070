/* ctok-p11shim's frame around every call: it counts the call, injects CTOK_SHIM_FAIL's
 * failures and a disconnected module's, and logs the calls tests assert on (README.md). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ckr.h"
#include "shim.h"

/* Logged without CTOK_SHIM_LOG_ALL: what tests assert on, not the chatter around it. */
static const enum fn logged_by_default[] = {
    FN_C_Initialize,       FN_C_Finalize,        FN_C_InitToken,   FN_C_InitPIN,
    FN_C_SetPIN,           FN_C_UnlockPIN,       FN_C_OpenSession, FN_C_CloseSession,
    FN_C_CloseAllSessions, FN_C_Login,           FN_C_Logout,      FN_C_CreateObject,
    FN_C_DestroyObject,    FN_C_FindObjectsInit, FN_C_SignInit,    FN_C_Sign,
    FN_C_DecryptInit,      FN_C_Decrypt,         FN_C_DeriveKey,   FN_C_GenerateKey,
    FN_C_GenerateKeyPair,
};

/* ---- logging ---- */

/* One line per call, one write(2) on an O_APPEND file: processes and threads may share it. */
void shim_log_line(const char *path, const char *name, const char *rv, const char *extra)
{
    char line[512];
    int saved = errno;
    int n =
        snprintf(line, sizeof(line), "%ld %s %s%s\n", (long)getpid(), name, rv, extra ? extra : "");
    if (n >= (int)sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) < 0) {
            /* nothing to do: a test shim must not fail a call over its log */
        }
        close(fd);
    }
    errno = saved;
}

void shim_log_write(const char *path, enum fn fn, CK_RV rv, const char *extra)
{
    char buf[SHIM_CKR_BUFLEN];

    shim_log_line(path, shim_fn_names[fn], shim_ckr_name(rv, buf), extra);
}

int shim_logged(const struct config *c, enum fn fn)
{
    if (!c->log_path[0])
        return 0;
    if (c->log_all)
        return 1;
    for (size_t i = 0; i < sizeof(logged_by_default) / sizeof(logged_by_default[0]); i++)
        if (logged_by_default[i] == fn)
            return 1;
    return 0;
}

/* ---- the frame around every call ---- */

static int exempt_from_disconnect(enum fn fn)
{
    return fn == FN_C_Initialize || fn == FN_C_Finalize || fn == FN_C_GetInfo ||
           fn == FN_C_GetFunctionList;
}

/* Counts the call; CKR_OK when it may go on to the module, else what it returns instead. */
/* Calls between enter and leave, any thread: a fork() while some run is logged. */
unsigned long g_in_flight;

CK_RV shim_enter(struct call *c, enum fn fn)
{
    CK_RV rv = CKR_OK;

    __atomic_add_fetch(&g_in_flight, 1, __ATOMIC_SEQ_CST);
    c->fn = fn;
    c->injected = 0;
    c->extra[0] = '\0';
    pthread_mutex_lock(&g_lock);
    c->log = shim_logged(&g_cfg, fn);
    c->detail = c->log && g_cfg.log_detail;
    /* A forked child inherits the parent's state but must initialize (or finalize) first. */
    if (!g_initialized || (g_init_pid != getpid() && fn != FN_C_Finalize)) {
        rv = CKR_CRYPTOKI_NOT_INITIALIZED;
    } else if (g_disconnected && !exempt_from_disconnect(fn)) {
        rv = g_cfg.disconnect_rv;
    } else {
        unsigned long n = ++g_calls[fn];
        if (g_cfg.fail_at[fn] && n >= g_cfg.fail_at[fn]) {
            rv = g_cfg.fail_rv[fn];
            c->injected = 1;
        } else if (g_cfg.fail_once_at[fn] == n) {
            rv = g_cfg.fail_once_rv[fn];
            c->injected = 1;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return rv;
}

CK_RV shim_leave(struct call *c, CK_RV rv)
{
    __atomic_sub_fetch(&g_in_flight, 1, __ATOMIC_SEQ_CST);
    if (c->log) {
        char path[PATH_MAX];
        pthread_mutex_lock(&g_lock);
        strcpy(path, g_cfg.log_path);
        pthread_mutex_unlock(&g_lock);
        if (path[0])
            shim_log_write(path, c->fn, rv, c->extra);
    }
    return rv;
}

void shim_detail_slot(struct call *c, CK_SLOT_ID slot)
{
    CK_TOKEN_INFO ti;
    char label[33];
    size_t len = sizeof(ti.label);

    if (!c->detail)
        return;
    if (g_soft->C_GetTokenInfo(slot, &ti) != CKR_OK) {
        snprintf(c->extra, sizeof(c->extra), " slot=%lu token=?", (unsigned long)slot);
        return;
    }
    shim_present_token(&ti);
    memcpy(label, ti.label, len);
    while (len > 0 && label[len - 1] == ' ')
        len--;
    label[len] = '\0';
    snprintf(c->extra, sizeof(c->extra), " slot=%lu token=\"%s\"", (unsigned long)slot, label);
}

void shim_detail_session(struct call *c, CK_SESSION_HANDLE s)
{
    CK_SESSION_INFO si;

    if (!c->detail)
        return;
    if (g_soft->C_GetSessionInfo(s, &si) == CKR_OK)
        shim_detail_slot(c, si.slotID);
    else
        snprintf(c->extra, sizeof(c->extra), " slot=? token=?");
}

void shim_detail_user(struct call *c, CK_USER_TYPE user)
{
    size_t len = strlen(c->extra);
    const char *name = user == CKU_SO                 ? "CKU_SO"
                       : user == CKU_USER             ? "CKU_USER"
                       : user == CKU_CONTEXT_SPECIFIC ? "CKU_CONTEXT_SPECIFIC"
                                                      : "?";
    if (c->detail)
        snprintf(c->extra + len, sizeof(c->extra) - len, " user=%s", name);
}

/* " mech=CKM_..." on C_SignInit: which signature mechanism the application chose. */
void shim_detail_mech(struct call *c, CK_MECHANISM_PTR m)
{
    static const struct {
        CK_MECHANISM_TYPE t;
        const char *name;
    } names[] = {{CKM_RSA_PKCS, "CKM_RSA_PKCS"},
                 {CKM_RSA_X_509, "CKM_RSA_X_509"},
                 {CKM_RSA_PKCS_PSS, "CKM_RSA_PKCS_PSS"},
                 {CKM_SHA1_RSA_PKCS, "CKM_SHA1_RSA_PKCS"},
                 {CKM_SHA224_RSA_PKCS, "CKM_SHA224_RSA_PKCS"},
                 {CKM_SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS"},
                 {CKM_SHA384_RSA_PKCS, "CKM_SHA384_RSA_PKCS"},
                 {CKM_SHA512_RSA_PKCS, "CKM_SHA512_RSA_PKCS"},
                 {CKM_SHA1_RSA_PKCS_PSS, "CKM_SHA1_RSA_PKCS_PSS"},
                 {CKM_SHA224_RSA_PKCS_PSS, "CKM_SHA224_RSA_PKCS_PSS"},
                 {CKM_SHA256_RSA_PKCS_PSS, "CKM_SHA256_RSA_PKCS_PSS"},
                 {CKM_SHA384_RSA_PKCS_PSS, "CKM_SHA384_RSA_PKCS_PSS"},
                 {CKM_SHA512_RSA_PKCS_PSS, "CKM_SHA512_RSA_PKCS_PSS"},
                 {CKM_ECDSA, "CKM_ECDSA"},
                 {CKM_ECDSA_SHA1, "CKM_ECDSA_SHA1"},
                 {CKM_ECDSA_SHA224, "CKM_ECDSA_SHA224"},
                 {CKM_ECDSA_SHA256, "CKM_ECDSA_SHA256"},
                 {CKM_ECDSA_SHA384, "CKM_ECDSA_SHA384"},
                 {CKM_ECDSA_SHA512, "CKM_ECDSA_SHA512"},
                 {CKM_EDDSA, "CKM_EDDSA"}};
    size_t len = strlen(c->extra);

    if (!c->detail || m == NULL)
        return;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].t == m->mechanism) {
            snprintf(c->extra + len, sizeof(c->extra) - len, " mech=%s", names[i].name);
            return;
        }
    snprintf(c->extra + len, sizeof(c->extra) - len, " mech=0x%lx", (unsigned long)m->mechanism);
}

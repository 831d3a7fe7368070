/*
 * The module's state: C_Initialize/C_Finalize (fork-safe), the slots (one per configured
 * token) and the way into them (the module's lock, each slot's lock: p11mod.h), library, slot
 * and token info, the error sink that maps the token layer's reasons to CKRs. The config
 * comes from where the provider's does (ctok_config_pick: $CTOK_CONFIG, else
 * /etc/ctok/tokens.json).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "p11mod.h"

struct mod_state mod = {.lock = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER};

/* The last error this thread raised: its reason (for the CKR it maps to) and its text. */
static __thread int last_reason;
static __thread char last_msg[512];
/* The slot this thread entered (mod_enter_slot, mod_enter_session), for mod_leave. */
static __thread struct mod_slot *entered;

static void err_sink(int reason, const char *file, int line, const char *func, const char *fmt,
                     va_list ap)
{
    (void)file, (void)line, (void)func;
    last_reason = reason;
    vsnprintf(last_msg, sizeof(last_msg), fmt, ap);
}

CK_RV mod_rv_from_error(CK_RV fallback)
{
    int r = last_reason;

    last_reason = 0;
    switch (r) {
    case CTOK_R_WRONG_CODE:
        return CKR_PIN_INCORRECT;
    case CTOK_R_NO_CODE:
        return CKR_USER_NOT_LOGGED_IN;
    case CTOK_R_PERMISSION:
    case CTOK_R_DENIED:
        return CKR_FUNCTION_REJECTED;
    case CTOK_R_DUPLICATE: /* a label (alias) the token has already */
        return CKR_ATTRIBUTE_VALUE_INVALID;
    case CTOK_R_NETWORK:
    case CTOK_R_TIMEOUT:
    case CTOK_R_THROTTLED:
        return CKR_DEVICE_ERROR;
    default:
        return fallback;
    }
}

void mod_pad(CK_UTF8CHAR *dst, size_t dstlen, const char *s)
{
    size_t n = strlen(s);

    memset(dst, ' ', dstlen);
    memcpy(dst, s, n < dstlen ? n : dstlen);
}

/* Everything the module holds, the module's lock held and no thread in a slot. */
static void state_free(void)
{
    mod_sessions_free();
    for (size_t i = 0; i < mod.n_slots; i++) {
        mod_objects_free(&mod.slots[i]);
        free(mod.slots[i].mechs);
        free(mod.slots[i].mech_info);
        free(mod.slots[i].dec_seen);
        pthread_mutex_destroy(&mod.slots[i].lock);
    }
    free(mod.slots);
    mod.slots = NULL;
    mod.n_slots = 0;
    ctok_ctx_free(mod.ctx);
    mod.ctx = NULL;
    mod.initialized = 0;
}

/*
 * A forked child finds its parent's state: it is not initialized (PKCS#11 2.40 §6.7.7: the
 * child calls C_Initialize). The parent's token sessions are not the child's to close, so
 * the state is dropped without freeing what the backends hold; the token layer re-initializes
 * PKCS#11 in a child itself.
 */
static void forget_parent(void)
{
    if (mod.initialized && mod.pid != ctok_self_pid()) {
        mod.initialized = 0;
        mod.ctx = NULL;
        mod.slots = NULL;
        mod.n_slots = 0;
        mod.sessions = NULL;
        mod.n_sessions = 0;
        __atomic_store_n(&mod.users, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&mod.finalizing, 0, __ATOMIC_SEQ_CST);
    }
}

/*
 * A fork() while another thread holds the module's lock would leave the child a lock nobody
 * releases: the child, the only thread of its process, makes the lock new (it drops the
 * parent's state anyway, forget_parent). The lock is not taken around fork(): a thread may
 * hold it while it waits to enter a token's PKCS#11 module (a login, a key load), and fork()
 * waits for no thread to be inside such a module first (p11/module.c, fork_prepare), so taking
 * it there would wait for that thread forever. The same holds for the slots' locks, which a
 * thread holds across a login or a key load: no handler takes one, and the child needs none
 * made new, as it drops the parent's slots with their locks (its C_Initialize makes its own).
 * glibc drops the handler when the module is unloaded.
 */
static void fork_child(void)
{
    pthread_mutex_init(&mod.lock, NULL);
    pthread_cond_init(&mod.idle, NULL);
    entered = NULL;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_register(void)
{
    pthread_atfork(NULL, NULL, fork_child);
}

CK_RV mod_enter(void)
{
    last_reason = 0; /* what a failure of this call maps to is what it raises */
    entered = NULL;
    pthread_mutex_lock(&mod.lock);
    forget_parent();
    if (!mod.initialized || __atomic_load_n(&mod.finalizing, __ATOMIC_SEQ_CST)) {
        pthread_mutex_unlock(&mod.lock);
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    return CKR_OK;
}

void mod_tables_lock(void)
{
    pthread_mutex_lock(&mod.lock);
}

void mod_tables_unlock(void)
{
    pthread_mutex_unlock(&mod.lock);
}

/*
 * Out of the slot: its lock released, then the thread no more a user. The last user out while
 * C_Finalize waits wakes it; the count is read after the flag is set (both sequentially
 * consistent), so either this thread sees the flag or C_Finalize sees the count at 0.
 */
static void slot_leave(struct mod_slot *slot)
{
    pthread_mutex_unlock(&slot->lock);
    if (__atomic_sub_fetch(&mod.users, 1, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&mod.finalizing, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&mod.lock);
        pthread_cond_broadcast(&mod.idle);
        pthread_mutex_unlock(&mod.lock);
    }
}

void mod_leave(void)
{
    struct mod_slot *slot = entered;

    entered = NULL;
    if (slot != NULL)
        slot_leave(slot);
    else
        pthread_mutex_unlock(&mod.lock);
}

struct mod_slot *mod_slot_get(CK_SLOT_ID id)
{
    return id < mod.n_slots ? &mod.slots[id] : NULL;
}

CK_RV mod_enter_tables_slot(CK_SLOT_ID id, const void *out, struct mod_slot **slot)
{
    CK_RV rv;

    if (out == NULL)
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter()) != CKR_OK)
        return rv;
    if ((*slot = mod_slot_get(id)) == NULL) {
        mod_leave();
        return CKR_SLOT_ID_INVALID;
    }
    return CKR_OK;
}

/* From the module's lock into slot: counted a user first (C_Finalize frees no slot while a
 * thread waits for its lock), the module's lock released before the slot's is awaited. */
static void slot_enter(struct mod_slot *slot)
{
    __atomic_add_fetch(&mod.users, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&mod.lock);
    pthread_mutex_lock(&slot->lock);
    entered = slot;
}

CK_RV mod_enter_slot(CK_SLOT_ID id, const void *out, struct mod_slot **slot)
{
    CK_RV rv;

    if ((rv = mod_enter_tables_slot(id, out, slot)) != CKR_OK)
        return rv;
    slot_enter(*slot);
    return CKR_OK;
}

CK_RV mod_enter_tables_session(CK_SESSION_HANDLE h, struct mod_session **s)
{
    CK_RV rv;

    if ((rv = mod_enter()) != CKR_OK)
        return rv;
    if ((*s = mod_session_get(h)) == NULL) {
        mod_leave();
        return CKR_SESSION_HANDLE_INVALID;
    }
    return CKR_OK;
}

/*
 * A session is closed only in its slot (C_CloseSession, C_CloseAllSessions), which counts the
 * closes: when none happened between the look-up and the slot's lock, the session is still
 * there and stays while this thread is in the slot; else it is looked up again.
 */
CK_RV mod_enter_session(CK_SESSION_HANDLE h, struct mod_session **s)
{
    struct mod_slot *slot;
    unsigned int closes;
    CK_RV rv;

    if ((rv = mod_enter_tables_session(h, s)) != CKR_OK)
        return rv;
    slot = mod_slot_get((*s)->slot);
    closes = __atomic_load_n(&slot->closes, __ATOMIC_ACQUIRE);
    slot_enter(slot);
    if (__atomic_load_n(&slot->closes, __ATOMIC_ACQUIRE) != closes) {
        mod_tables_lock();
        *s = mod_session_get(h);
        mod_tables_unlock();
        if (*s == NULL) {
            mod_leave();
            return CKR_SESSION_HANDLE_INVALID;
        }
    }
    return CKR_OK;
}

/* Locking: the module uses its own (pthread) locks, so it needs the OS's (CKF_OS_LOCKING_OK)
 * and cannot work with only an application's mutex callbacks. */
static CK_RV check_init_args(const CK_C_INITIALIZE_ARGS *a)
{
    int cbs = (a->CreateMutex != NULL) + (a->DestroyMutex != NULL) + (a->LockMutex != NULL) +
              (a->UnlockMutex != NULL);

    if (a->pReserved != NULL || (cbs != 0 && cbs != 4))
        return CKR_ARGUMENTS_BAD;
    if (cbs == 4 && !(a->flags & CKF_OS_LOCKING_OK))
        return CKR_CANT_LOCK;
    return CKR_OK;
}

static CK_RV load_slots(void)
{
    size_t n;

    mod.ctx = ctok_ctx_new(NULL, NULL, ctok_config_pick(NULL, NULL, NULL));
    if (mod.ctx == NULL)
        return CKR_HOST_MEMORY;
    if (!ctok_ctx_load(mod.ctx)) {
        /* the application sees only a CKR: the cause goes to stderr, one line */
        fprintf(stderr, "ctok-p11: C_Initialize: %s\n", last_msg);
        return CKR_GENERAL_ERROR;
    }
    n = ctok_ctx_token_count(mod.ctx);
    mod.slots = calloc(n > 0 ? n : 1, sizeof(*mod.slots));
    if (mod.slots == NULL)
        return CKR_HOST_MEMORY;
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_init(&mod.slots[i].lock, NULL);
        mod.slots[i].tok = ctok_ctx_token_at(mod.ctx, i);
        mod.n_slots = i + 1; /* state_free destroys the locks made */
    }
    return CKR_OK;
}

CK_RV mod_C_Initialize(CK_VOID_PTR args)
{
    const char *dbg = getenv("CTOK_DEBUG");
    CK_RV rv;

    if (args != NULL && (rv = check_init_args(args)) != CKR_OK)
        return rv;
    pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&mod.lock);
    last_reason = 0;
    last_msg[0] = '\0';
    forget_parent();
    if (mod.initialized) {
        pthread_mutex_unlock(&mod.lock);
        return CKR_CRYPTOKI_ALREADY_INITIALIZED;
    }
    if (dbg != NULL && *dbg != '\0' && strcmp(dbg, "0") != 0)
        ctok_debug_on = 1;
    ctok_err_set_sink(err_sink);
    mod.pid = ctok_self_pid();
    mod.next_handle = 1;
    rv = load_slots();
    if (rv == CKR_OK)
        mod.initialized = 1;
    else
        state_free();
    pthread_mutex_unlock(&mod.lock);
    return rv;
}

CK_RV mod_C_Finalize(CK_VOID_PTR reserved)
{
    CK_RV rv;

    if (reserved != NULL)
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter()) != CKR_OK)
        return rv;
    /* no new call starts; those in a slot end first (what runs outside any lock, a signature
     * taken out of its session or a key generation, is the application's to end first) */
    __atomic_store_n(&mod.finalizing, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&mod.users, __ATOMIC_SEQ_CST) > 0)
        pthread_cond_wait(&mod.idle, &mod.lock);
    state_free();
    __atomic_store_n(&mod.finalizing, 0, __ATOMIC_SEQ_CST);
    mod_leave();
    return CKR_OK;
}

CK_RV mod_C_GetInfo(CK_INFO_PTR info)
{
    CK_RV rv;

    if (info == NULL)
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter()) != CKR_OK)
        return rv;
    mod_leave();
    memset(info, 0, sizeof(*info));
    info->cryptokiVersion.major = 2; /* the 2.40 list's; interface.c's 3.0 list says 3.0 */
    info->cryptokiVersion.minor = 40;
    mod_pad(info->manufacturerID, sizeof(info->manufacturerID), "ctok");
    mod_pad(info->libraryDescription, sizeof(info->libraryDescription),
            "ctok tokens as PKCS#11 slots");
    info->libraryVersion.major = (CK_BYTE)strtoul(CTOK_VERSION, NULL, 10);
    info->libraryVersion.minor = (CK_BYTE)strtoul(strchr(CTOK_VERSION, '.') + 1, NULL, 10);
    return CKR_OK;
}

/* Every configured token is present: tokenPresent changes nothing. */
CK_RV mod_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
    CK_RV rv;

    (void)present;
    if (count == NULL)
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter()) != CKR_OK)
        return rv;
    if (list != NULL && *count < mod.n_slots)
        rv = CKR_BUFFER_TOO_SMALL;
    else if (list != NULL)
        for (size_t i = 0; i < mod.n_slots; i++)
            list[i] = i;
    *count = mod.n_slots;
    mod_leave();
    return rv;
}

CK_RV mod_C_GetSlotInfo(CK_SLOT_ID id, CK_SLOT_INFO_PTR info)
{
    struct mod_slot *slot;
    char desc[128];
    CK_RV rv;

    if ((rv = mod_enter_tables_slot(id, info, &slot)) != CKR_OK)
        return rv;
    memset(info, 0, sizeof(*info));
    snprintf(desc, sizeof(desc), "ctok token '%s' (%s)", ctok_token_name(slot->tok),
             ctok_token_type(slot->tok));
    mod_pad(info->slotDescription, sizeof(info->slotDescription), desc);
    mod_pad(info->manufacturerID, sizeof(info->manufacturerID), "ctok");
    info->flags = CKF_TOKEN_PRESENT;
    mod_leave();
    return CKR_OK;
}

/* The token's serial number: its unique id without dashes, first 16 characters. */
static void serial_of(const char *id, char out[17])
{
    size_t n = 0;

    for (; *id != '\0' && n < 16; id++)
        if (*id != '-')
            out[n++] = *id;
    out[n] = '\0';
}

/* The token's code comes from its configuration (file, variable, stored): applications log
 * in with a NULL PIN, the token layer reads it. */
int mod_protected_path(const ctok_token *tok)
{
    return ctok_token_needs_code(tok) && strcmp(ctok_token_auth_kind(tok), "prompt") != 0;
}

/* Must an application log in before it uses the token's keys? Only when the code is typed: a
 * code the configuration names is the module's to use, as it is the provider's (mod_activate). */
int mod_login_required(const ctok_token *tok)
{
    return ctok_token_needs_code(tok) && !mod_protected_path(tok);
}

CK_RV mod_C_GetTokenInfo(CK_SLOT_ID id, CK_TOKEN_INFO_PTR info)
{
    struct mod_slot *slot;
    char serial[17];
    CK_RV rv;

    if ((rv = mod_enter_tables_slot(id, info, &slot)) != CKR_OK)
        return rv;
    memset(info, 0, sizeof(*info));
    mod_pad(info->label, sizeof(info->label), ctok_token_name(slot->tok));
    mod_pad(info->manufacturerID, sizeof(info->manufacturerID), "ctok");
    mod_pad(info->model, sizeof(info->model), ctok_token_type(slot->tok));
    serial_of(ctok_token_id(slot->tok), serial);
    mod_pad(info->serialNumber, sizeof(info->serialNumber), serial);
    info->flags = CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED;
    if (mod_login_required(slot->tok))
        info->flags |= CKF_LOGIN_REQUIRED;
    if (mod_protected_path(slot->tok))
        info->flags |= CKF_PROTECTED_AUTHENTICATION_PATH;
    info->ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
    info->ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
    info->ulSessionCount = CK_UNAVAILABLE_INFORMATION;
    info->ulRwSessionCount = CK_UNAVAILABLE_INFORMATION;
    info->ulMaxPinLen = CTOK_MAX_CODE;
    info->ulMinPinLen = 0;
    info->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info->hardwareVersion.major = 0;
    info->firmwareVersion.major = 0;
    mod_leave();
    return CKR_OK;
}

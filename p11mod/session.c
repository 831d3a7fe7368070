/*
 * Sessions and login. A PIN goes to the token layer's one door for codes (which never sends
 * a code the token rejected again) and is zeroized here; a NULL PIN on a token whose code
 * comes from its configuration (CKF_PROTECTED_AUTHENTICATION_PATH) lets the token layer read it.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "p11mod.h"

struct mod_session *mod_session_get(CK_SESSION_HANDLE h)
{
    for (size_t i = 0; i < mod.n_sessions; i++)
        if (mod.sessions[i]->handle == h)
            return mod.sessions[i];
    return NULL;
}

CK_RV mod_enter_op(CK_SESSION_HANDLE h, const CK_MECHANISM *m, CK_FLAGS op, struct mod_session **s)
{
    CK_RV rv;

    if (m == NULL)
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter_session(h, s)) != CKR_OK)
        return rv;
    if (op == CKF_SIGN ? (*s)->signing : (*s)->decrypting) {
        mod_leave();
        return CKR_OPERATION_ACTIVE;
    }
    return CKR_OK;
}

static void session_free(struct mod_session *s)
{
    mod_find_clear(s);
    mod_sign_clear(&s->sign);
    mod_decrypt_clear(&s->dec);
    mod_sobjs_free(s, 0);
    free(s);
}

void mod_sessions_free(void)
{
    for (size_t i = 0; i < mod.n_sessions; i++)
        session_free(mod.sessions[i]);
    free(mod.sessions);
    mod.sessions = NULL;
    mod.n_sessions = 0;
}

/* The module's lock held. */
static size_t slot_sessions(CK_SLOT_ID id)
{
    size_t n = 0;

    for (size_t i = 0; i < mod.n_sessions; i++)
        n += mod.sessions[i]->slot == id;
    return n;
}

/*
 * The user logs out (C_Logout, or the last session of the slot closed: PKCS#11 2.40 §5.6):
 * private objects are hidden again and keys refused. The token stays active in the token
 * layer, which keeps its code as for the provider: the next C_Login's PIN is checked against
 * that code, never sent to the token again. (Deactivating would not do: a PKCS#11 backend's
 * sessions stay logged in, and the token answered a wrong PIN with CKR_USER_ALREADY_LOGGED_IN.)
 * In the slot, the module's lock held.
 */
static void slot_logout(struct mod_slot *slot)
{
    slot->logged_in = 0;
    slot->have_objs = 0;
    /* and the private session objects of its sessions (PKCS#11 2.40 §5.6, C_Logout) */
    for (size_t i = 0; i < mod.n_sessions; i++)
        if (mod_slot_get(mod.sessions[i]->slot) == slot)
            mod_sobjs_free(mod.sessions[i], 1);
}

CK_RV C_OpenSession(CK_SLOT_ID id, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                    CK_SESSION_HANDLE_PTR out)
{
    struct mod_session *s, **list;
    struct mod_slot *slot;
    CK_RV rv;

    (void)app, (void)notify;
    if (!(flags & CKF_SERIAL_SESSION))
        return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
    /* the module's tables only: a slot busy logging in does not hold up a new session */
    if ((rv = mod_enter_tables_slot(id, out, &slot)) != CKR_OK)
        return rv;
    s = calloc(1, sizeof(*s));
    list = realloc(mod.sessions, (mod.n_sessions + 1) * sizeof(*list));
    if (list != NULL)
        mod.sessions = list;
    if (s == NULL || list == NULL) {
        free(s);
        mod_leave();
        return CKR_HOST_MEMORY;
    }
    s->handle = mod.next_handle++;
    s->slot = id;
    s->flags = flags & (CKF_SERIAL_SESSION | CKF_RW_SESSION);
    mod.sessions[mod.n_sessions++] = s;
    *out = s->handle;
    mod_leave();
    return CKR_OK;
}

/* In the session's slot, the module's lock held. */
static void close_at(size_t i)
{
    struct mod_session *s = mod.sessions[i];
    CK_SLOT_ID id = s->slot;

    __atomic_add_fetch(&mod_slot_get(id)->closes, 1, __ATOMIC_RELEASE);
    session_free(s);
    mod.sessions[i] = mod.sessions[--mod.n_sessions];
    if (slot_sessions(id) == 0)
        slot_logout(mod_slot_get(id));
}

CK_RV C_CloseSession(CK_SESSION_HANDLE h)
{
    struct mod_session *s;
    CK_RV rv;

    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    mod_tables_lock();
    for (size_t i = 0; i < mod.n_sessions; i++)
        if (mod.sessions[i] == s) {
            close_at(i);
            break;
        }
    mod_tables_unlock();
    mod_leave();
    return CKR_OK;
}

CK_RV C_CloseAllSessions(CK_SLOT_ID id)
{
    struct mod_slot *slot;
    CK_RV rv;

    if ((rv = mod_enter_slot(id, &id, &slot)) != CKR_OK)
        return rv;
    mod_tables_lock();
    for (size_t i = mod.n_sessions; i-- > 0;)
        if (mod.sessions[i]->slot == id)
            close_at(i);
    mod_tables_unlock();
    mod_leave();
    return CKR_OK;
}

CK_RV C_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR info)
{
    struct mod_session *s;
    int user;
    CK_RV rv;

    if (info == NULL)
        return CKR_ARGUMENTS_BAD;
    /* the module's lock only (logged_in is written under both): not held up by a slow login */
    if ((rv = mod_enter_tables_session(h, &s)) != CKR_OK)
        return rv;
    user = mod_slot_get(s->slot)->logged_in;
    info->slotID = s->slot;
    info->flags = s->flags;
    info->ulDeviceError = 0;
    if (s->flags & CKF_RW_SESSION)
        info->state = user ? CKS_RW_USER_FUNCTIONS : CKS_RW_PUBLIC_SESSION;
    else
        info->state = user ? CKS_RO_USER_FUNCTIONS : CKS_RO_PUBLIC_SESSION;
    mod_leave();
    return CKR_OK;
}

/* In the slot: logins of one slot never run side by side, other slots' go on meanwhile. */
static CK_RV login(struct mod_slot *slot, const CK_UTF8CHAR *pin, CK_ULONG len)
{
    char code[CTOK_MAX_CODE + 1];
    int ok;

    if (pin == NULL) {
        /* the token layer reads the code the configuration names; never a prompt */
        if (ctok_token_needs_code(slot->tok) && !mod_protected_path(slot->tok))
            return CKR_ARGUMENTS_BAD;
        if (!ctok_token_authorize(slot->tok, CTOK_PERM_ACTIVATE, "activation", NULL))
            return CKR_FUNCTION_REJECTED;
        ok = ctok_token_login(slot->tok, NULL, NULL);
    } else {
        if (len > CTOK_MAX_CODE)
            return CKR_PIN_LEN_RANGE;
        memcpy(code, pin, len);
        code[len] = '\0';
        /* active, the slot logged out: the token layer would take any PIN (slot_logout) */
        if (ctok_token_is_active(slot->tok) && ctok_token_needs_code(slot->tok))
            ok = ctok_token_code_is(slot->tok, code, len);
        else
            ok = ctok_token_activate_code(slot->tok, code, len, "the PIN given to C_Login", 0);
        OPENSSL_cleanse(code, sizeof(code));
    }
    return ok ? CKR_OK : mod_rv_from_error(CKR_PIN_INCORRECT);
}

int mod_activate(struct mod_slot *slot)
{
    if (ctok_token_is_active(slot->tok))
        return 1;
    if (slot->activation_tried || !mod_protected_path(slot->tok))
        return 0;
    slot->activation_tried = 1;
    return login(slot, NULL, 0) == CKR_OK;
}

CK_RV C_Login(CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
    struct mod_session *s;
    struct mod_slot *slot;
    CK_RV rv;

    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    if (user != CKU_USER) /* no security officer, no per-operation login (yet) */
        rv = CKR_USER_TYPE_INVALID;
    else if ((slot = mod_slot_get(s->slot))->logged_in)
        rv = CKR_USER_ALREADY_LOGGED_IN;
    else if ((rv = login(slot, pin, len)) == CKR_OK) {
        mod_tables_lock();
        slot->logged_in = 1;
        mod_tables_unlock();
        slot->have_objs = 0;
    }
    mod_leave();
    return rv;
}

CK_RV C_Logout(CK_SESSION_HANDLE h)
{
    struct mod_session *s;
    struct mod_slot *slot;
    CK_RV rv;

    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    if (!(slot = mod_slot_get(s->slot))->logged_in) {
        rv = CKR_USER_NOT_LOGGED_IN;
    } else {
        mod_tables_lock();
        slot_logout(slot);
        mod_tables_unlock();
    }
    mod_leave();
    return rv;
}

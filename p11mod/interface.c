/*
 * Cryptoki 3.0 interfaces: C_GetInterfaceList and C_GetInterface offer "PKCS 11" 3.0 (the
 * default) and 2.40. The 3.0 list is the 2.40 list (funclist.c, one list of what the module
 * does) followed by 3.0's functions: C_LoginUser, C_SessionCancel, and the message-based
 * functions, which the module does not do (CKR_FUNCTION_NOT_SUPPORTED). Its C_GetInfo says
 * 3.0. Neither interface says CKF_INTERFACE_FORK_SAFE: a forked child finds the module
 * uninitialized (module.c), without its parent's sessions and logins.
 */
#include <stddef.h>
#include <string.h>

#include "pkcs11v3.h"
#include "p11mod.h"

#define IFACE_NAME "PKCS 11"

#define UNSUPPORTED(name, ...)                                                                     \
    static CK_RV name(__VA_ARGS__)                                                                 \
    {                                                                                              \
        return CKR_FUNCTION_NOT_SUPPORTED;                                                         \
    }

/* One function per shape of the message-based functions (pkcs11v3.h). */
UNSUPPORTED(ns_message_init, CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE)
UNSUPPORTED(ns_message_final, CK_SESSION_HANDLE)
UNSUPPORTED(ns_crypt_message, CK_SESSION_HANDLE, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG,
            CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR)
UNSUPPORTED(ns_crypt_message_begin, CK_SESSION_HANDLE, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG)
UNSUPPORTED(ns_crypt_message_next, CK_SESSION_HANDLE, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG,
            CK_BYTE_PTR, CK_ULONG_PTR, CK_FLAGS)
UNSUPPORTED(ns_sign_message, CK_SESSION_HANDLE, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG,
            CK_BYTE_PTR, CK_ULONG_PTR)
UNSUPPORTED(ns_message_begin, CK_SESSION_HANDLE, CK_VOID_PTR, CK_ULONG)
UNSUPPORTED(ns_verify_message, CK_SESSION_HANDLE, CK_VOID_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG,
            CK_BYTE_PTR, CK_ULONG)

/* C_GetInfo of the 3.0 list: the version of the interface the application took. */
static CK_RV get_info_3_0(CK_INFO_PTR info)
{
    CK_RV rv = mod_C_GetInfo(info);

    if (rv == CKR_OK) {
        info->cryptokiVersion.major = 3;
        info->cryptokiVersion.minor = 0;
    }
    return rv;
}

/*
 * ctok tokens have one user and no user names: without a name (NULL or empty) this is
 * C_Login; a name names no user of the token, so the credentials do not authenticate
 * (CKR_PIN_INCORRECT) and the PIN is not tried.
 */
static CK_RV login_user(CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
                        CK_ULONG pin_len, CK_UTF8CHAR_PTR name, CK_ULONG name_len)
{
    struct mod_session *s;
    struct mod_slot *slot;
    CK_RV rv;

    if (name_len == 0)
        return C_Login(h, user, pin, pin_len);
    if (name == NULL)
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    slot = mod_slot_get(s->slot);
    if (user != CKU_USER) {
        rv = CKR_USER_TYPE_INVALID;
    } else if (slot->logged_in) {
        rv = CKR_USER_ALREADY_LOGGED_IN;
    } else {
        CTOK_ERR(CTOK_R_WRONG_CODE, "token '%s': C_LoginUser named a user; ctok tokens have none",
                 ctok_token_name(slot->tok));
        rv = CKR_PIN_INCORRECT;
    }
    mod_leave();
    return rv;
}

/* Ends the session's operations that flags name; an operation not active is no error. */
static CK_RV session_cancel(CK_SESSION_HANDLE h, CK_FLAGS flags)
{
    struct mod_session *s;
    CK_RV rv;

    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    if ((flags & CKF_SIGN) && s->signing) {
        mod_sign_clear(&s->sign);
        s->signing = 0;
    }
    if ((flags & CKF_DECRYPT) && s->decrypting) {
        mod_decrypt_clear(&s->dec);
        s->decrypting = 0;
    }
    if ((flags & CKF_FIND_OBJECTS) && s->finding)
        mod_find_clear(s);
    mod_leave();
    return CKR_OK;
}

static CK_RV get_interface_list(CK_INTERFACE_PTR list, CK_ULONG_PTR count);
static CK_RV get_interface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE_PTR_PTR iface,
                           CK_FLAGS flags);

_Static_assert(offsetof(CK_FUNCTION_LIST_3_0, C_GetInterfaceList) == sizeof(CK_FUNCTION_LIST),
               "the 3.0 list begins with the 2.40 list");

static CK_FUNCTION_LIST_3_0 functions_3_0;
static CK_INTERFACE interfaces[] = {
    {(CK_CHAR *)IFACE_NAME, &functions_3_0, 0},
    {(CK_CHAR *)IFACE_NAME, NULL, 0}, /* the 2.40 list */
};
#define N_INTERFACES (sizeof(interfaces) / sizeof(interfaces[0]))
static pthread_once_t interfaces_once = PTHREAD_ONCE_INIT;

static void interfaces_build(void)
{
    CK_FUNCTION_LIST *f = mod_function_list();
    CK_FUNCTION_LIST_3_0 *l = &functions_3_0;

    memcpy(l, f, sizeof(*f));
    l->version.major = 3;
    l->version.minor = 0;
    l->C_GetInfo = get_info_3_0;
    l->C_GetInterfaceList = get_interface_list;
    l->C_GetInterface = get_interface;
    l->C_LoginUser = login_user;
    l->C_SessionCancel = session_cancel;
    l->C_MessageEncryptInit = l->C_MessageDecryptInit = ns_message_init;
    l->C_MessageSignInit = l->C_MessageVerifyInit = ns_message_init;
    l->C_EncryptMessage = l->C_DecryptMessage = ns_crypt_message;
    l->C_EncryptMessageBegin = l->C_DecryptMessageBegin = ns_crypt_message_begin;
    l->C_EncryptMessageNext = l->C_DecryptMessageNext = ns_crypt_message_next;
    l->C_MessageEncryptFinal = l->C_MessageDecryptFinal = ns_message_final;
    l->C_MessageSignFinal = l->C_MessageVerifyFinal = ns_message_final;
    l->C_SignMessage = l->C_SignMessageNext = ns_sign_message;
    l->C_SignMessageBegin = l->C_VerifyMessageBegin = ns_message_begin;
    l->C_VerifyMessage = l->C_VerifyMessageNext = ns_verify_message;
    interfaces[1].pFunctionList = f;
}

static CK_RV get_interface_list(CK_INTERFACE_PTR list, CK_ULONG_PTR count)
{
    CK_ULONG room;

    if (count == NULL)
        return CKR_ARGUMENTS_BAD;
    pthread_once(&interfaces_once, interfaces_build);
    room = *count;
    *count = N_INTERFACES;
    if (list == NULL)
        return CKR_OK;
    if (room < N_INTERFACES)
        return CKR_BUFFER_TOO_SMALL;
    memcpy(list, interfaces, sizeof(interfaces));
    return CKR_OK;
}

/* The first interface (3.0 before 2.40) whose name, version and flags match those asked;
 * none: CKR_ARGUMENTS_BAD. */
static CK_RV get_interface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE_PTR_PTR iface,
                           CK_FLAGS flags)
{
    if (iface == NULL)
        return CKR_ARGUMENTS_BAD;
    pthread_once(&interfaces_once, interfaces_build);
    for (size_t i = 0; i < N_INTERFACES; i++) {
        const CK_VERSION *v = interfaces[i].pFunctionList;

        if (name != NULL && strcmp((const char *)name, IFACE_NAME) != 0)
            continue;
        if (version != NULL && (version->major != v->major || version->minor != v->minor))
            continue;
        if ((interfaces[i].flags & flags) != flags)
            continue;
        *iface = &interfaces[i];
        return CKR_OK;
    }
    return CKR_ARGUMENTS_BAD;
}

P11MOD_EXPORT CK_RV C_GetInterfaceList(CK_INTERFACE_PTR list, CK_ULONG_PTR count)
{
    return get_interface_list(list, count);
}

P11MOD_EXPORT CK_RV C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version,
                                   CK_INTERFACE_PTR_PTR iface, CK_FLAGS flags)
{
    return get_interface(name, version, iface, flags);
}

/*
 * ctok-p11.so: ctok's tokens as a PKCS#11 module, for applications that speak PKCS#11
 * instead of OpenSSL (NSS, Java, GnuTLS, OpenSSH). One slot per configured token. Like the
 * provider, the module reaches backends only through the token layer (store/token.h).
 *
 * Files: funclist.c (the function list, C_GetFunctionList, what is not supported), module.c
 * (initialization, fork, slot and token info), mechs.c (mechanisms per slot), session.c
 * (sessions, login), objects.c (object handles, find, attributes), sign.c, decrypt.c, derive.c
 * (ECDH and the session objects it makes), keygen.c (C_GenerateKeyPair), objmgmt.c
 * (C_CreateObject, C_DestroyObject).
 *
 * interface.c offers Cryptoki 3.0 (C_GetInterface, C_GetInterfaceList) on top of the 2.40
 * list; p11-kit's pkcs11.h is 2.40, pkcs11v3.h adds what 3.0 needs.
 */
#ifndef CTOK_P11MOD_H
#define CTOK_P11MOD_H

#include <pthread.h>
#include <p11-kit/pkcs11.h>

#include "../store/token.h"

#define P11MOD_EXPORT __attribute__((visibility("default")))

/* One object a slot shows: a copy of what the token's enumeration yields. */
struct mod_obj {
    CK_OBJECT_HANDLE handle;
    CK_OBJECT_CLASS cls;
    char *label;
    uint8_t id[CTOK_MAX_ID];
    size_t id_len;
    enum ctok_key_type key_type;
    X509 *cert;    /* certificates */
    EVP_PKEY *pub; /* keys: the public key; certificates: theirs */
};

/* What a decryption mechanism and its parameters did when tried on a key (decrypt.c). */
struct mod_dec_seen {
    uint8_t id[CTOK_MAX_ID];
    size_t id_len;
    CK_MECHANISM_TYPE mech, hash;
    CK_RSA_PKCS_MGF_TYPE mgf;
    int label; /* a non-empty OAEP label */
    CK_RV rv;  /* CKR_OK: the token does it; else what C_DecryptInit answers */
};

/* A slot: its lock guards what follows tok (tok never changes while the module is
 * initialized) and its sessions' contents; logged_in is written with the module's lock held
 * too, so C_GetSessionInfo reads it with that lock alone. */
struct mod_slot {
    pthread_mutex_t lock;
    unsigned int closes; /* sessions of the slot closed so far (atomic; mod_enter_session) */
    ctok_token *tok;
    int logged_in;
    int have_objs; /* objs reflect the current login state */
    struct mod_obj *objs;
    size_t n_objs;
    CK_MECHANISM_TYPE *mechs; /* NULL until first asked */
    CK_MECHANISM_INFO *mech_info;
    size_t n_mechs;
    int from_keys; /* mechs are those of the keys seen (the token has no list) */
    struct mod_dec_seen *dec_seen;
    size_t n_dec_seen;
    int activation_tried; /* mod_activate tried the config's code (once per initialization) */
};

/* A signing operation of a session. */
struct mod_sign {
    CK_MECHANISM_TYPE mech;
    ctok_key *key;
    const EVP_MD *md;   /* hash-and-sign: the hash; RSA-PSS: the hash of the input */
    const EVP_MD *mgf1; /* PSS */
    int saltlen;        /* PSS */
    EVP_MD_CTX *mdctx;  /* hash-and-sign mechanisms */
    uint8_t *buf;       /* raw mechanisms: the data so far */
    size_t len;
    size_t size; /* the signature's */
};

/* A decryption of a session (RSA PKCS#1 v1.5, OAEP). */
struct mod_decrypt {
    CK_MECHANISM_TYPE mech;
    ctok_key *key;
    const EVP_MD *oaep_md, *mgf1; /* OAEP */
    uint8_t *label;               /* OAEP: a copy of the application's label */
    size_t label_len;
};

/* A session object (derive.c): a secret key CKM_ECDH1_DERIVE made, held by its session. */
struct mod_sobj {
    CK_OBJECT_HANDLE handle;
    CK_KEY_TYPE key_type;
    uint8_t value[CTOK_MAX_SECRET];
    size_t len;
    uint8_t id[CTOK_MAX_ID], label[CTOK_MAX_ID];
    size_t id_len, label_len;
    CK_ULONG bools; /* the CK_BBOOL attributes, a bit each (derive.c) */
};

struct mod_session {
    CK_SESSION_HANDLE handle;
    CK_SLOT_ID slot;
    CK_FLAGS flags;
    CK_OBJECT_HANDLE *found; /* C_FindObjects */
    size_t n_found, pos;
    int finding;
    int signing;
    struct mod_sign sign;
    int decrypting;
    struct mod_decrypt dec;
    struct mod_sobj *sobjs;
    size_t n_sobjs;
};

/*
 * The module's state. Two kinds of lock (docs/DESIGN.md, "A lock per slot"): the module's lock
 * guards the tables (initialized, slots, sessions, the session table's membership) and is held
 * briefly; each slot's lock guards that slot and the contents of its sessions, and is held
 * across the slot's slow work (a login, an activation, an object load or refresh, a key
 * listing or load). Order: a slot's lock before the module's, never a slot's lock awaited with
 * the module's held, never two slots' locks at once. C_Finalize waits for the threads in a
 * slot (users) before it frees anything.
 */
struct mod_state {
    pthread_mutex_t lock;
    pthread_cond_t idle; /* users fell to 0 while finalizing */
    int initialized;
    int finalizing;     /* C_Finalize waits for users: no new call starts */
    unsigned int users; /* threads in (or waiting for) a slot's lock (atomic) */
    pid_t pid;
    ctok_ctx *ctx;
    struct mod_slot *slots;
    size_t n_slots;
    struct mod_session **sessions;
    size_t n_sessions;
    _Atomic CK_ULONG next_handle; /* sessions and objects; taken under either kind of lock */
};
extern struct mod_state mod;

/* The module's lock held, module initialized in this process: CKR_OK, else the code to return
 * (lock released). */
CK_RV mod_enter(void);
/* Leaves what mod_enter, mod_enter_tables_slot, mod_enter_slot, mod_enter_tables_session or
 * mod_enter_session took. */
void mod_leave(void);
/* mod_enter, and the slot of id, for what never changes of a slot (its token) and the module's
 * tables; out: the caller's output (NULL: CKR_ARGUMENTS_BAD). On failure no lock is held. */
CK_RV mod_enter_tables_slot(CK_SLOT_ID id, const void *out, struct mod_slot **slot);
/* The slot of id entered: its lock held, the module's not; out as above. On failure no lock
 * is held. */
CK_RV mod_enter_slot(CK_SLOT_ID id, const void *out, struct mod_slot **slot);
/* The slot of session h entered (its lock held, the module's not): the session stays while the
 * thread is in its slot. On failure no lock is held. */
CK_RV mod_enter_session(CK_SESSION_HANDLE h, struct mod_session **s);
/* mod_enter, and session h (CKR_SESSION_HANDLE_INVALID), for the module's tables only. On
 * failure no lock is held. */
CK_RV mod_enter_tables_session(CK_SESSION_HANDLE h, struct mod_session **s);
/* The module's lock taken and released inside a slot (the tables: mod_session_get, the
 * sessions of a slot). */
void mod_tables_lock(void);
void mod_tables_unlock(void);
/* The slot of an id, or NULL (the module's lock held, or in a slot). */
struct mod_slot *mod_slot_get(CK_SLOT_ID id);
/* The session of a handle (the module's lock held), or NULL. */
struct mod_session *mod_session_get(CK_SESSION_HANDLE h);
/* The CKR a failed token-layer call maps to, from the reason it raised. */
CK_RV mod_rv_from_error(CK_RV fallback);
/* Copies s into a blank-padded PKCS#11 text field. */
void mod_pad(CK_UTF8CHAR *dst, size_t dstlen, const char *s);

/* objects.c */
/* Refreshes the slot's objects for its login state (in the slot). */
CK_RV mod_objects_load(struct mod_slot *slot);
void mod_objects_free(struct mod_slot *slot);
struct mod_obj *mod_object_get(struct mod_slot *slot, CK_OBJECT_HANDLE h);
void mod_find_clear(struct mod_session *s);
/* Does a key of type kt do op (CKF_SIGN, CKF_DECRYPT) with mech? */
int mod_key_type_can(enum ctok_key_type kt, CK_MECHANISM_TYPE mech, CK_FLAGS op);
/* The object of class cls with this id (and label; NULL: any), objects loaded (in the slot). */
struct mod_obj *mod_object_find(struct mod_slot *slot, CK_OBJECT_CLASS cls, const uint8_t *id,
                                size_t id_len, const char *label);

/* session.c */
/* mod_enter_session for a new operation op (CKF_SIGN, CKF_DECRYPT) with mechanism m (NULL:
 * CKR_ARGUMENTS_BAD): CKR_OPERATION_ACTIVE while one runs. On failure the lock is not held. */
CK_RV mod_enter_op(CK_SESSION_HANDLE h, const CK_MECHANISM *m, CK_FLAGS op, struct mod_session **s);
void mod_sessions_free(void);
/* A token whose code its configuration names, activated with it on first need (in the slot):
 * 1 active, 0 not (the cause kept as the module's last error; C_Login, which tries again, says
 * it). Tried once per initialization: a refused activation is not repeated at every find. */
int mod_activate(struct mod_slot *slot);

/* sign.c */
void mod_sign_clear(struct mod_sign *op);
/* The key of an operation: o a private key of the slot offering mech for op, and its handle
 * from the token layer; CKR_OK or why not. */
CK_RV mod_op_key(struct mod_slot *slot, CK_OBJECT_HANDLE kh, CK_MECHANISM_TYPE mech, CK_FLAGS op,
                 ctok_key **key);

/* The digest of a hash mechanism (CKM_SHA256...) or of an MGF (CKG_MGF1_SHA256...), or NULL. */
const EVP_MD *mod_hash_md(CK_MECHANISM_TYPE hash);
const EVP_MD *mod_mgf_md(CK_RSA_PKCS_MGF_TYPE mgf);
/* objmgmt.c: changes to a token */
/* mod_enter_session for a change of the token: CKR_SESSION_READ_ONLY, CKR_USER_NOT_LOGGED_IN;
 * on failure the lock is not held. */
CK_RV mod_enter_change(CK_SESSION_HANDLE h, struct mod_session **s, struct mod_slot **slot);
/* After a change made without the lock: mod_enter, the slot's objects read again; the session
 * gone meanwhile: CKR_SESSION_CLOSED. On failure the lock is not held. */
CK_RV mod_enter_changed(CK_SESSION_HANDLE h, CK_SLOT_ID id, struct mod_slot **slot);
/* CKR_OK if C_DestroyObject may take o (CKA_DESTROYABLE), else CKR_ACTION_PROHIBITED. */
CK_RV mod_destroy_rule(const struct mod_slot *slot, const struct mod_obj *o);
struct mod_obj *mod_object_labelled(struct mod_slot *slot, CK_OBJECT_CLASS cls, const char *label);

/* keygen.c: template attributes every new object may carry */
/* CKA_LABEL into *label (malloc'd; one already there must be the same). */
CK_RV mod_attr_label(const CK_ATTRIBUTE *a, char **label);
/* CKA_CLASS (must be cls), CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_ID (empty), and management
 * wishes; *taken 0 for any other attribute. */
/* A CK_ULONG template attribute: CKR_ATTRIBUTE_VALUE_INVALID unless it is one (keygen.c). */
CK_RV mod_attr_ulong(const CK_ATTRIBUTE *a, CK_ULONG *v);
CK_RV mod_attr_common(const CK_ATTRIBUTE *a, CK_OBJECT_CLASS cls, char **label, int *taken);

/* decrypt.c */
void mod_decrypt_clear(struct mod_decrypt *op);

/* derive.c: session objects (in the slot; mod_sobjs_find, mod_sobj_attributes and
 * p11mod_session_object_destroy look at the slot's other sessions: the module's lock too) */
/* Frees (zeroized) the session's objects; private_only: those with CKA_PRIVATE (logout). */
void mod_sobjs_free(struct mod_session *s, int private_only);
/* The handles of session objects of s's slot matching tmpl, appended to s->found. */
CK_RV mod_sobjs_find(struct mod_session *s, const CK_ATTRIBUTE *tmpl, CK_ULONG n);
/* C_GetAttributeValue of session object oh of s's slot: CKR_OBJECT_HANDLE_INVALID when oh is
 * no such object. */
CK_RV mod_sobj_attributes(struct mod_session *s, CK_OBJECT_HANDLE oh, CK_ATTRIBUTE_PTR tmpl,
                          CK_ULONG n);
/* Destroys session object oh of s's slot (C_DestroyObject's part for session objects):
 * CKR_OBJECT_HANDLE_INVALID when oh is no session object. */
CK_RV p11mod_session_object_destroy(struct mod_session *s, CK_OBJECT_HANDLE oh);
CK_RV C_DeriveKey(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG,
                  CK_OBJECT_HANDLE_PTR);
/* funclist.c: the 2.40 function list (interface.c builds the 3.0 list from it). */
CK_FUNCTION_LIST *mod_function_list(void);

/* Functions of the list, by file (module.c's under mod_ names: the module's own
 * C_GetFunctionList is the one exported name). */
CK_RV mod_C_Initialize(CK_VOID_PTR);
CK_RV mod_C_Finalize(CK_VOID_PTR);
CK_RV mod_C_GetInfo(CK_INFO_PTR);
CK_RV mod_C_GetSlotList(CK_BBOOL, CK_SLOT_ID_PTR, CK_ULONG_PTR);
CK_RV mod_C_GetSlotInfo(CK_SLOT_ID, CK_SLOT_INFO_PTR);
CK_RV mod_C_GetTokenInfo(CK_SLOT_ID, CK_TOKEN_INFO_PTR);
int mod_protected_path(const ctok_token *tok);
/* CKF_LOGIN_REQUIRED: the token's code is typed (a config's code is the module's to use). */
int mod_login_required(const ctok_token *tok);
/* The slot's mechanisms into slot->mechs and ->mech_info (in the slot). */
CK_RV mod_mechs_load(struct mod_slot *slot);
/* Forgets mechanisms taken from the keys seen, when what is seen changes (in the slot). */
void mod_mechs_forget(struct mod_slot *slot);
int mod_slot_has_mech(struct mod_slot *slot, CK_MECHANISM_TYPE mech, CK_FLAGS op,
                      CK_MECHANISM_INFO *info);
/* Does the key's token let it do op (CKF_SIGN, CKF_DECRYPT, CKF_DERIVE) with mech? CKR_OK,
 * CKR_KEY_FUNCTION_NOT_PERMITTED (its usage) or CKR_MECHANISM_INVALID (its allowed list). */
CK_RV mod_key_permits(const ctok_key *key, CK_MECHANISM_TYPE mech, CK_FLAGS op);
/* The token layer's usage bit (CTOK_USE_*) of a PKCS#11 operation (CKF_SIGN, _DECRYPT, _DERIVE). */
unsigned int mod_use_of(CK_FLAGS op);
CK_RV C_GetMechanismList(CK_SLOT_ID, CK_MECHANISM_TYPE_PTR, CK_ULONG_PTR);
CK_RV C_GetMechanismInfo(CK_SLOT_ID, CK_MECHANISM_TYPE, CK_MECHANISM_INFO_PTR);
CK_RV C_OpenSession(CK_SLOT_ID, CK_FLAGS, CK_VOID_PTR, CK_NOTIFY, CK_SESSION_HANDLE_PTR);
CK_RV C_CloseSession(CK_SESSION_HANDLE);
CK_RV C_CloseAllSessions(CK_SLOT_ID);
CK_RV C_GetSessionInfo(CK_SESSION_HANDLE, CK_SESSION_INFO_PTR);
CK_RV C_Login(CK_SESSION_HANDLE, CK_USER_TYPE, CK_UTF8CHAR_PTR, CK_ULONG);
CK_RV C_Logout(CK_SESSION_HANDLE);
CK_RV C_FindObjectsInit(CK_SESSION_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG);
CK_RV C_FindObjects(CK_SESSION_HANDLE, CK_OBJECT_HANDLE_PTR, CK_ULONG, CK_ULONG_PTR);
CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE);
CK_RV C_GetAttributeValue(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG);
CK_RV C_SignInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
CK_RV C_Sign(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
CK_RV C_SignUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG);
CK_RV C_SignFinal(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR);
CK_RV C_DecryptInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
CK_RV C_Decrypt(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
CK_RV C_GenerateKeyPair(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_ATTRIBUTE_PTR, CK_ULONG,
                        CK_ATTRIBUTE_PTR, CK_ULONG, CK_OBJECT_HANDLE_PTR, CK_OBJECT_HANDLE_PTR);
CK_RV C_DestroyObject(CK_SESSION_HANDLE, CK_OBJECT_HANDLE);
CK_RV C_CreateObject(CK_SESSION_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG, CK_OBJECT_HANDLE_PTR);

#endif

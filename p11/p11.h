/*
 * PKCS#11 backend: modules, slots, sessions, objects and mechanisms, through the
 * standard function list (pkcs11.h from p11-kit). Grouped as the specification groups
 * them; every C_* call goes through one traced wrapper (P11_CALL) that maps CKR codes.
 */
#ifndef CTOK_P11_H
#define CTOK_P11_H

#include <pthread.h>
#include <sys/types.h>
#include <p11-kit/pkcs11.h>
#include <openssl/err.h>

#include "../store/backend.h"

/* ---- modules (module.c) ---- */
struct p11_module {
    char *path;
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    CK_INFO info;
    pthread_mutex_t lock; /* initialization state */
    /*
     * Held shared by every region of PKCS#11 calls, exclusively to finalize and
     * initialize again: C_Finalize must never run while another thread is in the module.
     */
    pthread_rwlock_t rw;
    int initialized;
    int fork_hooked; /* ctok's fork handlers registered again after its first C_Initialize */
    pid_t pid;       /* the process that initialized it: a forked child re-initializes */
    unsigned int generation; /* bumped by every re-initialization; handles die with it */
    /* CK_RV C_UnlockPIN(session, puk, puk_len, new_pin, new_pin_len): a vendor extension */
    CK_RV (*unlock_pin)(CK_SESSION_HANDLE, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR, CK_ULONG);
};

/* The module for this library path, loaded and initialized once per process. */
struct p11_module *ctok_p11_module_get(const char *path);
/*
 * Enters a region of calls into the module: initialized in this process (a forked child
 * initializes it again), and not re-initialized before ctok_p11_leave. Regions do not nest.
 */
int ctok_p11_enter(struct p11_module *m);
void ctok_p11_leave(struct p11_module *m);
/* Finalizes and initializes again after a connection failure; outside any region. */
int ctok_p11_module_reinit(struct p11_module *m, unsigned int seen_generation);
const char *ctok_p11_rv_name(CK_RV rv);
/* "this process runs as uid 33 (www-data)": most module failures in servers are file access. */
void ctok_p11_whoami(char *out, size_t len);
/* CKR codes after which EJBCA's Pkcs11Ng re-initializes the library. */
int ctok_p11_rv_is_disconnect(CK_RV rv);

/*
 * Traced call: r = P11_CALL(m, C_Sign, (h, ...)). Modules built on OpenSSL (SoftHSM) leave
 * errors of their own on the thread's queue (its C_Initialize looks for the rdrand engine);
 * libssl takes any queued error for a failed handshake, so the queue is kept as it was:
 * ctok reports failures by their CKR code.
 */
#define P11_CALL(m, fn, args)                                                                      \
    ({                                                                                             \
        CK_RV rv_;                                                                                 \
        ERR_set_mark();                                                                            \
        rv_ = (m)->f->fn args;                                                                     \
        ERR_pop_to_mark();                                                                         \
        ctok_p11_trace(#fn, rv_);                                                                  \
    })
CK_RV ctok_p11_trace(const char *fn, CK_RV rv);
/* The name (and code, rv may be NULL) of this thread's last failed P11_CALL since
 * ctok_p11_forget_failed, else otherwise (and CKR_OK). */
const char *ctok_p11_last_failed(const char *otherwise, CK_RV *rv);
void ctok_p11_forget_failed(void);
/* The same, untraced: for calls whose failure is an expected answer (attribute probes). */
#define P11_QUIET(m, fn, args)                                                                     \
    ({                                                                                             \
        CK_RV rv_;                                                                                 \
        ERR_set_mark();                                                                            \
        rv_ = (m)->f->fn args;                                                                     \
        ERR_pop_to_mark();                                                                         \
        rv_;                                                                                       \
    })

/* ---- what a token says of itself (describe.c) ---- */
/* A token's pkcs11: URI (model, manufacturer, serial, token), malloc'd; NULL on failure. */
char *ctok_p11_token_info_uri(const CK_TOKEN_INFO *ti);
/* The backend's token_uri and mechanisms hooks (store/backend.h). */
char *ctok_p11_token_uri(ctok_token *tok);
json_t *ctok_p11_mechanisms(ctok_token *tok);

/* ---- slots (slots.c) ---- */
enum p11_ref_type { P11_REF_ID, P11_REF_INDEX, P11_REF_LABEL, P11_REF_SERIAL };
struct p11_slot {
    CK_SLOT_ID id;
    size_t index; /* among slots with a token present, in the module's order */
    CK_SLOT_INFO slot;
    CK_TOKEN_INFO token;
    char label[33]; /* token label, blank padding removed */
    char description[65];
};
/* Every slot with a token present. */
int ctok_p11_slots(struct p11_module *m, struct p11_slot **out, size_t *n);
/* Trims a blank-padded PKCS#11 string into out (size len + 1). */
void ctok_p11_str(const unsigned char *in, size_t len, char *out);
/* Every slot with a token of a library, as JSON (id, index, description, token_label,
 * manufacturer, model, serial, flags); NULL with the error raised. */
json_t *ctok_p11_slot_list(const char *library);
/* The libraries registered with p11-kit, each with its slots: [{"name", "path", "slots"
 * [, "error"]}] (the backend's registered hook). */
json_t *ctok_p11_registered(void);
/* The libraries registered with p11-kit: [{"name", "path"}]. */
json_t *ctok_p11_registered_modules(void);
/* The uri_candidates hook (store/backend.h): slots of p11-kit's modules matching a URI. */
json_t *ctok_p11_uri_candidates(void *p11uri, char *searched, size_t len);
/* The module registry lives while any token context does (the ctx_use/ctx_release hooks). */
void ctok_p11_registry_use(void);
void ctok_p11_registry_release(void);

/* ---- the token (backend.c, session.c, login.c, lookup.c, objects.c, crypto.c, keygen.c) ---- */
struct p11_obj {
    CK_OBJECT_CLASS cls;
    CK_OBJECT_HANDLE h;
    char *label;
    uint8_t id[CTOK_MAX_ID];
    size_t id_len;
    CK_KEY_TYPE kt;
    X509 *cert;
    EVP_PKEY *pub;
};

struct p11_tok {
    ctok_token *tok;
    struct p11_module *m;
    char *library;
    enum p11_ref_type ref_type;
    char *ref;
    char *attributes; /* key generation attribute file */
    pthread_mutex_t lock;
    /* valid for one module generation */
    unsigned int gen;
    int have_slot;
    CK_SLOT_ID slot;
    CK_TOKEN_INFO tinfo;
    int logged_in;
    /* session copies of private keys, one per (pooled session, token object), shared by
     * every key handle of that object: modules sign fastest with a copy made in the
     * signing session itself (crypto.c) */
    struct p11_copy {
        CK_SESSION_HANDLE s;
        CK_OBJECT_HANDLE obj; /* the token object, with its CKA_ID: a handle alone may be
                               * reused for another key once the object is destroyed */
        uint8_t id[CTOK_MAX_ID];
        size_t id_len;
        CK_OBJECT_HANDLE h;
    } copies[128];
    size_t n_copies;
    CK_SESSION_HANDLE *idle; /* the session pool */
    size_t n_idle, cap_idle;
    struct p11_obj *objs; /* object cache, refreshed on login and writes */
    size_t n_objs;
    int objs_valid;
    uint64_t objs_seen[2]; /* the token's objects when the cache was read: ctok_p11_objects_same */
};

#define P11TOK(t) ((struct p11_tok *)ctok_token_be(t))

/* A pooled session on the token's slot, for this module generation. In a region. */
int ctok_p11_session_get(struct p11_tok *pt, CK_SESSION_HANDLE *s, unsigned int *gen, CK_RV *rv);
void ctok_p11_session_put(struct p11_tok *pt, CK_SESSION_HANDLE s, unsigned int gen);
/* Drops the pool and login state: the module was re-initialized. Lock held. */
void ctok_p11_session_reset(struct p11_tok *pt);
/* ctok_p11_enter for a token's operation: a failure names the token and the process user. */
int ctok_p11_enter_token(struct p11_tok *pt);
/* Finds the slot by the configured reference; lock held. */
int ctok_p11_find_slot(struct p11_tok *pt);
/*
 * C_Login(CKU_CONTEXT_SPECIFIC) on session s, right after the C_SignInit / C_DecryptInit of an
 * always-authenticate key, with the code of this token's PIN (ctok_token_context_login: read
 * anew, or ctok's prompt) through the token layer's door. CKR_OK, else the failure (the error
 * naming token, key and "signature PIN" raised). Lock not held, in a region.
 */
CK_RV ctok_p11_context_login(struct p11_tok *pt, CK_SESSION_HANDLE s, const ctok_key *key);
/* Logs in with the token's known code; lock held. */
int ctok_p11_relogin(struct p11_tok *pt);
/*
 * After a disconnect-class failure (outside any region): re-initialize the module, find
 * the slot again and log in again with the known code. 1 if the operation may be retried.
 */
int ctok_p11_recover(struct p11_tok *pt, unsigned int gen, CK_RV rv, const char *what);
/* Brings the token to the module's current generation: slot and login. In a region, lock held. */
int ctok_p11_catch_up(struct p11_tok *pt);
/* Keeps an idle session for reuse; 0 if the pool is full. Lock held. */
int ctok_p11_pool_push(struct p11_tok *pt, CK_SESSION_HANDLE s);
/* Runs fn on a pooled session inside a region: fn's CKR, or the session's failure. */
CK_RV ctok_p11_with_session(struct p11_tok *pt,
                            CK_RV (*fn)(struct p11_tok *, CK_SESSION_HANDLE, void *), void *arg);

/* login.c: the backend's login_code, logout, pin_state, unlock_pin and change_code hooks */
int ctok_p11_login(ctok_token *tok, const struct ctok_code *c);
void ctok_p11_logout(ctok_token *tok);
unsigned int ctok_p11_pin_state(ctok_token *tok, int puk);
int ctok_p11_unlock_pin(ctok_token *tok, const char *puk, size_t puk_len, const char *pin,
                        size_t pin_len);
int ctok_p11_change_code(ctok_token *tok, const char *old, size_t old_len, const char *code,
                         size_t len);

/* lookup.c: the backend's enumerate, refresh, find, hidden, key_load and key_free hooks */
int ctok_p11_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg);
int ctok_p11_refresh(ctok_token *tok);
int ctok_p11_find(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
                  unsigned int types, ctok_object_cb cb, void *arg);
unsigned int ctok_p11_hidden(ctok_token *tok);
int ctok_p11_key_load(ctok_token *tok, ctok_key *key);
void ctok_p11_key_free(ctok_key *key);

/* objects.c */
int ctok_p11_objects_load(struct p11_tok *pt);
/* Does the token hold the token objects the cache was read from (their number and handles;
 * one search)? 0 also when it cannot tell. Lock held, in a region. */
int ctok_p11_objects_same(struct p11_tok *pt);
void ctok_p11_objects_clear(struct p11_tok *pt);
void ctok_p11_objects_free(struct p11_obj *v, size_t n);
/* Does the token show a certificate (0 also when it cannot say)? Lock held. */
int ctok_p11_any_cert(struct p11_tok *pt);
/* The objects of types (CTOK_OBJ_*) with this label and/or id (NULL / 0: any): the current
 * cache (which holds others too: filter), or, *owned set, just those, read with a targeted
 * search; *rv: the failed call's CKR. Lock held. */
int ctok_p11_objects_find(struct p11_tok *pt, const char *label, const uint8_t *id, size_t id_len,
                          unsigned int types, struct p11_obj **out, size_t *n, int *owned,
                          CK_RV *rv);
EVP_PKEY *ctok_p11_public_key(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                              CK_KEY_TYPE kt);
/* CKR_OK, CKR_KEY_HANDLE_INVALID when there is no such key, or the module's failure. */
CK_RV ctok_p11_find_key(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                        const uint8_t *id, size_t id_len, CK_OBJECT_HANDLE *h);
/* C_FindObjectsInit that ends a search a failed C_FindObjectsFinal left open. */
CK_RV ctok_p11_find_init(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n);
int ctok_p11_get_attr(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                      CK_ATTRIBUTE_TYPE type, uint8_t **val, CK_ULONG *len);

/* crypto.c */
int ctok_p11_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs, size_t tbslen,
                  uint8_t *sig, size_t *siglen);
int ctok_p11_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                     size_t inlen, uint8_t *out, size_t *outlen);
int ctok_p11_derive(ctok_key *key, EVP_PKEY *peer, uint8_t *secret, size_t *len);

/* keygen.c */
int ctok_p11_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec);
int ctok_p11_remove(ctok_token *tok, const char *alias, char *note, size_t notelen);
int ctok_p11_put_cert(ctok_token *tok, const char *alias, X509 *cert, int replace);
int ctok_p11_remove_cert(ctok_token *tok, const char *label);
int ctok_p11_rename(ctok_token *tok, unsigned int type, const char *old, const char *new_label);

/* The key handle data: the private key object, for one module generation. */
struct p11_key {
    CK_OBJECT_HANDLE h; /* the token object */
    unsigned int gen;
    int copy_refused; /* the module does not copy this key: sign with the token object */
    CK_KEY_TYPE kt;
    pthread_mutex_t lock;
    /* p11mech: CKA_ALLOWED_MECHANISMS, read once at key_load (crypto.c chooses by it);
     * restricted 0: absent or empty, every mechanism may be tried */
    CK_MECHANISM_TYPE allowed[16];
    size_t n_allowed;
    int restricted;
    /* p11auth: CKA_ALWAYS_AUTHENTICATE, read once in key_load: a context-specific login
     * (ctok_p11_context_login) after each C_SignInit / C_DecryptInit */
    int always_auth;
};

/* crypto.c: after key_load read the allowed mechanisms, the key's flags and type (a key
 * allowed only PSS mechanisms is an RSA-PSS key, with the digest they name). */
int ctok_p11_key_mechs(ctok_key *key);

#endif

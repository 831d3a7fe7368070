/*
 * Internals of the token layer, shared by its own files only. Backends include backend.h:
 * the build enforces it (CTOK_TOKEN_LAYER is defined for the token layer's own sources).
 */
#ifndef CTOK_STORE_INTERNAL_H
#define CTOK_STORE_INTERNAL_H

#ifndef CTOK_TOKEN_LAYER
#error "store/internal.h is the token layer's own: a backend includes store/backend.h"
#endif

#include <pthread.h>
#include <sys/types.h>
#include <jansson.h>

#include "backend.h"

enum ctok_auth_kind { CTOK_AUTH_PROMPT = 0, CTOK_AUTH_FILE, CTOK_AUTH_ENV, CTOK_AUTH_STORED };

struct ctok_token {
    ctok_ctx *ctx;
    char *name;
    char *id;
    char *type;
    const struct ctok_backend *be;
    void *be_data;
    int allow_export;
    int explicit_ecc;
    unsigned int perms;
    enum ctok_auth_kind auth_kind;
    char *auth_arg;   /* file path, variable name or stored blob */
    json_t *entry;    /* the config entry it was made from */
    char label[64];   /* the token's own label (PKCS#11), for prompts; code_lock */
    char *audit_file; /* "audit_file": JSON lines of what happened */
    int audit_use;    /* "audit_use": every private key use too */
    /* "pin_cache_fork": a prompted code is kept while active, so a forked child (whose PKCS#11
     * module initializes again) logs in with it; off by default: the code then lives in the
     * memory of every child process */
    int pin_cache_fork;

    /* state changes only (active, kept code, key cache); never held across backend I/O */
    pthread_mutex_t lock;
    /* serializes open and login (PBKDF2, network credential fetches) and so the codes sent;
     * key operations, lookups of an open token and ctok_token_is_active never take it */
    pthread_mutex_t login_lock;
    int opened; /* atomic: set once under login_lock */
    int active; /* atomic: ctok_token_is_active / ctok_token_set_active, never the field */
    /* token.c's code_lock (a leaf) guards the fields below; tok->lock too where it says */
    char *code; /* the auth code while active (re-login, keystore rewrites); cleansed; lock too */
    size_t code_len;
    char code_src[320];      /* where it came from */
    char inactive_why[400];  /* why a reconnect deactivated the token */
    uint8_t rejected[8][32]; /* salted SHA-256 of codes the token rejected: never sent again */
    int n_rejected;
    uint8_t salt[16];
    int salted, warned_low;
    /* key handles by id (ctok_token_key), one reference each; tok->lock. keys_pid: the process
     * that loaded them (a forked child starts afresh); keys_gen counts the drops */
    ctok_key **keys;
    size_t n_keys, cap_keys;
    pid_t keys_pid;
    unsigned int keys_gen;
    struct ctok_certs *certs; /* certbind.c: read from "certificates" at first use; tok->lock */
    /* a token made for a pkcs11: URI that no configured token matched: never written to the
     * config, lives as long as the context; the next one (ctx->lock) */
    int ephemeral;
    ctok_token *eph_next;
};

struct ctok_ctx {
    OSSL_LIB_CTX *libctx;
    char *propq;
    char *config_path;
    pthread_mutex_t lock;
    int loaded; /* 1 loaded, -1 failed */
    char *master_key;
    ctok_token **tokens;
    size_t n_tokens;
    int config_absent;     /* no config file: no configured tokens */
    ctok_token *ephemeral; /* zero-config tokens (lookup.c), newest first; lock */
};

/*
 * backends.c, linked into each program (not into the token layer's library): the token
 * types it offers, NULL-terminated. The token layer finds backends only through it.
 */
extern const struct ctok_backend *const ctok_backends[];
/* types.c: the backend of a type, or NULL */
const struct ctok_backend *ctok_backend_find(const char *type);
/* types.c: every backend's ctx_use / ctx_release hook */
void ctok_backends_use(void);
void ctok_backends_release(void);

/* audit.c: one JSON line per operation; object and detail may be NULL; never secrets */
void ctok_audit(const ctok_token *tok, const char *operation, const char *object, int ok,
                const char *detail);

/* config.c */
int ctok_config_load(ctok_ctx *ctx);
/* config.c: a token from its config entry (idx: its place, for errors) */
ctok_token *ctok_token_from_json(ctok_ctx *ctx, const char *path, size_t idx, json_t *o);
/* token.c: authorization of a token known by name and rules (a config entry being edited) */
int ctok_perms_authorize(const char *tokname, unsigned int perms, enum ctok_perm perm,
                         const char *operation, const char *object);
/* token.c: the backend's objects with no rule checked (lookup checks view or use itself) */
int ctok_token_scan(ctok_token *tok, ctok_object_cb cb, void *arg);
/* token.c: the objects of types with this label and/or id (NULL / 0: any), through the
 * backend's find, else enumeration filtered; no rule checked */
int ctok_token_scan_for(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
                        unsigned int types, ctok_object_cb cb, void *arg);
/* token.c: writers hold the token lock (or, on a reconnect, the backend's); readers need none */
void ctok_token_set_active(ctok_token *tok, int active);
void ctok_token_free(ctok_token *tok);

/*
 * certbind.c: certificates bound from files ("certificates"): reported with the label and id
 * of the key whose public key they carry, by ctok_token_scan / ctok_token_scan_for.
 */
struct ctok_bind;
int ctok_certbind_configure(const char *path, ctok_token *tok); /* validates the entry */
void ctok_certbind_free(ctok_token *tok);
/* A scan of types reporting to cb: *b NULL when no certificate can be added (nothing to do),
 * else scan with ctok_certbind_cb and b, asking the backend for keys too. 0: error raised. */
int ctok_certbind_begin(ctok_token *tok, unsigned int types, ctok_object_cb cb, void *arg,
                        struct ctok_bind **b);
int ctok_certbind_cb(ctok_token *tok, const struct ctok_object *o, void *b);
/* whole: the scan listed every object (certificates that bound to nothing are told) */
void ctok_certbind_end(struct ctok_bind *b, int whole);
/* CTOK_OBJ_CERT while a certificate has bound to no key yet: a key's public half may be
 * known only after login (a keystore's encrypted key). */
unsigned int ctok_certbind_hidden(ctok_token *tok);
/* Writes cert to <first folder>/<alias>.pem if it carries key alias's public key. */
int ctok_certbind_put(ctok_token *tok, const char *alias, X509 *cert);

/* code.c: what the token layer remembers of codes (struct ctok_token) is guarded by this leaf
 * lock; a rejected code is marked (1) or, once a PIN is set to it, sendable again (0); the
 * code kept while active (re-login, keystore rewrites), c NULL: forgotten */
extern pthread_mutex_t ctok_code_lock;
void ctok_code_mark_rejected(ctok_token *tok, const struct ctok_code *c, int rejected);
void ctok_code_keep(ctok_token *tok, const struct ctok_code *c);
/* A copy of the kept code (ctok_token_kept_code) and, src not NULL, where it came from. */
int ctok_code_kept(ctok_token *tok, char *buf, size_t bufsz, size_t *len, char *src, size_t srcsz);

/* prompt.c: ctok's own prompt on the terminal through OpenSSL's UI_OpenSSL() (a ctok_ui
 * get_code; arg: the token's name, for the error when there is no terminal) */
int ctok_tty_get_code(void *arg, const char *info, char *buf, size_t bufsz, size_t *len);

/* auth.c */
int ctok_auth_read_file(const char *tokname, const char *path, char *buf, size_t bufsz,
                        size_t *len);
int ctok_auth_stored_decrypt(ctok_token *tok, const char *blob, char *buf, size_t bufsz,
                             size_t *len);
char *ctok_auth_stored_encrypt(const uint8_t key[32], const char *token_id, const char *code,
                               size_t len);
int ctok_master_key_read(const char *path, const char *tokname, uint8_t key[32]);

#endif

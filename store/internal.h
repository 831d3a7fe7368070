/* Internals of the token layer, shared by its files and the backends. */
#ifndef CTOK_STORE_INTERNAL_H
#define CTOK_STORE_INTERNAL_H

#include <pthread.h>
#include <sys/types.h>
#include <jansson.h>

#include "token.h"

/* A token's PIN state (PKCS#11 CKF_USER_PIN_* / CKF_SO_PIN_* flags). */
enum { CTOK_PIN_COUNT_LOW = 1, CTOK_PIN_FINAL_TRY = 2, CTOK_PIN_LOCKED = 4 };

/* An auth code on its way to a token, and where it came from (errors name it; never the code). */
struct ctok_code {
    const char *code;
    size_t len;
    int puk;         /* a PUK (SO PIN), not the user's code */
    const char *src; /* "auth file /etc/ctok/hsm.pin", "environment variable HSM_PIN" */
    int typed;       /* typed at the tool's prompt to activate: may spend a PIN's final try */
};

/*
 * How a backend sends a code. state (may be NULL) returns the CTOK_PIN_* bits the token
 * reports right before; send returns 1 accepted, 0 rejected (error raised), -1 other failure.
 */
struct ctok_sender {
    unsigned int (*state)(ctok_token *tok, int puk, void *arg);
    int (*send)(ctok_token *tok, const struct ctok_code *c, void *arg);
    void *arg;
};

/*
 * The one door every auth code goes through to a token (first login, re-login after a
 * reconnect, code change, PIN unlock; every key reference and thread): a code the token
 * rejected is never sent again in this process, a locked PIN is not tried and a final try
 * is spent only on a code typed for it. Returns what send returned, or 0 / -1 when refused.
 */
int ctok_token_send_code(ctok_token *tok, const struct ctok_code *c, const struct ctok_sender *s);
/*
 * Sends the code kept while active again (re-login after a reconnect). A rejected one is
 * dropped and the token deactivated; without one the token must be activated again.
 */
int ctok_token_send_kept_code(ctok_token *tok, const struct ctok_sender *s);
/* Why a token that was active is not any more (reconnect), for errors. */
void ctok_token_inactive_why(ctok_token *tok, char *buf, size_t len);

/* A `ctok token create` option of a backend, and the config key it sets. */
enum ctok_field_kind { CTOK_FIELD_STRING, CTOK_FIELD_INT, CTOK_FIELD_PATH /* made absolute */ };
struct ctok_tool_field {
    const char *option; /* "region": the tool takes --region VALUE */
    const char *key;    /* the config key it sets ("region") */
    enum ctok_field_kind kind;
    int required;
    const char *help; /* one line for the tool's usage */
};

struct ctok_backend {
    const char *type;
    /* The tool's `token create` options for this type; {NULL}-terminated, may be NULL. */
    const struct ctok_tool_field *tool_fields;
    /*
     * Does login need an auth code? NULL: always. 0: login(tok, NULL, 0) signs in with what
     * the configuration names (an AWS instance role, an Azure managed identity).
     */
    int (*needs_code)(ctok_token *tok);
    /*
     * Targeted lookup: the objects of types with this label and/or id (NULL / 0: any), as
     * enumerate reports them. NULL: the token layer enumerates and filters. A remote token
     * answers it without listing everything (one GetPublicKey, not ListAliases per key load).
     */
    int (*find)(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
                unsigned int types, ctok_object_cb cb, void *arg);
    /*
     * `ctok token create`: set up a new token (a new keystore protected by code) or check that
     * the one the entry names is there and takes code (NULL: needs_code said no code).
     */
    int (*create)(ctok_token *tok, const char *code, size_t len);
    /*
     * The tool's discovery: what this configured token's backend can offer (PKCS#11: every
     * slot of the library; AWS KMS: the aliases and their keys), as a JSON array.
     */
    json_t *(*discover)(ctok_token *tok);
    /*
     * Keep a code typed at a prompt while active? A keystore needs it for its rewrites; a
     * PKCS#11 token does not, and after a reconnect asks to be activated again instead.
     */
    int keep_prompted_code;
    /* Reads the backend fields of the config entry; no I/O on the token yet. */
    int (*configure)(ctok_token *tok, const json_t *conf);
    /* Reads what can be read without an auth code (structure, public objects). */
    int (*open)(ctok_token *tok);
    /* Returns 1 on success, 0 on a rejected code (error raised), -1 on other failure. */
    int (*login)(ctok_token *tok, const char *code, size_t len);
    /* The same with the code's source, for errors (used instead of login when set). */
    int (*login_code)(ctok_token *tok, const struct ctok_code *c);
    /* CTOK_PIN_* bits the token reports now for its user PIN or its PUK; 0 if unknown. */
    unsigned int (*pin_state)(ctok_token *tok, int puk);
    int (*enumerate)(ctok_token *tok, ctok_object_cb cb, void *arg);
    /* Does the token match a pkcs11: URI's token attributes (P11KitUri)? */
    int (*match_p11_uri)(ctok_token *tok, void *p11uri);
    /* CTOK_OBJ_* types that may be hidden until the token is logged in. */
    unsigned int (*hidden)(ctok_token *tok);
    /* Private key handle data for the key with this id (token active). */
    int (*key_load)(ctok_token *tok, ctok_key *key);
    void (*key_free)(ctok_key *key);
    int (*sign)(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs, size_t tbslen,
                uint8_t *sig, size_t *siglen);
    int (*decrypt)(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in, size_t inlen,
                   uint8_t *out, size_t *outlen);
    int (*derive)(ctok_key *key, EVP_PKEY *peer, uint8_t *secret, size_t *len);
    EVP_PKEY *(*export_private)(ctok_key *key);
    int (*generate)(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec);
    /* note: what the user should know ("deletion scheduled for ..."); left "" if nothing */
    int (*remove)(ctok_token *tok, const char *alias, char *note, size_t notelen);
    int (*put_cert)(ctok_token *tok, const char *alias, X509 *cert);
    int (*unlock_pin)(ctok_token *tok, const char *puk, size_t puk_len, const char *pin,
                      size_t pin_len);
    /* New auth code (keystore password, user PIN); the token is active with old. */
    int (*change_code)(ctok_token *tok, const char *old, size_t old_len, const char *code,
                       size_t len);
    void (*close)(ctok_token *tok);
};

extern const struct ctok_backend ctok_pkcs12_backend;
extern const struct ctok_backend ctok_pkcs11_backend;
extern const struct ctok_backend ctok_awskms_backend;

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
    char label[64];   /* the token's own label (PKCS#11), for prompts */
    char *audit_file; /* "audit_file": JSON lines of what happened */
    int audit_use;    /* "audit_use": every private key use too */

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
};

struct ctok_key {
    int refs;
    ctok_token *tok;
    char *label;
    uint8_t id[CTOK_MAX_ID];
    size_t id_len;
    enum ctok_key_type type;
    EVP_PKEY *pub;
    void *be_data;
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
};

/* pkcs12.c: a new, empty keystore protected by code (ctok token create). */
int ctok_pkcs12_create(ctok_token *tok, const char *code, size_t len);

/* p11/module.c: the PKCS#11 module registry lives while any token context does */
void ctok_p11_registry_use(void);
void ctok_p11_registry_release(void);

/* audit.c: one JSON line per operation; object and detail may be NULL; never secrets */
void ctok_audit(ctok_token *tok, const char *operation, const char *object, int ok,
                const char *detail);

/* config.c */
int ctok_config_load(ctok_ctx *ctx);
/* token.c: authorization of a token known by name and rules (a config entry being edited) */
int ctok_perms_authorize(const char *tokname, unsigned int perms, enum ctok_perm perm,
                         const char *operation, const char *object);
/* token.c: the backend's objects with no rule checked (lookup checks view or use itself) */
int ctok_token_scan(ctok_token *tok, ctok_object_cb cb, void *arg);
/* token.c: passes on to cb only the objects of types with this label and/or id (NULL: any) */
struct ctok_filter {
    const char *label;
    const uint8_t *id;
    size_t id_len;
    unsigned int types;
    ctok_object_cb cb;
    void *arg;
};
int ctok_filter_cb(ctok_token *tok, const struct ctok_object *o, void *filter);
/* token.c: the objects of types with this label and/or id (NULL / 0: any), through the
 * backend's find, else enumeration filtered; no rule checked */
int ctok_token_scan_for(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
                        unsigned int types, ctok_object_cb cb, void *arg);
/* token.c: writers hold the token lock (or, on a reconnect, the backend's); readers need none */
void ctok_token_set_active(ctok_token *tok, int active);
/* token.c: login with this code for an operation already authorized (create, code change) */
int ctok_token_login_with(ctok_token *tok, const char *code, size_t len);
void ctok_token_free(ctok_token *tok);
/* token.c: forgets the cached key handles (keys generated or removed, a PKCS#11 reconnect);
 * handles in use stay valid. Takes tok->lock: call it holding no backend lock. */
void ctok_token_keys_drop(ctok_token *tok);

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

/* auth.c */
int ctok_auth_read_file(const char *tokname, const char *path, char *buf, size_t bufsz,
                        size_t *len);
int ctok_auth_stored_decrypt(ctok_token *tok, const char *blob, char *buf, size_t bufsz,
                             size_t *len);
char *ctok_auth_stored_encrypt(const uint8_t key[32], const char *token_id, const char *code,
                               size_t len);
int ctok_master_key_read(const char *path, const char *tokname, uint8_t key[32]);

/* fileutil.c */
/*
 * Opens a file ctok trusts (config, auth code, master key, keystore, attribute file) for
 * reading: never through a symbolic link, a regular file owned by us or root that nobody
 * else can write (secret: nor read), in folders nobody else can write. The descriptor is
 * what was checked: read from it, not from the path. -1 with the error raised (reason for
 * a missing file; CTOK_R_INSECURE_FILE naming the path and the cause otherwise).
 */
int ctok_file_open(const char *path, int secret, int reason, const char *what);
/* ctok_file_open and the whole file, NUL-terminated; free with ctok_file_free. */
int ctok_file_read(const char *path, int secret, int reason, const char *what, uint8_t **data,
                   size_t *len);
void ctok_file_free(uint8_t *data, size_t len);
/*
 * Writes data to path through a temp file, fsync and rename: never a torn file. An existing
 * file keeps its mode and owner; a symbolic link is refused. mode is for a new file.
 */
int ctok_file_write_atomic(const char *path, const uint8_t *data, size_t len, int mode);
/* Creates path with data unless it exists: 1 created, 0 it existed, -1 error. */
int ctok_file_create_exclusive(const char *path, const uint8_t *data, size_t len, int mode);
/* An exclusive advisory lock beside path (path.lock); returns the fd or -1. */
int ctok_file_lock(const char *path);
void ctok_file_unlock(int fd);

/* Fault hooks for tests: CTOK_TEST_STOP_AT=<point> stops the process there;
 * CTOK_TEST_DELAY_AT=<point>:<ms> delays every pass there but the first. */
void ctok_test_point(const char *point);

#endif

/*
 * The contract between the token layer and a token backend (store/pkcs12*.c, p11/, kms/):
 * the vtable a backend implements and the token-layer functions it may call. A backend
 * includes this header (and token.h through it), never internal.h: struct ctok_token is the
 * token layer's alone, and its state (the kept code, active, opened, label) is set only by
 * the token layer, under its locks.
 */
#ifndef CTOK_STORE_BACKEND_H
#define CTOK_STORE_BACKEND_H

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
/*
 * One context-specific login (a PKCS#11 key with CKA_ALWAYS_AUTHENTICATE, after each
 * C_SignInit / C_DecryptInit), through the one door with sender s: the code of this token's
 * PIN read anew from its auth source (file, variable, stored); for a prompt token the code kept
 * since activation (a ?pin-value, or a prompted one with "pin_cache_fork"), else ctok's own
 * terminal prompt (the application's callback is gone at signing time). The code is cleansed
 * before the return: kept no longer than the token layer already keeps it. key_label names the
 * key in errors. Returns what send returned, or 0 / -1 when refused or no code was had.
 */
int ctok_token_context_login(ctok_token *tok, const char *key_label, const struct ctok_sender *s);
/* Why a token that was active is not any more (reconnect), for errors. */
void ctok_token_inactive_why(ctok_token *tok, char *buf, size_t len);

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
    /* `ctok mechanisms`: what the token offers, as a JSON array of {"name", "type",
     * "min_key_size", "max_key_size", "flags"}. NULL: the type has no mechanism list. */
    json_t *(*mechanisms)(ctok_token *tok);
    /* The kinds of key a token of this type can hold (token.h), CTOK_KT_NONE-terminated; NULL:
     * the type does not say (a PKCS#11 token has its mechanism list). */
    const struct ctok_key_kind *key_kinds;
    /* The token's pkcs11: URI (RFC 7512 token attributes), malloc'd. NULL: the type has none. */
    char *(*token_uri)(ctok_token *tok);
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
    /* Ends the login the token holds (the token was deactivated), so that the next activation
     * sends its code to the token again and a wrong code is rejected there. May be NULL. */
    void (*logout)(ctok_token *tok);
    /* CTOK_PIN_* bits the token reports now for its user PIN or its PUK; 0 if unknown. */
    unsigned int (*pin_state)(ctok_token *tok, int puk);
    int (*enumerate)(ctok_token *tok, ctok_object_cb cb, void *arg);
    /* Does the token match a pkcs11: URI's token attributes (P11KitUri)? */
    int (*match_p11_uri)(ctok_token *tok, void *p11uri);
    /*
     * Zero-config pkcs11: URIs: config entries for the tokens the system offers (PKCS#11: the
     * slots of p11-kit's registered modules, or of the URI's module-path) that match the URI's
     * token and module attributes, as a JSON array; searched says what was looked at. May be
     * NULL.
     */
    json_t *(*uri_candidates)(void *p11uri, char *searched, size_t len);
    /* CTOK_OBJ_* types that may be hidden until the token is logged in. */
    unsigned int (*hidden)(ctok_token *tok);
    /* Private key handle data for the key with this id (token active). */
    int (*key_load)(ctok_token *tok, ctok_key *key);
    void (*key_free)(ctok_key *key);
    int (*sign)(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs, size_t tbslen,
                uint8_t *sig, size_t *siglen);
    /*
     * The form of sign's ECDSA signatures: 1 r || s (each half as long as the group order, as
     * PKCS#11 tokens and JWS return it), 0 DER. The token layer converts, once, to the form its
     * caller asked for (ctok_key_sign: DER; ctok_key_sign_raw: r || s); a backend never does.
     */
    int sign_rs;
    int (*decrypt)(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in, size_t inlen,
                   uint8_t *out, size_t *outlen);
    int (*derive)(ctok_key *key, EVP_PKEY *peer, uint8_t *secret, size_t *len);
    EVP_PKEY *(*export_private)(ctok_key *key);
    int (*generate)(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec);
    /* note: what the user should know ("deletion scheduled for ..."); left "" if nothing */
    int (*remove)(ctok_token *tok, const char *alias, char *note, size_t notelen);
    /*
     * Stores cert labelled alias, with the id of the key it certifies on the token (else, when
     * replacing, the id of the certificate it replaces; else its own key identifier). replace:
     * the certificates labelled alias go in the same write, and stay if it fails (a keystore:
     * one rewrite; PKCS#11: the new object is created before the old ones are destroyed).
     * NULL: the token keeps no certificates (the token layer binds files, store/certbind.c).
     */
    int (*put_cert)(ctok_token *tok, const char *alias, X509 *cert, int replace);
    /* Removes the certificate objects labelled label, never a key: a label that names only a
     * key is refused, naming it. NULL: not supported by the type. */
    int (*remove_cert)(ctok_token *tok, const char *label);
    /*
     * A new label, ids kept (p11tool --set-label). type CTOK_OBJ_CERT: the certificates
     * labelled old; CTOK_OBJ_PRIVATE: the key named old and every object with its id (its
     * public key and certificates). One rewrite of a keystore. NULL: not supported by the type.
     */
    int (*rename)(ctok_token *tok, unsigned int type, const char *old, const char *new_label);
    int (*unlock_pin)(ctok_token *tok, const char *puk, size_t puk_len, const char *pin,
                      size_t pin_len);
    /* New auth code (keystore password, user PIN); the token is active with old. */
    int (*change_code)(ctok_token *tok, const char *old, size_t old_len, const char *code,
                       size_t len);
    /* Drops what the token holds of other tokens (a binding key), while every token of the
     * context still lives: called for all tokens before any is closed. May be NULL. */
    void (*release)(ctok_token *tok);
    void (*close)(ctok_token *tok);
    /*
     * Per process, optional: called when a token context is made and when it is freed, for
     * state the type shares between tokens (PKCS#11: the module registry lives while any
     * context does).
     */
    void (*ctx_use)(void);
    void (*ctx_release)(void);
    /*
     * Optional: what the system has registered for this type, as a JSON array, each with what
     * discover would say of it (PKCS#11: p11-kit's modules, each with its "slots").
     */
    json_t *(*registered)(void);
    /*
     * Optional (ctok_token_refresh): another process may have changed the token; what the
     * next enumeration reads again, if it is cheap to tell or read (never a network call).
     * 1: the token may show other objects now; 0: nothing changed that it can see.
     */
    int (*refresh)(ctok_token *tok);
};

/* The key handle the token layer hands to key_load: the backend fills in label (strdup),
 * type, pub and be_data; the token layer owns the rest. */
struct ctok_key {
    int refs;
    ctok_token *tok;
    char *label;
    uint8_t id[CTOK_MAX_ID];
    size_t id_len;
    enum ctok_key_type type;
    EVP_PKEY *pub;
    void *be_data;
    unsigned int flags; /* CTOK_KEY_* (token.h), set by key_load */
    unsigned int usage; /* CTOK_USE_* (token.h): CTOK_USE_ALL unless key_load narrows it */
    const unsigned long *allowed; /* CKM_* the token allows the key, n_allowed of them; NULL: any.
                                   * key_load points it into its be_data. */
    size_t n_allowed;
};

/* ---- token-layer functions a backend may use ---- */
/* The backend's own data of a token (set by configure, cleared by close). */
void *ctok_token_be(const ctok_token *tok);
void ctok_token_set_be(ctok_token *tok, void *data);
/* The token's own label (a PKCS#11 token label), for prompts. */
void ctok_token_set_label(ctok_token *tok, const char *label);
/*
 * A copy of the auth code the token layer keeps while the token is active (a keystore's
 * rewrites): 1 and buf filled (NUL-terminated, *len bytes), or 0 if none is kept. No lock is
 * held after the return; cleanse buf when done.
 */
int ctok_token_kept_code(ctok_token *tok, char *buf, size_t bufsz, size_t *len);
/* Activates the token with this code, for an operation already authorized (create). */
int ctok_token_login_with(ctok_token *tok, const char *code, size_t len);
/*
 * A raw ECDSA signature r || s (what PKCS#11 tokens and cloud key services return; each half
 * as long as the curve's order) as DER, the form X.509, TLS and CMS want. 1 ok; 0 if the input
 * is malformed or the DER does not fit in *derlen bytes.
 */
int ctok_ecdsa_rs_to_der(const uint8_t *rs, size_t rslen, uint8_t *der, size_t *derlen);
/* The reverse: a DER ECDSA-Sig-Value as r || s, each half bytes. 1 ok; 0 if the DER is
 * malformed or r or s is longer than half. */
int ctok_ecdsa_der_to_rs(const uint8_t *der, size_t derlen, uint8_t *rs, size_t half);

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
/* An exclusive advisory lock beside path (path.lock); returns the fd or -1. ctok_file_unlock
 * releases it and removes path.lock: no lock file is left behind. */
int ctok_file_lock(const char *path);
void ctok_file_unlock(const char *path, int fd);

/* Fault hooks for tests: CTOK_TEST_STOP_AT=<point> stops the process there;
 * CTOK_TEST_DELAY_AT=<point>:<ms> delays every pass there but the first;
 * CTOK_TEST_WAIT_AT=<point>:<dir> holds the process's first pass there (that thread only)
 * until <dir>/go exists, <dir>/reached made on arrival (at most 60 s). */
void ctok_test_point(const char *point);

/* token.c: forgets the cached key handles (keys generated or removed, a PKCS#11 reconnect);
 * handles in use stay valid. Takes tok->lock: call it holding no backend lock. */
void ctok_token_keys_drop(ctok_token *tok);

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

#endif

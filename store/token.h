/*
 * ctok token layer: the contract between the front doors (provider/, cli/) and the
 * token backends. Knows OpenSSL objects (EVP_PKEY, X509) but not OSSL_PARAM dispatch.
 */
#ifndef CTOK_TOKEN_H
#define CTOK_TOKEN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <jansson.h>

#include "err.h"

#define CTOK_MAX_ID 64
#define CTOK_MAX_CODE 256
/* Signatures are made in 1024-byte buffers (p11/crypto.c): no larger RSA key is generated. */
#define CTOK_MAX_RSA_BITS 8192

/*
 * This process's id without a system call. Every layer asks "am I the process that made
 * this state, or a forked child?" on each key lookup and module call; getpid() is a system
 * call (~0.8 us on the benchmark VM, ~1 % of a SoftHSM ECDSA signature each). Set when the
 * library loads and anew by one fork child handler, which runs before any other ctok code
 * in the child (it is registered first).
 */
pid_t ctok_self_pid(void);

/* Key types as OpenSSL names them (keymgmt names). */
enum ctok_key_type { CTOK_KT_NONE = 0, CTOK_KT_RSA, CTOK_KT_RSA_PSS, CTOK_KT_EC, CTOK_KT_ED25519 };

enum ctok_obj_type { CTOK_OBJ_CERT = 1, CTOK_OBJ_PUBLIC = 2, CTOK_OBJ_PRIVATE = 4 };
#define CTOK_OBJ_ANY (CTOK_OBJ_CERT | CTOK_OBJ_PUBLIC | CTOK_OBJ_PRIVATE)

/* Authorization rules of EJBCA's crypto tokens (seed 000). */
enum ctok_perm {
    CTOK_PERM_VIEW = 1 << 0,
    CTOK_PERM_USE = 1 << 1,
    CTOK_PERM_ACTIVATE = 1 << 2,
    CTOK_PERM_DEACTIVATE = 1 << 3,
    CTOK_PERM_MODIFY = 1 << 4,
    CTOK_PERM_DELETE = 1 << 5,
    CTOK_PERM_KEYGEN = 1 << 6,
    CTOK_PERM_KEYREMOVE = 1 << 7,
    CTOK_PERM_KEYTEST = 1 << 8,
};
#define CTOK_PERM_ALL 0x1ff

typedef struct ctok_ctx ctok_ctx;
typedef struct ctok_token ctok_token;
typedef struct ctok_key ctok_key;

/* One object a token holds, as enumeration reports it. Borrowed pointers. */
struct ctok_object {
    enum ctok_obj_type type;
    const char *label;
    const uint8_t *id;
    size_t id_len;
    enum ctok_key_type key_type; /* keys; certificates: type of their public key */
    X509 *cert;                  /* certificates */
    EVP_PKEY *pub;               /* public key when known (certificate's, or the key's) */
};
typedef int (*ctok_object_cb)(ctok_token *tok, const struct ctok_object *obj, void *arg);

/* Where an auth code comes from when the configuration does not say. */
struct ctok_ui {
    /* Fills buf with the code for the token named in info; returns 1, or 0 if none; -1: the
     * application has no prompt at all (ctok then asks on the terminal itself, when there is
     * one, through OpenSSL's default UI method). */
    int (*get_code)(void *arg, const char *info, char *buf, size_t bufsz, size_t *len);
    void *arg;
};

/* Per-use auth code from a URI query (?pin-value= / ?pin-source=). */
struct ctok_pin {
    const char *value;
    const char *source; /* "file:/path" or a path */
};

/* Signature request. md == NULL: sign tbs as given (raw PKCS#1 block / ECDSA over tbs). */
struct ctok_sig_params {
    int pad;            /* RSA_PKCS1_PADDING, RSA_PKCS1_PSS_PADDING, RSA_NO_PADDING */
    const EVP_MD *md;   /* digest that produced tbs */
    const EVP_MD *mgf1; /* PSS */
    int saltlen;        /* PSS, already resolved to a byte count */
    /* The whole message tbs is the digest of, when the application gave it (DigestSign):
     * a key allowed only hash-and-sign mechanisms signs it on the token. NULL otherwise. */
    const uint8_t *msg;
    size_t msglen;
};

struct ctok_dec_params {
    int pad; /* RSA_PKCS1_PADDING, RSA_PKCS1_OAEP_PADDING, RSA_NO_PADDING, RSA_PKCS1_WITH_TLS */
    const EVP_MD *oaep_md;
    const EVP_MD *mgf1;
    const uint8_t *label;
    size_t label_len;
    unsigned int tls_client_version;
    unsigned int tls_negotiated_version;
};

struct ctok_keyspec {
    enum ctok_key_type type;
    int bits;          /* RSA */
    const char *group; /* EC: OpenSSL group name */
};

/* ---- context: one per provider instance or tool process ---- */
ctok_ctx *ctok_ctx_new(OSSL_LIB_CTX *libctx, const char *propq, const char *config_path);
void ctok_ctx_free(ctok_ctx *ctx);
OSSL_LIB_CTX *ctok_ctx_libctx(const ctok_ctx *ctx);
const char *ctok_ctx_propq(const ctok_ctx *ctx);
/* The config path in force (ctok_config_pick with option config_path). */
const char *ctok_ctx_config_path(const ctok_ctx *ctx);
/*
 * Where the tokens config comes from, one rule for every front door: the tool's --config
 * (option), else $CTOK_CONFIG, else the provider's ctok-config parameter (param), else
 * /etc/ctok/tokens.json. The environment wins over openssl.cnf, as with pkcs11-provider: a
 * user's export CTOK_CONFIG=... works beside a system-wide ctok.cnf. *from (may be NULL)
 * says which of them it was.
 */
enum ctok_config_from {
    CTOK_CONFIG_FROM_OPTION,
    CTOK_CONFIG_FROM_ENV,
    CTOK_CONFIG_FROM_PARAM,
    CTOK_CONFIG_FROM_DEFAULT
};
const char *ctok_config_pick(const char *option, const char *param, enum ctok_config_from *from);
/* "--config", "CTOK_CONFIG", "ctok-config parameter", "default". */
const char *ctok_config_from_name(enum ctok_config_from from);
/* Loads the configuration on first use; later calls are free. */
int ctok_ctx_load(ctok_ctx *ctx);
size_t ctok_ctx_token_count(ctok_ctx *ctx);
ctok_token *ctok_ctx_token_at(ctok_ctx *ctx, size_t i);
ctok_token *ctok_ctx_token_find(ctok_ctx *ctx, const char *name, const char *id);
/* Raises the error for a token name (or id) the config does not have: CTOK_R_UNKNOWN_TOKEN,
 * or CTOK_R_CONFIG when there is no config file at all. */
void ctok_ctx_unknown_token(ctok_ctx *ctx, const char *name);

/*
 * Adds a token to the config file: under a lock, re-reading the file, atomically. The
 * backend is initialized with code (a new keystore) or checked against it (an existing one).
 */
int ctok_config_add_token(ctok_ctx *ctx, json_t *entry, const char *code, size_t len);
/*
 * Changes one token's config entry: under the lock, on a fresh read of the file; edit gets
 * the whole config and a copy of the entry to change (emptied: the token is deleted) and
 * returns 1 to write it. The result must be a valid token entry.
 */
typedef int (*ctok_config_edit_fn)(json_t *config, json_t *entry, void *arg);
/*
 * Authorized on the entry as it is in the file: the caller's rule (activate for storing a code,
 * deactivate for forgetting it, modify, delete), and whatever the change itself needs
 * whoever asks: 'delete' to delete the token, 'modify' to change anything but "auth".
 */
int ctok_config_edit(ctok_ctx *ctx, const char *name, enum ctok_perm rule, ctok_config_edit_fn edit,
                     void *arg);
/* The master key file for stored codes: the config's, else master.key beside the config;
 * created (32 random bytes, mode 0600) if absent. Sets "master_key" in config if missing. */
int ctok_master_key_ensure(ctok_ctx *ctx, json_t *config, uint8_t key[32]);
/*
 * Reads an auth code (PIN, PUK, password) from a file, as the provider does: the file must
 * be ours or root's, readable by nobody else, no symbolic link, in folders nobody else can
 * write; one trailing line ending is dropped. what names it in errors ("token 'x': auth
 * file"). buf gets a NUL-terminated code of *len < bufsz bytes.
 */
int ctok_auth_file_read(const char *what, const char *path, char *buf, size_t bufsz, size_t *len);
/*
 * The one terminal prompt, the provider's and the tool's: OpenSSL's UI (UI_OpenSSL()) on
 * /dev/tty, no echo, and echo restored when Ctrl-C interrupts it. repeat (or NULL): a second
 * prompt whose answer must match. CTOK_TTY_READ 1, CTOK_TTY_NONE (no terminal, or nothing was
 * read), CTOK_TTY_MISMATCH, CTOK_TTY_INTERRUPTED (Ctrl-C); buf is cleansed unless 1. No error
 * is raised: the caller knows what was asked for.
 */
enum { CTOK_TTY_NONE = 0, CTOK_TTY_READ = 1, CTOK_TTY_MISMATCH = -1, CTOK_TTY_INTERRUPTED = -2 };
int ctok_tty_read(const char *prompt, const char *repeat, char *buf, size_t bufsz, size_t *len);
/* base64(nonce || AES-256-GCM(code) || tag), bound to the token id. */
char *ctok_code_encrypt(const uint8_t key[32], const char *token_id, const char *code, size_t len);
/* Forgets the token's activation in this process (and zeroizes the code); rule deactivate. */
int ctok_token_deactivate(ctok_token *tok);
/* A description of the token's auth source: "file /p", "env VAR", "stored", "prompt". */
const char *ctok_token_auth_kind(const ctok_token *tok);
/*
 * Can the token's configured auth source give a code now, without prompting and without
 * logging in? 1: it can (src says which: "auth file /p", ...; the code read is zeroized);
 * 2: nothing to read (the source is a prompt, or the token needs no code); 0: it cannot,
 * with the cause raised (file missing or too open, variable unset, stored code that does
 * not decrypt under the master key).
 */
int ctok_token_auth_check(ctok_token *tok, char *src, size_t srcsz);
/*
 * The token's audit trail (rule view): each line of its "audit_file" that is a JSON object,
 * in order, to cb (borrowed: cb takes a reference to keep it; 1 to go on, 0 to stop: a failure).
 * The file is opened as any file ctok trusts (not a secret): no symbolic link, nobody else's. Lines
 * that are not a JSON object (invalid JSON or UTF-8, NUL bytes, over 64 KiB) are skipped and
 * counted in *malformed. No audit file configured: CTOK_R_CONFIG "token 'x' has no audit
 * file (...)". 1, or 0 with the error raised.
 */
typedef int (*ctok_audit_cb)(json_t *entry, void *arg);
int ctok_token_audit_read(ctok_token *tok, ctok_audit_cb cb, void *arg, size_t *malformed);
/* The operations audit lines name ("activate", "key_generate", ...), NULL-terminated. */
extern const char *const ctok_audit_operations[];
/* The token's config entry as loaded (borrowed; NULL if unknown or rule view is off). */
const json_t *ctok_token_config(const ctok_token *tok);
/* Replaces the token's auth code (PKCS#11 C_SetPIN; a keystore is re-protected); rule modify. */
int ctok_token_change_code(ctok_token *tok, const char *old, size_t old_len, const char *code,
                           size_t len);

/* A new random token id (UUID v4 text, 37 bytes with the NUL). */
int ctok_new_id(char out[37]);

/* A `ctok token create` option of a token type, and the config key it sets. */
enum ctok_field_kind {
    CTOK_FIELD_STRING,
    CTOK_FIELD_INT,
    CTOK_FIELD_PATH, /* made absolute */
    CTOK_FIELD_PATHS /* a list of paths, each made absolute; the option may be repeated */
};
struct ctok_tool_field {
    const char *option; /* "region": the tool takes --region VALUE */
    const char *key;    /* the config key it sets ("region") */
    enum ctok_field_kind kind;
    int required;
    const char *help; /* one line for the tool's usage */
    const char *def;  /* written when the option is not given (NULL: nothing) */
};

/* The token types this program offers, for messages: "pkcs12, pkcs11". */
const char *ctok_type_names(void);
/* The `token create` options of a type ({NULL}-terminated), or NULL for an unknown type. */
const struct ctok_tool_field *ctok_type_fields(const char *type);
/*
 * Discovery for the tool, as a JSON array, or NULL with the error raised. ctok_discover:
 * what the backend of a token entry that is not (yet) configured offers, the entry holding
 * "type" and the fields discovery needs (PKCS#11: "library": every slot with a token: id,
 * index, description, token_label, manufacturer, model, serial, flags).
 * ctok_discover_registered: what the system has registered for a type (NULL: for every type)
 * [{"name", "path", "slots"[, "error"]}] (PKCS#11: p11-kit's modules, each with its slots).
 */
json_t *ctok_discover(ctok_ctx *ctx, const json_t *entry);
/* Does a token made from this entry need an auth code to log in (1), or does it sign in with
 * what the entry names, an instance role (0)? -1: the entry is not valid (error raised). */
int ctok_entry_needs_code(ctok_ctx *ctx, const json_t *entry);
/* What a configured token's backend offers (its library's slots; a key service's aliases);
 * rule view. The caller activates the token first if its backend needs that. */
json_t *ctok_token_discover(ctok_token *tok);
/* The mechanisms the token offers (rule view; a type without a list: an error naming it). */
json_t *ctok_token_mechanisms(ctok_token *tok);
/* A kind of key a token type can hold, whatever keys a token shows (a cloud token before its
 * login): bits from min_bits to max_bits (RSA: modulus; EC: the curves' sizes), usage CTOK_USE_*,
 * and for RSA the paddings it decrypts with (1u << RSA_PKCS1_PADDING, RSA_PKCS1_OAEP_PADDING). */
struct ctok_key_kind {
    enum ctok_key_type type;
    int min_bits, max_bits;
    unsigned int usage;
    unsigned int decrypt_pads;
    unsigned int flags; /* CTOK_KIND_* */
};
/* An EC key of this kind signs only with its curve's hash (P-256 SHA-256, P-384 SHA-384, P-521
 * SHA-512), as both clouds do (kms/sigcheck.h). */
#define CTOK_KIND_CURVE_HASH 1u
/* The kinds of key the token's type can hold, ending with type CTOK_KT_NONE; NULL when the type
 * does not say (its mechanism list or its keys do). No I/O. */
const struct ctok_key_kind *ctok_token_key_kinds(const ctok_token *tok);
/* The token's pkcs11: URI (malloc'd; free()), or NULL without an error when its type has none
 * (NULL with an error raised when it cannot be opened). */
char *ctok_token_pkcs11_uri(ctok_token *tok);
json_t *ctok_discover_registered(const char *type);

/* ---- tokens ---- */
const char *ctok_token_name(const ctok_token *tok);
const char *ctok_token_id(const ctok_token *tok);
const char *ctok_token_type(const ctok_token *tok);
int ctok_token_allow_export(const ctok_token *tok);
int ctok_token_explicit_ecc(const ctok_token *tok);
/*
 * Authorization: EJBCA's rules are checked by the token layer itself, in every operation that
 * needs one (enumerate: view; key sign/decrypt/derive: use; login_code: activate; deactivate;
 * put_cert, change_code, config edits: modify; deleting: delete; generate: keygen; remove:
 * keyremove; key test: keytest), so no front door can skip one. ctok_token_permits only asks.
 * ctok_token_authorize raises CTOK_R_PERMISSION "token 'T'[, object 'O']: rule 'R' is not
 * permitted (operation)"; a front door calls it only to refuse before prompting or logging in.
 */
int ctok_token_permits(const ctok_token *tok, enum ctok_perm perm);
int ctok_token_authorize(const ctok_token *tok, enum ctok_perm perm, const char *operation,
                         const char *object);
/* The rule's name in the config ("view", "use", ...). */
const char *ctok_perm_name(enum ctok_perm perm);
ctok_ctx *ctok_token_ctx(const ctok_token *tok);
/* Opens the backend (reads the keystore, no auth code needed). */
int ctok_token_open(ctok_token *tok);
int ctok_token_is_active(const ctok_token *tok);
/* Does activation take an auth code? 0: the token signs in with what its configuration names
 * (an instance role); no auth source is read, nobody is prompted, no code is kept. */
int ctok_token_needs_code(const ctok_token *tok);
/* Activates the token if it is not active: pin, then config auth, then ui. */
int ctok_token_login(ctok_token *tok, const struct ctok_pin *pin, const struct ctok_ui *ui);
/* Activates with exactly this code (tool: token activate); rule activate. */
int ctok_token_login_code(ctok_token *tok, const char *code, size_t len);
/*
 * The same, saying where the code came from ("auth file /p", for errors); code NULL for a
 * token that needs none (ctok_token_needs_code). typed: the user
 * typed it at the tool's prompt to activate the token, the one source that may spend a PIN's
 * final try (after a warning); automatic sources (file, variable, stored, URI) never do.
 */
int ctok_token_activate_code(ctok_token *tok, const char *code, size_t len, const char *src,
                             int typed);
/*
 * Is the token active with exactly this code, the one it was activated with and keeps? 1 yes;
 * 0 another code, not active, or no code kept. The token is not asked (no try is spent);
 * constant time in the code. For a front door whose own login state outlives the token
 * layer's deactivation (ctok-p11.so: a token its rules keep active at C_Logout).
 */
int ctok_token_code_is(ctok_token *tok, const char *code, size_t len);
/* Every object of the token; rule view. */
int ctok_token_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg);
/*
 * For a front door that outlives other processes' changes (ctok-p11.so): 1 if the token may
 * show other objects now (a keystore file another process rewrote, which the next
 * enumeration reads again; a PKCS#11 token's objects, read again from the token), 0 if not or
 * if the type cannot tell cheaply (a key service keeps its cache rules: no network call).
 */
int ctok_token_refresh(ctok_token *tok);
/* Key handle for the private key with this id; the token must be active. Its operations
 * check their rule (use, keytest) each time. One handle per key and process, cached until
 * keys are generated or removed, the token is deactivated or a PKCS#11 token reconnects. */
ctok_key *ctok_token_key(ctok_token *tok, const uint8_t *id, size_t id_len);
int ctok_token_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec);
/* Removes the key and its certificates; note (may be NULL) gets what the user should know
 * of it ("deletion scheduled for ..."), or "". */
int ctok_token_remove(ctok_token *tok, const char *alias, char *note, size_t notelen);
/* Stores a certificate labelled alias (rule modify); refused if one has that label. */
int ctok_token_put_cert(ctok_token *tok, const char *alias, X509 *cert);
/* Renewal: cert takes the label (and id) of the certificates labelled alias, which go in the
 * same write; if it fails they stay (rule modify). */
int ctok_token_replace_cert(ctok_token *tok, const char *alias, X509 *cert);
/* Does the token keep certificate objects of its own (0: its certificates are files bound to
 * its keys, store/certbind.c, one per key)? */
int ctok_token_keeps_certs(const ctok_token *tok);
/* Removes the certificates labelled label, never a key (rule modify). */
int ctok_token_remove_cert(ctok_token *tok, const char *label);
/* Relabels the certificates labelled old (type CTOK_OBJ_CERT; rule modify) or the key named old
 * with every object of its id (CTOK_OBJ_PRIVATE; rule modify), ids kept. */
int ctok_token_rename(ctok_token *tok, unsigned int type, const char *old, const char *new_label);
/* Sets a new user PIN with the PUK (C_UnlockPIN, else SO login and C_InitPIN). */
int ctok_token_unlock_pin(ctok_token *tok, const char *puk, size_t puk_len, const char *pin,
                          size_t pin_len);

/* ---- key handles: refcounted, shareable between threads ---- */
ctok_key *ctok_key_ref(ctok_key *key);
void ctok_key_unref(ctok_key *key);
ctok_token *ctok_key_token(const ctok_key *key);
const char *ctok_key_label(const ctok_key *key);
const uint8_t *ctok_key_id(const ctok_key *key, size_t *len);
enum ctok_key_type ctok_key_type(const ctok_key *key);
/* The key may need the whole message to sign (a PKCS#11 key allowed only hash-and-sign
 * mechanisms): a DigestSign keeps it beside its digest and passes it as msg/msglen. */
#define CTOK_KEY_WANTS_MESSAGE 1u
unsigned int ctok_key_flags(const ctok_key *key);
/* What the key's token lets it do (PKCS#11 CKA_SIGN / CKA_DECRYPT / CKA_DERIVE of the private
 * key, an AWS KMS KeyUsage, Azure key_ops); CTOK_USE_ALL when the token does not restrict it. */
#define CTOK_USE_SIGN 1u
#define CTOK_USE_DECRYPT 2u
#define CTOK_USE_DERIVE 4u
#define CTOK_USE_ALL (CTOK_USE_SIGN | CTOK_USE_DECRYPT | CTOK_USE_DERIVE)
unsigned int ctok_key_usage(const ctok_key *key);
/* The mechanisms the key's token allows it (a PKCS#11 key's own CKA_ALLOWED_MECHANISMS, CKM_*
 * values), *n of them; NULL when the token does not restrict them. Lives as long as the key. */
const unsigned long *ctok_key_allowed_mechs(const ctok_key *key, size_t *n);
/* Public key, in the context's library context; never holds private parts. */
EVP_PKEY *ctok_key_pub(const ctok_key *key);
int ctok_key_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs, size_t tbslen,
                  uint8_t *sig, size_t *siglen);
/* The same, with an ECDSA signature as r || s (PKCS#11's form; each half as long as the group
 * order) instead of DER; other key types sign as ctok_key_sign does. */
int ctok_key_sign_raw(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                      size_t tbslen, uint8_t *sig, size_t *siglen);
int ctok_key_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                     size_t inlen, uint8_t *out, size_t *outlen);
/* Key agreement: the shared secret, truncated to *len bytes when it is longer (as OpenSSL's
 * ECDH does); *len becomes the bytes written. */
#define CTOK_MAX_SECRET 132 /* twice P-521's 66 bytes: room for any curve ctok carries */
int ctok_key_derive(ctok_key *key, EVP_PKEY *peer, uint8_t *secret, size_t *len);
/* ANSI X9.63 KDF (digest md) over a shared secret z, info its SharedInfo (none when infolen
 * is 0), into out: libctx's X963KDF, in software. The one KDF that the provider's key exchange
 * and ctok-p11.so's ECDH1 derivation apply over ctok_key_derive's secret. */
int ctok_x963_kdf(OSSL_LIB_CTX *libctx, const char *propq, const char *md, const uint8_t *z,
                  size_t zlen, const uint8_t *info, size_t infolen, uint8_t *out, size_t outlen);
/* Does the token's type do key agreement at all (ctok_key_derive)? For front doors that list
 * what a token offers; the key's own type still decides. */
int ctok_token_derives(const ctok_token *tok);
/* EJBCA's key test (rule keytest, not use): signs a random message with the key and verifies
 * it with the public key. 1 passed, 0 the signature does not verify, -1 refused. */
int ctok_key_test(ctok_key *key);
/* The private key itself, only for tokens that allow export (else an error). */
EVP_PKEY *ctok_key_export_private(ctok_key *key);

/* ---- helpers shared by the front doors ---- */
const char *ctok_key_type_name(enum ctok_key_type t); /* "RSA", "RSA-PSS", "EC", "ED25519" */
enum ctok_key_type ctok_key_type_of(const EVP_PKEY *pkey);
/* id of a public key: SHA-1 of the subjectPublicKey bits (RFC 5280 key identifier). */
int ctok_pub_id(const EVP_PKEY *pub, uint8_t id[20]);
int ctok_keyspec_parse(const char *s, struct ctok_keyspec *spec);
/* Every key spec ctok_keyspec_parse accepts, as one line for help and errors. */
const char *ctok_keyspec_accepted(void);
void ctok_hex(const uint8_t *in, size_t len, char *out); /* out: 2*len+1 */

/* ---- ctok: URIs and certificate-first lookup ---- */
struct ctok_uri {
    char *token;    /* token= */
    char *token_id; /* token-id= */
    char *object;   /* object= */
    uint8_t id[CTOK_MAX_ID];
    size_t id_len;
    int has_id;
    unsigned int types; /* CTOK_OBJ_* from type=, CTOK_OBJ_ANY when absent */
    char *pin_value;
    char *pin_source;
    void *p11; /* a pkcs11: URI (P11KitUri): its token attributes select PKCS#11 tokens */
};
/*
 * Parses a ctok: URI, or an RFC 7512 pkcs11: URI resolved against the PKCS#11 tokens ctok
 * knows (token, manufacturer, model, serial, object, id, type, pin-value, pin-source).
 * Raises CTOK_R_BAD_URI saying what is wrong.
 */
int ctok_uri_parse(const char *s, struct ctok_uri *u);
void ctok_uri_clear(struct ctok_uri *u);
/*
 * The ctok: URI naming an object: token=, object= (label; NULL: none), id= (id_len 0: none)
 * and type= (a single CTOK_OBJ_*; 0: none), values percent-encoded. NULL on allocation
 * failure; OPENSSL_free it.
 */
char *ctok_uri_make(const char *token, const char *label, const uint8_t *id, size_t id_len,
                    unsigned int type);
/* The same naming the token by its unique id (token-id=): what key references hold, so that
 * renaming the token does not break them. */
char *ctok_uri_make_by_token_id(const char *token_id, const char *label, unsigned int type);
/*
 * The URI as an error, trace or audit line may show it (ctok: or pkcs11:): the values of
 * pin-value, pin-source (in the path or the query, however encoded) and every attribute
 * without '=' are replaced by "...". Cut to outlen - 1 characters.
 */
void ctok_uri_redact(const char *uri, char *out, size_t outlen);

/* An object found by ctok_find: owns its copies. */
struct ctok_found {
    ctok_token *tok;
    enum ctok_obj_type type;
    char *label;
    uint8_t id[CTOK_MAX_ID];
    size_t id_len;
    enum ctok_key_type key_type;
    X509 *cert;
    EVP_PKEY *pub;
};
/*
 * Every object the URI names, restricted to types, certificates first. A private key
 * matches by its own label or id, or by the id of a matching certificate
 * (certificate-first: object=<certificate label>;type=private finds the certificate's key).
 * Raises CTOK_R_UNKNOWN_TOKEN for a token= that is not configured.
 */
/*
 * Tokens whose objects of the wanted types are hidden until login (private keys on most
 * PKCS#11 tokens, private certificates, encrypted safes) are logged in only where the
 * search needs them: the token is named, a certificate matching the URI lives there
 * (certificate-first), the URI filters nothing, or nothing matched before login. The
 * code comes from the URI's pin, the token's auth config, or ui.
 */
int ctok_find(ctok_ctx *ctx, const struct ctok_uri *u, unsigned int types, const struct ctok_ui *ui,
              struct ctok_found **out, size_t *n);
/* What of want (CTOK_OBJ_*) the token does not show until it is logged in (its backend's and
 * bound certificates' rule), whether or not it is now. Opens the token (0 if it cannot). */
unsigned int ctok_token_hidden(ctok_token *tok, unsigned int want);
/*
 * Flags or-ed into ctok_find's types. CTOK_FIND_USE: only tokens that permit 'use' are
 * opened or enumerated (a named one that does not is an error). CTOK_FIND_NO_LOGIN: no
 * token is logged in (and no code read); if nothing matched and a token that hides objects
 * until login may hold them, ctok_find returns 2. Both serve key references, whose content
 * the application may have been handed by anybody.
 */
#define CTOK_FIND_USE 0x100
#define CTOK_FIND_NO_LOGIN 0x200
/*
 * OSSL_STORE search criteria (openssl storeutl -subject, -issuer with -serial, -alias,
 * -fingerprint), all given ones must hold. Borrowed. subject matches certificates with that
 * subject and the keys they certify (same token and id); issuer, serial and fingerprint match
 * certificates only, so a search by them never logs in where certificates are public; alias
 * matches any object by its own label. Names compare as X509_NAME_cmp, serials as integers,
 * fingerprints as X509_digest with digest (required with a fingerprint).
 */
struct ctok_criteria {
    const X509_NAME *subject;
    const X509_NAME *issuer;
    const ASN1_INTEGER *serial;
    const char *alias;
    const uint8_t *fingerprint;
    size_t fingerprint_len;
    const EVP_MD *digest;
};
/* ctok_find narrowed by criteria (NULL: none). */
int ctok_find_where(ctok_ctx *ctx, const struct ctok_uri *u, const struct ctok_criteria *crit,
                    unsigned int types, const struct ctok_ui *ui, struct ctok_found **out,
                    size_t *n);
void ctok_found_free(struct ctok_found *f, size_t n);

/* ---- key-reference PEM files ---- */
#define CTOK_KEYREF_PEM_LABEL "CTOK URI"
/* pkcs11-provider's key references: DER SEQUENCE { desc VisibleString, uri UTF8String } */
#define CTOK_P11PROV_PEM_LABEL "PKCS#11 PROVIDER URI"
/* The URI a key-reference DER body (ctok's or pkcs11-provider's, whose URI must be a pkcs11:
 * URI) holds (OPENSSL_free it), or NULL if it is not one. */
char *ctok_keyref_decode(const uint8_t *der, size_t len);
/*
 * Parses a key reference's URI: as ctok_uri_parse, but a URI with pin-value or pin-source
 * is refused (CTOK_R_BAD_URI): a reference is no secret, and whoever hands an application
 * a file must not choose the code sent to a token or a file ctok reads. So is a pkcs11: URI
 * with module-path: nor the library a process loads (only p11-kit's registered modules).
 */
int ctok_keyref_uri_parse(const char *uri, struct ctok_uri *u);
/* Writes the key-reference PEM for uri (refused if ctok_keyref_uri_parse refuses it). */
int ctok_keyref_write_pem(BIO *out, const char *uri);

/* Debug tracing (CTOK_DEBUG=1 or provider parameter ctok-debug). */
extern int ctok_debug_on;
void ctok_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define CTOK_DBG(...)                                                                              \
    do {                                                                                           \
        if (ctok_debug_on)                                                                         \
            ctok_debug(__VA_ARGS__);                                                               \
    } while (0)

#endif

/* Provider glue shared by the operation files. Knows OSSL_PARAM; knows no backend. */
#ifndef CTOK_PROV_H
#define CTOK_PROV_H

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <pthread.h>

#include "../store/token.h"

/* Operation names only ctok's keymgmt asks for: ordinary keys never reach them. */
#define CTOK_NAME_SIG_RSA "CTOK-RSA"
#define CTOK_NAME_SIG_ECDSA "CTOK-ECDSA"
#define CTOK_NAME_SIG_ED25519 "CTOK-ED25519"
#define CTOK_NAME_CIPHER_RSA "CTOK-RSA"
#define CTOK_NAME_KEX_ECDH "CTOK-ECDH"

struct ctok_provctx {
    const OSSL_CORE_HANDLE *handle;
    const OSSL_DISPATCH *core_in;
    /*
     * A child of the application's library context, made on first use: the providers the
     * application has, ctok excluded by the property query (propq) of every inner fetch.
     * Pass-through keys live there. Use ctok_prov_child().
     */
    OSSL_LIB_CTX *child;
    char propq[80]; /* "provider!=<our name>": inner fetches never find ctok again */
    char *config_path;
    pthread_mutex_t lock;
    ctok_ctx *tokens; /* created on first use: no config read until a ctok key is used */
    OSSL_LIB_CTX *bio_libctx;
    EVP_KEYMGMT *km[5];
    /* digests fetched once: a fetch per signature cost ~2% of an HSM ECDSA signature; added
     * under lock, read without (ctok_prov_md) */
    struct {
        char name[32];
        EVP_MD *md;
    } mds[16];
    int n_mds;
};

/* keydata of ctok's keymgmt: a pass-through key (tok == NULL) or a token key */
struct ctok_pkey {
    struct ctok_provctx *pctx;
    enum ctok_key_type type;
    EVP_PKEY *pkey; /* the whole ordinary key, or the token key's public key; child ctx */
    ctok_key *tok;
    int has; /* OSSL_KEYMGMT_SELECT_* bits present */
};

OSSL_LIB_CTX *ctok_prov_child(struct ctok_provctx *pctx);
/* A digest from the child context, fetched once per name; a new reference, or NULL. */
EVP_MD *ctok_prov_md(struct ctok_provctx *pctx, const char *name);
ctok_ctx *ctok_prov_tokens(struct ctok_provctx *pctx);
EVP_KEYMGMT *ctok_prov_keymgmt(struct ctok_provctx *pctx, enum ctok_key_type t);
struct ctok_pkey *ctok_pkey_new(struct ctok_provctx *pctx, enum ctok_key_type t);
struct ctok_pkey *ctok_pkey_from_token(struct ctok_provctx *pctx, ctok_key *key);
struct ctok_pkey *ctok_pkey_copy(const struct ctok_pkey *k);
void ctok_pkey_free(struct ctok_pkey *k);
/* Maximum signature (or decryption output) size of a key. */
size_t ctok_pkey_max_size(const struct ctok_pkey *k);
/* A passphrase callback as the token layer's ui. */
struct ctok_pw_ui {
    OSSL_PASSPHRASE_CALLBACK *cb;
    void *arg;
};
int ctok_pw_get_code(void *arg, const char *info, char *buf, size_t bufsz, size_t *len);
/* The token key for found private key object f: activates its token (URI pin, config, or
 * the passphrase callback) and checks the 'use' rule. */
struct ctok_pkey *ctok_prov_private_key(struct ctok_provctx *pctx, const struct ctok_uri *u,
                                        const struct ctok_found *f, OSSL_PASSPHRASE_CALLBACK *pw_cb,
                                        void *pw_cbarg);
/* Hands key k to OpenSSL as an object reference (STORE loader, decoder callbacks). */
int ctok_prov_emit_key(struct ctok_pkey *k, OSSL_CALLBACK *cb, void *cbarg);

extern const OSSL_DISPATCH ctok_rsa_keymgmt_functions[];
extern const OSSL_DISPATCH ctok_rsapss_keymgmt_functions[];
extern const OSSL_DISPATCH ctok_ec_keymgmt_functions[];
extern const OSSL_DISPATCH ctok_ed25519_keymgmt_functions[];
extern const OSSL_DISPATCH ctok_rsa_signature_functions[];
extern const OSSL_DISPATCH ctok_ecdsa_signature_functions[];
extern const OSSL_DISPATCH ctok_ed25519_signature_functions[];
extern const OSSL_DISPATCH ctok_rsa_asym_cipher_functions[];
extern const OSSL_DISPATCH ctok_ecdh_keyexch_functions[];
extern const OSSL_DISPATCH ctok_store_functions[];
extern const OSSL_DISPATCH ctok_pem_decoder_functions[];
extern const OSSL_DISPATCH ctok_rsa_uri_decoder_functions[];
extern const OSSL_DISPATCH ctok_rsapss_uri_decoder_functions[];
extern const OSSL_DISPATCH ctok_ec_uri_decoder_functions[];
extern const OSSL_DISPATCH ctok_ed25519_uri_decoder_functions[];
extern const OSSL_DISPATCH ctok_text_encoder_functions[]; /* encoder.c */
/*
 * Parameters from the application. An OSSL_PARAM string is data_size bytes: the terminating
 * NUL is not part of it and may be missing, so nothing here reads past data_size (no
 * strcmp/atoi on p->data). A wrong type, or a value that does not fit, is refused with an
 * error naming the parameter.
 */
/* A UTF8 string parameter (UTF8_STRING or UTF8_PTR), copied NUL-terminated into buf. */
int ctok_param_utf8(const OSSL_PARAM *p, char *buf, size_t bufsz);
struct ctok_param_name {
    const char *name;
    int value;
};
/* An integer parameter that may also be given as a name from names (case-insensitive), or,
 * with numeric, as a decimal string (PSS salt length). */
int ctok_param_int_or_name(const OSSL_PARAM *p, const struct ctok_param_name *names, size_t n,
                           int numeric, int *out);

/* libctx with the core's BIO methods, for decoders (made on first use) */
OSSL_LIB_CTX *ctok_prov_bio_libctx(struct ctok_provctx *pctx);
/* An object label as one line of an error or text may show it: control characters as '?',
 * cut to outlen - 1. */
void ctok_prov_shown_label(const char *label, char *out, size_t outlen);

#endif

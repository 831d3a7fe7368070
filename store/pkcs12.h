/* Soft PKCS#12 tokens: what the reading side (pkcs12.c) and the writing side
 * (pkcs12_write.c) share. Internal to the backend. */
#ifndef CTOK_PKCS12_H
#define CTOK_PKCS12_H

#include <sys/stat.h>
#include <openssl/pkcs12.h>

#include "backend.h"

#define P12_ITER 2048

struct p12_entry {
    int is_key;
    char *label;
    uint8_t id[CTOK_MAX_ID];
    size_t id_len;
    PKCS12_SAFEBAG *bag;
    X509 *cert;
    EVP_PKEY *pub;  /* public-only */
    EVP_PKEY *priv; /* after login */
    enum ctok_key_type kt;
};

struct p12 {
    char *path;
    pthread_mutex_t lock;
    PKCS12 *p12;
    struct p12_entry *e;
    size_t n, cap;
    int encrypted_safes; /* certificates in encrypted safes: read at login */
    struct stat seen;    /* the file as it was when read (have_seen): p12_refresh */
    int have_seen;
};

#define P12(tok) ((struct p12 *)ctok_token_be(tok))

/* pkcs12.c */
void p12_entries_clear(struct p12 *ks);
EVP_PKEY *p12_public_of(ctok_token *tok, EVP_PKEY *k);
struct p12_entry *p12_entry_add(struct p12 *ks);
/* Reads the keystore: structure, certificates, key bag attributes. Lock held. */
int p12_read_keystore(ctok_token *tok);
/* 1 accepted, 0 rejected (error raised), -1 other failure. Lock held. */
int p12_login_locked(ctok_token *tok, const char *code, size_t len);
/* After login: every certificate and key readable, for listings. Lock held. */
void p12_reveal_all(ctok_token *tok);
/* 1 decrypted, 0 wrong code, -1 damaged. */
int p12_decrypt_key(ctok_token *tok, struct p12_entry *e, const char *code, size_t len);

/* pkcs12_write.c */
int p12_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec);
int p12_remove(ctok_token *tok, const char *alias, char *note, size_t notelen);
int p12_put_cert(ctok_token *tok, const char *alias, X509 *cert, int replace);
int p12_remove_cert(ctok_token *tok, const char *label);
int p12_rename(ctok_token *tok, unsigned int type, const char *old, const char *new_label);
int p12_change_code(ctok_token *tok, const char *old, size_t old_len, const char *code, size_t len);
int p12_create(ctok_token *tok, const char *code, size_t len);

#endif

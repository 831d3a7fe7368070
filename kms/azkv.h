/*
 * Inside the azurekv backend (kms/azure_kv.c: configuration, login and the binding, the table;
 * kms/azure_objects.c: the key and certificate caches, listing, lookup, key handles;
 * kms/azure_keyops.c: signing, decryption, key management, discovery): the token's state and
 * what the files call of each other. Not for other code: the backend is ctok_azurekv_backend.
 */
#ifndef CTOK_KMS_AZKV_H
#define CTOK_KMS_AZKV_H

#include <pthread.h>

#include "../store/backend.h"
#include "azure.h"
#include "azure_parse.h"

#define REF_MAX (AZ_NAME_MAX + AZ_VERSION_MAX) /* "name/version" */

/* A key bundle as the vault described it, under the reference it was asked by. */
struct kcached {
    struct kcached *next;
    char ref[REF_MAX];
    struct az_key k;
};

/* A vault certificate by name; cert NULL: the vault has none of that name. */
struct ccached {
    struct ccached *next;
    char name[AZ_NAME_MAX];
    X509 *cert;
};

struct az_tok {
    ctok_token *tok;
    json_t *conf;          /* a copy of the entry: the strings of c point into it */
    struct ctok_az_conf c; /* what ctok_az_new gets (certificate: at login) */
    struct ctok_az *az;    /* NULL until made */
    const char *binding;   /* certificate auth: the ctok: URI of key and certificate */
    ctok_key *bkey;        /* certificate auth: the binding key */
    uint8_t *cert_der;     /* certificate auth: the binding certificate */
    int premium;
    pthread_mutex_t lock; /* the caches and az; never held across a call */
    struct kcached *keys;
    struct ccached *certs;
};
#define KT(tok) ((struct az_tok *)ctok_token_be(tok))

/* What a key handle keeps: enough to sign without asking the cache again. */
struct az_keyh {
    char name[AZ_NAME_MAX];
    char version[AZ_VERSION_MAX];
    char object[REF_MAX]; /* errors name it */
    char crv[16];
    unsigned int ops;
};

void ctok_azkv_cache_clear(struct az_tok *kt);
/*
 * The key a reference ("name" or "name/version") names, from the cache or one GET
 * /keys/<name>/[<version>] (error raised naming the key; ctok_err_last_reason() says why).
 * 1 found (out holds its own reference to the public key), -1 failed.
 */
int ctok_azkv_lookup(struct az_tok *kt, const char *ref, struct az_key *out);
/* Forgets every version of a key name and its certificate (removed or made anew). */
void ctok_azkv_cache_drop(struct az_tok *kt, const char *name);
/* Every name of a collection ("keys", "certificates"), paged via nextLink. 1 ok; 0 failed
 * (error raised; ctok_err_last_reason() says why). */
int ctok_azkv_list_names(struct az_tok *kt, const char *coll, char ***v, size_t *n);

/* the backend's operations, as the table names them */
int ctok_azkv_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg);
int ctok_azkv_find(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
                   unsigned int types, ctok_object_cb cb, void *arg);
int ctok_azkv_key_load(ctok_token *tok, ctok_key *key);
void ctok_azkv_key_free(ctok_key *key);
int ctok_azkv_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                   size_t tbslen, uint8_t *sig, size_t *siglen);
int ctok_azkv_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                      size_t inlen, uint8_t *out, size_t *outlen);
int ctok_azkv_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec);
int ctok_azkv_remove(ctok_token *tok, const char *alias, char *note, size_t notelen);
json_t *ctok_azkv_discover(ctok_token *tok);

#endif

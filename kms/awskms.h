/*
 * Inside the awskms backend (kms/aws.c: configuration, login, the public-key cache, listing,
 * lookup, key handles, the table; kms/aws_keyops.c: signing, decryption, key management,
 * discovery): the token's state and what the two files call of each other. Not for other
 * code: the backend is ctok_awskms_backend.
 */
#ifndef CTOK_KMS_AWSKMS_H
#define CTOK_KMS_AWSKMS_H

#include <pthread.h>

#include "../store/backend.h"
#include "aws.h"
#include "aws_parse.h"

#define DEFAULT_DELETION_DAYS 30
#define ORPHAN_DELETION_DAYS 7

/* A key as GetPublicKey described it, and the alias it was first seen under. */
struct cached {
    struct cached *next;
    struct kms_pubkey k;
    char *alias; /* may be NULL (found by key id) */
};

/* alias -> key id: what GetPublicKey("alias/x") answered */
struct alias_map {
    struct alias_map *next;
    char *alias;
    char key_id[KMS_KEY_ID_MAX];
};

struct kms_tok {
    ctok_token *tok;
    struct ctok_aws *aws;
    int use_role;
    int deletion_days;
    pthread_mutex_t lock; /* the caches; never held across a call */
    struct cached *keys;
    struct alias_map *aliases;
};
/* the backend's data of a token: the one place that reaches into the token (backend.h's
 * ctok_token_be / ctok_token_set_be once the token layer has them) */
#define KT(tok) ((struct kms_tok *)ctok_token_be(tok))
#define SET_KT(tok, kt) ctok_token_set_be((tok), (kt))

/* What a key handle keeps: enough to sign without asking the cache again. */
struct kms_keyh {
    char key_id[KMS_KEY_ID_MAX];
    char object[300]; /* "alias/x" or the key id: errors name it */
    char spec[32];
    char usage[32];
    unsigned int algs;
};

/*
 * The key an alias (alias != NULL) or a key id names, from the cache or one GetPublicKey
 * (error raised naming the key). alias_out (may be NULL) gets the alias known for the key.
 * -1: the call failed; its error is raised and ctok_aws_last_error_type() says why.
 */
int ctok_awskms_lookup(struct kms_tok *kt, const char *alias, const char *key_id,
                       struct kms_pubkey *out, char *alias_out, size_t aliaslen);
/* Forgets a key and the aliases that point at it (it was removed). */
void ctok_awskms_cache_drop(struct kms_tok *kt, const char *key_id);
/* Every alias of the account with its key id (ListAliases, paged). */
int ctok_awskms_list_aliases(struct kms_tok *kt, struct kms_alias **v, size_t *n);

/* the backend's operations in aws_keyops.c, as the table names them */
int ctok_awskms_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                     size_t tbslen, uint8_t *sig, size_t *siglen);
int ctok_awskms_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                        size_t inlen, uint8_t *out, size_t *outlen);
int ctok_awskms_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec);
int ctok_awskms_remove(ctok_token *tok, const char *alias, char *note, size_t notelen);
json_t *ctok_awskms_discover(ctok_token *tok);

#endif

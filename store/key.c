/*
 * Key handles: one per (token, key id) and process, cached by the token; their operations
 * check the rule that allows them each time (use, keytest).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "internal.h"

/* The cached handle of key id, referenced, or NULL. tok->lock held. */
static ctok_key *cached_key(ctok_token *tok, const uint8_t *id, size_t id_len)
{
    if (tok->keys_pid != ctok_self_pid())
        return NULL;
    for (size_t i = 0; i < tok->n_keys; i++)
        if (tok->keys[i]->id_len == id_len && memcmp(tok->keys[i]->id, id, id_len) == 0)
            return ctok_key_ref(tok->keys[i]);
    return NULL;
}

/* Takes the cached handles out (all; in a forked child, the parent's). tok->lock held. */
static ctok_key **take_keys(ctok_token *tok, size_t *n)
{
    ctok_key **v = tok->keys;

    *n = tok->n_keys;
    tok->keys = NULL;
    tok->n_keys = tok->cap_keys = 0;
    tok->keys_gen++;
    return v;
}

static void unref_keys(ctok_key **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ctok_key_unref(v[i]);
    free(v);
}

void ctok_token_keys_drop(ctok_token *tok)
{
    ctok_key **v;
    size_t n;

    pthread_mutex_lock(&tok->lock);
    v = take_keys(tok, &n);
    pthread_mutex_unlock(&tok->lock);
    unref_keys(v, n); /* outside the lock: a backend's key_free may take its own */
}

/*
 * Caches key unless a drop happened since gen was read, or another thread cached the same
 * key meanwhile; returns the handle to use (referenced), releasing key if it is not that one.
 */
static ctok_key *cache_key(ctok_token *tok, ctok_key *key, unsigned int gen)
{
    ctok_key *had, **v = NULL, **old = NULL;
    size_t n_old = 0;

    pthread_mutex_lock(&tok->lock);
    if (tok->keys_pid != ctok_self_pid()) {
        old = take_keys(tok, &n_old);
        tok->keys_pid = ctok_self_pid();
        gen = tok->keys_gen; /* the parent's drops do not concern this process */
    }
    had = cached_key(tok, key->id, key->id_len);
    if (had == NULL && gen == tok->keys_gen) {
        if (tok->n_keys == tok->cap_keys &&
            (v = realloc(tok->keys, (tok->cap_keys ? 2 * tok->cap_keys : 8) * sizeof(*v))) !=
                NULL) {
            tok->keys = v;
            tok->cap_keys = tok->cap_keys ? 2 * tok->cap_keys : 8;
        }
        if (tok->n_keys < tok->cap_keys)
            tok->keys[tok->n_keys++] = ctok_key_ref(key);
    }
    pthread_mutex_unlock(&tok->lock);
    unref_keys(old, n_old);
    if (had == NULL)
        return key;
    ctok_key_unref(key);
    return had;
}

/* One handle per (token, key id) in a process: loaded once (one GetPublicKey for a remote key). */
ctok_key *ctok_token_key(ctok_token *tok, const uint8_t *id, size_t id_len)
{
    ctok_key *key;
    char hex[2 * CTOK_MAX_ID + 1];
    unsigned int gen;

    if (id_len > CTOK_MAX_ID || !ctok_token_open(tok))
        return NULL;
    if (!ctok_token_is_active(tok)) {
        ctok_hex(id, id_len, hex);
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s': not active; key %s needs an authentication code",
                 tok->name, hex);
        return NULL;
    }
    pthread_mutex_lock(&tok->lock);
    key = cached_key(tok, id, id_len);
    gen = tok->keys_gen;
    pthread_mutex_unlock(&tok->lock);
    if (key != NULL)
        return key;
    key = calloc(1, sizeof(*key));
    if (key == NULL)
        return NULL;
    key->refs = 1;
    key->tok = tok;
    memcpy(key->id, id, id_len);
    key->id_len = id_len;
    key->usage = CTOK_USE_ALL;
    /* the backend fills in label, type, public key and its own handle; no token lock held */
    if (!tok->be->key_load(tok, key) || (key->label == NULL && (key->label = strdup("")) == NULL)) {
        ctok_key_unref(key);
        return NULL;
    }
    CTOK_DBG("token '%s': key '%s' loaded", tok->name, key->label);
    return cache_key(tok, key, gen);
}

ctok_key *ctok_key_ref(ctok_key *key)
{
    __atomic_add_fetch(&key->refs, 1, __ATOMIC_RELAXED);
    return key;
}

void ctok_key_unref(ctok_key *key)
{
    if (key == NULL || __atomic_sub_fetch(&key->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    if (key->be_data != NULL)
        key->tok->be->key_free(key);
    EVP_PKEY_free(key->pub);
    free(key->label);
    free(key);
}

ctok_token *ctok_key_token(const ctok_key *key)
{
    return key->tok;
}

const char *ctok_key_label(const ctok_key *key)
{
    return key->label;
}

const uint8_t *ctok_key_id(const ctok_key *key, size_t *len)
{
    *len = key->id_len;
    return key->id;
}

enum ctok_key_type ctok_key_type(const ctok_key *key)
{
    return key->type;
}

unsigned int ctok_key_flags(const ctok_key *key)
{
    return key->flags;
}

unsigned int ctok_key_usage(const ctok_key *key)
{
    return key->usage;
}

const unsigned long *ctok_key_allowed_mechs(const ctok_key *key, size_t *n)
{
    *n = key->allowed != NULL ? key->n_allowed : 0;
    return key->allowed;
}

EVP_PKEY *ctok_key_pub(const ctok_key *key)
{
    return key->pub;
}

/* Room for an ECDSA signature in either form: DER of P-521's (139 bytes) and r || s. */
#define ECDSA_MAX 160

/*
 * The backend's ECDSA signature in tmp, converted to the form asked for (rs: r || s, else
 * DER) into sig: the one conversion, whichever form the backend gives (store/backend.h).
 */
static int ecdsa_form(ctok_key *key, int rs, const uint8_t *tmp, size_t len, uint8_t *sig,
                      size_t *siglen)
{
    size_t half = key->pub != NULL ? ((size_t)EVP_PKEY_get_bits(key->pub) + 7) / 8 : 0;
    int ok;

    if (!rs) {
        ok = ctok_ecdsa_rs_to_der(tmp, len, sig, siglen);
    } else {
        ok = half > 0 && 2 * half <= *siglen && ctok_ecdsa_der_to_rs(tmp, len, sig, half);
        if (ok)
            *siglen = 2 * half;
    }
    if (!ok)
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s', key '%s': the %zu-byte ECDSA signature the token made is not %s, "
                 "or does not fit in %zu bytes",
                 key->tok->name, key->label, len, key->tok->be->sign_rs ? "r || s" : "DER",
                 *siglen);
    return ok;
}

/* Signs with the backend; the caller has checked the rule that allows it. */
static int key_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                    size_t tbslen, uint8_t *sig, size_t *siglen, int rs)
{
    const struct ctok_backend *be = key->tok->be;
    /* read before the signature, while the token's line is in the cache (a token's signature
     * leaves little of ctok's there) */
    int audit = key->tok->audit_use;
    uint8_t tmp[ECDSA_MAX];
    size_t len = sizeof(tmp);
    int ok;

    if (key->type != CTOK_KT_EC || !be->sign_rs == !rs)
        ok = be->sign(key, p, tbs, tbslen, sig, siglen);
    else
        ok = be->sign(key, p, tbs, tbslen, tmp, &len) && ecdsa_form(key, rs, tmp, len, sig, siglen);
    if (audit)
        ctok_audit(key->tok, "key_use", key->label, ok, "sign");
    return ok;
}

int ctok_key_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs, size_t tbslen,
                  uint8_t *sig, size_t *siglen)
{
    return ctok_token_authorize(key->tok, CTOK_PERM_USE, "sign", key->label) &&
           key_sign(key, p, tbs, tbslen, sig, siglen, 0);
}

int ctok_key_sign_raw(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                      size_t tbslen, uint8_t *sig, size_t *siglen)
{
    return ctok_token_authorize(key->tok, CTOK_PERM_USE, "sign", key->label) &&
           key_sign(key, p, tbs, tbslen, sig, siglen, 1);
}

int ctok_key_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                     size_t inlen, uint8_t *out, size_t *outlen)
{
    int ok;

    if (!ctok_token_authorize(key->tok, CTOK_PERM_USE, "decrypt", key->label))
        return 0;
    if (!(key->usage & CTOK_USE_DECRYPT)) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s', key '%s': its usage on the token does not include decrypt",
                 key->tok->name, key->label);
        return 0;
    }
    if (key->tok->be->decrypt == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s', key '%s': decryption not supported",
                 key->tok->name, key->label);
        return 0;
    }
    ok = key->tok->be->decrypt(key, p, in, inlen, out, outlen);
    if (key->tok->audit_use)
        ctok_audit(key->tok, "key_use", key->label, ok, "decrypt");
    return ok;
}

/*
 * The backend derives the whole shared secret into a buffer of ours; the caller gets as much
 * of it as its buffer holds, as OpenSSL's own ECDH does (ECDH_compute_key truncates), whatever
 * the backend.
 */
int ctok_key_derive(ctok_key *key, EVP_PKEY *peer, uint8_t *secret, size_t *len)
{
    uint8_t z[CTOK_MAX_SECRET];
    size_t zlen = sizeof(z);
    int ok;

    if (!ctok_token_authorize(key->tok, CTOK_PERM_USE, "derive", key->label))
        return 0;
    if (!(key->usage & CTOK_USE_DERIVE)) {
        CTOK_ERR(
            CTOK_R_UNSUPPORTED,
            "token '%s', key '%s': its usage on the token does not include derive (key agreement)",
            key->tok->name, key->label);
        return 0;
    }
    if (key->tok->be->derive == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s', key '%s': key agreement not supported",
                 key->tok->name, key->label);
        return 0;
    }
    ok = key->tok->be->derive(key, peer, z, &zlen);
    if (ok) {
        *len = *len < zlen ? *len : zlen;
        memcpy(secret, z, *len);
    }
    OPENSSL_cleanse(z, sizeof(z));
    if (key->tok->audit_use)
        ctok_audit(key->tok, "key_use", key->label, ok, "derive");
    return ok;
}

int ctok_token_derives(const ctok_token *tok)
{
    return tok->be->derive != NULL;
}

/* The digest a key test signs: the curve's for ECDSA (AWS KMS takes no other), else SHA-256. */
static const EVP_MD *test_md(const ctok_key *key)
{
    int bits = key->pub != NULL ? EVP_PKEY_get_bits(key->pub) : 0;

    if (key->type == CTOK_KT_ED25519)
        return NULL;
    if (key->type != CTOK_KT_EC || bits <= 256)
        return EVP_sha256();
    return bits <= 384 ? EVP_sha384() : EVP_sha512();
}

/* EJBCA's key test: sign a random message with the token key, verify in software. */
int ctok_key_test(ctok_key *key)
{
    EVP_PKEY *pub = key->pub;
    enum ctok_key_type t = key->type;
    const EVP_MD *md = test_md(key);
    unsigned char msg[64], dgst[EVP_MAX_MD_SIZE], sig[1024];
    /* with the message too: a key allowed only hash-and-sign mechanisms signs that */
    struct ctok_sig_params sp = {t == CTOK_KT_RSA_PSS ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING,
                                 md,
                                 md,
                                 32,
                                 msg,
                                 sizeof(msg)};
    unsigned int dlen = 0;
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *m = NULL;
    EVP_PKEY_CTX *pc = NULL;
    int ok = 0;

    if (!ctok_token_authorize(key->tok, CTOK_PERM_KEYTEST, "key test", key->label))
        return -1;
    if (pub == NULL || (m = EVP_MD_CTX_new()) == NULL || RAND_bytes(msg, sizeof(msg)) != 1)
        goto end;
    if (t == CTOK_KT_ED25519) {
        ok = key_sign(key, &sp, msg, sizeof(msg), sig, &siglen, 0) &&
             EVP_DigestVerifyInit(m, NULL, NULL, NULL, pub) &&
             EVP_DigestVerify(m, sig, siglen, msg, sizeof(msg)) == 1;
        goto end;
    }
    if (!EVP_Digest(msg, sizeof(msg), dgst, &dlen, md, NULL) ||
        !key_sign(key, &sp, dgst, dlen, sig, &siglen, 0))
        goto end;
    pc = EVP_PKEY_CTX_new(pub, NULL);
    ok = pc != NULL && EVP_PKEY_verify_init(pc) > 0 && EVP_PKEY_CTX_set_signature_md(pc, md) > 0 &&
         (t == CTOK_KT_EC || EVP_PKEY_CTX_set_rsa_padding(pc, sp.pad) > 0) &&
         (sp.pad != RSA_PKCS1_PSS_PADDING || EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, 32) > 0) &&
         EVP_PKEY_verify(pc, sig, siglen, dgst, dlen) == 1;
end:
    EVP_PKEY_CTX_free(pc);
    EVP_MD_CTX_free(m);
    return ok;
}

EVP_PKEY *ctok_key_export_private(ctok_key *key)
{
    if (!key->tok->allow_export || key->tok->be->export_private == NULL) {
        CTOK_ERR(CTOK_R_EXPORT_DENIED,
                 "token '%s', key '%s': the token does not allow export of private keys",
                 key->tok->name, key->label);
        return NULL;
    }
    return key->tok->be->export_private(key);
}

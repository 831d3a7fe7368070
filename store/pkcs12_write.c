/*
 * Writing soft PKCS#12 tokens: new keys, certificates, removal, a new code, a new keystore.
 * Every write takes the keystore lock, re-reads the file (so no concurrent write is lost),
 * rebuilds it (existing shrouded key bags are kept as they are) and replaces the file
 * atomically: temp file, fsync, rename.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>

#include "pkcs12.h"

/* Serializes every entry: one unencrypted safe, keys stay shrouded; MAC over it. */
static int write_keystore(ctok_token *tok)
{
    struct p12 *ks = P12(tok);
    STACK_OF(PKCS12_SAFEBAG) *bags = sk_PKCS12_SAFEBAG_new_null();
    STACK_OF(PKCS7) *safes = sk_PKCS7_new_null();
    PKCS7 *p7 = NULL;
    PKCS12 *p12 = NULL;
    uint8_t *der = NULL;
    int len, ok = 0;

    if (bags == NULL || safes == NULL)
        goto end;
    for (size_t i = 0; i < ks->n; i++)
        if (!sk_PKCS12_SAFEBAG_push(bags, ks->e[i].bag))
            goto end;
    if ((p7 = PKCS12_pack_p7data(bags)) == NULL || !sk_PKCS7_push(safes, p7))
        goto end;
    p7 = NULL;
    p12 = PKCS12_add_safes_ex(safes, 0, tok->ctx->libctx, tok->ctx->propq);
    if (p12 == NULL ||
        !PKCS12_set_mac(p12, tok->code, (int)tok->code_len, NULL, 0, P12_ITER, EVP_sha256()) ||
        (len = i2d_PKCS12(p12, &der)) <= 0)
        goto end;
    ok = ctok_file_write_atomic(ks->path, der, (size_t)len, 0600);
end:
    if (!ok)
        CTOK_ERR(CTOK_R_KEYSTORE, "token '%s': keystore '%s' was not written", tok->name, ks->path);
    sk_PKCS12_SAFEBAG_free(bags); /* the entries keep their bags */
    sk_PKCS7_pop_free(safes, PKCS7_free);
    PKCS7_free(p7);
    PKCS12_free(p12);
    OPENSSL_free(der);
    return ok;
}

/* Takes the keystore lock and re-reads the file, so no concurrent write is lost. */
static int begin_write(ctok_token *tok, int *lockfd)
{
    struct p12 *ks = P12(tok);

    if (!ctok_token_is_active(tok)) {
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s' must be activated to be modified", tok->name);
        return 0;
    }
    if ((*lockfd = ctok_file_lock(ks->path)) < 0)
        return 0;
    pthread_mutex_lock(&ks->lock);
    if (p12_read_keystore(tok) && p12_login_locked(tok, tok->code, tok->code_len) > 0)
        return 1;
    pthread_mutex_unlock(&ks->lock);
    ctok_file_unlock(*lockfd);
    return 0;
}

static int end_write(ctok_token *tok, int lockfd, int ok)
{
    struct p12 *ks = P12(tok);

    ok = ok && write_keystore(tok);
    pthread_mutex_unlock(&ks->lock);
    ctok_file_unlock(lockfd);
    return ok;
}

static struct p12_entry *find_label(struct p12 *ks, int is_key, const char *label)
{
    for (size_t i = 0; i < ks->n; i++)
        if (ks->e[i].is_key == is_key && strcmp(ks->e[i].label, label) == 0)
            return &ks->e[i];
    return NULL;
}

static EVP_PKEY *keygen(ctok_token *tok, const struct ctok_keyspec *spec)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(tok->ctx->libctx, ctok_key_type_name(spec->type),
                                                 tok->ctx->propq);
    EVP_PKEY *k = NULL;
    OSSL_PARAM params[2];
    size_t bits = (size_t)spec->bits;

    params[0] =
        spec->type == CTOK_KT_EC
            ? OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)spec->group, 0)
            : OSSL_PARAM_construct_size_t(OSSL_PKEY_PARAM_RSA_BITS, &bits);
    params[1] = OSSL_PARAM_construct_end();
    if (c == NULL || EVP_PKEY_keygen_init(c) <= 0 ||
        (spec->type != CTOK_KT_ED25519 && !EVP_PKEY_CTX_set_params(c, params)) ||
        EVP_PKEY_generate(c, &k) <= 0)
        k = NULL;
    EVP_PKEY_CTX_free(c);
    return k;
}

static int set_attrs(PKCS12_SAFEBAG *bag, const char *alias, const uint8_t *id, size_t id_len)
{
    return PKCS12_add_friendlyname_utf8(bag, alias, -1) &&
           PKCS12_add_localkeyid(bag, (uint8_t *)id, (int)id_len);
}

int p12_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec)
{
    struct p12 *ks = P12(tok);
    STACK_OF(PKCS12_SAFEBAG) *bags = NULL;
    struct p12_entry *e;
    EVP_PKEY *k;
    int lockfd, ok = 0;

    if ((k = keygen(tok, spec)) == NULL) {
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': generating key '%s' failed", tok->name, alias);
        return 0;
    }
    if (!begin_write(tok, &lockfd)) {
        EVP_PKEY_free(k);
        return 0;
    }
    if (find_label(ks, 1, alias) != NULL) {
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': a key named '%s' exists already", tok->name, alias);
        goto end;
    }
    if ((e = p12_entry_add(ks)) == NULL)
        goto end;
    e->is_key = 1;
    e->label = strdup(alias);
    e->priv = k;
    k = NULL;
    e->kt = ctok_key_type_of(e->priv);
    e->pub = p12_public_of(tok, e->priv);
    e->id_len = 20;
    if (e->label == NULL || e->pub == NULL || !ctok_pub_id(e->pub, e->id))
        goto end;
    e->bag = PKCS12_add_key_ex(&bags, e->priv, 0, P12_ITER, NID_aes_256_cbc, tok->code,
                               tok->ctx->libctx, tok->ctx->propq);
    if (e->bag == NULL || !set_attrs(e->bag, alias, e->id, e->id_len))
        goto end;
    sk_PKCS12_SAFEBAG_zero(bags); /* the entry owns the bag */
    ok = 1;
end:
    sk_PKCS12_SAFEBAG_free(bags);
    EVP_PKEY_free(k);
    return end_write(tok, lockfd, ok);
}

static void entry_remove(struct p12 *ks, size_t i)
{
    struct p12_entry *e = &ks->e[i];

    free(e->label);
    PKCS12_SAFEBAG_free(e->bag);
    X509_free(e->cert);
    EVP_PKEY_free(e->pub);
    EVP_PKEY_free(e->priv);
    memmove(e, e + 1, (ks->n - i - 1) * sizeof(*e));
    ks->n--;
}

/*
 * Removal goes by id (the key and its certificates): it must name this key alone, or a
 * key whose id is empty or shared would take other keys with it.
 */
static int one_key_with_id(ctok_token *tok, const char *alias, const uint8_t *id, size_t id_len)
{
    struct p12 *ks = P12(tok);
    size_t n = 0;

    for (size_t i = 0; i < ks->n; i++)
        n += ks->e[i].is_key && ks->e[i].id_len == id_len && memcmp(ks->e[i].id, id, id_len) == 0;
    if (id_len == 0 || n != 1) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s' %s; refusing to remove it (it cannot be told apart)",
                 tok->name, alias, id_len == 0 ? "has no id" : "shares its id with another key");
        return 0;
    }
    return 1;
}

int p12_remove(ctok_token *tok, const char *alias, char *note, size_t notelen)
{
    struct p12 *ks = P12(tok);
    struct p12_entry *k;

    (void)note;
    (void)notelen;
    uint8_t id[CTOK_MAX_ID];
    size_t id_len;
    int lockfd;

    if (!begin_write(tok, &lockfd))
        return 0;
    p12_reveal_all(tok); /* a key without localKeyID gets its id from its public key */
    k = find_label(ks, 1, alias);
    if (k == NULL) {
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no key named '%s'", tok->name, alias);
        return end_write(tok, lockfd, 0);
    }
    id_len = k->id_len;
    memcpy(id, k->id, id_len);
    if (!one_key_with_id(tok, alias, id, id_len))
        return end_write(tok, lockfd, 0);
    /* the key and the certificates that belong to it */
    for (size_t i = ks->n; i-- > 0;)
        if (ks->e[i].id_len == id_len && memcmp(ks->e[i].id, id, id_len) == 0)
            entry_remove(ks, i);
    return end_write(tok, lockfd, 1);
}

int p12_put_cert(ctok_token *tok, const char *alias, X509 *cert)
{
    struct p12 *ks = P12(tok);
    struct p12_entry *e;
    EVP_PKEY *cpub = X509_get0_pubkey(cert);
    int lockfd, ok = 0;

    if (cpub == NULL) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s': certificate '%s' has no usable public key",
                 tok->name, alias);
        return 0;
    }
    if (!begin_write(tok, &lockfd))
        return 0;
    p12_reveal_all(tok);
    if (find_label(ks, 0, alias) != NULL) {
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': a certificate named '%s' exists already", tok->name,
                 alias);
        goto end;
    }
    if ((e = p12_entry_add(ks)) == NULL)
        goto end;
    e->label = strdup(alias);
    e->cert = X509_dup(cert);
    e->pub = X509_get_pubkey(cert);
    e->kt = ctok_key_type_of(cpub);
    /* the id of the key this certificate belongs to, else the key identifier */
    for (size_t i = 0; i < ks->n - 1; i++)
        if (ks->e[i].is_key && ks->e[i].pub != NULL && EVP_PKEY_eq(ks->e[i].pub, cpub) == 1) {
            memcpy(e->id, ks->e[i].id, ks->e[i].id_len);
            e->id_len = ks->e[i].id_len;
            break;
        }
    if (e->id_len == 0) {
        e->id_len = 20;
        if (!ctok_pub_id(cpub, e->id))
            goto end;
    }
    if (e->label == NULL || e->cert == NULL ||
        (e->bag = PKCS12_SAFEBAG_create_cert(cert)) == NULL ||
        !set_attrs(e->bag, alias, e->id, e->id_len))
        goto end;
    ok = 1;
end:
    return end_write(tok, lockfd, ok);
}

/* Re-protects every key bag and the MAC with a new code. */
int p12_change_code(ctok_token *tok, const char *old, size_t old_len, const char *code, size_t len)
{
    struct p12 *ks = P12(tok);
    int lockfd, ok = 1;

    (void)old;
    (void)old_len;
    if (!begin_write(tok, &lockfd))
        return 0;
    for (size_t i = 0; ok && i < ks->n; i++) {
        struct p12_entry *e = &ks->e[i];
        STACK_OF(PKCS12_SAFEBAG) *bags = NULL;
        PKCS12_SAFEBAG *bag;

        if (!e->is_key)
            continue;
        if (e->priv == NULL && p12_decrypt_key(tok, e, tok->code, tok->code_len) <= 0) {
            ok = 0;
            break;
        }
        bag = PKCS12_add_key_ex(&bags, e->priv, 0, P12_ITER, NID_aes_256_cbc, code,
                                tok->ctx->libctx, tok->ctx->propq);
        ok = bag != NULL && set_attrs(bag, e->label, e->id, e->id_len);
        if (ok) {
            PKCS12_SAFEBAG_free(e->bag);
            e->bag = bag;
            sk_PKCS12_SAFEBAG_zero(bags);
        }
        sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
    }
    if (ok) {
        /* the MAC is written under the new code */
        char *c = OPENSSL_malloc(len + 1);

        ok = c != NULL;
        if (ok) {
            memcpy(c, code, len);
            c[len] = '\0';
            OPENSSL_clear_free(tok->code, tok->code_len + 1);
            tok->code = c;
            tok->code_len = len;
        }
    }
    return end_write(tok, lockfd, ok);
}

/* A new, empty keystore protected by code (ctok token create). */
int ctok_pkcs12_create(ctok_token *tok, const char *code, size_t len)
{
    struct p12 *ks = P12(tok);
    int lockfd, ok;

    if ((lockfd = ctok_file_lock(ks->path)) < 0)
        return 0;
    tok->code = OPENSSL_malloc(len + 1);
    if (tok->code == NULL) {
        ctok_file_unlock(lockfd);
        return 0;
    }
    memcpy(tok->code, code, len);
    tok->code[len] = '\0';
    tok->code_len = len;
    pthread_mutex_lock(&ks->lock);
    p12_entries_clear(ks);
    ok = write_keystore(tok) && p12_read_keystore(tok);
    pthread_mutex_unlock(&ks->lock);
    ctok_file_unlock(lockfd);
    tok->opened = ok;
    ctok_token_set_active(tok, ok);
    return ok;
}

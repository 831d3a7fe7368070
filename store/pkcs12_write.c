/*
 * Writing soft PKCS#12 tokens: new keys, certificates, removal, a new code, a new keystore.
 * Every write takes the keystore lock, re-reads the file (so no concurrent write is lost),
 * rebuilds it (existing shrouded key bags are kept as they are) and replaces the file
 * atomically: temp file, fsync, rename.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <openssl/core_names.h>

#include "pkcs12.h"

/* A write in progress: the file lock, and a copy of the code the token layer keeps. */
struct p12_write {
    int lockfd;
    char code[CTOK_MAX_CODE + 1];
    size_t len;
};

/* Serializes every entry: one unencrypted safe, keys stay shrouded; MAC over it with code. */
static int write_keystore(ctok_token *tok, const char *code, size_t code_len)
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
    p12 = PKCS12_add_safes_ex(safes, 0, ctok_ctx_libctx(ctok_token_ctx(tok)),
                              ctok_ctx_propq(ctok_token_ctx(tok)));
    if (p12 == NULL || !PKCS12_set_mac(p12, code, (int)code_len, NULL, 0, P12_ITER, EVP_sha256()) ||
        (len = i2d_PKCS12(p12, &der)) <= 0)
        goto end;
    ok = ctok_file_write_atomic(ks->path, der, (size_t)len, 0600);
end:
    if (!ok)
        CTOK_ERR(CTOK_R_KEYSTORE, "token '%s': keystore '%s' was not written", ctok_token_name(tok),
                 ks->path);
    sk_PKCS12_SAFEBAG_free(bags); /* the entries keep their bags */
    sk_PKCS7_pop_free(safes, PKCS7_free);
    PKCS7_free(p7);
    PKCS12_free(p12);
    OPENSSL_free(der);
    return ok;
}

/* Takes the keystore lock and re-reads the file, so no concurrent write is lost. */
static int begin_write(ctok_token *tok, struct p12_write *w)
{
    struct p12 *ks = P12(tok);

    if (!ctok_token_is_active(tok) ||
        !ctok_token_kept_code(tok, w->code, sizeof(w->code), &w->len)) {
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s' must be activated to be modified",
                 ctok_token_name(tok));
        return 0;
    }
    if ((w->lockfd = ctok_file_lock(ks->path)) < 0) {
        OPENSSL_cleanse(w->code, sizeof(w->code));
        return 0;
    }
    pthread_mutex_lock(&ks->lock);
    if (p12_read_keystore(tok) && p12_login_locked(tok, w->code, w->len) > 0)
        return 1;
    pthread_mutex_unlock(&ks->lock);
    ctok_file_unlock(ks->path, w->lockfd);
    OPENSSL_cleanse(w->code, sizeof(w->code));
    return 0;
}

static int end_write(ctok_token *tok, struct p12_write *w, int ok)
{
    struct p12 *ks = P12(tok);

    ok = ok && write_keystore(tok, w->code, w->len);
    pthread_mutex_unlock(&ks->lock);
    ctok_file_unlock(ks->path, w->lockfd);
    OPENSSL_cleanse(w->code, sizeof(w->code));
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
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(ctok_ctx_libctx(ctok_token_ctx(tok)),
                                                 ctok_key_type_name(spec->type),
                                                 ctok_ctx_propq(ctok_token_ctx(tok)));
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
    struct p12_write w;
    int ok = 0;

    if ((k = keygen(tok, spec)) == NULL) {
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': generating key '%s' failed", ctok_token_name(tok),
                 alias);
        return 0;
    }
    if (!begin_write(tok, &w)) {
        EVP_PKEY_free(k);
        return 0;
    }
    if (find_label(ks, 1, alias) != NULL) {
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': a key named '%s' exists already",
                 ctok_token_name(tok), alias);
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
    e->bag = PKCS12_add_key_ex(&bags, e->priv, 0, P12_ITER, NID_aes_256_cbc, w.code,
                               ctok_ctx_libctx(ctok_token_ctx(tok)),
                               ctok_ctx_propq(ctok_token_ctx(tok)));
    if (e->bag == NULL || !set_attrs(e->bag, alias, e->id, e->id_len))
        goto end;
    sk_PKCS12_SAFEBAG_zero(bags); /* the entry owns the bag */
    ok = 1;
end:
    sk_PKCS12_SAFEBAG_free(bags);
    EVP_PKEY_free(k);
    return end_write(tok, &w, ok);
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
                 ctok_token_name(tok), alias,
                 id_len == 0 ? "has no id" : "shares its id with another key");
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
    struct p12_write w;

    if (!begin_write(tok, &w))
        return 0;
    p12_reveal_all(tok); /* a key without localKeyID gets its id from its public key */
    k = find_label(ks, 1, alias);
    if (k == NULL) {
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no key named '%s'", ctok_token_name(tok), alias);
        return end_write(tok, &w, 0);
    }
    id_len = k->id_len;
    memcpy(id, k->id, id_len);
    if (!one_key_with_id(tok, alias, id, id_len))
        return end_write(tok, &w, 0);
    /* the key and the certificates that belong to it */
    for (size_t i = ks->n; i-- > 0;)
        if (ks->e[i].id_len == id_len && memcmp(ks->e[i].id, id, id_len) == 0)
            entry_remove(ks, i);
    return end_write(tok, &w, 1);
}

/* The id cert gets: its key's on the token, else the replaced certificate's, else its own key
 * identifier. */
static int cert_id(struct p12 *ks, EVP_PKEY *cpub, const struct p12_entry *old, uint8_t *id,
                   size_t *id_len)
{
    for (size_t i = 0; i < ks->n; i++)
        if (ks->e[i].is_key && ks->e[i].pub != NULL && EVP_PKEY_eq(ks->e[i].pub, cpub) == 1) {
            memcpy(id, ks->e[i].id, ks->e[i].id_len);
            *id_len = ks->e[i].id_len;
            return 1;
        }
    if (old != NULL && old->id_len > 0) {
        memcpy(id, old->id, old->id_len);
        *id_len = old->id_len;
        return 1;
    }
    *id_len = 20;
    return ctok_pub_id(cpub, id);
}

/* Removes the certificates labelled label; how many went. */
static size_t remove_certs(struct p12 *ks, const char *label)
{
    size_t n = 0;

    for (size_t i = ks->n; i-- > 0;)
        if (!ks->e[i].is_key && strcmp(ks->e[i].label, label) == 0) {
            entry_remove(ks, i);
            n++;
        }
    return n;
}

int p12_put_cert(ctok_token *tok, const char *alias, X509 *cert, int replace)
{
    struct p12 *ks = P12(tok);
    struct p12_entry *e, *old;
    EVP_PKEY *cpub = X509_get0_pubkey(cert);
    uint8_t id[CTOK_MAX_ID];
    size_t id_len;
    struct p12_write w;
    int ok = 0;

    if (cpub == NULL) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s': certificate '%s' has no usable public key",
                 ctok_token_name(tok), alias);
        return 0;
    }
    if (!begin_write(tok, &w))
        return 0;
    p12_reveal_all(tok);
    old = find_label(ks, 0, alias);
    if (old != NULL && !replace) {
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': a certificate named '%s' exists already",
                 ctok_token_name(tok), alias);
        goto end;
    }
    if (old == NULL && replace) {
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no certificate named '%s' to replace",
                 ctok_token_name(tok), alias);
        goto end;
    }
    if (!cert_id(ks, cpub, old, id, &id_len))
        goto end;
    /* the old certificates go in the same rewrite as the new one comes: one file replace */
    remove_certs(ks, alias);
    if ((e = p12_entry_add(ks)) == NULL)
        goto end;
    e->label = strdup(alias);
    e->cert = X509_dup(cert);
    e->pub = X509_get_pubkey(cert);
    e->kt = ctok_key_type_of(cpub);
    memcpy(e->id, id, id_len);
    e->id_len = id_len;
    if (e->label == NULL || e->cert == NULL ||
        (e->bag = PKCS12_SAFEBAG_create_cert(cert)) == NULL ||
        !set_attrs(e->bag, alias, e->id, e->id_len))
        goto end;
    ok = 1;
end:
    return end_write(tok, &w, ok);
}

int p12_remove_cert(ctok_token *tok, const char *label)
{
    struct p12 *ks = P12(tok);
    struct p12_write w;
    int key;

    if (!begin_write(tok, &w))
        return 0;
    p12_reveal_all(tok);
    key = find_label(ks, 1, label) != NULL;
    if (remove_certs(ks, label) > 0)
        return end_write(tok, &w, 1);
    if (key)
        CTOK_ERR(CTOK_R_NOT_FOUND,
                 "token '%s': '%s' names a key and no certificate; 'ctok key remove' removes keys",
                 ctok_token_name(tok), label);
    else
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no certificate named '%s'", ctok_token_name(tok),
                 label);
    return end_write(tok, &w, 0);
}

/* A bag's friendlyName becomes label. The attributes are the bag's own: OpenSSL 3.0 has no
 * setter, so the old friendlyName is deleted from the stack get0_attrs returns. */
static int relabel(struct p12_entry *e, const char *label)
{
    STACK_OF(X509_ATTRIBUTE) *attrs = (STACK_OF(X509_ATTRIBUTE) *)PKCS12_SAFEBAG_get0_attrs(e->bag);
    char *dup = strdup(label);
    int i;

    if (dup == NULL)
        return 0;
    while ((i = X509at_get_attr_by_NID(attrs, NID_friendlyName, -1)) >= 0)
        X509_ATTRIBUTE_free(X509at_delete_attr(attrs, i));
    free(e->label);
    e->label = dup;
    return PKCS12_add_friendlyname_utf8(e->bag, label, -1);
}

int p12_rename(ctok_token *tok, unsigned int type, const char *old, const char *new_label)
{
    struct p12 *ks = P12(tok);
    int is_key = type != CTOK_OBJ_CERT, ok = 1;
    struct p12_entry *k;
    struct p12_write w;
    uint8_t id[CTOK_MAX_ID];
    size_t id_len, n = 0;

    if (!begin_write(tok, &w))
        return 0;
    p12_reveal_all(tok);
    if ((k = find_label(ks, is_key, old)) == NULL) {
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no %s named '%s'", ctok_token_name(tok),
                 is_key ? "key" : "certificate", old);
        return end_write(tok, &w, 0);
    }
    if (find_label(ks, is_key, new_label) != NULL) {
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': a %s named '%s' exists already",
                 ctok_token_name(tok), is_key ? "key" : "certificate", new_label);
        return end_write(tok, &w, 0);
    }
    id_len = k->id_len;
    memcpy(id, k->id, id_len);
    if (is_key && !one_key_with_id(tok, old, id, id_len))
        return end_write(tok, &w, 0);
    /* the key's certificates take its new label: it must not be another certificate's */
    for (size_t i = 0; is_key && i < ks->n; i++)
        if (!ks->e[i].is_key && strcmp(ks->e[i].label, new_label) == 0 &&
            (ks->e[i].id_len != id_len || memcmp(ks->e[i].id, id, id_len) != 0)) {
            CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': a certificate of another key is named '%s'",
                     ctok_token_name(tok), new_label);
            return end_write(tok, &w, 0);
        }
    /* a certificate by its label; a key with the objects of its id */
    for (size_t i = 0; ok && i < ks->n; i++) {
        struct p12_entry *e = &ks->e[i];

        if (is_key ? e->id_len == id_len && memcmp(e->id, id, id_len) == 0
                   : !e->is_key && strcmp(e->label, old) == 0) {
            ok = relabel(e, new_label);
            n++;
        }
    }
    CTOK_DBG("token '%s': %zu objects relabelled '%s' -> '%s'", ctok_token_name(tok), n, old,
             new_label);
    return end_write(tok, &w, ok);
}

/* Re-protects every key bag and the MAC with a new code. */
int p12_change_code(ctok_token *tok, const char *old, size_t old_len, const char *code, size_t len)
{
    struct p12 *ks = P12(tok);
    struct p12_write w;
    int ok = 1;

    (void)old;
    (void)old_len;
    if (len >= sizeof(w.code)) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s': the new code is longer than %d bytes",
                 ctok_token_name(tok), CTOK_MAX_CODE);
        return 0;
    }
    if (!begin_write(tok, &w))
        return 0;
    for (size_t i = 0; ok && i < ks->n; i++) {
        struct p12_entry *e = &ks->e[i];
        STACK_OF(PKCS12_SAFEBAG) *bags = NULL;
        PKCS12_SAFEBAG *bag;

        if (!e->is_key)
            continue;
        if (e->priv == NULL && p12_decrypt_key(tok, e, w.code, w.len) <= 0) {
            ok = 0;
            break;
        }
        bag = PKCS12_add_key_ex(&bags, e->priv, 0, P12_ITER, NID_aes_256_cbc, code,
                                ctok_ctx_libctx(ctok_token_ctx(tok)),
                                ctok_ctx_propq(ctok_token_ctx(tok)));
        ok = bag != NULL && set_attrs(bag, e->label, e->id, e->id_len);
        if (ok) {
            PKCS12_SAFEBAG_free(e->bag);
            e->bag = bag;
            sk_PKCS12_SAFEBAG_zero(bags);
        }
        sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
    }
    if (ok) {
        /* the MAC is written under the new code; the token layer keeps it once this returns */
        memcpy(w.code, code, len);
        w.code[len] = '\0';
        w.len = len;
    }
    return end_write(tok, &w, ok);
}

/*
 * ctok token create: a keystore that does not exist is made, empty, protected by code; then,
 * new or not, the token logs in with code, which checks it.
 */
int p12_create(ctok_token *tok, const char *code, size_t len)
{
    struct p12 *ks = P12(tok);
    struct stat st;
    int lockfd, ok = 1;

    if ((lockfd = ctok_file_lock(ks->path)) < 0)
        return 0;
    if (stat(ks->path, &st) != 0 && errno == ENOENT) {
        pthread_mutex_lock(&ks->lock);
        p12_entries_clear(ks);
        ok = write_keystore(tok, code, len);
        pthread_mutex_unlock(&ks->lock);
    }
    ctok_file_unlock(ks->path, lockfd);
    return ok && ctok_token_login_with(tok, code, len);
}

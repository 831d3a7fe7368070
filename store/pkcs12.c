/*
 * Soft PKCS#12 crypto tokens, reading and using them. Certificates and the attributes of
 * key bags are read without the auth code; login verifies the MAC; a key is decrypted when
 * first used. Writing is in pkcs12_write.c.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/pkcs12.h>
#include <openssl/rsa.h>

#include "pkcs12.h"

void p12_entries_clear(struct p12 *ks)
{
    for (size_t i = 0; i < ks->n; i++) {
        free(ks->e[i].label);
        PKCS12_SAFEBAG_free(ks->e[i].bag);
        X509_free(ks->e[i].cert);
        EVP_PKEY_free(ks->e[i].pub);
        EVP_PKEY_free(ks->e[i].priv);
    }
    free(ks->e);
    ks->e = NULL;
    ks->n = ks->cap = 0;
    PKCS12_free(ks->p12);
    ks->p12 = NULL;
    ks->encrypted_safes = 0;
}

static int p12_configure(ctok_token *tok, const json_t *conf)
{
    const char *path = json_string_value(json_object_get(conf, "keystore"));
    struct p12 *ks;

    if (path == NULL || *path == '\0') {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': pkcs12 token needs \"keystore\"",
                 ctok_ctx_config_path(ctok_token_ctx(tok)), ctok_token_name(tok));
        return 0;
    }
    ks = calloc(1, sizeof(*ks));
    if (ks == NULL || (ks->path = strdup(path)) == NULL) {
        free(ks);
        return 0;
    }
    pthread_mutex_init(&ks->lock, NULL);
    ctok_token_set_be(tok, ks);
    return 1;
}

static void p12_close(ctok_token *tok)
{
    struct p12 *ks = P12(tok);

    if (ks == NULL)
        return;
    p12_entries_clear(ks);
    pthread_mutex_destroy(&ks->lock);
    free(ks->path);
    free(ks);
    ctok_token_set_be(tok, NULL);
}

/*
 * A public-only copy of a key, in the token context's library context: its public
 * parameters handed from key manager to key manager. Not a SubjectPublicKeyInfo round trip
 * (i2d_PUBKEY, d2i_PUBKEY_ex): the encoder that needs made OpenSSL build the library
 * context's whole encoder table, ~50 KB of heap in a process that opens one keystore.
 */
EVP_PKEY *p12_public_of(ctok_token *tok, EVP_PKEY *k)
{
    const ctok_ctx *cx = ctok_token_ctx(tok);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(ctok_ctx_libctx(cx), EVP_PKEY_get0_type_name(k),
                                                 ctok_ctx_propq(cx));
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pub = NULL;

    if (c == NULL || EVP_PKEY_todata(k, EVP_PKEY_PUBLIC_KEY, &params) != 1 ||
        EVP_PKEY_fromdata_init(c) != 1 ||
        EVP_PKEY_fromdata(c, &pub, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pub = NULL;
    OSSL_PARAM_free(params);
    EVP_PKEY_CTX_free(c);
    return pub;
}

struct p12_entry *p12_entry_add(struct p12 *ks)
{
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? 2 * ks->cap : 8;
        struct p12_entry *ne = realloc(ks->e, cap * sizeof(*ne));

        if (ne == NULL)
            return NULL;
        ks->e = ne;
        ks->cap = cap;
    }
    memset(&ks->e[ks->n], 0, sizeof(ks->e[0]));
    return &ks->e[ks->n++];
}

static int add_bag(ctok_token *tok, const PKCS12_SAFEBAG *bag)
{
    struct p12 *ks = P12(tok);
    int nid = PKCS12_SAFEBAG_get_nid(bag);
    const ASN1_TYPE *lkid;
    struct p12_entry *e;
    char *fn;

    if (nid == NID_safeContentsBag) {
        const STACK_OF(PKCS12_SAFEBAG) *inner = PKCS12_SAFEBAG_get0_safes(bag);

        for (int i = 0; i < sk_PKCS12_SAFEBAG_num(inner); i++)
            if (!add_bag(tok, sk_PKCS12_SAFEBAG_value(inner, i)))
                return 0;
        return 1;
    }
    if (nid == NID_keyBag) {
        /* a plain key bag is readable by anyone who reads the file: never accepted */
        fn = PKCS12_get_friendlyname((PKCS12_SAFEBAG *)bag);
        CTOK_ERR(CTOK_R_KEYSTORE,
                 "token '%s': keystore '%s': key '%s' is stored unencrypted (plain key bag); "
                 "refusing the keystore (export it with an encrypted key, -keypbe AES-256-CBC)",
                 ctok_token_name(tok), ks->path, fn != NULL ? fn : "");
        OPENSSL_free(fn);
        return 0;
    }
    if (nid != NID_pkcs8ShroudedKeyBag &&
        !(nid == NID_certBag && PKCS12_SAFEBAG_get_bag_nid(bag) == NID_x509Certificate))
        return 1; /* CRLs, secrets: not ours to show, kept out of rewrites */
    if ((e = p12_entry_add(ks)) == NULL)
        return 0;
    e->bag = ASN1_item_dup(ASN1_ITEM_rptr(PKCS12_SAFEBAG), (void *)bag);
    if (e->bag == NULL)
        return 0;
    e->is_key = nid == NID_pkcs8ShroudedKeyBag;
    fn = PKCS12_get_friendlyname((PKCS12_SAFEBAG *)bag);
    e->label = strdup(fn != NULL ? fn : "");
    OPENSSL_free(fn);
    lkid = PKCS12_SAFEBAG_get0_attr(bag, NID_localKeyID);
    if (lkid != NULL && lkid->type == V_ASN1_OCTET_STRING) {
        int l = ASN1_STRING_length(lkid->value.octet_string);

        e->id_len = l > CTOK_MAX_ID ? CTOK_MAX_ID : (size_t)l;
        memcpy(e->id, ASN1_STRING_get0_data(lkid->value.octet_string), e->id_len);
    }
    if (!e->is_key) {
        e->cert = PKCS12_SAFEBAG_get1_cert(bag);
        if (e->cert == NULL || (e->pub = X509_get_pubkey(e->cert)) == NULL) {
            CTOK_ERR(CTOK_R_KEYSTORE, "token '%s': keystore '%s': unreadable certificate '%s'",
                     ctok_token_name(tok), ks->path, e->label);
            return 0;
        }
        e->kt = ctok_key_type_of(e->pub);
    }
    if (e->id_len == 0 && e->pub != NULL) {
        ctok_pub_id(e->pub, e->id);
        e->id_len = 20;
    }
    return e->label != NULL;
}

static int add_bags(ctok_token *tok, STACK_OF(PKCS12_SAFEBAG) * bags)
{
    int ok = 1;

    for (int i = 0; ok && i < sk_PKCS12_SAFEBAG_num(bags); i++)
        ok = add_bag(tok, sk_PKCS12_SAFEBAG_value(bags, i));
    sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
    return ok;
}

/* Reads the keystore: structure, certificates, key bag attributes. Lock held. */
int p12_read_keystore(ctok_token *tok)
{
    struct p12 *ks = P12(tok);
    STACK_OF(PKCS7) *safes = NULL;
    uint8_t *der;
    const uint8_t *p;
    size_t len;
    char what[160];
    int ok = 0;

    p12_entries_clear(ks);
    /* before the read: a write after it shows as a change (p12_refresh) */
    ks->have_seen = stat(ks->path, &ks->seen) == 0;
    BIO_snprintf(what, sizeof(what), "token '%s': keystore", ctok_token_name(tok));
    if (!ctok_file_read(ks->path, 1, CTOK_R_KEYSTORE, what, &der, &len))
        return 0;
    p = der;
    ks->p12 = len <= LONG_MAX ? d2i_PKCS12(NULL, &p, (long)len) : NULL;
    ctok_file_free(der, len);
    if (ks->p12 == NULL || (safes = PKCS12_unpack_authsafes(ks->p12)) == NULL) {
        CTOK_ERR(CTOK_R_KEYSTORE,
                 "token '%s': '%s' is not a valid PKCS#12 keystore (damaged or "
                 "truncated)",
                 ctok_token_name(tok), ks->path);
        goto end;
    }
    /* without a MAC nothing checks the code, and anyone could have changed the file */
    if (!PKCS12_mac_present(ks->p12)) {
        CTOK_ERR(CTOK_R_KEYSTORE,
                 "token '%s': keystore '%s' has no MAC: its integrity cannot be checked; "
                 "refusing it (export it with a MAC)",
                 ctok_token_name(tok), ks->path);
        goto end;
    }
    for (int i = 0; i < sk_PKCS7_num(safes); i++) {
        PKCS7 *p7 = sk_PKCS7_value(safes, i);
        int nid = OBJ_obj2nid(p7->type);

        if (nid == NID_pkcs7_data) {
            STACK_OF(PKCS12_SAFEBAG) *bags = PKCS12_unpack_p7data(p7);

            if (bags == NULL || !add_bags(tok, bags)) {
                CTOK_ERR(CTOK_R_KEYSTORE,
                         "token '%s': '%s' is not a valid PKCS#12 keystore "
                         "(bad safe contents)",
                         ctok_token_name(tok), ks->path);
                goto end;
            }
        } else if (nid == NID_pkcs7_encrypted) {
            ks->encrypted_safes = 1;
        }
    }
    ok = 1;
end:
    sk_PKCS7_pop_free(safes, PKCS7_free);
    return ok;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/*
 * Another process rewrote the keystore (writes replace the file): read it again, as a write
 * does, and with the kept code, when active, check its MAC and decrypt it. A stat per call.
 */
static int p12_refresh(ctok_token *tok)
{
    struct p12 *ks = P12(tok);
    char code[CTOK_MAX_CODE + 1];
    struct stat st;
    size_t len;
    int changed;

    pthread_mutex_lock(&ks->lock);
    changed = stat(ks->path, &st) == 0 && !(ks->have_seen && same_file(&st, &ks->seen));
    if (changed) {
        ctok_err_mark(); /* the next listing says what is wrong with the file */
        if (p12_read_keystore(tok) && ctok_token_is_active(tok) &&
            ctok_token_kept_code(tok, code, sizeof(code), &len))
            (void)p12_login_locked(tok, code, len);
        OPENSSL_cleanse(code, sizeof(code));
        ctok_err_pop_to_mark();
    }
    pthread_mutex_unlock(&ks->lock);
    return changed;
}

static int p12_open(ctok_token *tok)
{
    struct p12 *ks = P12(tok);
    int ok;

    pthread_mutex_lock(&ks->lock);
    ok = p12_read_keystore(tok);
    pthread_mutex_unlock(&ks->lock);
    return ok;
}

/* Every keystore read has a MAC (p12_read_keystore refuses others). */
static int verify_mac(PKCS12 *p12, const char *code, size_t len)
{
    if (PKCS12_verify_mac(p12, code, (int)len))
        return 1;
    /* an empty password may have been applied as NULL or as "" */
    return len == 0 && PKCS12_verify_mac(p12, NULL, 0);
}

int p12_decrypt_key(ctok_token *tok, struct p12_entry *e, const char *code, size_t len)
{
    PKCS8_PRIV_KEY_INFO *p8;
    OSSL_LIB_CTX *lc = ctok_ctx_libctx(ctok_token_ctx(tok));
    const char *pq = ctok_ctx_propq(ctok_token_ctx(tok));

    /*
     * The key bag's password-based encryption runs where the keystore's MAC and certificate
     * safes already do (d2i_PKCS12 carries no library context): the default one. Only
     * ciphers, KDFs, MACs and digests are fetched there, and ctok registers none (so nothing
     * reaches ctok). In ctok's child library context (lc) the same fetches made OpenSSL build
     * a second cipher table, ~120 KB of heap: 38 page faults and 4.3 M instructions per
     * soft-token one-shot (docs/DESIGN.md, "Start-up and idle"). The key itself is still
     * made in lc.
     */
    p8 = PKCS12_decrypt_skey_ex(e->bag, code, (int)len, NULL, NULL);
    if (p8 == NULL && len == 0)
        p8 = PKCS12_decrypt_skey_ex(e->bag, NULL, 0, NULL, NULL);
    if (p8 == NULL)
        return 0;
    e->priv = EVP_PKCS82PKEY_ex(p8, lc, pq);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (e->priv != NULL && (e->pub = p12_public_of(tok, e->priv)) == NULL) {
        /* a key is usable only with its public half (p12_key_load takes both) */
        EVP_PKEY_free(e->priv);
        e->priv = NULL;
    }
    if (e->priv == NULL) {
        CTOK_ERR(CTOK_R_KEYSTORE, "token '%s': keystore '%s': key '%s' cannot be decoded",
                 ctok_token_name(tok), P12(tok)->path, e->label);
        return -1;
    }
    e->kt = ctok_key_type_of(e->priv);
    if (e->id_len == 0) {
        ctok_pub_id(e->pub, e->id);
        e->id_len = 20;
    }
    return 1;
}

/* Certificates in encrypted safes (OpenSSL's default for pkcs12 -export). Lock held. */
static int decrypt_safes(ctok_token *tok, const char *code, size_t len)
{
    struct p12 *ks = P12(tok);
    STACK_OF(PKCS7) *safes = PKCS12_unpack_authsafes(ks->p12);
    int ok = safes != NULL;

    for (int i = 0; ok && i < sk_PKCS7_num(safes); i++) {
        PKCS7 *p7 = sk_PKCS7_value(safes, i);
        STACK_OF(PKCS12_SAFEBAG) * bags;

        if (OBJ_obj2nid(p7->type) != NID_pkcs7_encrypted)
            continue;
        bags = PKCS12_unpack_p7encdata(p7, code, (int)len);
        ok = bags != NULL && add_bags(tok, bags);
    }
    sk_PKCS7_pop_free(safes, PKCS7_free);
    if (ok)
        ks->encrypted_safes = 0;
    return ok;
}

/*
 * Login checks the code against the keystore's MAC, nothing more: keys are decrypted
 * one by one when used, so a one-shot signature pays for one key, not for all of them.
 * Lock held.
 */
static int check_mac(ctok_token *tok, PKCS12 *p12, const char *code, size_t len)
{
    if (verify_mac(p12, code, len))
        return 1;
    CTOK_ERR(CTOK_R_WRONG_CODE,
             "token '%s': keystore '%s' rejected the authentication code "
             "(MAC verification failed)",
             ctok_token_name(tok), P12(tok)->path);
    return 0;
}

int p12_login_locked(ctok_token *tok, const char *code, size_t len)
{
    return check_mac(tok, P12(tok)->p12, code, len);
}

/* After login: everything readable, for listings. Lock held. */
void p12_reveal_all(ctok_token *tok)
{
    struct p12 *ks = P12(tok);
    char code[CTOK_MAX_CODE + 1];
    size_t len;

    if (!ctok_token_is_active(tok) || !ctok_token_kept_code(tok, code, sizeof(code), &len))
        return;
    if (ks->encrypted_safes)
        (void)decrypt_safes(tok, code, len);
    for (size_t i = 0; i < ks->n; i++)
        if (ks->e[i].is_key && ks->e[i].priv == NULL)
            (void)p12_decrypt_key(tok, &ks->e[i], code, len);
    OPENSSL_cleanse(code, sizeof(code));
}

/*
 * The MAC's PBKDF2 runs on a copy, without the keystore lock: listings and key loads of
 * this keystore do not wait for it (the copy costs microseconds, the PBKDF2 milliseconds).
 */
static int p12_login(ctok_token *tok, const char *code, size_t len)
{
    struct p12 *ks = P12(tok);
    uint8_t *der = NULL;
    const uint8_t *p;
    PKCS12 *copy = NULL;
    int n, r;

    pthread_mutex_lock(&ks->lock);
    n = i2d_PKCS12(ks->p12, &der);
    pthread_mutex_unlock(&ks->lock);
    p = der;
    if (n <= 0 || (copy = d2i_PKCS12(NULL, &p, n)) == NULL) {
        OPENSSL_free(der);
        CTOK_ERR(CTOK_R_INTERNAL, "token '%s': cannot copy keystore '%s'", ctok_token_name(tok),
                 ks->path);
        return -1;
    }
    OPENSSL_free(der);
    r = check_mac(tok, copy, code, len);
    PKCS12_free(copy);
    return r;
}

/* A certificate of key entry e (same id), if the keystore has one. */
static const struct p12_entry *cert_of(const struct p12 *ks, const struct p12_entry *e)
{
    for (size_t i = 0; i < ks->n; i++)
        if (!ks->e[i].is_key && ks->e[i].id_len == e->id_len &&
            memcmp(ks->e[i].id, e->id, e->id_len) == 0)
            return &ks->e[i];
    return NULL;
}

static int p12_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg)
{
    struct p12 *ks = P12(tok);
    int ok = 1;

    pthread_mutex_lock(&ks->lock);
    p12_reveal_all(tok);
    for (int pass = 0; ok && pass < 2; pass++) {
        for (size_t i = 0; ok && i < ks->n; i++) {
            struct p12_entry *e = &ks->e[i];
            struct ctok_object o = {CTOK_OBJ_CERT, e->label, e->id, e->id_len,
                                    e->kt,         e->cert,  e->pub};

            if (pass == 0 && !e->is_key) {
                ok = cb(tok, &o, arg);
            } else if (pass == 1 && e->is_key) {
                const struct p12_entry *c = e->pub == NULL ? cert_of(ks, e) : NULL;

                if (c != NULL) { /* before login: the certificate knows the public key */
                    o.pub = c->pub;
                    o.key_type = c->kt;
                }
                o.type = CTOK_OBJ_PRIVATE;
                ok = cb(tok, &o, arg);
                if (ok && o.pub != NULL) {
                    o.type = CTOK_OBJ_PUBLIC;
                    ok = cb(tok, &o, arg);
                }
            }
        }
    }
    pthread_mutex_unlock(&ks->lock);
    return ok;
}

static unsigned int p12_hidden(ctok_token *tok)
{
    struct p12 *ks = P12(tok);
    unsigned int h;

    pthread_mutex_lock(&ks->lock);
    h = ks->encrypted_safes ? CTOK_OBJ_CERT | CTOK_OBJ_PUBLIC : 0;
    pthread_mutex_unlock(&ks->lock);
    return h;
}

static struct p12_entry *find_key(struct p12 *ks, const uint8_t *id, size_t id_len)
{
    for (size_t i = 0; i < ks->n; i++)
        if (ks->e[i].is_key && ks->e[i].id_len == id_len && memcmp(ks->e[i].id, id, id_len) == 0)
            return &ks->e[i];
    return NULL;
}

/*
 * A key handle's backend data: the private key and a few signing contexts already
 * initialized on it. Setting up a context costs as much as an ECDSA signature's
 * hashing, so contexts are reused across signatures (one at a time each).
 */
#define SIGN_POOL 8
struct p12_sign_ctx {
    EVP_PKEY_CTX *c;
    const EVP_MD *md, *mgf1;
    int pad, salt;
};
struct p12_key {
    EVP_PKEY *priv;
    pthread_mutex_t lock;
    struct p12_sign_ctx pool[SIGN_POOL];
    int n;
};

static int p12_key_load(ctok_token *tok, ctok_key *key)
{
    struct p12 *ks = P12(tok);
    struct p12_entry *e;
    struct p12_key *k = NULL;
    int ok = 0;

    pthread_mutex_lock(&ks->lock);
    e = find_key(ks, key->id, key->id_len);
    if (e != NULL && e->priv == NULL) {
        char code[CTOK_MAX_CODE + 1];
        size_t len;

        if (ctok_token_kept_code(tok, code, sizeof(code), &len))
            (void)p12_decrypt_key(tok, e, code, len);
        OPENSSL_cleanse(code, sizeof(code));
    }
    if (e != NULL && e->priv != NULL && (k = calloc(1, sizeof(*k))) != NULL && e->pub != NULL &&
        EVP_PKEY_up_ref(e->priv)) {
        k->priv = e->priv;
        pthread_mutex_init(&k->lock, NULL);
        key->be_data = k;
        k = NULL;
        if (EVP_PKEY_up_ref(e->pub))
            key->pub = e->pub;
        key->type = e->kt;
        key->label = strdup(e->label);
        ok = key->pub != NULL && key->label != NULL;
    }
    pthread_mutex_unlock(&ks->lock);
    free(k);
    if (!ok && e == NULL) {
        char hex[2 * CTOK_MAX_ID + 1];

        ctok_hex(key->id, key->id_len, hex);
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no private key with id %s", ctok_token_name(tok),
                 hex);
    } else if (!ok) {
        CTOK_ERR(CTOK_R_KEYSTORE, "token '%s': key '%s' cannot be decrypted", ctok_token_name(tok),
                 e->label);
    }
    return ok;
}

static void p12_key_free(ctok_key *key)
{
    struct p12_key *k = key->be_data;

    for (int i = 0; i < k->n; i++)
        EVP_PKEY_CTX_free(k->pool[i].c);
    EVP_PKEY_free(k->priv);
    pthread_mutex_destroy(&k->lock);
    free(k);
    key->be_data = NULL;
}

static EVP_PKEY *priv_of(ctok_key *key)
{
    return ((struct p12_key *)key->be_data)->priv;
}

/* Applies the request to a signing context: only what differs from its last use. */
static int prepare(ctok_key *key, struct p12_sign_ctx *sc, const struct ctok_sig_params *p)
{
    ctok_ctx *cx = ctok_token_ctx(key->tok);
    int rsa = key->type == CTOK_KT_RSA || key->type == CTOK_KT_RSA_PSS;
    int pss = rsa && p->pad == RSA_PKCS1_PSS_PADDING;
    OSSL_PARAM params[5], *q = params;
    int pad = p->pad, salt = p->saltlen;

    /* a digest, once set, cannot be unset: a request without one needs a fresh context */
    if (sc->c != NULL && sc->md != NULL && p->md == NULL) {
        EVP_PKEY_CTX_free(sc->c);
        sc->c = NULL;
    }
    if (sc->c == NULL) {
        sc->c = EVP_PKEY_CTX_new_from_pkey(ctok_ctx_libctx(cx), priv_of(key), ctok_ctx_propq(cx));
        if (sc->c == NULL || EVP_PKEY_sign_init(sc->c) <= 0)
            return 0;
        sc->md = sc->mgf1 = NULL;
        sc->pad = rsa ? RSA_PKCS1_PADDING : 0;
        sc->salt = -1000;
    }
    if (rsa && sc->pad != pad)
        *q++ = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PAD_MODE, &pad);
    if (p->md != NULL && (sc->md != p->md || q != params))
        *q++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST,
                                                (char *)EVP_MD_get0_name(p->md), 0);
    if (pss && (sc->salt != salt || q != params))
        *q++ = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, &salt);
    if (pss && p->mgf1 != NULL && (sc->mgf1 != p->mgf1 || q != params))
        *q++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST,
                                                (char *)EVP_MD_get0_name(p->mgf1), 0);
    *q = OSSL_PARAM_construct_end();
    if (q != params && !EVP_PKEY_CTX_set_params(sc->c, params)) {
        EVP_PKEY_CTX_free(sc->c);
        sc->c = NULL;
        return 0;
    }
    sc->md = p->md;
    sc->mgf1 = pss ? p->mgf1 : NULL;
    sc->pad = rsa ? pad : 0;
    sc->salt = pss ? salt : -1000;
    return 1;
}

static int p12_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                    size_t tbslen, uint8_t *sig, size_t *siglen)
{
    ctok_ctx *cx = ctok_token_ctx(key->tok);
    struct p12_key *k = key->be_data;
    struct p12_sign_ctx sc = {0};
    int ok;

    if (key->type == CTOK_KT_ED25519) {
        EVP_MD_CTX *m = EVP_MD_CTX_new();

        ok = m != NULL &&
             EVP_DigestSignInit_ex(m, NULL, NULL, ctok_ctx_libctx(cx), ctok_ctx_propq(cx), k->priv,
                                   NULL) &&
             EVP_DigestSign(m, sig, siglen, tbs, tbslen);
        EVP_MD_CTX_free(m);
    } else {
        pthread_mutex_lock(&k->lock);
        if (k->n > 0)
            sc = k->pool[--k->n];
        pthread_mutex_unlock(&k->lock);
        ok = prepare(key, &sc, p) && EVP_PKEY_sign(sc.c, sig, siglen, tbs, tbslen) > 0;
        pthread_mutex_lock(&k->lock);
        if (ok && k->n < SIGN_POOL) {
            k->pool[k->n++] = sc;
            sc.c = NULL;
        }
        pthread_mutex_unlock(&k->lock);
        EVP_PKEY_CTX_free(sc.c);
    }
    if (!ok)
        CTOK_ERR(CTOK_R_BACKEND, "token '%s', key '%s': signing failed", ctok_token_name(key->tok),
                 key->label);
    return ok;
}

static int p12_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                       size_t inlen, uint8_t *out, size_t *outlen)
{
    ctok_ctx *cx = ctok_token_ctx(key->tok);
    EVP_PKEY_CTX *c =
        EVP_PKEY_CTX_new_from_pkey(ctok_ctx_libctx(cx), priv_of(key), ctok_ctx_propq(cx));
    OSSL_PARAM params[7], *q = params;
    int pad = p->pad, ok;
    unsigned int cv = p->tls_client_version, nv = p->tls_negotiated_version;

    *q++ = OSSL_PARAM_construct_int(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, &pad);
    if (p->oaep_md != NULL)
        *q++ = OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST,
                                                (char *)EVP_MD_get0_name(p->oaep_md), 0);
    if (p->mgf1 != NULL)
        *q++ = OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST,
                                                (char *)EVP_MD_get0_name(p->mgf1), 0);
    if (p->label != NULL)
        *q++ = OSSL_PARAM_construct_octet_string(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL,
                                                 (void *)p->label, p->label_len);
    if (cv != 0) {
        *q++ = OSSL_PARAM_construct_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, &cv);
        *q++ = OSSL_PARAM_construct_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, &nv);
    }
    *q = OSSL_PARAM_construct_end();
    /* errors of the decryption itself stay as OpenSSL raised them: padding oracles */
    ok = c != NULL && EVP_PKEY_decrypt_init_ex(c, params) > 0 &&
         EVP_PKEY_decrypt(c, out, outlen, in, inlen) > 0;
    EVP_PKEY_CTX_free(c);
    return ok;
}

static int p12_derive(ctok_key *key, EVP_PKEY *peer, uint8_t *secret, size_t *len)
{
    ctok_ctx *cx = ctok_token_ctx(key->tok);
    EVP_PKEY_CTX *c =
        EVP_PKEY_CTX_new_from_pkey(ctok_ctx_libctx(cx), priv_of(key), ctok_ctx_propq(cx));
    int ok = c != NULL && EVP_PKEY_derive_init(c) > 0 && EVP_PKEY_derive_set_peer(c, peer) > 0 &&
             EVP_PKEY_derive(c, secret, len) > 0;

    EVP_PKEY_CTX_free(c);
    if (!ok)
        CTOK_ERR(CTOK_R_BACKEND, "token '%s', key '%s': key agreement failed",
                 ctok_token_name(key->tok), key->label);
    return ok;
}

static EVP_PKEY *p12_export_private(ctok_key *key)
{
    return EVP_PKEY_up_ref(priv_of(key)) ? priv_of(key) : NULL;
}

static const struct ctok_tool_field p12_fields[] = {
    {"keystore", "keystore", CTOK_FIELD_PATH, 1,
     "the PKCS#12 keystore (created, empty, if it does not exist)", NULL},
    {0},
};

const struct ctok_backend ctok_pkcs12_backend = {
    .type = "pkcs12",
    .tool_fields = p12_fields,
    .keep_prompted_code = 1,
    .configure = p12_configure,
    .open = p12_open,
    .login = p12_login,
    .enumerate = p12_enumerate,
    .refresh = p12_refresh,
    .hidden = p12_hidden,
    .key_load = p12_key_load,
    .key_free = p12_key_free,
    .sign = p12_sign,
    .decrypt = p12_decrypt,
    .derive = p12_derive,
    .export_private = p12_export_private,
    .generate = p12_generate,
    .remove = p12_remove,
    .put_cert = p12_put_cert,
    .remove_cert = p12_remove_cert,
    .rename = p12_rename,
    .change_code = p12_change_code,
    .create = p12_create,
    .close = p12_close,
};

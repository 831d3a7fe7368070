/*
 * A pkcs11 token's objects as the token layer sees them: enumeration, refresh, targeted finds,
 * what a logged-out token hides, and loading a key handle (its objects, allowed mechanisms and
 * CKA_ALWAYS_AUTHENTICATE).
 */
#include <stdlib.h>
#include <string.h>

#include "p11.h"

/* Reports object o as enumeration does. */
static int report(ctok_token *tok, const struct p11_obj *o, ctok_object_cb cb, void *arg)
{
    struct ctok_object obj = {0};

    obj.label = o->label;
    obj.id = o->id;
    obj.id_len = o->id_len;
    obj.cert = o->cert;
    obj.pub = o->pub;
    obj.key_type = o->kt == CKK_RSA          ? CTOK_KT_RSA
                   : o->kt == CKK_EC         ? CTOK_KT_EC
                   : o->kt == CKK_EC_EDWARDS ? CTOK_KT_ED25519
                                             : ctok_key_type_of(o->pub);
    obj.type = o->cls == CKO_CERTIFICATE  ? CTOK_OBJ_CERT
               : o->cls == CKO_PUBLIC_KEY ? CTOK_OBJ_PUBLIC
                                          : CTOK_OBJ_PRIVATE;
    return cb(tok, &obj, arg);
}

/*
 * Objects another process made or removed show once read again from the token: one search
 * tells whether they changed (a full read decodes every certificate and public key again:
 * ~9 M instructions with three keys and their certificates on SoftHSM, the search ~0.3 M).
 */
int ctok_p11_refresh(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);
    int changed;

    if (!ctok_p11_enter_token(pt))
        return 1; /* the next enumeration says what is wrong */
    pthread_mutex_lock(&pt->lock);
    changed = !ctok_p11_objects_same(pt);
    if (changed)
        pt->objs_valid = 0;
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return changed;
}

int ctok_p11_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg)
{
    struct p11_tok *pt = P11TOK(tok);
    int ok = 1;

    if (!ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    if (!pt->objs_valid || pt->gen != pt->m->generation)
        ok = ctok_p11_catch_up(pt) && ctok_p11_objects_load(pt);
    for (size_t i = 0; ok && i < pt->n_objs; i++)
        ok = report(tok, &pt->objs[i], cb, arg);
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return ok;
}

/*
 * Runs fn, lock held, on the objects of types with this label and/or id: the cache when it is
 * current, else just those, read with C_FindObjects on CKA_LABEL / CKA_ID. A disconnect is
 * recovered from once (as a signature does), outside the region, with the first try's errors
 * dropped.
 */
static int with_objects(struct p11_tok *pt, const char *label, const uint8_t *id, size_t id_len,
                        unsigned int types,
                        int (*fn)(struct p11_tok *, const struct p11_obj *, size_t, void *),
                        void *arg)
{
    for (int attempt = 0;; attempt++) {
        struct p11_obj *v = NULL;
        size_t n = 0;
        int ok, owned = 0;
        unsigned int gen;
        CK_RV rv = CKR_OK;

        if (!ctok_p11_enter_token(pt))
            return 0;
        ERR_set_mark();
        pthread_mutex_lock(&pt->lock);
        ok = ctok_p11_catch_up(pt) &&
             ctok_p11_objects_find(pt, label, id, id_len, types, &v, &n, &owned, &rv);
        gen = pt->gen;
        if (ok)
            ok = fn(pt, v, n, arg);
        pthread_mutex_unlock(&pt->lock);
        ctok_p11_leave(pt->m);
        if (owned)
            ctok_p11_objects_free(v, n);
        if (ok || rv == CKR_OK || attempt > 0 || !ctok_p11_rv_is_disconnect(rv)) {
            ERR_clear_last_mark();
            return ok;
        }
        ERR_pop_to_mark();
        if (!ctok_p11_recover(pt, gen, rv, "reading its objects"))
            return 0;
    }
}

static int report_found(struct p11_tok *pt, const struct p11_obj *v, size_t n, void *filter)
{
    int ok = 1;

    for (size_t i = 0; ok && i < n; i++) /* the cache holds others too */
        ok = report(pt->tok, &v[i], ctok_filter_cb, filter);
    return ok;
}

/* Targeted lookup: a key load by label or id does not read every object of the token. */
int ctok_p11_find(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
                  unsigned int types, ctok_object_cb cb, void *arg)
{
    struct ctok_filter f = {label, id, id_len, types, cb, arg};

    return with_objects(P11TOK(tok), label, id, id_len, types, report_found, &f);
}

unsigned int ctok_p11_hidden(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);
    unsigned int h = 0;

    if (!ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    if (!pt->logged_in && (pt->tinfo.flags & CKF_LOGIN_REQUIRED) && ctok_p11_catch_up(pt)) {
        h = CTOK_OBJ_PRIVATE;
        /* no public certificate: they may be private (old single-PIN cards) */
        if (!ctok_p11_any_cert(pt))
            h |= CTOK_OBJ_CERT | CTOK_OBJ_PUBLIC;
    }
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return h;
}

/* Makes the key handle from the key's objects (v: those with its id, or every one). */
static int load_from(struct p11_tok *pt, const struct p11_obj *v, size_t n, void *arg)
{
    ctok_key *key = arg;
    ctok_token *tok = pt->tok;
    struct p11_key *k;
    const struct p11_obj *priv = NULL, *pub = NULL, *cert = NULL;
    int ok;

    for (size_t i = 0; i < n; i++) {
        const struct p11_obj *o = &v[i];

        if (o->id_len != key->id_len || memcmp(o->id, key->id, key->id_len) != 0)
            continue;
        if (o->cls == CKO_PRIVATE_KEY && priv == NULL)
            priv = o;
        else if (o->cls == CKO_PUBLIC_KEY && o->pub != NULL && pub == NULL)
            pub = o;
        else if (o->cls == CKO_CERTIFICATE && o->pub != NULL && cert == NULL)
            cert = o;
    }
    ok = 0;
    if (priv != NULL && (k = calloc(1, sizeof(*k))) != NULL) {
        EVP_PKEY *p = priv->pub != NULL ? priv->pub
                      : pub != NULL     ? pub->pub
                      : cert            ? cert->pub
                                        : NULL;

        pthread_mutex_init(&k->lock, NULL);
        k->h = CK_INVALID_HANDLE;
        k->gen = 0; /* looked up, and copied into session objects, at first use */
        key->be_data = k;
        key->label = strdup(priv->label);
        key->type = priv->kt == CKK_RSA  ? CTOK_KT_RSA
                    : priv->kt == CKK_EC ? CTOK_KT_EC
                                         : CTOK_KT_ED25519;
        if (p != NULL && EVP_PKEY_up_ref(p))
            key->pub = p;
        ok = key->pub != NULL && key->label != NULL;
        if (!ok && key->pub == NULL)
            CTOK_ERR(CTOK_R_BACKEND,
                     "token '%s', key '%s': its public key is neither on the key, "
                     "nor in a public key object, nor in a certificate with the same CKA_ID",
                     ctok_token_name(tok), priv->label);
    } else if (priv == NULL) {
        char hex[2 * CTOK_MAX_ID + 1];

        ctok_hex(key->id, key->id_len, hex);
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no private key with CKA_ID %s",
                 ctok_token_name(tok), hex);
    }
    return ok;
}

static int read_allowed(struct p11_tok *pt, ctok_key *key);
/* p11auth: CKA_ALWAYS_AUTHENTICATE of the key, once per key handle (absent: false). */
static CK_RV read_always_auth(struct p11_tok *pt, CK_SESSION_HANDLE s, void *arg)
{
    ctok_key *key = arg;
    struct p11_key *k = key->be_data;
    CK_OBJECT_HANDLE h;
    CK_BBOOL v = CK_FALSE;
    CK_ATTRIBUTE t = {CKA_ALWAYS_AUTHENTICATE, &v, sizeof(v)};
    CK_RV rv = ctok_p11_find_key(pt, s, CKO_PRIVATE_KEY, key->id, key->id_len, &h);

    if (rv == CKR_OK && P11_QUIET(pt->m, C_GetAttributeValue, (s, h, &t, 1)) == CKR_OK &&
        t.ulValueLen == sizeof(v))
        k->always_auth = v == CK_TRUE;
    if (k->always_auth)
        CTOK_DBG("pkcs11: token '%s', key '%s': CKA_ALWAYS_AUTHENTICATE: a context-specific login "
                 "after each signature start",
                 ctok_token_name(pt->tok), key->label);
    return rv;
}

int ctok_p11_key_load(ctok_token *tok, ctok_key *key)
{
    if (!with_objects(P11TOK(tok), NULL, key->id, key->id_len, CTOK_OBJ_ANY, load_from, key) ||
        !read_allowed(P11TOK(tok), key) || !ctok_p11_key_mechs(key))
        return 0;
    /* a key that cannot be read again now fails at its first use with the module's reason */
    ERR_set_mark();
    (void)ctok_p11_with_session(P11TOK(tok), read_always_auth, key);
    ERR_pop_to_mark();
    return 1;
}

void ctok_p11_key_free(ctok_key *key)
{
    struct p11_key *k = key->be_data;

    /* its session copies are the token object's, shared with the next key handle of it */
    pthread_mutex_destroy(&k->lock);
    free(k);
    key->be_data = NULL;
}

static CK_RV do_read_allowed(struct p11_tok *pt, CK_SESSION_HANDLE s, void *arg)
{
    ctok_key *key = arg;
    struct p11_key *k = key->be_data;
    CK_BBOOL use[3] = {CK_TRUE, CK_TRUE, CK_TRUE};
    /* one call: the usage flags cost no round trip of their own */
    CK_ATTRIBUTE a[] = {{CKA_ALLOWED_MECHANISMS, k->allowed, sizeof(k->allowed)},
                        {CKA_SIGN, &use[0], 1},
                        {CKA_DECRYPT, &use[1], 1},
                        {CKA_DERIVE, &use[2], 1}};
    static const unsigned int bits[] = {CTOK_USE_SIGN, CTOK_USE_DECRYPT, CTOK_USE_DERIVE};
    CK_OBJECT_HANDLE h;
    CK_RV rv = ctok_p11_find_key(pt, s, CKO_PRIVATE_KEY, key->id, key->id_len, &h);

    if (rv == CKR_OK)
        rv = P11_QUIET(pt->m, C_GetAttributeValue, (s, h, a, 4));
    /* an attribute the token lacks (or will not say) leaves the others answered */
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE &&
        rv != CKR_BUFFER_TOO_SMALL)
        return rv;
    for (size_t i = 0; i < 3; i++)
        if (a[i + 1].ulValueLen == 1 && use[i] == CK_FALSE)
            key->usage &= ~bits[i];
    if (a[0].ulValueLen != CK_UNAVAILABLE_INFORMATION) {
        k->n_allowed = a[0].ulValueLen / sizeof(k->allowed[0]);
        k->restricted = k->n_allowed > 0;
    }
    return rv == CKR_OK || k->restricted ? CKR_OK : rv;
}

/*
 * p11mech: the key's CKA_ALLOWED_MECHANISMS, read once per key handle. Absent or empty
 * (or unreadable, or longer than ctok keeps): unrestricted, and the token has the last word.
 */
static int read_allowed(struct p11_tok *pt, ctok_key *key)
{
    struct p11_key *k = key->be_data;
    CK_RV rv;

    ERR_set_mark();
    rv = ctok_p11_with_session(pt, do_read_allowed, key);
    ERR_pop_to_mark();
    if (rv != CKR_OK || !k->restricted) {
        k->restricted = 0;
        k->n_allowed = 0;
        CTOK_DBG("pkcs11: token '%s', key '%s': no mechanism restriction (%s)",
                 ctok_token_name(pt->tok), key->label,
                 rv == CKR_OK ? "CKA_ALLOWED_MECHANISMS empty" : ctok_p11_rv_name(rv));
    } else {
        key->allowed = k->allowed;
        key->n_allowed = k->n_allowed;
    }
    return 1;
}

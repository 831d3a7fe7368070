/*
 * Writing to a PKCS#11 token: key pair generation (with the token's attribute file, in
 * the SunPKCS11 syntax EJBCA uses), key removal and certificate import.
 *
 *   attributes(generate, CKO_PRIVATE_KEY, *) = {
 *     CKA_SENSITIVE = true
 *     CKA_EXTRACTABLE = false
 *   }
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/rand.h>

#include "p11.h"

#define MAX_ATTRS 40

struct tmpl {
    CK_ATTRIBUTE a[MAX_ATTRS];
    CK_BBOOL b[MAX_ATTRS];
    size_t n;
};

static void set_bool(struct tmpl *t, CK_ATTRIBUTE_TYPE type, CK_BBOOL v)
{
    size_t i;

    for (i = 0; i < t->n && t->a[i].type != type; i++)
        ;
    if (i == MAX_ATTRS)
        return;
    t->b[i] = v;
    t->a[i].type = type;
    t->a[i].pValue = &t->b[i];
    t->a[i].ulValueLen = sizeof(CK_BBOOL);
    if (i == t->n)
        t->n++;
}

static void set_bytes(struct tmpl *t, CK_ATTRIBUTE_TYPE type, const void *v, size_t len)
{
    if (t->n < MAX_ATTRS) {
        t->a[t->n].type = type;
        t->a[t->n].pValue = (void *)v;
        t->a[t->n].ulValueLen = len;
        t->n++;
    }
}

static const struct {
    const char *name;
    CK_ATTRIBUTE_TYPE type;
} bool_attrs[] = {
    {"CKA_TOKEN", CKA_TOKEN},
    {"CKA_PRIVATE", CKA_PRIVATE},
    {"CKA_SENSITIVE", CKA_SENSITIVE},
    {"CKA_EXTRACTABLE", CKA_EXTRACTABLE},
    {"CKA_MODIFIABLE", CKA_MODIFIABLE},
    {"CKA_SIGN", CKA_SIGN},
    {"CKA_VERIFY", CKA_VERIFY},
    {"CKA_DECRYPT", CKA_DECRYPT},
    {"CKA_ENCRYPT", CKA_ENCRYPT},
    {"CKA_DERIVE", CKA_DERIVE},
    {"CKA_WRAP", CKA_WRAP},
    {"CKA_UNWRAP", CKA_UNWRAP},
    {"CKA_SIGN_RECOVER", CKA_SIGN_RECOVER},
    {"CKA_VERIFY_RECOVER", CKA_VERIFY_RECOVER},
    {"CKA_ALWAYS_AUTHENTICATE", CKA_ALWAYS_AUTHENTICATE},
    {"CKA_WRAP_WITH_TRUSTED", CKA_WRAP_WITH_TRUSTED},
    {"CKA_TRUSTED", CKA_TRUSTED},
};

static char *trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Does a section header's (op, class, keytype) apply to this generation? */
static int section_applies(const char *hdr, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt)
{
    char op[32], c[32], k[32];

    if (sscanf(hdr, " attributes ( %31[^, ] , %31[^, ] , %31[^) ] )", op, c, k) != 3)
        return -1;
    if (strcmp(op, "*") != 0 && strcmp(op, "generate") != 0)
        return 0;
    if (strcmp(c, "*") != 0 && !((strcmp(c, "CKO_PRIVATE_KEY") == 0 && cls == CKO_PRIVATE_KEY) ||
                                 (strcmp(c, "CKO_PUBLIC_KEY") == 0 && cls == CKO_PUBLIC_KEY)))
        return 0;
    if (strcmp(k, "*") != 0 && !((strcmp(k, "CKK_RSA") == 0 && kt == CKK_RSA) ||
                                 (strcmp(k, "CKK_EC") == 0 && kt == CKK_EC) ||
                                 (strcmp(k, "CKK_EC_EDWARDS") == 0 && kt == CKK_EC_EDWARDS)))
        return 0;
    return 1;
}

/* Applies the attribute file to a template; errors name file and line. */
static int apply_file(const char *tokname, const char *path, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt,
                      struct tmpl *t)
{
    char line[512], what[160];
    int lineno = 0, in = 0, applies = 0, fd;
    FILE *f;

    snprintf(what, sizeof(what), "token '%s': attribute file", tokname);
    if ((fd = ctok_file_open(path, 0, CTOK_R_CONFIG, what)) < 0)
        return 0;
    if ((f = fdopen(fd, "r")) == NULL) {
        close(fd);
        CTOK_ERR(CTOK_R_IO, "token '%s': cannot read attribute file '%s'", tokname, path);
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *s = trim(line), *eq;

        lineno++;
        if (*s == '\0' || *s == '#')
            continue;
        if (!in) {
            if (strncmp(s, "attributes", 10) == 0) {
                char *brace = strchr(s, '{');

                if (brace == NULL || (*brace = '\0', applies = section_applies(s, cls, kt)) < 0)
                    goto bad;
                in = 1;
                continue;
            }
            if (strncmp(s, "name", 4) == 0 || strncmp(s, "library", 7) == 0 ||
                strncmp(s, "slot", 4) == 0)
                continue; /* the rest of a SunPKCS11 configuration: not ours */
            goto bad;
        }
        if (*s == '}') {
            in = 0;
            continue;
        }
        eq = strchr(s, '=');
        if (eq == NULL)
            goto bad;
        *eq = '\0';
        {
            char *name = trim(s), *val = trim(eq + 1);
            size_t k;

            for (k = 0; k < sizeof(bool_attrs) / sizeof(bool_attrs[0]); k++)
                if (strcmp(name, bool_attrs[k].name) == 0)
                    break;
            if (k == sizeof(bool_attrs) / sizeof(bool_attrs[0]) ||
                (strcmp(val, "true") != 0 && strcmp(val, "false") != 0)) {
                fclose(f);
                CTOK_ERR(CTOK_R_CONFIG,
                         "%s:%d: token '%s': unsupported attribute '%s = %s' "
                         "(boolean CKA_* attributes: true or false)",
                         path, lineno, tokname, name, val);
                return 0;
            }
            if (applies)
                set_bool(t, bool_attrs[k].type, strcmp(val, "true") == 0);
        }
    }
    fclose(f);
    if (in) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': a section is not closed with '}'", path, tokname);
        return 0;
    }
    return 1;
bad:
    fclose(f);
    CTOK_ERR(CTOK_R_CONFIG,
             "%s:%d: token '%s': expected 'attributes(generate|*, CKO_..., "
             "CKK_...|*) = {' or 'CKA_X = true|false'",
             path, lineno, tokname);
    return 0;
}

/* A session on which the user is logged in, for writes: enters a region on success. */
static int write_session(ctok_token *tok, CK_SESSION_HANDLE *s, unsigned int *gen)
{
    struct p11_tok *pt = P11TOK(tok);
    CK_RV rv;

    if (!ctok_token_is_active(tok)) {
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s' must be activated to be modified",
                 ctok_token_name(tok));
        return 0;
    }
    if (!ctok_p11_enter_token(pt))
        return 0;
    if (!ctok_p11_session_get(pt, s, gen, &rv)) {
        ctok_p11_leave(pt->m);
        return 0;
    }
    return 1;
}

static void write_done(struct p11_tok *pt, CK_SESSION_HANDLE s, unsigned int gen)
{
    ctok_p11_session_put(pt, s, gen);
    pthread_mutex_lock(&pt->lock);
    pt->objs_valid = 0;
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
}

/* Reads the token's objects if needed. In a region, lock held. */
static void refresh(struct p11_tok *pt)
{
    if (!pt->objs_valid || pt->gen != pt->m->generation)
        (void)ctok_p11_objects_load(pt);
}

/* Does an object of class cls carry this label (but for the objects of CKA_ID id, if given)? */
static int label_used_but(struct p11_tok *pt, CK_OBJECT_CLASS cls, const char *alias,
                          const uint8_t *id, size_t id_len)
{
    int used = 0;

    if (!ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    refresh(pt);
    for (size_t i = 0; i < pt->n_objs; i++)
        used |=
            pt->objs[i].cls == cls && strcmp(pt->objs[i].label, alias) == 0 &&
            (id == NULL || pt->objs[i].id_len != id_len || memcmp(pt->objs[i].id, id, id_len) != 0);
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return used;
}

static int label_used(struct p11_tok *pt, CK_OBJECT_CLASS cls, const char *alias)
{
    return label_used_but(pt, cls, alias, NULL, 0);
}

static int ec_params_der(const char *group, uint8_t **der, int *len)
{
    ASN1_OBJECT *oid = OBJ_nid2obj(OBJ_sn2nid(group));

    *der = NULL;
    *len = oid != NULL ? i2d_ASN1_OBJECT(oid, der) : -1;
    return *len > 0;
}

int ctok_p11_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec)
{
    struct p11_tok *pt = P11TOK(tok);
    struct tmpl pub = {0}, priv = {0};
    CK_MECHANISM mech = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_KEY_TYPE kt = spec->type == CTOK_KT_EC        ? CKK_EC
                     : spec->type == CTOK_KT_ED25519 ? CKK_EC_EDWARDS
                                                     : CKK_RSA;
    CK_ULONG bits = (CK_ULONG)spec->bits;
    static const uint8_t f4[] = {1, 0, 1};
    uint8_t tmp_id[20], id[20], *params = NULL;
    int plen = 0, ok = 0;
    CK_OBJECT_HANDLE hpub, hpriv;
    CK_SESSION_HANDLE s;
    unsigned int gen;
    EVP_PKEY *pk = NULL;
    CK_RV rv;

    if (label_used(pt, CKO_PRIVATE_KEY, alias)) {
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': a key named '%s' exists already",
                 ctok_token_name(tok), alias);
        return 0;
    }
    if (RAND_bytes(tmp_id, sizeof(tmp_id)) != 1)
        return 0;
    set_bool(&pub, CKA_TOKEN, CK_TRUE);
    set_bool(&pub, CKA_PRIVATE, CK_FALSE);
    set_bool(&pub, CKA_VERIFY, CK_TRUE);
    set_bool(&priv, CKA_TOKEN, CK_TRUE);
    set_bool(&priv, CKA_PRIVATE, CK_TRUE);
    set_bool(&priv, CKA_SENSITIVE, CK_TRUE);
    set_bool(&priv, CKA_EXTRACTABLE, CK_FALSE);
    set_bool(&priv, CKA_SIGN, CK_TRUE);
    if (kt == CKK_RSA) {
        set_bool(&pub, CKA_ENCRYPT, CK_TRUE);
        set_bool(&priv, CKA_DECRYPT, CK_TRUE);
        set_bytes(&pub, CKA_MODULUS_BITS, &bits, sizeof(bits));
        set_bytes(&pub, CKA_PUBLIC_EXPONENT, f4, sizeof(f4));
    } else {
        if (kt == CKK_EC)
            set_bool(&priv, CKA_DERIVE, CK_TRUE);
        mech.mechanism = kt == CKK_EC ? CKM_EC_KEY_PAIR_GEN : CKM_EC_EDWARDS_KEY_PAIR_GEN;
        if (!ec_params_der(kt == CKK_EC ? spec->group : "ED25519", &params, &plen))
            return 0;
        set_bytes(&pub, CKA_EC_PARAMS, params, (size_t)plen);
    }
    if (pt->attributes != NULL &&
        (!apply_file(ctok_token_name(tok), pt->attributes, CKO_PUBLIC_KEY, kt, &pub) ||
         !apply_file(ctok_token_name(tok), pt->attributes, CKO_PRIVATE_KEY, kt, &priv)))
        goto end;
    set_bytes(&pub, CKA_LABEL, alias, strlen(alias));
    set_bytes(&priv, CKA_LABEL, alias, strlen(alias));
    set_bytes(&pub, CKA_ID, tmp_id, sizeof(tmp_id));
    set_bytes(&priv, CKA_ID, tmp_id, sizeof(tmp_id));
    if (!write_session(tok, &s, &gen))
        goto end;
    rv =
        P11_CALL(pt->m, C_GenerateKeyPair, (s, &mech, pub.a, pub.n, priv.a, priv.n, &hpub, &hpriv));
    if (rv != CKR_OK) {
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': generating key '%s' failed: %s", ctok_token_name(tok),
                 alias, ctok_p11_rv_name(rv));
    } else {
        /* the id everyone else uses: SHA-1 of the public key (cert import matches on it) */
        CK_ATTRIBUTE a = {CKA_ID, id, sizeof(id)};

        pk = ctok_p11_public_key(pt, s, hpub, kt);
        if (pk != NULL && ctok_pub_id(pk, id) &&
            P11_CALL(pt->m, C_SetAttributeValue, (s, hpub, &a, 1)) == CKR_OK)
            (void)P11_CALL(pt->m, C_SetAttributeValue, (s, hpriv, &a, 1));
        ok = 1;
    }
    write_done(pt, s, gen);
end:
    EVP_PKEY_free(pk);
    OPENSSL_free(params);
    return ok;
}

/*
 * The handles (at most 64) of the objects of class *cls (NULL: any) with this label (else this
 * CKA_ID), found in session s.
 */
static CK_RV find_handles(struct p11_tok *pt, CK_SESSION_HANDLE s, const CK_OBJECT_CLASS *cls,
                          const char *label, const uint8_t *id, size_t id_len,
                          CK_OBJECT_HANDLE h[64], CK_ULONG *n)
{
    CK_ATTRIBUTE t[2];
    CK_ULONG nt = 0;
    CK_RV rv;

    if (cls != NULL)
        t[nt++] = (CK_ATTRIBUTE){CKA_CLASS, (void *)cls, sizeof(*cls)};
    t[nt++] = label != NULL ? (CK_ATTRIBUTE){CKA_LABEL, (void *)label, strlen(label)}
                            : (CK_ATTRIBUTE){CKA_ID, (void *)id, id_len};
    *n = 0;
    rv = ctok_p11_find_init(pt, s, t, nt);
    if (rv == CKR_OK)
        rv = P11_CALL(pt->m, C_FindObjects, (s, h, 64, n));
    (void)P11_CALL(pt->m, C_FindObjectsFinal, (s));
    return rv;
}

static CK_RV destroy_handles(struct p11_tok *pt, CK_SESSION_HANDLE s, const CK_OBJECT_HANDLE *h,
                             CK_ULONG n)
{
    CK_RV rv = CKR_OK;

    for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++)
        rv = P11_CALL(pt->m, C_DestroyObject, (s, h[i]));
    return rv;
}

/* Destroys every object with this CKA_ID: the key pair and its certificates. */
static int destroy_id(struct p11_tok *pt, CK_SESSION_HANDLE s, const uint8_t *id, size_t len)
{
    CK_OBJECT_HANDLE h[64];
    CK_ULONG n = 0;
    CK_RV rv = find_handles(pt, s, NULL, NULL, id, len, h, &n);

    if (rv == CKR_OK)
        rv = destroy_handles(pt, s, h, n);
    if (rv != CKR_OK)
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': removing objects failed: %s",
                 ctok_token_name(pt->tok), ctok_p11_rv_name(rv));
    return rv == CKR_OK;
}

/*
 * The CKA_ID of the private key labelled alias, for an operation that goes by it (verb:
 * "remove", "rename"): an empty or shared one would reach other keys too.
 */
static int key_id(ctok_token *tok, const char *alias, const char *verb, uint8_t *id, size_t *id_len)
{
    struct p11_tok *pt = P11TOK(tok);
    int found = 0, same_id = 0;

    if (!ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    refresh(pt);
    for (size_t i = 0; i < pt->n_objs && !found; i++)
        if (pt->objs[i].cls == CKO_PRIVATE_KEY && strcmp(pt->objs[i].label, alias) == 0) {
            found = 1;
            *id_len = pt->objs[i].id_len;
            memcpy(id, pt->objs[i].id, *id_len);
        }
    for (size_t i = 0; i < pt->n_objs && found; i++)
        same_id += pt->objs[i].cls == CKO_PRIVATE_KEY && pt->objs[i].id_len == *id_len &&
                   memcmp(pt->objs[i].id, id, *id_len) == 0;
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    if (!found) {
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no key named '%s'", ctok_token_name(tok), alias);
        return 0;
    }
    if (*id_len == 0 || same_id != 1) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s' %s; refusing to %s it (it cannot be told apart)",
                 ctok_token_name(tok), alias,
                 *id_len == 0 ? "has no CKA_ID" : "shares its CKA_ID with another key", verb);
        return 0;
    }
    return 1;
}

int ctok_p11_remove(ctok_token *tok, const char *alias, char *note, size_t notelen)
{
    (void)note;
    (void)notelen;
    struct p11_tok *pt = P11TOK(tok);
    uint8_t id[CTOK_MAX_ID];
    size_t id_len = 0;
    CK_SESSION_HANDLE s;
    unsigned int gen;
    int ok;

    if (!key_id(tok, alias, "remove", id, &id_len) || !write_session(tok, &s, &gen))
        return 0;
    ok = destroy_id(pt, s, id, id_len);
    write_done(pt, s, gen);
    return ok;
}

/* The id a new certificate gets: its key's on the token, else the one of the certificate it
 * replaces (replace), else its own key identifier. */
static void cert_id(struct p11_tok *pt, EVP_PKEY *cpub, const char *replaces, uint8_t *id,
                    size_t *id_len)
{
    *id_len = 0;
    if (!ctok_p11_enter_token(pt))
        return;
    pthread_mutex_lock(&pt->lock);
    refresh(pt);
    for (size_t i = 0; i < pt->n_objs && *id_len == 0; i++)
        if (pt->objs[i].cls != CKO_CERTIFICATE && pt->objs[i].pub != NULL &&
            EVP_PKEY_eq(pt->objs[i].pub, cpub) == 1) {
            *id_len = pt->objs[i].id_len;
            memcpy(id, pt->objs[i].id, *id_len);
        }
    for (size_t i = 0; i < pt->n_objs && *id_len == 0 && replaces != NULL; i++)
        if (pt->objs[i].cls == CKO_CERTIFICATE && strcmp(pt->objs[i].label, replaces) == 0) {
            *id_len = pt->objs[i].id_len;
            memcpy(id, pt->objs[i].id, *id_len);
        }
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    if (*id_len == 0 && ctok_pub_id(cpub, id))
        *id_len = 20;
}

static const CK_OBJECT_CLASS cert_class = CKO_CERTIFICATE;

/* Creates the certificate object; with replace, then destroys the certificates it replaces
 * (found before: a failed create leaves them). */
static int create_cert(ctok_token *tok, CK_ATTRIBUTE *t, CK_ULONG nt, const char *alias,
                       int replace)
{
    struct p11_tok *pt = P11TOK(tok);
    CK_OBJECT_HANDLE h, old[64];
    CK_ULONG n_old = 0;
    CK_SESSION_HANDLE s;
    unsigned int gen;
    CK_RV rv = CKR_OK;
    const char *step = "finding the certificate it replaces";

    if (!write_session(tok, &s, &gen))
        return 0;
    if (replace)
        rv = find_handles(pt, s, &cert_class, alias, NULL, 0, old, &n_old);
    if (rv == CKR_OK && replace && n_old == 0) {
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no certificate named '%s' to replace",
                 ctok_token_name(tok), alias);
        write_done(pt, s, gen);
        return 0;
    }
    if (rv == CKR_OK) {
        step = "storing it";
        rv = P11_CALL(pt->m, C_CreateObject, (s, t, nt, &h));
    }
    if (rv == CKR_OK) {
        step = "the new one is stored, but removing the one it replaces failed";
        rv = destroy_handles(pt, s, old, n_old);
    }
    if (rv != CKR_OK)
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': certificate '%s': %s: %s", ctok_token_name(tok),
                 alias, step, ctok_p11_rv_name(rv));
    write_done(pt, s, gen);
    return rv == CKR_OK;
}

int ctok_p11_put_cert(ctok_token *tok, const char *alias, X509 *cert, int replace)
{
    struct p11_tok *pt = P11TOK(tok);
    EVP_PKEY *cpub = X509_get0_pubkey(cert);
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ct = CKC_X_509;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    uint8_t id[CTOK_MAX_ID], *der = NULL, *subj = NULL, *iss = NULL, *ser = NULL;
    size_t id_len = 0;
    int dl, sl, il, nl, ok = 0;

    if (cpub == NULL)
        return 0;
    if (!replace && label_used(pt, CKO_CERTIFICATE, alias)) {
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': a certificate named '%s' exists already",
                 ctok_token_name(tok), alias);
        return 0;
    }
    cert_id(pt, cpub, replace ? alias : NULL, id, &id_len);
    dl = i2d_X509(cert, &der);
    sl = i2d_X509_NAME(X509_get_subject_name(cert), &subj);
    il = i2d_X509_NAME(X509_get_issuer_name(cert), &iss);
    nl = i2d_ASN1_INTEGER(X509_get0_serialNumber(cert), &ser);
    if (dl > 0 && sl > 0 && il > 0 && nl > 0) {
        CK_ATTRIBUTE t[] = {
            {CKA_CLASS, &cls, sizeof(cls)},
            {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)},
            {CKA_TOKEN, &yes, sizeof(yes)},
            {CKA_PRIVATE, &no, sizeof(no)},
            {CKA_LABEL, (void *)alias, strlen(alias)},
            {CKA_ID, id, id_len},
            {CKA_VALUE, der, (CK_ULONG)dl},
            {CKA_SUBJECT, subj, (CK_ULONG)sl},
            {CKA_ISSUER, iss, (CK_ULONG)il},
            {CKA_SERIAL_NUMBER, ser, (CK_ULONG)nl},
        };

        ok = create_cert(tok, t, sizeof(t) / sizeof(t[0]), alias, replace);
    }
    OPENSSL_free(der);
    OPENSSL_free(subj);
    OPENSSL_free(iss);
    OPENSSL_free(ser);
    return ok;
}

int ctok_p11_remove_cert(ctok_token *tok, const char *label)
{
    struct p11_tok *pt = P11TOK(tok);
    CK_OBJECT_HANDLE h[64];
    CK_ULONG n = 0;
    CK_SESSION_HANDLE s;
    unsigned int gen;
    CK_RV rv;

    if (!write_session(tok, &s, &gen))
        return 0;
    rv = find_handles(pt, s, &cert_class, label, NULL, 0, h, &n);
    if (rv == CKR_OK)
        rv = destroy_handles(pt, s, h, n);
    write_done(pt, s, gen);
    if (rv != CKR_OK)
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': removing certificate '%s' failed: %s",
                 ctok_token_name(tok), label, ctok_p11_rv_name(rv));
    else if (n == 0 && label_used(pt, CKO_PRIVATE_KEY, label))
        CTOK_ERR(CTOK_R_NOT_FOUND,
                 "token '%s': '%s' names a key and no certificate; 'ctok key remove' removes keys",
                 ctok_token_name(tok), label);
    else if (n == 0)
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no certificate named '%s'", ctok_token_name(tok),
                 label);
    return rv == CKR_OK && n > 0;
}

/* C_SetAttributeValue CKA_LABEL, as p11tool --set-label: on the certificates labelled old, or on
 * every object with the CKA_ID of the key named old. */
int ctok_p11_rename(ctok_token *tok, unsigned int type, const char *old, const char *new_label)
{
    struct p11_tok *pt = P11TOK(tok);
    int is_key = type != CTOK_OBJ_CERT;
    const char *what = is_key ? "key" : "certificate";
    CK_ATTRIBUTE a = {CKA_LABEL, (void *)new_label, strlen(new_label)};
    CK_OBJECT_HANDLE h[64];
    CK_ULONG n = 0;
    CK_SESSION_HANDLE s;
    unsigned int gen;
    uint8_t id[CTOK_MAX_ID];
    size_t id_len = 0;
    CK_RV rv;

    if (label_used(pt, is_key ? CKO_PRIVATE_KEY : CKO_CERTIFICATE, new_label)) {
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': a %s named '%s' exists already",
                 ctok_token_name(tok), what, new_label);
        return 0;
    }
    if (is_key && !key_id(tok, old, "rename", id, &id_len))
        return 0;
    /* the key's certificates take its new label: it must not be another certificate's */
    if (is_key && label_used_but(pt, CKO_CERTIFICATE, new_label, id, id_len)) {
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': a certificate of another key is named '%s'",
                 ctok_token_name(tok), new_label);
        return 0;
    }
    if (!write_session(tok, &s, &gen))
        return 0;
    rv = is_key ? find_handles(pt, s, NULL, NULL, id, id_len, h, &n)
                : find_handles(pt, s, &cert_class, old, NULL, 0, h, &n);
    for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++)
        rv = P11_CALL(pt->m, C_SetAttributeValue, (s, h[i], &a, 1));
    write_done(pt, s, gen);
    if (rv != CKR_OK)
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': renaming %s '%s' failed: %s", ctok_token_name(tok),
                 what, old, ctok_p11_rv_name(rv));
    else if (n == 0)
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no %s named '%s'", ctok_token_name(tok), what, old);
    return rv == CKR_OK && n > 0;
}

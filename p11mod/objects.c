/*
 * Objects: what the token's enumeration yields (the one `ctok key list` and storeutl see),
 * with the label and id ctok's lookup matches, plus a public key object for each key id that
 * has none (a keystore or a KMS holds a private key and its certificate: applications such
 * as OpenSSH look for public keys). Private keys show once the user is logged in (CKA_PRIVATE),
 * or always on a token that needs no login: no code, or one its configuration names. Handles stay
 * the same for the same object while the module is initialized.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/objects.h>

#include "p11mod.h"

static void obj_clear(struct mod_obj *o)
{
    free(o->label);
    X509_free(o->cert);
    EVP_PKEY_free(o->pub);
}

void mod_objects_free(struct mod_slot *slot)
{
    for (size_t i = 0; i < slot->n_objs; i++)
        obj_clear(&slot->objs[i]);
    free(slot->objs);
    slot->objs = NULL;
    slot->n_objs = 0;
    slot->have_objs = 0;
}

struct load {
    struct mod_slot *slot;
    struct mod_obj *objs;
    size_t n;
    int private_ok;
    int failed;
};

static CK_OBJECT_CLASS class_of(enum ctok_obj_type t)
{
    return t == CTOK_OBJ_CERT     ? CKO_CERTIFICATE
           : t == CTOK_OBJ_PUBLIC ? CKO_PUBLIC_KEY
                                  : CKO_PRIVATE_KEY;
}

static struct mod_obj *find_obj(struct mod_obj *objs, size_t n, CK_OBJECT_CLASS cls,
                                const uint8_t *id, size_t id_len, const char *label)
{
    for (size_t i = 0; i < n; i++)
        if (objs[i].cls == cls && objs[i].id_len == id_len && memcmp(objs[i].id, id, id_len) == 0 &&
            (label == NULL || strcmp(objs[i].label, label) == 0))
            return &objs[i];
    return NULL;
}

struct mod_obj *mod_object_find(struct mod_slot *slot, CK_OBJECT_CLASS cls, const uint8_t *id,
                                size_t id_len, const char *label)
{
    return find_obj(slot->objs, slot->n_objs, cls, id, id_len, label);
}

static int add_obj(struct load *l, CK_OBJECT_CLASS cls, const char *label, const uint8_t *id,
                   size_t id_len, enum ctok_key_type kt, X509 *cert, EVP_PKEY *pub)
{
    struct mod_obj *objs = realloc(l->objs, (l->n + 1) * sizeof(*objs)), *o, *old;

    if (objs == NULL)
        return 0;
    l->objs = objs;
    o = &objs[l->n];
    memset(o, 0, sizeof(*o));
    o->cls = cls;
    o->key_type = kt;
    o->id_len = id_len <= CTOK_MAX_ID ? id_len : CTOK_MAX_ID;
    memcpy(o->id, id, o->id_len);
    if ((o->label = strdup(label != NULL ? label : "")) == NULL)
        return 0;
    if ((cert != NULL && !X509_up_ref(cert)) || (pub != NULL && !EVP_PKEY_up_ref(pub))) {
        free(o->label);
        return 0;
    }
    o->cert = cert;
    o->pub = pub;
    old = find_obj(l->slot->objs, l->slot->n_objs, cls, o->id, o->id_len, o->label);
    o->handle = old != NULL ? old->handle : mod.next_handle++;
    l->n++;
    return 1;
}

static int collect(ctok_token *tok, const struct ctok_object *obj, void *arg)
{
    struct load *l = arg;

    (void)tok;
    if (obj->type == CTOK_OBJ_PRIVATE && !l->private_ok)
        return 1;
    if (!add_obj(l, class_of(obj->type), obj->label, obj->id, obj->id_len, obj->key_type, obj->cert,
                 obj->pub)) {
        l->failed = 1;
        return 0;
    }
    return 1;
}

/* A public key object for each key id that has a public key but no public object. */
static int add_public_twins(struct load *l)
{
    size_t n = l->n;

    for (size_t i = 0; i < n; i++) {
        struct mod_obj o = l->objs[i];

        if (o.cls == CKO_PUBLIC_KEY || o.pub == NULL ||
            find_obj(l->objs, l->n, CKO_PUBLIC_KEY, o.id, o.id_len, NULL) != NULL)
            continue;
        if (!add_obj(l, CKO_PUBLIC_KEY, o.label, o.id, o.id_len, o.key_type, NULL, o.pub))
            return 0;
    }
    return 1;
}

CK_RV mod_objects_load(struct mod_slot *slot)
{
    struct load l = {slot, NULL, 0, slot->logged_in || !ctok_token_needs_code(slot->tok), 0};
    int ok;

    if (slot->have_objs)
        return CKR_OK;
    /* a code from the configuration: once a find activated the token with it (enter_find) */
    if (!l.private_ok && !mod_login_required(slot->tok))
        l.private_ok = ctok_token_is_active(slot->tok);
    ok = ctok_token_enumerate(slot->tok, collect, &l) && !l.failed && add_public_twins(&l);
    if (!ok) {
        for (size_t i = 0; i < l.n; i++)
            obj_clear(&l.objs[i]);
        free(l.objs);
        return l.failed ? CKR_HOST_MEMORY : mod_rv_from_error(CKR_DEVICE_ERROR);
    }
    for (size_t i = 0; i < slot->n_objs; i++)
        obj_clear(&slot->objs[i]);
    free(slot->objs);
    slot->objs = l.objs;
    slot->n_objs = l.n;
    slot->have_objs = 1;
    /* a token without a mechanism list offers what its keys sign: those seen now */
    mod_mechs_forget(slot);
    return CKR_OK;
}

struct mod_obj *mod_object_get(struct mod_slot *slot, CK_OBJECT_HANDLE h)
{
    if (mod_objects_load(slot) != CKR_OK)
        return NULL;
    for (size_t i = 0; i < slot->n_objs; i++)
        if (slot->objs[i].handle == h)
            return &slot->objs[i];
    return NULL;
}

/* ---- attribute values ---- */

/* An attribute's value: in small, or in heap (freed by val_clear). */
struct val {
    union {
        CK_ULONG ul;
        CK_BBOOL b;
        uint8_t bytes[sizeof(CK_ULONG)];
    } small;
    uint8_t *heap;
    const void *p;
    size_t len;
};

static void val_clear(struct val *v)
{
    OPENSSL_free(v->heap);
    v->heap = NULL;
}

static CK_RV ulong_val(struct val *v, CK_ULONG x)
{
    v->small.ul = x;
    v->p = &v->small.ul;
    v->len = sizeof(CK_ULONG);
    return CKR_OK;
}

static CK_RV bool_val(struct val *v, int x)
{
    v->small.b = x ? CK_TRUE : CK_FALSE;
    v->p = &v->small.b;
    v->len = sizeof(CK_BBOOL);
    return CKR_OK;
}

static CK_RV bytes_val(struct val *v, const void *p, size_t len)
{
    v->p = p;
    v->len = len;
    return CKR_OK;
}

/* Takes a DER encoding made by i2d (len < 0: failed). */
static CK_RV der_val(struct val *v, uint8_t *der, int len)
{
    if (len < 0)
        return CKR_GENERAL_ERROR;
    v->heap = der;
    return bytes_val(v, der, (size_t)len);
}

/* i2d runs before der_ is read: as one call's arguments their order is unspecified (clang
 * read der_ first: the DER leaked and the value was NULL; fuzz_p11mod_tmpl found it). */
#define I2D_VAL(v, i2d, x)                                                                         \
    do {                                                                                           \
        uint8_t *der_ = NULL;                                                                      \
        int len_ = (x) != NULL ? i2d((x), &der_) : -1;                                             \
        return der_val((v), der_, len_);                                                           \
    } while (0)

/*
 * The token layer's handle of a private key object, for what its token says of the key (its
 * usage, its own allowed mechanisms; loaded once, the token layer keeps it); NULL for other
 * objects or a key that does not load (then its type alone decides, as C_SignInit will say
 * why it fails).
 */
static ctok_key *priv_key(struct mod_slot *slot, const struct mod_obj *o)
{
    ctok_key *k;

    if (o->cls != CKO_PRIVATE_KEY)
        return NULL;
    ctok_err_mark();
    k = ctok_token_key(slot->tok, o->id, o->id_len);
    ctok_err_pop_to_mark();
    return k;
}

/* Does the key (NULL: any key of its type) do op with mech, as far as its token says? */
static int key_may(const ctok_key *key, CK_MECHANISM_TYPE mech, CK_FLAGS op)
{
    return key == NULL || mod_key_permits(key, mech, op) == CKR_OK;
}

/* CKA_ALLOWED_MECHANISMS: what the slot offers that a key of this type does (a private key
 * signs, decrypts and derives, narrowed by its token's usage and list; a public key shows what
 * a key of its type does). Objects loaded. */
static CK_RV allowed_val(struct val *v, struct mod_slot *slot, const struct mod_obj *o)
{
    CK_MECHANISM_TYPE *list;
    ctok_key *key;
    size_t n = 0;
    CK_RV rv;

    if ((rv = mod_mechs_load(slot)) != CKR_OK)
        return rv;
    if ((list = OPENSSL_malloc((slot->n_mechs + 1) * sizeof(*list))) == NULL)
        return CKR_HOST_MEMORY;
    key = priv_key(slot, o);
    for (size_t i = 0; i < slot->n_mechs; i++) {
        CK_MECHANISM_TYPE m = slot->mechs[i];
        CK_FLAGS f = slot->mech_info[i].flags;
        static const CK_FLAGS ops[] = {CKF_SIGN, CKF_DECRYPT, CKF_DERIVE};
        int does = 0;

        for (size_t j = 0; j < sizeof(ops) / sizeof(ops[0]) && !does; j++)
            does =
                (f & ops[j]) && mod_key_type_can(o->key_type, m, ops[j]) && key_may(key, m, ops[j]);
        if (does)
            list[n++] = m;
    }
    ctok_key_unref(key);
    v->heap = (uint8_t *)list;
    return bytes_val(v, list, n * sizeof(*list));
}

/* CKA_SIGN, CKA_DECRYPT, CKA_DERIVE of o: a private key whose type does op with a mechanism the
 * slot offers for op (any signs), narrowed by its token's usage. Objects loaded. */
static CK_RV use_val(struct val *v, struct mod_slot *slot, const struct mod_obj *o, CK_FLAGS op)
{
    ctok_key *key;
    int yes = o->cls == CKO_PRIVATE_KEY && op == CKF_SIGN;

    if (o->cls == CKO_PRIVATE_KEY && !yes && mod_mechs_load(slot) != CKR_OK)
        return bool_val(v, 0);
    for (size_t i = 0; o->cls == CKO_PRIVATE_KEY && !yes && i < slot->n_mechs; i++)
        yes = (slot->mech_info[i].flags & op) && mod_key_type_can(o->key_type, slot->mechs[i], op);
    if (yes && (key = priv_key(slot, o)) != NULL) {
        yes = (ctok_key_usage(key) & mod_use_of(op)) != 0;
        ctok_key_unref(key);
    }
    return bool_val(v, yes);
}

static CK_RV bn_val(struct val *v, const EVP_PKEY *pub, const char *name)
{
    BIGNUM *bn = NULL;
    int n;

    if (pub == NULL || !EVP_PKEY_get_bn_param(pub, name, &bn))
        return CKR_ATTRIBUTE_TYPE_INVALID;
    n = BN_num_bytes(bn);
    v->heap = OPENSSL_malloc(n > 0 ? n : 1);
    if (v->heap != NULL)
        BN_bn2bin(bn, v->heap);
    BN_free(bn);
    return v->heap != NULL ? bytes_val(v, v->heap, (size_t)n) : CKR_HOST_MEMORY;
}

/* CKA_EC_PARAMS: the named curve's OID (Ed25519: id-Ed25519, RFC 8410). */
static CK_RV ec_params_val(struct val *v, const struct mod_obj *o)
{
    char group[64];
    int nid = NID_ED25519;

    if (o->pub == NULL)
        return CKR_ATTRIBUTE_TYPE_INVALID;
    if (o->key_type == CTOK_KT_EC) {
        if (!EVP_PKEY_get_utf8_string_param(o->pub, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                            sizeof(group), NULL))
            return CKR_ATTRIBUTE_TYPE_INVALID;
        nid = OBJ_txt2nid(group);
    }
    I2D_VAL(v, i2d_ASN1_OBJECT, OBJ_nid2obj(nid));
}

/* CKA_EC_POINT: the public point (Ed25519: the 32 bytes) in a DER OCTET STRING. */
static CK_RV ec_point_val(struct val *v, const struct mod_obj *o)
{
    uint8_t buf[200];
    size_t len = 0;
    ASN1_OCTET_STRING *os;
    uint8_t *der = NULL;
    int n = -1;

    if (o->pub == NULL ||
        !EVP_PKEY_get_octet_string_param(o->pub, OSSL_PKEY_PARAM_PUB_KEY, buf, sizeof(buf), &len))
        return CKR_ATTRIBUTE_TYPE_INVALID;
    if ((os = ASN1_OCTET_STRING_new()) != NULL && ASN1_OCTET_STRING_set(os, buf, (int)len))
        n = i2d_ASN1_OCTET_STRING(os, &der);
    ASN1_OCTET_STRING_free(os);
    return der_val(v, der, n);
}

static CK_KEY_TYPE ck_key_type(enum ctok_key_type kt)
{
    return kt == CTOK_KT_EC ? CKK_EC : kt == CTOK_KT_ED25519 ? CKK_EC_EDWARDS : CKK_RSA;
}

/* The certificate of the slot with the key's id (its subject is the key's CKA_SUBJECT). */
static X509 *cert_of(const struct mod_slot *slot, const struct mod_obj *o)
{
    for (size_t i = 0; i < slot->n_objs; i++)
        if (slot->objs[i].cls == CKO_CERTIFICATE && slot->objs[i].id_len == o->id_len &&
            memcmp(slot->objs[i].id, o->id, o->id_len) == 0)
            return slot->objs[i].cert;
    return NULL;
}

static CK_RV key_attr(struct mod_slot *slot, const struct mod_obj *o, CK_ATTRIBUTE_TYPE t,
                      struct val *v)
{
    int priv = o->cls == CKO_PRIVATE_KEY, rsa = ck_key_type(o->key_type) == CKK_RSA;
    X509 *cert;

    switch (t) {
    case CKA_KEY_TYPE:
        return ulong_val(v, ck_key_type(o->key_type));
    case CKA_ALLOWED_MECHANISMS:
        return allowed_val(v, slot, o);
    case CKA_DECRYPT:
        /* objects are loaded here: the slot's mechanisms are taken without a reload */
        return use_val(v, slot, o, CKF_DECRYPT);
    case CKA_SIGN:
        return use_val(v, slot, o, CKF_SIGN);
    case CKA_DERIVE:
        return use_val(v, slot, o, CKF_DERIVE);
    case CKA_LOCAL:
    case CKA_ENCRYPT:
    case CKA_WRAP:
    case CKA_UNWRAP:
    case CKA_SIGN_RECOVER:
    case CKA_VERIFY_RECOVER:
    case CKA_ALWAYS_AUTHENTICATE:
    case CKA_WRAP_WITH_TRUSTED:
    case CKA_TRUSTED:
    case CKA_EXTRACTABLE:
        return bool_val(v, 0);
    case CKA_SENSITIVE:
    case CKA_ALWAYS_SENSITIVE:
    case CKA_NEVER_EXTRACTABLE:
        return bool_val(v, priv);
    case CKA_VERIFY:
        return bool_val(v, !priv);
    case CKA_SUBJECT:
        cert = cert_of(slot, o);
        I2D_VAL(v, i2d_X509_NAME, cert != NULL ? X509_get_subject_name(cert) : NULL);
    case CKA_MODULUS:
    case CKA_PUBLIC_EXPONENT:
        return rsa ? bn_val(v, o->pub,
                            t == CKA_MODULUS ? OSSL_PKEY_PARAM_RSA_N : OSSL_PKEY_PARAM_RSA_E)
                   : CKR_ATTRIBUTE_TYPE_INVALID;
    case CKA_MODULUS_BITS:
        return rsa && !priv && o->pub != NULL ? ulong_val(v, (CK_ULONG)EVP_PKEY_get_bits(o->pub))
                                              : CKR_ATTRIBUTE_TYPE_INVALID;
    case CKA_EC_PARAMS:
        return rsa ? CKR_ATTRIBUTE_TYPE_INVALID : ec_params_val(v, o);
    case CKA_EC_POINT:
        return rsa || priv ? CKR_ATTRIBUTE_TYPE_INVALID : ec_point_val(v, o);
    case CKA_VALUE:
    case CKA_PRIVATE_EXPONENT:
    case CKA_PRIME_1:
    case CKA_PRIME_2:
    case CKA_EXPONENT_1:
    case CKA_EXPONENT_2:
    case CKA_COEFFICIENT:
        /* the key never leaves the token */
        return priv ? CKR_ATTRIBUTE_SENSITIVE : CKR_ATTRIBUTE_TYPE_INVALID;
    default:
        return CKR_ATTRIBUTE_TYPE_INVALID;
    }
}

static CK_RV cert_attr(const struct mod_obj *o, CK_ATTRIBUTE_TYPE t, struct val *v)
{
    switch (t) {
    case CKA_CERTIFICATE_TYPE:
        return ulong_val(v, CKC_X_509);
    case CKA_CERTIFICATE_CATEGORY:
        return ulong_val(v, 0); /* unspecified */
    case CKA_TRUSTED:
        return bool_val(v, 0);
    case CKA_VALUE:
        I2D_VAL(v, i2d_X509, o->cert);
    case CKA_SUBJECT:
        I2D_VAL(v, i2d_X509_NAME, X509_get_subject_name(o->cert));
    case CKA_ISSUER:
        I2D_VAL(v, i2d_X509_NAME, X509_get_issuer_name(o->cert));
    case CKA_SERIAL_NUMBER:
        I2D_VAL(v, i2d_ASN1_INTEGER, X509_get0_serialNumber(o->cert));
    default:
        return CKR_ATTRIBUTE_TYPE_INVALID;
    }
}

/* The value of attribute t of o: CKR_OK, CKR_ATTRIBUTE_SENSITIVE or _TYPE_INVALID. */
static CK_RV attr(struct mod_slot *slot, const struct mod_obj *o, CK_ATTRIBUTE_TYPE t,
                  struct val *v)
{
    v->heap = NULL;
    switch (t) {
    case CKA_CLASS:
        return ulong_val(v, o->cls);
    case CKA_TOKEN:
        return bool_val(v, 1);
    case CKA_PRIVATE:
        return bool_val(v, o->cls == CKO_PRIVATE_KEY);
    case CKA_MODIFIABLE:
    case CKA_COPYABLE:
        return bool_val(v, 0);
    case CKA_DESTROYABLE:
        return bool_val(v, mod_destroy_rule(slot, o) == CKR_OK);
    case CKA_LABEL:
        return bytes_val(v, o->label, strlen(o->label));
    case CKA_ID:
        return bytes_val(v, o->id, o->id_len);
    case CKA_START_DATE:
    case CKA_END_DATE:
        return bytes_val(v, "", 0); /* the spec's empty date: none recorded */
    case CKA_PUBLIC_KEY_INFO:
        /* SubjectPublicKeyInfo, of a private key too (its public part) */
        I2D_VAL(v, i2d_PUBKEY, o->pub);
    }
    return o->cls == CKO_CERTIFICATE ? cert_attr(o, t, v) : key_attr(slot, o, t, v);
}

/* ---- sessions' use of objects ---- */

/* The types of object (CTOK_OBJ_*) a find with this template can match (its CKA_CLASS). */
static unsigned int find_types(const CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
    unsigned int types = CTOK_OBJ_ANY;
    CK_OBJECT_CLASS c;

    for (CK_ULONG i = 0; i < n; i++)
        if (tmpl[i].type == CKA_CLASS && tmpl[i].pValue != NULL &&
            tmpl[i].ulValueLen == sizeof(c)) {
            memcpy(&c, tmpl[i].pValue, sizeof(c));
            types &= c == CKO_CERTIFICATE   ? CTOK_OBJ_CERT
                     : c == CKO_PUBLIC_KEY  ? CTOK_OBJ_PUBLIC
                     : c == CKO_PRIVATE_KEY ? CTOK_OBJ_PRIVATE
                                            : 0;
        }
    return types;
}

/*
 * mod_enter_session, and the session's slot with its objects loaded (on failure the lock is
 * not held). types (a find's; 0: none): when they include private keys (which show only on
 * an active token) or what the token hides until login, and its configuration names its code,
 * the token is activated with that code, its first need. A find
 * of certificates on a token that shows them logs in to nothing: certificates first, a login
 * only to use a key (seed 004).
 */
static CK_RV enter_slot_objects(CK_SESSION_HANDLE h, unsigned int types, int refresh,
                                struct mod_session **s, struct mod_slot **slot)
{
    CK_RV rv;

    if ((rv = mod_enter_session(h, s)) != CKR_OK)
        return rv;
    *slot = mod_slot_get((*s)->slot);
    if (types != 0 && !(*slot)->logged_in && !mod_login_required((*slot)->tok) &&
        !ctok_token_is_active((*slot)->tok) &&
        ((types & CTOK_OBJ_PRIVATE) || ctok_token_hidden((*slot)->tok, types) != 0) &&
        mod_activate(*slot))
        (*slot)->have_objs = 0; /* what it hid shows now */
    /* refresh (a new search): what another process changed, read again when it may differ
     * (handles stay those of the same objects) */
    if (refresh && (*slot)->have_objs && ctok_token_refresh((*slot)->tok))
        (*slot)->have_objs = 0;
    if ((rv = mod_objects_load(*slot)) != CKR_OK)
        mod_leave();
    return rv;
}

static CK_RV enter_objects(CK_SESSION_HANDLE h, struct mod_session **s, struct mod_slot **slot)
{
    return enter_slot_objects(h, 0, 0, s, slot);
}

void mod_find_clear(struct mod_session *s)
{
    free(s->found);
    s->found = NULL;
    s->n_found = s->pos = 0;
    s->finding = 0;
}

static int matches(struct mod_slot *slot, const struct mod_obj *o, const CK_ATTRIBUTE *tmpl,
                   CK_ULONG n)
{
    for (CK_ULONG i = 0; i < n; i++) {
        struct val v;
        int eq = attr(slot, o, tmpl[i].type, &v) == CKR_OK && v.len == tmpl[i].ulValueLen &&
                 (v.len == 0 || memcmp(v.p, tmpl[i].pValue, v.len) == 0);

        val_clear(&v);
        if (!eq)
            return 0;
    }
    return 1;
}

CK_RV C_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
    struct mod_session *s;
    struct mod_slot *slot;
    CK_RV rv;

    if (tmpl == NULL && n > 0)
        return CKR_ARGUMENTS_BAD;
    for (CK_ULONG i = 0; i < n; i++)
        if (tmpl[i].pValue == NULL && tmpl[i].ulValueLen > 0)
            return CKR_ATTRIBUTE_VALUE_INVALID; /* a value that is not there */
    if ((rv = enter_slot_objects(h, find_types(tmpl, n), 1, &s, &slot)) != CKR_OK)
        return rv;
    if (s->finding) {
        rv = CKR_OPERATION_ACTIVE;
        goto end;
    }
    s->found = calloc(slot->n_objs > 0 ? slot->n_objs : 1, sizeof(*s->found));
    if (s->found == NULL) {
        rv = CKR_HOST_MEMORY;
        goto end;
    }
    for (size_t i = 0; i < slot->n_objs; i++)
        if (matches(slot, &slot->objs[i], tmpl, n))
            s->found[s->n_found++] = slot->objs[i].handle;
    if ((rv = mod_sobjs_find(s, tmpl, n)) != CKR_OK) {
        mod_find_clear(s);
        goto end;
    }
    s->finding = 1;
end:
    mod_leave();
    return rv;
}

CK_RV C_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR out, CK_ULONG max, CK_ULONG_PTR n)
{
    struct mod_session *s;
    CK_RV rv;

    if (out == NULL || n == NULL)
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    if (!s->finding)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else {
        for (*n = 0; *n < max && s->pos < s->n_found; (*n)++)
            out[*n] = s->found[s->pos++];
    }
    mod_leave();
    return rv;
}

CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE h)
{
    struct mod_session *s;
    CK_RV rv;

    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    if (!s->finding)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else
        mod_find_clear(s);
    mod_leave();
    return rv;
}

/* PKCS#11 2.40 §5.7 C_GetAttributeValue: each attribute on its own; the error returned is the
 * last one met. */
CK_RV C_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE oh, CK_ATTRIBUTE_PTR tmpl,
                          CK_ULONG n)
{
    struct mod_session *s;
    struct mod_slot *slot;
    struct mod_obj *o;
    CK_RV rv;

    if (tmpl == NULL && n > 0)
        return CKR_ARGUMENTS_BAD;
    if ((rv = enter_objects(h, &s, &slot)) != CKR_OK)
        return rv;
    if ((o = mod_object_get(slot, oh)) == NULL) {
        rv = mod_sobj_attributes(s, oh, tmpl, n); /* a session object, or none */
        goto end;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        struct val v;
        CK_RV r = attr(slot, o, tmpl[i].type, &v);

        if (r == CKR_OK && tmpl[i].pValue != NULL && tmpl[i].ulValueLen < v.len)
            r = CKR_BUFFER_TOO_SMALL;
        if (r != CKR_OK) {
            tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = r;
        } else {
            if (tmpl[i].pValue != NULL && v.len > 0)
                memcpy(tmpl[i].pValue, v.p, v.len);
            tmpl[i].ulValueLen = v.len;
        }
        val_clear(&v);
    }
end:
    mod_leave();
    return rv;
}

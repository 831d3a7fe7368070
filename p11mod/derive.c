/*
 * Key agreement (CKM_ECDH1_DERIVE) through the token layer's ctok_key_derive, and the session
 * objects it makes: the shared secret becomes a CKO_SECRET_KEY held by the session that
 * derived it, seen by every session of its slot (C_FindObjects, C_GetAttributeValue), and
 * zeroized when it goes: its session closed (C_CloseSession, C_CloseAllSessions, the module
 * finalized), a logout (private ones), or p11mod_session_object_destroy (C_DestroyObject's
 * part for session objects). The token layer derives the raw secret; a KDF other than the null
 * one (ANSI X9.63 with SHA-1, SHA-2 or SHA-3) runs here over it, in software.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "p11mod.h"
#include "pkcs11v3.h"

/* The CK_BBOOL attributes of a session object, a bit each in mod_sobj.bools: RW the template
 * sets (else the default), FIXED the template may only repeat, RO set here only. */
enum { RW, FIXED, RO };
static const struct {
    CK_ATTRIBUTE_TYPE type;
    int dflt, how;
} bools[] = {
    {CKA_TOKEN, 0, FIXED},
    {CKA_PRIVATE, 1, RW},
    {CKA_SENSITIVE, 1, RW},
    {CKA_EXTRACTABLE, 0, RW},
    {CKA_ENCRYPT, 0, RW},
    {CKA_DECRYPT, 0, RW},
    {CKA_SIGN, 0, RW},
    {CKA_VERIFY, 0, RW},
    {CKA_WRAP, 0, RW},
    {CKA_UNWRAP, 0, RW},
    {CKA_DERIVE, 0, RW},
    {CKA_MODIFIABLE, 0, FIXED},
    {CKA_COPYABLE, 0, FIXED},
    {CKA_DESTROYABLE, 1, FIXED},
    {CKA_LOCAL, 0, RO},
    {CKA_ALWAYS_SENSITIVE, 0, RO},
    {CKA_NEVER_EXTRACTABLE, 0, RO},
};
#define N_BOOLS (sizeof(bools) / sizeof(bools[0]))

static int bool_bit(CK_ATTRIBUTE_TYPE t)
{
    for (size_t i = 0; i < N_BOOLS; i++)
        if (bools[i].type == t)
            return (int)i;
    return -1;
}

static int has(const struct mod_sobj *o, CK_ATTRIBUTE_TYPE t)
{
    return (o->bools >> bool_bit(t)) & 1;
}

static void set(struct mod_sobj *o, CK_ATTRIBUTE_TYPE t, int on)
{
    CK_ULONG bit = (CK_ULONG)1 << bool_bit(t);

    o->bools = on ? o->bools | bit : o->bools & ~bit;
}

/* ---- the derive template ---- */

static CK_RV bytes_of(const CK_ATTRIBUTE *a, uint8_t *dst, size_t *len)
{
    if (a->ulValueLen > CTOK_MAX_ID)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if (a->ulValueLen > 0)
        memcpy(dst, a->pValue, a->ulValueLen);
    *len = a->ulValueLen;
    return CKR_OK;
}

/* One attribute of the template into o (*value_len: CKA_VALUE_LEN, 0 when not given). */
static CK_RV take_attr(struct mod_sobj *o, CK_ULONG *value_len, const CK_ATTRIBUTE *a)
{
    int bit = bool_bit(a->type);
    CK_ULONG x;
    CK_RV rv;

    if (a->pValue == NULL && a->ulValueLen > 0)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if (bit >= 0) {
        if (bools[bit].how == RO)
            return CKR_ATTRIBUTE_READ_ONLY;
        if (a->ulValueLen != sizeof(CK_BBOOL) ||
            (bools[bit].how == FIXED && (*(CK_BBOOL *)a->pValue != 0) != bools[bit].dflt))
            return CKR_ATTRIBUTE_VALUE_INVALID;
        set(o, a->type, *(CK_BBOOL *)a->pValue != 0);
        return CKR_OK;
    }
    switch (a->type) {
    case CKA_CLASS:
        if ((rv = mod_attr_ulong(a, &x)) != CKR_OK)
            return rv;
        return x == CKO_SECRET_KEY ? CKR_OK : CKR_TEMPLATE_INCONSISTENT;
    case CKA_KEY_TYPE:
        if ((rv = mod_attr_ulong(a, &o->key_type)) != CKR_OK)
            return rv;
        return o->key_type == CKK_GENERIC_SECRET || o->key_type == CKK_AES
                   ? CKR_OK
                   : CKR_ATTRIBUTE_VALUE_INVALID;
    case CKA_VALUE_LEN:
        if ((rv = mod_attr_ulong(a, value_len)) != CKR_OK)
            return rv;
        return *value_len > 0 ? CKR_OK : CKR_ATTRIBUTE_VALUE_INVALID;
    case CKA_LABEL:
        return bytes_of(a, o->label, &o->label_len);
    case CKA_ID:
        return bytes_of(a, o->id, &o->id_len);
    case CKA_VALUE: /* the derivation makes it */
        return CKR_TEMPLATE_INCONSISTENT;
    default:
        return CKR_ATTRIBUTE_TYPE_INVALID;
    }
}

static CK_RV take_template(struct mod_sobj *o, CK_ULONG *value_len, const CK_ATTRIBUTE *t,
                           CK_ULONG n)
{
    CK_RV rv;

    memset(o, 0, sizeof(*o));
    o->key_type = CKK_GENERIC_SECRET;
    *value_len = 0;
    for (size_t i = 0; i < N_BOOLS; i++)
        set(o, bools[i].type, bools[i].dflt);
    for (CK_ULONG i = 0; i < n; i++)
        if ((rv = take_attr(o, value_len, &t[i])) != CKR_OK)
            return rv;
    return CKR_OK;
}

/* The secret's length: CKA_VALUE_LEN (at most the shared secret's), else an AES key's or the
 * whole secret (full bytes). 0: the template asks what cannot be. */
static size_t secret_len(const struct mod_sobj *o, CK_ULONG value_len, size_t full, CK_RV *rv)
{
    size_t len = value_len > 0 ? (size_t)value_len : full;

    *rv = CKR_OK;
    if (value_len > full)
        *rv = CKR_ATTRIBUTE_VALUE_INVALID;
    else if (o->key_type == CKK_AES && len != 16 && len != 24 && len != 32)
        *rv = value_len > 0 ? CKR_ATTRIBUTE_VALUE_INVALID : CKR_TEMPLATE_INCOMPLETE;
    return *rv == CKR_OK ? len : 0;
}

/* ---- the peer's public key ---- */

/* An EC public key on the curve group from an encoded point, checked; NULL when it is none. */
static EVP_PKEY *point_key(OSSL_LIB_CTX *libctx, const char *propq, const char *group,
                           const uint8_t *p, size_t len)
{
    OSSL_PARAM params[] = {OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0),
                           OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)p, len),
                           OSSL_PARAM_END};
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(libctx, "EC", propq), *chk = NULL;
    EVP_PKEY *pk = NULL;

    if (c == NULL || EVP_PKEY_fromdata_init(c) <= 0 ||
        EVP_PKEY_fromdata(c, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0 ||
        (chk = EVP_PKEY_CTX_new_from_pkey(libctx, pk, propq)) == NULL ||
        EVP_PKEY_public_check(chk) <= 0) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
    EVP_PKEY_CTX_free(chk);
    EVP_PKEY_CTX_free(c);
    return pk;
}

/* The peer's point as applications give it: raw (X9.62), or in a DER OCTET STRING as
 * CKA_EC_POINT has it (SoftHSM and OpenSC take both). */
static EVP_PKEY *peer_key(OSSL_LIB_CTX *libctx, const char *propq, const char *group,
                          const uint8_t *p, size_t len)
{
    EVP_PKEY *pk = point_key(libctx, propq, group, p, len);
    const uint8_t *q = p;
    ASN1_OCTET_STRING *os;

    if (pk != NULL || (os = d2i_ASN1_OCTET_STRING(NULL, &q, (long)len)) == NULL)
        return pk;
    if (q == p + len)
        pk = point_key(libctx, propq, group, ASN1_STRING_get0_data(os),
                       (size_t)ASN1_STRING_length(os));
    ASN1_OCTET_STRING_free(os);
    return pk;
}

/* The X9.63 KDFs of CK_ECDH1_DERIVE_PARAMS and their digests (OpenSSL 3.0's X963KDF takes
 * SHA-3 too). */
static const struct {
    CK_ULONG kdf;
    const char *md;
} kdfs[] = {
    {CKD_SHA1_KDF, "SHA1"},         {CKD_SHA224_KDF, "SHA224"},     {CKD_SHA256_KDF, "SHA256"},
    {CKD_SHA384_KDF, "SHA384"},     {CKD_SHA512_KDF, "SHA512"},     {CKD_SHA3_224_KDF, "SHA3-224"},
    {CKD_SHA3_256_KDF, "SHA3-256"}, {CKD_SHA3_384_KDF, "SHA3-384"}, {CKD_SHA3_512_KDF, "SHA3-512"},
};

/* The digest of an X9.63 KDF; NULL for CKD_NULL and for what is none. */
static const char *kdf_digest(CK_ULONG kdf)
{
    for (size_t i = 0; i < sizeof(kdfs) / sizeof(kdfs[0]); i++)
        if (kdfs[i].kdf == kdf)
            return kdfs[i].md;
    return NULL;
}

/* Shared data (the KDF's SharedInfo) beyond this is refused: CMS's ECC-CMS-SharedInfo is tens
 * of bytes. */
#define MAX_SHARED_DATA 65536

/* CK_ECDH1_DERIVE_PARAMS (PKCS#11 3.0 §2.3.x): the null KDF without shared data, or an X9.63
 * KDF with shared data or none (NULL and 0: a pointer with no length, or a length with no
 * pointer, is inconsistent); a public value. */
static CK_RV ecdh_params(const CK_MECHANISM *m, const CK_ECDH1_DERIVE_PARAMS **out)
{
    const CK_ECDH1_DERIVE_PARAMS *p = m->pParameter;

    if (m->mechanism != CKM_ECDH1_DERIVE)
        return CKR_MECHANISM_INVALID;
    if (p == NULL || m->ulParameterLen != sizeof(*p) ||
        (p->kdf != CKD_NULL && kdf_digest(p->kdf) == NULL) ||
        (p->pSharedData == NULL) != (p->ulSharedDataLen == 0) ||
        (p->kdf == CKD_NULL && p->pSharedData != NULL) || p->ulSharedDataLen > MAX_SHARED_DATA ||
        p->pPublicData == NULL || p->ulPublicDataLen == 0 || p->ulPublicDataLen > 1024)
        return CKR_MECHANISM_PARAM_INVALID;
    *out = p;
    return CKR_OK;
}

/* The derived key's length with an X9.63 KDF: CKA_VALUE_LEN, which the template must give
 * (no length comes from the secret), up to what a session object holds. */
static size_t kdf_len(const struct mod_sobj *o, CK_ULONG value_len, CK_RV *rv)
{
    size_t len = secret_len(o, value_len, sizeof(o->value), rv);

    if (value_len == 0)
        *rv = CKR_TEMPLATE_INCOMPLETE;
    return *rv == CKR_OK ? len : 0;
}

/* The secret into o->value (o->len bytes): the token's raw secret, its leading bytes with the
 * null KDF, else the X9.63 KDF over all of it; the raw secret is zeroized here. */
static CK_RV derive_secret(ctok_key *key, EVP_PKEY *peer, const CK_ECDH1_DERIVE_PARAMS *p,
                           OSSL_LIB_CTX *libctx, const char *propq, struct mod_sobj *o)
{
    const char *md = kdf_digest(p->kdf);
    uint8_t z[CTOK_MAX_SECRET];
    size_t zlen = md == NULL ? o->len : sizeof(z);
    CK_RV rv = CKR_OK;

    if (md == NULL)
        return ctok_key_derive(key, peer, o->value, &zlen) && zlen == o->len
                   ? CKR_OK
                   : mod_rv_from_error(CKR_FUNCTION_FAILED);
    if (!ctok_key_derive(key, peer, z, &zlen)) {
        rv = mod_rv_from_error(CKR_FUNCTION_FAILED);
    } else if (!ctok_x963_kdf(libctx, propq, md, z, zlen, p->pSharedData, p->ulSharedDataLen,
                              o->value, o->len)) {
        CTOK_ERR(CTOK_R_INTERNAL,
                 "token '%s': key '%s': the X9.63 KDF (%s) over the shared secret failed",
                 ctok_token_name(ctok_key_token(key)), ctok_key_label(key), md);
        rv = CKR_FUNCTION_FAILED;
    }
    OPENSSL_cleanse(z, sizeof(z));
    return rv;
}

/* ---- C_DeriveKey ---- */

/* Adds o to s as a new object (lock held). */
static CK_RV add_sobj(struct mod_session *s, struct mod_sobj *o, CK_OBJECT_HANDLE *out)
{
    struct mod_sobj *l = realloc(s->sobjs, (s->n_sobjs + 1) * sizeof(*l));

    if (l == NULL)
        return CKR_HOST_MEMORY;
    s->sobjs = l;
    o->handle = mod.next_handle++;
    l[s->n_sobjs++] = *o;
    *out = o->handle;
    return CKR_OK;
}

/* Lock held: the template, the key and what the derivation needs, before it runs. */
static CK_RV derive_prepare(struct mod_session *s, const CK_MECHANISM *m, CK_OBJECT_HANDLE base,
                            const CK_ATTRIBUTE *t, CK_ULONG n, struct mod_sobj *o,
                            const CK_ECDH1_DERIVE_PARAMS **p, ctok_key **key, char *group,
                            size_t groupsz)
{
    CK_ULONG value_len;
    CK_RV rv;

    if ((rv = ecdh_params(m, p)) != CKR_OK || (rv = take_template(o, &value_len, t, n)) != CKR_OK ||
        (rv = mod_op_key(mod_slot_get(s->slot), base, m->mechanism, CKF_DERIVE, key)) != CKR_OK)
        return rv;
    if (!EVP_PKEY_get_utf8_string_param(ctok_key_pub(*key), OSSL_PKEY_PARAM_GROUP_NAME, group,
                                        groupsz, NULL))
        return CKR_KEY_TYPE_INCONSISTENT;
    if ((*p)->kdf != CKD_NULL)
        o->len = kdf_len(o, value_len, &rv);
    else
        o->len =
            secret_len(o, value_len, (size_t)(EVP_PKEY_get_bits(ctok_key_pub(*key)) + 7) / 8, &rv);
    return rv;
}

/* The token derives without the module's lock; the object joins the session after. */
CK_RV C_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE base,
                  CK_ATTRIBUTE_PTR tmpl, CK_ULONG n, CK_OBJECT_HANDLE_PTR out)
{
    struct mod_session *s;
    struct mod_sobj o = {0};
    const CK_ECDH1_DERIVE_PARAMS *p = NULL;
    ctok_key *key = NULL;
    char group[64];
    OSSL_LIB_CTX *libctx;
    const char *propq;
    EVP_PKEY *peer = NULL;
    CK_RV rv;

    if (m == NULL || out == NULL || (tmpl == NULL && n > 0))
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    rv = derive_prepare(s, m, base, tmpl, n, &o, &p, &key, group, sizeof(group));
    libctx = ctok_ctx_libctx(mod.ctx);
    propq = ctok_ctx_propq(mod.ctx);
    mod_leave();
    if (rv == CKR_OK &&
        (peer = peer_key(libctx, propq, group, p->pPublicData, p->ulPublicDataLen)) == NULL)
        rv = CKR_MECHANISM_PARAM_INVALID;
    if (rv == CKR_OK)
        rv = derive_secret(key, peer, p, libctx, propq, &o);
    EVP_PKEY_free(peer);
    ctok_key_unref(key);
    if (rv == CKR_OK) {
        set(&o, CKA_ALWAYS_SENSITIVE, has(&o, CKA_SENSITIVE));
        set(&o, CKA_NEVER_EXTRACTABLE, !has(&o, CKA_EXTRACTABLE));
        if ((rv = mod_enter_session(h, &s)) == CKR_OK) {
            rv = add_sobj(s, &o, out);
            mod_leave();
        }
    }
    OPENSSL_cleanse(&o, sizeof(o));
    return rv;
}

/* ---- session objects (lock held) ---- */

void mod_sobjs_free(struct mod_session *s, int private_only)
{
    size_t kept = 0;

    for (size_t i = 0; i < s->n_sobjs; i++) {
        if (private_only && !has(&s->sobjs[i], CKA_PRIVATE))
            s->sobjs[kept++] = s->sobjs[i];
    }
    if (s->n_sobjs > kept)
        OPENSSL_cleanse(s->sobjs + kept, (s->n_sobjs - kept) * sizeof(*s->sobjs));
    s->n_sobjs = kept;
    if (kept == 0) {
        free(s->sobjs);
        s->sobjs = NULL;
    }
}

/* The session object oh of s's slot: its session in *owner and its index in *at. */
static struct mod_sobj *sobj_get(const struct mod_session *s, CK_OBJECT_HANDLE oh,
                                 struct mod_session **owner, size_t *at)
{
    for (size_t i = 0; i < mod.n_sessions; i++) {
        struct mod_session *x = mod.sessions[i];

        if (x->slot != s->slot)
            continue;
        for (size_t j = 0; j < x->n_sobjs; j++)
            if (x->sobjs[j].handle == oh) {
                *owner = x;
                *at = j;
                return &x->sobjs[j];
            }
    }
    return NULL;
}

CK_RV p11mod_session_object_destroy(struct mod_session *s, CK_OBJECT_HANDLE oh)
{
    struct mod_session *owner;
    size_t at;

    if (sobj_get(s, oh, &owner, &at) == NULL)
        return CKR_OBJECT_HANDLE_INVALID;
    owner->sobjs[at] = owner->sobjs[owner->n_sobjs - 1];
    OPENSSL_cleanse(&owner->sobjs[--owner->n_sobjs], sizeof(*owner->sobjs));
    return CKR_OK;
}

/* An attribute's value: v->p points into the object, or at v->ul / v->b. */
struct sval {
    CK_ULONG ul;
    CK_BBOOL b;
    const void *p;
    size_t len;
};

static CK_RV sobj_attr(const struct mod_sobj *o, CK_ATTRIBUTE_TYPE t, struct sval *v)
{
    v->p = &v->ul;
    v->len = sizeof(CK_ULONG);
    if (bool_bit(t) >= 0) {
        v->b = has(o, t) ? CK_TRUE : CK_FALSE;
        v->p = &v->b;
        v->len = sizeof(CK_BBOOL);
        return CKR_OK;
    }
    switch (t) {
    case CKA_CLASS:
        v->ul = CKO_SECRET_KEY;
        return CKR_OK;
    case CKA_KEY_TYPE:
        v->ul = o->key_type;
        return CKR_OK;
    case CKA_VALUE_LEN:
        v->ul = (CK_ULONG)o->len;
        return CKR_OK;
    case CKA_LABEL:
        v->p = o->label;
        v->len = o->label_len;
        return CKR_OK;
    case CKA_ID:
        v->p = o->id;
        v->len = o->id_len;
        return CKR_OK;
    case CKA_START_DATE:
    case CKA_END_DATE:
        v->len = 0; /* the spec's empty date */
        return CKR_OK;
    case CKA_VALUE:
        /* the secret leaves only when the application made it neither sensitive nor kept */
        if (has(o, CKA_SENSITIVE) || !has(o, CKA_EXTRACTABLE))
            return CKR_ATTRIBUTE_SENSITIVE;
        v->p = o->value;
        v->len = o->len;
        return CKR_OK;
    default:
        return CKR_ATTRIBUTE_TYPE_INVALID;
    }
}

static int sobj_matches(const struct mod_sobj *o, const CK_ATTRIBUTE *t, CK_ULONG n)
{
    for (CK_ULONG i = 0; i < n; i++) {
        struct sval v;

        if (sobj_attr(o, t[i].type, &v) != CKR_OK || v.len != t[i].ulValueLen ||
            (v.len > 0 && memcmp(v.p, t[i].pValue, v.len) != 0))
            return 0;
    }
    return 1;
}

CK_RV mod_sobjs_find(struct mod_session *s, const CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
    for (size_t i = 0; i < mod.n_sessions; i++) {
        const struct mod_session *x = mod.sessions[i];

        for (size_t j = 0; x->slot == s->slot && j < x->n_sobjs; j++) {
            CK_OBJECT_HANDLE *f;

            if (!sobj_matches(&x->sobjs[j], tmpl, n))
                continue;
            if ((f = realloc(s->found, (s->n_found + 1) * sizeof(*f))) == NULL)
                return CKR_HOST_MEMORY;
            s->found = f;
            f[s->n_found++] = x->sobjs[j].handle;
        }
    }
    return CKR_OK;
}

/* As C_GetAttributeValue does for token objects (objects.c): each attribute on its own. */
CK_RV mod_sobj_attributes(struct mod_session *s, CK_OBJECT_HANDLE oh, CK_ATTRIBUTE_PTR tmpl,
                          CK_ULONG n)
{
    struct mod_session *owner;
    size_t at;
    const struct mod_sobj *o = sobj_get(s, oh, &owner, &at);
    CK_RV rv = CKR_OK;

    if (o == NULL)
        return CKR_OBJECT_HANDLE_INVALID;
    for (CK_ULONG i = 0; i < n; i++) {
        struct sval v;
        CK_RV r = sobj_attr(o, tmpl[i].type, &v);

        if (r == CKR_OK && tmpl[i].pValue != NULL && tmpl[i].ulValueLen < v.len)
            r = CKR_BUFFER_TOO_SMALL;
        if (r != CKR_OK) {
            tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = r;
            continue;
        }
        if (tmpl[i].pValue != NULL && v.len > 0)
            memcpy(tmpl[i].pValue, v.p, v.len);
        tmpl[i].ulValueLen = v.len;
    }
    return rv;
}

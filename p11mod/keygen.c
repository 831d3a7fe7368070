/*
 * C_GenerateKeyPair onto the token layer's one generation call, ctok_token_generate (its rule
 * keygen and its audit line, as for `ctok key generate`). The templates become a key spec
 * string that ctok_keyspec_parse reads, so the module accepts exactly the sizes and curves the
 * tool does. The label is the key's alias; the token chooses the id (see ids below).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/asn1.h>
#include <openssl/objects.h>

#include "p11mod.h"

struct gen_req {
    CK_MECHANISM_TYPE mech;
    CK_KEY_TYPE key_type;
    char *label; /* from either template; both must agree */
    CK_ULONG bits;
    const CK_ATTRIBUTE *exponent, *ec_params;
};

CK_RV mod_attr_ulong(const CK_ATTRIBUTE *a, CK_ULONG *v)
{
    if (a->ulValueLen != sizeof(CK_ULONG))
        return CKR_ATTRIBUTE_VALUE_INVALID;
    memcpy(v, a->pValue, sizeof(*v));
    return CKR_OK;
}

/* A boolean whose value must be want: the other value asks for what ctok's keys never are. */
static CK_RV attr_must_be(const CK_ATTRIBUTE *a, CK_BBOOL want)
{
    if (a->ulValueLen != sizeof(CK_BBOOL))
        return CKR_ATTRIBUTE_VALUE_INVALID;
    return *(const CK_BBOOL *)a->pValue == want ? CKR_OK : CKR_ATTRIBUTE_VALUE_INVALID;
}

CK_RV mod_attr_label(const CK_ATTRIBUTE *a, char **label)
{
    char *l;

    if (a->ulValueLen == 0 || a->ulValueLen > 255 || memchr(a->pValue, '\0', a->ulValueLen))
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if ((l = strndup(a->pValue, a->ulValueLen)) == NULL)
        return CKR_HOST_MEMORY;
    if (*label != NULL && strcmp(*label, l) != 0) {
        free(l);
        return CKR_TEMPLATE_INCONSISTENT;
    }
    free(*label);
    *label = l;
    return CKR_OK;
}

CK_RV mod_attr_common(const CK_ATTRIBUTE *a, CK_OBJECT_CLASS cls, char **label, int *taken)
{
    CK_ULONG v;
    CK_RV rv;

    *taken = 1;
    switch (a->type) {
    case CKA_CLASS:
        if ((rv = mod_attr_ulong(a, &v)) != CKR_OK)
            return rv;
        return v == cls ? CKR_OK : CKR_TEMPLATE_INCONSISTENT;
    case CKA_TOKEN:
        /* token objects only: the module keeps no session objects of these classes */
        return attr_must_be(a, CK_TRUE) == CKR_OK ? CKR_OK : CKR_TEMPLATE_INCONSISTENT;
    case CKA_PRIVATE:
        /* what C_GetAttributeValue will say: private keys private, the rest public */
        return attr_must_be(a, cls == CKO_PRIVATE_KEY);
    case CKA_LABEL:
        return mod_attr_label(a, label);
    case CKA_ID:
        /*
         * The token chooses ids (the SHA-1 key identifier certificates are bound by, a KMS
         * key's own): an id the application picks could not be kept. Empty: no wish.
         */
        return a->ulValueLen == 0 ? CKR_OK : CKR_ATTRIBUTE_VALUE_INVALID;
    case CKA_MODIFIABLE:
    case CKA_COPYABLE:
    case CKA_DESTROYABLE:
    case CKA_START_DATE:
    case CKA_END_DATE:
        return CKR_OK; /* wishes about object management: C_GetAttributeValue tells */
    }
    *taken = 0;
    return CKR_OK;
}

/* Usage flags: a ctok key does what its type does (CKA_SIGN, CKA_DECRYPT... say it), so
 * an application's wishes, whatever they are, change nothing. */
static int usage_flag(CK_ATTRIBUTE_TYPE t)
{
    return t == CKA_SIGN || t == CKA_VERIFY || t == CKA_DECRYPT || t == CKA_ENCRYPT ||
           t == CKA_WRAP || t == CKA_UNWRAP || t == CKA_DERIVE || t == CKA_SIGN_RECOVER ||
           t == CKA_VERIFY_RECOVER;
}

static CK_RV parse_attr(struct gen_req *r, const CK_ATTRIBUTE *a, int priv)
{
    int taken;
    CK_ULONG v;
    CK_RV rv;

    if (a->pValue == NULL)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    rv = mod_attr_common(a, priv ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY, &r->label, &taken);
    if (taken || usage_flag(a->type))
        return rv;
    switch (a->type) {
    case CKA_KEY_TYPE:
        if ((rv = mod_attr_ulong(a, &v)) != CKR_OK)
            return rv;
        return v == r->key_type ? CKR_OK : CKR_TEMPLATE_INCONSISTENT;
    case CKA_SENSITIVE:
    case CKA_ALWAYS_SENSITIVE:
        return priv ? attr_must_be(a, CK_TRUE) : CKR_ATTRIBUTE_TYPE_INVALID;
    case CKA_EXTRACTABLE:
    case CKA_NEVER_EXTRACTABLE:
        return priv ? attr_must_be(a, a->type == CKA_NEVER_EXTRACTABLE)
                    : CKR_ATTRIBUTE_TYPE_INVALID;
    case CKA_MODULUS_BITS:
        if (priv || r->key_type != CKK_RSA)
            return CKR_ATTRIBUTE_TYPE_INVALID;
        return mod_attr_ulong(a, &r->bits);
    case CKA_PUBLIC_EXPONENT:
        if (r->key_type != CKK_RSA)
            return CKR_ATTRIBUTE_TYPE_INVALID;
        r->exponent = a;
        return CKR_OK;
    case CKA_EC_PARAMS:
        if (priv || r->key_type == CKK_RSA)
            return CKR_ATTRIBUTE_TYPE_INVALID;
        r->ec_params = a;
        return CKR_OK;
    default:
        return CKR_ATTRIBUTE_TYPE_INVALID;
    }
}

/* The one exponent every backend makes: 65537 (big-endian, leading zeros allowed). */
static int is_f4(const CK_ATTRIBUTE *a)
{
    static const uint8_t f4[] = {0x01, 0x00, 0x01};
    const uint8_t *p = a->pValue;
    size_t n = a->ulValueLen;

    while (n > sizeof(f4) && *p == 0)
        p++, n--;
    return n == sizeof(f4) && memcmp(p, f4, n) == 0;
}

/*
 * CKA_EC_PARAMS: a named curve's OID, or its name as a PrintableString (what OpenSC sends for
 * "edwards25519"); explicit parameters are not a curve ctok makes. The curve's short name.
 */
static CK_RV curve_of(const CK_ATTRIBUTE *a, int *nid)
{
    const uint8_t *p = a->pValue;
    ASN1_OBJECT *oid = d2i_ASN1_OBJECT(NULL, &p, (long)a->ulValueLen);
    ASN1_PRINTABLESTRING *name = NULL;
    char buf[64];

    *nid = NID_undef;
    if (oid != NULL && p == (const uint8_t *)a->pValue + a->ulValueLen)
        *nid = OBJ_obj2nid(oid);
    ASN1_OBJECT_free(oid);
    if (oid == NULL) {
        p = a->pValue;
        name = d2i_ASN1_PRINTABLESTRING(NULL, &p, (long)a->ulValueLen);
        if (name != NULL && ASN1_STRING_length(name) < (int)sizeof(buf)) {
            memcpy(buf, ASN1_STRING_get0_data(name), (size_t)ASN1_STRING_length(name));
            buf[ASN1_STRING_length(name)] = '\0';
            *nid = strcmp(buf, "edwards25519") == 0 ? NID_ED25519 : OBJ_sn2nid(buf);
        }
        ASN1_STRING_free(name);
        if (name == NULL)
            return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    return *nid != NID_undef ? CKR_OK : CKR_CURVE_NOT_SUPPORTED;
}

/* The request as a key spec the tool's parser reads ("rsa:3072", "ec:prime256v1", "ed25519"). */
static CK_RV spec_of(const struct gen_req *r, struct ctok_keyspec *spec)
{
    char text[64];
    int nid;
    CK_RV rv;

    if (r->label == NULL)
        return CKR_TEMPLATE_INCOMPLETE; /* the alias every other front door names it by */
    if (r->key_type == CKK_RSA) {
        if (r->bits == 0)
            return CKR_TEMPLATE_INCOMPLETE;
        if (r->exponent != NULL && !is_f4(r->exponent))
            return CKR_ATTRIBUTE_VALUE_INVALID;
        snprintf(text, sizeof(text), "rsa:%lu", (unsigned long)r->bits);
    } else {
        if (r->ec_params == NULL)
            return CKR_TEMPLATE_INCOMPLETE;
        if ((rv = curve_of(r->ec_params, &nid)) != CKR_OK)
            return rv;
        if ((nid == NID_ED25519) != (r->key_type == CKK_EC_EDWARDS))
            return CKR_CURVE_NOT_SUPPORTED;
        snprintf(text, sizeof(text), "%s%s",
                 nid == NID_ED25519 ? "" : "ec:", nid == NID_ED25519 ? "ed25519" : OBJ_nid2sn(nid));
    }
    ctok_err_mark(); /* the application hears the CKR; the parser's text is the tool's */
    rv = ctok_keyspec_parse(text, spec) ? CKR_OK
         : r->key_type == CKK_RSA       ? CKR_KEY_SIZE_RANGE
                                        : CKR_CURVE_NOT_SUPPORTED;
    ctok_err_pop_to_mark();
    return rv;
}

static CK_RV parse(struct gen_req *r, const CK_MECHANISM *m, const CK_ATTRIBUTE *pub, CK_ULONG npub,
                   const CK_ATTRIBUTE *priv, CK_ULONG npriv, struct ctok_keyspec *spec)
{
    CK_RV rv = CKR_OK;

    r->mech = m->mechanism;
    switch (m->mechanism) {
    case CKM_RSA_PKCS_KEY_PAIR_GEN:
        r->key_type = CKK_RSA;
        break;
    case CKM_EC_KEY_PAIR_GEN:
        r->key_type = CKK_EC;
        break;
    case CKM_EC_EDWARDS_KEY_PAIR_GEN:
        r->key_type = CKK_EC_EDWARDS;
        break;
    default:
        return CKR_MECHANISM_INVALID;
    }
    if (m->pParameter != NULL || m->ulParameterLen != 0)
        return CKR_MECHANISM_PARAM_INVALID;
    for (CK_ULONG i = 0; rv == CKR_OK && i < npub; i++)
        rv = parse_attr(r, &pub[i], 0);
    for (CK_ULONG i = 0; rv == CKR_OK && i < npriv; i++)
        rv = parse_attr(r, &priv[i], 1);
    return rv == CKR_OK ? spec_of(r, spec) : rv;
}

/* The private key labelled alias and the public key of its id, after a reload (lock held). */
static CK_RV handles_of(struct mod_slot *slot, const char *alias, CK_OBJECT_HANDLE *hpub,
                        CK_OBJECT_HANDLE *hpriv)
{
    struct mod_obj *k = mod_object_labelled(slot, CKO_PRIVATE_KEY, alias), *p;

    p = k != NULL ? mod_object_find(slot, CKO_PUBLIC_KEY, k->id, k->id_len, NULL) : NULL;
    if (p == NULL)
        return CKR_DEVICE_ERROR; /* made, but the token does not show it */
    *hpriv = k->handle;
    *hpub = p->handle;
    return CKR_OK;
}

CK_RV C_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pub,
                        CK_ULONG npub, CK_ATTRIBUTE_PTR priv, CK_ULONG npriv,
                        CK_OBJECT_HANDLE_PTR hpub, CK_OBJECT_HANDLE_PTR hpriv)
{
    struct gen_req r = {0};
    struct ctok_keyspec spec;
    struct mod_session *s;
    struct mod_slot *slot;
    CK_SLOT_ID id;
    ctok_token *tok;
    CK_RV rv;

    if (m == NULL || hpub == NULL || hpriv == NULL || (pub == NULL && npub > 0) ||
        (priv == NULL && npriv > 0))
        return CKR_ARGUMENTS_BAD;
    if ((rv = mod_enter_change(h, &s, &slot)) != CKR_OK)
        return rv;
    id = s->slot;
    tok = slot->tok;
    if (!mod_slot_has_mech(slot, m->mechanism, CKF_GENERATE_KEY_PAIR, NULL))
        rv = CKR_MECHANISM_INVALID;
    mod_leave();
    /* the templates are the caller's memory: read without the module's lock */
    if (rv == CKR_OK)
        rv = parse(&r, m, pub, npub, priv, npriv, &spec);
    /* a generation takes seconds (RSA) or a cloud call: without the module's lock */
    if (rv == CKR_OK && !ctok_token_generate(tok, r.label, &spec))
        rv = mod_rv_from_error(CKR_FUNCTION_FAILED);
    if (rv == CKR_OK && (rv = mod_enter_changed(h, id, &slot)) == CKR_OK) {
        rv = handles_of(slot, r.label, hpub, hpriv);
        mod_leave();
    }
    free(r.label);
    return rv;
}

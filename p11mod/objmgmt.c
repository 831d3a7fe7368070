/*
 * Object management (PKCS#11 2.40 §5.7) onto the token layer's own calls, with their rules and
 * audit lines as the tool has them: C_DestroyObject removes a key (ctok_token_remove, rule
 * keyremove) or a certificate (ctok_token_remove_cert, rule modify); C_CreateObject stores a
 * certificate (ctok_token_put_cert, rule modify). Changes need a read/write session and the
 * user logged in; the token call runs without the module's lock, and the slot's objects are
 * read again after it.
 */
#include <stdlib.h>
#include <string.h>

#include "p11mod.h"

CK_RV mod_enter_change(CK_SESSION_HANDLE h, struct mod_session **s, struct mod_slot **slot)
{
    CK_RV rv;

    if ((rv = mod_enter_session(h, s)) != CKR_OK)
        return rv;
    *slot = mod_slot_get((*s)->slot);
    if (!((*s)->flags & CKF_RW_SESSION))
        rv = CKR_SESSION_READ_ONLY;
    else if (!(*slot)->logged_in)
        rv = CKR_USER_NOT_LOGGED_IN;
    if (rv != CKR_OK)
        mod_leave();
    return rv;
}

CK_RV mod_enter_changed(CK_SESSION_HANDLE h, CK_SLOT_ID id, struct mod_slot **slot)
{
    struct mod_session *s;
    CK_RV rv;

    if ((rv = mod_enter()) != CKR_OK)
        return rv;
    if ((*slot = mod_slot_get(id)) == NULL) {
        mod_leave();
        return CKR_SESSION_CLOSED;
    }
    (*slot)->have_objs = 0;
    if ((s = mod_session_get(h)) == NULL || s->slot != id)
        rv = CKR_SESSION_CLOSED; /* by another thread, while the token worked */
    else
        rv = mod_objects_load(*slot);
    if (rv != CKR_OK)
        mod_leave();
    return rv;
}

struct mod_obj *mod_object_labelled(struct mod_slot *slot, CK_OBJECT_CLASS cls, const char *label)
{
    for (size_t i = 0; i < slot->n_objs; i++)
        if (slot->objs[i].cls == cls && strcmp(slot->objs[i].label, label) == 0)
            return &slot->objs[i];
    return NULL;
}

/* ---- C_DestroyObject ---- */

/*
 * What destroying o means, or why it cannot be: a private key takes its public key and
 * certificates with it (one entry of the token: `ctok key remove`); a public key alone is
 * refused (on a keystore or a KMS the pair is one object: removing it would take the private
 * key the application did not name); a certificate goes when the token keeps certificates
 * (bound certificate files are the administrator's).
 */
CK_RV mod_destroy_rule(const struct mod_slot *slot, const struct mod_obj *o)
{
    if (o->cls == CKO_PRIVATE_KEY)
        return CKR_OK;
    if (o->cls == CKO_CERTIFICATE && ctok_token_keeps_certs(slot->tok))
        return CKR_OK;
    return CKR_ACTION_PROHIBITED;
}

CK_RV C_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE oh)
{
    struct mod_session *s;
    struct mod_slot *slot;
    struct mod_obj *o = NULL;
    CK_OBJECT_CLASS cls;
    ctok_token *tok;
    CK_SLOT_ID id;
    char note[256], *label;
    int ok;
    CK_RV rv;

    /* a session object (a derived key) goes in any session, read-only too (PKCS#11 5.7) */
    if ((rv = mod_enter_session(h, &s)) != CKR_OK)
        return rv;
    rv = p11mod_session_object_destroy(s, oh);
    mod_leave();
    if (rv != CKR_OBJECT_HANDLE_INVALID)
        return rv;
    if ((rv = mod_enter_change(h, &s, &slot)) != CKR_OK)
        return rv;
    if ((rv = mod_objects_load(slot)) == CKR_OK && (o = mod_object_get(slot, oh)) == NULL)
        rv = CKR_OBJECT_HANDLE_INVALID;
    if (rv == CKR_OK && (rv = mod_destroy_rule(slot, o)) == CKR_OK &&
        (label = strdup(o->label)) == NULL)
        rv = CKR_HOST_MEMORY;
    if (rv != CKR_OK) {
        mod_leave();
        return rv;
    }
    cls = o->cls;
    id = s->slot;
    tok = slot->tok;
    mod_leave();
    /* a removal may be a cloud call: without the module's lock */
    note[0] = '\0';
    ok = cls == CKO_PRIVATE_KEY ? ctok_token_remove(tok, label, note, sizeof(note))
                                : ctok_token_remove_cert(tok, label);
    rv = ok ? CKR_OK : mod_rv_from_error(CKR_FUNCTION_FAILED);
    if (ok && note[0] != '\0')
        CTOK_DBG("token '%s', key '%s' removed: %s", ctok_token_name(tok), label, note);
    free(label);
    /* removed or not, what the token shows is read again */
    if (mod_enter_changed(h, id, &slot) == CKR_OK)
        mod_leave();
    return rv;
}

/* ---- C_CreateObject: certificates ---- */

struct cert_req {
    char *label;
    const CK_ATTRIBUTE *id, *value, *subject, *issuer, *serial;
    int has_type;
};

static CK_RV cert_attr(struct cert_req *r, const CK_ATTRIBUTE *a)
{
    CK_ULONG v;
    int taken;
    CK_RV rv;

    if (a->pValue == NULL)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if (a->type == CKA_ID) {
        r->id = a; /* checked against the key it certifies */
        return CKR_OK;
    }
    rv = mod_attr_common(a, CKO_CERTIFICATE, &r->label, &taken);
    if (taken)
        return rv;
    switch (a->type) {
    case CKA_CERTIFICATE_TYPE:
        if ((rv = mod_attr_ulong(a, &v)) != CKR_OK)
            return rv;
        r->has_type = 1;
        return v == CKC_X_509 ? CKR_OK : CKR_ATTRIBUTE_VALUE_INVALID;
    case CKA_VALUE:
        r->value = a;
        return CKR_OK;
    case CKA_SUBJECT:
        r->subject = a;
        return CKR_OK;
    case CKA_ISSUER:
        r->issuer = a;
        return CKR_OK;
    case CKA_SERIAL_NUMBER:
        r->serial = a;
        return CKR_OK;
    case CKA_TRUSTED:
        /* C_GetAttributeValue says false for every certificate */
        return a->ulValueLen == sizeof(CK_BBOOL) && !*(const CK_BBOOL *)a->pValue
                   ? CKR_OK
                   : CKR_ATTRIBUTE_VALUE_INVALID;
    case CKA_CERTIFICATE_CATEGORY:
        return CKR_OK; /* reported as unspecified */
    default:
        return CKR_ATTRIBUTE_TYPE_INVALID;
    }
}

/* A template attribute that must be what the certificate says (i2d of what it holds). */
static int same_der(const CK_ATTRIBUTE *a, uint8_t *der, int len)
{
    int eq = a == NULL || (len >= 0 && a->ulValueLen == (CK_ULONG)len &&
                           (len == 0 || memcmp(a->pValue, der, (size_t)len) == 0));

    OPENSSL_free(der);
    return eq;
}

static CK_RV cert_parse(struct cert_req *r, const CK_ATTRIBUTE *t, CK_ULONG n, X509 **x)
{
    CK_RV rv = CKR_OK;
    const uint8_t *p;
    uint8_t *der;
    int len;

    for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++)
        rv = cert_attr(r, &t[i]);
    if (rv != CKR_OK)
        return rv;
    if (!r->has_type || r->value == NULL)
        return CKR_TEMPLATE_INCOMPLETE;
    p = r->value->pValue;
    *x = r->value->ulValueLen <= 65536 ? d2i_X509(NULL, &p, (long)r->value->ulValueLen) : NULL;
    if (*x == NULL || p != (const uint8_t *)r->value->pValue + r->value->ulValueLen)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    /* each i2d before same_der reads der (the order of a call's arguments is unspecified) */
    der = NULL;
    len = i2d_X509_NAME(X509_get_subject_name(*x), &der);
    if (!same_der(r->subject, der, len))
        return CKR_TEMPLATE_INCONSISTENT;
    der = NULL;
    len = i2d_X509_NAME(X509_get_issuer_name(*x), &der);
    if (!same_der(r->issuer, der, len))
        return CKR_TEMPLATE_INCONSISTENT;
    der = NULL;
    len = i2d_ASN1_INTEGER(X509_get0_serialNumber(*x), &der);
    if (!same_der(r->serial, der, len))
        return CKR_TEMPLATE_INCONSISTENT;
    return CKR_OK;
}

/*
 * The key the certificate certifies (same public key), if the slot shows it: the certificate
 * takes its label when the template has none. An application's CKA_ID must be that key's id:
 * the token gives a certificate its key's id (certificate-first lookup finds the key by it),
 * and any other id could not be kept. Lock held, objects loaded.
 */
static CK_RV cert_binding(struct mod_slot *slot, struct cert_req *r, X509 *x)
{
    EVP_PKEY *pub = X509_get0_pubkey(x);
    const struct mod_obj *k = NULL;

    for (size_t i = 0; k == NULL && i < slot->n_objs; i++)
        if (slot->objs[i].cls != CKO_CERTIFICATE && slot->objs[i].pub != NULL && pub != NULL &&
            EVP_PKEY_eq(slot->objs[i].pub, pub) == 1)
            k = &slot->objs[i];
    if (r->id != NULL && r->id->ulValueLen > 0 &&
        (k == NULL || k->id_len != r->id->ulValueLen ||
         memcmp(k->id, r->id->pValue, k->id_len) != 0))
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if (r->label == NULL && k != NULL && (r->label = strdup(k->label)) == NULL)
        return CKR_HOST_MEMORY;
    return r->label != NULL ? CKR_OK : CKR_TEMPLATE_INCOMPLETE;
}

static CK_RV cert_handle(struct mod_slot *slot, X509 *x, CK_OBJECT_HANDLE *out)
{
    for (size_t i = 0; i < slot->n_objs; i++)
        if (slot->objs[i].cls == CKO_CERTIFICATE && X509_cmp(slot->objs[i].cert, x) == 0) {
            *out = slot->objs[i].handle;
            return CKR_OK;
        }
    return CKR_DEVICE_ERROR; /* stored, but the token does not show it */
}

CK_RV C_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out)
{
    struct cert_req r = {0};
    struct mod_session *s;
    struct mod_slot *slot;
    X509 *x = NULL;
    ctok_token *tok;
    CK_SLOT_ID id;
    CK_OBJECT_CLASS cls = CK_UNAVAILABLE_INFORMATION;
    CK_RV rv;

    if (out == NULL || (t == NULL && n > 0))
        return CKR_ARGUMENTS_BAD;
    for (CK_ULONG i = 0; i < n; i++)
        if (t[i].type == CKA_CLASS && t[i].pValue != NULL && t[i].ulValueLen == sizeof(cls))
            memcpy(&cls, t[i].pValue, sizeof(cls));
    if ((rv = mod_enter_change(h, &s, &slot)) != CKR_OK)
        return rv;
    id = s->slot;
    tok = slot->tok;
    /* keys are made on the token (C_GenerateKeyPair), never imported through the module */
    if (cls == CK_UNAVAILABLE_INFORMATION)
        rv = CKR_TEMPLATE_INCOMPLETE;
    else if (cls != CKO_CERTIFICATE)
        rv = CKR_ATTRIBUTE_VALUE_INVALID;
    else if ((rv = cert_parse(&r, t, n, &x)) == CKR_OK && (rv = mod_objects_load(slot)) == CKR_OK)
        rv = cert_binding(slot, &r, x);
    mod_leave();
    if (rv == CKR_OK && !ctok_token_put_cert(tok, r.label, x))
        rv = mod_rv_from_error(CKR_FUNCTION_FAILED);
    if (rv == CKR_OK && (rv = mod_enter_changed(h, id, &slot)) == CKR_OK) {
        rv = cert_handle(slot, x, out);
        mod_leave();
    }
    X509_free(x);
    free(r.label);
    return rv;
}

/*
 * Objects (PKCS#11 "object management"): certificates, public and private keys, read
 * once per login state and module generation, and again when a refresh finds the token's
 * objects changed (ctok_p11_objects_same). The public key of a private key is read
 * from the token once (the key, its public key object, or its certificate) and kept,
 * so verification and encoding never touch the token.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/param_build.h>

#include "p11.h"

void ctok_p11_objects_free(struct p11_obj *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].label);
        X509_free(v[i].cert);
        EVP_PKEY_free(v[i].pub);
    }
    free(v);
}

void ctok_p11_objects_clear(struct p11_tok *pt)
{
    ctok_p11_objects_free(pt->objs, pt->n_objs);
    pt->objs = NULL;
    pt->n_objs = 0;
    pt->objs_valid = 0;
}

int ctok_p11_get_attr(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                      CK_ATTRIBUTE_TYPE type, uint8_t **val, CK_ULONG *len)
{
    CK_ATTRIBUTE a = {type, NULL, 0};

    *val = NULL;
    *len = 0;
    if (P11_QUIET(pt->m, C_GetAttributeValue, (s, h, &a, 1)) != CKR_OK ||
        a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
        return 0;
    a.pValue = malloc(a.ulValueLen + 1);
    if (a.pValue == NULL)
        return 0;
    if (P11_CALL(pt->m, C_GetAttributeValue, (s, h, &a, 1)) != CKR_OK) {
        free(a.pValue);
        return 0;
    }
    ((uint8_t *)a.pValue)[a.ulValueLen] = '\0';
    *val = a.pValue;
    *len = a.ulValueLen;
    return 1;
}

static EVP_PKEY *fromdata(struct p11_tok *pt, const char *type, OSSL_PARAM_BLD *b)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(b);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(ctok_ctx_libctx(ctok_token_ctx(pt->tok)), type,
                                                 ctok_ctx_propq(ctok_token_ctx(pt->tok)));
    EVP_PKEY *k = NULL;

    /* a key object whose public half cannot be made is reported by ctok where it is used */
    ERR_set_mark();
    if (params == NULL || c == NULL || EVP_PKEY_fromdata_init(c) <= 0 ||
        EVP_PKEY_fromdata(c, &k, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        k = NULL;
    ERR_pop_to_mark();
    EVP_PKEY_CTX_free(c);
    OSSL_PARAM_free(params);
    return k;
}

/*
 * CKA_EC_POINT is a DER OCTET STRING by the standard; some modules give the raw point. The
 * attempt is made under a mark: a raw point must leave no ASN.1 error behind (issue 11).
 */
static const uint8_t *ec_point(const uint8_t *v, CK_ULONG len, size_t *plen, ASN1_OCTET_STRING **os)
{
    const uint8_t *p = v;

    ERR_set_mark();
    *os =
        len > 0 && v[0] == V_ASN1_OCTET_STRING ? d2i_ASN1_OCTET_STRING(NULL, &p, (long)len) : NULL;
    ERR_pop_to_mark();
    if (*os != NULL && p == v + len) {
        *plen = (size_t)ASN1_STRING_length(*os);
        return ASN1_STRING_get0_data(*os);
    }
    ASN1_OCTET_STRING_free(*os);
    *os = NULL;
    *plen = len;
    return v;
}

/*
 * The curve CKA_EC_PARAMS names: an OID, or a PrintableString for Edwards curves (PKCS#11
 * 3.0). Each form is told by its tag, so no decoding attempt leaves an error on the queue.
 */
static int ec_curve(const uint8_t *v, CK_ULONG len)
{
    const uint8_t *p = v;
    ASN1_OBJECT *oid;
    int nid = NID_undef;

    if (len > 2 && v[0] == V_ASN1_OBJECT) {
        ERR_set_mark();
        oid = d2i_ASN1_OBJECT(NULL, &p, (long)len);
        ERR_pop_to_mark();
        nid = oid != NULL ? OBJ_obj2nid(oid) : NID_undef;
        ASN1_OBJECT_free(oid);
    } else if (len == 14 && v[0] == V_ASN1_PRINTABLESTRING && v[1] == 12 &&
               memcmp(v + 2, "edwards25519", 12) == 0) {
        nid = NID_ED25519;
    }
    return nid;
}

/*
 * An EC public key whose CKA_EC_PARAMS hold explicit ECParameters (ICAO CSCA and DS keys):
 * the parameters decoded by OpenSSL's own decoder in ctok's library context, then the point.
 */
static EVP_PKEY *explicit_ec(struct p11_tok *pt, const uint8_t *par, CK_ULONG parlen,
                             const uint8_t *point, size_t plen)
{
    ctok_ctx *cx = ctok_token_ctx(pt->tok);
    EVP_PKEY *k = NULL;
    const uint8_t *p = par;
    size_t left = parlen;
    OSSL_DECODER_CTX *d =
        OSSL_DECODER_CTX_new_for_pkey(&k, "DER", "type-specific", "EC", EVP_PKEY_KEY_PARAMETERS,
                                      ctok_ctx_libctx(cx), ctok_ctx_propq(cx));

    ERR_set_mark();
    if (d == NULL || !OSSL_DECODER_from_data(d, &p, &left) ||
        !EVP_PKEY_set_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, plen)) {
        EVP_PKEY_free(k);
        k = NULL;
    }
    ERR_pop_to_mark();
    OSSL_DECODER_CTX_free(d);
    return k;
}

/* The public key of an EC or Edwards key object from its CKA_EC_PARAMS and CKA_EC_POINT. */
static EVP_PKEY *ec_public(struct p11_tok *pt, CK_KEY_TYPE kt, const uint8_t *par, CK_ULONG parlen,
                           const uint8_t *pt_attr, CK_ULONG ptlen)
{
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    ASN1_OCTET_STRING *os = NULL;
    size_t plen;
    const uint8_t *point = ec_point(pt_attr, ptlen, &plen, &os);
    int nid = ec_curve(par, parlen);
    EVP_PKEY *k = NULL;

    if (b == NULL) {
        ASN1_OCTET_STRING_free(os);
        return NULL;
    }
    if (kt == CKK_EC_EDWARDS) {
        if (nid == NID_ED25519 &&
            OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, point, plen))
            k = fromdata(pt, "ED25519", b);
    } else if (nid != NID_undef) {
        if (OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, OBJ_nid2sn(nid), 0) &&
            OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, point, plen))
            k = fromdata(pt, "EC", b);
    } else if (parlen > 2 && par[0] == (V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED)) {
        k = explicit_ec(pt, par, parlen, point, plen);
    }
    ASN1_OCTET_STRING_free(os);
    OSSL_PARAM_BLD_free(b);
    return k;
}

EVP_PKEY *ctok_p11_public_key(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                              CK_KEY_TYPE kt)
{
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    uint8_t *v1 = NULL, *v2 = NULL;
    CK_ULONG l1, l2;
    BIGNUM *n = NULL, *e = NULL;
    EVP_PKEY *k = NULL;

    if (b == NULL)
        return NULL;
    if (kt == CKK_RSA) {
        if (ctok_p11_get_attr(pt, s, h, CKA_MODULUS, &v1, &l1) &&
            ctok_p11_get_attr(pt, s, h, CKA_PUBLIC_EXPONENT, &v2, &l2) &&
            (n = BN_bin2bn(v1, (int)l1, NULL)) != NULL &&
            (e = BN_bin2bn(v2, (int)l2, NULL)) != NULL &&
            OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, n) &&
            OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, e))
            k = fromdata(pt, "RSA", b);
    } else if ((kt == CKK_EC || kt == CKK_EC_EDWARDS) &&
               ctok_p11_get_attr(pt, s, h, CKA_EC_POINT, &v2, &l2) &&
               ctok_p11_get_attr(pt, s, h, CKA_EC_PARAMS, &v1, &l1)) {
        k = ec_public(pt, kt, v1, l1, v2, l2);
    }
    BN_free(n);
    BN_free(e);
    free(v1);
    free(v2);
    OSSL_PARAM_BLD_free(b);
    return k;
}

/* Every object of a class; a failure is reported with the call and its CKR. */
/*
 * C_FindObjectsInit. A search that a failed C_FindObjectsFinal left open on this pooled
 * session (CKR_OPERATION_ACTIVE) is ended and the call made again, so one failed call does
 * not make the session useless for every later search.
 */
CK_RV ctok_p11_find_init(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n)
{
    CK_RV rv = P11_CALL(pt->m, C_FindObjectsInit, (s, t, n));

    if (rv == CKR_OPERATION_ACTIVE && P11_CALL(pt->m, C_FindObjectsFinal, (s)) == CKR_OK)
        rv = P11_CALL(pt->m, C_FindObjectsInit, (s, t, n));
    return rv;
}

/* Every object matching template t; a failure is reported with the call and its CKR. */
static int find_all(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG nt,
                    CK_OBJECT_HANDLE **out, CK_ULONG *n, CK_RV *rvp)
{
    CK_OBJECT_HANDLE *v = NULL;
    CK_ULONG cap = 0, got = 0;
    const char *step = "C_FindObjectsInit";
    CK_RV rv;

    *out = NULL;
    *n = 0;
    rv = ctok_p11_find_init(pt, s, t, nt);
    if (rv == CKR_OK) {
        step = "C_FindObjects";
        do {
            if (*n == cap) {
                CK_OBJECT_HANDLE *nv = realloc(v, (cap += 64) * sizeof(*v));

                if (nv == NULL) {
                    rv = CKR_HOST_MEMORY;
                    break;
                }
                v = nv;
            }
            rv = P11_CALL(pt->m, C_FindObjects, (s, v + *n, cap - *n, &got));
            if (rv == CKR_OK)
                *n += got;
        } while (rv == CKR_OK && got > 0);
        (void)P11_CALL(pt->m, C_FindObjectsFinal, (s));
    }
    *rvp = rv;
    if (rv != CKR_OK) {
        free(v);
        *n = 0;
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': reading its objects failed: %s returned %s",
                 ctok_token_name(pt->tok), step, ctok_p11_rv_name(rv));
        return 0;
    }
    *out = v;
    return 1;
}

static int read_common(struct p11_tok *pt, CK_SESSION_HANDLE s, struct p11_obj *o)
{
    uint8_t *v;
    CK_ULONG l;

    if (ctok_p11_get_attr(pt, s, o->h, CKA_ID, &v, &l)) {
        o->id_len = l < CTOK_MAX_ID ? l : CTOK_MAX_ID;
        memcpy(o->id, v, o->id_len);
        free(v);
    }
    if (ctok_p11_get_attr(pt, s, o->h, CKA_LABEL, &v, &l))
        o->label = (char *)v;
    else
        o->label = strdup("");
    if (o->cls != CKO_CERTIFICATE && ctok_p11_get_attr(pt, s, o->h, CKA_KEY_TYPE, &v, &l)) {
        if (l == sizeof(CK_KEY_TYPE))
            memcpy(&o->kt, v, sizeof(o->kt));
        free(v);
    }
    return o->label != NULL;
}

/*
 * A token certificate, decoded in ctok's library context (the child of the application's):
 * its public key then lives in the default provider's key manager there. Decoded in the
 * application's context, with a third provider (base) loaded, the key landed in ctok's own
 * EC key manager, on which X.509 signing failed (issue 11). Not a certificate: NULL, and
 * nothing left on the error queue.
 */
static X509 *decode_cert(struct p11_tok *pt, const uint8_t *der, CK_ULONG len)
{
    ctok_ctx *cx = ctok_token_ctx(pt->tok);
    X509 *x = X509_new_ex(ctok_ctx_libctx(cx), ctok_ctx_propq(cx));
    const uint8_t *p = der;

    ERR_set_mark();
    if (x != NULL && d2i_X509(&x, &p, (long)len) == NULL) {
        X509_free(x);
        x = NULL;
    }
    ERR_pop_to_mark();
    return x;
}

/* Reads object h of class cls into o: 0 if it is not one ctok can use (nothing kept). */
static int read_obj(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                    CK_OBJECT_HANDLE h, struct p11_obj *o)
{
    uint8_t *der;
    CK_ULONG l;

    memset(o, 0, sizeof(*o));
    o->cls = cls;
    o->h = h;
    if (!read_common(pt, s, o))
        return 0;
    if (o->cls != CKO_CERTIFICATE) {
        o->pub = ctok_p11_public_key(pt, s, o->h, o->kt);
        return 1;
    }
    if (ctok_p11_get_attr(pt, s, o->h, CKA_VALUE, &der, &l)) {
        o->cert = decode_cert(pt, der, l);
        free(der);
    }
    ERR_set_mark();
    o->pub = o->cert != NULL ? X509_get_pubkey(o->cert) : NULL;
    ERR_pop_to_mark();
    if (o->pub == NULL) {
        free(o->label);
        X509_free(o->cert);
        return 0; /* not an X.509 certificate we can use */
    }
    o->kt = EVP_PKEY_is_a(o->pub, "RSA") || EVP_PKEY_is_a(o->pub, "RSA-PSS") ? CKK_RSA
            : EVP_PKEY_is_a(o->pub, "EC")                                    ? CKK_EC
                                                                             : CKK_EC_EDWARDS;
    return 1;
}

/* A private key without its point (EC) takes the public key of an object of class from. */
static void give_public(struct p11_obj *k, const struct p11_obj *v, size_t n, CK_OBJECT_CLASS from)
{
    for (size_t j = 0; k->cls == CKO_PRIVATE_KEY && k->pub == NULL && j < n; j++)
        if (v[j].cls == from && v[j].pub != NULL && v[j].id_len == k->id_len &&
            memcmp(v[j].id, k->id, k->id_len) == 0 && EVP_PKEY_up_ref(v[j].pub))
            k->pub = v[j].pub;
}

/*
 * The objects of types (CTOK_OBJ_*) matching label and/or id (NULL / 0: any), read into a
 * fresh array. An EC private key has no point: its public key object or certificate (same
 * id, among those read) gives it. Lock held.
 */
static int read_objects(struct p11_tok *pt, const char *label, const uint8_t *id, size_t id_len,
                        unsigned int types, struct p11_obj **out, size_t *nout, CK_RV *rvp)
{
    static const CK_OBJECT_CLASS classes[] = {CKO_CERTIFICATE, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY};
    static const unsigned int class_types[] = {CTOK_OBJ_CERT, CTOK_OBJ_PUBLIC, CTOK_OBJ_PRIVATE};
    struct p11_obj *objs = NULL;
    size_t n_objs = 0;
    CK_SESSION_HANDLE s;
    CK_RV rv;
    int ok = 1;

    *out = NULL;
    *nout = 0;
    /* our own session: the pool's functions take the lock we hold */
    rv = P11_CALL(pt->m, C_OpenSession, (pt->slot, CKF_SERIAL_SESSION, NULL, NULL, &s));
    *rvp = rv;
    if (rv != CKR_OK) {
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': C_OpenSession failed: %s", ctok_token_name(pt->tok),
                 ctok_p11_rv_name(rv));
        return 0;
    }
    for (size_t c = 0; ok && c < 3; c++) {
        CK_OBJECT_CLASS cls = classes[c];
        CK_BBOOL yes = CK_TRUE;
        /* token objects: ctok's session copies of keys (other sessions') are no objects */
        CK_ATTRIBUTE t[4] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_TOKEN, &yes, sizeof(yes)}};
        CK_ULONG nt = 2, n;
        CK_OBJECT_HANDLE *hs;
        struct p11_obj *v;

        if (!(types & class_types[c]))
            continue;
        if (label != NULL)
            t[nt++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)label, strlen(label)};
        if (id != NULL)
            t[nt++] = (CK_ATTRIBUTE){CKA_ID, (void *)id, id_len};
        if (!find_all(pt, s, t, nt, &hs, &n, rvp)) {
            ok = 0;
            break;
        }
        v = realloc(objs, (n_objs + n + 1) * sizeof(*v));
        if (v == NULL) {
            free(hs);
            ok = 0;
            break;
        }
        objs = v;
        for (CK_ULONG i = 0; i < n; i++)
            n_objs += read_obj(pt, s, cls, hs[i], &objs[n_objs]);
        free(hs);
    }
    (void)P11_CALL(pt->m, C_CloseSession, (s));
    /* the public key object first: the certificate only when there is none */
    for (size_t c = 0; c < 2; c++)
        for (size_t i = 0; i < n_objs; i++)
            give_public(&objs[i], objs, n_objs, c == 0 ? CKO_PUBLIC_KEY : CKO_CERTIFICATE);
    if (!ok) {
        ctok_p11_objects_free(objs, n_objs);
        return 0;
    }
    *out = objs;
    *nout = n_objs;
    return 1;
}

/* Does the session see a certificate at all (one C_FindObjects of one object)? Lock held. */
int ctok_p11_any_cert(struct p11_tok *pt)
{
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_ATTRIBUTE t = {CKA_CLASS, &cls, sizeof(cls)};
    CK_OBJECT_HANDLE h;
    CK_SESSION_HANDLE s;
    CK_ULONG got = 0;

    if (pt->objs_valid && pt->gen == pt->m->generation) {
        for (size_t i = 0; i < pt->n_objs; i++)
            if (pt->objs[i].cls == CKO_CERTIFICATE)
                return 1;
        return 0;
    }
    if (P11_CALL(pt->m, C_OpenSession, (pt->slot, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
        return 0;
    if (ctok_p11_find_init(pt, s, &t, 1) == CKR_OK) {
        if (P11_CALL(pt->m, C_FindObjects, (s, &h, 1, &got)) != CKR_OK)
            got = 0;
        (void)P11_CALL(pt->m, C_FindObjectsFinal, (s));
    }
    (void)P11_CALL(pt->m, C_CloseSession, (s));
    return got > 0;
}

/* The token objects the session sees, in brief: their number and a sum of their handles
 * (another process's new or removed object changes one). 0: no answer. Lock held. */
static int objects_seen(struct p11_tok *pt, uint64_t seen[2])
{
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE t[1] = {{CKA_TOKEN, &yes, sizeof(yes)}};
    CK_OBJECT_HANDLE *hs;
    CK_SESSION_HANDLE s;
    CK_ULONG n;
    CK_RV rv;
    int ok;

    if (P11_CALL(pt->m, C_OpenSession, (pt->slot, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
        return 0;
    ok = find_all(pt, s, t, 1, &hs, &n, &rv);
    (void)P11_CALL(pt->m, C_CloseSession, (s));
    if (!ok)
        return 0;
    seen[0] = n;
    seen[1] = 0;
    for (CK_ULONG i = 0; i < n; i++)
        seen[1] += (uint64_t)hs[i] * 0x9e3779b97f4a7c15ull;
    free(hs);
    return 1;
}

int ctok_p11_objects_same(struct p11_tok *pt)
{
    uint64_t now[2];

    return pt->objs_valid && pt->gen == pt->m->generation && objects_seen(pt, now) &&
           memcmp(now, pt->objs_seen, sizeof(now)) == 0;
}

/* Reads every object the session can see into the cache. Lock held. */
int ctok_p11_objects_load(struct p11_tok *pt)
{
    CK_RV rv;

    ctok_p11_objects_clear(pt);
    pt->objs_valid = read_objects(pt, NULL, NULL, 0, CTOK_OBJ_ANY, &pt->objs, &pt->n_objs, &rv);
    /* no answer: the next refresh reads the objects again */
    if (pt->objs_valid && !objects_seen(pt, pt->objs_seen))
        memset(pt->objs_seen, 0xff, sizeof(pt->objs_seen));
    return pt->objs_valid;
}

/*
 * The objects of types with this label and/or id: the cache when it is current, else read with
 * a C_FindObjects template on CKA_LABEL / CKA_ID (a key load does not read every object).
 * *owned: the array is the caller's (ctok_p11_objects_free), not the cache. *rv: the failed
 * call's CKR (a disconnect is recovered from by the caller). Lock held.
 */
int ctok_p11_objects_find(struct p11_tok *pt, const char *label, const uint8_t *id, size_t id_len,
                          unsigned int types, struct p11_obj **out, size_t *n, int *owned,
                          CK_RV *rv)
{
    *rv = CKR_OK;
    *owned = !(pt->objs_valid && pt->gen == pt->m->generation);
    if (!*owned) {
        *out = pt->objs;
        *n = pt->n_objs;
        return 1;
    }
    return read_objects(pt, label, id, id_len, types, out, n, rv);
}

CK_RV ctok_p11_find_key(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                        const uint8_t *id, size_t id_len, CK_OBJECT_HANDLE *h)
{
    CK_BBOOL yes = CK_TRUE;
    /* the token object: never a session copy (ctok's, in any session) of it */
    CK_ATTRIBUTE t[3] = {{CKA_CLASS, &cls, sizeof(cls)},
                         {CKA_ID, (void *)id, id_len},
                         {CKA_TOKEN, &yes, sizeof(yes)}};
    CK_ULONG got = 0;
    CK_RV rv = ctok_p11_find_init(pt, s, t, 3);

    if (rv != CKR_OK)
        return rv;
    rv = P11_CALL(pt->m, C_FindObjects, (s, h, 1, &got));
    (void)P11_CALL(pt->m, C_FindObjectsFinal, (s));
    return rv != CKR_OK ? rv : got == 1 ? CKR_OK : CKR_KEY_HANDLE_INVALID;
}

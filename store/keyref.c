/*
 * Key-reference PEM files (-----BEGIN CTOK URI-----): DER SEQUENCE { version INTEGER,
 * uri UTF8String }. They hold no secret: applications that only read key files (nginx,
 * Python ssl) name a token key with one. pkcs11-provider's own (-----BEGIN PKCS#11 PROVIDER
 * URI-----: SEQUENCE { desc VisibleString, uri UTF8String }, its src/pk11_uri.c) are read too,
 * so its users switch without issuing them again; their URI is a pkcs11: URI.
 */
#include <string.h>
#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "p11kit_lazy.h"
#include "token.h"

/* The URI string, if it is one: not empty, no NUL inside, of the expected scheme (or any). */
static char *uri_of(const ASN1_UTF8STRING *s, const char *scheme)
{
    const char *v = (const char *)ASN1_STRING_get0_data(s);
    int n = ASN1_STRING_length(s);

    if (n <= 0 || memchr(v, 0, (size_t)n) != NULL ||
        (scheme != NULL && ((size_t)n < strlen(scheme) || strncmp(v, scheme, strlen(scheme)) != 0)))
        return NULL;
    return OPENSSL_strndup(v, (size_t)n);
}

/* clang-format off */
typedef struct {
    ASN1_INTEGER *version;
    ASN1_UTF8STRING *uri;
} CTOK_KEYREF;

ASN1_SEQUENCE(CTOK_KEYREF) = {
    ASN1_SIMPLE(CTOK_KEYREF, version, ASN1_INTEGER),
    ASN1_SIMPLE(CTOK_KEYREF, uri, ASN1_UTF8STRING),
} ASN1_SEQUENCE_END(CTOK_KEYREF)

DECLARE_ASN1_FUNCTIONS(CTOK_KEYREF)
IMPLEMENT_ASN1_FUNCTIONS(CTOK_KEYREF)

typedef struct {
    ASN1_VISIBLESTRING *desc;
    ASN1_UTF8STRING *uri;
} CTOK_P11PROV_URI;

ASN1_SEQUENCE(CTOK_P11PROV_URI) = {
    ASN1_SIMPLE(CTOK_P11PROV_URI, desc, ASN1_VISIBLESTRING),
    ASN1_SIMPLE(CTOK_P11PROV_URI, uri, ASN1_UTF8STRING),
} ASN1_SEQUENCE_END(CTOK_P11PROV_URI)

DECLARE_ASN1_FUNCTIONS(CTOK_P11PROV_URI)
IMPLEMENT_ASN1_FUNCTIONS(CTOK_P11PROV_URI);
/* clang-format on */

char *ctok_keyref_decode(const uint8_t *der, size_t len)
{
    const uint8_t *p = der;
    CTOK_KEYREF *r;
    CTOK_P11PROV_URI *q = NULL;
    char *uri = NULL;

    /* not a key reference is an answer, not an error: the caller says what it means */
    ERR_set_mark();
    r = d2i_CTOK_KEYREF(NULL, &p, (long)len);
    if (r == NULL) {
        p = der;
        q = d2i_CTOK_P11PROV_URI(NULL, &p, (long)len);
    }
    ERR_pop_to_mark();
    if (r != NULL && p == der + len && ASN1_INTEGER_get(r->version) == 0)
        uri = uri_of(r->uri, NULL);
    else if (q != NULL && p == der + len)
        uri = uri_of(q->uri, "pkcs11:");
    CTOK_KEYREF_free(r);
    CTOK_P11PROV_URI_free(q);
    return uri;
}

int ctok_keyref_uri_parse(const char *uri, struct ctok_uri *u)
{
    char shown[512];

    if (!ctok_uri_parse(uri, u))
        return 0;
    if (u->p11 != NULL && p11_kit_uri_get_module_path(u->p11) != NULL) {
        ctok_uri_redact(uri, shown, sizeof(shown));
        CTOK_ERR(CTOK_R_BAD_URI,
                 "key reference '%s': key references may not name a library (module-path); "
                 "register the module with p11-kit and use module-name, or configure a token",
                 shown);
        ctok_uri_clear(u);
        return 0;
    }
    if (u->pin_value == NULL && u->pin_source == NULL)
        return 1;
    ctok_uri_redact(uri, shown, sizeof(shown));
    CTOK_ERR(CTOK_R_BAD_URI,
             "key reference '%s': key references may not carry auth codes (pin-value, "
             "pin-source); the token's configured auth or the application's prompt is used",
             shown);
    ctok_uri_clear(u);
    return 0;
}

int ctok_keyref_write_pem(BIO *out, const char *uri)
{
    CTOK_KEYREF *r = NULL;
    struct ctok_uri u;
    uint8_t *der = NULL;
    int len = -1, ok = 0;

    if (!ctok_keyref_uri_parse(uri, &u))
        return 0;
    ctok_uri_clear(&u);
    r = CTOK_KEYREF_new();
    if (r != NULL && ASN1_INTEGER_set(r->version, 0) &&
        ASN1_STRING_set(r->uri, uri, (int)strlen(uri)))
        len = i2d_CTOK_KEYREF(r, &der);
    if (len > 0)
        ok = PEM_write_bio(out, CTOK_KEYREF_PEM_LABEL, "", der, len) > 0;
    OPENSSL_free(der);
    CTOK_KEYREF_free(r);
    return ok;
}

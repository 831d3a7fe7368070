/*
 * Key-reference PEM files (-----BEGIN CTOK URI-----): DER SEQUENCE { version INTEGER,
 * uri UTF8String }. They hold no secret: applications that only read key files (nginx,
 * Python ssl) name a token key with one.
 */
#include <string.h>
#include <openssl/asn1t.h>
#include <openssl/pem.h>

#include "token.h"

typedef struct {
    ASN1_INTEGER *version;
    ASN1_UTF8STRING *uri;
} CTOK_KEYREF;

ASN1_SEQUENCE(CTOK_KEYREF) =
    {
        ASN1_SIMPLE(CTOK_KEYREF, version, ASN1_INTEGER),
        ASN1_SIMPLE(CTOK_KEYREF, uri, ASN1_UTF8STRING),
} ASN1_SEQUENCE_END(CTOK_KEYREF)

        DECLARE_ASN1_FUNCTIONS(CTOK_KEYREF) IMPLEMENT_ASN1_FUNCTIONS(CTOK_KEYREF)

            char *
    ctok_keyref_decode(const uint8_t *der, size_t len)
{
    const uint8_t *p = der;
    CTOK_KEYREF *r = d2i_CTOK_KEYREF(NULL, &p, (long)len);
    char *uri = NULL;

    if (r != NULL && p == der + len && ASN1_INTEGER_get(r->version) == 0 &&
        ASN1_STRING_length(r->uri) > 0 &&
        memchr(ASN1_STRING_get0_data(r->uri), 0, ASN1_STRING_length(r->uri)) == NULL)
        uri = OPENSSL_strndup((const char *)ASN1_STRING_get0_data(r->uri),
                              ASN1_STRING_length(r->uri));
    CTOK_KEYREF_free(r);
    return uri;
}

int ctok_keyref_write_pem(BIO *out, const char *uri)
{
    CTOK_KEYREF *r = CTOK_KEYREF_new();
    uint8_t *der = NULL;
    int len = -1, ok = 0;

    if (r != NULL && ASN1_INTEGER_set(r->version, 0) &&
        ASN1_STRING_set(r->uri, uri, (int)strlen(uri)))
        len = i2d_CTOK_KEYREF(r, &der);
    if (len > 0)
        ok = PEM_write_bio(out, CTOK_KEYREF_PEM_LABEL, "", der, len) > 0;
    OPENSSL_free(der);
    CTOK_KEYREF_free(r);
    return ok;
}

/* ctok: URIs, RFC 7512 style: path attributes split by ';', query after '?'. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>

#include "p11kit_lazy.h"
#include "token.h"

/*
 * ASCII only, as URI attribute names and hex digits are, whatever the process's locale (and
 * libc's tolower would page in its locale tables for a redaction made on every URI).
 */
static char ascii_lower(int c)
{
    return (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = ascii_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Is attribute name [a, a+len) one that carries an auth code (pin-value, pin-source, any
 * spelling of a name with "pin" in it, percent-encoded or not)? */
static int secret_name(const char *a, size_t len)
{
    char name[64];
    size_t o = 0;

    for (size_t i = 0; i < len && o + 1 < sizeof(name); i++) {
        int hi = i + 2 < len && a[i] == '%' ? hexval((unsigned char)a[i + 1]) : -1;
        int lo = hi >= 0 ? hexval((unsigned char)a[i + 2]) : -1;

        if (lo >= 0) {
            name[o++] = ascii_lower(hi << 4 | lo);
            i += 2;
        } else {
            name[o++] = ascii_lower((unsigned char)a[i]);
        }
    }
    name[o] = '\0';
    return strstr(name, "pin") != NULL || len >= sizeof(name);
}

void ctok_uri_redact(const char *uri, char *out, size_t outlen)
{
    const char *colon = strchr(uri, ':'), *p, *end;
    size_t o = 0;
    int query = 0;

#define PUT(str, n)                                                                                \
    do {                                                                                           \
        size_t k_ = (n) < outlen - 1 - o ? (n) : outlen - 1 - o;                                   \
        memcpy(out + o, (str), k_);                                                                \
        o += k_;                                                                                   \
    } while (0)
    if (outlen == 0)
        return;
    p = colon != NULL ? colon + 1 : uri;
    PUT(uri, (size_t)(p - uri));
    for (; *p != '\0'; p = *end != '\0' ? end + 1 : end) {
        const char *eq;

        for (end = p; *end != '\0' && *end != '&' && (query || (*end != ';' && *end != '?'));)
            end++;
        eq = memchr(p, '=', (size_t)(end - p));
        if (eq == NULL && end > p)
            PUT("...", 3); /* not name=value: it may be anything, a PIN too */
        else if (eq != NULL && secret_name(p, (size_t)(eq - p))) {
            PUT(p, (size_t)(eq - p) + 1);
            PUT("...", 3);
        } else {
            PUT(p, (size_t)(end - p));
        }
        if (*end == '?')
            query = 1;
        if (*end != '\0')
            PUT(end, 1);
    }
#undef PUT
    out[o] = '\0';
}

/* Percent-decodes [s, s+len) into a new buffer; *outlen gets its length. */
static char *pct_decode(const char *uri, const char *s, size_t len, size_t *outlen)
{
    char *out = malloc(len + 1);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int hi = i + 1 < len ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < len ? hexval((unsigned char)s[i + 2]) : -1;

            if (hi < 0 || lo < 0) {
                CTOK_ERR(CTOK_R_BAD_URI, "'%s': bad percent-encoding", uri);
                OPENSSL_clear_free(out, len + 1);
                return NULL;
            }
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
            continue;
        }
        out[o++] = s[i];
    }
    out[o] = '\0';
    if (outlen != NULL)
        *outlen = o;
    return out;
}

/* Takes raw (freed here) as the URI's id. */
static int set_id(const char *uri, struct ctok_uri *u, char *raw, size_t n)
{
    int ok = n <= CTOK_MAX_ID;

    if (ok) {
        memcpy(u->id, raw, n);
        u->id_len = n;
        u->has_id = 1;
    } else {
        CTOK_ERR(CTOK_R_BAD_URI, "'%s': id longer than %d bytes", uri, CTOK_MAX_ID);
    }
    free(raw);
    return ok;
}

static int set_string(const char *uri, char **dst, const char *attr, const char *v, size_t vlen)
{
    size_t n;

    if (*dst != NULL) {
        CTOK_ERR(CTOK_R_BAD_URI, "'%s': attribute '%s' given twice", uri, attr);
        return 0;
    }
    *dst = pct_decode(uri, v, vlen, &n);
    if (*dst == NULL)
        return 0;
    if (strlen(*dst) != n) {
        CTOK_ERR(CTOK_R_BAD_URI, "'%s': attribute '%s' contains a NUL byte", uri, attr);
        return 0;
    }
    return 1;
}

static int parse_attr(const char *uri, struct ctok_uri *u, const char *a, size_t alen, int query)
{
    const char *eq = memchr(a, '=', alen);
    size_t klen, vlen;
    const char *v;

    if (eq == NULL) {
        /* the text is not shown: a query attribute without a name may be a PIN */
        CTOK_ERR(CTOK_R_BAD_URI, "'%s': an attribute is not name=value", uri);
        return 0;
    }
    klen = (size_t)(eq - a);
    v = eq + 1;
    vlen = alen - klen - 1;
#define IS(k) (klen == strlen(k) && memcmp(a, k, klen) == 0)
    if (!query && IS("token"))
        return set_string(uri, &u->token, "token", v, vlen);
    if (!query && IS("token-id"))
        return set_string(uri, &u->token_id, "token-id", v, vlen);
    if (!query && IS("object"))
        return set_string(uri, &u->object, "object", v, vlen);
    if (!query && IS("id")) {
        size_t n;
        char *raw;

        if (u->has_id) {
            CTOK_ERR(CTOK_R_BAD_URI, "'%s': attribute 'id' given twice", uri);
            return 0;
        }
        raw = pct_decode(uri, v, vlen, &n);
        return raw != NULL && set_id(uri, u, raw, n);
    }
    if (!query && IS("type")) {
        if (vlen == 4 && memcmp(v, "cert", 4) == 0)
            u->types = CTOK_OBJ_CERT;
        else if (vlen == 6 && memcmp(v, "public", 6) == 0)
            u->types = CTOK_OBJ_PUBLIC;
        else if (vlen == 7 && memcmp(v, "private", 7) == 0)
            u->types = CTOK_OBJ_PRIVATE;
        else {
            CTOK_ERR(CTOK_R_BAD_URI, "'%s': type must be cert, public or private", uri);
            return 0;
        }
        return 1;
    }
    if (query && IS("pin-value"))
        return set_string(uri, &u->pin_value, "pin-value", v, vlen);
    if (query && IS("pin-source"))
        return set_string(uri, &u->pin_source, "pin-source", v, vlen);
#undef IS
    CTOK_ERR(CTOK_R_BAD_URI, "'%s': unknown attribute '%.*s'", uri, (int)klen, a);
    return 0;
}

static char *dup_attr(P11KitUri *p, CK_ATTRIBUTE_TYPE type, size_t *len)
{
    CK_ATTRIBUTE *a = p11_kit_uri_get_attribute(p, type);
    char *v;

    if (a == NULL || a->pValue == NULL)
        return NULL;
    v = malloc(a->ulValueLen + 1);
    if (v != NULL) {
        memcpy(v, a->pValue, a->ulValueLen);
        v[a->ulValueLen] = '\0';
        *len = a->ulValueLen;
    }
    return v;
}

/* RFC 7512 URIs, as p11-kit reads them; the object part becomes ctok's filters. */
static int parse_pkcs11(const char *uri, const char *shown, struct ctok_uri *u)
{
    P11KitUri *p = p11_kit_uri_new();
    CK_ATTRIBUTE *cls;
    size_t len;
    int r;

    if (p == NULL)
        return 0;
    r = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, p);
    if (r != P11_KIT_URI_OK) {
        CTOK_ERR(CTOK_R_BAD_URI, "'%s': %s", shown, p11_kit_uri_message(r));
        p11_kit_uri_free(p);
        return 0;
    }
    u->p11 = p;
    u->object = dup_attr(p, CKA_LABEL, &len);
    {
        char *id = dup_attr(p, CKA_ID, &len);

        if (id != NULL && !set_id(shown, u, id, len))
            return 0;
    }
    cls = p11_kit_uri_get_attribute(p, CKA_CLASS);
    if (cls != NULL && cls->ulValueLen == sizeof(CK_OBJECT_CLASS)) {
        CK_OBJECT_CLASS c = *(CK_OBJECT_CLASS *)cls->pValue;

        u->types = c == CKO_CERTIFICATE   ? CTOK_OBJ_CERT
                   : c == CKO_PUBLIC_KEY  ? CTOK_OBJ_PUBLIC
                   : c == CKO_PRIVATE_KEY ? CTOK_OBJ_PRIVATE
                                          : 0;
    }
    if (p11_kit_uri_get_pin_value(p) != NULL &&
        (u->pin_value = strdup(p11_kit_uri_get_pin_value(p))) == NULL)
        return 0;
    if (p11_kit_uri_get_pin_source(p) != NULL &&
        (u->pin_source = strdup(p11_kit_uri_get_pin_source(p))) == NULL)
        return 0;
    return 1;
}

int ctok_uri_parse(const char *uri, struct ctok_uri *u)
{
    const char *p, *end, *q;
    char s[512]; /* the URI as errors show it */

    ctok_uri_redact(uri, s, sizeof(s));
    memset(u, 0, sizeof(*u));
    u->types = CTOK_OBJ_ANY;
    if (strncmp(uri, "pkcs11:", 7) == 0) {
        if (parse_pkcs11(uri, s, u))
            return 1;
        ctok_uri_clear(u);
        return 0;
    }
    if (strncmp(uri, "ctok:", 5) != 0) {
        CTOK_ERR(CTOK_R_BAD_URI, "'%s': does not start with 'ctok:'", s);
        return 0;
    }
    p = uri + 5;
    q = strchr(p, '?');
    end = q != NULL ? q : p + strlen(p);
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *aend = semi != NULL ? semi : end;

        if (aend > p && !parse_attr(s, u, p, (size_t)(aend - p), 0))
            goto err;
        p = aend + 1;
    }
    if (q != NULL) {
        p = q + 1;
        end = p + strlen(p);
        while (p < end) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *aend = amp != NULL ? amp : end;

            if (aend > p && !parse_attr(s, u, p, (size_t)(aend - p), 1))
                goto err;
            p = aend + 1;
        }
    }
    if (u->pin_value != NULL && u->pin_source != NULL) {
        CTOK_ERR(CTOK_R_BAD_URI, "'%s': pin-value and pin-source exclude each other", s);
        goto err;
    }
    return 1;
err:
    ctok_uri_clear(u);
    return 0;
}

void ctok_uri_clear(struct ctok_uri *u)
{
    free(u->token);
    free(u->token_id);
    free(u->object);
    if (u->pin_value != NULL)
        OPENSSL_clear_free(u->pin_value, strlen(u->pin_value));
    free(u->pin_source);
    if (u->p11 != NULL)
        p11_kit_uri_free(u->p11);
    memset(u, 0, sizeof(*u));
}

/* Appends sep attr=value to b, percent-encoding all (or all but RFC 3986 unreserved) bytes. */
static int put_attr(BIO *b, const char *sep, const char *attr, const uint8_t *v, size_t len,
                    int all)
{
    if (BIO_printf(b, "%s%s=", sep, attr) <= 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        int c = v[i], plain = !all && (isalnum(c) || strchr("-._~", c) != NULL);

        if ((plain ? BIO_printf(b, "%c", c) : BIO_printf(b, "%%%02X", c)) <= 0)
            return 0;
    }
    return 1;
}

static char *make(const char *tok_attr, const char *token, const char *label, const uint8_t *id,
                  size_t id_len, unsigned int type);

char *ctok_uri_make(const char *token, const char *label, const uint8_t *id, size_t id_len,
                    unsigned int type)
{
    return make("token", token, label, id, id_len, type);
}

char *ctok_uri_make_by_token_id(const char *token_id, const char *label, unsigned int type)
{
    return make("token-id", token_id, label, NULL, 0, type);
}

static char *make(const char *tok_attr, const char *token, const char *label, const uint8_t *id,
                  size_t id_len, unsigned int type)
{
    static const char *const types[] = {
        [CTOK_OBJ_CERT] = "cert", [CTOK_OBJ_PUBLIC] = "public", [CTOK_OBJ_PRIVATE] = "private"};
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *data;
    long n;
    int ok =
        b != NULL && BIO_puts(b, "ctok:") == 5 &&
        put_attr(b, "", tok_attr, (const uint8_t *)token, strlen(token), 0) &&
        (label == NULL || put_attr(b, ";", "object", (const uint8_t *)label, strlen(label), 0)) &&
        (id_len == 0 || put_attr(b, ";", "id", id, id_len, 1)) &&
        (type == 0 || type > CTOK_OBJ_PRIVATE || types[type] == NULL ||
         BIO_printf(b, ";type=%s", types[type]) > 0);

    if (ok && (n = BIO_get_mem_data(b, &data)) > 0 &&
        (out = OPENSSL_malloc((size_t)n + 1)) != NULL) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
    }
    BIO_free(b);
    return out;
}

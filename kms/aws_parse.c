/* AWS KMS response parsers (aws_parse.h): pure, every field checked, fuzzed. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/x509.h>

#include "aws_parse.h"

static const struct {
    unsigned int bit;
    const char *name;
} alg_names[] = {
    {KMS_RSA_PKCS1_SHA_256, "RSASSA_PKCS1_V1_5_SHA_256"},
    {KMS_RSA_PKCS1_SHA_384, "RSASSA_PKCS1_V1_5_SHA_384"},
    {KMS_RSA_PKCS1_SHA_512, "RSASSA_PKCS1_V1_5_SHA_512"},
    {KMS_RSA_PSS_SHA_256, "RSASSA_PSS_SHA_256"},
    {KMS_RSA_PSS_SHA_384, "RSASSA_PSS_SHA_384"},
    {KMS_RSA_PSS_SHA_512, "RSASSA_PSS_SHA_512"},
    {KMS_ECDSA_SHA_256, "ECDSA_SHA_256"},
    {KMS_ECDSA_SHA_384, "ECDSA_SHA_384"},
    {KMS_ECDSA_SHA_512, "ECDSA_SHA_512"},
    {KMS_OAEP_SHA_1, "RSAES_OAEP_SHA_1"},
    {KMS_OAEP_SHA_256, "RSAES_OAEP_SHA_256"},
};
#define N_ALGS (sizeof(alg_names) / sizeof(alg_names[0]))

const char *ctok_kms_alg_name(unsigned int alg)
{
    for (size_t i = 0; i < N_ALGS; i++)
        if (alg_names[i].bit == alg)
            return alg_names[i].name;
    return NULL;
}

/* The algorithms a list names; names ctok does not know are left out. */
static int parse_algs(const json_t *list, unsigned int *algs)
{
    size_t i;
    json_t *e;

    if (list == NULL)
        return 1;
    if (!json_is_array(list))
        return 0;
    json_array_foreach(list, i, e)
    {
        const char *s = json_string_value(e);

        if (s == NULL)
            return 0;
        for (size_t k = 0; k < N_ALGS; k++)
            if (strcmp(s, alg_names[k].name) == 0)
                *algs |= alg_names[k].bit;
    }
    return 1;
}

int ctok_kms_key_id(const char *s, char key_id[KMS_KEY_ID_MAX])
{
    const char *k = s != NULL ? strstr(s, ":key/") : NULL;
    size_t n;

    if (s == NULL)
        return 0;
    if (k != NULL)
        s = k + 5;
    n = strlen(s);
    if (n == 0 || n >= KMS_KEY_ID_MAX || strspn(s, "0123456789abcdefABCDEFmrk-") != n)
        return 0;
    memmove(key_id, s, n + 1); /* key_id may be s itself */
    return 1;
}

int ctok_kms_parse_aliases(const json_t *r, struct kms_alias **v, size_t *n, char **marker)
{
    const json_t *list = json_object_get(r, "Aliases");
    const json_t *trunc = json_object_get(r, "Truncated");
    const char *next = json_string_value(json_object_get(r, "NextMarker"));
    size_t i;
    json_t *a;

    *marker = NULL;
    if (!json_is_object(r) || (list != NULL && !json_is_array(list)) ||
        (trunc != NULL && !json_is_boolean(trunc)))
        return 0;
    json_array_foreach(list, i, a)
    {
        const char *name = json_string_value(json_object_get(a, "AliasName"));
        const json_t *target = json_object_get(a, "TargetKeyId");
        struct kms_alias *nv, *e;

        if (name == NULL || strncmp(name, "alias/", 6) != 0 || name[6] == '\0')
            return 0;
        /* AWS's own aliases (alias/aws/...) and aliases without a key are no objects */
        if (target == NULL || strncmp(name, "alias/aws/", 10) == 0)
            continue;
        nv = realloc(*v, (*n + 1) * sizeof(**v));
        if (nv == NULL)
            return 0;
        *v = nv;
        e = &nv[*n];
        if (!ctok_kms_key_id(json_string_value(target), e->key_id) ||
            (e->name = strdup(name + 6)) == NULL)
            return 0;
        (*n)++;
    }
    if (json_is_true(trunc)) {
        if (next == NULL || *next == '\0' || (*marker = strdup(next)) == NULL)
            return 0;
    }
    return 1;
}

void ctok_kms_aliases_free(struct kms_alias *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

/* Standard base64 (with padding) into out[*len]; in: the room. */
static int b64_decode(const char *s, uint8_t *out, size_t *len)
{
    size_t n = s != NULL ? strlen(s) : 0, pad = 0, dec;
    uint8_t *tmp;
    int r;

    if (s == NULL || n % 4 != 0 || n > 64 * 1024 ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != n)
        return 0;
    while (pad < n && pad < 2 && s[n - 1 - pad] == '=')
        pad++;
    if (memchr(s, '=', n - pad) != NULL)
        return 0;
    dec = n / 4 * 3 - pad;
    if (dec > *len || (tmp = OPENSSL_malloc(n / 4 * 3 + 1)) == NULL)
        return 0;
    r = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n);
    if (r >= 0 && (size_t)r == n / 4 * 3) {
        memcpy(out, tmp, dec);
        *len = dec;
    }
    OPENSSL_clear_free(tmp, n / 4 * 3 + 1);
    return r >= 0 && (size_t)r == n / 4 * 3;
}

int ctok_kms_parse_blob(const json_t *r, const char *field, uint8_t *out, size_t *len)
{
    return json_is_object(r) && b64_decode(json_string_value(json_object_get(r, field)), out, len);
}

/* The key type a KeySpec names, and the public key it must come with. */
static enum ctok_key_type spec_type(const char *spec, const char **group)
{
    static const struct {
        const char *spec, *group;
    } ec[] = {{"ECC_NIST_P256", "prime256v1"},
              {"ECC_NIST_P384", "secp384r1"},
              {"ECC_NIST_P521", "secp521r1"}};

    *group = NULL;
    if (strcmp(spec, "RSA_2048") == 0 || strcmp(spec, "RSA_3072") == 0 ||
        strcmp(spec, "RSA_4096") == 0)
        return CTOK_KT_RSA;
    for (size_t i = 0; i < sizeof(ec) / sizeof(ec[0]); i++)
        if (strcmp(spec, ec[i].spec) == 0) {
            *group = ec[i].group;
            return CTOK_KT_EC;
        }
    return CTOK_KT_NONE;
}

static int copy_str(char *dst, size_t cap, const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;

    if (s == NULL || n == 0 || n >= cap)
        return 0;
    memcpy(dst, s, n + 1);
    return 1;
}

/* Does the public key carry what KeySpec says? */
static int pub_matches(EVP_PKEY *pub, enum ctok_key_type t, const char *group)
{
    char g[64];

    if (t == CTOK_KT_RSA)
        return EVP_PKEY_is_a(pub, "RSA");
    return EVP_PKEY_is_a(pub, "EC") &&
           EVP_PKEY_get_utf8_string_param(pub, "group", g, sizeof(g), NULL) &&
           strcmp(g, group) == 0;
}

int ctok_kms_parse_pubkey(const json_t *r, OSSL_LIB_CTX *libctx, const char *propq,
                          struct kms_pubkey *out)
{
    const char *group, *usage = json_string_value(json_object_get(r, "KeyUsage"));
    uint8_t der[4096];
    size_t len = sizeof(der);
    const unsigned char *p = der;

    memset(out, 0, sizeof(*out));
    if (!json_is_object(r) ||
        !ctok_kms_key_id(json_string_value(json_object_get(r, "KeyId")), out->key_id) ||
        !copy_str(out->spec, sizeof(out->spec), json_string_value(json_object_get(r, "KeySpec"))) ||
        (usage != NULL && !copy_str(out->usage, sizeof(out->usage), usage)) ||
        !parse_algs(json_object_get(r, "SigningAlgorithms"), &out->algs) ||
        !parse_algs(json_object_get(r, "EncryptionAlgorithms"), &out->algs))
        return 0;
    out->type = spec_type(out->spec, &group);
    if (out->type == CTOK_KT_NONE)
        return 1; /* a key ctok does not use: no public key needed */
    if (!ctok_kms_parse_blob(r, "PublicKey", der, &len) ||
        (out->pub = d2i_PUBKEY_ex(NULL, &p, (long)len, libctx, propq)) == NULL || p != der + len ||
        !pub_matches(out->pub, out->type, group)) {
        ctok_kms_pubkey_clear(out);
        return 0;
    }
    return 1;
}

void ctok_kms_pubkey_clear(struct kms_pubkey *k)
{
    EVP_PKEY_free(k->pub);
    memset(k, 0, sizeof(*k));
}

int ctok_kms_parse_create_key(const json_t *r, char key_id[KMS_KEY_ID_MAX])
{
    const json_t *md = json_object_get(r, "KeyMetadata");

    return json_is_object(md) &&
           ctok_kms_key_id(json_string_value(json_object_get(md, "KeyId")), key_id);
}

int ctok_kms_parse_deletion(const json_t *r, char date[11], int *days)
{
    const json_t *d = json_object_get(r, "DeletionDate");
    const json_t *w = json_object_get(r, "PendingWindowInDays");
    struct tm tm;
    time_t t;

    *days = 0;
    if (!json_is_object(r) || (w != NULL && !json_is_integer(w)))
        return 0;
    if (w != NULL) {
        if (json_integer_value(w) < 1 || json_integer_value(w) > 365)
            return 0;
        *days = (int)json_integer_value(w);
    }
    if (json_is_number(d)) {
        /* the JSON protocol's timestamps: epoch seconds, fractions allowed */
        double s = json_number_value(d);

        if (!(s >= 0 && s < 253402300800.0)) /* before year 10000 */
            return 0;
        t = (time_t)s;
        if (gmtime_r(&t, &tm) == NULL)
            return 0;
        return strftime(date, 11, "%Y-%m-%d", &tm) == 10;
    }
    /* ISO 8601 text: its date part */
    const char *s = json_string_value(d);

    if (s == NULL || strlen(s) < 10 || strspn(s, "0123456789") != 4 || s[4] != '-' ||
        strspn(s + 5, "0123456789") != 2 || s[7] != '-' || strspn(s + 8, "0123456789") != 2)
        return 0;
    memcpy(date, s, 10);
    date[10] = '\0';
    return 1;
}

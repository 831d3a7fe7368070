/* A Key Vault key bundle and its JWK (kms/azure_parse.c ctok_az_parse_key, ctok_az_parse_jwk). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/azure_parse.h"

void fuzz_init(void) {}

/* what a parsed key promises the backend */
static void check(const struct az_key *k)
{
    fuzz_touch(k->name);
    fuzz_touch(k->version);
    fuzz_touch(k->kty);
    fuzz_touch(k->crv);
    if (k->type != CTOK_KT_NONE && k->pub == NULL)
        abort();
    if (k->type == CTOK_KT_RSA && (!EVP_PKEY_is_a(k->pub, "RSA") || k->bits < 1024))
        abort();
    if (k->type == CTOK_KT_EC && !EVP_PKEY_is_a(k->pub, "EC"))
        abort();
    if (k->name[0] != '\0' && !ctok_az_name_ok(k->name, 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    json_t *r = json_loadb((const char *)data, len, 0, NULL);
    struct az_key k;

    if (r == NULL)
        return 0;
    if (ctok_az_parse_key(r, NULL, NULL, &k)) {
        check(&k);
        /* a bundle always names the version sign and decrypt address */
        if (k.version[0] == '\0')
            abort();
        ctok_az_key_clear(&k);
    }
    if (ctok_az_parse_jwk(r, NULL, NULL, &k)) {
        check(&k);
        ctok_az_key_clear(&k);
    }
    json_decref(r);
    return 0;
}

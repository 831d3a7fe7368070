/* A GetPublicKey response (kms/aws_parse.c ctok_kms_parse_pubkey). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/aws_parse.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    json_t *r = json_loadb((const char *)data, len, 0, NULL);
    struct kms_pubkey k;

    if (r == NULL)
        return 0;
    if (ctok_kms_parse_pubkey(r, NULL, NULL, &k)) {
        fuzz_touch(k.key_id);
        fuzz_touch(k.spec);
        fuzz_touch(k.usage);
        /* a key ctok uses always comes with its public key, of the type KeySpec says */
        if (k.type != CTOK_KT_NONE && k.pub == NULL)
            abort();
        if (k.type == CTOK_KT_RSA && !EVP_PKEY_is_a(k.pub, "RSA"))
            abort();
        if (k.type == CTOK_KT_EC && !EVP_PKEY_is_a(k.pub, "EC"))
            abort();
        ctok_kms_pubkey_clear(&k);
    }
    json_decref(r);
    return 0;
}

/* A Sign (or Decrypt) response's base64 blob (kms/aws_parse.c ctok_kms_parse_blob). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/aws_parse.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    json_t *r = json_loadb((const char *)data, len, 0, NULL);
    /* a signature buffer as the provider sizes it (RSA-4096: 512), and a tight one */
    size_t rooms[] = {512, 64};

    if (r == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(rooms) / sizeof(rooms[0]); i++) {
        uint8_t *out = malloc(rooms[i]);
        size_t n = rooms[i];

        if (out == NULL)
            abort();
        if (ctok_kms_parse_blob(r, "Signature", out, &n) && n > rooms[i])
            abort(); /* never more than the room given */
        free(out);
    }
    json_decref(r);
    return 0;
}

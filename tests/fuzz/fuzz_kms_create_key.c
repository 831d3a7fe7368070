/* A CreateKey response (kms/aws_parse.c ctok_kms_parse_create_key). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/aws_parse.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    json_t *r = json_loadb((const char *)data, len, 0, NULL);
    char id[KMS_KEY_ID_MAX];

    if (r == NULL)
        return 0;
    if (ctok_kms_parse_create_key(r, id) && (id[0] == '\0' || strchr(id, '/') != NULL))
        abort(); /* a key id, never an ARN or nothing */
    json_decref(r);
    return 0;
}

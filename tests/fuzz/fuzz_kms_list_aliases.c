/* A ListAliases response (kms/aws_parse.c ctok_kms_parse_aliases), one page or several. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/aws_parse.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    json_t *r = json_loadb((const char *)data, len, 0, NULL);
    struct kms_alias *v = NULL;
    size_t n = 0;
    char *marker = NULL;

    if (r == NULL)
        return 0;
    /* twice: a second page appends to the first */
    for (int page = 0; page < 2; page++) {
        if (!ctok_kms_parse_aliases(r, &v, &n, &marker))
            break;
        fuzz_touch(marker);
        free(marker);
        marker = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        fuzz_touch(v[i].name);
        fuzz_touch(v[i].key_id);
        if (strncmp(v[i].name, "aws/", 4) == 0 || v[i].key_id[0] == '\0')
            abort(); /* AWS's own aliases and aliases without a key are never objects */
    }
    free(marker);
    ctok_kms_aliases_free(v, n);
    json_decref(r);
    return 0;
}

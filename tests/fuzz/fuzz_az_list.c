/* A Key Vault list page of keys or certificates (kms/azure_parse.c ctok_az_parse_list), two
 * pages appended, and the object ids in it (ctok_az_parse_id). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/azure_parse.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    json_t *r = json_loadb((const char *)data, len, 0, NULL);
    static const char *const colls[] = {"keys", "certificates"};

    if (r == NULL)
        return 0;
    for (size_t c = 0; c < 2; c++) {
        char **v = NULL, *next = NULL;
        size_t n = 0;

        for (int page = 0; page < 2; page++) {
            if (!ctok_az_parse_list(r, colls[c], &v, &n, &next))
                break;
            fuzz_touch(next);
            free(next);
            next = NULL;
        }
        /* every name is one a request path can carry as it is */
        for (size_t i = 0; i < n; i++)
            if (!ctok_az_name_ok(v[i], 0))
                abort();
        ctok_az_names_free(v, n);
    }
    json_decref(r);
    return 0;
}

/* The other Key Vault answers: a certificate bundle (ctok_az_parse_cert), a sign or decrypt
 * value into a 512- and a 64-byte buffer (ctok_az_parse_value), a deleted-key bundle
 * (ctok_az_parse_deleted). kms/azure_parse.c */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/azure_parse.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    json_t *r = json_loadb((const char *)data, len, 0, NULL);
    char name[AZ_NAME_MAX], date[11], rid[64];
    uint8_t out[512];
    size_t n;
    X509 *x;

    if (r == NULL)
        return 0;
    if (ctok_az_parse_cert(r, NULL, NULL, &x, name)) {
        if (x == NULL || !ctok_az_name_ok(name, 0))
            abort();
        X509_free(x);
    }
    for (size_t room = 64; room <= sizeof(out); room *= 8) {
        n = room;
        if (ctok_az_parse_value(r, out, &n) && (n == 0 || n > room))
            abort();
    }
    if (ctok_az_parse_deleted(r, date, rid, sizeof(rid))) {
        if (date[0] != '\0' && strlen(date) != 10)
            abort();
        if (strlen(rid) >= sizeof(rid) || strpbrk(rid, "\n\r\t") != NULL)
            abort();
    }
    json_decref(r);
    return 0;
}

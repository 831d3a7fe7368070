/*
 * Instance-role credential documents from IMDS (kms/creds.c): ctok_aws_parse_imds_creds, and
 * ctok_aws_parse_time on the input as a string. Parsed credentials must be complete.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/awsint.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct ctok_aws_creds c;
    char why[200], *s = fuzz_cstr(data, len);

    if (ctok_aws_parse_imds_creds((const char *)data, len, &c, why, sizeof(why))) {
        if (c.akid == NULL || c.secret == NULL || c.token == NULL || c.expires == (time_t)-1)
            fuzz_die("accepted incomplete credentials");
        ctok_aws_creds_clear(&c);
    } else {
        if (strnlen(why, sizeof(why)) == sizeof(why) || why[0] == '\0')
            fuzz_die("refused without a reason");
        if (c.akid != NULL || c.secret != NULL || c.token != NULL)
            fuzz_die("a refusal left credentials behind");
    }
    (void)ctok_aws_parse_time(s);
    free(s);
    return 0;
}

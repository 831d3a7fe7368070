/*
 * Azure AD and managed-identity token responses (kms/aad.c): ctok_az_parse_token. An accepted
 * token must be non-empty and fit in a header line (no control characters, no space), with a
 * positive lifetime; a refusal gives a reason and leaves no token behind.
 */
#include <openssl/crypto.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/azint.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    char *tok = (char *)"unset", why[200];
    long exp = -1;

    if (ctok_az_parse_token((const char *)data, len, &tok, &exp, why, sizeof(why))) {
        if (tok == NULL || tok[0] == '\0' || exp <= 0)
            fuzz_die("accepted an empty token or lifetime");
        for (const char *p = tok; *p; p++)
            if ((unsigned char)*p <= 0x20 || *p == 0x7f)
                fuzz_die("accepted a token that breaks a header line");
        OPENSSL_clear_free(tok, strlen(tok));
    } else {
        if (strnlen(why, sizeof(why)) == sizeof(why) || why[0] == '\0')
            fuzz_die("refused without a reason");
        if (tok != NULL || exp != 0)
            fuzz_die("a refusal left a token behind");
    }
    return 0;
}

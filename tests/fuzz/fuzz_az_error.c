/*
 * Key Vault ({"error":{"code","message"}}) and Azure AD ({error, error_description}) error
 * bodies (kms/azcall.c): ctok_az_parse_error. Code and message must come back NUL-terminated,
 * within their buffers and free of control characters: both go into one-line error messages.
 */
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/azint.h"

void fuzz_init(void) {}

static void check(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);

    if (n == cap)
        fuzz_die("unterminated field");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            fuzz_die("control character in a field");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    char code[CTOK_CLOUD_TYPE_MAX], msg[CTOK_CLOUD_MSG_MAX];

    ctok_az_parse_error((const char *)data, len, code, sizeof(code), msg, sizeof(msg));
    check(code, sizeof(code));
    check(msg, sizeof(msg));
    ctok_az_parse_error((const char *)data, len, code, 16, msg, 24);
    check(code, 16);
    check(msg, 24);
    return 0;
}

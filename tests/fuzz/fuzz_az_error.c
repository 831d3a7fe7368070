/*
 * Key Vault ({"error":{"code","message"}}) and Azure AD ({error, error_description}) error
 * bodies (kms/azcall.c): ctok_az_parse_error. Code and message must come back NUL-terminated,
 * within their buffers and free of control characters: both go into one-line error messages.
 */
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/azint.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    char code[CTOK_CLOUD_TYPE_MAX], msg[CTOK_CLOUD_MSG_MAX];

    ctok_az_parse_error((const char *)data, len, code, sizeof(code), msg, sizeof(msg));
    fuzz_check_field(code, sizeof(code));
    fuzz_check_field(msg, sizeof(msg));
    ctok_az_parse_error((const char *)data, len, code, 16, msg, 24);
    fuzz_check_field(code, 16);
    fuzz_check_field(msg, 24);
    return 0;
}

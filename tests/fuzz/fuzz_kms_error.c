/*
 * AWS error responses (kms/awscall.c): a KMS error body through ctok_aws_parse_error, once
 * without and once with an x-amzn-errortype header value. The type and message must come
 * back NUL-terminated, within their buffers and free of control characters: both go into
 * one-line error messages.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/awsint.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    char type[CTOK_AWS_TYPE_MAX], msg[CTOK_AWS_MSG_MAX],
        *hdr = fuzz_cstr(data, len > 64 ? 64 : len);

    ctok_aws_parse_error((const char *)data, len, NULL, type, sizeof(type), msg, sizeof(msg));
    fuzz_check_field(type, sizeof(type));
    fuzz_check_field(msg, sizeof(msg));
    ctok_aws_parse_error((const char *)data, len, hdr, type, 16, msg, 24);
    fuzz_check_field(type, 16);
    fuzz_check_field(msg, 24);
    free(hdr);
    return 0;
}

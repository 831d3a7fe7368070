/* A ScheduleKeyDeletion response (kms/aws_parse.c ctok_kms_parse_deletion). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../kms/aws_parse.h"

void fuzz_init(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    json_t *r = json_loadb((const char *)data, len, 0, NULL);
    char date[11];
    int days;

    if (r == NULL)
        return 0;
    if (ctok_kms_parse_deletion(r, date, &days) &&
        (strlen(date) != 10 || date[4] != '-' || date[7] != '-' || days < 0 || days > 365))
        abort(); /* what the tool prints is a date */
    json_decref(r);
    return 0;
}

/*
 * URIs through ctok_uri_parse (store/uri.c), as OSSL_STORE, key references and the tool
 * hand them over. Built twice: fuzz_ctok_uri (FUZZ_URI_SCHEME "ctok:") and fuzz_pkcs11_uri
 * ("pkcs11:", p11-kit's RFC 7512 parser). The scheme is put in front of an input that does
 * not start with it, so each target spends its time in its own branch.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>

#include "fuzz_common.h"
#include "../../store/token.h"

void fuzz_init(void) {}

/* Checks what a parsed URI promises the lookup. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    const char *scheme = FUZZ_URI_SCHEME;
    size_t sl = strlen(scheme);
    int has = len >= sl && memcmp(data, scheme, sl) == 0;
    char *s = malloc((has ? 0 : sl) + len + 1);
    struct ctok_uri u;

    if (s == NULL)
        fuzz_die("out of memory");
    memcpy(s, scheme, has ? 0 : sl);
    memcpy(s + (has ? 0 : sl), data, len);
    s[(has ? 0 : sl) + len] = '\0';
    if (ctok_uri_parse(s, &u)) {
        /* pkcs11: type=data or secret-key names no type ctok holds: types 0 finds nothing */
        if (u.id_len > CTOK_MAX_ID || (u.has_id == 0 && u.id_len != 0) ||
            (u.types & ~(unsigned)CTOK_OBJ_ANY) != 0 || (u.types == 0 && u.p11 == NULL))
            abort();
        /* what the lookup reads: every string must be a terminated one */
        fuzz_touch(u.token);
        fuzz_touch(u.token_id);
        fuzz_touch(u.object);
        fuzz_touch(u.pin_source);
        if (u.pin_value != NULL && u.pin_source != NULL && strncmp(s, "ctok:", 5) == 0)
            abort(); /* the ctok: parser promises they exclude each other */
        ctok_uri_clear(&u);
    }
    ERR_clear_error();
    free(s);
    return 0;
}

/*
 * Stored auth codes ({"auth": {"stored": "<base64>"}}, store/auth.c): the blob through
 * ctok_auth_stored_decrypt under a fixed master key, for the token id "fuzz-token".
 * make_corpus.py encrypts its seeds under the same key, so valid blobs decrypt.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../../store/internal.h"

static struct ctok_ctx ctx;
static struct ctok_token tok;

void fuzz_init(void)
{
    uint8_t key[32];

    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)i; /* the fixed master key: 00 01 02 .. 1f */
    ctx.master_key = strdup(fuzz_path("master.key"));
    fuzz_write(ctx.master_key, key, sizeof(key));
    tok.ctx = &ctx;
    tok.name = "fuzz";
    tok.id = "fuzz-token";
    {
        char *blob = ctok_auth_stored_encrypt(key, tok.id, "1234", 4), code[CTOK_MAX_CODE + 1];
        size_t n = 0;

        if (blob == NULL || !ctok_auth_stored_decrypt(&tok, blob, code, sizeof(code), &n) ||
            n != 4 || memcmp(code, "1234", 4) != 0)
            fuzz_die("a valid blob does not decrypt: the target would fuzz nothing");
        free(blob);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    char *blob = fuzz_cstr(data, len), code[CTOK_MAX_CODE + 1];
    size_t n = 0;

    if (ctok_auth_stored_decrypt(&tok, blob, code, sizeof(code), &n) &&
        (n >= sizeof(code) || code[n] != '\0'))
        abort(); /* a decrypted code is terminated and fits the caller's buffer */
    free(blob);
    return 0;
}

/*
 * The JSON token config (store/config.c), read the way every process reads it: written
 * to a 0600 file in the scratch directory and loaded through ctok_ctx_load.
 */
#include <stdlib.h>

#include "fuzz_common.h"
#include "../../store/token.h"

static const char *path;

void fuzz_init(void)
{
    path = fuzz_path("tokens.json");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    ctok_ctx *ctx;

    fuzz_write(path, data, len);
    ctx = ctok_ctx_new(NULL, NULL, path);
    if (ctx == NULL)
        fuzz_die("ctok_ctx_new");
    if (ctok_ctx_load(ctx)) {
        for (size_t i = 0; i < ctok_ctx_token_count(ctx); i++) {
            ctok_token *tok = ctok_ctx_token_at(ctx, i);

            fuzz_touch(ctok_token_name(tok));
            fuzz_touch(ctok_token_id(tok));
            fuzz_touch(ctok_token_type(tok));
            fuzz_touch(ctok_token_auth_kind(tok));
            if (ctok_ctx_token_find(ctx, ctok_token_name(tok), NULL) != tok)
                abort(); /* names are unique: each must find its own token */
        }
    }
    ctok_ctx_free(ctx);
    return 0;
}

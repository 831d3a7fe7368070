/*
 * The JSON token config (store/config.c), read the way every process reads it: written
 * to a 0600 file in the scratch directory and loaded through ctok_ctx_load.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>

#include "fuzz_common.h"
#include "../../store/token.h"

static const char *path;

/* The number of tokens the config holds, or -1 if it does not load. */
static int load(const uint8_t *data, size_t len)
{
    ctok_ctx *ctx;
    int n = -1;

    fuzz_write(path, data, len);
    ctx = ctok_ctx_new(NULL, NULL, path);
    if (ctx == NULL)
        fuzz_die("ctok_ctx_new");
    if (ctok_ctx_load(ctx)) {
        n = (int)ctok_ctx_token_count(ctx);
        for (int i = 0; i < n; i++) {
            ctok_token *tok = ctok_ctx_token_at(ctx, (size_t)i);

            fuzz_touch(ctok_token_name(tok));
            fuzz_touch(ctok_token_id(tok));
            fuzz_touch(ctok_token_type(tok));
            fuzz_touch(ctok_token_auth_kind(tok));
            if (ctok_ctx_token_find(ctx, ctok_token_name(tok), NULL) != tok)
                abort(); /* names are unique: each must find its own token */
        }
    }
    ctok_ctx_free(ctx);
    ERR_clear_error();
    return n;
}

void fuzz_init(void)
{
    static const char valid[] =
        "{\"tokens\": [{\"name\": \"a\", \"type\": \"pkcs12\", \"keystore\": \"/a.p12\"}]}";

    path = fuzz_path("tokens.json");
    if (load((const uint8_t *)valid, strlen(valid)) != 1)
        fuzz_die("a valid config does not load: the target would fuzz nothing");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    (void)load(data, len);
    return 0;
}

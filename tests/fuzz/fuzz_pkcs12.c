/*
 * The soft token's keystore reader (store/pkcs12.c): the input is written as the .p12 of
 * a configured pkcs12 token, then the backend opens it and lists what it shows without an
 * auth code (certificates, key bag attributes). Login is not fuzzed: its cost is the
 * keystore's own iteration count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>

#include "fuzz_common.h"
#include "../../store/internal.h"

static const char *keystore;
static ctok_token *tok;

static int seen(ctok_token *t, const struct ctok_object *o, void *arg)
{
    (void)t;
    ++*(int *)arg;
    fuzz_touch(o->label);
    if (o->id_len > CTOK_MAX_ID)
        abort();
    if (o->cert != NULL && X509_get_subject_name(o->cert) == NULL)
        abort();
    if (o->pub != NULL && EVP_PKEY_get_bits(o->pub) < 0)
        abort();
    return 1;
}

/* Opens the keystore as it is now: the number of objects it shows, or -1. */
static int read_keystore(void)
{
    int n = 0;

    if (tok->be->open(tok)) {
        (void)tok->be->hidden(tok);
        (void)tok->be->enumerate(tok, seen, &n);
    } else {
        n = -1;
    }
    ERR_clear_error();
    return n;
}

void fuzz_init(void)
{
    const char *cfg = fuzz_path("tokens.json");
    char conf[8192];
    ctok_ctx *ctx;

    keystore = fuzz_path("fuzz.p12");
    snprintf(conf, sizeof(conf),
             "{\"tokens\": [{\"name\": \"fuzz\", \"type\": \"pkcs12\", \"keystore\": \"%s\"}]}",
             keystore);
    fuzz_write(cfg, (const uint8_t *)conf, strlen(conf));
    ctx = ctok_ctx_new(NULL, NULL, cfg);
    if (ctx == NULL || !ctok_ctx_load(ctx) || (tok = ctok_ctx_token_at(ctx, 0)) == NULL)
        fuzz_die("cannot load the pkcs12 token config");
    fuzz_make_keystore(keystore);
    if (read_keystore() < 1)
        fuzz_die("a valid keystore shows nothing: the target would fuzz nothing");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    fuzz_write(keystore, data, len);
    (void)read_keystore();
    return 0;
}

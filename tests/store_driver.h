/* Shared by the test drivers linked against the token layer (libctok_store.a). */
#ifndef CTOK_TESTS_STORE_DRIVER_H
#define CTOK_TESTS_STORE_DRIVER_H

#include <stdarg.h>
#include <stdio.h>

#include "token.h"

/* The token layer's errors, one line each: "error: <reason>: <message>". */
static void driver_sink(int reason, const char *file, int line, const char *func, const char *fmt,
                        va_list ap)
{
    (void)file;
    (void)line;
    (void)func;
    fprintf(stderr, "error: %s: ", ctok_reason_string(reason));
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

/* The private key named alias on tok (found with ctok_find's flags), if the token is active. */
static ctok_key *driver_find_key(ctok_ctx *ctx, ctok_token *tok, const char *alias,
                                 unsigned int flags)
{
    struct ctok_uri u = {0};
    struct ctok_found *f = NULL;
    size_t n = 0;
    ctok_key *key = NULL;

    u.token = (char *)ctok_token_name(tok);
    u.object = (char *)alias;
    u.types = CTOK_OBJ_PRIVATE;
    if (ctok_find(ctx, &u, CTOK_OBJ_PRIVATE | flags, NULL, &f, &n) == 1 && n > 0 &&
        ctok_token_is_active(tok))
        key = ctok_token_key(tok, f[0].id, f[0].id_len);
    ctok_found_free(f, n);
    return key;
}

#endif

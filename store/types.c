/*
 * Token types: the token layer's only way to a backend is the table a program links in
 * (ctok_backends, backends.c), so this library names no backend and links none.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

const struct ctok_backend *ctok_backend_find(const char *type)
{
    for (size_t i = 0; type != NULL && ctok_backends[i] != NULL; i++)
        if (strcmp(ctok_backends[i]->type, type) == 0)
            return ctok_backends[i];
    return NULL;
}

const char *ctok_type_names(void)
{
    static __thread char names[256];
    size_t n = 0;

    names[0] = '\0';
    for (size_t i = 0; ctok_backends[i] != NULL && n < sizeof(names); i++)
        n += (size_t)snprintf(names + n, sizeof(names) - n, "%s%s", i ? ", " : "",
                              ctok_backends[i]->type);
    return names;
}

const struct ctok_tool_field *ctok_type_fields(const char *type)
{
    static const struct ctok_tool_field none[] = {{0}};
    const struct ctok_backend *be = ctok_backend_find(type);

    if (be == NULL)
        return NULL;
    return be->tool_fields != NULL ? be->tool_fields : none;
}

json_t *ctok_discover_registered(const char *type)
{
    const struct ctok_backend *be = type != NULL ? ctok_backend_find(type) : NULL;
    json_t *all;

    if (type != NULL && be == NULL) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "unknown token type '%s' (known: %s)", type,
                 ctok_type_names());
        return NULL;
    }
    if (be != NULL) {
        if (be->registered != NULL)
            return be->registered();
        CTOK_ERR(CTOK_R_UNSUPPORTED, "%s tokens have nothing registered with the system", type);
        return NULL;
    }
    /* every type's */
    all = json_array();
    for (size_t i = 0; all != NULL && ctok_backends[i] != NULL; i++) {
        json_t *r = ctok_backends[i]->registered != NULL ? ctok_backends[i]->registered() : NULL;

        if (r != NULL)
            json_array_extend(all, r);
        json_decref(r);
    }
    return all;
}

json_t *ctok_token_discover(ctok_token *tok)
{
    if (!ctok_token_authorize(tok, CTOK_PERM_VIEW, "discovery", NULL) || !ctok_token_open(tok))
        return NULL;
    /* a token that shows nothing before login (a cloud account) is discovered logged in, with
     * the code its configuration names */
    if (!ctok_token_is_active(tok) && tok->be->hidden != NULL &&
        tok->be->hidden(tok) == CTOK_OBJ_ANY && !ctok_token_login(tok, NULL, NULL))
        return NULL;
    if (tok->be->discover == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': %s tokens offer no discovery", tok->name,
                 tok->type);
        return NULL;
    }
    return tok->be->discover(tok);
}

json_t *ctok_token_mechanisms(ctok_token *tok)
{
    if (!ctok_token_authorize(tok, CTOK_PERM_VIEW, "mechanism listing", NULL))
        return NULL;
    if (tok->be->mechanisms == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s' (%s) has no mechanism list", tok->name, tok->type);
        return NULL;
    }
    return ctok_token_open(tok) ? tok->be->mechanisms(tok) : NULL;
}

const struct ctok_key_kind *ctok_token_key_kinds(const ctok_token *tok)
{
    return tok->be->key_kinds;
}

char *ctok_token_pkcs11_uri(ctok_token *tok)
{
    if (tok->be->token_uri == NULL)
        return NULL;
    return ctok_token_open(tok) ? tok->be->token_uri(tok) : NULL;
}

void ctok_backends_use(void)
{
    for (size_t i = 0; ctok_backends[i] != NULL; i++)
        if (ctok_backends[i]->ctx_use != NULL)
            ctok_backends[i]->ctx_use();
}

void ctok_backends_release(void)
{
    for (size_t i = 0; ctok_backends[i] != NULL; i++)
        if (ctok_backends[i]->ctx_release != NULL)
            ctok_backends[i]->ctx_release();
}

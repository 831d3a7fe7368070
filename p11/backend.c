/*
 * The pkcs11 token type: one crypto token is one slot. Sessions come from a pool, login
 * is shared by all of them, and a connection failure re-initializes the module, finds
 * the slot again and logs in again with the known code (EJBCA's Pkcs11Ng behaviour).
 * This file: the token's configuration, opening and closing, and the backend's hook table;
 * the connection and session pool are session.c's, login login.c's, objects and key loading
 * lookup.c's.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "p11.h"
#include "../store/p11kit_lazy.h"

static int p11_configure(ctok_token *tok, const json_t *conf)
{
    const char *path = ctok_ctx_config_path(ctok_token_ctx(tok));
    const char *lib = json_string_value(json_object_get(conf, "library"));
    const char *rt = json_string_value(json_object_get(conf, "ref_type"));
    const json_t *refj = json_object_get(conf, "ref");
    const char *attrs = json_string_value(json_object_get(conf, "attributes"));
    struct p11_tok *pt;
    char num[32];

    if (lib == NULL || *lib == '\0') {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': pkcs11 token needs \"library\"", path,
                 ctok_token_name(tok));
        return 0;
    }
    /* without "ref" the token serves discovery only (every slot of the library) */
    if (refj != NULL && !json_is_string(refj) && !json_is_integer(refj)) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': pkcs11 token needs \"ref\" (slot id, index or "
                 "token label)",
                 path, ctok_token_name(tok));
        return 0;
    }
    pt = calloc(1, sizeof(*pt));
    if (pt == NULL)
        return 0;
    pthread_mutex_init(&pt->lock, NULL);
    pt->tok = tok;
    ctok_token_set_be(tok, pt);
    if (rt == NULL || strcmp(rt, "label") == 0) {
        pt->ref_type = P11_REF_LABEL;
    } else if (strcmp(rt, "id") == 0) {
        pt->ref_type = P11_REF_ID;
    } else if (strcmp(rt, "index") == 0) {
        pt->ref_type = P11_REF_INDEX;
    } else if (strcmp(rt, "serial") == 0) {
        pt->ref_type = P11_REF_SERIAL;
    } else {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': ref_type must be id, index, label or serial", path,
                 ctok_token_name(tok));
        return 0;
    }
    if (json_is_integer(refj))
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(refj));
    pt->library = strdup(lib);
    pt->ref = refj == NULL ? NULL : strdup(json_is_integer(refj) ? num : json_string_value(refj));
    pt->attributes = attrs != NULL ? strdup(attrs) : NULL;
    if (pt->ref != NULL && pt->ref_type != P11_REF_LABEL && pt->ref_type != P11_REF_SERIAL) {
        char *end;

        (void)strtoul(pt->ref, &end, 0);
        if (*pt->ref == '\0' || *end != '\0') {
            CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': ref '%s' is not a number", path,
                     ctok_token_name(tok), pt->ref);
            return 0;
        }
    }
    return pt->library != NULL && (refj == NULL || pt->ref != NULL);
}

static void p11_close(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);

    if (pt == NULL)
        return;
    /* sessions are not closed and the module is not finalized at exit: some modules crash
     * when C_Finalize runs after their own library teardown (SoftHSM 2.6) */
    ctok_p11_objects_clear(pt);
    free(pt->idle);
    free(pt->library);
    free(pt->ref);
    free(pt->attributes);
    pthread_mutex_destroy(&pt->lock);
    free(pt);
    ctok_token_set_be(tok, NULL);
}

static int p11_open(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);
    int ok;

    pt->m = ctok_p11_module_get(pt->library);
    if (pt->m == NULL || !ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    ok = ctok_p11_find_slot(pt);
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return ok;
}

static EVP_PKEY *p11_export_private(ctok_key *key)
{
    CTOK_ERR(CTOK_R_EXPORT_DENIED,
             "token '%s', key '%s': PKCS#11 private keys are not exported "
             "(they are generated CKA_SENSITIVE and not CKA_EXTRACTABLE)",
             ctok_token_name(key->tok), key->label);
    return NULL;
}

static int p11_match_uri(ctok_token *tok, void *uri)
{
    struct p11_tok *pt = P11TOK(tok);
    int ok;

    pthread_mutex_lock(&pt->lock);
    ok = pt->have_slot && p11_kit_uri_match_token_info(uri, &pt->tinfo) &&
         p11_kit_uri_match_module_info(uri, &pt->m->info);
    pthread_mutex_unlock(&pt->lock);
    return ok;
}

/* ctok token create: the slot the entry names is there and takes the code. */
static int p11_create(ctok_token *tok, const char *code, size_t len)
{
    return ctok_token_login_with(tok, code, len);
}

static json_t *p11_discover(ctok_token *tok)
{
    return ctok_p11_slot_list(P11TOK(tok)->library);
}

static const struct ctok_tool_field p11_fields[] = {
    {"library", "library", CTOK_FIELD_STRING, 1,
     "the PKCS#11 library: a path, or a name registered with p11-kit", NULL},
    {"ref-type", "ref_type", CTOK_FIELD_STRING, 0,
     "id|index|label|serial: what --ref names (label)", "label"},
    {"ref", "ref", CTOK_FIELD_STRING, 1,
     "the slot's id, index, token label or token serial (see 'ctok slots')", NULL},
    {"attributes", "attributes", CTOK_FIELD_PATH, 0, "key generation attribute file", NULL},
    {0},
};

const struct ctok_backend ctok_pkcs11_backend = {
    .type = "pkcs11",
    .tool_fields = p11_fields,
    .create = p11_create,
    .discover = p11_discover,
    .mechanisms = ctok_p11_mechanisms,
    .token_uri = ctok_p11_token_uri,
    .registered = ctok_p11_registered,
    .ctx_use = ctok_p11_registry_use,
    .ctx_release = ctok_p11_registry_release,
    .configure = p11_configure,
    .open = p11_open,
    .login_code = ctok_p11_login,
    .logout = ctok_p11_logout,
    .pin_state = ctok_p11_pin_state,
    .enumerate = ctok_p11_enumerate,
    .refresh = ctok_p11_refresh,
    .find = ctok_p11_find,
    .hidden = ctok_p11_hidden,
    .match_p11_uri = p11_match_uri,
    .uri_candidates = ctok_p11_uri_candidates,
    .key_load = ctok_p11_key_load,
    .key_free = ctok_p11_key_free,
    .sign = ctok_p11_sign,
    .sign_rs = 1,
    .decrypt = ctok_p11_decrypt,
    .derive = ctok_p11_derive,
    .export_private = p11_export_private,
    .generate = ctok_p11_generate,
    .remove = ctok_p11_remove,
    .put_cert = ctok_p11_put_cert,
    .remove_cert = ctok_p11_remove_cert,
    .rename = ctok_p11_rename,
    .unlock_pin = ctok_p11_unlock_pin,
    .change_code = ctok_p11_change_code,
    .close = p11_close,
};

/* ctok token show|modify|delete|activate|deactivate, pin change, secret encrypt */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "cli.h"

int cmd_token_show(struct cli *c)
{
    ctok_token *tok = cli_token(c, c->argv[0]);
    const json_t *entry = tok != NULL ? ctok_token_config(tok) : NULL; /* rule view */
    json_t *j, *auth;
    const char *k;
    json_t *v;

    if (entry == NULL)
        return cli_fail();
    /* the config entry, with the auth code's source but never a stored code itself */
    j = json_deep_copy(entry);
    auth = json_object_get(j, "auth");
    if (json_object_get(auth, "stored") != NULL)
        json_object_set(auth, "stored", json_true());
    if (!ctok_token_open(tok)) {
        json_decref(j);
        return cli_fail();
    }
    if (c->json) {
        cli_print_json(j);
        return EXIT_OK;
    }
    json_object_foreach(j, k, v)
    {
        char *text = json_is_string(v) ? strdup(json_string_value(v))
                                       : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

        printf("%-14s %s\n", k, text != NULL ? text : "");
        free(text);
    }
    if (json_object_get(j, "permissions") == NULL)
        printf("%-14s %s\n", "permissions", "all");
    json_decref(j);
    return EXIT_OK;
}

struct modify {
    struct cli *c;
    const char *op;
};

static void set_path(json_t *e, const char *key, const char *path)
{
    char *a = cli_absolute(path);

    json_object_set_new(e, key, json_string(a != NULL ? a : path));
    free(a);
}

/* Parses "view,use,keygen": unknown rules are refused when the config is checked. */
static json_t *perm_list(const char *s)
{
    json_t *a = json_array();
    char *copy = strdup(s), *save = NULL;

    for (char *t = copy != NULL ? strtok_r(copy, ",", &save) : NULL; t != NULL;
         t = strtok_r(NULL, ",", &save))
        json_array_append_new(a, json_string(t));
    free(copy);
    return a;
}

static int edit_modify(json_t *config, json_t *e, void *arg)
{
    struct cli *c = ((struct modify *)arg)->c;
    int changed = 0;

    (void)config;
#define SET(cond, stmt)                                                                            \
    if (cond) {                                                                                    \
        stmt;                                                                                      \
        changed = 1;                                                                               \
    }
    SET(c->name != NULL, json_object_set_new(e, "name", json_string(c->name)))
    SET(c->allow_export, json_object_set_new(e, "allow_export", json_true()))
    SET(c->no_allow_export, json_object_set_new(e, "allow_export", json_false()))
    SET(c->explicit_ecc, json_object_set_new(e, "explicit_ecc", json_true()))
    SET(c->no_explicit_ecc, json_object_set_new(e, "explicit_ecc", json_false()))
    SET(c->audit_use, json_object_set_new(e, "audit_use", json_true()))
    SET(c->no_audit_use, json_object_set_new(e, "audit_use", json_false()))
    SET(c->pin_cache_fork, json_object_set_new(e, "pin_cache_fork", json_true()))
    SET(c->no_pin_cache_fork, json_object_set_new(e, "pin_cache_fork", json_false()))
    SET(c->audit_file != NULL, set_path(e, "audit_file", c->audit_file))
    if (c->n_opts > 0) {
        /* the fields of the token's type (--keystore, --library ...) */
        if (cli_type_options(c, json_string_value(json_object_get(e, "type")), e, 0) < 0)
            return 0; /* checked before the edit: not reached */
        changed = 1;
    }
    SET(c->permissions != NULL, json_object_set_new(e, "permissions", perm_list(c->permissions)))
    SET(c->auth_prompt, json_object_set_new(e, "auth", json_pack("{s:b}", "prompt", 1)))
    SET(c->auth_env != NULL, json_object_set_new(e, "auth", json_pack("{s:s}", "env", c->auth_env)))
    if (c->auth_file != NULL) {
        char *a = cli_absolute(c->auth_file);

        json_object_set_new(e, "auth", json_pack("{s:s}", "file", a != NULL ? a : c->auth_file));
        free(a);
        changed = 1;
    }
#undef SET
    if (!changed)
        CTOK_ERR(CTOK_R_INVALID_ARG, "token modify: nothing to change (see 'ctok token modify "
                                     "--help')");
    return changed;
}

int cmd_token_modify(struct cli *c)
{
    struct modify m = {c, "modify"};
    ctok_token *tok = cli_token(c, c->argv[0]);
    json_t *scratch = json_object();
    int r = tok != NULL ? cli_type_options(c, ctok_token_type(tok), scratch, 0) : 0;

    /* a type option the token's type does not have is a usage error, before any edit */
    json_decref(scratch);
    if (r < 0)
        return EXIT_USAGE;
    if (tok != NULL && c->auth_file != NULL && !cli_auth_file_check(c->argv[0], c->auth_file))
        return cli_fail();
    if (tok == NULL || !ctok_config_edit(c->ctx, c->argv[0], CTOK_PERM_MODIFY, edit_modify, &m))
        return cli_fail();
    /* which files name the token cannot be known: say what breaks and what does not */
    if (c->name != NULL && strcmp(c->name, c->argv[0]) != 0)
        fprintf(stderr,
                "ctok: note: token '%s' is now '%s': URIs and key references that name it by "
                "name (ctok:token=%s) stop working; those naming its id (token-id=%s, what "
                "'ctok ref' writes) keep working\n",
                c->argv[0], c->name, c->argv[0], ctok_token_id(tok));
    return cli_report(c, json_pack("{s:s, s:b}", "token", c->argv[0], "modified", 1),
                      "Token '%s' modified", c->argv[0]);
}

static int edit_delete(json_t *config, json_t *e, void *arg)
{
    (void)config;
    (void)arg;
    json_object_clear(e);
    return 1;
}

int cmd_token_delete(struct cli *c)
{
    ctok_token *tok = cli_token(c, c->argv[0]);

    if (tok == NULL || !ctok_config_edit(c->ctx, c->argv[0], CTOK_PERM_DELETE, edit_delete, NULL))
        return cli_fail();
    return cli_report(c,
                      json_pack("{s:s, s:b, s:s}", "token", c->argv[0], "deleted", 1, "config",
                                ctok_ctx_config_path(c->ctx)),
                      "Token '%s' removed from %s (its keystore or HSM slot is left as it is)",
                      c->argv[0], ctok_ctx_config_path(c->ctx));
}

struct remember {
    ctok_ctx *ctx;
    const char *token_id;
    const char *code;
    size_t len;
};

/*
 * {"stored": blob, "fallback": the configured source}: deactivate restores the fallback. A code
 * stored again (re-activation, pin change) keeps the fallback it had.
 */
static json_t *stored_auth(json_t *old, const char *blob)
{
    json_t *fallback =
        json_object_get(old, "stored") != NULL ? json_object_get(old, "fallback") : old;
    json_t *auth = json_pack("{s:s}", "stored", blob);

    if (fallback != NULL)
        json_object_set_new(auth, "fallback", json_deep_copy(fallback));
    return auth;
}

/* Stores the code encrypted under the master key: the token auto-activates from now on. */
static int edit_remember(json_t *config, json_t *e, void *arg)
{
    struct remember *r = arg;
    uint8_t key[32];
    char *blob;

    if (!ctok_master_key_ensure(r->ctx, config, key))
        return 0;
    blob = ctok_code_encrypt(key, r->token_id, r->code, r->len);
    OPENSSL_cleanse(key, sizeof(key));
    if (blob == NULL)
        return 0;
    json_object_set_new(e, "auth", stored_auth(json_object_get(e, "auth"), blob));
    OPENSSL_clear_free(blob, strlen(blob));
    return 1;
}

int cmd_token_activate(struct cli *c)
{
    /* refused before the code is asked for; ctok_token_activate_code checks again */
    ctok_token *tok = cli_permitted(c, c->argv[0], CTOK_PERM_ACTIVATE, "activation");
    char code[CTOK_MAX_CODE + 1], what[128], src[320];
    size_t len = 0;
    int ok;

    if (tok == NULL)
        return cli_fail();
    snprintf(what, sizeof(what), "Authentication code for token '%s'", c->argv[0]);
    /* only a code typed here may spend a PIN's final try */
    snprintf(src, sizeof(src), "%s%s",
             c->auth_file != NULL  ? "--auth-file "
             : c->auth_env != NULL ? "--auth-env "
                                   : "the tool's prompt",
             c->auth_file != NULL  ? c->auth_file
             : c->auth_env != NULL ? c->auth_env
                                   : "");
    if (!ctok_token_needs_code(tok)) { /* an instance role: nothing to read or remember */
        if (!ctok_token_activate_code(tok, NULL, 0, "the configuration", 0))
            return cli_fail();
        return cli_report(c, json_pack("{s:s, s:b}", "token", c->argv[0], "active", 1),
                          "Token '%s' activated (it needs no authentication code)", c->argv[0]);
    }
    ok = cli_read_secret(c->auth_file, c->auth_env, what, code, sizeof(code), &len) &&
         ctok_token_activate_code(tok, code, len, src, c->auth_file == NULL && c->auth_env == NULL);
    if (ok && c->remember) {
        struct remember r = {c->ctx, ctok_token_id(tok), code, len};

        ok = ctok_config_edit(c->ctx, c->argv[0], CTOK_PERM_ACTIVATE, edit_remember, &r);
    }
    OPENSSL_cleanse(code, sizeof(code));
    if (!ok)
        return cli_fail();
    return cli_report(
        c,
        json_pack("{s:s, s:b, s:b}", "token", c->argv[0], "active", 1, "remembered", c->remember),
        c->remember ? "Token '%s' activated; its authentication code is stored "
                      "encrypted (auto-activation)"
                    : "Token '%s': authentication code accepted",
        c->argv[0]);
}

#define SOURCE_LEN 300 /* "file PATH" of the restored source, for the report */

/* The configured source comes back; an entry remembered before fallbacks were kept prompts. */
static int edit_forget(json_t *config, json_t *e, void *arg)
{
    json_t *auth = json_object_get(e, "auth"), *fallback = json_object_get(auth, "fallback");
    char *source = arg;
    const char *k;
    json_t *v;

    (void)config;
    if (json_object_get(auth, "stored") == NULL)
        return 1; /* nothing stored: nothing to forget */
    auth = fallback != NULL ? json_deep_copy(fallback) : json_pack("{s:b}", "prompt", 1);
    json_object_foreach(auth, k, v)
        snprintf(source, SOURCE_LEN, "%s%s%s", k, json_is_string(v) ? " " : "",
                 json_is_string(v) ? json_string_value(v) : "");
    json_object_set_new(e, "auth", auth);
    return 1;
}

int cmd_token_deactivate(struct cli *c)
{
    ctok_token *tok = cli_token(c, c->argv[0]);
    char source[SOURCE_LEN] = "";

    if (tok == NULL ||
        !ctok_config_edit(c->ctx, c->argv[0], CTOK_PERM_DEACTIVATE, edit_forget, source) ||
        !ctok_token_deactivate(tok))
        return cli_fail();
    if (source[0] == '\0')
        return cli_report(c, json_pack("{s:s, s:b}", "token", c->argv[0], "active", 0),
                          "Token '%s' deactivated (it had no stored authentication code)",
                          c->argv[0]);
    return cli_report(
        c, json_pack("{s:s, s:b, s:s}", "token", c->argv[0], "active", 0, "auth", source),
        "Token '%s' deactivated: the stored authentication code is removed; its configured "
        "source is used again (%s)",
        c->argv[0], source);
}

int cmd_pin_change(struct cli *c)
{
    /* refused before the codes are asked for; the token layer checks again */
    ctok_token *tok = cli_permitted(c, c->argv[0], CTOK_PERM_MODIFY, "authentication code change");
    char old[CTOK_MAX_CODE + 1], code[CTOK_MAX_CODE + 1], what[128];
    size_t old_len = 0, len = 0;
    struct cli nc = *c;
    int ok, stored;

    if (tok == NULL)
        return cli_fail();
    snprintf(what, sizeof(what), "Current authentication code of token '%s'", c->argv[0]);
    nc.auth_file = c->new_auth_file;
    nc.auth_env = c->new_auth_env;
    ok = cli_read_secret(c->auth_file, c->auth_env, what, old, sizeof(old), &old_len) &&
         cli_read_new_code(&nc, c->argv[0], code, sizeof(code), &len);
    if (ok) {
        struct cli_progress *spinner = cli_progress_begin(c, "Changing the code");

        ok = ctok_token_change_code(tok, old, old_len, code, len);
        cli_progress_end(spinner);
    }
    stored = strcmp(ctok_token_auth_kind(tok), "stored") == 0;
    if (ok && stored) {
        struct remember r = {c->ctx, ctok_token_id(tok), code, len};

        ok = ctok_config_edit(c->ctx, c->argv[0], CTOK_PERM_MODIFY, edit_remember, &r);
    }
    OPENSSL_cleanse(old, sizeof(old));
    OPENSSL_cleanse(code, sizeof(code));
    if (!ok)
        return cli_fail();
    return cli_report(
        c, json_pack("{s:s, s:b, s:b}", "token", c->argv[0], "changed", 1, "stored", stored),
        "The authentication code of token '%s' is changed%s", c->argv[0],
        stored ? " (the stored copy too)"
        : strcmp(ctok_token_auth_kind(tok), "prompt") != 0
            ? "; update the token's auth file or variable"
            : "");
}

int cmd_secret_encrypt(struct cli *c)
{
    ctok_token *tok;
    char code[CTOK_MAX_CODE + 1];
    size_t len = 0;
    uint8_t key[32];
    json_error_t jerr;
    json_t *config;
    char *blob = NULL;
    int ok;

    if (c->token == NULL)
        return cli_usage("secret encrypt needs --token NAME (the code is bound to its id)");
    if ((tok = cli_token(c, c->token)) == NULL)
        return cli_fail();
    config = json_load_file(ctok_ctx_config_path(c->ctx), 0, &jerr);
    ok = config != NULL && cli_read_new_code(c, c->token, code, sizeof(code), &len) &&
         ctok_master_key_ensure(c->ctx, config, key);
    if (ok && (blob = ctok_code_encrypt(key, ctok_token_id(tok), code, len)) != NULL)
        printf("{\"stored\": \"%s\"}\n", blob);
    ok = ok && blob != NULL;
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(code, sizeof(code));
    if (blob != NULL)
        OPENSSL_clear_free(blob, strlen(blob));
    json_decref(config);
    return ok ? EXIT_OK : cli_fail();
}

/* ctok token create|list */
#define _GNU_SOURCE
#include <limits.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "cli.h"

/* An absolute path for the config: the tool may run from anywhere. */
static char *absolute(const char *p)
{
    char cwd[PATH_MAX], *out;

    if (p[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
        return strdup(p);
    if (asprintf(&out, "%s/%s", cwd, p) < 0)
        return NULL;
    return out;
}

int cmd_token_create(struct cli *c)
{
    char code[CTOK_MAX_CODE + 1], id[37];
    size_t len = 0;
    json_t *e;
    char *ks, *af = NULL;
    int ok;

    if (c->type == NULL || c->name == NULL)
        return cli_usage("token create needs --type and --name");
    if (strcmp(c->type, "pkcs12") != 0)
        return cli_usage("token type '%s' is not supported (supported: pkcs12)", c->type);
    if (c->keystore == NULL)
        return cli_usage("a pkcs12 token needs --keystore FILE");
    if (c->auth_file != NULL && c->auth_env != NULL)
        return cli_usage("give --auth-file or --auth-env, not both");
    if (!ctok_new_id(id) || !cli_read_new_code(c, c->name, code, sizeof(code), &len))
        return cli_fail();
    ks = absolute(c->keystore);
    if (c->auth_file != NULL)
        af = absolute(c->auth_file);
    e = json_pack("{s:s, s:s, s:s, s:s, s:o, s:b, s:b}", "name", c->name, "id", id, "type",
                  c->type, "keystore", ks != NULL ? ks : "", "auth",
                  af != NULL           ? json_pack("{s:s}", "file", af)
                  : c->auth_env != NULL ? json_pack("{s:s}", "env", c->auth_env)
                                        : json_pack("{s:b}", "prompt", 1),
                  "allow_export", c->allow_export, "explicit_ecc", c->explicit_ecc);
    ok = e != NULL && ctok_config_add_token(c->ctx, e, code, len);
    OPENSSL_cleanse(code, sizeof(code));
    json_decref(e);
    free(ks);
    free(af);
    if (!ok)
        return cli_fail();
    if (c->json)
        cli_print_json(json_pack("{s:s, s:s, s:s}", "name", c->name, "id", id, "type", c->type));
    else
        printf("Created token '%s' (%s, id %s)\n", c->name, c->type, id);
    return EXIT_OK;
}

int cmd_token_list(struct cli *c)
{
    json_t *list;
    json_error_t jerr;
    json_t *root, *o;
    size_t i;

    if (!ctok_ctx_load(c->ctx))
        return cli_fail();
    /* the config is the source of truth for the fields: show what it says */
    root = json_load_file(ctok_ctx_config_path(c->ctx), 0, &jerr);
    list = json_array();
    json_array_foreach(json_object_get(root, "tokens"), i, o) {
        ctok_token *tok = ctok_ctx_token_at(c->ctx, i);
        json_t *item;

        if (tok == NULL || !ctok_token_permits(tok, CTOK_PERM_VIEW))
            continue;
        item = json_pack("{s:s, s:s, s:s, s:b, s:b}", "name", ctok_token_name(tok), "id",
                         ctok_token_id(tok), "type", ctok_token_type(tok), "allow_export",
                         ctok_token_allow_export(tok), "explicit_ecc",
                         ctok_token_explicit_ecc(tok));
        if (json_object_get(o, "keystore") != NULL)
            json_object_set(item, "keystore", json_object_get(o, "keystore"));
        json_array_append_new(list, item);
    }
    json_decref(root);
    if (c->json) {
        cli_print_json(list);
        return EXIT_OK;
    }
    if (json_array_size(list) == 0)
        printf("No tokens in %s\n", ctok_ctx_config_path(c->ctx));
    else
        printf("%-20s %-8s %-36s %s\n", "NAME", "TYPE", "ID", "LOCATION");
    json_array_foreach(list, i, o) {
        printf("%-20s %-8s %-36s %s\n", json_string_value(json_object_get(o, "name")),
               json_string_value(json_object_get(o, "type")),
               json_string_value(json_object_get(o, "id")),
               json_string_value(json_object_get(o, "keystore")) != NULL
                   ? json_string_value(json_object_get(o, "keystore"))
                   : "");
    }
    json_decref(list);
    return EXIT_OK;
}

/* ctok token create|list, slots (discovery), mechanisms, pin unlock */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "cli.h"

int cmd_token_create(struct cli *c)
{
    char code[CTOK_MAX_CODE + 1], id[37];
    size_t len = 0;
    json_t *e, *fields;
    char *af = NULL;
    struct cli_progress *spinner;
    int ok, needs;

    if (c->type == NULL || c->name == NULL)
        return cli_usage("token create needs --type and --name");
    if (c->auth_file != NULL && c->auth_env != NULL)
        return cli_usage("give --auth-file or --auth-env, not both");
    if (c->auth_file != NULL && !cli_auth_file_check(c->name, c->auth_file))
        return cli_fail();
    fields = json_object();
    if (cli_type_options(c, c->type, fields, 1) < 0) {
        json_decref(fields);
        return EXIT_USAGE;
    }
    if (!ctok_new_id(id)) {
        json_decref(fields);
        return cli_fail();
    }
    e = json_pack("{s:s, s:s, s:s}", "name", c->name, "id", id, "type", c->type);
    json_object_update(e, fields);
    json_decref(fields);
    /* a token that signs in with what its entry names (an instance role) takes no code */
    if ((needs = ctok_entry_needs_code(c->ctx, e)) < 0 ||
        (needs && !cli_read_new_code(c, c->name, code, sizeof(code), &len))) {
        json_decref(e);
        return cli_fail();
    }
    if (c->auth_file != NULL)
        af = cli_absolute(c->auth_file);
    json_object_set_new(e, "auth",
                        af != NULL            ? json_pack("{s:s}", "file", af)
                        : c->auth_env != NULL ? json_pack("{s:s}", "env", c->auth_env)
                                              : json_pack("{s:b}", "prompt", 1));
    json_object_set_new(e, "allow_export", json_boolean(c->allow_export));
    json_object_set_new(e, "explicit_ecc", json_boolean(c->explicit_ecc));
    if (c->pin_cache_fork)
        json_object_set_new(e, "pin_cache_fork", json_true());
    spinner = cli_progress_begin(c, "Creating the token");
    ok = ctok_config_add_token(c->ctx, e, needs ? code : NULL, len);
    cli_progress_end(spinner);
    OPENSSL_cleanse(code, sizeof(code));
    json_decref(e);
    free(af);
    if (!ok)
        return cli_fail();
    if (c->json)
        cli_print_json(json_pack("{s:s, s:s, s:s}", "name", c->name, "id", id, "type", c->type));
    else
        printf("Created token '%s' (%s, id %s)\n", c->name, c->type, id);
    return EXIT_OK;
}

/* A JSON value as a table cell: arrays joined with ','. */
static void cell(const json_t *v, char *out, size_t len)
{
    size_t i, n = 0;
    json_t *x;

    out[0] = '\0';
    if (json_is_string(v))
        snprintf(out, len, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, len, "%lld", (long long)json_integer_value(v));
    else if (json_is_boolean(v))
        snprintf(out, len, "%s", json_is_true(v) ? "yes" : "no");
    else if (json_is_array(v))
        json_array_foreach(v, i, x) if (n < len) n += (size_t)snprintf(
            out + n, len - n, "%s%s", i ? "," : "", json_is_string(x) ? json_string_value(x) : "?");
}

/* One row of a table, columns from first's fields; width 0: measures the columns into w. */
static void table_row(const json_t *first, const json_t *item, int *w, int print)
{
    const char *key;
    json_t *v;
    char c[256];
    int k = 0;

    json_object_foreach((json_t *)first, key, v)
    {
        if (k == 32)
            break;
        if (item != NULL) {
            cell(json_object_get(item, key), c, sizeof(c));
        } else { /* the header: "token_label" is TOKEN LABEL */
            snprintf(c, sizeof(c), "%s", key);
            for (char *p = c; *p != '\0'; p++)
                *p = (char)(*p == '_' ? ' ' : toupper((unsigned char)*p));
        }
        if (print)
            printf("%-*s ", w[k], c);
        else if ((int)strlen(c) > w[k])
            w[k] = (int)strlen(c);
        k++;
    }
    if (print)
        putchar('\n');
}

/* What discovery found, as a table for people: one column per field of the first item. */
static void print_table(const json_t *list)
{
    const json_t *first = json_array_get(list, 0), *item;
    size_t i;
    int w[32] = {0};

    for (int print = 0; print < 2; print++) {
        table_row(first, NULL, w, print);
        json_array_foreach(list, i, item) table_row(first, item, w, print);
    }
}

/* Without type options: everything registered with the system (p11-kit's libraries). */
static int all_registered(struct cli *c)
{
    json_t *mods = ctok_discover_registered(c->type), *m;
    size_t i;

    if (mods == NULL)
        return cli_fail();
    if (c->json) {
        cli_print_json(mods);
        return EXIT_OK;
    }
    if (json_array_size(mods) == 0)
        printf("Nothing is registered (no PKCS#11 library with p11-kit); give one with "
               "--library PATH\n");
    json_array_foreach(mods, i, m)
    {
        printf("%s%s (%s)%s\n", i ? "\n" : "", json_string_value(json_object_get(m, "name")),
               json_string_value(json_object_get(m, "path")),
               json_object_get(m, "error") != NULL ? ": cannot be loaded or initialized" : "");
        if (json_array_size(json_object_get(m, "slots")) > 0)
            print_table(json_object_get(m, "slots"));
    }
    json_decref(mods);
    return EXIT_OK;
}

/* --type, else the first type that takes every option given. */
static const char *discovery_type(struct cli *c, char *buf, size_t len)
{
    if (c->type != NULL)
        return c->type;
    snprintf(buf, len, "%s", ctok_type_names());
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t != NULL;
         t = strtok_r(NULL, ", ", &save)) {
        const struct ctok_tool_field *f = ctok_type_fields(t);
        int i;

        for (i = 0; i < c->n_opts; i++) {
            const struct ctok_tool_field *g = f;

            while (g->option != NULL && strcmp(g->option, c->opts[i].name) != 0)
                g++;
            if (g->option == NULL)
                break;
        }
        if (i == c->n_opts)
            return t;
    }
    return NULL;
}

/* What the options name: a configured token (--token), else a type's discovery. NULL: failed
 * (*rc says how). */
static json_t *discovered(struct cli *c, int *rc)
{
    char types[256];
    const char *type;
    ctok_token *tok;
    json_t *e, *list;

    *rc = EXIT_FAILED;
    if (c->token != NULL && c->n_opts > 0) {
        *rc = cli_usage("give --token or a type's options, not both");
        return NULL;
    }
    if (c->token != NULL)
        return (tok = cli_token(c, c->token)) != NULL ? ctok_token_discover(tok) : NULL;
    if ((type = discovery_type(c, types, sizeof(types))) == NULL) {
        *rc = cli_usage("no token type takes --%s (types: %s)", c->opts[0].name, ctok_type_names());
        return NULL;
    }
    e = json_pack("{s:s}", "type", type);
    if (cli_type_options(c, type, e, 0) < 0) {
        *rc = EXIT_USAGE;
        json_decref(e);
        return NULL;
    }
    list = ctok_discover(c->ctx, e);
    json_decref(e);
    return list;
}

int cmd_slots(struct cli *c)
{
    json_t *list;
    int rc;

    if (c->token == NULL && c->n_opts == 0)
        return all_registered(c);
    if ((list = discovered(c, &rc)) == NULL)
        return rc == EXIT_USAGE ? rc : cli_fail();
    if (c->json) {
        cli_print_json(list);
        return EXIT_OK;
    }
    print_table(list);
    json_decref(list);
    return EXIT_OK;
}

int cmd_pin_unlock(struct cli *c)
{
    char puk[CTOK_MAX_CODE + 1], pin[CTOK_MAX_CODE + 1], what[128];
    size_t puk_len = 0, pin_len = 0;
    ctok_token *tok = cli_token(c, c->argv[0]);
    int ok;

    if (tok == NULL)
        return cli_fail();
    snprintf(what, sizeof(what), "PUK of token '%s'", c->argv[0]);
    ok = cli_read_secret(c->puk_file, c->puk_env, what, puk, sizeof(puk), &puk_len) &&
         cli_read_new_code(c, c->argv[0], pin, sizeof(pin), &pin_len) &&
         ctok_token_unlock_pin(tok, puk, puk_len, pin, pin_len);
    OPENSSL_cleanse(puk, sizeof(puk));
    OPENSSL_cleanse(pin, sizeof(pin));
    if (!ok)
        return cli_fail();
    return cli_report(c, json_pack("{s:s, s:b}", "token", c->argv[0], "unlocked", 1),
                      "The PIN of token '%s' is set and unlocked", c->argv[0]);
}

int cmd_token_list(struct cli *c)
{
    json_t *list;
    json_error_t jerr;
    json_t *root, *o;
    size_t i;

    /* a fresh machine has no config yet: no tokens, not a failure */
    if (access(ctok_ctx_config_path(c->ctx), F_OK) != 0 && errno == ENOENT)
        return cli_report(c, json_array(), "No tokens (no config file %s yet)",
                          ctok_ctx_config_path(c->ctx));
    if (!ctok_ctx_load(c->ctx))
        return cli_fail();
    /* the config is the source of truth for the fields: show what it says */
    root = json_load_file(ctok_ctx_config_path(c->ctx), 0, &jerr);
    list = json_array();
    json_array_foreach(json_object_get(root, "tokens"), i, o)
    {
        ctok_token *tok = ctok_ctx_token_at(c->ctx, i);
        json_t *item;

        if (tok == NULL || !ctok_token_permits(tok, CTOK_PERM_VIEW))
            continue;
        item =
            json_pack("{s:s, s:s, s:s, s:b, s:b}", "name", ctok_token_name(tok), "id",
                      ctok_token_id(tok), "type", ctok_token_type(tok), "allow_export",
                      ctok_token_allow_export(tok), "explicit_ecc", ctok_token_explicit_ecc(tok));
        /* where the token is: the fields of its type (keystore; library and slot reference) */
        for (const struct ctok_tool_field *f = ctok_type_fields(ctok_token_type(tok));
             f != NULL && f->option != NULL; f++)
            if (json_object_get(o, f->key) != NULL)
                json_object_set(item, f->key, json_object_get(o, f->key));
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
    json_array_foreach(list, i, o)
    {
        char where[600] = "", v[300];
        size_t n = 0;

        for (const struct ctok_tool_field *f =
                 ctok_type_fields(json_string_value(json_object_get(o, "type")));
             f != NULL && f->option != NULL && n < sizeof(where); f++) {
            if (json_object_get(o, f->key) == NULL)
                continue;
            cell(json_object_get(o, f->key), v, sizeof(v));
            n += (size_t)snprintf(where + n, sizeof(where) - n, "%s%s=%s", n ? " " : "", f->key, v);
        }
        printf("%-20s %-8s %-36s %s\n", json_string_value(json_object_get(o, "name")),
               json_string_value(json_object_get(o, "type")),
               json_string_value(json_object_get(o, "id")), where);
    }
    json_decref(list);
    return EXIT_OK;
}

int cmd_mechanisms(struct cli *c)
{
    ctok_token *tok = cli_token(c, c->argv[0]);
    json_t *list = tok != NULL ? ctok_token_mechanisms(tok) : NULL, *m, *f;
    size_t i, j;

    if (list == NULL)
        return cli_fail();
    if (c->json) {
        cli_print_json(list);
        return EXIT_OK;
    }
    /* pkcs11-tool -M's lines: name, keySize={min,max}, flags */
    printf("Mechanisms of token '%s':\n", c->argv[0]);
    json_array_foreach(list, i, m)
    {
        json_int_t lo = json_integer_value(json_object_get(m, "min_key_size"));
        json_int_t hi = json_integer_value(json_object_get(m, "max_key_size"));

        printf("  %s", json_string_value(json_object_get(m, "name")));
        if (lo != 0 || hi != 0)
            printf(", keySize={%lld,%lld}", (long long)lo, (long long)hi);
        json_array_foreach(json_object_get(m, "flags"), j, f) printf(", %s", json_string_value(f));
        putchar('\n');
    }
    json_decref(list);
    return EXIT_OK;
}

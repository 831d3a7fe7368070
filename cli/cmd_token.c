/* ctok token create|list */
#define _GNU_SOURCE
#include <limits.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "cli.h"

/* awskms: the config validates the values; numbers go in as numbers, paths absolute. */
static json_t *awskms_fields(struct cli *c)
{
    const struct {
        const char *key, *value;
        int kind; /* 0 string, 1 integer, 2 path */
    } f[] = {{"region", c->region, 0},
             {"auth_method", c->auth_method, 0},
             {"access_key_id", c->access_key_id, 0},
             {"endpoint", c->endpoint, 0},
             {"imds_endpoint", c->imds_endpoint, 0},
             {"ca_file", c->ca_file, 2},
             {"timeout_ms", c->timeout_ms, 1},
             {"max_retries", c->max_retries, 1},
             {"deletion_window_days", c->deletion_window_days, 1},
             {"certificates", c->certificates, 2}};
    json_t *o = json_object();

    if (c->region == NULL) {
        json_decref(o);
        cli_usage("an awskms token needs --region R");
        return NULL;
    }
    for (size_t i = 0; o != NULL && i < sizeof(f) / sizeof(f[0]); i++) {
        char *end, *abs;
        long long n;

        if (f[i].value == NULL)
            continue;
        if (f[i].kind == 1) {
            n = strtoll(f[i].value, &end, 10);
            if (*f[i].value == '\0' || *end != '\0') {
                json_decref(o);
                cli_usage("--%s needs a number", f[i].key);
                return NULL;
            }
            json_object_set_new(o, f[i].key, json_integer(n));
        } else if (f[i].kind == 2) {
            abs = cli_absolute(f[i].value);
            json_object_set_new(o, f[i].key,
                                strcmp(f[i].key, "certificates") == 0
                                    ? json_pack("[s]", abs != NULL ? abs : "")
                                    : json_string(abs != NULL ? abs : ""));
            free(abs);
        } else {
            json_object_set_new(o, f[i].key, json_string(f[i].value));
        }
    }
    return o;
}

/* A token that signs in with what its configuration names (an instance role) takes no code. */
static int takes_code(struct cli *c)
{
    return !(strcmp(c->type, "awskms") == 0 && c->auth_method != NULL &&
             strcmp(c->auth_method, "role") == 0);
}

/* The type-specific fields of a new token's config entry. */
static json_t *type_fields(struct cli *c)
{
    if (strcmp(c->type, "pkcs12") == 0) {
        char *ks;
        json_t *o;

        if (c->keystore == NULL) {
            cli_usage("a pkcs12 token needs --keystore FILE");
            return NULL;
        }
        ks = cli_absolute(c->keystore);
        o = json_pack("{s:s}", "keystore", ks != NULL ? ks : "");
        free(ks);
        return o;
    }
    if (strcmp(c->type, "pkcs11") == 0) {
        json_t *o;

        if (c->library == NULL || c->ref == NULL) {
            cli_usage("a pkcs11 token needs --library LIB and --ref REF (see 'ctok slots')");
            return NULL;
        }
        o = json_pack("{s:s, s:s, s:s}", "library", c->library, "ref_type",
                      c->ref_type != NULL ? c->ref_type : "label", "ref", c->ref);
        if (c->attributes != NULL) {
            char *a = cli_absolute(c->attributes);

            json_object_set_new(o, "attributes", json_string(a));
            free(a);
        }
        return o;
    }
    if (strcmp(c->type, "awskms") == 0)
        return awskms_fields(c);
    cli_usage("token type '%s' is not supported (supported: pkcs12, pkcs11, awskms)", c->type);
    return NULL;
}

int cmd_token_create(struct cli *c)
{
    char code[CTOK_MAX_CODE + 1], id[37];
    size_t len = 0;
    json_t *e, *fields;
    char *af = NULL;
    int ok;

    if (c->type == NULL || c->name == NULL)
        return cli_usage("token create needs --type and --name");
    if (c->auth_file != NULL && c->auth_env != NULL)
        return cli_usage("give --auth-file or --auth-env, not both");
    if ((fields = type_fields(c)) == NULL)
        return EXIT_USAGE;
    if (!ctok_new_id(id) ||
        (takes_code(c) && !cli_read_new_code(c, c->name, code, sizeof(code), &len))) {
        json_decref(fields);
        return cli_fail();
    }
    if (c->auth_file != NULL)
        af = cli_absolute(c->auth_file);
    e = json_pack("{s:s, s:s, s:s}", "name", c->name, "id", id, "type", c->type);
    json_object_update(e, fields);
    json_decref(fields);
    json_object_set_new(e, "auth",
                        af != NULL            ? json_pack("{s:s}", "file", af)
                        : c->auth_env != NULL ? json_pack("{s:s}", "env", c->auth_env)
                                              : json_pack("{s:b}", "prompt", 1));
    json_object_set_new(e, "allow_export", json_boolean(c->allow_export));
    json_object_set_new(e, "explicit_ecc", json_boolean(c->explicit_ecc));
    ok = ctok_config_add_token(c->ctx, e, takes_code(c) ? code : NULL, len);
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

static void print_slots(json_t *list)
{
    json_t *s;
    size_t i;

    printf("%-10s %-5s %-32s %-32s %-16s %s\n", "SLOT ID", "INDEX", "DESCRIPTION", "TOKEN LABEL",
           "SERIAL", "FLAGS");
    json_array_foreach(list, i, s)
    {
        char flags[256] = "";
        size_t k;
        json_t *f;

        json_array_foreach(json_object_get(s, "flags"), k, f)
        {
            strncat(flags, k ? "," : "", sizeof(flags) - strlen(flags) - 1);
            strncat(flags, json_string_value(f), sizeof(flags) - strlen(flags) - 1);
        }
        printf("%-10lld %-5lld %-32s %-32s %-16s %s\n",
               (long long)json_integer_value(json_object_get(s, "id")),
               (long long)json_integer_value(json_object_get(s, "index")),
               json_string_value(json_object_get(s, "description")),
               json_string_value(json_object_get(s, "token_label")),
               json_string_value(json_object_get(s, "serial")), flags);
    }
}

/* Without --library: every library registered with p11-kit, and its slots. */
static int all_registered(struct cli *c)
{
    json_t *mods = ctok_p11_registered_modules(), *m;
    size_t i;

    json_array_foreach(mods, i, m)
    {
        json_t *slots = ctok_p11_slot_list(json_string_value(json_object_get(m, "path")));

        /* a library that cannot be used is shown with its error, the others still listed */
        json_object_set_new(m, "slots", slots != NULL ? slots : json_array());
        if (slots == NULL)
            json_object_set_new(m, "error", json_string("cannot be loaded or initialized"));
    }
    if (c->json) {
        cli_print_json(mods);
        return EXIT_OK;
    }
    if (json_array_size(mods) == 0)
        printf("No PKCS#11 library is registered with p11-kit; give one with --library PATH\n");
    json_array_foreach(mods, i, m)
    {
        printf("%s%s (%s)%s\n", i ? "\n" : "", json_string_value(json_object_get(m, "name")),
               json_string_value(json_object_get(m, "path")),
               json_object_get(m, "error") != NULL ? ": cannot be loaded or initialized" : "");
        if (json_array_size(json_object_get(m, "slots")) > 0)
            print_slots(json_object_get(m, "slots"));
    }
    json_decref(mods);
    return EXIT_OK;
}

int cmd_slots(struct cli *c)
{
    json_t *list;

    if (c->library == NULL)
        return all_registered(c);
    list = ctok_p11_slot_list(c->library);
    if (list == NULL)
        return cli_fail();
    if (c->json) {
        cli_print_json(list);
        return EXIT_OK;
    }
    print_slots(list);
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
    printf("The PIN of token '%s' is set and unlocked\n", c->argv[0]);
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
        /* where the token is: its keystore, or its library and slot reference */
        for (const char **f = (const char *[]){"keystore", "library", "ref_type", "ref", NULL};
             *f != NULL; f++)
            if (json_object_get(o, *f) != NULL)
                json_object_set(item, *f, json_object_get(o, *f));
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
        char where[600];
        json_t *ref = json_object_get(o, "ref");
        char *refs = ref != NULL ? json_dumps(ref, JSON_ENCODE_ANY) : NULL;

        if (json_object_get(o, "keystore") != NULL)
            snprintf(where, sizeof(where), "%s", json_string_value(json_object_get(o, "keystore")));
        else
            snprintf(where, sizeof(where), "%s, slot %s %s",
                     json_string_value(json_object_get(o, "library")),
                     json_string_value(json_object_get(o, "ref_type")) != NULL
                         ? json_string_value(json_object_get(o, "ref_type"))
                         : "label",
                     refs != NULL ? refs : "?");
        free(refs);
        printf("%-20s %-8s %-36s %s\n", json_string_value(json_object_get(o, "name")),
               json_string_value(json_object_get(o, "type")),
               json_string_value(json_object_get(o, "id")), where);
    }
    json_decref(list);
    return EXIT_OK;
}

/* The token registry: one JSON file (ARCHITECTURE.md, Configuration). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/rand.h>

#include "internal.h"

static const struct {
    const char *name;
    enum ctok_perm bit;
} perm_names[] = {
    {"view", CTOK_PERM_VIEW},         {"use", CTOK_PERM_USE},
    {"activate", CTOK_PERM_ACTIVATE}, {"deactivate", CTOK_PERM_DEACTIVATE},
    {"modify", CTOK_PERM_MODIFY},     {"delete", CTOK_PERM_DELETE},
    {"keygen", CTOK_PERM_KEYGEN},     {"keyremove", CTOK_PERM_KEYREMOVE},
    {"keytest", CTOK_PERM_KEYTEST},
};

const char *ctok_perm_name(enum ctok_perm perm)
{
    for (size_t k = 0; k < sizeof(perm_names) / sizeof(perm_names[0]); k++)
        if (perm_names[k].bit == perm)
            return perm_names[k].name;
    return "?";
}

void ctok_token_free(ctok_token *tok)
{
    if (tok == NULL)
        return;
    ctok_token_keys_drop(tok);
    free(tok->keys);
    ctok_certbind_free(tok);
    if (tok->be != NULL && tok->be->close != NULL)
        tok->be->close(tok);
    if (tok->code != NULL)
        OPENSSL_clear_free(tok->code, tok->code_len + 1);
    if (tok->auth_arg != NULL)
        OPENSSL_clear_free(tok->auth_arg, strlen(tok->auth_arg));
    free(tok->audit_file);
    json_decref(tok->entry);
    free(tok->name);
    free(tok->id);
    free(tok->type);
    pthread_mutex_destroy(&tok->lock);
    pthread_mutex_destroy(&tok->login_lock);
    free(tok);
}

static int parse_perms(const char *path, const char *name, const json_t *v, unsigned int *out)
{
    size_t i;
    json_t *e;

    if (v == NULL) {
        *out = CTOK_PERM_ALL;
        return 1;
    }
    if (!json_is_array(v)) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': \"permissions\" must be a list of rules", path,
                 name);
        return 0;
    }
    *out = 0;
    json_array_foreach(v, i, e)
    {
        size_t k;
        const char *s = json_string_value(e);

        for (k = 0; s != NULL && k < sizeof(perm_names) / sizeof(perm_names[0]); k++)
            if (strcmp(s, perm_names[k].name) == 0)
                break;
        if (s == NULL || k == sizeof(perm_names) / sizeof(perm_names[0])) {
            CTOK_ERR(CTOK_R_CONFIG,
                     "%s: token '%s': unknown permission '%s' (known: view, use, activate, "
                     "deactivate, modify, delete, keygen, keyremove, keytest)",
                     path, name, s != NULL ? s : "(not a string)");
            return 0;
        }
        *out |= perm_names[k].bit;
    }
    return 1;
}

static int parse_auth(const char *path, ctok_token *tok, const json_t *auth)
{
    const char *keys[] = {"file", "env", "stored"};
    const enum ctok_auth_kind kinds[] = {CTOK_AUTH_FILE, CTOK_AUTH_ENV, CTOK_AUTH_STORED};

    const json_t *fallback = json_object_get(auth, "fallback");

    tok->auth_kind = CTOK_AUTH_PROMPT;
    if (auth == NULL)
        return 1;
    if (fallback != NULL) {
        /* what `token activate --remember` kept of the configured source, for deactivate */
        ctok_token probe = {.name = tok->name};
        int ok = json_object_get(auth, "stored") != NULL &&
                 json_object_get(fallback, "stored") == NULL &&
                 json_object_get(fallback, "fallback") == NULL &&
                 parse_auth(path, &probe, fallback);

        free(probe.auth_arg);
        if (!ok) {
            CTOK_ERR(CTOK_R_CONFIG,
                     "%s: token '%s': auth \"fallback\" goes with \"stored\" and must be one of "
                     "{\"prompt\":true}, {\"file\":P}, {\"env\":NAME}",
                     path, tok->name);
            return 0;
        }
    }
    if (!json_is_object(auth) || json_object_size(auth) != 1 + (fallback != NULL)) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': \"auth\" must be one of {\"prompt\":true}, {\"file\":P}, "
                 "{\"env\":NAME}, {\"stored\":S}",
                 path, tok->name);
        return 0;
    }
    if (json_object_get(auth, "prompt") != NULL)
        return 1;
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(auth, keys[i]);

        if (v == NULL)
            continue;
        if (!json_is_string(v) || json_string_length(v) == 0) {
            CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': auth \"%s\" must be a non-empty string", path,
                     tok->name, keys[i]);
            return 0;
        }
        tok->auth_kind = kinds[i];
        tok->auth_arg = strdup(json_string_value(v));
        return tok->auth_arg != NULL;
    }
    CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': unknown auth source", path, tok->name);
    return 0;
}

static const char *str_field(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

ctok_token *ctok_token_from_json(ctok_ctx *ctx, const char *path, size_t idx, json_t *o)
{
    ctok_token *tok;
    const char *name = str_field(o, "name"), *type = str_field(o, "type");
    const char *id = str_field(o, "id");

    if (!json_is_object(o) || name == NULL || *name == '\0') {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token #%zu has no \"name\"", path, idx + 1);
        return NULL;
    }
    if (type == NULL) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s' has no \"type\"", path, name);
        return NULL;
    }
    tok = calloc(1, sizeof(*tok));
    if (tok == NULL)
        return NULL;
    pthread_mutex_init(&tok->lock, NULL);
    pthread_mutex_init(&tok->login_lock, NULL);
    tok->ctx = ctx;
    tok->entry = json_incref(o);
    tok->name = strdup(name);
    tok->id = strdup(id != NULL ? id : name);
    tok->type = strdup(type);
    tok->allow_export = json_is_true(json_object_get(o, "allow_export"));
    tok->audit_use = json_is_true(json_object_get(o, "audit_use"));
    tok->pin_cache_fork = json_is_true(json_object_get(o, "pin_cache_fork"));
    if (str_field(o, "audit_file") != NULL)
        tok->audit_file = strdup(str_field(o, "audit_file"));
    tok->explicit_ecc = json_is_true(json_object_get(o, "explicit_ecc"));
    if (tok->name == NULL || tok->id == NULL || tok->type == NULL)
        goto err;
    if ((tok->be = ctok_backend_find(type)) == NULL) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': unknown type '%s' (known: %s)", path, name, type,
                 ctok_type_names());
        goto err;
    }
    if (!parse_perms(path, name, json_object_get(o, "permissions"), &tok->perms) ||
        !parse_auth(path, tok, json_object_get(o, "auth")) || !ctok_certbind_configure(path, tok) ||
        !tok->be->configure(tok, o))
        goto err;
    return tok;
err:
    ctok_token_free(tok);
    return NULL;
}

/* Without "master_key", stored codes use master.key beside the config file. */
static char *default_master_key(const char *config_path)
{
    const char *slash = strrchr(config_path, '/');
    size_t dir = slash != NULL ? (size_t)(slash - config_path + 1) : 0;
    char *path = malloc(dir + sizeof("master.key"));

    if (path != NULL) {
        memcpy(path, config_path, dir);
        memcpy(path + dir, "master.key", sizeof("master.key"));
    }
    return path;
}

/* The config file's JSON, read from the descriptor that passed the file checks. */
static json_t *load_json(const char *path)
{
    json_error_t jerr;
    uint8_t *text;
    size_t len;
    json_t *root;

    if (!ctok_file_read(path, 0, CTOK_R_CONFIG, "config file", &text, &len))
        return NULL;
    root = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        CTOK_ERR(CTOK_R_CONFIG, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
    ctok_file_free(text, len);
    return root;
}

int ctok_config_load(ctok_ctx *ctx)
{
    const char *path = ctx->config_path;
    json_t *root = NULL, *tokens;
    size_t i;
    json_t *o;
    int ok = 0;

    /* no config file at all is a machine without configured tokens: pkcs11: URIs still
     * resolve through p11-kit's modules (lookup.c) */
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        CTOK_DBG("config: %s does not exist: no configured tokens", path);
        ctx->config_absent = 1;
        ctx->tokens = calloc(1, sizeof(*ctx->tokens));
        return ctx->tokens != NULL;
    }
    if ((root = load_json(path)) == NULL)
        return 0;
    if (!json_is_object(root)) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: the top level must be an object with \"tokens\"", path);
        goto end;
    }
    tokens = json_object_get(root, "tokens");
    if (tokens != NULL && !json_is_array(tokens)) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: \"tokens\" must be a list", path);
        goto end;
    }
    ctx->master_key = str_field(root, "master_key") != NULL ? strdup(str_field(root, "master_key"))
                                                            : default_master_key(path);
    if (ctx->master_key == NULL)
        goto end;
    ctx->tokens = calloc(json_array_size(tokens) + 1, sizeof(*ctx->tokens));
    if (ctx->tokens == NULL)
        goto end;
    json_array_foreach(tokens, i, o)
    {
        ctok_token *tok = ctok_token_from_json(ctx, path, i, o);

        if (tok == NULL)
            goto end;
        for (size_t k = 0; k < ctx->n_tokens; k++) {
            if (strcmp(ctx->tokens[k]->name, tok->name) == 0 ||
                strcmp(ctx->tokens[k]->id, tok->id) == 0) {
                CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s' is configured twice (same name or id)",
                         path, tok->name);
                ctok_token_free(tok);
                goto end;
            }
        }
        ctx->tokens[ctx->n_tokens++] = tok;
    }
    ok = 1;
end:
    json_decref(root);
    return ok;
}

int ctok_new_id(char out[37])
{
    uint8_t r[16];

    if (RAND_bytes(r, sizeof(r)) != 1)
        return 0;
    r[6] = (r[6] & 0x0f) | 0x40;
    r[8] = (r[8] & 0x3f) | 0x80;
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
             r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
             r[14], r[15]);
    return 1;
}

static int mkdir_parent(const char *path)
{
    char *d = strdup(path), *slash;
    int ok = 1;

    if (d == NULL)
        return 0;
    slash = strrchr(d, '/');
    if (slash != NULL && slash != d) {
        *slash = '\0';
        if (mkdir_parent(d) && mkdir(d, 0755) != 0 && errno != EEXIST)
            ok = 0;
    }
    free(d);
    return ok;
}

/* Sets up or checks the backend of a token about to be added (NULL create: logging in is it). */
static int init_backend(ctok_token *tok, const char *code, size_t len)
{
    if (tok->be->create != NULL)
        return tok->be->create(tok, code, len);
    return ctok_token_login_with(tok, code, len);
}

int ctok_entry_needs_code(ctok_ctx *ctx, const json_t *entry)
{
    json_t *e = json_deep_copy(entry);
    ctok_token *tok = NULL;
    int r = -1;

    if (e != NULL && (tok = ctok_token_from_json(ctx, ctok_ctx_config_path(ctx), 0, e)) != NULL)
        r = tok->be->needs_code == NULL || tok->be->needs_code(tok);
    ctok_token_free(tok);
    json_decref(e);
    return r;
}

json_t *ctok_discover(ctok_ctx *ctx, const json_t *entry)
{
    json_t *e = json_deep_copy(entry), *out = NULL;
    ctok_token *tok = NULL;

    /* a token of this process only, never written to the config */
    if (e != NULL && json_object_get(e, "name") == NULL)
        json_object_set_new(e, "name", json_string("discovery"));
    if (e != NULL && (tok = ctok_token_from_json(ctx, ctok_ctx_config_path(ctx), 0, e)) != NULL) {
        if (tok->be->discover == NULL)
            CTOK_ERR(CTOK_R_UNSUPPORTED, "%s tokens offer no discovery", tok->type);
        else
            out = tok->be->discover(tok);
    }
    ctok_token_free(tok);
    json_decref(e);
    return out;
}

/* Reads the config file for a change (lock held): an empty one if it does not exist. */
static json_t *read_for_update(const char *path)
{
    struct stat st;
    json_t *root;

    if (stat(path, &st) != 0)
        return json_pack("{s:[]}", "tokens");
    if ((root = load_json(path)) == NULL)
        return NULL;
    if (!json_is_object(root)) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: the top level must be an object with \"tokens\"", path);
        json_decref(root);
        root = NULL;
    } else if (json_object_get(root, "tokens") == NULL) {
        json_object_set_new(root, "tokens", json_array());
    }
    if (root != NULL && !json_is_array(json_object_get(root, "tokens"))) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: \"tokens\" must be a list", path);
        json_decref(root);
        root = NULL;
    }
    return root;
}

/* 0644 is for a new config only: a rewrite keeps the mode and owner the file has. */
static int write_config(const char *path, json_t *root)
{
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    int ok =
        text != NULL && ctok_file_write_atomic(path, (const uint8_t *)text, strlen(text), 0644);

    free(text);
    return ok;
}

static json_t *entry_named(json_t *tokens, const char *name, size_t *index)
{
    size_t i;
    json_t *o;

    json_array_foreach(tokens, i, o)
    {
        const char *n = json_string_value(json_object_get(o, "name"));

        if (n != NULL && strcmp(n, name) == 0) {
            if (index != NULL)
                *index = i;
            return o;
        }
    }
    return NULL;
}

int ctok_config_add_token(ctok_ctx *ctx, json_t *entry, const char *code, size_t len)
{
    const char *path = ctx->config_path;
    const char *name = json_string_value(json_object_get(entry, "name"));
    json_t *root = NULL, *tokens;
    ctok_token *tok = NULL;
    int lockfd = -1, ok = 0;

    if (!mkdir_parent(path)) {
        CTOK_ERR(CTOK_R_IO, "cannot create the directory of '%s': %s", path, strerror(errno));
        return 0;
    }
    if ((lockfd = ctok_file_lock(path)) < 0)
        return 0;
    if ((root = read_for_update(path)) == NULL)
        goto end;
    tokens = json_object_get(root, "tokens");
    if (entry_named(tokens, name, NULL) != NULL) {
        CTOK_ERR(CTOK_R_DUPLICATE, "%s: a token named '%s' exists already", path, name);
        goto end;
    }
    if ((tok = ctok_token_from_json(ctx, path, json_array_size(tokens), entry)) == NULL)
        goto end;
    if (!init_backend(tok, code, len))
        goto end;
    json_array_append(tokens, entry);
    ok = write_config(path, root);
end:
    ctok_token_free(tok);
    json_decref(root);
    ctok_file_unlock(path, lockfd);
    return ok;
}

/*
 * What an edit needs besides the caller's rule, whoever asks: 'delete' to delete the token,
 * 'modify' to change anything but "auth". perms: the entry's, as the file has it now.
 */
static int edit_permitted(const char *name, unsigned int perms, json_t *entry, json_t *copy)
{
    const char *k;
    json_t *v;
    int other = 0;

    if (json_object_size(copy) == 0)
        return ctok_perms_authorize(name, perms, CTOK_PERM_DELETE, "token deletion", NULL);
    json_object_foreach(copy, k, v) other |=
        strcmp(k, "auth") != 0 && !json_equal(v, json_object_get(entry, k));
    json_object_foreach(entry, k, v) other |= json_object_get(copy, k) == NULL;
    return !other ||
           ctok_perms_authorize(name, perms, CTOK_PERM_MODIFY, "configuration change", NULL);
}

int ctok_config_edit(ctok_ctx *ctx, const char *name, enum ctok_perm rule, ctok_config_edit_fn edit,
                     void *arg)
{
    const char *path = ctx->config_path;
    json_t *root = NULL, *tokens, *entry, *copy = NULL;
    ctok_token *check;
    size_t index = 0;
    unsigned int perms;
    int lockfd, ok = 0;

    if ((lockfd = ctok_file_lock(path)) < 0)
        return 0;
    if ((root = read_for_update(path)) == NULL)
        goto end;
    tokens = json_object_get(root, "tokens");
    if ((entry = entry_named(tokens, name, &index)) == NULL) {
        CTOK_ERR(CTOK_R_UNKNOWN_TOKEN, "no token named '%s' in %s", name, path);
        goto end;
    }
    /* the rules as the file has them now, before the edit has any effect */
    if (!parse_perms(path, name, json_object_get(entry, "permissions"), &perms) ||
        !ctok_perms_authorize(name, perms, rule, "configuration edit", NULL))
        goto end;
    copy = json_deep_copy(entry);
    if (copy == NULL || !edit(root, copy, arg) || !edit_permitted(name, perms, entry, copy))
        goto end;
    if (json_object_size(copy) == 0) {
        json_array_remove(tokens, index); /* the edit deleted the token */
    } else {
        const char *nn = json_string_value(json_object_get(copy, "name"));
        json_t *other = nn != NULL ? entry_named(tokens, nn, NULL) : NULL;

        if (other != NULL && other != entry) {
            CTOK_ERR(CTOK_R_DUPLICATE, "%s: a token named '%s' exists already", path, nn);
            goto end;
        }
        /* the edited entry must still be a valid token before anything is written */
        if ((check = ctok_token_from_json(ctx, path, index, copy)) == NULL)
            goto end;
        ctok_token_free(check);
        json_array_set(tokens, index, copy);
    }
    ok = write_config(path, root);
end:
    json_decref(copy);
    json_decref(root);
    ctok_file_unlock(path, lockfd);
    return ok;
}

int ctok_master_key_ensure(ctok_ctx *ctx, json_t *config, uint8_t key[32])
{
    const char *path = json_string_value(json_object_get(config, "master_key"));
    char *def = NULL;
    struct stat st;
    int ok;

    if (path == NULL) {
        if ((def = default_master_key(ctx->config_path)) == NULL)
            return 0;
        path = def;
        json_object_set_new(config, "master_key", json_string(def));
    }
    if (stat(path, &st) != 0 && errno == ENOENT) {
        /* several tools may get here at once: one creates the key, all use that one */
        ok = RAND_priv_bytes(key, 32) == 1 && ctok_file_create_exclusive(path, key, 32, 0600) >= 0;
        OPENSSL_cleanse(key, 32);
        if (!ok) {
            free(def);
            return 0;
        }
    }
    ok = ctok_master_key_read(path, "master", key);
    free(def);
    return ok;
}

char *ctok_code_encrypt(const uint8_t key[32], const char *token_id, const char *code, size_t len)
{
    return ctok_auth_stored_encrypt(key, token_id, code, len);
}

/*
 * Tokens, activation, and the authorization rules every token operation checks here (not in
 * the front doors). Auth codes go through code.c, key handles are in key.c, certificate-first
 * lookup is in lookup.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "internal.h"

#define DEFAULT_CONFIG "/etc/ctok/tokens.json"
#define TOOL_CODE "the code given to the ctok tool"

static int set(const char *s)
{
    return s != NULL && *s != '\0';
}

const char *ctok_config_pick(const char *option, const char *param, enum ctok_config_from *from)
{
    const char *env = getenv("CTOK_CONFIG");
    enum ctok_config_from f = set(option)  ? CTOK_CONFIG_FROM_OPTION
                              : set(env)   ? CTOK_CONFIG_FROM_ENV
                              : set(param) ? CTOK_CONFIG_FROM_PARAM
                                           : CTOK_CONFIG_FROM_DEFAULT;

    if (from != NULL)
        *from = f;
    return f == CTOK_CONFIG_FROM_OPTION  ? option
           : f == CTOK_CONFIG_FROM_ENV   ? env
           : f == CTOK_CONFIG_FROM_PARAM ? param
                                         : DEFAULT_CONFIG;
}

const char *ctok_config_from_name(enum ctok_config_from from)
{
    static const char *const names[] = {"--config", "CTOK_CONFIG", "ctok-config parameter",
                                        "default"};

    return (unsigned)from < sizeof(names) / sizeof(names[0]) ? names[from] : "?";
}

ctok_ctx *ctok_ctx_new(OSSL_LIB_CTX *libctx, const char *propq, const char *config_path)
{
    ctok_ctx *ctx = calloc(1, sizeof(*ctx));

    if (ctx == NULL)
        return NULL;
    pthread_mutex_init(&ctx->lock, NULL);
    ctx->libctx = libctx;
    ctx->propq = propq != NULL ? strdup(propq) : NULL;
    ctx->config_path = strdup(ctok_config_pick(config_path, NULL, NULL));
    ctok_backends_use();
    if (ctx->config_path == NULL || (propq != NULL && ctx->propq == NULL)) {
        ctok_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

void ctok_ctx_free(ctok_ctx *ctx)
{
    if (ctx == NULL)
        return;
    /* first what tokens hold of each other (an Azure token's binding key in a SoftHSM or
     * keystore token): freed while every token still lives, whatever their order */
    for (size_t i = 0; i < ctx->n_tokens; i++)
        if (ctx->tokens[i]->be != NULL && ctx->tokens[i]->be->release != NULL)
            ctx->tokens[i]->be->release(ctx->tokens[i]);
    for (ctok_token *t = ctx->ephemeral; t != NULL; t = t->eph_next)
        if (t->be != NULL && t->be->release != NULL)
            t->be->release(t);
    for (size_t i = 0; i < ctx->n_tokens; i++)
        ctok_token_free(ctx->tokens[i]);
    while (ctx->ephemeral != NULL) {
        ctok_token *t = ctx->ephemeral;

        ctx->ephemeral = t->eph_next;
        ctok_token_free(t);
    }
    free(ctx->tokens);
    free(ctx->master_key);
    free(ctx->propq);
    free(ctx->config_path);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
    ctok_backends_release();
}

OSSL_LIB_CTX *ctok_ctx_libctx(const ctok_ctx *ctx)
{
    return ctx->libctx;
}

const char *ctok_ctx_propq(const ctok_ctx *ctx)
{
    return ctx->propq;
}

const char *ctok_ctx_config_path(const ctok_ctx *ctx)
{
    return ctx->config_path;
}

int ctok_ctx_load(ctok_ctx *ctx)
{
    int ok;

    pthread_mutex_lock(&ctx->lock);
    if (ctx->loaded == 0)
        ctx->loaded = ctok_config_load(ctx) ? 1 : -1;
    else if (ctx->loaded < 0)
        CTOK_ERR(CTOK_R_CONFIG, "%s: configuration could not be loaded (see the first error)",
                 ctx->config_path);
    ok = ctx->loaded > 0;
    pthread_mutex_unlock(&ctx->lock);
    return ok;
}

size_t ctok_ctx_token_count(ctok_ctx *ctx)
{
    return ctx->n_tokens;
}

ctok_token *ctok_ctx_token_at(ctok_ctx *ctx, size_t i)
{
    return i < ctx->n_tokens ? ctx->tokens[i] : NULL;
}

ctok_token *ctok_ctx_token_find(ctok_ctx *ctx, const char *name, const char *id)
{
    for (size_t i = 0; i < ctx->n_tokens; i++) {
        ctok_token *t = ctx->tokens[i];

        if ((name == NULL || strcmp(t->name, name) == 0) && (id == NULL || strcmp(t->id, id) == 0))
            return t;
    }
    return NULL;
}

void ctok_ctx_unknown_token(ctok_ctx *ctx, const char *name)
{
    if (ctx->config_absent)
        CTOK_ERR(CTOK_R_CONFIG, "no token named '%s': the config file %s does not exist", name,
                 ctx->config_path);
    else
        CTOK_ERR(CTOK_R_UNKNOWN_TOKEN, "no token named '%s' in %s", name, ctx->config_path);
}

const char *ctok_token_name(const ctok_token *tok)
{
    return tok->name;
}

const char *ctok_token_id(const ctok_token *tok)
{
    return tok->id;
}

const char *ctok_token_type(const ctok_token *tok)
{
    return tok->type;
}

int ctok_token_allow_export(const ctok_token *tok)
{
    return tok->allow_export;
}

int ctok_token_explicit_ecc(const ctok_token *tok)
{
    return tok->explicit_ecc;
}

int ctok_token_permits(const ctok_token *tok, enum ctok_perm perm)
{
    return (tok->perms & perm) != 0;
}

int ctok_perms_authorize(const char *tokname, unsigned int perms, enum ctok_perm perm,
                         const char *operation, const char *object)
{
    if ((perms & perm) != 0)
        return 1;
    CTOK_ERR(CTOK_R_PERMISSION, "token '%s'%s%s%s: rule '%s' is not permitted (%s)", tokname,
             object != NULL ? ", object '" : "", object != NULL ? object : "",
             object != NULL ? "'" : "", ctok_perm_name(perm), operation);
    return 0;
}

/* The audit trail's name of a change a rule guards (not activation: a search tries every
 * token that hides what it looks for, and would write a line per search). */
static const char *audited_as(const char *operation)
{
    static const char *const names[][2] = {
        {"key generation", "key_generate"},
        {"key removal", "key_remove"},
        {"key rename", "key_rename"},
        {"certificate import", "cert_import"},
        {"certificate replacement", "cert_replace"},
        {"certificate removal", "cert_remove"},
        {"certificate rename", "cert_rename"},
        {"authentication code change", "code_change"},
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(operation, names[i][0]) == 0)
            return names[i][1];
    return NULL;
}

/* A refusal is audited as a failure of the operation, whichever front door asked (the
 * tool before it prompts, ctok-p11.so through the operation itself). */
int ctok_token_authorize(const ctok_token *tok, enum ctok_perm perm, const char *operation,
                         const char *object)
{
    char why[64];
    const char *op;

    if (ctok_perms_authorize(tok->name, tok->perms, perm, operation, object))
        return 1;
    if ((op = audited_as(operation)) != NULL) {
        snprintf(why, sizeof(why), "rule '%s' is not permitted", ctok_perm_name(perm));
        ctok_audit(tok, op, object, 0, why);
    }
    return 0;
}

ctok_ctx *ctok_token_ctx(const ctok_token *tok)
{
    return tok->ctx;
}

int ctok_token_open(ctok_token *tok)
{
    int ok = 1;

    /* once open, no lock: a lookup never waits for another thread's login */
    if (__atomic_load_n(&tok->opened, __ATOMIC_ACQUIRE))
        return 1;
    pthread_mutex_lock(&tok->login_lock);
    if (!tok->opened) {
        ok = tok->be->open(tok);
        __atomic_store_n(&tok->opened, ok, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&tok->login_lock);
    return ok;
}

int ctok_token_needs_code(const ctok_token *tok)
{
    return tok->be->needs_code == NULL || tok->be->needs_code((ctok_token *)tok);
}

/* Read without the token lock by every key operation: an atomic, written under the lock. */
int ctok_token_is_active(const ctok_token *tok)
{
    return __atomic_load_n(&tok->active, __ATOMIC_ACQUIRE);
}

void ctok_token_set_active(ctok_token *tok, int active)
{
    __atomic_store_n(&tok->active, active, __ATOMIC_RELEASE);
}

static unsigned int be_state(ctok_token *tok, int puk, void *arg)
{
    (void)arg;
    return tok->be->pin_state(tok, puk);
}

static int be_login(ctok_token *tok, const struct ctok_code *c, void *arg)
{
    int r;

    (void)arg;
    ctok_test_point("token-login");
    if (c == NULL) /* code-less: what the configuration names (an instance role) */
        r = tok->be->login_code != NULL ? tok->be->login_code(tok, NULL)
                                        : tok->be->login(tok, NULL, 0);
    else
        r = tok->be->login_code != NULL ? tok->be->login_code(tok, c)
                                        : tok->be->login(tok, c->code, c->len);
    ctok_audit(tok, "activate", NULL, r > 0, r == 0 ? "authentication code rejected" : NULL);
    return r;
}

/* Marks the token active, keeping c (NULL: none, and none kept from before). */
static void set_logged_in(ctok_token *tok, const struct ctok_code *c)
{
    pthread_mutex_lock(&tok->lock);
    /* the code first: a reconnect that sees the token active must find its code */
    ctok_code_keep(tok, c);
    ctok_token_set_active(tok, 1);
    pthread_mutex_unlock(&tok->lock);
}

/*
 * Logs in through the one door; c NULL: without a code. login_lock held (it serializes the
 * codes sent, so two threads never send one the token is rejecting), tok->lock not: the
 * backend's PBKDF2 or network round trip blocks no other thread's lookup or key operation.
 */
static int login_locked(ctok_token *tok, const struct ctok_code *c, int keep)
{
    struct ctok_sender s = {tok->be->pin_state != NULL ? be_state : NULL, be_login, NULL};

    if (ctok_token_is_active(tok))
        return 1;
    if (c == NULL ? be_login(tok, NULL, NULL) <= 0 : ctok_token_send_code(tok, c, &s) <= 0)
        return 0;
    set_logged_in(tok, keep ? c : NULL);
    return 1;
}

/* Activates with exactly this code (NULL: a token that needs none); no rule checked. */
static int activate_with(ctok_token *tok, const struct ctok_code *c, int keep)
{
    int ok;

    if (!ctok_token_open(tok))
        return 0;
    if (ctok_token_is_active(tok))
        return 1;
    pthread_mutex_lock(&tok->login_lock);
    ok = login_locked(tok, c, keep);
    pthread_mutex_unlock(&tok->login_lock);
    return ok;
}

int ctok_token_activate_code(ctok_token *tok, const char *code, size_t len, const char *src,
                             int typed)
{
    struct ctok_code c = {code, len, 0, src, typed};
    int coded = ctok_token_needs_code(tok);

    if (!ctok_token_authorize(tok, CTOK_PERM_ACTIVATE, "activation", NULL))
        return 0;
    if (coded && code == NULL) {
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s': activation needs an authentication code", tok->name);
        return 0;
    }
    /* a token that signs in with what its configuration names never takes nor keeps one */
    return activate_with(tok, coded ? &c : NULL, 1);
}

int ctok_token_login_with(ctok_token *tok, const char *code, size_t len)
{
    struct ctok_code c = {code, len, 0, TOOL_CODE, 0};

    return activate_with(tok, ctok_token_needs_code(tok) ? &c : NULL, 1);
}

int ctok_token_login_code(ctok_token *tok, const char *code, size_t len)
{
    return ctok_token_activate_code(tok, code, len, TOOL_CODE, 0);
}

/* What a prompt names: "eID Card (signature) (ctok token 'sig')". */
static void prompt_info(ctok_token *tok, char *info, size_t len)
{
    pthread_mutex_lock(&ctok_code_lock);
    if (tok->label[0] != '\0')
        BIO_snprintf(info, len, "%s (ctok token '%s')", tok->label, tok->name);
    else
        BIO_snprintf(info, len, "ctok token '%s'", tok->name);
    pthread_mutex_unlock(&ctok_code_lock);
}

/* The code this use supplies: ?pin-value, ?pin-source, config auth, then the ui. */
static int get_code(ctok_token *tok, const struct ctok_pin *pin, const struct ctok_ui *ui,
                    char *buf, size_t bufsz, size_t *len, int *prompted, char *src, size_t srcsz)
{
    *prompted = 0;
    if (pin != NULL && pin->value != NULL) {
        BIO_snprintf(src, srcsz, "the pin-value of the key reference");
        *len = strlen(pin->value);
        if (*len >= bufsz)
            return 0;
        memcpy(buf, pin->value, *len + 1);
        return 1;
    }
    if (pin != NULL && pin->source != NULL) {
        const char *p = strncmp(pin->source, "file:", 5) == 0 ? pin->source + 5 : pin->source;

        BIO_snprintf(src, srcsz, "pin-source file %s", p);
        return ctok_auth_read_file(tok->name, p, buf, bufsz, len);
    }
    switch (tok->auth_kind) {
    case CTOK_AUTH_FILE:
        BIO_snprintf(src, srcsz, "auth file %s", tok->auth_arg);
        return ctok_auth_read_file(tok->name, tok->auth_arg, buf, bufsz, len);
    case CTOK_AUTH_ENV: {
        const char *v = getenv(tok->auth_arg);

        BIO_snprintf(src, srcsz, "environment variable %s", tok->auth_arg);
        if (v == NULL) {
            CTOK_ERR(CTOK_R_NO_CODE, "token '%s': environment variable %s is not set", tok->name,
                     tok->auth_arg);
            return 0;
        }
        *len = strlen(v);
        if (*len >= bufsz)
            return 0;
        memcpy(buf, v, *len + 1);
        return 1;
    }
    case CTOK_AUTH_STORED:
        BIO_snprintf(src, srcsz, "the stored (encrypted) auth code in the config");
        return ctok_auth_stored_decrypt(tok, tok->auth_arg, buf, bufsz, len);
    case CTOK_AUTH_PROMPT:
        break;
    }
    if (ui != NULL && ui->get_code != NULL) {
        char info[200];

        int r;

        prompt_info(tok, info, sizeof(info));
        r = ui->get_code(ui->arg, info, buf, bufsz, len);
        if (r < 0) {
            /* the application has no prompt of its own: ctok asks on the terminal */
            if (!ctok_tty_get_code(tok->name, info, buf, bufsz, len))
                return 0;
            *prompted = 1;
            BIO_snprintf(src, srcsz, "ctok's terminal prompt");
            return 1;
        }
        if (r > 0 && *len < bufsz) {
            buf[*len] = '\0';
            *prompted = 1;
            BIO_snprintf(src, srcsz, "the application's passphrase prompt");
            return 1;
        }
    }
    CTOK_ERR(CTOK_R_NO_CODE,
             "token '%s' is not active and no authentication code was supplied (configure "
             "\"auth\", pass ?pin-value=/?pin-source=, or answer the passphrase prompt)",
             tok->name);
    return 0;
}

int ctok_token_login(ctok_token *tok, const struct ctok_pin *pin, const struct ctok_ui *ui)
{
    char code[CTOK_MAX_CODE + 1], src[320];
    struct ctok_code c = {code, 0, 0, src, 0};
    int ok = 0, prompted;

    if (!ctok_token_open(tok))
        return 0;
    if (ctok_token_is_active(tok))
        return 1;
    /* no auth source is read and nobody is prompted for a token that needs no code */
    if (!ctok_token_needs_code(tok))
        return activate_with(tok, NULL, 0);
    /* the code is fetched without a lock: a prompt may take long */
    if (!get_code(tok, pin, ui, code, sizeof(code), &c.len, &prompted, src, sizeof(src)))
        goto end;
    /* pin_cache_fork: the user chose to keep a prompted code, for a forked child's login */
    ok = activate_with(tok, &c, !prompted || tok->be->keep_prompted_code || tok->pin_cache_fork);
end:
    OPENSSL_cleanse(code, sizeof(code));
    return ok;
}

int ctok_token_auth_check(ctok_token *tok, char *src, size_t srcsz)
{
    char code[CTOK_MAX_CODE + 1];
    size_t len = 0;
    struct ctok_pin none = {NULL, NULL};
    int prompted, ok;

    if (!ctok_token_needs_code(tok)) {
        BIO_snprintf(src, srcsz, "none needed");
        return 2;
    }
    if (tok->auth_kind == CTOK_AUTH_PROMPT) {
        BIO_snprintf(src, srcsz, "prompt");
        return 2;
    }
    ok = get_code(tok, &none, NULL, code, sizeof(code), &len, &prompted, src, srcsz);
    OPENSSL_cleanse(code, sizeof(code));
    return ok ? 1 : 0;
}

int ctok_token_context_login(ctok_token *tok, const char *key_label, const struct ctok_sender *s)
{
    char code[CTOK_MAX_CODE + 1], src[320], info[200];
    struct ctok_code c = {code, 0, 0, src, 0};
    struct ctok_pin none = {NULL, NULL};
    int r = -1, prompted, got;

    if (tok->auth_kind != CTOK_AUTH_PROMPT) {
        /* read anew: a file or variable changed since activation is what the user means */
        got = get_code(tok, &none, NULL, code, sizeof(code), &c.len, &prompted, src, sizeof(src));
    } else if (!(got = ctok_code_kept(tok, code, sizeof(code), &c.len, src, sizeof(src)))) {
        /* a prompted code is kept only with pin_cache_fork; a ?pin-value always */
        /* the application's prompt is gone by now: ctok asks on the terminal itself */
        prompt_info(tok, info, sizeof(info));
        got = ctok_tty_get_code(tok->name, info, code, sizeof(code), &c.len);
        BIO_snprintf(src, sizeof(src), "ctok's terminal prompt");
    }
    if (!got)
        CTOK_ERR(CTOK_R_NO_CODE,
                 "token '%s', key '%s': the key needs its signature PIN for each use "
                 "(CKA_ALWAYS_AUTHENTICATE) and none could be had from the token's auth (%s)",
                 tok->name, key_label, ctok_token_auth_kind(tok));
    else
        r = ctok_token_send_code(tok, &c, s);
    OPENSSL_cleanse(code, sizeof(code));
    return r;
}

int ctok_token_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg)
{
    if (!ctok_token_authorize(tok, CTOK_PERM_VIEW, "listing", NULL))
        return 0;
    return ctok_token_scan(tok, cb, arg);
}

int ctok_token_refresh(ctok_token *tok)
{
    return tok->be->refresh != NULL && __atomic_load_n(&tok->opened, __ATOMIC_ACQUIRE) &&
           tok->be->refresh(tok);
}

int ctok_token_scan(ctok_token *tok, ctok_object_cb cb, void *arg)
{
    struct ctok_bind *b;
    int ok;

    if (!ctok_token_open(tok) || !ctok_certbind_begin(tok, CTOK_OBJ_ANY, cb, arg, &b))
        return 0;
    if (b == NULL)
        return tok->be->enumerate(tok, cb, arg);
    ok = tok->be->enumerate(tok, ctok_certbind_cb, b);
    ctok_certbind_end(b, ok);
    return ok;
}

int ctok_filter_cb(ctok_token *tok, const struct ctok_object *o, void *arg)
{
    const struct ctok_filter *f = arg;

    if (!(o->type & f->types) ||
        (f->label != NULL && strcmp(o->label != NULL ? o->label : "", f->label) != 0) ||
        (f->id != NULL && (o->id_len != f->id_len || memcmp(o->id, f->id, f->id_len) != 0)))
        return 1;
    return f->cb(tok, o, f->arg);
}

int ctok_token_scan_for(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
                        unsigned int types, ctok_object_cb cb, void *arg)
{
    struct ctok_filter f = {label, id, id_len, types, cb, arg};
    int find = tok->be->find != NULL, ok;
    struct ctok_bind *b;

    /* bound certificates carry their key's label and id: filtered after they are added */
    if (!ctok_token_open(tok) ||
        !ctok_certbind_begin(tok, find ? types : CTOK_OBJ_ANY, find ? cb : ctok_filter_cb,
                             find ? arg : (void *)&f, &b))
        return 0;
    if (b != NULL) {
        ok = find ? tok->be->find(tok, label, id, id_len,
                                  types | CTOK_OBJ_PRIVATE | CTOK_OBJ_PUBLIC, ctok_certbind_cb, b)
                  : tok->be->enumerate(tok, ctok_certbind_cb, b);
        ctok_certbind_end(b, 0);
        return ok;
    }
    if (find)
        return tok->be->find(tok, label, id, id_len, types, cb, arg);
    return tok->be->enumerate(tok, ctok_filter_cb, &f);
}

int ctok_token_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec)
{
    char what[64];
    int ok;

    if (!ctok_token_authorize(tok, CTOK_PERM_KEYGEN, "key generation", alias))
        return 0;
    if (tok->be->generate == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': key generation not supported", tok->name);
        return 0;
    }
    ok = tok->be->generate(tok, alias, spec);
    ctok_token_keys_drop(tok);
    BIO_snprintf(what, sizeof(what), "%s%s%s", ctok_key_type_name(spec->type),
                 spec->group != NULL ? " " : "", spec->group != NULL ? spec->group : "");
    if (spec->type == CTOK_KT_RSA)
        BIO_snprintf(what, sizeof(what), "RSA %d", spec->bits);
    ctok_audit(tok, "key_generate", alias, ok, what);
    return ok;
}

int ctok_token_remove(ctok_token *tok, const char *alias, char *note, size_t notelen)
{
    char dummy[1];

    int ok;

    if (!ctok_token_authorize(tok, CTOK_PERM_KEYREMOVE, "key removal", alias))
        return 0;
    if (note == NULL || notelen == 0) {
        note = dummy;
        notelen = sizeof(dummy);
    }
    note[0] = '\0';
    ok = tok->be->remove(tok, alias, note, notelen);
    ctok_token_keys_drop(tok);
    ctok_audit(tok, "key_remove", alias, ok, NULL);
    return ok;
}

static int put_cert(ctok_token *tok, const char *alias, X509 *cert, int replace)
{
    const char *op = replace ? "certificate replacement" : "certificate import";
    int ok;

    if (!ctok_token_authorize(tok, CTOK_PERM_MODIFY, op, alias))
        return 0;
    /* a token that keeps no certificates: a file in its certificate folder (a renewal
     * rewrites that file atomically) */
    ok = tok->be->put_cert != NULL ? tok->be->put_cert(tok, alias, cert, replace)
                                   : ctok_certbind_put(tok, alias, cert);
    ctok_audit(tok, replace ? "cert_replace" : "cert_import", alias, ok, NULL);
    return ok;
}

int ctok_token_put_cert(ctok_token *tok, const char *alias, X509 *cert)
{
    return put_cert(tok, alias, cert, 0);
}

int ctok_token_replace_cert(ctok_token *tok, const char *alias, X509 *cert)
{
    return put_cert(tok, alias, cert, 1);
}

int ctok_token_keeps_certs(const ctok_token *tok)
{
    return tok->be->put_cert != NULL;
}

static int unsupported(ctok_token *tok, const char *op)
{
    CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': %s not supported by token type %s", tok->name, op,
             tok->type);
    return 0;
}

int ctok_token_remove_cert(ctok_token *tok, const char *label)
{
    int ok;

    if (!ctok_token_authorize(tok, CTOK_PERM_MODIFY, "certificate removal", label))
        return 0;
    if (tok->be->remove_cert == NULL)
        return unsupported(tok, "certificate removal");
    ok = tok->be->remove_cert(tok, label);
    ctok_audit(tok, "cert_remove", label, ok, NULL);
    return ok;
}

int ctok_token_rename(ctok_token *tok, unsigned int type, const char *old, const char *new_label)
{
    const char *op = type == CTOK_OBJ_CERT ? "certificate rename" : "key rename";
    char what[300];
    int ok;

    if (!ctok_token_authorize(tok, CTOK_PERM_MODIFY, op, old))
        return 0;
    if (tok->be->rename == NULL)
        return unsupported(tok, op);
    if (*new_label == '\0') {
        CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s', object '%s': the new label is empty", tok->name,
                 old);
        return 0;
    }
    ok = tok->be->rename(tok, type, old, new_label);
    ctok_token_keys_drop(tok); /* cached handles carry the old label */
    BIO_snprintf(what, sizeof(what), "to '%s'", new_label);
    ctok_audit(tok, type == CTOK_OBJ_CERT ? "cert_rename" : "key_rename", old, ok, what);
    return ok;
}

int ctok_token_deactivate(ctok_token *tok)
{
    if (!ctok_token_authorize(tok, CTOK_PERM_DEACTIVATE, "deactivation", NULL))
        return 0;
    pthread_mutex_lock(&tok->lock);
    ctok_code_keep(tok, NULL);
    ctok_token_set_active(tok, 0);
    pthread_mutex_unlock(&tok->lock);
    ctok_token_keys_drop(tok);
    if (tok->be->logout != NULL)
        tok->be->logout(tok);
    ctok_audit(tok, "deactivate", NULL, 1, NULL);
    return 1;
}

const char *ctok_token_auth_kind(const ctok_token *tok)
{
    switch (tok->auth_kind) {
    case CTOK_AUTH_FILE:
        return "file";
    case CTOK_AUTH_ENV:
        return "env";
    case CTOK_AUTH_STORED:
        return "stored";
    default:
        return "prompt";
    }
}

const json_t *ctok_token_config(const ctok_token *tok)
{
    return ctok_token_authorize(tok, CTOK_PERM_VIEW, "showing the configuration", NULL) ? tok->entry
                                                                                        : NULL;
}

int ctok_token_change_code(ctok_token *tok, const char *old, size_t old_len, const char *code,
                           size_t len)
{
    struct ctok_code c = {code, len, 0, "the new code given to the ctok tool", 0};
    int ok;

    if (tok->be->change_code == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': %s tokens have no code to change", tok->name,
                 tok->type);
        return 0;
    }
    if (!ctok_token_authorize(tok, CTOK_PERM_MODIFY, "authentication code change", NULL) ||
        !ctok_token_login_with(tok, old, old_len))
        return 0;
    ok = tok->be->change_code(tok, old, old_len, code, len);
    ctok_audit(tok, "code_change", NULL, ok, NULL);
    if (!ok)
        return 0;
    ctok_code_mark_rejected(tok, &c, 0); /* the token takes it now */
    pthread_mutex_lock(&tok->lock);
    ctok_code_keep(tok, &c);
    pthread_mutex_unlock(&tok->lock);
    return 1;
}

int ctok_token_unlock_pin(ctok_token *tok, const char *puk, size_t puk_len, const char *pin,
                          size_t pin_len)
{
    struct ctok_code c = {pin, pin_len, 0, "the new PIN given to the ctok tool", 0};

    if (tok->be->unlock_pin == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': %s tokens have no PIN to unlock", tok->name,
                 tok->type);
        return 0;
    }
    if (!ctok_token_open(tok) || !tok->be->unlock_pin(tok, puk, puk_len, pin, pin_len))
        return 0;
    ctok_code_mark_rejected(tok, &c, 0); /* the token takes it now */
    return 1;
}

/*
 * Tokens, activation, key handles, and the authorization rules every token operation checks
 * here (not in the front doors). Certificate-first lookup is in lookup.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "internal.h"

#define DEFAULT_CONFIG "/etc/ctok/tokens.json"
#define TOOL_CODE "the code given to the ctok tool"

ctok_ctx *ctok_ctx_new(OSSL_LIB_CTX *libctx, const char *propq, const char *config_path)
{
    ctok_ctx *ctx = calloc(1, sizeof(*ctx));
    const char *env = getenv("CTOK_CONFIG");

    if (ctx == NULL)
        return NULL;
    pthread_mutex_init(&ctx->lock, NULL);
    ctx->libctx = libctx;
    ctx->propq = propq != NULL ? strdup(propq) : NULL;
    if (config_path == NULL || *config_path == '\0')
        config_path = env != NULL && *env != '\0' ? env : DEFAULT_CONFIG;
    ctx->config_path = strdup(config_path);
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
    for (size_t i = 0; i < ctx->n_tokens; i++)
        ctok_token_free(ctx->tokens[i]);
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

int ctok_token_authorize(const ctok_token *tok, enum ctok_perm perm, const char *operation,
                         const char *object)
{
    return ctok_perms_authorize(tok->name, tok->perms, perm, operation, object);
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

/* Guards what the token layer remembers of codes (see struct ctok_token): a leaf lock. */
static pthread_mutex_t code_lock = PTHREAD_MUTEX_INITIALIZER;

/* Salted, so a core dump does not hand out a table of PIN hashes. code_lock held. */
static int code_hash(ctok_token *tok, const struct ctok_code *c, uint8_t h[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t kind = c->puk ? 'P' : 'U';
    int ok;

    if (!tok->salted)
        tok->salted = RAND_bytes(tok->salt, sizeof(tok->salt)) == 1;
    ok = md != NULL && tok->salted && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
         EVP_DigestUpdate(md, tok->salt, sizeof(tok->salt)) && EVP_DigestUpdate(md, &kind, 1) &&
         EVP_DigestUpdate(md, c->code, c->len) && EVP_DigestFinal_ex(md, h, NULL);
    EVP_MD_CTX_free(md);
    return ok;
}

/* code_lock held. */
static int find_rejected(const ctok_token *tok, const uint8_t h[32])
{
    for (int i = 0; i < tok->n_rejected; i++)
        if (CRYPTO_memcmp(h, tok->rejected[i], 32) == 0)
            return i;
    return -1;
}

/* Marks a code rejected (1) or, once a PIN is set to it, sendable again (0). */
static void mark_rejected(ctok_token *tok, const struct ctok_code *c, int rejected)
{
    uint8_t h[32];
    int i;

    pthread_mutex_lock(&code_lock);
    if (code_hash(tok, c, h)) {
        i = find_rejected(tok, h);
        if (rejected && i < 0) {
            int n = (int)(sizeof(tok->rejected) / sizeof(tok->rejected[0]));

            /* the oldest goes when full */
            memmove(tok->rejected[1], tok->rejected[0], (size_t)(n - 1) * 32);
            memcpy(tok->rejected[0], h, 32);
            tok->n_rejected += tok->n_rejected < n;
        } else if (!rejected && i >= 0) {
            memmove(tok->rejected[i], tok->rejected[i + 1], (size_t)(tok->n_rejected - i - 1) * 32);
            tok->n_rejected--;
        }
    }
    pthread_mutex_unlock(&code_lock);
    OPENSSL_cleanse(h, sizeof(h));
}

static int was_rejected(ctok_token *tok, const struct ctok_code *c)
{
    uint8_t h[32];
    int r;

    pthread_mutex_lock(&code_lock);
    r = code_hash(tok, c, h) ? find_rejected(tok, h) >= 0 : -1;
    pthread_mutex_unlock(&code_lock);
    OPENSSL_cleanse(h, sizeof(h));
    return r;
}

/* PIN lockout guard: a locked PIN is not tried, a final try is spent only on a typed code. */
static int pin_guard(ctok_token *tok, const struct ctok_code *c, unsigned int st)
{
    const char *what = c->puk ? "PUK" : "PIN";
    int warn;

    if (st & CTOK_PIN_LOCKED) {
        CTOK_ERR(CTOK_R_WRONG_CODE,
                 "token '%s': its %s is locked (the token reports it); ctok does not try the "
                 "%s from %s%s%s%s",
                 tok->name, what, what, c->src,
                 c->puk ? "" : ": set a new PIN with the PUK ('ctok pin unlock ",
                 c->puk ? "" : tok->name, c->puk ? "" : "')");
        ctok_audit(tok, c->puk ? "pin_unlock" : "activate", NULL, 0, "refused: locked");
        return 0;
    }
    if (st & CTOK_PIN_FINAL_TRY) {
        if (!c->typed) {
            CTOK_ERR(CTOK_R_WRONG_CODE,
                     "token '%s': one %s try is left before the token locks; ctok does not "
                     "spend it on the %s from %s: type it once with 'ctok token activate %s' at "
                     "a terminal, or set a new PIN with the PUK ('ctok pin unlock %s')",
                     tok->name, what, what, c->src, tok->name, tok->name);
            ctok_audit(tok, c->puk ? "pin_unlock" : "activate", NULL, 0, "refused: final try left");
            return 0;
        }
        ctok_debug("warning: token '%s': one %s try is left; it is spent on the %s from %s "
                   "(if it is wrong, the token locks)",
                   tok->name, what, what, c->src);
        return 1;
    }
    if (st & CTOK_PIN_COUNT_LOW) {
        pthread_mutex_lock(&code_lock);
        warn = !tok->warned_low;
        tok->warned_low = 1;
        pthread_mutex_unlock(&code_lock);
        if (warn)
            ctok_debug("warning: token '%s': the token counts wrong %s tries (%s count low); a "
                       "few more lock it",
                       tok->name, what, what);
    }
    return 1;
}

int ctok_token_send_code(ctok_token *tok, const struct ctok_code *c, const struct ctok_sender *s)
{
    const char *what = c->puk ? "PUK" : "authentication code";
    int r = was_rejected(tok, c);

    if (r != 0) {
        if (r > 0)
            CTOK_ERR(CTOK_R_WRONG_CODE,
                     "token '%s': the token rejected the %s from %s before; ctok does not send "
                     "it again (wrong tries lock smart cards): correct it and start again",
                     tok->name, what, c->src);
        else
            CTOK_ERR(CTOK_R_INTERNAL, "token '%s': cannot hash the %s", tok->name, what);
        return r > 0 ? 0 : -1;
    }
    if (s->state != NULL && !pin_guard(tok, c, s->state(tok, c->puk, s->arg)))
        return -1;
    r = s->send(tok, c, s->arg);
    if (r == 0)
        mark_rejected(tok, c, 1);
    return r;
}

/* Keeps the code while active, for re-login and keystore rewrites (c NULL: forgets it).
 * tok->lock held. */
static void keep_code(ctok_token *tok, const struct ctok_code *c)
{
    char *copy = c != NULL ? OPENSSL_malloc(c->len + 1) : NULL, *old;
    size_t old_len;

    if (copy != NULL) {
        memcpy(copy, c->code, c->len);
        copy[c->len] = '\0';
    }
    pthread_mutex_lock(&code_lock);
    old = tok->code;
    old_len = tok->code_len;
    tok->code = copy;
    tok->code_len = copy != NULL ? c->len : 0;
    snprintf(tok->code_src, sizeof(tok->code_src), "%s", c != NULL ? c->src : "");
    pthread_mutex_unlock(&code_lock);
    if (old != NULL)
        OPENSSL_clear_free(old, old_len + 1);
}

int ctok_token_send_kept_code(ctok_token *tok, const struct ctok_sender *s)
{
    char code[CTOK_MAX_CODE + 1], src[sizeof(tok->code_src)];
    struct ctok_code c = {code, 0, 0, src, 0};
    int r = -1;

    pthread_mutex_lock(&code_lock);
    if (tok->code != NULL && tok->code_len < sizeof(code)) {
        memcpy(code, tok->code, tok->code_len);
        c.len = tok->code_len;
        memcpy(src, tok->code_src, sizeof(src));
        r = 0;
    }
    pthread_mutex_unlock(&code_lock);
    if (r < 0) {
        snprintf(tok->inactive_why, sizeof(tok->inactive_why),
                 "its authentication code was typed at a prompt and is not kept");
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s' was reconnected and must be activated again: %s",
                 tok->name, tok->inactive_why);
        ctok_token_set_active(tok, 0);
        return 0;
    }
    r = ctok_token_send_code(tok, &c, s);
    if (r == 0) {
        /* the known code no longer works: forget it, never resend it */
        pthread_mutex_lock(&code_lock);
        if (tok->code != NULL)
            OPENSSL_clear_free(tok->code, tok->code_len + 1);
        tok->code = NULL;
        tok->code_len = 0;
        snprintf(tok->inactive_why, sizeof(tok->inactive_why),
                 "the token rejected the authentication code from %s when logging in again", src);
        pthread_mutex_unlock(&code_lock);
        ctok_token_set_active(tok, 0);
    }
    OPENSSL_cleanse(code, sizeof(code));
    return r;
}

int ctok_token_kept_code(ctok_token *tok, char *buf, size_t bufsz, size_t *len)
{
    int ok = 0;

    pthread_mutex_lock(&code_lock);
    if (tok->code != NULL && tok->code_len < bufsz) {
        memcpy(buf, tok->code, tok->code_len + 1);
        *len = tok->code_len;
        ok = 1;
    }
    pthread_mutex_unlock(&code_lock);
    return ok;
}

void ctok_token_set_label(ctok_token *tok, const char *label)
{
    pthread_mutex_lock(&code_lock);
    snprintf(tok->label, sizeof(tok->label), "%s", label);
    pthread_mutex_unlock(&code_lock);
}

void *ctok_token_be(const ctok_token *tok)
{
    return tok->be_data;
}

void ctok_token_set_be(ctok_token *tok, void *data)
{
    tok->be_data = data;
}

void ctok_token_inactive_why(ctok_token *tok, char *buf, size_t len)
{
    pthread_mutex_lock(&code_lock);
    snprintf(buf, len, "%s", tok->inactive_why[0] ? tok->inactive_why : "it is not active");
    pthread_mutex_unlock(&code_lock);
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
    keep_code(tok, c);
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

/* The code this use supplies: ?pin-value, ?pin-source, config auth, then the ui. */
static int get_code(ctok_token *tok, const struct ctok_pin *pin, const struct ctok_ui *ui,
                    char *buf, size_t bufsz, size_t *len, int *prompted, char *src, size_t srcsz)
{
    *prompted = 0;
    if (pin != NULL && pin->value != NULL) {
        snprintf(src, srcsz, "the pin-value of the key reference");
        *len = strlen(pin->value);
        if (*len >= bufsz)
            return 0;
        memcpy(buf, pin->value, *len + 1);
        return 1;
    }
    if (pin != NULL && pin->source != NULL) {
        const char *p = strncmp(pin->source, "file:", 5) == 0 ? pin->source + 5 : pin->source;

        snprintf(src, srcsz, "pin-source file %s", p);
        return ctok_auth_read_file(tok->name, p, buf, bufsz, len);
    }
    switch (tok->auth_kind) {
    case CTOK_AUTH_FILE:
        snprintf(src, srcsz, "auth file %s", tok->auth_arg);
        return ctok_auth_read_file(tok->name, tok->auth_arg, buf, bufsz, len);
    case CTOK_AUTH_ENV: {
        const char *v = getenv(tok->auth_arg);

        snprintf(src, srcsz, "environment variable %s", tok->auth_arg);
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
        snprintf(src, srcsz, "the stored (encrypted) auth code in the config");
        return ctok_auth_stored_decrypt(tok, tok->auth_arg, buf, bufsz, len);
    case CTOK_AUTH_PROMPT:
        break;
    }
    if (ui != NULL && ui->get_code != NULL) {
        char info[200];

        pthread_mutex_lock(&code_lock);
        if (tok->label[0] != '\0')
            snprintf(info, sizeof(info), "%s (ctok token '%s')", tok->label, tok->name);
        else
            snprintf(info, sizeof(info), "ctok token '%s'", tok->name);
        pthread_mutex_unlock(&code_lock);
        if (ui->get_code(ui->arg, info, buf, bufsz, len) && *len < bufsz) {
            buf[*len] = '\0';
            *prompted = 1;
            snprintf(src, srcsz, "the application's passphrase prompt");
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
    ok = activate_with(tok, &c, !prompted || tok->be->keep_prompted_code);
end:
    OPENSSL_cleanse(code, sizeof(code));
    return ok;
}

int ctok_token_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg)
{
    if (!ctok_token_authorize(tok, CTOK_PERM_VIEW, "listing", NULL))
        return 0;
    return ctok_token_scan(tok, cb, arg);
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

/* The cached handle of key id, referenced, or NULL. tok->lock held. */
static ctok_key *cached_key(ctok_token *tok, const uint8_t *id, size_t id_len)
{
    if (tok->keys_pid != getpid())
        return NULL;
    for (size_t i = 0; i < tok->n_keys; i++)
        if (tok->keys[i]->id_len == id_len && memcmp(tok->keys[i]->id, id, id_len) == 0)
            return ctok_key_ref(tok->keys[i]);
    return NULL;
}

/* Takes the cached handles out (all; in a forked child, the parent's). tok->lock held. */
static ctok_key **take_keys(ctok_token *tok, size_t *n)
{
    ctok_key **v = tok->keys;

    *n = tok->n_keys;
    tok->keys = NULL;
    tok->n_keys = tok->cap_keys = 0;
    tok->keys_gen++;
    return v;
}

static void unref_keys(ctok_key **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ctok_key_unref(v[i]);
    free(v);
}

void ctok_token_keys_drop(ctok_token *tok)
{
    ctok_key **v;
    size_t n;

    pthread_mutex_lock(&tok->lock);
    v = take_keys(tok, &n);
    pthread_mutex_unlock(&tok->lock);
    unref_keys(v, n); /* outside the lock: a backend's key_free may take its own */
}

/*
 * Caches key unless a drop happened since gen was read, or another thread cached the same
 * key meanwhile; returns the handle to use (referenced), releasing key if it is not that one.
 */
static ctok_key *cache_key(ctok_token *tok, ctok_key *key, unsigned int gen)
{
    ctok_key *had, **v = NULL, **old = NULL;
    size_t n_old = 0;

    pthread_mutex_lock(&tok->lock);
    if (tok->keys_pid != getpid()) {
        old = take_keys(tok, &n_old);
        tok->keys_pid = getpid();
        gen = tok->keys_gen; /* the parent's drops do not concern this process */
    }
    had = cached_key(tok, key->id, key->id_len);
    if (had == NULL && gen == tok->keys_gen) {
        if (tok->n_keys == tok->cap_keys &&
            (v = realloc(tok->keys, (tok->cap_keys ? 2 * tok->cap_keys : 8) * sizeof(*v))) !=
                NULL) {
            tok->keys = v;
            tok->cap_keys = tok->cap_keys ? 2 * tok->cap_keys : 8;
        }
        if (tok->n_keys < tok->cap_keys)
            tok->keys[tok->n_keys++] = ctok_key_ref(key);
    }
    pthread_mutex_unlock(&tok->lock);
    unref_keys(old, n_old);
    if (had == NULL)
        return key;
    ctok_key_unref(key);
    return had;
}

/* One handle per (token, key id) in a process: loaded once (one GetPublicKey for a remote key). */
ctok_key *ctok_token_key(ctok_token *tok, const uint8_t *id, size_t id_len)
{
    ctok_key *key;
    char hex[2 * CTOK_MAX_ID + 1];
    unsigned int gen;

    if (id_len > CTOK_MAX_ID || !ctok_token_open(tok))
        return NULL;
    if (!ctok_token_is_active(tok)) {
        ctok_hex(id, id_len, hex);
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s': not active; key %s needs an authentication code",
                 tok->name, hex);
        return NULL;
    }
    pthread_mutex_lock(&tok->lock);
    key = cached_key(tok, id, id_len);
    gen = tok->keys_gen;
    pthread_mutex_unlock(&tok->lock);
    if (key != NULL)
        return key;
    key = calloc(1, sizeof(*key));
    if (key == NULL)
        return NULL;
    key->refs = 1;
    key->tok = tok;
    memcpy(key->id, id, id_len);
    key->id_len = id_len;
    /* the backend fills in label, type, public key and its own handle; no token lock held */
    if (!tok->be->key_load(tok, key) || (key->label == NULL && (key->label = strdup("")) == NULL)) {
        ctok_key_unref(key);
        return NULL;
    }
    CTOK_DBG("token '%s': key '%s' loaded", tok->name, key->label);
    return cache_key(tok, key, gen);
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
    snprintf(what, sizeof(what), "%s%s%s", ctok_key_type_name(spec->type),
             spec->group != NULL ? " " : "", spec->group != NULL ? spec->group : "");
    if (spec->type == CTOK_KT_RSA)
        snprintf(what, sizeof(what), "RSA %d", spec->bits);
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

int ctok_token_put_cert(ctok_token *tok, const char *alias, X509 *cert)
{
    int ok;

    if (!ctok_token_authorize(tok, CTOK_PERM_MODIFY, "certificate import", alias))
        return 0;
    /* a token that keeps no certificates: a file in its certificate folder */
    ok = tok->be->put_cert != NULL ? tok->be->put_cert(tok, alias, cert)
                                   : ctok_certbind_put(tok, alias, cert);
    ctok_audit(tok, "cert_import", alias, ok, NULL);
    return ok;
}

int ctok_token_deactivate(ctok_token *tok)
{
    if (!ctok_token_authorize(tok, CTOK_PERM_DEACTIVATE, "deactivation", NULL))
        return 0;
    pthread_mutex_lock(&tok->lock);
    keep_code(tok, NULL);
    ctok_token_set_active(tok, 0);
    pthread_mutex_unlock(&tok->lock);
    ctok_token_keys_drop(tok);
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
    mark_rejected(tok, &c, 0); /* the token takes it now */
    pthread_mutex_lock(&tok->lock);
    keep_code(tok, &c);
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
    mark_rejected(tok, &c, 0); /* the token takes it now */
    return 1;
}

ctok_key *ctok_key_ref(ctok_key *key)
{
    __atomic_add_fetch(&key->refs, 1, __ATOMIC_RELAXED);
    return key;
}

void ctok_key_unref(ctok_key *key)
{
    if (key == NULL || __atomic_sub_fetch(&key->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    if (key->be_data != NULL)
        key->tok->be->key_free(key);
    EVP_PKEY_free(key->pub);
    free(key->label);
    free(key);
}

ctok_token *ctok_key_token(const ctok_key *key)
{
    return key->tok;
}

const char *ctok_key_label(const ctok_key *key)
{
    return key->label;
}

enum ctok_key_type ctok_key_type(const ctok_key *key)
{
    return key->type;
}

EVP_PKEY *ctok_key_pub(const ctok_key *key)
{
    return key->pub;
}

/* Signs with the backend; the caller has checked the rule that allows it. */
static int key_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                    size_t tbslen, uint8_t *sig, size_t *siglen)
{
    int ok = key->tok->be->sign(key, p, tbs, tbslen, sig, siglen);

    if (key->tok->audit_use)
        ctok_audit(key->tok, "key_use", key->label, ok, "sign");
    return ok;
}

int ctok_key_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs, size_t tbslen,
                  uint8_t *sig, size_t *siglen)
{
    return ctok_token_authorize(key->tok, CTOK_PERM_USE, "sign", key->label) &&
           key_sign(key, p, tbs, tbslen, sig, siglen);
}

int ctok_key_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                     size_t inlen, uint8_t *out, size_t *outlen)
{
    int ok;

    if (!ctok_token_authorize(key->tok, CTOK_PERM_USE, "decrypt", key->label))
        return 0;
    if (key->tok->be->decrypt == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s', key '%s': decryption not supported",
                 key->tok->name, key->label);
        return 0;
    }
    ok = key->tok->be->decrypt(key, p, in, inlen, out, outlen);
    if (key->tok->audit_use)
        ctok_audit(key->tok, "key_use", key->label, ok, "decrypt");
    return ok;
}

int ctok_key_derive(ctok_key *key, EVP_PKEY *peer, uint8_t *secret, size_t *len)
{
    int ok;

    if (!ctok_token_authorize(key->tok, CTOK_PERM_USE, "derive", key->label))
        return 0;
    if (key->tok->be->derive == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s', key '%s': key agreement not supported",
                 key->tok->name, key->label);
        return 0;
    }
    ok = key->tok->be->derive(key, peer, secret, len);
    if (key->tok->audit_use)
        ctok_audit(key->tok, "key_use", key->label, ok, "derive");
    return ok;
}

/* The digest a key test signs: the curve's for ECDSA (AWS KMS takes no other), else SHA-256. */
static const EVP_MD *test_md(const ctok_key *key)
{
    int bits = key->pub != NULL ? EVP_PKEY_get_bits(key->pub) : 0;

    if (key->type == CTOK_KT_ED25519)
        return NULL;
    if (key->type != CTOK_KT_EC || bits <= 256)
        return EVP_sha256();
    return bits <= 384 ? EVP_sha384() : EVP_sha512();
}

/* EJBCA's key test: sign a random message with the token key, verify in software. */
int ctok_key_test(ctok_key *key)
{
    EVP_PKEY *pub = key->pub;
    enum ctok_key_type t = key->type;
    const EVP_MD *md = test_md(key);
    struct ctok_sig_params sp = {t == CTOK_KT_RSA_PSS ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING,
                                 md, md, 32};
    unsigned char msg[64], dgst[EVP_MAX_MD_SIZE], sig[1024];
    unsigned int dlen = 0;
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *m = NULL;
    EVP_PKEY_CTX *pc = NULL;
    int ok = 0;

    if (!ctok_token_authorize(key->tok, CTOK_PERM_KEYTEST, "key test", key->label))
        return -1;
    if (pub == NULL || (m = EVP_MD_CTX_new()) == NULL || RAND_bytes(msg, sizeof(msg)) != 1)
        goto end;
    if (t == CTOK_KT_ED25519) {
        ok = key_sign(key, &sp, msg, sizeof(msg), sig, &siglen) &&
             EVP_DigestVerifyInit(m, NULL, NULL, NULL, pub) &&
             EVP_DigestVerify(m, sig, siglen, msg, sizeof(msg)) == 1;
        goto end;
    }
    if (!EVP_Digest(msg, sizeof(msg), dgst, &dlen, md, NULL) ||
        !key_sign(key, &sp, dgst, dlen, sig, &siglen))
        goto end;
    pc = EVP_PKEY_CTX_new(pub, NULL);
    ok = pc != NULL && EVP_PKEY_verify_init(pc) > 0 && EVP_PKEY_CTX_set_signature_md(pc, md) > 0 &&
         (t == CTOK_KT_EC || EVP_PKEY_CTX_set_rsa_padding(pc, sp.pad) > 0) &&
         (sp.pad != RSA_PKCS1_PSS_PADDING || EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, 32) > 0) &&
         EVP_PKEY_verify(pc, sig, siglen, dgst, dlen) == 1;
end:
    EVP_PKEY_CTX_free(pc);
    EVP_MD_CTX_free(m);
    return ok;
}

EVP_PKEY *ctok_key_export_private(ctok_key *key)
{
    if (!key->tok->allow_export || key->tok->be->export_private == NULL) {
        CTOK_ERR(CTOK_R_EXPORT_DENIED,
                 "token '%s', key '%s': the token does not allow export of private keys",
                 key->tok->name, key->label);
        return NULL;
    }
    return key->tok->be->export_private(key);
}

/*
 * Tokens, activation, key handles, and the authorization rules every token operation checks
 * here (not in the front doors). Certificate-first lookup is in lookup.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "internal.h"

#define DEFAULT_CONFIG "/etc/ctok/tokens.json"

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
    ctok_p11_registry_use();
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
    ctok_p11_registry_release();
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

    pthread_mutex_lock(&tok->lock);
    if (!tok->opened) {
        ok = tok->be->open(tok);
        tok->opened = ok;
    }
    pthread_mutex_unlock(&tok->lock);
    return ok;
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

/* Sends a code to the backend unless the token already rejected it. Lock held. */
static int login_locked(ctok_token *tok, const char *code, size_t len, int keep)
{
    uint8_t h[32];
    int r;

    SHA256((const uint8_t *)code, len, h);
    for (int i = 0; i < tok->n_rejected; i++) {
        if (CRYPTO_memcmp(h, tok->rejected[i], 32) == 0) {
            CTOK_ERR(CTOK_R_WRONG_CODE,
                     "token '%s': this authentication code was already rejected; not sending it "
                     "again",
                     tok->name);
            return 0;
        }
    }
    r = tok->be->login(tok, code, len);
    ctok_audit(tok, "activate", NULL, r > 0, r == 0 ? "authentication code rejected" : NULL);
    if (r == 0) {
        memcpy(tok->rejected[tok->n_rejected % 4], h, 32);
        if (tok->n_rejected < 4)
            tok->n_rejected++;
        return 0;
    }
    if (r < 0)
        return 0;
    ctok_token_set_active(tok, 1);
    if (!keep)
        return 1;
    tok->code = OPENSSL_malloc(len + 1);
    if (tok->code == NULL)
        return 0;
    memcpy(tok->code, code, len);
    tok->code[len] = '\0';
    tok->code_len = len;
    return 1;
}

int ctok_token_login_code(ctok_token *tok, const char *code, size_t len)
{
    if (!ctok_token_authorize(tok, CTOK_PERM_ACTIVATE, "activation", NULL))
        return 0;
    return ctok_token_login_with(tok, code, len);
}

int ctok_token_login_with(ctok_token *tok, const char *code, size_t len)
{
    int ok;

    if (!ctok_token_open(tok))
        return 0;
    pthread_mutex_lock(&tok->lock);
    ok = ctok_token_is_active(tok) || login_locked(tok, code, len, 1);
    pthread_mutex_unlock(&tok->lock);
    return ok;
}

/* The code this use supplies: ?pin-value, ?pin-source, config auth, then the ui. */
static int get_code(ctok_token *tok, const struct ctok_pin *pin, const struct ctok_ui *ui,
                    char *buf, size_t bufsz, size_t *len, int *prompted)
{
    *prompted = 0;
    if (pin != NULL && pin->value != NULL) {
        *len = strlen(pin->value);
        if (*len >= bufsz)
            return 0;
        memcpy(buf, pin->value, *len + 1);
        return 1;
    }
    if (pin != NULL && pin->source != NULL) {
        const char *p = strncmp(pin->source, "file:", 5) == 0 ? pin->source + 5 : pin->source;

        return ctok_auth_read_file(tok->name, p, buf, bufsz, len);
    }
    switch (tok->auth_kind) {
    case CTOK_AUTH_FILE:
        return ctok_auth_read_file(tok->name, tok->auth_arg, buf, bufsz, len);
    case CTOK_AUTH_ENV: {
        const char *v = getenv(tok->auth_arg);

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
        return ctok_auth_stored_decrypt(tok, tok->auth_arg, buf, bufsz, len);
    case CTOK_AUTH_PROMPT:
        break;
    }
    if (ui != NULL && ui->get_code != NULL) {
        char info[200];

        if (tok->label[0] != '\0')
            snprintf(info, sizeof(info), "%s (ctok token '%s')", tok->label, tok->name);
        else
            snprintf(info, sizeof(info), "ctok token '%s'", tok->name);
        if (ui->get_code(ui->arg, info, buf, bufsz, len) && *len < bufsz) {
            buf[*len] = '\0';
            *prompted = 1;
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
    char code[CTOK_MAX_CODE + 1];
    size_t len = 0;
    int ok = 0, prompted;

    if (!ctok_token_open(tok))
        return 0;
    if (ctok_token_is_active(tok))
        return 1;
    /* the code is fetched without the lock: a prompt may take long */
    if (!get_code(tok, pin, ui, code, sizeof(code), &len, &prompted))
        goto end;
    pthread_mutex_lock(&tok->lock);
    ok = ctok_token_is_active(tok) ||
         login_locked(tok, code, len, !prompted || tok->be->keep_prompted_code);
    pthread_mutex_unlock(&tok->lock);
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
    if (!ctok_token_open(tok))
        return 0;
    return tok->be->enumerate(tok, cb, arg);
}

ctok_key *ctok_token_key(ctok_token *tok, const uint8_t *id, size_t id_len)
{
    ctok_key *key;
    char hex[2 * CTOK_MAX_ID + 1];

    if (id_len > CTOK_MAX_ID || !ctok_token_open(tok))
        return NULL;
    if (!ctok_token_is_active(tok)) {
        ctok_hex(id, id_len, hex);
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s': not active; key %s needs an authentication code",
                 tok->name, hex);
        return NULL;
    }
    key = calloc(1, sizeof(*key));
    if (key == NULL)
        return NULL;
    key->refs = 1;
    key->tok = tok;
    memcpy(key->id, id, id_len);
    key->id_len = id_len;
    /* the backend fills in label, type, public key and its own handle */
    if (!tok->be->key_load(tok, key) || (key->label == NULL && (key->label = strdup("")) == NULL)) {
        ctok_key_unref(key);
        return NULL;
    }
    return key;
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
    snprintf(what, sizeof(what), "%s%s%s", ctok_key_type_name(spec->type),
             spec->group != NULL ? " " : "", spec->group != NULL ? spec->group : "");
    if (spec->type == CTOK_KT_RSA)
        snprintf(what, sizeof(what), "RSA %d", spec->bits);
    ctok_audit(tok, "key_generate", alias, ok, what);
    return ok;
}

int ctok_token_remove(ctok_token *tok, const char *alias)
{
    int ok;

    if (!ctok_token_authorize(tok, CTOK_PERM_KEYREMOVE, "key removal", alias))
        return 0;
    ok = tok->be->remove(tok, alias);
    ctok_audit(tok, "key_remove", alias, ok, NULL);
    return ok;
}

int ctok_token_put_cert(ctok_token *tok, const char *alias, X509 *cert)
{
    int ok;

    if (!ctok_token_authorize(tok, CTOK_PERM_MODIFY, "certificate import", alias))
        return 0;
    ok = tok->be->put_cert(tok, alias, cert);
    ctok_audit(tok, "cert_import", alias, ok, NULL);
    return ok;
}

int ctok_token_deactivate(ctok_token *tok)
{
    if (!ctok_token_authorize(tok, CTOK_PERM_DEACTIVATE, "deactivation", NULL))
        return 0;
    pthread_mutex_lock(&tok->lock);
    if (tok->code != NULL)
        OPENSSL_clear_free(tok->code, tok->code_len + 1);
    tok->code = NULL;
    tok->code_len = 0;
    ctok_token_set_active(tok, 0);
    pthread_mutex_unlock(&tok->lock);
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
    char *c;
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
    c = OPENSSL_malloc(len + 1);
    if (c != NULL) {
        memcpy(c, code, len);
        c[len] = '\0';
    }
    pthread_mutex_lock(&tok->lock);
    if (tok->code != NULL)
        OPENSSL_clear_free(tok->code, tok->code_len + 1);
    tok->code = c;
    tok->code_len = c != NULL ? len : 0;
    pthread_mutex_unlock(&tok->lock);
    return 1;
}

int ctok_token_unlock_pin(ctok_token *tok, const char *puk, size_t puk_len, const char *pin,
                          size_t pin_len)
{
    if (tok->be->unlock_pin == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': %s tokens have no PIN to unlock", tok->name,
                 tok->type);
        return 0;
    }
    if (!ctok_token_open(tok))
        return 0;
    return tok->be->unlock_pin(tok, puk, puk_len, pin, pin_len);
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

/* EJBCA's key test: sign a random message with the token key, verify in software. */
int ctok_key_test(ctok_key *key)
{
    EVP_PKEY *pub = key->pub;
    enum ctok_key_type t = key->type;
    struct ctok_sig_params sp = {t == CTOK_KT_RSA_PSS ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING,
                                 t == CTOK_KT_ED25519 ? NULL : EVP_sha256(), EVP_sha256(), 32};
    unsigned char msg[64], dgst[32], sig[1024];
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
    if (!EVP_Digest(msg, sizeof(msg), dgst, NULL, EVP_sha256(), NULL) ||
        !key_sign(key, &sp, dgst, sizeof(dgst), sig, &siglen))
        goto end;
    pc = EVP_PKEY_CTX_new(pub, NULL);
    ok = pc != NULL && EVP_PKEY_verify_init(pc) > 0 &&
         EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) > 0 &&
         (t == CTOK_KT_EC || EVP_PKEY_CTX_set_rsa_padding(pc, sp.pad) > 0) &&
         (sp.pad != RSA_PKCS1_PSS_PADDING || EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, 32) > 0) &&
         EVP_PKEY_verify(pc, sig, siglen, dgst, sizeof(dgst)) == 1;
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

/*
 * A front door that checks no rule: calls one token-layer operation directly (linked with the
 * table store/backends.c, libctok_p11.a and libctok_token.a), so only the token layer's own
 * authorization can refuse it. Prints "ok" and exits 0, or prints the token layer's errors ("error:
 * <reason>: <message>") and exits 1. authz_token CONFIG TOKEN OPERATION [ARG] operations (rule):
 * view (view), show (view), sign KEY, decrypt KEY, derive KEY (use), activate CODEFILE (activate),
 * deactivate, forget (deactivate: auth set to prompt), modify, modify-as-activate, put-cert ALIAS
 * CERTFILE, change-code CODEFILE (modify), delete, delete-as-modify (delete), keygen ALIAS
 * (keygen), keyremove ALIAS (keyremove), keytest KEY (keytest).
 * "-as-" operations are front doors that name the wrong rule for a config edit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "store_driver.h"
#include "token.h"

static int count_cb(ctok_token *tok, const struct ctok_object *o, void *arg)
{
    (void)tok;
    (void)o;
    ++*(int *)arg;
    return 1;
}

/* The private key named alias, its token activated with the configured code. */
static ctok_key *load_key(ctok_ctx *ctx, ctok_token *tok, const char *alias)
{
    ctok_key *key = ctok_token_login(tok, NULL, NULL) ? driver_find_key(ctx, tok, alias, 0) : NULL;

    if (key == NULL)
        fprintf(stderr, "driver: cannot load key '%s'\n", alias);
    return key;
}

static int read_code(const char *path, char *buf, size_t bufsz, size_t *len)
{
    FILE *f = fopen(path, "rb");

    if (f == NULL)
        return 0;
    *len = fread(buf, 1, bufsz - 1, f);
    fclose(f);
    while (*len > 0 && (buf[*len - 1] == '\n' || buf[*len - 1] == '\r'))
        (*len)--;
    buf[*len] = '\0';
    return 1;
}

static int set_explicit_ecc(json_t *config, json_t *entry, void *arg)
{
    (void)config;
    (void)arg;
    return json_object_set_new(entry, "explicit_ecc", json_true()) == 0;
}

static int set_prompt(json_t *config, json_t *entry, void *arg)
{
    (void)config;
    (void)arg;
    return json_object_set_new(entry, "auth", json_pack("{s:b}", "prompt", 1)) == 0;
}

static int clear_entry(json_t *config, json_t *entry, void *arg)
{
    (void)config;
    (void)arg;
    return json_object_clear(entry) == 0;
}

static int key_op(ctok_key *key, const char *op)
{
    uint8_t dgst[32] = {1, 2, 3}, out[1024], in[512];
    size_t outlen = sizeof(out), inlen;
    int ok = 0;

    if (strcmp(op, "sign") == 0) {
        struct ctok_sig_params sp = {RSA_PKCS1_PADDING, EVP_sha256(), EVP_sha256(), 32, NULL, 0};

        return ctok_key_sign(key, &sp, dgst, sizeof(dgst), out, &outlen);
    }
    if (strcmp(op, "keytest") == 0)
        return ctok_key_test(key) == 1;
    if (strcmp(op, "decrypt") == 0) {
        struct ctok_dec_params dp = {RSA_PKCS1_PADDING, NULL, NULL, NULL, 0, 0, 0};
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(ctok_key_pub(key), NULL);

        inlen = sizeof(in);
        ok = c != NULL && EVP_PKEY_encrypt_init(c) > 0 &&
             EVP_PKEY_encrypt(c, in, &inlen, dgst, sizeof(dgst)) > 0 &&
             ctok_key_decrypt(key, &dp, in, inlen, out, &outlen) && outlen == sizeof(dgst) &&
             memcmp(out, dgst, sizeof(dgst)) == 0;
        EVP_PKEY_CTX_free(c);
        return ok;
    }
    if (strcmp(op, "derive") == 0) {
        EVP_PKEY *peer = EVP_EC_gen("P-256");

        ok = peer != NULL && ctok_key_derive(key, peer, out, &outlen) && outlen == 32;
        EVP_PKEY_free(peer);
        return ok;
    }
    return 0;
}

static int run(ctok_ctx *ctx, ctok_token *tok, const char *op, const char *arg, const char *arg2)
{
    const char *name = ctok_token_name(tok);
    char code[CTOK_MAX_CODE + 1];
    size_t len = 0;
    int ok = 0, n = 0;

    if (strcmp(op, "view") == 0)
        return ctok_token_enumerate(tok, count_cb, &n);
    if (strcmp(op, "show") == 0)
        return ctok_token_config(tok) != NULL;
    if (strcmp(op, "activate") == 0) {
        ok = read_code(arg, code, sizeof(code), &len) && ctok_token_login_code(tok, code, len);
        OPENSSL_cleanse(code, sizeof(code));
        return ok;
    }
    if (strcmp(op, "change-code") == 0) {
        ok = read_code(arg, code, sizeof(code), &len) &&
             ctok_token_change_code(tok, code, len, code, len);
        OPENSSL_cleanse(code, sizeof(code));
        return ok;
    }
    if (strcmp(op, "deactivate") == 0)
        return ctok_token_deactivate(tok);
    if (strcmp(op, "forget") == 0)
        return ctok_config_edit(ctx, name, CTOK_PERM_DEACTIVATE, set_prompt, NULL);
    if (strcmp(op, "modify") == 0)
        return ctok_config_edit(ctx, name, CTOK_PERM_MODIFY, set_explicit_ecc, NULL);
    if (strcmp(op, "modify-as-activate") == 0)
        return ctok_config_edit(ctx, name, CTOK_PERM_ACTIVATE, set_explicit_ecc, NULL);
    if (strcmp(op, "delete") == 0)
        return ctok_config_edit(ctx, name, CTOK_PERM_DELETE, clear_entry, NULL);
    if (strcmp(op, "delete-as-modify") == 0)
        return ctok_config_edit(ctx, name, CTOK_PERM_MODIFY, clear_entry, NULL);
    if (strcmp(op, "keygen") == 0) {
        struct ctok_keyspec spec;

        return ctok_keyspec_parse("ec:P-256", &spec) && ctok_token_login(tok, NULL, NULL) &&
               ctok_token_generate(tok, arg, &spec);
    }
    if (strcmp(op, "keyremove") == 0)
        return ctok_token_login(tok, NULL, NULL) && ctok_token_remove(tok, arg, NULL, 0);
    if (strcmp(op, "put-cert") == 0) {
        BIO *b = BIO_new_file(arg2, "r");
        X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

        ok = x != NULL && ctok_token_login(tok, NULL, NULL) && ctok_token_put_cert(tok, arg, x);
        X509_free(x);
        BIO_free(b);
        return ok;
    }
    if (strcmp(op, "replace-cert") == 0) {
        BIO *b = BIO_new_file(arg2, "r");
        X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

        ok = x != NULL && ctok_token_login(tok, NULL, NULL) && ctok_token_replace_cert(tok, arg, x);
        X509_free(x);
        BIO_free(b);
        return ok;
    }
    if (strcmp(op, "remove-cert") == 0)
        return ctok_token_login(tok, NULL, NULL) && ctok_token_remove_cert(tok, arg);
    /* renamed there and back: the token is left as it was */
    if (strcmp(op, "rename-cert") == 0 || strcmp(op, "rename-key") == 0) {
        unsigned int type = op[7] == 'c' ? CTOK_OBJ_CERT : CTOK_OBJ_PRIVATE;

        return ctok_token_login(tok, NULL, NULL) && ctok_token_rename(tok, type, arg, arg2) &&
               ctok_token_rename(tok, type, arg2, arg);
    }
    {
        ctok_key *key = load_key(ctx, tok, arg);

        ok = key != NULL && key_op(key, op);
        ctok_key_unref(key);
    }
    return ok;
}

int main(int argc, char **argv)
{
    ctok_ctx *ctx;
    ctok_token *tok;
    int ok;

    if (argc < 4)
        return 2;
    ctok_err_set_sink(driver_sink);
    ctx = ctok_ctx_new(NULL, NULL, argv[1]);
    if (ctx == NULL || !ctok_ctx_load(ctx) ||
        (tok = ctok_ctx_token_find(ctx, argv[2], NULL)) == NULL)
        return 2;
    ok = run(ctx, tok, argv[3], argc > 4 ? argv[4] : NULL, argc > 5 ? argv[5] : NULL);
    ctok_ctx_free(ctx);
    puts(ok ? "ok" : "refused");
    return ok ? 0 : 1;
}

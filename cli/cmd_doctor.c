/*
 * ctok doctor: what an admin runs first when a server's key does not load. For the process's
 * effective OpenSSL config: which file, does it load ctok and default (loaded into a fresh
 * library context, as an application would), which tokens config and where that came from,
 * and for each token: can it be opened, can its auth source give a code. Never a secret.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/conf.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/provider.h>

#include "cli.h"

struct doctor {
    struct cli *c;
    json_t *out, *problems;
};

/* One problem: one line naming what and why (printed at once without --json). */
static void problem(struct doctor *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct doctor *d, const char *fmt, ...)
{
    char line[1400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    json_array_append_new(d->problems, json_string(line));
    if (!d->c->json)
        printf("  problem: %s\n", line);
}

static void say(struct doctor *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct doctor *d, const char *fmt, ...)
{
    va_list ap;

    if (d->c->json)
        return;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

/* The last OpenSSL error of a config load, for the problem line ("" if none). */
static void openssl_cause(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();

    buf[0] = '\0';
    if (e != 0)
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
}

/*
 * Why the config at file loads no ctok, from its own text: the chain openssl_conf ->
 * providers -> ctok -> activate, or else the module that did not load.
 */
static void why_no_ctok(const char *file, char *why, size_t len)
{
    CONF *conf = NCONF_new_ex(NULL, NULL);
    long line = 0;
    const char *init, *provs, *sect, *module, *act, *dir = getenv("OPENSSL_MODULES");

    if (conf == NULL || NCONF_load(conf, file, &line) <= 0) {
        snprintf(why, len, "it does not parse (line %ld)", line);
        goto end;
    }
    if ((init = NCONF_get_string(conf, NULL, "openssl_conf")) == NULL) {
        snprintf(why, len,
                 "it sets no openssl_conf in its first section (an .include at the "
                 "end of a file adds to that file's last section)");
        goto end;
    }
    if ((provs = NCONF_get_string(conf, init, "providers")) == NULL) {
        snprintf(why, len, "its [%s] has no 'providers ='", init);
        goto end;
    }
    if ((sect = NCONF_get_string(conf, provs, "ctok")) == NULL) {
        snprintf(why, len, "its [%s] names no ctok", provs);
        goto end;
    }
    act = NCONF_get_string(conf, sect, "activate");
    module = NCONF_get_string(conf, sect, "module");
    if (act == NULL)
        snprintf(why, len, "its [%s] does not say 'activate = 1'", sect);
    else if (module != NULL && module[0] == '/')
        snprintf(why, len, "module %s (from [%s]) did not load: missing, unreadable or not ctok",
                 module, sect);
    else
        snprintf(why, len, "module %s (from [%s]) did not load: not in %s%s, or not ctok",
                 module != NULL ? module : "ctok", sect,
                 dir != NULL ? "OPENSSL_MODULES " : "OpenSSL's modules directory ",
                 dir != NULL ? dir : OPENSSL_info(OPENSSL_INFO_MODULES_DIR));
end:
    ERR_clear_error();
    NCONF_free(conf);
}

struct found {
    char *config, *from;
};

static int ctok_params(OSSL_PROVIDER *prov, void *arg)
{
    struct found *f = arg;
    const char *cfg = NULL, *from = NULL;
    OSSL_PARAM p[] = {OSSL_PARAM_utf8_ptr("ctok-config", (char **)&cfg, 0),
                      OSSL_PARAM_utf8_ptr("ctok-config-from", (char **)&from, 0), OSSL_PARAM_END};

    if (strcmp(OSSL_PROVIDER_get0_name(prov), "ctok") != 0)
        return 1;
    if (OSSL_PROVIDER_get_params(prov, p) && cfg != NULL && from != NULL) {
        f->config = strdup(cfg);
        f->from = strdup(from);
    }
    return 1;
}

/*
 * The OpenSSL config an application of this process's environment reads, loaded into a fresh
 * library context. Fills *f with the tokens config the loaded ctok uses.
 */
static void check_openssl(struct doctor *d, struct found *f)
{
    char *file = CONF_get1_default_config_file(), cause[256];
    const char *from = getenv("OPENSSL_CONF") != NULL ? "OPENSSL_CONF" : "OpenSSL's default";
    OSSL_LIB_CTX *lib = OSSL_LIB_CTX_new();
    json_t *o = json_object();
    int exists, loaded = 0, has_ctok = 0, has_default = 0;

    if (file == NULL || lib == NULL || o == NULL) {
        problem(d, "out of memory");
        goto end;
    }
    exists = access(file, R_OK) == 0;
    say(d, "OpenSSL config: %s (%s)\n", file, from);
    json_object_set_new(o, "path", json_string(file));
    json_object_set_new(o, "from", json_string(from));
    json_object_set_new(o, "readable", json_boolean(exists));
    if (!exists) {
        problem(d,
                "OpenSSL config %s (%s) cannot be read: applications run without it, so "
                "without ctok",
                file, from);
        goto end;
    }
    ERR_clear_error();
    loaded = OSSL_LIB_CTX_load_config(lib, file);
    openssl_cause(cause, sizeof(cause));
    has_ctok = loaded && OSSL_PROVIDER_available(lib, "ctok");
    has_default = loaded && OSSL_PROVIDER_available(lib, "default");
    say(d, "  provider ctok: %s\n", has_ctok ? "loaded" : "not loaded");
    say(d, "  provider default: %s\n", has_default ? "loaded" : "not loaded");
    if (!has_ctok) {
        char why[768];

        why_no_ctok(file, why, sizeof(why));
        if (loaded)
            problem(d, "OpenSSL config %s does not load provider ctok: %s%s%s", file, why,
                    cause[0] ? "; " : "", cause);
        else /* config_diagnostics = 1 (Debian's file) makes a provider that fails fatal */
            problem(d, "OpenSSL config %s fails to load (%s): provider ctok: %s", file,
                    cause[0] ? cause : "unknown error", why);
    } else if (!loaded) {
        problem(d, "OpenSSL config %s fails to load: %s", file, cause[0] ? cause : "unknown error");
    }
    if (loaded && !has_default)
        problem(d,
                "OpenSSL config %s does not load provider default: ordinary keys, digests "
                "and TLS fail (activate default in its provider section)",
                file);
    if (has_ctok)
        OSSL_PROVIDER_do_all(lib, ctok_params, f);
end:
    json_object_set_new(o, "loads", json_boolean(loaded));
    json_object_set_new(o, "ctok", json_boolean(has_ctok));
    json_object_set_new(o, "default", json_boolean(has_default));
    json_object_set_new(d->out, "openssl_config", o);
    OSSL_LIB_CTX_free(lib);
    OPENSSL_free(file);
}

static void check_token(struct doctor *d, ctok_token *tok, json_t *list)
{
    char cause[1024], src[320];
    const char *name = ctok_token_name(tok);
    json_t *o = json_object();
    int opens, auth;

    opens = ctok_token_open(tok);
    if (!opens)
        cli_err_take(cause, sizeof(cause));
    auth = ctok_token_auth_check(tok, src, sizeof(src));
    say(d, "token '%s' (%s): %s; auth: %s%s\n", name, ctok_token_type(tok),
        opens ? "opens" : "does not open", src,
        auth == 1   ? " (readable)"
        : auth == 0 ? " (not usable)"
                    : "");
    if (!opens)
        problem(d, "token '%s': cannot be opened: %s", name, cause);
    if (auth == 0) {
        cli_err_take(cause, sizeof(cause));
        problem(d, "token '%s': its auth source gives no code: %s", name, cause);
    }
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "type", json_string(ctok_token_type(tok)));
    json_object_set_new(o, "opens", json_boolean(opens));
    json_object_set_new(o, "auth", json_string(src));
    json_object_set_new(o, "auth_ok", auth == 2 ? json_null() : json_boolean(auth == 1));
    json_array_append_new(list, o);
}

static void check_tokens(struct doctor *d, const struct found *f)
{
    enum ctok_config_from from;
    const char *path, *fromname;
    char cause[1024];
    ctok_ctx *ctx;
    json_t *o = json_object(), *list = json_array();

    if (d->c->config == NULL && f->config != NULL) {
        path = f->config; /* what the provider loaded by that OpenSSL config uses */
        fromname = f->from;
    } else {
        path = ctok_config_pick(d->c->config, NULL, &from);
        fromname = ctok_config_from_name(from);
    }
    say(d, "ctok tokens config: %s (%s)\n", path, fromname);
    if (d->c->config == NULL && strcmp(path, ctok_config_pick(NULL, NULL, NULL)) != 0)
        say(d, "  (the ctok tool itself uses %s: give it --config %s)\n",
            ctok_config_pick(NULL, NULL, NULL), path);
    json_object_set_new(o, "path", json_string(path));
    json_object_set_new(o, "from", json_string(fromname));
    json_object_set_new(d->out, "tokens_config", o);
    json_object_set_new(d->out, "tokens", list);
    /* no file is a machine without configured tokens (zero-config pkcs11: URIs still work);
     * a file named on purpose that is not there is a typo that hides every token */
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        if (strcmp(fromname, ctok_config_from_name(CTOK_CONFIG_FROM_DEFAULT)) != 0)
            problem(d, "tokens config %s (%s) does not exist: ctok sees no configured token", path,
                    fromname);
        else
            say(d,
                "  %s does not exist: no tokens configured (pkcs11: URIs still resolve "
                "through the modules registered with p11-kit)\n",
                path);
        return;
    }
    if ((ctx = ctok_ctx_new(NULL, NULL, path)) == NULL) {
        problem(d, "out of memory");
        return;
    }
    if (!ctok_ctx_load(ctx)) {
        cli_err_take(cause, sizeof(cause));
        problem(d, "tokens config %s (%s): %s", path, fromname, cause);
    } else {
        if (ctok_ctx_token_count(ctx) == 0)
            say(d, "  no tokens configured\n");
        for (size_t i = 0; i < ctok_ctx_token_count(ctx); i++)
            check_token(d, ctok_ctx_token_at(ctx, i), list);
    }
    ctok_ctx_free(ctx);
}

int cmd_doctor(struct cli *c)
{
    struct doctor d = {c, json_object(), json_array()};
    struct found f = {NULL, NULL};
    size_t n;

    if (d.out == NULL || d.problems == NULL) {
        json_decref(d.out);
        json_decref(d.problems);
        return EXIT_FAILED;
    }
    check_openssl(&d, &f);
    check_tokens(&d, &f);
    free(f.config);
    free(f.from);
    n = json_array_size(d.problems);
    json_object_set_new(d.out, "ok", json_boolean(n == 0));
    json_object_set(d.out, "problems", d.problems);
    json_decref(d.problems);
    if (c->json) {
        cli_print_json(d.out); /* takes it */
    } else {
        if (n == 0)
            printf("no problem found\n");
        else
            printf("%zu problem(s) found\n", n);
        json_decref(d.out);
    }
    return n == 0 ? EXIT_OK : EXIT_FAILED;
}

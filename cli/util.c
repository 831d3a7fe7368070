#define _GNU_SOURCE
/* Shared pieces of the tool: tokens by name, auth codes from files, env or the terminal. */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "cli.h"

/* An absolute path for the config: the tool may run from anywhere. */
char *cli_absolute(const char *p)
{
    char cwd[PATH_MAX], *out;

    if (p[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
        return strdup(p);
    if (asprintf(&out, "%s/%s", cwd, p) < 0)
        return NULL;
    return out;
}

ctok_token *cli_permitted(struct cli *c, const char *name, enum ctok_perm perm,
                          const char *operation)
{
    ctok_token *tok = cli_token(c, name);

    return tok != NULL && ctok_token_authorize(tok, perm, operation, NULL) ? tok : NULL;
}

ctok_token *cli_token(struct cli *c, const char *name)
{
    ctok_token *tok;

    if (!ctok_ctx_load(c->ctx))
        return NULL;
    tok = ctok_ctx_token_find(c->ctx, name, NULL);
    if (tok == NULL)
        ctok_ctx_unknown_token(c->ctx, name);
    return tok;
}

/*
 * The terminal prompt (ctok_tty_read, OpenSSL's UI, shared with the provider). Ctrl-C has
 * restored the terminal's echo by the time we know of it; the tool then stops as an
 * interrupted program does, by SIGINT.
 */
static int tty_ask(const char *prompt, const char *repeat, char *buf, size_t bufsz, size_t *len)
{
    int r = ctok_tty_read(prompt, repeat, buf, bufsz, len);

    if (r == CTOK_TTY_INTERRUPTED) {
        signal(SIGINT, SIG_DFL);
        raise(SIGINT);
    }
    return r;
}

int cli_prompt(const char *prompt, char *buf, size_t bufsz, size_t *len)
{
    return tty_ask(prompt, NULL, buf, bufsz, len) == CTOK_TTY_READ;
}

static int tty_get_code(void *arg, const char *info, char *buf, size_t bufsz, size_t *len)
{
    char prompt[256];

    (void)arg;
    snprintf(prompt, sizeof(prompt), "Authentication code for %s: ", info);
    return cli_prompt(prompt, buf, bufsz, len);
}

int cli_login(struct cli *c, ctok_token *tok)
{
    struct ctok_pin pin = {NULL, c->auth_file};
    struct ctok_ui ui = {tty_get_code, NULL};

    if (c->auth_env != NULL) {
        pin.value = getenv(c->auth_env);
        if (pin.value == NULL) {
            CTOK_ERR(CTOK_R_NO_CODE, "token '%s': environment variable %s is not set",
                     ctok_token_name(tok), c->auth_env);
            return 0;
        }
    }
    return ctok_token_login(tok, pin.value != NULL || pin.source != NULL ? &pin : NULL, &ui);
}

int cli_read_secret(const char *file, const char *env, const char *what, char *buf, size_t bufsz,
                    size_t *len)
{
    char prompt[256];

    if (file != NULL) {
        char fwhat[300];

        snprintf(fwhat, sizeof(fwhat), "%s: file", what);
        return ctok_auth_file_read(fwhat, file, buf, bufsz, len);
    }
    if (env != NULL) {
        const char *v = getenv(env);

        if (v == NULL || strlen(v) >= bufsz) {
            CTOK_ERR(CTOK_R_NO_CODE, "%s: environment variable %s is not set", what, env);
            return 0;
        }
        *len = strlen(v);
        memcpy(buf, v, *len + 1);
        return 1;
    }
    snprintf(prompt, sizeof(prompt), "%s: ", what);
    if (!cli_prompt(prompt, buf, bufsz, len)) {
        CTOK_ERR(CTOK_R_NO_CODE, "%s: no terminal to ask on (give it in a file or a variable)",
                 what);
        return 0;
    }
    return 1;
}

int cli_read_new_code(struct cli *c, const char *tokname, char *buf, size_t bufsz, size_t *len)
{
    char prompt[256];
    int r;

    if (c->auth_file != NULL || c->auth_env != NULL) {
        snprintf(prompt, sizeof(prompt), "token '%s': authentication code", tokname);
        return cli_read_secret(c->auth_file, c->auth_env, prompt, buf, bufsz, len);
    }
    snprintf(prompt, sizeof(prompt), "Authentication code for new token '%s': ", tokname);
    r = tty_ask(prompt, "Repeat Authentication Code: ", buf, bufsz, len);
    if (r == CTOK_TTY_MISMATCH)
        CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s': the repeated authentication code does not match",
                 tokname);
    else if (r != CTOK_TTY_READ)
        CTOK_ERR(CTOK_R_NO_CODE,
                 "token '%s': no terminal to ask for the authentication code "
                 "(use --auth-file or --auth-env)",
                 tokname);
    return r == CTOK_TTY_READ;
}

int cli_auth_file_check(const char *tokname, const char *path)
{
    char code[CTOK_MAX_CODE + 1], what[300], *abs = cli_absolute(path);
    size_t len = 0;
    int ok;

    /* the provider's reader and its words: what it would refuse later is refused now */
    snprintf(what, sizeof(what), "token '%s': auth file", tokname);
    ok = abs != NULL && ctok_auth_file_read(what, abs, code, sizeof(code), &len);
    OPENSSL_cleanse(code, sizeof(code));
    free(abs);
    return ok;
}

void cli_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

    if (s != NULL) {
        puts(s);
        free(s);
    }
    json_decref(j);
}

/* Appends s percent-encoded (RFC 3986 unreserved characters kept) to out at *o. */
static void uri_escape(const char *s, char *out, size_t *o)
{
    static const char keep[] = "-._~";

    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr(keep, ch) != NULL)
            out[(*o)++] = (char)ch;
        else
            *o += (size_t)sprintf(out + *o, "%%%02X", ch);
    }
}

char *cli_pkcs11_object_uri(const char *token_uri, const char *label, const uint8_t *id,
                            size_t id_len, const char *type)
{
    size_t cap = strlen(token_uri) + 3 * (strlen(label) + id_len) + strlen(type) + 32, o;
    char *uri = malloc(cap);

    if (uri == NULL)
        return NULL;
    o = (size_t)sprintf(uri, "%s;id=", token_uri);
    for (size_t i = 0; i < id_len; i++) /* p11tool's form: every byte of the id escaped */
        o += (size_t)sprintf(uri + o, "%%%02x", id[i]);
    o += (size_t)sprintf(uri + o, ";object=");
    uri_escape(label, uri, &o);
    sprintf(uri + o, ";type=%s", type);
    return uri;
}

void cli_add_uris(json_t *o, const char *token, const char *token_uri, const char *label,
                  const uint8_t *id, size_t id_len, const char *type)
{
    char *uri = cli_object_uri(token, label, type);
    char *p11 =
        token_uri != NULL ? cli_pkcs11_object_uri(token_uri, label, id, id_len, type) : NULL;
    if (uri != NULL)
        json_object_set_new(o, "uri", json_string(uri));
    if (p11 != NULL)
        json_object_set_new(o, "pkcs11_uri", json_string(p11));
    free(uri);
    free(p11);
}

void cli_print_uris(const json_t *o)
{
    if (json_object_get(o, "uri") != NULL)
        printf("    %s\n", json_string_value(json_object_get(o, "uri")));
    if (json_object_get(o, "pkcs11_uri") != NULL)
        printf("    %s\n", json_string_value(json_object_get(o, "pkcs11_uri")));
}

char *cli_object_uri(const char *token, const char *label, const char *type)
{
    unsigned int t = strcmp(type, "cert") == 0     ? CTOK_OBJ_CERT
                     : strcmp(type, "public") == 0 ? CTOK_OBJ_PUBLIC
                                                   : CTOK_OBJ_PRIVATE;
    char *made = ctok_uri_make(token, label, NULL, 0, t), *uri = made ? strdup(made) : NULL;

    OPENSSL_free(made);
    if (uri == NULL)
        CTOK_ERR(CTOK_R_INTERNAL, "token '%s': out of memory for the URI of '%s'", token, label);
    return uri;
}

int cli_report(struct cli *c, json_t *j, const char *fmt, ...)
{
    va_list ap;

    if (c->json) {
        cli_print_json(j);
        return EXIT_OK;
    }
    json_decref(j);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    return EXIT_OK;
}

static const struct ctok_tool_field *type_field(const struct ctok_tool_field *f, const char *opt)
{
    for (; f->option != NULL; f++)
        if (strcmp(f->option, opt) == 0)
            return f;
    return NULL;
}

/* "--library, --ref-type, --ref, --attributes" */
static void option_names(const struct ctok_tool_field *f, char *buf, size_t len)
{
    size_t n = 0;

    buf[0] = '\0';
    for (const struct ctok_tool_field *g = f; g->option != NULL && n < len; g++)
        n += (size_t)snprintf(buf + n, len - n, "%s--%s", g == f ? "" : ", ", g->option);
    if (buf[0] == '\0')
        snprintf(buf, len, "none");
}

static int set_field(json_t *e, const struct ctok_tool_field *f, const char *v)
{
    char *end, *abs;
    long long n;

    switch (f->kind) {
    case CTOK_FIELD_INT:
        n = strtoll(v, &end, 10);
        if (*v == '\0' || *end != '\0')
            return cli_usage("--%s needs a number, not '%s'", f->option, v), 0;
        json_object_set_new(e, f->key, json_integer(n));
        return 1;
    case CTOK_FIELD_PATH:
    case CTOK_FIELD_PATHS:
        abs = cli_absolute(v);
        if (f->kind == CTOK_FIELD_PATH)
            json_object_set_new(e, f->key, json_string(abs != NULL ? abs : v));
        else if (json_is_array(json_object_get(e, f->key)))
            json_array_append_new(json_object_get(e, f->key), json_string(abs != NULL ? abs : v));
        else
            json_object_set_new(e, f->key, json_pack("[s]", abs != NULL ? abs : v));
        free(abs);
        return 1;
    case CTOK_FIELD_STRING:
        break;
    }
    json_object_set_new(e, f->key, json_string(v));
    return 1;
}

int cli_type_options(struct cli *c, const char *type, json_t *e, int create)
{
    const struct ctok_tool_field *fields = ctok_type_fields(type), *f;
    char names[512];
    int set = 0;

    if (fields == NULL)
        return cli_usage("token type '%s' is not supported (supported: %s)", type,
                         ctok_type_names()),
               -1;
    option_names(fields, names, sizeof(names));
    for (int i = 0; i < c->n_opts; i++) {
        if ((f = type_field(fields, c->opts[i].name)) == NULL)
            return cli_usage("a %s token has no option --%s (its options: %s)", type,
                             c->opts[i].name, names),
                   -1;
        if (!set_field(e, f, c->opts[i].value))
            return -1;
        set++;
    }
    for (f = fields; create && f->option != NULL; f++) {
        if (json_object_get(e, f->key) != NULL)
            continue;
        if (f->required)
            return cli_usage("a %s token needs --%s (%s)", type, f->option, f->help), -1;
        if (f->def != NULL)
            json_object_set_new(e, f->key, json_string(f->def));
    }
    return set;
}

void cli_token_create_help(FILE *out)
{
    char types[256];

    snprintf(types, sizeof(types), "%s", ctok_type_names());
    for (char *save = NULL, *t = strtok_r(types, ", ", &save); t != NULL;
         t = strtok_r(NULL, ", ", &save)) {
        fprintf(out,
                "token create --type %s --name NAME [--auth-file F | --auth-env V]\n"
                "             [--allow-export] [--explicit-ecc]\n",
                t);
        for (const struct ctok_tool_field *f = ctok_type_fields(t); f->option != NULL; f++)
            fprintf(out, "    %s--%s %s%s  %s\n", f->required ? "" : "[", f->option,
                    f->kind == CTOK_FIELD_INT ? "N" : "VALUE", f->required ? "" : "]", f->help);
    }
}

struct cli_progress {
    pthread_t thread;
    const char *what;
    int stop; /* atomic */
};

/* A frame at once (the operations given a spinner are known to be slow), then every 100 ms. */
static void *spin(void *arg)
{
    struct cli_progress *p = arg;
    static const char frames[] = "|/-\\";
    const struct timespec tick = {0, 100 * 1000000L};
    char line[200];

    for (unsigned i = 0; !__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE); i++) {
        int n = snprintf(line, sizeof(line), "\r%s %c", p->what, frames[i % 4]);

        if (write(STDERR_FILENO, line, (size_t)n) < 0)
            break;
        nanosleep(&tick, NULL);
    }
    return NULL;
}

struct cli_progress *cli_progress_begin(struct cli *c, const char *what)
{
    struct cli_progress *p;

    if (c->json || !isatty(STDERR_FILENO) || (p = calloc(1, sizeof(*p))) == NULL)
        return NULL;
    p->what = what;
    if (pthread_create(&p->thread, NULL, spin, p) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

void cli_progress_end(struct cli_progress *p)
{
    static const char clear[] = "\r\033[K"; /* the line the spinner drew, erased */

    if (p == NULL)
        return;
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
    pthread_join(p->thread, NULL);
    if (write(STDERR_FILENO, clear, sizeof(clear) - 1) < 0)
        p->stop = 2; /* nothing to do about a terminal that is gone */
    free(p);
}

#define _GNU_SOURCE
/* Shared pieces of the tool: tokens by name, auth codes from files, env or the terminal. */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
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
        CTOK_ERR(CTOK_R_UNKNOWN_TOKEN, "no token named '%s' in %s", name,
                 ctok_ctx_config_path(c->ctx));
    return tok;
}

/* Reads a line from the terminal without echo. */
int cli_prompt(const char *prompt, char *buf, size_t bufsz, size_t *len)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    struct termios old, quiet;
    ssize_t n = 0;
    int ok = 0;

    if (fd < 0)
        return 0;
    if (tcgetattr(fd, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    if (write(fd, prompt, strlen(prompt)) >= 0) {
        size_t got = 0;
        char ch;

        while (got + 1 < bufsz && (n = read(fd, &ch, 1)) == 1 && ch != '\n')
            buf[got++] = ch;
        buf[got] = '\0';
        *len = got;
        ok = n >= 0;
    }
    tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0)
        ok = 0;
    close(fd);
    return ok;
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
    char again[CTOK_MAX_CODE + 1], prompt[256];
    size_t alen = 0;
    int ok;

    if (c->auth_file != NULL || c->auth_env != NULL) {
        snprintf(prompt, sizeof(prompt), "token '%s': authentication code", tokname);
        return cli_read_secret(c->auth_file, c->auth_env, prompt, buf, bufsz, len);
    }
    snprintf(prompt, sizeof(prompt), "Authentication code for new token '%s': ", tokname);
    if (!cli_prompt(prompt, buf, bufsz, len)) {
        CTOK_ERR(CTOK_R_NO_CODE,
                 "token '%s': no terminal to ask for the authentication code "
                 "(use --auth-file or --auth-env)",
                 tokname);
        return 0;
    }
    ok = cli_prompt("Repeat Authentication Code: ", again, sizeof(again), &alen) && alen == *len &&
         CRYPTO_memcmp(again, buf, alen) == 0;
    OPENSSL_cleanse(again, sizeof(again));
    if (!ok) {
        OPENSSL_cleanse(buf, bufsz);
        CTOK_ERR(CTOK_R_INVALID_ARG,
                 "token '%s': the repeated authentication code does not "
                 "match",
                 tokname);
    }
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

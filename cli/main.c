/* ctok: crypto token operations (EJBCA's crypto token operations, for OpenSSL 3). */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static char first_error[1024];

/* The first error of a failed operation is its cause: keep it for the one-line report. */
static void cli_err_sink(int reason, const char *file, int line, const char *func, const char *fmt,
                         va_list ap)
{
    int n;

    (void)file;
    (void)line;
    (void)func;
    if (first_error[0] != '\0')
        return;
    n = snprintf(first_error, sizeof(first_error), "%s: ", ctok_reason_string(reason));
    if (n > 0 && (size_t)n < sizeof(first_error))
        vsnprintf(first_error + n, sizeof(first_error) - (size_t)n, fmt, ap);
}

int cli_fail(void)
{
    fprintf(stderr, "ctok: %s\n", first_error[0] ? first_error : "operation failed");
    return EXIT_FAILED;
}

int cli_usage(const char *fmt, ...)
{
    va_list ap;

    fputs("ctok: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see 'ctok --help')\n", stderr);
    return EXIT_USAGE;
}

static const char usage[] =
    "usage: ctok [--config FILE] [--json] COMMAND ...\n"
    "\n"
    "Crypto tokens:\n"
    "  token create --type pkcs12 --name NAME --keystore FILE\n"
    "               [--auth-file FILE | --auth-env VAR] [--allow-export] [--explicit-ecc]\n"
    "  token create --type pkcs11 --name NAME --library LIB --ref-type id|index|label --ref REF\n"
    "               [--attributes FILE] [--auth-file FILE | --auth-env VAR]\n"
    "  token list\n"
    "  slots --library LIB              every slot with a token: id, index, labels, flags\n"
    "  pin unlock TOKEN [--puk-file F | --puk-env V] [--auth-file F | --auth-env V]\n"
    "                                   set a new PIN (--auth-*) with the PUK (--puk-*)\n"
    "Keys and certificates:\n"
    "  key generate TOKEN ALIAS SPEC   SPEC: rsa:2048|rsa:3072|rsa:4096|ec:P-256|ec:P-384|\n"
    "                                  ec:P-521|ed25519\n"
    "  key list TOKEN\n"
    "  key test TOKEN ALIAS            sign and verify with the key\n"
    "  key remove TOKEN ALIAS          the key and its certificates\n"
    "  cert import TOKEN ALIAS FILE    a PEM or DER certificate\n"
    "  ref TOKEN ALIAS                 a key-reference PEM (-----BEGIN CTOK URI-----) on\n"
    "                                  stdout: a key file for nginx, Python ssl, any app\n"
    "\n"
    "Auth codes never come from the command line: --auth-file FILE, --auth-env VAR, the\n"
    "token's configured \"auth\", or a prompt on the terminal.\n"
    "Config: --config, else $CTOK_CONFIG, else /etc/ctok/tokens.json.\n"
    "Exit codes: 0 ok, 1 operation failed, 2 usage error.\n";

static const struct {
    const char *group, *verb;
    int (*fn)(struct cli *);
    int nargs;
} commands[] = {
    {"token", "create", cmd_token_create, 0}, {"token", "list", cmd_token_list, 0},
    {"key", "generate", cmd_key_generate, 3}, {"key", "list", cmd_key_list, 1},
    {"key", "test", cmd_key_test, 2},         {"key", "remove", cmd_key_remove, 2},
    {"cert", "import", cmd_cert_import, 3},   {"slots", NULL, cmd_slots, 0},
    {"pin", "unlock", cmd_pin_unlock, 1},     {"ref", NULL, cmd_ref, 2},
};

/* Options may stand anywhere after the command words. */
static int parse_options(struct cli *c, int argc, char **argv)
{
    static const struct {
        const char *name;
        size_t off;
    } valued[] = {
        {"--config", offsetof(struct cli, config)},
        {"--auth-file", offsetof(struct cli, auth_file)},
        {"--auth-env", offsetof(struct cli, auth_env)},
        {"--type", offsetof(struct cli, type)},
        {"--name", offsetof(struct cli, name)},
        {"--keystore", offsetof(struct cli, keystore)},
        {"--library", offsetof(struct cli, library)},
        {"--ref-type", offsetof(struct cli, ref_type)},
        {"--ref", offsetof(struct cli, ref)},
        {"--attributes", offsetof(struct cli, attributes)},
        {"--puk-file", offsetof(struct cli, puk_file)},
        {"--puk-env", offsetof(struct cli, puk_env)},
    };

    c->argv = calloc((size_t)argc + 1, sizeof(char *));
    if (c->argv == NULL)
        return 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        size_t k;

        if (strcmp(a, "--json") == 0) {
            c->json = 1;
            continue;
        }
        if (strcmp(a, "--allow-export") == 0) {
            c->allow_export = 1;
            continue;
        }
        if (strcmp(a, "--explicit-ecc") == 0) {
            c->explicit_ecc = 1;
            continue;
        }
        for (k = 0; k < sizeof(valued) / sizeof(valued[0]); k++) {
            size_t n = strlen(valued[k].name);

            if (strncmp(a, valued[k].name, n) == 0 && (a[n] == '\0' || a[n] == '=')) {
                const char *v = a[n] == '=' ? a + n + 1 : (i + 1 < argc ? argv[++i] : NULL);

                if (v == NULL) {
                    cli_usage("option %s needs a value", valued[k].name);
                    return 0;
                }
                *(const char **)((char *)c + valued[k].off) = v;
                break;
            }
        }
        if (k < sizeof(valued) / sizeof(valued[0]))
            continue;
        if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
            if (strncmp(a, "--pin", 5) == 0 || strncmp(a, "--password", 10) == 0 ||
                strncmp(a, "--auth-code", 11) == 0)
                cli_usage("%s: auth codes are never taken from the command line; use "
                          "--auth-file or --auth-env",
                          a);
            else
                cli_usage("unknown option %s", a);
            return 0;
        }
        c->argv[c->argc++] = argv[i];
    }
    return 1;
}

int main(int argc, char **argv)
{
    struct cli c = {0};
    int rc;

    ctok_err_set_sink(cli_err_sink);
    if (getenv("CTOK_DEBUG") != NULL && strcmp(getenv("CTOK_DEBUG"), "0") != 0)
        ctok_debug_on = 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return EXIT_OK;
        }
    if (!parse_options(&c, argc - 1, argv + 1)) {
        free(c.argv);
        return EXIT_USAGE;
    }
    if (c.argc < 1) {
        free(c.argv);
        return cli_usage("missing command");
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        int words = commands[i].verb != NULL ? 2 : 1;

        if (strcmp(c.argv[0], commands[i].group) != 0 ||
            (words == 2 && (c.argc < 2 || strcmp(c.argv[1], commands[i].verb) != 0)))
            continue;
        if (c.argc - words != commands[i].nargs) {
            rc = cli_usage("'%s%s%s' takes %d argument(s), got %d", commands[i].group,
                           words == 2 ? " " : "", words == 2 ? commands[i].verb : "",
                           commands[i].nargs, c.argc - words);
        } else {
            c.argc -= words;
            c.argv += words;
            c.ctx = ctok_ctx_new(NULL, NULL, c.config);
            rc = c.ctx == NULL ? EXIT_FAILED : commands[i].fn(&c);
            ctok_ctx_free(c.ctx);
            c.argv -= words;
        }
        free(c.argv);
        return rc;
    }
    rc = cli_usage("unknown command '%s%s%s'", c.argv[0], c.argc > 1 ? " " : "",
                   c.argc > 1 ? c.argv[1] : "");
    free(c.argv);
    return rc;
}

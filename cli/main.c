/* ctok: crypto token operations (EJBCA's crypto token operations, for OpenSSL 3). */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "cli.h"

static char first_error[1024];
static unsigned long first_error_at; /* ctok_err_count() when it was raised */

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
    first_error_at = ctok_err_count();
    n = snprintf(first_error, sizeof(first_error), "%s: ", ctok_reason_string(reason));
    if (n > 0 && (size_t)n < sizeof(first_error))
        vsnprintf(first_error + n, sizeof(first_error) - (size_t)n, fmt, ap);
}

/* An expected failure popped by the token layer is no longer the one to report. */
static void cli_err_forget(unsigned long since)
{
    if (first_error[0] != '\0' && first_error_at > since)
        first_error[0] = '\0';
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
    "usage: ctok [--config FILE] [--json] COMMAND ...    ctok COMMAND --help for details\n"
    "\n"
    "Crypto tokens (EJBCA's crypto token operations):\n"
    "  token create --type TYPE --name NAME ...   add a token (new unique id)\n"
    "  token list | show TOKEN | modify TOKEN ... | delete TOKEN\n"
    "  token activate TOKEN [--remember] | deactivate TOKEN\n"
    "  slots [--library LIB]               the slots of a PKCS#11 library, or of all\n"
    "                                      registered with p11-kit (a type's discovery)\n"
    "  pin unlock TOKEN | pin change TOKEN\n"
    "  secret encrypt --token TOKEN        a code encrypted for the token's \"auth\"\n"
    "Keys and certificates:\n"
    "  key generate TOKEN ALIAS SPEC       rsa:2048|rsa:3072|rsa:4096|ec:P-256|ec:P-384|\n"
    "                                      ec:P-521|ed25519\n"
    "  key list TOKEN | test TOKEN ALIAS | remove TOKEN ALIAS\n"
    "  cert import TOKEN ALIAS FILE | list TOKEN | export TOKEN ALIAS [--out FILE]\n"
    "  ref TOKEN ALIAS                     a key-reference PEM for applications\n"
    "\n"
    "Auth codes never come from the command line: --auth-file FILE, --auth-env VAR, the\n"
    "token's configured \"auth\", or a prompt on the terminal.\n"
    "Config: --config, else $CTOK_CONFIG, else /etc/ctok/tokens.json.\n"
    "Every operation obeys the token's \"permissions\" (view, use, activate, deactivate,\n"
    "modify, delete, keygen, keyremove, keytest).\n"
    "Exit codes: 0 ok, 1 operation failed, 2 usage error.\n";

static const struct {
    const char *group, *verb;
    int (*fn)(struct cli *);
    int nargs;
    const char *help;
} commands[] = {
    {"token", "create", cmd_token_create, 0,
     "token create --type TYPE --name NAME [TYPE'S OPTIONS]\n"
     "  Adds a crypto token with a new unique id. Without --auth-file/--auth-env the code is\n"
     "  asked twice on the terminal and the token asks for it when used ({\"prompt\":true}).\n"
     "  A pkcs12 keystore that does not exist is created; an existing one, or a PKCS#11 slot,\n"
     "  is checked with the code. --pin-cache-fork keeps a code typed at an application's\n"
     "  prompt in its memory, so a forked worker logs in again without asking (every child\n"
     "  then holds the code: a compromised worker has it). Each type's options:"},
    {"token", "list", cmd_token_list, 0, "token list [--json]\n  The tokens you may view."},
    {"token", "show", cmd_token_show, 1,
     "token show TOKEN [--json]\n  The token's configuration (never a stored code)."},
    {"token", "modify", cmd_token_modify, 1,
     "token modify TOKEN [--name NEW] [--allow-export | --no-allow-export]\n"
     "             [--explicit-ecc | --no-explicit-ecc] [--auth-file F | --auth-env V |\n"
     "             --auth-prompt] [--keystore F] [--library L] [--ref-type T] [--ref R]\n"
     "             [--attributes F] [--permissions view,use,...] [--audit-file F]\n"
     "             [--audit-use | --no-audit-use] [--pin-cache-fork | --no-pin-cache-fork]\n"
     "  Any option of the token's type (see "
     "'ctok token create --help').\n  Needs the 'modify' rule."},
    {"token", "delete", cmd_token_delete, 1,
     "token delete TOKEN\n  Removes the token from the config; the keystore or HSM slot is "
     "left as it is.\n  Needs the 'delete' rule."},
    {"token", "activate", cmd_token_activate, 1,
     "token activate TOKEN [--auth-file F | --auth-env V] [--remember]\n"
     "  Checks the code against the token. --remember stores it encrypted under the master\n"
     "  key (created 0600 beside the config if absent): applications then use the token\n"
     "  without asking. Needs the 'activate' rule."},
    {"token", "deactivate", cmd_token_deactivate, 1,
     "token deactivate TOKEN\n  Forgets a stored code: applications ask for it again. Needs "
     "the 'deactivate' rule."},
    {"key", "generate", cmd_key_generate, 3,
     "key generate TOKEN ALIAS rsa:2048|rsa:3072|rsa:4096|ec:P-256|ec:P-384|ec:P-521|ed25519\n"
     "  Needs the 'keygen' rule."},
    {"key", "list", cmd_key_list, 1, "key list TOKEN [--json]\n  Needs the 'view' rule."},
    {"key", "test", cmd_key_test, 2,
     "key test TOKEN ALIAS\n  Signs a random message with the key and verifies it in software."
     "\n  Needs the 'keytest' rule."},
    {"key", "remove", cmd_key_remove, 2,
     "key remove TOKEN ALIAS\n  Removes the key pair and the certificates with its id. Needs "
     "the 'keyremove' rule."},
    {"cert", "import", cmd_cert_import, 3,
     "cert import TOKEN ALIAS FILE\n  A PEM or DER certificate, stored with the id of the key "
     "it certifies.\n  Needs the 'modify' rule."},
    {"cert", "list", cmd_cert_list, 1, "cert list TOKEN [--json]\n  Needs the 'view' rule."},
    {"cert", "export", cmd_cert_export, 2,
     "cert export TOKEN ALIAS [--out FILE]\n  The certificate as PEM. Needs the 'view' rule."},
    {"ref", NULL, cmd_ref, 2,
     "ref TOKEN ALIAS\n  A key-reference PEM (-----BEGIN CTOK URI-----) on stdout: a key file "
     "for nginx,\n  Python ssl or any application that reads PEM keys."},
    {"slots", NULL, cmd_slots, 0,
     "slots [--type TYPE] [--library LIB] | [--token TOKEN] [--json]\n  What a token type offers "
     "(a PKCS#11 "
     "library: every slot with a token: id, index,\n  description, token label, serial, flags), "
     "from that type's options.\n  Without options: every library registered with p11-kit "
     "(its name works as --library).\n  --token: what a configured token's backend offers "
     "(rule view)."},
    {"pin", "unlock", cmd_pin_unlock, 1,
     "pin unlock TOKEN [--puk-file F | --puk-env V] [--auth-file NEW | --auth-env NEW]\n"
     "  Sets a new PIN with the PUK (C_UnlockPIN, else SO login and C_InitPIN)."},
    {"pin", "change", cmd_pin_change, 1,
     "pin change TOKEN [--auth-file OLD | --auth-env OLD] [--new-auth-file F | --new-auth-env "
     "V]\n  Changes the PIN or keystore password. Needs the 'modify' rule."},
    {"secret", "encrypt", cmd_secret_encrypt, 0,
     "secret encrypt --token TOKEN [--auth-file F | --auth-env V]\n"
     "  Prints {\"stored\": ...}: the code encrypted for the token's \"auth\"."},
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
        {"--puk-file", offsetof(struct cli, puk_file)},
        {"--puk-env", offsetof(struct cli, puk_env)},
        {"--new-auth-file", offsetof(struct cli, new_auth_file)},
        {"--new-auth-env", offsetof(struct cli, new_auth_env)},
        {"--audit-file", offsetof(struct cli, audit_file)},
        {"--permissions", offsetof(struct cli, permissions)},
        {"--token", offsetof(struct cli, token)},
        {"--out", offsetof(struct cli, out)},
    };

    c->argv = calloc((size_t)argc + 1, sizeof(char *));
    if (c->argv == NULL)
        return 0;
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        size_t k;

        if (strcmp(a, "--json") == 0) {
            c->json = 1;
            continue;
        }
        {
            static const struct {
                const char *name;
                size_t off;
            } flags[] = {
                {"--allow-export", offsetof(struct cli, allow_export)},
                {"--no-allow-export", offsetof(struct cli, no_allow_export)},
                {"--explicit-ecc", offsetof(struct cli, explicit_ecc)},
                {"--no-explicit-ecc", offsetof(struct cli, no_explicit_ecc)},
                {"--audit-use", offsetof(struct cli, audit_use)},
                {"--no-audit-use", offsetof(struct cli, no_audit_use)},
                {"--pin-cache-fork", offsetof(struct cli, pin_cache_fork)},
                {"--no-pin-cache-fork", offsetof(struct cli, no_pin_cache_fork)},
                {"--auth-prompt", offsetof(struct cli, auth_prompt)},
                {"--remember", offsetof(struct cli, remember)},
            };
            size_t f;

            for (f = 0; f < sizeof(flags) / sizeof(flags[0]); f++)
                if (strcmp(a, flags[f].name) == 0)
                    break;
            if (f < sizeof(flags) / sizeof(flags[0])) {
                *(int *)((char *)c + flags[f].off) = 1;
                continue;
            }
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
            int n = (int)strcspn(a, "="); /* the value may be a secret: never repeated */

            if (strncmp(a, "--pin", 5) == 0 || strncmp(a, "--password", 10) == 0 ||
                strncmp(a, "--auth-code", 11) == 0 || strncmp(a, "--puk", 5) == 0 ||
                strncmp(a, "--secret", 8) == 0) {
                cli_usage("%.*s: auth codes are never taken from the command line; use "
                          "--auth-file or --auth-env",
                          n, a);
                return 0;
            }
            /* a token type's option (--keystore, --library ...): the command checks it */
            if (c->n_opts == (int)(sizeof(c->opts) / sizeof(c->opts[0]))) {
                cli_usage("too many options");
                return 0;
            }
            c->opts[c->n_opts].value = a[n] == '=' ? a + n + 1 : (i + 1 < argc ? argv[++i] : NULL);
            a[n] = '\0'; /* the name ends where "=value" began */
            c->opts[c->n_opts++].name = a + 2;
            continue;
        }
        c->argv[c->argc++] = argv[i];
    }
    return 1;
}

int main(int argc, char **argv)
{
    struct cli c = {0};
    const char *dbg;
    int rc;

    /* the tool holds auth codes in memory: it never leaves a core dump */
    {
        struct rlimit no_core = {0, 0};

        setrlimit(RLIMIT_CORE, &no_core);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    ctok_err_set_sink(cli_err_sink);
    ctok_err_set_forget(cli_err_forget);
    dbg = getenv("CTOK_DEBUG");
    if (dbg != NULL && strcmp(dbg, "0") != 0)
        ctok_debug_on = 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            /* 'ctok key generate --help': that command's help; else all of it */
            for (size_t k = 0; argc > 2 && k < sizeof(commands) / sizeof(commands[0]); k++)
                if (strcmp(argv[1], commands[k].group) == 0 &&
                    (commands[k].verb == NULL ||
                     (argc > 3 && strcmp(argv[2], commands[k].verb) == 0))) {
                    printf("usage: ctok [--config FILE] [--json] %s\n", commands[k].help);
                    if (commands[k].fn == cmd_token_create)
                        cli_token_create_help(stdout);
                    return EXIT_OK;
                }
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
        /* the commands that take a token type's options (its tool fields) */
        if (c.n_opts > 0 && commands[i].fn != cmd_token_create &&
            commands[i].fn != cmd_token_modify && commands[i].fn != cmd_slots) {
            rc = cli_usage("unknown option --%s", c.opts[0].name);
        } else if (c.n_opts > 0 && c.opts[c.n_opts - 1].value == NULL) {
            rc = cli_usage("option --%s needs a value", c.opts[c.n_opts - 1].name);
        } else if (c.argc - words != commands[i].nargs) {
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

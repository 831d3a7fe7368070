/* ctok: crypto token operations (EJBCA's crypto token operations, for OpenSSL 3). */
#include <getopt.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <openssl/crypto.h>

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

void cli_err_take(char *buf, size_t len)
{
    snprintf(buf, len, "%s", first_error[0] ? first_error : "unknown cause");
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
    "       ctok --version\n"
    "\n"
    "Crypto tokens (EJBCA's crypto token operations):\n"
    "  token create --type TYPE --name NAME ...   add a token (new unique id)\n"
    "  token list | show TOKEN | modify TOKEN ... | delete TOKEN\n"
    "  token activate TOKEN [--remember] | deactivate TOKEN\n"
    "  slots [--library LIB] | [--token TOKEN]   the slots of a PKCS#11 library (with their\n"
    "                                      pkcs11: URIs), or of all registered with p11-kit\n"
    "  mechanisms TOKEN                    what a PKCS#11 token offers (pkcs11-tool -M)\n"
    "  pin unlock TOKEN | pin change TOKEN\n"
    "  secret encrypt --token TOKEN        a code encrypted for the token's \"auth\"\n"
    "  audit TOKEN [--since TIME] [--operation OP]   the token's audit trail\n"
    "  doctor                              is ctok loaded by the OpenSSL config, can each\n"
    "                                      token be opened, is its auth source readable\n"
    "Keys and certificates:\n"
    "  key generate TOKEN ALIAS SPEC       SPEC: see 'ctok key generate --help'\n"
    "  key list TOKEN | test TOKEN ALIAS | remove TOKEN ALIAS | rename TOKEN OLD NEW\n"
    "  cert import TOKEN ALIAS FILE [--replace]   a certificate or a chain; --replace: renewal\n"
    "  cert list TOKEN | export TOKEN ALIAS [--out FILE]\n"
    "  cert remove TOKEN LABEL | rename TOKEN OLD NEW\n"
    "  ref TOKEN ALIAS                     a key-reference PEM for applications\n"
    "\n"
    "Every command takes --json (machine-readable output) and --help; '--' ends options.\n"
    "Auth codes never come from the command line: --auth-file FILE, --auth-env VAR, the\n"
    "token's configured \"auth\", or a prompt on the terminal.\n"
    "Config: --config, else $CTOK_CONFIG, else /etc/ctok/tokens.json (the provider: $CTOK_CONFIG,\n"
    "else openssl.cnf's ctok-config, else the same default).\n"
    "Every operation obeys the token's \"permissions\" (view, use, activate, deactivate,\n"
    "modify, delete, keygen, keyremove, keytest).\n"
    "Exit codes: 0 ok, 1 operation failed, 2 usage error.\n";

/* The options the tool knows; each command declares which of them it takes. */
enum {
    O_CONFIG,
    O_JSON,
    O_HELP,
    O_AUTH_FILE,
    O_AUTH_ENV,
    O_TYPE,
    O_NAME,
    O_PUK_FILE,
    O_PUK_ENV,
    O_NEW_AUTH_FILE,
    O_NEW_AUTH_ENV,
    O_AUDIT_FILE,
    O_PERMISSIONS,
    O_TOKEN,
    O_OUT,
    O_ALLOW_EXPORT,
    O_NO_ALLOW_EXPORT,
    O_EXPLICIT_ECC,
    O_NO_EXPLICIT_ECC,
    O_AUDIT_USE,
    O_NO_AUDIT_USE,
    O_AUTH_PROMPT,
    O_REMEMBER,
    O_PIN_CACHE_FORK,
    O_NO_PIN_CACHE_FORK,
    O_REPLACE,
    O_SINCE,
    O_OPERATION,
    O_COUNT
};
#define B(o) (1u << (o))
#define GLOBAL (B(O_CONFIG) | B(O_JSON) | B(O_HELP))
#define AUTH (B(O_AUTH_FILE) | B(O_AUTH_ENV))
/* a command that takes the token types' own options (their tool fields: --keystore ...) */
#define TYPE_OPTS (1u << 31)
/* getopt_long's vals: O_* + OPT_VAL, type option i + TYPE_VAL; clear of what getopt_long returns
 * itself (1 for a positional argument, '?', ':', 'h') */
#define OPT_VAL 128
#define TYPE_VAL 256

static const struct {
    const char *name;
    int has_arg;
    size_t off; /* const char * for a valued option, int for a flag */
} options[O_COUNT] = {
    [O_CONFIG] = {"config", required_argument, offsetof(struct cli, config)},
    [O_JSON] = {"json", no_argument, offsetof(struct cli, json)},
    [O_HELP] = {"help", no_argument, offsetof(struct cli, help)},
    [O_AUTH_FILE] = {"auth-file", required_argument, offsetof(struct cli, auth_file)},
    [O_AUTH_ENV] = {"auth-env", required_argument, offsetof(struct cli, auth_env)},
    [O_TYPE] = {"type", required_argument, offsetof(struct cli, type)},
    [O_NAME] = {"name", required_argument, offsetof(struct cli, name)},
    [O_PUK_FILE] = {"puk-file", required_argument, offsetof(struct cli, puk_file)},
    [O_PUK_ENV] = {"puk-env", required_argument, offsetof(struct cli, puk_env)},
    [O_NEW_AUTH_FILE] = {"new-auth-file", required_argument, offsetof(struct cli, new_auth_file)},
    [O_NEW_AUTH_ENV] = {"new-auth-env", required_argument, offsetof(struct cli, new_auth_env)},
    [O_AUDIT_FILE] = {"audit-file", required_argument, offsetof(struct cli, audit_file)},
    [O_PERMISSIONS] = {"permissions", required_argument, offsetof(struct cli, permissions)},
    [O_TOKEN] = {"token", required_argument, offsetof(struct cli, token)},
    [O_OUT] = {"out", required_argument, offsetof(struct cli, out)},
    [O_ALLOW_EXPORT] = {"allow-export", no_argument, offsetof(struct cli, allow_export)},
    [O_NO_ALLOW_EXPORT] = {"no-allow-export", no_argument, offsetof(struct cli, no_allow_export)},
    [O_EXPLICIT_ECC] = {"explicit-ecc", no_argument, offsetof(struct cli, explicit_ecc)},
    [O_NO_EXPLICIT_ECC] = {"no-explicit-ecc", no_argument, offsetof(struct cli, no_explicit_ecc)},
    [O_AUDIT_USE] = {"audit-use", no_argument, offsetof(struct cli, audit_use)},
    [O_NO_AUDIT_USE] = {"no-audit-use", no_argument, offsetof(struct cli, no_audit_use)},
    [O_AUTH_PROMPT] = {"auth-prompt", no_argument, offsetof(struct cli, auth_prompt)},
    [O_REMEMBER] = {"remember", no_argument, offsetof(struct cli, remember)},
    [O_PIN_CACHE_FORK] = {"pin-cache-fork", no_argument, offsetof(struct cli, pin_cache_fork)},
    [O_NO_PIN_CACHE_FORK] = {"no-pin-cache-fork", no_argument,
                             offsetof(struct cli, no_pin_cache_fork)},
    [O_REPLACE] = {"replace", no_argument, offsetof(struct cli, replace)},
    [O_SINCE] = {"since", required_argument, offsetof(struct cli, since)},
    [O_OPERATION] = {"operation", required_argument, offsetof(struct cli, operation)},
};

struct command {
    const char *group, *verb;
    int (*fn)(struct cli *);
    int nargs;
    unsigned int opts; /* B(O_*) the command takes besides GLOBAL; TYPE_OPTS */
    const char *help;
};

static const struct command commands[] = {
    {"token", "create", cmd_token_create, 0,
     B(O_TYPE) | B(O_NAME) | AUTH | B(O_ALLOW_EXPORT) | B(O_EXPLICIT_ECC) | B(O_PIN_CACHE_FORK) |
         TYPE_OPTS,
     "token create --type TYPE --name NAME [TYPE'S OPTIONS]\n"
     "  Adds a crypto token with a new unique id. Without --auth-file/--auth-env the code is\n"
     "  asked twice on the terminal and the token asks for it when used ({\"prompt\":true}).\n"
     "  A pkcs12 keystore that does not exist is created; an existing one, or a PKCS#11 slot,\n"
     "  is checked with the code. --pin-cache-fork keeps a code typed at an application's\n"
     "  prompt in its memory, so a forked worker logs in again without asking (every child\n"
     "  then holds the code: a compromised worker has it). Each type's options:"},
    {"token", "list", cmd_token_list, 0, 0,
     "token list [--json]\n  The tokens you may view (none yet: an empty list)."},
    {"token", "show", cmd_token_show, 1, 0,
     "token show TOKEN [--json]\n  The token's configuration (never a stored code)."},
    {"token", "modify", cmd_token_modify, 1,
     B(O_NAME) | B(O_ALLOW_EXPORT) | B(O_NO_ALLOW_EXPORT) | B(O_EXPLICIT_ECC) |
         B(O_NO_EXPLICIT_ECC) | AUTH | B(O_AUTH_PROMPT) | B(O_PERMISSIONS) | B(O_AUDIT_FILE) |
         B(O_AUDIT_USE) | B(O_NO_AUDIT_USE) | B(O_PIN_CACHE_FORK) | B(O_NO_PIN_CACHE_FORK) |
         TYPE_OPTS,
     "token modify TOKEN [--name NEW] [--allow-export | --no-allow-export]\n"
     "             [--explicit-ecc | --no-explicit-ecc] [--auth-file F | --auth-env V |\n"
     "             --auth-prompt] [--keystore F] [--library L] [--ref-type T] [--ref R]\n"
     "             [--attributes F] [--permissions view,use,...] [--audit-file F]\n"
     "             [--audit-use | --no-audit-use] [--pin-cache-fork | --no-pin-cache-fork]\n"
     "  Any option of the token's type (see "
     "'ctok token create --help').\n  Needs the 'modify' rule."},
    {"token", "delete", cmd_token_delete, 1, 0,
     "token delete TOKEN\n  Removes the token from the config; the keystore or HSM slot is "
     "left as it is.\n  Needs the 'delete' rule."},
    {"token", "activate", cmd_token_activate, 1, AUTH | B(O_REMEMBER),
     "token activate TOKEN [--auth-file F | --auth-env V] [--remember]\n"
     "  Checks the code against the token. --remember stores it encrypted under the master\n"
     "  key (created 0600 beside the config if absent): applications then use the token\n"
     "  without asking. Needs the 'activate' rule."},
    {"token", "deactivate", cmd_token_deactivate, 1, 0,
     "token deactivate TOKEN\n  Forgets a stored code: applications ask for it again. Needs "
     "the 'deactivate' rule."},
    {"key", "generate", cmd_key_generate, 3, AUTH,
     "key generate TOKEN ALIAS SPEC [--auth-file F | --auth-env V]\n"
     "  Needs the 'keygen' rule. SPEC is one of:"},
    {"key", "list", cmd_key_list, 1, AUTH,
     "key list TOKEN [--auth-file F | --auth-env V] [--json]\n  Each key with its ctok: URI (and "
     "its pkcs11: URI on a PKCS#11 token).\n  Needs the 'view' rule."},
    {"key", "test", cmd_key_test, 2, AUTH,
     "key test TOKEN ALIAS [--auth-file F | --auth-env V]\n  Signs a random message with the key "
     "and verifies it in software.\n  Needs the 'keytest' rule."},
    {"key", "remove", cmd_key_remove, 2, AUTH,
     "key remove TOKEN ALIAS [--auth-file F | --auth-env V]\n  Removes the key pair and the "
     "certificates with its id. Needs the 'keyremove' rule."},
    {"key", "rename", cmd_key_rename, 3, AUTH,
     "key rename TOKEN OLD NEW [--auth-file F | --auth-env V]\n  A new label for the key and "
     "every object with its id (its public key and\n  certificates), the id kept (p11tool "
     "--set-label). Needs the 'modify' rule."},
    {"cert", "import", cmd_cert_import, 3, AUTH | B(O_REPLACE),
     "cert import TOKEN ALIAS FILE [--replace] [--auth-file F | --auth-env V]\n"
     "  A PEM or DER certificate, stored with the id of the key it certifies. A PEM chain:\n"
     "  the leaf (the certificate of a key on the token, else the first) as ALIAS, each CA\n"
     "  certificate as an object of its own, labelled with its subject CN (else ALIAS-caN),\n"
     "  with the id of its key on the token, else its own key identifier (SHA-1 of its\n"
     "  public key); one already there is kept. --replace (renewal): the leaf takes the\n"
     "  place of the certificate ALIAS in one write, the old one stays if it fails.\n"
     "  Needs the 'modify' rule."},
    {"cert", "list", cmd_cert_list, 1, 0,
     "cert list TOKEN [--json]\n  Each certificate with its ctok: URI (and its pkcs11: URI on a "
     "PKCS#11 token).\n  Needs the 'view' rule."},
    {"cert", "export", cmd_cert_export, 2, B(O_OUT),
     "cert export TOKEN ALIAS [--out FILE]\n  The certificate as PEM. Needs the 'view' rule."},
    {"cert", "remove", cmd_cert_remove, 2, AUTH,
     "cert remove TOKEN LABEL [--auth-file F | --auth-env V]\n  Removes the certificates "
     "labelled LABEL, never a key. Needs the 'modify' rule."},
    {"cert", "rename", cmd_cert_rename, 3, AUTH,
     "cert rename TOKEN OLD NEW [--auth-file F | --auth-env V]\n  A new label for the "
     "certificates labelled OLD, the id kept. Needs the 'modify' rule."},
    {"ref", NULL, cmd_ref, 2, 0,
     "ref TOKEN ALIAS\n  A key-reference PEM (-----BEGIN CTOK URI-----) on stdout: a key file "
     "for nginx,\n  Python ssl or any application that reads PEM keys."},
    {"slots", NULL, cmd_slots, 0, B(O_TYPE) | B(O_TOKEN) | TYPE_OPTS,
     "slots [--type TYPE] [--library LIB] | [--token TOKEN] [--json]\n  What a token type offers "
     "(a PKCS#11 library: every slot with a token: id, index,\n  description, token label, "
     "serial, flags, its pkcs11: URI), from that type's options.\n  Without options: every "
     "library registered with p11-kit (its name works as --library).\n  --token: what a "
     "configured token's backend offers (rule view)."},
    {"mechanisms", NULL, cmd_mechanisms, 1, 0,
     "mechanisms TOKEN [--json]\n  The mechanisms a PKCS#11 token offers: name, key sizes and "
     "flags, as\n  'pkcs11-tool -M' lists them. Needs the 'view' rule."},
    {"pin", "unlock", cmd_pin_unlock, 1, B(O_PUK_FILE) | B(O_PUK_ENV) | AUTH,
     "pin unlock TOKEN [--puk-file F | --puk-env V] [--auth-file NEW | --auth-env NEW]\n"
     "  Sets a new PIN with the PUK (C_UnlockPIN, else SO login and C_InitPIN)."},
    {"pin", "change", cmd_pin_change, 1, AUTH | B(O_NEW_AUTH_FILE) | B(O_NEW_AUTH_ENV),
     "pin change TOKEN [--auth-file OLD | --auth-env OLD] [--new-auth-file F | --new-auth-env "
     "V]\n  Changes the PIN or keystore password. Needs the 'modify' rule."},
    {"secret", "encrypt", cmd_secret_encrypt, 0, B(O_TOKEN) | AUTH,
     "secret encrypt --token TOKEN [--auth-file F | --auth-env V]\n"
     "  Prints {\"stored\": ...}: the code encrypted for the token's \"auth\"."},
    {"audit", NULL, cmd_audit, 1, B(O_SINCE) | B(O_OPERATION),
     "audit TOKEN [--since TIME] [--operation OP] [--json]\n"
     "  The token's audit trail (its \"audit_file\") in the order written, one line per\n"
     "  entry: TIME  OPERATION  OBJECT  OUTCOME  PROGRAM[PID]  DETAIL; --json: the entries\n"
     "  as stored. --since 2026-11-29T12:00:00Z (or a date: 2026-11-29): entries from then\n"
     "  on (UTC). --operation OP: only that one. Lines that are not JSON objects are\n"
     "  skipped and counted on stderr. Needs the 'view' rule. OP is one of:"},
    {"doctor", NULL, cmd_doctor, 0, 0,
     "doctor [--json]\n"
     "  For this environment's OpenSSL config (OPENSSL_CONF, else OpenSSL's default file):\n"
     "  which file, are providers ctok and default loaded by it, which tokens config ctok\n"
     "  uses and why (--config, CTOK_CONFIG, the ctok-config parameter, default), and for\n"
     "  each token: can it be opened, can its auth source give a code (never shown).\n"
     "  Exit 0: no problem; 1: each problem found is one line naming what and why."},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void command_help(FILE *out, const struct command *cmd)
{
    fprintf(out, "usage: ctok [--config FILE] [--json] %s\n", cmd->help);
    if (cmd->fn == cmd_token_create)
        cli_token_create_help(out);
    if (cmd->fn == cmd_key_generate)
        fprintf(out, "  %s\n", ctok_keyspec_accepted());
    if (cmd->fn == cmd_audit) { /* the names, within 80 columns */
        int col = 0;

        for (const char *const *k = ctok_audit_operations; *k != NULL; k++) {
            if (col + (int)strlen(*k) + 2 > 78) {
                fputc('\n', out);
                col = 0;
            }
            col += fprintf(out, "%s%s%s", col == 0 ? "  " : " ", *k, k[1] != NULL ? "," : "\n");
        }
    }
}

/* 'ctok token': the usage lines of the group's commands. */
static void group_help(FILE *out, const char *group)
{
    fprintf(out, "usage:\n");
    for (size_t k = 0; k < N_COMMANDS; k++)
        if (strcmp(commands[k].group, group) == 0)
            fprintf(out, "  ctok %.*s\n", (int)strcspn(commands[k].help, "\n"), commands[k].help);
    fprintf(out, "'ctok %s COMMAND --help' for details\n", group);
}

/* A name getopt_long would take for an option (an unknown one is a prefix of nothing). */
static int is_option(const char *a)
{
    return a[0] == '-' && a[1] != '\0';
}

/*
 * The command the words name: options and their values before and between the words are
 * skipped (global ones: --config FILE). *words: how many words it takes (1 or 2); NULL with
 * *rc set when there is none.
 */
static const struct command *find_command(int argc, char **argv, int *words, int *rc)
{
    const char *w[2] = {NULL, NULL};
    int n = 0, help = 0, version = 0, group = 0;

    for (int i = 1; i < argc && n < 2; i++) {
        if (strcmp(argv[i], "--") == 0) {
            for (i++; i < argc && n < 2; i++)
                w[n++] = argv[i];
            break;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            help = 1;
        else if (strcmp(argv[i], "--version") == 0)
            version = 1;
        else if (strcmp(argv[i], "--config") == 0)
            i++;
        else if (!is_option(argv[i]))
            w[n++] = argv[i];
        else if (n > 0)
            break; /* a command's own option: its verb came first */
    }
    *rc = EXIT_USAGE;
    if (w[0] == NULL) {
        if (version) {
            printf("ctok %s (OpenSSL %s)\n", CTOK_VERSION, OpenSSL_version(OPENSSL_VERSION_STRING));
            *rc = EXIT_OK;
        } else if (help) {
            printf("ctok %s: crypto tokens for OpenSSL 3\n", CTOK_VERSION);
            fputs(usage, stdout);
            *rc = EXIT_OK;
        } else {
            cli_usage("missing command");
        }
        return NULL;
    }
    for (size_t k = 0; k < N_COMMANDS; k++) {
        if (strcmp(w[0], commands[k].group) != 0)
            continue;
        group = 1;
        *words = commands[k].verb == NULL ? 1 : 2;
        if (commands[k].verb == NULL || (w[1] != NULL && strcmp(w[1], commands[k].verb) == 0))
            return &commands[k];
    }
    if (group) {
        /* the group alone ('ctok token'): its help; asked for, or a usage error */
        if (w[1] == NULL && help) {
            group_help(stdout, w[0]);
            *rc = EXIT_OK;
            return NULL;
        }
        if (w[1] != NULL) { /* one line, as every usage error */
            char verbs[128];
            size_t o = 0;

            verbs[0] = '\0';
            for (size_t k = 0; k < N_COMMANDS && o < sizeof(verbs); k++)
                if (strcmp(commands[k].group, w[0]) == 0)
                    o += (size_t)snprintf(verbs + o, sizeof(verbs) - o, "%s%s", o ? ", " : "",
                                          commands[k].verb);
            cli_usage("unknown command '%s %s' (%s commands: %s)", w[0], w[1], w[0], verbs);
            return NULL;
        }
        fprintf(stderr, "ctok: '%s' needs a command\n", w[0]);
        group_help(stderr, w[0]);
        return NULL;
    }
    cli_usage("unknown command '%s'", w[0]);
    return NULL;
}

/* The getopt_long table of cmd: its options, then every token type's tool fields it takes
 * (val TYPE_VAL + i: entry i of the table), each name once. */
static struct option *option_table(const struct command *cmd)
{
    struct option *t = calloc(O_COUNT + 64 + 1, sizeof(*t));
    char types[256];
    int n = 0;

    if (t == NULL)
        return NULL;
    for (int o = 0; o < O_COUNT; o++)
        if ((GLOBAL | cmd->opts) & B(o))
            t[n++] = (struct option){options[o].name, options[o].has_arg, NULL, OPT_VAL + o};
    if (!(cmd->opts & TYPE_OPTS))
        return t;
    snprintf(types, sizeof(types), "%s", ctok_type_names());
    for (char *save = NULL, *ty = strtok_r(types, ", ", &save); ty != NULL;
         ty = strtok_r(NULL, ", ", &save))
        for (const struct ctok_tool_field *f = ctok_type_fields(ty); f != NULL && f->option; f++) {
            int k;

            for (k = 0; k < n && strcmp(t[k].name, f->option) != 0; k++)
                ;
            if (k == n && n < O_COUNT + 64) {
                t[n] = (struct option){f->option, required_argument, NULL, TYPE_VAL + n};
                n++;
            }
        }
    return t;
}

/* An option cmd does not take (named without a value given with '=': it may be a secret). */
static int bad_option(const struct command *cmd, const char *a)
{
    int n = (int)strcspn(a, "=");

    if (strncmp(a, "--pin", 5) == 0 || strncmp(a, "--password", 10) == 0 ||
        strncmp(a, "--auth-code", 11) == 0 || strncmp(a, "--puk", 5) == 0 ||
        strncmp(a, "--secret", 8) == 0)
        return cli_usage("%.*s: auth codes are never taken from the command line; use "
                         "--auth-file or --auth-env",
                         n, a);
    if (a[n] == '=' && optopt != 0)
        return cli_usage("option %.*s takes no value", n, a);
    return cli_usage("'%s%s%s' takes no option %.*s", cmd->group, cmd->verb ? " " : "",
                     cmd->verb ? cmd->verb : "", n, a);
}

/*
 * getopt_long takes a unique prefix of an option for the option: '--pin SECRET' would be
 * '--pin-cache-fork' and a positional SECRET. Every long option must be spelled whole.
 */
static int exact_options(const struct command *cmd, const struct option *t, int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *a = argv[i];
        size_t n = strcspn(a, "=");
        const struct option *f = NULL;

        if (strncmp(a, "--", 2) != 0)
            continue;
        for (const struct option *o = t; o->name != NULL && f == NULL; o++)
            if (strlen(o->name) == n - 2 && strncmp(o->name, a + 2, n - 2) == 0)
                f = o;
        if (f == NULL) {
            optopt = 0; /* not "takes no value": an option this command does not know */
            return bad_option(cmd, a);
        }
        if (f->has_arg == required_argument && a[n] != '=')
            i++; /* its value, whatever it looks like */
    }
    return EXIT_OK;
}

/* Parses argv for cmd: options set in c, positional arguments (after the command words) in
 * c->argv. EXIT_OK, or a usage error's exit code. */
static int parse_options(struct cli *c, const struct command *cmd, int words, int argc, char **argv,
                         char **pos)
{
    struct option *t = option_table(cmd);
    int o, n = 0, rc = EXIT_OK;

    if (t == NULL)
        return EXIT_FAILED;
    opterr = 0;
    optind = 1;
    rc = exact_options(cmd, t, argc, argv);
    while (rc == EXIT_OK && (o = getopt_long(argc, argv, "-:h", t, NULL)) != -1) {
        /* "-": positional arguments in order, options anywhere, whatever POSIXLY_CORRECT says */
        if (o == 1) {
            pos[n++] = optarg;
        } else if (o == '?') {
            rc = bad_option(cmd, argv[optind - 1]);
        } else if (o == 'h') {
            c->help = 1;
        } else if (o == ':') {
            rc = cli_usage("option %.*s needs a value", (int)strcspn(argv[optind - 1], "="),
                           argv[optind - 1]);
        } else if (o >= TYPE_VAL) {
            if (c->n_opts == (int)(sizeof(c->opts) / sizeof(c->opts[0]))) {
                rc = cli_usage("too many options");
                break;
            }
            c->opts[c->n_opts].name = t[o - TYPE_VAL].name;
            c->opts[c->n_opts++].value = optarg;
        } else if (options[o - OPT_VAL].has_arg) {
            *(const char **)((char *)c + options[o - OPT_VAL].off) = optarg;
        } else {
            *(int *)((char *)c + options[o - OPT_VAL].off) = 1;
        }
    }
    free(t);
    if (rc != EXIT_OK)
        return rc;
    while (optind < argc) /* after "--" */
        pos[n++] = argv[optind++];
    c->argv = pos + words; /* the command words came first */
    c->argc = n - words;
    return EXIT_OK;
}

/* The command with what parse_options found. */
static int run(struct cli *c, const struct command *cmd)
{
    int rc;

    if (c->help) {
        command_help(stdout, cmd);
        return EXIT_OK;
    }
    if (c->argc != cmd->nargs)
        return cli_usage("'%s%s%s' takes %d argument(s), got %d", cmd->group, cmd->verb ? " " : "",
                         cmd->verb ? cmd->verb : "", cmd->nargs, c->argc);
    c->ctx = ctok_ctx_new(NULL, NULL, c->config);
    rc = c->ctx == NULL ? EXIT_FAILED : cmd->fn(c);
    ctok_ctx_free(c->ctx);
    return rc;
}

int main(int argc, char **argv)
{
    struct cli c = {0};
    const struct command *cmd;
    const char *dbg;
    char **pos;
    int rc, words = 0;

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
    if ((cmd = find_command(argc, argv, &words, &rc)) == NULL)
        return rc;
    if ((pos = calloc((size_t)argc + 1, sizeof(*pos))) == NULL)
        return EXIT_FAILED;
    rc = parse_options(&c, cmd, words, argc, argv, pos);
    if (rc == EXIT_OK)
        rc = run(&c, cmd);
    free(pos);
    return rc;
}

/* The ctok tool: crypto token operations on the token API. */
#ifndef CTOK_CLI_H
#define CTOK_CLI_H

#include <stdio.h>
#include <jansson.h>

#include "../store/token.h"

/* exit codes */
#define EXIT_OK 0
#define EXIT_FAILED 1
#define EXIT_USAGE 2

struct cli {
    int argc; /* positional arguments after the command words */
    char **argv;
    int json, help;
    const char *config;
    const char *auth_file;
    const char *auth_env;
    const char *type, *name;
    /* --OPTION VALUE the tool does not know itself: a token type's fields (token create,
     * token modify, slots), checked against the type's tool fields */
    struct cli_opt {
        const char *name; /* without "--" */
        const char *value;
    } opts[32];
    int n_opts;
    const char *puk_file, *puk_env;
    const char *new_auth_file, *new_auth_env, *audit_file, *permissions, *token, *out;
    int no_allow_export, no_explicit_ecc, audit_use, no_audit_use, auth_prompt, remember;
    int allow_export, explicit_ecc, pin_cache_fork, no_pin_cache_fork;
    int replace;                   /* cert import --replace */
    const char *since, *operation; /* audit */
    ctok_ctx *ctx;
};

int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_fail(void);
/* The first error raised since the last take (or "unknown cause"), then forgotten. */
void cli_err_take(char *buf, size_t len);
/* An absolute path (the config outlives the working directory); NULL on failure. */
char *cli_absolute(const char *p);
/*
 * The token, if it permits the rule (ctok_token_authorize). The token layer checks every rule
 * itself: call this only to refuse before asking for a code or logging in.
 */
ctok_token *cli_permitted(struct cli *c, const char *name, enum ctok_perm perm,
                          const char *operation);
/* Loads the config and finds token name; raises errors. */
ctok_token *cli_token(struct cli *c, const char *name);
/* Activates tok with --auth-file/--auth-env, else its config, else a prompt. */
int cli_login(struct cli *c, ctok_token *tok);
/* Reads a new auth code: --auth-file, --auth-env, or a prompt entered twice. */
int cli_read_new_code(struct cli *c, const char *tokname, char *buf, size_t bufsz, size_t *len);
/* Reads the auth file as the provider will (ctok_auth_file_read: owner, mode, no symbolic
 * link, safe folders) and refuses it with the provider's error line; the code is discarded. */
int cli_auth_file_check(const char *tokname, const char *path);
int cli_prompt(const char *prompt, char *buf, size_t bufsz, size_t *len);
/* A secret from a file, an environment variable or the terminal (what names it). */
int cli_read_secret(const char *file, const char *env, const char *what, char *buf, size_t bufsz,
                    size_t *len);
void cli_print_json(json_t *j);
/* "ctok:token=T;object=L;type=TYPE", percent-encoded in full (malloc'd; NULL: error raised). */
char *cli_object_uri(const char *token, const char *label, const char *type);
/* token_uri (a token's pkcs11: URI) with the object's id, label and type (private, cert). */
char *cli_pkcs11_object_uri(const char *token_uri, const char *label, const uint8_t *id,
                            size_t id_len, const char *type);
/* Sets o's "uri" (ctok:) and, given token_uri, "pkcs11_uri" of an object (type: private,
 * cert), as key list and cert list show them; cli_print_uris prints them under its row. */
void cli_add_uris(json_t *o, const char *token, const char *token_uri, const char *label,
                  const uint8_t *id, size_t id_len, const char *type);
void cli_print_uris(const json_t *o);
/* What a command did: j (taken) with --json, else the line fmt says. EXIT_OK. */
int cli_report(struct cli *c, json_t *j, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/*
 * Sets the config fields of a token type from the type options given (--keystore FILE, ...):
 * each must be one of the type's tool fields, paths are made absolute, and for a new entry
 * (create) the required ones must be given and defaults are written. The number of fields
 * set, or -1 after a usage error.
 */
int cli_type_options(struct cli *c, const char *type, json_t *e, int create);
/* The `token create` usage lines of every token type, from their tool fields. */
void cli_token_create_help(FILE *out);

/*
 * A spinner on stderr while a slow operation runs (key generation, a keystore rewrite, whose
 * PBKDF2 takes its time): only when stderr is a terminal and not with --json; erased by
 * cli_progress_end. Begin it after every prompt: it would draw over one. NULL: no spinner.
 */
struct cli_progress *cli_progress_begin(struct cli *c, const char *what);
void cli_progress_end(struct cli_progress *p);

int cmd_token_create(struct cli *c);
int cmd_slots(struct cli *c);
int cmd_pin_unlock(struct cli *c);
int cmd_token_list(struct cli *c);
int cmd_key_generate(struct cli *c);
int cmd_key_list(struct cli *c);
int cmd_key_test(struct cli *c);
int cmd_key_remove(struct cli *c);
int cmd_cert_import(struct cli *c);
int cmd_ref(struct cli *c);
int cmd_token_show(struct cli *c);
int cmd_token_modify(struct cli *c);
int cmd_token_delete(struct cli *c);
int cmd_token_activate(struct cli *c);
int cmd_token_deactivate(struct cli *c);
int cmd_pin_change(struct cli *c);
int cmd_secret_encrypt(struct cli *c);
int cmd_cert_list(struct cli *c);
int cmd_cert_export(struct cli *c);
int cmd_cert_remove(struct cli *c);
int cmd_cert_rename(struct cli *c);
int cmd_key_rename(struct cli *c);
int cmd_mechanisms(struct cli *c);
int cmd_doctor(struct cli *c);
int cmd_audit(struct cli *c);
/* The operations audit lines name, for help and errors: "activate, deactivate, ...". */
const char *cli_audit_operation_names(void);

#endif

/*
 * An Azure Key Vault token's config entry (kms/azure_kv.c's az_configure, with kms/conf.c's
 * field checks and ctok_az_new of kms/aad.c): the input is the entry, a JSON object; the
 * harness names it "az", types it azurekv, puts it after a pkcs12 token "fuzz" (an EC key and
 * its certificate) and loads the config through ctok_ctx_load as every process does.
 * A loaded entry is checked: the vault URL the backend keeps is the one configured (from
 * vault_name, or vault_url cut at '?' or '#' without trailing '/'), https, and the scope
 * follows the host. An entry with auth_method certificate is logged in, which resolves
 * "binding" (a ctok: URI, found certificate-first): only the token "fuzz" can be named and
 * its key is EC, so the login must fail before any network call (certificate auth signs
 * PS256). Fields that make the token layer read or write files (auth, audit) are dropped.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>

#include "fuzz_common.h"
#include "../../kms/azkv.h"
#include "../../store/token.h"

static const char *path, *keystore, *pin;

/* What vault URL the entry configures, or NULL if it names none (left to the backend). */
static char *expected_url(const json_t *entry)
{
    const char *name = json_string_value(json_object_get(entry, "vault_name"));
    const char *url = json_string_value(json_object_get(entry, "vault_url"));
    char *e = NULL;
    size_t n;

    if (name != NULL) {
        if (asprintf(&e, "https://%s.vault.azure.net", name) < 0)
            fuzz_die("out of memory");
        return e;
    }
    if (url == NULL)
        return NULL;
    n = strcspn(url, "?#");
    while (n > 8 && url[n - 1] == '/')
        n--;
    if ((e = strndup(url, n)) == NULL)
        fuzz_die("out of memory");
    return e;
}

static void check(ctok_ctx *ctx, const json_t *entry)
{
    ctok_token *tok = ctok_ctx_token_find(ctx, "az", NULL);
    struct az_tok *kt;
    char *want = expected_url(entry);
    const char *got;

    if (tok == NULL || strcmp(ctok_token_type(tok), "azurekv") != 0 || (kt = KT(tok)) == NULL)
        abort();
    got = kt->c.vault_url;
    /* the vault the calls go to is the configured one, in full */
    if (got == NULL || want == NULL || strcmp(got, want) != 0 || strncmp(got, "https://", 8) != 0)
        abort();
    if ((strstr(got, ".managedhsm.") != NULL) !=
        (strcmp(kt->c.scope, "https://managedhsm.azure.net/.default") == 0))
        abort();
    if (kt->c.timeout_ms < 100 || kt->c.timeout_ms > 600000 || kt->c.max_retries < 0 ||
        kt->c.max_retries > 10)
        abort();
    if (kt->c.auth == CTOK_AZ_CERTIFICATE) {
        if (kt->binding == NULL || kt->az != NULL)
            abort();
        /* the binding can only be the EC key of "fuzz" (or nothing): refused, no network */
        if (ctok_token_login(tok, NULL, NULL) > 0 || kt->az != NULL)
            abort();
    } else if (kt->az == NULL || kt->binding != NULL) {
        abort();
    }
    free(want);
}

/* 1 if the entry loads, 0 if not, -1 if the input is no JSON object. */
static int load(const uint8_t *data, size_t len)
{
    json_t *entry = json_loadb((const char *)data, len, 0, NULL), *conf = NULL;
    ctok_ctx *ctx;
    char *text;
    int ok;

    if (!json_is_object(entry)) {
        json_decref(entry);
        return -1;
    }
    json_object_del(entry, "auth");
    json_object_del(entry, "audit_file");
    json_object_del(entry, "audit_use");
    if (json_object_set_new(entry, "name", json_string("az")) != 0 ||
        json_object_set_new(entry, "type", json_string("azurekv")) != 0 ||
        (conf = json_pack("{s:[{s:s,s:s,s:s,s:{s:s}},O]}", "tokens", "name", "fuzz", "type",
                          "pkcs12", "keystore", keystore, "auth", "file", pin, entry)) == NULL ||
        (text = json_dumps(conf, JSON_COMPACT)) == NULL)
        fuzz_die("cannot make the config");
    fuzz_write(path, (const uint8_t *)text, strlen(text));
    free(text);
    if ((ctx = ctok_ctx_new(NULL, NULL, path)) == NULL)
        fuzz_die("ctok_ctx_new");
    ok = ctok_ctx_load(ctx);
    if (ok)
        check(ctx, entry);
    ctok_ctx_free(ctx);
    json_decref(conf);
    json_decref(entry);
    ERR_clear_error();
    return ok;
}

void fuzz_init(void)
{
    static const char valid[] =
        "{\"vault_url\": \"https://v.vault.azure.net/\", \"tenant_id\": \"t\", "
        "\"client_id\": \"c\", \"auth_method\": \"certificate\", "
        "\"binding\": \"ctok:token=fuzz;object=key\"}";

    path = fuzz_path("tokens.json");
    keystore = fuzz_path("fuzz.p12");
    pin = fuzz_path("fuzz.pin");
    fuzz_make_keystore(keystore);
    fuzz_write(pin, (const uint8_t *)FUZZ_PIN, strlen(FUZZ_PIN));
    if (load((const uint8_t *)valid, strlen(valid)) != 1)
        fuzz_die("a valid azurekv entry does not load: the target would fuzz nothing");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    (void)load(data, len);
    return 0;
}

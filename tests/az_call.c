/*
 * ctok_az_call from the command line, for tests/test_akv_call.py:
 *   az_call [--loop N] [--threads T] [--sleep-ms MS] [--fork] CONFIG METHOD PATH [BODY [OBJECT]]
 * CONFIG is a JSON file with the fields of struct ctok_az_conf (tokname, vault_url, scope,
 * tenant_id, client_id, auth "secret"|"certificate"|"managed_identity", login_url,
 * mi_endpoint, api_version, ca_file, timeout_ms, max_retries), secret_file (the client
 * secret; never on the command line) and, for certificate auth, key_file and cert_file (PEM):
 * the driver signs the client assertion with that key as a backend signs with its binding.
 * BODY "-" or absent: no body. Each of T threads makes N calls after one login; --fork as in
 * aws_call (child calls: $AZ_CALL_CHILD_LOOPS). Prints the last response, "calls=... ok=...
 * failed=... ms=..." and "tokens=<token requests>"; every error as "error: <reason>: <message>
 * [code '<service code>']" on stderr. Exit 0 if every call succeeded.
 *   az_call --parse-error < body   prints "code|message" (ctok_az_parse_error)
 *   az_call --parse-token < body   prints "ok <expires_in> <token length>" or "refused: why"
 */
#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "call_driver.h"
#include "../kms/azint.h"
#include "../store/err.h"
#include "../store/token.h"

static struct ctok_az *az;
static const char *method, *path, *object;
static json_t *body;

static int az_call(json_t **out)
{
    return ctok_az_call(az, method, path, object, body, out);
}

/* PS256 with the key file, as the binding key would sign through the token layer */
static int sign_ps256(void *arg, const uint8_t *data, size_t len, uint8_t *sig, size_t *siglen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL;
    int ok = md != NULL && EVP_DigestSignInit(md, &pc, EVP_sha256(), NULL, arg) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, 32) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pc, EVP_sha256()) == 1 &&
             EVP_DigestSign(md, sig, siglen, data, len) == 1;

    EVP_MD_CTX_free(md);
    if (!ok)
        CTOK_ERR(CTOK_R_BACKEND, "az_call: the assertion signature failed");
    return ok;
}

static int set_secret(const char *secret, size_t len)
{
    return ctok_az_set_secret(az, secret, len);
}

/* The parsers alone, on stdin: no network, no client. */
static int parse_only(const char *what)
{
    static char in[65536];
    size_t n = fread(in, 1, sizeof(in), stdin);

    if (strcmp(what, "--parse-error") == 0) {
        char code[CTOK_CLOUD_TYPE_MAX], msg[CTOK_CLOUD_MSG_MAX];

        ctok_az_parse_error(in, n, code, sizeof(code), msg, sizeof(msg));
        printf("%s|%s\n", code, msg);
        return 0;
    } else {
        char *tok, why[200];
        long exp;

        if (!ctok_az_parse_token(in, n, &tok, &exp, why, sizeof(why))) {
            printf("refused: %s\n", why);
            return 1;
        }
        printf("ok %ld %zu\n", exp, strlen(tok));
        OPENSSL_clear_free(tok, strlen(tok));
        return 0;
    }
}

static enum ctok_az_auth auth_of(const char *s)
{
    if (s != NULL && strcmp(s, "certificate") == 0)
        return CTOK_AZ_CERTIFICATE;
    if (s != NULL && strcmp(s, "managed_identity") == 0)
        return CTOK_AZ_MANAGED_IDENTITY;
    return s == NULL || strcmp(s, "secret") == 0 ? CTOK_AZ_SECRET : 0;
}

/* certificate auth: the key and the certificate's DER */
static int load_binding(json_t *conf, EVP_PKEY **key, uint8_t **der, int *der_len)
{
    FILE *kf = str(conf, "key_file") ? fopen(str(conf, "key_file"), "r") : NULL;
    FILE *cf = str(conf, "cert_file") ? fopen(str(conf, "cert_file"), "r") : NULL;
    X509 *x = cf != NULL ? PEM_read_X509(cf, NULL, NULL, NULL) : NULL;

    *key = kf != NULL ? PEM_read_PrivateKey(kf, NULL, NULL, NULL) : NULL;
    *der = NULL;
    *der_len = x != NULL ? i2d_X509(x, der) : 0;
    if (kf)
        fclose(kf);
    if (cf)
        fclose(cf);
    X509_free(x);
    return *key != NULL && *der_len > 0;
}

int main(int argc, char **argv)
{
    int i = 1, rc = 1, der_len = 0;
    EVP_PKEY *key = NULL;
    uint8_t *der = NULL;
    json_t *conf;

    driver_code = ctok_az_last_error_code;
    driver_code_label = "code";
    ctok_err_set_sink(driver_sink);
    if (argc == 2 &&
        (strcmp(argv[1], "--parse-error") == 0 || strcmp(argv[1], "--parse-token") == 0))
        return parse_only(argv[1]);
    {
        const char *dbg = getenv("CTOK_DEBUG");

        ctok_debug_on = dbg != NULL && strcmp(dbg, "1") == 0;
    }
    if (!driver_options(argc, argv, &i) || argc - i < 3 || argc - i > 5) {
        fprintf(stderr, "usage: az_call [--loop N] [--threads T] [--sleep-ms MS] [--fork] "
                        "CONFIG METHOD PATH [BODY [OBJECT]]\n");
        return 2;
    }
    if ((conf = json_load_file(argv[i], 0, NULL)) == NULL ||
        (argc - i >= 4 && strcmp(argv[i + 3], "-") != 0 &&
         (body = json_loads(argv[i + 3], 0, NULL)) == NULL)) {
        fprintf(stderr, "az_call: bad CONFIG or BODY\n");
        return 2;
    }
    method = argv[i + 1];
    path = argv[i + 2];
    object = argc - i == 5 ? argv[i + 4] : NULL;
    struct ctok_az_conf c = {
        .tokname = str(conf, "tokname"),
        .vault_url = str(conf, "vault_url"),
        .scope = str(conf, "scope"),
        .tenant_id = str(conf, "tenant_id"),
        .client_id = str(conf, "client_id"),
        .auth = auth_of(str(conf, "auth")),
        .login_url = str(conf, "login_url"),
        .mi_endpoint = str(conf, "mi_endpoint"),
        .api_version = str(conf, "api_version"),
        .ca_file = str(conf, "ca_file"),
        .timeout_ms = driver_int(conf, "timeout_ms", 0),
        .max_retries = (int)driver_int(conf, "max_retries", -1),
    };
    if (c.auth == CTOK_AZ_CERTIFICATE) {
        if (!load_binding(conf, &key, &der, &der_len)) {
            fprintf(stderr, "az_call: bad key_file or cert_file\n");
            return 2;
        }
        c.cert_der = der;
        c.cert_der_len = (size_t)der_len;
        c.sign = sign_ps256;
        c.sign_arg = key;
    }
    if ((az = ctok_az_new(&c)) != NULL && driver_secret(conf, set_secret) && ctok_az_login(az)) {
        driver_call = az_call;
        rc = driver_main("AZ_CALL_CHILD_LOOPS");
    }
    if (az != NULL)
        printf("tokens=%lu\n", ctok_az_token_requests(az));
    if (az != NULL)
        ctok_az_logout(az);
    ctok_az_free(az);
    EVP_PKEY_free(key);
    OPENSSL_free(der);
    json_decref(body);
    json_decref(conf);
    return rc;
}

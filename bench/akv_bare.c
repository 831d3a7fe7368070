/*
 * ctok-bench-akv-bare: the Azure Key Vault limit of BENCHMARKS.md. Gets one access token from
 * Azure AD (client credentials with a client secret), reads the key's current version
 * (GET /keys/<name>/), then sends the same sign request ctok sends (POST <kid>/sign
 * {alg, value: base64url(SHA-256 digest)} with the bearer token) from N threads, each over
 * its own kept-alive libcurl connection, for S seconds; no OpenSSL provider, no token layer,
 * no JSON parsing beyond checking for the signature. Prints the line of timed_run.c with
 * p50_us/p99_us.
 *
 * The client secret is read from a file (--secret-file), never from argv; secret and access
 * token are zeroized at exit.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "curl_loop.h"
#include "timed_run.h"

#define MAX_THREADS 64
#define PROG "ctok-bench-akv-bare"

static const char *vault_url, *authority, *tenant, *client_id, *ca_file, *key_name;
static const char *alg = "ES256", *api_version = "7.4", *scope = "https://vault.azure.net/.default";
static char secret[512], bearer[8192], sign_url[1024];
/* a SHA-256 digest, base64url: the sign body ctok sends for a 32-byte digest */
static char body[256];

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " --vault-url URL --authority URL --tenant ID --client-id ID\n"
               "         --secret-file FILE --ca-file PEM --key NAME [--alg ES256|RS256|...]\n"
               "         [--api-version V] [--scope S] [--threads N] [--seconds S]\n"
               "  prints: ops_per_sec=<f> threads=<n> sigs=<n> cpu_s=<f> p50_us=<f> p99_us=<f>\n");
}

static int sign_once(CURL *h, struct bench_buf *resp)
{
    struct curl_slist *lines = NULL;
    int ok;

    lines = curl_slist_append(lines, "Content-Type: application/json");
    lines = curl_slist_append(lines, bearer);
    lines = curl_slist_append(lines, "Expect:");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, lines);
    ok = bench_perform(h, resp, PROG, "\"value\"");
    curl_slist_free_all(lines);
    return ok;
}

/* One request outside the timed loop (token, key); the parsed JSON response or NULL. */
static json_t *request(const char *url, const char *post, const char *auth)
{
    static struct bench_buf resp;
    struct curl_slist *lines = NULL;
    CURL *h = curl_easy_init();
    json_t *j = NULL;

    if (h == NULL)
        return NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CAINFO, ca_file);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, bench_collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    if (post != NULL)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
    if (auth != NULL) {
        lines = curl_slist_append(lines, auth);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, lines);
    }
    if (bench_perform(h, &resp, PROG, "{"))
        j = json_loads(resp.data, 0, NULL);
    OPENSSL_cleanse(resp.data, sizeof(resp.data));
    curl_slist_free_all(lines);
    curl_easy_cleanup(h);
    return j;
}

/* The bearer header from Azure AD; the sign URL from the key's current kid. */
static int prepare(void)
{
    char url[1024], *form = NULL, *e_secret, *e_client, *e_scope;
    json_t *tok, *key;
    const char *at, *kid;
    int ok = 0;

    e_secret = curl_easy_escape(NULL, secret, 0);
    e_client = curl_easy_escape(NULL, client_id, 0);
    e_scope = curl_easy_escape(NULL, scope, 0);
    if (e_secret != NULL && e_client != NULL && e_scope != NULL) {
        size_t n = strlen(e_secret) + strlen(e_client) + strlen(e_scope) + 100;

        form = malloc(n);
        if (form != NULL)
            snprintf(form, n,
                     "grant_type=client_credentials&client_id=%s&scope=%s&client_secret=%s",
                     e_client, e_scope, e_secret);
    }
    if (e_secret != NULL)
        OPENSSL_cleanse(e_secret, strlen(e_secret));
    curl_free(e_secret);
    curl_free(e_client);
    curl_free(e_scope);
    if (form == NULL)
        return 0;
    snprintf(url, sizeof(url), "%s/%s/oauth2/v2.0/token", authority, tenant);
    tok = request(url, form, NULL);
    OPENSSL_cleanse(form, strlen(form));
    free(form);
    at = json_string_value(json_object_get(tok, "access_token"));
    if (at == NULL ||
        snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s", at) >= (int)sizeof(bearer)) {
        fprintf(stderr, PROG ": no access token from %s\n", url);
    } else {
        snprintf(url, sizeof(url), "%s/keys/%s/?api-version=%s", vault_url, key_name, api_version);
        key = request(url, NULL, bearer);
        kid = json_string_value(json_object_get(json_object_get(key, "key"), "kid"));
        if (kid == NULL)
            fprintf(stderr, PROG ": no key %s in %s\n", key_name, vault_url);
        else
            ok = snprintf(sign_url, sizeof(sign_url), "%s/sign?api-version=%s", kid, api_version) <
                 (int)sizeof(sign_url);
        json_decref(key);
    }
    if (at != NULL)
        OPENSSL_cleanse((char *)at, strlen(at));
    json_decref(tok);
    return ok;
}

int main(int argc, char **argv)
{
    const char *secret_file = NULL;
    int nthreads = 1, i, rc = 2;
    double seconds = 2.0;
    void *args[MAX_THREADS] = {0};
    struct bench_curl_conf conf = {PROG, sign_url, NULL, body, sign_once};

    for (i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];

        if (strcmp(a, "--vault-url") == 0)
            vault_url = v;
        else if (strcmp(a, "--authority") == 0)
            authority = v;
        else if (strcmp(a, "--tenant") == 0)
            tenant = v;
        else if (strcmp(a, "--client-id") == 0)
            client_id = v;
        else if (strcmp(a, "--secret-file") == 0)
            secret_file = v;
        else if (strcmp(a, "--ca-file") == 0)
            ca_file = v;
        else if (strcmp(a, "--key") == 0)
            key_name = v;
        else if (strcmp(a, "--alg") == 0)
            alg = v;
        else if (strcmp(a, "--api-version") == 0)
            api_version = v;
        else if (strcmp(a, "--scope") == 0)
            scope = v;
        else if (strcmp(a, "--threads") == 0)
            nthreads = atoi(v);
        else if (strcmp(a, "--seconds") == 0)
            seconds = strtod(v, NULL);
        else
            break;
    }
    if (i != argc || vault_url == NULL || authority == NULL || tenant == NULL ||
        client_id == NULL || secret_file == NULL || ca_file == NULL || key_name == NULL ||
        nthreads < 1 || nthreads > MAX_THREADS || !(seconds > 0)) {
        usage(stderr);
        return 2;
    }
    if (!bench_read_secret(secret_file, secret, sizeof(secret)))
        return 2;
    snprintf(body, sizeof(body),
             "{\"alg\":\"%s\",\"value\":\"n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg\"}", alg);
    conf.ca_file = ca_file;
    for (i = 0; i < nthreads; i++)
        args[i] = &conf;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (prepare())
        rc = bench_run(PROG, nthreads, seconds, bench_curl_worker, args);
    curl_global_cleanup();
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(bearer, sizeof(bearer));
    return rc;
}

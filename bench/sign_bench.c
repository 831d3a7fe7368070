/*
 * ctok-bench-sign: signs in a loop on N threads for S seconds of wall time and prints
 * one machine-readable line. The same program measures a key read from a PEM file by
 * the default provider and a ctok: key, so the two numbers differ only in the provider
 * behind the EVP_PKEY (see ../shared/BENCHMARKS.md).
 *
 * Each operation does what an application such as libssl does per signature: a fresh
 * EVP_PKEY_CTX, sign_init, parameters, sign, free. Key loading and the verification of
 * the first signature happen before the clock starts.
 */
/* pthread barriers, clock_gettime, nanosleep under -std=c11 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/store.h>
#include <openssl/ui.h>

#include "timed_run.h"

#define MAX_PROVIDERS 16
#define MAX_THREADS 256
#define SIG_BUF 1024
#define TBS_LEN 32

enum alg { ALG_RSA_PKCS1, ALG_RSA_PSS, ALG_ECDSA, ALG_ED25519 };

static const struct {
    const char *name;
    enum alg alg;
} alg_names[] = {
    {"rsa-pkcs1", ALG_RSA_PKCS1},
    {"rsa-pss", ALG_RSA_PSS},
    {"ecdsa", ALG_ECDSA},
    {"ed25519", ALG_ED25519},
};

struct worker {
    EVP_PKEY *pkey;
    enum alg alg;
};

/* The digest that is signed: any 32 bytes will do, it is a SHA-256 sized input. */
static const unsigned char tbs[TBS_LEN] = {
    0x9f, 0x86, 0xd0, 0x81, 0x88, 0x4c, 0x7d, 0x65, 0x9a, 0x2f, 0xea, 0xa0, 0xc5, 0x5a, 0xd0, 0x15,
    0xa3, 0xbf, 0x4f, 0x1b, 0x2b, 0x0b, 0x82, 0x2c, 0xd1, 0x5d, 0x6c, 0x15, 0xb0, 0xf0, 0x0a, 0x08,
};

static void usage(FILE *f)
{
    fprintf(f, "usage: ctok-bench-sign --key URI|FILE --alg rsa-pkcs1|rsa-pss|ecdsa|ed25519\n"
               "         [--threads N] [--seconds S] [--passin CODE] [--reuse-ctx] [--latency]\n"
               "         [--provider-path DIR] [--provider NAME]...\n"
               "  --passin: pass:CODE, file:PATH, env:NAME, or the code itself\n"
               "  prints: ops_per_sec=<float> threads=<n> sigs=<count> cpu_s=<float>\n"
               "  --latency: each signature timed; the line ends with p50_us=<f> p99_us=<f>\n"
               "  --count N [--rss-at K]: instead of a timed run, N signatures in this thread\n"
               "    (a fresh context each); prints sigs=N rss_kb_at_K=<kb> rss_kb_at_N=<kb>:\n"
               "    the resident set after K (default 1000) and after N signatures\n");
}

static void die_ssl(const char *what)
{
    fprintf(stderr, "ctok-bench-sign: %s failed\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* ---- passphrase ---------------------------------------------------------------------- */

static char *passphrase;

static char *read_passin(const char *spec)
{
    char buf[1024], *ret;

    if (strncmp(spec, "pass:", 5) == 0)
        return OPENSSL_strdup(spec + 5);
    if (strncmp(spec, "env:", 4) == 0) {
        const char *v = getenv(spec + 4);

        if (v == NULL) {
            fprintf(stderr, "ctok-bench-sign: --passin: environment variable %s not set\n",
                    spec + 4);
            exit(2);
        }
        return OPENSSL_strdup(v);
    }
    if (strncmp(spec, "file:", 5) == 0) {
        FILE *f = fopen(spec + 5, "r");
        size_t n;

        if (f == NULL) {
            fprintf(stderr, "ctok-bench-sign: --passin: %s: %s\n", spec + 5, strerror(errno));
            exit(2);
        }
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        ret = OPENSSL_strdup(buf);
        OPENSSL_cleanse(buf, sizeof(buf));
        return ret;
    }
    return OPENSSL_strdup(spec);
}

static int pem_pass_cb(char *buf, int size, int rwflag, void *u)
{
    size_t len;

    (void)rwflag;
    (void)u;
    if (passphrase == NULL)
        return -1;
    len = strlen(passphrase);
    if (len > (size_t)size)
        len = (size_t)size;
    memcpy(buf, passphrase, len);
    return (int)len;
}

/* ---- key loading --------------------------------------------------------------------- */

static EVP_PKEY *load_key(const char *uri, UI_METHOD *ui)
{
    OSSL_STORE_CTX *sctx;
    EVP_PKEY *pkey = NULL;

    sctx = OSSL_STORE_open_ex(uri, NULL, NULL, ui, NULL, NULL, NULL, NULL);
    if (sctx == NULL)
        die_ssl("OSSL_STORE_open_ex");
    while (pkey == NULL && !OSSL_STORE_eof(sctx)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(sctx);

        if (info == NULL) {
            if (OSSL_STORE_error(sctx))
                die_ssl("OSSL_STORE_load");
            continue;
        }
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(sctx);
    if (pkey == NULL) {
        fprintf(stderr, "ctok-bench-sign: no private key found at %s\n", uri);
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    return pkey;
}

/* ---- one signature ------------------------------------------------------------------- */

/* A context for signing or verifying with alg's parameters; NULL with the error queue set. */
static EVP_PKEY_CTX *prepared_ctx(EVP_PKEY *pkey, enum alg alg, int verify)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);

    if (ctx == NULL || (verify ? EVP_PKEY_verify_init(ctx) : EVP_PKEY_sign_init(ctx)) != 1 ||
        (alg == ALG_RSA_PKCS1 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0) ||
        (alg == ALG_RSA_PSS &&
         (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
          EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) <= 0)) ||
        EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) <= 0) {
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Ed25519 signs the message itself, in one shot, with a digest-sign context. */
static int eddsa(EVP_PKEY *pkey, int verify, unsigned char *sig, size_t *siglen)
{
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    int ok =
        mctx != NULL && (verify ? EVP_DigestVerifyInit(mctx, NULL, NULL, NULL, pkey) == 1 &&
                                      EVP_DigestVerify(mctx, sig, *siglen, tbs, sizeof(tbs)) == 1
                                : EVP_DigestSignInit(mctx, NULL, NULL, NULL, pkey) == 1 &&
                                      EVP_DigestSign(mctx, sig, siglen, tbs, sizeof(tbs)) == 1);

    EVP_MD_CTX_free(mctx);
    return ok;
}

/* Returns 1 and sets *siglen on success; 0 with the error queue set on failure. */
static int sign_once(EVP_PKEY *pkey, enum alg alg, unsigned char *sig, size_t *siglen)
{
    EVP_PKEY_CTX *ctx;
    int ok;

    *siglen = SIG_BUF;
    if (alg == ALG_ED25519)
        return eddsa(pkey, 0, sig, siglen);
    ctx = prepared_ctx(pkey, alg, 0);
    ok = ctx != NULL && EVP_PKEY_sign(ctx, sig, siglen, tbs, sizeof(tbs)) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

static int verify_once(EVP_PKEY *pkey, enum alg alg, const unsigned char *sig, size_t siglen)
{
    EVP_PKEY_CTX *ctx;
    int ok;

    if (alg == ALG_ED25519)
        return eddsa(pkey, 1, (unsigned char *)sig, &siglen);
    ctx = prepared_ctx(pkey, alg, 1);
    ok = ctx != NULL && EVP_PKEY_verify(ctx, sig, siglen, tbs, sizeof(tbs)) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

/*
 * --reuse-ctx: one context per thread, initialized once, EVP_PKEY_sign per signature (valid
 * OpenSSL usage). It separates what a provider costs from what creating and initializing
 * an EVP_PKEY_CTX per signature costs the application.
 */
static int reuse_ctx;
static int latency; /* --latency */

/* ---- memory over a long run (--count, --rss-at) -------------------------------------- */

/* The resident set of this process now, in KiB (/proc/self/statm); -1 if unreadable. */
static long rss_kb(void)
{
    long size, pages = -1;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &size, &pages) != 2)
        pages = -1;
    fclose(f);
    return pages < 0 ? -1 : pages * (sysconf(_SC_PAGESIZE) / 1024);
}

/* count signatures in this thread, the resident set read after rss_at and after count. */
static int count_run(EVP_PKEY *pkey, enum alg alg, unsigned long count, unsigned long rss_at)
{
    unsigned char sig[SIG_BUF];
    size_t siglen;
    unsigned long n;
    long at_k = -1;

    for (n = 1; n <= count; n++) {
        if (!sign_once(pkey, alg, sig, &siglen)) {
            fprintf(stderr, "ctok-bench-sign: signature %lu failed\n", n);
            ERR_print_errors_fp(stderr);
            return 1;
        }
        if (n == rss_at)
            at_k = rss_kb();
    }
    printf("sigs=%lu rss_kb_at_%lu=%ld rss_kb_at_%lu=%ld\n", count, rss_at, at_k, count, rss_kb());
    return 0;
}

/* ---- workers ------------------------------------------------------------------------- */

static unsigned long sign_worker(void *arg)
{
    struct worker *w = arg;
    unsigned char sig[SIG_BUF];
    unsigned long n = 0;
    size_t siglen;
    EVP_PKEY_CTX *ctx =
        reuse_ctx && w->alg != ALG_ED25519 ? prepared_ctx(w->pkey, w->alg, 0) : NULL;

    bench_ready();
    while (bench_running()) {
        long long t0 = latency ? bench_now_ns() : 0;
        int ok;

        siglen = SIG_BUF;
        ok = ctx != NULL ? EVP_PKEY_sign(ctx, sig, &siglen, tbs, sizeof(tbs)) == 1
                         : sign_once(w->pkey, w->alg, sig, &siglen);
        if (!ok) {
            fprintf(stderr, "ctok-bench-sign: signature %lu failed\n", n + 1);
            ERR_print_errors_fp(stderr);
            bench_fail();
            break;
        }
        if (latency)
            bench_record_ns(bench_now_ns() - t0);
        n++;
    }
    EVP_PKEY_CTX_free(ctx);
    return n;
}

/* ---- main ---------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *key = NULL, *alg_name = NULL, *provider_path = NULL, *passin = NULL;
    const char *providers[MAX_PROVIDERS];
    OSSL_PROVIDER *loaded[MAX_PROVIDERS];
    int nproviders = 0, nthreads = 1, i;
    unsigned long count = 0, rss_at = 1000;
    double seconds = 2.0;
    enum alg alg = ALG_RSA_PKCS1;
    UI_METHOD *ui = NULL;
    EVP_PKEY *pkey;
    struct worker *workers;
    unsigned char sig[SIG_BUF];
    size_t siglen;
    void **args;
    int rc;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--reuse-ctx") == 0) {
            reuse_ctx = 1;
            continue;
        }
        if (strcmp(a, "--latency") == 0) {
            latency = 1;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "ctok-bench-sign: %s needs a value\n", a);
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--key") == 0) {
            key = v;
        } else if (strcmp(a, "--alg") == 0) {
            alg_name = v;
        } else if (strcmp(a, "--provider-path") == 0) {
            provider_path = v;
        } else if (strcmp(a, "--provider") == 0) {
            if (nproviders == MAX_PROVIDERS) {
                fprintf(stderr, "ctok-bench-sign: too many --provider\n");
                return 2;
            }
            providers[nproviders++] = v;
        } else if (strcmp(a, "--threads") == 0) {
            nthreads = atoi(v);
        } else if (strcmp(a, "--seconds") == 0) {
            seconds = strtod(v, NULL);
        } else if (strcmp(a, "--count") == 0) {
            count = strtoul(v, NULL, 10);
        } else if (strcmp(a, "--rss-at") == 0) {
            rss_at = strtoul(v, NULL, 10);
        } else if (strcmp(a, "--passin") == 0) {
            passin = v;
        } else {
            fprintf(stderr, "ctok-bench-sign: unknown argument %s\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (key == NULL || alg_name == NULL) {
        usage(stderr);
        return 2;
    }
    for (i = 0; i < (int)(sizeof(alg_names) / sizeof(alg_names[0])); i++)
        if (strcmp(alg_name, alg_names[i].name) == 0)
            break;
    if (i == (int)(sizeof(alg_names) / sizeof(alg_names[0]))) {
        fprintf(stderr, "ctok-bench-sign: unknown --alg %s\n", alg_name);
        return 2;
    }
    alg = alg_names[i].alg;
    if (nthreads < 1 || nthreads > MAX_THREADS || !(seconds > 0)) {
        fprintf(stderr, "ctok-bench-sign: bad --threads or --seconds\n");
        return 2;
    }

    if (provider_path != NULL && !OSSL_PROVIDER_set_default_search_path(NULL, provider_path))
        die_ssl("OSSL_PROVIDER_set_default_search_path");
    if (nproviders == 0)
        providers[nproviders++] = "default";
    for (i = 0; i < nproviders; i++) {
        loaded[i] = OSSL_PROVIDER_load(NULL, providers[i]);
        if (loaded[i] == NULL) {
            fprintf(stderr, "ctok-bench-sign: cannot load provider %s\n", providers[i]);
            die_ssl("OSSL_PROVIDER_load");
        }
    }

    if (passin != NULL) {
        passphrase = read_passin(passin);
        ui = UI_UTIL_wrap_read_pem_callback(pem_pass_cb, 0);
        if (ui == NULL)
            die_ssl("UI_UTIL_wrap_read_pem_callback");
    }
    pkey = load_key(key, ui);

    if (!sign_once(pkey, alg, sig, &siglen)) {
        fprintf(stderr, "ctok-bench-sign: first signature (--alg %s, key type %s) failed\n",
                alg_name, EVP_PKEY_get0_type_name(pkey) ? EVP_PKEY_get0_type_name(pkey) : "?");
        ERR_print_errors_fp(stderr);
        return 1;
    }
    if (!verify_once(pkey, alg, sig, siglen)) {
        fprintf(stderr, "ctok-bench-sign: the first signature (%zu bytes) does not verify\n",
                siglen);
        ERR_print_errors_fp(stderr);
        return 1;
    }

    if (count > 0) {
        if (rss_at < 1 || rss_at > count) {
            fprintf(stderr, "ctok-bench-sign: --rss-at must be between 1 and --count\n");
            return 2;
        }
        rc = count_run(pkey, alg, count, rss_at);
        goto done;
    }

    workers = calloc((size_t)nthreads, sizeof(*workers));
    args = calloc((size_t)nthreads, sizeof(*args));
    if (workers == NULL || args == NULL) {
        perror("calloc");
        free(workers);
        free(args);
        return 1;
    }
    for (i = 0; i < nthreads; i++) {
        workers[i].pkey = pkey;
        workers[i].alg = alg;
        args[i] = &workers[i];
    }
    rc = bench_run("ctok-bench-sign", nthreads, seconds, sign_worker, args);

    free(args);
    free(workers);
done:
    EVP_PKEY_free(pkey);
    UI_destroy_method(ui);
    if (passphrase != NULL)
        OPENSSL_clear_free(passphrase, strlen(passphrase));
    for (i = nproviders - 1; i >= 0; i--)
        OSSL_PROVIDER_unload(loaded[i]);
    return rc;
}

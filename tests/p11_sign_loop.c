/*
 * p11_sign_loop: an application that signs many times with one token key through the ctok
 * provider, the way a TLS server does: the key is loaded once through OSSL_STORE, every
 * signature gets a fresh EVP_PKEY_CTX, and every signature is verified with the public key
 * in a separate library context that has only OpenSSL's default provider.
 * Built by tests/p11fixtures.py with gcc (gcc -O1 p11_sign_loop.c -lcrypto -lpthread).
 *
 *   p11_sign_loop [--provider-path DIR] [--passin CODE] sign URI THREADS COUNT
 *       COUNT signatures spread over THREADS threads
 *   p11_sign_loop [--provider-path DIR] [--passin CODE] fork URI COUNT
 *       the parent loads the key and signs once, then forks; the child signs COUNT times;
 *       the parent waits for the child and signs once more
 *   p11_sign_loop [--provider-path DIR] [--passin CODE] reload URI THREADS COUNT
 *       COUNT times over THREADS threads: load the key afresh, sign once, free it; a failed
 *       load counts and the loop goes on (an application that opens key references often)
 *
 * Prints key=value lines: ok=<signatures made and verified> failed=<failures>, and for fork
 * also child_exit=<status>. The OpenSSL errors of the first failures go to stderr.
 * Exit status 0 only when every signature succeeded and verified.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/store.h>
#include <openssl/ui.h>
#include <openssl/x509.h>

static const unsigned char tbs[32] = {
    0x9f, 0x86, 0xd0, 0x81, 0x88, 0x4c, 0x7d, 0x65, 0x9a, 0x2f, 0xea, 0xa0, 0xc5, 0x5a, 0xd0, 0x15,
    0xa3, 0xbf, 0x4f, 0x1b, 0x2b, 0x0b, 0x82, 0x2c, 0xd1, 0x5d, 0x6c, 0x15, 0xb0, 0xf0, 0x0a, 0x08,
};

static EVP_PKEY *g_key;        /* the token key (ctok) */
static EVP_PKEY *g_pub;        /* its public key, in g_plain */
static OSSL_LIB_CTX *g_plain;  /* default provider only */
static const char *g_passin;
static atomic_long g_ok, g_failed;
static atomic_int g_reported;
static pthread_mutex_t g_err_lock = PTHREAD_MUTEX_INITIALIZER;

static void report(const char *what)
{
    /* the first few failures with their OpenSSL errors; later ones are only counted */
    if (atomic_fetch_add(&g_reported, 1) < 5) {
        pthread_mutex_lock(&g_err_lock);
        fprintf(stderr, "p11_sign_loop[%ld]: %s failed\n", (long)getpid(), what);
        ERR_print_errors_fp(stderr);
        fflush(stderr);
        pthread_mutex_unlock(&g_err_lock);
    } else {
        ERR_clear_error();
    }
}

static int pass_cb(char *buf, int size, int rwflag, void *u)
{
    (void)rwflag;
    (void)u;
    if (g_passin == NULL)
        return -1;
    int n = (int)strlen(g_passin);
    if (n > size)
        n = size;
    memcpy(buf, g_passin, n);
    return n;
}

static EVP_PKEY *load_key(const char *uri)
{
    UI_METHOD *ui = UI_UTIL_wrap_read_pem_callback(pass_cb, 0);
    OSSL_STORE_CTX *s = OSSL_STORE_open_ex(uri, NULL, NULL, ui, NULL, NULL, NULL, NULL);
    EVP_PKEY *pkey = NULL;

    if (s == NULL) {
        report("OSSL_STORE_open");
        UI_destroy_method(ui);
        return NULL;
    }
    while (pkey == NULL && !OSSL_STORE_eof(s)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(s);
        if (info == NULL) {
            if (OSSL_STORE_error(s))
                break;
            continue;
        }
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(s);
    UI_destroy_method(ui);
    if (pkey == NULL)
        report("loading the key");
    return pkey;
}

static EVP_PKEY *plain_public_key(EVP_PKEY *key)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int len = i2d_PUBKEY(key, &der);
    EVP_PKEY *pub;

    if (len <= 0) {
        report("i2d_PUBKEY");
        return NULL;
    }
    p = der;
    pub = d2i_PUBKEY_ex(NULL, &p, len, g_plain, NULL);
    OPENSSL_free(der);
    if (pub == NULL)
        report("d2i_PUBKEY_ex");
    return pub;
}

static int is_eddsa(EVP_PKEY *k)
{
    return EVP_PKEY_is_a(k, "ED25519") || EVP_PKEY_is_a(k, "ED448");
}

static int sign_with(EVP_PKEY *g_key, EVP_PKEY *g_pub);

/* One signature with a fresh context, verified in the plain library context. */
static int sign_once(void)
{
    return sign_with(g_key, g_pub);
}

/* The parameters shadow the globals on purpose: one body signs with the shared key or a
 * thread's freshly loaded one. */
static int sign_with(EVP_PKEY *g_key, EVP_PKEY *g_pub)
{
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    int ok = 0;

    if (is_eddsa(g_key)) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (md != NULL && EVP_DigestSignInit_ex(md, NULL, NULL, NULL, NULL, g_key, NULL) == 1
            && EVP_DigestSign(md, sig, &siglen, tbs, sizeof(tbs)) == 1)
            ok = 1;
        EVP_MD_CTX_free(md);
        if (!ok) {
            report("EVP_DigestSign");
            return 0;
        }
        md = EVP_MD_CTX_new();
        ok = md != NULL && EVP_DigestVerifyInit_ex(md, NULL, NULL, g_plain, NULL, g_pub, NULL) == 1
             && EVP_DigestVerify(md, sig, siglen, tbs, sizeof(tbs)) == 1;
        EVP_MD_CTX_free(md);
        if (!ok)
            report("EVP_DigestVerify");
        return ok;
    }

    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, g_key, NULL);
    if (ctx != NULL && EVP_PKEY_sign_init(ctx) == 1
        && (!EVP_PKEY_is_a(g_key, "RSA") || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1)
        && EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1
        && EVP_PKEY_sign(ctx, sig, &siglen, tbs, sizeof(tbs)) == 1)
        ok = 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        report("EVP_PKEY_sign");
        return 0;
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(g_plain, g_pub, NULL);
    ok = ctx != NULL && EVP_PKEY_verify_init(ctx) == 1
         && (!EVP_PKEY_is_a(g_pub, "RSA") || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1)
         && EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1
         && EVP_PKEY_verify(ctx, sig, siglen, tbs, sizeof(tbs)) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok)
        report("EVP_PKEY_verify");
    return ok;
}

struct job {
    pthread_t tid;
    long count;
    const char *reload; /* the URI to load afresh for each signature */
};

static atomic_long g_load_failed;

static void *worker(void *arg)
{
    struct job *j = arg;
    for (long i = 0; i < j->count; i++) {
        EVP_PKEY *key = g_key, *pub = g_pub;
        if (j->reload != NULL) {
            key = load_key(j->reload);
            pub = key != NULL ? plain_public_key(key) : NULL;
            if (key == NULL)
                atomic_fetch_add(&g_load_failed, 1);
        }
        if (pub != NULL && sign_with(key, pub))
            atomic_fetch_add(&g_ok, 1);
        else
            atomic_fetch_add(&g_failed, 1);
        if (j->reload != NULL) {
            EVP_PKEY_free(key);
            EVP_PKEY_free(pub);
        }
    }
    return NULL;
}

static int run_threads(int threads, long count, const char *reload)
{
    struct job jobs[64];
    for (int t = 0; t < threads; t++) {
        jobs[t].count = count / threads + (t < count % threads ? 1 : 0);
        jobs[t].reload = reload;
        if (pthread_create(&jobs[t].tid, NULL, worker, &jobs[t]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (int t = 0; t < threads; t++)
        pthread_join(jobs[t].tid, NULL);
    printf("ok=%ld failed=%ld load_failed=%ld\n", (long)g_ok, (long)g_failed,
           (long)g_load_failed);
    fflush(stdout);
    return g_failed == 0 && g_ok == count ? 0 : 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: p11_sign_loop [--provider-path DIR] [--passin CODE] "
                    "sign URI THREADS COUNT | fork URI COUNT | reload URI THREADS COUNT\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *ppath = NULL;
    int i = 1;

    while (i + 1 < argc && strncmp(argv[i], "--", 2) == 0) {
        if (strcmp(argv[i], "--provider-path") == 0)
            ppath = argv[i + 1];
        else if (strcmp(argv[i], "--passin") == 0)
            g_passin = argv[i + 1];
        else
            return usage();
        i += 2;
    }
    if (argc - i < 3)
        return usage();
    const char *mode = argv[i], *uri = argv[i + 1];

    if (ppath != NULL && !OSSL_PROVIDER_set_default_search_path(NULL, ppath))
        return report("set_default_search_path"), 1;
    if (OSSL_PROVIDER_load(NULL, "ctok") == NULL || OSSL_PROVIDER_load(NULL, "default") == NULL)
        return report("loading the ctok and default providers"), 1;
    g_plain = OSSL_LIB_CTX_new();
    if (g_plain == NULL || OSSL_PROVIDER_load(g_plain, "default") == NULL)
        return report("a plain library context"), 1;
    /* sign and reload: THREADS COUNT */
    int reload = strcmp(mode, "reload") == 0;
    int threaded = (reload || strcmp(mode, "sign") == 0) && argc - i == 4;
    int threads = threaded ? atoi(argv[i + 2]) : 0;
    long count = threaded ? atol(argv[i + 3]) : 0;
    if (threaded && (threads < 1 || threads > 64 || count < 1))
        return usage();
    if (threaded && reload)
        return run_threads(threads, count, uri);
    if ((g_key = load_key(uri)) == NULL || (g_pub = plain_public_key(g_key)) == NULL) {
        printf("ok=0 failed=1\n");
        return 1;
    }

    if (threaded)
        return run_threads(threads, count, NULL);

    if (strcmp(mode, "fork") == 0 && argc - i == 3) {
        long count = atol(argv[i + 2]);
        int parent_ok = sign_once();
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            long ok = 0;
            for (long n = 0; n < count; n++)
                ok += sign_once();
            printf("child_pid=%ld child_ok=%ld child_failed=%ld\n", (long)getpid(), ok, count - ok);
            fflush(stdout);
            _exit(ok == count ? 0 : 1);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        int parent_after = sign_once();
        int child_exit = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        printf("parent_before=%d parent_after=%d child_exit=%d\n", parent_ok, parent_after,
               child_exit);
        printf("ok=%ld failed=%ld\n", (long)(parent_ok + parent_after),
               (long)(2 - parent_ok - parent_after));
        fflush(stdout);
        return parent_ok && parent_after && child_exit == 0 ? 0 : 1;
    }
    return usage();
}

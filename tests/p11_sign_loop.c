/*
 * p11_sign_loop: an application that signs many times with one token key through the ctok
 * provider, the way a TLS server does: the key is loaded once through OSSL_STORE, every
 * signature gets a fresh EVP_PKEY_CTX, and every signature is verified with the public key
 * in a separate library context that has only OpenSSL's default provider.
 * Built by tests/p11fixtures.py with gcc (gcc -O1 p11_sign_loop.c -lcrypto -lpthread).
 *
 *   p11_sign_loop [OPTIONS] sign URI[|URI...] THREADS COUNT
 *       COUNT signatures spread over THREADS threads; thread t signs with key t % (keys)
 *   p11_sign_loop [OPTIONS] fork URI COUNT
 *       the parent loads the key and signs once, then forks; the child signs COUNT times;
 *       the parent waits for the child and signs once more
 *   p11_sign_loop [OPTIONS] forkthreads URI THREADS COUNT ROUNDS
 *       the parent loads the key and signs once; then ROUNDS times: fork, and THREADS
 *       threads of the child make their first token call at the same moment and sign
 *       COUNT times each (httpd's worker MPM); the parent signs again after each child
 *   p11_sign_loop [OPTIONS] reload URI THREADS COUNT
 *       COUNT times over THREADS threads: load the key afresh, sign once, free it; a failed
 *       load counts and the loop goes on (an application that opens key references often)
 *   p11_sign_loop [OPTIONS] cycles URI COUNT EVERY
 *       COUNT times: load the key, sign, verify, free it; a sample line every EVERY cycles
 *   p11_sign_loop [OPTIONS] provider URI COUNT EVERY
 *       COUNT times OSSL_PROVIDER_load and unload of ctok; every EVERY times a signature
 *       with the key loaded while ctok is, and a sample line
 * OPTIONS: --provider-path DIR, --passin CODE, --ui none (OSSL_STORE_open with no UI at all,
 *   as many C programs call it), --remove FILE (unlinked once the keys are loaded, before the
 *   first signature: a token's auth file gone at signing time), and for the samples of cycles
 *   --module LIB --token LABEL: count the token's private key objects and sessions seen
 *   through LIB in this process (the module ctok loaded, logged in by ctok)
 *
 * Prints key=value lines: ok=<signatures made and verified> failed=<failures>, for fork
 * also child_exit=<status>, and samples as
 *   sample n=<cycle> rss_kb=<RSS> fds=<open fds> objects=<private keys> sessions=<sessions>
 * (objects and sessions -1 without --module). The OpenSSL errors of the first failures go
 * to stderr. Exit status 0 only when every signature succeeded and verified.
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <dlfcn.h>
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

#include <p11-kit/pkcs11.h>

static const unsigned char tbs[32] = {
    0x9f, 0x86, 0xd0, 0x81, 0x88, 0x4c, 0x7d, 0x65, 0x9a, 0x2f, 0xea, 0xa0, 0xc5, 0x5a, 0xd0, 0x15,
    0xa3, 0xbf, 0x4f, 0x1b, 0x2b, 0x0b, 0x82, 0x2c, 0xd1, 0x5d, 0x6c, 0x15, 0xb0, 0xf0, 0x0a, 0x08,
};

#define MAX_KEYS 8
static EVP_PKEY *g_keys[MAX_KEYS]; /* the token keys (ctok) */
static EVP_PKEY *g_pubs[MAX_KEYS]; /* their public keys, in g_plain */
static int g_nkeys;
static OSSL_LIB_CTX *g_plain; /* default provider only */
static const char *g_passin;
static int g_no_ui;                    /* --ui none */
static const char *g_module, *g_token; /* --module, --token: object and session counts */
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
    UI_METHOD *ui = g_no_ui ? NULL : UI_UTIL_wrap_read_pem_callback(pass_cb, 0);
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

/* One signature with key and a fresh context, verified with pub in the plain context. */
static int sign_with(EVP_PKEY *key, EVP_PKEY *pub)
{
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    int ok = 0;

    if (is_eddsa(key)) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (md != NULL && EVP_DigestSignInit_ex(md, NULL, NULL, NULL, NULL, key, NULL) == 1
            && EVP_DigestSign(md, sig, &siglen, tbs, sizeof(tbs)) == 1)
            ok = 1;
        EVP_MD_CTX_free(md);
        if (!ok) {
            report("EVP_DigestSign");
            return 0;
        }
        md = EVP_MD_CTX_new();
        ok = md != NULL && EVP_DigestVerifyInit_ex(md, NULL, NULL, g_plain, NULL, pub, NULL) == 1
             && EVP_DigestVerify(md, sig, siglen, tbs, sizeof(tbs)) == 1;
        EVP_MD_CTX_free(md);
        if (!ok)
            report("EVP_DigestVerify");
        return ok;
    }

    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (ctx != NULL && EVP_PKEY_sign_init(ctx) == 1
        && (!EVP_PKEY_is_a(key, "RSA") || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1)
        && EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1
        && EVP_PKEY_sign(ctx, sig, &siglen, tbs, sizeof(tbs)) == 1)
        ok = 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        report("EVP_PKEY_sign");
        return 0;
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(g_plain, pub, NULL);
    ok = ctx != NULL && EVP_PKEY_verify_init(ctx) == 1
         && (!EVP_PKEY_is_a(pub, "RSA") || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1)
         && EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1
         && EVP_PKEY_verify(ctx, sig, siglen, tbs, sizeof(tbs)) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok)
        report("EVP_PKEY_verify");
    return ok;
}

static int sign_once(void)
{
    return sign_with(g_keys[0], g_pubs[0]);
}

/* Loads a key and its plain public key; 0 (reported) on failure. */
static int load_pair(const char *uri, EVP_PKEY **key, EVP_PKEY **pub)
{
    *pub = NULL;
    if ((*key = load_key(uri)) == NULL)
        return 0;
    if ((*pub = plain_public_key(*key)) == NULL) {
        EVP_PKEY_free(*key);
        *key = NULL;
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- threads */

struct job {
    pthread_t tid;
    long count;
    int key;
    const char *reload;       /* the URI to load afresh for each signature */
    pthread_barrier_t *start; /* all threads make their first call together */
};

static atomic_long g_load_failed;

static void *worker(void *arg)
{
    struct job *j = arg;

    if (j->start != NULL)
        pthread_barrier_wait(j->start);
    for (long i = 0; i < j->count; i++) {
        EVP_PKEY *key = NULL, *pub = NULL;
        int ok;

        if (j->reload == NULL)
            ok = sign_with(g_keys[j->key], g_pubs[j->key]);
        else if (!load_pair(j->reload, &key, &pub))
            ok = 0, atomic_fetch_add(&g_load_failed, 1);
        else
            ok = sign_with(key, pub);
        atomic_fetch_add(ok ? &g_ok : &g_failed, 1);
        EVP_PKEY_free(key);
        EVP_PKEY_free(pub);
    }
    return NULL;
}

/* THREADS threads, COUNT signatures in all; started together. 1 when all were made. */
static int run_threads(int threads, long count, const char *reload)
{
    struct job jobs[64];
    pthread_barrier_t start;

    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (int t = 0; t < threads; t++) {
        jobs[t].count = count / threads + (t < count % threads ? 1 : 0);
        jobs[t].key = g_nkeys > 0 ? t % g_nkeys : 0;
        jobs[t].reload = reload;
        jobs[t].start = &start;
        if (pthread_create(&jobs[t].tid, NULL, worker, &jobs[t]) != 0) {
            perror("pthread_create");
            _exit(1);
        }
    }
    for (int t = 0; t < threads; t++)
        pthread_join(jobs[t].tid, NULL);
    pthread_barrier_destroy(&start);
    return g_failed == 0 && g_ok == count;
}

/* ---------------------------------------------------------------- samples */

static long rss_kb(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;

    while (d != NULL && (e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    if (d != NULL) {
        closedir(d);
        n--; /* the directory itself */
    }
    return n;
}

/*
 * The token's private key objects (token and session objects: session objects of any
 * session of this process are visible) and its open sessions, through the module ctok
 * loaded and logged in. -1 when not asked for or not available.
 */
static void token_counts(long *objects, long *sessions)
{
    void *dl;
    CK_C_GetFunctionList get;
    CK_FUNCTION_LIST_PTR f = NULL;
    CK_SLOT_ID slots[32];
    CK_ULONG n = 32;

    *objects = *sessions = -1;
    if (g_module == NULL || (dl = dlopen(g_module, RTLD_NOW | RTLD_NOLOAD)) == NULL)
        return;
    get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    if (get == NULL || get(&f) != CKR_OK || f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
        goto end;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        CK_SESSION_HANDLE s;
        CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
        CK_ATTRIBUTE t = {CKA_CLASS, &cls, sizeof(cls)};
        CK_OBJECT_HANDLE h[64];
        CK_ULONG got;
        size_t len = strlen(g_token);

        if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK || len > sizeof(ti.label) ||
            memcmp(ti.label, g_token, len) != 0 ||
            (len < sizeof(ti.label) && ti.label[len] != ' '))
            continue;
        if (ti.ulSessionCount != CK_UNAVAILABLE_INFORMATION)
            *sessions = (long)ti.ulSessionCount;
        if (f->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
            break;
        if (f->C_FindObjectsInit(s, &t, 1) == CKR_OK) {
            *objects = 0;
            while (f->C_FindObjects(s, h, 64, &got) == CKR_OK && got > 0)
                *objects += (long)got;
            f->C_FindObjectsFinal(s);
        }
        f->C_CloseSession(s);
        break;
    }
end:
    dlclose(dl);
}

static void sample(long n)
{
    long objects, sessions;

    token_counts(&objects, &sessions);
    printf("sample n=%ld rss_kb=%ld fds=%ld objects=%ld sessions=%ld\n", n, rss_kb(), open_fds(),
           objects, sessions);
    fflush(stdout);
}

/* ---------------------------------------------------------------- modes */

static int usage(void)
{
    fprintf(stderr, "usage: p11_sign_loop [--provider-path DIR] [--passin CODE] [--ui none] "
                    "[--remove FILE] "
                    "[--module LIB --token LABEL] "
                    "sign URI[|URI...] THREADS COUNT | fork URI COUNT | "
                    "forkthreads URI THREADS COUNT ROUNDS | reload URI THREADS COUNT | "
                    "cycles URI COUNT EVERY | "
                    "provider URI COUNT EVERY\n");
    return 2;
}

static int result(void)
{
    printf("ok=%ld failed=%ld load_failed=%ld\n", (long)g_ok, (long)g_failed,
           (long)g_load_failed);
    fflush(stdout);
    return g_failed == 0 ? 0 : 1;
}

/*
 * Forks; the child runs body(arg) and exits with its result, bounded in time (a deadlocked
 * child ends as SIGALRM, not as a hung test). The child's exit status, 128 + signal.
 */
static int in_child(int (*body)(void *), void *arg)
{
    int status = 0;

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        alarm(60);
        _exit(body(arg));
    }
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int child_signs(void *arg)
{
    long count = *(long *)arg, ok = 0;

    for (long n = 0; n < count; n++)
        ok += sign_once();
    printf("child_pid=%ld child_ok=%ld child_failed=%ld\n", (long)getpid(), ok, count - ok);
    fflush(stdout);
    return ok == count ? 0 : 1;
}

static int mode_fork(long count)
{
    int parent_ok = sign_once();
    int child_exit = in_child(child_signs, &count);
    int parent_after = sign_once();

    printf("parent_before=%d parent_after=%d child_exit=%d\n", parent_ok, parent_after,
           child_exit);
    printf("ok=%ld failed=%ld\n", (long)(parent_ok + parent_after),
           (long)(2 - parent_ok - parent_after));
    fflush(stdout);
    return parent_ok && parent_after && child_exit == 0 ? 0 : 1;
}

struct threads_job {
    int threads;
    long count;
};

static int child_threads_sign(void *arg)
{
    struct threads_job *j = arg;

    g_ok = g_failed = 0;
    return run_threads(j->threads, j->count * j->threads, NULL) ? 0 : 1;
}

/* Each child: THREADS threads whose first token call is simultaneous. */
static int mode_forkthreads(int threads, long count, int rounds)
{
    struct threads_job job = {threads, count};
    int good = 0, first_bad = 0;

    if (!sign_once())
        atomic_fetch_add(&g_failed, 1);
    for (int r = 0; r < rounds; r++) {
        int child_exit = in_child(child_threads_sign, &job);

        if (child_exit == 0)
            good++;
        else if (first_bad == 0)
            first_bad = child_exit;
        if (sign_once())
            atomic_fetch_add(&g_ok, 1);
        else
            atomic_fetch_add(&g_failed, 1);
    }
    printf("rounds=%d rounds_ok=%d first_bad_exit=%d\n", rounds, good, first_bad);
    return result() == 0 && good == rounds ? 0 : 1;
}

/* Loads the key, signs once, verifies and frees it: counted in ok / failed. */
static void load_sign_free(const char *uri)
{
    EVP_PKEY *key, *pub;

    if (load_pair(uri, &key, &pub) && sign_with(key, pub))
        atomic_fetch_add(&g_ok, 1);
    else
        atomic_fetch_add(&g_failed, 1);
    EVP_PKEY_free(key);
    EVP_PKEY_free(pub);
}

static int mode_cycles(const char *uri, long count, long every)
{
    for (long n = 0; n < count; n++) {
        load_sign_free(uri);
        if ((n + 1) % every == 0)
            sample(n + 1);
    }
    return result();
}

static int mode_provider(const char *uri, long count, long every)
{
    for (long n = 0; n < count; n++) {
        OSSL_PROVIDER *ctok = OSSL_PROVIDER_load(NULL, "ctok");

        if (ctok == NULL) {
            report("OSSL_PROVIDER_load(ctok)");
            atomic_fetch_add(&g_failed, 1);
            break;
        }
        if ((n + 1) % every == 0)
            load_sign_free(uri);
        /* unloaded for real: nothing else holds it, so the next load starts it again */
        if (!OSSL_PROVIDER_unload(ctok) || OSSL_PROVIDER_available(NULL, "ctok")) {
            report("OSSL_PROVIDER_unload(ctok)");
            atomic_fetch_add(&g_failed, 1);
        }
        if ((n + 1) % every == 0)
            sample(n + 1);
    }
    return result();
}

/* sign and reload: THREADS COUNT (reload: the URI each signature loads afresh) */
static int mode_threads(char **args, const char *reload)
{
    int threads = atoi(args[0]);
    long count = atol(args[1]);

    if (threads < 1 || threads > 64 || count < 1)
        return usage();
    return run_threads(threads, count, reload) ? result() : (result(), 1);
}

int main(int argc, char **argv)
{
    const char *ppath = NULL, *remove = NULL;
    int i = 1;

    while (i + 1 < argc && strncmp(argv[i], "--", 2) == 0) {
        if (strcmp(argv[i], "--provider-path") == 0)
            ppath = argv[i + 1];
        else if (strcmp(argv[i], "--passin") == 0)
            g_passin = argv[i + 1];
        else if (strcmp(argv[i], "--ui") == 0 && strcmp(argv[i + 1], "none") == 0)
            g_no_ui = 1;
        else if (strcmp(argv[i], "--remove") == 0)
            remove = argv[i + 1];
        else if (strcmp(argv[i], "--module") == 0)
            g_module = argv[i + 1];
        else if (strcmp(argv[i], "--token") == 0)
            g_token = argv[i + 1];
        else
            return usage();
        i += 2;
    }
    if (argc - i < 3 || (g_module != NULL) != (g_token != NULL))
        return usage();
    const char *mode = argv[i], *uri = argv[i + 1];
    int nargs = argc - i;

    if (ppath != NULL && !OSSL_PROVIDER_set_default_search_path(NULL, ppath))
        return report("set_default_search_path"), 1;
    if (OSSL_PROVIDER_load(NULL, "default") == NULL)
        return report("loading the default provider"), 1;
    g_plain = OSSL_LIB_CTX_new();
    if (g_plain == NULL || OSSL_PROVIDER_load(g_plain, "default") == NULL)
        return report("a plain library context"), 1;
    if (strcmp(mode, "provider") == 0 && nargs == 4) {
        long count = atol(argv[i + 2]), every = atol(argv[i + 3]);
        return count < 1 || every < 1 ? usage() : mode_provider(uri, count, every);
    }
    if (OSSL_PROVIDER_load(NULL, "ctok") == NULL)
        return report("loading the ctok provider"), 1;
    if (strcmp(mode, "cycles") == 0 && nargs == 4) {
        long count = atol(argv[i + 2]), every = atol(argv[i + 3]);
        return count < 1 || every < 1 ? usage() : mode_cycles(uri, count, every);
    }

    if (strcmp(mode, "reload") == 0 && nargs == 4)
        return mode_threads(argv + i + 2, uri);

    /* the other modes load their keys once: URI[|URI...] */
    char *uris = strdup(uri), *save = NULL;
    for (char *u = strtok_r(uris, "|", &save); u != NULL && g_nkeys < MAX_KEYS;
         u = strtok_r(NULL, "|", &save)) {
        if (!load_pair(u, &g_keys[g_nkeys], &g_pubs[g_nkeys])) {
            printf("ok=0 failed=1\n");
            return 1;
        }
        g_nkeys++;
    }
    free(uris);
    if (g_nkeys == 0)
        return usage();
    if (remove != NULL && unlink(remove) != 0)
        return report(remove), 1;

    if (strcmp(mode, "sign") == 0 && nargs == 4)
        return mode_threads(argv + i + 2, NULL);
    if (strcmp(mode, "fork") == 0 && nargs == 3)
        return mode_fork(atol(argv[i + 2]));
    if (strcmp(mode, "forkthreads") == 0 && nargs == 5) {
        int threads = atoi(argv[i + 2]), rounds = atoi(argv[i + 4]);
        long count = atol(argv[i + 3]);
        if (threads < 1 || threads > 64 || count < 1 || rounds < 1)
            return usage();
        return mode_forkthreads(threads, count, rounds);
    }
    return usage();
}

/*
 * Token-layer behaviours a backend relies on, driven through the token API (linked against
 * libctok_store.a; internal.h for a test backend and to look at what the layer keeps).
 * Prints key=value lines and exits 0, or prints "FAIL: why" and exits 1.
 *   token_layer CONFIG TOKEN nocode        a backend that needs no code (an instance role)
 *   token_layer CONFIG TOKEN slowlogin KEY a signer while another thread's login is slow
 *   token_layer CONFIG TOKEN cache KEY     one key handle per (token, key), and its drops
 *   token_layer CONFIG TOKEN putcert       cert import on a backend that keeps no certificates
 *   token_layer CONFIG TOKEN reconnect KEY signatures across a PKCS#11 reconnect, then a load
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/rsa.h>

#include "internal.h"
#include "store_driver.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        printf("FAIL: " __VA_ARGS__);                                                              \
        putchar('\n');                                                                             \
        return 1;                                                                                  \
    } while (0)

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- a backend that signs in without a code: one EC key made at open ---- */

static int logins, logins_with_code;
static const uint8_t RID[] = {0x52, 0x4f, 0x4c, 0x45};

static int r_needs_code(ctok_token *tok)
{
    (void)tok;
    return 0;
}

static int r_configure(ctok_token *tok, const json_t *conf)
{
    (void)tok;
    (void)conf;
    return 1;
}

static int r_open(ctok_token *tok)
{
    return (tok->be_data = EVP_EC_gen("P-256")) != NULL;
}

static int r_login(ctok_token *tok, const char *code, size_t len)
{
    (void)tok;
    (void)len;
    logins++;
    logins_with_code += code != NULL;
    return code == NULL ? 1 : -1;
}

static int r_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg)
{
    struct ctok_object o = {CTOK_OBJ_PRIVATE, "role-key", RID,         sizeof(RID),
                            CTOK_KT_EC,       NULL,       tok->be_data};

    return cb(tok, &o, arg);
}

static int r_key_load(ctok_token *tok, ctok_key *key)
{
    key->label = strdup("role-key");
    key->type = CTOK_KT_EC;
    if (EVP_PKEY_up_ref(tok->be_data))
        key->pub = tok->be_data; /* a test: the public half is all the layer reads */
    key->be_data = tok->be_data;
    return key->label != NULL && key->pub != NULL;
}

static void r_key_free(ctok_key *key)
{
    key->be_data = NULL;
}

static int r_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs, size_t tbslen,
                  uint8_t *sig, size_t *siglen)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(key->be_data, NULL);
    int ok = c != NULL && EVP_PKEY_sign_init(c) > 0 && EVP_PKEY_sign(c, sig, siglen, tbs, tbslen);

    (void)p;
    EVP_PKEY_CTX_free(c);
    return ok;
}

static void r_close(ctok_token *tok)
{
    EVP_PKEY_free(tok->be_data);
    tok->be_data = NULL;
}

static const struct ctok_backend role_backend = {
    .type = "test-role",
    .needs_code = r_needs_code,
    .configure = r_configure,
    .open = r_open,
    .login = r_login,
    .enumerate = r_enumerate,
    .key_load = r_key_load,
    .key_free = r_key_free,
    .sign = r_sign,
    .close = r_close,
};

static int prompts;

static int count_prompt(void *arg, const char *info, char *buf, size_t bufsz, size_t *len)
{
    (void)arg;
    (void)info;
    prompts++;
    snprintf(buf, bufsz, "wrong");
    *len = strlen(buf);
    return 1;
}

static int sign_once(ctok_key *key)
{
    uint8_t dgst[32] = {7}, sig[1024];
    size_t siglen = sizeof(sig);
    struct ctok_sig_params sp = {RSA_PKCS1_PADDING, EVP_sha256(), EVP_sha256(), 32, NULL, 0};

    return ctok_key_sign(key, &sp, dgst, sizeof(dgst), sig, &siglen);
}

/* The configured backend steps aside for the test backend (put back by restore). */
struct saved {
    const struct ctok_backend *be;
    void *be_data;
};

static struct saved use_role_backend(ctok_token *tok)
{
    struct saved s = {tok->be, tok->be_data};

    tok->be_data = NULL;
    tok->be = &role_backend;
    return s;
}

static void restore(ctok_token *tok, struct saved s)
{
    ctok_token_keys_drop(tok);
    role_backend.close(tok);
    tok->be = s.be;
    tok->be_data = s.be_data;
}

/* The token's configured auth source must not be read: it names a file that is not there. */
static int run_nocode(ctok_ctx *ctx, ctok_token *tok)
{
    struct ctok_ui ui = {count_prompt, NULL};
    struct saved saved;
    ctok_key *key;

    if (!ctok_token_needs_code(tok))
        FAIL("the configured backend already needs no code");
    saved = use_role_backend(tok);
    if (ctok_token_needs_code(tok))
        FAIL("ctok_token_needs_code says a code is needed");
    if (!ctok_token_login(tok, NULL, &ui))
        FAIL("login without a code failed");
    printf("login=%d logins=%d with_code=%d prompts=%d kept_code=%d\n", 1, logins, logins_with_code,
           prompts, tok->code != NULL);
    key = driver_find_key(ctx, tok, "role-key", 0);
    printf("sign=%d\n", key != NULL && sign_once(key));
    ctok_key_unref(key);
    if (!ctok_token_deactivate(tok) || ctok_token_is_active(tok))
        FAIL("deactivate");
    /* the tool's activate path: no code */
    printf("activate_nocode=%d", ctok_token_activate_code(tok, NULL, 0, "the tool", 0));
    printf(" logins=%d with_code=%d kept_code=%d active=%d\n", logins, logins_with_code,
           tok->code != NULL, ctok_token_is_active(tok));
    ctok_token_deactivate(tok);
    /* a code handed to a token that needs none is not passed on, nor kept */
    printf("activate_code=%d", ctok_token_login_code(tok, "stray", 5));
    printf(" logins=%d with_code=%d kept_code=%d\n", logins, logins_with_code, tok->code != NULL);
    restore(tok, saved);
    return 0;
}

static X509 *self_signed(EVP_PKEY *k, const char *cn)
{
    X509 *x = X509_new();
    X509_NAME *n = x != NULL ? X509_get_subject_name(x) : NULL;

    if (n == NULL || !X509_set_version(x, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 86400) || !X509_set_pubkey(x, k) ||
        !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) ||
        !X509_set_issuer_name(x, n) || !X509_sign(x, k, EVP_sha256())) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static int count_cert(ctok_token *tok, const struct ctok_object *o, void *arg)
{
    (void)tok;
    *(int *)arg += o->type == CTOK_OBJ_CERT && strcmp(o->label, "role-key") == 0;
    return 1;
}

/* The token's entry names a certificate folder; its backend keeps no certificates. */
static int run_putcert(ctok_token *tok)
{
    struct saved saved = use_role_backend(tok);
    EVP_PKEY *stranger = EVP_EC_gen("P-256");
    X509 *mine, *other;
    int before = 0, after = 0;

    if (!ctok_token_login(tok, NULL, NULL) || stranger == NULL ||
        (mine = self_signed(tok->be_data, "role-key")) == NULL ||
        (other = self_signed(stranger, "stranger")) == NULL)
        FAIL("login or certificates");
    ctok_token_enumerate(tok, count_cert, &before);
    printf("refused_other=%d", !ctok_token_put_cert(tok, "role-key", other));
    printf(" refused_path=%d", !ctok_token_put_cert(tok, "../role-key", mine));
    printf(" put=%d", ctok_token_put_cert(tok, "role-key", mine));
    ctok_token_enumerate(tok, count_cert, &after);
    printf(" certs_before=%d certs_after=%d\n", before, after);
    X509_free(mine);
    X509_free(other);
    EVP_PKEY_free(stranger);
    restore(tok, saved);
    return 0;
}

struct signer {
    ctok_ctx *ctx;
    ctok_token *tok;
    const char *alias;
    ctok_key *key;
    volatile int stop, in_login;
    double during_max_ms;
    int signs, failed, rounds_during, signs_during;
};

/* A server's worker: looks its key up (never logging in) and signs, again and again. */
static void *sign_loop(void *arg)
{
    struct signer *s = arg;

    while (!s->stop) {
        int during = s->in_login;
        double t0 = now_ms(), ms;
        ctok_key *k = driver_find_key(s->ctx, s->tok, s->alias, CTOK_FIND_NO_LOGIN | CTOK_FIND_USE);
        int ok = sign_once(k != NULL ? k : s->key);

        ctok_key_unref(k);
        ms = now_ms() - t0;
        s->signs += ok;
        s->failed += !ok;
        if (during && s->in_login) {
            s->rounds_during++;
            s->signs_during += ok;
            if (ms > s->during_max_ms)
                s->during_max_ms = ms;
        }
        usleep(1000);
    }
    return NULL;
}

static int run_slowlogin(ctok_ctx *ctx, ctok_token *tok, const char *alias)
{
    struct signer s = {ctx, tok, alias, NULL, 0, 0, 0, 0, 0, 0, 0};
    int signs_before;
    pthread_t th;
    double t0, login_ms;
    int ok;

    /* the first pass through the delay point is not delayed: this login */
    if (!ctok_token_login(tok, NULL, NULL) || (s.key = driver_find_key(ctx, tok, alias, 0)) == NULL)
        FAIL("first login or key load");
    pthread_create(&th, NULL, sign_loop, &s);
    usleep(200000);
    signs_before = s.signs;
    ctok_token_deactivate(tok);
    s.in_login = 1;
    t0 = now_ms();
    ok = ctok_token_login(tok, NULL, NULL); /* delayed by CTOK_TEST_DELAY_AT=token-login:ms */
    login_ms = now_ms() - t0;
    s.in_login = 0;
    usleep(200000);
    s.stop = 1;
    pthread_join(th, NULL);
    ctok_key_unref(s.key);
    /* a PKCS#11 token refuses signatures while inactive (promptly); a keystore's handle signs */
    printf("login=%d login_ms=%.0f signs_before=%d signs=%d rounds_during_login=%d "
           "signs_during_login=%d max_ms_during_login=%.1f\n",
           ok, login_ms, signs_before, s.signs, s.rounds_during, s.signs_during, s.during_max_ms);
    return 0;
}

struct loader {
    ctok_token *tok;
    const uint8_t *id;
    size_t id_len;
    ctok_key *key;
};

static void *load_one(void *arg)
{
    struct loader *l = arg;

    l->key = ctok_token_key(l->tok, l->id, l->id_len);
    return NULL;
}

static int run_cache(ctok_ctx *ctx, ctok_token *tok, const char *alias)
{
    ctok_key *a, *b, *c;
    struct loader l[8];
    pthread_t th[8];
    struct ctok_keyspec spec;
    int same = 1, status = 0;
    pid_t pid;

    if (!ctok_token_login(tok, NULL, NULL) || (a = driver_find_key(ctx, tok, alias, 0)) == NULL)
        FAIL("login or key load");
    b = driver_find_key(ctx, tok, alias, 0);
    printf("second_load_same=%d\n", a == b);
    ctok_key_unref(b);
    for (int i = 0; i < 8; i++) {
        l[i] = (struct loader){tok, a->id, a->id_len, NULL};
        pthread_create(&th[i], NULL, load_one, &l[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        same &= l[i].key == a;
        ctok_key_unref(l[i].key);
    }
    printf("threads_same=%d\n", same);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        /* a child has a handle of its own, and it works */
        ctok_key *k = ctok_token_key(tok, a->id, a->id_len);

        printf("child_same=%d child_sign=%d\n", k == a, k != NULL && sign_once(k));
        fflush(stdout);
        _exit(0);
    }
    waitpid(pid, &status, 0);
    b = ctok_token_key(tok, a->id, a->id_len);
    printf("parent_after_fork_same=%d\n", b == a);
    ctok_key_unref(b);
    if (!ctok_keyspec_parse("ec:P-256", &spec) || !ctok_token_generate(tok, "cache-new", &spec))
        FAIL("key generation");
    b = ctok_token_key(tok, a->id, a->id_len);
    printf("after_generate_same=%d old_handle_signs=%d\n", b == a, sign_once(a));
    ctok_token_deactivate(tok);
    if (!ctok_token_login(tok, NULL, NULL) || (c = ctok_token_key(tok, a->id, a->id_len)) == NULL)
        FAIL("login again");
    printf("after_deactivate_same=%d\n", c == b);
    ctok_key_unref(a);
    ctok_key_unref(b);
    ctok_key_unref(c);
    return 0;
}

/* The module disconnects after a few signatures (CTOK_SHIM_DISCONNECT_EVERY): ctok recovers. */
static int run_reconnect(ctok_ctx *ctx, ctok_token *tok, const char *alias)
{
    ctok_key *a, *b;
    int signs = 0;

    if (!ctok_token_login(tok, NULL, NULL) || (a = driver_find_key(ctx, tok, alias, 0)) == NULL)
        FAIL("login or key load");
    for (int i = 0; i < 10; i++)
        signs += sign_once(a);
    b = ctok_token_key(tok, a->id, a->id_len);
    printf("signs=%d after_reconnect_same=%d new_handle_signs=%d\n", signs, a == b,
           b != NULL && sign_once(b));
    ctok_key_unref(a);
    ctok_key_unref(b);
    return 0;
}

/*
 * Deactivation ends the token's login: activated with its code (auth file), deactivated,
 * a wrong code is then rejected and the right one accepted. A PKCS#11 module that was never
 * logged out answers any C_Login with CKR_USER_ALREADY_LOGGED_IN.
 */
static int run_relogin(ctok_token *tok, const char *wrong, const char *right)
{
    if (!ctok_token_login(tok, NULL, NULL))
        FAIL("login");
    if (!ctok_token_deactivate(tok) || ctok_token_is_active(tok))
        FAIL("deactivate");
    printf("wrong_after_deactivate=%d\n",
           ctok_token_activate_code(tok, wrong, strlen(wrong), "the test", 0) > 0);
    printf("active_after_wrong=%d\n", ctok_token_is_active(tok));
    printf("right_after_deactivate=%d\n",
           ctok_token_activate_code(tok, right, strlen(right), "the test", 0) > 0);
    return 0;
}

int main(int argc, char **argv)
{
    ctok_ctx *ctx;
    ctok_token *tok;
    int rc = 2;

    if (argc < 4)
        return 2;
    ctok_err_set_sink(driver_sink);
    ctok_debug_on = getenv("CTOK_DEBUG") != NULL;
    ctx = ctok_ctx_new(NULL, NULL, argv[1]);
    if (ctx == NULL || !ctok_ctx_load(ctx) ||
        (tok = ctok_ctx_token_find(ctx, argv[2], NULL)) == NULL)
        return 2;
    if (strcmp(argv[3], "nocode") == 0)
        rc = run_nocode(ctx, tok);
    else if (strcmp(argv[3], "slowlogin") == 0 && argc > 4)
        rc = run_slowlogin(ctx, tok, argv[4]);
    else if (strcmp(argv[3], "reconnect") == 0 && argc > 4)
        rc = run_reconnect(ctx, tok, argv[4]);
    else if (strcmp(argv[3], "putcert") == 0)
        rc = run_putcert(tok);
    else if (strcmp(argv[3], "cache") == 0 && argc > 4)
        rc = run_cache(ctx, tok, argv[4]);
    else if (strcmp(argv[3], "relogin") == 0 && argc > 5)
        rc = run_relogin(tok, argv[4], argv[5]);
    ctok_ctx_free(ctx);
    return rc;
}

/*
 * Many threads make their first use of one token at once, through the token API (linked
 * against the token layer and its backends), the way worker threads of a server do: each
 * finds the key (the token logs in with its configured code), loads a key handle and signs,
 * ROUNDS times, each round on a fresh context. Built with -fsanitize=thread it shows races on the token's
 * state (active, code). Prints ok=<signatures> failed=<failures>.
 *   token_threads CONFIG TOKEN KEY THREADS ROUNDS
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "token.h"

struct job {
    ctok_ctx *ctx;
    const char *token, *key;
    int ok, failed;
};

static void *worker(void *arg)
{
    struct job *j = arg;
    ctok_token *tok = ctok_ctx_token_find(j->ctx, j->token, NULL);
    struct ctok_uri u = {0};
    struct ctok_found *f = NULL;
    size_t n = 0;
    ctok_key *key = NULL;
    uint8_t dgst[32] = {7}, sig[1024];
    size_t siglen = sizeof(sig);
    struct ctok_sig_params sp = {RSA_PKCS1_PADDING, EVP_sha256(), EVP_sha256(), 32, NULL, 0};

    u.token = (char *)j->token;
    u.object = (char *)j->key;
    u.types = CTOK_OBJ_PRIVATE;
    if (tok != NULL && ctok_token_login(tok, NULL, NULL) && ctok_token_is_active(tok) &&
        ctok_find(j->ctx, &u, CTOK_OBJ_PRIVATE, NULL, &f, &n) && n > 0)
        key = ctok_token_key(tok, f[0].id, f[0].id_len);
    ctok_found_free(f, n);
    if (key != NULL && ctok_key_sign(key, &sp, dgst, sizeof(dgst), sig, &siglen))
        j->ok++;
    else
        j->failed++;
    ctok_key_unref(key);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads, rounds, ok = 0, failed = 0;

    if (argc != 6)
        return 2;
    threads = atoi(argv[4]);
    rounds = atoi(argv[5]);
    for (int r = 0; r < rounds; r++) {
        ctok_ctx *ctx = ctok_ctx_new(NULL, NULL, argv[1]);
        pthread_t th[64];
        struct job jobs[64];

        if (ctx == NULL || !ctok_ctx_load(ctx) || threads > 64)
            return 3;
        for (int i = 0; i < threads; i++) {
            jobs[i] = (struct job){ctx, argv[2], argv[3], 0, 0};
            pthread_create(&th[i], NULL, worker, &jobs[i]);
        }
        for (int i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            ok += jobs[i].ok;
            failed += jobs[i].failed;
        }
        ctok_ctx_free(ctx);
    }
    printf("ok=%d failed=%d\n", ok, failed);
    return failed == 0 ? 0 : 1;
}

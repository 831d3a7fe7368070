/*
 * p11_errqueue: what an application finds on OpenSSL's error queue after ctok's work
 * (issue 11 item 4). Loads every object of a URI through OSSL_STORE (default + ctok), then
 * signs once with each private key; after each successful step the thread's error queue
 * must be empty. Then one signature that must fail (a 100-byte "digest" for SHA-256): its
 * errors are printed, so the caller can check they are ctok's own and nothing stale.
 * Built by tests/test_p11_conform_obj.py with gcc (gcc p11_errqueue.c -lcrypto).
 *
 *   p11_errqueue PROVIDER_PATH URI
 *
 * Prints lines: "load keys=N queue=M", per key "sign TYPE ok=1 queue=M", then
 * "fail ok=0" and the failure's errors on stdout (ERR_print_errors_fp). Exit 0 when it
 * got that far.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/store.h>

static int queued(void)
{
    int n = 0;

    ERR_set_mark();
    while (ERR_get_error() != 0)
        n++;
    ERR_pop_to_mark();
    return n;
}

static int sign(EVP_PKEY *k, const unsigned char *tbs, size_t tbslen)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    int ok = c != NULL && EVP_PKEY_sign_init(c) > 0;

    if (ok && !EVP_PKEY_is_a(k, "ED25519"))
        ok = EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) > 0;
    ok = ok && EVP_PKEY_sign(c, sig, &siglen, tbs, tbslen) > 0;
    EVP_PKEY_CTX_free(c);
    return ok;
}

int main(int argc, char **argv)
{
    static const unsigned char dgst[100] = {1};
    EVP_PKEY *keys[32];
    size_t n = 0;
    OSSL_STORE_CTX *s;

    if (argc != 3)
        return fprintf(stderr, "usage: p11_errqueue PROVIDER_PATH URI\n"), 2;
    OSSL_PROVIDER_set_default_search_path(NULL, argv[1]);
    if (OSSL_PROVIDER_load(NULL, "ctok") == NULL || OSSL_PROVIDER_load(NULL, "default") == NULL)
        return ERR_print_errors_fp(stderr), 2;
    ERR_clear_error();
    s = OSSL_STORE_open(argv[2], NULL, NULL, NULL, NULL);
    while (s != NULL && !OSSL_STORE_eof(s)) {
        OSSL_STORE_INFO *i = OSSL_STORE_load(s);

        if (i != NULL && OSSL_STORE_INFO_get_type(i) == OSSL_STORE_INFO_PKEY && n < 32)
            keys[n++] = OSSL_STORE_INFO_get1_PKEY(i);
        OSSL_STORE_INFO_free(i);
    }
    OSSL_STORE_close(s);
    printf("load keys=%zu queue=%d\n", n, queued());
    ERR_print_errors_fp(stdout);
    for (size_t i = 0; i < n; i++) {
        /* Ed25519 signs the message itself: 32 bytes of it */
        int ok = sign(keys[i], dgst, 32);

        printf("sign %s ok=%d queue=%d\n", EVP_PKEY_get0_type_name(keys[i]), ok, queued());
        ERR_print_errors_fp(stdout);
    }
    for (size_t i = 0; i < n; i++) {
        if (EVP_PKEY_is_a(keys[i], "EC")) {
            printf("fail ok=%d\n", sign(keys[i], dgst, sizeof(dgst)));
            ERR_print_errors_fp(stdout);
            break;
        }
    }
    for (size_t i = 0; i < n; i++)
        EVP_PKEY_free(keys[i]);
    return 0;
}

/*
 * Decrypts a TLS 1.2 RSA key-exchange block with a token key, as libssl does (padding mode
 * RSA_PKCS1_WITH_TLS_PADDING): prints "ok=1 premaster=<hex>" or "ok=0". The test compares
 * the premaster with what it encrypted: a good block gives it back; a bad one, 48 random
 * bytes and still ok=1 (a TLS server must not tell the difference).
 *   tls_premaster PROVIDER_PATH KEY_URI CIPHERTEXT_FILE CLIENT_VERSION(hex)
 */
#include <stdio.h>
#include <stdlib.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

#include "evp_driver.h"

int main(int argc, char **argv)
{
    unsigned char in[1024], out[64];
    size_t inlen, outlen = sizeof(out);
    unsigned int version;
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *c;
    FILE *f;
    int pad = RSA_PKCS1_WITH_TLS_PADDING, ok;

    if (argc != 5)
        return 2;
    version = (unsigned int)strtoul(argv[4], NULL, 16);
    OSSL_PROVIDER_set_default_search_path(NULL, argv[1]);
    if (OSSL_PROVIDER_load(NULL, "ctok") == NULL || OSSL_PROVIDER_load(NULL, "default") == NULL)
        return 3;
    f = fopen(argv[3], "rb");
    if (f == NULL)
        return 4;
    inlen = fread(in, 1, sizeof(in), f);
    fclose(f);
    pkey = driver_load_pkey(argv[2]);
    if (pkey == NULL) {
        ERR_print_errors_fp(stderr);
        return 5;
    }
    OSSL_PARAM p[] = {OSSL_PARAM_int(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, &pad),
                      OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, &version),
                      OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, &version),
                      OSSL_PARAM_END};
    c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    ok = c != NULL && EVP_PKEY_decrypt_init_ex(c, p) > 0 &&
         EVP_PKEY_decrypt(c, out, &outlen, in, inlen) > 0;
    printf("ok=%d", ok);
    if (ok) {
        printf(" premaster=");
        for (size_t i = 0; i < outlen; i++)
            printf("%02x", out[i]);
    }
    printf(" errors=%lu\n", ERR_peek_error());
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(pkey);
    return 0;
}

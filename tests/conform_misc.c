/*
 * EVP calls the openssl CLI cannot make, on a token key (tests/test_p11_conform_misc.py):
 *   conform_misc derive PROVIDER_PATH KEY_URI PEER_PUBKEY_PEM OUTLEN [base]
 *     ECDH into a buffer of OUTLEN bytes, as programs call EVP_PKEY_derive (OpenSSL's ECDH
 *     truncates the shared secret to that buffer);
 *   conform_misc rawsign PROVIDER_PATH KEY_URI INPUT_FILE 0 [base]
 *     raw RSA (RSA_NO_PADDING) over the file's bytes, whatever their length (pkeyutl refuses
 *     input longer than a digest before the provider sees it).
 * Prints "ok=1 size=<queried size> len=<bytes written> out=<hex> errors=<n>" or "ok=0 ...".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

#include "evp_driver.h"

int main(int argc, char **argv)
{
    unsigned char out[600], in[600];
    size_t inlen = 0;
    int derive;
    size_t size = 0, outlen;
    EVP_PKEY *pkey = NULL, *peer;
    EVP_PKEY_CTX *c;
    FILE *f;
    int ok;

    if (argc < 6 || (outlen = strtoul(argv[5], NULL, 10)) > sizeof(out))
        return 2;
    derive = strcmp(argv[1], "derive") == 0;
    argv++;
    argc--;
    if (!derive)
        outlen = sizeof(out);
    OSSL_PROVIDER_set_default_search_path(NULL, argv[1]);
    if (OSSL_PROVIDER_load(NULL, "default") == NULL || OSSL_PROVIDER_load(NULL, "ctok") == NULL ||
        (argc > 5 && OSSL_PROVIDER_load(NULL, "base") == NULL))
        return 3;
    if ((f = fopen(argv[3], "r")) == NULL)
        return 4;
    peer = derive ? PEM_read_PUBKEY(f, NULL, NULL, NULL) : NULL;
    if (!derive)
        inlen = fread(in, 1, sizeof(in), f);
    fclose(f);
    pkey = driver_load_pkey(argv[2]);
    if (pkey == NULL || (derive && peer == NULL)) {
        ERR_print_errors_fp(stderr);
        return 5;
    }
    ERR_clear_error();
    c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (derive)
        ok = c != NULL && EVP_PKEY_derive_init(c) > 0 && EVP_PKEY_derive_set_peer(c, peer) > 0 &&
             EVP_PKEY_derive(c, NULL, &size) > 0 && EVP_PKEY_derive(c, out, &outlen) > 0;
    else
        ok = c != NULL && EVP_PKEY_sign_init(c) > 0 &&
             EVP_PKEY_CTX_set_rsa_padding(c, RSA_NO_PADDING) > 0 &&
             EVP_PKEY_sign(c, NULL, &size, in, inlen) > 0 &&
             EVP_PKEY_sign(c, out, &outlen, in, inlen) > 0;
    printf("ok=%d size=%zu len=%zu out=", ok, size, ok ? outlen : 0);
    for (size_t i = 0; ok && i < outlen; i++)
        printf("%02x", out[i]);
    printf(" errors=%lu\n", ERR_peek_error());
    ERR_print_errors_fp(stderr);
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(pkey);
    EVP_PKEY_free(peer);
    return 0;
}

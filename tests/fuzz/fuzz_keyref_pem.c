/*
 * Key-reference PEM through the real decoder path: ctok registered in-process as a
 * built-in provider next to `default`, the input handed to OSSL_DECODER as PEM, as any
 * application that reads a key file does. ctok's PEM step, its DER step and the lookup
 * behind them run on the token "fuzz" (fuzz_common.c), so references that resolve load
 * a real key.
 */
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "fuzz_common.h"

/* reused by every input (fuzz_decoder); the key it made is freed after each */
static OSSL_DECODER_CTX *dctx;
static EVP_PKEY *pkey;

void fuzz_init(void)
{
    dctx = fuzz_decoder(&pkey, "PEM", NULL, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    const uint8_t *p = data;
    size_t left = len;

    (void)OSSL_DECODER_from_data(dctx, &p, &left);
    EVP_PKEY_free(pkey);
    pkey = NULL;
    ERR_clear_error();
    return 0;
}

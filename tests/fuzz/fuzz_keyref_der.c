/*
 * The key-reference DER body (SEQUENCE { version INTEGER, uri UTF8String }): through
 * ctok_keyref_decode and the URI parser it feeds, then through the decoder's DER step
 * (input DER, structure ctok-uri) of ctok registered in-process, as fuzz_keyref_pem.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "fuzz_common.h"
#include "../../store/token.h"

/* reused by every input (fuzz_decoder); the key it made is freed after each */
static OSSL_DECODER_CTX *dctx;
static EVP_PKEY *pkey;

void fuzz_init(void)
{
    /*
     * Key type EC, the type of the token's key: 9 decoders in the chain (ctok's EC step and
     * default's EC DER decoders), 75 us an input. Without a type it is 45 decoders and
     * 320 us, a third of the million executions a full run wants. ctok's four DER steps
     * are one function (uri_decode) that differs only in the type it emits.
     */
    dctx = fuzz_decoder(&pkey, "DER", "ctok-uri", "EC");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    char *uri = ctok_keyref_decode(data, len);
    const uint8_t *p = data;
    size_t left = len;

    if (uri != NULL) {
        struct ctok_uri u;

        if (strlen(uri) == 0)
            abort(); /* an empty URI is no reference */
        if (ctok_uri_parse(uri, &u))
            ctok_uri_clear(&u);
        OPENSSL_free(uri);
    }
    (void)OSSL_DECODER_from_data(dctx, &p, &left);
    EVP_PKEY_free(pkey);
    pkey = NULL;
    ERR_clear_error();
    return 0;
}

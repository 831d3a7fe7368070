/* Shared by the test drivers that use only libcrypto (ctok loaded as a provider). */
#ifndef CTOK_TESTS_EVP_DRIVER_H
#define CTOK_TESTS_EVP_DRIVER_H

#include <openssl/evp.h>
#include <openssl/store.h>

/* The first private key OSSL_STORE finds at uri (a ctok: or pkcs11: URI), or NULL. */
static EVP_PKEY *driver_load_pkey(const char *uri)
{
    OSSL_STORE_CTX *st = OSSL_STORE_open(uri, NULL, NULL, NULL, NULL);
    OSSL_STORE_INFO *info;
    EVP_PKEY *pkey = NULL;

    while (st != NULL && pkey == NULL && (info = OSSL_STORE_load(st)) != NULL) {
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(st);
    return pkey;
}

#endif

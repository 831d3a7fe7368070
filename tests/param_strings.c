/*
 * Hands one parameter to a token key's operation context the way a careless application may:
 * a UTF8 string whose data_size excludes the terminator, in a heap block with no NUL at all
 * (an OSSL_PARAM string is data_size bytes; nothing may read further), or a parameter of the
 * wrong type. Prints "set=1" with the value read back, or "set=0" (errors on stderr), per
 * parameter, each on a fresh context. Run under valgrind: a read past the block is an
 * "Invalid read".
 *   param_strings PROVIDER_DIR KEY_URI {sign|decrypt|derive PARAM utf8|int|octet VALUE}...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#include "evp_driver.h"

/* The value the context reports for the parameter, if it reports one. */
static void print_back(EVP_PKEY_CTX *c, const char *name)
{
    char s[80] = "";
    int i = 0;
    OSSL_PARAM q[2] = {OSSL_PARAM_END, OSSL_PARAM_END};

    q[0] = OSSL_PARAM_construct_int(name, &i);
    if (EVP_PKEY_CTX_get_params(c, q) && OSSL_PARAM_modified(q)) {
        printf(" value=%d", i);
        return;
    }
    q[0] = OSSL_PARAM_construct_utf8_string(name, s, sizeof(s));
    if (EVP_PKEY_CTX_get_params(c, q) && OSSL_PARAM_modified(q))
        printf(" value=%s", s);
}

/* One operation context, one parameter: prints "set=1 value=..." or "set=0". */
static int try_param(EVP_PKEY *pkey, const char *op, const char *name, const char *type,
                     const char *value)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    OSSL_PARAM p[2] = {OSSL_PARAM_END, OSSL_PARAM_END};
    size_t len = strlen(value);
    char *data = malloc(len > 0 ? len : 1);
    int iv, ok;

    if (c == NULL || data == NULL ||
        (strcmp(op, "sign") == 0      ? EVP_PKEY_sign_init(c)
         : strcmp(op, "decrypt") == 0 ? EVP_PKEY_decrypt_init(c)
                                      : EVP_PKEY_derive_init(c)) <= 0) {
        ERR_print_errors_fp(stderr);
        return 0;
    }
    /* exactly the value's bytes: no terminator anywhere in the block */
    memcpy(data, value, len);
    if (strcmp(type, "utf8") == 0) {
        /* by hand: the constructor calls strlen() for a size of 0 */
        p[0] = OSSL_PARAM_construct_utf8_string(name, data, 1);
        p[0].data_size = len;
    } else if (strcmp(type, "octet") == 0) {
        p[0] = OSSL_PARAM_construct_octet_string(name, data, len);
    } else {
        iv = atoi(value);
        p[0] = OSSL_PARAM_construct_int(name, &iv);
    }
    ok = EVP_PKEY_CTX_set_params(c, p);
    printf("%s %s %s: set=%d", op, name, type, ok > 0);
    if (ok > 0)
        print_back(c, name);
    printf("\n");
    fflush(stdout);
    if (ok <= 0) {
        fprintf(stderr, "%s %s %s: ", op, name, type);
        ERR_print_errors_fp(stderr);
    }
    ERR_clear_error();
    free(data);
    EVP_PKEY_CTX_free(c);
    return 1;
}

int main(int argc, char **argv)
{
    EVP_PKEY *pkey;
    int ok = 1;

    if (argc < 7 || (argc - 3) % 4 != 0)
        return 2;
    OSSL_PROVIDER_set_default_search_path(NULL, argv[1]);
    if (OSSL_PROVIDER_load(NULL, "ctok") == NULL || OSSL_PROVIDER_load(NULL, "default") == NULL)
        return 3;
    if ((pkey = driver_load_pkey(argv[2])) == NULL) {
        ERR_print_errors_fp(stderr);
        return 5;
    }
    for (int i = 3; ok && i + 3 < argc; i += 4)
        ok = try_param(pkey, argv[i], argv[i + 1], argv[i + 2], argv[i + 3]);
    EVP_PKEY_free(pkey);
    return ok ? 0 : 6;
}

/*
 * PKCS#11 key-generation attribute files (SunPKCS11 syntax, p11/keygen.c). The parser is
 * file-local there, so this target compiles keygen.c itself into the fuzzer: the real
 * code, reached without a token. Each input is applied as key generation would apply it,
 * for a private RSA key and a public EdDSA key.
 */
#include "../../p11/keygen.c"

#include "fuzz_common.h"

static const char *path;

void fuzz_init(void)
{
    path = fuzz_path("attributes.cfg");
}

static void apply(CK_OBJECT_CLASS cls, CK_KEY_TYPE kt)
{
    struct tmpl t;

    memset(&t, 0, sizeof(t));
    (void)apply_file("fuzz", path, cls, kt, &t);
    if (t.n > MAX_ATTRS)
        abort();
    for (size_t i = 0; i < t.n; i++)
        if (t.a[i].ulValueLen != sizeof(CK_BBOOL) || *(CK_BBOOL *)t.a[i].pValue > 1)
            abort(); /* only booleans, each true or false */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    fuzz_write(path, data, len);
    apply(CKO_PRIVATE_KEY, CKK_RSA);
    apply(CKO_PUBLIC_KEY, CKK_EC_EDWARDS);
    ERR_clear_error();
    return 0;
}

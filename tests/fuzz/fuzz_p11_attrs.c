/*
 * PKCS#11 key-generation attribute files (SunPKCS11 syntax, p11/keygen.c). The parser is
 * file-local there, so this target compiles keygen.c itself into the fuzzer: the real
 * code, reached without a token. Each input is applied as key generation would apply it,
 * for a private RSA key and a public EdDSA key.
 */
#include "../../p11/keygen.c"

#include "fuzz_common.h"

static const char *path;

/* The number of attributes set, or -1 if the file is refused. */
static int apply(CK_OBJECT_CLASS cls, CK_KEY_TYPE kt)
{
    struct tmpl t;
    int ok;

    memset(&t, 0, sizeof(t));
    ok = apply_file("fuzz", path, cls, kt, &t);
    if (t.n > MAX_ATTRS)
        abort();
    for (size_t i = 0; i < t.n; i++)
        if (t.a[i].ulValueLen != sizeof(CK_BBOOL) || *(CK_BBOOL *)t.a[i].pValue > 1)
            abort(); /* only booleans, each true or false */
    return ok ? (int)t.n : -1;
}

void fuzz_init(void)
{
    static const char valid[] = "attributes(*, CKO_PRIVATE_KEY, *) = {\n  CKA_SIGN = true\n}\n";

    path = fuzz_path("attributes.cfg");
    fuzz_write(path, (const uint8_t *)valid, strlen(valid));
    if (apply(CKO_PRIVATE_KEY, CKK_RSA) != 1)
        fuzz_die("a valid attribute file is refused: the target would fuzz nothing");
    ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    fuzz_write(path, data, len);
    (void)apply(CKO_PRIVATE_KEY, CKK_RSA);
    (void)apply(CKO_PUBLIC_KEY, CKK_EC_EDWARDS);
    ERR_clear_error();
    return 0;
}

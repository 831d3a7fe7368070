/*
 * The token types a program offers: the one place that names backends. Linked into each
 * program (provider, tool, test drivers), not into the token layer's library, so that library
 * links no backend; a new type is one line here and its library in CMakeLists.txt.
 */
#include "backend.h"

extern const struct ctok_backend ctok_pkcs12_backend;
extern const struct ctok_backend ctok_pkcs11_backend;
extern const struct ctok_backend ctok_awskms_backend;
extern const struct ctok_backend ctok_azurekv_backend;

/* one line a type (clang-format would pack them into one) */
/* clang-format off */
const struct ctok_backend *const ctok_backends[] = {
    &ctok_pkcs12_backend,
    &ctok_pkcs11_backend,
    &ctok_awskms_backend,
    &ctok_azurekv_backend,
    NULL,
};
/* clang-format on */

/* p11-kit's URI functions loaded on first use: see p11kit_lazy.h for why. */
#include "err.h"
#include "lazylib.h"
#include "p11kit_lazy.h"

#ifndef CTOK_P11KIT_SONAME
#define CTOK_P11KIT_SONAME "libp11-kit.so.0"
#endif

static struct {
    P11KitUri *(*uri_new)(void);
    void (*uri_free)(P11KitUri *);
    int (*uri_parse)(const char *, P11KitUriType, P11KitUri *);
    int (*uri_format)(P11KitUri *, P11KitUriType, char **);
    const char *(*uri_message)(int);
    CK_ATTRIBUTE_PTR (*uri_get_attribute)(P11KitUri *, CK_ATTRIBUTE_TYPE);
    CK_TOKEN_INFO_PTR (*uri_get_token_info)(P11KitUri *);
    const char *(*uri_get_pin_value)(const P11KitUri *);
    const char *(*uri_get_pin_source)(const P11KitUri *);
    const char *(*uri_get_module_name)(const P11KitUri *);
    const char *(*uri_get_module_path)(const P11KitUri *);
    int (*uri_match_token_info)(const P11KitUri *, const CK_TOKEN_INFO *);
    int (*uri_match_module_info)(const P11KitUri *, const CK_INFO *);
} fn;

static const struct ctok_lazysym syms[] = {
    {"p11_kit_uri_new", (void **)&fn.uri_new},
    {"p11_kit_uri_free", (void **)&fn.uri_free},
    {"p11_kit_uri_parse", (void **)&fn.uri_parse},
    {"p11_kit_uri_format", (void **)&fn.uri_format},
    {"p11_kit_uri_message", (void **)&fn.uri_message},
    {"p11_kit_uri_get_attribute", (void **)&fn.uri_get_attribute},
    {"p11_kit_uri_get_token_info", (void **)&fn.uri_get_token_info},
    {"p11_kit_uri_get_pin_value", (void **)&fn.uri_get_pin_value},
    {"p11_kit_uri_get_pin_source", (void **)&fn.uri_get_pin_source},
    {"p11_kit_uri_get_module_name", (void **)&fn.uri_get_module_name},
    {"p11_kit_uri_get_module_path", (void **)&fn.uri_get_module_path},
    {"p11_kit_uri_match_token_info", (void **)&fn.uri_match_token_info},
    {"p11_kit_uri_match_module_info", (void **)&fn.uri_match_module_info},
};
/* parsed URIs live as long as the lookups and configs that hold them */
static struct ctok_lazylib lib = CTOK_LAZYLIB(CTOK_P11KIT_SONAME, syms);

/* the maker: loads first; every other call takes what it made */
P11KitUri *ctok_p11kit_uri_new(void)
{
    if (!ctok_lazylib_ready(&lib)) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "pkcs11: URIs need p11-kit: %s", lib.error);
        return NULL;
    }
    return fn.uri_new();
}

void ctok_p11kit_uri_free(P11KitUri *uri)
{
    if (uri != NULL)
        fn.uri_free(uri);
}

int ctok_p11kit_uri_parse(const char *string, P11KitUriType uri_type, P11KitUri *uri)
{
    return fn.uri_parse(string, uri_type, uri);
}

int ctok_p11kit_uri_format(P11KitUri *uri, P11KitUriType uri_type, char **string)
{
    return fn.uri_format(uri, uri_type, string);
}

/* a code only a loaded p11-kit returned */
const char *ctok_p11kit_uri_message(int code)
{
    return fn.uri_message(code);
}

CK_ATTRIBUTE_PTR ctok_p11kit_uri_get_attribute(P11KitUri *uri, CK_ATTRIBUTE_TYPE attr_type)
{
    return fn.uri_get_attribute(uri, attr_type);
}

CK_TOKEN_INFO_PTR ctok_p11kit_uri_get_token_info(P11KitUri *uri)
{
    return fn.uri_get_token_info(uri);
}

const char *ctok_p11kit_uri_get_pin_value(const P11KitUri *uri)
{
    return fn.uri_get_pin_value(uri);
}

const char *ctok_p11kit_uri_get_pin_source(const P11KitUri *uri)
{
    return fn.uri_get_pin_source(uri);
}

const char *ctok_p11kit_uri_get_module_name(const P11KitUri *uri)
{
    return fn.uri_get_module_name(uri);
}

const char *ctok_p11kit_uri_get_module_path(const P11KitUri *uri)
{
    return fn.uri_get_module_path(uri);
}

int ctok_p11kit_uri_match_token_info(const P11KitUri *uri, const CK_TOKEN_INFO *token_info)
{
    return fn.uri_match_token_info(uri, token_info);
}

int ctok_p11kit_uri_match_module_info(const P11KitUri *uri, const CK_INFO *info)
{
    return fn.uri_match_module_info(uri, info);
}

/*
 * p11-kit's RFC 7512 URI functions, loaded on first use. ctok.so does not link libp11-kit:
 * its dlopen, with libffi, cost every process that loads ctok (RTLD_NOW binds all imports)
 * though only pkcs11: URIs use it (docs/DESIGN.md, "Start-up and idle"). Include this instead
 * of <p11-kit/uri.h> (the types still come from it): the p11_kit_uri_* names below then call
 * through a table that dlopen("libp11-kit.so.0") fills once per process. p11_kit_uri_new loads
 * it first and, when it cannot, raises one error naming the library and the cause and returns
 * NULL; p11_kit_uri_free accepts NULL; the rest takes a P11KitUri only a loaded p11-kit made.
 * The token layer owns it (store/uri.c parses pkcs11: URIs); the PKCS#11 backend uses it too.
 */
#ifndef CTOK_STORE_P11KIT_LAZY_H
#define CTOK_STORE_P11KIT_LAZY_H

#include <p11-kit/uri.h>

P11KitUri *ctok_p11kit_uri_new(void);
void ctok_p11kit_uri_free(P11KitUri *uri);
int ctok_p11kit_uri_parse(const char *string, P11KitUriType uri_type, P11KitUri *uri);
int ctok_p11kit_uri_format(P11KitUri *uri, P11KitUriType uri_type, char **string);
const char *ctok_p11kit_uri_message(int code);
CK_ATTRIBUTE_PTR ctok_p11kit_uri_get_attribute(P11KitUri *uri, CK_ATTRIBUTE_TYPE attr_type);
CK_TOKEN_INFO_PTR ctok_p11kit_uri_get_token_info(P11KitUri *uri);
const char *ctok_p11kit_uri_get_pin_value(const P11KitUri *uri);
const char *ctok_p11kit_uri_get_pin_source(const P11KitUri *uri);
const char *ctok_p11kit_uri_get_module_name(const P11KitUri *uri);
const char *ctok_p11kit_uri_get_module_path(const P11KitUri *uri);
int ctok_p11kit_uri_match_token_info(const P11KitUri *uri, const CK_TOKEN_INFO *token_info);
int ctok_p11kit_uri_match_module_info(const P11KitUri *uri, const CK_INFO *info);

#define p11_kit_uri_new ctok_p11kit_uri_new
#define p11_kit_uri_free ctok_p11kit_uri_free
#define p11_kit_uri_parse ctok_p11kit_uri_parse
#define p11_kit_uri_format ctok_p11kit_uri_format
#define p11_kit_uri_message ctok_p11kit_uri_message
#define p11_kit_uri_get_attribute ctok_p11kit_uri_get_attribute
#define p11_kit_uri_get_token_info ctok_p11kit_uri_get_token_info
#define p11_kit_uri_get_pin_value ctok_p11kit_uri_get_pin_value
#define p11_kit_uri_get_pin_source ctok_p11kit_uri_get_pin_source
#define p11_kit_uri_get_module_name ctok_p11kit_uri_get_module_name
#define p11_kit_uri_get_module_path ctok_p11kit_uri_get_module_path
#define p11_kit_uri_match_token_info ctok_p11kit_uri_match_token_info
#define p11_kit_uri_match_module_info ctok_p11kit_uri_match_module_info

#endif

/*
 * Text encoder for ctok's keys (openssl storeutl -text, pkey -text, EVP_PKEY_print_*): a token
 * key says which token and object it is, with its ctok: URI, then its public parts; the
 * private key never leaves the token, so there is nothing more to print. A pass-through key
 * (an ordinary key that landed in ctok's keymgmt) prints exactly as the default provider does.
 */
#include <openssl/bio.h>
#include <openssl/evp.h>

#include "prov.h"

static OSSL_FUNC_encoder_newctx_fn txt_newctx;
static OSSL_FUNC_encoder_freectx_fn txt_freectx;
static OSSL_FUNC_encoder_does_selection_fn txt_does_selection;
static OSSL_FUNC_encoder_encode_fn txt_encode;

static void *txt_newctx(void *provctx)
{
    return provctx;
}

static void txt_freectx(void *vctx)
{
    (void)vctx;
}

static int txt_does_selection(void *provctx, int selection)
{
    (void)provctx;
    return (selection & OSSL_KEYMGMT_SELECT_ALL) != 0;
}

static int print_token_key(BIO *out, const struct ctok_pkey *k)
{
    ctok_token *tok = ctok_key_token(k->tok);
    const char *label = ctok_key_label(k->tok);
    size_t id_len;
    const uint8_t *id = ctok_key_id(k->tok, &id_len);
    char *uri = ctok_uri_make(ctok_token_name(tok), label, id, id_len, CTOK_OBJ_PRIVATE);
    char shown[256];
    int ok;

    ctok_prov_shown_label(label, shown, sizeof(shown));
    ok = uri != NULL &&
         BIO_printf(out, "ctok %s private key on token '%s', label '%s'\nURI: %s\n",
                    ctok_key_type_name(k->type), ctok_token_name(tok), shown, uri) > 0 &&
         EVP_PKEY_print_public(out, k->pkey, 0, NULL) > 0;

    OPENSSL_free(uri);
    return ok;
}

static int print_passthrough(BIO *out, const struct ctok_pkey *k, int selection)
{
    if (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY)
        return EVP_PKEY_print_private(out, k->pkey, 0, NULL) > 0;
    if (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY)
        return EVP_PKEY_print_public(out, k->pkey, 0, NULL) > 0;
    return EVP_PKEY_print_params(out, k->pkey, 0, NULL) > 0;
}

static int txt_encode(void *vctx, OSSL_CORE_BIO *cout, const void *obj_raw,
                      const OSSL_PARAM obj_abstract[], int selection, OSSL_PASSPHRASE_CALLBACK *cb,
                      void *cbarg)
{
    struct ctok_provctx *pctx = vctx;
    const struct ctok_pkey *k = obj_raw;
    OSSL_LIB_CTX *lc = ctok_prov_bio_libctx(pctx);
    BIO *out;
    int ok;

    (void)obj_abstract;
    (void)cb;
    (void)cbarg;
    if (k == NULL || k->pkey == NULL || lc == NULL ||
        (out = BIO_new_from_core_bio(lc, cout)) == NULL)
        return 0;
    ok = k->tok != NULL ? print_token_key(out, k) : print_passthrough(out, k, selection);
    BIO_free(out);
    return ok;
}

const OSSL_DISPATCH ctok_text_encoder_functions[] = {
    {OSSL_FUNC_ENCODER_NEWCTX, (void (*)(void))txt_newctx},
    {OSSL_FUNC_ENCODER_FREECTX, (void (*)(void))txt_freectx},
    {OSSL_FUNC_ENCODER_DOES_SELECTION, (void (*)(void))txt_does_selection},
    {OSSL_FUNC_ENCODER_ENCODE, (void (*)(void))txt_encode},
    {0, NULL}};

/*
 * A TEXT encoder for ctok's keys (EVP_PKEY_print_private/public/params, `openssl pkey -text`).
 * OpenSSL's own text encoder gets a provider key only by exporting it, and a token key refuses
 * to export its private half, so printing failed. Here a token key prints its size and token,
 * then its public part through the default provider's text encoder; no private material is
 * read unless the token allows export, and then the key prints as OpenSSL would print it.
 * Pass-through keys print exactly as OpenSSL prints them. Without import_object OpenSSL hands
 * this encoder only ctok's own keys: ordinary keys never reach it.
 */
#include <openssl/bio.h>
#include <openssl/core_dispatch.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>

#include "prov.h"

static OSSL_FUNC_encoder_newctx_fn enc_newctx;
static OSSL_FUNC_encoder_freectx_fn enc_freectx;
static OSSL_FUNC_encoder_does_selection_fn enc_does_selection;
static OSSL_FUNC_encoder_encode_fn enc_text;

static void *enc_newctx(void *provctx)
{
    return provctx; /* nothing of its own: the provider context serves */
}

static void enc_freectx(void *ctx)
{
    (void)ctx;
}

static int enc_does_selection(void *provctx, int selection)
{
    (void)provctx;
    return (selection & OSSL_KEYMGMT_SELECT_ALL) != 0;
}

/* pkey (child context) as the text encoders of the other providers print it. */
static int print_with_others(struct ctok_provctx *pctx, const EVP_PKEY *pkey, int selection,
                             BIO *out)
{
    OSSL_ENCODER_CTX *ec =
        OSSL_ENCODER_CTX_new_for_pkey(pkey, selection, "TEXT", NULL, pctx->propq);
    int ok =
        ec != NULL && OSSL_ENCODER_CTX_get_num_encoders(ec) > 0 && OSSL_ENCODER_to_bio(ec, out) > 0;

    OSSL_ENCODER_CTX_free(ec);
    return ok;
}

/*
 * Which token and object a token key is, with the ctok: URI that loads it again (storeutl
 * -text, pkey -text); control characters in the label are shown as '?', so a label cannot
 * forge a line of its own.
 */
static int print_where(const struct ctok_pkey *k, BIO *out)
{
    ctok_token *tok = ctok_key_token(k->tok);
    const char *label = ctok_key_label(k->tok);
    size_t id_len;
    const uint8_t *id = ctok_key_id(k->tok, &id_len);
    char *uri = ctok_uri_make(ctok_token_name(tok), label, id, id_len, CTOK_OBJ_PRIVATE);
    char shown[256];
    int ok;

    ctok_prov_shown_label(label, shown, sizeof(shown));
    ok =
        uri != NULL && BIO_printf(out,
                                  "Private-Key: (%d bit, on token '%s', not exportable)\nType: %s\n"
                                  "Label: %s\nURI: %s\n",
                                  EVP_PKEY_get_bits(k->pkey), ctok_token_name(tok),
                                  ctok_key_type_name(k->type), shown, uri) > 0;
    OPENSSL_free(uri);
    return ok;
}

static int print_token_key(struct ctok_provctx *pctx, const struct ctok_pkey *k, int selection,
                           BIO *out)
{
    ctok_token *tok = ctok_key_token(k->tok);
    EVP_PKEY *priv;
    int ok;

    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) == 0)
        return print_with_others(pctx, k->pkey, selection, out);
    if (ctok_token_allow_export(tok)) { /* as before: an exportable key prints whole */
        if ((priv = ctok_key_export_private(k->tok)) == NULL)
            return 0;
        ok = print_with_others(pctx, priv, selection, out);
        EVP_PKEY_free(priv);
        return ok;
    }
    if (!print_where(k, out))
        return 0;
    /* EVP_PKEY_print_private selects the private key without the public one: print that */
    selection = (selection & ~OSSL_KEYMGMT_SELECT_PRIVATE_KEY) | OSSL_KEYMGMT_SELECT_PUBLIC_KEY;
    return print_with_others(pctx, k->pkey, selection, out);
}

static int enc_text(void *ctx, OSSL_CORE_BIO *cout, const void *obj_raw,
                    const OSSL_PARAM obj_abstract[], int selection, OSSL_PASSPHRASE_CALLBACK *cb,
                    void *cbarg)
{
    struct ctok_provctx *pctx = ctx;
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
    ok = k->tok != NULL ? print_token_key(pctx, k, selection, out)
                        : print_with_others(pctx, k->pkey, selection, out);
    BIO_free(out);
    if (!ok && k->tok != NULL)
        CTOK_ERR(CTOK_R_INTERNAL, "token '%s', key '%s': the key could not be printed",
                 ctok_token_name(ctok_key_token(k->tok)), ctok_key_label(k->tok));
    return ok;
}

const OSSL_DISPATCH ctok_text_encoder_functions[] = {
    {OSSL_FUNC_ENCODER_NEWCTX, (void (*)(void))enc_newctx},
    {OSSL_FUNC_ENCODER_FREECTX, (void (*)(void))enc_freectx},
    {OSSL_FUNC_ENCODER_DOES_SELECTION, (void (*)(void))enc_does_selection},
    {OSSL_FUNC_ENCODER_ENCODE, (void (*)(void))enc_text},
    {0, NULL}};

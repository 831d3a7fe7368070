/*
 * The awskms backend's operations on keys (kms/awskms.h): Sign and Decrypt with the algorithm
 * the key and the parameters name, CreateKey + CreateAlias, ScheduleKeyDeletion, and the
 * account listing `ctok token discover` shows.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>

#include "awskms.h"
#include "sigcheck.h"

/* ---- signing and decryption ---- */

/* The KMS algorithm for a digest: 256, 384, 512 pick the first, second, third bit. */
static unsigned int by_digest(const EVP_MD *md, unsigned int sha256_bit)
{
    switch (md != NULL ? EVP_MD_get_type(md) : 0) {
    case NID_sha256:
        return sha256_bit;
    case NID_sha384:
        return sha256_bit << 1;
    case NID_sha512:
        return sha256_bit << 2;
    }
    return 0;
}

/* The hash an ECDSA key must sign with in KMS: its curve's. */
static const EVP_MD *curve_md(const char *spec)
{
    return strcmp(spec, "ECC_NIST_P256") == 0   ? EVP_sha256()
           : strcmp(spec, "ECC_NIST_P384") == 0 ? EVP_sha384()
           : strcmp(spec, "ECC_NIST_P521") == 0 ? EVP_sha512()
                                                : NULL;
}

/* The SigningAlgorithm for a request, or 0 with CTOK_R_UNSUPPORTED raised. */
static unsigned int sign_alg(ctok_key *key, const struct kms_keyh *h,
                             const struct ctok_sig_params *p, size_t tbslen)
{
    int pss;
    const EVP_MD *md =
        ctok_kms_sign_md("AWS KMS", key, h->object, curve_md(h->spec), h->spec, p, tbslen, &pss);

    return md == NULL                ? 0
           : key->type == CTOK_KT_EC ? by_digest(md, KMS_ECDSA_SHA_256)
           : pss                     ? by_digest(md, KMS_RSA_PSS_SHA_256)
                                     : by_digest(md, KMS_RSA_PKCS1_SHA_256);
}

/* One KMS call with a base64 input field, answered by a base64 output field into out. */
static int blob_call(ctok_key *key, const char *op, json_t *req, const char *in_field,
                     const uint8_t *in, size_t inlen, const char *out_field, uint8_t *out,
                     size_t *outlen)
{
    const struct kms_keyh *h = key->be_data;
    struct kms_tok *kt = KT(key->tok);
    size_t b64len = 4 * ((inlen + 2) / 3) + 1;
    char *b64 = OPENSSL_malloc(b64len);
    json_t *resp = NULL;
    int ok = 0;

    if (req == NULL || b64 == NULL)
        goto end;
    EVP_EncodeBlock((unsigned char *)b64, in, (int)inlen);
    if (json_object_set_new(req, "KeyId", json_string(h->key_id)) != 0 ||
        json_object_set_new(req, in_field, json_string(b64)) != 0 ||
        !ctok_aws_call(kt->aws, op, h->object, req, &resp))
        goto end;
    ok = ctok_kms_parse_blob(resp, out_field, out, outlen);
    if (!ok)
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': %s answered what ctok cannot read (or "
                 "more than the %zu bytes expected)",
                 ctok_token_name(key->tok), h->object, op, *outlen);
end:
    if (resp != NULL) {
        /* a Decrypt answer is a secret: its text does not outlive the call in our heap */
        char *v = (char *)json_string_value(json_object_get(resp, out_field));

        if (v != NULL)
            OPENSSL_cleanse(v, strlen(v));
    }
    json_decref(resp);
    json_decref(req);
    OPENSSL_clear_free(b64, b64len);
    return ok;
}

int ctok_awskms_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                     size_t tbslen, uint8_t *sig, size_t *siglen)
{
    const struct kms_keyh *h = key->be_data;
    unsigned int alg = sign_alg(key, h, p, tbslen);

    if (alg == 0)
        return 0;
    if ((h->algs & alg) == 0 && h->algs != 0) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': key '%s' (%s, %s) does not offer %s",
                 ctok_token_name(key->tok), h->object, h->spec, h->usage, ctok_kms_alg_name(alg));
        return 0;
    }
    return blob_call(key, "Sign",
                     json_pack("{s:s, s:s}", "MessageType", "DIGEST", "SigningAlgorithm",
                               ctok_kms_alg_name(alg)),
                     "Message", tbs, tbslen, "Signature", sig, siglen);
}

int ctok_awskms_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                        size_t inlen, uint8_t *out, size_t *outlen)
{
    const struct kms_keyh *h = key->be_data;
    const EVP_MD *md = p->oaep_md != NULL ? p->oaep_md : EVP_sha1();
    const EVP_MD *mgf1 = p->mgf1 != NULL ? p->mgf1 : md;
    int nid = EVP_MD_get_type(md);
    unsigned int alg = nid == NID_sha1 ? KMS_OAEP_SHA_1 : nid == NID_sha256 ? KMS_OAEP_SHA_256 : 0;

    if (p->pad != RSA_PKCS1_OAEP_PADDING || alg == 0 || EVP_MD_get_type(mgf1) != nid ||
        p->label_len != 0) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s': AWS KMS decrypts only RSA-OAEP with SHA-1 or SHA-256 "
                 "(MGF1 the same, no label)",
                 ctok_token_name(key->tok), h->object);
        return 0;
    }
    if ((h->algs & alg) == 0) {
        CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': key '%s' (%s, %s) does not offer %s",
                 ctok_token_name(key->tok), h->object, h->spec, h->usage, ctok_kms_alg_name(alg));
        return 0;
    }
    return blob_call(key, "Decrypt",
                     json_pack("{s:s}", "EncryptionAlgorithm", ctok_kms_alg_name(alg)),
                     "CiphertextBlob", in, inlen, "Plaintext", out, outlen);
}

/* ---- key management ---- */

static const char *key_spec(const struct ctok_keyspec *s)
{
    if (s->type == CTOK_KT_RSA)
        return s->bits == 2048   ? "RSA_2048"
               : s->bits == 3072 ? "RSA_3072"
               : s->bits == 4096 ? "RSA_4096"
                                 : NULL;
    if (s->type == CTOK_KT_EC && s->group != NULL) {
        if (strcmp(s->group, "P-256") == 0 || strcmp(s->group, "prime256v1") == 0 ||
            strcmp(s->group, "secp256r1") == 0)
            return "ECC_NIST_P256";
        if (strcmp(s->group, "P-384") == 0 || strcmp(s->group, "secp384r1") == 0)
            return "ECC_NIST_P384";
        if (strcmp(s->group, "P-521") == 0 || strcmp(s->group, "secp521r1") == 0)
            return "ECC_NIST_P521";
    }
    return NULL;
}

/* ScheduleKeyDeletion: 1 and note filled, or 0 with the error raised. */
static int schedule_deletion(struct kms_tok *kt, const char *key_id, const char *object, int days,
                             char *note, size_t notelen)
{
    json_t *req = json_pack("{s:s, s:i}", "KeyId", key_id, "PendingWindowInDays", days);
    json_t *resp = NULL;
    char date[11];
    int ok = req != NULL && ctok_aws_call(kt->aws, "ScheduleKeyDeletion", object, req, &resp);
    int got;

    json_decref(req);
    if (ok && !ctok_kms_parse_deletion(resp, date, &got)) {
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': ScheduleKeyDeletion answered what ctok cannot read",
                 ctok_token_name(kt->tok), object);
        ok = 0;
    }
    json_decref(resp);
    if (ok)
        snprintf(note, notelen,
                 "deletion scheduled for %s (%d-day waiting period; AWS CancelKeyDeletion undoes "
                 "it)",
                 date, got > 0 ? got : days);
    return ok;
}

int ctok_awskms_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec)
{
    struct kms_tok *kt = KT(tok);
    const char *ks = key_spec(spec), *why;
    char object[300], key_id[KMS_KEY_ID_MAX], desc[300], note[200];
    struct kms_pubkey k;
    json_t *req, *resp = NULL;
    int r;

    if (ks == NULL) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s': AWS KMS keys are rsa:2048, rsa:3072, rsa:4096, ec:P-256, "
                 "ec:P-384 or ec:P-521",
                 ctok_token_name(tok), alias);
        return 0;
    }
    /* an alias that exists is refused before a key is made: NotFound is the good answer */
    ctok_err_mark();
    r = ctok_awskms_lookup(kt, alias, NULL, &k, NULL, 0);
    if (r > 0) {
        ctok_err_clear_mark();
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': alias '%s' exists already (key %s)",
                 ctok_token_name(tok), alias, k.key_id);
        ctok_kms_pubkey_clear(&k);
        return 0;
    }
    if (strcmp(ctok_aws_last_error_type(), "NotFoundException") != 0) {
        ctok_err_clear_mark();
        return 0;
    }
    ctok_err_pop_to_mark();

    snprintf(object, sizeof(object), "alias/%s", alias);
    snprintf(desc, sizeof(desc), "ctok: %s", alias);
    req =
        json_pack("{s:s, s:s, s:s}", "KeySpec", ks, "KeyUsage", "SIGN_VERIFY", "Description", desc);
    r = req != NULL && ctok_aws_call(kt->aws, "CreateKey", object, req, &resp);
    json_decref(req);
    if (r && !ctok_kms_parse_create_key(resp, key_id)) {
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': key '%s': CreateKey answered what ctok cannot read",
                 ctok_token_name(tok), object);
        r = 0;
    }
    json_decref(resp);
    resp = NULL;
    if (!r)
        return 0;
    CTOK_DBG("token '%s': created key %s (%s) for '%s'", ctok_token_name(tok), key_id, ks, object);

    req = json_pack("{s:s, s:s}", "AliasName", object, "TargetKeyId", key_id);
    ctok_err_mark();
    r = req != NULL && ctok_aws_call(kt->aws, "CreateAlias", object, req, &resp);
    json_decref(req);
    json_decref(resp);
    if (r) {
        ctok_err_clear_mark();
        return 1;
    }
    /* the key has no name: do not leave it behind, and say what became of it */
    why = ctok_aws_last_error_type();
    snprintf(desc, sizeof(desc), "%s", why[0] ? why : "no answer");
    ctok_err_pop_to_mark();
    if (schedule_deletion(kt, key_id, key_id, ORPHAN_DELETION_DAYS, note, sizeof(note)))
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': CreateAlias failed (%s); the key just created (%s) has "
                 "no alias and its %s",
                 ctok_token_name(tok), object, desc, key_id, note);
    else
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': CreateAlias failed (%s) and the key just created (%s) "
                 "could not be scheduled for deletion: delete it in AWS",
                 ctok_token_name(tok), object, desc, key_id);
    return 0;
}

int ctok_awskms_remove(ctok_token *tok, const char *alias, char *note, size_t notelen)
{
    struct kms_tok *kt = KT(tok);
    char object[300];
    struct kms_pubkey k;

    if (ctok_awskms_lookup(kt, alias, NULL, &k, NULL, 0) < 0)
        return 0;
    snprintf(object, sizeof(object), "alias/%s", alias);
    if (!schedule_deletion(kt, k.key_id, object, kt->deletion_days, note, notelen)) {
        ctok_kms_pubkey_clear(&k);
        return 0;
    }
    ctok_awskms_cache_drop(kt, k.key_id);
    ctok_kms_pubkey_clear(&k);
    return 1;
}

/* The tool's discovery: every alias with its key id, KeySpec and KeyUsage (or why not). */
json_t *ctok_awskms_discover(ctok_token *tok)
{
    struct kms_tok *kt = KT(tok);
    struct kms_alias *v;
    size_t n;
    json_t *out;

    if (!ctok_awskms_list_aliases(kt, &v, &n) || (out = json_array()) == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        struct kms_pubkey k;
        json_t *e = json_pack("{s:s, s:s}", "alias", v[i].name, "key_id", v[i].key_id);
        int r;

        ctok_err_mark();
        r = ctok_awskms_lookup(kt, NULL, v[i].key_id, &k, NULL, 0);
        if (r > 0) {
            json_object_set_new(e, "key_spec", json_string(k.spec));
            json_object_set_new(e, "key_usage", json_string(k.usage));
            ctok_kms_pubkey_clear(&k);
        } else {
            json_object_set_new(e, "unavailable", json_string(ctok_aws_last_error_type()));
        }
        ctok_err_pop_to_mark();
        json_array_append_new(out, e);
    }
    ctok_kms_aliases_free(v, n);
    return out;
}

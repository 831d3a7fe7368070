/* The azurekv backend's key operations (azkv.h): signing, decryption, key management and
 * discovery. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "azkv.h"
#include "conf.h"
#include "sigcheck.h"

/* ---- signing and decryption ---- */

/* The hash an EC key signs with in Key Vault: its curve's. */
static const EVP_MD *curve_md(const char *crv)
{
    return strcmp(crv, "P-256") == 0   ? EVP_sha256()
           : strcmp(crv, "P-384") == 0 ? EVP_sha384()
           : strcmp(crv, "P-521") == 0 ? EVP_sha512()
                                       : NULL;
}

/* The JWA algorithm for a request into buf ("RS256", "PS384", "ES512"), or NULL with
 * CTOK_R_UNSUPPORTED raised. */
static const char *sign_alg(ctok_key *key, const struct az_keyh *h, const struct ctok_sig_params *p,
                            size_t tbslen, char buf[8])
{
    int pss;
    const EVP_MD *md =
        ctok_kms_sign_md("Key Vault", key, h->object, curve_md(h->crv), h->crv, p, tbslen, &pss);

    if (md == NULL)
        return NULL;
    snprintf(buf, 8, "%s%d",
             key->type == CTOK_KT_EC ? "ES"
             : pss                   ? "PS"
                                     : "RS",
             EVP_MD_get_size(md) * 8);
    return buf;
}

/* key_ops must allow op (a key without key_ops allows what the vault allows). */
static int op_allowed(ctok_key *key, const struct az_keyh *h, unsigned int op, const char *name)
{
    if (h->ops == 0 || (h->ops & op) != 0)
        return 1;
    CTOK_ERR(CTOK_R_UNSUPPORTED, "token '%s': key '%s': its key_ops do not include %s",
             ctok_token_name(key->tok), h->object, name);
    return 0;
}

/* POST /keys/<name>/<version>/<op> {alg, value: base64url(in)}, its value into out. */
static int value_call(ctok_key *key, const char *op, const char *alg, const uint8_t *in,
                      size_t inlen, uint8_t *out, size_t *outlen)
{
    const struct az_keyh *h = key->be_data;
    struct az_tok *kt = KT(key->tok);
    size_t b64len = 4 * ((inlen + 2) / 3) + 1;
    char *b64 = OPENSSL_malloc(b64len), path[REF_MAX + 32];
    json_t *req = NULL, *resp = NULL;
    int ok = 0;

    if (b64 == NULL)
        return 0;
    ctok_az_b64url_encode(in, inlen, b64);
    snprintf(path, sizeof(path), "/keys/%s/%s/%s", h->name, h->version, op);
    req = json_pack("{s:s, s:s}", "alg", alg, "value", b64);
    if (req == NULL || !ctok_az_call(kt->az, "POST", path, h->object, req, &resp))
        goto end;
    ok = ctok_az_parse_value(resp, out, outlen);
    if (!ok)
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': key '%s': %s answered what ctok cannot read (or more than the %zu "
                 "bytes expected)",
                 ctok_token_name(key->tok), h->object, op, *outlen);
end:
    if (resp != NULL) {
        /* a decrypt answer is a secret: its text does not outlive the call in our heap */
        char *v = (char *)json_string_value(json_object_get(resp, "value"));

        if (v != NULL)
            OPENSSL_cleanse(v, strlen(v));
    }
    json_decref(resp);
    json_decref(req);
    OPENSSL_clear_free(b64, b64len);
    return ok;
}

int ctok_azkv_sign(ctok_key *key, const struct ctok_sig_params *p, const uint8_t *tbs,
                   size_t tbslen, uint8_t *sig, size_t *siglen)
{
    const struct az_keyh *h = key->be_data;
    char buf[8];
    const char *alg = sign_alg(key, h, p, tbslen, buf);

    if (alg == NULL || !op_allowed(key, h, AZ_OP_SIGN, "sign"))
        return 0;
    /* ES*: JWS form r || s (the backend's sign_rs): the token layer converts */
    return value_call(key, "sign", alg, tbs, tbslen, sig, siglen);
}

int ctok_azkv_decrypt(ctok_key *key, const struct ctok_dec_params *p, const uint8_t *in,
                      size_t inlen, uint8_t *out, size_t *outlen)
{
    const struct az_keyh *h = key->be_data;
    const EVP_MD *md = p->oaep_md != NULL ? p->oaep_md : EVP_sha1();
    const EVP_MD *mgf1 = p->mgf1 != NULL ? p->mgf1 : md;
    int nid = EVP_MD_get_type(md);
    const char *alg = NULL;

    if (p->pad == RSA_PKCS1_PADDING)
        alg = "RSA1_5";
    else if (p->pad == RSA_PKCS1_OAEP_PADDING && EVP_MD_get_type(mgf1) == nid && p->label_len == 0)
        alg = nid == NID_sha1 ? "RSA-OAEP" : nid == NID_sha256 ? "RSA-OAEP-256" : NULL;
    if (alg == NULL || key->type != CTOK_KT_RSA) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': key '%s': Key Vault decrypts only with RSA keys, RSA-OAEP with "
                 "SHA-1 or SHA-256 (MGF1 the same, no label) or PKCS#1 v1.5",
                 ctok_token_name(key->tok), h->object);
        return 0;
    }
    return op_allowed(key, h, AZ_OP_DECRYPT, "decrypt") &&
           value_call(key, "decrypt", alg, in, inlen, out, outlen);
}

/* ---- key management ---- */

/* The create request for a key spec, or NULL with the error raised. */
static json_t *create_req(struct az_tok *kt, const char *alias, const struct ctok_keyspec *s)
{
    const char *hsm = kt->premium ? "-HSM" : "", *crv = NULL;
    char kty[16];

    if (s->type == CTOK_KT_EC && s->group != NULL) {
        if (strcmp(s->group, "P-256") == 0 || strcmp(s->group, "prime256v1") == 0 ||
            strcmp(s->group, "secp256r1") == 0)
            crv = "P-256";
        else if (strcmp(s->group, "P-384") == 0 || strcmp(s->group, "secp384r1") == 0)
            crv = "P-384";
        else if (strcmp(s->group, "P-521") == 0 || strcmp(s->group, "secp521r1") == 0)
            crv = "P-521";
    }
    if (crv != NULL) {
        snprintf(kty, sizeof(kty), "EC%s", hsm);
        return json_pack("{s:s, s:s, s:[s,s]}", "kty", kty, "crv", crv, "key_ops", "sign",
                         "verify");
    }
    if (s->type == CTOK_KT_RSA && (s->bits == 2048 || s->bits == 3072 || s->bits == 4096)) {
        snprintf(kty, sizeof(kty), "RSA%s", hsm);
        return json_pack("{s:s, s:i, s:[s,s]}", "kty", kty, "key_size", s->bits, "key_ops", "sign",
                         "verify");
    }
    CTOK_ERR(CTOK_R_UNSUPPORTED,
             "token '%s': key '%s': Key Vault keys are rsa:2048, rsa:3072, rsa:4096, ec:P-256, "
             "ec:P-384 or ec:P-521",
             ctok_token_name(kt->tok), alias);
    return NULL;
}

/*
 * Key Vault's create makes a new version of an existing name: so a name in use is refused
 * first (its GET answering KeyNotFound is the good answer). The new key may sign and verify
 * only (key_ops), as EJBCA's signing keys do.
 */
int ctok_azkv_generate(ctok_token *tok, const char *alias, const struct ctok_keyspec *spec)
{
    struct az_tok *kt = KT(tok);
    char path[AZ_NAME_MAX + 16];
    struct az_key k;
    json_t *req, *resp = NULL;
    int r;

    if (!ctok_az_name_ok(alias, 0)) {
        CTOK_ERR(CTOK_R_INVALID_ARG,
                 "token '%s': key '%s': a Key Vault key name is 1-127 letters, digits and '-'",
                 ctok_token_name(tok), alias);
        return 0;
    }
    if ((req = create_req(kt, alias, spec)) == NULL)
        return 0;
    ctok_err_mark();
    r = ctok_azkv_lookup(kt, alias, &k);
    if (r > 0) {
        ctok_err_clear_mark();
        CTOK_ERR(CTOK_R_DUPLICATE, "token '%s': key '%s' exists already (version %s)",
                 ctok_token_name(tok), alias, k.version);
        ctok_az_key_clear(&k);
        json_decref(req);
        return 0;
    }
    if (ctok_err_last_reason() != CTOK_R_NOT_FOUND) {
        ctok_err_clear_mark();
        json_decref(req);
        return 0;
    }
    ctok_err_pop_to_mark();
    snprintf(path, sizeof(path), "/keys/%s/create", alias);
    r = ctok_az_call(kt->az, "POST", path, alias, req, &resp);
    json_decref(req);
    if (r) {
        r = ctok_az_parse_key(resp, ctok_ctx_libctx(ctok_token_ctx(tok)),
                              ctok_ctx_propq(ctok_token_ctx(tok)), &k);
        if (!r)
            CTOK_ERR(CTOK_R_BACKEND,
                     "token '%s': key '%s': create answered what ctok cannot read (the key may "
                     "exist now)",
                     ctok_token_name(tok), alias);
        else
            CTOK_DBG("token '%s': created key '%s' version %s (%s)", ctok_token_name(tok), alias,
                     k.version, k.kty);
        if (r)
            ctok_az_key_clear(&k);
    }
    json_decref(resp);
    ctok_azkv_cache_drop(kt, alias);
    return r;
}

/* DELETE /keys/<name>: soft delete (recoverable until purged), as the note says. */
int ctok_azkv_remove(ctok_token *tok, const char *alias, char *note, size_t notelen)
{
    struct az_tok *kt = KT(tok);
    char path[AZ_NAME_MAX + 16], date[11], rid[300];
    json_t *resp = NULL;
    int ok;

    if (!ctok_az_name_ok(alias, 0)) {
        CTOK_ERR(CTOK_R_NOT_FOUND,
                 "token '%s': key '%s': a Key Vault key name is 1-127 letters, digits and '-'",
                 ctok_token_name(tok), alias);
        return 0;
    }
    snprintf(path, sizeof(path), "/keys/%s", alias);
    if (!ctok_az_call(kt->az, "DELETE", path, alias, NULL, &resp))
        return 0;
    ok = ctok_az_parse_deleted(resp, date, rid, sizeof(rid));
    json_decref(resp);
    ctok_azkv_cache_drop(kt, alias);
    if (!ok)
        snprintf(note, notelen, "deleted (the vault's answer says no more)");
    else if (date[0] != '\0')
        snprintf(note, notelen, "soft-deleted; purge scheduled for %s (recovery id %s)", date,
                 rid[0] ? rid : "none given");
    else
        snprintf(note, notelen, "deleted (the vault keeps no deleted keys: no recovery)");
    return 1;
}

/* The tool's discovery: every key with kty/crv/size, enabled, and whether a certificate of
 * its name exists. */
json_t *ctok_azkv_discover(ctok_token *tok)
{
    struct az_tok *kt = KT(tok);
    char **v, **cv = NULL;
    size_t n, cn = 0;
    json_t *out;

    if (!ctok_azkv_list_names(kt, "keys", &v, &n))
        return NULL;
    ctok_err_mark();
    if (!ctok_azkv_list_names(kt, "certificates", &cv, &cn))
        CTOK_DBG("token '%s': certificates not listed", ctok_token_name(tok));
    ctok_err_pop_to_mark();
    if ((out = json_array()) == NULL)
        goto end;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_pack("{s:s}", "name", v[i]);
        struct az_key k;
        int cert = 0;

        for (size_t j = 0; j < cn && !cert; j++)
            cert = strcmp(cv[j], v[i]) == 0;
        ctok_err_mark();
        if (ctok_azkv_lookup(kt, v[i], &k) > 0) {
            json_object_set_new(e, "version", json_string(k.version));
            json_object_set_new(e, "kty", json_string(k.kty));
            if (k.crv[0])
                json_object_set_new(e, "crv", json_string(k.crv));
            else if (k.bits)
                json_object_set_new(e, "key_size", json_integer(k.bits));
            json_object_set_new(e, "enabled", json_boolean(k.enabled));
            ctok_az_key_clear(&k);
        } else {
            json_object_set_new(e, "unavailable",
                                json_string(ctok_reason_string(ctok_err_last_reason())));
        }
        ctok_err_pop_to_mark();
        json_object_set_new(e, "certificate", json_boolean(cert));
        json_array_append_new(out, e);
    }
end:
    ctok_az_names_free(v, n);
    ctok_az_names_free(cv, cn);
    return out;
}

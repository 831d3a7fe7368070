/* Auth codes: files, environment variables and codes stored encrypted (AES-256-GCM). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "internal.h"

#define GCM_NONCE 12
#define GCM_TAG 16

/*
 * The one reader of auth-code files, for the provider and the tool alike (a code read two
 * ways is a wrong code sent by one of them): the file's bytes less one line ending ("\n" or
 * "\r\n"); nothing else is trimmed.
 */
int ctok_auth_file_read(const char *what, const char *path, char *buf, size_t bufsz, size_t *len)
{
    uint8_t *data;
    size_t n;

    if (!ctok_file_read(path, 1, CTOK_R_NO_CODE, what, &data, &n))
        return 0;
    if (n > 0 && data[n - 1] == '\n')
        n--;
    if (n > 0 && data[n - 1] == '\r')
        n--;
    if (n >= bufsz) {
        CTOK_ERR(CTOK_R_NO_CODE, "%s '%s' is too long (at most %zu bytes)", what, path, bufsz - 1);
        ctok_file_free(data, n);
        return 0;
    }
    memcpy(buf, data, n);
    buf[n] = '\0';
    *len = n;
    ctok_file_free(data, n);
    return 1;
}

int ctok_auth_read_file(const char *tokname, const char *path, char *buf, size_t bufsz, size_t *len)
{
    char what[160];

    BIO_snprintf(what, sizeof(what), "token '%s': auth file", tokname);
    return ctok_auth_file_read(what, path, buf, bufsz, len);
}

int ctok_master_key_read(const char *path, const char *tokname, uint8_t key[32])
{
    uint8_t *data;
    size_t n;
    char what[160];

    BIO_snprintf(what, sizeof(what), "token '%s': master key file", tokname);
    if (!ctok_file_read(path, 1, CTOK_R_NO_CODE, what, &data, &n))
        return 0;
    if (n == 32)
        memcpy(key, data, 32);
    ctok_file_free(data, n);
    if (n != 32) {
        CTOK_ERR(CTOK_R_CONFIG, "token '%s': master key '%s' must hold 32 bytes", tokname, path);
        return 0;
    }
    return 1;
}

static int gcm(int enc, const uint8_t key[32], const char *token_id, const uint8_t *nonce,
               const uint8_t *in, size_t inlen, uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    char aad[160];
    int n, ok = 0, aadlen = snprintf(aad, sizeof(aad), "ctok-auth-v1:%s", token_id);

    if (c == NULL || aadlen < 0 || (size_t)aadlen >= sizeof(aad))
        goto end;
    if (!EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce, enc) ||
        !EVP_CipherUpdate(c, NULL, &n, (const uint8_t *)aad, aadlen) ||
        !EVP_CipherUpdate(c, out, &n, in, (int)inlen))
        goto end;
    if (!enc && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, GCM_TAG, tag))
        goto end;
    if (EVP_CipherFinal_ex(c, out + n, &n) != 1)
        goto end;
    if (enc && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, GCM_TAG, tag))
        goto end;
    ok = 1;
end:
    EVP_CIPHER_CTX_free(c);
    return ok;
}

int ctok_auth_stored_decrypt(ctok_token *tok, const char *blob, char *buf, size_t bufsz,
                             size_t *len)
{
    uint8_t key[32], raw[CTOK_MAX_CODE + GCM_NONCE + GCM_TAG + 8];
    size_t blen = strlen(blob);
    int rawlen, pad = 0, ok = 0;

    if (blen > 4 * (sizeof(raw) / 3) - 4) {
        CTOK_ERR(CTOK_R_CONFIG, "token '%s': stored auth code is too long", tok->name);
        return 0;
    }
    rawlen = EVP_DecodeBlock(raw, (const uint8_t *)blob, (int)blen);
    while (blen > 0 && blob[blen - 1] == '=') {
        pad++;
        blen--;
    }
    rawlen -= pad;
    if (rawlen < GCM_NONCE + GCM_TAG || (size_t)(rawlen - GCM_NONCE - GCM_TAG) >= bufsz) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "token '%s': stored auth code is not valid base64 of "
                 "nonce||ciphertext||tag",
                 tok->name);
        return 0;
    }
    if (!ctok_master_key_read(tok->ctx->master_key, tok->name, key))
        return 0;
    *len = (size_t)rawlen - GCM_NONCE - GCM_TAG;
    if (!gcm(0, key, tok->id, raw, raw + GCM_NONCE, *len, (uint8_t *)buf, raw + GCM_NONCE + *len)) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "token '%s': stored auth code does not decrypt under master key "
                 "'%s' (wrong key or token id)",
                 tok->name, tok->ctx->master_key);
        OPENSSL_cleanse(buf, bufsz);
        goto end;
    }
    buf[*len] = '\0';
    ok = 1;
end:
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(raw, sizeof(raw));
    return ok;
}

char *ctok_auth_stored_encrypt(const uint8_t key[32], const char *token_id, const char *code,
                               size_t len)
{
    uint8_t raw[CTOK_MAX_CODE + GCM_NONCE + GCM_TAG];
    char *out;

    if (len > CTOK_MAX_CODE || RAND_bytes(raw, GCM_NONCE) != 1)
        return NULL;
    if (!gcm(1, key, token_id, raw, (const uint8_t *)code, len, raw + GCM_NONCE,
             raw + GCM_NONCE + len))
        return NULL;
    out = malloc(4 * ((len + GCM_NONCE + GCM_TAG + 2) / 3) + 1);
    if (out != NULL)
        EVP_EncodeBlock((uint8_t *)out, raw, (int)(len + GCM_NONCE + GCM_TAG));
    OPENSSL_cleanse(raw, sizeof(raw));
    return out;
}

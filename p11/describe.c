/* What a token says of itself: its pkcs11: URI (RFC 7512) and its mechanisms (pkcs11-tool -M). */
#include <stdlib.h>
#include <string.h>

#include "p11.h"
#include "../store/p11kit_lazy.h"

char *ctok_p11_token_info_uri(const CK_TOKEN_INFO *ti)
{
    P11KitUri *u = p11_kit_uri_new();
    char *s = NULL;

    if (u == NULL)
        return NULL;
    /* p11-kit formats model, manufacturer, serial and token, percent-encoded */
    memcpy(p11_kit_uri_get_token_info(u), ti, sizeof(*ti));
    if (p11_kit_uri_format(u, P11_KIT_URI_FOR_TOKEN, &s) != P11_KIT_URI_OK)
        s = NULL;
    p11_kit_uri_free(u);
    return s;
}

char *ctok_p11_token_uri(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);
    char *s = NULL;

    pthread_mutex_lock(&pt->lock);
    if (pt->have_slot)
        s = ctok_p11_token_info_uri(&pt->tinfo);
    pthread_mutex_unlock(&pt->lock);
    if (s == NULL)
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': its pkcs11: URI cannot be formatted",
                 ctok_token_name(tok));
    return s;
}

/* The names pkcs11-tool gives them: the CKM_ name without the prefix, '_' as '-'. */
#define M(x)                                                                                       \
    {                                                                                              \
        CKM_##x, #x                                                                                \
    }
static const struct {
    CK_MECHANISM_TYPE type;
    const char *name;
} names[] = {
    M(RSA_PKCS_KEY_PAIR_GEN),
    M(RSA_PKCS),
    M(RSA_9796),
    M(RSA_X_509),
    M(MD5_RSA_PKCS),
    M(SHA1_RSA_PKCS),
    M(RSA_PKCS_OAEP),
    M(RSA_X9_31_KEY_PAIR_GEN),
    M(RSA_PKCS_PSS),
    M(SHA1_RSA_PKCS_PSS),
    M(DSA_KEY_PAIR_GEN),
    M(DSA),
    M(DSA_SHA1),
    M(DSA_SHA224),
    M(DSA_SHA256),
    M(DSA_SHA384),
    M(DSA_SHA512),
    M(DH_PKCS_KEY_PAIR_GEN),
    M(DH_PKCS_DERIVE),
    M(SHA256_RSA_PKCS),
    M(SHA384_RSA_PKCS),
    M(SHA512_RSA_PKCS),
    M(SHA256_RSA_PKCS_PSS),
    M(SHA384_RSA_PKCS_PSS),
    M(SHA512_RSA_PKCS_PSS),
    M(SHA224_RSA_PKCS),
    M(SHA224_RSA_PKCS_PSS),
    M(DES_KEY_GEN),
    M(DES_ECB),
    M(DES_CBC),
    M(DES_CBC_PAD),
    M(DES2_KEY_GEN),
    M(DES3_KEY_GEN),
    M(DES3_ECB),
    M(DES3_CBC),
    M(DES3_CBC_PAD),
    M(DES3_CMAC),
    M(MD5),
    M(MD5_HMAC),
    M(SHA_1),
    M(SHA_1_HMAC),
    M(SHA256),
    M(SHA256_HMAC),
    M(SHA224),
    M(SHA224_HMAC),
    M(SHA384),
    M(SHA384_HMAC),
    M(SHA512),
    M(SHA512_HMAC),
    M(GENERIC_SECRET_KEY_GEN),
    M(DES_ECB_ENCRYPT_DATA),
    M(DES_CBC_ENCRYPT_DATA),
    M(DES3_ECB_ENCRYPT_DATA),
    M(DES3_CBC_ENCRYPT_DATA),
    M(AES_ECB_ENCRYPT_DATA),
    M(AES_CBC_ENCRYPT_DATA),
    M(ECDSA_KEY_PAIR_GEN),
    M(ECDSA),
    M(ECDSA_SHA1),
    M(ECDSA_SHA224),
    M(ECDSA_SHA256),
    M(ECDSA_SHA384),
    M(ECDSA_SHA512),
    M(ECDH1_DERIVE),
    M(ECDH1_COFACTOR_DERIVE),
    M(EC_EDWARDS_KEY_PAIR_GEN),
    M(EDDSA),
    M(AES_KEY_GEN),
    M(AES_ECB),
    M(AES_CBC),
    M(AES_CBC_PAD),
    M(AES_CTR),
    M(AES_GCM),
    M(AES_CMAC),
    M(AES_KEY_WRAP),
    M(DSA_PARAMETER_GEN),
    M(DH_PKCS_PARAMETER_GEN),
};
#undef M

/* The flags pkcs11-tool prints, in its order. */
static const struct {
    CK_FLAGS bit;
    const char *name;
} flag_names[] = {
    {CKF_HW, "hw"},
    {CKF_ENCRYPT, "encrypt"},
    {CKF_DECRYPT, "decrypt"},
    {CKF_DIGEST, "digest"},
    {CKF_SIGN, "sign"},
    {CKF_SIGN_RECOVER, "sign_recover"},
    {CKF_VERIFY, "verify"},
    {CKF_VERIFY_RECOVER, "verify_recover"},
    {CKF_GENERATE, "generate"},
    {CKF_GENERATE_KEY_PAIR, "generate_key_pair"},
    {CKF_WRAP, "wrap"},
    {CKF_UNWRAP, "unwrap"},
    {CKF_DERIVE, "derive"},
    {CKF_EC_F_P, "EC F_P"},
    {1UL << 21, "EC F_2M"}, /* CKF_EC_F_2M, CKF_EC_ECPARAMETERS: not in p11-kit's header */
    {1UL << 22, "EC parameters"},
    {CKF_EC_NAMEDCURVE, "EC OID"},
    {CKF_EC_UNCOMPRESS, "EC uncompressed"},
    {CKF_EC_COMPRESS, "EC compressed"},
};

static json_t *mechanism(CK_MECHANISM_TYPE t, const CK_MECHANISM_INFO *mi)
{
    char name[64];
    json_t *flags = json_array();
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]) && names[i].type != t; i++)
        ;
    if (i < sizeof(names) / sizeof(names[0])) {
        snprintf(name, sizeof(name), "%s", names[i].name);
        for (char *p = name; *p != '\0'; p++)
            *p = *p == '_' ? '-' : *p;
    } else {
        snprintf(name, sizeof(name), "mechtype-0x%lX", (unsigned long)t);
    }
    for (i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
        if (mi->flags & flag_names[i].bit)
            json_array_append_new(flags, json_string(flag_names[i].name));
    return json_pack("{s:s, s:I, s:I, s:I, s:o}", "name", name, "type", (json_int_t)t,
                     "min_key_size", (json_int_t)mi->ulMinKeySize, "max_key_size",
                     (json_int_t)mi->ulMaxKeySize, "flags", flags);
}

/* In a region, lock held. */
static json_t *list_mechanisms(struct p11_tok *pt)
{
    CK_MECHANISM_TYPE *types = NULL;
    CK_ULONG n = 0;
    CK_RV rv;
    json_t *list = NULL;

    if (pt->gen != pt->m->generation || !pt->have_slot) {
        ctok_p11_session_reset(pt);
        if (!ctok_p11_find_slot(pt))
            return NULL;
    }
    rv = P11_CALL(pt->m, C_GetMechanismList, (pt->slot, NULL, &n));
    if (rv == CKR_OK && n > 0) {
        if ((types = calloc(n, sizeof(*types))) == NULL)
            rv = CKR_HOST_MEMORY;
        else
            rv = P11_CALL(pt->m, C_GetMechanismList, (pt->slot, types, &n));
    }
    if (rv == CKR_OK)
        list = json_array();
    for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++) {
        /* zeroed: SoftHSM adds flags to what it finds there (measured: CKF_DERIVE of the
         * previous mechanism showed on AES-CBC-PAD) */
        CK_MECHANISM_INFO mi = {0};

        rv = P11_CALL(pt->m, C_GetMechanismInfo, (pt->slot, types[i], &mi));
        if (rv == CKR_OK)
            json_array_append_new(list, mechanism(types[i], &mi));
    }
    free(types);
    if (rv != CKR_OK) {
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': listing its mechanisms failed: %s",
                 ctok_token_name(pt->tok), ctok_p11_rv_name(rv));
        json_decref(list);
        return NULL;
    }
    return list;
}

json_t *ctok_p11_mechanisms(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);
    json_t *list;

    if (!ctok_p11_enter_token(pt))
        return NULL;
    pthread_mutex_lock(&pt->lock);
    list = list_mechanisms(pt);
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return list;
}

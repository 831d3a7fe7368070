/*
 * The mechanisms a slot offers: those of ctok's signing, decryption and key agreement paths
 * whose raw mechanism the token has. A PKCS#11 token says which it has (the token layer's mechanism
 * list); any other token works with what its keys are, so it offers the mechanisms of the key
 * types it holds (a KMS token: only what its keys sign and decrypt).
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/rsa.h>

#include "p11mod.h"

static const struct mech_def {
    CK_MECHANISM_TYPE type;
    enum ctok_key_type kt;
    CK_MECHANISM_TYPE raw; /* what the token must offer for op */
    int pss;
    CK_FLAGS op; /* CKF_SIGN, CKF_DECRYPT or CKF_DERIVE */
} defs[] = {
    {CKM_RSA_PKCS, CTOK_KT_RSA, CKM_RSA_PKCS, 0, CKF_SIGN},
    {CKM_SHA256_RSA_PKCS, CTOK_KT_RSA, CKM_RSA_PKCS, 0, CKF_SIGN},
    {CKM_SHA384_RSA_PKCS, CTOK_KT_RSA, CKM_RSA_PKCS, 0, CKF_SIGN},
    {CKM_SHA512_RSA_PKCS, CTOK_KT_RSA, CKM_RSA_PKCS, 0, CKF_SIGN},
    {CKM_RSA_PKCS_PSS, CTOK_KT_RSA, CKM_RSA_PKCS_PSS, 1, CKF_SIGN},
    {CKM_SHA256_RSA_PKCS_PSS, CTOK_KT_RSA, CKM_RSA_PKCS_PSS, 1, CKF_SIGN},
    {CKM_SHA384_RSA_PKCS_PSS, CTOK_KT_RSA, CKM_RSA_PKCS_PSS, 1, CKF_SIGN},
    {CKM_SHA512_RSA_PKCS_PSS, CTOK_KT_RSA, CKM_RSA_PKCS_PSS, 1, CKF_SIGN},
    {CKM_ECDSA, CTOK_KT_EC, CKM_ECDSA, 0, CKF_SIGN},
    {CKM_ECDSA_SHA256, CTOK_KT_EC, CKM_ECDSA, 0, CKF_SIGN},
    {CKM_ECDSA_SHA384, CTOK_KT_EC, CKM_ECDSA, 0, CKF_SIGN},
    {CKM_ECDSA_SHA512, CTOK_KT_EC, CKM_ECDSA, 0, CKF_SIGN},
    {CKM_EDDSA, CTOK_KT_ED25519, CKM_EDDSA, 0, CKF_SIGN},
    {CKM_RSA_PKCS, CTOK_KT_RSA, CKM_RSA_PKCS, 0, CKF_DECRYPT},
    {CKM_RSA_PKCS_OAEP, CTOK_KT_RSA, CKM_RSA_PKCS_OAEP, 0, CKF_DECRYPT},
    {CKM_ECDH1_DERIVE, CTOK_KT_EC, CKM_ECDH1_DERIVE, 0, CKF_DERIVE},
    {CKM_RSA_PKCS_KEY_PAIR_GEN, CTOK_KT_RSA, CKM_RSA_PKCS_KEY_PAIR_GEN, 0, CKF_GENERATE_KEY_PAIR},
    {CKM_EC_KEY_PAIR_GEN, CTOK_KT_EC, CKM_EC_KEY_PAIR_GEN, 0, CKF_GENERATE_KEY_PAIR},
    {CKM_EC_EDWARDS_KEY_PAIR_GEN, CTOK_KT_ED25519, CKM_EC_EDWARDS_KEY_PAIR_GEN, 0,
     CKF_GENERATE_KEY_PAIR},
};
#define N_DEFS (sizeof(defs) / sizeof(defs[0]))

static const struct mech_def *def_of(CK_MECHANISM_TYPE t, CK_FLAGS op)
{
    for (size_t i = 0; i < N_DEFS; i++)
        if (defs[i].type == t && defs[i].op == op)
            return &defs[i];
    return NULL;
}

int mod_key_type_can(enum ctok_key_type kt, CK_MECHANISM_TYPE mech, CK_FLAGS op)
{
    const struct mech_def *d = def_of(mech, op);

    if (d == NULL)
        return 0;
    /* an RSA-PSS key signs with PSS only, and decrypts nothing */
    return kt == CTOK_KT_RSA_PSS ? d->kt == CTOK_KT_RSA && d->pss : d->kt == kt;
}

/* CKF_HW: the token signs or decrypts, not the application's process (OpenSC's pkcs11-tool
 * --test tests only such mechanisms). */
static CK_FLAGS flags_of(const struct mech_def *d)
{
    return d->op | CKF_HW |
           (d->kt == CTOK_KT_EC ? CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS : 0);
}

/* Adds d's mechanism to the slot's list, or its operation to the mechanism listed already. */
static int add(struct mod_slot *slot, const struct mech_def *d, CK_ULONG min, CK_ULONG max)
{
    size_t n = slot->n_mechs;
    CK_MECHANISM_TYPE *t;
    CK_MECHANISM_INFO *mi;

    if (n > 0 && (slot->mechs == NULL || slot->mech_info == NULL))
        return 0; /* never: both lists hold n entries */
    for (size_t i = 0; i < n; i++)
        if (slot->mechs[i] == d->type) {
            mi = &slot->mech_info[i];
            mi->flags |= flags_of(d);
            mi->ulMinKeySize = min < mi->ulMinKeySize ? min : mi->ulMinKeySize;
            mi->ulMaxKeySize = max > mi->ulMaxKeySize ? max : mi->ulMaxKeySize;
            return 1;
        }
    if ((t = realloc(slot->mechs, (n + 1) * sizeof(*t))) == NULL)
        return 0;
    slot->mechs = t;
    if ((mi = realloc(slot->mech_info, (n + 1) * sizeof(*mi))) == NULL)
        return 0;
    slot->mech_info = mi;
    t[n] = d->type;
    mi[n] = (CK_MECHANISM_INFO){min, max, flags_of(d)};
    slot->n_mechs = n + 1;
    return 1;
}

/* Does a mechanism of the token layer's list do op ("flags": [..., "sign", ...])? */
static int does(const json_t *flags, CK_FLAGS op)
{
    const char *want = op == CKF_SIGN      ? "sign"
                       : op == CKF_DECRYPT ? "decrypt"
                       : op == CKF_DERIVE  ? "derive"
                                           : "generate_key_pair";
    size_t i;
    json_t *f;

    json_array_foreach(flags, i, f)
    {
        if (json_is_string(f) && strcmp(json_string_value(f), want) == 0)
            return 1;
    }
    return 0;
}

/* The PKCS#11 token's own list: ours whose raw mechanism is in it, with its key sizes. */
static int from_list(struct mod_slot *slot, const json_t *list)
{
    for (size_t i = 0; i < N_DEFS; i++) {
        size_t j;
        json_t *m;

        json_array_foreach(list, j, m)
        {
            json_int_t type = json_integer_value(json_object_get(m, "type"));

            if (type == (json_int_t)defs[i].raw && does(json_object_get(m, "flags"), defs[i].op)) {
                CK_ULONG min = (CK_ULONG)json_integer_value(json_object_get(m, "min_key_size"));
                CK_ULONG max = (CK_ULONG)json_integer_value(json_object_get(m, "max_key_size"));

                /* ctok signs with RSA keys up to its own limit, whatever the token's */
                if (defs[i].kt == CTOK_KT_RSA && max > CTOK_MAX_RSA_BITS)
                    max = CTOK_MAX_RSA_BITS;
                if (!add(slot, &defs[i], min, max))
                    return 0;
                break;
            }
        }
    }
    return 1;
}

/*
 * Generation on a token without a list: every such type (keystore, KMS, Key Vault) makes RSA
 * (from ctok's 2048 bits) and NIST EC keys; Ed25519 only some, and the token layer does not
 * say which yet: offered where the token holds one already.
 */
static int keygen_from_keys(struct mod_slot *slot, const struct mech_def *d, int have)
{
    if (d->kt == CTOK_KT_RSA)
        return add(slot, d, 2048, CTOK_MAX_RSA_BITS);
    if (d->kt == CTOK_KT_EC)
        return add(slot, d, 256, 521);
    return !have || add(slot, d, 255, 255);
}

/* The RSA padding a decryption mechanism uses (0: not an RSA decryption). */
static int dec_pad(CK_MECHANISM_TYPE t)
{
    return t == CKM_RSA_PKCS        ? RSA_PKCS1_PADDING
           : t == CKM_RSA_PKCS_OAEP ? RSA_PKCS1_OAEP_PADDING
                                    : 0;
}

/* Does a key of kind k do d (its usage; for a decryption, the padding; its generation)? */
static int kind_does(const struct ctok_key_kind *k, const struct mech_def *d)
{
    if (!mod_key_type_can(k->type, d->type, d->op))
        return 0;
    if (d->op == CKF_GENERATE_KEY_PAIR)
        return 1; /* the type makes such keys (a cloud's CreateKey) */
    if (d->op == CKF_SIGN)
        return (k->usage & CTOK_USE_SIGN) != 0;
    return (k->usage & CTOK_USE_DECRYPT) != 0 && dec_pad(d->type) != 0 &&
           (k->decrypt_pads & (1u << dec_pad(d->type))) != 0;
}

/* A type that names the kinds of key it holds (a cloud's): their mechanisms, sized as the
 * type allows, whether or not its keys show yet (before a login). */
static int from_kinds(struct mod_slot *slot, const struct ctok_key_kind *kinds)
{
    /* hash-and-sign first: a cloud signs raw mechanisms' data only when it is a digest (or a
     * DigestInfo), and an application may try the first mechanism listed on any data */
    for (int raw = 0; raw < 2; raw++)
        for (size_t i = 0; i < N_DEFS; i++)
            for (const struct ctok_key_kind *k = kinds; k->type != CTOK_KT_NONE; k++)
                if ((defs[i].type == defs[i].raw) == raw && kind_does(k, &defs[i]) &&
                    !add(slot, &defs[i], (CK_ULONG)k->min_bits, (CK_ULONG)k->max_bits))
                    return 0;
    return 1;
}

/* Any other token: the mechanisms of the key types its objects have, sized as they are (key
 * agreement only where the token's type derives at all). */
static int from_keys(struct mod_slot *slot)
{
    for (size_t i = 0; i < N_DEFS; i++) {
        CK_ULONG min = 0, max = 0;
        int have = 0;

        if (defs[i].op == CKF_GENERATE_KEY_PAIR) {
            for (size_t k = 0; k < slot->n_objs; k++)
                have |= slot->objs[k].key_type == defs[i].kt && slot->objs[k].pub != NULL;
            if (!keygen_from_keys(slot, &defs[i], have))
                return 0;
            continue;
        }

        for (size_t k = 0; k < slot->n_objs; k++) {
            const struct mod_obj *o = &slot->objs[k];
            CK_ULONG bits;

            if (o->pub == NULL || !mod_key_type_can(o->key_type, defs[i].type, defs[i].op) ||
                (defs[i].op == CKF_DERIVE && !ctok_token_derives(slot->tok)))
                continue;
            bits = (CK_ULONG)EVP_PKEY_get_bits(o->pub);
            min = !have || bits < min ? bits : min;
            max = bits > max ? bits : max;
            have = 1;
        }
        if (have && !add(slot, &defs[i], min, max))
            return 0;
    }
    return 1;
}

void mod_mechs_forget(struct mod_slot *slot)
{
    if (slot->from_keys) {
        free(slot->mechs);
        free(slot->mech_info);
        slot->mechs = NULL;
        slot->mech_info = NULL;
        slot->n_mechs = 0;
    }
}

CK_RV mod_mechs_load(struct mod_slot *slot)
{
    const struct ctok_key_kind *kinds;
    json_t *list;
    CK_RV rv;
    int ok;

    /* mechanisms taken from the keys seen follow what is seen (a login shows private keys) */
    if (slot->from_keys && (rv = mod_objects_load(slot)) != CKR_OK)
        return rv;
    if (slot->mechs != NULL)
        return CKR_OK;
    if ((kinds = ctok_token_key_kinds(slot->tok)) != NULL) {
        ok = from_kinds(slot, kinds);
        goto done;
    }
    /* a type without a list raises an error: expected, not the application's */
    ctok_err_mark();
    list = ctok_token_mechanisms(slot->tok);
    ctok_err_pop_to_mark();
    if (list == NULL && (rv = mod_objects_load(slot)) != CKR_OK)
        return rv;
    slot->from_keys = list == NULL;
    ok = list != NULL ? from_list(slot, list) : from_keys(slot);
    json_decref(list);
done:
    if (ok && slot->mechs == NULL) /* nothing to offer: an empty list, still loaded */
        slot->mechs = calloc(1, sizeof(*slot->mechs));
    if (ok && slot->mechs != NULL)
        return CKR_OK;
    /* out of memory part way: no half list is kept as the slot's */
    free(slot->mechs);
    free(slot->mech_info);
    slot->mechs = NULL;
    slot->mech_info = NULL;
    slot->n_mechs = 0;
    return CKR_HOST_MEMORY;
}

/* Does the slot offer mech for op (0: for anything; lock held)? Its info in *info when it does. */
int mod_slot_has_mech(struct mod_slot *slot, CK_MECHANISM_TYPE mech, CK_FLAGS op,
                      CK_MECHANISM_INFO *info)
{
    if (mod_mechs_load(slot) != CKR_OK)
        return 0;
    for (size_t i = 0; i < slot->n_mechs; i++)
        if (slot->mechs[i] == mech && (slot->mech_info[i].flags & op) == op) {
            if (info != NULL)
                *info = slot->mech_info[i];
            return 1;
        }
    return 0;
}

CK_RV C_GetMechanismList(CK_SLOT_ID id, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
    struct mod_slot *slot;
    CK_RV rv;

    if ((rv = mod_enter_slot(id, count, &slot)) != CKR_OK)
        return rv;
    if ((rv = mod_mechs_load(slot)) != CKR_OK)
        ;
    else if (list != NULL && *count < slot->n_mechs)
        rv = CKR_BUFFER_TOO_SMALL;
    else if (list != NULL)
        memcpy(list, slot->mechs, slot->n_mechs * sizeof(*list));
    if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL)
        *count = slot->n_mechs;
    mod_leave();
    return rv;
}

CK_RV C_GetMechanismInfo(CK_SLOT_ID id, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
    struct mod_slot *slot;
    CK_RV rv;

    if ((rv = mod_enter_slot(id, info, &slot)) != CKR_OK)
        return rv;
    if (!mod_slot_has_mech(slot, type, 0, info))
        rv = CKR_MECHANISM_INVALID;
    mod_leave();
    return rv;
}

/* Is mech among the mechanisms the key's token allows it (any, when it does not say)? */
static int token_allows(const ctok_key *key, CK_MECHANISM_TYPE mech)
{
    size_t n;
    const unsigned long *allowed = ctok_key_allowed_mechs(key, &n);

    for (size_t i = 0; i < n; i++)
        if (allowed[i] == mech)
            return 1;
    return allowed == NULL;
}

/* Does the kind of key its token's type names leave mech to the key? An EC key of a kind that
 * signs only with its curve's hash does no ECDSA with another hash. */
static int kind_allows(const ctok_key *key, CK_MECHANISM_TYPE mech)
{
    const struct ctok_key_kind *k = ctok_token_key_kinds(ctok_key_token(key));
    int bits = EVP_PKEY_get_bits(ctok_key_pub(key));
    CK_MECHANISM_TYPE curve_mech = bits == 256   ? CKM_ECDSA_SHA256
                                   : bits == 384 ? CKM_ECDSA_SHA384
                                                 : CKM_ECDSA_SHA512;

    for (; k != NULL && k->type != CTOK_KT_NONE; k++)
        if (k->type == ctok_key_type(key) && (k->flags & CTOK_KIND_CURVE_HASH) &&
            (mech == CKM_ECDSA_SHA256 || mech == CKM_ECDSA_SHA384 || mech == CKM_ECDSA_SHA512))
            return mech == curve_mech;
    return 1;
}

unsigned int mod_use_of(CK_FLAGS op)
{
    return op == CKF_SIGN ? CTOK_USE_SIGN : op == CKF_DECRYPT ? CTOK_USE_DECRYPT : CTOK_USE_DERIVE;
}

CK_RV mod_key_permits(const ctok_key *key, CK_MECHANISM_TYPE mech, CK_FLAGS op)
{
    if (!(ctok_key_usage(key) & mod_use_of(op)))
        return CKR_KEY_FUNCTION_NOT_PERMITTED;
    return token_allows(key, mech) && kind_allows(key, mech) ? CKR_OK : CKR_MECHANISM_INVALID;
}

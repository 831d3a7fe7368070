/*
 * ctok-p11.so as an application drives it, with what an application supplies: attribute
 * templates and requests (fuzz_p11mod_tmpl: C_FindObjectsInit, C_GetAttributeValue,
 * C_GenerateKeyPair) and
 * mechanisms with their parameters (fuzz_p11mod_mech, FUZZ_P11MOD_MECH: C_SignInit,
 * C_DecryptInit, C_DeriveKey, then C_Sign/C_Decrypt or C_SessionCancel). The module's
 * sources are compiled into the target; it is called through its 3.0 function list.
 *
 * Two soft tokens made at start-up (no network): slot 0 an EC P-256 key, slot 1 an RSA 2048
 * key, each with its certificate, logged in through the config's auth file.
 *
 * Input, byte by byte (a missing byte reads as 0):
 *   tmpl: [slot] [template] [request] [object] [max objects] [keygen mechanism]
 *         [public template] [private template]
 *   mech: [slot | op << 1 | key << 3] [mechanism] [parameter] [derived key's template]
 * A template or request (tmpl_decode, the one decoder, C_GenerateKeyPair's templates too): [count]
 * then per attribute [type] [mode] [mode's bytes]; a type byte below the table's size picks a known
 * type, 0xfe a vendor type, 0xff a raw 32-bit one (4 bytes), any other is itself. Each buffer is
 * malloc'd to the exact length claimed, so ASan sees the module read or write beyond what the
 * application gave; the harness claims no length it does not back, except a request's "huge" length
 * (a correct module writes only the value).
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "fuzz_common.h"
#include "../../p11mod/pkcs11v3.h"

#define MAX_ATTRS 12
#define HUGE_BUF 65536

struct in {
    const uint8_t *p;
    size_t n;
};

static uint8_t u8(struct in *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static CK_ULONG u32(struct in *in)
{
    CK_ULONG v = 0;

    for (int i = 0; i < 4; i++)
        v = v << 8 | u8(in);
    return v;
}

/* A value from a table (by index), else the byte itself, else 32 raw bits. */
static CK_ULONG pick(struct in *in, const CK_ULONG *table, size_t n)
{
    uint8_t b = u8(in);

    if (b < n)
        return table[b];
    if (b == 0xfe)
        return CKA_VENDOR_DEFINED | u8(in);
    return b == 0xff ? u32(in) : b;
}

/* A length an application might claim. */
static CK_ULONG claimed(struct in *in)
{
    static const CK_ULONG lens[] = {0,  1,  sizeof(CK_ULONG), sizeof(CK_RSA_PKCS_PSS_PARAMS),
                                    32, 65, (CK_ULONG)-1,     CK_UNAVAILABLE_INFORMATION - 1};

    return pick(in, lens, sizeof(lens) / sizeof(lens[0]));
}

/* n bytes of input, malloc'd (never NULL); the input runs out: zeros. */
static uint8_t *bytes(struct in *in, size_t n)
{
    uint8_t *b = calloc(1, n > 0 ? n : 1);

    if (b == NULL)
        abort();
    for (size_t i = 0; i < n && in->n > 0; i++)
        b[i] = u8(in);
    return b;
}

static const CK_ULONG attr_types[] = {
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_VALUE,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_CERTIFICATE_TYPE,
    CKA_SUBJECT,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_SIGN,
    CKA_DECRYPT,
    CKA_DERIVE,
    CKA_VERIFY,
    CKA_ENCRYPT,
    CKA_ALLOWED_MECHANISMS,
    CKA_PUBLIC_KEY_INFO,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_LOCAL,
    CKA_KEY_GEN_MECHANISM,
    CKA_MODIFIABLE,
    CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_VALUE_LEN,
    CKA_CHECK_VALUE,
    CKA_URL,
    CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
    CKA_TRUSTED,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN_RECOVER,
    CKA_VERIFY_RECOVER,
    CKA_APPLICATION,
};

struct tmpl {
    CK_ATTRIBUTE a[MAX_ATTRS];
    CK_ULONG n;
    size_t size[MAX_ATTRS]; /* what each buffer really holds */
};

/*
 * One attribute list from the input: a template (request 0: values from the input) or a
 * request (request 1: buffers for the module to fill). Modes: 0 NULL value with a claimed
 * length; 1 a buffer of a length from the input (short buffers, empty ones); 2 a CK_ULONG
 * (template) or a 64 KiB buffer claimed huge (request); 3 a CK_BBOOL.
 */
static void tmpl_decode(struct in *in, int request, struct tmpl *t)
{
    t->n = u8(in) % (MAX_ATTRS + 1);
    for (CK_ULONG i = 0; i < t->n; i++) {
        CK_ATTRIBUTE *a = &t->a[i];
        uint8_t mode = u8(in);
        size_t len;

        a->type = pick(in, attr_types, sizeof(attr_types) / sizeof(attr_types[0]));
        switch (mode % 4) {
        case 0:
            a->pValue = NULL;
            a->ulValueLen = claimed(in);
            break;
        case 1:
            len = u8(in);
            len = len == 0xff ? 256 + u8(in) * 8 : len;
            a->pValue = request ? calloc(1, len > 0 ? len : 1) : bytes(in, len);
            a->ulValueLen = len;
            break;
        case 2:
            if (request) {
                a->pValue = calloc(1, HUGE_BUF);
                a->ulValueLen = mode & 4 ? (CK_ULONG)-1 : (CK_ULONG)1 << 32;
            } else {
                CK_ULONG v = u8(in);

                if ((a->pValue = malloc(sizeof(v))) != NULL)
                    memcpy(a->pValue, &v, sizeof(v));
                a->ulValueLen = sizeof(v);
            }
            break;
        default:
            a->pValue = bytes(in, 1);
            a->ulValueLen = sizeof(CK_BBOOL);
            if (!request)
                *(CK_BBOOL *)a->pValue &= 1;
            break;
        }
        if (a->pValue == NULL && mode % 4 != 0)
            abort();
        t->size[i] = mode % 4 == 2 && request ? HUGE_BUF : a->pValue != NULL ? a->ulValueLen : 0;
    }
}

static void tmpl_free(struct tmpl *t)
{
    for (CK_ULONG i = 0; i < t->n; i++)
        free(t->a[i].pValue);
    t->n = 0;
}

static CK_FUNCTION_LIST_3_0 *f;
static CK_SESSION_HANDLE sess[2];
/* per slot: the private key, its public key, its certificate, a handle that is none */
static CK_OBJECT_HANDLE objs[2][4];

static CK_OBJECT_HANDLE find_one(CK_SESSION_HANDLE h, CK_OBJECT_CLASS cls)
{
    CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof(cls)};
    CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
    CK_ULONG n = 0;

    if (f->C_FindObjectsInit(h, &a, 1) != CKR_OK || f->C_FindObjects(h, &o, 1, &n) != CKR_OK ||
        f->C_FindObjectsFinal(h) != CKR_OK || n != 1)
        fuzz_die("a token's object is not found: the target would fuzz nothing");
    return o;
}

void fuzz_init(void)
{
    const char *ks[2] = {fuzz_path("ec.p12"), fuzz_path("rsa.p12")};
    const char *pin = fuzz_path("pin"), *cfg = fuzz_path("tokens.json");
    char conf[4096];
    CK_INTERFACE *iface;
    CK_VERSION v30 = {3, 0};

    fuzz_make_keystore(ks[0]);
    fuzz_make_keystore_of(ks[1], EVP_RSA_gen(2048));
    fuzz_write(pin, (const uint8_t *)FUZZ_PIN, strlen(FUZZ_PIN));
    snprintf(conf, sizeof(conf),
             "{\"tokens\": [{\"name\": \"ec\", \"type\": \"pkcs12\", \"keystore\": \"%s\", "
             "\"auth\": {\"file\": \"%s\"}}, {\"name\": \"rsa\", \"type\": \"pkcs12\", "
             "\"keystore\": \"%s\", \"auth\": {\"file\": \"%s\"}}]}\n",
             ks[0], pin, ks[1], pin);
    fuzz_write(cfg, (const uint8_t *)conf, strlen(conf));
    setenv("CTOK_CONFIG", cfg, 1);
    if (C_GetInterface((CK_UTF8CHAR_PTR) "PKCS 11", &v30, &iface, 0) != CKR_OK)
        fuzz_die("C_GetInterface");
    f = iface->pFunctionList;
    if (f->C_Initialize(NULL) != CKR_OK)
        fuzz_die("C_Initialize");
    for (CK_SLOT_ID s = 0; s < 2; s++) {
        if (f->C_OpenSession(s, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &sess[s]) !=
                CKR_OK ||
            f->C_Login(sess[s], CKU_USER, NULL, 0) != CKR_OK)
            fuzz_die("a session logged in to a token");
        objs[s][0] = find_one(sess[s], CKO_PRIVATE_KEY);
        objs[s][1] = find_one(sess[s], CKO_PUBLIC_KEY);
        objs[s][2] = find_one(sess[s], CKO_CERTIFICATE);
        objs[s][3] = 0x7fff0000;
    }
    ERR_clear_error();
}

#ifndef FUZZ_P11MOD_MECH

/* CKA_MODULUS_BITS in a template: 0 absent, 1 one the module refuses (not a CK_ULONG, or under
 * 2048), 2 one it would make a key of. */
static int rsa_bits(const struct tmpl *t)
{
    CK_ULONG bits;
    int most = 0;

    for (CK_ULONG i = 0; i < t->n; i++)
        if (t->a[i].type == CKA_MODULUS_BITS) {
            int v = 1;

            if (t->a[i].pValue != NULL && t->a[i].ulValueLen == sizeof(bits)) {
                memcpy(&bits, t->a[i].pValue, sizeof(bits));
                v = bits >= 2048 ? 2 : 1;
            }
            most = v > most ? v : most;
        }
    return most;
}

/* Input's tail: [mechanism] [public template] [private template]. C_GenerateKeyPair; a key
 * made (an EC or Ed25519 template that holds) is destroyed at once, so the keystore stays
 * small. */
static void keygen(struct in *in, CK_SESSION_HANDLE h)
{
    static const CK_ULONG gen_mechs[] = {CKM_EC_KEY_PAIR_GEN, CKM_EC_EDWARDS_KEY_PAIR_GEN,
                                         CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_ECDSA};
    CK_MECHANISM m = {pick(in, gen_mechs, sizeof(gen_mechs) / sizeof(gen_mechs[0])), NULL, 0};
    CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
    struct tmpl t, r;

    tmpl_decode(in, 0, &t);
    tmpl_decode(in, 0, &r);
    /* an RSA generation takes too long for a fuzzer: RSA templates are fuzzed where the module
     * refuses their size (after reading every attribute) */
    if (m.mechanism != CKM_RSA_PKCS_KEY_PAIR_GEN ||
        (rsa_bits(&t) > rsa_bits(&r) ? rsa_bits(&t) : rsa_bits(&r)) == 1) {
        if (f->C_GenerateKeyPair(h, &m, t.a, t.n, r.a, r.n, &pub, &priv) == CKR_OK &&
            f->C_DestroyObject(h, priv) != CKR_OK)
            abort(); /* a key the module made and cannot remove */
    }
    tmpl_free(&t);
    tmpl_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct in in = {data, len};
    CK_SESSION_HANDLE h = sess[u8(&in) & 1];
    struct tmpl t, r;
    CK_OBJECT_HANDLE found[8];
    CK_ULONG n = 0, max, asked[MAX_ATTRS];

    tmpl_decode(&in, 0, &t);
    tmpl_decode(&in, 1, &r);
    if (f->C_FindObjectsInit(h, t.a, t.n) == CKR_OK) {
        max = u8(&in) % 9;
        if (f->C_FindObjects(h, found, max, &n) != CKR_OK || n > max)
            abort();
        if (f->C_FindObjectsFinal(h) != CKR_OK)
            abort();
    }
    for (CK_ULONG i = 0; i < r.n; i++)
        asked[i] = r.a[i].ulValueLen;
    (void)f->C_GetAttributeValue(h, objs[h == sess[1]][u8(&in) % 4], r.a, r.n);
    for (CK_ULONG i = 0; i < r.n; i++)
        if (r.a[i].pValue != NULL && r.a[i].ulValueLen != asked[i] &&
            r.a[i].ulValueLen != CK_UNAVAILABLE_INFORMATION && r.a[i].ulValueLen > r.size[i])
            abort(); /* a value longer than the buffer's real size was written */
    tmpl_free(&t);
    tmpl_free(&r);
    keygen(&in, h);
    ERR_clear_error();
    return 0;
}

#else

static const CK_ULONG mechs[] = {
    CKM_RSA_PKCS,
    CKM_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512_RSA_PKCS_PSS,
    CKM_ECDSA,
    CKM_ECDSA_SHA256,
    CKM_ECDSA_SHA384,
    CKM_EDDSA,
    CKM_RSA_PKCS_OAEP,
    CKM_ECDH1_DERIVE,
    CKM_ECDH1_COFACTOR_DERIVE,
    CKM_SHA1_RSA_PKCS,
};
static const CK_ULONG hashes[] = {CKM_SHA_1, CKM_SHA224, CKM_SHA256, CKM_SHA384, CKM_SHA512};
static const CK_ULONG mgfs[] = {CKG_MGF1_SHA1, CKG_MGF1_SHA224, CKG_MGF1_SHA256, CKG_MGF1_SHA384,
                                CKG_MGF1_SHA512};
/* the X9.63 KDFs, then one of X9.42's (a KDF ECDH1 does not take) */
static const CK_ULONG kdfs[] = {CKD_NULL,         CKD_SHA1_KDF,     CKD_SHA256_KDF,
                                CKD_SHA224_KDF,   CKD_SHA384_KDF,   CKD_SHA512_KDF,
                                CKD_SHA3_224_KDF, CKD_SHA3_256_KDF, CKD_SHA3_384_KDF,
                                CKD_SHA3_512_KDF, CKD_SHA1_KDF_ASN1};

/* A data pointer and its length: NULL with a claimed length (null), or input bytes. */
static void *value_of(struct in *in, int null, CK_ULONG *len, void **keep)
{
    if (null) {
        *len = claimed(in);
        return NULL;
    }
    *len = u8(in);
    return *keep = bytes(in, *len);
}

static void *data_of(struct in *in, CK_ULONG *len, void **keep)
{
    return value_of(in, u8(in) & 1, len, keep);
}

/*
 * The mechanism's parameter: 0 NULL with a claimed length; 1 raw bytes; 2 PSS, 3 OAEP, 4
 * ECDH1 parameters, each in a buffer of a claimed length (at least the structure's).
 */
static void param_decode(struct in *in, CK_MECHANISM *m, void **keep)
{
    union {
        CK_RSA_PKCS_PSS_PARAMS pss;
        CK_RSA_PKCS_OAEP_PARAMS oaep;
        CK_ECDH1_DERIVE_PARAMS ecdh;
    } u;
    uint8_t mode = u8(in);
    size_t size = 0;

    memset(&u, 0, sizeof(u));
    switch (mode % 5) {
    case 0:
    case 1:
        m->pParameter = value_of(in, mode % 5 == 0, &m->ulParameterLen, &keep[0]);
        return;
    case 2:
        u.pss.hashAlg = pick(in, hashes, 5);
        u.pss.mgf = pick(in, mgfs, 5);
        u.pss.sLen = mode & 8 ? u32(in) : u8(in);
        size = sizeof(u.pss);
        break;
    case 3:
        u.oaep.hashAlg = pick(in, hashes, 5);
        u.oaep.mgf = pick(in, mgfs, 5);
        u.oaep.source = mode & 8 ? u8(in) : CKZ_DATA_SPECIFIED;
        u.oaep.pSourceData = data_of(in, &u.oaep.ulSourceDataLen, &keep[1]);
        size = sizeof(u.oaep);
        break;
    default:
        u.ecdh.kdf = pick(in, kdfs, sizeof(kdfs) / sizeof(kdfs[0]));
        u.ecdh.pSharedData = data_of(in, &u.ecdh.ulSharedDataLen, &keep[1]);
        u.ecdh.pPublicData = data_of(in, &u.ecdh.ulPublicDataLen, &keep[2]);
        size = sizeof(u.ecdh);
        break;
    }
    /* a claimed length: the structure's, or shorter or longer (the buffer backs it) */
    m->ulParameterLen = mode & 16 ? size - 1 - u8(in) % size : mode & 32 ? size + u8(in) : size;
    keep[0] = calloc(1, m->ulParameterLen > size ? m->ulParameterLen : size);
    if (keep[0] == NULL)
        abort();
    memcpy(keep[0], &u, size);
    m->pParameter = keep[0];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct in in = {data, len};
    uint8_t b = u8(&in);
    int slot = b & 1, op = (b >> 1) & 3;
    CK_SESSION_HANDLE h = sess[slot];
    CK_OBJECT_HANDLE key = objs[slot][(b >> 3) & 3], derived;
    CK_MECHANISM m;
    void *keep[3] = {NULL, NULL, NULL};
    struct tmpl t = {.n = 0};
    uint8_t msg[32], out[512];
    CK_ULONG n;

    m.mechanism = pick(&in, mechs, sizeof(mechs) / sizeof(mechs[0]));
    param_decode(&in, &m, keep);
    memset(msg, 0x5a, sizeof(msg));
    switch (op) {
    case 0: /* sign, then the data's signature or a cancelled operation */
    case 1:
        if (f->C_SignInit(h, &m, key) == CKR_OK) {
            n = sizeof(out);
            if (op == 1)
                (void)f->C_Sign(h, msg, sizeof(msg), out, &n);
            else if (f->C_SessionCancel(h, CKF_SIGN) != CKR_OK)
                abort();
        }
        break;
    case 2: /* decryption of input bytes, or a cancelled one */
        if (f->C_DecryptInit(h, &m, key) == CKR_OK) {
            n = sizeof(out);
            if (b & 0x20)
                (void)f->C_Decrypt(h, msg, sizeof(msg), out, &n);
            else if (f->C_SessionCancel(h, CKF_DECRYPT) != CKR_OK)
                abort();
        }
        break;
    default: /* derivation, the derived key's template decoded too */
        tmpl_decode(&in, 0, &t);
        if (f->C_DeriveKey(h, &m, key, t.a, t.n, &derived) == CKR_OK)
            (void)f->C_DestroyObject(h, derived);
        break;
    }
    /* whatever happened, the session takes a new operation */
    if (f->C_SessionCancel(h, CKF_SIGN | CKF_DECRYPT | CKF_FIND_OBJECTS) != CKR_OK)
        abort();
    tmpl_free(&t);
    for (int i = 0; i < 3; i++)
        free(keep[i]);
    ERR_clear_error();
    return 0;
}

#endif

/*
 * The token layer on its own: linked against libctok_token.a alone, with a table that offers
 * only the soft pkcs12 backend. That it links at all proves the token layer needs no other
 * backend; what it prints shows the table is the one source of token types.
 *   ctok-token-only DIR
 * Creates DIR/tokens.json with a pkcs12 token (a new keystore DIR/soft.p12), generates an EC
 * key, signs and verifies with it, checks the r||s -> DER helper, and tries a pkcs11 entry.
 * Prints one line per step; exits 0 only if every step did what it should.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "../store/backend.h"

extern const struct ctok_backend ctok_pkcs12_backend;
const struct ctok_backend *const ctok_backends[] = {&ctok_pkcs12_backend, NULL};

static char last_error[512];

static void sink(int reason, const char *file, int line, const char *func, const char *fmt,
                 va_list ap)
{
    int n = snprintf(last_error, sizeof(last_error), "%s: ", ctok_reason_string(reason));

    (void)file;
    (void)line;
    (void)func;
    if (n > 0 && (size_t)n < sizeof(last_error))
        vsnprintf(last_error + n, sizeof(last_error) - (size_t)n, fmt, ap);
}

struct id {
    uint8_t id[CTOK_MAX_ID];
    size_t len;
};

static int key_cb(ctok_token *tok, const struct ctok_object *o, void *arg)
{
    struct id *id = arg;

    (void)tok;
    if (o->type == CTOK_OBJ_PRIVATE && id->len == 0 && o->id_len <= sizeof(id->id)) {
        memcpy(id->id, o->id, o->id_len);
        id->len = o->id_len;
    }
    return 1;
}

/* A software ECDSA signature taken apart into r || s and put together again by the helper. */
static int rs_round_trip(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    uint8_t tbs[48] = {1}, der[160], back[160], rs[96];
    size_t derlen = sizeof(der), backlen = sizeof(back), small = 8;
    EVP_PKEY_CTX *c = k != NULL ? EVP_PKEY_CTX_new(k, NULL) : NULL;
    const unsigned char *p = der;
    ECDSA_SIG *es = NULL;
    int ok = 0;

    if (c == NULL || EVP_PKEY_sign_init(c) <= 0 || EVP_PKEY_sign(c, der, &derlen, tbs, 48) <= 0 ||
        (es = d2i_ECDSA_SIG(NULL, &p, (long)derlen)) == NULL ||
        BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 48) != 48 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 48, 48) != 48)
        goto end;
    ok = ctok_ecdsa_rs_to_der(rs, sizeof(rs), back, &backlen) && backlen == derlen &&
         memcmp(back, der, derlen) == 0
         /* an odd length, or a DER that does not fit, is refused */
         && !ctok_ecdsa_rs_to_der(rs, 95, back, &backlen) &&
         !ctok_ecdsa_rs_to_der(rs, sizeof(rs), back, &small);
end:
    ECDSA_SIG_free(es);
    EVP_PKEY_CTX_free(c);
    EVP_PKEY_free(k);
    return ok;
}

/* What the helper must give for r || s: OpenSSL's own DER of the two numbers. */
static int reference_der(const uint8_t *rs, size_t rslen, uint8_t *der, size_t *derlen)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(rs, (int)rslen / 2, NULL),
           *s = BN_bin2bn(rs + rslen / 2, (int)rslen / 2, NULL);
    unsigned char *out = NULL;
    int len = -1;

    if (es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s)) {
        r = s = NULL;
        len = i2d_ECDSA_SIG(es, &out);
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    if (len <= 0 || (size_t)len > *derlen) {
        OPENSSL_free(out);
        return 0;
    }
    memcpy(der, out, (size_t)len);
    *derlen = (size_t)len;
    OPENSSL_free(out);
    return 1;
}

/*
 * r || s of every size a curve gives (P-256 to P-521: short and long DER lengths), with high
 * bits set, leading zero bytes and all-zero halves: the same DER as OpenSSL's i2d_ECDSA_SIG.
 */
static int rs_random(void)
{
    static const size_t halves[] = {1, 28, 32, 48, 66};
    uint8_t rs[132], der[160], ref[160];

    for (size_t h = 0; h < sizeof(halves) / sizeof(halves[0]); h++)
        for (int i = 0; i < 400; i++) {
            size_t n = halves[h], derlen = sizeof(der), reflen = sizeof(ref);

            if (RAND_bytes(rs, (int)(2 * n)) != 1)
                return 0;
            if (i % 4 == 1) { /* leading zeros in r, high bit in s */
                memset(rs, 0, (size_t)i % n + 1);
                rs[n] |= 0x80;
            }
            if (i % 4 == 2) /* s all zeros */
                memset(rs + n, 0, n);
            if (i % 4 == 3) /* high bit in r */
                rs[0] |= 0x80;
            if (!reference_der(rs, 2 * n, ref, &reflen) ||
                !ctok_ecdsa_rs_to_der(rs, 2 * n, der, &derlen) || derlen != reflen ||
                memcmp(der, ref, reflen) != 0) {
                fprintf(stderr, "r||s of %zu bytes: DER differs from i2d_ECDSA_SIG\n", 2 * n);
                return 0;
            }
            derlen = reflen - 1; /* one byte short: refused */
            if (ctok_ecdsa_rs_to_der(rs, 2 * n, der, &derlen))
                return 0;
        }
    return 1;
}

int main(int argc, char **argv)
{
    char config[512], keystore[512];
    struct ctok_keyspec spec = {CTOK_KT_EC, 0, "P-256"};
    ctok_ctx *ctx;
    ctok_token *tok;
    ctok_key *key = NULL;
    struct id id = {{0}, 0};
    json_t *e;
    int ok, fails = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: ctok-token-only DIR\n");
        return 2;
    }
    ctok_err_set_sink(sink);
    snprintf(config, sizeof(config), "%s/tokens.json", argv[1]);
    snprintf(keystore, sizeof(keystore), "%s/soft.p12", argv[1]);
    printf("types: %s\n", ctok_type_names());

    ctx = ctok_ctx_new(NULL, NULL, config);
    e = json_pack("{s:s, s:s, s:s, s:s, s:{s:b}}", "name", "soft", "id", "soft-1", "type", "pkcs12",
                  "keystore", keystore, "auth", "prompt", 1);
    ok = ctx != NULL && ctok_config_add_token(ctx, e, "secret", 6);
    json_decref(e);
    printf("create pkcs12: %s\n", ok ? "ok" : last_error);
    fails += !ok;

    last_error[0] = '\0';
    e = json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", "hsm", "id", "hsm-1", "type", "pkcs11",
                  "library", "/nonexistent.so", "ref", "x");
    ok = ctx != NULL && ctok_config_add_token(ctx, e, "1234", 4);
    json_decref(e);
    printf("create pkcs11: %s\n", ok ? "ok" : last_error);
    fails += ok;
    ctok_ctx_free(ctx);

    /* a fresh context: the token as the provider would find it */
    ctx = ctok_ctx_new(NULL, NULL, config);
    tok = ctx != NULL && ctok_ctx_load(ctx) ? ctok_ctx_token_find(ctx, "soft", NULL) : NULL;
    ok = tok != NULL && ctok_token_login_code(tok, "secret", 6) &&
         ctok_token_generate(tok, "k1", &spec) && ctok_token_enumerate(tok, key_cb, &id) &&
         id.len > 0 && (key = ctok_token_key(tok, id.id, id.len)) != NULL &&
         ctok_key_test(key) == 1;
    printf("generate, sign, verify: %s\n", ok ? "ok" : last_error);
    fails += !ok;
    ctok_key_unref(key);
    ctok_ctx_free(ctx);

    ok = rs_round_trip() && rs_random();
    printf("r||s to DER: %s\n", ok ? "ok" : "wrong");
    fails += !ok;
    return fails == 0 ? 0 : 1;
}

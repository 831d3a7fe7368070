/*
 * Certificate binding files (store/certbind.c): a token's "certificates" names files (PEM,
 * one or more certificates, else DER) and folders (their *.pem, *.crt, *.cer, *.der). The
 * token is a pkcs12 token "fuzz" (logged in once) with a fixed EC P-256 key "key" (the seeds
 * carry certificates of it); its "certificates" are a file and a folder in the scratch
 * directory. Input: byte 0 chooses where the rest goes: bit 0 set, into the listed file (else
 * that file holds a certificate of another key); bits 1-3, the name of a file put in the
 * folder (some names the folder scan must skip).
 *
 * Each input is one scan as ctok_token_scan makes it, with the files read anew: begin, the
 * backend's objects through ctok_certbind_cb (the token's own certificate of the key, then
 * the private and public key; objects made here, not by the keystore, whose enumeration
 * would be 3 ms of each input under ASan), end of a whole listing. Checked: every certificate
 * reported is the key's (its public key), the token's own certificate is not reported twice.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "fuzz_common.h"
#include "../../store/internal.h"

/* the token's key: fixed, so that the committed seeds carry certificates of it */
static const char key_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                              "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgL/oDaBt3ml4IEYgB\n"
                              "IpmEaLl0z8PwAASNkSuYFTA8V1WhRANCAAQdvG0cv7BzlU44HXdosgxCNz6joFSk\n"
                              "UoAJBgiAevaJ6AE/d0OK5R4INq1usG3QBXdSurt4V/+dFuChS2t3Zkm4\n"
                              "-----END PRIVATE KEY-----\n";

static const char own_pem[] = "-----BEGIN CERTIFICATE-----\n"
                              "MIIBUzCB+qADAgECAhRFp0svj5gh/4DQgqaaBf50Gl+DJDAKBggqhkjOPQQDAjAT\n"
                              "MREwDwYDVQQDDAhmdXp6LWtleTAeFw0yNjExMjkyMDQ5NTNaFw0zNjExMjYyMDQ5\n"
                              "NTNaMBMxETAPBgNVBAMMCGZ1enota2V5MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD\n"
                              "QgAEHbxtHL+wc5VOOB13aLIMQjc+o6BUpFKACQYIgHr2iegBP3dDiuUeCDatbrBt\n"
                              "0AV3Urq7eFf/nRbgoUtrd2ZJuKMsMCowCQYDVR0TBAIwADAdBgNVHQ4EFgQU1oAZ\n"
                              "+VFLDRdQsYhDm8eYX9EtlsowCgYIKoZIzj0EAwIDSAAwRQIgavpokQPFduoK2ruY\n"
                              "Z2tk80jB8aHczRD865JGXem1+WACIQC6ZaBUA+kZyyz7ryQP0J3vhAV/jfrf3A7B\n"
                              "ivDYgivfmA==\n"
                              "-----END CERTIFICATE-----\n";

/* names of the folder's file: the scan reads the first four, skips the others */
static const char *const names[8] = {"a.pem",  "B.CRT", "c.cer", "d.der",
                                     ".h.pem", "e.txt", "pem",   "f.pem.bak"};

static ctok_token *tok;
static EVP_PKEY *key;
static X509 *own;
static const char *file, *dir;
static uint8_t *other_cert;
static size_t other_len;

struct seen {
    size_t certs, own;
};

static int cb(ctok_token *t, const struct ctok_object *o, void *arg)
{
    struct seen *s = arg;

    (void)t;
    if (o->type != CTOK_OBJ_CERT)
        return 1;
    /* reported as the key's certificate: it carries the key's public key */
    if (o->cert == NULL || o->label == NULL || strcmp(o->label, "key") != 0 ||
        EVP_PKEY_eq(X509_get0_pubkey(o->cert), key) != 1)
        abort();
    s->certs++;
    if (X509_cmp(o->cert, own) == 0 && ++s->own > 1)
        abort(); /* the token's own certificate, again from a file */
    return 1;
}

/* The number of certificates a scan reports, or -1 if it fails. */
static long scan(void)
{
    static const uint8_t id[] = {0x6b, 0x65, 0x79};
    const struct ctok_object objs[] = {
        {CTOK_OBJ_CERT, "key", id, sizeof(id), CTOK_KT_EC, own, X509_get0_pubkey(own)},
        {CTOK_OBJ_PRIVATE, "key", id, sizeof(id), CTOK_KT_EC, NULL, key},
        {CTOK_OBJ_PUBLIC, "key", id, sizeof(id), CTOK_KT_EC, NULL, key},
    };
    struct seen s = {0, 0};
    struct ctok_bind *b;
    int ok;

    if (!ctok_certbind_begin(tok, CTOK_OBJ_ANY, cb, &s, &b)) {
        ok = 0;
    } else {
        if (b == NULL)
            abort(); /* the token has "certificates" */
        ok = 1;
        for (size_t i = 0; ok && i < sizeof(objs) / sizeof(objs[0]); i++)
            ok = ctok_certbind_cb(tok, &objs[i], b);
        ctok_certbind_end(b, ok);
    }
    (void)ctok_certbind_hidden(tok);
    /* the files are read anew by the next input, as after a certificate import */
    ctok_certbind_free(tok);
    ERR_clear_error();
    return ok ? (long)s.certs : -1;
}

/* The token's own certificate again, with pkey's public key, this serial, signed by pkey: DER. */
static uint8_t *reissue(EVP_PKEY *pkey, long serial, size_t *len)
{
    X509 *x = X509_dup(own);
    uint8_t *der = NULL;
    int n;

    if (x == NULL || !ASN1_INTEGER_set(X509_get_serialNumber(x), serial) ||
        !X509_set_pubkey(x, pkey) || !X509_sign(x, pkey, EVP_sha256()) ||
        (n = i2d_X509(x, &der)) <= 0)
        fuzz_die("a certificate");
    X509_free(x);
    *len = (size_t)n;
    return der;
}

static void remove_dir(void)
{
    rmdir(dir); /* its files are removed after each input; then fuzz_common's clean-up */
}

void fuzz_init(void)
{
    BIO *b = BIO_new_mem_buf(key_pem, -1);
    EVP_PKEY *k2 = EVP_EC_gen("P-256"), *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    const char *ks = fuzz_path("fuzz.p12"), *pin = fuzz_path("fuzz.pin");
    const char *cfg = fuzz_path("tokens.json");
    char conf[8192];
    ctok_ctx *ctx;
    uint8_t *der;
    size_t dlen;
    long n;

    BIO_free(b);
    b = BIO_new_mem_buf(own_pem, -1);
    own = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    if (own == NULL || k == NULL || k2 == NULL || !EVP_PKEY_up_ref(k))
        fuzz_die("the keys");
    key = k;
    fuzz_make_keystore_of(ks, k);
    other_cert = reissue(k2, 3, &other_len); /* another key's */
    fuzz_write(pin, (const uint8_t *)FUZZ_PIN, strlen(FUZZ_PIN));
    file = fuzz_path("bound.pem");
    dir = fuzz_path("certs");
    if (mkdir(dir, 0700) != 0)
        fuzz_die(dir);
    atexit(remove_dir);
    snprintf(conf, sizeof(conf),
             "{\"tokens\": [{\"name\": \"fuzz\", \"type\": \"pkcs12\", \"keystore\": \"%s\", "
             "\"auth\": {\"file\": \"%s\"}, \"certificates\": [\"%s\", \"%s\"]}]}\n",
             ks, pin, file, dir);
    fuzz_write(cfg, (const uint8_t *)conf, strlen(conf));
    if ((ctx = ctok_ctx_new(NULL, NULL, cfg)) == NULL || !ctok_ctx_load(ctx) ||
        (tok = ctok_ctx_token_find(ctx, "fuzz", NULL)) == NULL ||
        ctok_token_login(tok, NULL, NULL) != 1)
        fuzz_die("the token");
    /* reachable: another key's certificate is read and not bound (the keystore's is) */
    fuzz_write(file, other_cert, other_len);
    if ((n = scan()) != 1)
        fuzz_die("the token's own certificate is not listed: the target would fuzz nothing");
    /* another certificate of the key in the file: bound and reported */
    der = reissue(key, 2, &dlen);
    fuzz_write(file, der, dlen);
    if ((n = scan()) != 2)
        fuzz_die("a bound file is not read: the target would fuzz nothing");
    OPENSSL_free(der);
    EVP_PKEY_free(k2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    char in_dir[4200];

    if (len < 1)
        return 0;
    if (data[0] & 1)
        fuzz_write(file, data + 1, len - 1);
    else
        fuzz_write(file, other_cert, other_len);
    snprintf(in_dir, sizeof(in_dir), "%s/%s", dir, names[(data[0] >> 1) & 7]);
    fuzz_write(in_dir, data + 1, len - 1);
    (void)scan();
    unlink(in_dir);
    return 0;
}

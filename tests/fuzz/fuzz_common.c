/* Shared harness code for the fuzz targets (see fuzz_common.h). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/core.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/x509.h>

#include "fuzz_common.h"
#include "../../store/token.h"

void fuzz_die(const char *what)
{
    fprintf(stderr, "fuzz harness setup failed: %s\n", what);
    ERR_print_errors_fp(stderr);
    abort();
}

static char dir[4096];
static char paths[8][4096];
static int n_paths;

static void remove_scratch(void)
{
    char lock[sizeof(paths[0]) + 8];

    for (int i = 0; i < n_paths; i++) {
        unlink(paths[i]);
        snprintf(lock, sizeof(lock), "%s.lock", paths[i]); /* ctok_file_lock's, if any */
        unlink(lock);
    }
    rmdir(dir);
}

/*
 * tmpfs by default: on ext4 a file truncated and rewritten is flushed at close
 * (auto_da_alloc), which cut the file-reading targets to ~300 executions a second.
 */
const char *fuzz_dir(void)
{
    if (dir[0] == '\0') {
        const char *base = getenv("CTOK_FUZZ_TMPDIR");
        struct stat st;

        if (base == NULL)
            base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof(dir), "%s/ctok-fuzz-XXXXXX", base);
        if (mkdtemp(dir) == NULL)
            fuzz_die("cannot make the scratch directory");
        atexit(remove_scratch);
    }
    return dir;
}

const char *fuzz_path(const char *name)
{
    char *p;

    if (n_paths == 8)
        fuzz_die("more than 8 scratch files");
    p = paths[n_paths];
    snprintf(p, sizeof(paths[0]), "%s/%s", fuzz_dir(), name);
    n_paths++;
    return p;
}

void fuzz_write(const char *path, const uint8_t *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t off = 0;

    if (fd < 0)
        fuzz_die(path);
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);

        if (n <= 0)
            fuzz_die(path);
        off += (size_t)n;
    }
    close(fd);
}

char *fuzz_cstr(const uint8_t *data, size_t len)
{
    char *s = malloc(len + 1);

    if (s == NULL)
        fuzz_die("out of memory");
    memcpy(s, data, len);
    s[len] = '\0';
    return s;
}

/* Formats like the provider's sink does, so every argument of every message is read. */
static void format_sink(int reason, const char *file, int line, const char *func, const char *fmt,
                        va_list ap)
{
    char msg[1024];

    (void)reason;
    (void)file;
    (void)line;
    (void)func;
    vsnprintf(msg, sizeof(msg), fmt, ap);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ctok_err_set_sink(format_sink); /* the in-process provider installs its own */
    fuzz_init();
    return 0;
}

void fuzz_make_keystore(const char *path)
{
    fuzz_make_keystore_of(path, EVP_EC_gen("P-256"));
}

void fuzz_make_keystore_of(const char *path, EVP_PKEY *pkey)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    PKCS12 *p12 = NULL;
    FILE *f;

    if (pkey == NULL || x == NULL || name == NULL ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)"fuzz", -1, -1, 0) ||
        !X509_set_version(x, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
        !X509_set_subject_name(x, name) || !X509_set_issuer_name(x, name) ||
        X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 86400) == NULL || !X509_set_pubkey(x, pkey) ||
        !X509_sign(x, pkey, EVP_sha256()) ||
        (p12 = PKCS12_create(FUZZ_PIN, "key", pkey, x, NULL, 0, 0, 0, 0, 0)) == NULL)
        fuzz_die("cannot make the keystore");
    if ((f = fopen(path, "wb")) == NULL || !i2d_PKCS12_fp(f, p12))
        fuzz_die(path);
    fclose(f);
    chmod(path, 0600);
    PKCS12_free(p12);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(pkey);
}

OSSL_LIB_CTX *fuzz_provider_libctx(void)
{
    static OSSL_LIB_CTX *libctx;
    char conf[16384];
    const char *ks, *pin, *cfg;

    if (libctx != NULL)
        return libctx;
    ks = fuzz_path("fuzz.p12");
    pin = fuzz_path("fuzz.pin");
    cfg = fuzz_path("tokens.json");
    fuzz_make_keystore(ks);
    fuzz_write(pin, (const uint8_t *)FUZZ_PIN, strlen(FUZZ_PIN));
    snprintf(conf, sizeof(conf),
             "{\"tokens\": [{\"name\": \"fuzz\", \"type\": \"pkcs12\", \"keystore\": \"%s\", "
             "\"auth\": {\"file\": \"%s\"}}]}\n",
             ks, pin);
    fuzz_write(cfg, (const uint8_t *)conf, strlen(conf));
    /* the provider reads $CTOK_CONFIG when it makes its token context, on first use */
    setenv("CTOK_CONFIG", cfg, 1);
    libctx = OSSL_LIB_CTX_new();
    if (libctx == NULL || !OSSL_PROVIDER_add_builtin(libctx, "ctok", OSSL_provider_init) ||
        OSSL_PROVIDER_load(libctx, "ctok") == NULL || OSSL_PROVIDER_load(libctx, "default") == NULL)
        fuzz_die("cannot load the ctok and default providers");
    return libctx;
}

/* read by nobody: only makes fuzz_touch's reads happen */
volatile size_t fuzz_touched;

/*
 * Does the context turn a reference to the token's key into a key? If not (a change in the
 * decoder, the lookup or the file checks), every input would stop early and the target
 * would fuzz nothing: it stops here, saying so.
 */
static void check_decoder(OSSL_DECODER_CTX *d, EVP_PKEY **pkey, int der)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *name = NULL, *header = NULL;
    uint8_t *data = NULL;
    long len = 0;
    const uint8_t *p;
    size_t left;

    if (b == NULL || !ctok_keyref_write_pem(b, "ctok:token=fuzz;object=key;type=private"))
        fuzz_die("ctok_keyref_write_pem");
    if (der ? !PEM_read_bio(b, &name, &header, &data, &len)
            : (len = BIO_get_mem_data(b, (char **)&p)) <= 0 ||
                  (data = OPENSSL_memdup(p, (size_t)len)) == NULL)
        fuzz_die("the key reference");
    p = data;
    left = (size_t)len;
    if (!OSSL_DECODER_from_data(d, &p, &left) || *pkey == NULL)
        fuzz_die("a reference to the token's key does not decode: the target would fuzz nothing");
    EVP_PKEY_free(*pkey);
    *pkey = NULL;
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    BIO_free(b);
    ERR_clear_error();
}

OSSL_DECODER_CTX *fuzz_decoder(EVP_PKEY **pkey, const char *input, const char *structure,
                               const char *keytype)
{
    OSSL_DECODER_CTX *d = OSSL_DECODER_CTX_new_for_pkey(pkey, input, structure, keytype, 0,
                                                        fuzz_provider_libctx(), NULL);

    if (d == NULL)
        fuzz_die("OSSL_DECODER_CTX_new_for_pkey");
    check_decoder(d, pkey, strcmp(input, "DER") == 0);
    return d;
}

void fuzz_touch(const char *s)
{
    if (s != NULL)
        fuzz_touched += strlen(s);
}

void fuzz_check_field(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);

    if (n == cap)
        fuzz_die("unterminated field");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            fuzz_die("control character in a field");
}

/*
 * Certificates bound from files: a token's "certificates" names certificate files (PEM or
 * DER, one or more certificates each) and folders (every *.pem, *.crt, *.cer, *.der in
 * them). Each certificate is reported, in enumeration and targeted lookup, as a certificate
 * of the key whose public key it carries, with that key's label and id, so certificate-first
 * lookup, storeutl and TLS servers work as for certificates an HSM holds. Any backend: the
 * binding is made on the objects it reports, so a remote token is not listed for it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "internal.h"

struct bound_cert {
    X509 *cert;
    EVP_PKEY *pub;
    char *file;
    int bound, told; /* atomics: it bound to a key once; the debug line about it was written */
};

/* The certificates read at one time; a later read (after cert import) replaces the list,
 * which stays (chained) until the token is freed: a scan may still walk it. */
struct ctok_certs {
    struct bound_cert *v;
    size_t n;
    struct ctok_certs *older;
};

static const json_t *paths_of(const ctok_token *tok)
{
    return json_object_get(tok->entry, "certificates");
}

int ctok_certbind_configure(const char *path, ctok_token *tok)
{
    const json_t *a = paths_of(tok), *v;
    size_t i;

    if (a == NULL)
        return 1;
    if (!json_is_array(a)) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': \"certificates\" must be an array of paths", path,
                 tok->name);
        return 0;
    }
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            CTOK_ERR(CTOK_R_CONFIG,
                     "%s: token '%s': \"certificates\" entry #%zu must be a non-empty path", path,
                     tok->name, i + 1);
            return 0;
        }
    }
    return 1;
}

static int add(struct ctok_certs *c, X509 *x, const char *file)
{
    struct bound_cert *nv = realloc(c->v, (c->n + 1) * sizeof(*nv));
    EVP_PKEY *pub = X509_get_pubkey(x);

    if (nv != NULL)
        c->v = nv;
    if (nv == NULL || pub == NULL || (nv[c->n].file = strdup(file)) == NULL) {
        EVP_PKEY_free(pub);
        X509_free(x);
        return pub != NULL ? 0 : 1; /* a certificate with a key OpenSSL cannot read: skipped */
    }
    nv[c->n].cert = x;
    nv[c->n].pub = pub;
    nv[c->n].bound = nv[c->n].told = 0;
    c->n++;
    return 1;
}

/* Every certificate of one file: PEM (one or more), else DER. */
static int read_file(ctok_token *tok, struct ctok_certs *c, const char *file)
{
    char what[200];
    uint8_t *data = NULL;
    size_t len = 0, before = c->n;
    const uint8_t *p;
    BIO *b;
    X509 *x;
    int ok = 1;

    snprintf(what, sizeof(what), "token '%s': certificate file", tok->name);
    if (!ctok_file_read(file, 0, CTOK_R_CONFIG, what, &data, &len))
        return 0;
    b = BIO_new_mem_buf(data, (int)len);
    ERR_set_mark(); /* the end of the PEM blocks, or no PEM at all (DER), is no error */
    while (ok && b != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        ok = add(c, x, file);
    BIO_free(b);
    p = data;
    if (ok && c->n == before && (x = d2i_X509(NULL, &p, (long)len)) != NULL)
        ok = add(c, x, file);
    ERR_pop_to_mark();
    if (ok && c->n == before) {
        CTOK_ERR(CTOK_R_CONFIG, "%s '%s' holds no certificate (PEM or DER)", what, file);
        ok = 0;
    }
    ctok_file_free(data, len);
    return ok;
}

static int cert_name(const char *name)
{
    static const char *const exts[] = {".pem", ".crt", ".cer", ".der"};
    size_t n = strlen(name);

    for (size_t i = 0; i < 4; i++)
        if (n > 4 && name[0] != '.' && strcasecmp(name + n - 4, exts[i]) == 0)
            return 1;
    return 0;
}

static int only_certs(const struct dirent *d)
{
    return cert_name(d->d_name);
}

/* Every certificate file of a folder, in name order; each checked as ctok_file_open does. */
static int read_dir(ctok_token *tok, struct ctok_certs *c, const char *dir)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, only_certs, alphasort), ok = n >= 0;

    if (n < 0)
        CTOK_ERR(CTOK_R_CONFIG, "token '%s': certificate folder '%s': %s", tok->name, dir,
                 strerror(errno));
    for (int i = 0; i < n; i++) {
        char *file = NULL;

        if (ok && asprintf(&file, "%s/%s", dir, names[i]->d_name) > 0)
            ok = read_file(tok, c, file);
        free(file);
        free(names[i]);
    }
    free(names);
    return ok;
}

/* Is path a folder (1), a file (0), or neither: error raised (-1)? Links are refused. */
static int kind_of(const ctok_token *tok, const char *path)
{
    struct stat st;

    if (lstat(path, &st) != 0) {
        CTOK_ERR(CTOK_R_CONFIG, "token '%s': certificates '%s': %s", tok->name, path,
                 strerror(errno));
        return -1;
    }
    if (S_ISLNK(st.st_mode)) {
        CTOK_ERR(CTOK_R_INSECURE_FILE,
                 "token '%s': certificates '%s' is a symbolic link; refusing it", tok->name, path);
        return -1;
    }
    return S_ISDIR(st.st_mode) ? 1 : 0;
}

static void certs_free(struct ctok_certs *c)
{
    while (c != NULL) {
        struct ctok_certs *older = c->older;

        for (size_t i = 0; i < c->n; i++) {
            X509_free(c->v[i].cert);
            EVP_PKEY_free(c->v[i].pub);
            free(c->v[i].file);
        }
        free(c->v);
        free(c);
        c = older;
    }
}

void ctok_certbind_free(ctok_token *tok)
{
    certs_free(tok->certs);
    tok->certs = NULL;
}

/* Reads the files now and makes them the token's list (the old one stays chained). */
static struct ctok_certs *reload(ctok_token *tok)
{
    struct ctok_certs *c = calloc(1, sizeof(*c));
    const json_t *v;
    size_t i;
    int ok = c != NULL;

    json_array_foreach(paths_of(tok), i, v)
    {
        const char *path = json_string_value(v);
        int k = ok ? kind_of(tok, path) : -1;

        ok = k == 1 ? read_dir(tok, c, path) : k == 0 ? read_file(tok, c, path) : 0;
    }
    if (!ok) {
        certs_free(c);
        return NULL;
    }
    pthread_mutex_lock(&tok->lock);
    c->older = tok->certs;
    tok->certs = c;
    pthread_mutex_unlock(&tok->lock);
    CTOK_DBG("token '%s': %zu certificate(s) read from its \"certificates\"", tok->name, c->n);
    return c;
}

/* The token's certificate list, read at first use (files read with no lock held). */
static struct ctok_certs *certs_get(ctok_token *tok)
{
    struct ctok_certs *c;

    pthread_mutex_lock(&tok->lock);
    c = tok->certs;
    pthread_mutex_unlock(&tok->lock);
    return c != NULL ? c : reload(tok);
}

struct ctok_bind {
    ctok_token *tok;
    struct ctok_certs *c;
    unsigned int types;
    ctok_object_cb cb;
    void *arg;
    uint8_t *sent; /* per certificate: reported in this scan */
};

int ctok_certbind_begin(ctok_token *tok, unsigned int types, ctok_object_cb cb, void *arg,
                        struct ctok_bind **out)
{
    struct ctok_bind *b;

    *out = NULL;
    if (paths_of(tok) == NULL || !(types & CTOK_OBJ_CERT))
        return 1;
    b = calloc(1, sizeof(*b));
    if (b == NULL || (b->c = certs_get(tok)) == NULL ||
        (b->sent = calloc(b->c->n + 1, 1)) == NULL) {
        free(b);
        return 0;
    }
    b->tok = tok;
    b->types = types;
    b->cb = cb;
    b->arg = arg;
    *out = b;
    return 1;
}

int ctok_certbind_cb(ctok_token *tok, const struct ctok_object *o, void *arg)
{
    struct ctok_bind *b = arg;
    int ok = !(o->type & b->types) || b->cb(tok, o, b->arg);

    for (size_t i = 0; ok && i < b->c->n; i++) {
        struct bound_cert *bc = &b->c->v[i];
        struct ctok_object co = {
            CTOK_OBJ_CERT, o->label, o->id, o->id_len, ctok_key_type_of(bc->pub),
            bc->cert,      bc->pub};

        if (b->sent[i])
            continue;
        if (o->type == CTOK_OBJ_CERT) {
            /* the token holds this very certificate itself: not twice */
            b->sent[i] = o->cert != NULL && X509_cmp(o->cert, bc->cert) == 0;
            continue;
        }
        if (o->pub == NULL || EVP_PKEY_eq(o->pub, bc->pub) != 1)
            continue;
        __atomic_store_n(&bc->bound, 1, __ATOMIC_RELAXED);
        b->sent[i] = 1;
        ok = b->cb(tok, &co, b->arg);
    }
    return ok;
}

void ctok_certbind_end(struct ctok_bind *b, int whole)
{
    if (b == NULL)
        return;
    /* a whole listing of an active token (every key's public half known) shows which
     * certificates bind to no key: said once each */
    for (size_t i = 0; whole && ctok_token_is_active(b->tok) && i < b->c->n; i++) {
        struct bound_cert *bc = &b->c->v[i];
        char subject[256];

        if (__atomic_load_n(&bc->bound, __ATOMIC_RELAXED) ||
            __atomic_exchange_n(&bc->told, 1, __ATOMIC_RELAXED))
            continue;
        X509_NAME_oneline(X509_get_subject_name(bc->cert), subject, sizeof(subject));
        CTOK_DBG("token '%s': certificate '%s' from %s carries the public key of no key of the "
                 "token: not reported",
                 b->tok->name, subject, bc->file);
    }
    free(b->sent);
    free(b);
}

unsigned int ctok_certbind_hidden(ctok_token *tok)
{
    struct ctok_certs *c;

    /* the scan before read the files (or failed, saying why) */
    pthread_mutex_lock(&tok->lock);
    c = tok->certs;
    pthread_mutex_unlock(&tok->lock);
    for (size_t i = 0; c != NULL && i < c->n; i++)
        if (!__atomic_load_n(&c->v[i].bound, __ATOMIC_RELAXED))
            return CTOK_OBJ_CERT;
    return 0;
}

static int pub_cb(ctok_token *tok, const struct ctok_object *o, void *arg)
{
    EVP_PKEY **pub = arg;

    (void)tok;
    if (*pub == NULL && o->pub != NULL && EVP_PKEY_up_ref(o->pub))
        *pub = o->pub;
    return 1;
}

/* The first folder of "certificates", or NULL with the error raised. */
static const char *first_dir(const ctok_token *tok)
{
    const json_t *v;
    size_t i;

    json_array_foreach(paths_of(tok), i, v)
    {
        struct stat st;

        if (lstat(json_string_value(v), &st) == 0 && S_ISDIR(st.st_mode))
            return json_string_value(v);
    }
    CTOK_ERR(CTOK_R_UNSUPPORTED,
             "token '%s': %s tokens keep no certificates and its \"certificates\" names no "
             "folder to put one in",
             tok->name, tok->type);
    return NULL;
}

int ctok_certbind_put(ctok_token *tok, const char *alias, X509 *cert)
{
    const char *dir = first_dir(tok);
    EVP_PKEY *pub = NULL, *cpub = X509_get0_pubkey(cert);
    BIO *b = NULL;
    BUF_MEM *mem;
    char *file = NULL;
    int ok = 0;

    if (dir == NULL)
        return 0;
    if (*alias == '\0' || *alias == '.' || strchr(alias, '/') != NULL) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "token '%s': '%s' cannot name a certificate file", tok->name,
                 alias);
        return 0;
    }
    if (!ctok_token_scan_for(tok, alias, NULL, 0, CTOK_OBJ_PRIVATE | CTOK_OBJ_PUBLIC, pub_cb, &pub))
        return 0;
    if (pub == NULL) {
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no key '%s' (with its public key) to bind it to",
                 tok->name, alias);
    } else if (cpub == NULL || EVP_PKEY_eq(pub, cpub) != 1) {
        CTOK_ERR(CTOK_R_INVALID_ARG,
                 "token '%s', key '%s': the certificate carries another public key", tok->name,
                 alias);
    } else if ((b = BIO_new(BIO_s_mem())) != NULL && PEM_write_bio_X509(b, cert) &&
               BIO_get_mem_ptr(b, &mem) > 0 && asprintf(&file, "%s/%s.pem", dir, alias) > 0) {
        ok = ctok_file_write_atomic(file, (const uint8_t *)mem->data, mem->length, 0644) &&
             reload(tok) != NULL;
    }
    CTOK_DBG("token '%s': certificate of key '%s' %s %s", tok->name, alias,
             ok ? "written to" : "not written", file != NULL ? file : dir);
    EVP_PKEY_free(pub);
    BIO_free(b);
    free(file);
    return ok;
}

/* ctok key generate|list|test|remove|rename, cert import|list|export|remove|rename, ref */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "cli.h"

/* A token, activated, for an operation the token must permit: refused before any login. */
static ctok_token *active_token(struct cli *c, const char *name, enum ctok_perm perm,
                                const char *operation)
{
    ctok_token *tok = cli_permitted(c, name, perm, operation);

    return tok != NULL && cli_login(c, tok) ? tok : NULL;
}

static void describe(EVP_PKEY *pub, enum ctok_key_type t, char *out, size_t outlen, int *bits,
                     const char **curve)
{
    char group[64] = "";

    *bits = pub != NULL ? EVP_PKEY_get_bits(pub) : 0;
    *curve = NULL;
    if (t == CTOK_KT_EC && pub != NULL &&
        EVP_PKEY_get_group_name(pub, group, sizeof(group), NULL)) {
        *curve = EC_curve_nid2nist(OBJ_txt2nid(group));
        if (*curve == NULL)
            *curve = OBJ_nid2sn(OBJ_txt2nid(group));
    }
    if (t == CTOK_KT_EC)
        snprintf(out, outlen, "EC %s", *curve != NULL ? *curve : "?");
    else if (t == CTOK_KT_ED25519)
        snprintf(out, outlen, "ED25519");
    else
        snprintf(out, outlen, "%s-%d", ctok_key_type_name(t), *bits);
}

int cmd_key_generate(struct cli *c)
{
    const char *alias = c->argv[1];
    struct ctok_keyspec spec;
    ctok_token *tok;
    ctok_key *key;
    char hex[2 * CTOK_MAX_ID + 1], desc[64];
    const char *curve;
    struct cli_progress *spinner;
    int bits, ok;

    if (!ctok_keyspec_parse(c->argv[2], &spec)) {
        cli_fail(); /* the parser's error lists what is accepted */
        return EXIT_USAGE;
    }
    if (*alias == '\0')
        return cli_usage("the alias must not be empty");
    tok = active_token(c, c->argv[0], CTOK_PERM_KEYGEN, "key generation");
    if (tok == NULL)
        return cli_fail();
    spinner = cli_progress_begin(c, "Generating the key");
    ok = ctok_token_generate(tok, alias, &spec);
    cli_progress_end(spinner);
    if (!ok)
        return cli_fail();
    /* read back what the token now holds */
    key = NULL;
    {
        struct ctok_uri u = {0};
        struct ctok_found *f;
        size_t n;

        u.token = (char *)ctok_token_name(tok);
        u.object = (char *)alias;
        u.types = CTOK_OBJ_PRIVATE;
        if (!ctok_find(c->ctx, &u, CTOK_OBJ_PRIVATE, NULL, &f, &n) || n == 0)
            return cli_fail();
        key = ctok_token_key(tok, f[0].id, f[0].id_len);
        ctok_hex(f[0].id, f[0].id_len, hex);
        ctok_found_free(f, n);
    }
    if (key == NULL)
        return cli_fail();
    describe(ctok_key_pub(key), ctok_key_type(key), desc, sizeof(desc), &bits, &curve);
    if (c->json)
        cli_print_json(json_pack("{s:s, s:s, s:s, s:i, s:s?}", "alias", alias, "id", hex,
                                 "key_type", ctok_key_type_name(ctok_key_type(key)), "bits", bits,
                                 "curve", curve));
    else
        printf("Generated %s key '%s' on token '%s' (id %s)\n", desc, alias, c->argv[0], hex);
    ctok_key_unref(key);
    return EXIT_OK;
}

struct listing {
    json_t *keys;
    json_t *certs; /* label -> id hex */
    const char *token, *token_uri;
};

static int list_cb(ctok_token *tok, const struct ctok_object *o, void *arg)
{
    struct listing *l = arg;
    char hex[2 * CTOK_MAX_ID + 1], desc[64];
    const char *curve;
    int bits;

    (void)tok;
    ctok_hex(o->id, o->id_len, hex);
    if (o->type == CTOK_OBJ_CERT) {
        json_array_append_new(l->certs, json_pack("{s:s, s:s}", "label", o->label, "id", hex));
    } else if (o->type == CTOK_OBJ_PRIVATE) {
        describe(o->pub, o->key_type, desc, sizeof(desc), &bits, &curve);
        json_t *k = json_pack("{s:s, s:s, s:s, s:i, s:s?, s:[], s:s}", "alias", o->label, "id", hex,
                              "key_type", ctok_key_type_name(o->key_type), "bits", bits, "curve",
                              curve, "certificates", "description", desc);

        cli_add_uris(k, l->token, l->token_uri, o->label, o->id, o->id_len, "private");
        json_array_append_new(l->keys, k);
    }
    return 1;
}

int cmd_key_list(struct cli *c)
{
    struct listing l = {json_array(), json_array(), c->argv[0], NULL};
    ctok_token *tok = active_token(c, c->argv[0], CTOK_PERM_VIEW, "listing");
    char *token_uri = tok != NULL ? ctok_token_pkcs11_uri(tok) : NULL;
    size_t i, j;
    json_t *k, *ce;
    int ok;

    l.token_uri = token_uri;
    ok = tok != NULL && ctok_token_enumerate(tok, list_cb, &l);
    free(token_uri);
    if (!ok) {
        json_decref(l.keys);
        json_decref(l.certs);
        return cli_fail();
    }
    json_array_foreach(l.keys, i, k)
    {
        json_array_foreach(l.certs, j, ce)
        {
            if (json_equal(json_object_get(ce, "id"), json_object_get(k, "id")))
                json_array_append(json_object_get(k, "certificates"), json_object_get(ce, "label"));
        }
    }
    json_decref(l.certs);
    if (c->json) {
        json_array_foreach(l.keys, i, k) json_object_del(k, "description");
        cli_print_json(l.keys);
        return EXIT_OK;
    }
    if (json_array_size(l.keys) == 0)
        printf("No keys on token '%s'\n", c->argv[0]);
    else
        printf("%-20s %-12s %-40s %s\n", "ALIAS", "TYPE", "ID", "CERTIFICATES");
    json_array_foreach(l.keys, i, k)
    {
        char certs[512] = "";

        json_array_foreach(json_object_get(k, "certificates"), j, ce)
        {
            strncat(certs, j ? ", " : "", sizeof(certs) - strlen(certs) - 1);
            strncat(certs, json_string_value(ce), sizeof(certs) - strlen(certs) - 1);
        }
        printf("%-20s %-12s %-40s %s\n", json_string_value(json_object_get(k, "alias")),
               json_string_value(json_object_get(k, "description")),
               json_string_value(json_object_get(k, "id")), certs);
        cli_print_uris(k);
    }
    json_decref(l.keys);
    return EXIT_OK;
}

/* The key handle of the key named alias (by its own label: the tool names keys). */
static ctok_key *key_by_alias(struct cli *c, ctok_token *tok, const char *alias)
{
    struct ctok_uri u = {0};
    struct ctok_found *f;
    size_t n, i;
    ctok_key *key = NULL;

    u.token = (char *)ctok_token_name(tok);
    u.types = CTOK_OBJ_PRIVATE;
    if (!ctok_find(c->ctx, &u, CTOK_OBJ_PRIVATE, NULL, &f, &n))
        return NULL;
    for (i = 0; i < n && strcmp(f[i].label, alias) != 0; i++)
        ;
    if (i == n)
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no key named '%s'", ctok_token_name(tok), alias);
    else
        key = ctok_token_key(tok, f[i].id, f[i].id_len);
    ctok_found_free(f, n);
    return key;
}

int cmd_key_test(struct cli *c)
{
    ctok_token *tok = active_token(c, c->argv[0], CTOK_PERM_KEYTEST, "key test");
    ctok_key *key = tok != NULL ? key_by_alias(c, tok, c->argv[1]) : NULL;
    char desc[64];
    const char *curve;
    int bits, ok;

    if (key == NULL)
        return cli_fail();
    describe(ctok_key_pub(key), ctok_key_type(key), desc, sizeof(desc), &bits, &curve);
    ok = ctok_key_test(key);
    ctok_key_unref(key);
    if (ok < 0)
        return cli_fail();
    if (c->json)
        cli_print_json(
            json_pack("{s:s, s:s, s:b}", "token", c->argv[0], "alias", c->argv[1], "passed", ok));
    if (!ok) {
        if (!c->json)
            fprintf(stderr,
                    "ctok: token '%s', key '%s' (%s): key test FAILED: the signature "
                    "does not verify\n",
                    c->argv[0], c->argv[1], desc);
        return EXIT_FAILED;
    }
    if (!c->json)
        printf("Key '%s' on token '%s' (%s): sign and verify test passed\n", c->argv[1], c->argv[0],
               desc);
    return EXIT_OK;
}

int cmd_key_remove(struct cli *c)
{
    ctok_token *tok = active_token(c, c->argv[0], CTOK_PERM_KEYREMOVE, "key removal");

    char note[256];
    struct cli_progress *spinner;
    int ok;

    if (tok == NULL)
        return cli_fail();
    spinner = cli_progress_begin(c, "Removing the key");
    ok = ctok_token_remove(tok, c->argv[1], note, sizeof(note));
    cli_progress_end(spinner);
    if (!ok)
        return cli_fail();
    if (c->json)
        cli_print_json(json_pack("{s:s, s:s, s:b, s:s}", "token", c->argv[0], "alias", c->argv[1],
                                 "removed", 1, "note", note));
    else
        printf("Removed key '%s' and its certificates from token '%s'%s%s\n", c->argv[1],
               c->argv[0], note[0] != '\0' ? ": " : "", note);
    return EXIT_OK;
}

/* Every certificate of a PEM file (a chain), or the one of a DER file; NULL with the error. */
static STACK_OF(X509) * read_certs(const char *path)
{
    BIO *b = BIO_new_file(path, "rb");
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;

    if (b == NULL || sk == NULL) {
        CTOK_ERR(CTOK_R_IO, "cannot read certificate file '%s'", path);
        BIO_free(b);
        sk_X509_free(sk);
        return NULL;
    }
    ERR_set_mark();
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_push(sk, x))
            X509_free(x);
    ERR_pop_to_mark(); /* the end of the PEM file */
    if (sk_X509_num(sk) == 0 && BIO_reset(b) == 0 && (x = d2i_X509_bio(b, NULL)) != NULL &&
        !sk_X509_push(sk, x))
        X509_free(x);
    BIO_free(b);
    if (sk_X509_num(sk) == 0) {
        CTOK_ERR(CTOK_R_INVALID_ARG, "'%s' holds no PEM or DER certificate", path);
        sk_X509_free(sk);
        return NULL;
    }
    return sk;
}

/* The objects of these types on the token (rule view); NULL with the error raised. */
static struct ctok_found *token_objects(struct cli *c, ctok_token *tok, unsigned int types,
                                        size_t *n)
{
    struct ctok_uri u = {0};
    struct ctok_found *f = NULL;

    u.token = (char *)ctok_token_name(tok);
    u.types = types;
    return ctok_find(c->ctx, &u, types, NULL, &f, n) ? f : NULL;
}

/* The id (hex) of the certificate labelled label, as the token now reports it; "" if none. */
static void cert_id_hex(struct cli *c, ctok_token *tok, const char *label, char *hex)
{
    size_t n = 0;
    struct ctok_found *f = token_objects(c, tok, CTOK_OBJ_CERT, &n);

    hex[0] = '\0';
    for (size_t i = 0; f != NULL && i < n; i++)
        if (strcmp(f[i].label, label) == 0)
            ctok_hex(f[i].id, f[i].id_len, hex);
    ctok_found_free(f, n);
}

/* The leaf of a chain: the certificate whose public key is a key's on the token, else the
 * first. */
static int chain_leaf(struct cli *c, ctok_token *tok, STACK_OF(X509) * chain)
{
    size_t n = 0;
    struct ctok_found *f = token_objects(c, tok, CTOK_OBJ_PRIVATE | CTOK_OBJ_PUBLIC, &n);
    int leaf = 0;

    for (int k = 0; f != NULL && k < sk_X509_num(chain) && leaf == 0; k++)
        for (size_t i = 0; i < n; i++)
            if (f[i].pub != NULL &&
                EVP_PKEY_eq(f[i].pub, X509_get0_pubkey(sk_X509_value(chain, k))) == 1) {
                leaf = k;
                break;
            }
    ctok_found_free(f, n);
    return leaf;
}

/* What happens to one CA certificate of a chain. */
struct ca_cert {
    X509 *x;
    char label[256];
    int present; /* the same certificate has that label already: nothing to store */
};

/* A certificate labelled label on the token: 1 the same as x, -1 another one, 0 none. */
static int label_holds(const struct ctok_found *f, size_t n, const char *label, X509 *x)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(f[i].label, label) == 0)
            return X509_cmp(f[i].cert, x) == 0 ? 1 : -1;
    return 0;
}

/*
 * Labels for the CA certificates of a chain, decided before anything is stored: a CA's subject
 * CN, else (no CN, or another certificate holds that label) <alias>-ca<N>. One that is on the
 * token already under that label is not stored again; a label that other certificates hold
 * under both names is refused.
 */
static int plan_cas(struct cli *c, ctok_token *tok, const char *alias, STACK_OF(X509) * chain,
                    int leaf, struct ca_cert *ca, int *n_ca)
{
    size_t n = 0;
    struct ctok_found *f = token_objects(c, tok, CTOK_OBJ_CERT, &n);
    int ok = f != NULL || n == 0;

    *n_ca = 0;
    if (sk_X509_num(chain) > 1 && !ctok_token_keeps_certs(tok)) {
        CTOK_ERR(CTOK_R_UNSUPPORTED,
                 "token '%s': a chain's CA certificates are not supported by token type %s (it "
                 "keeps one certificate file per key); nothing was imported: import the leaf "
                 "alone",
                 ctok_token_name(tok), ctok_token_type(tok));
        ok = 0;
    }
    for (int k = 0; ok && k < sk_X509_num(chain); k++) {
        struct ca_cert *a = &ca[*n_ca];
        int held = -1;

        if (k == leaf)
            continue;
        a->x = sk_X509_value(chain, k);
        a->present = 0;
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(a->x), NID_commonName, a->label,
                                      sizeof(a->label)) > 0 &&
            strcmp(a->label, alias) != 0)
            held = label_holds(f, n, a->label, a->x);
        if (held < 0) {
            snprintf(a->label, sizeof(a->label), "%s-ca%d", alias, *n_ca + 1);
            held = label_holds(f, n, a->label, a->x);
        }
        if (held < 0) {
            CTOK_ERR(CTOK_R_DUPLICATE,
                     "token '%s': CA certificate %d of the chain: another certificate is "
                     "named '%s' already; nothing was imported",
                     ctok_token_name(tok), *n_ca + 1, a->label);
            ok = 0;
        }
        a->present = held == 1;
        (*n_ca)++;
    }
    ctok_found_free(f, n);
    return ok;
}

static int store_cas(struct cli *c, ctok_token *tok, struct ca_cert *ca, int n_ca, json_t *list)
{
    for (int i = 0; i < n_ca; i++) {
        char hex[2 * CTOK_MAX_ID + 1], *subj;

        if (!ca[i].present && !ctok_token_put_cert(tok, ca[i].label, ca[i].x))
            return 0;
        cert_id_hex(c, tok, ca[i].label, hex);
        subj = X509_NAME_oneline(X509_get_subject_name(ca[i].x), NULL, 0);
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:b}", "label", ca[i].label, "id",
                                              hex, "subject", subj != NULL ? subj : "", "stored",
                                              !ca[i].present));
        if (!c->json)
            printf("%s CA certificate '%s' (%s, id %s)\n",
                   ca[i].present ? "Already on the token:" : "Stored", ca[i].label,
                   subj != NULL ? subj : "?", hex);
        OPENSSL_free(subj);
    }
    return 1;
}

/*
 * The leaf of the file (bound to its key by id, as before) and every CA certificate of a chain
 * as an object of its own; --replace: the leaf replaces the certificate labelled ALIAS.
 */
int cmd_cert_import(struct cli *c)
{
    STACK_OF(X509) *chain = read_certs(c->argv[2]);
    ctok_token *tok =
        chain != NULL ? active_token(c, c->argv[0], CTOK_PERM_MODIFY,
                                     c->replace ? "certificate replacement" : "certificate import")
                      : NULL;
    char hex[2 * CTOK_MAX_ID + 1] = "";
    struct ca_cert *ca = chain != NULL ? calloc((size_t)sk_X509_num(chain), sizeof(*ca)) : NULL;
    json_t *cas = json_array();
    int leaf = 0, n_ca = 0, ok;
    X509 *x;

    ok = tok != NULL && ca != NULL;
    if (ok) {
        struct cli_progress *spinner;

        leaf = chain_leaf(c, tok, chain);
        x = sk_X509_value(chain, leaf);
        ok = plan_cas(c, tok, c->argv[1], chain, leaf, ca, &n_ca);
        spinner = ok ? cli_progress_begin(c, "Storing the certificate") : NULL;
        ok = ok && (c->replace ? ctok_token_replace_cert(tok, c->argv[1], x)
                               : ctok_token_put_cert(tok, c->argv[1], x));
        cli_progress_end(spinner);
    }
    if (ok) {
        cert_id_hex(c, tok, c->argv[1], hex);
        if (!c->json)
            printf("%s certificate '%s' %s token '%s' (id %s)\n",
                   c->replace ? "Replaced" : "Imported", c->argv[1], c->replace ? "on" : "to",
                   c->argv[0], hex);
        ok = store_cas(c, tok, ca, n_ca, cas);
    }
    if (ok && c->json)
        cli_print_json(json_pack("{s:s, s:s, s:s, s:b, s:O}", "token", c->argv[0], "alias",
                                 c->argv[1], "id", hex, "replaced", c->replace, "ca_certificates",
                                 cas));
    json_decref(cas);
    free(ca);
    sk_X509_pop_free(chain, X509_free);
    return ok ? EXIT_OK : cli_fail();
}

int cmd_cert_remove(struct cli *c)
{
    ctok_token *tok = active_token(c, c->argv[0], CTOK_PERM_MODIFY, "certificate removal");

    if (tok == NULL || !ctok_token_remove_cert(tok, c->argv[1]))
        return cli_fail();
    return cli_report(
        c, json_pack("{s:s, s:s, s:b}", "token", c->argv[0], "alias", c->argv[1], "removed", 1),
        "Removed certificate '%s' from token '%s' (its key stays)", c->argv[1], c->argv[0]);
}

static int rename_object(struct cli *c, unsigned int type)
{
    const char *what = type == CTOK_OBJ_CERT ? "certificate" : "key";
    ctok_token *tok = active_token(c, c->argv[0], CTOK_PERM_MODIFY,
                                   type == CTOK_OBJ_CERT ? "certificate rename" : "key rename");

    if (tok == NULL || !ctok_token_rename(tok, type, c->argv[1], c->argv[2]))
        return cli_fail();
    return cli_report(c,
                      json_pack("{s:s, s:s, s:s, s:s}", "token", c->argv[0], "type", what, "old",
                                c->argv[1], "new", c->argv[2]),
                      "Renamed %s '%s' to '%s' on token '%s' (id kept)", what, c->argv[1],
                      c->argv[2], c->argv[0]);
}

int cmd_cert_rename(struct cli *c)
{
    return rename_object(c, CTOK_OBJ_CERT);
}

int cmd_key_rename(struct cli *c)
{
    return rename_object(c, CTOK_OBJ_PRIVATE);
}

static const char *mem_data(BIO *b)
{
    char *p = NULL;

    BIO_get_mem_data(b, &p);
    return p != NULL ? p : "";
}

static size_t mem_len(BIO *b)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);

    return n > 0 ? (size_t)n : 0;
}

int cmd_ref(struct cli *c)
{
    ctok_token *tok;
    char *uri;
    struct ctok_uri u = {0};
    struct ctok_found *f = NULL;
    size_t n = 0;
    BIO *out;
    int ok;

    if ((tok = cli_token(c, c->argv[0])) == NULL)
        return cli_fail();
    /* the reference must name something: certificate-first, as the provider will resolve it */
    u.token = c->argv[0];
    u.object = c->argv[1];
    u.types = CTOK_OBJ_PRIVATE;
    ok = ctok_find(c->ctx, &u, CTOK_OBJ_PRIVATE, NULL, &f, &n);
    ctok_found_free(f, n);
    if (!ok)
        return cli_fail();
    if (n == 0) {
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no key or certificate named '%s'", c->argv[0],
                 c->argv[1]);
        return cli_fail();
    }
    /* the whole URI or nothing: an alias of any length is escaped in full. The token by its
     * unique id: the reference outlives a rename of the token */
    if ((uri = ctok_uri_make_by_token_id(ctok_token_id(tok), c->argv[1], CTOK_OBJ_PRIVATE)) ==
        NULL) {
        CTOK_ERR(CTOK_R_INTERNAL, "token '%s': out of memory for the URI of '%s'", c->argv[0],
                 c->argv[1]);
        return cli_fail();
    }
    out = c->json ? BIO_new(BIO_s_mem()) : BIO_new_fp(stdout, BIO_NOCLOSE);
    ok = out != NULL && ctok_keyref_write_pem(out, uri);
    if (ok && c->json)
        cli_print_json(json_pack("{s:s, s:s, s:s, s:s%}", "token", c->argv[0], "alias", c->argv[1],
                                 "uri", uri, "pem", mem_data(out), mem_len(out)));
    BIO_free(out);
    OPENSSL_free(uri);
    return ok ? EXIT_OK : cli_fail();
}

static void asn1_time(const ASN1_TIME *t, char *out, size_t len)
{
    struct tm tm;

    if (ASN1_TIME_to_tm(t, &tm))
        strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    else
        snprintf(out, len, "?");
}

/* Certificates are public: listing them needs no auth code (certificate-first); the lookup
 * checks rule view. */
int cmd_cert_list(struct cli *c)
{
    ctok_token *tok = cli_token(c, c->argv[0]);
    struct ctok_uri u = {0};
    struct ctok_found *f = NULL;
    size_t n = 0;
    json_t *list;

    char *token_uri;

    if (tok == NULL)
        return cli_fail();
    u.token = c->argv[0];
    u.types = CTOK_OBJ_CERT;
    if (!ctok_find(c->ctx, &u, CTOK_OBJ_CERT, NULL, &f, &n))
        return cli_fail();
    token_uri = ctok_token_pkcs11_uri(tok);
    list = json_array();
    for (size_t i = 0; i < n; i++) {
        char hex[2 * CTOK_MAX_ID + 1], nb[32], na[32];
        char *subj = X509_NAME_oneline(X509_get_subject_name(f[i].cert), NULL, 0);
        char *iss = X509_NAME_oneline(X509_get_issuer_name(f[i].cert), NULL, 0);

        ctok_hex(f[i].id, f[i].id_len, hex);
        asn1_time(X509_get0_notBefore(f[i].cert), nb, sizeof(nb));
        asn1_time(X509_get0_notAfter(f[i].cert), na, sizeof(na));
        json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "alias", f[i].label, "id", hex,
                              "subject", subj ? subj : "", "issuer", iss ? iss : "", "not_before",
                              nb, "not_after", na);

        cli_add_uris(e, c->argv[0], token_uri, f[i].label, f[i].id, f[i].id_len, "cert");
        json_array_append_new(list, e);
        OPENSSL_free(subj);
        OPENSSL_free(iss);
    }
    ctok_found_free(f, n);
    free(token_uri);
    if (c->json) {
        cli_print_json(list);
        return EXIT_OK;
    }
    if (json_array_size(list) == 0)
        printf("No certificates on token '%s'\n", c->argv[0]);
    else
        printf("%-20s %-40s %-21s %s\n", "ALIAS", "ID", "NOT AFTER", "SUBJECT");
    {
        size_t i;
        json_t *e;

        json_array_foreach(list, i, e)
        {
            printf("%-20s %-40s %-21s %s\n", json_string_value(json_object_get(e, "alias")),
                   json_string_value(json_object_get(e, "id")),
                   json_string_value(json_object_get(e, "not_after")),
                   json_string_value(json_object_get(e, "subject")));
            cli_print_uris(e);
        }
    }
    json_decref(list);
    return EXIT_OK;
}

int cmd_cert_export(struct cli *c)
{
    ctok_token *tok = cli_token(c, c->argv[0]);
    struct ctok_uri u = {0};
    struct ctok_found *f = NULL;
    size_t n = 0, i;
    BIO *out = NULL;
    int ok = 0;

    if (tok == NULL)
        return cli_fail();
    u.token = c->argv[0];
    u.object = c->argv[1];
    u.types = CTOK_OBJ_CERT;
    if (!ctok_find(c->ctx, &u, CTOK_OBJ_CERT, NULL, &f, &n))
        return cli_fail();
    for (i = 0; i < n && strcmp(f[i].label, c->argv[1]) != 0; i++)
        ;
    if (i == n) {
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no certificate named '%s'", c->argv[0], c->argv[1]);
    } else {
        out = c->out != NULL ? BIO_new_file(c->out, "w")
              : c->json      ? BIO_new(BIO_s_mem())
                             : BIO_new_fp(stdout, BIO_NOCLOSE);
        ok = out != NULL && PEM_write_bio_X509(out, f[i].cert);
        if (out == NULL)
            CTOK_ERR(CTOK_R_IO, "cannot write '%s'", c->out);
        if (ok && c->json)
            cli_print_json(c->out != NULL
                               ? json_pack("{s:s, s:s, s:s}", "token", c->argv[0], "alias",
                                           c->argv[1], "out", c->out)
                               : json_pack("{s:s, s:s, s:s%}", "token", c->argv[0], "alias",
                                           c->argv[1], "pem", mem_data(out), mem_len(out)));
    }
    BIO_free(out);
    ctok_found_free(f, n);
    return ok ? EXIT_OK : cli_fail();
}

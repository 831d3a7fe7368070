/*
 * Certificate-first lookup across every configured token (seed 004), and for pkcs11: URIs no
 * configured token matches, across the tokens of p11-kit's registered modules (zero config).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "internal.h"
#include "p11kit_lazy.h"

struct collect {
    struct ctok_found *v;
    size_t n, cap;
    int failed;
};

static int collect_cb(ctok_token *tok, const struct ctok_object *o, void *arg)
{
    struct collect *c = arg;
    struct ctok_found *f;

    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        struct ctok_found *nv = realloc(c->v, cap * sizeof(*nv));

        if (nv == NULL) {
            c->failed = 1;
            return 0;
        }
        c->v = nv;
        c->cap = cap;
    }
    f = &c->v[c->n];
    memset(f, 0, sizeof(*f));
    f->tok = tok;
    f->type = o->type;
    f->label = strdup(o->label != NULL ? o->label : "");
    f->id_len = o->id_len < CTOK_MAX_ID ? o->id_len : CTOK_MAX_ID;
    memcpy(f->id, o->id, f->id_len);
    f->key_type = o->key_type;
    if (o->cert != NULL && X509_up_ref(o->cert))
        f->cert = o->cert;
    if (o->pub != NULL && EVP_PKEY_up_ref(o->pub))
        f->pub = o->pub;
    if (f->label == NULL) {
        c->failed = 1;
        return 0;
    }
    c->n++;
    return 1;
}

static void ctok_found_free_one(struct ctok_found *f)
{
    free(f->label);
    X509_free(f->cert);
    EVP_PKEY_free(f->pub);
}

void ctok_found_free(struct ctok_found *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ctok_found_free_one(&f[i]);
    free(f);
}

static int same_id(const struct ctok_found *a, const struct ctok_found *b)
{
    return a->id_len == b->id_len && memcmp(a->id, b->id, a->id_len) == 0;
}

/* What a search asks for: the URI, and the OSSL_STORE criteria narrowing it (or NULL). */
struct query {
    const struct ctok_uri *u;
    const struct ctok_criteria *crit;
};

/* Are there criteria only certificates answer (a key meets them through its certificate)? */
static int cert_criteria(const struct ctok_criteria *c)
{
    return c != NULL &&
           (c->subject != NULL || c->issuer != NULL || c->serial != NULL || c->fingerprint != NULL);
}

/* Criteria no key meets, not even through its certificate. */
static int cert_only_criteria(const struct ctok_criteria *c)
{
    return c != NULL && (c->issuer != NULL || c->serial != NULL || c->fingerprint != NULL);
}

static int cert_meets(const struct ctok_criteria *c, X509 *x)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    if (x == NULL)
        return 0;
    if (c->subject != NULL && X509_NAME_cmp(c->subject, X509_get_subject_name(x)) != 0)
        return 0;
    if (c->issuer != NULL && X509_NAME_cmp(c->issuer, X509_get_issuer_name(x)) != 0)
        return 0;
    if (c->serial != NULL && ASN1_INTEGER_cmp(c->serial, X509_get0_serialNumber(x)) != 0)
        return 0;
    return c->fingerprint == NULL ||
           (c->digest != NULL && X509_digest(x, c->digest, md, &len) && len == c->fingerprint_len &&
            memcmp(md, c->fingerprint, len) == 0);
}

/* Does object o meet the criteria, itself or (subject) through a certificate of its key? */
static int meets(const struct ctok_criteria *c, const struct ctok_found *all, size_t n,
                 const struct ctok_found *o)
{
    if (c == NULL)
        return 1;
    if (c->alias != NULL && strcmp(o->label, c->alias) != 0)
        return 0;
    if (!cert_criteria(c))
        return 1;
    if (o->type == CTOK_OBJ_CERT)
        return cert_meets(c, o->cert);
    if (cert_only_criteria(c) || o->id_len == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].type == CTOK_OBJ_CERT && all[i].tok == o->tok && same_id(&all[i], o) &&
            cert_meets(c, all[i].cert))
            return 1;
    return 0;
}

/* Does object o match the URI, either itself or through a certificate it shares an id with? */
static int matches_uri(const struct ctok_uri *u, const struct ctok_found *all, size_t n,
                       const struct ctok_found *o)
{
    if (u->has_id && (o->id_len != u->id_len || memcmp(o->id, u->id, u->id_len) != 0))
        return 0;
    if (u->object == NULL || strcmp(o->label, u->object) == 0)
        return 1;
    if (o->type == CTOK_OBJ_CERT || o->id_len == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].type == CTOK_OBJ_CERT && all[i].tok == o->tok &&
            strcmp(all[i].label, u->object) == 0 && same_id(&all[i], o))
            return 1;
    return 0;
}

static int matches(const struct query *q, const struct ctok_found *all, size_t n,
                   const struct ctok_found *o)
{
    return matches_uri(q->u, all, n, o) && meets(q->crit, all, n, o);
}

static int selected(const struct ctok_uri *u, ctok_token *t)
{
    if (u->p11 != NULL) /* pkcs11: URIs select PKCS#11 tokens by their token info */
        return t->be->match_p11_uri != NULL && ctok_token_open(t) &&
               t->be->match_p11_uri(t, u->p11);
    return (u->token == NULL || strcmp(t->name, u->token) == 0) &&
           (u->token_id == NULL || strcmp(t->id, u->token_id) == 0);
}

static int enumerate_into(struct collect *all, ctok_token *t)
{
    return ctok_token_scan(t, collect_cb, all) && !all->failed;
}

/* Collects what is not collected yet (from index first on). */
struct more {
    struct collect *all;
    size_t first;
};

static int collect_new_cb(ctok_token *tok, const struct ctok_object *o, void *arg)
{
    struct more *m = arg;

    for (size_t i = m->first; i < m->all->n; i++) {
        const struct ctok_found *f = &m->all->v[i];

        if (f->tok == tok && f->type == o->type && f->id_len == o->id_len &&
            memcmp(f->id, o->id, o->id_len) == 0 &&
            strcmp(f->label, o->label != NULL ? o->label : "") == 0)
            return 1;
    }
    return collect_cb(tok, o, m->all);
}

/*
 * What hits [first, hits) sharing id with hit i lack (CTOK_OBJ_*): a certificate's key
 * (certificate-first), a key's certificate when the key does not carry its public key.
 */
static unsigned int lacking(const struct collect *all, size_t first, size_t hits, size_t i)
{
    unsigned int have = 0, need = 0;

    for (size_t j = first; j < hits; j++) {
        const struct ctok_found *o = &all->v[j];

        if (!same_id(o, &all->v[i]))
            continue;
        if (j < i) /* asked already */
            return 0;
        have |= o->type;
        if (o->type == CTOK_OBJ_CERT)
            need |= CTOK_OBJ_PRIVATE | CTOK_OBJ_PUBLIC;
        else if (o->pub == NULL)
            need |= CTOK_OBJ_CERT;
    }
    return need & ~have;
}

/*
 * What of token t the URI may name. A URI naming an object label asks the backend for just
 * those objects (a remote token is not listed per key load), and then by id for what they
 * lack; one naming only an id, for the objects with that id. Otherwise, or without a
 * targeted lookup, every object.
 */
static int list_into(struct collect *all, ctok_token *t, const struct ctok_uri *u)
{
    struct more m = {all, all->n};
    size_t hits;

    if ((u->object == NULL && !u->has_id) || t->be->find == NULL)
        return enumerate_into(all, t);
    if (!ctok_token_scan_for(t, u->object, u->has_id ? u->id : NULL, u->id_len, CTOK_OBJ_ANY,
                             collect_cb, all) ||
        all->failed)
        return 0;
    hits = all->n;
    for (size_t i = m.first; u->object != NULL && i < hits; i++) {
        unsigned int need = all->v[i].id_len > 0 ? lacking(all, m.first, hits, i) : 0;

        if (need != 0 && (!ctok_token_scan_for(t, NULL, all->v[i].id, all->v[i].id_len, need,
                                               collect_new_cb, &m) ||
                          all->failed))
            return 0;
    }
    return 1;
}

/* Drops what was collected from token t: it is about to be read again after login. */
static void drop_token(struct collect *all, const ctok_token *t)
{
    size_t k = 0;

    for (size_t i = 0; i < all->n; i++) {
        if (all->v[i].tok == t)
            ctok_found_free_one(&all->v[i]);
        else
            all->v[k++] = all->v[i];
    }
    all->n = k;
}

/* Does the collection hold a certificate matching the URI, on token t (NULL: anywhere)? */
static int has_matching_cert(const struct query *q, const struct collect *all, const ctok_token *t)
{
    for (size_t i = 0; i < all->n; i++)
        if (all->v[i].type == CTOK_OBJ_CERT && (t == NULL || all->v[i].tok == t) &&
            matches(q, all->v, all->n, &all->v[i]))
            return 1;
    return 0;
}

static int has_match(const struct query *q, const struct collect *all, unsigned int want)
{
    for (size_t i = 0; i < all->n; i++)
        if ((all->v[i].type & want) && matches(q, all->v, all->n, &all->v[i]))
            return 1;
    return 0;
}

/* May the search open token t at all? A key reference opens only tokens it may use. */
static int may_open(const ctok_token *t, unsigned int flags)
{
    return !(flags & CTOK_FIND_USE) || ctok_token_permits(t, CTOK_PERM_USE);
}

/* What of want token t (inactive) does not show before login. */
static unsigned int hidden_of(ctok_token *t, unsigned int want)
{
    return ((t->be->hidden != NULL ? t->be->hidden(t) : 0) | ctok_certbind_hidden(t)) & want;
}

unsigned int ctok_token_hidden(ctok_token *tok, unsigned int want)
{
    /* the backend answers for an opened token (a PKCS#11 token: its library loaded) */
    return ctok_token_open(tok) ? hidden_of(tok, want) : 0;
}

/* The types reveal() looks for: private keys are found through certificates too. */
static unsigned int reveal_types(unsigned int want)
{
    return want & CTOK_OBJ_PRIVATE ? want | CTOK_OBJ_CERT : want;
}

/*
 * Will reveal() log in to inactive token t whatever a listing finds now? So for a token the
 * URI names that hides what is asked for (without certificate criteria): reveal() then logs in
 * and lists it again, so listing it before login is thrown away (for a SoftHSM key, a
 * C_FindObjects and a public key import: docs/DESIGN.md, "Start-up and idle").
 */
static int login_certain(ctok_token *t, const struct query *q, unsigned int want,
                         unsigned int flags)
{
    const struct ctok_uri *u = q->u;

    return (u->token != NULL || u->token_id != NULL || u->p11 != NULL) && !cert_criteria(q->crit) &&
           !(flags & CTOK_FIND_NO_LOGIN) && hidden_of(t, reveal_types(want)) != 0;
}

/*
 * Second phase of the search: log in where hidden objects may be what is asked for. With
 * CTOK_FIND_NO_LOGIN such tokens are only counted in *unrevealed. Certificate criteria log in
 * only where certificates are hidden, or where a certificate they match may have keys hidden.
 */
static int reveal(ctok_token *const *toks, size_t ntoks, const struct query *q, unsigned int want,
                  int use_only, unsigned int flags, const struct ctok_ui *ui, struct collect *all,
                  const char *scanned, int *unrevealed)
{
    const struct ctok_uri *u = q->u;
    struct ctok_pin pin = {u->pin_value, u->pin_source};
    int named = u->token != NULL || u->token_id != NULL || u->p11 != NULL;
    int filtered = u->object != NULL || u->has_id || q->crit != NULL;
    int found = has_match(q, all, want);

    for (size_t i = 0; i < ntoks; i++) {
        ctok_token *t = toks[i];
        unsigned int hidden;

        if (!may_open(t, flags) || !selected(u, t) ||
            (!use_only && !ctok_token_permits(t, CTOK_PERM_VIEW)))
            continue;
        if (ctok_token_is_active(t)) {
            /* another thread logged in after this search listed the token: list it again */
            if (scanned != NULL && scanned[i] == 1) {
                drop_token(all, t);
                if (!list_into(all, t, u))
                    return 0;
            }
            continue;
        }
        hidden = hidden_of(t, want);
        if (hidden == 0)
            continue;
        if (cert_criteria(q->crit)
                ? !(hidden & CTOK_OBJ_CERT) && !has_matching_cert(q, all, t)
                : !(named || !filtered || !found ||
                    ((hidden & CTOK_OBJ_PRIVATE) && has_matching_cert(q, all, t))))
            continue;
        if (flags & CTOK_FIND_NO_LOGIN) {
            CTOK_DBG("lookup: token '%s' hides what is searched for: not logging in", t->name);
            (*unrevealed)++;
            continue;
        }
        CTOK_DBG("lookup: token '%s' hides what is searched for: logging in", t->name);
        if (!ctok_token_login(t, &pin, ui)) {
            if (named)
                return 0;
            continue; /* another token may hold it: the error stays for the caller */
        }
        drop_token(all, t);
        if (!list_into(all, t, u))
            return 0;
    }
    return 1;
}

int ctok_find(ctok_ctx *ctx, const struct ctok_uri *u, unsigned int types, const struct ctok_ui *ui,
              struct ctok_found **out, size_t *nout)
{
    return ctok_find_where(ctx, u, NULL, types, ui, out, nout);
}

/* The configured tokens a pkcs11: URI's token attributes select, for errors ("" if none). */
static void configured_p11(ctok_ctx *ctx, const struct ctok_uri *u, char *buf, size_t len, int *any)
{
    size_t used = 0;

    *buf = '\0';
    *any = 0;
    for (size_t i = 0; i < ctx->n_tokens; i++) {
        ctok_token *t = ctx->tokens[i];

        if (t->be->match_p11_uri == NULL)
            continue;
        /* a token that cannot be opened now is not what the URI names: its error goes */
        ERR_set_mark();
        if (selected(u, t))
            *any = 1;
        ERR_pop_to_mark();
        if (used + 1 < len)
            used +=
                (size_t)snprintf(buf + used, len - used, "%s'%s'", used > 0 ? ", " : "", t->name);
    }
}

/* The token attributes of a pkcs11: URI, as a URI: never its query (a pin-value). */
static char *token_part(P11KitUri *from)
{
    P11KitUri *t = p11_kit_uri_new();
    char *s = NULL;

    if (t == NULL)
        return NULL;
    memcpy(p11_kit_uri_get_token_info(t), p11_kit_uri_get_token_info(from), sizeof(CK_TOKEN_INFO));
    if (p11_kit_uri_format(t, P11_KIT_URI_FOR_TOKEN, &s) != P11_KIT_URI_OK)
        s = NULL;
    p11_kit_uri_free(t);
    return s;
}

/*
 * Zero-config pkcs11: URIs, as p11-kit consumers resolve them: when no configured token matches,
 * the tokens of p11-kit's registered modules (or of the URI's module-path) that do, each made
 * once per context (its login then lasts as a configured token's does) and never written to
 * the config. Their permissions are view and use: what an unconfigured user of a PKCS#11 token
 * expects, not key generation or removal. NULL with an error naming what was searched.
 */
static ctok_token **zero_config(ctok_ctx *ctx, const struct ctok_uri *u, const char *configured,
                                size_t *n)
{
    char searched[1024] = "", *shown = NULL;
    json_t *entries = NULL, *e;
    ctok_token **v = NULL;
    size_t i;

    *n = 0;
    for (size_t k = 0; entries == NULL && ctok_backends[k] != NULL; k++)
        if (ctok_backends[k]->uri_candidates != NULL)
            entries = ctok_backends[k]->uri_candidates(u->p11, searched, sizeof(searched));
    if (entries == NULL || json_array_size(entries) == 0) {
        shown = token_part(u->p11);
        CTOK_ERR(CTOK_R_UNKNOWN_TOKEN,
                 "no PKCS#11 token matches '%s': searched the configured tokens (%s%s%s) and "
                 "the modules registered with p11-kit: %s",
                 shown != NULL ? shown : "pkcs11:", *configured != '\0' ? configured : "none in ",
                 *configured != '\0' ? "" : ctx->config_path,
                 *configured == '\0' && ctx->config_absent ? ", which does not exist" : "",
                 searched);
        free(shown);
        json_decref(entries);
        return NULL;
    }
    v = calloc(json_array_size(entries), sizeof(*v));
    if (v == NULL) {
        json_decref(entries);
        return NULL;
    }
    pthread_mutex_lock(&ctx->lock);
    json_array_foreach(entries, i, e)
    {
        ctok_token *t = ctx->ephemeral;

        while (t != NULL && !json_equal(t->entry, e))
            t = t->eph_next;
        if (t == NULL && (t = ctok_token_from_json(ctx, "p11-kit", i, e)) != NULL) {
            CTOK_DBG("lookup: no configured token matches: using '%s' of p11-kit", t->name);
            t->ephemeral = 1;
            t->eph_next = ctx->ephemeral;
            ctx->ephemeral = t;
        }
        if (t == NULL)
            break;
        v[(*n)++] = t;
    }
    pthread_mutex_unlock(&ctx->lock);
    if (*n < json_array_size(entries)) {
        free(v);
        v = NULL;
    }
    json_decref(entries);
    return v;
}

int ctok_find_where(ctok_ctx *ctx, const struct ctok_uri *u, const struct ctok_criteria *crit,
                    unsigned int types, const struct ctok_ui *ui, struct ctok_found **out,
                    size_t *nout)
{
    struct query q = {u, crit};
    struct collect all = {0};
    struct ctok_found *res = NULL;
    size_t nres = 0;
    char *moved = NULL, *scanned = NULL;
    ctok_token *named = NULL, **toks, **eph = NULL;
    size_t ntoks;
    unsigned int want =
        types & u->types & CTOK_OBJ_ANY & (cert_only_criteria(crit) ? CTOK_OBJ_CERT : CTOK_OBJ_ANY);
    int unrevealed = 0;
    static const enum ctok_obj_type order[] = {CTOK_OBJ_CERT, CTOK_OBJ_PUBLIC, CTOK_OBJ_PRIVATE};

    *out = NULL;
    *nout = 0;
    if (!ctok_ctx_load(ctx))
        return 0;
    if ((u->token != NULL || u->token_id != NULL) &&
        (named = ctok_ctx_token_find(ctx, u->token, u->token_id)) == NULL) {
        ctok_ctx_unknown_token(ctx, u->token != NULL ? u->token : u->token_id);
        return 0;
    }
    if (named != NULL && !may_open(named, types)) {
        CTOK_ERR(CTOK_R_PERMISSION, "token '%s': rule 'use' is not permitted", named->name);
        return 0;
    }
    toks = ctx->tokens;
    ntoks = ctx->n_tokens;
    if (u->p11 != NULL) {
        char configured[512];
        int any;

        configured_p11(ctx, u, configured, sizeof(configured), &any);
        if (!any && (eph = zero_config(ctx, u, configured, &ntoks)) == NULL)
            return 0;
        if (!any)
            toks = eph;
    }
    if ((scanned = calloc(ntoks + 1, 1)) == NULL)
        goto err;
    for (size_t i = 0; i < ntoks; i++) {
        ctok_token *t = toks[i];

        if (!may_open(t, types) || !selected(u, t))
            continue;
        /* asking for a private key to use it is 'use' (checked when it is loaded);
         * anything else lists the token's objects: 'view' */
        if (!ctok_token_permits(t, CTOK_PERM_VIEW) && want != CTOK_OBJ_PRIVATE) {
            if (u->token != NULL || u->token_id != NULL) {
                CTOK_ERR(CTOK_R_PERMISSION, "token '%s': rule 'view' is not permitted", t->name);
                goto err;
            }
            continue;
        }
        /* 1: listed while inactive (hidden objects missing), 2: listed while active */
        scanned[i] = ctok_token_is_active(t) ? 2 : 1;
        if (scanned[i] == 1 && !ctok_token_open(t))
            goto err;
        if (scanned[i] == 1 && login_certain(t, &q, want, types))
            continue; /* listed once, after reveal() logs in */
        if (!list_into(&all, t, u))
            goto err;
    }
    ctok_test_point("lookup-listed");
    /* private keys are found through certificates: those must be visible too */
    if (!reveal(toks, ntoks, &q, reveal_types(want), want == CTOK_OBJ_PRIVATE, types, ui, &all,
                scanned, &unrevealed))
        goto err;
    res = calloc(all.n + 1, sizeof(*res));
    moved = calloc(all.n + 1, 1);
    if (res == NULL || moved == NULL)
        goto err;
    for (size_t k = 0; k < 3; k++) {
        if (!(want & order[k]))
            continue;
        for (size_t i = 0; i < all.n; i++) {
            struct ctok_found *o = &all.v[i];

            if (o->type != order[k] || !matches(&q, all.v, all.n, o))
                continue;
            res[nres] = *o;
            /* the certificate supplies a key's public key when the token does not */
            for (size_t j = 0; res[nres].pub == NULL && j < all.n; j++)
                if (all.v[j].type == CTOK_OBJ_CERT && all.v[j].tok == o->tok &&
                    same_id(&all.v[j], o) && all.v[j].pub != NULL &&
                    EVP_PKEY_up_ref(all.v[j].pub)) {
                    res[nres].pub = all.v[j].pub;
                    res[nres].key_type = all.v[j].key_type;
                }
            moved[i] = 1; /* res[nres] owns the copies now */
            nres++;
        }
    }
    for (size_t i = 0; i < all.n; i++)
        if (moved[i])
            memset(&all.v[i], 0, sizeof(all.v[i]));
    free(moved);
    free(scanned);
    free(eph);
    ctok_found_free(all.v, all.n);
    *out = res;
    *nout = nres;
    return nres == 0 && unrevealed ? 2 : 1;
err:
    ctok_found_free(all.v, all.n);
    free(res);
    free(moved);
    free(scanned);
    free(eph);
    return 0;
}

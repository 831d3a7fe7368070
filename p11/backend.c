/*
 * The pkcs11 token type: one crypto token is one slot. Sessions come from a pool, login
 * is shared by all of them, and a connection failure re-initializes the module, finds
 * the slot again and logs in again with the known code (EJBCA's Pkcs11Ng behaviour).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "p11.h"
#include "../store/p11kit_lazy.h"

static int p11_configure(ctok_token *tok, const json_t *conf)
{
    const char *path = ctok_ctx_config_path(ctok_token_ctx(tok));
    const char *lib = json_string_value(json_object_get(conf, "library"));
    const char *rt = json_string_value(json_object_get(conf, "ref_type"));
    const json_t *refj = json_object_get(conf, "ref");
    const char *attrs = json_string_value(json_object_get(conf, "attributes"));
    struct p11_tok *pt;
    char num[32];

    if (lib == NULL || *lib == '\0') {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': pkcs11 token needs \"library\"", path,
                 ctok_token_name(tok));
        return 0;
    }
    /* without "ref" the token serves discovery only (every slot of the library) */
    if (refj != NULL && !json_is_string(refj) && !json_is_integer(refj)) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': pkcs11 token needs \"ref\" (slot id, index or "
                 "token label)",
                 path, ctok_token_name(tok));
        return 0;
    }
    pt = calloc(1, sizeof(*pt));
    if (pt == NULL)
        return 0;
    pthread_mutex_init(&pt->lock, NULL);
    pt->tok = tok;
    ctok_token_set_be(tok, pt);
    if (rt == NULL || strcmp(rt, "label") == 0) {
        pt->ref_type = P11_REF_LABEL;
    } else if (strcmp(rt, "id") == 0) {
        pt->ref_type = P11_REF_ID;
    } else if (strcmp(rt, "index") == 0) {
        pt->ref_type = P11_REF_INDEX;
    } else if (strcmp(rt, "serial") == 0) {
        pt->ref_type = P11_REF_SERIAL;
    } else {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': ref_type must be id, index, label or serial", path,
                 ctok_token_name(tok));
        return 0;
    }
    if (json_is_integer(refj))
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(refj));
    pt->library = strdup(lib);
    pt->ref = refj == NULL ? NULL : strdup(json_is_integer(refj) ? num : json_string_value(refj));
    pt->attributes = attrs != NULL ? strdup(attrs) : NULL;
    if (pt->ref != NULL && pt->ref_type != P11_REF_LABEL && pt->ref_type != P11_REF_SERIAL) {
        char *end;

        (void)strtoul(pt->ref, &end, 0);
        if (*pt->ref == '\0' || *end != '\0') {
            CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': ref '%s' is not a number", path,
                     ctok_token_name(tok), pt->ref);
            return 0;
        }
    }
    return pt->library != NULL && (refj == NULL || pt->ref != NULL);
}

static void p11_close(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);

    if (pt == NULL)
        return;
    /* sessions are not closed and the module is not finalized at exit: some modules crash
     * when C_Finalize runs after their own library teardown (SoftHSM 2.6) */
    ctok_p11_objects_clear(pt);
    free(pt->idle);
    free(pt->library);
    free(pt->ref);
    free(pt->attributes);
    pthread_mutex_destroy(&pt->lock);
    free(pt);
    ctok_token_set_be(tok, NULL);
}

int ctok_p11_enter_token(struct p11_tok *pt)
{
    char who[96];

    if (ctok_p11_enter(pt->m))
        return 1;
    ctok_p11_whoami(who, sizeof(who));
    CTOK_ERR(CTOK_R_BACKEND,
             "token '%s': its PKCS#11 library %s cannot be used (%s; after a "
             "fork, a server's worker initializes it again and must be able to read the "
             "module's configuration and token storage)",
             ctok_token_name(pt->tok), pt->library, who);
    return 0;
}

/* Lock held. */
int ctok_p11_find_slot(struct p11_tok *pt)
{
    struct p11_slot *slots;
    size_t n, i;
    unsigned long want;

    if (pt->ref == NULL) {
        CTOK_ERR(CTOK_R_CONFIG,
                 "%s: token '%s': pkcs11 token needs \"ref\" (slot id, index or token label)",
                 ctok_ctx_config_path(ctok_token_ctx(pt->tok)), ctok_token_name(pt->tok));
        return 0;
    }
    want =
        pt->ref_type == P11_REF_ID || pt->ref_type == P11_REF_INDEX ? strtoul(pt->ref, NULL, 0) : 0;
    ctok_p11_forget_failed();
    if (!ctok_p11_slots(pt->m, &slots, &n))
        return 0;
    for (i = 0; i < n; i++) {
        if ((pt->ref_type == P11_REF_ID && slots[i].id == want) ||
            (pt->ref_type == P11_REF_INDEX && slots[i].index == want) ||
            (pt->ref_type == P11_REF_LABEL && strcmp(slots[i].label, pt->ref) == 0))
            break;
        if (pt->ref_type == P11_REF_SERIAL) {
            char serial[17];

            ctok_p11_str(slots[i].token.serialNumber, 16, serial);
            if (strcmp(serial, pt->ref) == 0)
                break;
        }
    }
    if (i == n) {
        char who[96], skipped[128] = "";
        CK_RV rv;
        const char *fn = ctok_p11_last_failed(NULL, &rv);

        /* a slot the library could not describe may be the one: say so, not just 'absent' */
        if (fn != NULL)
            snprintf(skipped, sizeof(skipped), "; a slot was skipped: %s failed: %s", fn,
                     ctok_p11_rv_name(rv));
        ctok_p11_whoami(who, sizeof(who));
        CTOK_ERR(CTOK_R_BACKEND,
                 "token '%s': no token present in a slot with %s '%s' (library %s; see 'ctok "
                 "slots --library %s'; %s%s)",
                 ctok_token_name(pt->tok),
                 pt->ref_type == P11_REF_ID       ? "id"
                 : pt->ref_type == P11_REF_INDEX  ? "index"
                 : pt->ref_type == P11_REF_SERIAL ? "token serial"
                                                  : "token label",
                 pt->ref, pt->library, pt->library, who, skipped);
        free(slots);
        return 0;
    }
    pt->slot = slots[i].id;
    pt->tinfo = slots[i].token;
    /* the prompt names the token's own label: "eID Card (signature)" */
    ctok_token_set_label(pt->tok, slots[i].label);
    pt->have_slot = 1;
    pt->gen = pt->m->generation;
    free(slots);
    return 1;
}

static int p11_open(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);
    int ok;

    pt->m = ctok_p11_module_get(pt->library);
    if (pt->m == NULL || !ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    ok = ctok_p11_find_slot(pt);
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return ok;
}

/* The pool belongs to one module generation; a new one starts empty. Lock held. */
void ctok_p11_session_reset(struct p11_tok *pt)
{
    pt->n_idle = 0;
    pt->n_copies = 0; /* they died with their sessions */
    pt->logged_in = 0;
    pt->have_slot = 0;
    pt->objs_valid = 0;
}

/* Brings the token to the module's current generation: slot and login. In a region, lock held. */
static int catch_up(struct p11_tok *pt)
{
    if (pt->gen == pt->m->generation && pt->have_slot)
        return 1;
    ctok_p11_session_reset(pt);
    if (!ctok_p11_find_slot(pt))
        return 0;
    return ctok_token_is_active(pt->tok) ? ctok_p11_relogin(pt) : 1;
}

int ctok_p11_session_get(struct p11_tok *pt, CK_SESSION_HANDLE *s, unsigned int *gen, CK_RV *rvp)
{
    CK_RV rv = CKR_OK;
    int ok;

    *rvp = CKR_OK;
    pthread_mutex_lock(&pt->lock);
    ok = catch_up(pt);
    *gen = pt->gen;
    if (ok && pt->n_idle > 0) {
        *s = pt->idle[--pt->n_idle];
        pthread_mutex_unlock(&pt->lock);
        return 1;
    }
    pthread_mutex_unlock(&pt->lock);
    if (!ok)
        return 0;
    rv = P11_CALL(pt->m, C_OpenSession,
                  (pt->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s));
    if (rv == CKR_TOKEN_WRITE_PROTECTED)
        rv = P11_CALL(pt->m, C_OpenSession, (pt->slot, CKF_SERIAL_SESSION, NULL, NULL, s));
    *rvp = rv;
    if (rv != CKR_OK) {
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': C_OpenSession failed: %s", ctok_token_name(pt->tok),
                 ctok_p11_rv_name(rv));
        return 0;
    }
    return 1;
}

/* Keeps an idle session for reuse; 0 if the pool is full. Lock held. */
static int pool_push(struct p11_tok *pt, CK_SESSION_HANDLE s)
{
    if (pt->n_idle == pt->cap_idle) {
        size_t cap = pt->cap_idle ? 2 * pt->cap_idle : 4;
        CK_SESSION_HANDLE *v = cap <= 64 ? realloc(pt->idle, cap * sizeof(*v)) : NULL;

        if (v == NULL)
            return 0;
        pt->idle = v;
        pt->cap_idle = cap;
    }
    pt->idle[pt->n_idle++] = s;
    return 1;
}

void ctok_p11_session_put(struct p11_tok *pt, CK_SESSION_HANDLE s, unsigned int gen)
{
    int kept = 0, alive;

    pthread_mutex_lock(&pt->lock);
    alive = gen == pt->m->generation; /* else the module was re-initialized: the handle died */
    if (alive)
        kept = pool_push(pt, s);
    if (alive && !kept) {
        /* the session's key copies die with it */
        size_t k = 0;

        for (size_t i = 0; i < pt->n_copies; i++)
            if (pt->copies[i].s != s)
                pt->copies[k++] = pt->copies[i];
        pt->n_copies = k;
    }
    pthread_mutex_unlock(&pt->lock);
    if (alive && !kept)
        (void)P11_CALL(pt->m, C_CloseSession, (s));
}

/*
 * C_Login as user (CKU_USER, or CKU_CONTEXT_SPECIFIC for key: an always-authenticate key's
 * "signature PIN") with a code; maps the outcomes the user must tell apart. *rvp (may be NULL)
 * gets the CKR. Lock not held.
 */
static int login_as(struct p11_tok *pt, CK_SESSION_HANDLE s, CK_USER_TYPE user, const char *key,
                    const struct ctok_code *c, CK_RV *rvp)
{
    CK_RV rv = P11_CALL(pt->m, C_Login, (s, user, (CK_UTF8CHAR_PTR)c->code, (CK_ULONG)c->len));
    char who[200], label[33];
    const char *pin = key != NULL ? "signature PIN" : "PIN";

    if (rvp != NULL)
        *rvp = rv;
    ctok_p11_str(pt->tinfo.label, sizeof(pt->tinfo.label), label);
    snprintf(who, sizeof(who), "token '%s' ('%s')%s%s%s", ctok_token_name(pt->tok), label,
             key != NULL ? ", key '" : "", key != NULL ? key : "", key != NULL ? "'" : "");
    switch (rv) {
    case CKR_OK:
    case CKR_USER_ALREADY_LOGGED_IN:
        return 1;
    case CKR_PIN_INCORRECT:
        CTOK_ERR(CTOK_R_WRONG_CODE,
                 "%s: the %s from %s was rejected (CKR_PIN_INCORRECT); ctok will not send it "
                 "again",
                 who, pin, c->src);
        return 0;
    case CKR_PIN_LOCKED:
        CTOK_ERR(CTOK_R_WRONG_CODE,
                 "%s: the %s is locked (CKR_PIN_LOCKED); unlock it with 'ctok pin unlock %s'", who,
                 pin, ctok_token_name(pt->tok));
        return 0;
    case CKR_PIN_EXPIRED:
        CTOK_ERR(CTOK_R_WRONG_CODE,
                 "%s: the %s has expired (CKR_PIN_EXPIRED); change it with 'ctok pin change %s'",
                 who, pin, ctok_token_name(pt->tok));
        return 0;
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_INVALID:
        CTOK_ERR(CTOK_R_WRONG_CODE, "%s: the %s from %s is not valid for this token (%s)", who, pin,
                 c->src, ctok_p11_rv_name(rv));
        return 0;
    case CKR_USER_NOT_LOGGED_IN:
        if (key != NULL) {
            /* the token forgot the user's login (a reconnect, a logout by another program) */
            CTOK_ERR(CTOK_R_NO_CODE,
                     "%s: the token refused the %s: the token is not logged in "
                     "(CKR_USER_NOT_LOGGED_IN)",
                     who, pin);
            return -1;
        }
        break;
    }
    CTOK_ERR(CTOK_R_BACKEND, "%s: C_Login (%s) failed: %s", who, pin, ctok_p11_rv_name(rv));
    return -1;
}

static int login_with(struct p11_tok *pt, CK_SESSION_HANDLE s, const struct ctok_code *c)
{
    return login_as(pt, s, CKU_USER, NULL, c, NULL);
}

/* The PIN state the token reports now, not when its slot was found. Lock held, in a region. */
static unsigned int pin_flags(struct p11_tok *pt, int puk)
{
    CK_TOKEN_INFO ti;
    CK_FLAGS f;

    if (P11_CALL(pt->m, C_GetTokenInfo, (pt->slot, &ti)) != CKR_OK)
        return 0;
    f = ti.flags;
    if (puk)
        return (f & CKF_SO_PIN_COUNT_LOW ? CTOK_PIN_COUNT_LOW : 0) |
               (f & CKF_SO_PIN_FINAL_TRY ? CTOK_PIN_FINAL_TRY : 0) |
               (f & CKF_SO_PIN_LOCKED ? CTOK_PIN_LOCKED : 0);
    return (f & CKF_USER_PIN_COUNT_LOW ? CTOK_PIN_COUNT_LOW : 0) |
           (f & CKF_USER_PIN_FINAL_TRY ? CTOK_PIN_FINAL_TRY : 0) |
           (f & CKF_USER_PIN_LOCKED ? CTOK_PIN_LOCKED : 0);
}

static unsigned int p11_pin_state(ctok_token *tok, int puk)
{
    struct p11_tok *pt = P11TOK(tok);
    unsigned int st = 0;

    if (!ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    if (catch_up(pt))
        st = pin_flags(pt, puk);
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return st;
}

static unsigned int state_cb(ctok_token *tok, int puk, void *arg)
{
    (void)arg;
    return p11_pin_state(tok, puk);
}

/* A context-specific login on the signing session s. */
struct context_login {
    struct p11_tok *pt;
    CK_SESSION_HANDLE s;
    const ctok_key *key;
    CK_RV rv;
};

static unsigned int context_state(ctok_token *tok, int puk, void *arg)
{
    struct p11_tok *pt = ((struct context_login *)arg)->pt;
    unsigned int st;

    (void)tok;
    pthread_mutex_lock(&pt->lock);
    st = pin_flags(pt, puk);
    pthread_mutex_unlock(&pt->lock);
    return st;
}

static int context_send(ctok_token *tok, const struct ctok_code *c, void *arg)
{
    struct context_login *cl = arg;

    (void)tok;
    return login_as(cl->pt, cl->s, CKU_CONTEXT_SPECIFIC, cl->key->label, c, &cl->rv);
}

CK_RV ctok_p11_context_login(struct p11_tok *pt, CK_SESSION_HANDLE s, const ctok_key *key)
{
    struct context_login cl = {pt, s, key, CKR_USER_NOT_LOGGED_IN};
    struct ctok_sender snd = {context_state, context_send, &cl};

    /* the card's PIN state guards this login as it does the first one (no final try spent) */
    if (ctok_token_context_login(pt->tok, key->label, &snd) > 0)
        return CKR_OK;
    return cl.rv != CKR_OK ? cl.rv : CKR_USER_NOT_LOGGED_IN;
}

static int p11_login(ctok_token *tok, const struct ctok_code *c)
{
    struct p11_tok *pt = P11TOK(tok);
    CK_SESSION_HANDLE s;
    unsigned int gen;
    CK_RV rv;
    int r = -1;

    if (!ctok_p11_enter_token(pt))
        return -1;
    if (ctok_p11_session_get(pt, &s, &gen, &rv)) {
        r = login_with(pt, s, c);
        ctok_p11_session_put(pt, s, gen);
    }
    if (r > 0) {
        pthread_mutex_lock(&pt->lock);
        pt->logged_in = 1;
        pt->objs_valid = 0; /* private objects are visible now */
        pthread_mutex_unlock(&pt->lock);
    }
    ctok_p11_leave(pt->m);
    return r;
}

/*
 * Deactivation: C_Logout, so that the token asks for the PIN again. Without it, the module
 * still holds the login and answers the next activation's C_Login, right or wrong PIN, with
 * CKR_USER_ALREADY_LOGGED_IN, which login_with takes as success.
 */
static void p11_logout(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);
    CK_SESSION_HANDLE s;
    unsigned int gen;
    CK_RV rv;

    if (pt->m == NULL || !ctok_p11_enter_token(pt))
        return;
    if (ctok_p11_session_get(pt, &s, &gen, &rv)) {
        rv = P11_CALL(pt->m, C_Logout, (s));
        if (rv != CKR_OK && rv != CKR_USER_NOT_LOGGED_IN)
            CTOK_DBG("token '%s': C_Logout: %s", ctok_token_name(tok), ctok_p11_rv_name(rv));
        ctok_p11_session_put(pt, s, gen);
    }
    pthread_mutex_lock(&pt->lock);
    pt->logged_in = 0;
    pt->objs_valid = 0; /* private objects are hidden again */
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
}

/* Re-login on a session of its own: lock held, in a region. */
struct relogin {
    struct p11_tok *pt;
    CK_SESSION_HANDLE s;
};

static unsigned int relogin_state(ctok_token *tok, int puk, void *arg)
{
    (void)tok;
    return pin_flags(((struct relogin *)arg)->pt, puk);
}

static int relogin_send(ctok_token *tok, const struct ctok_code *c, void *arg)
{
    (void)tok;
    return login_with(((struct relogin *)arg)->pt, ((struct relogin *)arg)->s, c);
}

/* Lock held: login again after re-initialization, with the code the token layer keeps. */
int ctok_p11_relogin(struct p11_tok *pt)
{
    struct relogin rl = {pt, CK_INVALID_HANDLE};
    struct ctok_sender snd = {relogin_state, relogin_send, &rl};
    CK_RV rv;
    int r;

    rv = P11_CALL(pt->m, C_OpenSession,
                  (pt->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &rl.s));
    if (rv != CKR_OK) {
        CTOK_ERR(CTOK_R_BACKEND, "token '%s': C_OpenSession failed after reconnecting: %s",
                 ctok_token_name(pt->tok), ctok_p11_rv_name(rv));
        return 0;
    }
    /* the token layer's one door: a code the token rejected is never sent again */
    r = ctok_token_send_kept_code(pt->tok, &snd);
    if (r > 0) {
        pt->logged_in = 1;
        if (!pool_push(pt, rl.s))
            (void)P11_CALL(pt->m, C_CloseSession, (rl.s));
    } else {
        (void)P11_CALL(pt->m, C_CloseSession, (rl.s));
    }
    return r > 0;
}

int ctok_p11_recover(struct p11_tok *pt, unsigned int gen, CK_RV rv, const char *what)
{
    int ok;

    CTOK_DBG("pkcs11: token '%s': %s returned %s: re-initializing %s", ctok_token_name(pt->tok),
             what, ctok_p11_rv_name(rv), pt->library);
    ctok_test_point("p11-reconnect");
    if (!ctok_p11_module_reinit(pt->m, gen) || !ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    ok = catch_up(pt);
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    ctok_token_keys_drop(pt->tok); /* handles of the old module generation */
    return ok;
}

/* Reports object o as enumeration does. */
static int report(ctok_token *tok, const struct p11_obj *o, ctok_object_cb cb, void *arg)
{
    struct ctok_object obj = {0};

    obj.label = o->label;
    obj.id = o->id;
    obj.id_len = o->id_len;
    obj.cert = o->cert;
    obj.pub = o->pub;
    obj.key_type = o->kt == CKK_RSA          ? CTOK_KT_RSA
                   : o->kt == CKK_EC         ? CTOK_KT_EC
                   : o->kt == CKK_EC_EDWARDS ? CTOK_KT_ED25519
                                             : ctok_key_type_of(o->pub);
    obj.type = o->cls == CKO_CERTIFICATE  ? CTOK_OBJ_CERT
               : o->cls == CKO_PUBLIC_KEY ? CTOK_OBJ_PUBLIC
                                          : CTOK_OBJ_PRIVATE;
    return cb(tok, &obj, arg);
}

/*
 * Objects another process made or removed show once read again from the token: one search
 * tells whether they changed (a full read decodes every certificate and public key again:
 * ~9 M instructions with three keys and their certificates on SoftHSM, the search ~0.3 M).
 */
static int p11_refresh(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);
    int changed;

    if (!ctok_p11_enter_token(pt))
        return 1; /* the next enumeration says what is wrong */
    pthread_mutex_lock(&pt->lock);
    changed = !ctok_p11_objects_same(pt);
    if (changed)
        pt->objs_valid = 0;
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return changed;
}

static int p11_enumerate(ctok_token *tok, ctok_object_cb cb, void *arg)
{
    struct p11_tok *pt = P11TOK(tok);
    int ok = 1;

    if (!ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    if (!pt->objs_valid || pt->gen != pt->m->generation)
        ok = catch_up(pt) && ctok_p11_objects_load(pt);
    for (size_t i = 0; ok && i < pt->n_objs; i++)
        ok = report(tok, &pt->objs[i], cb, arg);
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return ok;
}

/*
 * Runs fn, lock held, on the objects of types with this label and/or id: the cache when it is
 * current, else just those, read with C_FindObjects on CKA_LABEL / CKA_ID. A disconnect is
 * recovered from once (as a signature does), outside the region, with the first try's errors
 * dropped.
 */
static int with_objects(struct p11_tok *pt, const char *label, const uint8_t *id, size_t id_len,
                        unsigned int types,
                        int (*fn)(struct p11_tok *, const struct p11_obj *, size_t, void *),
                        void *arg)
{
    for (int attempt = 0;; attempt++) {
        struct p11_obj *v = NULL;
        size_t n = 0;
        int ok, owned = 0;
        unsigned int gen;
        CK_RV rv = CKR_OK;

        if (!ctok_p11_enter_token(pt))
            return 0;
        ERR_set_mark();
        pthread_mutex_lock(&pt->lock);
        ok = catch_up(pt) &&
             ctok_p11_objects_find(pt, label, id, id_len, types, &v, &n, &owned, &rv);
        gen = pt->gen;
        if (ok)
            ok = fn(pt, v, n, arg);
        pthread_mutex_unlock(&pt->lock);
        ctok_p11_leave(pt->m);
        if (owned)
            ctok_p11_objects_free(v, n);
        if (ok || rv == CKR_OK || attempt > 0 || !ctok_p11_rv_is_disconnect(rv)) {
            ERR_clear_last_mark();
            return ok;
        }
        ERR_pop_to_mark();
        if (!ctok_p11_recover(pt, gen, rv, "reading its objects"))
            return 0;
    }
}

static int report_found(struct p11_tok *pt, const struct p11_obj *v, size_t n, void *filter)
{
    int ok = 1;

    for (size_t i = 0; ok && i < n; i++) /* the cache holds others too */
        ok = report(pt->tok, &v[i], ctok_filter_cb, filter);
    return ok;
}

/* Targeted lookup: a key load by label or id does not read every object of the token. */
static int p11_find(ctok_token *tok, const char *label, const uint8_t *id, size_t id_len,
                    unsigned int types, ctok_object_cb cb, void *arg)
{
    struct ctok_filter f = {label, id, id_len, types, cb, arg};

    return with_objects(P11TOK(tok), label, id, id_len, types, report_found, &f);
}

static unsigned int p11_hidden(ctok_token *tok)
{
    struct p11_tok *pt = P11TOK(tok);
    unsigned int h = 0;

    if (!ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    if (!pt->logged_in && (pt->tinfo.flags & CKF_LOGIN_REQUIRED) && catch_up(pt)) {
        h = CTOK_OBJ_PRIVATE;
        /* no public certificate: they may be private (old single-PIN cards) */
        if (!ctok_p11_any_cert(pt))
            h |= CTOK_OBJ_CERT | CTOK_OBJ_PUBLIC;
    }
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return h;
}

/* Makes the key handle from the key's objects (v: those with its id, or every one). */
static int load_from(struct p11_tok *pt, const struct p11_obj *v, size_t n, void *arg)
{
    ctok_key *key = arg;
    ctok_token *tok = pt->tok;
    struct p11_key *k;
    const struct p11_obj *priv = NULL, *pub = NULL, *cert = NULL;
    int ok;

    for (size_t i = 0; i < n; i++) {
        const struct p11_obj *o = &v[i];

        if (o->id_len != key->id_len || memcmp(o->id, key->id, key->id_len) != 0)
            continue;
        if (o->cls == CKO_PRIVATE_KEY && priv == NULL)
            priv = o;
        else if (o->cls == CKO_PUBLIC_KEY && o->pub != NULL && pub == NULL)
            pub = o;
        else if (o->cls == CKO_CERTIFICATE && o->pub != NULL && cert == NULL)
            cert = o;
    }
    ok = 0;
    if (priv != NULL && (k = calloc(1, sizeof(*k))) != NULL) {
        EVP_PKEY *p = priv->pub != NULL ? priv->pub
                      : pub != NULL     ? pub->pub
                      : cert            ? cert->pub
                                        : NULL;

        pthread_mutex_init(&k->lock, NULL);
        k->h = CK_INVALID_HANDLE;
        k->gen = 0; /* looked up, and copied into session objects, at first use */
        key->be_data = k;
        key->label = strdup(priv->label);
        key->type = priv->kt == CKK_RSA  ? CTOK_KT_RSA
                    : priv->kt == CKK_EC ? CTOK_KT_EC
                                         : CTOK_KT_ED25519;
        if (p != NULL && EVP_PKEY_up_ref(p))
            key->pub = p;
        ok = key->pub != NULL && key->label != NULL;
        if (!ok && key->pub == NULL)
            CTOK_ERR(CTOK_R_BACKEND,
                     "token '%s', key '%s': its public key is neither on the key, "
                     "nor in a public key object, nor in a certificate with the same CKA_ID",
                     ctok_token_name(tok), priv->label);
    } else if (priv == NULL) {
        char hex[2 * CTOK_MAX_ID + 1];

        ctok_hex(key->id, key->id_len, hex);
        CTOK_ERR(CTOK_R_NOT_FOUND, "token '%s': no private key with CKA_ID %s",
                 ctok_token_name(tok), hex);
    }
    return ok;
}

static int read_allowed(struct p11_tok *pt, ctok_key *key);
static CK_RV with_session(struct p11_tok *pt,
                          CK_RV (*fn)(struct p11_tok *, CK_SESSION_HANDLE, void *), void *arg);
/* p11auth: CKA_ALWAYS_AUTHENTICATE of the key, once per key handle (absent: false). */
static CK_RV read_always_auth(struct p11_tok *pt, CK_SESSION_HANDLE s, void *arg)
{
    ctok_key *key = arg;
    struct p11_key *k = key->be_data;
    CK_OBJECT_HANDLE h;
    CK_BBOOL v = CK_FALSE;
    CK_ATTRIBUTE t = {CKA_ALWAYS_AUTHENTICATE, &v, sizeof(v)};
    CK_RV rv = ctok_p11_find_key(pt, s, CKO_PRIVATE_KEY, key->id, key->id_len, &h);

    if (rv == CKR_OK && P11_QUIET(pt->m, C_GetAttributeValue, (s, h, &t, 1)) == CKR_OK &&
        t.ulValueLen == sizeof(v))
        k->always_auth = v == CK_TRUE;
    if (k->always_auth)
        CTOK_DBG("pkcs11: token '%s', key '%s': CKA_ALWAYS_AUTHENTICATE: a context-specific login "
                 "after each signature start",
                 ctok_token_name(pt->tok), key->label);
    return rv;
}

static int p11_key_load(ctok_token *tok, ctok_key *key)
{
    if (!with_objects(P11TOK(tok), NULL, key->id, key->id_len, CTOK_OBJ_ANY, load_from, key) ||
        !read_allowed(P11TOK(tok), key) || !ctok_p11_key_mechs(key))
        return 0;
    /* a key that cannot be read again now fails at its first use with the module's reason */
    ERR_set_mark();
    (void)with_session(P11TOK(tok), read_always_auth, key);
    ERR_pop_to_mark();
    return 1;
}

static void p11_key_free(ctok_key *key)
{
    struct p11_key *k = key->be_data;

    /* its session copies are the token object's, shared with the next key handle of it */
    pthread_mutex_destroy(&k->lock);
    free(k);
    key->be_data = NULL;
}

static EVP_PKEY *p11_export_private(ctok_key *key)
{
    CTOK_ERR(CTOK_R_EXPORT_DENIED,
             "token '%s', key '%s': PKCS#11 private keys are not exported "
             "(they are generated CKA_SENSITIVE and not CKA_EXTRACTABLE)",
             ctok_token_name(key->tok), key->label);
    return NULL;
}

/* Runs fn on a pooled session inside a region: fn's CKR, or the session's failure. */
static CK_RV with_session(struct p11_tok *pt,
                          CK_RV (*fn)(struct p11_tok *, CK_SESSION_HANDLE, void *), void *arg)
{
    CK_SESSION_HANDLE s;
    unsigned int gen;
    CK_RV rv = CKR_GENERAL_ERROR;

    if (!ctok_p11_enter_token(pt))
        return rv;
    if (ctok_p11_session_get(pt, &s, &gen, &rv)) {
        rv = fn(pt, s, arg);
        ctok_p11_session_put(pt, s, gen);
    } else if (rv == CKR_OK) {
        rv = CKR_GENERAL_ERROR;
    }
    ctok_p11_leave(pt->m);
    return rv;
}

static CK_RV do_read_allowed(struct p11_tok *pt, CK_SESSION_HANDLE s, void *arg)
{
    ctok_key *key = arg;
    struct p11_key *k = key->be_data;
    CK_BBOOL use[3] = {CK_TRUE, CK_TRUE, CK_TRUE};
    /* one call: the usage flags cost no round trip of their own */
    CK_ATTRIBUTE a[] = {{CKA_ALLOWED_MECHANISMS, k->allowed, sizeof(k->allowed)},
                        {CKA_SIGN, &use[0], 1},
                        {CKA_DECRYPT, &use[1], 1},
                        {CKA_DERIVE, &use[2], 1}};
    static const unsigned int bits[] = {CTOK_USE_SIGN, CTOK_USE_DECRYPT, CTOK_USE_DERIVE};
    CK_OBJECT_HANDLE h;
    CK_RV rv = ctok_p11_find_key(pt, s, CKO_PRIVATE_KEY, key->id, key->id_len, &h);

    if (rv == CKR_OK)
        rv = P11_QUIET(pt->m, C_GetAttributeValue, (s, h, a, 4));
    /* an attribute the token lacks (or will not say) leaves the others answered */
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE &&
        rv != CKR_BUFFER_TOO_SMALL)
        return rv;
    for (size_t i = 0; i < 3; i++)
        if (a[i + 1].ulValueLen == 1 && use[i] == CK_FALSE)
            key->usage &= ~bits[i];
    if (a[0].ulValueLen != CK_UNAVAILABLE_INFORMATION) {
        k->n_allowed = a[0].ulValueLen / sizeof(k->allowed[0]);
        k->restricted = k->n_allowed > 0;
    }
    return rv == CKR_OK || k->restricted ? CKR_OK : rv;
}

/*
 * p11mech: the key's CKA_ALLOWED_MECHANISMS, read once per key handle. Absent or empty
 * (or unreadable, or longer than ctok keeps): unrestricted, and the token has the last word.
 */
static int read_allowed(struct p11_tok *pt, ctok_key *key)
{
    struct p11_key *k = key->be_data;
    CK_RV rv;

    ERR_set_mark();
    rv = with_session(pt, do_read_allowed, key);
    ERR_pop_to_mark();
    if (rv != CKR_OK || !k->restricted) {
        k->restricted = 0;
        k->n_allowed = 0;
        CTOK_DBG("pkcs11: token '%s', key '%s': no mechanism restriction (%s)",
                 ctok_token_name(pt->tok), key->label,
                 rv == CKR_OK ? "CKA_ALLOWED_MECHANISMS empty" : ctok_p11_rv_name(rv));
    } else {
        key->allowed = k->allowed;
        key->n_allowed = k->n_allowed;
    }
    return 1;
}

struct pins {
    const char *a, *b; /* PUK and new PIN, or old and new PIN */
    size_t a_len, b_len;
    const char *how;
    CK_RV (*fn)(struct p11_tok *, CK_SESSION_HANDLE, void *);
};

static CK_RV do_unlock(struct p11_tok *pt, CK_SESSION_HANDLE s, void *arg)
{
    struct pins *p = arg;
    CK_RV rv = CKR_FUNCTION_NOT_SUPPORTED;

    if (pt->m->unlock_pin != NULL) {
        ERR_set_mark();
        rv = pt->m->unlock_pin(s, (CK_UTF8CHAR_PTR)p->a, p->a_len, (CK_UTF8CHAR_PTR)p->b, p->b_len);
        ERR_pop_to_mark();
        rv = ctok_p11_trace("C_UnlockPIN", rv);
    }
    if (rv == CKR_FUNCTION_NOT_SUPPORTED) {
        p->how = "SO login and C_InitPIN";
        rv = P11_CALL(pt->m, C_Login, (s, CKU_SO, (CK_UTF8CHAR_PTR)p->a, p->a_len));
        if (rv == CKR_OK) {
            rv = P11_CALL(pt->m, C_InitPIN, (s, (CK_UTF8CHAR_PTR)p->b, p->b_len));
            (void)P11_CALL(pt->m, C_Logout, (s));
        }
    }
    return rv;
}

/* C_UnlockPIN or C_SetPIN through the token layer's door: c is the PUK or the old PIN. */
static int pins_send(ctok_token *tok, const struct ctok_code *c, void *arg)
{
    struct pins *p = arg;
    CK_RV rv = with_session(P11TOK(tok), p->fn, p);

    if (rv == CKR_OK)
        return 1;
    CTOK_ERR(rv == CKR_PIN_INCORRECT ? CTOK_R_WRONG_CODE : CTOK_R_BACKEND,
             "token '%s': %s with the %s from %s failed: %s", ctok_token_name(tok), p->how,
             c->puk ? "PUK" : "current PIN", c->src, ctok_p11_rv_name(rv));
    return rv == CKR_PIN_INCORRECT ? 0 : -1;
}

/*
 * PIN unlock: the vendor extension C_UnlockPIN(session, puk, new PIN) where the library
 * has it (smart-card middleware), else the standard way: SO login with the PUK, C_InitPIN.
 */
static int p11_unlock_pin(ctok_token *tok, const char *puk, size_t puk_len, const char *pin,
                          size_t pin_len)
{
    struct pins p = {puk, pin, puk_len, pin_len, "C_UnlockPIN", do_unlock};
    struct ctok_code c = {puk, puk_len, 1, "the ctok tool", 0};
    struct ctok_sender snd = {state_cb, pins_send, &p};

    if (ctok_token_send_code(tok, &c, &snd) <= 0)
        return 0;
    CTOK_DBG("pkcs11: token '%s': PIN set with %s", ctok_token_name(tok), p.how);
    return 1;
}

static CK_RV do_set_pin(struct p11_tok *pt, CK_SESSION_HANDLE s, void *arg)
{
    struct pins *p = arg;

    return P11_CALL(pt->m, C_SetPIN,
                    (s, (CK_UTF8CHAR_PTR)p->a, p->a_len, (CK_UTF8CHAR_PTR)p->b, p->b_len));
}

static int p11_change_code(ctok_token *tok, const char *old, size_t old_len, const char *code,
                           size_t len)
{
    struct pins p = {old, code, old_len, len, "C_SetPIN", do_set_pin};
    struct ctok_code c = {old, old_len, 0, "the ctok tool", 0};
    struct ctok_sender snd = {state_cb, pins_send, &p};

    return ctok_token_send_code(tok, &c, &snd) > 0;
}

static int p11_match_uri(ctok_token *tok, void *uri)
{
    struct p11_tok *pt = P11TOK(tok);
    int ok;

    pthread_mutex_lock(&pt->lock);
    ok = pt->have_slot && p11_kit_uri_match_token_info(uri, &pt->tinfo) &&
         p11_kit_uri_match_module_info(uri, &pt->m->info);
    pthread_mutex_unlock(&pt->lock);
    return ok;
}

/* ctok token create: the slot the entry names is there and takes the code. */
static int p11_create(ctok_token *tok, const char *code, size_t len)
{
    return ctok_token_login_with(tok, code, len);
}

static json_t *p11_discover(ctok_token *tok)
{
    return ctok_p11_slot_list(P11TOK(tok)->library);
}

static const struct ctok_tool_field p11_fields[] = {
    {"library", "library", CTOK_FIELD_STRING, 1,
     "the PKCS#11 library: a path, or a name registered with p11-kit", NULL},
    {"ref-type", "ref_type", CTOK_FIELD_STRING, 0,
     "id|index|label|serial: what --ref names (label)", "label"},
    {"ref", "ref", CTOK_FIELD_STRING, 1,
     "the slot's id, index, token label or token serial (see 'ctok slots')", NULL},
    {"attributes", "attributes", CTOK_FIELD_PATH, 0, "key generation attribute file", NULL},
    {0},
};

const struct ctok_backend ctok_pkcs11_backend = {
    .type = "pkcs11",
    .tool_fields = p11_fields,
    .create = p11_create,
    .discover = p11_discover,
    .mechanisms = ctok_p11_mechanisms,
    .token_uri = ctok_p11_token_uri,
    .registered = ctok_p11_registered,
    .ctx_use = ctok_p11_registry_use,
    .ctx_release = ctok_p11_registry_release,
    .configure = p11_configure,
    .open = p11_open,
    .login_code = p11_login,
    .logout = p11_logout,
    .pin_state = p11_pin_state,
    .enumerate = p11_enumerate,
    .refresh = p11_refresh,
    .find = p11_find,
    .hidden = p11_hidden,
    .match_p11_uri = p11_match_uri,
    .uri_candidates = ctok_p11_uri_candidates,
    .key_load = p11_key_load,
    .key_free = p11_key_free,
    .sign = ctok_p11_sign,
    .sign_rs = 1,
    .decrypt = ctok_p11_decrypt,
    .derive = ctok_p11_derive,
    .export_private = p11_export_private,
    .generate = ctok_p11_generate,
    .remove = ctok_p11_remove,
    .put_cert = ctok_p11_put_cert,
    .remove_cert = ctok_p11_remove_cert,
    .rename = ctok_p11_rename,
    .unlock_pin = p11_unlock_pin,
    .change_code = p11_change_code,
    .close = p11_close,
};

/*
 * A pkcs11 token's connection: entering its module, finding its slot, the session pool, and
 * catching up (slot and login) after the module was re-initialized by a connection failure.
 */
#include <stdlib.h>
#include <string.h>

#include "p11.h"

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
int ctok_p11_catch_up(struct p11_tok *pt)
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
    ok = ctok_p11_catch_up(pt);
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
int ctok_p11_pool_push(struct p11_tok *pt, CK_SESSION_HANDLE s)
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
        kept = ctok_p11_pool_push(pt, s);
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

int ctok_p11_recover(struct p11_tok *pt, unsigned int gen, CK_RV rv, const char *what)
{
    int ok;

    CTOK_DBG("pkcs11: token '%s': %s returned %s: re-initializing %s", ctok_token_name(pt->tok),
             what, ctok_p11_rv_name(rv), pt->library);
    ctok_test_point("p11-reconnect");
    if (!ctok_p11_module_reinit(pt->m, gen) || !ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    ok = ctok_p11_catch_up(pt);
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    ctok_token_keys_drop(pt->tok); /* handles of the old module generation */
    return ok;
}

/* Runs fn on a pooled session inside a region: fn's CKR, or the session's failure. */
CK_RV ctok_p11_with_session(struct p11_tok *pt,
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

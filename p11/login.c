/*
 * A pkcs11 token's login: C_Login with the token layer's code (also context-specific, for an
 * always-authenticate key), logout, login again after a reconnect, and PIN unlock and change.
 */
#include <stdio.h>
#include <string.h>

#include "p11.h"

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

unsigned int ctok_p11_pin_state(ctok_token *tok, int puk)
{
    struct p11_tok *pt = P11TOK(tok);
    unsigned int st = 0;

    if (!ctok_p11_enter_token(pt))
        return 0;
    pthread_mutex_lock(&pt->lock);
    if (ctok_p11_catch_up(pt))
        st = pin_flags(pt, puk);
    pthread_mutex_unlock(&pt->lock);
    ctok_p11_leave(pt->m);
    return st;
}

static unsigned int state_cb(ctok_token *tok, int puk, void *arg)
{
    (void)arg;
    return ctok_p11_pin_state(tok, puk);
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

int ctok_p11_login(ctok_token *tok, const struct ctok_code *c)
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
void ctok_p11_logout(ctok_token *tok)
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
        if (!ctok_p11_pool_push(pt, rl.s))
            (void)P11_CALL(pt->m, C_CloseSession, (rl.s));
    } else {
        (void)P11_CALL(pt->m, C_CloseSession, (rl.s));
    }
    return r > 0;
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
    CK_RV rv = ctok_p11_with_session(P11TOK(tok), p->fn, p);

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
int ctok_p11_unlock_pin(ctok_token *tok, const char *puk, size_t puk_len, const char *pin,
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

int ctok_p11_change_code(ctok_token *tok, const char *old, size_t old_len, const char *code,
                         size_t len)
{
    struct pins p = {old, code, old_len, len, "C_SetPIN", do_set_pin};
    struct ctok_code c = {old, old_len, 0, "the ctok tool", 0};
    struct ctok_sender snd = {state_cb, pins_send, &p};

    return ctok_token_send_code(tok, &c, &snd) > 0;
}

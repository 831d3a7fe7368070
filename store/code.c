/*
 * The one door every auth code goes through to a token (ctok_token_send_code): rejected codes
 * remembered (salted hashes) and never sent again, the PIN lockout guard, the code kept while
 * active, and the accessors backends use for what the token layer remembers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "internal.h"

/* Guards what the token layer remembers of codes (see struct ctok_token): a leaf lock. */
pthread_mutex_t ctok_code_lock = PTHREAD_MUTEX_INITIALIZER;

/* Salted, so a core dump does not hand out a table of PIN hashes. ctok_code_lock held. */
static int code_hash(ctok_token *tok, const struct ctok_code *c, uint8_t h[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t kind = c->puk ? 'P' : 'U';
    int ok;

    if (!tok->salted)
        tok->salted = RAND_bytes(tok->salt, sizeof(tok->salt)) == 1;
    ok = md != NULL && tok->salted && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
         EVP_DigestUpdate(md, tok->salt, sizeof(tok->salt)) && EVP_DigestUpdate(md, &kind, 1) &&
         EVP_DigestUpdate(md, c->code, c->len) && EVP_DigestFinal_ex(md, h, NULL);
    EVP_MD_CTX_free(md);
    return ok;
}

/* ctok_code_lock held. */
static int find_rejected(const ctok_token *tok, const uint8_t h[32])
{
    for (int i = 0; i < tok->n_rejected; i++)
        if (CRYPTO_memcmp(h, tok->rejected[i], 32) == 0)
            return i;
    return -1;
}

/* Marks a code rejected (1) or, once a PIN is set to it, sendable again (0). */
void ctok_code_mark_rejected(ctok_token *tok, const struct ctok_code *c, int rejected)
{
    uint8_t h[32];
    int i;

    pthread_mutex_lock(&ctok_code_lock);
    if (code_hash(tok, c, h)) {
        i = find_rejected(tok, h);
        if (rejected && i < 0) {
            int n = (int)(sizeof(tok->rejected) / sizeof(tok->rejected[0]));

            /* the oldest goes when full */
            memmove(tok->rejected[1], tok->rejected[0], (size_t)(n - 1) * 32);
            memcpy(tok->rejected[0], h, 32);
            tok->n_rejected += tok->n_rejected < n;
        } else if (!rejected && i >= 0) {
            memmove(tok->rejected[i], tok->rejected[i + 1], (size_t)(tok->n_rejected - i - 1) * 32);
            tok->n_rejected--;
        }
    }
    pthread_mutex_unlock(&ctok_code_lock);
    OPENSSL_cleanse(h, sizeof(h));
}

static int was_rejected(ctok_token *tok, const struct ctok_code *c)
{
    uint8_t h[32];
    int r;

    pthread_mutex_lock(&ctok_code_lock);
    r = code_hash(tok, c, h) ? find_rejected(tok, h) >= 0 : -1;
    pthread_mutex_unlock(&ctok_code_lock);
    OPENSSL_cleanse(h, sizeof(h));
    return r;
}

/* PIN lockout guard: a locked PIN is not tried, a final try is spent only on a typed code. */
static int pin_guard(ctok_token *tok, const struct ctok_code *c, unsigned int st)
{
    const char *what = c->puk ? "PUK" : "PIN";
    int warn;

    if (st & CTOK_PIN_LOCKED) {
        CTOK_ERR(CTOK_R_WRONG_CODE,
                 "token '%s': its %s is locked (the token reports it); ctok does not try the "
                 "%s from %s%s%s%s",
                 tok->name, what, what, c->src,
                 c->puk ? "" : ": set a new PIN with the PUK ('ctok pin unlock ",
                 c->puk ? "" : tok->name, c->puk ? "" : "')");
        ctok_audit(tok, c->puk ? "pin_unlock" : "activate", NULL, 0, "refused: locked");
        return 0;
    }
    if (st & CTOK_PIN_FINAL_TRY) {
        if (!c->typed) {
            CTOK_ERR(CTOK_R_WRONG_CODE,
                     "token '%s': one %s try is left before the token locks; ctok does not "
                     "spend it on the %s from %s: type it once with 'ctok token activate %s' at "
                     "a terminal, or set a new PIN with the PUK ('ctok pin unlock %s')",
                     tok->name, what, what, c->src, tok->name, tok->name);
            ctok_audit(tok, c->puk ? "pin_unlock" : "activate", NULL, 0, "refused: final try left");
            return 0;
        }
        ctok_debug("warning: token '%s': one %s try is left; it is spent on the %s from %s "
                   "(if it is wrong, the token locks)",
                   tok->name, what, what, c->src);
        return 1;
    }
    if (st & CTOK_PIN_COUNT_LOW) {
        pthread_mutex_lock(&ctok_code_lock);
        warn = !tok->warned_low;
        tok->warned_low = 1;
        pthread_mutex_unlock(&ctok_code_lock);
        if (warn)
            ctok_debug("warning: token '%s': the token counts wrong %s tries (%s count low); a "
                       "few more lock it",
                       tok->name, what, what);
    }
    return 1;
}

int ctok_token_send_code(ctok_token *tok, const struct ctok_code *c, const struct ctok_sender *s)
{
    const char *what = c->puk ? "PUK" : "authentication code";
    int r = was_rejected(tok, c);

    if (r != 0) {
        if (r > 0)
            CTOK_ERR(CTOK_R_WRONG_CODE,
                     "token '%s': the token rejected the %s from %s before; ctok does not send "
                     "it again (wrong tries lock smart cards): correct it and start again",
                     tok->name, what, c->src);
        else
            CTOK_ERR(CTOK_R_INTERNAL, "token '%s': cannot hash the %s", tok->name, what);
        return r > 0 ? 0 : -1;
    }
    if (s->state != NULL && !pin_guard(tok, c, s->state(tok, c->puk, s->arg)))
        return -1;
    r = s->send(tok, c, s->arg);
    if (r == 0)
        ctok_code_mark_rejected(tok, c, 1);
    return r;
}

/* Keeps the code while active, for re-login and keystore rewrites (c NULL: forgets it).
 * tok->lock held. */
void ctok_code_keep(ctok_token *tok, const struct ctok_code *c)
{
    char *copy = c != NULL ? OPENSSL_malloc(c->len + 1) : NULL, *old;
    size_t old_len;

    if (copy != NULL) {
        memcpy(copy, c->code, c->len);
        copy[c->len] = '\0';
    }
    pthread_mutex_lock(&ctok_code_lock);
    old = tok->code;
    old_len = tok->code_len;
    tok->code = copy;
    tok->code_len = copy != NULL ? c->len : 0;
    BIO_snprintf(tok->code_src, sizeof(tok->code_src), "%s", c != NULL ? c->src : "");
    pthread_mutex_unlock(&ctok_code_lock);
    if (old != NULL)
        OPENSSL_clear_free(old, old_len + 1);
}

int ctok_token_send_kept_code(ctok_token *tok, const struct ctok_sender *s)
{
    char code[CTOK_MAX_CODE + 1], src[sizeof(tok->code_src)];
    struct ctok_code c = {code, 0, 0, src, 0};
    int r = -1;

    pthread_mutex_lock(&ctok_code_lock);
    if (tok->code != NULL && tok->code_len < sizeof(code)) {
        memcpy(code, tok->code, tok->code_len);
        c.len = tok->code_len;
        memcpy(src, tok->code_src, sizeof(src));
        r = 0;
    }
    pthread_mutex_unlock(&ctok_code_lock);
    if (r < 0) {
        BIO_snprintf(tok->inactive_why, sizeof(tok->inactive_why),
                     "its authentication code was typed at a prompt and is not kept");
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s' was reconnected and must be activated again: %s",
                 tok->name, tok->inactive_why);
        ctok_token_set_active(tok, 0);
        return 0;
    }
    r = ctok_token_send_code(tok, &c, s);
    if (r == 0) {
        /* the known code no longer works: forget it, never resend it */
        pthread_mutex_lock(&ctok_code_lock);
        if (tok->code != NULL)
            OPENSSL_clear_free(tok->code, tok->code_len + 1);
        tok->code = NULL;
        tok->code_len = 0;
        BIO_snprintf(tok->inactive_why, sizeof(tok->inactive_why),
                     "the token rejected the authentication code from %s when logging in again",
                     src);
        pthread_mutex_unlock(&ctok_code_lock);
        ctok_token_set_active(tok, 0);
    }
    OPENSSL_cleanse(code, sizeof(code));
    return r;
}

int ctok_code_kept(ctok_token *tok, char *buf, size_t bufsz, size_t *len, char *src, size_t srcsz)
{
    int ok = 0;

    pthread_mutex_lock(&ctok_code_lock);
    if (tok->code != NULL && tok->code_len < bufsz) {
        memcpy(buf, tok->code, tok->code_len + 1);
        *len = tok->code_len;
        if (src != NULL)
            BIO_snprintf(src, srcsz, "%s", tok->code_src);
        ok = 1;
    }
    pthread_mutex_unlock(&ctok_code_lock);
    return ok;
}

int ctok_token_kept_code(ctok_token *tok, char *buf, size_t bufsz, size_t *len)
{
    return ctok_code_kept(tok, buf, bufsz, len, NULL, 0);
}

void ctok_token_set_label(ctok_token *tok, const char *label)
{
    pthread_mutex_lock(&ctok_code_lock);
    BIO_snprintf(tok->label, sizeof(tok->label), "%s", label);
    pthread_mutex_unlock(&ctok_code_lock);
}

void *ctok_token_be(const ctok_token *tok)
{
    return tok->be_data;
}

void ctok_token_set_be(ctok_token *tok, void *data)
{
    tok->be_data = data;
}

void ctok_token_inactive_why(ctok_token *tok, char *buf, size_t len)
{
    pthread_mutex_lock(&ctok_code_lock);
    BIO_snprintf(buf, len, "%s", tok->inactive_why[0] ? tok->inactive_why : "it is not active");
    pthread_mutex_unlock(&ctok_code_lock);
}

int ctok_token_code_is(ctok_token *tok, const char *code, size_t len)
{
    int same = 0;

    pthread_mutex_lock(&ctok_code_lock);
    if (ctok_token_is_active(tok) && tok->code != NULL && tok->code_len == len)
        same = CRYPTO_memcmp(tok->code, code, len) == 0;
    pthread_mutex_unlock(&ctok_code_lock);
    return same;
}

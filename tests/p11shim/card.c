/* The card ctok-p11shim plays over SoftHSM tokens: the two-PIN card's labels, private
 * certificates, and CTOK_SHIM_PIN_TRIES's retry counter (README.md). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/types.h>
#include <unistd.h>

#include "shim.h"

#define CARD_LABEL_A "eID Card (identification)"
#define CARD_LABEL_B "eID Card (signature)"

/* ---- card presentation ---- */

void shim_pad(CK_UTF8CHAR *field, size_t size, const char *text)
{
    size_t len = strlen(text);
    memset(field, ' ', size);
    memcpy(field, text, len < size ? len : size);
}

/* Which half of the two-PIN card a SoftHSM token is: 0, 1, or -1 for neither. */
int shim_card_half(const CK_TOKEN_INFO *ti)
{
    char label[33];
    size_t len = sizeof(ti->label);
    int half = -1;

    memcpy(label, ti->label, len);
    while (len > 0 && (label[len - 1] == ' ' || label[len - 1] == '\0'))
        len--;
    label[len] = '\0';
    pthread_mutex_lock(&g_lock);
    if (g_cfg.multipin)
        for (int i = 0; i < 2 && half < 0; i++)
            if (strcmp(g_cfg.card_label[i], label) == 0)
                half = i;
    pthread_mutex_unlock(&g_lock);
    return half;
}

void shim_present_token(CK_TOKEN_INFO *ti)
{
    int half = shim_card_half(ti);
    int private_certs;

    if (half >= 0)
        shim_pad(ti->label, sizeof(ti->label), half == 0 ? CARD_LABEL_A : CARD_LABEL_B);
    pthread_mutex_lock(&g_lock);
    private_certs = g_cfg.private_certs;
    pthread_mutex_unlock(&g_lock);
    if (private_certs)
        ti->flags |= CKF_LOGIN_REQUIRED;
}

/* ---- CTOK_SHIM_PIN_TRIES: a card's retry counter ---- */

/* The wrapped module's own label of the slot's token, blank padding removed. */
static int raw_label(CK_SLOT_ID slot, char label[33])
{
    CK_TOKEN_INFO ti;
    size_t len = sizeof(ti.label);

    if (g_soft->C_GetTokenInfo(slot, &ti) != CKR_OK)
        return 0;
    memcpy(label, ti.label, len);
    while (len > 0 && label[len - 1] == ' ')
        len--;
    label[len] = '\0';
    return 1;
}

enum tries_op { TRIES_READ, TRIES_WRONG, TRIES_RESET };

/*
 * Wrong user PIN tries of a token since its last good one, kept in the counter file as lines
 * "<count> <label>" so that every process sees the card's count, as with a real card. Returns
 * the count after op, or -1 when the counter is off or unusable.
 */
static long pin_tries(CK_SLOT_ID slot, enum tries_op op, unsigned long *max)
{
    char path[PATH_MAX], label[33], buf[8192], out[8192], *line, *save;
    long count = 0;
    size_t o = 0;
    ssize_t n;
    int fd;

    pthread_mutex_lock(&g_lock);
    *max = g_cfg.pin_tries;
    strcpy(path, g_cfg.pin_state);
    pthread_mutex_unlock(&g_lock);
    if (*max == 0 || !raw_label(slot, label))
        return -1;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    flock(fd, LOCK_EX);
    n = read(fd, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *sp = strchr(line, ' ');
        if (sp && strcmp(sp + 1, label) == 0)
            count = strtol(line, NULL, 10);
        else if (o + strlen(line) + 2 < sizeof(out))
            o += (size_t)sprintf(out + o, "%s\n", line);
    }
    if (op == TRIES_WRONG)
        count++;
    else if (op == TRIES_RESET)
        count = 0;
    if (op != TRIES_READ) {
        if (count > 0 && o + strlen(label) + 24 < sizeof(out))
            o += (size_t)sprintf(out + o, "%ld %s\n", count, label);
        if (ftruncate(fd, 0) != 0 || pwrite(fd, out, o, 0) != (ssize_t)o)
            count = -1;
    }
    flock(fd, LOCK_UN);
    close(fd);
    return count;
}

static int session_slot(CK_SESSION_HANDLE s, CK_SLOT_ID *slot)
{
    CK_SESSION_INFO si;

    if (g_soft->C_GetSessionInfo(s, &si) != CKR_OK)
        return 0;
    *slot = si.slotID;
    return 1;
}

/* Before a call that checks the user PIN: CKR_PIN_LOCKED when no try is left. */
CK_RV shim_pin_locked(CK_SESSION_HANDLE s)
{
    CK_SLOT_ID slot;
    unsigned long max;
    long n = session_slot(s, &slot) ? pin_tries(slot, TRIES_READ, &max) : -1;

    return n >= 0 && (unsigned long)n >= max ? CKR_PIN_LOCKED : CKR_OK;
}

/* After it: a wrong PIN counts, a good one resets the count. */
void shim_pin_checked(CK_SESSION_HANDLE s, CK_RV rv)
{
    CK_SLOT_ID slot;
    unsigned long max;

    if ((rv == CKR_PIN_INCORRECT || rv == CKR_OK) && session_slot(s, &slot))
        (void)pin_tries(slot, rv == CKR_OK ? TRIES_RESET : TRIES_WRONG, &max);
}

/* C_GetTokenInfo shows the count as a card does. */
void shim_pin_flags(CK_SLOT_ID slot, CK_TOKEN_INFO *ti)
{
    unsigned long max;
    long n = pin_tries(slot, TRIES_READ, &max);

    if (n <= 0)
        return;
    if ((unsigned long)n >= max)
        ti->flags |= CKF_USER_PIN_LOCKED;
    else if (max - (unsigned long)n == 1)
        ti->flags |= CKF_USER_PIN_FINAL_TRY;
    else
        ti->flags |= CKF_USER_PIN_COUNT_LOW;
}

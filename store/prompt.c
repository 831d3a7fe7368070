/*
 * ctok's own PIN prompt, for applications that give no passphrase UI (a C program calling
 * OSSL_STORE_open without a UI_METHOD, the decoder path) and for the context-specific login of
 * an always-authenticate key at signing time, when the application's callback is gone: the
 * terminal, through OpenSSL's default UI method (UI_OpenSSL(), what `openssl` users know).
 */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ui.h>

#include "internal.h"

/*
 * UI_OpenSSL() reads stdin, echoing, when /dev/tty cannot be opened: a daemon would take a PIN
 * from whatever its stdin is. So the terminal is checked first, and without one ctok asks no one.
 */
static int have_tty(void)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);

    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* One prompt at a time: threads signing at once with an always-authenticate key share a tty. */
static pthread_mutex_t prompt_lock = PTHREAD_MUTEX_INITIALIZER;

int ctok_tty_read(const char *prompt, const char *repeat, char *buf, size_t bufsz, size_t *len)
{
    char again[CTOK_MAX_CODE + 1] = "";
    int max = (int)(bufsz > sizeof(again) ? sizeof(again) : bufsz) - 1, r = -1, res;
    UI *ui;

    if (bufsz < 2 || !have_tty())
        return CTOK_TTY_NONE;
    buf[0] = '\0';
    pthread_mutex_lock(&prompt_lock);
    ERR_set_mark();
    ui = UI_new_method(UI_OpenSSL());
    if (ui != NULL && UI_add_input_string(ui, prompt, 0, buf, 1, max) >= 0 &&
        (repeat == NULL || UI_add_verify_string(ui, repeat, 0, again, 1, max, buf) >= 0))
        r = UI_process(ui);
    UI_free(ui); /* cleanses its own copies */
    ERR_pop_to_mark();
    pthread_mutex_unlock(&prompt_lock);
    /* UI_process: -2 interrupted; -1 also for a repeat that differs, after both were typed */
    if (r == 0) {
        *len = strlen(buf);
        res = CTOK_TTY_READ;
    } else {
        res = r == -2                                                ? CTOK_TTY_INTERRUPTED
              : repeat != NULL && buf[0] != '\0' && again[0] != '\0' ? CTOK_TTY_MISMATCH
                                                                     : CTOK_TTY_NONE;
        OPENSSL_cleanse(buf, bufsz);
    }
    OPENSSL_cleanse(again, sizeof(again));
    return res;
}

int ctok_tty_get_code(void *arg, const char *info, char *buf, size_t bufsz, size_t *len)
{
    const char *tokname = arg != NULL ? arg : info;
    char prompt[300];

    if (!have_tty()) {
        CTOK_ERR(CTOK_R_NO_CODE,
                 "token '%s': its auth is prompt and there is no terminal to ask on; configure "
                 "auth file/env or run where a terminal is",
                 tokname);
        return 0;
    }
    snprintf(prompt, sizeof(prompt), "Enter PIN for %s: ", info);
    if (ctok_tty_read(prompt, NULL, buf, bufsz, len) != CTOK_TTY_READ) {
        CTOK_ERR(CTOK_R_NO_CODE, "token '%s': no PIN was read from the terminal", tokname);
        return 0;
    }
    return 1;
}

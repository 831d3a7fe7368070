/*
 * The audit trail: one JSON line per key generation, removal, certificate import,
 * activation and (with "audit_use") private key use, appended to the token's audit file
 * with a single write(2) on an O_APPEND descriptor, so lines from several processes never
 * interleave. Lines name what happened, never a secret.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static void program_name(char *out, size_t len)
{
    FILE *f = fopen("/proc/self/comm", "r");

    out[0] = '\0';
    if (f != NULL) {
        if (fgets(out, (int)len, f) != NULL)
            out[strcspn(out, "\n")] = '\0';
        fclose(f);
    }
}

void ctok_audit(const ctok_token *tok, const char *operation, const char *object, int ok,
                const char *detail)
{
    struct timeval tv;
    struct tm tm;
    char when[64], prog[32];
    json_t *j;
    char *line;
    int fd;

    if (tok->audit_file == NULL)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    program_name(prog, sizeof(prog));
    j = json_pack("{s:s, s:s, s:s, s:s?, s:s, s:{s:i, s:s}}", "time", when, "token", tok->name,
                  "operation", operation, "object", object, "outcome", ok ? "success" : "failure",
                  "process", "pid", (int)getpid(), "program", prog);
    if (j != NULL && detail != NULL)
        json_object_set_new(j, "detail", json_string(detail));
    line = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (line == NULL)
        return;
    /* never through a symlink: root appending to a file somebody else chose */
    fd = open(tok->audit_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
              0600);
    if (fd >= 0) {
        size_t n = strlen(line);

        line[n] = '\n'; /* json_dumps left room: the NUL */
        if (write(fd, line, n + 1) != (ssize_t)(n + 1))
            CTOK_DBG("audit: cannot append to %s: %s", tok->audit_file, strerror(errno));
        close(fd);
    } else {
        CTOK_DBG("audit: cannot open %s: %s", tok->audit_file, strerror(errno));
    }
    free(line);
}

const char *const ctok_audit_operations[] = {
    "activate",    "deactivate",  "pin_unlock", "code_change", "key_generate",
    "key_remove",  "key_rename",  "key_use",    "cert_import", "cert_replace",
    "cert_remove", "cert_rename", NULL};

/* Longer lines are not ctok's (it writes a few hundred bytes): skipped, never kept whole. */
#define MAX_LINE (64 * 1024)

/* One line of f into buf (NUL-terminated, *len bytes); *whole 0 if it was cut at MAX_LINE.
 * 0 at the end of the file. */
static int read_line(FILE *f, char *buf, size_t *len, int *whole)
{
    int ch = EOF;
    size_t n = 0;

    *whole = 1;
    while ((ch = getc(f)) != EOF && ch != '\n') {
        if (n < MAX_LINE)
            buf[n++] = (char)ch;
        else
            *whole = 0;
    }
    buf[n] = '\0';
    *len = n;
    return ch != EOF || n > 0 || !*whole;
}

int ctok_token_audit_read(ctok_token *tok, ctok_audit_cb cb, void *arg, size_t *malformed)
{
    char what[300], *buf = NULL;
    size_t len;
    int fd, whole, ok = 1;
    FILE *f = NULL;

    *malformed = 0;
    if (!ctok_token_authorize(tok, CTOK_PERM_VIEW, "audit", NULL))
        return 0;
    if (tok->audit_file == NULL) {
        CTOK_ERR(
            CTOK_R_CONFIG,
            "token '%s' has no audit file (set one with 'ctok token modify %s --audit-file F')",
            tok->name, tok->name);
        return 0;
    }
    snprintf(what, sizeof(what), "token '%s': audit file", tok->name);
    if ((fd = ctok_file_open(tok->audit_file, 0, CTOK_R_IO, what)) < 0)
        return 0;
    if ((buf = malloc(MAX_LINE + 1)) == NULL || (f = fdopen(fd, "r")) == NULL) {
        CTOK_ERR(CTOK_R_IO, "%s '%s': %s", what, tok->audit_file, strerror(errno));
        free(buf);
        close(fd);
        return 0;
    }
    while (ok && read_line(f, buf, &len, &whole)) {
        json_t *e = whole ? json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL) : NULL;

        if (json_is_object(e))
            ok = cb(e, arg);
        else if (len > 0 || !whole)
            (*malformed)++;
        json_decref(e);
    }
    if (ferror(f)) {
        CTOK_ERR(CTOK_R_IO, "%s '%s': %s", what, tok->audit_file, strerror(errno));
        ok = 0;
    }
    free(buf);
    fclose(f);
    return ok;
}

/* ctok audit: a token's audit trail (store/audit.c writes it), filtered, as text or JSON. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* n digits at s, as a number; -1 if one is not a digit */
static int digits(const char *s, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/*
 * An ISO-8601 UTC time as milliseconds since the epoch: "2026-11-29" (its midnight) or
 * "2026-11-29T12:00:00Z" with an optional fraction (".123Z", as audit lines carry). 0: not one.
 */
static int parse_time(const char *s, long long *ms)
{
    struct tm tm = {0};
    int frac = 0, scale = 100;
    const char *p;

    if (strlen(s) < 10 || s[4] != '-' || s[7] != '-')
        return 0;
    tm.tm_year = digits(s, 4) - 1900;
    tm.tm_mon = digits(s + 5, 2) - 1;
    tm.tm_mday = digits(s + 8, 2);
    if (s[10] == 'T') {
        if (strlen(s) < 20 || s[13] != ':' || s[16] != ':')
            return 0;
        tm.tm_hour = digits(s + 11, 2);
        tm.tm_min = digits(s + 14, 2);
        tm.tm_sec = digits(s + 17, 2);
        p = s + 19;
        if (*p == '.' && isdigit((unsigned char)p[1]))
            for (p++; isdigit((unsigned char)*p); p++, scale /= 10)
                frac += (*p - '0') * scale;
        if (p[0] != 'Z' || p[1] != '\0')
            return 0;
    } else if (s[10] != '\0') {
        return 0;
    }
    if (tm.tm_year < -1900 + 1970 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 ||
        tm.tm_sec < 0 || tm.tm_sec > 60)
        return 0;
    *ms = (long long)timegm(&tm) * 1000 + frac;
    return 1;
}

struct audit_filter {
    long long since; /* ms; -1: none */
    const char *operation;
    json_t *out;
};

static int keep_entry(json_t *e, void *arg)
{
    struct audit_filter *f = arg;
    const char *op = json_string_value(json_object_get(e, "operation"));
    long long when;

    if (f->operation != NULL && (op == NULL || strcmp(op, f->operation) != 0))
        return 1;
    /* an entry whose time cannot be read is not known to be since anything */
    if (f->since >= 0 && (!parse_time(json_string_value(json_object_get(e, "time")) ?: "", &when) ||
                          when < f->since))
        return 1;
    return json_array_append(f->out, e) == 0;
}

enum { COL_TIME, COL_OPERATION, COL_OBJECT, COL_OUTCOME, COL_PROCESS, COL_DETAIL, N_COLS };
static const char *const col_key[N_COLS] = {"time",    "operation", "object",
                                            "outcome", NULL,        "detail"};

/* A column of an entry for the terminal: control characters shown as '?' (a line is anybody's
 * text: no escape sequence reaches the terminal), "-" for what is not there. */
static void column(const json_t *e, int col, char *out, size_t len)
{
    const json_t *proc = json_object_get(e, "process");
    const char *s = col == COL_PROCESS ? json_string_value(json_object_get(proc, "program"))
                                       : json_string_value(json_object_get(e, col_key[col]));

    if (col == COL_PROCESS)
        snprintf(out, len, "%s[%lld]", s != NULL ? s : "-",
                 (long long)json_integer_value(json_object_get(proc, "pid")));
    else
        snprintf(out, len, "%s", s != NULL ? s : col == COL_DETAIL ? "" : "-");
    for (char *p = out; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

static void print_text(const json_t *list)
{
    int width[N_COLS] = {0};
    char cell[N_COLS][512];
    size_t i;
    json_t *e;

    json_array_foreach(list, i, e) for (int k = 0; k < N_COLS - 1; k++)
    {
        int n;

        column(e, k, cell[k], sizeof(cell[k]));
        n = (int)strlen(cell[k]);
        width[k] = n > width[k] ? n : width[k];
    }
    json_array_foreach(list, i, e)
    {
        for (int k = 0; k < N_COLS; k++)
            column(e, k, cell[k], sizeof(cell[k]));
        printf("%-*s  %-*s  %-*s  %-*s  %-*s", width[0], cell[0], width[1], cell[1], width[2],
               cell[2], width[3], cell[3], cell[COL_DETAIL][0] ? width[4] : 0, cell[4]);
        printf("%s%s\n", cell[COL_DETAIL][0] ? "  " : "", cell[COL_DETAIL]);
    }
}

const char *cli_audit_operation_names(void)
{
    static char names[512];
    size_t o = 0;

    for (const char *const *k = ctok_audit_operations; *k != NULL && o < sizeof(names); k++)
        o += (size_t)snprintf(names + o, sizeof(names) - o, "%s%s", o ? ", " : "", *k);
    return names;
}

/* --operation: one of the names audit lines carry (a typo is an error, not an empty list) */
static int known_operation(const char *op)
{
    for (const char *const *k = ctok_audit_operations; *k != NULL; k++)
        if (strcmp(*k, op) == 0)
            return 1;
    cli_usage("--operation '%s' is not an operation audit lines name (%s)", op,
              cli_audit_operation_names());
    return 0;
}

int cmd_audit(struct cli *c)
{
    struct audit_filter f = {-1, c->operation, NULL};
    ctok_token *tok;
    size_t malformed = 0;
    int ok;

    if (c->since != NULL && !parse_time(c->since, &f.since))
        return cli_usage("--since '%s' is not an ISO-8601 UTC time (2026-11-29T12:00:00Z or "
                         "2026-11-29)",
                         c->since);
    if (c->operation != NULL && !known_operation(c->operation))
        return EXIT_USAGE;
    if ((tok = cli_token(c, c->argv[0])) == NULL || (f.out = json_array()) == NULL)
        return cli_fail();
    ok = ctok_token_audit_read(tok, keep_entry, &f, &malformed);
    if (!ok) {
        json_decref(f.out);
        return cli_fail();
    }
    if (c->json)
        cli_print_json(f.out);
    else {
        print_text(f.out);
        json_decref(f.out);
    }
    if (malformed > 0)
        fprintf(stderr, "ctok: warning: %zu malformed lines skipped (token '%s': audit file)\n",
                malformed, c->argv[0]);
    return EXIT_OK;
}

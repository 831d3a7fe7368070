#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/err.h>

#include "token.h"

int ctok_debug_on;

static ctok_err_sink err_sink;
static ctok_err_forget_fn err_forget;

/* this thread's errors so far, and the count at each open mark */
static __thread unsigned long raised;
static __thread unsigned long marks[16];
static __thread int depth;
static __thread int last_reason;

int ctok_err_last_reason(void)
{
    return last_reason;
}

unsigned long ctok_err_count(void)
{
    return raised;
}

void ctok_err_set_forget(ctok_err_forget_fn fn)
{
    err_forget = fn;
}

void ctok_err_mark(void)
{
    ERR_set_mark();
    if (depth < (int)(sizeof(marks) / sizeof(marks[0])))
        marks[depth] = raised;
    depth++;
}

/* The count at the innermost mark, closing it; -1 if it was too deep to note. */
static long close_mark(void)
{
    if (depth == 0)
        return -1;
    depth--;
    return depth < (int)(sizeof(marks) / sizeof(marks[0])) ? (long)marks[depth] : -1;
}

void ctok_err_pop_to_mark(void)
{
    long since = close_mark();

    ERR_pop_to_mark();
    if (since >= 0 && err_forget != NULL)
        err_forget((unsigned long)since);
}

void ctok_err_clear_mark(void)
{
    close_mark();
    ERR_clear_last_mark();
}

const char *ctok_reason_string(int reason)
{
    switch (reason) {
#define CTOK_CASE(name, num, str)                                                                  \
    case name:                                                                                     \
        return str;
        CTOK_REASONS(CTOK_CASE)
#undef CTOK_CASE
    }
    return "error";
}

void ctok_err_set_sink(ctok_err_sink sink)
{
    err_sink = sink;
}

void ctok_err_raise(int reason, const char *file, int line, const char *func, const char *fmt, ...)
{
    va_list ap;

    raised++;
    last_reason = reason;
    va_start(ap, fmt);
    if (ctok_debug_on) {
        va_list cp;

        va_copy(cp, ap);
        fprintf(stderr, "ctok[%d]: error: %s: ", (int)getpid(), ctok_reason_string(reason));
        vfprintf(stderr, fmt, cp);
        fputc('\n', stderr);
        va_end(cp);
    }
    if (err_sink != NULL)
        err_sink(reason, file, line, func, fmt, ap);
    va_end(ap);
}

void ctok_debug(const char *fmt, ...)
{
    va_list ap;
    char buf[1024];

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "ctok[%d]: %s\n", (int)getpid(), buf);
}

#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "token.h"

int ctok_debug_on;

static ctok_err_sink err_sink;

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

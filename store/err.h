/*
 * ctok error reasons: one table, readable strings. The store layer raises errors
 * through a sink that the front door installs (provider: the core's error upcalls;
 * tool: a one-line message on stderr).
 */
#ifndef CTOK_ERR_H
#define CTOK_ERR_H

#include <stdarg.h>

#define CTOK_REASONS(X)                                                                            \
    X(CTOK_R_CONFIG, 1, "configuration error")                                                     \
    X(CTOK_R_INSECURE_FILE, 2, "insecure file permissions")                                        \
    X(CTOK_R_BAD_URI, 3, "invalid ctok URI")                                                       \
    X(CTOK_R_UNKNOWN_TOKEN, 4, "unknown token")                                                    \
    X(CTOK_R_NOT_FOUND, 5, "object not found")                                                     \
    X(CTOK_R_WRONG_CODE, 6, "wrong authentication code")                                           \
    X(CTOK_R_NO_CODE, 7, "no authentication code")                                                 \
    X(CTOK_R_KEYSTORE, 8, "keystore error")                                                        \
    X(CTOK_R_EXPORT_DENIED, 9, "private key export not allowed")                                   \
    X(CTOK_R_UNSUPPORTED, 10, "unsupported operation")                                             \
    X(CTOK_R_BACKEND, 11, "token operation failed")                                                \
    X(CTOK_R_DUPLICATE, 12, "duplicate alias")                                                     \
    X(CTOK_R_PERMISSION, 13, "operation not permitted")                                            \
    X(CTOK_R_INVALID_ARG, 14, "invalid argument")                                                  \
    X(CTOK_R_IO, 15, "I/O error")                                                                  \
    X(CTOK_R_INTERNAL, 16, "internal error")                                                       \
    X(CTOK_R_NETWORK, 17, "network error")                                                         \
    X(CTOK_R_TIMEOUT, 18, "timed out")                                                             \
    X(CTOK_R_THROTTLED, 19, "throttled by the service")                                            \
    X(CTOK_R_DENIED, 20, "access denied by the service")                                           \
    X(CTOK_R_CREDENTIALS, 21, "invalid or expired credentials")

enum ctok_reason {
#define CTOK_ENUM(name, num, str) name = num,
    CTOK_REASONS(CTOK_ENUM)
#undef CTOK_ENUM
};

const char *ctok_reason_string(int reason);

typedef void (*ctok_err_sink)(int reason, const char *file, int line, const char *func,
                              const char *fmt, va_list ap);
void ctok_err_set_sink(ctok_err_sink sink);
void ctok_err_raise(int reason, const char *file, int line, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/*
 * An expected failure (NotFound for an alias about to be created, a key a listing skips):
 * errors raised after ctok_err_mark are dropped by ctok_err_pop_to_mark, from OpenSSL's
 * queue and from the front door's own record (ctok_err_set_forget); ctok_err_clear_mark
 * keeps them. Per thread; marks nest.
 */
void ctok_err_mark(void);
void ctok_err_pop_to_mark(void);
void ctok_err_clear_mark(void);
/* How many errors this thread has raised so far (a front door's sink notes it). */
unsigned long ctok_err_count(void);
/* The reason of the last error this thread raised (0: none yet): lets a caller tell an expected
 * CTOK_R_NOT_FOUND from another failure of a call that raised one error. */
int ctok_err_last_reason(void);
/* The front door forgets what it recorded of errors after the since-th of this thread. */
typedef void (*ctok_err_forget_fn)(unsigned long since);
void ctok_err_set_forget(ctok_err_forget_fn fn);

/* CTOK_ERR(reason, "token '%s': ...", ...): the message names token, object and cause. */
#define CTOK_ERR(reason, ...) ctok_err_raise((reason), __FILE__, __LINE__, __func__, __VA_ARGS__)

#endif

/*
 * Jansson loaded on first use, not linked. Every process that loads ctok.so (or ctok-p11.so)
 * mapped and relocated libjansson at load, though only a process that reads a tokens config,
 * an audit log or a cloud reply uses it: ctok loaded and unused paid ~0.27 M instructions, 7
 * page faults and its pages of RSS for nothing (docs/DESIGN.md, "Start-up and idle").
 *
 * The functions ctok calls are defined here under jansson's own names, with jansson.h's
 * prototypes (the compiler checks each against it): hidden like the rest of the token layer
 * (-fvisibility=hidden), so nothing outside the program or module sees them and jansson's
 * own calls stay inside jansson. Each one loads the library first (store/lazylib.c: once
 * per process) and forwards; the inline helpers of jansson.h (json_decref, json_incref,
 * json_object_foreach, ...) call through them. A json_t exists only once jansson is loaded,
 * so when it cannot be, only makers can fail: they return NULL with one error naming the
 * library and the cause, and the rest answer as jansson does for a NULL value.
 */
#include <stdarg.h>
#include <stdio.h>

#include <jansson.h>

#include "err.h"
#include "lazylib.h"

#ifndef CTOK_JANSSON_SONAME
#define CTOK_JANSSON_SONAME "libjansson.so.4"
#endif

/* X(return type, name, parameters, arguments, the answer when jansson is not loaded) */
#define CTOK_JANSSON_FUNCS(X)                                                                      \
    X(json_t *, json_object, (void), (), NULL)                                                     \
    X(json_t *, json_array, (void), (), NULL)                                                      \
    X(json_t *, json_string, (const char *value), (value), NULL)                                   \
    X(json_t *, json_integer, (json_int_t value), (value), NULL)                                   \
    X(json_t *, json_true, (void), (), NULL)                                                       \
    X(json_t *, json_false, (void), (), NULL)                                                      \
    X(json_t *, json_null, (void), (), NULL)                                                       \
    X(json_t *, json_deep_copy, (const json_t *value), (value), NULL)                              \
    X(json_t *, json_loads, (const char *input, size_t flags, json_error_t *error),                \
      (input, flags, error), NULL)                                                                 \
    X(json_t *, json_load_file, (const char *path, size_t flags, json_error_t *error),             \
      (path, flags, error), NULL)                                                                  \
    X(json_t *, json_object_get, (const json_t *object, const char *key), (object, key), NULL)     \
    X(int, json_object_set_new, (json_t * object, const char *key, json_t *value),                 \
      (object, key, value), -1)                                                                    \
    X(int, json_object_del, (json_t * object, const char *key), (object, key), -1)                 \
    X(int, json_object_clear, (json_t * object), (object), -1)                                     \
    X(int, json_object_update, (json_t * object, json_t * other), (object, other), -1)             \
    X(size_t, json_object_size, (const json_t *object), (object), 0)                               \
    X(void *, json_object_iter, (json_t * object), (object), NULL)                                 \
    X(void *, json_object_iter_next, (json_t * object, void *iter), (object, iter), NULL)          \
    X(const char *, json_object_iter_key, (void *iter), (iter), NULL)                              \
    X(json_t *, json_object_iter_value, (void *iter), (iter), NULL)                                \
    X(void *, json_object_key_to_iter, (const char *key), (key), NULL)                             \
    X(size_t, json_array_size, (const json_t *array), (array), 0)                                  \
    X(json_t *, json_array_get, (const json_t *array, size_t index), (array, index), NULL)         \
    X(int, json_array_set_new, (json_t * array, size_t index, json_t * value),                     \
      (array, index, value), -1)                                                                   \
    X(int, json_array_append_new, (json_t * array, json_t * value), (array, value), -1)            \
    X(int, json_array_remove, (json_t * array, size_t index), (array, index), -1)                  \
    X(int, json_array_extend, (json_t * array, json_t * other), (array, other), -1)                \
    X(const char *, json_string_value, (const json_t *string), (string), NULL)                     \
    X(size_t, json_string_length, (const json_t *string), (string), 0)                             \
    X(json_int_t, json_integer_value, (const json_t *integer), (integer), 0)                       \
    X(double, json_number_value, (const json_t *json), (json), 0.0)                                \
    X(int, json_equal, (const json_t *value1, const json_t *value2), (value1, value2), 0)          \
    X(char *, json_dumps, (const json_t *json, size_t flags), (json, flags), NULL)

#define POINTER(ret, name, params, args, fail) static ret(*fn_##name) params;
CTOK_JANSSON_FUNCS(POINTER)
static void (*fn_json_delete)(json_t *json);
static json_t *(*fn_json_loadb)(const char *buffer, size_t buflen, size_t flags,
                                json_error_t *error);
static json_t *(*fn_json_vpack_ex)(json_error_t *error, size_t flags, const char *fmt, va_list ap);

#define SYM(ret, name, params, args, fail) {#name, (void **)&fn_##name},
static const struct ctok_lazysym syms[] = {
    CTOK_JANSSON_FUNCS(SYM){"json_delete", (void **)&fn_json_delete},
    {"json_loadb", (void **)&fn_json_loadb},
    {"json_vpack_ex", (void **)&fn_json_vpack_ex},
};
/* what jansson made lives as long as its holders: the library is never closed */
static struct ctok_lazylib lib = CTOK_LAZYLIB(CTOK_JANSSON_SONAME, syms);

static int ready(void)
{
    if (ctok_lazylib_ready(&lib))
        return 1;
    CTOK_ERR(CTOK_R_UNSUPPORTED, "JSON (tokens config, audit log, cloud replies) needs jansson: %s",
             lib.error);
    return 0;
}

#define WRAPPER(ret, name, params, args, fail)                                                     \
    ret name params                                                                                \
    {                                                                                              \
        return ready() ? fn_##name args : (fail);                                                  \
    }
CTOK_JANSSON_FUNCS(WRAPPER)

void json_delete(json_t *json)
{
    if (json != NULL && ready())
        fn_json_delete(json);
}

/* the config reader reports error->text: it says why, as a parse error would */
json_t *json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error)
{
    if (ready())
        return fn_json_loadb(buffer, buflen, flags, error);
    if (error != NULL) {
        *error = (json_error_t){.line = -1, .column = -1, .position = 0};
        snprintf(error->text, sizeof(error->text), "cannot load jansson: %.*s",
                 (int)(sizeof(error->text) - 24), lib.error);
    }
    return NULL;
}

json_t *json_pack(const char *fmt, ...)
{
    va_list ap;
    json_t *v;

    if (!ready())
        return NULL;
    va_start(ap, fmt);
    v = fn_json_vpack_ex(NULL, 0, fmt, ap);
    va_end(ap);
    return v;
}

/*
 * A shared library loaded on first use instead of linked (kms/curl_lazy.c: libcurl;
 * store/p11kit_lazy.c: p11-kit): what every process that loads ctok would otherwise map and
 * relocate, though only some tokens use it (docs/DESIGN.md, "Start-up and idle").
 */
#ifndef CTOK_STORE_LAZYLIB_H
#define CTOK_STORE_LAZYLIB_H

#include <pthread.h>
#include <stddef.h>

struct ctok_lazysym {
    const char *name; /* the symbol */
    void **slot;      /* where its address goes: (void **)&a_function_pointer */
};

struct ctok_lazylib {
    const char *soname;
    const struct ctok_lazysym *syms;
    size_t nsyms;
    pthread_mutex_t lock;
    int tried, loaded;
    char error[256]; /* why it could not be loaded */
};
#define CTOK_LAZYLIB(soname, syms)                                                                 \
    {                                                                                              \
        (soname), (syms), sizeof(syms) / sizeof((syms)[0]), PTHREAD_MUTEX_INITIALIZER, 0, 0, ""    \
    }

/*
 * Loads the library the first time (dlopen, RTLD_NOW | RTLD_LOCAL, never closed: what it made
 * lives until exit) and fills every slot. 1 once that worked; else 0, now and on every later
 * call (it is tried once), with why in l->error: dlerror()'s "libx.so.1: cannot open shared
 * object file: …", or "libx.so.1 has no f".
 */
int ctok_lazylib_ready(struct ctok_lazylib *l);

#endif

/* Shared libraries loaded on first use: see lazylib.h. */
#include <dlfcn.h>
#include <stdio.h>

#include "lazylib.h"

static int load(struct ctok_lazylib *l)
{
    void *h = dlopen(l->soname, RTLD_NOW | RTLD_LOCAL);

    if (h == NULL) {
        const char *e = dlerror(); /* glibc's names the library: "libx.so.1: cannot open …" */

        snprintf(l->error, sizeof(l->error), "%s", e != NULL ? e : l->soname);
        return 0;
    }
    for (size_t i = 0; i < l->nsyms; i++) {
        if ((*l->syms[i].slot = dlsym(h, l->syms[i].name)) == NULL) {
            snprintf(l->error, sizeof(l->error), "%s has no %s", l->soname, l->syms[i].name);
            return 0;
        }
    }
    return 1;
}

int ctok_lazylib_ready(struct ctok_lazylib *l)
{
    int ok;

    /* loaded: the slots were filled before this was set (release) */
    if (__atomic_load_n(&l->loaded, __ATOMIC_ACQUIRE))
        return 1;
    pthread_mutex_lock(&l->lock);
    if (!l->tried) {
        l->tried = 1;
        if (load(l))
            __atomic_store_n(&l->loaded, 1, __ATOMIC_RELEASE);
    }
    ok = l->loaded;
    pthread_mutex_unlock(&l->lock);
    return ok;
}

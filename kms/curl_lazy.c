/* libcurl loaded on first use: see curl_lazy.h for why. */
#include "curl_lazy.h"
#include "../store/lazylib.h"

#ifndef CTOK_LIBCURL_SONAME
#define CTOK_LIBCURL_SONAME "libcurl.so.4"
#endif

struct ctok_curl_fns ctok_curl_fn;

/* the calls that go through a wrapper below */
static struct {
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    CURLcode (*easy_perform)(CURL *);
    void (*easy_cleanup)(CURL *);
    void (*easy_reset)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    char *(*easy_escape)(CURL *, const char *, int);
    void (*free)(void *);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    CURLU *(*url)(void);
    void (*url_cleanup)(CURLU *);
    CURLUcode (*url_get)(CURLU *, CURLUPart, char **, unsigned int);
    CURLUcode (*url_set)(CURLU *, CURLUPart, const char *, unsigned int);
} fn;

static const struct ctok_lazysym syms[] = {
    {"curl_easy_setopt", (void **)&ctok_curl_fn.easy_setopt},
    {"curl_easy_getinfo", (void **)&ctok_curl_fn.easy_getinfo},
    {"curl_global_init", (void **)&fn.global_init},
    {"curl_easy_init", (void **)&fn.easy_init},
    {"curl_easy_perform", (void **)&fn.easy_perform},
    {"curl_easy_cleanup", (void **)&fn.easy_cleanup},
    {"curl_easy_reset", (void **)&fn.easy_reset},
    {"curl_easy_strerror", (void **)&fn.easy_strerror},
    {"curl_easy_escape", (void **)&fn.easy_escape},
    {"curl_free", (void **)&fn.free},
    {"curl_slist_append", (void **)&fn.slist_append},
    {"curl_slist_free_all", (void **)&fn.slist_free_all},
    {"curl_url", (void **)&fn.url},
    {"curl_url_cleanup", (void **)&fn.url_cleanup},
    {"curl_url_get", (void **)&fn.url_get},
    {"curl_url_set", (void **)&fn.url_set},
};
/* handles and libcurl's global state live until exit */
static struct ctok_lazylib lib = CTOK_LAZYLIB(CTOK_LIBCURL_SONAME, syms);

static int ready(void)
{
    return ctok_lazylib_ready(&lib);
}

const char *ctok_curl_load_error(void)
{
    return ready() ? "" : lib.error;
}

/* makers: load first */

CURLcode ctok_curl_global_init(long flags)
{
    return ready() ? fn.global_init(flags) : CURLE_FAILED_INIT;
}

CURL *ctok_curl_easy_init(void)
{
    return ready() ? fn.easy_init() : NULL;
}

char *ctok_curl_easy_escape(CURL *h, const char *s, int len)
{
    return ready() ? fn.easy_escape(h, s, len) : NULL;
}

struct curl_slist *ctok_curl_slist_append(struct curl_slist *l, const char *s)
{
    return ready() ? fn.slist_append(l, s) : NULL;
}

CURLU *ctok_curl_url(void)
{
    return ready() ? fn.url() : NULL;
}

const char *ctok_curl_easy_strerror(CURLcode rc)
{
    return ready() ? fn.easy_strerror(rc) : lib.error;
}

/* freers: NULL is nothing to free, loaded or not */

void ctok_curl_free(void *p)
{
    if (p != NULL)
        fn.free(p);
}

void ctok_curl_slist_free_all(struct curl_slist *l)
{
    if (l != NULL)
        fn.slist_free_all(l);
}

void ctok_curl_url_cleanup(CURLU *u)
{
    if (u != NULL)
        fn.url_cleanup(u);
}

void ctok_curl_easy_cleanup(CURL *h)
{
    if (h != NULL)
        fn.easy_cleanup(h);
}

/* users of a handle only a loaded libcurl made */

CURLcode ctok_curl_easy_perform(CURL *h)
{
    return fn.easy_perform(h);
}

void ctok_curl_easy_reset(CURL *h)
{
    fn.easy_reset(h);
}

CURLUcode ctok_curl_url_get(CURLU *u, CURLUPart what, char **part, unsigned int flags)
{
    return u != NULL ? fn.url_get(u, what, part, flags) : CURLUE_BAD_HANDLE;
}

CURLUcode ctok_curl_url_set(CURLU *u, CURLUPart what, const char *part, unsigned int flags)
{
    return u != NULL ? fn.url_set(u, what, part, flags) : CURLUE_BAD_HANDLE;
}

/*
 * libcurl, loaded on first use. ctok.so does not link libcurl: the dlopen of libcurl and
 * what it brings (TLS, LDAP, Kerberos, SSH, IDN libraries) cost every process that loads
 * ctok 10.8 M instructions, a third of an idle `openssl pkeyutl`, though only cloud tokens
 * use it (docs/DESIGN.md, "Start-up and idle"). Include this instead of <curl/curl.h>: the
 * curl_* names below then call through a table that dlopen("libcurl.so.4") fills once per
 * process. What makes something (a handle, a list, a URL, an escaped string) loads libcurl
 * first and returns NULL (CURLE_FAILED_INIT for curl_global_init) when it cannot be loaded;
 * what frees accepts NULL; the rest takes a handle only a loaded libcurl made.
 */
#ifndef CTOK_KMS_CURL_LAZY_H
#define CTOK_KMS_CURL_LAZY_H

#define CURL_DISABLE_TYPECHECK /* curl_easy_setopt is a plain call through the table */
#include <curl/curl.h>

struct ctok_curl_fns {
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
};
extern struct ctok_curl_fns ctok_curl_fn;

/* Why libcurl could not be loaded, or "" */
const char *ctok_curl_load_error(void);

CURLcode ctok_curl_global_init(long flags);
CURL *ctok_curl_easy_init(void);
CURLcode ctok_curl_easy_perform(CURL *h);
void ctok_curl_easy_cleanup(CURL *h);
void ctok_curl_easy_reset(CURL *h);
const char *ctok_curl_easy_strerror(CURLcode rc);
char *ctok_curl_easy_escape(CURL *h, const char *s, int len);
void ctok_curl_free(void *p);
struct curl_slist *ctok_curl_slist_append(struct curl_slist *l, const char *s);
void ctok_curl_slist_free_all(struct curl_slist *l);
CURLU *ctok_curl_url(void);
void ctok_curl_url_cleanup(CURLU *u);
CURLUcode ctok_curl_url_get(CURLU *u, CURLUPart what, char **part, unsigned int flags);
CURLUcode ctok_curl_url_set(CURLU *u, CURLUPart what, const char *part, unsigned int flags);

/* curl.h makes these two function-like macros that check the argument count */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_easy_setopt ctok_curl_fn.easy_setopt
#define curl_easy_getinfo ctok_curl_fn.easy_getinfo
#define curl_global_init ctok_curl_global_init
#define curl_easy_init ctok_curl_easy_init
#define curl_easy_perform ctok_curl_easy_perform
#define curl_easy_cleanup ctok_curl_easy_cleanup
#define curl_easy_reset ctok_curl_easy_reset
#define curl_easy_strerror ctok_curl_easy_strerror
#define curl_easy_escape ctok_curl_easy_escape
#define curl_free ctok_curl_free
#define curl_slist_append ctok_curl_slist_append
#define curl_slist_free_all ctok_curl_slist_free_all
#define curl_url ctok_curl_url
#define curl_url_cleanup ctok_curl_url_cleanup
#define curl_url_get ctok_curl_url_get
#define curl_url_set ctok_curl_url_set

#endif

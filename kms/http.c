/*
 * libcurl under the cloud backends. Why the pool holds easy handles and not connections:
 * each easy handle keeps its own connection cache, so a handle taken for one request and
 * returned keeps its TLS session alive for the next (one handshake per connection). A
 * multi/share setup would add a lock across every transfer.
 *
 * Fork: a child must not use, nor clean up, a handle made by its parent: curl_easy_cleanup
 * would send a TLS close_notify on a socket the parent still uses, and a request would
 * interleave with the parent's on the same TLS stream. The pool records its pid; in a child
 * the parent's idle handles are left alone (leaked: a few KB per fork) and new ones are made.
 * Their sockets are closed in the child (close() on the child's copy sends nothing; the
 * parent's connection lives on), and every socket is close-on-exec.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <unistd.h>
#include "curl_lazy.h"
#include <openssl/crypto.h>

#include "http.h"
#include "../store/token.h"

#define POOL_IDLE_MAX 16 /* idle handles kept; more are cleaned up when returned */

struct ctok_http_pool {
    pthread_mutex_t lock;
    pid_t pid;
    char *ca_file;
    long timeout_ms;
    CURL *idle[POOL_IDLE_MAX];
    int n_idle;
    int *fds; /* the sockets its handles hold open */
    size_t n_fds, cap_fds;
};

/* ---- process-wide: curl_global_init once, and the fork guard ---- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_ok;
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t **guarded;
static size_t n_guarded, cap_guarded;

static void fork_prepare(void)
{
    pthread_mutex_lock(&guard_lock);
    for (size_t i = 0; i < n_guarded; i++)
        pthread_mutex_lock(guarded[i]);
}

static void fork_release(void)
{
    for (size_t i = n_guarded; i-- > 0;)
        pthread_mutex_unlock(guarded[i]);
    pthread_mutex_unlock(&guard_lock);
}

static void global_init(void)
{
    /* never curl_global_cleanup: another thread may be inside curl at exit */
    global_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    pthread_atfork(fork_prepare, fork_release, fork_release);
}

void ctok_http_fork_guard(pthread_mutex_t *m, int add)
{
    pthread_once(&global_once, global_init);
    pthread_mutex_lock(&guard_lock);
    if (add) {
        if (n_guarded == cap_guarded) {
            size_t cap = cap_guarded ? cap_guarded * 2 : 8;
            pthread_mutex_t **g = realloc(guarded, cap * sizeof(*g));

            if (g == NULL)
                goto out; /* unguarded: a fork at the wrong moment could hang a child */
            guarded = g;
            cap_guarded = cap;
        }
        guarded[n_guarded++] = m;
    } else {
        for (size_t i = 0; i < n_guarded; i++)
            if (guarded[i] == m) {
                guarded[i] = guarded[--n_guarded];
                break;
            }
    }
out:
    pthread_mutex_unlock(&guard_lock);
}

/* ---- the pool ---- */

struct ctok_http_pool *ctok_http_pool_new(const char *ca_file, long timeout_ms)
{
    struct ctok_http_pool *p = OPENSSL_zalloc(sizeof(*p));

    if (p == NULL)
        return NULL;
    if (ca_file != NULL && (p->ca_file = OPENSSL_strdup(ca_file)) == NULL) {
        OPENSSL_free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    p->pid = ctok_self_pid();
    p->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
    ctok_http_fork_guard(&p->lock, 1);
    return p;
}

void ctok_http_pool_free(struct ctok_http_pool *p)
{
    if (p == NULL)
        return;
    ctok_http_fork_guard(&p->lock, 0);
    if (p->pid == ctok_self_pid())
        for (int i = 0; i < p->n_idle; i++)
            curl_easy_cleanup(p->idle[i]);
    pthread_mutex_destroy(&p->lock);
    OPENSSL_free(p->fds);
    OPENSSL_free(p->ca_file);
    OPENSSL_free(p);
}

static CURL *pool_get(struct ctok_http_pool *p)
{
    CURL *h = NULL;

    pthread_mutex_lock(&p->lock);
    if (p->pid != ctok_self_pid()) { /* a child: the parent's handles stay untouched */
        p->pid = ctok_self_pid();
        p->n_idle = 0;
        for (size_t i = 0; i < p->n_fds; i++)
            close(p->fds[i]);
        p->n_fds = 0;
    }
    if (p->n_idle > 0)
        h = p->idle[--p->n_idle];
    pthread_mutex_unlock(&p->lock);
    return h != NULL ? h : curl_easy_init();
}

static void pool_put(struct ctok_http_pool *p, CURL *h, pid_t owner)
{
    pthread_mutex_lock(&p->lock);
    if (owner == p->pid && owner == ctok_self_pid() && p->n_idle < POOL_IDLE_MAX) {
        p->idle[p->n_idle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    if (h != NULL && owner == ctok_self_pid())
        curl_easy_cleanup(h);
}

/* ---- the pool's sockets: close-on-exec, and known, so that a child can close them ---- */

static int on_sockopt(void *arg, curl_socket_t fd, curlsocktype purpose)
{
    struct ctok_http_pool *p = arg;

    (void)purpose;
    fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
    pthread_mutex_lock(&p->lock);
    if (p->n_fds == p->cap_fds) {
        size_t cap = p->cap_fds ? p->cap_fds * 2 : 8;
        int *f = OPENSSL_realloc(p->fds, cap * sizeof(*f));

        if (f != NULL) {
            p->fds = f;
            p->cap_fds = cap;
        }
    }
    if (p->n_fds < p->cap_fds) /* else not closed in a child: a descriptor leaked, no more */
        p->fds[p->n_fds++] = fd;
    pthread_mutex_unlock(&p->lock);
    return CURL_SOCKOPT_OK;
}

static int on_close(void *arg, curl_socket_t fd)
{
    struct ctok_http_pool *p = arg;

    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->n_fds; i++)
        if (p->fds[i] == fd) {
            p->fds[i] = p->fds[--p->n_fds];
            break;
        }
    pthread_mutex_unlock(&p->lock);
    return close(fd);
}

/* ---- one request ---- */

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct ctok_http_resp *r = arg;
    size_t len = size * n;
    char *b;

    if (len > CTOK_HTTP_MAX_BODY - r->body_len)
        return 0; /* curl: CURLE_WRITE_ERROR */
    if ((b = OPENSSL_realloc(r->body, r->body_len + len + 1)) == NULL)
        return 0;
    memcpy(b + r->body_len, data, len);
    r->body = b;
    r->body_len += len;
    b[r->body_len] = '\0';
    return len;
}

/* "Retry-After: 3": the delay in seconds (an HTTP date is not honoured: no clock to trust) */
static void retry_after(struct ctok_http_resp *r, const char *v, size_t len)
{
    long s = 0;
    size_t i = 0;

    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    for (; i < len && v[i] >= '0' && v[i] <= '9' && s < 86400; i++)
        s = s * 10 + (v[i] - '0');
    r->retry_after_ms = s * 1000;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    static const char name[] = "x-amzn-errortype:", ra[] = "retry-after:";
    struct ctok_http_resp *r = arg;
    size_t len = size * n, i = sizeof(name) - 1, j = 0;

    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) { /* a new response (after 100, say) */
        r->errortype[0] = '\0';
        r->retry_after_ms = 0;
    }
    if (len >= sizeof(ra) - 1 && strncasecmp(data, ra, sizeof(ra) - 1) == 0)
        retry_after(r, data + sizeof(ra) - 1, len - (sizeof(ra) - 1));
    if (len < i || strncasecmp(data, name, i) != 0)
        return len;
    while (i < len && (data[i] == ' ' || data[i] == '\t'))
        i++;
    /* "ValidationException:http://internal.amazon.com/..." names the type before ':' */
    while (i < len && j + 1 < sizeof(r->errortype) && data[i] != ':' && data[i] != '\r' &&
           data[i] != '\n')
        r->errortype[j++] = data[i++];
    r->errortype[j] = '\0';
    return len;
}

static struct curl_slist *header_list(const char *const *headers)
{
    struct curl_slist *l = curl_slist_append(NULL, "Expect:"), *t;

    for (size_t i = 0; l != NULL && headers != NULL && headers[i] != NULL; i++) {
        if ((t = curl_slist_append(l, headers[i])) == NULL) {
            curl_slist_free_all(l);
            return NULL;
        }
        l = t;
    }
    return l;
}

/* Header lines carry the signature and session token: cleansed before they are freed. */
static void header_list_free(struct curl_slist *l)
{
    for (struct curl_slist *i = l; i != NULL; i = i->next)
        OPENSSL_cleanse(i->data, strlen(i->data));
    curl_slist_free_all(l);
}

static void set_options(struct ctok_http_pool *p, CURL *h, const struct ctok_http_req *req,
                        struct ctok_http_resp *resp, struct curl_slist *hdrs, char *errbuf)
{
    long timeout = req->timeout_ms > 0 ? req->timeout_ms : p->timeout_ms;

    curl_easy_reset(h); /* keeps the handle's connections and TLS sessions */
    curl_easy_setopt(h, CURLOPT_URL, req->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS time-outs */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     req->connect_timeout_ms > 0 ? req->connect_timeout_ms : timeout);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (p->ca_file != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, p->ca_file);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (req->direct)
        curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    curl_easy_setopt(h, CURLOPT_SOCKOPTDATA, p);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, on_close);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, p);
    if (strcmp(req->method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)req->body_len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body != NULL ? req->body : "");
        if (strcmp(req->method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
    }
}

int ctok_http_do(struct ctok_http_pool *p, const struct ctok_http_req *req,
                 struct ctok_http_resp *resp)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs;
    pid_t owner = ctok_self_pid();
    CURLcode rc;
    CURL *h;

    memset(resp, 0, sizeof(*resp));
    pthread_once(&global_once, global_init);
    if (!global_ok) {
        const char *why = ctok_curl_load_error();

        snprintf(resp->error, sizeof(resp->error), "libcurl did not initialize%s%s",
                 why[0] ? ": " : "", why);
        return 0;
    }
    if ((h = pool_get(p)) == NULL || (hdrs = header_list(req->headers)) == NULL) {
        if (h != NULL)
            pool_put(p, h, owner);
        strcpy(resp->error, "out of memory");
        return 0;
    }
    set_options(p, h, req, resp, hdrs, errbuf);
    rc = curl_easy_perform(h);
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    header_list_free(hdrs);
    pool_put(p, h, owner);
    if (rc == CURLE_OK)
        return 1;
    resp->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
    snprintf(resp->error, sizeof(resp->error), "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
    OPENSSL_free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    return 0;
}

void ctok_http_resp_clear(struct ctok_http_resp *resp)
{
    OPENSSL_free(resp->body);
    memset(resp, 0, sizeof(*resp));
}

/* ---- proxy, for error messages ---- */

static const char *env2(const char *lower, const char *upper)
{
    const char *v = getenv(lower);

    return v != NULL && *v ? v : (upper != NULL && (v = getenv(upper)) != NULL && *v ? v : NULL);
}

void ctok_http_proxy_for(const char *url, char *buf, size_t len)
{
    const char *v;
    CURLU *u;
    char *scheme = NULL, *host = NULL, *port = NULL;

    buf[0] = '\0';
    /* libcurl: http_proxy is lower-case only; no_proxy is not evaluated here */
    v = strncasecmp(url, "https:", 6) == 0 ? env2("https_proxy", "HTTPS_PROXY")
                                           : env2("http_proxy", NULL);
    if (v == NULL)
        v = env2("all_proxy", "ALL_PROXY");
    if (v == NULL || (u = curl_url()) == NULL)
        return;
    if (curl_url_set(u, CURLUPART_URL, v, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) ==
            CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        /* never the user info: a proxy password must not reach an error message */
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
            snprintf(buf, len, "%s://%s:%s", scheme, host, port);
        else
            snprintf(buf, len, "%s://%s", scheme, host);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
}

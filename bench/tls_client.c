/*
 * ctok-bench-tls: the client load of the TLS benchmark (bench/run.py, section "tls").
 *
 * N threads each open TCP connections to host:port in a loop for S seconds of wall time; on
 * each one a new TLS 1.3 full handshake (no session is ever offered: no tickets, no client
 * session cache), one HTTP GET with "Connection: close", the response read to the end,
 * then the next connection. Prints one machine-readable line:
 *   handshakes_per_sec=<float> handshakes=<n> failures=<n> threads=<n> seconds=<float>
 *   cpu_s=<float>
 * where handshakes counts connections that completed a full handshake and read an HTTP 200.
 *
 * The chain is not verified unless --cafile is given (then the server's certificate must
 * chain to it; the host name is not checked). TLS 1.3 verifies the server's CertificateVerify
 * signature with the certificate's key either way, so every counted handshake proves that the
 * server signed with the key of its certificate.
 */
/* clock_gettime, getaddrinfo under -std=c11 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_THREADS 256
#define IO_TIMEOUT_S 10

struct worker {
    pthread_t tid;
    unsigned long handshakes;
    unsigned long failures;
    /* keep each worker's counters on its own cache line */
    char pad[64];
};

static SSL_CTX *ctx;
static struct sockaddr_storage peer;
static socklen_t peer_len;
static const char *sni = "localhost";
static unsigned long max_handshakes; /* per thread; 0 = until the time is up */
static pthread_barrier_t start_line;
static atomic_int stop;
static atomic_int reported; /* the first failure's reason goes to stderr, not every one */

static const char request[] = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

static void usage(FILE *f)
{
    fprintf(f, "usage: ctok-bench-tls --port PORT [--host HOST] [--threads N] [--seconds S]\n"
               "         [--count N] [--cafile FILE] [--servername NAME]\n"
               "  --count: stop each thread after N handshakes (default: run for --seconds)\n"
               "  prints: handshakes_per_sec=<float> handshakes=<n> failures=<n> threads=<n>\n"
               "          seconds=<float> cpu_s=<float>\n");
}

static double clock_s(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(struct worker *w, const char *what, int err)
{
    w->failures++;
    if (atomic_exchange(&reported, 1) == 0) {
        fprintf(stderr, "ctok-bench-tls: %s failed", what);
        if (err != 0)
            fprintf(stderr, ": %s", strerror(err));
        fputc('\n', stderr);
        ERR_print_errors_fp(stderr);
    }
    ERR_clear_error();
}

/* One connection: handshake, request, response to the end. Returns 1 if it counts. */
static int one_connection(struct worker *w)
{
    struct timeval tv = {IO_TIMEOUT_S, 0};
    char buf[4096], head[16];
    size_t head_len = 0;
    int fd, one = 1, ok = 0, n;
    SSL *ssl = NULL;

    fd = socket(peer.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
        fail(w, "socket", errno);
        return 0;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&peer, peer_len) != 0) {
        fail(w, "connect", errno);
        goto end;
    }
    ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_set_tlsext_host_name(ssl, sni) != 1) {
        fail(w, "SSL_new", 0);
        goto end;
    }
    if (SSL_connect(ssl) != 1) {
        fail(w, "TLS handshake (SSL_connect)", errno);
        goto end;
    }
    if (SSL_session_reused(ssl) || SSL_version(ssl) != TLS1_3_VERSION) {
        fail(w, "a full TLS 1.3 handshake (the session was resumed or not TLS 1.3)", 0);
        goto end;
    }
    if (SSL_write(ssl, request, (int)sizeof(request) - 1) != (int)sizeof(request) - 1) {
        fail(w, "SSL_write", errno);
        goto end;
    }
    /* read to the end: the server closes after the response (Connection: close) */
    for (;;) {
        n = SSL_read(ssl, buf, sizeof(buf));
        if (n <= 0)
            break;
        if (head_len < sizeof(head)) {
            size_t take = sizeof(head) - head_len < (size_t)n ? sizeof(head) - head_len : (size_t)n;

            memcpy(head + head_len, buf, take);
            head_len += take;
        }
    }
    if (SSL_get_error(ssl, n) != SSL_ERROR_ZERO_RETURN &&
        !(SSL_get_error(ssl, n) == SSL_ERROR_SYSCALL && head_len > 0)) {
        fail(w, "reading the response (SSL_read)", errno);
        goto end;
    }
    if (head_len < 12 ||
        (memcmp(head, "HTTP/1.1 200", 12) != 0 && memcmp(head, "HTTP/1.0 200", 12) != 0)) {
        fail(w, "an HTTP 200 response", 0);
        goto end;
    }
    ok = 1;
end:
    SSL_free(ssl);
    close(fd);
    return ok;
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;

    pthread_barrier_wait(&start_line);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (one_connection(w))
            w->handshakes++;
        if (max_handshakes != 0 && w->handshakes + w->failures >= max_handshakes)
            break;
        /* a server that refuses every connection must not make this spin for S seconds */
        if (w->failures > 100 && w->failures > w->handshakes)
            break;
    }
    return NULL;
}

static int resolve(const char *host, const char *port)
{
    struct addrinfo hints = {0}, *res;
    int rc;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "ctok-bench-tls: %s:%s: %s\n", host, port, gai_strerror(rc));
        return 0;
    }
    memcpy(&peer, res->ai_addr, res->ai_addrlen);
    peer_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 1;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = NULL, *cafile = NULL;
    struct worker *workers;
    unsigned long total = 0, failures = 0;
    double seconds = 3.0, t0, t1, c0, c1;
    struct timespec nap;
    int threads = 1, i;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--host") == 0)
            host = v;
        else if (strcmp(a, "--port") == 0)
            port = v;
        else if (strcmp(a, "--threads") == 0)
            threads = atoi(v);
        else if (strcmp(a, "--seconds") == 0)
            seconds = atof(v);
        else if (strcmp(a, "--count") == 0)
            max_handshakes = strtoul(v, NULL, 10);
        else if (strcmp(a, "--cafile") == 0)
            cafile = v;
        else if (strcmp(a, "--servername") == 0)
            sni = v;
        else {
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (port == NULL || threads < 1 || threads > MAX_THREADS || seconds <= 0) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (!resolve(host, port))
        return 1;

    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
        fprintf(stderr, "ctok-bench-tls: SSL_CTX_new failed\n");
        ERR_print_errors_fp(stderr);
        return 1;
    }
    /* never a resumption: no tickets asked for, no client-side session cache */
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (cafile != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
            fprintf(stderr, "ctok-bench-tls: cannot load --cafile %s\n", cafile);
            ERR_print_errors_fp(stderr);
            return 1;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }

    workers = calloc((size_t)threads, sizeof(*workers));
    if (workers == NULL || pthread_barrier_init(&start_line, NULL, (unsigned)threads + 1) != 0) {
        fprintf(stderr, "ctok-bench-tls: out of memory\n");
        free(workers);
        return 1;
    }
    for (i = 0; i < threads; i++) {
        if (pthread_create(&workers[i].tid, NULL, run_worker, &workers[i]) != 0) {
            fprintf(stderr, "ctok-bench-tls: pthread_create failed\n");
            return 1;
        }
    }
    pthread_barrier_wait(&start_line);
    t0 = clock_s(CLOCK_MONOTONIC);
    c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    if (max_handshakes == 0) {
        nap.tv_sec = (time_t)seconds;
        nap.tv_nsec = (long)((seconds - (double)nap.tv_sec) * 1e9);
        while (nanosleep(&nap, &nap) != 0 && errno == EINTR)
            ;
        atomic_store(&stop, 1);
    }
    for (i = 0; i < threads; i++) {
        pthread_join(workers[i].tid, NULL);
        total += workers[i].handshakes;
        failures += workers[i].failures;
    }
    /* the time until the last connection in flight at the deadline is done */
    t1 = clock_s(CLOCK_MONOTONIC);
    c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    printf("handshakes_per_sec=%.1f handshakes=%lu failures=%lu threads=%d seconds=%.3f "
           "cpu_s=%.3f\n",
           (double)total / (t1 - t0), total, failures, threads, t1 - t0, c1 - c0);
    free(workers);
    SSL_CTX_free(ctx);
    if (failures != 0) {
        fprintf(stderr, "ctok-bench-tls: %lu of %lu connections failed\n", failures,
                failures + total);
        return 1;
    }
    return total == 0 ? 1 : 0;
}

/*
 * Shared by the cloud call drivers (tests/aws_call.c, tests/az_call.c): the options
 * [--loop N] [--threads T] [--sleep-ms MS] [--fork], the calls in threads or across a fork,
 * and the summary lines the tests read ("calls=... ok=... failed=... ms=...", a child's
 * "child calls=... tcp=... inheritable=...").
 */
#ifndef CTOK_TESTS_CALL_DRIVER_H
#define CTOK_TESTS_CALL_DRIVER_H

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "../store/err.h"

/* One call: 1 with *out set, 0 failed (an error raised) */
static int (*driver_call)(json_t **out);
static int driver_loops = 1, driver_sleep_ms, driver_threads = 1, driver_fork;
static pthread_mutex_t driver_lock = PTHREAD_MUTEX_INITIALIZER;
static int driver_ok, driver_failed;
static char *driver_last;

/* The service's error code of the thread's last failed call, and what the service calls it */
static const char *(*driver_code)(void);
static const char *driver_code_label = "code";

/* Every error one line on stderr: "error: <reason>: <message> [<label> '<service code>']" */
static void driver_sink(int reason, const char *file, int line, const char *func, const char *fmt,
                        va_list ap)
{
    char msg[2048];

    (void)file, (void)line, (void)func;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    pthread_mutex_lock(&driver_lock);
    fprintf(stderr, "error: %s: %s [%s '%s']\n", ctok_reason_string(reason), msg, driver_code_label,
            driver_code());
    pthread_mutex_unlock(&driver_lock);
}

static void *driver_run(void *arg)
{
    (void)arg;
    for (int i = 0; i < driver_loops; i++) {
        json_t *out = NULL;
        int ok = driver_call(&out);

        pthread_mutex_lock(&driver_lock);
        if (ok) {
            driver_ok++;
            free(driver_last);
            driver_last = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
        } else {
            driver_failed++;
        }
        pthread_mutex_unlock(&driver_lock);
        json_decref(out);
        if (driver_sleep_ms > 0)
            usleep((useconds_t)driver_sleep_ms * 1000);
    }
    return NULL;
}

static long driver_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Connected TCP sockets in this process (curl's own socketpairs are AF_UNIX); with
 * inheritable, only those an exec would pass on (no FD_CLOEXEC). */
static int driver_count_tcp(int inheritable)
{
    int n = 0;

    for (int fd = 0; fd < 1024; fd++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);

        if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0 &&
            (sa.ss_family == AF_INET || sa.ss_family == AF_INET6) &&
            (!inheritable || !(fcntl(fd, F_GETFD) & FD_CLOEXEC)))
            n++;
    }
    return n;
}

/* Fields of the driver's CONFIG file */
static const char *str(json_t *conf, const char *k)
{
    return json_string_value(json_object_get(conf, k));
}

static long driver_int(json_t *conf, const char *k, long dflt)
{
    json_t *v = json_object_get(conf, k);

    return v != NULL ? (long)json_integer_value(v) : dflt;
}

/* The secret in the file CONFIG's secret_file names (never argv) through set(); 1 ok or none */
static int driver_secret(json_t *conf, int (*set)(const char *secret, size_t len))
{
    const char *path = str(conf, "secret_file");
    char buf[4096];
    size_t n;
    FILE *f;
    int ok;

    if (path == NULL)
        return 1;
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    ok = set(buf, n);
    OPENSSL_cleanse(buf, sizeof(buf));
    return ok;
}

/* The options at argv[*i...]; 0 if they are bad */
static int driver_options(int argc, char **argv, int *i)
{
    for (; *i < argc && strncmp(argv[*i], "--", 2) == 0; (*i)++) {
        if (strcmp(argv[*i], "--loop") == 0 && *i + 1 < argc)
            driver_loops = atoi(argv[++*i]);
        else if (strcmp(argv[*i], "--threads") == 0 && *i + 1 < argc)
            driver_threads = atoi(argv[++*i]);
        else if (strcmp(argv[*i], "--sleep-ms") == 0 && *i + 1 < argc)
            driver_sleep_ms = atoi(argv[++*i]);
        else if (strcmp(argv[*i], "--fork") == 0)
            driver_fork = 1;
        else
            break;
    }
    return driver_threads >= 1 && driver_threads <= 64;
}

/* Each of T threads makes N calls; --fork: one call, a fork whose child makes $child_env
 * calls on the same client, one more call in the parent. Prints the summary; 0 if every call
 * succeeded. */
static int driver_main(const char *child_env)
{
    long start = driver_now_ms();
    pthread_t tid[64];

    if (driver_fork) {
        pid_t pid;
        int status = 0;

        driver_loops = 1;
        driver_run(NULL); /* the parent's connection */
        {
            const char *loops = getenv(child_env);

            driver_loops = atoi(loops != NULL ? loops : "1");
        }
        if ((pid = fork()) == 0) {
            driver_ok = driver_failed = 0;
            driver_run(NULL);
            printf("child calls=%d ok=%d failed=%d tcp=%d inheritable=%d\n",
                   driver_ok + driver_failed, driver_ok, driver_failed, driver_count_tcp(0),
                   driver_count_tcp(1));
            fflush(stdout);
            _exit(driver_failed == 0 ? 0 : 1);
        }
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            driver_failed++;
        driver_loops = 1;
        driver_run(NULL); /* the parent's connection still works */
    } else {
        for (int t = 0; t < driver_threads; t++)
            pthread_create(&tid[t], NULL, driver_run, NULL);
        for (int t = 0; t < driver_threads; t++)
            pthread_join(tid[t], NULL);
    }
    if (driver_last != NULL)
        printf("%s\n", driver_last);
    printf("calls=%d ok=%d failed=%d ms=%ld\n", driver_ok + driver_failed, driver_ok, driver_failed,
           driver_now_ms() - start);
    free(driver_last);
    return driver_failed == 0 ? 0 : 1;
}

#endif

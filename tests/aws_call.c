/*
 * ctok_aws_call from the command line, for tests/test_kms_call.py:
 *   aws_call [--loop N] [--threads T] [--sleep-ms MS] [--fork] CONFIG OP BODY [OBJECT]
 * CONFIG is a JSON file with the fields of struct ctok_aws_conf (tokname, region, endpoint,
 * use_role, access_key_id, imds_endpoint, ca_file, timeout_ms, max_retries) and secret_file
 * (keys: the secret access key [+ "\n" + session token]; never on the command line). Each of T
 * threads logs in and makes N calls; --fork makes one call, forks, and a child makes N calls
 * on the same client. Prints the last response and a line "calls=... ok=... failed=...
 * ms=..."; every error as "error: <reason>: <message>" on stderr. Exit 0 if every call
 * succeeded.
 *   aws_call --parse-error [HEADER_TYPE] < body   prints "type|message" (ctok_aws_parse_error)
 *   aws_call --parse-imds < document              prints "ok <akid> <expires>" or "refused: why"
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <openssl/crypto.h>

#include "../kms/aws.h"
#include "../kms/awsint.h"
#include "../store/err.h"
#include "../store/token.h"

static struct ctok_aws *aws;
static const char *op, *object;
static json_t *body;
static int loops = 1, sleep_ms;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static int n_ok, n_failed;
static char *last;

static void sink(int reason, const char *file, int line, const char *func, const char *fmt,
                 va_list ap)
{
    char msg[2048];

    (void)file, (void)line, (void)func;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    pthread_mutex_lock(&out_lock);
    fprintf(stderr, "error: %s: %s [type '%s']\n", ctok_reason_string(reason), msg,
            ctok_aws_last_error_type());
    pthread_mutex_unlock(&out_lock);
}

static void *run(void *arg)
{
    (void)arg;
    for (int i = 0; i < loops; i++) {
        json_t *out = NULL;
        int ok = ctok_aws_call(aws, op, object, body, &out);

        pthread_mutex_lock(&out_lock);
        if (ok) {
            n_ok++;
            free(last);
            last = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
        } else {
            n_failed++;
        }
        pthread_mutex_unlock(&out_lock);
        json_decref(out);
        if (sleep_ms > 0)
            usleep((useconds_t)sleep_ms * 1000);
    }
    return NULL;
}

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Connected TCP sockets in this process (curl's own socketpairs are AF_UNIX); with
 * inheritable, only those an exec would pass on (no FD_CLOEXEC). */
static int count_tcp(int inheritable)
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

static const char *str(json_t *conf, const char *k)
{
    return json_string_value(json_object_get(conf, k));
}

static int set_secret(json_t *conf)
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
    ok = ctok_aws_set_secret(aws, buf, n);
    OPENSSL_cleanse(buf, sizeof(buf));
    return ok;
}

/* The parsers alone, on stdin: no network, no client. */
static int parse_only(int argc, char **argv)
{
    static char in[65536];
    size_t n = fread(in, 1, sizeof(in), stdin);

    if (strcmp(argv[1], "--parse-error") == 0) {
        char type[CTOK_AWS_TYPE_MAX], msg[CTOK_AWS_MSG_MAX];

        ctok_aws_parse_error(in, n, argc > 2 ? argv[2] : NULL, type, sizeof(type), msg,
                             sizeof(msg));
        printf("%s|%s\n", type, msg);
        return 0;
    } else {
        struct ctok_aws_creds c;
        char why[200];

        if (!ctok_aws_parse_imds_creds(in, n, &c, why, sizeof(why))) {
            printf("refused: %s\n", why);
            return 1;
        }
        printf("ok %s %ld\n", c.akid, (long)c.expires);
        ctok_aws_creds_clear(&c);
        return 0;
    }
}

int main(int argc, char **argv)
{
    int threads = 1, do_fork = 0, i = 1, rc;
    pthread_t tid[64];
    json_t *conf;
    long start;

    ctok_err_set_sink(sink);
    if (argc >= 2 &&
        (strcmp(argv[1], "--parse-error") == 0 || strcmp(argv[1], "--parse-imds") == 0))
        return parse_only(argc, argv);
    ctok_debug_on = getenv("CTOK_DEBUG") != NULL && strcmp(getenv("CTOK_DEBUG"), "1") == 0;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--loop") == 0 && i + 1 < argc)
            loops = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--sleep-ms") == 0 && i + 1 < argc)
            sleep_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--fork") == 0)
            do_fork = 1;
        else
            break;
    }
    if (argc - i < 3 || argc - i > 4 || threads < 1 || threads > 64) {
        fprintf(stderr, "usage: aws_call [--loop N] [--threads T] [--sleep-ms MS] [--fork] "
                        "CONFIG OP BODY [OBJECT]\n");
        return 2;
    }
    if ((conf = json_load_file(argv[i], 0, NULL)) == NULL ||
        (body = json_loads(argv[i + 2], 0, NULL)) == NULL) {
        fprintf(stderr, "aws_call: bad CONFIG or BODY\n");
        return 2;
    }
    op = argv[i + 1];
    object = argc - i == 4 ? argv[i + 3] : NULL;
    struct ctok_aws_conf c = {
        .tokname = str(conf, "tokname"),
        .region = str(conf, "region"),
        .endpoint = str(conf, "endpoint"),
        .use_role = json_is_true(json_object_get(conf, "use_role")),
        .access_key_id = str(conf, "access_key_id"),
        .imds_endpoint = str(conf, "imds_endpoint"),
        .ca_file = str(conf, "ca_file"),
        .timeout_ms = (long)json_integer_value(json_object_get(conf, "timeout_ms")),
        .max_retries = json_object_get(conf, "max_retries") != NULL
                           ? (int)json_integer_value(json_object_get(conf, "max_retries"))
                           : -1,
    };
    if ((aws = ctok_aws_new(&c)) == NULL || !set_secret(conf) || !ctok_aws_login(aws))
        return 1;
    start = now_ms();
    if (do_fork) {
        pid_t pid;
        int status = 0;

        loops = 1;
        run(NULL); /* the parent's connection */
        loops = atoi(getenv("AWS_CALL_CHILD_LOOPS") ? getenv("AWS_CALL_CHILD_LOOPS") : "1");
        if ((pid = fork()) == 0) {
            n_ok = n_failed = 0;
            run(NULL);
            printf("child calls=%d ok=%d failed=%d tcp=%d inheritable=%d\n", n_ok + n_failed, n_ok,
                   n_failed, count_tcp(0), count_tcp(1));
            fflush(stdout);
            _exit(n_failed == 0 ? 0 : 1);
        }
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            n_failed++;
        loops = 1;
        run(NULL); /* the parent's connection still works */
    } else {
        for (int t = 0; t < threads; t++)
            pthread_create(&tid[t], NULL, run, NULL);
        for (int t = 0; t < threads; t++)
            pthread_join(tid[t], NULL);
    }
    if (last != NULL)
        printf("%s\n", last);
    printf("calls=%d ok=%d failed=%d ms=%ld\n", n_ok + n_failed, n_ok, n_failed, now_ms() - start);
    rc = n_failed == 0 ? 0 : 1;
    free(last);
    ctok_aws_logout(aws);
    ctok_aws_free(aws);
    json_decref(body);
    json_decref(conf);
    return rc;
}

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
#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>

#include "call_driver.h"
#include "../kms/aws.h"
#include "../kms/awsint.h"
#include "../store/err.h"
#include "../store/token.h"

static struct ctok_aws *aws;
static const char *op, *object;
static json_t *body;

static int aws_call(json_t **out)
{
    return ctok_aws_call(aws, op, object, body, out);
}

static int set_secret(const char *secret, size_t len)
{
    return ctok_aws_set_secret(aws, secret, len);
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
    int i = 1, rc;
    json_t *conf;

    driver_code = ctok_aws_last_error_type;
    driver_code_label = "type";
    ctok_err_set_sink(driver_sink);
    if (argc >= 2 &&
        (strcmp(argv[1], "--parse-error") == 0 || strcmp(argv[1], "--parse-imds") == 0))
        return parse_only(argc, argv);
    {
        const char *dbg = getenv("CTOK_DEBUG");

        ctok_debug_on = dbg != NULL && strcmp(dbg, "1") == 0;
    }
    if (!driver_options(argc, argv, &i) || argc - i < 3 || argc - i > 4) {
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
        .timeout_ms = driver_int(conf, "timeout_ms", 0),
        .max_retries = (int)driver_int(conf, "max_retries", -1),
    };
    if ((aws = ctok_aws_new(&c)) == NULL || !driver_secret(conf, set_secret) ||
        !ctok_aws_login(aws))
        return 1;
    driver_call = aws_call;
    rc = driver_main("AWS_CALL_CHILD_LOOPS");
    ctok_aws_logout(aws);
    ctok_aws_free(aws);
    json_decref(body);
    json_decref(conf);
    return rc;
}

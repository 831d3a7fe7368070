/*
 * Signs one request with kms/sigv4.c for tests/test_kms_sigv4.py.
 *   sigv4_vectors METHOD PATH QUERY REGION SERVICE AMZ_DATE AKID < request
 * stdin: the secret key on the first line, then "Name:value" header lines, an empty line, and
 * the body. Prints the canonical request, the string to sign and the Authorization value,
 * separated by lines of "----". The same request signed with the day's key kept aside
 * (ctok_sigv4_derive_key + ctok_sigv4_sign_key, as the awskms backend signs) must agree.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "../kms/sigv4.h"

#define MAX_HEADERS 16

int main(int argc, char **argv)
{
    static char in[65536];
    struct ctok_sigv4_header h[MAX_HEADERS];
    char auth[1024], *canonical = NULL, *to_sign = NULL, *secret, *line, *body;
    size_t len, n = 0;

    if (argc != 8) {
        fprintf(stderr, "usage: %s METHOD PATH QUERY REGION SERVICE AMZ_DATE AKID < request\n",
                argv[0]);
        return 2;
    }
    len = fread(in, 1, sizeof(in) - 1, stdin);
    in[len] = '\0';
    secret = in;
    if ((line = strchr(in, '\n')) == NULL)
        return 2;
    *line++ = '\0';
    body = strstr(line, "\n\n");
    if (body == NULL)
        return 2;
    *body = '\0';
    body += 2;
    for (char *l = strtok(line, "\n"); l != NULL && n < MAX_HEADERS; l = strtok(NULL, "\n")) {
        char *colon = strchr(l, ':');

        if (colon == NULL)
            return 2;
        *colon = '\0';
        h[n++] = (struct ctok_sigv4_header){l, colon + 1};
    }
    struct ctok_sigv4_req r = {.method = argv[1],
                               .path = argv[2],
                               .query = argv[3],
                               .headers = h,
                               .n_headers = n,
                               .body = body,
                               .body_len = strlen(body),
                               .amz_date = argv[6],
                               .region = argv[4],
                               .service = argv[5]};
    if (!ctok_sigv4_sign(&r, argv[7], secret, auth, sizeof(auth), &canonical, &to_sign)) {
        fprintf(stderr, "sigv4: cannot sign\n");
        return 1;
    }
    {
        unsigned char key[CTOK_SIGV4_KEY_LEN];
        char auth2[sizeof(auth)];

        if (!ctok_sigv4_derive_key(secret, argv[6], argv[4], argv[5], key) ||
            !ctok_sigv4_sign_key(&r, argv[7], key, auth2, sizeof(auth2), NULL, NULL) ||
            strcmp(auth, auth2) != 0) {
            fprintf(stderr, "sigv4: the day's key signs otherwise: %s\n", auth2);
            return 1;
        }
    }
    printf("%s\n----\n%s\n----\n%s\n", canonical, to_sign, auth);
    OPENSSL_free(canonical);
    OPENSSL_free(to_sign);
    return 0;
}

/*
 * The config entry fields the cloud backends (kms/aws.c, kms/azure_kv.c) read alike: each
 * checks one field and raises one CTOK_R_CONFIG line naming the config file, the token and
 * the field. 1 ok (absent fields too: the default), 0 error raised.
 */
#ifndef CTOK_KMS_CONF_H
#define CTOK_KMS_CONF_H

#include <jansson.h>

#include "../store/backend.h"

/* An optional integer from lo to hi; def when absent. */
int ctok_kms_conf_int(ctok_token *tok, const json_t *conf, const char *field, long lo, long hi,
                      long def, long *out);
/* An optional string; a present one must be a non-empty string. */
int ctok_kms_conf_str(ctok_token *tok, const json_t *conf, const char *field, const char **out);
/* A URL (NULL: absent) must be https:// (or http:// where http_ok: a metadata endpoint). */
int ctok_kms_conf_url(ctok_token *tok, const char *field, const char *url, int http_ok);

#endif

/* Config entry fields of the cloud backends (conf.h). */
#include <string.h>

#include "conf.h"

int ctok_kms_conf_int(ctok_token *tok, const json_t *conf, const char *field, long lo, long hi,
                      long def, long *out)
{
    const json_t *v = json_object_get(conf, field);

    *out = def;
    if (v == NULL)
        return 1;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': \"%s\" must be an integer from %ld to %ld",
                 ctok_ctx_config_path(ctok_token_ctx(tok)), ctok_token_name(tok), field, lo, hi);
        return 0;
    }
    *out = (long)json_integer_value(v);
    return 1;
}

/* An optional string field; a present one must be a non-empty string. */
int ctok_kms_conf_str(ctok_token *tok, const json_t *conf, const char *field, const char **out)
{
    const json_t *v = json_object_get(conf, field);

    *out = json_string_value(v);
    if (v != NULL && (*out == NULL || **out == '\0')) {
        CTOK_ERR(CTOK_R_CONFIG, "%s: token '%s': \"%s\" must be a non-empty string",
                 ctok_ctx_config_path(ctok_token_ctx(tok)), ctok_token_name(tok), field);
        return 0;
    }
    return 1;
}

/* A URL field must use one of the schemes given ("https://" only for the KMS endpoint). */
int ctok_kms_conf_url(ctok_token *tok, const char *field, const char *url, int http_ok)
{
    if (url == NULL || strncmp(url, "https://", 8) == 0 ||
        (http_ok && strncmp(url, "http://", 7) == 0))
        return 1;
    CTOK_ERR(CTOK_R_CONFIG,
             "%s: token '%s': \"%s\" must be an %s URL (TLS verification is never off), not '%s'",
             ctok_ctx_config_path(ctok_token_ctx(tok)), ctok_token_name(tok), field,
             http_ok ? "http:// or https://" : "https://", url);
    return 0;
}

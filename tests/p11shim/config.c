/* The shim's configuration: the CTOK_SHIM_* environment variables (README.md). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckr.h"
#include "shim.h"

const char *const shim_fn_names[FN_COUNT] = {
#define X(name) #name,
    LIST_FUNCTIONS(X)
#undef X
        "C_UnlockPIN",
};

static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static void complain(const char *var, const char *value, const char *why)
{
    fprintf(stderr, "ctok-p11shim: %s=%s: %s\n", var, value, why);
}

static int find_fn(const char *s, size_t len)
{
    for (int i = 0; i < FN_COUNT; i++)
        if (strlen(shim_fn_names[i]) == len && memcmp(shim_fn_names[i], s, len) == 0)
            return i;
    return -1;
}

static int parse_ulong(const char *s, size_t len, unsigned long *out)
{
    char tmp[32];
    char *end;

    if (len == 0 || len >= sizeof(tmp) || s[0] < '0' || s[0] > '9')
        return 0;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    errno = 0;
    *out = strtoul(tmp, &end, 10);
    return errno == 0 && *end == '\0';
}

/* CTOK_SHIM_FAIL and CTOK_SHIM_FAIL_ONCE (var): <function>:<N>:<CKR>[,...] into at, rvs */
static int parse_fail(const char *var, unsigned long *at, CK_RV *rvs, const char *v)
{
    const char *p = v;

    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *c1 = memchr(p, ':', len);
        const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - p)) : NULL;
        unsigned long n;
        CK_RV rv;
        int fn;

        if (!c2) {
            complain(var, v, "expected <function>:<N>:<CKR name>[,...]");
            return 0;
        }
        fn = find_fn(p, (size_t)(c1 - p));
        if (fn < 0 || fn == FN_C_GetFunctionList) {
            complain(var, v, "unknown or unfailable function");
            return 0;
        }
        if (!parse_ulong(c1 + 1, (size_t)(c2 - c1 - 1), &n) || n == 0) {
            complain(var, v, "N must be a number >= 1");
            return 0;
        }
        if (!shim_ckr_parse(c2 + 1, len - (size_t)(c2 + 1 - p), &rv)) {
            complain(var, v, "unknown CKR name");
            return 0;
        }
        at[fn] = n;
        rvs[fn] = rv;
        p += len;
        if (*p == ',')
            p++;
    }
    return 1;
}

int shim_parse_version(CK_VERSION *out, const char *v)
{
    unsigned major, minor;
    char extra;

    if (!v || !*v)
        return 0;
    if (sscanf(v, "%u.%u%c", &major, &minor, &extra) != 2 || major > 255 || minor > 255)
        return -1;
    out->major = (CK_BYTE)major;
    out->minor = (CK_BYTE)minor;
    return 1;
}

int shim_parse_config(struct config *c)
{
    const char *v;

    memset(c, 0, sizeof(*c));
    v = getenv("CTOK_SHIM_MODULE");
    v = v && *v ? v : DEFAULT_MODULE;
    if (strlen(v) >= sizeof(c->module)) {
        complain("CTOK_SHIM_MODULE", v, "too long");
        return 0;
    }
    strcpy(c->module, v);

    v = getenv("CTOK_SHIM_LOG");
    if (v && *v) {
        if (strlen(v) >= sizeof(c->log_path)) {
            complain("CTOK_SHIM_LOG", v, "too long");
            return 0;
        }
        strcpy(c->log_path, v);
    }
    c->log_all = env_flag("CTOK_SHIM_LOG_ALL");
    c->log_detail = env_flag("CTOK_SHIM_LOG_DETAIL");

    v = getenv("CTOK_SHIM_VERSION");
    switch (shim_parse_version(&c->version, v)) {
    case -1:
        complain("CTOK_SHIM_VERSION", v, "expected <major>.<minor>");
        return 0;
    case 1:
        c->version_set = 1;
        break;
    }

    v = getenv("CTOK_SHIM_MULTIPIN");
    if (v && *v) {
        const char *comma = strchr(v, ',');
        size_t la = comma ? (size_t)(comma - v) : 0, lb = comma ? strlen(comma + 1) : 0;
        if (!comma || la == 0 || lb == 0 || la > 32 || lb > 32 || strchr(comma + 1, ',')) {
            complain("CTOK_SHIM_MULTIPIN", v, "expected <label_a>,<label_b> (each 1-32 bytes)");
            return 0;
        }
        c->multipin = 1;
        memcpy(c->card_label[0], v, la);
        memcpy(c->card_label[1], comma + 1, lb);
    }

    c->private_certs = env_flag("CTOK_SHIM_PRIVATE_CERTS");
    c->no_unlock = env_flag("CTOK_SHIM_NO_UNLOCK");

    v = getenv("CTOK_SHIM_PIN_TRIES");
    if (v && *v) {
        const char *colon = strchr(v, ':');
        if (!colon || !parse_ulong(v, (size_t)(colon - v), &c->pin_tries) || c->pin_tries == 0 ||
            !colon[1] || strlen(colon + 1) >= sizeof(c->pin_state)) {
            complain("CTOK_SHIM_PIN_TRIES", v, "expected <N>:<counter file>, N >= 1");
            return 0;
        }
        strcpy(c->pin_state, colon + 1);
    }

    v = getenv("CTOK_SHIM_FAIL");
    if (v && *v && !parse_fail("CTOK_SHIM_FAIL", c->fail_at, c->fail_rv, v))
        return 0;
    v = getenv("CTOK_SHIM_FAIL_ONCE");
    if (v && *v && !parse_fail("CTOK_SHIM_FAIL_ONCE", c->fail_once_at, c->fail_once_rv, v))
        return 0;

    v = getenv("CTOK_SHIM_DISCONNECT_EVERY");
    c->disconnect_rv = CKR_DEVICE_REMOVED;
    if (v && *v) {
        const char *colon = strchr(v, ':');
        size_t nlen = colon ? (size_t)(colon - v) : strlen(v);
        if (!parse_ulong(v, nlen, &c->disconnect_every) || c->disconnect_every == 0 ||
            (colon && !shim_ckr_parse(colon + 1, strlen(colon + 1), &c->disconnect_rv))) {
            complain("CTOK_SHIM_DISCONNECT_EVERY", v, "expected <N>[:<CKR name>], N >= 1");
            return 0;
        }
    }
    return 1;
}

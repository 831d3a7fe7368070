/*
 * Slots and tokens (PKCS#11 "slot and token management"): never assume one of either. Also the
 * slots of p11-kit's registered modules a pkcs11: URI matches, for zero-config URIs.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11.h"
#include "../store/p11kit_lazy.h"

void ctok_p11_str(const unsigned char *in, size_t len, char *out)
{
    while (len > 0 && (in[len - 1] == ' ' || in[len - 1] == '\0'))
        len--;
    memcpy(out, in, len);
    out[len] = '\0';
}

int ctok_p11_slots(struct p11_module *m, struct p11_slot **out, size_t *n)
{
    CK_SLOT_ID *ids = NULL;
    CK_ULONG count = 0;
    struct p11_slot *v = NULL;
    size_t k = 0;
    CK_RV rv;

    *out = NULL;
    *n = 0;
    rv = P11_CALL(m, C_GetSlotList, (CK_TRUE, NULL, &count));
    if (rv == CKR_OK && count > 0) {
        ids = calloc(count, sizeof(*ids));
        v = calloc(count, sizeof(*v));
        if (ids == NULL || v == NULL)
            rv = CKR_HOST_MEMORY;
        else
            rv = P11_CALL(m, C_GetSlotList, (CK_TRUE, ids, &count));
    }
    if (rv != CKR_OK) {
        CTOK_ERR(CTOK_R_BACKEND, "PKCS#11 library '%s': C_GetSlotList failed: %s", m->path,
                 ctok_p11_rv_name(rv));
        free(ids);
        free(v);
        return 0;
    }
    for (CK_ULONG i = 0; i < count; i++) {
        struct p11_slot *s = &v[k];

        s->id = ids[i];
        if (P11_CALL(m, C_GetSlotInfo, (ids[i], &s->slot)) != CKR_OK ||
            !(s->slot.flags & CKF_TOKEN_PRESENT) ||
            P11_CALL(m, C_GetTokenInfo, (ids[i], &s->token)) != CKR_OK)
            continue; /* a reader emptied meanwhile */
        s->index = k;
        ctok_p11_str(s->token.label, sizeof(s->token.label), s->label);
        ctok_p11_str(s->slot.slotDescription, sizeof(s->slot.slotDescription), s->description);
        k++;
    }
    free(ids);
    *out = v;
    *n = k;
    return 1;
}

static json_t *flags_of(CK_FLAGS f)
{
    static const struct {
        CK_FLAGS bit;
        const char *name;
    } t[] = {{CKF_LOGIN_REQUIRED, "login-required"},
             {CKF_USER_PIN_INITIALIZED, "pin-initialized"},
             {CKF_TOKEN_INITIALIZED, "initialized"},
             {CKF_PROTECTED_AUTHENTICATION_PATH, "protected-auth-path"},
             {CKF_WRITE_PROTECTED, "write-protected"},
             {CKF_USER_PIN_COUNT_LOW, "pin-count-low"},
             {CKF_USER_PIN_FINAL_TRY, "pin-final-try"},
             {CKF_USER_PIN_LOCKED, "pin-locked"},
             {CKF_USER_PIN_TO_BE_CHANGED, "pin-to-be-changed"}};
    json_t *a = json_array();

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (f & t[i].bit)
            json_array_append_new(a, json_string(t[i].name));
    return a;
}

json_t *ctok_p11_slot_list(const char *library)
{
    struct p11_module *m = ctok_p11_module_get(library);
    struct p11_slot *slots;
    size_t n;
    json_t *list;
    char manuf[33], model[17], serial[17];

    int ok;

    if (m == NULL || !ctok_p11_enter(m))
        return NULL;
    ok = ctok_p11_slots(m, &slots, &n);
    ctok_p11_leave(m);
    if (!ok)
        return NULL;
    list = json_array();
    for (size_t i = 0; i < n; i++) {
        char *uri = ctok_p11_token_info_uri(&slots[i].token);

        ctok_p11_str(slots[i].token.manufacturerID, 32, manuf);
        ctok_p11_str(slots[i].token.model, 16, model);
        ctok_p11_str(slots[i].token.serialNumber, 16, serial);
        json_array_append_new(list, json_pack("{s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:o}", "id",
                                              (json_int_t)slots[i].id, "index",
                                              (json_int_t)slots[i].index, "description",
                                              slots[i].description, "token_label", slots[i].label,
                                              "manufacturer", manuf, "model", model, "serial",
                                              serial, "flags", flags_of(slots[i].token.flags)));
        if (uri != NULL)
            json_object_set_new(json_array_get(list, json_array_size(list) - 1), "uri",
                                json_string(uri));
        free(uri);
    }
    free(slots);
    return list;
}

json_t *ctok_p11_registered(void)
{
    json_t *mods = ctok_p11_registered_modules(), *m;
    size_t i;

    json_array_foreach(mods, i, m)
    {
        json_t *slots = ctok_p11_slot_list(json_string_value(json_object_get(m, "path")));

        /* a library that cannot be used is shown with its error, the others still listed */
        json_object_set_new(m, "slots", slots != NULL ? slots : json_array());
        if (slots == NULL)
            json_object_set_new(m, "error", json_string("cannot be loaded or initialized"));
    }
    return mods;
}

/* Appends to the description of what was searched (truncated if long). */
static void say(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t len, const char *fmt, ...)
{
    size_t used = strlen(buf);
    va_list ap;

    if (used + 1 >= len)
        return;
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

/* The slots of one library whose token (and module) match the URI, as config entries. */
static void candidates_of(P11KitUri *uri, const char *name, const char *library, json_t *out,
                          char *searched, size_t len)
{
    struct p11_module *m;
    struct p11_slot *slots = NULL;
    size_t n = 0;
    int ok;

    /* a library that cannot be used is named in what was searched, never an error here */
    ERR_set_mark();
    m = ctok_p11_module_get(library);
    ok = m != NULL && ctok_p11_enter(m);
    if (ok) {
        ok = ctok_p11_slots(m, &slots, &n);
        ctok_p11_leave(m);
    }
    ERR_pop_to_mark();
    say(searched, len, "%s%s (", *searched != '\0' ? "; " : "", name);
    if (!ok)
        say(searched, len, "%s: cannot be loaded or initialized)", library);
    for (size_t i = 0, shown = 0; ok && i < n; i++) {
        char serial[17], tname[128];

        /* SoftHSM's spare slot holds an uninitialized token: nothing to use there */
        if (!(slots[i].token.flags & CKF_TOKEN_INITIALIZED))
            continue;
        say(searched, len, "%stoken '%s'", shown++ > 0 ? ", " : "", slots[i].label);
        if (!p11_kit_uri_match_token_info(uri, &slots[i].token) ||
            !p11_kit_uri_match_module_info(uri, &m->info))
            continue;
        ctok_p11_str(slots[i].token.serialNumber, 16, serial);
        snprintf(tname, sizeof(tname), "%s/%s", name, slots[i].label);
        /* use and view only: a token nobody configured is not for key generation or removal */
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:s, s:[s,s], s:{s:b}}", "name",
                                             tname, "type", "pkcs11", "library", library,
                                             "ref_type", "serial", "ref", serial, "permissions",
                                             "view", "use", "auth", "prompt", 1));
    }
    if (ok)
        say(searched, len, "%s", searched[strlen(searched) - 1] == '(' ? "no token)" : ")");
    free(slots);
}

json_t *ctok_p11_uri_candidates(void *p11uri, char *searched, size_t len)
{
    P11KitUri *uri = p11uri;
    const char *path = p11_kit_uri_get_module_path(uri);
    const char *want = p11_kit_uri_get_module_name(uri);
    json_t *out = json_array(), *mods, *m;
    size_t i;

    *searched = '\0';
    if (out == NULL)
        return NULL;
    /* RFC 7512 module-path names the library itself, registered or not */
    if (path != NULL) {
        candidates_of(uri, path, path, out, searched, len);
        return out;
    }
    mods = ctok_p11_registered_modules();
    json_array_foreach(mods, i, m)
    {
        const char *name = json_string_value(json_object_get(m, "name"));

        if (want == NULL || strcmp(want, name) == 0)
            candidates_of(uri, name, json_string_value(json_object_get(m, "path")), out, searched,
                          len);
    }
    if (*searched == '\0')
        say(searched, len, "%s",
            want != NULL ? "no module registered with that module-name"
                         : "no module registered with p11-kit");
    json_decref(mods);
    return out;
}

/* Slots and tokens (PKCS#11 "slot and token management"): never assume one of either. */
#include <stdlib.h>
#include <string.h>

#include "p11.h"

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

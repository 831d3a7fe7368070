/*
 * ctok-bench-p11: the HSM limit of ../shared/BENCHMARKS.md. Signs with a PKCS#11 module
 * (SoftHSM2 by default) through bare C_SignInit/C_Sign calls, one session per thread, no
 * OpenSSL in the loop, for S seconds of wall time, and prints one machine-readable line.
 *
 * The key is the private key object with the given CKA_LABEL on the token with the given
 * label. With --session-copy every thread signs with its own session copy of that key
 * (C_CopyObject with CKA_TOKEN=FALSE, made in the thread's session before the clock
 * starts); SoftHSM signs faster with session objects than with token objects. With
 * --shared-copy one session copy, made in the main session, serves all threads.
 *
 * Logging in, finding the key, the copies and the verification of a first signature per
 * thread happen before the clock starts.
 *
 * With --versus (up to two), the same threads sign on several sides in one process: the
 * module of --module and each --versus module (a token label and a copy mode each; the key
 * label, PIN and mechanism are shared). Wall time is cut into slices (--slice-ms, 20 ms)
 * that go to the sides in turn, at the same moments in every thread, and each side's rate
 * counts its signatures over the time spent on them. A machine whose speed drifts over
 * seconds (a shared VM: +-20-30 % between runs) slows every side alike, so their ratio holds
 * where runs in separate processes, seconds apart, cannot show a few percent. Two modules
 * over one SoftHSM share its library and login in the process; each opens its own sessions.
 */
/* pthread barriers, clock_gettime, nanosleep under -std=c11 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "timed_run.h"

#define MAX_THREADS 256
#define SIG_BUF 1024
#define DIGEST_LEN 32
#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"

enum mech { MECH_ECDSA, MECH_RSA_PKCS1, MECH_RSA_PSS };
enum copy_mode { COPY_NONE, COPY_PER_THREAD, COPY_SHARED };

static const struct {
    const char *name;
    enum mech mech;
} mech_names[] = {
    {"ecdsa", MECH_ECDSA},
    {"rsa-pkcs1", MECH_RSA_PKCS1},
    {"rsa-pss", MECH_RSA_PSS},
};

/* A SHA-256 sized digest: any 32 bytes will do. */
static const unsigned char digest[DIGEST_LEN] = {
    0x9f, 0x86, 0xd0, 0x81, 0x88, 0x4c, 0x7d, 0x65, 0x9a, 0x2f, 0xea, 0xa0, 0xc5, 0x5a, 0xd0, 0x15,
    0xa3, 0xbf, 0x4f, 0x1b, 0x2b, 0x0b, 0x82, 0x2c, 0xd1, 0x5d, 0x6c, 0x15, 0xb0, 0xf0, 0x0a, 0x08,
};

/* DER DigestInfo prefix for SHA-256 (RFC 8017, 9.2 note 1); CKM_RSA_PKCS signs prefix||digest */
static const unsigned char sha256_prefix[19] = {
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
    0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
};

#define MAX_SIDES 3

/* One module, token and copy mode to sign on. */
struct side {
    const char *module, *token;
    enum copy_mode copy_mode;
    CK_FUNCTION_LIST_PTR p11;
    CK_SLOT_ID slot;
    CK_OBJECT_HANDLE key; /* the token object or the shared copy */
    CK_OBJECT_HANDLE pub_key;
};

struct worker {
    int index;
    CK_SESSION_HANDLE s[MAX_SIDES];
    CK_OBJECT_HANDLE key[MAX_SIDES]; /* the side's key, or this thread's own copy of it */
    unsigned long n[MAX_SIDES];      /* signatures made on each side */
    long long ns[MAX_SIDES];         /* and the time they took */
};

static struct side sides[MAX_SIDES];
static int n_sides = 1;
static long long slice_ns = 20000000; /* 20 ms */
static enum mech mech;
static unsigned char tbs[sizeof(sha256_prefix) + DIGEST_LEN];
static CK_ULONG tbs_len;
static CK_RSA_PKCS_PSS_PARAMS pss_params = {CKM_SHA256, CKG_MGF1_SHA256, DIGEST_LEN};
static CK_MECHANISM mechanism;

static void usage(FILE *f)
{
    fprintf(f, "usage: ctok-bench-p11 --token LABEL --pin PIN --label KEYLABEL\n"
               "         --mech ecdsa|rsa-pkcs1|rsa-pss [--threads N] [--seconds S]\n"
               "         [--module PATH] [--session-copy | --shared-copy]\n"
               "         [--versus module=PATH,token=LABEL[,copy=session|shared]]...\n"
               "         [--slice-ms MS]\n"
               "  --module: default " DEFAULT_MODULE "\n"
               "  --pin: the user PIN, or file:PATH, or env:NAME\n"
               "  --session-copy: each thread signs with its own session copy of the key\n"
               "  --shared-copy: all threads sign with one session copy of the key\n"
               "  --versus: also sign on this module's token (up to twice), in turns of\n"
               "      --slice-ms milliseconds of wall time (default 20) in the same threads\n"
               "  prints: ops_per_sec=<float> threads=<n> sigs=<count> cpu_s=<float>\n"
               "  and with --versus one line per side, the first --module's:\n"
               "    side=<k> ops_per_sec=<float> sigs=<count> seconds=<float>\n");
}

static const struct {
    CK_RV rv;
    const char *name;
} rv_names[] = {
    {CKR_OK, "CKR_OK"},
    {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
    {CKR_ATTRIBUTE_READ_ONLY, "CKR_ATTRIBUTE_READ_ONLY"},
    {CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID"},
    {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
    {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
    {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE"},
    {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
    {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
    {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
    {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
    {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
    {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
    {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT"},
    {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
    {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"},
    {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
    {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
    {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
    {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
    {CKR_SESSION_COUNT, "CKR_SESSION_COUNT"},
    {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
    {CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY"},
    {CKR_SIGNATURE_INVALID, "CKR_SIGNATURE_INVALID"},
    {CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"},
    {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
    {CKR_ACTION_PROHIBITED, "CKR_ACTION_PROHIBITED"},
};

static const char *rv_name(CK_RV rv)
{
    for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
        if (rv_names[i].rv == rv)
            return rv_names[i].name;
    return "CKR_?";
}

static void die_rv(const char *what, CK_RV rv)
{
    fprintf(stderr, "ctok-bench-p11: %s failed: %s (0x%lx)\n", what, rv_name(rv),
            (unsigned long)rv);
    fflush(NULL);
    _exit(1); /* no exit handlers: see the end of main */
}

static char *read_pin(const char *spec)
{
    char buf[256];

    if (strncmp(spec, "env:", 4) == 0) {
        const char *v = getenv(spec + 4);

        if (v == NULL) {
            fprintf(stderr, "ctok-bench-p11: --pin: environment variable %s not set\n", spec + 4);
            exit(2);
        }
        return strdup(v);
    }
    if (strncmp(spec, "file:", 5) == 0) {
        FILE *f = fopen(spec + 5, "r");
        size_t n;

        if (f == NULL) {
            fprintf(stderr, "ctok-bench-p11: --pin: %s: %s\n", spec + 5, strerror(errno));
            exit(2);
        }
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        return strdup(buf);
    }
    return strdup(spec);
}

/* ---- module, token, key -------------------------------------------------------------- */

/* Loads and initializes side->module. A second side on a module the process has loaded
 * already (ctok-p11.so loads SoftHSM itself) finds it initialized. */
static void load_module(struct side *side)
{
    CK_C_INITIALIZE_ARGS init = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
    CK_C_GetFunctionList get_list;
    void *h = dlopen(side->module, RTLD_NOW | RTLD_LOCAL);
    CK_RV rv;

    if (h == NULL) {
        fprintf(stderr, "ctok-bench-p11: cannot load %s: %s\n", side->module, dlerror());
        exit(1);
    }
    *(void **)&get_list = dlsym(h, "C_GetFunctionList");
    if (get_list == NULL) {
        fprintf(stderr, "ctok-bench-p11: %s exports no C_GetFunctionList\n", side->module);
        exit(1);
    }
    rv = get_list(&side->p11);
    if (rv != CKR_OK)
        die_rv("C_GetFunctionList", rv);
    rv = side->p11->C_Initialize(&init);
    if (rv != CKR_OK && !(rv == CKR_CRYPTOKI_ALREADY_INITIALIZED && side != &sides[0]))
        die_rv("C_Initialize", rv);
}

/* The slot whose token label (32 bytes, blank padded) is label. */
static CK_SLOT_ID find_token(CK_FUNCTION_LIST_PTR p11, const char *label)
{
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0, i;
    size_t len = strlen(label);
    CK_RV rv;

    rv = p11->C_GetSlotList(CK_TRUE, NULL, &n);
    if (rv != CKR_OK)
        die_rv("C_GetSlotList", rv);
    slots = calloc(n ? n : 1, sizeof(*slots));
    if (slots == NULL) {
        perror("calloc");
        exit(1);
    }
    rv = p11->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv != CKR_OK)
        die_rv("C_GetSlotList", rv);
    for (i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        size_t k;

        if (p11->C_GetTokenInfo(slots[i], &ti) != CKR_OK || len > sizeof(ti.label))
            continue;
        if (memcmp(ti.label, label, len) != 0)
            continue;
        for (k = len; k < sizeof(ti.label) && ti.label[k] == ' '; k++)
            ;
        if (k == sizeof(ti.label)) {
            CK_SLOT_ID s = slots[i];

            free(slots);
            return s;
        }
    }
    fprintf(stderr, "ctok-bench-p11: no token labelled '%s' (%lu slots with a token)\n", label,
            (unsigned long)n);
    exit(1);
}

static CK_OBJECT_HANDLE find_object(CK_FUNCTION_LIST_PTR p11, CK_SESSION_HANDLE s,
                                    CK_OBJECT_CLASS cls, const char *label, CK_ULONG *found)
{
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE h[2] = {CK_INVALID_HANDLE, CK_INVALID_HANDLE};
    CK_RV rv;

    *found = 0;
    rv = p11->C_FindObjectsInit(s, t, 2);
    if (rv != CKR_OK)
        die_rv("C_FindObjectsInit", rv);
    rv = p11->C_FindObjects(s, h, 2, found);
    if (rv != CKR_OK)
        die_rv("C_FindObjects", rv);
    (void)p11->C_FindObjectsFinal(s);
    return h[0];
}

static CK_OBJECT_HANDLE session_copy(CK_FUNCTION_LIST_PTR p11, CK_SESSION_HANDLE s,
                                     CK_OBJECT_HANDLE key)
{
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE t[1] = {{CKA_TOKEN, &no, sizeof(no)}};
    CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
    CK_RV rv = p11->C_CopyObject(s, key, t, 1, &copy);

    if (rv != CKR_OK)
        die_rv("C_CopyObject(CKA_TOKEN=FALSE)", rv);
    return copy;
}

/* ---- one signature ------------------------------------------------------------------- */

static CK_RV sign_once(CK_FUNCTION_LIST_PTR p11, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key,
                       unsigned char *sig, CK_ULONG *siglen)
{
    CK_RV rv = p11->C_SignInit(s, &mechanism, key);

    if (rv != CKR_OK)
        return rv;
    *siglen = SIG_BUF;
    return p11->C_Sign(s, tbs, tbs_len, sig, siglen);
}

/* ---- workers ------------------------------------------------------------------------- */

static void fail(struct worker *w, const char *what, CK_RV rv)
{
    fprintf(stderr, "ctok-bench-p11: thread %d: %s failed: %s (0x%lx)\n", w->index, what,
            rv_name(rv), (unsigned long)rv);
    bench_fail();
}

/* Setup on one side, before the clock: own session, own copy, a first signature that
 * verifies. 0 on a failure (reported). */
static int side_setup(struct worker *w, int k)
{
    const struct side *side = &sides[k];
    CK_FUNCTION_LIST_PTR p11 = side->p11;
    unsigned char sig[SIG_BUF];
    CK_ULONG siglen;
    CK_RV rv;

    w->key[k] = side->key;
    rv = p11->C_OpenSession(side->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &w->s[k]);
    if (rv != CKR_OK) {
        fail(w, "C_OpenSession", rv);
        return 0;
    }
    if (side->copy_mode == COPY_PER_THREAD)
        w->key[k] = session_copy(p11, w->s[k], w->key[k]);
    rv = sign_once(p11, w->s[k], w->key[k], sig, &siglen);
    if (rv != CKR_OK) {
        fail(w, "first C_SignInit/C_Sign", rv);
        return 0;
    }
    if (side->pub_key == CK_INVALID_HANDLE)
        return 1;
    rv = p11->C_VerifyInit(w->s[k], &mechanism, side->pub_key);
    if (rv == CKR_OK)
        rv = p11->C_Verify(w->s[k], tbs, tbs_len, sig, siglen);
    /* a module that only signs (ctok-p11.so): the first signature is not verified */
    if (rv == CKR_FUNCTION_NOT_SUPPORTED && w->index == 0)
        fprintf(stderr,
                "ctok-bench-p11: note: %s does not verify; its first signature is not "
                "verified\n",
                side->module);
    if (rv != CKR_OK && rv != CKR_FUNCTION_NOT_SUPPORTED) {
        fail(w, "C_Verify of the first signature", rv);
        return 0;
    }
    return 1;
}

static unsigned long sign_worker(void *arg)
{
    struct worker *w = arg;
    unsigned char sig[SIG_BUF];
    unsigned long n = 0;
    long long prev, now;
    CK_ULONG siglen;
    CK_RV rv;
    int k;

    for (k = 0; k < n_sides && side_setup(w, k); k++)
        ;
    bench_ready();
    if (k < n_sides)
        return 0;
    prev = n_sides > 1 ? bench_now_ns() : 0;
    while (bench_running()) {
        /* the side whose turn it is: the same in every thread */
        k = n_sides > 1 ? (int)((prev / slice_ns) % n_sides) : 0;
        rv = sign_once(sides[k].p11, w->s[k], w->key[k], sig, &siglen);
        if (rv != CKR_OK) {
            fprintf(stderr, "ctok-bench-p11: %s: signature %lu:\n", sides[k].module, n + 1);
            fail(w, "C_SignInit/C_Sign", rv);
            break;
        }
        n++;
        w->n[k]++;
        if (n_sides > 1) {
            now = bench_now_ns();
            w->ns[k] += now - prev;
            prev = now;
        }
    }
    /* The sessions (and the session copies with them) stay open until the process ends, so
     * that closing one thread's session cannot disturb the others while they still run. */
    return n;
}

/* ---- main ---------------------------------------------------------------------------- */

/* A --versus SPEC: module=PATH,token=LABEL[,copy=session|shared] (SPEC is argv's, kept). */
static int parse_versus(char *spec, struct side *side)
{
    char *save = NULL;

    side->module = DEFAULT_MODULE;
    side->token = NULL;
    side->copy_mode = COPY_NONE;
    for (char *kv = strtok_r(spec, ",", &save); kv != NULL; kv = strtok_r(NULL, ",", &save)) {
        if (strncmp(kv, "module=", 7) == 0)
            side->module = kv + 7;
        else if (strncmp(kv, "token=", 6) == 0)
            side->token = kv + 6;
        else if (strcmp(kv, "copy=session") == 0)
            side->copy_mode = COPY_PER_THREAD;
        else if (strcmp(kv, "copy=shared") == 0)
            side->copy_mode = COPY_SHARED;
        else if (strcmp(kv, "copy=none") != 0)
            return 0;
    }
    return side->token != NULL && *side->token != '\0' && *side->module != '\0';
}

/* A side ready to sign on: its module initialized, its token's slot, a login (the main
 * session stays open for the whole run: it holds the login and the shared copy), the key
 * and, when there is exactly one, its public key. */
static void side_open(struct side *side, const char *pin_spec, const char *label,
                      const char *mech_name)
{
    CK_FUNCTION_LIST_PTR p11;
    CK_SESSION_HANDLE main_s;
    CK_ULONG found;
    CK_KEY_TYPE kt = 0;
    CK_ATTRIBUTE kt_attr = {CKA_KEY_TYPE, &kt, sizeof(kt)};
    char *pin;
    CK_RV rv;

    load_module(side);
    p11 = side->p11;
    side->slot = find_token(p11, side->token);
    rv = p11->C_OpenSession(side->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &main_s);
    if (rv != CKR_OK)
        die_rv("C_OpenSession", rv);
    pin = read_pin(pin_spec);
    rv = p11->C_Login(main_s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    memset(pin, 0, strlen(pin));
    free(pin);
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
        die_rv("C_Login(CKU_USER)", rv);

    side->key = find_object(p11, main_s, CKO_PRIVATE_KEY, label, &found);
    if (found == 0) {
        fprintf(stderr, "ctok-bench-p11: no private key labelled '%s' on token '%s'\n", label,
                side->token);
        exit(1);
    }
    if (found > 1)
        fprintf(stderr,
                "ctok-bench-p11: warning: several private keys labelled '%s' on token '%s'; "
                "using the first\n",
                label, side->token);
    rv = p11->C_GetAttributeValue(main_s, side->key, &kt_attr, 1);
    if (rv != CKR_OK)
        die_rv("C_GetAttributeValue(CKA_KEY_TYPE)", rv);
    if ((mech == MECH_ECDSA) != (kt == CKK_EC)) {
        fprintf(stderr, "ctok-bench-p11: --mech %s does not fit the key '%s' (CKK 0x%lx)\n",
                mech_name, label, (unsigned long)kt);
        exit(2);
    }
    side->pub_key = find_object(p11, main_s, CKO_PUBLIC_KEY, label, &found);
    if (found != 1) {
        fprintf(stderr,
                "ctok-bench-p11: note: %s public key labelled '%s' on token '%s'; the first "
                "signature is not verified\n",
                found ? "more than one" : "no", label, side->token);
        side->pub_key = CK_INVALID_HANDLE;
    }
    if (side->copy_mode == COPY_SHARED)
        side->key = session_copy(p11, main_s, side->key);
}

/* One line per side: its signatures over the time spent on them, summed over threads. */
static void print_sides(const struct worker *workers, int nthreads)
{
    for (int k = 0; k < n_sides; k++) {
        unsigned long sigs = 0;
        double rate = 0, secs = 0;

        for (int t = 0; t < nthreads; t++) {
            sigs += workers[t].n[k];
            secs += (double)workers[t].ns[k] / 1e9 / nthreads;
            if (workers[t].ns[k] > 0)
                rate += (double)workers[t].n[k] * 1e9 / (double)workers[t].ns[k];
        }
        printf("side=%d ops_per_sec=%.1f sigs=%lu seconds=%.3f\n", k, rate, sigs, secs);
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *pin_spec = NULL, *label = NULL, *mech_name = NULL;
    int nthreads = 1, i;
    double seconds = 2.0;
    struct worker *workers;
    void **args;
    int rc;

    sides[0].module = DEFAULT_MODULE;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--session-copy") == 0) {
            sides[0].copy_mode = COPY_PER_THREAD;
            continue;
        }
        if (strcmp(a, "--shared-copy") == 0) {
            sides[0].copy_mode = COPY_SHARED;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "ctok-bench-p11: %s needs a value\n", a);
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--module") == 0) {
            sides[0].module = v;
        } else if (strcmp(a, "--token") == 0) {
            sides[0].token = v;
        } else if (strcmp(a, "--pin") == 0) {
            pin_spec = v;
        } else if (strcmp(a, "--label") == 0) {
            label = v;
        } else if (strcmp(a, "--mech") == 0) {
            mech_name = v;
        } else if (strcmp(a, "--threads") == 0) {
            nthreads = atoi(v);
        } else if (strcmp(a, "--seconds") == 0) {
            seconds = strtod(v, NULL);
        } else if (strcmp(a, "--slice-ms") == 0) {
            slice_ns = (long long)(strtod(v, NULL) * 1e6);
        } else if (strcmp(a, "--versus") == 0) {
            if (n_sides == MAX_SIDES || !parse_versus(v, &sides[n_sides])) {
                fprintf(stderr,
                        "ctok-bench-p11: bad --versus (at most %d; "
                        "module=PATH,token=LABEL[,copy=session|shared])\n",
                        MAX_SIDES - 1);
                return 2;
            }
            n_sides++;
        } else {
            fprintf(stderr, "ctok-bench-p11: unknown argument %s\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (sides[0].token == NULL || pin_spec == NULL || label == NULL || mech_name == NULL) {
        usage(stderr);
        return 2;
    }
    for (i = 0; i < (int)(sizeof(mech_names) / sizeof(mech_names[0])); i++)
        if (strcmp(mech_name, mech_names[i].name) == 0)
            break;
    if (i == (int)(sizeof(mech_names) / sizeof(mech_names[0]))) {
        fprintf(stderr, "ctok-bench-p11: unknown --mech %s\n", mech_name);
        return 2;
    }
    mech = mech_names[i].mech;
    if (nthreads < 1 || nthreads > MAX_THREADS || !(seconds > 0) || slice_ns < 1000000) {
        fprintf(stderr, "ctok-bench-p11: bad --threads, --seconds or --slice-ms (at least 1)\n");
        return 2;
    }

    switch (mech) {
    case MECH_ECDSA:
        mechanism = (CK_MECHANISM){CKM_ECDSA, NULL, 0};
        memcpy(tbs, digest, DIGEST_LEN);
        tbs_len = DIGEST_LEN;
        break;
    case MECH_RSA_PKCS1:
        mechanism = (CK_MECHANISM){CKM_RSA_PKCS, NULL, 0};
        memcpy(tbs, sha256_prefix, sizeof(sha256_prefix));
        memcpy(tbs + sizeof(sha256_prefix), digest, DIGEST_LEN);
        tbs_len = sizeof(sha256_prefix) + DIGEST_LEN;
        break;
    case MECH_RSA_PSS:
        mechanism = (CK_MECHANISM){CKM_RSA_PKCS_PSS, &pss_params, sizeof(pss_params)};
        memcpy(tbs, digest, DIGEST_LEN);
        tbs_len = DIGEST_LEN;
        break;
    }

    for (i = 0; i < n_sides; i++)
        side_open(&sides[i], pin_spec, label, mech_name);

    workers = calloc((size_t)nthreads, sizeof(*workers));
    args = calloc((size_t)nthreads, sizeof(*args));
    if (workers == NULL || args == NULL) {
        perror("calloc");
        return 1;
    }
    for (i = 0; i < nthreads; i++) {
        workers[i].index = i;
        args[i] = &workers[i];
    }
    /* each thread opens its sessions, makes its copies and checks a first signature on
     * every side before the clock starts */
    rc = bench_run("ctok-bench-p11", nthreads, seconds, sign_worker, args);
    if (rc == 0 && n_sides > 1)
        print_sides(workers, nthreads);
    fflush(NULL);
    /* No C_Finalize, and no exit handlers: SoftHSM 2.6 can crash in its static destructors
     * at exit (after OpenSSL's own atexit cleanup). The sessions end with the process. */
    _exit(rc);
}

/* ctok-p11shim-driver: drives a PKCS#11 module (the shim) the way test_shim.py needs, through
 * the plain function list; every result is printed as key=value lines.
 *
 *   info   MODULE                                   list_version, cryptoki_version
 *   sign   MODULE TOKEN PIN THREADS COUNT RETRIES   COUNT signatures over THREADS threads; an
 *          operation failing with a connection error finalizes and re-initializes the module
 *          (once for all threads), logs in again and is retried up to RETRIES times
 *   unlock MODULE TOKEN PUK NEW_PIN                 C_UnlockPIN, then C_Login with NEW_PIN
 *   fork   MODULE TOKEN PIN                         a child signs after its own C_Initialize
 *
 * TOKEN is the token label as the module reports it; the key is the token's first private key.
 * Exit status 0 when every step succeeded. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "ckr.h"

static void *g_dl;
static CK_FUNCTION_LIST_PTR f;
static const char *g_token, *g_pin;

static const char *name(CK_RV rv)
{
    static __thread char buf[SHIM_CKR_BUFLEN];
    return shim_ckr_name(rv, buf);
}

static CK_RV initialize(void)
{
    CK_C_INITIALIZE_ARGS args;

    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    return f->C_Initialize(&args);
}

static CK_RV find_slot(CK_SLOT_ID *slot)
{
    CK_SLOT_ID ids[64];
    CK_ULONG n = 64;
    CK_RV rv = f->C_GetSlotList(CK_TRUE, ids, &n);

    for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++) {
        CK_TOKEN_INFO ti;
        size_t len = strlen(g_token);
        if (f->C_GetTokenInfo(ids[i], &ti) != CKR_OK || len > sizeof(ti.label))
            continue;
        if (memcmp(ti.label, g_token, len) == 0 &&
            (len == sizeof(ti.label) || ti.label[len] == ' ')) {
            *slot = ids[i];
            return CKR_OK;
        }
    }
    return rv == CKR_OK ? CKR_TOKEN_NOT_PRESENT : rv;
}

static CK_RV find_key(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *key, CK_MECHANISM_TYPE *mech)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl = {CKA_CLASS, &cls, sizeof(cls)};
    CK_KEY_TYPE type;
    CK_ATTRIBUTE ta = {CKA_KEY_TYPE, &type, sizeof(type)};
    CK_ULONG n = 0;
    CK_RV rv = f->C_FindObjectsInit(s, &tmpl, 1);

    if (rv != CKR_OK)
        return rv;
    rv = f->C_FindObjects(s, key, 1, &n);
    f->C_FindObjectsFinal(s);
    if (rv == CKR_OK && n == 0)
        rv = CKR_KEY_HANDLE_INVALID;
    if (rv == CKR_OK)
        rv = f->C_GetAttributeValue(s, *key, &ta, 1);
    if (rv == CKR_OK)
        *mech = type == CKK_RSA ? CKM_RSA_PKCS : type == CKK_EC ? CKM_ECDSA : CKM_EDDSA;
    return rv;
}

static CK_RV sign_once(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_MECHANISM_TYPE mech)
{
    CK_MECHANISM m = {mech, NULL, 0};
    CK_BYTE data[32], sig[1024];
    CK_ULONG len = sizeof(sig);
    CK_RV rv;

    memset(data, 0x5a, sizeof(data));
    rv = f->C_SignInit(s, &m, key);
    if (rv == CKR_OK)
        rv = f->C_Sign(s, data, sizeof(data), sig, &len);
    return rv;
}

static int load(const char *path)
{
    CK_C_GetFunctionList get;

    g_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!g_dl) {
        fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
        return 0;
    }
    get = (CK_C_GetFunctionList)dlsym(g_dl, "C_GetFunctionList");
    if (!get || get(&f) != CKR_OK) {
        fprintf(stderr, "%s: no C_GetFunctionList\n", path);
        return 0;
    }
    return 1;
}

/* ---- info ---- */

static int cmd_info(void)
{
    CK_INFO info;
    CK_RV rv;

    printf("list_version=%u.%u\n", f->version.major, f->version.minor);
    rv = initialize();
    if (rv == CKR_OK)
        rv = f->C_GetInfo(&info);
    if (rv != CKR_OK) {
        printf("error=%s\n", name(rv));
        return 1;
    }
    printf("cryptoki_version=%u.%u\n", info.cryptokiVersion.major, info.cryptokiVersion.minor);
    f->C_Finalize(NULL);
    return 0;
}

/* ---- sign ---- */

/* Signers hold the lock shared while they use the module; reconnecting holds it exclusively,
 * so C_Finalize never runs under a thread's feet. gen counts connections. */
static pthread_rwlock_t g_conn;
static unsigned long g_gen, g_reinit;
static CK_SLOT_ID g_slot;
static CK_SESSION_HANDLE g_anchor; /* keeps the login alive while sessions come and go */
static CK_RV g_stale = CKR_OK;     /* the first old session handle, after the first reconnect */
static pthread_mutex_t g_stats = PTHREAD_MUTEX_INITIALIZER;
static unsigned long g_signed, g_failed;
static CK_RV g_last_error = CKR_OK;
static int g_retries;

static int connection_error(CK_RV rv)
{
    return rv == CKR_DEVICE_ERROR || rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT ||
           rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
           rv == CKR_CRYPTOKI_NOT_INITIALIZED;
}

static CK_RV connect_token(void)
{
    CK_RV rv = find_slot(&g_slot);

    if (rv == CKR_OK)
        rv = f->C_OpenSession(g_slot, CKF_SERIAL_SESSION, NULL, NULL, &g_anchor);
    if (rv == CKR_OK)
        rv = f->C_Login(g_anchor, CKU_USER, (CK_UTF8CHAR_PTR)g_pin, strlen(g_pin));
    return rv;
}

static CK_RV reconnect(unsigned long seen_gen)
{
    CK_RV rv = CKR_OK;

    pthread_rwlock_wrlock(&g_conn);
    if (g_gen == seen_gen) {
        CK_SESSION_HANDLE old = g_anchor;
        f->C_Finalize(NULL);
        rv = initialize();
        if (rv == CKR_OK && g_reinit == 0) {
            CK_SESSION_INFO si;
            g_stale = f->C_GetSessionInfo(old, &si);
        }
        if (rv == CKR_OK)
            rv = connect_token();
        g_gen++;
        g_reinit++;
    }
    pthread_rwlock_unlock(&g_conn);
    return rv;
}

struct worker {
    pthread_t thread;
    unsigned long count;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    CK_SESSION_HANDLE s = 0;
    CK_OBJECT_HANDLE key = 0;
    CK_MECHANISM_TYPE mech = 0;
    unsigned long my_gen = 0; /* 0: no session yet */

    for (unsigned long i = 0; i < w->count; i++) {
        CK_RV rv;
        int tries = 0;
        for (;;) {
            unsigned long gen;
            pthread_rwlock_rdlock(&g_conn);
            gen = g_gen;
            rv = CKR_OK;
            if (my_gen != gen) {
                rv = f->C_OpenSession(g_slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
                if (rv == CKR_OK)
                    rv = find_key(s, &key, &mech);
                if (rv == CKR_OK)
                    my_gen = gen;
            }
            if (rv == CKR_OK)
                rv = sign_once(s, key, mech);
            pthread_rwlock_unlock(&g_conn);
            if (rv == CKR_OK || !connection_error(rv) || tries++ >= g_retries)
                break;
            reconnect(gen);
        }
        pthread_mutex_lock(&g_stats);
        if (rv == CKR_OK) {
            g_signed++;
        } else {
            g_failed++;
            g_last_error = rv;
        }
        pthread_mutex_unlock(&g_stats);
        if (rv != CKR_OK)
            break;
    }
    return NULL;
}

static int cmd_sign(int threads, unsigned long count)
{
    struct worker w[64];
    pthread_rwlockattr_t attr;
    CK_SLOT_ID ids[64];
    CK_ULONG n = 64;
    CK_INFO info;
    CK_RV rv;

    if (threads < 1 || threads > 64)
        return 2;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&g_conn, &attr);
    pthread_rwlockattr_destroy(&attr);
    rv = initialize();
    if (rv == CKR_OK)
        rv = connect_token();
    if (rv != CKR_OK) {
        printf("error=%s\n", name(rv));
        return 1;
    }
    g_gen = 1;
    for (int i = 0; i < threads; i++) {
        w[i].count = count / (unsigned long)threads +
                     ((unsigned long)i < count % (unsigned long)threads ? 1 : 0);
        pthread_create(&w[i].thread, NULL, work, &w[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(w[i].thread, NULL);
    printf("signed=%lu\nfailed=%lu\nreinit=%lu\nlast_error=%s\n", g_signed, g_failed, g_reinit,
           name(g_last_error));
    if (g_reinit)
        printf("stale_session=%s\n", name(g_stale));
    printf("probe_slotlist=%s\n", name(f->C_GetSlotList(CK_TRUE, ids, &n)));
    printf("probe_info=%s\n", name(f->C_GetInfo(&info)));
    f->C_Finalize(NULL);
    pthread_rwlock_destroy(&g_conn);
    return g_failed == 0 && g_signed == count ? 0 : 1;
}

/* ---- unlock ---- */

static int cmd_unlock(const char *puk, const char *new_pin)
{
    typedef CK_RV (*unlock_fn)(CK_SESSION_HANDLE, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR,
                               CK_ULONG);
    unlock_fn unlock = (unlock_fn)dlsym(g_dl, "C_UnlockPIN");
    CK_SESSION_HANDLE s;
    CK_SLOT_ID slot;
    CK_RV rv;

    if (!unlock) {
        printf("C_UnlockPIN=absent\n");
        return 1;
    }
    rv = initialize();
    if (rv == CKR_OK)
        rv = find_slot(&slot);
    if (rv == CKR_OK)
        rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
    if (rv != CKR_OK) {
        printf("error=%s\n", name(rv));
        return 1;
    }
    rv = unlock(s, (CK_UTF8CHAR_PTR)puk, strlen(puk), (CK_UTF8CHAR_PTR)new_pin, strlen(new_pin));
    printf("C_UnlockPIN=%s\n", name(rv));
    if (rv == CKR_OK) {
        rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)new_pin, strlen(new_pin));
        printf("login_new_pin=%s\n", name(rv));
        if (rv == CKR_OK)
            f->C_Logout(s);
    }
    f->C_CloseSession(s);
    f->C_Finalize(NULL);
    return rv == CKR_OK ? 0 : 1;
}

/* ---- fork ---- */

static CK_RV login_and_sign(CK_SESSION_HANDLE *s)
{
    CK_OBJECT_HANDLE key;
    CK_MECHANISM_TYPE mech;
    CK_SLOT_ID slot;
    CK_RV rv = find_slot(&slot);

    if (rv == CKR_OK)
        rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, s);
    if (rv == CKR_OK)
        rv = f->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)g_pin, strlen(g_pin));
    if (rv == CKR_OK)
        rv = find_key(*s, &key, &mech);
    if (rv == CKR_OK)
        rv = sign_once(*s, key, mech);
    return rv;
}

static int cmd_fork(void)
{
    CK_SESSION_HANDLE s, cs;
    CK_OBJECT_HANDLE key = 0;
    CK_MECHANISM_TYPE mech = 0;
    CK_RV rv = initialize();
    int status, ok = 1;
    pid_t pid;

    if (rv == CKR_OK)
        rv = login_and_sign(&s);
    if (rv == CKR_OK)
        rv = find_key(s, &key, &mech);
    printf("parent_sign=%s\n", name(rv));
    fflush(stdout);
    if (rv != CKR_OK)
        return 1;
    /* Two children: one initializes straight away, one finalizes its copy first. */
    for (int finalize_first = 0; finalize_first < 2; finalize_first++) {
        pid = fork();
        if (pid == 0) {
            CK_RV inherited = sign_once(s, key, mech), fin = CKR_OK, init,
                  again = CKR_GENERAL_ERROR;
            if (finalize_first)
                fin = f->C_Finalize(NULL);
            init = initialize();
            if (init == CKR_OK)
                again = login_and_sign(&cs);
            printf("child%d_inherited=%s\n", finalize_first, name(inherited));
            if (finalize_first)
                printf("child%d_finalize=%s\n", finalize_first, name(fin));
            printf("child%d_init=%s\nchild%d_sign=%s\n", finalize_first, name(init), finalize_first,
                   name(again));
            fflush(stdout);
            f->C_Finalize(NULL);
            _exit(init == CKR_OK && again == CKR_OK ? 0 : 1);
        }
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            ok = 0;
    }
    rv = sign_once(s, key, mech);
    printf("parent_after=%s\n", name(rv));
    f->C_Finalize(NULL);
    return rv == CKR_OK && ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    int ret = 2;

    if (argc < 3 || !load(argv[2])) {
        fprintf(stderr, "usage: see the comment at the top of shim_driver.c\n");
        return 2;
    }
    if (strcmp(argv[1], "info") == 0 && argc == 3) {
        ret = cmd_info();
    } else if (strcmp(argv[1], "sign") == 0 && argc == 8) {
        g_token = argv[3];
        g_pin = argv[4];
        g_retries = atoi(argv[7]);
        ret = cmd_sign(atoi(argv[5]), strtoul(argv[6], NULL, 10));
    } else if (strcmp(argv[1], "unlock") == 0 && argc == 6) {
        g_token = argv[3];
        ret = cmd_unlock(argv[4], argv[5]);
    } else if (strcmp(argv[1], "fork") == 0 && argc == 5) {
        g_token = argv[3];
        g_pin = argv[4];
        ret = cmd_fork();
    } else {
        fprintf(stderr, "usage: see the comment at the top of shim_driver.c\n");
    }
    /* The module stays loaded: unloading SoftHSM before exit is what crashes it. */
    return ret;
}

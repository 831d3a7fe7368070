/* PKCS#11 modules: loading, initialization, re-initialization after fork and failures. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <unistd.h>

#include "p11.h"

/* Cryptoki 3.0 interface discovery; p11-kit 0.24's header predates it. */
struct ck3_interface {
    CK_UTF8CHAR *name;
    void *function_list;
    CK_FLAGS flags;
};
typedef CK_RV (*ck3_get_interface_fn)(CK_UTF8CHAR *name, CK_VERSION *version,
                                      struct ck3_interface **iface, CK_FLAGS flags);

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static struct p11_module **modules;
static size_t n_modules;
static int users; /* token contexts alive: the registry is freed with the last */

/* The bookkeeping only: the library stays loaded (see ctok_p11_registry_release). */
static void module_free(struct p11_module *m)
{
    pthread_rwlock_destroy(&m->rw);
    pthread_mutex_destroy(&m->lock);
    free(m->path);
    free(m);
}

void ctok_p11_registry_use(void)
{
    pthread_mutex_lock(&modules_lock);
    users++;
    pthread_mutex_unlock(&modules_lock);
}

/*
 * The last token context is gone: free the bookkeeping. Modules are neither finalized
 * nor unloaded: some crash when C_Finalize or dlclose runs during process teardown.
 */
void ctok_p11_registry_release(void)
{
    pthread_mutex_lock(&modules_lock);
    if (--users == 0) {
        for (size_t i = 0; i < n_modules; i++)
            module_free(modules[i]);
        free(modules);
        modules = NULL;
        n_modules = 0;
    }
    pthread_mutex_unlock(&modules_lock);
}

static const struct {
    CK_RV rv;
    const char *name;
} rv_names[] = {
#define RV(x)                                                                                      \
    {                                                                                              \
        x, #x                                                                                      \
    }
    RV(CKR_OK),
    RV(CKR_CANCEL),
    RV(CKR_HOST_MEMORY),
    RV(CKR_SLOT_ID_INVALID),
    RV(CKR_GENERAL_ERROR),
    RV(CKR_FUNCTION_FAILED),
    RV(CKR_ARGUMENTS_BAD),
    RV(CKR_ATTRIBUTE_READ_ONLY),
    RV(CKR_ATTRIBUTE_SENSITIVE),
    RV(CKR_ATTRIBUTE_TYPE_INVALID),
    RV(CKR_ATTRIBUTE_VALUE_INVALID),
    RV(CKR_DATA_INVALID),
    RV(CKR_DATA_LEN_RANGE),
    RV(CKR_DEVICE_ERROR),
    RV(CKR_DEVICE_MEMORY),
    RV(CKR_DEVICE_REMOVED),
    RV(CKR_ENCRYPTED_DATA_INVALID),
    RV(CKR_ENCRYPTED_DATA_LEN_RANGE),
    RV(CKR_FUNCTION_CANCELED),
    RV(CKR_FUNCTION_NOT_SUPPORTED),
    RV(CKR_KEY_HANDLE_INVALID),
    RV(CKR_KEY_SIZE_RANGE),
    RV(CKR_KEY_TYPE_INCONSISTENT),
    RV(CKR_KEY_FUNCTION_NOT_PERMITTED),
    RV(CKR_KEY_UNEXTRACTABLE),
    RV(CKR_MECHANISM_INVALID),
    RV(CKR_MECHANISM_PARAM_INVALID),
    RV(CKR_OBJECT_HANDLE_INVALID),
    RV(CKR_OPERATION_ACTIVE),
    RV(CKR_OPERATION_NOT_INITIALIZED),
    RV(CKR_PIN_INCORRECT),
    RV(CKR_PIN_INVALID),
    RV(CKR_PIN_LEN_RANGE),
    RV(CKR_PIN_EXPIRED),
    RV(CKR_PIN_LOCKED),
    RV(CKR_SESSION_CLOSED),
    RV(CKR_SESSION_COUNT),
    RV(CKR_SESSION_HANDLE_INVALID),
    RV(CKR_SESSION_READ_ONLY),
    RV(CKR_SESSION_EXISTS),
    RV(CKR_SIGNATURE_INVALID),
    RV(CKR_SIGNATURE_LEN_RANGE),
    RV(CKR_TEMPLATE_INCOMPLETE),
    RV(CKR_TEMPLATE_INCONSISTENT),
    RV(CKR_TOKEN_NOT_PRESENT),
    RV(CKR_TOKEN_NOT_RECOGNIZED),
    RV(CKR_TOKEN_WRITE_PROTECTED),
    RV(CKR_USER_ALREADY_LOGGED_IN),
    RV(CKR_USER_NOT_LOGGED_IN),
    RV(CKR_USER_PIN_NOT_INITIALIZED),
    RV(CKR_USER_TYPE_INVALID),
    RV(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    RV(CKR_BUFFER_TOO_SMALL),
    RV(CKR_CRYPTOKI_NOT_INITIALIZED),
    RV(CKR_CRYPTOKI_ALREADY_INITIALIZED),
#undef RV
};

const char *ctok_p11_rv_name(CK_RV rv)
{
    static __thread char buf[24];

    for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
        if (rv_names[i].rv == rv)
            return rv_names[i].name;
    snprintf(buf, sizeof(buf), "CKR_0x%08lx", (unsigned long)rv);
    return buf;
}

int ctok_p11_rv_is_disconnect(CK_RV rv)
{
    switch (rv) {
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
        return 1;
    }
    return 0;
}

/* The last traced call of this thread that failed: errors name the call, not the step. */
static __thread const char *last_failed;
static __thread CK_RV last_rv;

CK_RV ctok_p11_trace(const char *fn, CK_RV rv)
{
    if (rv != CKR_OK) {
        last_failed = fn;
        last_rv = rv;
        if (ctok_debug_on)
            ctok_debug("pkcs11: %s -> %s", fn, ctok_p11_rv_name(rv));
    }
    return rv;
}

const char *ctok_p11_last_failed(const char *otherwise, CK_RV *rv)
{
    if (rv != NULL)
        *rv = last_failed != NULL ? last_rv : CKR_OK;
    return last_failed != NULL ? last_failed : otherwise;
}

void ctok_p11_forget_failed(void)
{
    last_failed = NULL;
}

void ctok_p11_whoami(char *out, size_t len)
{
    struct passwd pw, *r = NULL;
    char buf[1024];

    getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &r);
    snprintf(out, len, "this process runs as uid %u (%s)", (unsigned)geteuid(),
             r != NULL ? r->pw_name : "?");
}

static int load(struct p11_module *m)
{
    ck3_get_interface_fn get_iface;
    CK_C_GetFunctionList get_list;
    struct ck3_interface *iface = NULL;

    m->dl = dlopen(m->path, RTLD_NOW | RTLD_LOCAL);
    if (m->dl == NULL) {
        CTOK_ERR(CTOK_R_BACKEND, "PKCS#11 library '%s' cannot be loaded: %s", m->path, dlerror());
        return 0;
    }
    /* Cryptoki 3.x modules: the interface's function list starts as the 2.x one */
    get_iface = (ck3_get_interface_fn)dlsym(m->dl, "C_GetInterface");
    if (get_iface != NULL && get_iface((CK_UTF8CHAR *)"PKCS 11", NULL, &iface, 0) == CKR_OK &&
        iface != NULL && iface->function_list != NULL) {
        m->f = iface->function_list;
    } else {
        get_list = (CK_C_GetFunctionList)dlsym(m->dl, "C_GetFunctionList");
        if (get_list == NULL || get_list(&m->f) != CKR_OK || m->f == NULL) {
            CTOK_ERR(CTOK_R_BACKEND, "'%s' is not a PKCS#11 library (no C_GetFunctionList)",
                     m->path);
            return 0;
        }
    }
    /* only the major version counts: a module that says 2.11 speaks 2.x */
    if (m->f->version.major < 2) {
        CTOK_ERR(CTOK_R_BACKEND,
                 "PKCS#11 library '%s' implements Cryptoki %u.%u; 2.x or 3.x "
                 "is needed",
                 m->path, m->f->version.major, m->f->version.minor);
        return 0;
    }
    m->unlock_pin = (CK_RV(*)(CK_SESSION_HANDLE, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR,
                              CK_ULONG))dlsym(m->dl, "C_UnlockPIN");
    return 1;
}

/* Lock held. */
static int initialize(struct p11_module *m)
{
    CK_C_INITIALIZE_ARGS args;
    CK_RV rv;

    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    rv = P11_CALL(m, C_Initialize, (&args));
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        char who[96];

        ctok_p11_whoami(who, sizeof(who));
        CTOK_ERR(CTOK_R_BACKEND,
                 "PKCS#11 library '%s': C_Initialize failed: %s (%s: the "
                 "module's configuration and token storage must be readable by it)",
                 m->path, ctok_p11_rv_name(rv), who);
        return 0;
    }
    rv = P11_CALL(m, C_GetInfo, (&m->info));
    if (rv != CKR_OK)
        memset(&m->info, 0, sizeof(m->info));
    __atomic_store_n(&m->pid, ctok_self_pid(), __ATOMIC_RELEASE);
    __atomic_store_n(&m->initialized, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&m->generation, 1, __ATOMIC_RELEASE); /* read unlocked by reinit */
    CTOK_DBG("pkcs11: %s initialized (Cryptoki %u.%u, generation %u)", m->path,
             m->info.cryptokiVersion.major, m->info.cryptokiVersion.minor, m->generation);
    return 1;
}

/* Writers first: a re-initialization must not wait while signers keep coming. */
static void rwlock_init(pthread_rwlock_t *rw)
{
    pthread_rwlockattr_t a;

    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(rw, &a);
    pthread_rwlockattr_destroy(&a);
}

/* where p11-kit's registered modules are described; /etc overrides /usr/share. The fuzz build
 * names a folder that does not exist: what a fuzzer feeds ctok loads no module of the machine */
#ifndef CTOK_P11_MODULE_DIRS
#define CTOK_P11_MODULE_DIRS "/etc/pkcs11/modules", "/usr/share/p11-kit/modules"
#endif
static const char *module_dirs[] = {CTOK_P11_MODULE_DIRS};

/*
 * A library named without a path is a module registered with p11-kit (seed 000: "PKCS#11
 * library configured as available"): <name>.module in p11-kit's module directories, whose
 * "module:" line gives the library, relative to p11-kit's module path.
 */
static char *registered_module(const char *name)
{
    char file[512], line[512], *path = NULL;

    for (size_t i = 0; path == NULL && i < sizeof(module_dirs) / sizeof(module_dirs[0]); i++) {
        FILE *f;

        snprintf(file, sizeof(file), "%s/%s.module", module_dirs[i], name);
        if ((f = fopen(file, "r")) == NULL)
            continue;
        while (path == NULL && fgets(line, sizeof(line), f) != NULL) {
            char *v = line;

            if (strncmp(v, "module:", 7) != 0)
                continue;
            v += 7;
            v += strspn(v, " \t");
            v[strcspn(v, " \t\r\n")] = '\0';
            if (*v == '/')
                path = strdup(v);
            else if (asprintf(&path, "%s/%s", CTOK_P11_MODULE_PATH, v) < 0)
                path = NULL;
        }
        fclose(f);
    }
    return path;
}

static struct p11_module *module_get(const char *path);

json_t *ctok_p11_registered_modules(void)
{
    json_t *list = json_array();

    for (size_t i = 0; i < sizeof(module_dirs) / sizeof(module_dirs[0]); i++) {
        DIR *d = opendir(module_dirs[i]);
        struct dirent *e;

        while (d != NULL && (e = readdir(d)) != NULL) {
            size_t n = strlen(e->d_name);
            char name[256], *path;
            size_t k;
            json_t *m;

            if (n <= 7 || n - 7 >= sizeof(name) || strcmp(e->d_name + n - 7, ".module") != 0)
                continue;
            snprintf(name, sizeof(name), "%.*s", (int)(n - 7), e->d_name);
            json_array_foreach(list, k,
                               m) if (strcmp(json_string_value(json_object_get(m, "name")), name) ==
                                      0) break; /* /etc overrides /usr/share */
            if (k < json_array_size(list) || (path = registered_module(name)) == NULL)
                continue;
            json_array_append_new(list, json_pack("{s:s, s:s}", "name", name, "path", path));
            free(path);
        }
        if (d != NULL)
            closedir(d);
    }
    return list;
}

struct p11_module *ctok_p11_module_get(const char *library)
{
    char *resolved = strchr(library, '/') == NULL ? registered_module(library) : NULL;
    struct p11_module *m = module_get(resolved != NULL ? resolved : library);

    free(resolved);
    return m;
}

/*
 * fork(): the registry is held across it so the child's copy is whole, and fork() waits until
 * no thread is inside a call into a module (the gate below), so that no child inherits a
 * module mid-call, its own mutexes held by a thread the child does not have (one child in
 * 50 failed so under ASan). Threads that come to a module meanwhile wait at the gate: the
 * fork waits only for the calls in flight, however long they take (a C_Login on a PIN pad
 * holds fork() back until it returns). The child, the only thread of its process, makes
 * every module lock new and releases what the forking thread took; its first call into a
 * module re-initializes it (ctok_p11_enter). glibc drops the handlers when the library
 * holding this code is unloaded.
 *
 * Rules. A thread counted in (between gate_in and gate_out) waits for nothing but the module:
 * it is counted in after it holds the module's rw shared, never while waiting for it (a
 * re-initialization holds rw exclusively while the module's C_Initialize may load libraries
 * whose fork handlers glibc's fork holds off). A module's initialization and finalization
 * are not waited for, for that reason. And a thread may hold a lock of its own while it
 * waits at the gate (ctok-p11.so's module lock), so no fork handler of ctok takes such a lock
 * (p11mod/module.c: its child makes it new instead).
 *
 * Order: prepare handlers run in the reverse order of their registration, and a module's
 * own (registered when it is loaded, or in its C_Initialize) must run after ctok has waited
 * for the calls in flight, not before: one that took the module's own lock first would wait
 * for a thread that waits, inside the module, for that lock. So the same handlers are
 * registered again after a module is loaded and after its first C_Initialize (outside the
 * gate: glibc holds its handler lock through fork), and only the first of them to run for a
 * fork() — the per-thread depth — does the work.
 */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static unsigned long in_calls; /* threads counted in */
static int forking;            /* a fork() waits for in_calls to reach 0 */
static __thread unsigned int fork_depth;

/* The fast path is two atomic operations; a thread that finds a fork waiting steps back. */
static void gate_in(void)
{
    __atomic_add_fetch(&in_calls, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&forking, __ATOMIC_SEQ_CST))
        return;
    pthread_mutex_lock(&gate_lock);
    __atomic_sub_fetch(&in_calls, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&gate_cond);
    while (__atomic_load_n(&forking, __ATOMIC_SEQ_CST))
        pthread_cond_wait(&gate_cond, &gate_lock);
    __atomic_add_fetch(&in_calls, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&gate_lock);
}

static void gate_out(void)
{
    if (__atomic_sub_fetch(&in_calls, 1, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&forking, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&gate_lock);
        pthread_cond_broadcast(&gate_cond);
        pthread_mutex_unlock(&gate_lock);
    }
}

static void fork_prepare(void)
{
    if (fork_depth++ > 0)
        return;
    pthread_mutex_lock(&modules_lock);
    pthread_mutex_lock(&gate_lock); /* held across fork(): two forks take turns */
    __atomic_store_n(&forking, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&in_calls, __ATOMIC_SEQ_CST) > 0)
        pthread_cond_wait(&gate_cond, &gate_lock);
}

static void fork_parent(void)
{
    if (--fork_depth > 0)
        return;
    __atomic_store_n(&forking, 0, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    pthread_mutex_unlock(&modules_lock);
}

static void fork_child(void)
{
    if (--fork_depth > 0)
        return;
    for (size_t i = 0; i < n_modules; i++) {
        pthread_mutex_init(&modules[i]->lock, NULL);
        rwlock_init(&modules[i]->rw);
    }
    __atomic_store_n(&forking, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&in_calls, 0, __ATOMIC_SEQ_CST); /* the parent's other threads' */
    pthread_cond_init(&gate_cond, NULL);              /* their waits are not the child's */
    pthread_mutex_unlock(&gate_lock);                 /* this thread took both in fork_prepare */
    pthread_mutex_unlock(&modules_lock);
}

/* Registered once before any module loads, and again after a module's own fork handlers
 * (see fork_prepare): ctok's prepare handler then runs before them. */
static void fork_handlers(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* modules_lock held. */
static struct p11_module *registered(const char *path)
{
    for (size_t i = 0; i < n_modules; i++)
        if (strcmp(modules[i]->path, path) == 0)
            return modules[i];
    return NULL;
}

/*
 * The module of this path, loaded on first use. The library is loaded outside the registry
 * lock: a module's own fork handler (taken before ctok's, they run in reverse order of
 * registration) must never wait for the registry while a loading thread holds the registry
 * and waits for the module (TSan saw the cycle). Two threads loading one path at once: the
 * first registered wins, the other's bookkeeping goes (dlopen counts, the library stays).
 */
static struct p11_module *module_get(const char *path)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct p11_module *m, *fresh;

    pthread_once(&once, fork_handlers);
    pthread_mutex_lock(&modules_lock);
    m = registered(path);
    pthread_mutex_unlock(&modules_lock);
    if (m != NULL)
        goto end;
    fresh = calloc(1, sizeof(*fresh));
    if (fresh == NULL || (fresh->path = strdup(path)) == NULL) {
        free(fresh);
        return NULL;
    }
    pthread_mutex_init(&fresh->lock, NULL);
    rwlock_init(&fresh->rw);
    if (!load(fresh))
        fresh->f = NULL; /* kept, so that the failure is not retried on every use */
    else
        fork_handlers();
    pthread_mutex_lock(&modules_lock);
    if ((m = registered(path)) == NULL) {
        struct p11_module **nm = realloc(modules, (n_modules + 1) * sizeof(*nm));

        if (nm != NULL) {
            modules = nm;
            modules[n_modules++] = m = fresh;
            fresh = NULL;
        }
    }
    pthread_mutex_unlock(&modules_lock);
    if (fresh != NULL)
        module_free(fresh);
end:
    if (m != NULL && m->f == NULL) {
        CTOK_ERR(CTOK_R_BACKEND, "PKCS#11 library '%s' is not usable", path);
        return NULL;
    }
    return m;
}

/* Initialized, and by this process: a forked child's module still holds its parent's state. */
static int ready(struct p11_module *m)
{
    return __atomic_load_n(&m->initialized, __ATOMIC_ACQUIRE) &&
           __atomic_load_n(&m->pid, __ATOMIC_ACQUIRE) == ctok_self_pid();
}

int ctok_p11_enter(struct p11_module *m)
{
    int hook = 0;

    if (!ready(m)) {
        /*
         * Exclusively, so that of several threads of a forked child making their first
         * call at once (httpd's worker MPM) exactly one finalizes the parent's state and
         * initializes again; the others find it done. The child handler made the locks new.
         */
        pthread_rwlock_wrlock(&m->rw);
        pthread_mutex_lock(&m->lock);
        if (m->initialized && m->pid != ctok_self_pid()) {
            CTOK_DBG("pkcs11: fork detected, re-initializing %s", m->path);
            (void)P11_CALL(m, C_Finalize, (NULL));
            __atomic_store_n(&m->initialized, 0, __ATOMIC_RELEASE);
        }
        if (!m->initialized && initialize(m) && !m->fork_hooked)
            hook = m->fork_hooked = 1;
        pthread_mutex_unlock(&m->lock);
        pthread_rwlock_unlock(&m->rw);
        if (hook)
            fork_handlers(); /* after what the module's C_Initialize registered */
    }
    pthread_rwlock_rdlock(&m->rw);
    if (!m->initialized) {
        pthread_rwlock_unlock(&m->rw);
        return 0;
    }
    gate_in();
    return 1;
}

void ctok_p11_leave(struct p11_module *m)
{
    gate_out();
    pthread_rwlock_unlock(&m->rw);
}

int ctok_p11_module_reinit(struct p11_module *m, unsigned int seen_generation)
{
    int ok = 1;

    if (__atomic_load_n(&m->generation, __ATOMIC_ACQUIRE) != seen_generation)
        return 1;                  /* someone else already did */
    pthread_rwlock_wrlock(&m->rw); /* waits for every thread to leave the module */
    pthread_mutex_lock(&m->lock);
    /* another thread may have re-initialized it already since we saw the failure */
    if (m->generation == seen_generation || !m->initialized) {
        (void)P11_CALL(m, C_Finalize, (NULL));
        __atomic_store_n(&m->initialized, 0, __ATOMIC_RELEASE);
        ok = initialize(m);
    }
    pthread_mutex_unlock(&m->lock);
    pthread_rwlock_unlock(&m->rw);
    return ok;
}

/*
 * Threads through ctok-p11.so (tests/test_p11mod_api.py): each thread opens and closes
 * sessions, finds the key and signs, over and over, side by side with the others; the module
 * is initialized with OS locking, as Java and NSS do. Prints "ok=N failed=M first=0x..".
 *
 *   p11mod_threads MODULE LABEL THREADS ROUNDS   (the PIN on stdin; empty: a NULL PIN)
 *
 * With FORKS as a fifth argument, the main thread forks that many children while the threads
 * sign; each child initializes the module again and lists its slots within 30 seconds (a
 * module lock held by a parent's thread at fork() would hang it). Prints "forks_ok=N"; a
 * child that failed says why on stderr, a hung one with its stacks (wait_child).
 */
#include <signal.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST *f;
static const char *label;
static int rounds;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static long ok_count, failed_count;
static CK_RV first_failure;

static void count(CK_RV rv)
{
    pthread_mutex_lock(&count_lock);
    if (rv == CKR_OK) {
        ok_count++;
    } else {
        if (failed_count++ == 0)
            first_failure = rv;
    }
    pthread_mutex_unlock(&count_lock);
}

/* One round: a session of its own, the key by label, a signature, the session closed. */
static CK_RV round_trip(void)
{
    CK_SESSION_HANDLE s;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)},
                           {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE key;
    CK_ULONG n = 0, siglen;
    CK_MECHANISM mech = {CKM_ECDSA_SHA256, NULL, 0};
    CK_BYTE data[] = "signed by a thread", sig[256];
    CK_RV rv;

    if ((rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
        return rv;
    rv = f->C_FindObjectsInit(s, tmpl, 2);
    if (rv == CKR_OK)
        rv = f->C_FindObjects(s, &key, 1, &n);
    if (rv == CKR_OK)
        rv = f->C_FindObjectsFinal(s);
    if (rv == CKR_OK && n != 1)
        rv = CKR_KEY_HANDLE_INVALID;
    if (rv == CKR_OK)
        rv = f->C_SignInit(s, &mech, key);
    siglen = sizeof(sig);
    if (rv == CKR_OK)
        rv = f->C_Sign(s, data, sizeof(data) - 1, sig, &siglen);
    if (rv == CKR_OK && siglen != 64)
        rv = CKR_SIGNATURE_LEN_RANGE;
    f->C_CloseSession(s);
    return rv;
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < rounds; i++)
        count(round_trip());
    return NULL;
}

/* A child: the module anew, its slots listed. Says which call failed. */
static int child(void)
{
    CK_ULONG n = 0;
    CK_RV rv;

    if ((rv = f->C_Initialize(NULL)) != CKR_OK) {
        fprintf(stderr, "child: C_Initialize: 0x%lx\n", (unsigned long)rv);
        return 1;
    }
    if ((rv = f->C_GetSlotList(CK_TRUE, NULL, &n)) != CKR_OK || n == 0) {
        fprintf(stderr, "child: C_GetSlotList: 0x%lx, %lu slots\n", (unsigned long)rv, n);
        return 1;
    }
    f->C_Finalize(NULL);
    return 0;
}

static long slowest_ms; /* the slowest child that ended */

static long ms_since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/*
 * A child that has not ended within 30 seconds hangs: a child takes well under a second (0.3 s
 * at most seen under ASan beside the checked suite), a deadlock forever. Its stacks, when gdb
 * can attach, go to stderr between "stacks of hung child PID:" and "end of stacks", then it
 * is killed.
 */
static int wait_child(int i, pid_t pid)
{
    struct timespec t0;
    char cmd[160];
    long took;
    int st;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);

        if (r == pid)
            goto ended;
        if (r < 0) {
            perror("waitpid");
            return 0;
        }
        if (ms_since(&t0) >= 30000)
            break;
        usleep(2000);
    }
    fprintf(stderr, "child %d: hung for 30 s\nstacks of hung child %d:\n", i, (int)pid);
    fflush(stderr);
    snprintf(cmd, sizeof(cmd),
             "gdb -nx -batch -p %d -ex 'thread apply all bt' </dev/null 1>&2 2>/dev/null",
             (int)pid);
    if (system(cmd) != 0)
        fprintf(stderr, "(gdb could not attach)\n");
    fprintf(stderr, "end of stacks\n");
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return 0;
ended:
    if ((took = ms_since(&t0)) > slowest_ms)
        slowest_ms = took;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 1;
    if (WIFSIGNALED(st))
        fprintf(stderr, "child %d: killed by signal %d\n", i, WTERMSIG(st));
    else
        fprintf(stderr, "child %d: exit %d\n", i, WEXITSTATUS(st));
    return 0;
}

/* Forks children one after the other while the threads run; how many ended well. */
static int fork_children(int n)
{
    int ok = 0;

    for (int i = 0; i < n; i++) {
        pid_t pid = fork();

        if (pid == 0)
            _exit(child());
        if (pid < 0)
            perror("fork");
        else
            ok += wait_child(i, pid);
    }
    return ok;
}

int main(int argc, char **argv)
{
    CK_C_INITIALIZE_ARGS init = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
    CK_C_GetFunctionList get;
    CK_SESSION_HANDLE login_session;
    char pin[300] = "";
    size_t pinlen;
    void *dl;
    int nthreads;
    pthread_t *t;
    CK_RV rv;

    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s MODULE LABEL THREADS ROUNDS [FORKS]\n", argv[0]);
        return 2;
    }
    label = argv[2];
    nthreads = atoi(argv[3]);
    rounds = atoi(argv[4]);
    if ((dl = dlopen(argv[1], RTLD_NOW)) == NULL ||
        (get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList")) == NULL || get(&f) != CKR_OK)
        return 2;
    if (fgets(pin, sizeof(pin), stdin) == NULL)
        pin[0] = '\0';
    pin[strcspn(pin, "\n")] = '\0';
    pinlen = strlen(pin);
    if ((rv = f->C_Initialize(&init)) != CKR_OK ||
        (rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &login_session)) != CKR_OK ||
        (rv = f->C_Login(login_session, CKU_USER, pinlen ? (CK_UTF8CHAR *)pin : NULL, pinlen)) !=
            CKR_OK) {
        printf("setup=0x%lx\n", (unsigned long)rv);
        return 1;
    }
    memset(pin, 0, sizeof(pin));
    t = calloc((size_t)nthreads, sizeof(*t));
    for (int i = 0; i < nthreads; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    if (argc == 6) {
        int forks_ok = fork_children(atoi(argv[5]));

        printf("forks_ok=%d slowest_child_ms=%ld\n", forks_ok, slowest_ms);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    printf("ok=%ld failed=%ld first=0x%lx\n", ok_count, failed_count, (unsigned long)first_failure);
    f->C_Finalize(NULL);
    free(t);
    return failed_count == 0 ? 0 : 1;
}

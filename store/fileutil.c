/* File handling that must never lose data or leak secrets. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/*
 * The folders above a file ctok trusts must not let anyone else swap it: each one, up to /,
 * is owned by root or by us and writable by nobody else. Like sshd's StrictModes, except that
 * a root-owned sticky folder (/tmp) is accepted: there others cannot rename or delete what
 * is ours. Symbolic links in the folders are resolved first and the real folders checked.
 * reason is for a folder that is missing or unreadable.
 */
static int dirs_safe(const char *path, int reason, const char *what)
{
    const char *slash = strrchr(path, '/');
    char *dir =
        slash == NULL ? strdup(".") : strndup(path, slash == path ? 1 : (size_t)(slash - path));
    char *real = dir != NULL ? realpath(dir, NULL) : NULL;
    int ok = real != NULL;

    if (!ok)
        CTOK_ERR(reason, "%s '%s': its folder cannot be resolved: %s", what, path, strerror(errno));
    while (ok) {
        struct stat st;
        char *cut;

        if (stat(real, &st) != 0) {
            CTOK_ERR(reason, "%s '%s': folder '%s': %s", what, path, real, strerror(errno));
            ok = 0;
        } else if (st.st_uid != 0 && st.st_uid != geteuid()) {
            CTOK_ERR(CTOK_R_INSECURE_FILE,
                     "%s '%s': folder '%s' is owned by another user (uid %u); refusing it", what,
                     path, real, (unsigned)st.st_uid);
            ok = 0;
        } else if ((st.st_mode & (S_IWGRP | S_IWOTH)) &&
                   !(st.st_uid == 0 && (st.st_mode & S_ISVTX))) {
            CTOK_ERR(CTOK_R_INSECURE_FILE,
                     "%s '%s': folder '%s' is writable by others (mode %04o); refusing it", what,
                     path, real, (unsigned)(st.st_mode & 07777));
            ok = 0;
        }
        if (!ok || strcmp(real, "/") == 0)
            break;
        cut = strrchr(real, '/');
        cut[cut == real ? 1 : 0] = '\0';
    }
    free(dir);
    free(real);
    return ok;
}

/* The checks on what an open descriptor is: a regular file nobody else controls. */
static int fd_safe(int fd, const char *path, int secret, const char *what)
{
    struct stat st;

    if (fstat(fd, &st) != 0) {
        CTOK_ERR(CTOK_R_IO, "%s '%s': %s", what, path, strerror(errno));
        return 0;
    }
    if (!S_ISREG(st.st_mode)) {
        CTOK_ERR(CTOK_R_INSECURE_FILE, "%s '%s' is not a regular file; refusing it", what, path);
        return 0;
    }
    if (st.st_mode & (S_IWOTH | S_IWGRP)) {
        CTOK_ERR(CTOK_R_INSECURE_FILE, "%s '%s' is writable by others (mode %03o); refusing it",
                 what, path, (unsigned)(st.st_mode & 0777));
        return 0;
    }
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        CTOK_ERR(CTOK_R_INSECURE_FILE, "%s '%s' is owned by another user (uid %u); refusing it",
                 what, path, (unsigned)st.st_uid);
        return 0;
    }
    if (secret && st.st_mode & (S_IROTH | S_IRGRP)) {
        CTOK_ERR(CTOK_R_INSECURE_FILE,
                 "%s '%s' is readable by others (mode %03o); refusing it (chmod 600)", what, path,
                 (unsigned)(st.st_mode & 0777));
        return 0;
    }
    return 1;
}

int ctok_file_open(const char *path, int secret, int reason, const char *what)
{
    int fd;

    if (!dirs_safe(path, reason, what))
        return -1;
    /* O_NONBLOCK: a FIFO put in place of the file must not hang us before fstat sees it */
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 && errno == ELOOP) {
        CTOK_ERR(CTOK_R_INSECURE_FILE, "%s '%s' is a symbolic link; refusing it", what, path);
        return -1;
    }
    if (fd < 0) {
        CTOK_ERR(reason, "%s '%s': %s", what, path, strerror(errno));
        return -1;
    }
    if (!fd_safe(fd, path, secret, what)) {
        close(fd);
        return -1;
    }
    return fd;
}

#define MAX_FILE (16 * 1024 * 1024) /* configs, codes, keystores: far below this */

int ctok_file_read(const char *path, int secret, int reason, const char *what, uint8_t **data,
                   size_t *len)
{
    int fd = ctok_file_open(path, secret, reason, what);
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;

    if (fd < 0)
        return 0;
    for (;;) {
        ssize_t r;

        if (cap - n < 4096) {
            /* not realloc: a secret must not be left behind in a freed block */
            size_t ncap = cap ? cap * 2 : 8192;
            uint8_t *nb = ncap <= MAX_FILE ? OPENSSL_malloc(ncap + 1) : NULL;

            if (nb == NULL) {
                CTOK_ERR(CTOK_R_IO, "%s '%s' is too large", what, path);
                goto err;
            }
            if (n > 0)
                memcpy(nb, buf, n);
            OPENSSL_clear_free(buf, cap + 1);
            buf = nb;
            cap = ncap;
        }
        r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            CTOK_ERR(CTOK_R_IO, "%s '%s': %s", what, path, strerror(errno));
            goto err;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0; /* text readers may use it as a string */
    *data = buf;
    *len = n;
    return 1;
err:
    close(fd);
    OPENSSL_clear_free(buf, cap + 1);
    return 0;
}

void ctok_file_free(uint8_t *data, size_t len)
{
    OPENSSL_clear_free(data, len + 1);
}

/* The argument of a hook variable's value "<point>:<arg>" naming point, or NULL. */
static const char *point_arg(const char *value, const char *point, size_t n)
{
    return value != NULL && strncmp(value, point, n) == 0 && value[n] == ':' ? value + n + 1 : NULL;
}

/* The first pass at point waits in its thread alone (the others go on) until the test says
 * go: an ordering of threads that needs no timing. Bounded: a test that never says go ends. */
static void test_wait(const char *dir)
{
    static int waited;
    char path[4096];
    struct timespec tick = {0, 10 * 1000000L};
    int fd;

    if (__atomic_fetch_add(&waited, 1, __ATOMIC_RELAXED) > 0)
        return;
    snprintf(path, sizeof(path), "%s/reached", dir);
    if ((fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) >= 0)
        close(fd);
    snprintf(path, sizeof(path), "%s/go", dir);
    for (int i = 0; i < 6000 && access(path, F_OK) != 0; i++)
        nanosleep(&tick, NULL);
}

void ctok_test_point(const char *point)
{
    const char *stop = getenv("CTOK_TEST_STOP_AT");
    size_t n = strlen(point);
    const char *wait = point_arg(getenv("CTOK_TEST_WAIT_AT"), point, n);
    const char *delay = point_arg(getenv("CTOK_TEST_DELAY_AT"), point, n);
    static int passed;

    if (stop != NULL && strcmp(stop, point) == 0)
        raise(SIGSTOP);
    if (wait != NULL)
        test_wait(wait);
    /* <point>:<ms>: every pass but the process's first waits, so one thread runs ahead */
    if (delay != NULL && __atomic_fetch_add(&passed, 1, __ATOMIC_RELAXED) > 0) {
        long ms = strtol(delay, NULL, 10);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        if (ms > 0 && ms < 10000)
            nanosleep(&ts, NULL);
    }
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return 0;
        p += w;
        len -= (size_t)w;
    }
    return 1;
}

int ctok_file_write_atomic(const char *path, const uint8_t *data, size_t len, int mode)
{
    char *tmp = NULL, *dcopy = NULL;
    int fd = -1, dfd = -1, ok = 0, old = 0;
    size_t half = len / 2;
    struct stat st;

    /* a rewrite keeps the file what it was: its mode and owner; a link is not replaced */
    if (lstat(path, &st) == 0) {
        if (!S_ISREG(st.st_mode)) {
            CTOK_ERR(CTOK_R_INSECURE_FILE, "'%s' is %s; refusing to replace it", path,
                     S_ISLNK(st.st_mode) ? "a symbolic link" : "not a regular file");
            return 0;
        }
        old = 1;
    } else if (errno != ENOENT) {
        goto err;
    }
    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
        tmp = NULL;
        goto err;
    }
    fd = mkstemp(tmp);
    if (fd < 0 ||
        (old && (st.st_uid != geteuid() || st.st_gid != getegid()) &&
         fchown(fd, st.st_uid, st.st_gid) != 0) ||
        fchmod(fd, old ? st.st_mode & 07777 : (mode_t)mode) != 0)
        goto err;
    /* written in two halves so that the crash test can stop us in between */
    if (!write_all(fd, data, half))
        goto err;
    ctok_test_point("keystore-write");
    if (!write_all(fd, data + half, len - half) || fsync(fd) != 0)
        goto err;
    if (close(fd) != 0) {
        fd = -1;
        goto err;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto err;
    dcopy = strdup(path);
    if (dcopy != NULL && (dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY)) >= 0) {
        fsync(dfd);
        close(dfd);
    }
    ok = 1;
err:
    if (!ok) {
        CTOK_ERR(CTOK_R_IO, "cannot write '%s': %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        if (tmp != NULL)
            unlink(tmp);
    }
    free(tmp);
    free(dcopy);
    return ok;
}

/*
 * The lock file lives beside what it guards and is removed after use. Removing it is safe only
 * because the holder unlinks it before unlocking and every locker checks, once it holds the
 * lock, that the path still names the file it locked (fstat against lstat): one that waited on
 * a file its holder has since removed holds a lock nobody else can see, and tries again.
 */
int ctok_file_lock(const char *path)
{
    char *lp = NULL;
    int fd = -1;

    if (asprintf(&lp, "%s.lock", path) < 0)
        return -1;
    for (;;) {
        struct stat held, named;
        int gone;

        if ((fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
            goto fail;
        while (flock(fd, LOCK_EX) != 0)
            if (errno != EINTR)
                goto fail;
        if (fstat(fd, &held) != 0)
            goto fail;
        gone = lstat(lp, &named) != 0;
        if (gone && errno != ENOENT)
            goto fail;
        if (!gone && held.st_dev == named.st_dev && held.st_ino == named.st_ino)
            break;
        close(fd); /* removed or replaced by the holder we waited for: a dead lock, again */
    }
    free(lp);
    return fd;
fail:
    CTOK_ERR(CTOK_R_IO, "cannot lock '%s': %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(lp);
    return -1;
}

void ctok_file_unlock(const char *path, int fd)
{
    char *lp = NULL;

    if (fd < 0)
        return;
    /* unlinked while still held: nobody can lock this file after we let it go */
    if (asprintf(&lp, "%s.lock", path) >= 0) {
        unlink(lp);
        free(lp);
    }
    close(fd);
}

int ctok_file_create_exclusive(const char *path, const uint8_t *data, size_t len, int mode)
{
    char *tmp = NULL;
    int fd, r = -1;

    if (asprintf(&tmp, "%s.new.XXXXXX", path) < 0)
        return -1;
    fd = mkstemp(tmp);
    if (fd >= 0 && fchmod(fd, (mode_t)mode) == 0 && write_all(fd, data, len) && fsync(fd) == 0) {
        /* link() never replaces: of several creators one wins, the others read its file */
        if (link(tmp, path) == 0)
            r = 1;
        else if (errno == EEXIST)
            r = 0;
    }
    if (r < 0)
        CTOK_ERR(CTOK_R_IO, "cannot create '%s': %s", path, strerror(errno));
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(tmp);
    return r;
}

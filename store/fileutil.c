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
#include <unistd.h>

#include "internal.h"

int ctok_file_check(const char *path, int secret, const char *what)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        CTOK_ERR(secret ? CTOK_R_NO_CODE : CTOK_R_CONFIG, "%s '%s': %s", what, path,
                 strerror(errno));
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

int ctok_file_read(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;

    if (f == NULL)
        return 0;
    for (;;) {
        size_t r;

        if (cap - n < 4096) {
            uint8_t *nb = realloc(buf, cap ? cap * 2 : 8192);

            if (nb == NULL)
                goto err;
            buf = nb;
            cap = cap ? cap * 2 : 8192;
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(f))
        goto err;
    fclose(f);
    *data = buf;
    *len = n;
    return 1;
err:
    fclose(f);
    free(buf);
    return 0;
}

void ctok_test_point(const char *point)
{
    const char *stop = getenv("CTOK_TEST_STOP_AT");

    if (stop != NULL && strcmp(stop, point) == 0)
        raise(SIGSTOP);
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
    int fd = -1, dfd = -1, ok = 0;
    size_t half = len / 2;

    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
        tmp = NULL;
        goto err;
    }
    fd = mkstemp(tmp);
    if (fd < 0 || fchmod(fd, (mode_t)mode) != 0)
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

int ctok_file_lock(const char *path)
{
    char *lp = NULL;
    int fd;

    if (asprintf(&lp, "%s.lock", path) < 0)
        return -1;
    fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(lp);
    if (fd < 0) {
        CTOK_ERR(CTOK_R_IO, "cannot lock '%s': %s", path, strerror(errno));
        return -1;
    }
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            CTOK_ERR(CTOK_R_IO, "cannot lock '%s': %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    return fd;
}

void ctok_file_unlock(int fd)
{
    if (fd >= 0)
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

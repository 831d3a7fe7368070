/*
 * The file reader every config, auth file, keystore and certificate file goes through
 * (store/fileutil.c): ctok_file_read, with ctok_file_open's checks of the path's folders
 * (dirs_safe: the folder part cut at the last '/', resolved, each folder up to / owned by
 * root or us and not writable by others) and of the file (regular, not a link, mode, owner).
 *
 * The scratch directory holds: d/ (0700) with d/f, the file the input's content goes to;
 * w/ (0777: a folder others may write) with w/f; f; l -> d/f and ld -> d (links); p (a FIFO).
 * Input: byte 0: bit 0 secret, bit 1 the path is relative (the working directory is the
 * scratch directory while it is read) else absolute, bits 2-4 d/f's mode; byte 1: d/f holds the
 * content 1 + (byte 1 & 15) times over (past the reader's 8 KiB first buffer and its doublings);
 * then the path, to the first '\n' (a path that would climb above the scratch directory is
 * skipped); the rest is the content.
 *
 * Checked: what is read is the file's content, NUL-terminated; a file read is a regular file,
 * not a link, not in w/, writable by nobody else, not readable by others when secret; and a
 * path to d/f (any spelling, links in its folders included) with such a mode is read.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/err.h>

#include "fuzz_common.h"
#include "../../store/backend.h"

static const mode_t modes[8] = {0600, 0644, 0640, 0660, 0606, 0400, 0666, 0700};
static char base[PATH_MAX], df[PATH_MAX], wdir[PATH_MAX];
static uint8_t *content;
static size_t cap;
static int home; /* the working directory libFuzzer was started in */

static void at(char *out, const char *name)
{
    snprintf(out, PATH_MAX, "%s/%s", base, name);
}

static void remove_all(void)
{
    static const char *const files[] = {"d/f", "w/f", "f", "l", "ld", "p"};
    char p[PATH_MAX];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        at(p, files[i]);
        unlink(p);
    }
    at(p, "d");
    rmdir(p);
    rmdir(wdir);
}

void fuzz_init(void)
{
    char p[PATH_MAX], q[PATH_MAX];

    if (realpath(fuzz_dir(), base) == NULL)
        fuzz_die("the scratch directory");
    atexit(remove_all); /* runs before fuzz_common's, which removes the directory */
    at(p, "d");
    at(wdir, "w");
    at(df, "d/f");
    if (mkdir(p, 0700) != 0 || mkdir(wdir, 0700) != 0 || chmod(wdir, 0777) != 0)
        fuzz_die("the folders");
    fuzz_write(df, (const uint8_t *)"d", 1);
    at(p, "w/f");
    fuzz_write(p, (const uint8_t *)"w", 1);
    at(p, "f");
    fuzz_write(p, (const uint8_t *)"f", 1);
    at(p, "l");
    at(q, "ld");
    if (symlink("d/f", p) != 0 || symlink("d", q) != 0)
        fuzz_die("the links");
    at(p, "p");
    if (mkfifo(p, 0600) != 0)
        fuzz_die("the FIFO");
    if ((home = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        fuzz_die("the working directory");
}

/* Does the path stay inside the scratch directory, read as written? */
static int inside(const char *path)
{
    int depth = 0;

    for (const char *s = path; *s != '\0';) {
        size_t n = strcspn(s, "/");

        if (n == 2 && s[0] == '.' && s[1] == '.' && --depth < 0)
            return 0;
        if (n > 0 && !(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.'))
            depth++;
        s += n;
        s += *s == '/';
    }
    return 1;
}

/* The whole file as read without ctok (NULL if it cannot be), *len its length. */
static uint8_t *plain_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t n = 0, got;

    if (f == NULL)
        return NULL;
    do {
        uint8_t *nb = realloc(buf, n + 4096);

        if (nb == NULL)
            fuzz_die("out of memory");
        buf = nb;
        got = fread(buf + n, 1, 4096, f);
        n += got;
    } while (got == 4096);
    fclose(f);
    *len = n;
    return buf;
}

static void check_read(const char *path, int secret, const uint8_t *data, size_t len)
{
    struct stat st;
    char real[PATH_MAX];
    uint8_t *want;
    size_t wlen = 0;

    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & (S_IWGRP | S_IWOTH)) ||
        (secret && (st.st_mode & (S_IRGRP | S_IROTH))) || realpath(path, real) == NULL ||
        strncmp(real, wdir, strlen(wdir)) == 0)
        abort(); /* a file the checks must refuse was read */
    if (data[len] != '\0' || (want = plain_read(path, &wlen)) == NULL || wlen != len ||
        memcmp(want, data, len) != 0)
        abort();
    free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    char path[PATH_MAX], real[PATH_MAX];
    const uint8_t *nl;
    size_t plen, clen, times;
    mode_t mode;
    int secret, ok, must;
    uint8_t *got = NULL;
    size_t glen = 0;
    struct stat st;

    if (len < 2)
        return 0;
    secret = data[0] & 1;
    mode = modes[(data[0] >> 2) & 7];
    times = 1 + (data[1] & 15);
    data += 2;
    len -= 2;
    nl = memchr(data, '\n', len);
    plen = nl != NULL ? (size_t)(nl - data) : len;
    clen = nl != NULL ? len - plen - 1 : 0;
    if (plen > 256 || memchr(data, '\0', plen) != NULL)
        return 0;
    if ((data[-2] & 2) != 0)
        snprintf(path, sizeof(path), "%.*s", (int)plen, (const char *)data);
    else
        snprintf(path, sizeof(path), "%s/%.*s", base, (int)plen, (const char *)data);
    if (!inside((data[-2] & 2) != 0 ? path : path + strlen(base) + 1))
        return 0;
    if (clen * times > cap) {
        free(content);
        cap = clen * times;
        if ((content = malloc(cap)) == NULL)
            fuzz_die("out of memory");
    }
    for (size_t i = 0; i < times && clen > 0; i++)
        memcpy(content + i * clen, nl + 1, clen);
    chmod(df, 0600);
    fuzz_write(df, content, clen * times);
    if (chmod(df, mode) != 0)
        fuzz_die(df);
    if (chdir(base) != 0)
        fuzz_die(base);
    ok = ctok_file_read(path, secret, CTOK_R_CONFIG, "fuzz file", &got, &glen);
    if (ok) {
        check_read(path, secret, got, glen);
        ctok_file_free(got, glen);
    }
    /* d/f named by any path whose last part is no link, with a mode the checks accept */
    must = lstat(path, &st) == 0 && S_ISREG(st.st_mode) && realpath(path, real) != NULL &&
           strcmp(real, df) == 0 && !(mode & (S_IWGRP | S_IWOTH)) &&
           !(secret && (mode & (S_IRGRP | S_IROTH)));
    if (must && !ok)
        abort();
    if (fchdir(home) != 0)
        fuzz_die("the working directory");
    ERR_clear_error();
    return 0;
}

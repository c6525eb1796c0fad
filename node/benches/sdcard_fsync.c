/*
 * SD-card flush model for benchmarks: an LD_PRELOAD library that makes every fsync and
 * fdatasync of the process take an extra BOLTBOX_FSYNC_DELAY_MS (default 10 ms), one at a
 * time, the way an SD card flushes. Applied equally to every contender in a benchmark run.
 * With BOLTBOX_FSYNC_PATH_PREFIX set, only flushes of files whose path starts with it are
 * slowed (a slow USB stick beside a fast card, in tests).
 *
 * The live mirror's files (a path containing "/boltbox-mirror") are on a USB stick: modelled
 * the same way, one flush at a time, but on a medium of its own, so that a flush of the stick
 * and one of the card run side by side as they do on the device.
 *
 * Faults, for tests: with BOLTBOX_FAULT_FILE set, every flush and positioned write (pwrite,
 * pwrite64) of a modelled file first reads that file; while it holds "EIO" or "ENOSPC" the call
 * fails with that error and writes nothing (the test turns a failing card on and off by writing
 * and removing the file).
 *
 *   gcc -shared -fPIC -O2 -o sdcard_fsync.so sdcard_fsync.c -ldl -lpthread
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t card = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t stick = PTHREAD_MUTEX_INITIALIZER;

static void card_delay(void) {
    const char *v = getenv("BOLTBOX_FSYNC_DELAY_MS");
    double ms = v ? atof(v) : 10.0;
    struct timespec ts = { (time_t)(ms / 1000.0), (long)((ms - 1000.0 * (long)(ms / 1000.0)) * 1e6) };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* Whether the file behind fd is one the model slows: all of them, or those under the prefix. */
static int modelled(int fd) {
    const char *prefix = getenv("BOLTBOX_FSYNC_PATH_PREFIX");
    if (!prefix || !*prefix) {
        return 1;
    }
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) {
        return 0;
    }
    path[n] = 0;
    return strncmp(path, prefix, strlen(prefix)) == 0;
}

/* The medium the file behind fd is on: the mirror's stick, or the card. */
static pthread_mutex_t *medium(int fd) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) {
        return &card;
    }
    path[n] = 0;
    return strstr(path, "/boltbox-mirror") ? &stick : &card;
}

/* The error the fault file asks for, or 0. */
static int fault(void) {
    const char *path = getenv("BOLTBOX_FAULT_FILE");
    if (!path || !*path) {
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    char word[16] = { 0 };
    size_t n = fread(word, 1, sizeof word - 1, f);
    fclose(f);
    word[n] = 0;
    if (strncmp(word, "EIO", 3) == 0) {
        return EIO;
    }
    if (strncmp(word, "ENOSPC", 6) == 0) {
        return ENOSPC;
    }
    return 0;
}

static int flush(const char *name, int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (!modelled(fd)) {
        return real(fd);
    }
    int error = fault();
    if (error) {
        errno = error;
        return -1;
    }
    pthread_mutex_t *on = medium(fd);
    pthread_mutex_lock(on);
    int r = real(fd);
    card_delay();
    pthread_mutex_unlock(on);
    return r;
}

int fsync(int fd) { return flush("fsync", fd); }
int fdatasync(int fd) { return flush("fdatasync", fd); }

static ssize_t positioned_write(const char *name, int fd, const void *buf, size_t count, off_t offset) {
    ssize_t (*real)(int, const void *, size_t, off_t) =
        (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, name);
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (getenv("BOLTBOX_FAULT_FILE") && modelled(fd)) {
        int error = fault();
        if (error) {
            errno = error;
            return -1;
        }
    }
    return real(fd, buf, count, offset);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    return positioned_write("pwrite", fd, buf, count, offset);
}
ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    return positioned_write("pwrite64", fd, buf, count, offset);
}

/*
 * SD-card flush model for benchmarks: an LD_PRELOAD library that makes every fsync and
 * fdatasync of the process take an extra BOLTBOX_FSYNC_DELAY_MS (default 10 ms), one at a
 * time, the way an SD card flushes. Applied equally to every contender in a benchmark run.
 * With BOLTBOX_FSYNC_PATH_PREFIX set, only flushes of files whose path starts with it are
 * slowed (a slow USB stick beside a fast card, in tests).
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

static int flush(const char *name, int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (!modelled(fd)) {
        return real(fd);
    }
    pthread_mutex_lock(&card);
    int r = real(fd);
    card_delay();
    pthread_mutex_unlock(&card);
    return r;
}

int fsync(int fd) { return flush("fsync", fd); }
int fdatasync(int fd) { return flush("fdatasync", fd); }

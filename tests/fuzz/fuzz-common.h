/* SPDX-License-Identifier: MIT */
/* Shared by the libFuzzer targets: a private temp directory per process, removed at
 * exit, and a helper to put an input into a file there. Logging is off unless
 * FUZZ_LOG is set (the code still runs; only the output is dropped). */
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#include "dtrotated-log.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char fuzz_dir[PATH_MAX];

/* Fails loudly: a broken harness must not look like a clean run. */
#define fuzz_check(cond)                                                                  \
        do {                                                                              \
                if (!(cond)) {                                                            \
                        fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
                                #cond);                                                   \
                        abort();                                                          \
                }                                                                         \
        } while (0)

/* Removes every file in fuzz_dir (the targets make no subdirectories). */
static inline void fuzz_clean_dir(void) {
        DIR *d = opendir(fuzz_dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        (void) unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
}

static void fuzz_remove_dir(void) {
        if (!fuzz_dir[0])
                return;
        fuzz_clean_dir();
        (void) rmdir(fuzz_dir);
}

/* $TMPDIR (or /dev/shm when writable: no disk I/O, fsync is cheap) /dtrotated-fuzz.XXXXXX */
static inline void fuzz_setup(void) {
        const char *tmp = getenv("TMPDIR");

        if (!tmp || !*tmp)
                tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/dtrotated-fuzz.XXXXXX", tmp);
        if (!mkdtemp(fuzz_dir)) {
                perror("mkdtemp");
                abort();
        }
        /* libFuzzer ends a run with exit(). After a crash or ^C it uses _Exit(): the
         * runner (tests/fuzz/run) gives each target a TMPDIR of its own and removes it. */
        atexit(fuzz_remove_dir);
        if (!getenv("FUZZ_LOG"))
                log_set_max_level(-1);
}

/* fuzz_dir/name, written with exactly these bytes (mode 0600). */
static inline void fuzz_write_file(const char *path, const uint8_t *data, size_t size) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);

        fuzz_check(fd >= 0);
        while (size > 0) {
                ssize_t n = write(fd, data, size);
                fuzz_check(n > 0);
                data += n;
                size -= (size_t) n;
        }
        fuzz_check(close(fd) == 0);
}

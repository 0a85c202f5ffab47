/* SPDX-License-Identifier: MIT */
/* LD_PRELOAD for the crash test: after every successful fsync()/fdatasync() of the
 * journal (or of the journal.new / journal.tmp that becomes it), writes its inode and
 * size to $DTR_POWERCUT_FILE. What lies beyond that size was written but never synced:
 * the crash test cuts it off after a kill -9, as a power cut could, to prove that the
 * daemon never acted on a record that was not yet durable (group commit). Test only. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void note(int fd) {
        const char *out = getenv("DTR_POWERCUT_FILE"), *base;
        char link[64], path[4096], line[64];
        struct stat st;
        ssize_t n;
        int o, len;

        if (!out)
                return;
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        n = readlink(link, path, sizeof(path) - 1);
        if (n < 0)
                return;
        path[n] = 0;
        base = strrchr(path, '/');
        base = base ? base + 1 : path;
        if (strcmp(base, "journal") && strcmp(base, "journal.new") && strcmp(base, "journal.tmp"))
                return;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return;
        len = snprintf(line, sizeof(line), "%020" PRIu64 " %020" PRIu64 "\n",
                       (uint64_t) st.st_ino, (uint64_t) st.st_size);
        o = open(out, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (o < 0)
                return;
        if (pwrite(o, line, (size_t) len, 0) != len)
                abort();
        close(o);
}

int fdatasync(int fd) {
        int r = (int) syscall(SYS_fdatasync, fd);
        if (r == 0)
                note(fd);
        return r;
}

int fsync(int fd) {
        int r = (int) syscall(SYS_fsync, fd);
        if (r == 0)
                note(fd);
        return r;
}

/* SPDX-License-Identifier: MIT */
/* rusage OUTFILE COMMAND [ARG...]: runs COMMAND, waits for it, writes to OUTFILE one line
 *   wall_ns user_us sys_us maxrss_kib nvcsw nivcsw exit_status
 * where the rusage is what wait4() reports for COMMAND: COMMAND itself and every
 * descendant it waited for. Exits with COMMAND's exit status (128+N if killed by N).
 *
 * Why not Python's os.wait4(): the kernel starts a new process's peak RSS (ru_maxrss)
 * from that of the process it was forked from, carried over exec(). Forked from the
 * benchmark's Python (~20 MiB), every client would report at least that much. This small
 * program is the parent instead. Built by tests/bench/run with cc. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
        struct timespec t0, t1;
        struct rusage ru;
        int status, code;
        FILE *out;
        pid_t pid;

        if (argc < 3) {
                fprintf(stderr, "usage: rusage OUTFILE COMMAND [ARG...]\n");
                return 64;
        }
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pid = fork();
        if (pid < 0) {
                perror("rusage: fork");
                return 71;
        }
        if (pid == 0) {
                execvp(argv[2], argv + 2);
                perror("rusage: exec");
                _exit(127);
        }
        while (wait4(pid, &status, 0, &ru) < 0)
                if (errno != EINTR) {
                        perror("rusage: wait4");
                        return 71;
                }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        out = fopen(argv[1], "w");
        if (!out) {
                perror("rusage: output");
                return 71;
        }
        fprintf(out, "%lld %lld %lld %ld %ld %ld %d\n",
                (long long) (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec),
                (long long) ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
                (long long) ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec,
                ru.ru_maxrss, ru.ru_nvcsw, ru.ru_nivcsw, code);
        if (fclose(out) != 0) {
                perror("rusage: output");
                return 71;
        }
        return code;
}

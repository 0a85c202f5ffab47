/* SPDX-License-Identifier: MIT */
/* For the benchmark's analysis only (LD_PRELOAD): fsync() and fdatasync() do nothing.
 * dtrotated run like this is NOT crash-safe; tests/bench/run uses it once to measure
 * what the syncs cost, i.e. the most that batching them could save. */
int fsync(int fd);
int fdatasync(int fd);

int fsync(int fd) {
        (void) fd;
        return 0;
}

int fdatasync(int fd) {
        (void) fd;
        return 0;
}

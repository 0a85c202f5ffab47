/* SPDX-License-Identifier: MIT */
/* Unit tests for handing a new token over: staging, owner/group/mode kept or set,
 * symbolic links and other file types refused, an idempotent commit. The ownership
 * tests need root (they chown to other ids and drop privileges in a child) and are
 * skipped without it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "dtrotated-deliver.h"
#include "dtrotated-util.h"

#define TOKEN "dt0c01.ST2EY72KQINMH574WMNVI7YN.G3DFPBEJYMODIDAEX454M7YWBUVEFOWKPRVMWFASS64NFH52PX6BNDVFFM572RZM"
#define TOKEN2 "dt0c01.AAAAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

typedef struct Fixture {
        char dir[64];
        char path[128];
        char *staged;
        JobConfig j;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "/tmp/dtrotated-test-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/app.token", f->dir);
        f->staged = deliver_staged_path(f->path);
        assert_non_null(f->staged);
        f->j = (JobConfig) { .file = f->path, .mode = JOB_MODE_KEEP, .uid = (uid_t) -1,
                             .gid = (gid_t) -1 };
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f->staged);
        free(f);
        return 0;
}

static void write_file(const char *path, const char *content, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, content, strlen(content)), (ssize_t) strlen(content));
        assert_int_equal(fchmod(fd, mode), 0);
        close(fd);
}

static void assert_file_token(const char *path, const char *token) {
        _cleanup_erase_ char *t = NULL;
        const char *why;

        assert_int_equal(read_token_file(path, &t, &why), 0);
        assert_string_equal(t, token);
}

static mode_t mode_of(const char *path) {
        struct stat st;
        assert_int_equal(lstat(path, &st), 0);
        return st.st_mode & 07777;
}

static void test_stage_commit(void **state) {
        Fixture *f = *state;
        char *t = NULL;

        assert_non_null(strstr(f->staged, "/.app.token.dtrotated-new"));
        f->j.mode = 0640;
        assert_int_equal(deliver_read_staged(&f->j, &t), -ENOENT);
        assert_int_equal(deliver_check(&f->j, NULL), 0);
        assert_int_equal(deliver_stage(&f->j, TOKEN), 0);
        assert_int_equal(mode_of(f->staged), 0640);
        assert_int_equal(deliver_read_staged(&f->j, &t), 0);
        assert_string_equal(t, TOKEN);
        free(t);
        /* Staging again replaces a stale staged file. */
        assert_int_equal(deliver_stage(&f->j, TOKEN), 0);
        assert_int_equal(deliver_commit(&f->j), 0);
        assert_int_equal(access(f->staged, F_OK), -1);
        assert_int_equal(mode_of(f->path), 0640);
        assert_file_token(f->path, TOKEN);
        /* Nothing staged, nothing expected: as before. */
        assert_int_equal(deliver_commit(&f->j), -ENOENT);
}

/* The staged file is created O_EXCL|O_NOFOLLOW: a link planted there is removed,
 * not written through. */
static void test_stage_planted_link(void **state) {
        Fixture *f = *state;
        char victim[160];

        snprintf(victim, sizeof(victim), "%s/victim", f->dir);
        write_file(victim, "precious\n", 0600);
        assert_int_equal(symlink(victim, f->staged), 0);
        assert_int_equal(deliver_stage(&f->j, TOKEN), 0);
        {
                struct stat st;
                assert_int_equal(lstat(f->staged, &st), 0);
                assert_true(S_ISREG(st.st_mode));
        }
        {
                char buf[32] = {};
                int fd = open(victim, O_RDONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_int_equal(read(fd, buf, sizeof(buf) - 1), 9);
                assert_string_equal(buf, "precious\n");
                close(fd);
        }
}

static void test_new_file_mode(void **state) {
        Fixture *f = *state;

        /* No current file, no mode set: 0600. */
        assert_int_equal(deliver_stage(&f->j, TOKEN), 0);
        assert_int_equal(deliver_commit(&f->j), 0);
        assert_int_equal(mode_of(f->path), 0600);
}

static void test_keep_mode(void **state) {
        Fixture *f = *state;

        /* The current file's mode is kept ... */
        write_file(f->path, TOKEN2 "\n", 0640);
        assert_int_equal(deliver_stage(&f->j, TOKEN), 0);
        assert_int_equal(mode_of(f->staged), 0640);   /* before the secret is in it */
        assert_int_equal(deliver_commit(&f->j), 0);
        assert_int_equal(mode_of(f->path), 0640);
        assert_file_token(f->path, TOKEN);

        /* ... without write for others ... */
        assert_int_equal(chmod(f->path, 0666), 0);
        assert_int_equal(deliver_stage(&f->j, TOKEN2), 0);
        assert_int_equal(deliver_commit(&f->j), 0);
        assert_int_equal(mode_of(f->path), 0664);

        /* ... unless the configuration sets one. */
        f->j.mode = 0600;
        assert_int_equal(deliver_stage(&f->j, TOKEN), 0);
        assert_int_equal(deliver_commit(&f->j), 0);
        assert_int_equal(mode_of(f->path), 0600);
}

static void test_keep_owner(void **state) {
        Fixture *f = *state;
        struct stat st;

        if (geteuid() != 0)
                skip();
        /* The current file's owner and group are kept (as root we may chown) ... */
        write_file(f->path, TOKEN2 "\n", 0640);
        assert_int_equal(chown(f->path, 4321, 8765), 0);
        assert_int_equal(deliver_stage(&f->j, TOKEN), 0);
        assert_int_equal(stat(f->staged, &st), 0);
        assert_int_equal(st.st_uid, 4321);
        assert_int_equal(st.st_gid, 8765);
        assert_int_equal(deliver_commit(&f->j), 0);
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_uid, 4321);
        assert_int_equal(st.st_gid, 8765);
        assert_int_equal(st.st_mode & 07777, 0640);

        /* ... unless the configuration sets them. */
        f->j.uid = 1111;
        assert_int_equal(deliver_stage(&f->j, TOKEN2), 0);
        assert_int_equal(deliver_commit(&f->j), 0);
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_uid, 1111);
        assert_int_equal(st.st_gid, 8765);
        f->j.gid = 2222;
        assert_int_equal(deliver_stage(&f->j, TOKEN), 0);
        assert_int_equal(deliver_commit(&f->j), 0);
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_uid, 1111);
        assert_int_equal(st.st_gid, 2222);
}

/* Run fn in a child as uid/gid 65534 without supplementary groups; its exit status. */
static int as_nobody(void (*fn)(Fixture *f), Fixture *f) {
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(99);
                fn(f);
                _exit(0);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

#define CHILD_ASSERT(cond) do { if (!(cond)) { fprintf(stderr, "child: %s:%d: %s\n", __FILE__, __LINE__, #cond); _exit(1); } } while (0)

static void nobody_keeps_root_owner(Fixture *f) {
        _cleanup_free_ char *why = NULL;

        /* A root-owned file cannot be kept so without CAP_CHOWN: refused, before any
         * create (deliver_check) and when staging, and nothing is left behind. */
        CHILD_ASSERT(deliver_check(&f->j, &why) == -EPERM);
        CHILD_ASSERT(why && strstr(why, "cannot give") && strstr(why, "uid 0, the owner of the current file") &&
                     strstr(why, "CAP_CHOWN"));
        why = mfree(why);
        CHILD_ASSERT(deliver_stage_full(&f->j, TOKEN, &why) == -EPERM);
        CHILD_ASSERT(why && strstr(why, "CAP_CHOWN"));
        CHILD_ASSERT(access(f->staged, F_OK) < 0 && errno == ENOENT);

        /* owner set to ourselves: the group (root's) is next. */
        f->j.uid = 65534;
        why = mfree(why);
        CHILD_ASSERT(deliver_check(&f->j, &why) == -EPERM);
        CHILD_ASSERT(why && strstr(why, "gid 0, the group of the current file"));
        f->j.gid = 65534;
        CHILD_ASSERT(deliver_check(&f->j, NULL) == 0);
        CHILD_ASSERT(deliver_stage(&f->j, TOKEN) == 0);
        CHILD_ASSERT(deliver_commit(&f->j) == 0);
}

static void nobody_setgid_dir(Fixture *f) {
        struct stat st;

        /* The directory is setgid to the file's group: no chown needed for it. */
        f->j.uid = 65534;
        CHILD_ASSERT(deliver_check(&f->j, NULL) == 0);
        CHILD_ASSERT(deliver_stage(&f->j, TOKEN) == 0);
        CHILD_ASSERT(deliver_commit(&f->j) == 0);
        CHILD_ASSERT(stat(f->path, &st) == 0 && st.st_uid == 65534 && st.st_gid == 4242);
}

static void test_owner_needs_cap_chown(void **state) {
        Fixture *f = *state;
        struct stat st;

        if (geteuid() != 0)
                skip();
        assert_int_equal(chmod(f->dir, 0777), 0);
        write_file(f->path, TOKEN2 "\n", 0644);  /* root:root, readable by the child */
        assert_int_equal(as_nobody(nobody_keeps_root_owner, f), 0);
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_uid, 65534);
        assert_int_equal(st.st_gid, 65534);
        assert_file_token(f->path, TOKEN);

        /* A setgid directory hands new files its group by itself. */
        assert_int_equal(chown(f->dir, 0, 4242), 0);
        assert_int_equal(chmod(f->dir, 02777), 0);
        assert_int_equal(chown(f->path, 0, 4242), 0);
        assert_int_equal(as_nobody(nobody_setgid_dir, f), 0);
}

static void test_target_symlink(void **state) {
        Fixture *f = *state;
        char real[160], canon[PATH_MAX];
        _cleanup_free_ char *why = NULL;

        /* file points at a link: never followed, nothing staged or replaced. */
        snprintf(real, sizeof(real), "%s/real.token", f->dir);
        write_file(real, TOKEN2 "\n", 0600);
        assert_non_null(realpath(real, canon));
        assert_int_equal(symlink("real.token", f->path), 0);

        assert_int_equal(deliver_check(&f->j, &why), -ELOOP);
        assert_non_null(strstr(why, "is a symbolic link to"));
        assert_non_null(strstr(why, canon));
        why = mfree(why);
        assert_int_equal(deliver_stage_full(&f->j, TOKEN, &why), -ELOOP);
        assert_non_null(strstr(why, canon));
        assert_non_null(strstr(why, "set file to the real path"));
        assert_int_equal(access(f->staged, F_OK), -1);

        /* A link that appears between staging and commit is not replaced either. */
        assert_int_equal(unlink(f->path), 0);
        assert_int_equal(deliver_stage(&f->j, TOKEN), 0);
        assert_int_equal(symlink("real.token", f->path), 0);
        assert_int_equal(deliver_commit(&f->j), -ELOOP);
        assert_file_token(real, TOKEN2);
        assert_int_equal(access(f->staged, F_OK), 0);
}

static void test_target_not_regular(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *why = NULL;

        assert_int_equal(mkfifo(f->path, 0600), 0);
        alarm(5);
        assert_int_equal(deliver_stage_full(&f->j, TOKEN, &why), -EBADMSG);
        alarm(0);
        assert_non_null(strstr(why, "is not a regular file (a FIFO)"));
        assert_int_equal(access(f->staged, F_OK), -1);
        assert_int_equal(unlink(f->path), 0);

        assert_int_equal(mkdir(f->path, 0700), 0);
        assert_int_equal(deliver_check(&f->j, NULL), -EISDIR);
}

static void test_commit_retry(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *why = NULL;

        write_file(f->path, TOKEN2 "\n", 0600);
        assert_int_equal(deliver_stage(&f->j, TOKEN), 0);
        /* The rename happened, then (say) the directory's fsync failed: the caller
         * retries with the secret it staged, and that succeeds. */
        assert_int_equal(deliver_commit_full(&f->j, TOKEN, NULL), 0);
        assert_int_equal(access(f->staged, F_OK), -1);
        assert_int_equal(deliver_commit_full(&f->j, TOKEN, &why), 0);
        assert_null(why);
        assert_file_token(f->path, TOKEN);

        /* But only when the file holds that very token. */
        assert_int_equal(deliver_commit_full(&f->j, TOKEN2, &why), -ENOENT);
        assert_non_null(strstr(why, "cannot rename"));
        assert_null(strstr(why, "G3DFPBEJ"));
        assert_int_equal(deliver_commit(&f->j), -ENOENT);
        assert_int_equal(unlink(f->path), 0);
        assert_int_equal(deliver_commit_full(&f->j, TOKEN, NULL), -ENOENT);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_stage_commit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stage_planted_link, setup, teardown),
                cmocka_unit_test_setup_teardown(test_new_file_mode, setup, teardown),
                cmocka_unit_test_setup_teardown(test_keep_mode, setup, teardown),
                cmocka_unit_test_setup_teardown(test_keep_owner, setup, teardown),
                cmocka_unit_test_setup_teardown(test_owner_needs_cap_chown, setup, teardown),
                cmocka_unit_test_setup_teardown(test_target_symlink, setup, teardown),
                cmocka_unit_test_setup_teardown(test_target_not_regular, setup, teardown),
                cmocka_unit_test_setup_teardown(test_commit_retry, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

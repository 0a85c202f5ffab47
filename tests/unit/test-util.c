/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "dtrotated-deliver.h"
#include "dtrotated-util.h"

#define TOKEN "dt0c01.ST2EY72KQINMH574WMNVI7YN.G3DFPBEJYMODIDAEX454M7YWBUVEFOWKPRVMWFASS64NFH52PX6BNDVFFM572RZM"

static void test_parse_duration(void **state) {
        usec_t u;

        assert_int_equal(parse_duration("30d", &u), 0);
        assert_true(u == 30 * USEC_PER_DAY);
        assert_int_equal(parse_duration("90m", &u), 0);
        assert_true(u == 90 * USEC_PER_MINUTE);
        assert_int_equal(parse_duration("0s", &u), 0);
        assert_true(u == 0);
        assert_int_equal(parse_duration("250ms", &u), 0);
        assert_true(u == 250 * USEC_PER_MSEC);
        assert_int_equal(parse_duration("2w", &u), 0);
        assert_true(u == 14 * USEC_PER_DAY);
        assert_int_equal(parse_duration("1h", &u), 0);
        assert_true(u == USEC_PER_HOUR);
        assert_int_equal(parse_duration("30", &u), -EINVAL);
        assert_int_equal(parse_duration("", &u), -EINVAL);
        assert_int_equal(parse_duration("d", &u), -EINVAL);
        assert_int_equal(parse_duration("3 d", &u), -EINVAL);
        assert_int_equal(parse_duration("3y", &u), -EINVAL);
        assert_int_equal(parse_duration("-3d", &u), -EINVAL);
        assert_int_equal(parse_duration("1h30m", &u), -EINVAL);
        assert_int_equal(parse_duration("99999999999999999999d", &u), -ERANGE);
        assert_int_equal(parse_duration("999999999999999w", &u), -ERANGE);
}

static void test_format_duration(void **state) {
        char b[FORMAT_DURATION_MAX];

        assert_string_equal(format_duration(b, sizeof(b), 6 * USEC_PER_DAY + 23 * USEC_PER_HOUR + 5 * USEC_PER_MINUTE), "6d 23h");
        assert_string_equal(format_duration(b, sizeof(b), 2 * USEC_PER_DAY + 30 * USEC_PER_MINUTE), "2d");
        assert_string_equal(format_duration(b, sizeof(b), 45 * USEC_PER_SEC), "45s");
        assert_string_equal(format_duration(b, sizeof(b), 0), "0s");
        assert_string_equal(format_duration(b, sizeof(b), 1500 * USEC_PER_MSEC), "1s 500ms");
        assert_string_equal(format_duration(b, sizeof(b), USEC_INFINITY), "never");
}

static void test_iso8601(void **state) {
        usec_t u;

        assert_int_equal(parse_iso8601("2026-11-23T09:40:00Z", &u), 0);
        assert_true(u == 1795426800ULL * USEC_PER_SEC);
        assert_int_equal(parse_iso8601("2026-11-23T10:40:00+01:00", &u), 0);
        assert_true(u == 1795426800ULL * USEC_PER_SEC);
        assert_int_equal(parse_iso8601("2026-11-23T09:40:00.250Z", &u), 0);
        assert_true(u == 1795426800ULL * USEC_PER_SEC + 250 * USEC_PER_MSEC);
        assert_int_equal(parse_iso8601("2026-11-23T09:40Z", &u), 0);
        assert_true(u == 1795426800ULL * USEC_PER_SEC);
        assert_int_equal(parse_iso8601("1795426800000", &u), 0);
        assert_true(u == 1795426800ULL * USEC_PER_SEC);
        assert_int_equal(parse_iso8601("2026-11-23T09:40:00", &u), -EINVAL);  /* no zone */
        assert_int_equal(parse_iso8601("2026-13-23T09:40:00Z", &u), -EINVAL);
        assert_int_equal(parse_iso8601("yesterday", &u), -EINVAL);
        assert_int_equal(parse_iso8601("", &u), -EINVAL);
        assert_int_equal(parse_iso8601("2026-11-23T09:40:00Zjunk", &u), -EINVAL);
}

static void test_token(void **state) {
        char b[TOKEN_PUBLIC_MAX];

        assert_true(token_is_valid(TOKEN));
        assert_false(token_is_valid("dt0c01.ST2EY72KQINMH574WMNVI7YN"));
        assert_false(token_is_valid("dt0c01.ST2EY72KQINMH574WMNVI7Y.G3DFPBEJYMODIDAEX454M7YWBUVEFOWKPRVMWFASS64NFH52PX6BNDVFFM572RZMX"));
        assert_false(token_is_valid(TOKEN "\n"));
        assert_false(token_is_valid(""));
        assert_false(token_is_valid(NULL));
        assert_string_equal(token_public_part(b, sizeof(b), TOKEN), "dt0c01.ST2EY72KQINMH574WMNVI7YN");
        assert_string_equal(token_public_part(b, sizeof(b), "garbage"), "(not a token)");
}

static void write_file(const char *path, const char *content) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, content, strlen(content)), (ssize_t) strlen(content));
        close(fd);
}

static void test_read_token_file(void **state) {
        char dir[] = "/tmp/dtrotated-test-XXXXXX", path[128], *t = NULL;
        const char *why;
        char big[5000];

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/token", dir);

        write_file(path, "  " TOKEN "\n\n");
        assert_int_equal(read_token_file(path, &t, &why), 0);
        assert_string_equal(t, TOKEN);
        free(t);

        write_file(path, "");
        assert_int_equal(read_token_file(path, &t, &why), -EBADMSG);
        assert_string_equal(why, "empty");

        write_file(path, "not a token\n");
        assert_int_equal(read_token_file(path, &t, &why), -EBADMSG);
        assert_non_null(strstr(why, "dt0c01"));

        write_file(path, TOKEN "\n" TOKEN "\n");
        assert_int_equal(read_token_file(path, &t, &why), -EBADMSG);

        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        write_file(path, big);
        assert_int_equal(read_token_file(path, &t, &why), -EFBIG);

        unlink(path);
        assert_int_equal(read_token_file(path, &t, &why), -ENOENT);
        assert_int_equal(read_token_file(dir, &t, &why), -EBADMSG); /* a directory */
        rmdir(dir);
}

static void test_deliver(void **state) {
        char dir[] = "/tmp/dtrotated-test-XXXXXX", path[128], *t = NULL;
        _cleanup_free_ char *staged = NULL;
        const char *why;
        struct stat st;
        JobConfig j = { .mode = 0640, .uid = (uid_t) -1, .gid = (gid_t) -1 };

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/app.token", dir);
        j.file = path;
        staged = deliver_staged_path(path);
        assert_non_null(strstr(staged, "/.app.token.dtrotated-new"));

        assert_int_equal(deliver_read_staged(&j, &t), -ENOENT);
        assert_int_equal(deliver_stage(&j, TOKEN), 0);
        assert_int_equal(stat(staged, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0640);
        assert_int_equal(deliver_read_staged(&j, &t), 0);
        assert_string_equal(t, TOKEN);
        free(t);
        /* Staging again replaces a stale staged file. */
        assert_int_equal(deliver_stage(&j, TOKEN), 0);
        assert_int_equal(deliver_commit(&j), 0);
        assert_int_equal(stat(staged, &st), -1);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0640);
        assert_int_equal(read_token_file(path, &t, &why), 0);
        assert_string_equal(t, TOKEN);
        free(t);
        assert_int_equal(deliver_commit(&j), -ENOENT);
        unlink(path);
        rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_duration),
                cmocka_unit_test(test_format_duration),
                cmocka_unit_test(test_iso8601),
                cmocka_unit_test(test_token),
                cmocka_unit_test(test_read_token_file),
                cmocka_unit_test(test_deliver),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "dtrotated-deadline.h"
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
        /* The edges: USEC_INFINITY means "never" and is never produced. */
        assert_int_equal(parse_duration("18446744073709551ms", &u), 0);
        assert_true(u == 18446744073709551000ULL);
        assert_int_equal(parse_duration("18446744073709552ms", &u), -ERANGE);
        assert_int_equal(parse_duration("18446744073709551615s", &u), -ERANGE);
        assert_int_equal(parse_duration("18446744073709551616ms", &u), -ERANGE);
        assert_int_equal(parse_duration("30500568w", &u), 0);
        assert_int_equal(parse_duration("30500569w", &u), -ERANGE);
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

        /* Epoch milliseconds: overflow is refused, never wrapped. */
        assert_int_equal(parse_iso8601("18446744073709551", &u), 0);
        assert_true(u == 18446744073709551000ULL);
        assert_int_equal(parse_iso8601("18446744073709552", &u), -ERANGE);
        assert_int_equal(parse_iso8601("999999999999999999", &u), -ERANGE); /* wrapped before */
        assert_int_equal(parse_iso8601("99999999999999999999999999", &u), -ERANGE);
        assert_int_equal(parse_iso8601("000000000000000000000001795426800000", &u), 0);
        assert_true(u == 1795426800ULL * USEC_PER_SEC);
        assert_int_equal(parse_iso8601("0", &u), 0);
        assert_true(u == 0);
        /* Impossible dates and offsets. */
        assert_int_equal(parse_iso8601("2026-02-29T00:00:00Z", &u), -EINVAL);
        assert_int_equal(parse_iso8601("2028-02-29T00:00:00Z", &u), 0);
        assert_int_equal(parse_iso8601("2026-04-31T00:00:00Z", &u), -EINVAL);
        assert_int_equal(parse_iso8601("2026-11-23T09:40:00+24:00", &u), -EINVAL);
        assert_int_equal(parse_iso8601("2026-11-23T09:40:00+01:60", &u), -EINVAL);
        assert_int_equal(parse_iso8601("9999-12-31T23:59:59.999999999Z", &u), 0);
        assert_true(u == 253402300799ULL * USEC_PER_SEC + 999999);
        assert_int_equal(parse_iso8601("1970-01-01T00:30:00+01:00", &u), -EINVAL); /* before 1970 */
}

#define LEGACY "ABCDEFGHIJ0123456789z"

static void test_token(void **state) {
        char b[TOKEN_PUBLIC_MAX], long_legacy[TOKEN_LEGACY_MAX + 2];

        assert_true(token_is_valid(TOKEN));
        assert_false(token_is_legacy(TOKEN));
        assert_false(token_is_valid("dt0c01.ST2EY72KQINMH574WMNVI7YN"));
        assert_false(token_is_valid("dt0c01.ST2EY72KQINMH574WMNVI7Y.G3DFPBEJYMODIDAEX454M7YWBUVEFOWKPRVMWFASS64NFH52PX6BNDVFFM572RZMX"));
        assert_false(token_is_valid(TOKEN "\n"));
        assert_false(token_is_valid(""));
        assert_false(token_is_valid(NULL));
        assert_string_equal(token_public_part(b, sizeof(b), TOKEN), "dt0c01.ST2EY72KQINMH574WMNVI7YN");
        assert_string_equal(token_public_part(b, sizeof(b), "garbage"), "(not a token)");

        /* Pre-2021 tokens: letters and digits, no dots; valid, and never shown. */
        assert_true(token_is_valid(LEGACY));
        assert_true(token_is_legacy(LEGACY));
        assert_string_equal(token_public_part(b, sizeof(b), LEGACY), "(legacy token)");
        assert_null(strstr(b, "ABCD"));
        assert_false(token_is_valid("ABCDEFGHIJ01234"));          /* 15: too short */
        assert_true(token_is_valid("ABCDEFGHIJ012345"));          /* 16 */
        memset(long_legacy, 'a', sizeof(long_legacy) - 1);
        long_legacy[sizeof(long_legacy) - 1] = 0;                  /* 129 */
        assert_false(token_is_valid(long_legacy));
        long_legacy[TOKEN_LEGACY_MAX] = 0;                         /* 128 */
        assert_true(token_is_valid(long_legacy));
        assert_false(token_is_valid("ABCDEFGHIJ-123456789z"));
        assert_false(token_is_valid("ABCDEFGHIJ 123456789z"));
        assert_false(token_is_valid("ABCDEFGHIJ\xc3\xa4" "123456789z"));
        assert_false(token_is_valid(LEGACY "\n"));
        assert_string_equal(token_public_part(b, sizeof(b), "ABCDEFGHIJ-123456789z"), "(not a token)");
}

static void write_file(const char *path, const char *content) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, content, strlen(content)), (ssize_t) strlen(content));
        close(fd);
}

static void write_bytes(const char *path, const char *content, size_t n) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, content, n), (ssize_t) n);
        close(fd);
}

/* Not one byte of the secret in an explanation. */
static void assert_no_secret(const char *why) {
        assert_non_null(why);
        assert_null(strstr(why, "G3DFPBEJ"));
        assert_null(strstr(why, "ST2EY72K"));
        assert_null(strstr(why, "ABCDEFGH"));
}

static void test_read_token_file(void **state) {
        char dir[] = "/tmp/dtrotated-test-XXXXXX", path[128], link[128], other[128], *t = NULL;
        char real[PATH_MAX], expect[PATH_MAX + 128];
        const char *why;
        char *big;
        size_t big_size = 1024 * 1024;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/token", dir);

        write_file(path, "  " TOKEN "\n\n");
        assert_int_equal(read_token_file(path, &t, &why), 0);
        assert_string_equal(t, TOKEN);
        free(t);

        /* CR LF and tabs around it. */
        write_file(path, "\t" TOKEN "\r\n");
        assert_int_equal(read_token_file(path, &t, &why), 0);
        assert_string_equal(t, TOKEN);
        free(t);

        write_file(path, LEGACY "\r\n");
        assert_int_equal(read_token_file(path, &t, &why), 0);
        assert_string_equal(t, LEGACY);
        free(t);

        write_file(path, "");
        assert_int_equal(read_token_file(path, &t, &why), -EBADMSG);
        assert_string_equal(why, "empty");
        write_file(path, " \r\n\n\t");
        assert_int_equal(read_token_file(path, &t, &why), -EBADMSG);
        assert_string_equal(why, "empty");

        write_file(path, "not-a-token\n");
        assert_int_equal(read_token_file(path, &t, &why), -EBADMSG);
        assert_non_null(strstr(why, "dt0c01"));

        /* Exactly one token: two lines (of either format) are refused, content unsaid. */
        write_file(path, TOKEN "\n" TOKEN "\n");
        assert_int_equal(read_token_file(path, &t, &why), -EBADMSG);
        assert_non_null(strstr(why, "exactly one token"));
        assert_no_secret(why);
        write_file(path, LEGACY "\r\n" LEGACY "\r\n");
        assert_int_equal(read_token_file(path, &t, &why), -EBADMSG);
        assert_no_secret(why);
        write_bytes(path, TOKEN "\0x", sizeof(TOKEN) + 1);
        assert_int_equal(read_token_file(path, &t, &why), -EBADMSG);
        assert_no_secret(why);

        /* At most 4 KiB: 4096 bytes are fine, 4097 and 1 MB are refused whole. */
        big = malloc(big_size + 1);
        assert_non_null(big);
        memset(big, ' ', 4097); /* the 4097 bytes written below, all defined */
        memcpy(big + 100, TOKEN, strlen(TOKEN));
        write_bytes(path, big, 4096);
        assert_int_equal(read_token_file(path, &t, &why), 0);
        assert_string_equal(t, TOKEN);
        free(t);
        write_bytes(path, big, 4097);
        assert_int_equal(read_token_file(path, &t, &why), -EFBIG);
        assert_string_equal(why, "larger than 4 KiB");
        memset(big, 'a', big_size);
        memcpy(big, TOKEN "\n", strlen(TOKEN) + 1);
        write_bytes(path, big, big_size);
        t = NULL;
        assert_int_equal(read_token_file(path, &t, &why), -EFBIG);
        assert_null(t);
        assert_no_secret(why);
        free(big);

        /* A symbolic link is refused, naming the file it leads to. */
        write_file(path, TOKEN "\n");
        assert_non_null(realpath(path, real));
        snprintf(link, sizeof(link), "%s/link", dir);
        assert_int_equal(symlink("token", link), 0);
        assert_int_equal(read_token_file(link, &t, &why), -ELOOP);
        snprintf(expect, sizeof(expect), "is a symbolic link to %s; set the path in the "
                 "configuration to the real file", real);
        assert_string_equal(why, expect);
        unlink(link);
        assert_int_equal(symlink("/nonexistent/token", link), 0);   /* dangling */
        assert_int_equal(read_token_file(link, &t, &why), -ELOOP);
        assert_non_null(strstr(why, "is a symbolic link to /nonexistent/token"));
        unlink(link);

        /* A FIFO nobody writes to: refused at once (SIGALRM kills the test if it
         * blocks). */
        snprintf(other, sizeof(other), "%s/fifo", dir);
        assert_int_equal(mkfifo(other, 0600), 0);
        alarm(5);
        assert_int_equal(read_token_file(other, &t, &why), -EBADMSG);
        alarm(0);
        assert_string_equal(why, "is not a regular file (a FIFO)");
        unlink(other);

        /* A directory, a socket, a device. */
        assert_int_equal(read_token_file(dir, &t, &why), -EBADMSG);
        assert_string_equal(why, "is not a regular file (a directory)");
        {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

                snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/sock", dir);
                assert_true(fd >= 0);
                assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
                assert_int_equal(read_token_file(sa.sun_path, &t, &why), -EBADMSG);
                assert_string_equal(why, "is not a regular file (a socket)");
                close(fd);
                unlink(sa.sun_path);
        }
        assert_int_equal(read_token_file("/dev/null", &t, &why), -EBADMSG);
        assert_string_equal(why, "is not a regular file (a character device)");

        unlink(path);
        assert_int_equal(read_token_file(path, &t, &why), -ENOENT);
        assert_null(why);
        rmdir(dir);
}

/* The heap against a brute-force minimum, through random puts, moves and removes. */
static void test_deadline_heap(void **state) {
        enum { N = 300 };
        static Deadline d[N];
        DeadlineHeap h = {};
        unsigned seed = 1;

        assert_null(deadline_heap_peek(&h));
        for (unsigned step = 0; step < 20000; step++) {
                Deadline *min = NULL, *top;
                size_t queued = 0, i;

                seed = seed * 1103515245 + 12345;
                i = (seed >> 8) % N;
                if ((seed >> 20) % 4 == 0)
                        deadline_heap_remove(&h, &d[i]);
                else
                        assert_int_equal(deadline_heap_put(&h, &d[i], (seed >> 4) % 1000), 0);

                for (size_t k = 0; k < N; k++)
                        if (deadline_queued(&d[k])) {
                                queued++;
                                assert_ptr_equal(h.items[d[k].index - 1], &d[k]);
                                if (!min || d[k].at < min->at)
                                        min = &d[k];
                        }
                assert_int_equal(queued, h.n);
                top = deadline_heap_peek(&h);
                if (!min)
                        assert_null(top);
                else
                        assert_true(top && top->at == min->at);
                for (size_t k = 1; k < h.n; k++)
                        assert_true(h.items[(k - 1) / 2]->at <= h.items[k]->at);
        }
        /* Draining gives the deadlines in order. */
        for (usec_t last = 0; deadline_heap_peek(&h); ) {
                Deadline *top = deadline_heap_peek(&h);
                assert_true(top->at >= last);
                last = top->at;
                deadline_heap_remove(&h, top);
                assert_false(deadline_queued(top));
        }
        assert_int_equal(deadline_heap_put(&h, &d[0], 5), 0);
        deadline_heap_free(&h);
        assert_false(deadline_queued(&d[0]));
        assert_null(deadline_heap_peek(&h));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_duration),
                cmocka_unit_test(test_format_duration),
                cmocka_unit_test(test_iso8601),
                cmocka_unit_test(test_token),
                cmocka_unit_test(test_read_token_file),
                cmocka_unit_test(test_deadline_heap),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}

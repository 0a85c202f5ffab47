/* SPDX-License-Identifier: MIT */
/* Unit tests of the crash-safe journal (src/dtrotated-journal.c). Each test works in its
 * own mkdtemp() directory under /tmp; the journal directory is DIR = that/state. */
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "dtrotated-journal.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"

#define HEADER "dtrotated-journal 2\n"
#define HEADER_V1 "dtrotated-journal 1\n"

typedef struct Fixture {
        char tmp[64];
        char dir[96];
        char path[128];
        char path_new[128];
        char path_tmp[128];
        bool mounted;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        strcpy(f->tmp, "/tmp/test-journal-XXXXXX");
        assert_non_null(mkdtemp(f->tmp));
        snprintf(f->dir, sizeof(f->dir), "%s/state", f->tmp);
        snprintf(f->path, sizeof(f->path), "%s/journal", f->dir);
        snprintf(f->path_new, sizeof(f->path_new), "%s/journal.new", f->dir);
        snprintf(f->path_tmp, sizeof(f->path_tmp), "%s/journal.tmp", f->dir);
        *state = f;
        return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static int teardown(void **state) {
        Fixture *f = *state;

        if (f->mounted)
                (void) umount2(f->dir, MNT_DETACH);
        (void) nftw(f->tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(f);
        return 0;
}

/* ---- helpers ---- */

/* An independent, bitwise CRC-32 (IEEE), to cross-check the table-driven one. */
static uint32_t crc32_bitwise(const void *data, size_t n) {
        const uint8_t *p = data;
        uint32_t c = 0xffffffff;

        while (n-- > 0) {
                c ^= *p++;
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? 0xedb88320 ^ (c >> 1) : c >> 1;
        }
        return ~c;
}

/* "CCCCCCCC payload\n" with a correct checksum. */
static char *make_line(const char *payload) {
        char *s = strdup_printf("%08" PRIx32 " %s\n", crc32_bitwise(payload, strlen(payload)), payload);
        assert_non_null(s);
        return s;
}

static char *read_file(const char *path, size_t *ret_size) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        char *buf;

        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        buf = malloc((size_t) st.st_size + 1);
        assert_non_null(buf);
        assert_int_equal(pread(fd, buf, (size_t) st.st_size, 0), st.st_size);
        buf[st.st_size] = 0;
        *ret_size = (size_t) st.st_size;
        return buf;
}

static void write_file(const char *path, const void *data, size_t n, int flags) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0600);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, n), (ssize_t) n);
}

static void append_file(const char *path, const void *data, size_t n) {
        write_file(path, data, n, O_APPEND);
}

static void replace_file(const char *path, const void *data, size_t n) {
        write_file(path, data, n, O_TRUNC);
}

static uint64_t file_size(const char *path) {
        struct stat st;

        assert_int_equal(stat(path, &st), 0);
        return (uint64_t) st.st_size;
}

static bool file_exists(const char *path) {
        return access(path, F_OK) == 0;
}

/* A canonical text for a record that tells NULL from "" and 0 from a set time. */
static char *describe(const JournalRecord *r) {
        const char *names[] = { "job", "env", "id", "old", "name" };
        const char *values[] = { r->job, r->env, r->id, r->old_id, r->name };
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);

        assert_non_null(f);
        fprintf(f, "%s", strna(journal_type_to_string(r->type)));
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (values[i])
                        fprintf(f, " %s=[%s]", names[i], values[i]);
        fprintf(f, " at=%" PRIu64 " created=%" PRIu64 " expires=%" PRIu64 " grace=%" PRIu64 " until=%" PRIu64
                " unused=%" PRIu64, r->at, r->created, r->expires, r->grace, r->until, r->unused);
        assert_int_equal(fclose(f), 0);
        return TAKE_PTR(text);
}

typedef struct Collector {
        char **items;
        size_t n;
        size_t fail_at; /* 1-based record number at which to return -ENOTRECOVERABLE; 0: never */
} Collector;

static int collect(const JournalRecord *r, void *userdata) {
        Collector *c = userdata;
        char **l;

        if (c->fail_at > 0 && c->n + 1 == c->fail_at)
                return -ENOTRECOVERABLE;
        l = realloc(c->items, (c->n + 1) * sizeof(char *));
        assert_non_null(l);
        c->items = l;
        c->items[c->n++] = describe(r);
        return 0;
}

static void collector_done(Collector *c) {
        for (size_t i = 0; i < c->n; i++)
                free(c->items[i]);
        free(c->items);
        *c = (Collector) {};
}

static int count(const JournalRecord *r, void *userdata) {
        (*(size_t *) userdata)++;
        return 0;
}

static Journal *open_ok(Fixture *f, Collector *c) {
        _cleanup_free_ char *error = NULL;
        Journal *j = NULL;
        int r;

        r = journal_open(f->dir, c ? collect : NULL, c, &j, &error);
        if (r < 0)
                print_error("journal_open: %s (%s)\n", strerror(-r), strna(error));
        assert_int_equal(r, 0);
        assert_null(error);
        assert_non_null(j);
        return j;
}

static struct timespec file_mtime(const char *path) {
        struct stat st;

        assert_int_equal(stat(path, &st), 0);
        return st.st_mtim;
}

static void assert_same_time(struct timespec a, struct timespec b) {
        assert_int_equal(a.tv_sec, b.tv_sec);
        assert_int_equal(a.tv_nsec, b.tv_nsec);
}

/* Opening must fail with r and exactly this message, replay nothing, change nothing;
 * the same for the read-only open, whose message may differ (ro_message; NULL: the
 * same). */
static void open_fails_ro(Fixture *f, int expected, const char *message, const char *ro_message) {
        _cleanup_free_ char *before = NULL, *after = NULL, *error = NULL;
        size_t size_before, size_after;
        struct timespec mtime = file_mtime(f->path);
        Collector c = {};
        Journal *j = NULL;

        before = read_file(f->path, &size_before);
        assert_int_equal(journal_open(f->dir, collect, &c, &j, &error), expected);
        assert_null(j);
        assert_non_null(error);
        if (message)
                assert_string_equal(error, message);
        assert_int_equal(c.n, 0);
        free(error);
        error = NULL;
        assert_int_equal(journal_open_readonly(f->dir, collect, &c, &error), expected);
        assert_non_null(error);
        if (ro_message || message)
                assert_string_equal(error, ro_message ?: message);
        assert_int_equal(c.n, 0);

        after = read_file(f->path, &size_after);
        assert_int_equal(size_before, size_after);
        assert_memory_equal(before, after, size_before);
        assert_same_time(mtime, file_mtime(f->path));
        assert_false(file_exists(f->path_tmp));
        assert_false(file_exists(f->path_new));
        collector_done(&c);
}

static void open_fails(Fixture *f, int expected, const char *message) {
        open_fails_ro(f, expected, message, NULL);
}

/* The collected records from number `from` on are these n. */
static void assert_records_from(const Collector *c, size_t from, const JournalRecord *expected, size_t n) {
        assert_true(c->n >= from + n);
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *e = describe(&expected[i]);
                assert_string_equal(c->items[from + i], e);
        }
}

static void assert_records(const Collector *c, const JournalRecord *expected, size_t n) {
        assert_int_equal(c->n, n);
        assert_records_from(c, 0, expected, n);
}

/* Five different, valid records. */
static const JournalRecord five[] = {
        { .type = JOURNAL_JOB, .job = "alpha", .env = "prod", .id = "dt0c01.AAAA",
          .created = 1700000000000000, .expires = USEC_INFINITY },
        { .type = JOURNAL_CREATE, .job = "alpha", .env = "prod", .old_id = "dt0c01.AAAA",
          .at = 1700000000000001 },
        { .type = JOURNAL_DELIVERED, .job = "alpha", .env = "prod", .old_id = "dt0c01.AAAA",
          .id = "dt0c01.BBBB" },
        { .type = JOURNAL_ROTATED, .job = "alpha", .env = "prod", .old_id = "dt0c01.AAAA",
          .id = "dt0c01.BBBB", .created = 1700000000000002, .expires = 1800000000000000 },
        { .type = JOURNAL_RETIRE, .job = "alpha", .env = "prod", .id = "dt0c01.AAAA",
          .at = 1700000000000003, .grace = USEC_PER_WEEK },
};

static void append_five(Fixture *f) {
        _cleanup_(journal_closep) Journal *j = open_ok(f, NULL);

        for (size_t i = 0; i < ELEMENTSOF(five); i++)
                assert_int_equal(journal_append(j, &five[i], 1), 0);
        assert_int_equal(journal_n_records(j), 5);
        assert_int_equal(journal_size(j), file_size(f->path));
}

/* ---- tests ---- */

static void test_crc_helper(void **state) {
        assert_int_equal(crc32_bitwise("123456789", 9), 0xcbf43926);
}

/* The slicing-by-4 CRC against the bitwise one, for payloads of every length mod 4. */
static void test_crc_all_lengths(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *data = NULL;
        char name[80];
        size_t size, lines = 0;

        Journal *j = open_ok(f, NULL);
        for (size_t n = 0; n < sizeof(name) - 1; n++) {
                for (size_t i = 0; i < n; i++)
                        name[i] = (char) (0x20 + (n * 7 + i * 13) % 0xe0); /* escapes too */
                name[n] = 0;
                JournalRecord r = { .type = JOURNAL_SCAN, .job = "j", .env = "e", .name = name, .at = n };
                assert_int_equal(journal_append(j, &r, 1), 0);
        }
        journal_close(j);

        data = read_file(f->path, &size);
        for (char *l = data + strlen(HEADER), *nl; (nl = strchr(l, '\n')); l = nl + 1, lines++) {
                char crc[9];
                snprintf(crc, sizeof(crc), "%08" PRIx32, crc32_bitwise(l + 9, (size_t) (nl - l - 9)));
                assert_memory_equal(l, crc, 8);
        }
        assert_int_equal(lines, sizeof(name) - 1);
}

static void test_type_names(void **state) {
        const char *expected[] = { "job", "create", "delivered", "rotated", "retire",
                                   "revoked", "deleted", "scan", "scanned", "forget",
                                   "restore", "restored", "unretire" };

        assert_int_equal(ELEMENTSOF(expected), _JOURNAL_TYPE_MAX);
        for (JournalType t = 0; t < _JOURNAL_TYPE_MAX; t++)
                assert_string_equal(journal_type_to_string(t), expected[t]);
        assert_null(journal_type_to_string(_JOURNAL_TYPE_MAX));
        assert_null(journal_type_to_string((JournalType) -1));
}

static void test_new_journal(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *data = NULL;
        struct stat st;
        size_t size;
        Collector c = {};

        Journal *j = open_ok(f, &c);
        assert_int_equal(c.n, 0);
        assert_int_equal(journal_n_records(j), 0);
        assert_int_equal(journal_size(j), strlen(HEADER));
        data = read_file(f->path, &size);
        assert_int_equal(size, strlen(HEADER));
        assert_memory_equal(data, HEADER, size);
        assert_false(file_exists(f->path_tmp)); /* created atomically, nothing left over */
        assert_false(file_exists(f->path_new));
        assert_int_equal(stat(f->dir, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0700);
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_mode & 0077, 0);
        journal_close(j);

        /* Reopening an empty journal is fine too, and trailing slashes are. */
        _cleanup_free_ char *slashed = strdup_printf("%s//", f->dir), *error = NULL;
        assert_int_equal(journal_open(slashed, collect, &c, &j, &error), 0);
        assert_int_equal(c.n, 0);
        journal_close(j);
        collector_done(&c);
}

static void test_missing_parent(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *dir = strdup_printf("%s/no/such", f->tmp), *error = NULL;
        Journal *j = NULL;

        assert_int_equal(journal_open(dir, NULL, NULL, &j, &error), -ENOENT);
        assert_null(j);
        assert_non_null(error);
        assert_non_null(strstr(error, dir));
}

static void test_golden_format(void **state) {
        Fixture *f = *state;
        const JournalRecord r[] = {
                { .type = JOURNAL_JOB, .job = "deploy", .env = "prod", .id = "dt0c01.ABC",
                  .created = 1700000000000000, .expires = USEC_INFINITY },
                { .type = JOURNAL_SCAN, .job = "a b", .env = "", .name = "x=y%z\xc3\xbc", .at = 5 },
                { .type = JOURNAL_CREATE, .job = "deploy", .env = "prod", .old_id = "dt0c01.ABC",
                  .name = "deploy token", .at = 7 },
                { .type = JOURNAL_SCAN, .job = "deploy", .env = "prod", .name = "deploy token", .at = 7,
                  .grace = USEC_PER_WEEK, .until = 9 },
        };
        /* Checksums computed independently with Python's zlib.crc32(). A batch of two
         * records, then two batches of one (no batch=). */
        const char *expected =
                HEADER
                "e95efecc job job=deploy env=prod id=dt0c01.ABC created=1700000000000000 expires=never batch=1/2\n"
                "776073c9 scan job=a%20b env= name=x%3Dy%25z%C3%BC at=5 batch=2/2\n"
                "1463f592 create job=deploy env=prod old=dt0c01.ABC name=deploy%20token at=7\n"
                "f3da0796 scan job=deploy env=prod name=deploy%20token at=7 grace=604800000000 until=9\n";
        _cleanup_free_ char *data = NULL;
        size_t size;

        Journal *j = open_ok(f, NULL);
        assert_int_equal(journal_append(j, r, 2), 0);
        assert_int_equal(journal_append(j, &r[2], 1), 0);
        assert_int_equal(journal_append(j, &r[3], 1), 0);
        journal_close(j);
        data = read_file(f->path, &size);
        assert_string_equal(data, expected);
}

static void test_roundtrip_all_types(void **state) {
        Fixture *f = *state;
        /* Every type with every key it allows; strings that need escaping. */
        const char *weird = "na me=%x \xc3\xa9\xe2\x82\xac\t\n~!";
        const JournalRecord r[] = {
                { .type = JOURNAL_JOB, .job = weird, .env = "e n v", .id = "dt0c01.X",
                  .created = 1, .expires = USEC_INFINITY },
                { .type = JOURNAL_CREATE, .job = "j", .env = "", .old_id = "%", .name = weird,
                  .at = 1234567890123456 },
                { .type = JOURNAL_DELIVERED, .job = "j", .env = "e", .old_id = "o", .id = "=",
                  .created = 11, .expires = USEC_INFINITY },
                { .type = JOURNAL_ROTATED, .job = "j", .env = "e", .old_id = "o", .id = "i",
                  .created = UINT64_MAX - 1, .expires = 42 },
                { .type = JOURNAL_RETIRE, .job = "", .env = "e", .id = "i", .at = 7, .grace = USEC_PER_WEEK },
                { .type = JOURNAL_RETIRE, .job = "j", .env = "e", .id = "u", .at = 7, .grace = USEC_PER_WEEK,
                  .until = 7 + USEC_PER_DAY, .unused = USEC_PER_HOUR },
                { .type = JOURNAL_REVOKED, .env = "e", .id = "i", .at = 8 },
                { .type = JOURNAL_DELETED, .env = "e", .id = "i" },
                { .type = JOURNAL_SCAN, .job = "j", .env = "e", .name = weird, .at = 9,
                  .grace = USEC_PER_DAY, .until = USEC_INFINITY },
                { .type = JOURNAL_SCANNED, .job = "j", .env = "e" },
                { .type = JOURNAL_FORGET, .job = "\x01\x7f\x80\xff" },
                { .type = JOURNAL_RESTORE, .job = "j", .env = "e", .id = "p", .old_id = "c" },
                { .type = JOURNAL_RESTORED, .job = "j", .env = "e", .id = "p", .old_id = "c",
                  .created = 5, .expires = USEC_INFINITY, .at = 6 },
                { .type = JOURNAL_UNRETIRE, .env = "e", .id = "p" },
                /* The same with the optional keys left out (times 0, strings NULL). */
                { .type = JOURNAL_JOB, .job = "j", .env = "e", .id = "i" },
                { .type = JOURNAL_CREATE, .job = "j", .env = "e" },
                { .type = JOURNAL_DELIVERED, .job = "j", .env = "e", .id = "i" },
                { .type = JOURNAL_ROTATED, .job = "j", .env = "e", .id = "i" },
                { .type = JOURNAL_RETIRE, .env = "e", .id = "i" },
                { .type = JOURNAL_REVOKED, .env = "e", .id = "i" },
                { .type = JOURNAL_SCAN, .job = "j", .env = "e", .name = "" },
                { .type = JOURNAL_RESTORED, .job = "j", .env = "e", .id = "p" },
        };
        _cleanup_free_ char *data = NULL;
        size_t size;
        Collector c = {};

        Journal *j = open_ok(f, NULL);
        for (size_t i = 0; i < ELEMENTSOF(r); i++)
                assert_int_equal(journal_append(j, &r[i], 1), 0);
        assert_int_equal(journal_n_records(j), ELEMENTSOF(r));
        journal_close(j);

        j = open_ok(f, &c);
        assert_records(&c, r, ELEMENTSOF(r));
        assert_int_equal(journal_n_records(j), ELEMENTSOF(r));
        assert_int_equal(journal_size(j), file_size(f->path));
        journal_close(j);
        collector_done(&c);

        /* The raw text: escapes, empty values, "never", no key for a 0 time. */
        data = read_file(f->path, &size);
        assert_non_null(strstr(data, " job=na%20me%3D%25x%20%C3%A9%E2%82%AC%09%0A~! env=e%20n%20v id=dt0c01.X created=1 expires=never\n"));
        assert_non_null(strstr(data, " create job=j env= old=%25 name=na%20me%3D%25x%20%C3%A9%E2%82%AC%09%0A~! at=1234567890123456\n"));
        assert_non_null(strstr(data, " at=9 grace=86400000000 until=never\n"));
        assert_non_null(strstr(data, " created=18446744073709551614 expires=42\n"));
        assert_non_null(strstr(data, " forget job=%01%7F%80%FF\n"));
        assert_non_null(strstr(data, " job job=j env=e id=i\n"));
        assert_non_null(strstr(data, " create job=j env=e\n"));
        assert_non_null(strstr(data, " retire env=e id=i\n"));
        assert_non_null(strstr(data, " retire job=j env=e id=u at=7 grace=604800000000 until=86400000007 unused=3600000000\n"));
        assert_non_null(strstr(data, " delivered job=j env=e id=%3D old=o created=11 expires=never\n"));
        assert_non_null(strstr(data, " scan job=j env=e name=\n"));
        assert_non_null(strstr(data, " restore job=j env=e id=p old=c\n"));
        assert_non_null(strstr(data, " restored job=j env=e id=p old=c at=6 created=5 expires=never\n"));
        assert_non_null(strstr(data, " restored job=j env=e id=p\n"));
        assert_non_null(strstr(data, " unretire env=e id=p\n"));
        for (char *p = data; *p; p++) /* only printable ASCII and newlines */
                assert_true(*p == '\n' || (*p >= 0x20 && *p <= 0x7e));
}

static void test_append_batches_in_order(void **state) {
        Fixture *f = *state;
        JournalRecord r[12];
        char names[12][16];
        Collector c = {};

        for (size_t i = 0; i < ELEMENTSOF(r); i++) {
                snprintf(names[i], sizeof(names[i]), "job-%zu", i);
                r[i] = (JournalRecord) { .type = JOURNAL_SCANNED, .job = names[i], .env = "prod" };
        }
        Journal *j = open_ok(f, NULL);
        assert_int_equal(journal_append(j, r, 0), 0); /* nothing */
        assert_int_equal(journal_size(j), strlen(HEADER));
        assert_int_equal(journal_append(j, r, 5), 0);
        assert_int_equal(journal_append(j, r + 5, 1), 0);
        assert_int_equal(journal_append(j, r + 6, 6), 0);
        assert_int_equal(journal_n_records(j), 12);
        assert_int_equal(journal_size(j), file_size(f->path));
        journal_close(j);

        j = open_ok(f, &c);
        assert_records(&c, r, 12);
        /* Appending after a reopen continues the file. */
        assert_int_equal(journal_append(j, five, 5), 0);
        assert_int_equal(journal_n_records(j), 17);
        journal_close(j);
        collector_done(&c);

        j = open_ok(f, &c);
        assert_int_equal(c.n, 17);
        {
                _cleanup_free_ char *e = describe(&five[4]);
                assert_string_equal(c.items[16], e);
        }
        journal_close(j);
        collector_done(&c);
}

static void test_append_rejects_invalid(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *before = NULL, *after = NULL, *longname = NULL;
        size_t size_before, size_after;
        const JournalRecord bad[] = {
                { .type = JOURNAL_JOB, .job = "j", .env = "e" },                      /* no id */
                { .type = JOURNAL_DELIVERED, .job = "j", .env = "e", .old_id = "o" }, /* no id */
                { .type = JOURNAL_RETIRE, .job = "j", .id = "i" },                    /* no env */
                { .type = JOURNAL_FORGET, .job = "j", .grace = 5 },                   /* grace not allowed */
                { .type = JOURNAL_DELETED, .env = "e", .id = "i", .name = "n" },      /* name not allowed */
                { .type = JOURNAL_RETIRE, .env = "e", .id = "i", .until = 3 },        /* until without unused */
                { .type = JOURNAL_RETIRE, .env = "e", .id = "i", .unused = 3 },       /* unused without until */
                { .type = JOURNAL_RETIRE, .env = "e", .id = "i", .created = 3 },      /* created not allowed */
                { .type = JOURNAL_REVOKED, .env = "e", .id = "i", .unused = 3 },      /* unused not allowed */
                { .type = JOURNAL_CREATE, .job = "j", .env = "e", .grace = 3 },       /* grace not allowed */
                { .type = JOURNAL_RESTORE, .job = "j", .env = "e", .id = "p" },       /* no old */
                { .type = JOURNAL_RESTORE, .job = "j", .env = "e", .id = "p", .old_id = "c", .at = 1 }, /* at not allowed */
                { .type = JOURNAL_RESTORED, .job = "j", .env = "e", .old_id = "c" },  /* no id */
                { .type = JOURNAL_UNRETIRE, .env = "e", .id = "p", .job = "j" },      /* job not allowed */
                { .type = _JOURNAL_TYPE_MAX, .job = "j" },
                { .type = (JournalType) -1, .job = "j" },
        };

        Journal *j = open_ok(f, NULL);
        assert_int_equal(journal_append(j, five, 2), 0);
        before = read_file(f->path, &size_before);

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                JournalRecord batch[3] = { five[0], bad[i], five[1] };
                assert_int_equal(journal_append(j, &bad[i], 1), -EINVAL);
                assert_int_equal(journal_append(j, batch, 3), -EINVAL); /* all or nothing */
        }
        assert_int_equal(journal_append(j, NULL, 1), -EINVAL);
        assert_int_equal(journal_append(NULL, five, 1), -EINVAL);
        /* A batch of more than 1,000,000 records is refused before any is looked at. */
        assert_int_equal(journal_append(j, five, 1000001), -E2BIG);

        /* Too long: the line would exceed 4096 bytes. 1500 '=' make 4500 bytes escaped. */
        longname = malloc(1501);
        assert_non_null(longname);
        memset(longname, '=', 1500);
        longname[1500] = 0;
        JournalRecord big = { .type = JOURNAL_SCAN, .job = "j", .env = "e", .name = longname };
        assert_int_equal(journal_append(j, &big, 1), -E2BIG);
        /* ... while a line of just under the maximum is fine. */
        longname[1330] = 0;
        assert_int_equal(journal_append(j, &big, 1), 0);
        assert_true(journal_size(j) - size_before <= 4096);
        /* The exact limit: 9 + 22 + 4064 + 1 = 4096 bytes is fine, one more is not. */
        longname = realloc(longname, 4066);
        assert_non_null(longname);
        memset(longname, 'x', 4065);
        longname[4065] = 0;
        big.name = longname;
        assert_int_equal(journal_append(j, &big, 1), -E2BIG);
        longname[4064] = 0;
        {
                uint64_t s = journal_size(j);
                assert_int_equal(journal_append(j, &big, 1), 0);
                assert_int_equal(journal_size(j) - s, 4096);
        }

        after = read_file(f->path, &size_after);
        assert_true(size_after > size_before);
        assert_memory_equal(before, after, size_before);
        assert_int_equal(journal_n_records(j), 4);
        journal_close(j);

        Collector c = {};
        j = open_ok(f, &c);
        assert_int_equal(c.n, 4);
        journal_close(j);
        collector_done(&c);
}

/* Append five records, then the given tail: reopening must replay the five and leave
 * the file alone; the next append cuts the tail off before it writes. */
static void check_torn(Fixture *f, const void *tail, size_t tail_size) {
        _cleanup_free_ char *before = NULL, *after = NULL, *error = NULL;
        size_t size_before, size_after;
        Collector c = {};
        uint64_t good;

        append_five(f);
        good = file_size(f->path);
        append_file(f->path, tail, tail_size);
        before = read_file(f->path, &size_before);

        assert_int_equal(journal_open_readonly(f->dir, collect, &c, &error), 0);
        assert_null(error);
        assert_records(&c, five, 5);
        collector_done(&c);

        Journal *j = open_ok(f, &c);
        assert_records(&c, five, 5);
        after = read_file(f->path, &size_after);
        assert_int_equal(size_before, size_after);
        assert_memory_equal(before, after, size_before);
        assert_int_equal(journal_size(j), good);
        assert_int_equal(journal_n_records(j), 5);
        assert_int_equal(journal_append(j, &five[0], 1), 0);
        assert_int_equal(journal_size(j), file_size(f->path));
        journal_close(j);
        collector_done(&c);

        j = open_ok(f, &c);
        assert_int_equal(c.n, 6);
        assert_int_equal(file_size(f->path), journal_size(j));
        journal_close(j);
        collector_done(&c);
}

static void test_torn_half_line(void **state) {
        _cleanup_free_ char *line = make_line("retire job=alpha env=prod id=dt0c01.CCCC at=17 grace=604800000000");
        check_torn(*state, line, strlen(line) / 2);
}

static void test_torn_bad_crc_last(void **state) {
        _cleanup_free_ char *line = make_line("revoked env=prod id=dt0c01.AAAA at=1700000000000009");
        line[20] ^= 0x04;   /* 'p' -> 't': the checksum no longer matches */
        check_torn(*state, line, strlen(line));
}

static void test_torn_no_newline(void **state) {
        /* A complete record without its newline: the write stopped one byte short. */
        _cleanup_free_ char *line = make_line("deleted env=prod id=dt0c01.AAAA");
        check_torn(*state, line, strlen(line) - 1);
}

static void test_torn_trailing_nuls(void **state) {
        char zeros[5000] = {};
        check_torn(*state, zeros, sizeof(zeros));
}

static void test_torn_garbage_lines(void **state) {
        /* NULs and junk with newlines in them, but nothing with a valid checksum. */
        const char tail[] = "\0\0\0\nxyz\n0123abcd deleted env=prod id=x\n\0\0";
        check_torn(*state, tail, sizeof(tail) - 1);
}

static void test_corrupt_middle(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *data = NULL, *expected = NULL;
        size_t size, off;

        append_five(f);
        data = read_file(f->path, &size);
        off = (size_t) (strchr(data + strlen(HEADER), '\n') + 1 - data); /* record 2 */
        data[off + 15] ^= 0x01;
        replace_file(f->path, data, size);

        expected = strdup_printf("%s: offset %zu: checksum mismatch", f->path, off);
        open_fails(f, -EBADMSG, expected);
        /* Still refused the second time: nothing was "repaired". */
        open_fails(f, -EBADMSG, expected);
}

static void test_corrupt_middle_lost_newline(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *data = NULL, *expected = NULL;
        size_t size, off;
        char *nl;

        append_five(f);
        data = read_file(f->path, &size);
        off = (size_t) (strchr(data + strlen(HEADER), '\n') + 1 - data);
        nl = strchr(data + off, '\n');
        *nl = ' '; /* records 2 and 3 run together; 4 and 5 are intact */
        replace_file(f->path, data, size);

        expected = strdup_printf("%s: offset %zu: checksum mismatch", f->path, off);
        open_fails(f, -EBADMSG, expected);
}

static void test_corrupt_then_garbage_then_valid(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *line = make_line("deleted env=prod id=dt0c01.AAAA"), *expected = NULL;
        uint64_t off;
        char zeros[100] = {};

        append_five(f);
        off = file_size(f->path);
        append_file(f->path, zeros, sizeof(zeros));
        append_file(f->path, "\n", 1);
        append_file(f->path, line, strlen(line));  /* an intact record after the damage */

        expected = strdup_printf("%s: offset %" PRIu64 ": malformed record (no checksum)", f->path, off);
        open_fails(f, -EBADMSG, expected);
}

static void test_bad_header(void **state) {
        Fixture *f = *state;
        static const struct {
                const char *data;
                const char *why;
        } cases[] = {
                { "dtrotated-journal 3\n", "unsupported journal version '3'" },
                { "dtrotated-journal 10\nabc\n", "unsupported journal version '10'" },
                { "dtrotated-journal\n", "not a dtrotated journal (bad header)" },
                { "dtrotated-journal 1x\n", "unsupported journal version '1x'" },
                { "[Unit]\nDescription=x\n", "not a dtrotated journal (bad header)" },
        };

        assert_int_equal(mkdir(f->dir, 0700), 0);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *expected = strdup_printf("%s: offset 0: %s", f->path, cases[i].why);

                replace_file(f->path, cases[i].data, strlen(cases[i].data));
                open_fails(f, -EBADMSG, expected);
        }
}

/* Journals are created atomically, so an empty journal or one cut short inside its
 * header lost whatever it held: refused, and left as it is for the operator. */
static void test_empty_or_partial_header(void **state) {
        Fixture *f = *state;
        const struct {
                const char *data;
                size_t size;
        } cases[] = {
                { "", 0 },
                { "d", 1 },
                { "dtrotated-jou", 13 },
                { "dtrotated-journal ", 18 },
                { "dtrotated-journal 1", 19 },
                { "dtrotated-journal 2", 19 },
                { "dtrotated-jo\0\0\0\0", 16 },
                { "dtrotated-journal 2\0\0", 21 },
                { "\0\0\0\0\0\0\0\0", 8 },
        };

        assert_int_equal(mkdir(f->dir, 0700), 0);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *what = cases[i].size == 0 ? "empty journal" : "incomplete header";
                _cleanup_free_ char *expected = strdup_printf(
                        "%s: offset 0: %s (truncated?); refusing to start: pending revoke/delete steps "
                        "may have been lost. See dtrotated(8), RECOVERY", f->path, what);
                _cleanup_free_ char *expected_ro = strdup_printf(
                        "%s: offset 0: %s (truncated?); pending revoke/delete steps may have been lost. "
                        "See dtrotated(8), RECOVERY", f->path, what);

                replace_file(f->path, cases[i].data, cases[i].size);
                assert_int_equal(file_size(f->path), cases[i].size);
                open_fails_ro(f, -EBADMSG, expected, expected_ro);
        }
}

static void test_semantic_damage(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *toolong = NULL;
        const struct {
                const char *payload;
                const char *reason;
        } cases[] = {
                { "frobnicate job=a", "unknown record type 'frobnicate'" },
                { "job job=a env=b id=c color=red", "unknown key 'color'" },
                { "job job=a env=b", "job record without id=" },
                { "delivered job=a env=b old=c", "delivered record without id=" },
                { "retire job=a id=c", "retire record without env=" },
                { "scanned job=a env=b at=5", "at= not allowed in a scanned record" },
                { "create job=a env=b old=c at=12x", "bad number in at=" },
                { "create job=a env=b old=c at=", "bad number in at=" },
                { "create job=a env=b old=c at=-1", "bad number in at=" },
                { "create job=a env=b old=c at=18446744073709551616", "bad number in at=" },
                { "job job=a env=b id=c expires=Never", "bad number in expires=" },
                { "job job=a%G1 env=b id=c", "bad escape in job=" },
                { "job job=a%2 env=b id=c", "bad escape in job=" },
                { "job job=a%00 env=b id=c", "bad escape in job=" },
                { "job job=a=b env=b id=c", "bad escape in job=" },
                { "job job=a job=b env=b id=c", "duplicate key job=" },
                { "forget job=a grace=5", "grace= not allowed in a forget record" },
                { "forget  job=a", "empty field" },
                { "forget job=a ", "empty field" },
                { "", "empty field" },
                { "forget job", "field 'job' without '='" },
                { "forget job=\x01", "invalid byte 0x01" },
                { "forget job=\xc3\xa9", "invalid byte 0xc3" },
                { "create job=a env=b grace=5", "grace= not allowed in a create record" },
                { "job job=a env=b id=c until=5", "until= not allowed in a job record" },
                { "retire env=e id=i until=5", "retire record with until= but without unused=" },
                { "retire env=e id=i unused=5", "retire record with unused= but without until=" },
                { "retire env=e id=i until=5 unused=x", "bad number in unused=" },
                { "retire env=e id=i until=5 unused=5 unused=5", "duplicate key unused=" },
                { "revoked env=e id=i at=1 unused=5", "unused= not allowed in a revoked record" },
                { "restore job=a env=b id=c", "restore record without old=" },
                { "restore job=a env=b old=c", "restore record without id=" },
                { "restore job=a env=b id=c old=d created=5", "created= not allowed in a restore record" },
                { "restored job=a env=b old=c", "restored record without id=" },
                { "restored job=a env=b id=c grace=5", "grace= not allowed in a restored record" },
                { "unretire env=b", "unretire record without id=" },
                { "unretire env=b id=c job=a", "job= not allowed in a unretire record" },
                { "restoring job=a env=b id=c old=d", "unknown record type 'restoring'" },
                /* Batch markers: a bad one, or record K > 1 without the ones before it. */
                { "forget job=a batch=1/1", "bad batch= (K/N with 1 <= K <= N, 2 <= N <= 1000000)" },
                { "forget job=a batch=0/2", "bad batch= (K/N with 1 <= K <= N, 2 <= N <= 1000000)" },
                { "forget job=a batch=3/2", "bad batch= (K/N with 1 <= K <= N, 2 <= N <= 1000000)" },
                { "forget job=a batch=01/2", "bad batch= (K/N with 1 <= K <= N, 2 <= N <= 1000000)" },
                { "forget job=a batch=1/02", "bad batch= (K/N with 1 <= K <= N, 2 <= N <= 1000000)" },
                { "forget job=a batch=1/1000001", "bad batch= (K/N with 1 <= K <= N, 2 <= N <= 1000000)" },
                { "forget job=a batch=1/2x", "bad batch= (K/N with 1 <= K <= N, 2 <= N <= 1000000)" },
                { "forget job=a batch=12", "bad batch= (K/N with 1 <= K <= N, 2 <= N <= 1000000)" },
                { "forget job=a batch=/2", "bad batch= (K/N with 1 <= K <= N, 2 <= N <= 1000000)" },
                { "forget job=a batch=", "bad batch= (K/N with 1 <= K <= N, 2 <= N <= 1000000)" },
                { "forget job=a batch=1/2 batch=2/2", "duplicate key batch=" },
                { "forget job=a batch=2/2", "record 2 of 2 of a batch without its first record" },
                { "forget job=a batch=1000000/1000000", "record 1000000 of 1000000 of a batch without its first record" },
                { NULL, "record too long (4097 bytes, at most 4096)" },
        };

        /* 9 (checksum and space) + 7 + 4080 + 1 (newline) = 4097 bytes. */
        toolong = malloc(7 + 4080 + 1);
        assert_non_null(toolong);
        memcpy(toolong, "scan jo", 7);
        memset(toolong + 7, 'x', 4080);
        toolong[7 + 4080] = 0;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *line = make_line(cases[i].payload ?: toolong), *valid = make_line("deleted env=e id=i"),
                                    *expected = NULL;
                uint64_t off;

                (void) unlink(f->path);
                append_five(f);
                off = file_size(f->path);
                append_file(f->path, line, strlen(line));
                expected = strdup_printf("%s: offset %" PRIu64 ": %s", f->path, off, cases[i].reason);

                /* The checksum matches, so this is no torn write: refused even as the
                 * last record... */
                open_fails(f, -EBADMSG, expected);
                /* ... and of course in the middle. */
                append_file(f->path, valid, strlen(valid));
                open_fails(f, -EBADMSG, expected);
        }
}

static void test_locked(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *error = NULL, *expected = NULL;
        Journal *j1, *j2 = NULL;

        j1 = open_ok(f, NULL);
        assert_int_equal(journal_open(f->dir, NULL, NULL, &j2, &error), -EBUSY);
        assert_null(j2);
        expected = strdup_printf("%s: locked by another dtrotated instance", f->dir);
        assert_string_equal(error, expected);
        /* The read-only open takes no lock. */
        free(error);
        error = NULL;
        assert_int_equal(journal_open_readonly(f->dir, NULL, NULL, &error), 0);
        assert_null(error);
        journal_close(j1);

        j2 = open_ok(f, NULL); /* the lock went with the first */
        journal_close(j2);
}

static void test_replay_error(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *error = NULL, *expected = NULL;
        Collector c = { .fail_at = 3 };
        Journal *j = NULL;
        size_t off;

        append_five(f);
        {
                _cleanup_free_ char *data = NULL;
                size_t size;
                data = read_file(f->path, &size);
                off = (size_t) (strchr(strchr(data + strlen(HEADER), '\n') + 1, '\n') + 1 - data);
        }
        assert_int_equal(journal_open(f->dir, collect, &c, &j, &error), -ENOTRECOVERABLE);
        assert_null(j);
        expected = strdup_printf("%s: offset %zu: replaying delivered record failed: %s", f->path, off,
                                 strerror(ENOTRECOVERABLE));
        assert_string_equal(error, expected);
        assert_int_equal(c.n, 2);
        collector_done(&c);

        /* The lock was released with the failed open. */
        j = open_ok(f, &c);
        assert_int_equal(c.n, 5);
        journal_close(j);
        collector_done(&c);
}

typedef struct EmitState {
        const JournalRecord *records;
        size_t n;
        int fail;               /* returned after adding the records */
        bool add_invalid;       /* add an invalid record and ignore the error */
        bool try_append;
} EmitState;

static int emit(Journal *j, void *userdata) {
        EmitState *e = userdata;

        for (size_t i = 0; i < e->n; i++) {
                int r = journal_compact_add(j, &e->records[i]);
                if (r < 0)
                        return r;
        }
        if (e->add_invalid) {
                JournalRecord bad = { .type = JOURNAL_JOB, .job = "j" };
                assert_int_equal(journal_compact_add(j, &bad), -EINVAL);
        }
        if (e->try_append)
                assert_int_equal(journal_append(j, e->records, 1), -EBUSY);
        return e->fail;
}

static void test_compact(void **state) {
        Fixture *f = *state;
        const JournalRecord live[] = {
                five[3],
                { .type = JOURNAL_REVOKED, .env = "prod", .id = "dt0c01.AAAA", .at = 99 },
                { .type = JOURNAL_SCAN, .job = "alpha", .env = "prod", .name = "a b", .at = 3 },
        };
        EmitState e = { .records = live, .n = ELEMENTSOF(live), .try_append = true };
        JournalRecord all[4];
        Collector c = {};

        append_five(f);
        Journal *j = open_ok(f, NULL);
        assert_int_equal(journal_append(j, five, 5), 0);
        assert_int_equal(journal_n_records(j), 10);
        assert_int_equal(journal_compact_add(j, &live[0]), -EINVAL); /* not compacting */
        assert_int_equal(journal_compact(j, emit, &e), 0);
        assert_false(file_exists(f->path_new));
        assert_int_equal(journal_n_records(j), 3);
        assert_int_equal(journal_size(j), file_size(f->path));
        /* Appends go to the new file. */
        assert_int_equal(journal_append(j, &five[4], 1), 0);
        assert_int_equal(journal_size(j), file_size(f->path));
        journal_close(j);

        memcpy(all, live, sizeof(live));
        all[3] = five[4];
        j = open_ok(f, &c);
        assert_records(&c, all, 4);
        journal_close(j);
        collector_done(&c);

        /* Compacting to nothing leaves a bare header. */
        j = open_ok(f, NULL);
        e = (EmitState) {};
        assert_int_equal(journal_compact(j, emit, &e), 0);
        assert_int_equal(journal_size(j), strlen(HEADER));
        assert_int_equal(file_size(f->path), strlen(HEADER));
        journal_close(j);
}

static int replay_into_manager(const JournalRecord *r, void *userdata) {
        return manager_apply_record(userdata, r);
}

static Manager *manager_from_journal(Fixture *f) {
        _cleanup_free_ char *error = NULL;
        Manager *m = calloc(1, sizeof(Manager));

        assert_non_null(m);
        assert_int_equal(journal_open(f->dir, replay_into_manager, m, &m->journal, &error), 0);
        return m;
}

/* revoke_when_unused: the retirement's wait and give-up time survive a restart and the
 * manager's own compaction (retirement_emit_records()). */
static void test_compact_retire_unused(void **state) {
        Fixture *f = *state;
        const JournalRecord recs[] = {
                { .type = JOURNAL_RETIRE, .job = "a", .env = "prod", .id = "dt0c01.U", .at = 100,
                  .grace = USEC_PER_WEEK, .until = 100 + 7 * USEC_PER_DAY, .unused = USEC_PER_HOUR },
                { .type = JOURNAL_RETIRE, .job = "b", .env = "prod", .id = "dt0c01.P", .at = 200,
                  .grace = USEC_PER_DAY },
        };
        Manager *m = manager_from_journal(f);
        Collector c = {};
        Retirement *r;

        assert_int_equal(manager_record(m, recs, 2), 0);
        r = manager_find_retirement(m, "prod", "dt0c01.U");
        assert_non_null(r);
        assert_int_equal(r->unused, USEC_PER_HOUR);
        assert_int_equal(r->unused_until, 100 + 7 * USEC_PER_DAY);
        assert_int_equal(r->waiting_unused_until, 0);
        assert_int_equal(manager_find_retirement(m, "prod", "dt0c01.P")->unused, 0);
        assert_int_equal(journal_compact(m->journal, manager_emit_live_records, m), 0);
        manager_free(m);

        /* The compacted file holds both records as written (the list order may differ). */
        journal_close(open_ok(f, &c));
        assert_int_equal(c.n, 2);
        for (size_t i = 0; i < ELEMENTSOF(recs); i++) {
                _cleanup_free_ char *want = describe(&recs[i]);
                assert_true(streq(c.items[0], want) || streq(c.items[1], want));
        }
        collector_done(&c);

        m = manager_from_journal(f);
        r = manager_find_retirement(m, "prod", "dt0c01.U");
        assert_non_null(r);
        assert_int_equal(r->unused, USEC_PER_HOUR);
        assert_int_equal(r->unused_until, 100 + 7 * USEC_PER_DAY);
        manager_free(m);
}

/* The restore records survive a compaction as written: a held job (RESTORED) and one in
 * the middle of a restore (RESTORE), as the manager's emitter writes them. */
static void test_compact_restore_records(void **state) {
        Fixture *f = *state;
        const JournalRecord live[] = {
                { .type = JOURNAL_RESTORED, .job = "held", .env = "prod", .id = "dt0c01.PREV",
                  .created = 5, .expires = USEC_INFINITY, .at = 7 },
                { .type = JOURNAL_ROTATED, .job = "busy", .env = "prod", .id = "dt0c01.CUR", .at = 8 },
                { .type = JOURNAL_RESTORE, .job = "busy", .env = "prod", .id = "dt0c01.OLD", .old_id = "dt0c01.CUR" },
                { .type = JOURNAL_RETIRE, .job = "busy", .env = "prod", .id = "dt0c01.OLD", .at = 9, .grace = 10 },
        };
        const JournalRecord batch[] = {
                { .type = JOURNAL_RESTORED, .job = "busy", .env = "prod", .id = "dt0c01.OLD",
                  .old_id = "dt0c01.CUR", .at = 11 },
                { .type = JOURNAL_UNRETIRE, .env = "prod", .id = "dt0c01.OLD" },
                { .type = JOURNAL_RETIRE, .job = "busy", .env = "prod", .id = "dt0c01.CUR", .at = 11, .grace = 10 },
        };
        EmitState e = { .records = live, .n = ELEMENTSOF(live), .try_append = true };
        JournalRecord all[ELEMENTSOF(live) + ELEMENTSOF(batch)];
        Collector c = {};

        Journal *j = open_ok(f, NULL);
        assert_int_equal(journal_append(j, five, 5), 0);
        assert_int_equal(journal_compact(j, emit, &e), 0);
        assert_int_equal(journal_n_records(j), ELEMENTSOF(live));
        assert_int_equal(journal_append(j, batch, ELEMENTSOF(batch)), 0);
        journal_close(j);

        memcpy(all, live, sizeof(live));
        memcpy(all + ELEMENTSOF(live), batch, sizeof(batch));
        j = open_ok(f, &c);
        assert_records(&c, all, ELEMENTSOF(all));
        journal_close(j);
        collector_done(&c);
}

static void test_compact_failure(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *before = NULL, *after = NULL;
        size_t size_before, size_after;
        EmitState fails = { .records = five, .n = 2, .fail = -EIO };
        EmitState ignores = { .records = five, .n = 2, .add_invalid = true };
        Collector c = {};

        append_five(f);
        before = read_file(f->path, &size_before);
        Journal *j = open_ok(f, NULL);

        assert_int_equal(journal_compact(j, emit, &fails), -EIO);
        assert_false(file_exists(f->path_new));
        assert_int_equal(journal_compact(j, emit, &ignores), -EINVAL);
        assert_false(file_exists(f->path_new));
        assert_int_equal(journal_compact(j, NULL, NULL), -EINVAL);

        after = read_file(f->path, &size_after);
        assert_int_equal(size_before, size_after);
        assert_memory_equal(before, after, size_before);
        assert_int_equal(journal_n_records(j), 5);
        assert_int_equal(journal_size(j), size_before);

        /* The old file is still in use. */
        assert_int_equal(journal_append(j, &five[0], 1), 0);
        journal_close(j);
        j = open_ok(f, &c);
        assert_int_equal(c.n, 6);
        journal_close(j);
        collector_done(&c);
}

static void test_stale_journal_new(void **state) {
        Fixture *f = *state;
        Collector c = {};

        append_five(f);
        replace_file(f->path_new, "dtrotated-journal 1\nhalf a rec", 30);
        replace_file(f->path_tmp, "dtrotated-jour", 14);
        Journal *j = open_ok(f, &c);
        assert_false(file_exists(f->path_new));
        assert_false(file_exists(f->path_tmp));
        assert_records(&c, five, 5);
        journal_close(j);
        collector_done(&c);

        /* Beside a journal that is refused, they stay for the operator. */
        {
                _cleanup_free_ char *error = NULL;

                replace_file(f->path, "", 0);
                replace_file(f->path_new, "dtrotated-journal 2\nhalf a rec", 30);
                replace_file(f->path_tmp, "dtrotated-jour", 14);
                assert_int_equal(journal_open(f->dir, collect, &c, &j, &error), -EBADMSG);
                assert_true(file_exists(f->path_new));
                assert_true(file_exists(f->path_tmp));
                assert_int_equal(file_size(f->path), 0);
        }
}

static void test_journal_new_without_journal(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *error = NULL;
        Journal *j = NULL;

        append_five(f);
        assert_int_equal(rename(f->path, f->path_new), 0);
        assert_int_equal(journal_open(f->dir, NULL, NULL, &j, &error), -EBADMSG);
        assert_null(j);
        assert_non_null(error);
        assert_non_null(strstr(error, "journal.new exists"));
        assert_true(file_exists(f->path_new));
        assert_false(file_exists(f->path));
        assert_false(file_exists(f->path_tmp));
        free(error);
        error = NULL;
        assert_int_equal(journal_open_readonly(f->dir, NULL, NULL, &error), -EBADMSG);
        assert_non_null(strstr(error, "journal.new exists"));
        assert_true(file_exists(f->path_new));
        assert_false(file_exists(f->path));
}

/* A write that stops half-way: RLIMIT_FSIZE makes write() short, then EFBIG. */
/* fdatasync() of the journal code, failing on demand: the kernel reports a write-back
 * error (EIO) only once, and may have dropped the pages by then. */
static int fdatasync_error;

int fdatasync(int fd) {
        if (fdatasync_error) {
                errno = fdatasync_error;
                return -1;
        }
        return (int) syscall(SYS_fdatasync, fd);
}

/* Group commit: lazy batches are written at once, synced by the next sync or synced
 * append; after a failed sync nothing is written or acknowledged until a compaction has
 * rewritten the journal from the caller's state. */
static void test_append_lazy(void **state) {
        Fixture *f = *state;
        EmitState e = { .records = five, .n = 4 };
        Collector c = {};

        Journal *j = open_ok(f, NULL);
        assert_false(journal_unsynced(j));
        assert_int_equal(journal_sync(j), 0); /* nothing to do */
        assert_int_equal(journal_append_lazy(j, five, 2), 0);
        assert_true(journal_unsynced(j));
        assert_int_equal(journal_size(j), file_size(f->path)); /* written, not synced */
        assert_int_equal(journal_sync(j), 0);
        assert_false(journal_unsynced(j));
        assert_int_equal(journal_append_lazy(j, five + 2, 1), 0);
        assert_int_equal(journal_append(j, five + 3, 1), 0); /* syncs the lazy one too */
        assert_false(journal_unsynced(j));
        journal_close(j);
        j = open_ok(f, &c);
        assert_records(&c, five, 4);
        collector_done(&c);

        /* A failed sync of a lazy batch. */
        assert_int_equal(journal_append_lazy(j, five + 4, 1), 0);
        fdatasync_error = EIO;
        assert_int_equal(journal_sync(j), -EIO);
        fdatasync_error = 0;
        assert_true(journal_unsynced(j));
        assert_int_equal(journal_sync(j), -EIO); /* a later sync proves nothing */
        assert_int_equal(journal_append(j, five, 1), -EIO);
        assert_int_equal(journal_append_lazy(j, five, 1), -EIO);
        assert_int_equal(journal_compact(j, emit, &e), 0);
        assert_false(journal_unsynced(j));
        assert_int_equal(journal_append_lazy(j, five + 4, 1), 0);
        journal_close(j); /* syncs */
        j = open_ok(f, &c);
        assert_records(&c, five, 5);
        collector_done(&c);

        /* A synced append whose sync fails after a lazy batch: the lazy batch is in doubt. */
        assert_int_equal(journal_append_lazy(j, five, 1), 0);
        fdatasync_error = EIO;
        assert_int_equal(journal_append(j, five + 1, 1), -EIO);
        fdatasync_error = 0;
        assert_int_equal(journal_append(j, five + 1, 1), -EIO);
        journal_close(j);
}

static void test_append_failure_rollback(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *before = NULL, *after = NULL;
        size_t size_before, size_after;
        struct rlimit saved, rl;
        Collector c = {};
        int r;

        append_five(f);
        before = read_file(f->path, &size_before);
        Journal *j = open_ok(f, NULL);

        assert_ptr_not_equal(signal(SIGXFSZ, SIG_IGN), SIG_ERR);
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
        rl = saved;
        rl.rlim_cur = size_before + 50; /* room for half a record */
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
        r = journal_append(j, five, 5);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
        assert_int_equal(r, -EFBIG);

        after = read_file(f->path, &size_after);
        assert_int_equal(size_before, size_after);
        assert_memory_equal(before, after, size_before);
        assert_int_equal(journal_size(j), size_before);
        assert_int_equal(journal_n_records(j), 5);

        assert_int_equal(journal_append(j, five, 2), 0);
        journal_close(j);
        j = open_ok(f, &c);
        assert_int_equal(c.n, 7);
        journal_close(j);
        collector_done(&c);
}

/* A full disk, for real: a 16 KiB tmpfs (needs CAP_SYS_ADMIN; skipped otherwise). */
static void test_append_enospc(void **state) {
        Fixture *f = *state;
        JournalRecord batch[7];
        char names[7][64];
        size_t appended = 0, n_fail = 0;
        Collector c = {};
        int r = 0;

        assert_int_equal(mkdir(f->dir, 0700), 0);
        if (mount("tmpfs", f->dir, "tmpfs", 0, "size=16k,mode=0700") < 0) {
                print_message("skipping ENOSPC test: cannot mount tmpfs: %s\n", strerror(errno));
                skip();
        }
        f->mounted = true;

        for (size_t i = 0; i < ELEMENTSOF(batch); i++) {
                snprintf(names[i], sizeof(names[i]), "job-%zu-with-a-longish-name-to-fill-pages", i);
                batch[i] = (JournalRecord) { .type = JOURNAL_RETIRE, .job = names[i], .env = "prod",
                                             .id = "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX", .at = 1, .grace = 2 };
        }
        Journal *j = open_ok(f, NULL);
        for (int i = 0; i < 1000; i++) {
                uint64_t size = journal_size(j);

                r = journal_append(j, batch, ELEMENTSOF(batch));
                if (r == 0) {
                        appended += ELEMENTSOF(batch);
                        continue;
                }
                assert_int_equal(r, -ENOSPC);
                assert_int_equal(journal_size(j), size);
                assert_int_equal(file_size(f->path), size);
                if (++n_fail == 3)
                        break;
        }
        assert_int_equal(r, -ENOSPC);
        assert_true(appended > 0);
        /* A single small record may still fit, or fail cleanly. */
        r = journal_append(j, &(JournalRecord) { .type = JOURNAL_FORGET, .job = "x" }, 1);
        assert_true(r == 0 || r == -ENOSPC);
        appended += r == 0;
        journal_close(j);

        j = open_ok(f, &c);
        assert_int_equal(c.n, appended);
        assert_int_equal(journal_size(j), file_size(f->path));
        journal_close(j);
        collector_done(&c);
}

/* ---- batches ---- */

/* A run of a real rotation, as the engine journals it: batches of one, of two (ROTATED
 * with the RETIRE of the token it replaced) and of three (leftovers found by a scan,
 * with the SCANNED that ends the scan). */
static const JournalRecord run_records[] = {
        /* 0 */ { .type = JOURNAL_JOB, .job = "alpha", .env = "prod", .id = "dt0c01.A1",
                  .created = 1700000000000000, .expires = 1800000000000000 },
        /* 1 */ { .type = JOURNAL_CREATE, .job = "alpha", .env = "prod", .old_id = "dt0c01.A1",
                  .name = "alpha token", .at = 1700000000000100 },
        /* 2 */ { .type = JOURNAL_DELIVERED, .job = "alpha", .env = "prod", .old_id = "dt0c01.A1",
                  .id = "dt0c01.A2", .created = 1700000000000200, .expires = 1800000000000200 },
        /* 3 */ { .type = JOURNAL_ROTATED, .job = "alpha", .env = "prod", .old_id = "dt0c01.A1",
                  .id = "dt0c01.A2", .created = 1700000000000200, .expires = 1800000000000200 },
        /* 4 */ { .type = JOURNAL_RETIRE, .job = "alpha", .env = "prod", .id = "dt0c01.A1",
                  .at = 1700000000000300, .grace = USEC_PER_WEEK },
        /* 5 */ { .type = JOURNAL_SCAN, .job = "beta", .env = "prod", .name = "beta token",
                  .at = 1700000000000400, .until = 1700000000000900, .grace = USEC_PER_DAY },
        /* 6 */ { .type = JOURNAL_ROTATED, .job = "beta", .env = "prod", .old_id = "dt0c01.B1",
                  .id = "dt0c01.B2", .created = 1700000000000500, .expires = USEC_INFINITY },
        /* 7 */ { .type = JOURNAL_RETIRE, .job = "beta", .env = "prod", .id = "dt0c01.B1",
                  .at = 1700000000000600, .grace = USEC_PER_WEEK },
        /* 8 */ { .type = JOURNAL_RETIRE, .job = "beta", .env = "prod", .id = "dt0c01.L1",
                  .at = 1700000000000700, .grace = USEC_PER_DAY },
        /* 9 */ { .type = JOURNAL_RETIRE, .job = "beta", .env = "prod", .id = "dt0c01.L2",
                  .at = 1700000000000700, .grace = USEC_PER_DAY },
        /* 10 */ { .type = JOURNAL_SCANNED, .job = "beta", .env = "prod" },
};
static const size_t run_batches[] = { 1, 1, 1, 2, 1, 2, 3 }; /* sizes, in order */

/* Appends the run; ends[i] is the file size after batch i, first[i] the index of its
 * first record. */
static void append_run(Fixture *f, uint64_t ends[], size_t first[]) {
        _cleanup_(journal_closep) Journal *j = open_ok(f, NULL);
        size_t k = 0;

        for (size_t i = 0; i < ELEMENTSOF(run_batches); i++) {
                first[i] = k;
                assert_int_equal(journal_append(j, run_records + k, run_batches[i]), 0);
                k += run_batches[i];
                ends[i] = journal_size(j);
        }
        assert_int_equal(k, ELEMENTSOF(run_records));
        assert_int_equal(journal_size(j), file_size(f->path));
}

/* No pending step forgotten: every ROTATED that replaced a token comes with the RETIRE
 * of that token. */
static void assert_no_orphan(const Collector *c) {
        for (size_t i = 0; i < c->n; i++) {
                const char *old = strstr(c->items[i], " old=[");
                char want[128];
                bool found = false;

                const char *end;

                if (strncmp(c->items[i], "rotated ", 8) != 0 || !old)
                        continue;
                end = strchr(old + 6, ']');
                assert_non_null(end);
                snprintf(want, sizeof(want), " id=[%.*s]", (int) (end - old - 6), old + 6);
                for (size_t k = 0; k < c->n; k++)
                        if (strncmp(c->items[k], "retire ", 7) == 0 && strstr(c->items[k], want))
                                found = true;
                assert_true(found);
        }
}

/* Cut the journal of a run at every byte offset inside its last two batches (with and
 * without NULs after the cut, as a file system may leave them), and open it, read-only
 * and for appending: the records replayed are exactly those of the complete batches
 * before the cut, never a part of a batch; the file is not changed by the opens; the
 * next append cuts the torn batch off and lands right after the last complete one. */
static void test_batch_every_cut(void **state) {
        Fixture *f = *state;
        const size_t nb = ELEMENTSOF(run_batches);
        const JournalRecord more[] = {
                { .type = JOURNAL_REVOKED, .env = "prod", .id = "dt0c01.A1", .at = 1700000000001000 },
                { .type = JOURNAL_FORGET, .job = "gamma" },
        };
        _cleanup_free_ char *full = NULL;
        uint64_t ends[ELEMENTSOF(run_batches)];
        size_t first[ELEMENTSOF(run_batches)], full_size, checked = 0;

        append_run(f, ends, first);
        full = read_file(f->path, &full_size);
        assert_int_equal(full_size, ends[nb - 1]);

        for (size_t cut = ends[nb - 3]; cut <= full_size; cut++)
                for (int nuls = 0; nuls < 2; nuls++) {
                        _cleanup_free_ char *data = NULL, *error = NULL;
                        char zeros[64] = {};
                        size_t size, n_expected = 0;
                        uint64_t good = strlen(HEADER);
                        struct timespec mtime;
                        Collector c = {};

                        for (size_t i = 0; i < nb; i++)
                                if (ends[i] <= cut) {
                                        good = ends[i];
                                        n_expected = first[i] + run_batches[i];
                                }
                        if (nuls && cut == full_size)
                                continue;
                        replace_file(f->path, full, cut);
                        if (nuls)
                                append_file(f->path, zeros, sizeof(zeros));
                        mtime = file_mtime(f->path);

                        assert_int_equal(journal_open_readonly(f->dir, collect, &c, &error), 0);
                        assert_null(error);
                        assert_records(&c, run_records, n_expected);
                        assert_no_orphan(&c);
                        collector_done(&c);

                        Journal *j = open_ok(f, &c);
                        assert_records(&c, run_records, n_expected);
                        assert_no_orphan(&c);
                        assert_int_equal(journal_n_records(j), n_expected);
                        assert_int_equal(journal_size(j), good);
                        data = read_file(f->path, &size);
                        assert_int_equal(size, cut + (nuls ? sizeof(zeros) : 0));
                        assert_memory_equal(data, full, cut);
                        assert_same_time(mtime, file_mtime(f->path));
                        collector_done(&c);

                        assert_int_equal(journal_append(j, more, 2), 0);
                        assert_int_equal(journal_size(j), file_size(f->path));
                        journal_close(j);

                        j = open_ok(f, &c);
                        assert_int_equal(c.n, n_expected + 2);
                        assert_records_from(&c, 0, run_records, n_expected);
                        assert_records_from(&c, n_expected, more, 2);
                        journal_close(j);
                        collector_done(&c);
                        free(data);
                        data = read_file(f->path, &size);
                        assert_memory_equal(data, full, good); /* nothing before the cut changed */
                        checked++;
                }
        /* Both batches, every byte of them, with and without NULs. */
        assert_int_equal(checked, 2 * (full_size - ends[nb - 3]) + 1);
}

/* A batch whose lines all made it but the last: dropped as a whole. */
static void test_batch_torn_whole_lines(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *l1 = make_line("rotated job=alpha env=prod id=dt0c01.C old=dt0c01.B batch=1/2"),
                            *l2 = make_line("retire job=x env=prod id=dt0c01.L1 batch=1/3"),
                            *l3 = make_line("retire job=x env=prod id=dt0c01.L2 batch=2/3");
        const char *tails[][3] = {
                { l1, NULL },
                { l2, NULL },
                { l2, l3, NULL },
                { l2, l3, "garbage" },  /* and the third one half */
        };

        for (size_t i = 0; i < ELEMENTSOF(tails); i++) {
                _cleanup_free_ char *tail = strdup_printf("%s%s%s", tails[i][0], tails[i][1] ?: "",
                                                          tails[i][1] ? tails[i][2] ?: "" : "");
                (void) unlink(f->path);
                check_torn(f, tail, strlen(tail));
        }
}

/* Garbage after a complete batch, without a newline: a torn tail. */
static void test_batch_garbage_after(void **state) {
        Fixture *f = *state;
        uint64_t ends[ELEMENTSOF(run_batches)];
        size_t first[ELEMENTSOF(run_batches)];
        _cleanup_free_ char *error = NULL;
        Collector c = {};

        append_run(f, ends, first);
        append_file(f->path, "0badf00d rotated job=x", 22);
        assert_int_equal(journal_open_readonly(f->dir, collect, &c, &error), 0);
        assert_records(&c, run_records, ELEMENTSOF(run_records));
        collector_done(&c);
        Journal *j = open_ok(f, &c);
        assert_records(&c, run_records, ELEMENTSOF(run_records));
        assert_int_equal(journal_size(j), ends[ELEMENTSOF(run_batches) - 1]);
        assert_int_equal(file_size(f->path), ends[ELEMENTSOF(run_batches) - 1] + 22);
        journal_close(j);
        collector_done(&c);
}

/* A batch cut short by anything but the end of the file is no crash: damage, refused
 * with the offset of the line where the batch should have gone on. */
static void test_batch_missing_end_in_middle(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *rot = make_line("rotated job=a env=p id=N old=O batch=1/2"),
                            *ret2 = make_line("retire job=a env=p id=O batch=2/2"),
                            *l1 = make_line("retire job=a env=p id=L1 batch=1/3"),
                            *l2 = make_line("retire job=a env=p id=L2 batch=2/3"),
                            *ret23 = make_line("retire job=a env=p id=O batch=2/3"),
                            *single = make_line("deleted env=p id=X"),
                            *broken = make_line("deleted env=p id=Y");
        const struct {
                const char *lines[4];
                size_t bad;     /* index of the line at which it is refused */
                size_t batch;   /* index of the line where the broken batch starts */
                const char *what;
        } cases[] = {
                /* a batch of two, then a record of its own */
                { { rot, single }, 1, 0, "ends after record 1 of 2" },
                /* a batch of three that stops after two, then a new batch of two */
                { { l1, l2, rot, ret2 }, 2, 0, "ends after record 2 of 3" },
                /* a batch of two going on as a batch of three */
                { { rot, ret23 }, 1, 0, "ends after record 1 of 2" },
                /* a new batch starting inside one */
                { { single, l1, l1 }, 2, 1, "ends after record 1 of 3" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *expected = NULL;
                uint64_t off[4] = {};

                (void) unlink(f->path);
                append_five(f);
                for (size_t k = 0; k < 4 && cases[i].lines[k]; k++) {
                        off[k] = file_size(f->path);
                        append_file(f->path, cases[i].lines[k], strlen(cases[i].lines[k]));
                }
                expected = strdup_printf("%s: offset %" PRIu64 ": the batch at offset %" PRIu64 " %s", f->path,
                                         off[cases[i].bad], off[cases[i].batch], cases[i].what);
                open_fails(f, -EBADMSG, expected);
                /* Intact batches after it do not change that. */
                append_file(f->path, single, strlen(single));
                open_fails(f, -EBADMSG, expected);
        }

        /* An incomplete batch, a broken line, then an intact one: damage at the broken line. */
        {
                _cleanup_free_ char *expected = NULL;
                uint64_t off;

                (void) unlink(f->path);
                append_five(f);
                append_file(f->path, l1, strlen(l1));
                off = file_size(f->path);
                broken[3] ^= 0x01;
                append_file(f->path, broken, strlen(broken));
                append_file(f->path, single, strlen(single));
                expected = strdup_printf("%s: offset %" PRIu64 ": checksum mismatch", f->path, off);
                open_fails(f, -EBADMSG, expected);
        }
}

/* What journal_append() writes: batch=K/N on each line of a batch of two or more, none
 * on a batch of one; and a failed append of a batch leaves no part of it. */
static void test_batch_markers_written(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *data = NULL;
        size_t size, lines = 0;
        const char *p;

        Journal *j = open_ok(f, NULL);
        assert_int_equal(journal_append(j, five, 3), 0);
        assert_int_equal(journal_append(j, &five[3], 1), 0);
        assert_int_equal(journal_append(j, &five[3], 2), 0);
        journal_close(j);
        data = read_file(f->path, &size);
        p = data + strlen(HEADER);
        for (const char *nl; (nl = strchr(p, '\n')); p = nl + 1, lines++) {
                static const char *const suffix[] = { " batch=1/3", " batch=2/3", " batch=3/3", "",
                                                      " batch=1/2", " batch=2/2" };
                size_t n = strlen(suffix[lines]);
                if (n > 0)
                        assert_memory_equal(nl - n, suffix[lines], n);
                else
                        assert_null(memmem(p, (size_t) (nl - p), "batch=", 6));
        }
        assert_int_equal(lines, 6);
}

/* The read-only open: works beside a locked, running journal, changes nothing (bytes,
 * mtime, no files created), ignores a torn tail, does not upgrade. */
static void test_readonly(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *before = NULL, *after = NULL, *error = NULL, *expected = NULL,
                            *nodir = strdup_printf("%s/nowhere", f->tmp);
        size_t size_before, size_after;
        struct timespec mtime;
        Collector c = { .fail_at = 0 };
        Journal *j;

        /* No state directory, no journal: -ENOENT, and nothing is created. */
        assert_int_equal(journal_open_readonly(nodir, collect, &c, &error), -ENOENT);
        assert_non_null(error);
        assert_false(file_exists(nodir));
        free(error);
        error = NULL;
        assert_int_equal(mkdir(f->dir, 0700), 0);
        assert_int_equal(journal_open_readonly(f->dir, collect, &c, &error), -ENOENT);
        expected = strdup_printf("%s: no journal", f->path);
        assert_string_equal(error, expected);
        assert_false(file_exists(f->path));
        assert_false(file_exists(f->path_tmp));
        free(error);
        error = NULL;

        /* Beside the lock holder, with a torn batch at the end. */
        j = open_ok(f, NULL);
        assert_int_equal(journal_append(j, five, 5), 0);
        {
                _cleanup_free_ char *torn = make_line("retire env=prod id=dt0c01.X batch=1/2");
                append_file(f->path, torn, strlen(torn));
        }
        before = read_file(f->path, &size_before);
        mtime = file_mtime(f->path);
        assert_int_equal(journal_open_readonly(f->dir, collect, &c, &error), 0);
        assert_null(error);
        assert_records(&c, five, 5);
        collector_done(&c);
        after = read_file(f->path, &size_after);
        assert_int_equal(size_before, size_after);
        assert_memory_equal(before, after, size_before);
        assert_same_time(mtime, file_mtime(f->path));
        assert_false(file_exists(f->path_tmp));
        assert_false(file_exists(f->path_new));
        /* The lock holder goes on appending. */
        assert_int_equal(journal_append(j, five, 1), 0);
        journal_close(j);

        /* A replay error is returned as is. */
        c.fail_at = 2;
        assert_int_equal(journal_open_readonly(f->dir, collect, &c, &error), -ENOTRECOVERABLE);
        assert_non_null(strstr(error, "replaying create record failed"));
        collector_done(&c);
        free(error);
        error = NULL;

        /* Leftovers of others are left alone. */
        replace_file(f->path_tmp, "x", 1);
        replace_file(f->path_new, "y", 1);
        assert_int_equal(journal_open_readonly(f->dir, NULL, NULL, &error), 0);
        assert_true(file_exists(f->path_tmp));
        assert_true(file_exists(f->path_new));
        assert_int_equal(unlink(f->path_tmp), 0);
        assert_int_equal(unlink(f->path_new), 0);

        /* Not a regular file: refused, without hanging on a FIFO. */
        assert_int_equal(unlink(f->path), 0);
        assert_int_equal(mkfifo(f->path, 0600), 0);
        assert_int_equal(journal_open_readonly(f->dir, NULL, NULL, &error), -EBADMSG);
        free(expected);
        expected = strdup_printf("%s: not a regular file", f->path);
        assert_string_equal(error, expected);
}

/* A fresh start creates the journal through journal.tmp; a journal.tmp left by a
 * creation that was interrupted is removed, with or without a journal. */
static void test_create_leftover_tmp(void **state) {
        Fixture *f = *state;
        _cleanup_free_ char *data = NULL;
        size_t size;
        Collector c = {};

        assert_int_equal(mkdir(f->dir, 0700), 0);
        replace_file(f->path_tmp, "dtrotated-jour", 14);
        Journal *j = open_ok(f, &c);
        assert_int_equal(c.n, 0);
        assert_false(file_exists(f->path_tmp));
        data = read_file(f->path, &size);
        assert_string_equal(data, HEADER);
        assert_int_equal(journal_append(j, five, 5), 0);
        journal_close(j);

        replace_file(f->path_tmp, HEADER, strlen(HEADER));
        j = open_ok(f, &c);
        assert_records(&c, five, 5);
        assert_false(file_exists(f->path_tmp));
        journal_close(j);
        collector_done(&c);
}

/* Journals of version 1 (no batches: every line is one) are still read, and rewritten
 * as version 2 by the read-write open only. */
static void test_version1(void **state) {
        Fixture *f = *state;
        const char *payloads[] = {
                "job job=alpha env=prod id=dt0c01.AAAA created=1700000000000000 expires=never",
                "create job=alpha env=prod old=dt0c01.AAAA at=1700000000000001",
                "delivered job=alpha env=prod id=dt0c01.BBBB old=dt0c01.AAAA",
                "rotated job=alpha env=prod id=dt0c01.BBBB old=dt0c01.AAAA created=1700000000000002 expires=1800000000000000",
                "retire job=alpha env=prod id=dt0c01.AAAA at=1700000000000003 grace=604800000000",
        };
        _cleanup_free_ char *v1 = NULL, *data = NULL, *error = NULL, *expected = NULL;
        size_t v1_size, size;
        struct timespec mtime;
        Collector c = {};
        Journal *j;

        assert_int_equal(mkdir(f->dir, 0700), 0);
        replace_file(f->path, HEADER_V1, strlen(HEADER_V1));
        for (size_t i = 0; i < ELEMENTSOF(payloads); i++) {
                _cleanup_free_ char *line = make_line(payloads[i]);
                append_file(f->path, line, strlen(line));
        }
        append_file(f->path, "0123", 4); /* a torn last record */
        v1 = read_file(f->path, &v1_size);
        mtime = file_mtime(f->path);

        /* Read-only: replayed, not touched. */
        assert_int_equal(journal_open_readonly(f->dir, collect, &c, &error), 0);
        assert_records(&c, five, 5);
        collector_done(&c);
        data = read_file(f->path, &size);
        assert_int_equal(size, v1_size);
        assert_memory_equal(data, v1, size);
        assert_same_time(mtime, file_mtime(f->path));
        free(data);

        /* Read-write: replayed, then rewritten as version 2, torn tail gone. */
        j = open_ok(f, &c);
        assert_records(&c, five, 5);
        collector_done(&c);
        assert_false(file_exists(f->path_new));
        data = read_file(f->path, &size);
        assert_memory_equal(data, HEADER, strlen(HEADER));
        assert_int_equal(size, v1_size - 4); /* same lines, same length */
        assert_memory_equal(data + strlen(HEADER), v1 + strlen(HEADER_V1), size - strlen(HEADER));
        assert_int_equal(journal_size(j), size);
        assert_int_equal(journal_n_records(j), 5);
        assert_int_equal(journal_append(j, five, 2), 0);
        journal_close(j);
        j = open_ok(f, &c);
        assert_int_equal(c.n, 7);
        journal_close(j);
        collector_done(&c);

        /* Version 1 knows no batch=: damage there, refused and left as it is. */
        replace_file(f->path, HEADER_V1, strlen(HEADER_V1));
        {
                _cleanup_free_ char *line = make_line("forget job=a batch=1/2");
                append_file(f->path, line, strlen(line));
        }
        expected = strdup_printf("%s: offset %zu: unknown key 'batch'", f->path, strlen(HEADER_V1));
        open_fails(f, -EBADMSG, expected);
}

/* Compaction after batches: one record per batch, the whole state; and batches
 * appended to the compacted file work as ever. */
static void test_compact_batches(void **state) {
        Fixture *f = *state;
        uint64_t ends[ELEMENTSOF(run_batches)];
        size_t first[ELEMENTSOF(run_batches)];
        EmitState e = { .records = run_records + 3, .n = 5 };
        _cleanup_free_ char *data = NULL;
        size_t size;
        Collector c = {};

        append_run(f, ends, first);
        Journal *j = open_ok(f, NULL);
        assert_int_equal(journal_compact(j, emit, &e), 0);
        assert_int_equal(journal_append(j, run_records + 8, 3), 0);
        journal_close(j);
        data = read_file(f->path, &size);
        assert_memory_equal(data, HEADER, strlen(HEADER));
        j = open_ok(f, &c);
        assert_int_equal(c.n, 8);
        assert_records_from(&c, 0, run_records + 3, 5);
        assert_records_from(&c, 5, run_records + 8, 3);
        journal_close(j);
        collector_done(&c);
}

static double elapsed_ms(const struct timespec *a, const struct timespec *b) {
        return (double) (b->tv_sec - a->tv_sec) * 1e3 + (double) (b->tv_nsec - a->tv_nsec) / 1e6;
}

typedef struct ManyState {
        JournalRecord *records;
        size_t n;
} ManyState;

static int emit_many(Journal *j, void *userdata) {
        ManyState *m = userdata;

        for (size_t i = 0; i < m->n; i++) {
                int r = journal_compact_add(j, &m->records[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* 30,000 records: replay and compaction must be fast. Measured on the dev box (2 vCPU,
 * -O2): ~2.1 MB file, replay ~9 ms, compaction ~8 ms plus the fsyncs. */
static void test_many_records(void **state) {
        Fixture *f = *state;
        const size_t N = 30000, BATCH = 1000;
        _cleanup_free_ JournalRecord *r = calloc(N, sizeof(JournalRecord));
        _cleanup_free_ char *names = calloc(N, 32);
        ManyState m = { r, N };
        struct timespec t0, t1, t2;
        size_t n = 0;
        Journal *j;

        assert_non_null(r);
        assert_non_null(names);
        for (size_t i = 0; i < N; i++) {
                snprintf(names + i * 32, 32, "service-%05zu", i);
                r[i] = (JournalRecord) { .type = JOURNAL_ROTATED, .job = names + i * 32, .env = "production",
                                         .old_id = "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX",
                                         .id = "dt0c01.ZYXWVUTSRQPONMLKJIHGFEDCBA",
                                         .created = 1700000000000000 + i, .expires = 1800000000000000 };
        }
        j = open_ok(f, NULL);
        for (size_t i = 0; i < N; i += BATCH)
                assert_int_equal(journal_append(j, r + i, BATCH), 0);
        journal_close(j);

        clock_gettime(CLOCK_MONOTONIC, &t0);
        {
                _cleanup_free_ char *error = NULL;
                assert_int_equal(journal_open(f->dir, count, &n, &j, &error), 0);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        assert_int_equal(n, N);
        assert_int_equal(journal_compact(j, emit_many, &m), 0);
        clock_gettime(CLOCK_MONOTONIC, &t2);
        assert_int_equal(journal_n_records(j), N);
        assert_int_equal(journal_size(j), file_size(f->path));
        print_message("%zu records, %" PRIu64 " bytes: open+replay %.1f ms, compaction %.1f ms\n", N,
                      journal_size(j), elapsed_ms(&t0, &t1), elapsed_ms(&t1, &t2));
        journal_close(j);
        assert_true(elapsed_ms(&t0, &t1) < 2000); /* generous: valgrind, slow CI */

        /* The compacted file replays the same records. */
        Collector c = {};
        j = open_ok(f, &c);
        assert_int_equal(c.n, N);
        {
                _cleanup_free_ char *first = describe(&r[0]), *last = describe(&r[N - 1]);
                assert_string_equal(c.items[0], first);
                assert_string_equal(c.items[N - 1], last);
        }
        journal_close(j);
        collector_done(&c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
                T(test_crc_helper),
                T(test_crc_all_lengths),
                T(test_type_names),
                T(test_new_journal),
                T(test_missing_parent),
                T(test_golden_format),
                T(test_roundtrip_all_types),
                T(test_append_batches_in_order),
                T(test_append_rejects_invalid),
                T(test_torn_half_line),
                T(test_torn_bad_crc_last),
                T(test_torn_no_newline),
                T(test_torn_trailing_nuls),
                T(test_torn_garbage_lines),
                T(test_corrupt_middle),
                T(test_corrupt_middle_lost_newline),
                T(test_corrupt_then_garbage_then_valid),
                T(test_bad_header),
                T(test_empty_or_partial_header),
                T(test_semantic_damage),
                T(test_locked),
                T(test_replay_error),
                T(test_compact),
                T(test_compact_retire_unused),
                T(test_compact_failure),
                T(test_compact_restore_records),
                T(test_stale_journal_new),
                T(test_journal_new_without_journal),
                T(test_append_failure_rollback),
                T(test_append_lazy),
                T(test_append_enospc),
                T(test_many_records),
                T(test_batch_every_cut),
                T(test_batch_torn_whole_lines),
                T(test_batch_garbage_after),
                T(test_batch_missing_end_in_middle),
                T(test_batch_markers_written),
                T(test_readonly),
                T(test_create_leftover_tmp),
                T(test_version1),
                T(test_compact_batches),
#undef T
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}

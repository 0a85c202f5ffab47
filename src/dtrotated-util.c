/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <search.h>
#include <stdarg.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "dtrotated-util.h"

int parse_duration(const char *s, usec_t *ret) {
        static const struct {
                const char *suffix;
                usec_t usec;
        } units[] = {
                { "ms", USEC_PER_MSEC },  { "s", USEC_PER_SEC },  { "m", USEC_PER_MINUTE },
                { "h", USEC_PER_HOUR },   { "d", USEC_PER_DAY },  { "w", USEC_PER_WEEK },
        };
        const char *p = s;
        uint64_t n = 0;

        if (!s || !isdigit((unsigned char) *p))
                return -EINVAL;
        for (; isdigit((unsigned char) *p); p++) {
                if (n > (UINT64_MAX - 9) / 10)
                        return -ERANGE;
                n = n * 10 + (uint64_t) (*p - '0');
        }
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (streq(p, units[i].suffix)) {
                        if (n > (USEC_INFINITY - 1) / units[i].usec)
                                return -ERANGE;
                        *ret = n * units[i].usec;
                        return 0;
                }
        return -EINVAL;
}

char *format_duration(char *buf, size_t size, usec_t d) {
        static const struct {
                const char *suffix;
                usec_t usec;
        } units[] = {
                { "d", USEC_PER_DAY }, { "h", USEC_PER_HOUR }, { "m", USEC_PER_MINUTE },
                { "s", USEC_PER_SEC }, { "ms", USEC_PER_MSEC },
        };
        size_t used = 0, shown = 0;

        if (d == USEC_INFINITY) {
                snprintf(buf, size, "never");
                return buf;
        }
        if (d < USEC_PER_MSEC) {
                snprintf(buf, size, "0s");
                return buf;
        }
        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(units) && shown < 2; i++) {
                usec_t n = d / units[i].usec;
                if (n == 0) {
                        if (shown > 0)
                                break; /* "2d 0h" says nothing "2d" does not */
                        continue;
                }
                int k = snprintf(buf + used, size - used, "%s%llu%s", shown ? " " : "",
                                 (unsigned long long) n, units[i].suffix);
                if (k < 0 || (size_t) k >= size - used)
                        break;
                used += (size_t) k;
                d -= n * units[i].usec;
                shown++;
        }
        return buf;
}

char *format_timestamp(char *buf, size_t size, usec_t t) {
        struct tm tm;
        time_t sec;

        if (t == USEC_INFINITY) {
                snprintf(buf, size, "never");
                return buf;
        }
        if (t == 0) {
                snprintf(buf, size, "n/a");
                return buf;
        }
        sec = (time_t) (t / USEC_PER_SEC);
        if (!gmtime_r(&sec, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                snprintf(buf, size, "@%llu", (unsigned long long) (t / USEC_PER_SEC));
        return buf;
}

static int parse_digits(const char **p, int n, int *ret) {
        int v = 0;
        for (int i = 0; i < n; i++) {
                if (!isdigit((unsigned char) (*p)[i]))
                        return -EINVAL;
                v = v * 10 + ((*p)[i] - '0');
        }
        *p += n;
        *ret = v;
        return 0;
}

static int days_in_month(int year, int mon) {
        static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

        if (mon == 2 && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0))
                return 29;
        return days[mon - 1];
}

int parse_iso8601(const char *s, usec_t *ret) {
        int year, mon, day, hour, min, sec = 0;
        usec_t frac = 0;
        long offset = 0;
        const char *p = s;
        struct tm tm = {};
        time_t t;

        if (!s)
                return -EINVAL;

        /* Plain epoch milliseconds, as the v1 API answers in practice. Overflow is
         * refused, never wrapped: a hostile answer must not turn into a small time. */
        if (*s && strspn(s, "0123456789") == strlen(s)) {
                const usec_t max = (USEC_INFINITY - 1) / USEC_PER_MSEC;
                usec_t ms = 0;
                for (; *p; p++) {
                        usec_t digit = (usec_t) (*p - '0');
                        if (ms > (max - digit) / 10)
                                return -ERANGE;
                        ms = ms * 10 + digit;
                }
                *ret = ms * USEC_PER_MSEC;
                return 0;
        }

        if (parse_digits(&p, 4, &year) < 0 || *p++ != '-' ||
            parse_digits(&p, 2, &mon) < 0 || *p++ != '-' ||
            parse_digits(&p, 2, &day) < 0 || (*p != 'T' && *p != 't' && *p != ' '))
                return -EINVAL;
        p++;
        if (parse_digits(&p, 2, &hour) < 0 || *p++ != ':' || parse_digits(&p, 2, &min) < 0)
                return -EINVAL;
        if (*p == ':') {
                p++;
                if (parse_digits(&p, 2, &sec) < 0)
                        return -EINVAL;
                if (*p == '.' || *p == ',') {
                        usec_t scale = USEC_PER_SEC / 10;
                        p++;
                        if (!isdigit((unsigned char) *p))
                                return -EINVAL;
                        for (; isdigit((unsigned char) *p); p++, scale /= 10)
                                frac += (usec_t) (*p - '0') * scale;
                }
        }
        if (*p == 'Z' || *p == 'z')
                p++;
        else if (*p == '+' || *p == '-') {
                int sign = *p == '-' ? -1 : 1, oh, om = 0;
                p++;
                if (parse_digits(&p, 2, &oh) < 0)
                        return -EINVAL;
                if (*p == ':')
                        p++;
                if (isdigit((unsigned char) *p) && parse_digits(&p, 2, &om) < 0)
                        return -EINVAL;
                if (oh > 23 || om > 59)
                        return -EINVAL;
                offset = sign * (oh * 3600L + om * 60L);
        } else
                return -EINVAL; /* no zone: ambiguous, refuse rather than guess */
        if (*p)
                return -EINVAL;
        if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hour > 23 ||
            min > 59 || sec > 60 || year < 1970)
                return -EINVAL;

        tm.tm_year = year - 1900;
        tm.tm_mon = mon - 1;
        tm.tm_mday = day;
        tm.tm_hour = hour;
        tm.tm_min = min;
        tm.tm_sec = sec;
        t = timegm(&tm);
        if (t == (time_t) -1 || t - offset < 0)
                return -EINVAL;
        *ret = (usec_t) (t - offset) * USEC_PER_SEC + frac;
        return 0;
}

static usec_t now_clock(clockid_t clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000U;
}

usec_t now_realtime(void) {
        return now_clock(CLOCK_REALTIME);
}

usec_t now_monotonic(void) {
        return now_clock(CLOCK_MONOTONIC);
}

static bool token_part_valid(const char *s, size_t len) {
        for (size_t i = 0; i < len; i++)
                if (!isascii((unsigned char) s[i]) || !isalnum((unsigned char) s[i]))
                        return false;
        return true;
}

bool token_is_legacy(const char *token) {
        size_t n;

        if (!token)
                return false;
        n = strnlen(token, TOKEN_LEGACY_MAX + 1);
        return n >= TOKEN_LEGACY_MIN && n <= TOKEN_LEGACY_MAX && token_part_valid(token, n);
}

bool token_is_valid(const char *token) {
        const char *dot1, *dot2;

        if (!token)
                return false;
        dot1 = strchr(token, '.');
        if (!dot1)
                return token_is_legacy(token);
        if (dot1 == token || !token_part_valid(token, (size_t) (dot1 - token)))
                return false;
        dot2 = strchr(dot1 + 1, '.');
        if (!dot2 || dot2 - dot1 - 1 != 24 || !token_part_valid(dot1 + 1, 24))
                return false;
        return strlen(dot2 + 1) == 64 && token_part_valid(dot2 + 1, 64);
}

char *token_public_part(char *buf, size_t size, const char *token) {
        if (token_is_legacy(token))
                snprintf(buf, size, "(legacy token)"); /* all of it is the secret */
        else if (!token_is_valid(token))
                snprintf(buf, size, "(not a token)");
        else
                snprintf(buf, size, "%.*s", (int) (strrchr(token, '.') - token), token);
        return buf;
}

const char *file_type_name(mode_t mode) {
        switch (mode & S_IFMT) {
        case S_IFREG:
                return "a regular file";
        case S_IFDIR:
                return "a directory";
        case S_IFLNK:
                return "a symbolic link";
        case S_IFIFO:
                return "a FIFO";
        case S_IFSOCK:
                return "a socket";
        case S_IFCHR:
                return "a character device";
        case S_IFBLK:
                return "a block device";
        default:
                return "of an unknown type";
        }
}

char *symlink_target(const char *path) {
        char buf[PATH_MAX];
        ssize_t n;
        char *r;

        /* The file it leads to, when that exists: the path to put in the configuration. */
        r = realpath(path, NULL);
        if (r)
                return r;
        n = readlink(path, buf, sizeof(buf) - 1);
        if (n < 0)
                return strdup("(unreadable)");
        buf[n] = 0;
        return strdup(buf);
}

/* The explanation for the last refusal, for messages that must name a link target. */
static _Thread_local char token_file_error[PATH_MAX + 128];

static const char *token_file_errorf(const char *fmt, ...) _printf_(1, 2);
static const char *token_file_errorf(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(token_file_error, sizeof(token_file_error), fmt, ap);
        va_end(ap);
        return token_file_error;
}

/* Why path is refused without opening it (a symbolic link or not a regular file):
 * -ELOOP or -EBADMSG with *ret_error set; 0 when it is a regular file; -errno. */
static int token_file_check_type(const char *path, bool follow, const char **ret_error) {
        struct stat st;

        if ((follow ? stat(path, &st) : lstat(path, &st)) < 0)
                return -errno;
        if (S_ISLNK(st.st_mode)) {
                _cleanup_free_ char *target = symlink_target(path);
                *ret_error = token_file_errorf("is a symbolic link to %s; set the path in the "
                                               "configuration to the real file",
                                               target ?: "(unknown)");
                return -ELOOP;
        }
        if (!S_ISREG(st.st_mode)) {
                *ret_error = token_file_errorf("is not a regular file (%s)", file_type_name(st.st_mode));
                return -EBADMSG;
        }
        return 0;
}

#define TOKEN_FILE_MAX 4096

int read_token_file_full(const char *path, bool follow, char **ret, const char **ret_error) {
        _cleanup_close_ int fd = -1;
        char buf[TOKEN_FILE_MAX + 2];
        size_t len = 0;
        char *start, *end;
        struct stat st;
        int r;

        *ret_error = NULL;
        /* Look before opening: a device is never opened, a FIFO never waited on. */
        r = token_file_check_type(path, follow, ret_error);
        if (r < 0)
                return r;
        fd = open(path, O_RDONLY | (follow ? 0 : O_NOFOLLOW) | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                r = -errno;
                /* Replaced since the lstat(): explain what it is now. */
                if (IN_SET(r, -ELOOP, -ENXIO) && token_file_check_type(path, follow, ret_error) < 0)
                        return r == -ENXIO ? -EBADMSG : r;
                return r;
        }
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode)) {
                *ret_error = token_file_errorf("is not a regular file (%s)", file_type_name(st.st_mode));
                return -EBADMSG;
        }
        for (;;) {
                ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        explicit_bzero(buf, sizeof(buf));
                        return r;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > TOKEN_FILE_MAX) {
                        /* Whatever this is, it is not one token: refuse it whole. */
                        explicit_bzero(buf, sizeof(buf));
                        *ret_error = "larger than 4 KiB";
                        return -EFBIG;
                }
        }
        buf[len] = 0;
        for (start = buf; *start && isspace((unsigned char) *start); start++)
                ;
        for (end = buf + len; end > start && isspace((unsigned char) end[-1]); end--)
                ;
        *end = 0;
        if (start == end)
                *ret_error = "empty";
        else if (memchr(start, 0, (size_t) (end - start)))
                *ret_error = "contains a NUL byte";
        else if (strpbrk(start, " \t\r\n\v\f"))
                *ret_error = "holds more than one line or word: it must hold exactly one token";
        else if (!token_is_valid(start))
                *ret_error = "does not hold a token of the form dt0c01.<24 chars>.<64 chars> "
                             "(or a legacy token of 16 to 128 letters and digits)";
        if (*ret_error) {
                explicit_bzero(buf, sizeof(buf));
                return -EBADMSG;
        }
        *ret = strdup(start);
        explicit_bzero(buf, sizeof(buf));
        return *ret ? 0 : -ENOMEM;
}

int read_token_file(const char *path, char **ret, const char **ret_error) {
        return read_token_file_full(path, false, ret, ret_error);
}

char **strv_free(char **l) {
        if (l)
                for (char **i = l; *i; i++)
                        free(*i);
        free(l);
        return NULL;
}

size_t strv_length(char * const *l) {
        size_t n = 0;
        if (l)
                while (l[n])
                        n++;
        return n;
}

char **strv_copy(char * const *l) {
        size_t n = strv_length(l);
        char **c = calloc(n + 1, sizeof(char *));
        if (!c)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (!(c[i] = strdup(l[i])))
                        return strv_free(c);
        return c;
}

bool strv_equal(char * const *a, char * const *b) {
        size_t n = strv_length(a);
        if (n != strv_length(b))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!streq(a[i], b[i]))
                        return false;
        return true;
}

bool strv_contains(char * const *l, const char *s) {
        if (l)
                for (char * const *i = l; *i; i++)
                        if (streq(*i, s))
                                return true;
        return false;
}

int strv_push(char ***l, char *s) {
        size_t n = strv_length(*l);
        char **c = realloc(*l, (n + 2) * sizeof(char *));
        if (!c)
                return -ENOMEM;
        c[n] = s;
        c[n + 1] = NULL;
        *l = c;
        return 0;
}

char *dirname_malloc(const char *path) {
        const char *slash = strrchr(path, '/');
        if (!slash)
                return strdup(".");
        if (slash == path)
                return strdup("/");
        return strndup(path, (size_t) (slash - path));
}

int fsync_parent_dir(const char *path) {
        _cleanup_free_ char *dir = dirname_malloc(path);
        _cleanup_close_ int fd = -1;

        if (!dir)
                return -ENOMEM;
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

uint64_t random_u64(void) {
        uint64_t v;
        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t) sizeof(v))
                v = now_monotonic() ^ ((uint64_t) getpid() << 32); /* jitter only, not secrets */
        return v;
}

char *strdup_printf(const char *fmt, ...) {
        va_list ap;
        char *s;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        return s;
}

typedef struct StrCount {
        unsigned n;
        const char *key;             /* s, or the string looked up */
        char s[];
} StrCount;

static int strcount_cmp(const void *a, const void *b) {
        return strcmp(((const StrCount *) a)->key, ((const StrCount *) b)->key);
}

static StrCount *strcount_find(void *const *root, const char *s) {
        StrCount key = { .key = s }, *const *p = tfind(&key, root, strcount_cmp);

        return p ? *p : NULL;
}

int strcount_ref(void **root, const char *s) {
        StrCount *u;
        size_t len;

        if (!s)
                return 0;
        u = strcount_find(root, s);
        if (u) {
                u->n++;
                return 0;
        }
        len = strlen(s);
        u = malloc(sizeof(StrCount) + len + 1);
        if (!u)
                return -ENOMEM;
        u->n = 1;
        memcpy(u->s, s, len + 1);
        u->key = u->s;
        if (!tsearch(u, root, strcount_cmp)) {
                free(u);
                return -ENOMEM;
        }
        return 0;
}

void strcount_unref(void **root, const char *s) {
        StrCount *u = s ? strcount_find(root, s) : NULL;

        if (!u || --u->n > 0)
                return;
        (void) tdelete(u, root, strcount_cmp);
        free(u);
}

unsigned strcount_get(void *const *root, const char *s) {
        StrCount *u = s ? strcount_find(root, s) : NULL;

        return u ? u->n : 0;
}

void strcount_free(void **root) {
        tdestroy(*root, free);
        *root = NULL;
}

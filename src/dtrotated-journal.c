/* SPDX-License-Identifier: MIT */
/*
 * The journal: DIR/journal, an append-only text file.
 *
 * FORMAT
 *
 *   dtrotated-journal 1
 *   CCCCCCCC TYPE key=value key=value ...
 *   ...
 *
 * The first line is the fixed header "dtrotated-journal 1" (1 is the format version);
 * it carries no checksum. Every further line is one record, terminated by '\n' and at
 * most 4096 bytes long including the '\n':
 *
 *   CCCCCCCC  the CRC-32 (IEEE 802.3, as in zlib) of everything after the first space
 *             up to, not including, the '\n', as 8 lowercase hex digits
 *   TYPE      job, create, delivered, rotated, retire, revoked, deleted, scan, scanned
 *             or forget
 *   key=value one field per key the record carries, separated by single spaces, in the
 *             order job= env= id= old= name= at= created= expires= grace= (readers
 *             accept any order; a key appears at most once)
 *
 * job, env, id, old and name are strings: every byte outside 0x21..0x7e, and '%' and
 * '=', is written as %XX (two uppercase hex digits; readers accept either case), so a
 * value never contains a space and may be any byte string without NUL. An empty string
 * is written as "key=" and differs from an absent key.
 * at, created, expires and grace are times in microseconds, in decimal ("never" for the
 * largest value, 2^64-1, meaning no expiry). A time of 0 is not written: an absent time
 * key means 0.
 *
 *   type       required keys       optional keys
 *   job        job env id          created expires
 *   create     job env             old at
 *   delivered  job env id          old created expires
 *   rotated    job env id          old created expires
 *   retire     env id              job at grace
 *   revoked    env id              at
 *   deleted    env id
 *   scan       job env name        at
 *   scanned    job env
 *   forget     job
 *
 * Any other key in a record of that type, an unknown type or key, a missing required
 * key, a bad number or escape, a byte outside 0x20..0x7e, or a wrong checksum is
 * damage. journal_append() refuses (-EINVAL) to write a record that would be damage.
 *
 * WRITING: a batch of records is appended with one write() at the end of the file and
 * made durable with fdatasync() before journal_append() returns; a failed append is
 * truncated away again. Compaction writes the live records to DIR/journal.new, fsyncs
 * it, renames it over DIR/journal and fsyncs DIR. DIR itself is flock()ed for as long
 * as the journal is open, so one instance at a time.
 *
 * READING: the whole file is checked before any record is replayed. A crash during an
 * append can only leave a torn last record: an unterminated last line, or lines at the
 * end whose checksum does not match (half a record, NUL bytes, garbage). When no intact
 * line (one with a matching checksum) follows the first such line, the tail is torn: it
 * is dropped with a warning and the file truncated to the last good record. Anything
 * else (a bad line followed by an intact one, or a line whose checksum matches but whose
 * content is wrong, which no crash produces) is damage: the journal is refused and left
 * untouched. A file that holds nothing but a part of the header (possibly followed by NUL
 * bytes) was being created when the machine went down, and is written afresh. A
 * journal.new found at start-up is the leftover of an interrupted compaction and is
 * removed (journal is still authoritative); a journal.new without a journal is refused.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <zlib.h>

#include "dtrotated-journal.h"
#include "dtrotated-log.h"
#include "dtrotated-util.h"

#define JOURNAL_HEADER "dtrotated-journal 1\n"
#define JOURNAL_HEADER_PREFIX "dtrotated-journal "
#define JOURNAL_LINE_MAX 4096                   /* bytes, including the '\n' */
#define JOURNAL_FILE_MAX ((size_t) 1 << 30)     /* refuse to read more than 1 GiB */
#define COMPACT_CHUNK ((size_t) 256 * 1024)

/* CRC-32 (IEEE 802.3) from zlib, which libcurl links anyway. */
static uint32_t crc32_ieee(const void *data, size_t n) {
        return (uint32_t) crc32_z(crc32_z(0L, Z_NULL, 0), data, n);
}

typedef struct Buffer {
        char *data;
        size_t size;
        size_t allocated;
} Buffer;

static void buffer_done(Buffer *b) {
        free(b->data);
        *b = (Buffer) {};
}

static int buffer_reserve(Buffer *b, size_t extra) {
        size_t need, a;
        char *p;

        if (extra > SIZE_MAX / 4 - b->size)
                return -ENOMEM;
        need = b->size + extra;
        if (need <= b->allocated)
                return 0;
        a = MAX(need, MAX(b->allocated * 2, (size_t) 4096));
        p = realloc(b->data, a);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->allocated = a;
        return 0;
}

static int buffer_append(Buffer *b, const void *data, size_t n) {
        int r = buffer_reserve(b, n);
        if (r < 0)
                return r;
        memcpy(b->data + b->size, data, n);
        b->size += n;
        return 0;
}

struct Journal {
        char *path;             /* "DIR/journal", for messages */
        int dir_fd;             /* holds the flock() */
        int fd;
        uint64_t size;
        size_t n_records;
        bool dirty_tail;        /* a failed append could not be cut off again */
        bool dir_unsynced;      /* a compaction's rename is not known to be durable */
        /* While journal_compact() runs: */
        int compact_fd;
        Buffer compact_buf;
        uint64_t compact_size;  /* bytes written to compact_fd so far */
        size_t compact_n;
        int compact_error;      /* first failure of journal_compact_add() */
};

typedef enum Key {
        KEY_JOB,
        KEY_ENV,
        KEY_ID,
        KEY_OLD,
        KEY_NAME,
        KEY_AT,         /* the time keys come last, see key_is_time() */
        KEY_CREATED,
        KEY_EXPIRES,
        KEY_GRACE,
        _KEY_MAX,
} Key;

#define K(k) (1U << (k))

static const struct {
        const char *name;
        size_t offset;  /* of the field in JournalRecord */
} keys[_KEY_MAX] = {
        [KEY_JOB]     = { "job",     offsetof(JournalRecord, job) },
        [KEY_ENV]     = { "env",     offsetof(JournalRecord, env) },
        [KEY_ID]      = { "id",      offsetof(JournalRecord, id) },
        [KEY_OLD]     = { "old",     offsetof(JournalRecord, old_id) },
        [KEY_NAME]    = { "name",    offsetof(JournalRecord, name) },
        [KEY_AT]      = { "at",      offsetof(JournalRecord, at) },
        [KEY_CREATED] = { "created", offsetof(JournalRecord, created) },
        [KEY_EXPIRES] = { "expires", offsetof(JournalRecord, expires) },
        [KEY_GRACE]   = { "grace",   offsetof(JournalRecord, grace) },
};

static const struct {
        const char *name;
        unsigned required;
        unsigned optional;      /* an absent time is 0, an absent string NULL */
} types[_JOURNAL_TYPE_MAX] = {
        [JOURNAL_JOB]       = { "job",       K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_CREATED) | K(KEY_EXPIRES) },
        [JOURNAL_CREATE]    = { "create",    K(KEY_JOB) | K(KEY_ENV), K(KEY_OLD) | K(KEY_AT) },
        [JOURNAL_DELIVERED] = { "delivered", K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_OLD) | K(KEY_CREATED) | K(KEY_EXPIRES) },
        [JOURNAL_ROTATED]   = { "rotated",   K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_OLD) | K(KEY_CREATED) | K(KEY_EXPIRES) },
        [JOURNAL_RETIRE]    = { "retire",    K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_JOB) | K(KEY_AT) | K(KEY_GRACE) },
        [JOURNAL_REVOKED]   = { "revoked",   K(KEY_ENV) | K(KEY_ID), K(KEY_AT) },
        [JOURNAL_DELETED]   = { "deleted",   K(KEY_ENV) | K(KEY_ID), 0 },
        [JOURNAL_SCAN]      = { "scan",      K(KEY_JOB) | K(KEY_ENV) | K(KEY_NAME), K(KEY_AT) },
        [JOURNAL_SCANNED]   = { "scanned",   K(KEY_JOB) | K(KEY_ENV), 0 },
        [JOURNAL_FORGET]    = { "forget",    K(KEY_JOB), 0 },
};

const char *journal_type_to_string(JournalType t) {
        if ((unsigned) t >= _JOURNAL_TYPE_MAX)
                return NULL;
        return types[t].name;
}

static bool key_is_time(Key k) {
        return k >= KEY_AT;
}

static const char *record_string(const JournalRecord *r, Key k) {
        return *(const char * const *) ((const uint8_t *) r + keys[k].offset);
}

static usec_t record_time(const JournalRecord *r, Key k) {
        return *(const usec_t *) ((const uint8_t *) r + keys[k].offset);
}

static void record_set_string(JournalRecord *r, Key k, const char *s) {
        *(const char **) ((uint8_t *) r + keys[k].offset) = s;
}

static void record_set_time(JournalRecord *r, Key k, usec_t t) {
        *(usec_t *) ((uint8_t *) r + keys[k].offset) = t;
}

static bool record_has(const JournalRecord *r, Key k) {
        return key_is_time(k) ? record_time(r, k) != 0 : record_string(r, k) != NULL;
}

/* The one definition of a valid record, for writing and for replay alike, so that
 * nothing gets written that replay would refuse. */
static int record_check(const JournalRecord *r, char *err, size_t err_size) {
        unsigned allowed;

        if ((unsigned) r->type >= _JOURNAL_TYPE_MAX) {
                snprintf(err, err_size, "unknown record type %d", (int) r->type);
                return -EINVAL;
        }
        allowed = types[r->type].required | types[r->type].optional;
        for (Key k = 0; k < _KEY_MAX; k++) {
                bool has = record_has(r, k);

                if (!has && (types[r->type].required & K(k))) {
                        snprintf(err, err_size, "%s record without %s=", types[r->type].name,
                                 keys[k].name);
                        return -EINVAL;
                }
                if (has && !(allowed & K(k))) {
                        snprintf(err, err_size, "%s= not allowed in a %s record", keys[k].name,
                                 types[r->type].name);
                        return -EINVAL;
                }
        }
        return 0;
}

static bool byte_needs_escape(uint8_t c) {
        return c < 0x21 || c > 0x7e || c == '%' || c == '=';
}

static void write_hex32(char *p, uint32_t v) {
        static const char hex[] = "0123456789abcdef";

        for (int i = 7; i >= 0; i--, v >>= 4)
                p[i] = hex[v & 0xf];
}

/* Appends one complete line. -E2BIG if it would exceed JOURNAL_LINE_MAX; the buffer is
 * unchanged on failure. The record must have passed record_check(). */
static int serialize_record(Buffer *b, const JournalRecord *r) {
        static const char hex[] = "0123456789ABCDEF";
        size_t need = 9 + strlen(types[r->type].name) + 1, start = b->size, payload;
        char *p, *line;
        int k;

        for (Key key = 0; key < _KEY_MAX; key++) {
                if (!record_has(r, key))
                        continue;
                need += 1 + strlen(keys[key].name) + 1;
                if (key_is_time(key))
                        need += 20;
                else {
                        size_t l = strlen(record_string(r, key));
                        if (l >= JOURNAL_LINE_MAX)
                                return -E2BIG;
                        need += 3 * l;
                }
        }
        k = buffer_reserve(b, need);
        if (k < 0)
                return k;

        line = b->data + start;
        p = stpcpy(line + 9, types[r->type].name);
        for (Key key = 0; key < _KEY_MAX; key++) {
                if (!record_has(r, key))
                        continue;
                *p++ = ' ';
                p = stpcpy(p, keys[key].name);
                *p++ = '=';
                if (key_is_time(key)) {
                        usec_t t = record_time(r, key);
                        if (t == USEC_INFINITY)
                                p = stpcpy(p, "never");
                        else
                                p += sprintf(p, "%" PRIu64, t);
                        continue;
                }
                for (const uint8_t *s = (const uint8_t *) record_string(r, key); *s; s++)
                        if (byte_needs_escape(*s)) {
                                *p++ = '%';
                                *p++ = hex[*s >> 4];
                                *p++ = hex[*s & 0xf];
                        } else
                                *p++ = (char) *s;
        }
        payload = (size_t) (p - (line + 9));
        if (9 + payload + 1 > JOURNAL_LINE_MAX)
                return -E2BIG;
        write_hex32(line, crc32_ieee(line + 9, payload));
        line[8] = ' ';
        *p++ = '\n';
        b->size = (size_t) (p - b->data);
        return 0;
}

/* These run for every field on start-up: compare the first byte before anything else. */
static Key key_from_string(const char *s, size_t n) {
        for (Key k = 0; k < _KEY_MAX; k++)
                if (keys[k].name[0] == s[0] && strlen(keys[k].name) == n && memcmp(keys[k].name, s, n) == 0)
                        return k;
        return _KEY_MAX;
}

static JournalType type_from_string(const char *s, size_t n) {
        for (JournalType t = 0; t < _JOURNAL_TYPE_MAX; t++)
                if (types[t].name[0] == s[0] && strlen(types[t].name) == n && memcmp(types[t].name, s, n) == 0)
                        return t;
        return _JOURNAL_TYPE_MAX;
}

typedef enum LineState {
        LINE_VALID,
        LINE_BROKEN,    /* no matching checksum: could be a torn write */
        LINE_INVALID,   /* checksum matches but the content is wrong: never torn */
} LineState;

static int unhex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Whether line (without '\n') starts with 8 lowercase hex digits and a space and the
 * checksum matches the rest. */
static LineState line_check_crc(const char *line, size_t len, const char **reason) {
        uint32_t crc = 0;

        if (len < 9 || line[8] != ' ') {
                *reason = "malformed record (no checksum)";
                return LINE_BROKEN;
        }
        for (size_t i = 0; i < 8; i++) {
                int d = unhex(line[i]);
                if (d < 0 || (line[i] >= 'A' && line[i] <= 'F')) {
                        *reason = "malformed record (no checksum)";
                        return LINE_BROKEN;
                }
                crc = crc << 4 | (uint32_t) d;
        }
        if (crc != crc32_ieee(line + 9, len - 9)) {
                *reason = "checksum mismatch";
                return LINE_BROKEN;
        }
        return LINE_VALID;
}

static int parse_time(const char *s, size_t n, usec_t *ret) {
        uint64_t v = 0;

        if (n == 5 && memcmp(s, "never", 5) == 0) {
                *ret = USEC_INFINITY;
                return 0;
        }
        if (n == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                unsigned d;

                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                d = (unsigned) (s[i] - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret = v;
        return 0;
}

/* Decodes s[0..n) in place and NUL-terminates it, which overwrites at most s[n]. */
static int unescape(char *s, size_t n) {
        char *o = s;


        for (size_t i = 0; i < n; i++) {
                int hi, lo;

                if (s[i] == '=')
                        return -EINVAL;
                if (s[i] != '%') {
                        *o++ = s[i];
                        continue;
                }
                if (n - i < 3 || (hi = unhex(s[i + 1])) < 0 || (lo = unhex(s[i + 2])) < 0 ||
                    (hi == 0 && lo == 0))
                        return -EINVAL;
                *o++ = (char) (hi << 4 | lo);
                i += 2;
        }
        *o = 0;
        return 0;
}

/* Parses one line, line[len] being its '\n'. String values are decoded in place (each
 * NUL-terminated where its separator was), so the line is changed once the checksum
 * matched. On failure err says what is wrong. */
static LineState parse_record(char *line, size_t len, JournalRecord *ret, char *err, size_t err_size) {
        JournalRecord rec = { .type = _JOURNAL_TYPE_MAX };
        char *end = line + len;
        const char *reason;
        unsigned seen = 0, allowed = 0;
        LineState s;

        s = line_check_crc(line, len, &reason);
        if (s != LINE_VALID) {
                snprintf(err, err_size, "%s", reason);
                return s;
        }
        if (len + 1 > JOURNAL_LINE_MAX) {
                snprintf(err, err_size, "record too long (%zu bytes, at most %d)", len + 1,
                         JOURNAL_LINE_MAX);
                return LINE_INVALID;
        }
        for (const char *p = line + 9; p < end; p++)
                if ((uint8_t) *p < 0x20 || (uint8_t) *p > 0x7e) {
                        snprintf(err, err_size, "invalid byte 0x%02x", (unsigned) (uint8_t) *p);
                        return LINE_INVALID;
                }

        /* Fields separated by single spaces: the type, then key=value. */
        for (char *f = line + 9, *fe; f; f = fe < end ? fe + 1 : NULL) {
                char *eq;
                size_t flen;
                Key k;

                fe = memchr(f, ' ', (size_t) (end - f)); /* before the previous value's NUL lands on it */
                if (!fe)
                        fe = end;
                flen = (size_t) (fe - f);
                if (flen == 0) {
                        snprintf(err, err_size, "empty field");
                        return LINE_INVALID;
                }
                if (rec.type == _JOURNAL_TYPE_MAX) {
                        rec.type = type_from_string(f, flen);
                        if (rec.type == _JOURNAL_TYPE_MAX) {
                                snprintf(err, err_size, "unknown record type '%.*s'",
                                         (int) MIN(flen, (size_t) 32), f);
                                return LINE_INVALID;
                        }
                        allowed = types[rec.type].required | types[rec.type].optional;
                        continue;
                }

                eq = memchr(f, '=', flen);
                if (!eq) {
                        snprintf(err, err_size, "field '%.*s' without '='", (int) MIN(flen, (size_t) 32), f);
                        return LINE_INVALID;
                }
                k = key_from_string(f, (size_t) (eq - f));
                if (k == _KEY_MAX) {
                        snprintf(err, err_size, "unknown key '%.*s'", (int) MIN((size_t) (eq - f), (size_t) 32), f);
                        return LINE_INVALID;
                }
                if (seen & K(k)) {
                        snprintf(err, err_size, "duplicate key %s=", keys[k].name);
                        return LINE_INVALID;
                }
                seen |= K(k);
                if (!(allowed & K(k))) {
                        snprintf(err, err_size, "%s= not allowed in a %s record", keys[k].name,
                                 types[rec.type].name);
                        return LINE_INVALID;
                }
                eq++;
                if (key_is_time(k)) {
                        usec_t t;
                        if (parse_time(eq, (size_t) (fe - eq), &t) < 0) {
                                snprintf(err, err_size, "bad number in %s=", keys[k].name);
                                return LINE_INVALID;
                        }
                        record_set_time(&rec, k, t);
                } else {
                        record_set_string(&rec, k, eq);
                        if (unescape(eq, (size_t) (fe - eq)) < 0) {
                                snprintf(err, err_size, "bad escape in %s=", keys[k].name);
                                return LINE_INVALID;
                        }
                }
        }
        if (record_check(&rec, err, err_size) < 0)
                return LINE_INVALID;
        *ret = rec;
        return LINE_VALID;
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t offset) {
        const uint8_t *p = buf;

        while (n > 0) {
                ssize_t k = pwrite(fd, p, MIN(n, (size_t) SSIZE_MAX), (off_t) offset);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                p += k;
                n -= (size_t) k;
                offset += (uint64_t) k;
        }
        return 0;
}

static int read_all(int fd, char **ret, size_t *ret_size) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, allocated;
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > JOURNAL_FILE_MAX)
                return -EFBIG;
        allocated = (size_t) st.st_size + 4096; /* room to see EOF without growing */
        buf = malloc(allocated);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k;

                if (size == allocated) {
                        char *p;
                        if (allocated > JOURNAL_FILE_MAX)
                                return -EFBIG;
                        p = realloc(buf, allocated * 2);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                        allocated *= 2;
                }
                k = pread(fd, buf + size, allocated - size, (off_t) size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                size += (size_t) k;
        }
        *ret = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

static int set_error(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int set_error(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;

        if (!ret_error)
                return r;
        free(*ret_error);
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return r;
}

/* A file holding nothing but a part of the header, perhaps followed by NULs: it was being
 * created when the machine went down; no record was ever written to it. */
static bool journal_is_unwritten(const char *data, size_t size) {
        const size_t hlen = strlen(JOURNAL_HEADER);
        size_t i = 0;

        while (i < size && i < hlen && data[i] == JOURNAL_HEADER[i])
                i++;
        if (i == hlen)
                return false;
        for (; i < size; i++)
                if (data[i] != 0)
                        return false;
        return true;
}

static int journal_check_header(Journal *j, const char *data, size_t size, char **ret_error) {
        const size_t hlen = strlen(JOURNAL_HEADER), plen = strlen(JOURNAL_HEADER_PREFIX);
        char version[33];
        size_t n = 0;

        if (size >= hlen && memcmp(data, JOURNAL_HEADER, hlen) == 0)
                return 0;
        if (size < plen || memcmp(data, JOURNAL_HEADER_PREFIX, plen) != 0)
                return set_error(ret_error, -EBADMSG, "%s: offset 0: not a dtrotated journal (bad header)",
                                 j->path);
        for (size_t i = plen; i < size && data[i] != '\n' && n < sizeof(version) - 1; i++)
                version[n++] = (uint8_t) data[i] >= 0x20 && (uint8_t) data[i] <= 0x7e ? data[i] : '?';
        version[n] = 0;
        return set_error(ret_error, -EBADMSG, "%s: offset 0: unsupported journal version '%s'",
                         j->path, version);
}

typedef struct Entry {
        JournalRecord record;
        size_t offset;
} Entry;

typedef struct Parsed {
        Entry *entries;
        size_t n;
        size_t end;     /* end of the last good record: < size when the tail is torn */
} Parsed;

static void parsed_done(Parsed *p) {
        free(p->entries);
        *p = (Parsed) {};
}

/* Parses and checks all records in data[start..size), in one pass; the records point
 * into data, which is changed (decoded in place). Returns 0 (the tail may be torn, see
 * p->end), or -EBADMSG with *ret_error set. */
static int journal_parse(Journal *j, char *data, size_t size, size_t start, Parsed *p, char **ret_error) {
        size_t off = start, allocated = 0;
        char err[160];

        while (off < size) {
                char *nl = memchr(data + off, '\n', size - off);
                JournalRecord rec;
                LineState s;

                if (!nl) {
                        snprintf(err, sizeof(err), "incomplete record (no newline)");
                        s = LINE_BROKEN;
                } else
                        s = parse_record(data + off, (size_t) (nl - (data + off)), &rec, err, sizeof(err));
                if (s == LINE_INVALID)
                        return set_error(ret_error, -EBADMSG, "%s: offset %zu: %s", j->path, off, err);
                if (s == LINE_BROKEN) {
                        /* Torn, unless an intact line follows. */
                        for (const char *l = nl ? nl + 1 : data + size, *q; l < data + size; l = q + 1) {
                                const char *reason;

                                q = memchr(l, '\n', (size_t) (data + size - l));
                                if (!q)
                                        break;
                                if (line_check_crc(l, (size_t) (q - l), &reason) == LINE_VALID)
                                        return set_error(ret_error, -EBADMSG, "%s: offset %zu: %s",
                                                         j->path, off, err);
                        }
                        break;
                }
                if (p->n == allocated) {
                        Entry *e;

                        allocated = MAX(allocated * 2, (size_t) 64);
                        e = reallocarray(p->entries, allocated, sizeof(Entry));
                        if (!e)
                                return -ENOMEM;
                        p->entries = e;
                }
                p->entries[p->n++] = (Entry) { .record = rec, .offset = off };
                off = (size_t) (nl + 1 - data);
        }
        p->end = off;
        return 0;
}

/* Writes the header into an empty (or never completed) journal. */
static int journal_init(Journal *j, size_t old_size, char **ret_error) {
        int r;

        if (old_size > 0) {
                log_warning("%s: offset 0: incomplete header (crash while creating the journal), writing it afresh",
                            j->path);
                if (ftruncate(j->fd, 0) < 0)
                        return set_error(ret_error, -errno, "%s: cannot truncate: %m", j->path);
        }
        r = pwrite_all(j->fd, JOURNAL_HEADER, strlen(JOURNAL_HEADER), 0);
        if (r >= 0 && fsync(j->fd) < 0)
                r = -errno;
        if (r >= 0 && fsync(j->dir_fd) < 0)
                r = -errno;
        if (r < 0)
                return set_error(ret_error, r, "%s: cannot write header: %s", j->path, strerror(-r));
        j->size = strlen(JOURNAL_HEADER);
        j->n_records = 0;
        return 0;
}

static int journal_open_file(Journal *j, const char *dir, char **ret_error) {
        j->fd = openat(j->dir_fd, "journal", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (j->fd >= 0)
                return 0;
        if (errno != ENOENT)
                return set_error(ret_error, -errno, "%s: cannot open: %m", j->path);
        /* journal.new is written and renamed over journal; one without the other means
         * someone removed journal, and journal.new may be the only (perhaps partial) copy
         * of the state. Do not throw it away. */
        if (faccessat(j->dir_fd, "journal.new", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                return set_error(ret_error, -ENOENT,
                                 "%s: missing, but %s/journal.new exists: refusing to start afresh "
                                 "(remove journal.new to do so)", j->path, dir);
        j->fd = openat(j->dir_fd, "journal", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (j->fd < 0)
                return set_error(ret_error, -errno, "%s: cannot create: %m", j->path);
        return 0;
}

int journal_open(const char *dir, journal_replay_t replay, void *userdata, Journal **ret,
                 char **ret_error) {
        _cleanup_(journal_closep) Journal *j = NULL;
        _cleanup_free_ char *data = NULL;
        _cleanup_(parsed_done) Parsed p = {};
        const size_t hlen = strlen(JOURNAL_HEADER);
        size_t size = 0, dlen;
        int r;

        if (ret_error)
                *ret_error = NULL;
        if (!dir || !*dir || !ret)
                return -EINVAL;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->dir_fd = j->fd = j->compact_fd = -1;
        dlen = strlen(dir);
        while (dlen > 1 && dir[dlen - 1] == '/')
                dlen--;
        j->path = strdup_printf("%.*s/journal", (int) dlen, dir);
        if (!j->path)
                return -ENOMEM;

        if (mkdir(dir, 0700) >= 0) {
                /* Make the new directory itself durable, or all of it could vanish. */
                _cleanup_free_ char *d = strndup(dir, dlen);
                if (!d)
                        return -ENOMEM;
                r = fsync_parent_dir(d);
                if (r < 0)
                        return set_error(ret_error, r, "%s: cannot sync the parent directory: %s", dir,
                                         strerror(-r));
        } else if (errno != EEXIST)
                return set_error(ret_error, -errno, "%s: cannot create directory: %m", dir);
        j->dir_fd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        if (j->dir_fd < 0)
                return set_error(ret_error, -errno, "%s: cannot open directory: %m", dir);
        if (flock(j->dir_fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno == EWOULDBLOCK)
                        return set_error(ret_error, -EBUSY, "%s: locked by another dtrotated instance", dir);
                return set_error(ret_error, -errno, "%s: cannot lock: %m", dir);
        }

        r = journal_open_file(j, dir, ret_error);
        if (r < 0)
                return r;

        if (unlinkat(j->dir_fd, "journal.new", 0) >= 0)
                log_warning("%s/journal.new: removed the leftover of an interrupted compaction", dir);
        else if (errno != ENOENT)
                return set_error(ret_error, -errno, "%s/journal.new: cannot remove leftover: %m", dir);

        r = read_all(j->fd, &data, &size);
        if (r == -EBADFD)
                return set_error(ret_error, -EBADMSG, "%s: not a regular file", j->path);
        if (r < 0)
                return set_error(ret_error, r, "%s: cannot read: %s", j->path, strerror(-r));

        if (journal_is_unwritten(data, size)) {
                r = journal_init(j, size, ret_error);
                if (r < 0)
                        return r;
                *ret = TAKE_PTR(j);
                return 0;
        }

        r = journal_check_header(j, data, size, ret_error);
        if (r < 0)
                return r;
        r = journal_parse(j, data, size, hlen, &p, ret_error);
        if (r == -ENOMEM)
                return set_error(ret_error, r, "%s: out of memory", j->path);
        if (r < 0)
                return r;
        if (p.end < size) {
                log_warning("%s: offset %zu: ignoring torn last record (crash during write)", j->path, p.end);
                if (ftruncate(j->fd, (off_t) p.end) < 0 || fsync(j->fd) < 0)
                        return set_error(ret_error, -errno, "%s: cannot cut off torn last record: %m", j->path);
        }
        for (size_t i = 0; replay && i < p.n; i++) {
                r = replay(&p.entries[i].record, userdata);
                if (r < 0)
                        return set_error(ret_error, r, "%s: offset %zu: replaying %s record failed: %s",
                                         j->path, p.entries[i].offset, types[p.entries[i].record.type].name,
                                         strerror(-r));
        }

        j->size = p.end;
        j->n_records = p.n;
        *ret = TAKE_PTR(j);
        return 0;
}

Journal *journal_close(Journal *j) {
        if (!j)
                return NULL;
        if (j->compact_fd >= 0)
                close(j->compact_fd);
        buffer_done(&j->compact_buf);
        if (j->fd >= 0)
                close(j->fd);
        if (j->dir_fd >= 0)
                close(j->dir_fd); /* releases the lock */
        free(j->path);
        free(j);
        return NULL;
}

static int serialize_checked(Buffer *b, const JournalRecord *r) {
        char err[160];

        if (record_check(r, err, sizeof(err)) < 0)
                return log_error_errno(-EINVAL, "journal: refusing to write an invalid record: %s", err);
        return serialize_record(b, r);
}

int journal_append(Journal *j, const JournalRecord *records, size_t n) {
        _cleanup_(buffer_done) Buffer b = {};
        int r;

        if (!j || (n > 0 && !records))
                return -EINVAL;
        if (j->compact_fd >= 0)
                return -EBUSY; /* it would be lost with the old file */
        if (n == 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                r = serialize_checked(&b, &records[i]);
                if (r < 0)
                        return r;
        }

        if (j->dir_unsynced) {
                if (fsync(j->dir_fd) < 0)
                        return -errno;
                j->dir_unsynced = false;
        }
        if (j->dirty_tail) {
                if (ftruncate(j->fd, (off_t) j->size) < 0)
                        return -errno;
                j->dirty_tail = false;
        }

        r = pwrite_all(j->fd, b.data, b.size, j->size);
        if (r >= 0 && fdatasync(j->fd) < 0)
                r = -errno;
        if (r < 0) {
                /* Cut off whatever made it, so that the file ends with a complete record. */
                if (ftruncate(j->fd, (off_t) j->size) < 0 || fdatasync(j->fd) < 0)
                        j->dirty_tail = true;
                return r;
        }
        j->size += b.size;
        j->n_records += n;
        return 0;
}

size_t journal_n_records(Journal *j) {
        return j ? j->n_records : 0;
}

uint64_t journal_size(Journal *j) {
        return j ? j->size : 0;
}

static int compact_flush(Journal *j) {
        int r = pwrite_all(j->compact_fd, j->compact_buf.data, j->compact_buf.size, j->compact_size);
        if (r < 0)
                return r;
        j->compact_size += j->compact_buf.size;
        j->compact_buf.size = 0;
        return 0;
}

int journal_compact_add(Journal *j, const JournalRecord *r) {
        int k;

        if (!j || !r || j->compact_fd < 0)
                return -EINVAL;
        if (j->compact_error < 0)
                return j->compact_error;
        k = serialize_checked(&j->compact_buf, r);
        if (k >= 0 && j->compact_buf.size >= COMPACT_CHUNK)
                k = compact_flush(j);
        if (k < 0) {
                j->compact_error = k; /* fails the compaction even if emit ignores it */
                return k;
        }
        j->compact_n++;
        return 0;
}

int journal_compact(Journal *j, journal_emit_t emit, void *userdata) {
        _cleanup_close_ int fd = -1;
        uint64_t size;
        size_t n;
        int r;

        if (!j || !emit)
                return -EINVAL;
        if (j->compact_fd >= 0)
                return -EBUSY;

        fd = openat(j->dir_fd, "journal.new", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        j->compact_fd = fd;
        j->compact_size = 0;
        j->compact_n = 0;
        j->compact_error = 0;
        j->compact_buf.size = 0;

        r = buffer_append(&j->compact_buf, JOURNAL_HEADER, strlen(JOURNAL_HEADER));
        if (r >= 0)
                r = emit(j, userdata);
        if (r >= 0)
                r = j->compact_error;
        if (r >= 0)
                r = compact_flush(j);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        size = j->compact_size;
        n = j->compact_n;
        j->compact_fd = -1;
        buffer_done(&j->compact_buf);
        if (r >= 0 && renameat(j->dir_fd, "journal.new", j->dir_fd, "journal") < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(j->dir_fd, "journal.new", 0);
                return r;
        }

        /* journal.new is the journal now: switch at once, records appended to the old,
         * unlinked file would be lost. */
        close(j->fd);
        j->fd = TAKE_FD(fd);
        j->size = size;
        j->n_records = n;
        j->dirty_tail = false;
        if (fsync(j->dir_fd) < 0) {
                /* The rename may not be durable: no append is acknowledged before it is. */
                j->dir_unsynced = true;
                return -errno;
        }
        j->dir_unsynced = false;
        return 0;
}

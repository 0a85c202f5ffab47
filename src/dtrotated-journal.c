/* SPDX-License-Identifier: MIT */
/*
 * The journal: DIR/journal, an append-only text file.
 *
 * FORMAT (version 2)
 *
 *   dtrotated-journal 2
 *   CCCCCCCC TYPE key=value key=value ...
 *   CCCCCCCC TYPE key=value ... batch=1/2
 *   CCCCCCCC TYPE key=value ... batch=2/2
 *   ...
 *
 * The first line is the fixed header "dtrotated-journal 2" (2 is the format version);
 * it carries no checksum. Every further line is one record, terminated by '\n' and at
 * most 4096 bytes long including the '\n':
 *
 *   CCCCCCCC  the CRC-32 (IEEE 802.3, as in zlib) of everything after the first space
 *             up to, not including, the '\n', as 8 lowercase hex digits
 *   TYPE      job, create, delivered, rotated, retire, revoked, deleted, scan, scanned,
 *             forget, restore, restored or unretire
 *   key=value one field per key the record carries, separated by single spaces, in the
 *             order job= env= id= old= name= at= created= expires= grace= until=
 *             unused= batch= (readers accept any order; a key appears at most once)
 *
 * job, env, id, old and name are strings: every byte outside 0x21..0x7e, and '%' and
 * '=', is written as %XX (two uppercase hex digits; readers accept either case), so a
 * value never contains a space and may be any byte string without NUL. An empty string
 * is written as "key=" and differs from an absent key.
 * at, created, expires, grace, until and unused are times in microseconds, in decimal ("never"
 * for the largest value, 2^64-1, meaning no expiry). A time of 0 is not written: an
 * absent time key means 0.
 *
 *   type       required keys       optional keys
 *   job        job env id          created expires
 *   create     job env             old name at
 *   delivered  job env id          old created expires
 *   rotated    job env id          old created expires
 *   retire     env id              job at grace until unused
 *   revoked    env id              at
 *   deleted    env id
 *   scan       job env name        at grace until
 *   scanned    job env
 *   forget     job
 *   restore    job env id old
 *   restored   job env id          old created expires at
 *   unretire   env id
 *
 * BATCHES: the records of one journal_append() are one batch. A batch of one record is
 * a line without batch=. In a batch of N >= 2 records the K-th line carries
 * "batch=K/N" (K and N in decimal without leading zeros, 1 <= K <= N <= 1000000), and
 * its lines follow each other. Replay yields a batch only once its last line has been
 * read, so a batch is all or nothing: ROTATED and the RETIRE of the old token, written
 * together, are never replayed one without the other. The first line of a batch
 * without the lines before it, or a batch cut off by anything but the end of the file
 * (the next batch, say), is damage.
 *
 * A retire record carries until= and unused= together or neither (revoke_when_unused:
 * revoke once the token was unused for `unused`, at `until` at the latest).
 *
 * Any other key in a record of that type, an unknown type or key, a missing required
 * key, a bad number or escape, a bad batch=, a byte outside 0x20..0x7e, or a wrong
 * checksum is damage. journal_append() refuses (-EINVAL) to write a record that would
 * be damage.
 *
 * VERSION 1 is the same without batch= (every line is a batch of its own); it is read,
 * and journal_open() rewrites it as version 2 (journal.new, as a compaction) before
 * appending to it. A version 1 reader refuses version 2 files ("unsupported journal
 * version '2'") instead of misreading them.
 *
 * WRITING: a batch is appended with one write() at the end of the file and made
 * durable with fdatasync() before journal_append() returns; journal_append_lazy()
 * leaves the sync to the next journal_append() or journal_sync() (group commit). Its
 * space is reserved first (fallocate(FALLOC_FL_KEEP_SIZE), 64 KiB ahead while there is
 * room), so a full disk fails the append before a byte is written, and a failed append
 * is truncated away again. Compaction writes the
 * live records to DIR/journal.new, fsyncs it, renames it over DIR/journal and fsyncs
 * DIR. A new journal is created the same way: the header goes to DIR/journal.tmp,
 * which is fsynced and renamed to DIR/journal, so a journal that exists always has its
 * header. DIR itself is flock()ed for as long as the journal is open, so one instance
 * at a time (journal_open_readonly() takes no lock and writes nothing).
 *
 * READING: the whole file is checked before any record is replayed. A crash during an
 * append can only leave a torn last batch: some of its lines, an unterminated last
 * line, or lines at the end whose checksum does not match (half a record, NUL bytes,
 * garbage). When no intact line (one with a matching checksum) follows the first such
 * line, the tail is torn: the incomplete batch and the broken lines are dropped with a
 * warning, and the next append cuts the file back to the end of the last complete
 * batch. Anything else (a bad line followed by an intact one, a line whose checksum
 * matches but whose content is wrong, a batch cut short in the middle, none of which a
 * crash produces) is damage: the journal is refused and left untouched. So is a
 * journal that is empty, or holds only part of its header (perhaps followed by NUL
 * bytes): since journals are created atomically, such a file was cut short by
 * something else, and the pending steps it held are lost. A journal.new found at
 * start-up is the leftover of an interrupted compaction and is removed (journal is
 * still authoritative) once the journal has been read; a journal.new without a journal
 * is refused. A journal.tmp is the leftover of an interrupted creation and is removed.
 * A journal that is refused is left as it is, and so is everything beside it.
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

#define JOURNAL_VERSION 2
#define JOURNAL_HEADER "dtrotated-journal 2\n"
#define JOURNAL_HEADER_V1 "dtrotated-journal 1\n"
#define JOURNAL_HEADER_PREFIX "dtrotated-journal "
#define JOURNAL_LINE_MAX 4096                   /* bytes, including the '\n' */
#define JOURNAL_BATCH_MAX 1000000U              /* records in one batch */
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
        uint64_t reserved_end;  /* fallocate()d up to here (FALLOC_FL_KEEP_SIZE) */
        bool unsynced;          /* batches written by journal_append_lazy(), not yet synced */
        bool sync_failed;       /* a sync of them failed: only a compaction is trusted now */
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
        KEY_UNTIL,
        KEY_UNUSED,
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
        [KEY_UNTIL]   = { "until",   offsetof(JournalRecord, until) },
        [KEY_UNUSED]  = { "unused",  offsetof(JournalRecord, unused) },
};

static const struct {
        const char *name;
        unsigned required;
        unsigned optional;      /* an absent time is 0, an absent string NULL */
} types[_JOURNAL_TYPE_MAX] = {
        [JOURNAL_JOB]       = { "job",       K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_CREATED) | K(KEY_EXPIRES) },
        [JOURNAL_CREATE]    = { "create",    K(KEY_JOB) | K(KEY_ENV), K(KEY_OLD) | K(KEY_NAME) | K(KEY_AT) },
        [JOURNAL_DELIVERED] = { "delivered", K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_OLD) | K(KEY_CREATED) | K(KEY_EXPIRES) },
        [JOURNAL_ROTATED]   = { "rotated",   K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_OLD) | K(KEY_CREATED) | K(KEY_EXPIRES) | K(KEY_AT) },
        [JOURNAL_RETIRE]    = { "retire",    K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_JOB) | K(KEY_AT) | K(KEY_GRACE) |
                                             K(KEY_UNTIL) | K(KEY_UNUSED) },
        [JOURNAL_REVOKED]   = { "revoked",   K(KEY_ENV) | K(KEY_ID), K(KEY_AT) },
        [JOURNAL_DELETED]   = { "deleted",   K(KEY_ENV) | K(KEY_ID), 0 },
        [JOURNAL_SCAN]      = { "scan",      K(KEY_JOB) | K(KEY_ENV) | K(KEY_NAME),
                                             K(KEY_AT) | K(KEY_GRACE) | K(KEY_UNTIL) },
        [JOURNAL_SCANNED]   = { "scanned",   K(KEY_JOB) | K(KEY_ENV), K(KEY_UNTIL) },
        [JOURNAL_FORGET]    = { "forget",    K(KEY_JOB), 0 },
        [JOURNAL_RESTORE]   = { "restore",   K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID) | K(KEY_OLD), 0 },
        [JOURNAL_RESTORED]  = { "restored",  K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_OLD) | K(KEY_CREATED) | K(KEY_EXPIRES) | K(KEY_AT) },
        [JOURNAL_UNRETIRE]  = { "unretire",  K(KEY_ENV) | K(KEY_ID), 0 },
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
        if (r->type == JOURNAL_RETIRE && !r->unused != !r->until) {
                snprintf(err, err_size, "retire record with %s= but without %s=",
                         r->unused ? "unused" : "until", r->unused ? "until" : "unused");
                return -EINVAL;
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

/* Appends one complete line, record k of a batch of n (no batch= for n == 1). -E2BIG if
 * it would exceed JOURNAL_LINE_MAX; the buffer is unchanged on failure. The record must
 * have passed record_check(). */
static int serialize_record(Buffer *b, const JournalRecord *r, size_t batch_k, size_t batch_n) {
        static const char hex[] = "0123456789ABCDEF";
        /* checksum and space, type, " batch=K/N" (at most 22 bytes), '\n' */
        size_t need = 9 + strlen(types[r->type].name) + 30 + 1, start = b->size, payload;
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
        if (batch_n > 1)
                p += sprintf(p, " batch=%zu/%zu", batch_k, batch_n);
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

/* A decimal number without leading zeros in 1..JOURNAL_BATCH_MAX. */
static int parse_batch_number(const char *s, size_t n, unsigned *ret) {
        unsigned v = 0;

        if (n == 0 || n > 7 || s[0] == '0')
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        if (v > JOURNAL_BATCH_MAX)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* "K/N": record K of a batch of N, 1 <= K <= N, N >= 2. */
static int parse_batch(const char *s, size_t n, unsigned *ret_k, unsigned *ret_n) {
        const char *slash = memchr(s, '/', n);
        unsigned k, total;

        if (!slash ||
            parse_batch_number(s, (size_t) (slash - s), &k) < 0 ||
            parse_batch_number(slash + 1, (size_t) (s + n - slash - 1), &total) < 0 ||
            total < 2 || k > total)
                return -EINVAL;
        *ret_k = k;
        *ret_n = total;
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

/* Parses one line of a journal of the given version, line[len] being its '\n'; the
 * record is number *ret_k of a batch of *ret_n (1 of 1 without batch=). String values
 * are decoded in place (each NUL-terminated where its separator was), so the line is
 * changed once the checksum matched. On failure err says what is wrong. */
static LineState parse_record(char *line, size_t len, unsigned version, JournalRecord *ret,
                              unsigned *ret_k, unsigned *ret_n, char *err, size_t err_size) {
        JournalRecord rec = { .type = _JOURNAL_TYPE_MAX };
        char *end = line + len;
        const char *reason;
        unsigned seen = 0, allowed = 0, batch_k = 1, batch_n = 1;
        bool batch_seen = false;
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
                if (version >= 2 && eq - f == 5 && memcmp(f, "batch", 5) == 0) {
                        if (batch_seen) {
                                snprintf(err, err_size, "duplicate key batch=");
                                return LINE_INVALID;
                        }
                        batch_seen = true;
                        if (parse_batch(eq + 1, (size_t) (fe - eq - 1), &batch_k, &batch_n) < 0) {
                                snprintf(err, err_size, "bad batch= (K/N with 1 <= K <= N, 2 <= N <= %u)",
                                         JOURNAL_BATCH_MAX);
                                return LINE_INVALID;
                        }
                        continue;
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
        *ret_k = batch_k;
        *ret_n = batch_n;
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

/* Checks the header of data[0..size): sets the version and where the records start.
 * Anything but a complete header of a known version is damage; that includes an empty
 * file and a part of a header (perhaps followed by NULs), as journals are created
 * atomically: such a file was cut short, and whatever it held is lost. */
static int journal_check_header(const char *path, const char *data, size_t size, bool readonly,
                                unsigned *ret_version, size_t *ret_start, char **ret_error) {
        const size_t hlen = strlen(JOURNAL_HEADER), plen = strlen(JOURNAL_HEADER_PREFIX);
        const char *lost = readonly ? "pending revoke/delete steps may have been lost" :
                "refusing to start: pending revoke/delete steps may have been lost";
        char version[33];
        size_t i = 0, n = 0;

        _Static_assert(sizeof(JOURNAL_HEADER) == sizeof(JOURNAL_HEADER_V1), "headers differ in length");
        if (size == 0)
                return set_error(ret_error, -EBADMSG,
                                 "%s: offset 0: empty journal (truncated?); %s. See dtrotated(8), RECOVERY",
                                 path, lost);
        if (size >= hlen && memcmp(data, JOURNAL_HEADER, hlen) == 0) {
                *ret_version = JOURNAL_VERSION;
                *ret_start = hlen;
                return 0;
        }
        if (size >= hlen && memcmp(data, JOURNAL_HEADER_V1, hlen) == 0) {
                *ret_version = 1;
                *ret_start = hlen;
                return 0;
        }

        /* The beginning of some header, and then nothing but NULs? */
        while (i < size && i < plen && data[i] == JOURNAL_HEADER_PREFIX[i])
                i++;
        if (i == plen)
                while (i < size && data[i] >= '0' && data[i] <= '9')
                        i++;
        while (i < size && data[i] == 0)
                i++;
        if (i == size)
                return set_error(ret_error, -EBADMSG,
                                 "%s: offset 0: incomplete header (truncated?); %s. See dtrotated(8), RECOVERY",
                                 path, lost);

        if (size < plen || memcmp(data, JOURNAL_HEADER_PREFIX, plen) != 0)
                return set_error(ret_error, -EBADMSG, "%s: offset 0: not a dtrotated journal (bad header)",
                                 path);
        for (i = plen; i < size && data[i] != '\n' && n < sizeof(version) - 1; i++)
                version[n++] = (uint8_t) data[i] >= 0x20 && (uint8_t) data[i] <= 0x7e ? data[i] : '?';
        version[n] = 0;
        return set_error(ret_error, -EBADMSG, "%s: offset 0: unsupported journal version '%s'",
                         path, version);
}

typedef struct Entry {
        JournalRecord record;
        size_t offset;
} Entry;

typedef struct Parsed {
        Entry *entries;
        size_t n;               /* the records of complete batches */
        size_t end;             /* end of the last complete batch: < size when the tail is torn */
        unsigned torn_k;        /* the torn tail holds records 1..torn_k of a batch of */
        unsigned torn_n;        /* torn_n (0 if it holds no intact record) */
} Parsed;

static void parsed_done(Parsed *p) {
        free(p->entries);
        *p = (Parsed) {};
}

/* Parses and checks all records in data[start..size), in one pass; the records point
 * into data, which is changed (decoded in place). Returns 0 (the tail may be torn, see
 * p->end), or -EBADMSG with *ret_error set. */
static int journal_parse(const char *path, char *data, size_t size, size_t start, unsigned version,
                         Parsed *p, char **ret_error) {
        size_t off = start, allocated = 0, n = 0, batch_off = start;
        unsigned want = 0, total = 0;  /* inside a batch: the record expected next, of total */
        char err[160];

        p->end = start;
        while (off < size) {
                char *nl = memchr(data + off, '\n', size - off);
                unsigned k = 1, bn = 1;
                JournalRecord rec;
                LineState s;

                if (!nl) {
                        snprintf(err, sizeof(err), "incomplete record (no newline)");
                        s = LINE_BROKEN;
                } else
                        s = parse_record(data + off, (size_t) (nl - (data + off)), version, &rec, &k, &bn,
                                         err, sizeof(err));
                if (s == LINE_INVALID)
                        return set_error(ret_error, -EBADMSG, "%s: offset %zu: %s", path, off, err);
                if (s == LINE_BROKEN) {
                        /* Torn, unless an intact line follows. */
                        for (const char *l = nl ? nl + 1 : data + size, *q; l < data + size; l = q + 1) {
                                const char *reason;

                                q = memchr(l, '\n', (size_t) (data + size - l));
                                if (!q)
                                        break;
                                if (line_check_crc(l, (size_t) (q - l), &reason) == LINE_VALID)
                                        return set_error(ret_error, -EBADMSG, "%s: offset %zu: %s",
                                                         path, off, err);
                        }
                        break;
                }

                /* An intact line: it must continue the batch we are in, or start one. */
                if (want > 0 && (k != want || bn != total))
                        return set_error(ret_error, -EBADMSG,
                                         "%s: offset %zu: the batch at offset %zu ends after record %u of %u",
                                         path, off, batch_off, want - 1, total);
                if (want == 0 && k != 1)
                        return set_error(ret_error, -EBADMSG,
                                         "%s: offset %zu: record %u of %u of a batch without its first record",
                                         path, off, k, bn);
                if (k == 1)
                        batch_off = off;

                if (n == allocated) {
                        Entry *e;

                        allocated = MAX(allocated * 2, (size_t) 64);
                        e = reallocarray(p->entries, allocated, sizeof(Entry));
                        if (!e)
                                return -ENOMEM;
                        p->entries = e;
                }
                p->entries[n++] = (Entry) { .record = rec, .offset = off };
                off = (size_t) (nl + 1 - data);
                if (k == bn) {
                        /* The batch is complete. */
                        want = 0;
                        p->n = n;
                        p->end = off;
                } else {
                        want = k + 1;
                        total = bn;
                }
        }
        if (want > 0) {
                p->torn_k = want - 1;
                p->torn_n = total;
        }
        return 0;
}

static void log_torn(const char *path, const Parsed *p, size_t size, bool readonly) {
        int level = readonly ? LOG_NOTICE : LOG_WARNING;
        const char *why = readonly ? "being written, or a crash during write" : "crash during write";

        if (p->end >= size)
                return;
        if (p->torn_n > 0)
                log_full(level, 0, "%s: offset %zu: ignoring torn last batch (%u of its %u records; %s)",
                         path, p->end, p->torn_k, p->torn_n, why);
        else
                log_full(level, 0, "%s: offset %zu: ignoring torn last record (%s)", path, p->end, why);
}

typedef struct Loaded {
        char *data;
        size_t size;
        unsigned version;
        Parsed p;
} Loaded;

static void loaded_done(Loaded *l) {
        free(l->data);
        parsed_done(&l->p);
        *l = (Loaded) {};
}

/* Reads j->fd and checks all of it. */
static int journal_load(Journal *j, bool readonly, Loaded *l, char **ret_error) {
        size_t start;
        int r;

        r = read_all(j->fd, &l->data, &l->size);
        if (r == -EBADFD)
                return set_error(ret_error, -EBADMSG, "%s: not a regular file", j->path);
        if (r < 0)
                return set_error(ret_error, r, "%s: cannot read: %s", j->path, strerror(-r));
        r = journal_check_header(j->path, l->data, l->size, readonly, &l->version, &start, ret_error);
        if (r < 0)
                return r;
        /* NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage): start is set unless the variadic set_error() failed it */
        r = journal_parse(j->path, l->data, l->size, start, l->version, &l->p, ret_error);
        if (r == -ENOMEM)
                return set_error(ret_error, r, "%s: out of memory", j->path);
        if (r < 0)
                return r;
        log_torn(j->path, &l->p, l->size, readonly);
        return 0;
}

static int journal_replay(Journal *j, const Parsed *p, journal_replay_t replay, void *userdata,
                          char **ret_error) {
        for (size_t i = 0; replay && i < p->n; i++) {
                int r = replay(&p->entries[i].record, userdata);
                if (r < 0)
                        return set_error(ret_error, r, "%s: offset %zu: replaying %s record failed: %s",
                                         j->path, p->entries[i].offset, types[p->entries[i].record.type].name,
                                         strerror(-r));
        }
        return 0;
}

static int journal_new(const char *dir, Journal **ret) {
        Journal *j;
        size_t dlen;

        if (!dir || !*dir)
                return -EINVAL;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->dir_fd = j->fd = j->compact_fd = -1;
        dlen = strlen(dir);
        while (dlen > 1 && dir[dlen - 1] == '/')
                dlen--;
        j->path = strdup_printf("%.*s/journal", (int) dlen, dir);
        if (!j->path) {
                free(j);
                return -ENOMEM;
        }
        *ret = j;
        return 0;
}

/* Called when DIR/journal does not exist. journal.new is written and renamed over
 * journal; one without the other means someone removed journal, and journal.new may be
 * the only (perhaps partial) copy of the state. Do not throw it away. */
static int journal_check_orphaned_new(Journal *j, bool readonly, char **ret_error) {
        if (faccessat(j->dir_fd, "journal.new", F_OK, AT_SYMLINK_NOFOLLOW) < 0)
                return 0;
        if (readonly)
                return set_error(ret_error, -EBADMSG, "%s: missing, but %s.new exists", j->path, j->path);
        return set_error(ret_error, -EBADMSG,
                         "%s: missing, but %s.new exists: refusing to start afresh "
                         "(remove journal.new to do so)", j->path, j->path);
}

/* Creates a journal that is never seen incomplete: the header goes to journal.tmp,
 * which is renamed to journal once durable. */
static int journal_create(Journal *j, char **ret_error) {
        _cleanup_close_ int fd = -1;
        int r;

        fd = openat(j->dir_fd, "journal.tmp", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return set_error(ret_error, -errno, "%s.tmp: cannot create: %m", j->path);
        r = pwrite_all(fd, JOURNAL_HEADER, strlen(JOURNAL_HEADER), 0);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && renameat(j->dir_fd, "journal.tmp", j->dir_fd, "journal") < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(j->dir_fd, "journal.tmp", 0);
                return set_error(ret_error, r, "%s: cannot create: %s", j->path, strerror(-r));
        }
        if (fsync(j->dir_fd) < 0)
                return set_error(ret_error, -errno, "%s: cannot sync the directory after creating it: %m",
                                 j->path);
        /* cppcheck-suppress unreadVariable ; TAKE_FD() disarms the _cleanup_close_ */
        j->fd = TAKE_FD(fd);
        j->size = strlen(JOURNAL_HEADER);
        j->n_records = 0;
        return 0;
}

/* Makes *fd, the complete and written DIR/journal.new of size bytes and n records, the
 * journal: fsync, rename over DIR/journal, switch to it, fsync DIR. When it fails
 * before the rename, journal.new is removed and the old file stays in use. */
static int journal_install_new(Journal *j, int *fd, uint64_t size, size_t n) {
        int r = 0;

        if (fsync(*fd) < 0)
                r = -errno;
        if (r >= 0 && renameat(j->dir_fd, "journal.new", j->dir_fd, "journal") < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(j->dir_fd, "journal.new", 0);
                return r;
        }

        /* journal.new is the journal now: switch at once, records appended to the old,
         * unlinked file would be lost. */
        if (j->fd >= 0)
                close(j->fd);
        j->fd = TAKE_FD(*fd);
        j->size = size;
        j->n_records = n;
        j->dirty_tail = false;
        j->reserved_end = 0;
        /* Everything memory holds is in the new file, fsynced. */
        j->unsynced = j->sync_failed = false;
        if (fsync(j->dir_fd) < 0) {
                /* The rename may not be durable: no append is acknowledged before it is. */
                j->dir_unsynced = true;
                return -errno;
        }
        j->dir_unsynced = false;
        return 0;
}

/* Rewrites a journal of an older version in the current one, with the same records
 * (each a batch of its own, as they were). */
static int journal_upgrade(Journal *j, const Loaded *l, char **ret_error) {
        _cleanup_(buffer_done) Buffer b = {};
        _cleanup_close_ int fd = -1;
        int r;

        r = buffer_append(&b, JOURNAL_HEADER, strlen(JOURNAL_HEADER));
        for (size_t i = 0; r >= 0 && i < l->p.n; i++)
                r = serialize_record(&b, &l->p.entries[i].record, 1, 1);
        if (r < 0)
                return set_error(ret_error, r, "%s: cannot rewrite in format %d: %s", j->path,
                                 JOURNAL_VERSION, strerror(-r));
        fd = openat(j->dir_fd, "journal.new", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return set_error(ret_error, -errno, "%s.new: cannot create: %m", j->path);
        r = pwrite_all(fd, b.data, b.size, 0);
        if (r < 0)
                (void) unlinkat(j->dir_fd, "journal.new", 0);
        else
                r = journal_install_new(j, &fd, b.size, l->p.n);
        if (r < 0)
                return set_error(ret_error, r, "%s: cannot rewrite in format %d: %s", j->path,
                                 JOURNAL_VERSION, strerror(-r));
        log_notice("%s: rewritten from format %u to format %d", j->path, l->version, JOURNAL_VERSION);
        return 0;
}

static int remove_leftover(Journal *j, const char *name, const char *what, char **ret_error) {
        if (unlinkat(j->dir_fd, name, 0) >= 0) {
                log_warning("%s%s: removed the leftover of an interrupted %s", j->path,
                            name + strlen("journal"), what);
                return 0;
        }
        if (errno == ENOENT)
                return 0;
        return set_error(ret_error, -errno, "%s%s: cannot remove leftover: %m", j->path,
                         name + strlen("journal"));
}

int journal_open(const char *dir, journal_replay_t replay, void *userdata, Journal **ret,
                 char **ret_error) {
        _cleanup_(journal_closep) Journal *j = NULL;
        _cleanup_(loaded_done) Loaded l = {};
        int r;

        if (ret_error)
                *ret_error = NULL;
        if (!ret)
                return -EINVAL;
        r = journal_new(dir, &j);
        if (r < 0)
                return r;

        if (mkdir(dir, 0700) >= 0) {
                /* Make the new directory itself durable, or all of it could vanish. */
                _cleanup_free_ char *d = strndup(j->path, strlen(j->path) - strlen("/journal"));
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

        j->fd = openat(j->dir_fd, "journal", O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (j->fd < 0) {
                /* As journal_load() says of anything but a regular file, and --show-state
                 * (which opens it read-only) with it: damage, for the operator. */
                if (errno == EISDIR)
                        return set_error(ret_error, -EBADMSG, "%s: not a regular file", j->path);
                if (errno != ENOENT)
                        return set_error(ret_error, -errno, "%s: cannot open: %m", j->path);
                r = journal_check_orphaned_new(j, false, ret_error);
                if (r < 0)
                        return r;
                r = remove_leftover(j, "journal.tmp", "creation", ret_error);
                if (r < 0)
                        return r;
                r = journal_create(j, ret_error);
                if (r < 0)
                        return r;
                *ret = TAKE_PTR(j);
                return 0;
        }

        r = journal_load(j, false, &l, ret_error);
        if (r < 0)
                return r;
        r = journal_replay(j, &l.p, replay, userdata, ret_error);
        if (r < 0)
                return r;

        /* Only now: a journal that is refused is left with everything beside it. */
        r = remove_leftover(j, "journal.new", "compaction", ret_error);
        if (r >= 0)
                r = remove_leftover(j, "journal.tmp", "creation", ret_error);
        if (r < 0)
                return r;

        if (l.version < JOURNAL_VERSION) {
                r = journal_upgrade(j, &l, ret_error);
                if (r < 0)
                        return r;
        } else {
                j->size = l.p.end;
                j->n_records = l.p.n;
                /* A torn tail is cut off by the next append (or compaction), before it
                 * writes anything: this open changes nothing. */
                j->dirty_tail = l.p.end < l.size;
        }
        *ret = TAKE_PTR(j);
        return 0;
}

int journal_open_readonly(const char *dir, journal_replay_t replay, void *userdata, char **ret_error) {
        _cleanup_(journal_closep) Journal *j = NULL;
        _cleanup_(loaded_done) Loaded l = {};
        int r;

        if (ret_error)
                *ret_error = NULL;
        r = journal_new(dir, &j);
        if (r < 0)
                return r;

        j->dir_fd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        if (j->dir_fd < 0) {
                if (errno == ENOENT)
                        return set_error(ret_error, -ENOENT, "%s: no journal (no state directory)", j->path);
                return set_error(ret_error, -errno, "%s: cannot open directory: %m", dir);
        }
        /* O_NONBLOCK: a FIFO put there must not hang us; read_all() refuses it. */
        j->fd = openat(j->dir_fd, "journal", O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (j->fd < 0) {
                if (errno != ENOENT)
                        return set_error(ret_error, -errno, "%s: cannot open: %m", j->path);
                r = journal_check_orphaned_new(j, true, ret_error);
                if (r < 0)
                        return r;
                return set_error(ret_error, -ENOENT, "%s: no journal", j->path);
        }

        r = journal_load(j, true, &l, ret_error);
        if (r < 0)
                return r;
        return journal_replay(j, &l.p, replay, userdata, ret_error);
}

Journal *journal_close(Journal *j) {
        if (!j)
                return NULL;
        (void) journal_sync(j); /* a lazy batch's loss is harmless, but why lose it */
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

static int serialize_checked(Buffer *b, const JournalRecord *r, size_t k, size_t n) {
        char err[160];

        if (record_check(r, err, sizeof(err)) < 0)
                return log_error_errno(-EINVAL, "journal: refusing to write an invalid record: %s", err);
        return serialize_record(b, r, k, n);
}

/* Reserves the blocks an append of n bytes will write, without changing the file size,
 * so that a full disk fails it before anything is written. Where the file system
 * cannot reserve, the write itself finds out (and is cut off again). */
/* Space is reserved ahead, RESERVE_AHEAD at a time, so that most appends need no
 * fallocate() of their own; on a nearly full disk just what the batch needs. */
#define RESERVE_AHEAD (64U * 1024U)

static int journal_reserve(Journal *j, size_t n) {
        size_t len = MAX(n, (size_t) RESERVE_AHEAD);

        if (j->size + n <= j->reserved_end)
                return 0;
        for (;;) {
                if (fallocate(j->fd, FALLOC_FL_KEEP_SIZE, (off_t) j->size, (off_t) len) >= 0) {
                        j->reserved_end = j->size + len;
                        return 0;
                }
                if (errno == EINTR)
                        continue;
                if (IN_SET(errno, EOPNOTSUPP, ENOSYS, EINVAL))
                        return 0;
                if (errno == ENOSPC && len > n) {
                        len = n;
                        continue;
                }
                return -errno;
        }
}

static int journal_append_full(Journal *j, const JournalRecord *records, size_t n, bool sync) {
        _cleanup_(buffer_done) Buffer b = {};
        int r;

        if (!j || (n > 0 && !records))
                return -EINVAL;
        if (j->compact_fd >= 0)
                return -EBUSY; /* it would be lost with the old file */
        if (j->sync_failed)
                return -EIO; /* what the failed sync held may be gone: compact first */
        if (n == 0)
                return 0;
        if (n > JOURNAL_BATCH_MAX)
                return -E2BIG;
        for (size_t i = 0; i < n; i++) {
                r = serialize_checked(&b, &records[i], i + 1, n);
                if (r < 0)
                        return r;
        }

        if (j->dir_unsynced) {
                if (fsync(j->dir_fd) < 0)
                        return -errno;
                j->dir_unsynced = false;
        }
        if (j->dirty_tail) {
                j->reserved_end = 0; /* truncating may free what was reserved */
                if (ftruncate(j->fd, (off_t) j->size) < 0)
                        return -errno;
                j->dirty_tail = false;
        }

        r = journal_reserve(j, b.size);
        if (r < 0)
                return r;
        r = pwrite_all(j->fd, b.data, b.size, j->size);
        if (r >= 0 && sync && fdatasync(j->fd) < 0) {
                r = -errno;
                /* Earlier lazy batches were in that sync too: after a failed sync the
                 * kernel may have dropped their pages and a later sync can succeed
                 * without them. Only a compaction (from memory) can be trusted. */
                if (j->unsynced)
                        j->sync_failed = true;
        }
        if (r < 0) {
                /* Cut off whatever made it, so that the file ends with a complete batch.
                 * Should that fail too, replay drops the incomplete batch. */
                j->reserved_end = 0;
                if (ftruncate(j->fd, (off_t) j->size) < 0 || fdatasync(j->fd) < 0)
                        j->dirty_tail = true;
                return r;
        }
        j->size += b.size;
        j->n_records += n;
        j->unsynced = !sync;
        return 0;
}

int journal_append(Journal *j, const JournalRecord *records, size_t n) {
        return journal_append_full(j, records, n, true);
}

int journal_append_lazy(Journal *j, const JournalRecord *records, size_t n) {
        return journal_append_full(j, records, n, false);
}

bool journal_unsynced(Journal *j) {
        return j && (j->unsynced || j->sync_failed);
}

int journal_sync(Journal *j) {
        if (!j)
                return -EINVAL;
        if (j->sync_failed)
                return -EIO;
        if (!j->unsynced)
                return 0;
        if (j->dir_unsynced) {
                if (fsync(j->dir_fd) < 0)
                        return -errno;
                j->dir_unsynced = false;
        }
        if (fdatasync(j->fd) < 0) {
                j->sync_failed = true;
                return -errno;
        }
        j->unsynced = false;
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
        k = serialize_checked(&j->compact_buf, r, 1, 1);
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
        size = j->compact_size;
        n = j->compact_n;
        j->compact_fd = -1;
        buffer_done(&j->compact_buf);
        if (r < 0) {
                (void) unlinkat(j->dir_fd, "journal.new", 0);
                return r;
        }
        return journal_install_new(j, &fd, size, n);
}

/* SPDX-License-Identifier: MIT */
#pragma once

#include <sys/types.h>

#include "macro.h"

/* Durations: an unsigned integer and one unit of ms s m h d w ("30d", "90m", "0s").
 * Returns -EINVAL for anything else (a bare number, an unknown unit, spaces),
 * -ERANGE on overflow. */
int parse_duration(const char *s, usec_t *ret);

/* "6d 23h", "2h 4m", "45s", "0s": the two most significant units, for humans. */
char *format_duration(char *buf, size_t size, usec_t d);
#define FORMAT_DURATION_MAX 32

/* "2026-11-23T09:40:00Z" for logs; USEC_INFINITY gives "never", 0 gives "n/a". */
char *format_timestamp(char *buf, size_t size, usec_t t);
#define FORMAT_TIMESTAMP_MAX 32

/* Parse epoch milliseconds (integer) or ISO 8601 ("2026-11-23T09:40:00Z",
 * "2026-11-23T09:40:00.123+01:00", "2026-11-23T09:40Z") into µs since the epoch.
 * -EINVAL for anything else (also impossible dates such as February 30th and times
 * before 1970), -ERANGE for epoch milliseconds beyond what usec_t holds (never
 * wrapped). */
int parse_iso8601(const char *s, usec_t *ret);

static inline usec_t usec_add(usec_t a, usec_t b) {
        return a > USEC_INFINITY - b ? USEC_INFINITY : a + b; /* saturates */
}
usec_t now_realtime(void);
usec_t now_monotonic(void);

/* Dynatrace tokens look like "dt0c01.<24 chars>.<64 chars>": the first two parts
 * are public, the third is the secret. Tokens from before 2021 are one string of
 * letters and digits without dots (21 characters in practice; TOKEN_LEGACY_MIN to
 * TOKEN_LEGACY_MAX are accepted) and have no public part: all of it is the secret. */
#define TOKEN_PUBLIC_MAX 64
#define TOKEN_LEGACY_MIN 16
#define TOKEN_LEGACY_MAX 128
bool token_is_valid(const char *token);     /* either format */
bool token_is_legacy(const char *token);    /* the pre-2021 format */
/* Writes "dt0c01.ABCD...XYZ" (the public part, never the secret) into buf. For a
 * legacy token writes "(legacy token)" (no part of it may be shown); for something
 * that is not a token, "(not a token)". */
char *token_public_part(char *buf, size_t size, const char *token);

/* "a FIFO", "a directory", "a socket", ... for messages about a file of the wrong type. */
const char *file_type_name(mode_t mode);
/* Where the symbolic link path leads: the canonical path of the file when it exists,
 * else the link's text; malloc'ed (NULL: out of memory). */
char *symlink_target(const char *path);

/* Read a token file: never follows a symbolic link in the last component, never
 * blocks (a FIFO or device is refused before it is opened), regular files only, at
 * most 4 KiB, surrounding white space (also CR LF) stripped, must hold exactly one
 * valid token. Returns 0 and the secret in *ret (erase_and_free), or:
 *   -ELOOP    a symbolic link: *ret_error is "is a symbolic link to /real/path; ..."
 *   -EBADMSG  not a regular file ("is not a regular file (a FIFO)"), empty, more than
 *             one line or word, not a token: *ret_error says why
 *   -EFBIG    larger than 4 KiB (*ret_error set)
 *   -ENOENT, other -errno (*ret_error NULL: use strerror()).
 * *ret_error never contains any of the file's content and is meant to follow the path
 * ("PATH: is not a regular file (a FIFO)"). It is a constant or points to a
 * thread-local buffer that stays valid until the next read_token_file() call in the
 * same thread: copy it before calling again. */
int read_token_file(const char *path, char **ret, const char **ret_error);
/* follow: a symbolic link is followed (to a regular file). For the management token,
 * which is only read; a job's file is replaced by rename and must not be a link. */
int read_token_file_full(const char *path, bool follow, char **ret, const char **ret_error);

/* NULL-terminated string vectors. */
char **strv_free(char **l);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free);
#define _cleanup_strv_free_ _cleanup_(strv_freep)
size_t strv_length(char * const *l);
char **strv_copy(char * const *l);
bool strv_equal(char * const *a, char * const *b);
bool strv_contains(char * const *l, const char *s);
int strv_push(char ***l, char *s);   /* takes s; -ENOMEM */

/* fsync the directory that contains path. */
int fsync_parent_dir(const char *path);
/* Directory part of path ("." if none); malloc'ed. */
char *dirname_malloc(const char *path);

/* Random 64-bit value for jitter (getrandom, never fails hard). */
uint64_t random_u64(void);

/* asprintf that returns NULL on failure. */
char *strdup_printf(const char *fmt, ...) _printf_(1, 2);

/* A counted set of strings (a tsearch() tree): how many holders each string has, in
 * O(log n). root starts NULL. */
int strcount_ref(void **root, const char *s);            /* -ENOMEM */
void strcount_unref(void **root, const char *s);         /* one holder fewer */
unsigned strcount_get(void *const *root, const char *s); /* 0 if absent */
void strcount_free(void **root);

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
 * "2026-11-23T09:40:00.123+01:00", "2026-11-23T09:40Z") into µs since the epoch. */
int parse_iso8601(const char *s, usec_t *ret);

usec_t now_realtime(void);
usec_t now_monotonic(void);

/* Dynatrace tokens look like "dt0c01.<24 chars>.<64 chars>": the first two parts
 * are public, the third is the secret. */
#define TOKEN_PUBLIC_MAX 64
bool token_is_valid(const char *token);
/* Writes "dt0c01.ABCD...XYZ" (the public part, never the secret) into buf. For
 * something that is not a token, writes "(not a token)". */
char *token_public_part(char *buf, size_t size, const char *token);

/* Read a token file: at most 4 KiB, surrounding whitespace stripped, must be one
 * valid token. -ENOENT, -EBADMSG (not a token: *ret_error says why, without
 * content), -EFBIG, other -errno. The secret is returned in *ret (erase_and_free). */
int read_token_file(const char *path, char **ret, const char **ret_error);

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

/* SPDX-License-Identifier: MIT */
#pragma once

#include <syslog.h>

#include "macro.h"

/* Logging goes to syslog(3) (ident "dtrotated", LOG_DAEMON) or, where journald
 * runs, to the journal with structured fields; optionally also to stderr. */
void log_setup(bool also_stderr);
void log_set_max_level(int prio);

/* MESSAGE_IDs, one per kind of event, for journalctl MESSAGE_ID=... */
#define MSGID_ROTATED "1c6e8e7a4b5d4f3a9d0e2f1a7b8c9d01"
#define MSGID_REVOKED "1c6e8e7a4b5d4f3a9d0e2f1a7b8c9d02"
#define MSGID_DELETED "1c6e8e7a4b5d4f3a9d0e2f1a7b8c9d03"
#define MSGID_FAILED  "1c6e8e7a4b5d4f3a9d0e2f1a7b8c9d04"
#define MSGID_EXPIRY  "1c6e8e7a4b5d4f3a9d0e2f1a7b8c9d05"
#define MSGID_REVOKE_NOW "1c6e8e7a4b5d4f3a9d0e2f1a7b8c9d20" /* an operator's revoke-now */
#define MSGID_CONTROL "1c6e8e7a4b5d4f3a9d0e2f1a7b8c9d21"  /* an operator's request */

/* Returns -abs(error) if error != 0 (so callers can "return log_error_errno(r, ...)"),
 * else 0. */
int log_full(int prio, int error, const char *fmt, ...) _printf_(3, 4);

/* A line about a job: the text starts with "JOB: ". token_id/old_id may be NULL.
 * msgid may be NULL. Never pass a secret. */
int log_job(int prio, const char *job, const char *msgid, const char *old_id,
            const char *new_id, int error, const char *fmt, ...) _printf_(7, 8);

#define log_debug(...)   log_full(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...)    log_full(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...)  log_full(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...)   log_full(LOG_ERR, 0, __VA_ARGS__)
#define log_error_errno(e, ...)   log_full(LOG_ERR, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_full(LOG_WARNING, (e), __VA_ARGS__)

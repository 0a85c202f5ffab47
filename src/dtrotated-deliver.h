/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-event.h>

#include "dtrotated-config.h"
#include "macro.h"

/* Handing a new token to its consumers: the secret is staged in a file next to the
 * target (".NAME.dtrotated-new", created O_EXCL|O_NOFOLLOW, given its final mode and
 * owner before the secret is written, then fsync'd), and later renamed over the target
 * (then the directory is fsync'd). A staged file that survives a crash is how an
 * interrupted rotation finds its new token again.
 *
 * The target is inspected with lstat() and never followed: a symbolic link (-ELOOP) or
 * anything but a regular file (-EISDIR, -EBADMSG) is refused. The new file keeps the
 * current file's owner, group and mode (minus write for others) where the configuration
 * does not set them (JobConfig uid/gid (uid_t)/(gid_t) -1, mode JOB_MODE_KEEP); a new
 * file gets JOB_MODE_NEW, the daemon's user and the group the directory gives it
 * (its own, or the directory's when that is setgid). Giving a file to another user
 * needs CAP_CHOWN, to another group membership of it: -EPERM otherwise, nothing is
 * written.
 *
 * The _full variants return, on failure, a malloc'ed explanation naming the paths in
 * *ret_error (NULL on success, or when out of memory; ret_error itself may be NULL). */

char *deliver_staged_path(const char *file);
/* Before creating a token: can the target be replaced as described above? 0, or -ELOOP,
 * -EISDIR, -EBADMSG (not a regular file), -EPERM (its owner or group cannot be kept or
 * set: no CAP_CHOWN, not a member of the group), other -errno; *ret_error explains. A
 * target that does not exist yet is fine. Call it before a create, so that a token is
 * never made that cannot be delivered. */
int deliver_check(const JobConfig *j, char **ret_error);
/* Stage: remove a stale staged file, create it 0600 O_EXCL, chown/chmod it as described
 * above, write the secret and a newline, fsync. */
int deliver_stage(const JobConfig *j, const char *secret);
int deliver_stage_full(const JobConfig *j, const char *secret, char **ret_error);
/* Rename the staged file over the target, fsync the directory. With expected (the
 * staged secret) non-NULL it is idempotent: when the staged file is gone but the target
 * already holds expected (an earlier call renamed it and then failed to fsync the
 * directory), it only fsyncs the directory again and returns 0. Without, or when the
 * target holds anything else, a missing staged file is -ENOENT. */
int deliver_commit(const JobConfig *j);    /* = deliver_commit_full(j, NULL, NULL) */
int deliver_commit_full(const JobConfig *j, const char *expected, char **ret_error);
/* Read the staged file's token, if any: 0 and *ret, -ENOENT, or another error. */
int deliver_read_staged(const JobConfig *j, char **ret);
int deliver_discard_staged(const JobConfig *j);

/* The on_rotate hook: run with a clean environment holding only PATH and the
 * DTROTATED_JOB, DTROTATED_FILE, DTROTATED_OLD_TOKEN_ID and DTROTATED_NEW_TOKEN_ID
 * variables (never a secret), stdin from /dev/null, in its own process group, killed
 * when it outlives `timeout`. `done` gets 0 on exit status 0, else a negative errno
 * and a description ("exited with status 3", "killed by signal 9", "timed out after 1m"). */
typedef struct Hook Hook;
typedef void (*hook_done_t)(Hook *h, int error, const char *what, void *userdata);

int hook_run(sd_event *event, const char *program, const char *job, const char *file,
             const char *old_id, const char *new_id, usec_t timeout, hook_done_t done,
             void *userdata, Hook **ret);
/* Kills a running hook (SIGKILL to its group) and frees it; no callback. */
Hook *hook_free(Hook *h);

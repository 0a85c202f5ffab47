/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-event.h>

#include "dtrotated-config.h"
#include "macro.h"

/* Handing a new token to its consumers: the secret is staged in a file next to the
 * target (".NAME.dtrotated-new", created with its final mode and owner before the secret
 * is written, then fsync'd), and later renamed over the target (then the directory is
 * fsync'd). A staged file that survives a crash is how an interrupted rotation finds its
 * new token again. */

char *deliver_staged_path(const char *file);
/* Stage: remove a stale staged file, create it 0600 O_EXCL, chown/chmod to the job's
 * owner/group/mode, write the secret and a newline, fsync. */
int deliver_stage(const JobConfig *j, const char *secret);
/* Rename the staged file over the target, fsync the directory. */
int deliver_commit(const JobConfig *j);
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

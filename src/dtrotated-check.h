/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdio.h>

#include "dtrotated-config.h"

/* Looks up every job's token and every environment's management token with the API,
 * read-only: lookups (and, for --dry-run, a read-only replay of the journal), never a
 * create, revoke, delete, file or journal write.
 *
 * online_check(): `dtrotated --check-config --online`. Problems go to report as
 * "FILE:LINE: what" (a token file that cannot be read or looked up, a management
 * token that cannot be looked up or lacks a scope the configuration needs). Returns 0
 * when there is no error, -EINVAL when one was reported, -errno when the check could
 * not run.
 *
 * dry_run(): `dtrotated --dry-run`. Prints to f, per job, what the daemon would do
 * and when; then the pending revokes, deletes and scans. Returns 0 when every lookup
 * succeeded, -EIO when one failed (printed), -EBADMSG for a damaged journal, other
 * -errno when it could not run.
 *
 * Neither takes c; api_global_init() must have been called. */
int online_check(const Config *c, config_report_t report, void *userdata);
int dry_run(const Config *c, FILE *f);

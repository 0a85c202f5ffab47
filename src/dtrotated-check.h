/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdio.h>

#include "dtrotated-config.h"

/* Looks up every job's token and every environment's management token with the API,
 * read-only: lookups (and, for --dry-run, a read-only replay of the journal), never a
 * create, revoke, delete, file or journal write.
 *
 * dry_run(): `dtrotated --dry-run`. Prints to f, per job, what the daemon would do
 * and when; then the pending revokes, deletes and scans. Returns 0 when every lookup
 * succeeded, -EIO when one failed (printed), -EBADMSG for a damaged journal, other
 * -errno when it could not run.
 *
 * It does not take c; api_global_init() must have been called. */
int dry_run(const Config *c, FILE *f);

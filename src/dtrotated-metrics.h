/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdio.h>

#include "dtrotated-api.h"
#include "dtrotated-journal.h"
#include "macro.h"

/* Prometheus metrics for node_exporter's textfile collector (`metrics_file`): the
 * counters live here, owned by the Manager; the gauges are read from the manager's
 * state each time the file is written. The file is rewritten (temporary file in the
 * same directory, then rename) after changes, at most once a second, and at exit. */

typedef struct Manager Manager;
typedef struct Metrics Metrics;

int metrics_new(Metrics **ret);
Metrics *metrics_free(Metrics *x);

/* A live journal record (before it is applied): counts rotations, revokes, deletes. */
void metrics_count_record(Manager *m, const JournalRecord *r);
/* A finished API request: status is the HTTP status, 0 when no answer arrived. */
void metrics_count_request(Manager *m, ApiOp op, long status);

/* Something changed: write the file soon (coalesced, at most once a second). */
void metrics_changed(Manager *m);
/* Write it now if anything changed since the last write (at exit). */
void metrics_flush(Manager *m);

/* The text, in the Prometheus exposition format (for the file and for tests). */
int metrics_format(Manager *m, FILE *f);
/* A label value escaped for the exposition format (\\, \", \n); malloc'ed. */
char *metrics_escape_label(const char *s);

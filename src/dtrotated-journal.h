/* SPDX-License-Identifier: MIT */
#pragma once

#include "macro.h"

/* The crash-safe journal: an append-only text file "journal" in the state directory.
 * Each record is one line "CRC32HEX TYPE key=value ...\n" (first line a versioned
 * header), appended and fdatasync'd before the caller proceeds. Replay yields the
 * records in order; the caller (the manager) derives its state from them. Compaction
 * writes the live state to "journal.new", fsyncs it and renames it over "journal".
 * Never holds secrets: ids, names, times. */

typedef enum JournalType {
        JOURNAL_JOB,        /* job env id created expires: the job's current token (first
                             * lookup, or a token the operator put in the file) */
        JOURNAL_CREATE,     /* job env [old] at: intent, a create is about to be sent */
        JOURNAL_DELIVERED,  /* job env [old] id created expires: the new token is in the
                             * job's file; hook owed */
        JOURNAL_ROTATED,    /* job env [old] id created expires: done, id is the job's token */
        JOURNAL_RETIRE,     /* env id [job] at grace: revoke id at `at`, delete `grace` after
                             * the confirmed revoke */
        JOURNAL_REVOKED,    /* env id at: revoke confirmed; delete at `at` */
        JOURNAL_DELETED,    /* env id: gone; the retirement is finished */
        JOURNAL_SCAN,       /* job env name at: tokens named `name` created after `at` that
                             * are in no file are leftovers of an ambiguous create */
        JOURNAL_SCANNED,    /* job env: the owed scan has run */
        JOURNAL_FORGET,     /* job: removed from the config; drop its schedule */
        _JOURNAL_TYPE_MAX,
} JournalType;
/* The string keys listed are required, except those in [] (may be NULL); times are
 * optional (0 = absent). journal_append() refuses other keys and missing ones (-EINVAL). */

const char *journal_type_to_string(JournalType t);  /* "job", "create", ... */

typedef struct JournalRecord {
        JournalType type;
        const char *job;       /* job name */
        const char *env;       /* environment name */
        const char *id;        /* token id */
        const char *old_id;    /* previous token id */
        const char *name;      /* token name (SCAN) */
        usec_t at;             /* CREATE, RETIRE, REVOKED, SCAN: a CLOCK_REALTIME time */
        usec_t created;        /* JOB, DELIVERED, ROTATED */
        usec_t expires;        /* JOB, DELIVERED, ROTATED; USEC_INFINITY = never */
        usec_t grace;          /* RETIRE */
} JournalRecord;

typedef struct Journal Journal;

/* Called for each record in order during replay; pointers valid during the call only.
 * A negative return aborts the open with that error. */
typedef int (*journal_replay_t)(const JournalRecord *r, void *userdata);

/* Opens (creating if needed) DIR/journal: creates DIR (0700) if missing, takes an
 * exclusive flock() on DIR (-EBUSY: another instance runs), replays, drops a torn last
 * record (crash mid-append) with a warning. On damage elsewhere returns -EBADMSG and
 * *ret_error = "DIR/journal: offset N: what is wrong"; nothing is modified then. */
int journal_open(const char *dir, journal_replay_t replay, void *userdata, Journal **ret,
                 char **ret_error);
Journal *journal_close(Journal *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(Journal *, journal_close);

/* Appends n records in one write and one fdatasync. Returns 0 once they are durable,
 * -errno otherwise (ENOSPC, EROFS, EIO...): then the file is truncated back to where it
 * was, as if nothing had been appended. */
int journal_append(Journal *j, const JournalRecord *records, size_t n);

/* Number of records in the file since the last compaction (for deciding when to compact). */
size_t journal_n_records(Journal *j);
uint64_t journal_size(Journal *j);

/* Rewrites the journal with just the records that `emit` hands to journal_compact_add(),
 * atomically (journal.new, fsync, rename, fsync dir). On failure the old file stays. */
typedef int (*journal_emit_t)(Journal *j, void *userdata);
int journal_compact(Journal *j, journal_emit_t emit, void *userdata);
int journal_compact_add(Journal *j, const JournalRecord *r);

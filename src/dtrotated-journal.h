/* SPDX-License-Identifier: MIT */
#pragma once

#include "macro.h"

/* The crash-safe journal: an append-only text file "journal" in the state directory.
 * Each record is one line "CRC32HEX TYPE key=value ...\n" (first line a versioned
 * header). Records are appended in batches, each made durable with one fdatasync
 * before the caller proceeds; a batch is all or nothing: replay yields the records of
 * complete batches only, in order, and the caller (the manager) derives its state from
 * them. Compaction writes the live state to "journal.new", fsyncs it and renames it
 * over "journal". Never holds secrets: ids, names, times. The format is described at
 * the top of dtrotated-journal.c. */

typedef enum JournalType {
        JOURNAL_JOB,        /* job env id created expires: the job's current token (first
                             * lookup, or a token the operator put in the file) */
        JOURNAL_CREATE,     /* job env [old] [name] at: intent, a create (of a token named
                             * `name`) is about to be sent */
        JOURNAL_DELIVERED,  /* job env [old] id created expires: the new token is in the
                             * job's file; hook owed */
        JOURNAL_ROTATED,    /* job env [old] id created expires [at]: done, id is the job's
                             * token; `at` is the local time of the rotation */
        JOURNAL_RETIRE,     /* env id [job] at grace [unused until]: revoke id at `at`, delete
                             * `grace` after the confirmed revoke; with unused (revoke_when_
                             * unused), revoke only once id was not used for that long, but
                             * at `until` at the latest */
        JOURNAL_REVOKED,    /* env id at: revoke confirmed; delete at `at` */
        JOURNAL_DELETED,    /* env id: gone; the retirement is finished */
        JOURNAL_SCAN,       /* job env name at until grace: tokens named `name` created
                             * between `at` and `until` (0: no upper bound) that are in no
                             * file are leftovers of an ambiguous create; delete them
                             * `grace` after their revoke */
        JOURNAL_SCANNED,    /* job env [until]: the owed scan has run over the window
                             * ending at `until` (a later SCAN may have widened it) */
        JOURNAL_FORGET,     /* job: removed from the config; drop its schedule */
        JOURNAL_RESTORE,    /* job env id old: intent, the job puts its previous token
                             * `id` back in place of `old` (dtrotatectl restore); the
                             * retirement of `id` waits (is revoked again if abandoned) */
        JOURNAL_RESTORED,   /* job env id [old] created expires [at]: done, id is the
                             * job's token again and the job is held: no scheduled
                             * rotation until an operator's rotate (a ROTATED ends it) */
        JOURNAL_UNRETIRE,   /* env id: the retirement of id is dropped (restored) */
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
        const char *name;      /* token name (SCAN; optional in CREATE) */
        usec_t at;             /* CREATE, RETIRE, REVOKED, SCAN: a CLOCK_REALTIME time */
        usec_t created;        /* JOB, DELIVERED, ROTATED */
        usec_t expires;        /* JOB, DELIVERED, ROTATED; USEC_INFINITY = never */
        usec_t grace;          /* RETIRE, SCAN */
        usec_t until;          /* SCAN: end of the window of create attempts it covers;
                                * RETIRE: when to stop waiting for `unused` and revoke */
        usec_t unused;         /* RETIRE: revoke once the token's last use is this long ago
                                * (0: at once); set together with until, or neither */
} JournalRecord;

typedef struct Journal Journal;

/* Called for each record in order during replay; pointers valid during the call only.
 * Only records of complete batches are replayed: the whole file is checked first, so
 * the callback never sees half a batch. A negative return aborts the open with that
 * error. */
typedef int (*journal_replay_t)(const JournalRecord *r, void *userdata);

/* Opens DIR/journal for appending: creates DIR (0700) if missing, takes an exclusive
 * flock() on DIR, replays. A missing journal is created atomically (header written to
 * DIR/journal.tmp, fsync, rename, fsync DIR); a leftover journal.tmp or journal.new is
 * removed once the journal has been read and replayed. A torn last batch (crash mid-append) is dropped with a warning and cut off
 * by the next append. A journal in the previous format (version 1) is replayed and then
 * rewritten atomically in the current one.
 * Returns 0, or:
 *   -EBADMSG  the journal needs an operator: damaged (a bad record or batch anywhere but
 *             at the torn end), empty or cut short inside its header, of an unknown
 *             version, not a regular file, or missing while DIR/journal.new exists.
 *             Restarting will not help, and nothing was modified. *ret_error is
 *             "DIR/journal: offset N: what is wrong" (for the missing journal
 *             "DIR/journal: missing, but ...").
 *   -EBUSY    another instance holds the lock.
 *   -ENOMEM, -EFBIG (larger than 1 GiB), or the -errno of a failed system call (EACCES,
 *             EROFS, ENOSPC, EIO...).
 *   the replay callback's error, with "DIR/journal: offset N: replaying TYPE record
 *             failed: ..." in *ret_error.
 * *ret_error (if not NULL) is NULL on success and set on failure, except for bad
 * arguments (-EINVAL) and some -ENOMEM. */
int journal_open(const char *dir, journal_replay_t replay, void *userdata, Journal **ret,
                 char **ret_error);

/* Replays DIR/journal for a tool (a state dump, a status reader while the daemon is
 * down or running): takes no lock, creates, truncates, upgrades and removes nothing,
 * and opens the file read-only. A torn last batch is ignored (reported at LOG_NOTICE:
 * a running daemon may be writing it). Returns 0, -ENOENT when there is no journal (or
 * no DIR) and no journal.new, and otherwise the errors of journal_open() but -EBUSY,
 * with *ret_error set likewise. */
int journal_open_readonly(const char *dir, journal_replay_t replay, void *userdata,
                          char **ret_error);

Journal *journal_close(Journal *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(Journal *, journal_close);

/* Appends n records as one batch, in one write and one fdatasync: replay yields all of
 * them or, if the write was torn by a crash, none. Space for the batch is reserved
 * before anything is written, so a full disk fails it without writing a byte (where
 * the file system can reserve). Returns 0 once they are durable, -errno otherwise
 * (ENOSPC, EROFS, EIO...): then the file is truncated back to where it was, as if
 * nothing had been appended. -EINVAL for an invalid record, -E2BIG for a record line
 * over 4096 bytes or more than 1,000,000 records; nothing is written then. */
int journal_append(Journal *j, const JournalRecord *records, size_t n);

/* The same, but the batch is only written, not synced: it becomes durable with the next
 * journal_append() or journal_sync(), which sync every batch written before them (group
 * commit). For records whose loss in a power cut is harmless because the caller's
 * recovery re-derives them (see WRITE-AHEAD RULE in dtrotated-manager.h); the caller
 * must journal_sync() before acting on them. A crash of the process loses nothing: the
 * batch is in the page cache. After a failed sync every append and sync returns -EIO
 * until journal_compact() has rewritten the journal. */
int journal_append_lazy(Journal *j, const JournalRecord *records, size_t n);
int journal_sync(Journal *j);
bool journal_unsynced(Journal *j);  /* lazy batches wait for a sync (or a failed one) */

/* Number of records in the file since the last compaction (for deciding when to compact). */
size_t journal_n_records(Journal *j);
uint64_t journal_size(Journal *j);

/* Rewrites the journal with just the records that `emit` hands to journal_compact_add(),
 * atomically (journal.new, fsync, rename, fsync dir). On failure the old file stays.
 * Each record added is a batch of its own: the file is renamed into place only when
 * complete, so it is one complete state. */
typedef int (*journal_emit_t)(Journal *j, void *userdata);
int journal_compact(Journal *j, journal_emit_t emit, void *userdata);
int journal_compact_add(Journal *j, const JournalRecord *r);

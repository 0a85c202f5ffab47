/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-event.h>

#include "dtrotated-api.h"
#include "dtrotated-config.h"
#include "dtrotated-curl.h"
#include "dtrotated-deadline.h"
#include "dtrotated-env.h"
#include "dtrotated-journal.h"
#include "macro.h"

typedef struct Manager Manager;
typedef struct Job Job;
typedef struct Retirement Retirement;
typedef struct Scan Scan;
typedef struct Hook Hook;
typedef struct Metrics Metrics;
typedef struct Control Control;
typedef struct JobRequest JobRequest;

/* What every piece of retried work (a job, a retirement, a scan) keeps: its deadline
 * and its failures. */
typedef struct Retry {
        bool failed;                 /* the last attempt failed; the timer is the retry */
        unsigned attempt;
        char *error;                 /* why, for logs and the status */
        usec_t at;                   /* when it is retried (USEC_INFINITY: next --once run) */
        /* In the manager's heap of deadlines, which arms one timer at the earliest. */
        Deadline deadline;
        Manager *manager;            /* whose heap; set by retry_schedule() */
        /* A deadline already due runs from a defer source instead: no timerfd re-arm
         * and no wake-up for it. It exists only while it is pending. */
        sd_event_source *now;
        sd_event_time_handler_t cb;
        void *userdata;
} Retry;

/* Exit statuses (sysexits.h where one fits). */
#define EXIT_RUNTIME 1
#define EXIT_JOURNAL 65   /* EX_DATAERR: the journal is damaged; the unit does not restart */
#define EXIT_USAGE   64
#define EXIT_CONFIG  78

/* The persistent part of a job: one explicit phase, changed only by journal records
 * (job_apply_record(), the same function for replay and for live transitions).
 *
 *  phase      records present (last)     what a restart does
 *  ---------  -------------------------  ------------------------------------------------
 *  NEW        none                       look up the file's token, journal JOB
 *  IDLE       JOB or ROTATED             wait until due (at once if overdue), look the
 *                                        file's token up, rotate
 *  INTENT     CREATE (one per attempt)   a staged file: verify it, move it into place ->
 *                                        DELIVERED; the file holds a new token that the
 *                                        API shows with our name, owner and a creation
 *                                        time inside the attempts -> DELIVERED; another
 *                                        token -> JOB + SCAN (operator's); the old token
 *                                        -> SCAN for the last attempt, create again
 *  DELIVERED  DELIVERED                  run the hook, then ROTATED + RETIRE in one batch
 *  IDLE, held RESTORED                   like IDLE, but nothing is scheduled: the job keeps
 *                                        its restored token until an operator's rotate
 *                                        (whose ROTATED ends the hold)
 *  RESTORE    RESTORE (intent)           dtrotatectl restore was interrupted; the previous
 *                                        token's retirement is back at "revoke" and waits
 *                                        (neither revoked nor deleted while the job restores
 *                                        it). Look the file's token up: the previous token
 *                                        (the file was committed) -> enable it again,
 *                                        confirm, run the hook, then RESTORED + UNRETIRE of
 *                                        the previous + RETIRE of the current in one batch;
 *                                        the current token (not committed; the secret is
 *                                        not kept across restarts) -> JOB: abandoned, the
 *                                        previous token is revoked again by its retirement;
 *                                        another token (the operator's) -> JOB + RETIRE of
 *                                        the current token in one batch
 *
 * Retirements (RETIRE, REVOKED, DELETED) and scans (SCAN, SCANNED) are objects of their
 * own, keyed by environment and token id or job, so that no edit of the configuration
 * and no crash orphans them. Every batch is all-or-nothing on replay. */
typedef enum JobPhase {
        PHASE_NEW,
        PHASE_IDLE,
        PHASE_INTENT,
        PHASE_DELIVERED,
        PHASE_RESTORE,               /* putting the previous token back (dtrotated-restore.c) */
        _PHASE_MAX,
} JobPhase;

/* The step a job is running now (runtime only). */
typedef enum JobState {
        JOB_INIT,         /* nothing known yet: look up the file's token */
        JOB_IDLE,         /* waiting until due */
        JOB_LOOKUP_OLD,   /* 1. look up the token in the file */
        JOB_CREATE,       /* 2. create the new token (each attempt journaled first) */
        JOB_LOOKUP_NEW,   /* 3. look up the new token (staged next to the file) */
        JOB_HOOK,         /* 5. delivered; on_rotate running or owed */
        JOB_RESTORE,      /* putting the previous token back (dtrotated-restore.c) */
        _JOB_STATE_MAX,
} JobState;

struct Job {
        Manager *manager;
        char *name;
        const JobConfig *config;     /* NULL: not (or no longer) configured */
        const JobConfig *next_config;/* reload: takes effect once the job is idle */
        bool removed;                /* reload: forget once idle */
        Env *env;

        JobState state;
        Retry retry;
        bool permanent;              /* the last failure was permanent */
        bool waiting_self;           /* waits for the management token's lookup */
        bool cap_reported;           /* the tenant's lifetime cap was logged */
        Call *call;
        Hook *hook;

        /* Persistent (journal) */
        JobPhase phase;
        char *cur_id;                /* the token in the file (the old one while rotating) */
        usec_t cur_created, cur_expires;
        usec_t rotated_at;           /* local time of the last rotation (0: unknown) */
        usec_t create_first, create_last; /* INTENT: first and last create attempt */
        char *create_name;           /* INTENT: the name the creates used */
        char *delivered_id;          /* DELIVERED: new token in the file, hook owed */
        usec_t delivered_created, delivered_expires;
        char *restore_id;            /* RESTORE: the previous token being put back */

        /* Runtime only, during a restore (dtrotated-restore.c) */
        struct JobRestore *restore_run;

        /* Runtime only, during a rotation */
        char *token_name;            /* effective token name (config or old token's) */
        char **scopes;               /* effective scopes */
        char *new_secret;            /* created, not yet delivered */
        char *new_id;
        usec_t new_created, new_expires;
        char *old_secret;            /* the file's token as last read (erase_and_free) ... */
        char *old_secret_id;         /* ... and its id once looked up: kept for a restore */
        bool rotated_this_run;       /* --once: one rotation per job */
        bool held;                   /* persistent (RESTORED): no scheduled rotation until
                                      * an operator's rotate */

        /* Operator requests (job_rotate_now()), runtime only */
        bool force;                  /* rotate at the next step, whatever the schedule */
        bool revoke_now;             /* retire the old token without revoke_delay and grace */
        JobRequest *requests;        /* waiting for the rotation to finish */

        Job *next;
};

typedef enum RetirementState {
        RETIRE_WAIT_REVOKE,
        RETIRE_CONFIRM_REVOKE,       /* the API said 204; ask it whether it really is */
        RETIRE_WAIT_DELETE,
} RetirementState;

struct Retirement {
        Manager *manager;
        char *env_name;
        Env *env;
        char *id;
        char *job;
        usec_t revoke_at;
        usec_t grace;
        usec_t delete_at;            /* set once the revoke was confirmed */
        char *secret;                /* runtime only, never journaled: the token's secret,
                                      * kept by the rotation that retired it for a restore
                                      * (erase_and_free); NULL after a restart */
        RetirementState state;
        Retry retry;
        Call *call;
        Retirement *next, *prev;

        /* revoke_when_unused (journaled in RETIRE): revoke only once the token was not
         * used for `unused`, but at `unused_until` (revoke_at + revoke_when_unused_max)
         * at the latest. 0: revoke when due. */
        usec_t unused;
        usec_t unused_until;
        /* Runtime, for status: the token was used recently; the revoke waits until this
         * time, then its last use is looked at again (0: not waiting). */
        usec_t waiting_unused_until;
        usec_t last_use;             /* the last use the API reported (0: never/unknown) */
        bool unused_checked;         /* the wait is over (unused, or given up) */
};

/* A leftover scan: a create whose answer never arrived intact may have made a token
 * nobody knows. Leftovers are tokens named `name`, owned by the management token's
 * owner, created inside [from, until] (plus a clock-skew allowance), and known to no
 * job or retirement. Runs beside its job, never in front of it. */
struct Scan {
        Manager *manager;
        char *env_name;
        Env *env;
        char *job;
        char *name;
        usec_t from, until;          /* the create attempts' window (CLOCK_REALTIME) */
        usec_t grace;                /* leftovers are deleted this long after the revoke */
        bool waiting_self;
        usec_t covering;             /* the window end the running list covers */
        Retry retry;
        Call *call;
        char **candidates;           /* v1: same-name ids to look at one by one */
        size_t index;
        char **leftovers;
        size_t foreign;              /* same name, not ours: left alone, reported */
        Scan *next;
};

struct Manager {
        sd_event *event;
        CurlGlue *curl;
        Config *config;
        Config **old_configs;        /* still referenced by jobs finishing a rotation */
        size_t n_old_configs;
        char *config_path;
        Journal *journal;
        Env *envs;
        Job *jobs;
        Job *jobs_last;              /* the end of jobs, to append in O(1) */
        void *jobs_by_name;          /* tsearch() tree of the jobs, by name */
        void *ids_in_use;            /* strcount_*(): token ids that jobs hold */
        void *token_names;           /* strcount_*(): the jobs' token names */
        Retirement *retirements;
        void *retirements_by_id;     /* tsearch() tree of the retirements, by env and id */
        Job *once_job_cursor;        /* --once: where the last walk found an active job */
        Scan *scans;
        size_t n_jobs, n_retirements, n_scans;

        bool once;                   /* --once: do what is due, then exit */
        usec_t once_started;
        usec_t once_deadline;        /* --once: no retries after this */
        sd_event_source *once_limit; /* --once: the hard end of the run */
        bool running;                /* jobs started: records start what they create */
        bool stopping;
        bool compact_failed;         /* warned once; warn again only after a success */
        int exit_status;

        sd_event_source *status_timer;
        sd_event_source *sync_timer; /* syncs lazy records within SYNC_DELAY */
        DeadlineHeap deadlines;      /* of every Retry scheduled in the future */
        sd_event_source *deadline_timer; /* armed at the earliest of them */
        sd_event_source *flush;      /* group commit: one sync, then the calls that waited */
        bool status_dirty;
        char *last_status;
        Control *control;            /* the control socket (dtrotated-control.c), or NULL */
        usec_t scan_margin;          /* clock skew allowance for leftover scans */
        usec_t hook_timeout;
        Metrics *metrics;            /* counters for metrics_file (dtrotated-metrics.c) */
};

int manager_new(const char *config_path, Config *config, bool once, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
int manager_run(Manager *m);              /* returns the exit status */
int manager_reload(Manager *m);
/* manager_reload() that also hands the configuration's problems ("FILE:LINE: what",
 * warnings prefixed "warning: ") to the caller (NULL: just log them). */
int manager_reload_full(Manager *m, char ***ret_problems);
int manager_show_state(Config *config, FILE *f); /* takes config; -EBADMSG: damaged journal */
void manager_config_released(Manager *m);  /* a job dropped its old config */

void manager_status_changed(Manager *m);
void manager_check_once_done(Manager *m);
bool manager_may_run_at(Manager *m, usec_t t, bool retry); /* --once: is t within this run? */
/* The one way state changes: append the records (one batch, all-or-nothing) and apply
 * them to memory with the same code that replays them. */
int manager_record(Manager *m, const JournalRecord *r, size_t n);
/* WRITE-AHEAD RULE (group commit). Some records need not be durable before their caller
 * goes on, because losing them in a power cut is harmless: a step done again is safe,
 * and the recovery re-derives them. These are CREATE (the create request it announces
 * waits for its sync: lost, no token was made), DELIVERED (the token file holds the new
 * token: the intent's lookup of the file finds it), ROTATED with its RETIRE (the same),
 * REVOKED (the token is revoked again, and its grace period starts over, later), and
 * DELETED (deleting it again answers 404, which counts as done). manager_record_lazy()
 * writes them without a sync; manager_journal_sync() syncs every record written so far,
 * and runs before anything leaves the process that depends on the journal: every
 * request that changes something at the API (dtrotated-env.c), every hook. So no step
 * ever acts on a record that is not durable. The requests wait for one flush after
 * everything the event loop had ready (manager_wait_for_flush()), so the records of all
 * jobs that moved meanwhile share one fdatasync(). A timer syncs what is left after
 * SYNC_DELAY; exit syncs too. */
int manager_record_lazy(Manager *m, const JournalRecord *r, size_t n);
int manager_journal_sync(Manager *m);
/* A request that changes something at the API is about to start: true if the journal has
 * records to sync, and the flush (after all that the event loop has ready) is armed to
 * sync them once for every such request (dtrotated-env.c); the request waits for it. */
bool manager_wait_for_flush(Manager *m);
int manager_apply_record(Manager *m, const JournalRecord *r);
int manager_emit_live_records(Journal *j, void *userdata); /* journal_emit_t: the live state */
const Job *manager_token_in_use(Manager *m, const char *env, const char *id);
/* The token ids jobs hold (current, delivered, being restored), counted: whether a token
 * is in use is asked before every revoke, in O(log n). Every change of those fields goes
 * through job_set_id(). */
int manager_id_ref(Manager *m, const char *id);
void manager_id_unref(Manager *m, const char *id);
bool manager_id_held(Manager *m, const char *id);
bool event_source_is_armed(sd_event_source *s);
/* A failed attempt: the next one is due after an exponential backoff (never before the
 * server's server_at); returns the new r->at. */
usec_t retry_failed(Manager *m, Retry *r, bool permanent, const char *error, usec_t server_at);
void retry_succeeded(Retry *r);
/* Arms r->timer (CLOCK_REALTIME) for when, unless --once says that is beyond this run:
 * then it is disarmed and false is returned. retry: a retry (within the run's budget)
 * rather than a scheduled step. */
bool retry_schedule(Manager *m, Retry *r, usec_t when, bool retry, sd_event_time_handler_t cb, void *userdata);
bool retry_armed(const Retry *r);
/* When it runs, if it is armed (retry_armed()). */
bool retry_next(const Retry *r, usec_t *ret);
/* Not armed any more; the failures stay. */
void retry_cancel(Retry *r);
void retry_done(Retry *r);

/* Jobs (dtrotated-job.c) */
Job *job_new(Manager *m, const char *name);
Job *job_free(Job *j);
Job *manager_find_job(Manager *m, const char *name);
int job_apply_record(Manager *m, const JournalRecord *r);
void job_self_known(Job *j);               /* the environment's owner is known now */
bool job_is_creating(const Job *j);        /* a created token may not be known by id yet,
                                            * or a resumed intent's file not looked up yet */
void job_start(Job *j);                    /* after replay: schedule */
void job_set_config(Job *j, const JobConfig *c);
bool job_is_active(Job *j);                /* --once: work pending in this run */
int job_emit_records(Job *j);              /* compaction */
const char *job_state_to_string(JobState s);
const char *job_phase_to_string(JobPhase p);
char *format_retry(char *buf, size_t size, usec_t retry_at);
usec_t job_due_at(Job *j);                 /* when the current token is due (config set) */

/* Operator requests (dtrotatectl, through the control socket). done runs exactly once,
 * never from within the call that started the request: error 0 when the request is
 * finished (for a rotation: the new token is delivered), else a negative errno and a
 * message saying why. A Job freed with requests pending calls them with -ECANCELED. */
typedef void (*job_request_done_t)(int error, const char *message, void *userdata);
/* Rotates now, whatever the schedule (dtrotated-job.c). revoke_now: the old token is
 * revoked and deleted at once (no revoke_delay, no grace period): for a leaked token. */
int job_rotate_now(Job *j, bool revoke_now, job_request_done_t done, void *userdata);
/* Puts the previous token back during its grace period and holds the job until the next
 * rotate (dtrotated-restore.c). Returns -errno with *ret_refusal set when refused at once
 * (e.g. the previous token is gone). */
int job_restore(Job *j, job_request_done_t done, void *userdata, char **ret_refusal);
bool job_is_held(const Job *j);            /* restored, waiting for an operator's rotate */
bool job_is_restoring(const Job *j);       /* a restore is under way (or owed after a crash) */
/* The job restoring this token, if any: its retirement neither revokes nor deletes it. */
const Job *manager_token_restoring(Manager *m, const char *env, const char *id);
void job_restore_step(Job *j);             /* job_step() for JOB_RESTORE */
void job_restore_free(Job *j);             /* job_free(): a pending request gets -ECANCELED */
/* Shared with dtrotated-restore.c (dtrotated-job.c) */
void job_step(Job *j);
void job_fail(Job *j, bool permanent, const char *error, usec_t retry_at);
void job_succeeded(Job *j);
void job_go_idle(Job *j);
void job_schedule(Job *j, usec_t when, bool retry);
void job_switch_auth(Job *j, const char *new_id);

/* For status readers (the control socket): what a job, a retirement or a scan is doing,
 * without walking their fields. Strings point into the object; valid until it changes. */
typedef struct JobStatus {
        const char *name, *env;
        const char *phase;           /* job_phase_to_string() */
        const char *state;           /* job_state_to_string() */
        const char *token_id;        /* NULL: not known yet */
        usec_t created, expires;     /* expires USEC_INFINITY: never; 0: unknown */
        usec_t rotated_at;           /* 0: never rotated by us */
        const char *next_action;     /* "rotate", "lookup", "create", ...; NULL: none */
        usec_t next_at;              /* USEC_INFINITY: not scheduled; <= now: under way */
        unsigned failures;           /* consecutive failed attempts */
        const char *error;           /* the last one's, or NULL */
        bool failing, permanent;
        bool expiring;               /* the token expires before the next attempt */
        bool forced, revoke_now;     /* an operator's rotate/revoke-now is pending */
        bool configured;
} JobStatus;
void job_get_status(Job *j, JobStatus *ret);
/* Clears the backoff of a failing job and tries its step now. 1: retried, 0: not failing. */
int job_retry_now(Job *j);

typedef struct StepStatus {
        const char *job;             /* may be NULL (a retirement of a forgotten job) */
        const char *env;
        const char *what;            /* "revoke", "delete", "scan" */
        const char *id;              /* the token, or for a scan the token name looked for */
        usec_t at;                   /* when it is due (or retried); USEC_INFINITY: unknown */
        unsigned failures;
        const char *error;
        bool failing;
} StepStatus;
void retirement_get_status(Retirement *r, StepStatus *ret);
int retirement_retry_now(Retirement *r);
void scan_get_status(Scan *s, StepStatus *ret);
int scan_retry_now(Scan *s);

/* Retirements (dtrotated-retire.c) */
Retirement *retirement_new(Manager *m, const char *env, const char *id, const char *job,
                           usec_t revoke_at, usec_t grace);
Retirement *retirement_free(Retirement *r);
void retirement_unlink_and_free(Retirement *r);
Retirement *manager_find_retirement(Manager *m, const char *env, const char *id);
void retirement_start(Retirement *r);
bool retirement_is_active(Retirement *r);
int retirement_emit_records(Retirement *r);
int retirement_apply_record(Manager *m, const JournalRecord *r);

/* Leftover scans (dtrotated-scan.c) */
int scan_apply_record(Manager *m, const JournalRecord *r);
Scan *manager_find_scan(Manager *m, const char *env, const char *job);
Scan *scan_free(Scan *s);
void scan_start(Scan *s);
bool scan_is_active(Scan *s);
int scan_emit_records(Scan *s);
void scan_self_known(Scan *s);
void scan_job_settled(Manager *m, const char *env, const char *job); /* may run now */

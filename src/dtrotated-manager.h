/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-event.h>

#include "dtrotated-api.h"
#include "dtrotated-config.h"
#include "dtrotated-curl.h"
#include "dtrotated-journal.h"
#include "macro.h"

typedef struct Manager Manager;
typedef struct Env Env;
typedef struct Call Call;
typedef struct Job Job;
typedef struct Retirement Retirement;
typedef struct Hook Hook;

/* Exit statuses (sysexits.h where one fits). */
#define EXIT_RUNTIME 1
#define EXIT_USAGE   64
#define EXIT_CONFIG  78

/* A request to the Tokens API as the manager sees it: queued per environment so that at
 * most max_parallel run at once, built only when dispatched (so it authenticates with the
 * environment's current token), and retried at once when it met a 401 with a token that
 * has since been replaced (self-rotation). */
/* The Call is gone (freed) by the time this runs; result is valid during the call. */
typedef void (*call_done_t)(ApiResult *result, void *userdata);

struct Call {
        Env *env;
        ApiOp op;
        char *arg_token;             /* LOOKUP (secret) */
        char *arg_id;                /* GET, REVOKE, DELETE */
        char *arg_name;              /* CREATE */
        char **arg_scopes;           /* CREATE */
        usec_t arg_expires_in;       /* CREATE */
        ApiRequest *request;         /* while in flight */
        unsigned auth_generation;    /* env->auth_generation it was built with */
        call_done_t done;
        void *userdata;
        Call *queue_next;
};

struct Env {
        Manager *manager;
        char *name;
        const EnvConfig *config;     /* NULL: no longer configured (pending steps wait) */
        char *auth;                  /* the management token (secret), NULL if unreadable */
        char *auth_error;            /* why auth is NULL */
        unsigned auth_generation;
        unsigned in_flight;
        Call *queue_head, *queue_tail;
        Env *next;
};

typedef enum JobState {
        JOB_INIT,         /* nothing known yet: look up the file's token */
        JOB_IDLE,         /* waiting until due */
        JOB_LOOKUP_OLD,   /* 1. look up the token in the file */
        JOB_CREATE,       /* 2. create the new token (intent journaled) */
        JOB_LOOKUP_NEW,   /* 3. look up the new token (staged next to the file) */
        JOB_HOOK,         /* 5. delivered; on_rotate running or owed */
        JOB_SCAN,         /* leftovers of an ambiguous create are being looked for */
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
        bool failed;                 /* last attempt failed; retry timer armed */
        bool permanent;              /* ...and the failure was permanent */
        char *last_error;
        unsigned attempt;
        usec_t retry_at;             /* when failed */
        sd_event_source *timer;
        Call *call;
        Hook *hook;

        /* Persistent (journal) */
        char *cur_id;                /* the token in the file */
        usec_t cur_created, cur_expires;
        usec_t create_at;            /* create intent outstanding since (0: none) */
        char *create_old;            /* cur_id when the intent was written */
        char *delivered_id;          /* new token in the file, hook owed */
        usec_t delivered_created, delivered_expires;
        usec_t scan_at;              /* leftover scan owed for creates after (0: none) */
        char *scan_name;
        usec_t scan_not_before;      /* runtime: a create that may have been sent can still
                                      * complete on the server until then */

        /* Runtime only, during a rotation */
        char *token_name;            /* effective token name (config or old token's) */
        char **scopes;               /* effective scopes */
        char *new_secret;            /* created, not yet delivered */
        char *new_id;
        usec_t new_created, new_expires;
        bool rotated_this_run;       /* --once: one rotation per job */
        char **scan_candidates;      /* JOB_SCAN: ids still to be looked at */
        size_t scan_index;
        char **scan_leftovers;

        Job *next;
};

typedef enum RetirementState {
        RETIRE_WAIT_REVOKE,
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
        RetirementState state;
        bool failed;
        char *last_error;
        unsigned attempt;
        usec_t retry_at;
        sd_event_source *timer;
        Call *call;
        Retirement *next;
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
        Retirement *retirements;
        size_t n_jobs, n_retirements;

        bool once;                   /* --once: do what is due, then exit */
        usec_t once_started;
        usec_t once_deadline;        /* --once: no retries after this */
        bool running;                /* jobs started: reloads start new ones */
        bool stopping;
        int exit_status;

        sd_event_source *status_timer;
        bool status_dirty;
        char *last_status;
        usec_t scan_margin;          /* clock skew allowance for leftover scans */
        usec_t hook_timeout;
};

int manager_new(const char *config_path, Config *config, bool once, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
int manager_run(Manager *m);              /* returns the exit status */
int manager_reload(Manager *m);
void manager_config_released(Manager *m);  /* a job dropped its old config */

/* Environments and calls (dtrotated-manager.c) */
Env *manager_get_env(Manager *m, const char *name, bool create);
int env_load_auth(Env *e);
Call *call_new(Env *env, ApiOp op, call_done_t done, void *userdata);
void call_submit(Call *c);
void call_cancel(Call *c);                 /* abandons and frees; no callback */
void manager_status_changed(Manager *m);
void manager_check_once_done(Manager *m);
bool manager_may_run_at(Manager *m, usec_t t, bool retry); /* --once: is t within this run? */
int manager_journal_append(Manager *m, const JournalRecord *r, size_t n);
usec_t manager_backoff(Manager *m, unsigned attempt, bool permanent, usec_t retry_at);
bool event_source_is_armed(sd_event_source *s);
int manager_arm(Manager *m, sd_event_source **s, usec_t when, sd_event_time_handler_t cb, void *userdata);

/* Jobs (dtrotated-job.c) */
Job *job_new(Manager *m, const char *name);
Job *job_free(Job *j);
Job *manager_find_job(Manager *m, const char *name);
int job_apply_record(Manager *m, const JournalRecord *r);
void job_start(Job *j);                    /* after replay: schedule */
void job_set_config(Job *j, const JobConfig *c);
bool job_is_active(Job *j);                /* --once: work pending in this run */
int job_emit_records(Job *j);              /* compaction */
const char *job_state_to_string(JobState s);
char *format_retry(char *buf, size_t size, usec_t retry_at);

/* Retirements (dtrotated-retire.c) */
Retirement *retirement_new(Manager *m, const char *env, const char *id, const char *job,
                           usec_t revoke_at, usec_t grace);
Retirement *retirement_free(Retirement *r);
void retirement_unlink_and_free(Retirement *r);
Retirement *manager_find_retirement(Manager *m, const char *env, const char *id);
void retirement_start(Retirement *r);
bool retirement_is_active(Retirement *r);
int retirement_emit_records(Retirement *r);

/* SPDX-License-Identifier: MIT */
/* dtrotatectl restore JOB: during the grace period of a job's previous token, put it back
 * in the job's file, retire the current one, and hold the job until an operator's rotate.
 *
 *   RESTORE --> enable --> confirm --> deliver --> hook --> RESTORED + UNRETIRE + RETIRE
 *   (intent)    (PUT)      (GET)       (file)      (on_rotate)   (one batch)
 *
 * The previous token's secret exists only in memory: the rotation that retired the
 * token read it from the file and left it with the token's Retirement. It is never
 * journaled, so after a restart a restore is refused. The intent record sets the
 * previous token's retirement back to "revoke" and keeps it waiting while the job
 * restores the token: if the restore is abandoned (a failure before the file is
 * committed, or a restart, which loses the secret) the retirement revokes the token
 * again; once the token is back, UNRETIRE drops the retirement in the same batch that
 * gives the job its token back. A restart in the middle looks at the file's token
 * (see the crash table in dtrotated-manager.h). */
#include <stdarg.h>

#include "dtrotated-deliver.h"
#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"

typedef enum RestoreStep {
        RESTORE_LOOKUP,              /* resumed after a restart: what does the file hold? */
        RESTORE_ENABLE,
        RESTORE_CONFIRM,
        RESTORE_DELIVER,
        RESTORE_HOOK,
        RESTORE_FINISH,
        RESTORE_ABANDON,
} RestoreStep;

typedef struct JobRestore {
        RestoreStep step;
        char *secret;                /* the previous token's (live restores only) */
        bool in_file;                /* the file holds the previous token */
        usec_t created, expires;     /* the previous token, as the API reports it */
        int error;                   /* ABANDON: why, for the request */
        char *why;
        char *other_id;              /* ABANDON: the file holds this (operator's) token */
        usec_t other_created, other_expires;
        job_request_done_t done;
        void *userdata;
} JobRestore;

const Job *manager_token_restoring(Manager *m, const char *env, const char *id) {
        /* Asked before each revoke and delete: restore_id is among the ids counted. */
        if (!manager_id_held(m, id))
                return NULL;
        for (Job *j = m->jobs; j; j = j->next)
                if (j->phase == PHASE_RESTORE && j->env && streq(j->env->name, env) &&
                    streq_ptr(j->restore_id, id))
                        return j;
        return NULL;
}

/* The request's answer, once. */
static void restore_reply(Job *j, int error, const char *message) {
        JobRestore *rr = j->restore_run;
        job_request_done_t done;

        if (!rr || !rr->done)
                return;
        done = TAKE_PTR(rr->done);
        done(error, message, rr->userdata);
}

static void restore_run_free(Job *j) {
        JobRestore *rr = TAKE_PTR(j->restore_run);

        if (!rr)
                return;
        erase_and_free(rr->secret);
        free(rr->why);
        free(rr->other_id);
        free(rr);
}

void job_restore_free(Job *j) {
        if (!j->restore_run)
                return;
        restore_reply(j, -ECANCELED,
                      "cancelled: dtrotated is stopping or the job was removed; an interrupted restore is finished or abandoned at the next start");
        restore_run_free(j);
}

static JobRestore *restore_get(Job *j) {
        if (!j->restore_run) {
                /* Resumed from the journal: no secret, no request; the file decides. */
                j->restore_run = calloc(1, sizeof(JobRestore));
                if (j->restore_run)
                        j->restore_run->step = RESTORE_LOOKUP;
        }
        return j->restore_run;
}

static void restore_abandon(Job *j, int error, const char *why);

/* Before the file is committed, a live restore gives up and tells the operator (the
 * secret is still kept: they may try again); afterwards, or when resumed, the step is
 * retried until it succeeds. */
static void restore_failed(Job *j, bool permanent, int error, const char *why, usec_t retry_at) {
        JobRestore *rr = j->restore_run;
        char buf[1024];

        if (rr && rr->secret && !rr->in_file && IN_SET(rr->step, RESTORE_ENABLE, RESTORE_CONFIRM, RESTORE_DELIVER))
                return restore_abandon(j, error, why);
        snprintf(buf, sizeof(buf), "restore of job %s: %s; retrying", j->name, strna(why));
        restore_reply(j, error, buf);
        job_fail(j, permanent, why, retry_at);
}

static void restore_failed_result(Job *j, const ApiResult *res) {
        restore_failed(j, res->class == API_PERMANENT, res->status == 404 ? -ENOENT : -EIO, res->error,
                       res->retry_at);
}

static void restore_abandon(Job *j, int error, const char *why) {
        JobRestore *rr = j->restore_run;

        rr->step = RESTORE_ABANDON;
        rr->error = error ?: -EIO;
        free(rr->why);
        rr->why = why ? strdup(why) : NULL;
        job_step(j);
}

/* The file holds the current token (or the operator's): back to idle. The previous
 * token's retirement revokes it again. */
static void restore_step_abandon(Job *j) {
        Manager *m = j->manager;
        JobRestore *rr = j->restore_run;
        _cleanup_free_ char *prev = strdup(j->restore_id), *cur = j->cur_id ? strdup(j->cur_id) : NULL;
        usec_t now = now_realtime();
        JournalRecord recs[2];
        size_t n = 0;
        Retirement *r;
        char buf[1024];
        int k;

        if (!prev || (j->cur_id && !cur))
                return job_fail(j, false, "out of memory", 0);
        if (j->config)
                (void) deliver_discard_staged(j->config);
        if (rr->other_id) {
                /* Another token in the file: tracked, and the current one retired, so
                 * that neither is orphaned. */
                recs[n++] = (JournalRecord) {
                        .type = JOURNAL_JOB, .job = j->name, .env = j->env->name, .id = rr->other_id,
                        .created = rr->other_created ?: now, .expires = rr->other_expires };
                if (cur && !manager_find_retirement(m, j->env->name, cur))
                        recs[n++] = (JournalRecord) {
                                .type = JOURNAL_RETIRE, .job = j->name, .env = j->env->name, .id = cur,
                                .at = now + (j->config ? j->config->revoke_delay : 0),
                                .grace = j->config ? j->config->grace_period : USEC_PER_WEEK };
        } else
                recs[n++] = (JournalRecord) {
                        .type = JOURNAL_JOB, .job = j->name, .env = j->env->name, .id = cur,
                        .created = j->cur_created, .expires = j->cur_expires };
        k = manager_record(m, recs, n);
        if (k < 0)
                return job_fail(j, false, "cannot write the journal", 0);
        r = manager_find_retirement(m, j->env->name, prev);
        if (r)
                retirement_start(r);
        log_job(LOG_WARNING, j->name, NULL, cur, prev, 0,
                "restore of %s abandoned: %s; %s stays in %s, %s is revoked again", prev, strna(rr->why),
                rr->other_id ?: strna(cur), j->config ? j->config->file : "its file", prev);
        snprintf(buf, sizeof(buf), "restore of job %s failed: %s; nothing was changed (the previous token %s stays retired)",
                 j->name, strna(rr->why), prev);
        restore_reply(j, rr->error, buf);
        restore_run_free(j);
        job_succeeded(j);
        job_go_idle(j);
}

static void on_restore_lookup(ApiResult *res, void *userdata) {
        Job *j = userdata;
        JobRestore *rr = j->restore_run;
        const TokenInfo *info = &res->info;
        char buf[1024];

        j->call = NULL;
        if (res->class != API_OK)
                return restore_failed_result(j, res);
        if (streq(info->id, j->restore_id)) {
                /* Committed before the crash: make sure it is enabled, then finish. */
                log_job(LOG_INFO, j->name, NULL, j->cur_id, j->restore_id, 0,
                        "resuming a restore: %s already holds %s", j->config->file, j->restore_id);
                rr->in_file = true;
                rr->step = RESTORE_ENABLE;
                job_succeeded(j);
                return job_step(j);
        }
        if (!streq_ptr(info->id, j->cur_id)) {
                rr->other_id = strdup(info->id);
                if (!rr->other_id)
                        return job_fail(j, false, "out of memory", 0);
                rr->other_created = info->created;
                rr->other_expires = info->expires;
                snprintf(buf, sizeof(buf), "%s holds another token, %s: tracking it", j->config->file, info->id);
        } else
                snprintf(buf, sizeof(buf),
                         "interrupted before the previous token reached %s, and its secret is not kept across restarts",
                         j->config->file);
        restore_abandon(j, -ESTALE, buf);
}

static void on_restore_enable(ApiResult *res, void *userdata) {
        Job *j = userdata;

        j->call = NULL;
        if (res->class != API_OK)
                return restore_failed_result(j, res);
        /* 204. Whatever stands between us and the API could have made it up: ask. */
        j->restore_run->step = RESTORE_CONFIRM;
        job_step(j);
}

static void on_restore_confirm(ApiResult *res, void *userdata) {
        Job *j = userdata;
        JobRestore *rr = j->restore_run;

        j->call = NULL;
        if (res->class == API_OK && res->info.revoked)
                return restore_failed(j, false, -EIO, "the API answered the enable with 204, but the token is still revoked", 0);
        if (res->class == API_OK) {
                rr->created = res->info.created;
                rr->expires = res->info.expires;
        } else if (res->status == 403) {
                /* The management token may not read tokens (v2 without apiTokens.read):
                 * the documented 204 is all there is to go by. */
                rr->created = 0;
                rr->expires = USEC_INFINITY;
        } else
                return restore_failed_result(j, res);
        rr->step = rr->in_file ? RESTORE_HOOK : RESTORE_DELIVER;
        job_succeeded(j);
        job_step(j);
}

static void restore_step_deliver(Job *j) {
        JobRestore *rr = j->restore_run;
        _cleanup_free_ char *why = NULL;
        char buf[1024];
        int k;

        if (!rr->secret)
                return restore_abandon(j, -ESTALE, "the previous token's secret is not kept across restarts");
        /* The same staging and commit as a rotation: owner, group and mode are kept. */
        k = deliver_check(j->config, &why);
        if (k >= 0)
                k = deliver_stage_full(j->config, rr->secret, &why);
        if (k >= 0)
                k = deliver_commit_full(j->config, rr->secret, &why);
        if (k < 0) {
                snprintf(buf, sizeof(buf), "cannot put the previous token back into %s: %s", j->config->file,
                         why ?: strerror(-k));
                return restore_failed(j, false, k, buf, 0);
        }
        rr->in_file = true;
        rr->secret = erase_and_free(rr->secret);
        log_job(LOG_INFO, j->name, NULL, j->cur_id, j->restore_id, 0, "previous token %s written back to %s",
                j->restore_id, j->config->file);
        job_switch_auth(j, j->restore_id);
        rr->step = RESTORE_HOOK;
        job_step(j);
}

static void on_restore_hook(Hook *h, int error, const char *what, void *userdata) {
        Job *j = userdata;
        char buf[512];

        hook_free(h);
        j->hook = NULL;
        if (error < 0) {
                snprintf(buf, sizeof(buf), "on_rotate %s %s; %s stays valid until it succeeds", j->config->on_rotate,
                         what, strna(j->cur_id));
                return restore_failed(j, false, error, buf, 0);
        }
        log_job(LOG_INFO, j->name, NULL, j->cur_id, j->restore_id, 0, "on_rotate %s succeeded", j->config->on_rotate);
        j->restore_run->step = RESTORE_FINISH;
        job_step(j);
}

static void restore_step_hook(Job *j) {
        int k;

        if (!j->config->on_rotate) {
                j->restore_run->step = RESTORE_FINISH;
                return job_step(j);
        }
        k = manager_journal_sync(j->manager); /* the write-ahead rule: before anything leaves */
        if (k >= 0)
                k = hook_run(j->manager->event, j->config->on_rotate, j->name, j->config->file, j->cur_id,
                             j->restore_id, j->manager->hook_timeout, on_restore_hook, j, &j->hook);
        if (k < 0)
                restore_failed(j, false, k, "cannot start on_rotate", 0);
}

/* One batch: the job holds the previous token again (held), whose retirement is
 * dropped, and the current token is retired like any replaced token. */
static void restore_step_finish(Job *j) {
        Manager *m = j->manager;
        JobRestore *rr = j->restore_run;
        const JobConfig *c = j->config;
        usec_t now = now_realtime();
        /* Copies: applying the records frees the job's strings. */
        _cleanup_free_ char *prev = strdup(j->restore_id), *cur = j->cur_id ? strdup(j->cur_id) : NULL;
        char buf[1024], ts[FORMAT_TIMESTAMP_MAX];
        JournalRecord recs[3];
        size_t n = 0;
        int k;

        if (!prev || (j->cur_id && !cur))
                return job_fail(j, false, "out of memory", 0);
        recs[n++] = (JournalRecord) {
                .type = JOURNAL_RESTORED, .job = j->name, .env = j->env->name, .id = prev, .old_id = cur,
                .created = rr->created, .expires = rr->expires, .at = now };
        if (manager_find_retirement(m, j->env->name, prev))
                recs[n++] = (JournalRecord) { .type = JOURNAL_UNRETIRE, .env = j->env->name, .id = prev };
        if (cur && !streq(cur, prev) && !manager_find_retirement(m, j->env->name, cur))
                recs[n++] = (JournalRecord) {
                        .type = JOURNAL_RETIRE, .job = j->name, .env = j->env->name, .id = cur,
                        .at = now + c->revoke_delay, .grace = c->grace_period };
        k = manager_record(m, recs, n);
        if (k < 0)
                return restore_failed(j, false, k, "cannot write the journal", 0);
        log_job(LOG_NOTICE, j->name, MSGID_ROTATED, cur, prev, 0,
                "restored: the previous token %s is back in %s and replaces %s, which is retired; held: no rotation until dtrotatectl rotate %s",
                prev, c->file, strna(cur), j->name);
        if (rr->expires != USEC_INFINITY)
                log_job(LOG_WARNING, j->name, MSGID_EXPIRY, NULL, prev, 0,
                        "the restored token %s expires at %s and is not rotated while held: run dtrotatectl rotate %s before",
                        prev, format_timestamp(ts, sizeof(ts), rr->expires), j->name);
        snprintf(buf, sizeof(buf), "restored %s in %s; %s is retired; job %s is held until dtrotatectl rotate %s",
                 prev, c->file, strna(cur), j->name, j->name);
        restore_reply(j, 0, buf);
        restore_run_free(j);
        job_succeeded(j);
        job_go_idle(j);
}

static Call *restore_call(Job *j, ApiOp op, call_done_t done) {
        Call *c = call_new(j->env, op, done, j);

        if (c && op == API_LOOKUP) {
                const char *why = NULL;
                char *secret = NULL;
                int k = read_token_file(j->config->file, &secret, &why);
                if (k < 0) {
                        char buf[512];
                        call_cancel(c);
                        snprintf(buf, sizeof(buf), "token file %s: %s", j->config->file, why ?: strerror(-k));
                        job_fail(j, true, buf, 0);
                        return NULL;
                }
                c->arg_token = secret;
        } else if (c && !(c->arg_id = strdup(j->restore_id))) {
                call_cancel(c);
                c = NULL;
        }
        if (!c)
                job_fail(j, false, "out of memory", 0);
        return c;
}

void job_restore_step(Job *j) {
        JobRestore *rr = restore_get(j);

        if (!rr)
                return job_fail(j, false, "out of memory", 0);
        if (!j->restore_id || j->phase != PHASE_RESTORE) {
                /* Cannot happen: the phase and the state go together. */
                restore_run_free(j);
                j->state = JOB_IDLE;
                return job_go_idle(j);
        }
        switch (rr->step) {
        case RESTORE_LOOKUP:
                j->call = restore_call(j, API_LOOKUP, on_restore_lookup);
                break;
        case RESTORE_ENABLE:
                j->call = restore_call(j, API_ENABLE, on_restore_enable);
                break;
        case RESTORE_CONFIRM:
                j->call = restore_call(j, API_GET, on_restore_confirm);
                break;
        case RESTORE_DELIVER:
                return restore_step_deliver(j);
        case RESTORE_HOOK:
                return restore_step_hook(j);
        case RESTORE_FINISH:
                return restore_step_finish(j);
        case RESTORE_ABANDON:
                return restore_step_abandon(j);
        }
        if (j->call)
                call_submit(j->call);
}

/* The retirement of the job's previous token: the one whose secret the last rotation
 * kept, else (after a restart) any of the job's tokens in their grace period. */
static Retirement *restore_find_previous(Job *j) {
        Retirement *any = NULL;

        for (Retirement *r = j->manager->retirements; r; r = r->next) {
                if (!streq_ptr(r->job, j->name) || !streq(r->env_name, j->env->name) || streq_ptr(r->id, j->cur_id))
                        continue;
                if (r->secret)
                        return r;
                any = any ?: r;
        }
        return any;
}

static int refuse(char **ret_refusal, int error, const char *fmt, ...) _printf_(3, 4);
static int refuse(char **ret_refusal, int error, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        if (ret_refusal)
                *ret_refusal = s;
        else
                free(s);
        return error;
}

int job_restore(Job *j, job_request_done_t done, void *userdata, char **ret_refusal) {
        Manager *m = j->manager;
        char ts[FORMAT_TIMESTAMP_MAX];
        JobRestore *rr;
        Retirement *r;
        int k;

        if (ret_refusal)
                *ret_refusal = NULL;
        if (!j->config || j->removed || !j->env)
                return refuse(ret_refusal, -ENOENT, "job %s is not configured", j->name);
        if (j->phase == PHASE_RESTORE || j->restore_run)
                return refuse(ret_refusal, -EBUSY, "a restore of job %s is already under way", j->name);
        if (j->held)
                return refuse(ret_refusal, -EALREADY,
                              "job %s already holds its restored token %s; dtrotatectl rotate %s rotates it",
                              j->name, strna(j->cur_id), j->name);
        if (j->phase != PHASE_IDLE || j->state != JOB_IDLE || j->call || j->hook || j->waiting_self || !j->cur_id)
                return refuse(ret_refusal, -EBUSY, "job %s is not idle (%s); try again once it is",
                              j->name, j->phase == PHASE_IDLE ? job_state_to_string(j->state) : job_phase_to_string(j->phase));
        if (j->env && j->env->config == NULL)
                return refuse(ret_refusal, -ENOENT, "environment %s of job %s is not configured", j->env->name, j->name);

        r = restore_find_previous(j);
        if (!r)
                return refuse(ret_refusal, -ENOENT,
                              "job %s has no previous token to restore: none is in its grace period (never rotated, or the previous token was already deleted)",
                              j->name);
        if (r->grace == 0)
                return refuse(ret_refusal, -EPERM,
                              "the previous token %s of job %s was retired without a grace period (revoked at once); it is not restored",
                              r->id, j->name);
        if (r->state == RETIRE_WAIT_DELETE && r->delete_at <= now_realtime())
                return refuse(ret_refusal, -ESTALE,
                              "the grace period of the previous token %s of job %s ended at %s; it is being deleted",
                              r->id, j->name, format_timestamp(ts, sizeof(ts), r->delete_at));
        /* Lasting refusals before passing ones: no retry will help without the secret. */
        if (!r->secret)
                return refuse(ret_refusal, -ESTALE,
                              "the previous token's secret is not kept across restarts: token %s of job %s cannot be put back (dtrotated restarted since the rotation); rotate instead",
                              r->id, j->name);
        if (r->call && r->call->request)
                return refuse(ret_refusal, -EBUSY,
                              r->state == RETIRE_WAIT_DELETE ? "the previous token %s of job %s is being deleted"
                                                             : "the revoke of the previous token %s of job %s is in flight; try again in a few seconds",
                              r->id, j->name);

        rr = calloc(1, sizeof(*rr));
        if (!rr || !(rr->secret = strdup(r->secret))) {
                free(rr);
                return refuse(ret_refusal, -ENOMEM, "out of memory");
        }
        rr->step = RESTORE_ENABLE;
        rr->done = done;
        rr->userdata = userdata;

        /* Queued, not sent: the retirement's step waits; in flight was refused above. */
        call_cancel(TAKE_PTR(r->call));
        k = manager_record(m, &(JournalRecord) {
                .type = JOURNAL_RESTORE, .job = j->name, .env = j->env->name, .id = r->id,
                .old_id = j->cur_id }, 1);
        if (k < 0) {
                erase_and_free(rr->secret);
                free(rr);
                retirement_start(r);
                return refuse(ret_refusal, k, "cannot write the journal: %s", strerror(-k));
        }
        j->restore_run = rr;
        log_job(LOG_NOTICE, j->name, NULL, j->cur_id, j->restore_id, 0,
                "restoring the previous token %s in place of %s (dtrotatectl restore)", j->restore_id, j->cur_id);
        /* From the loop, so that done never runs inside this call. */
        job_succeeded(j);
        j->state = JOB_RESTORE;
        job_schedule(j, now_realtime(), true);
        manager_status_changed(m);
        return 0;
}

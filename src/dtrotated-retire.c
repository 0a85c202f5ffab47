/* SPDX-License-Identifier: MIT */
/* Retiring an old token: revoke it once its replacement is in place (after revoke_delay),
 * with revoke_when_unused only once the API says it was not used for that long (or when
 * revoke_when_unused_max has passed), then delete it grace_period after the *confirmed*
 * revoke. Retirements are keyed by
 * environment and token id, not by job, so an edited or removed job never orphans one. */
#include <search.h>

#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"

static void retirement_step(Retirement *r);

static int retirement_cmp(const void *a, const void *b) {
        const Retirement *x = a, *y = b;
        int c = strcmp(x->id, y->id);

        return c ?: strcmp(x->env_name, y->env_name);
}

Retirement *retirement_new(Manager *m, const char *env, const char *id, const char *job,
                           usec_t revoke_at, usec_t grace) {
        Retirement *r = calloc(1, sizeof(*r));

        if (!r)
                return NULL;
        r->env_name = strdup(env ?: "");
        r->id = strdup(id ?: "");
        r->job = job ? strdup(job) : NULL;
        if (!r->env_name || !r->id || (job && !r->job)) {
                retirement_free(r);
                return NULL;
        }
        r->manager = m;
        r->revoke_at = revoke_at;
        r->grace = grace;
        r->state = RETIRE_WAIT_REVOKE;
        r->env = manager_get_env(m, env, false);
        if (!tsearch(r, &m->retirements_by_id, retirement_cmp)) {
                retirement_free(r);
                return NULL;
        }
        r->next = m->retirements;
        if (r->next)
                r->next->prev = r;
        m->retirements = r;
        m->n_retirements++;
        return r;
}

Retirement *retirement_free(Retirement *r) {
        if (!r)
                return NULL;
        call_cancel(r->call);
        retry_done(&r->retry);
        free(r->env_name);
        free(r->id);
        free(r->job);
        erase_and_free(r->secret);
        free(r);
        return NULL;
}

/* O(log n): every step of every rotation and every replayed record looks one up. */
Retirement *manager_find_retirement(Manager *m, const char *env, const char *id) {
        Retirement key = { .env_name = (char *) env, .id = (char *) id }, *const *p;

        if (!env || !id)
                return NULL;
        p = tfind(&key, &m->retirements_by_id, retirement_cmp);
        return p ? *p : NULL;
}

void retirement_unlink_and_free(Retirement *r) {
        Manager *m = r->manager;

        (void) tdelete(r, &m->retirements_by_id, retirement_cmp);
        if (r->prev)
                r->prev->next = r->next;
        else
                m->retirements = r->next;
        if (r->next)
                r->next->prev = r->prev;
        m->n_retirements--;
        retirement_free(r);
}

int retirement_apply_record(Manager *m, const JournalRecord *rec) {
        Retirement *r = manager_find_retirement(m, rec->env, rec->id);

        if (rec->type == JOURNAL_RETIRE) {
                if (r)
                        return 0; /* written again after a retried step, or a leftover found twice */
                r = retirement_new(m, rec->env, rec->id, rec->job, rec->at, rec->grace);
                if (!r)
                        return -ENOMEM;
                r->unused = rec->unused;
                r->unused_until = rec->until;
                if (m->running)
                        retirement_start(r);
                return 0;
        }
        if (!r) {
                log_error("Journal: %s record for token %s: no retirement of that token was recorded; refusing to guess (see RECOVERY in dtrotated(8))",
                          journal_type_to_string(rec->type), strna(rec->id));
                return -EBADMSG;
        }
        if (IN_SET(rec->type, JOURNAL_DELETED, JOURNAL_UNRETIRE)) {
                /* UNRETIRE: a restore put the token back in its job's file. */
                retirement_unlink_and_free(r);
                return 0;
        }
        r->state = RETIRE_WAIT_DELETE;
        r->delete_at = rec->at;
        return 0;
}

bool retirement_is_active(Retirement *r) {
        return r->call || retry_armed(&r->retry);
}

int retirement_emit_records(Retirement *r) {
        int k = journal_compact_add(r->manager->journal, &(JournalRecord) {
                .type = JOURNAL_RETIRE, .env = r->env_name, .id = r->id, .job = r->job,
                .at = r->revoke_at, .grace = r->grace, .unused = r->unused, .until = r->unused_until });
        if (k >= 0 && r->state == RETIRE_WAIT_DELETE)
                k = journal_compact_add(r->manager->journal, &(JournalRecord) {
                        .type = JOURNAL_REVOKED, .env = r->env_name, .id = r->id, .at = r->delete_at });
        return k;
}

static int on_retirement_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        retirement_step(userdata);
        return 0;
}

static void retirement_schedule(Retirement *r, usec_t when, bool retry) {
        (void) retry_schedule(r->manager, &r->retry, when, retry, on_retirement_timer, r);
}

void retirement_start(Retirement *r) {
        if (r->call)
                return;
        retirement_schedule(r, r->state == RETIRE_WAIT_DELETE ? r->delete_at : r->revoke_at, false);
        manager_status_changed(r->manager);
}

static const char *retirement_step_name(Retirement *r) {
        return r->state == RETIRE_WAIT_DELETE ? "delete" : "revoke";
}

static void retirement_fail(Retirement *r, bool permanent, const char *error, usec_t retry_at) {
        Manager *m = r->manager;
        char when[FORMAT_DURATION_MAX + 16];

        format_retry(when, sizeof(when), retry_failed(m, &r->retry, permanent, error, retry_at));
        log_job(permanent ? LOG_ERR : LOG_WARNING, strna(r->job), permanent ? MSGID_FAILED : NULL, r->id,
                NULL, 0, "%s of %s failed: %s; retrying %s", retirement_step_name(r), r->id,
                strna(error), when);
        retirement_schedule(r, r->retry.at, true);
        manager_status_changed(m);
        manager_check_once_done(m);
}

static void on_revoke(ApiResult *res, void *userdata);
static void on_confirm(ApiResult *res, void *userdata);
static void on_delete(ApiResult *res, void *userdata);
static void on_last_use(ApiResult *res, void *userdata);

/* revoke_when_unused: true when the revoke may go ahead; otherwise the token's last use
 * is being looked up (r->call) or the retirement failed. */
static bool retirement_unused_wait(Retirement *r) {
        char ts[FORMAT_TIMESTAMP_MAX], d[FORMAT_DURATION_MAX];

        if (r->state != RETIRE_WAIT_REVOKE || !r->unused || r->unused_checked)
                return true;
        if (now_realtime() >= r->unused_until) {
                r->unused_checked = true;
                r->waiting_unused_until = 0;
                log_job(LOG_WARNING, strna(r->job), NULL, r->id, NULL, 0,
                        "token %s was still in use (last used %s): revoke_when_unused_max is reached, revoking it anyway; consumers still using it will lose access",
                        r->id, r->last_use ? format_timestamp(ts, sizeof(ts), r->last_use) : "recently");
                return true;
        }
        r->call = call_new(r->env, API_GET, on_last_use, r);
        if (!r->call || !(r->call->arg_id = strdup(r->id))) {
                call_cancel(TAKE_PTR(r->call));
                retirement_fail(r, false, "out of memory", 0);
                return false;
        }
        log_job(LOG_DEBUG, strna(r->job), NULL, r->id, NULL, 0,
                "looking up when %s was last used (revoke_when_unused %s)", r->id,
                format_duration(d, sizeof(d), r->unused));
        r->call->housekeeping = true;
        call_submit(r->call);
        manager_status_changed(r->manager);
        return false;
}

static void retirement_step(Retirement *r) {
        static const struct {
                ApiOp op;
                call_done_t done;
        } steps[] = {
                [RETIRE_WAIT_REVOKE] = { API_REVOKE, on_revoke },
                [RETIRE_CONFIRM_REVOKE] = { API_GET, on_confirm },
                [RETIRE_WAIT_DELETE] = { API_DELETE, on_delete },
        };
        const Job *user;
        char buf[256];

        if (r->call)
                return;
        /* A restore is putting this token back: its job starts the retirement again if
         * the restore is abandoned, or drops it (UNRETIRE) once the token is back. */
        if (manager_token_restoring(r->manager, r->env_name, r->id)) {
                log_job(LOG_DEBUG, strna(r->job), NULL, r->id, NULL, 0,
                        "%s of %s waits: a restore is putting it back", retirement_step_name(r), r->id);
                return;
        }
        if (!r->env || !r->env->config) {
                snprintf(buf, sizeof(buf), "environment %s is not configured", r->env_name);
                return retirement_fail(r, true, buf, 0);
        }
        /* A consumer must never be left holding a revoked token: refuse to revoke a token
         * that a job's file holds or that an environment authenticates with. */
        if (r->state == RETIRE_WAIT_REVOKE && (user = manager_token_in_use(r->manager, r->env_name, r->id))) {
                if (user->revoke_now) {
                        /* An operator's revoke-now, journaled before the rotation: the
                         * rotation's end starts this again (job_finish_rotation()); look
                         * again now and then, should the job end up with another token. */
                        log_job(LOG_DEBUG, user->name, NULL, r->id, NULL, 0,
                                "revoke-now: %s is revoked once its replacement is in place", r->id);
                        retirement_schedule(r, now_realtime() + MIN(r->manager->config->retry_max_delay, USEC_PER_MINUTE), false);
                        return;
                }
                snprintf(buf, sizeof(buf), "token is still the current token of job %s; not revoking it", user->name);
                log_job(LOG_CRIT, user->name, MSGID_FAILED, r->id, NULL, 0, "refusing to revoke %s: %s", r->id, buf);
                return retirement_fail(r, true, buf, 0);
        }
        if (r->state == RETIRE_WAIT_REVOKE && streq_ptr(r->env->self_id, r->id))
                return retirement_fail(r, false, "token is still the environment's management token; not revoking it", 0);
        if (!retirement_unused_wait(r))
                return;
        r->call = call_new(r->env, steps[r->state].op, steps[r->state].done, r);
        if (!r->call || !(r->call->arg_id = strdup(r->id))) {
                call_cancel(TAKE_PTR(r->call));
                return retirement_fail(r, false, "out of memory", 0);
        }
        r->call->housekeeping = true;
        call_submit(r->call);
        manager_status_changed(r->manager);
}

static void retirement_succeeded(Retirement *r) {
        retry_succeeded(&r->retry);
}

static void retirement_record_deleted(Retirement *r, const char *how) {
        Manager *m = r->manager;
        _cleanup_free_ char *job = r->job ? strdup(r->job) : NULL, *id = strdup(r->id);
        int k;

        if (!id)
                return retirement_fail(r, false, "out of memory", 0);
        /* The record frees r. */
        k = manager_record_lazy(m, &(JournalRecord) { .type = JOURNAL_DELETED, .env = r->env_name, .id = r->id }, 1);
        if (k < 0)
                return retirement_fail(r, false, "cannot write the journal", 0);
        log_job(LOG_INFO, strna(job), MSGID_DELETED, id, NULL, 0, "%s %s", how, id);
        manager_status_changed(m);
        manager_check_once_done(m);
}

static void on_revoke(ApiResult *res, void *userdata) {
        Retirement *r = userdata;

        r->call = NULL;
        if (res->class != API_OK && res->status == 404) {
                retirement_succeeded(r);
                return retirement_record_deleted(r, "already gone:");
        }
        if (res->class != API_OK)
                return retirement_fail(r, res->class == API_PERMANENT, res->error, res->retry_at);
        /* 204, the documented answer. Something between us and the API (a proxy, a WAF)
         * can still have made it up: ask the API before the grace period starts. */
        r->state = RETIRE_CONFIRM_REVOKE;
        retirement_step(r);
}

static void retirement_confirmed(Retirement *r, const char *how) {
        char ts[FORMAT_TIMESTAMP_MAX];
        usec_t delete_at = now_realtime() + r->grace;
        int k;

        /* The grace period runs from the confirmed revoke, never from the intent. Lazy:
         * lost in a power cut, the token is revoked again, and deleted later. */
        k = manager_record_lazy(r->manager, &(JournalRecord) {
                .type = JOURNAL_REVOKED, .env = r->env_name, .id = r->id, .at = delete_at }, 1);
        if (k < 0)
                return retirement_fail(r, false, "cannot write the journal", 0);
        retirement_succeeded(r);
        log_job(LOG_INFO, strna(r->job), MSGID_REVOKED, r->id, NULL, 0, "revoked %s%s; deleting it %s", r->id, how,
                format_timestamp(ts, sizeof(ts), delete_at));
        retirement_start(r);
        manager_check_once_done(r->manager);
}

static void on_confirm(ApiResult *res, void *userdata) {
        Retirement *r = userdata;

        r->call = NULL;
        if (res->class == API_OK && res->info.revoked)
                return retirement_confirmed(r, "");
        if (res->class == API_OK) {
                r->state = RETIRE_WAIT_REVOKE;
                return retirement_fail(r, false, "the API answered the revoke with 204, but the token is still active", 0);
        }
        if (res->status == 404) {
                retirement_succeeded(r);
                return retirement_record_deleted(r, "already gone:");
        }
        if (res->status == 403)
                /* The management token may not read tokens (v2 without apiTokens.read):
                 * the documented 204 is all there is to go by. */
                return retirement_confirmed(r, " (204; the management token may not read tokens to confirm it)");
        retirement_fail(r, res->class == API_PERMANENT, res->error, res->retry_at);
}

/* The token's last use, as the API knows it (v1 lastUse, v2 lastUsedDate; none: never
 * used): revoke now, or wait until it has not been used for r->unused. */
static void on_last_use(ApiResult *res, void *userdata) {
        Retirement *r = userdata;
        Manager *m = r->manager;
        char ts[FORMAT_TIMESTAMP_MAX], ts2[FORMAT_TIMESTAMP_MAX], ts3[FORMAT_TIMESTAMP_MAX];
        char d[FORMAT_DURATION_MAX];
        usec_t now = now_realtime(), quiet;

        r->call = NULL;
        if (res->class != API_OK && res->status == 404) {
                retirement_succeeded(r);
                return retirement_record_deleted(r, "already gone:");
        }
        if (res->class != API_OK)
                /* Retried; the give-up time still applies (retirement_unused_wait()). */
                return retirement_fail(r, res->class == API_PERMANENT, res->error, res->retry_at);
        retirement_succeeded(r);
        r->last_use = res->info.last_use;
        quiet = r->last_use > USEC_INFINITY - r->unused ? USEC_INFINITY : r->last_use + r->unused;
        format_duration(d, sizeof(d), r->unused);
        if (!r->last_use || quiet <= now) {
                r->unused_checked = true;
                r->waiting_unused_until = 0;
                log_job(LOG_INFO, strna(r->job), NULL, r->id, NULL, 0,
                        "token %s was %s%s, not within revoke_when_unused (%s): revoking it", r->id,
                        r->last_use ? "last used " : "never used",
                        r->last_use ? format_timestamp(ts, sizeof(ts), r->last_use) : "", d);
                return retirement_step(r);
        }
        r->waiting_unused_until = MIN(quiet, r->unused_until);
        log_job(LOG_INFO, strna(r->job), NULL, r->id, NULL, 0,
                "token %s was used %s, less than revoke_when_unused (%s) ago: not revoking it before %s (and at %s at the latest)",
                r->id, format_timestamp(ts, sizeof(ts), r->last_use), d,
                format_timestamp(ts2, sizeof(ts2), r->waiting_unused_until),
                format_timestamp(ts3, sizeof(ts3), r->unused_until));
        retirement_schedule(r, r->waiting_unused_until, false);
        manager_status_changed(m);
        manager_check_once_done(m);
}

static void on_delete(ApiResult *res, void *userdata) {
        Retirement *r = userdata;

        r->call = NULL;
        if (res->class != API_OK)
                return retirement_fail(r, res->class == API_PERMANENT, res->error, res->retry_at);
        retirement_succeeded(r);
        retirement_record_deleted(r, "deleted");
}

/* ---- status and operator requests ---- */

void retirement_get_status(Retirement *r, StepStatus *ret) {
        uint64_t t;

        *ret = (StepStatus) {
                .job = r->job, .env = r->env_name, .id = r->id,
                .what = retirement_step_name(r),
                .at = r->state == RETIRE_WAIT_DELETE ? r->delete_at : r->revoke_at,
                .failures = r->retry.failed ? r->retry.attempt : 0,
                .error = r->retry.failed ? r->retry.error : NULL,
                .failing = r->retry.failed,
        };
        if (r->call)
                ret->at = now_realtime(); /* under way */
        else if (retry_next(&r->retry, &t))
                ret->at = t;
        else if (r->retry.failed)
                ret->at = r->retry.at;
}

int retirement_retry_now(Retirement *r) {
        if (!r->retry.failed || r->call)
                return 0;
        r->retry.attempt = 0; /* the backoff starts over */
        retirement_schedule(r, now_realtime(), true);
        manager_status_changed(r->manager);
        return 1;
}

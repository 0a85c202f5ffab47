/* SPDX-License-Identifier: MIT */
/* Retiring an old token: revoke it once its replacement is in place (after revoke_delay),
 * then delete it grace_period after the *confirmed* revoke. Retirements are keyed by
 * environment and token id, not by job, so an edited or removed job never orphans one. */
#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"

static void retirement_step(Retirement *r);

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
        r->next = m->retirements;
        m->retirements = r;
        m->n_retirements++;
        return r;
}

Retirement *retirement_free(Retirement *r) {
        if (!r)
                return NULL;
        call_cancel(r->call);
        sd_event_source_disable_unref(r->timer);
        free(r->env_name);
        free(r->id);
        free(r->job);
        free(r->last_error);
        free(r);
        return NULL;
}

Retirement *manager_find_retirement(Manager *m, const char *env, const char *id) {
        for (Retirement *r = m->retirements; r; r = r->next)
                if (streq_ptr(r->env_name, env) && streq_ptr(r->id, id))
                        return r;
        return NULL;
}

void retirement_unlink_and_free(Retirement *r) {
        Manager *m = r->manager;

        for (Retirement **p = &m->retirements; *p; p = &(*p)->next)
                if (*p == r) {
                        *p = r->next;
                        break;
                }
        m->n_retirements--;
        retirement_free(r);
}

static void retirement_done(Retirement *r) {
        Manager *m = r->manager;

        retirement_unlink_and_free(r);
        manager_status_changed(m);
        manager_check_once_done(m);
}

bool retirement_is_active(Retirement *r) {
        return r->call || event_source_is_armed(r->timer);
}

int retirement_emit_records(Retirement *r) {
        int k = journal_compact_add(r->manager->journal, &(JournalRecord) {
                .type = JOURNAL_RETIRE, .env = r->env_name, .id = r->id, .job = r->job,
                .at = r->revoke_at, .grace = r->grace });
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
        Manager *m = r->manager;

        if (!manager_may_run_at(m, when, retry)) {
                if (r->timer)
                        (void) sd_event_source_set_enabled(r->timer, SD_EVENT_OFF);
                return;
        }
        if (manager_arm(m, &r->timer, when, on_retirement_timer, r) < 0)
                log_error("%s: cannot arm timer for token %s", strna(r->job), r->id);
}

void retirement_start(Retirement *r) {
        retirement_schedule(r, r->state == RETIRE_WAIT_REVOKE ? r->revoke_at : r->delete_at, false);
        manager_status_changed(r->manager);
}

static const char *retirement_step_name(Retirement *r) {
        return r->state == RETIRE_WAIT_REVOKE ? "revoke" : "delete";
}

static void retirement_fail(Retirement *r, bool permanent, const char *error, usec_t retry_at) {
        Manager *m = r->manager;
        char when[FORMAT_DURATION_MAX + 16];

        r->failed = true;
        r->attempt++;
        free(r->last_error);
        r->last_error = strdup(strna(error));
        r->retry_at = manager_backoff(m, r->attempt, permanent, retry_at);
        format_retry(when, sizeof(when), r->retry_at);
        log_job(permanent ? LOG_ERR : LOG_WARNING, strna(r->job), permanent ? MSGID_FAILED : NULL, r->id,
                NULL, 0, "%s of %s failed: %s; retrying %s", retirement_step_name(r), r->id,
                strna(error), when);
        retirement_schedule(r, r->retry_at, true);
        manager_status_changed(m);
        manager_check_once_done(m);
}

/* A consumer must never be left holding a revoked token: refuse to retire a token that
 * a job's file holds. */
static const Job *retirement_token_in_use(Retirement *r) {
        for (Job *j = r->manager->jobs; j; j = j->next)
                if (j->env && streq(j->env->name, r->env_name) &&
                    (streq_ptr(j->cur_id, r->id) || streq_ptr(j->delivered_id, r->id)))
                        return j;
        return NULL;
}

static void on_revoke(ApiResult *res, void *userdata);
static void on_delete(ApiResult *res, void *userdata);

static void retirement_step(Retirement *r) {
        const Job *user;
        char buf[256];

        if (r->call)
                return;
        if (!r->env || !r->env->config) {
                snprintf(buf, sizeof(buf), "environment %s is not configured", r->env_name);
                return retirement_fail(r, true, buf, 0);
        }
        if (r->state == RETIRE_WAIT_REVOKE && (user = retirement_token_in_use(r))) {
                snprintf(buf, sizeof(buf), "token is still the current token of job %s; not revoking it", user->name);
                log_job(LOG_CRIT, user->name, MSGID_FAILED, r->id, NULL, 0, "refusing to revoke %s: %s", r->id, buf);
                return retirement_fail(r, true, buf, 0);
        }
        r->call = call_new(r->env, r->state == RETIRE_WAIT_REVOKE ? API_REVOKE : API_DELETE,
                           r->state == RETIRE_WAIT_REVOKE ? on_revoke : on_delete, r);
        if (!r->call || !(r->call->arg_id = strdup(r->id))) {
                call_cancel(TAKE_PTR(r->call));
                return retirement_fail(r, false, "out of memory", 0);
        }
        call_submit(r->call);
        manager_status_changed(r->manager);
}

static void retirement_succeeded(Retirement *r) {
        r->failed = false;
        r->attempt = 0;
        free(r->last_error);
        r->last_error = NULL;
}

static void retirement_record_deleted(Retirement *r, const char *how) {
        int k = manager_journal_append(r->manager, &(JournalRecord) {
                .type = JOURNAL_DELETED, .env = r->env_name, .id = r->id }, 1);
        if (k < 0)
                return retirement_fail(r, false, "cannot write the journal", 0);
        log_job(LOG_INFO, strna(r->job), MSGID_DELETED, r->id, NULL, 0, "%s %s", how, r->id);
        retirement_done(r);
}

static void on_revoke(ApiResult *res, void *userdata) {
        Retirement *r = userdata;
        char ts[FORMAT_TIMESTAMP_MAX];
        usec_t delete_at;
        int k;

        r->call = NULL;
        if (res->class != API_OK && res->status == 404) {
                retirement_succeeded(r);
                return retirement_record_deleted(r, "already gone:");
        }
        if (res->class != API_OK)
                return retirement_fail(r, res->class == API_PERMANENT, res->error, res->retry_at);

        /* The grace period runs from the confirmed revoke, never from the intent. */
        delete_at = now_realtime() + r->grace;
        k = manager_journal_append(r->manager, &(JournalRecord) {
                .type = JOURNAL_REVOKED, .env = r->env_name, .id = r->id, .at = delete_at }, 1);
        if (k < 0)
                return retirement_fail(r, false, "cannot write the journal", 0);
        r->state = RETIRE_WAIT_DELETE;
        r->delete_at = delete_at;
        retirement_succeeded(r);
        log_job(LOG_INFO, strna(r->job), MSGID_REVOKED, r->id, NULL, 0, "revoked %s; deleting it %s", r->id,
                format_timestamp(ts, sizeof(ts), delete_at));
        retirement_start(r);
        manager_check_once_done(r->manager);
}

static void on_delete(ApiResult *res, void *userdata) {
        Retirement *r = userdata;

        r->call = NULL;
        if (res->class != API_OK)
                return retirement_fail(r, res->class == API_PERMANENT, res->error, res->retry_at);
        retirement_succeeded(r);
        retirement_record_deleted(r, "deleted");
}

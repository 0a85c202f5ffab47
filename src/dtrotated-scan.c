/* SPDX-License-Identifier: MIT */
/* Leftover scans. A create whose answer never arrived intact (or whose process died)
 * may have made a token that nobody knows. Once nothing sent can still complete, the
 * tenant's tokens are listed and a token counts as a leftover only if everything says
 * it is ours: the job's token name, the management token's owner (the daemon's creations
 * are that user's), a creation time inside the window of the create attempts (with a
 * clock-skew allowance), and no job or retirement knows it. Anything else with the name
 * is left alone and reported. Leftovers are revoked at once and deleted after the job's
 * grace period, like any retired token.
 *
 * A scan is an object of its own, keyed by environment and job, beside the job: it never
 * delays a rotation, survives the job's removal from the configuration, and its calls
 * queue behind the rotations of its environment. */
#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"

/* Beyond request_timeout: a create sent at the very end of the window is answered. */
#define SCAN_SETTLE (2 * USEC_PER_SEC)
/* Scans from journals written before the window had an end. */
#define SCAN_LEGACY_WINDOW USEC_PER_HOUR

static void scan_step(Scan *s);

Scan *manager_find_scan(Manager *m, const char *env, const char *job) {
        for (Scan *s = m->scans; s; s = s->next)
                if (streq_ptr(s->env_name, env) && streq_ptr(s->job, job))
                        return s;
        return NULL;
}

static void scan_clear_run(Scan *s) {
        s->candidates = strv_free(s->candidates);
        s->leftovers = strv_free(s->leftovers);
        s->index = 0;
        s->foreign = 0;
}

Scan *scan_free(Scan *s) {
        if (!s)
                return NULL;
        call_cancel(s->call);
        retry_done(&s->retry);
        scan_clear_run(s);
        free(s->env_name);
        free(s->job);
        free(s->name);
        free(s);
        return NULL;
}

static void scan_unlink_and_free(Scan *s) {
        Manager *m = s->manager;

        for (Scan **p = &m->scans; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        break;
                }
        m->n_scans--;
        scan_free(s);
}

static Scan *scan_new(Manager *m, const JournalRecord *r) {
        Scan *s = calloc(1, sizeof(*s));

        if (!s)
                return NULL;
        s->env_name = strdup(r->env);
        s->job = strdup(r->job);
        s->name = strdup(r->name);
        if (!s->env_name || !s->job || !s->name)
                return scan_free(s);
        s->manager = m;
        s->env = manager_get_env(m, r->env, true);
        s->next = m->scans;
        m->scans = s;
        m->n_scans++;
        return s;
}

int scan_apply_record(Manager *m, const JournalRecord *r) {
        Scan *s = manager_find_scan(m, r->env, r->job);
        usec_t until;

        if (r->type == JOURNAL_SCANNED) {
                /* Only the window the finished scan covered: it may have been widened by
                 * a later SCAN while its list was under way. */
                if (s && (!r->until || s->until <= r->until))
                        scan_unlink_and_free(s);
                else if (s && m->running) {
                        retry_succeeded(&s->retry);
                        scan_clear_run(s);
                        scan_start(s);
                }
                return 0;
        }
        if (!r->name)
                return -EBADMSG;
        until = r->until ?: r->at + SCAN_LEGACY_WINDOW;
        if (!s) {
                s = scan_new(m, r);
                if (!s)
                        return -ENOMEM;
                s->from = r->at;
                s->until = until;
        } else {
                s->from = MIN(s->from, r->at);
                s->until = MAX(s->until, until);
        }
        s->grace = MAX(s->grace, r->grace);
        if (m->running)
                scan_start(s);
        return 0;
}

int scan_emit_records(Scan *s) {
        return journal_compact_add(s->manager->journal, &(JournalRecord) {
                .type = JOURNAL_SCAN, .job = s->job, .env = s->env_name, .name = s->name,
                .at = s->from, .until = s->until, .grace = s->grace });
}

bool scan_is_active(Scan *s) {
        return s->call || s->waiting_self || retry_armed(&s->retry);
}

static int on_scan_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        scan_step(userdata);
        return 0;
}

static void scan_schedule(Scan *s, usec_t when, bool retry) {
        (void) retry_schedule(s->manager, &s->retry, when, retry, on_scan_timer, s);
}

void scan_start(Scan *s) {
        if (s->call)
                return;
        /* Not before any create sent inside the window could have completed; a retry
         * within a --once run's budget may wait for that. */
        scan_schedule(s, MAX(s->until + SCAN_SETTLE, s->retry.failed ? s->retry.at : 0), true);
        manager_status_changed(s->manager);
}

static void scan_fail(Scan *s, bool permanent, const char *error, usec_t retry_at) {
        Manager *m = s->manager;
        char when[FORMAT_DURATION_MAX + 16];

        retry_failed(m, &s->retry, permanent, error, retry_at);
        scan_clear_run(s);
        format_retry(when, sizeof(when), s->retry.at);
        log_job(permanent ? LOG_ERR : LOG_WARNING, s->job, permanent ? MSGID_FAILED : NULL, NULL, NULL, 0,
                "looking for leftovers of an interrupted create failed: %s; retrying %s (the rotation is not held up)",
                strna(error), when);
        scan_schedule(s, s->retry.at, true);
        manager_status_changed(m);
        manager_check_once_done(m);
}

void scan_self_known(Scan *s) {
        if (!s->waiting_self)
                return;
        s->waiting_self = false;
        if (s->env->self != ENV_SELF_KNOWN) {
                char buf[512];
                snprintf(buf, sizeof(buf), "the owner of %s's management token is unknown: %s", s->env_name,
                         strna(s->env->auth_error));
                return scan_fail(s, false, buf, 0);
        }
        scan_step(s);
}

/* The job's create is over: a scan that stood aside for it (scan_step(), scan_job_busy())
 * is neither under way nor armed, and nothing else would wake it. Arm it again: now, or
 * at the end of its window if a create widened that meanwhile, or at a retry's time. */
void scan_job_settled(Manager *m, const char *env, const char *job) {
        Scan *s = manager_find_scan(m, env, job);

        if (!s || s->call || s->waiting_self || retry_armed(&s->retry))
                return;
        scan_start(s);
}

/* Known: the current, delivered or just created token of a job, a token being retired,
 * or the management token itself. */
static bool scan_is_known(Scan *s, const char *id) {
        Manager *m = s->manager;

        if (streq_ptr(s->env->self_id, id) || manager_find_retirement(m, s->env_name, id))
                return true;
        for (Job *j = m->jobs; j; j = j->next)
                if (j->env == s->env && (streq_ptr(j->cur_id, id) || streq_ptr(j->delivered_id, id) ||
                                         streq_ptr(j->new_id, id)))
                        return true;
        return false;
}

static bool scan_in_window(Scan *s, usec_t created) {
        usec_t margin = s->manager->scan_margin;

        return created && created + margin >= s->from && created <= s->until + margin;
}

static int scan_take(Scan *s, const char *id, bool leftover) {
        char *c;

        if (!leftover) {
                s->foreign++;
                return 0;
        }
        c = strdup(id);
        if (!c || strv_push(&s->leftovers, c) < 0) {
                free(c);
                return -ENOMEM;
        }
        return 0;
}

static void scan_done(Scan *s) {
        Manager *m = s->manager;
        size_t n = strv_length(s->leftovers);
        _cleanup_free_ JournalRecord *recs = calloc(n + 1, sizeof(JournalRecord));
        _cleanup_strv_free_ char **leftovers = NULL;
        usec_t now = now_realtime();
        _cleanup_free_ char *job = strdup(s->job), *name = strdup(s->name);
        size_t foreign = s->foreign;
        int r;

        if (!recs || !job || !name)
                return scan_fail(s, false, "out of memory", 0);
        for (size_t i = 0; i < n; i++)
                recs[i] = (JournalRecord) { .type = JOURNAL_RETIRE, .job = s->job, .env = s->env_name,
                                            .id = s->leftovers[i], .at = now, .grace = s->grace };
        recs[n] = (JournalRecord) { .type = JOURNAL_SCANNED, .job = s->job, .env = s->env_name,
                                    .until = s->covering };
        leftovers = TAKE_PTR(s->leftovers);
        /* One batch: a leftover is never forgotten before its retirement is journaled. The
         * SCANNED record frees s unless a later create widened the window meanwhile. */
        r = manager_record(m, recs, n + 1);
        if (r < 0) {
                s->leftovers = TAKE_PTR(leftovers);
                return scan_fail(s, false, "cannot write the journal", 0);
        }
        for (size_t i = 0; i < n; i++)
                log_job(LOG_WARNING, job, NULL, leftovers[i], NULL, 0,
                        "token %s is a leftover of an interrupted create and was never handed out: revoking it now",
                        leftovers[i]);
        if (foreign)
                log_job(LOG_WARNING, job, NULL, NULL, NULL, 0,
                        "%zu other token%s named '%s' %s not dtrotated's (another owner, or created outside its create attempts): left alone",
                        foreign, foreign == 1 ? "" : "s", name, foreign == 1 ? "is" : "are");
        manager_status_changed(m);
        manager_check_once_done(m);
}

/* The job started a create while the list was under way: its token may be in the list
 * without an id the job knows yet. Drop what was seen; scan_job_settled() starts over. */
static bool scan_job_busy(Scan *s) {
        Job *j = manager_find_job(s->manager, s->job);

        if (!j || j->env != s->env || !job_is_creating(j))
                return false;
        scan_clear_run(s);
        return true;
}

static void on_scan_list(ApiResult *res, void *userdata);
static void on_scan_get(ApiResult *res, void *userdata);

static void scan_next_candidate(Scan *s) {
        if (scan_job_busy(s))
                return;
        if (s->index >= strv_length(s->candidates))
                return scan_done(s);
        s->call = call_new(s->env, API_GET, on_scan_get, s);
        if (!s->call || !(s->call->arg_id = strdup(s->candidates[s->index]))) {
                call_cancel(TAKE_PTR(s->call));
                return scan_fail(s, false, "out of memory", 0);
        }
        s->call->housekeeping = true;
        call_submit(s->call);
}

static void on_scan_list(ApiResult *res, void *userdata) {
        Scan *s = userdata;

        s->call = NULL;
        if (res->class != API_OK)
                return scan_fail(s, res->class == API_PERMANENT, res->error, res->retry_at);
        if (scan_job_busy(s))
                return;
        scan_clear_run(s);
        s->candidates = calloc(1, sizeof(char *));
        if (!s->candidates)
                return scan_fail(s, false, "out of memory", 0);
        for (size_t i = 0; i < res->n_list; i++) {
                const TokenInfo *t = &res->list[i];
                char *c;
                int r;

                if (!t->id || !streq_ptr(t->name, s->name) || scan_is_known(s, t->id))
                        continue;
                if (t->owner && t->created) {
                        /* v2 lists say who made each token and when. */
                        r = scan_take(s, t->id, streq(t->owner, s->env->owner) && scan_in_window(s, t->created));
                        if (r < 0)
                                return scan_fail(s, false, "out of memory", 0);
                        continue;
                }
                /* v1 lists carry ids and names only: ask for each of the few same-name ones. */
                c = strdup(t->id);
                if (!c || strv_push(&s->candidates, c) < 0) {
                        free(c);
                        return scan_fail(s, false, "out of memory", 0);
                }
        }
        s->index = 0;
        scan_next_candidate(s);
}

static void on_scan_get(ApiResult *res, void *userdata) {
        Scan *s = userdata;
        const TokenInfo *t = &res->info;

        s->call = NULL;
        if (res->class != API_OK && res->status != 404)
                return scan_fail(s, res->class == API_PERMANENT, res->error, res->retry_at);
        /* 404: gone meanwhile, nothing to retire. */
        if (res->class == API_OK &&
            scan_take(s, s->candidates[s->index],
                      streq_ptr(t->name, s->name) && streq_ptr(t->owner, s->env->owner) &&
                      scan_in_window(s, t->created)) < 0)
                return scan_fail(s, false, "out of memory", 0);
        s->index++;
        scan_next_candidate(s);
}

static void scan_step(Scan *s) {
        Manager *m = s->manager;
        Job *j;

        if (s->call || s->waiting_self)
                return;
        if (!s->env || !s->env->config) {
                char buf[256];
                snprintf(buf, sizeof(buf), "environment %s is not configured", s->env_name);
                return scan_fail(s, true, buf, 0);
        }
        /* A token the job has created but not yet looked up (v1 creates answer no id), or
         * one a crash left in the file of a resumed intent, would look like a leftover:
         * wait until the job knows it (scan_job_settled()). */
        j = manager_find_job(m, s->job);
        if (j && j->env == s->env && job_is_creating(j))
                return;
        if (s->env->self != ENV_SELF_KNOWN) {
                s->waiting_self = true;
                env_need_self(s->env);
                return;
        }
        s->call = call_new(s->env, API_LIST, on_scan_list, s);
        if (!s->call || !(s->call->arg_owner = strdup(s->env->owner))) {
                call_cancel(TAKE_PTR(s->call));
                return scan_fail(s, false, "out of memory", 0);
        }
        s->call->housekeeping = true;
        s->covering = s->until;
        s->retry.failed = false;
        log_job(LOG_DEBUG, s->job, NULL, NULL, NULL, 0, "looking for leftovers named '%s'", s->name);
        call_submit(s->call);
        manager_status_changed(m);
}

/* ---- status and operator requests ---- */

void scan_get_status(Scan *s, StepStatus *ret) {
        uint64_t t;

        *ret = (StepStatus) {
                .job = s->job, .env = s->env_name, .id = s->name, .what = "scan",
                .at = s->until + SCAN_SETTLE,
                .failures = s->retry.failed ? s->retry.attempt : 0,
                .error = s->retry.failed ? s->retry.error : NULL,
                .failing = s->retry.failed,
        };
        if (s->call || s->waiting_self)
                ret->at = now_realtime(); /* under way */
        else if (retry_next(&s->retry, &t))
                ret->at = t;
        else if (s->retry.failed)
                ret->at = s->retry.at;
}

int scan_retry_now(Scan *s) {
        if (!s->retry.failed || s->call || s->waiting_self)
                return 0;
        s->retry.attempt = 0; /* the backoff starts over */
        /* Still never before a create of its window could have completed. */
        scan_schedule(s, MAX(s->until + SCAN_SETTLE, now_realtime()), true);
        manager_status_changed(s->manager);
        return 1;
}

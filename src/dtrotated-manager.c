/* SPDX-License-Identifier: MIT */
#include <malloc.h>
#include <search.h>
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "dtrotated-control.h"
#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-metrics.h"
#include "dtrotated-util.h"

#define STATUS_INTERVAL (200 * USEC_PER_MSEC)  /* at most 5 STATUS= updates a second */
#define ONCE_BUDGET_MAX (60 * USEC_PER_SEC)    /* --once: retry transient failures this long */
#define SCAN_MARGIN     (5 * USEC_PER_MINUTE)  /* clock skew between host and API server */
#define HOOK_TIMEOUT    (2 * USEC_PER_MINUTE)
#define SYNC_DELAY      (1 * USEC_PER_SEC)     /* lazy records are durable this soon */

int manager_id_ref(Manager *m, const char *id) {
        return strcount_ref(&m->ids_in_use, id);
}

void manager_id_unref(Manager *m, const char *id) {
        strcount_unref(&m->ids_in_use, id);
}

bool manager_id_held(Manager *m, const char *id) {
        return strcount_get(&m->ids_in_use, id) > 0;
}

/* Called before every revoke: the index answers "no job holds it" at once; a token that
 * some job holds (rare: a revoke-now, a copied file) is looked for among the jobs. */
const Job *manager_token_in_use(Manager *m, const char *env, const char *id) {
        if (!manager_id_held(m, id))
                return NULL;
        for (Job *j = m->jobs; j; j = j->next)
                if (j->env && streq(j->env->name, env) &&
                    (streq_ptr(j->cur_id, id) || streq_ptr(j->delivered_id, id) ||
                     streq_ptr(j->restore_id, id)))
                        return j;
        return NULL;
}

/* ---- scheduling helpers ---- */

/* Exponential backoff from about 1 s, doubling, ±25% jitter, capped at retry_max_delay;
 * permanent failures wait the cap. Never earlier than what the server asked for. */
static usec_t manager_backoff(Manager *m, unsigned attempt, bool permanent, usec_t server_at) {
        usec_t cap = m->config->retry_max_delay, delay = USEC_PER_SEC, now = now_realtime(), when;

        for (unsigned i = 1; i < attempt && delay < cap; i++)
                delay *= 2;
        if (permanent && m->once)
                return USEC_INFINITY; /* --once: a permanent failure is not retried */
        if (permanent || delay > cap)
                delay = cap;
        delay = delay * 3 / 4 + random_u64() % (delay / 2 + 1);
        when = now + delay;
        /* Honour the server's Retry-After, but not beyond a day: a bogus header must not
         * stall a token for years. */
        if (server_at > when)
                when = MIN(server_at, now + USEC_PER_DAY);
        return when;
}

usec_t retry_failed(Manager *m, Retry *r, bool permanent, const char *error, usec_t server_at) {
        r->failed = true;
        r->attempt++;
        free(r->error);
        r->error = strdup(strna(error));
        r->at = manager_backoff(m, r->attempt, permanent, server_at);
        return r->at;
}

void retry_succeeded(Retry *r) {
        r->failed = false;
        r->attempt = 0;
        r->error = (free(r->error), NULL);
}

static int manager_arm_deadlines(Manager *m);

void retry_cancel(Retry *r) {
        r->now = sd_event_source_disable_unref(r->now);
        if (!deadline_queued(&r->deadline))
                return;
        deadline_heap_remove(&r->manager->deadlines, &r->deadline);
        if (!r->manager->stopping)
                (void) manager_arm_deadlines(r->manager);
}

void retry_done(Retry *r) {
        retry_cancel(r);
        retry_succeeded(r);
}

bool event_source_is_armed(sd_event_source *s) {
        int enabled = SD_EVENT_OFF;

        if (s)
                (void) sd_event_source_get_enabled(s, &enabled);
        return enabled != SD_EVENT_OFF;
}

bool retry_armed(const Retry *r) {
        return deadline_queued(&r->deadline) || event_source_is_armed(r->now);
}

bool retry_next(const Retry *r, usec_t *ret) {
        if (!retry_armed(r))
                return false;
        *ret = r->deadline.at;
        return true;
}

/* Everything due runs; a handler may queue, move or drop any deadline. */
static int on_deadline_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        usec_t now = now_realtime();
        Deadline *d;

        while ((d = deadline_heap_peek(&m->deadlines)) && d->at <= now) {
                Retry *r = container_of(d, Retry, deadline);
                deadline_heap_remove(&m->deadlines, d);
                r->cb(NULL, now, r->userdata);
        }
        (void) manager_arm_deadlines(m);
        return 0;
}

/* One CLOCK_REALTIME timer at the earliest deadline: deadlines are wall-clock times so
 * that suspend, reboot or a long downtime never shortens a grace period. */
static int manager_arm_deadlines(Manager *m) {
        Deadline *d = deadline_heap_peek(&m->deadlines);
        int k;

        if (!d)
                return m->deadline_timer ? sd_event_source_set_enabled(m->deadline_timer, SD_EVENT_OFF) : 0;
        if (!m->deadline_timer) {
                k = sd_event_add_time(m->event, &m->deadline_timer, CLOCK_REALTIME, d->at, USEC_PER_MSEC,
                                      on_deadline_timer, m);
                if (k >= 0)
                        (void) sd_event_source_set_description(m->deadline_timer, "deadlines");
                return k;
        }
        k = sd_event_source_set_time(m->deadline_timer, d->at);
        if (k >= 0)
                k = sd_event_source_set_enabled(m->deadline_timer, SD_EVENT_ONESHOT);
        return k;
}

static int on_retry_now(sd_event_source *s, void *userdata) {
        Retry *r = userdata;

        /* Freed, not kept disabled: an emergency makes every job and retirement due at
         * once, and 20,000 idle sources would hold ~6 MiB. The callback may arm a new one. */
        r->now = sd_event_source_disable_unref(r->now);
        return r->cb(NULL, now_realtime(), r->userdata);
}

/* Runs cb(userdata) at `when`: from a defer source in the next iteration if that is due
 * already, else from the heap. Returns false if it is not armed: --once and `when` is
 * beyond this run, or no memory. */
bool retry_schedule(Manager *m, Retry *r, usec_t when, bool retry, sd_event_time_handler_t cb, void *userdata) {
        int k;

        retry_cancel(r);
        r->manager = m;
        r->cb = cb;
        r->userdata = userdata;
        r->deadline.at = when;       /* what the status reports, also when it is due now */
        if (!manager_may_run_at(m, when, retry))
                return false;
        if (when <= now_realtime()) {
                k = sd_event_add_defer(m->event, &r->now, on_retry_now, r);
                if (k >= 0) {
                        (void) sd_event_source_set_description(r->now, "deadline-now");
                        return true;
                }
        }
        k = deadline_heap_put(&m->deadlines, &r->deadline, when);
        if (k >= 0)
                k = manager_arm_deadlines(m);
        if (k < 0)
                log_error_errno(k, "Cannot arm a timer: %m");
        return k >= 0;
}

bool manager_may_run_at(Manager *m, usec_t t, bool retry) {
        if (!m->once)
                return true;
        if (t == USEC_INFINITY)
                return false;
        /* --once: what is due now, follow-ups that fall due during this run, and retries
         * within the run's budget. */
        return t <= (retry ? m->once_deadline : now_realtime());
}

int manager_apply_record(Manager *m, const JournalRecord *r) {
        switch (r->type) {
        case JOURNAL_RETIRE:
        case JOURNAL_REVOKED:
        case JOURNAL_DELETED:
        case JOURNAL_UNRETIRE:
                return retirement_apply_record(m, r);
        case JOURNAL_SCAN:
        case JOURNAL_SCANNED:
                return scan_apply_record(m, r);
        default:
                return job_apply_record(m, r);
        }
}

static int manager_journal_rewrite(Manager *m) {
        int r = journal_compact(m->journal, manager_emit_live_records, m);

        if (r < 0)
                return log_error_errno(r, "Rewriting the journal in %s after a failed sync failed too: %m; steps wait until it succeeds",
                                       m->config->state_directory);
        log_notice("Rewrote the journal in %s after a failed sync", m->config->state_directory);
        return 0;
}

int manager_journal_sync(Manager *m) {
        int r;

        if (!journal_unsynced(m->journal))
                return 0;
        r = journal_sync(m->journal);
        if (r == 0)
                return 0;
        log_warning_errno(r, "Cannot sync the journal in %s: %m; rewriting it", m->config->state_directory);
        /* The pages of the lazy records may be gone even if a later sync succeeds: write
         * the whole state again, from memory, into a new file. */
        return manager_journal_rewrite(m);
}

static int on_flush(sd_event_source *s, void *userdata) {
        Manager *m = userdata;

        (void) manager_journal_sync(m);
        /* Whatever the sync did: the calls start, or fail and retry later. */
        for (Env *e = m->envs; e; e = e->next)
                env_flushed(e);
        return 0;
}

bool manager_wait_for_flush(Manager *m) {
        int r;

        if (!journal_unsynced(m->journal))
                return false;
        if (m->flush)
                r = sd_event_source_set_enabled(m->flush, SD_EVENT_ONESHOT);
        else {
                r = sd_event_add_defer(m->event, &m->flush, on_flush, m);
                if (r >= 0) {
                        (void) sd_event_source_set_description(m->flush, "journal-flush");
                        /* After every source that has something ready: they all join. */
                        (void) sd_event_source_set_priority(m->flush, SD_EVENT_PRIORITY_IDLE);
                }
        }
        /* Without the flush, the call syncs for itself (call_start()). */
        return r >= 0;
}

static int on_sync_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) manager_journal_sync(userdata);
        return 0;
}

static int manager_append(Manager *m, const JournalRecord *r, size_t n, bool lazy) {
        int k = lazy ? journal_append_lazy(m->journal, r, n) : journal_append(m->journal, r, n);

        if (k == -EIO && journal_unsynced(m->journal) && manager_journal_rewrite(m) >= 0)
                k = lazy ? journal_append_lazy(m->journal, r, n) : journal_append(m->journal, r, n);
        if (k >= 0 && lazy && !event_source_is_armed(m->sync_timer)) {
                if (!m->sync_timer) {
                        if (sd_event_add_time_relative(m->event, &m->sync_timer, CLOCK_MONOTONIC, SYNC_DELAY,
                                                       USEC_PER_MSEC * 100, on_sync_timer, m) >= 0)
                                (void) sd_event_source_set_description(m->sync_timer, "journal-sync");
                } else if (sd_event_source_set_time_relative(m->sync_timer, SYNC_DELAY) >= 0)
                        (void) sd_event_source_set_enabled(m->sync_timer, SD_EVENT_ONESHOT);
        }
        return k;
}

static int manager_record_full(Manager *m, const JournalRecord *r, size_t n, bool lazy) {
        int k = manager_append(m, r, n, lazy);

        if (k < 0)
                return log_error_errno(k, "Cannot write the journal in %s: %m; the step will be retried",
                                       m->config->state_directory);
        /* Written (durable, or lazy: synced before anything acts on it): now memory follows,
         * by the very code that replays it after a crash. */
        for (size_t i = 0; i < n; i++) {
                metrics_count_record(m, &r[i]);
                k = manager_apply_record(m, &r[i]);
                if (k < 0)
                        log_error_errno(k, "Applying a journal record failed: %m");
        }
        return 0;
}

int manager_record_lazy(Manager *m, const JournalRecord *r, size_t n) {
        return manager_record_full(m, r, n, true);
}

int manager_record(Manager *m, const JournalRecord *r, size_t n) {
        return manager_record_full(m, r, n, false);
}

/* ---- status ---- */

static char *manager_status(Manager *m) {
        size_t idle = 0, rotating = 0, failing = 0, grace = 0, revoke = 0, scans = m->n_scans, held = 0;
        usec_t next_rotation = USEC_INFINITY, next_delete = USEC_INFINITY, now = now_realtime();
        const char *first_fail = NULL, *first_fail_error = NULL, *next_delete_job = NULL;
        char d1[FORMAT_DURATION_MAX], d2[FORMAT_DURATION_MAX];
        char buf[512] = "", part[256];
        size_t n = 0;

        for (Job *j = m->jobs; j; j = j->next) {
                if (!j->config)
                        continue;
                n++;
                if (j->retry.failed) {
                        failing++;
                        if (!first_fail) {
                                first_fail = j->name;
                                first_fail_error = j->retry.error;
                        }
                } else if (j->state == JOB_IDLE)
                        idle++;
                else
                        rotating++;
                if (j->held)
                        held++;
                if (j->state == JOB_IDLE && !j->held) {
                        usec_t t;
                        if (retry_next(&j->retry, &t) && t < next_rotation)
                                next_rotation = t;
                }
        }
        for (Retirement *r = m->retirements; r; r = r->next) {
                if (r->state == RETIRE_WAIT_DELETE) {
                        grace++;
                        if (r->delete_at < next_delete) {
                                next_delete = r->delete_at;
                                next_delete_job = r->job;
                        }
                } else
                        revoke++;
        }

        snprintf(part, sizeof(part), "%zu token%s: %zu idle", n, n == 1 ? "" : "s", idle);
        strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        if (rotating) {
                snprintf(part, sizeof(part), ", %zu rotating", rotating);
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        if (held) {
                snprintf(part, sizeof(part), ", %zu held after a restore", held);
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        if (revoke) {
                snprintf(part, sizeof(part), ", %zu to revoke", revoke);
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        if (scans) {
                snprintf(part, sizeof(part), ", %zu leftover scan%s owed", scans, scans == 1 ? "" : "s");
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        if (grace) {
                snprintf(part, sizeof(part), ", %zu in grace (delete %s in %s)", grace,
                         strna(next_delete_job),
                         format_duration(d1, sizeof(d1), next_delete > now ? next_delete - now : 0));
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        if (failing) {
                snprintf(part, sizeof(part), ", %zu failing (%s: %.80s)", failing, first_fail,
                         strna(first_fail_error));
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        if (next_rotation != USEC_INFINITY) {
                snprintf(part, sizeof(part), "; next rotation in %s",
                         format_duration(d2, sizeof(d2), next_rotation > now ? next_rotation - now : 0));
                strncat(buf, part, sizeof(buf) - strlen(buf) - 1);
        }
        return strdup(buf);
}

static void manager_send_status(Manager *m) {
        _cleanup_free_ char *s = manager_status(m);

        m->status_dirty = false;
        if (!s || streq_ptr(s, m->last_status))
                return;
        (void) sd_notifyf(false, "STATUS=%s", s);
        free(m->last_status);
        m->last_status = TAKE_PTR(s);
}

/* READY=1 with the current STATUS=, remembered so the status timer does not repeat it. */
static void manager_send_ready(Manager *m) {
        char *s = manager_status(m);

        m->status_dirty = false;
        (void) sd_notifyf(false, "READY=1\nSTATUS=%s", strna(s));
        free(m->last_status);
        m->last_status = s;
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        manager_send_status(userdata);
        return 0;
}

/* Coalesces STATUS= updates: one at most every STATUS_INTERVAL, none while idle. */
void manager_status_changed(Manager *m) {
        metrics_changed(m);
        if (m->status_dirty)
                return;
        m->status_dirty = true;
        if (!m->status_timer) {
                if (sd_event_add_time_relative(m->event, &m->status_timer, CLOCK_MONOTONIC,
                                               STATUS_INTERVAL, USEC_PER_MSEC * 50, on_status_timer, m) < 0)
                        return;
                (void) sd_event_source_set_description(m->status_timer, "status");
                return;
        }
        (void) sd_event_source_set_time_relative(m->status_timer, STATUS_INTERVAL);
        (void) sd_event_source_set_enabled(m->status_timer, SD_EVENT_ONESHOT);
}

/* From where the last walk found an active job, round the list: jobs finish in about
 * the order they started, so this is short where a walk from the start would pass every
 * finished job again, after each step of each job. */
static bool manager_any_job_active(Manager *m) {
        Job *start = m->once_job_cursor ?: m->jobs;

        for (Job *j = start; j; j = j->next)
                if (job_is_active(j)) {
                        m->once_job_cursor = j;
                        return true;
                }
        for (Job *j = m->jobs; j && j != start; j = j->next)
                if (job_is_active(j)) {
                        m->once_job_cursor = j;
                        return true;
                }
        return false;
}

/* --once: exit when nothing is left to do in this run. */
void manager_check_once_done(Manager *m) {
        size_t left = 0;

        if (!m->once || m->stopping)
                return;
        if (manager_any_job_active(m))
                return;
        for (Retirement *r = m->retirements; r; r = r->next)
                if (retirement_is_active(r))
                        return;
        for (Scan *s = m->scans; s; s = s->next)
                if (scan_is_active(s))
                        return;
        for (Env *e = m->envs; e; e = e->next)
                if (e->self == ENV_SELF_PENDING)
                        return; /* its scope warnings belong to this run too */
        for (Job *j = m->jobs; j; j = j->next)
                if (j->retry.failed) {
                        log_job(LOG_ERR, j->name, MSGID_FAILED, j->cur_id, NULL, 0,
                                "left undone by this run: %s", strna(j->retry.error));
                        left++;
                }
        for (Retirement *r = m->retirements; r; r = r->next)
                if (r->retry.failed) {
                        log_job(LOG_ERR, strna(r->job), MSGID_FAILED, r->id, NULL, 0,
                                "%s of %s left undone by this run: %s",
                                r->state == RETIRE_WAIT_REVOKE ? "revoke" : "delete", r->id,
                                strna(r->retry.error));
                        left++;
                }
        for (Scan *s = m->scans; s; s = s->next) {
                char ts[FORMAT_TIMESTAMP_MAX];
                log_job(s->retry.failed ? LOG_ERR : LOG_NOTICE, s->job, s->retry.failed ? MSGID_FAILED : NULL, NULL, NULL, 0,
                        "the leftover scan for '%s' is left for a later run%s%s (it may run from %s)", s->name,
                        s->retry.failed ? ": " : "", s->retry.failed ? strna(s->retry.error) : "",
                        format_timestamp(ts, sizeof(ts), s->until));
                left++;
        }
        if (left)
                log_error("--once: %zu step%s failed; they are in the journal for the next run", left,
                          left == 1 ? "" : "s");
        m->exit_status = left ? EXIT_RUNTIME : 0;
        m->stopping = true;
        (void) sd_event_exit(m->event, m->exit_status);
}

/* ---- start-up, reload, shutdown ---- */

static int on_replay(const JournalRecord *r, void *userdata) {
        return manager_apply_record(userdata, r);
}

int manager_emit_live_records(Journal *j, void *userdata) {
        Manager *m = userdata;
        int r;

        for (Job *job = m->jobs; job; job = job->next)
                if ((r = job_emit_records(job)) < 0)
                        return r;
        for (Retirement *ret = m->retirements; ret; ret = ret->next)
                if ((r = retirement_emit_records(ret)) < 0)
                        return r;
        for (Scan *s = m->scans; s; s = s->next)
                if ((r = scan_emit_records(s)) < 0)
                        return r;
        return 0;
}

/* Compaction: rewrite the journal with just the live state once it has grown well past
 * it. Called when the loop is about to go idle, and once when it has ended (an exit can
 * come before the loop ever idles: --once), never in the middle of a step. */
static void manager_compact_if_due(Manager *m) {
        size_t live = m->n_jobs * 3 + m->n_retirements * 2 + m->n_scans;
        size_t threshold = 2 * live + 256;
        int r;

        /* After a failure (full disk), wait for as many records again before retrying:
         * not once per loop iteration. */
        if (m->compact_failed)
                threshold *= 2;
        if (journal_n_records(m->journal) <= threshold)
                return;
        r = journal_compact(m->journal, manager_emit_live_records, m);
        if (r < 0 && !m->compact_failed)
                log_warning_errno(r, "Compacting the journal failed, keeping the old one: %m");
        else if (r >= 0 && m->compact_failed)
                log_info("Compacted the journal");
        m->compact_failed = r < 0;
}

static int on_idle_compact(sd_event_source *s, void *userdata) {
        manager_compact_if_due(userdata);
        return 0;
}

static void manager_adopt_config(Manager *m, Config *c) {
        /* Environments: point to the new settings; keep ones with pending steps. */
        for (Env *e = m->envs; e; e = e->next)
                e->config = config_find_env(c, e->name);
        for (size_t i = 0; i < c->n_envs; i++) {
                Env *e = manager_get_env(m, c->envs[i].name, true);
                if (!e)
                        continue;
                e->config = &c->envs[i];
                (void) env_load_auth(e); /* errors surface when a call needs the token */
        }
        for (Retirement *r = m->retirements; r; r = r->next)
                r->env = manager_get_env(m, r->env_name, false);
        for (Scan *s = m->scans; s; s = s->next)
                s->env = manager_get_env(m, s->env_name, true);
}

/* Frees the configurations that replaced ones no job or environment points into. */
void manager_config_released(Manager *m) {
        size_t k = 0;

        for (size_t i = 0; i < m->n_old_configs; i++) {
                Config *c = m->old_configs[i];
                bool used = false;
                for (Job *j = m->jobs; j && !used; j = j->next)
                        used = (j->config >= c->jobs && j->config < c->jobs + c->n_jobs);
                for (Env *e = m->envs; e && !used; e = e->next)
                        used = (e->config >= c->envs && e->config < c->envs + c->n_envs);
                if (used)
                        m->old_configs[k++] = c;
                else
                        config_free(c);
        }
        m->n_old_configs = k;
}

static int job_config_name_cmp(const void *a, const void *b) {
        return strcmp(((const JobConfig *) a)->name, ((const JobConfig *) b)->name);
}

static void free_nothing(void *p) {
}

static void manager_apply_jobs(Manager *m) {
        Config *c = m->config;
        void *names = NULL;          /* the configured names, for the second loop: asking */
        bool indexed = true;         /* config_find_job() for each job is O(n^2) */

        for (size_t i = 0; i < c->n_jobs; i++) {
                if (indexed && !tsearch(&c->jobs[i], &names, job_config_name_cmp))
                        indexed = false;
                Job *j = manager_find_job(m, c->jobs[i].name);
                bool fresh = !j;
                if (!j)
                        j = job_new(m, c->jobs[i].name);
                if (!j) {
                        log_error("Out of memory");
                        continue;
                }
                job_set_config(j, &c->jobs[i]);
                if (fresh && m->running)
                        job_start(j); /* added by a reload */
        }
        for (Job *j = m->jobs, *next; j; j = next) {
                next = j->next; /* an idle removed job is freed right away */
                if (indexed ? !tfind(&(JobConfig) { .name = j->name }, &names, job_config_name_cmp)
                            : !config_find_job(c, j->name))
                        job_set_config(j, NULL);
        }
        tdestroy(names, free_nothing);
}

static void report_config_problem(int prio, const char *msg, void *userdata) {
        char ***problems = userdata;

        log_full(prio, 0, "%s", msg);
        if (problems) {
                char *p = strdup_printf("%s%s", prio == LOG_WARNING ? "warning: " : "", msg);
                if (p && strv_push(problems, p) < 0)
                        free(p);
        }
}

int manager_reload(Manager *m) {
        return manager_reload_full(m, NULL);
}

int manager_reload_full(Manager *m, char ***ret_problems) {
        Config *c = NULL, **old;
        usec_t now = now_monotonic();
        int r;

        (void) sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading %s",
                          (unsigned long long) now, m->config_path);
        log_info("Reloading %s", m->config_path);
        r = config_load(m->config_path, &c, report_config_problem, ret_problems);
        if (r < 0) {
                log_error("Configuration %s has errors; keeping the running configuration", m->config_path);
                goto done;
        }
        if (!streq(c->state_directory, m->config->state_directory))
                log_warning("state_directory changed to %s; this takes effect at the next start",
                            c->state_directory);
        if (!streq_ptr(c->control_socket, m->config->control_socket) ||
            !streq_ptr(c->control_group, m->config->control_group))
                log_warning("control_socket or control_group changed; this takes effect at the next start");
        old = realloc(m->old_configs, (m->n_old_configs + 1) * sizeof(Config *));
        if (!old) {
                config_free(c);
                r = log_error_errno(-ENOMEM, "Out of memory");
                goto done;
        }
        m->old_configs = old;
        m->old_configs[m->n_old_configs++] = m->config;
        free(c->state_directory);
        c->state_directory = strdup(m->config->state_directory);
        m->config = c;
        manager_adopt_config(m, c);
        manager_apply_jobs(m);
        manager_config_released(m);
        log_info("Reloaded %s: %zu token%s in %zu environment%s", m->config_path, c->n_jobs,
                 c->n_jobs == 1 ? "" : "s", c->n_envs, c->n_envs == 1 ? "" : "s");
done:
        manager_send_ready(m);
        metrics_changed(m);          /* metrics_file may have changed */
        return r;
}

static int on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        log_info("Received SIG%s, stopping; in-flight requests are abandoned, the journal resumes them",
                 sigabbrev_np((int) si->ssi_signo));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
        m->stopping = true;
        m->exit_status = 0;
        (void) sd_event_exit(m->event, 0);
        return 0;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) manager_reload(userdata);
        return 0;
}

int manager_new(const char *config_path, Config *config, bool once, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_free_ char *error = NULL;
        sigset_t mask;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->config_path = strdup(config_path);
        if (!m->config_path)
                return -ENOMEM;
        m->config = config;
        m->once = once;
        m->scan_margin = SCAN_MARGIN;
        m->hook_timeout = HOOK_TIMEOUT;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;

        r = sd_event_new(&m->event);
        if (r < 0)
                return r;
        if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_sigterm, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGINT, on_sigterm, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m)) < 0)
                return r;
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                return r;
        r = curl_glue_new(m->event, &m->curl);
        if (r < 0)
                return r;
        r = metrics_new(&m->metrics);
        if (r < 0)
                return r;

        manager_adopt_config(m, config);

        r = journal_open(config->state_directory, on_replay, m, &m->journal, &error);
        if (r < 0) {
                if (error)
                        log_error("%s", error);
                else
                        log_error_errno(r, "Cannot open the journal in %s: %m", config->state_directory);
                if (r == -EBADMSG)
                        log_error("The journal is damaged; dtrotated will not start until it is repaired: see RECOVERY in dtrotated(8)");
                return r;
        }
        {
                sd_event_source *s;
                r = sd_event_add_post(m->event, &s, on_idle_compact, m);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_priority(s, SD_EVENT_PRIORITY_IDLE);
                /* The loop takes its own reference; ours goes. */
                (void) sd_event_source_set_floating(s, true);
                sd_event_source_unref(s);
        }
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* While memory still holds the state that a failed sync's rewrite writes. */
        if (m->journal)
                (void) manager_journal_sync(m);
        m->stopping = true;
        /* First: requests still waiting for a job are answered while it is freed. */
        m->control = control_free(m->control);
        while (m->jobs) {
                Job *j = m->jobs;
                m->jobs = j->next;
                job_free(j);
        }
        m->jobs_last = NULL;
        m->once_job_cursor = NULL;
        tdestroy(m->jobs_by_name, free_nothing);
        m->jobs_by_name = NULL;
        strcount_free(&m->ids_in_use);
        strcount_free(&m->token_names);
        tdestroy(m->retirements_by_id, free_nothing);
        m->retirements_by_id = NULL;
        while (m->retirements) {
                Retirement *r = m->retirements;
                m->retirements = r->next;
                retirement_free(r);
        }
        while (m->scans) {
                Scan *s = m->scans;
                m->scans = s->next;
                scan_free(s);
        }
        while (m->envs) {
                Env *e = m->envs;
                m->envs = e->next;
                env_free(e);
        }
        curl_glue_free(m->curl);
        journal_close(m->journal);
        sd_event_source_disable_unref(m->status_timer);
        sd_event_source_disable_unref(m->sync_timer);
        sd_event_source_disable_unref(m->deadline_timer);
        deadline_heap_free(&m->deadlines);
        sd_event_source_disable_unref(m->flush);
        sd_event_source_disable_unref(m->once_limit);
        m->metrics = metrics_free(m->metrics);
        sd_event_unref(m->event);
        config_free(m->config);
        for (size_t i = 0; i < m->n_old_configs; i++)
                config_free(m->old_configs[i]);
        free(m->old_configs);
        free(m->last_status);
        free(m->config_path);
        free(m);
        return NULL;
}

static int on_once_limit(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        log_error("--once: the run's time limit is reached with steps still under way; they are in the journal for the next run");
        m->stopping = true;
        m->exit_status = EXIT_RUNTIME;
        (void) sd_event_exit(m->event, EXIT_RUNTIME);
        return 0;
}

/* --once ends within its retry budget plus what a step started at its end may take: the
 * longest request_timeout and the hook timeout. Whatever is left is journaled. */
static int manager_arm_once_limit(Manager *m) {
        usec_t longest = 0;
        int r;

        for (size_t i = 0; i < m->config->n_envs; i++)
                longest = MAX(longest, m->config->envs[i].request_timeout);
        r = sd_event_add_time_relative(m->event, &m->once_limit, CLOCK_MONOTONIC,
                                       m->once_deadline - m->once_started + longest + m->hook_timeout +
                                       5 * USEC_PER_SEC, USEC_PER_SEC, on_once_limit, m);
        if (r >= 0)
                (void) sd_event_source_set_description(m->once_limit, "once-limit");
        return r;
}

int manager_run(Manager *m) {
        int r;

        /* The control socket: not for --once, which is gone before anyone could ask. A
         * socket that cannot be set up is logged; the tokens are rotated all the same. */
        if (!m->once && m->config->control_socket)
                (void) control_new(m, m->config->control_socket, m->config->control_gid, &m->control);

        m->once_started = now_realtime();
        /* --once retries transient failures for 10 x retry_max_delay, at most a minute. */
        m->once_deadline = m->once_started + MIN(ONCE_BUDGET_MAX, 10 * m->config->retry_max_delay);
        if (m->once && (r = manager_arm_once_limit(m)) < 0)
                return log_error_errno(r, "Cannot arm the --once time limit: %m"), EXIT_RUNTIME;
        manager_apply_jobs(m);
        m->running = true;
        /* Learn whose the management tokens are and what they may do; warn early. */
        for (Env *e = m->envs; e; e = e->next)
                if (e->config)
                        env_need_self(e);
        for (Retirement *ret = m->retirements; ret; ret = ret->next)
                retirement_start(ret);
        for (Scan *s = m->scans; s; s = s->next)
                scan_start(s);
        for (Job *j = m->jobs, *next; j; j = next) {
                next = j->next; /* a removed idle job is forgotten and freed */
                job_start(j);
        }

        /* Ready: configuration loaded, journal replayed, lock held; nothing sent yet. */
        manager_send_ready(m);
        log_info("dtrotated " VERSION " started: %zu token%s, %zu pending revoke/delete step%s, %zu leftover scan%s, journal in %s",
                 m->config->n_jobs, m->config->n_jobs == 1 ? "" : "s", m->n_retirements,
                 m->n_retirements == 1 ? "" : "s", m->n_scans, m->n_scans == 1 ? "" : "s",
                 m->config->state_directory);
        metrics_changed(m);
        manager_check_once_done(m);
        /* Parsing the configuration and replaying the journal leave freed memory spread
         * through the heap, which free() does not give back: 5 MiB with 10,000 jobs. */
        (void) malloc_trim(0);

        r = sd_event_loop(m->event);
        if (r >= 0)
                manager_compact_if_due(m);
        metrics_flush(m);            /* the state at exit, whatever the last write's age */
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m"), EXIT_RUNTIME;
        return m->exit_status;
}

/* ---- --show-state: the journal's view, read-only ---- */

static void print_time(FILE *f, const char *key, usec_t t) {
        char ts[FORMAT_TIMESTAMP_MAX];

        if (t)
                fprintf(f, " %s=%s", key, format_timestamp(ts, sizeof(ts), t));
}

/* Replays the journal without the lock and without writing anything, and prints one
 * line per job, retirement and scan: for operators, and for the crash tests. */
int manager_show_state(Config *config, FILE *f) {
        _cleanup_(manager_freep) Manager *m = calloc(1, sizeof(Manager));
        _cleanup_free_ char *error = NULL;
        int r;

        if (!m) {
                config_free(config);
                return -ENOMEM;
        }
        m->config = config;
        r = journal_open_readonly(config->state_directory, on_replay, m, &error);
        if (r < 0) {
                if (error)
                        fprintf(stderr, "%s\n", error);
                else
                        fprintf(stderr, "Cannot read the journal in %s: %s\n", config->state_directory, strerror(-r));
                return r;
        }
        for (Job *j = m->jobs; j; j = j->next) {
                fprintf(f, "job %s env=%s phase=%s token=%s", j->name, j->env ? j->env->name : "-",
                        job_phase_to_string(j->phase), j->cur_id ?: "-");
                print_time(f, "created", j->cur_created);
                if (j->cur_expires != USEC_INFINITY)
                        print_time(f, "expires", j->cur_expires);
                print_time(f, "rotated", j->rotated_at);
                if (IN_SET(j->phase, PHASE_INTENT, PHASE_DELIVERED)) {
                        print_time(f, "first-create", j->create_first);
                        print_time(f, "last-create", j->create_last);
                }
                if (j->delivered_id)
                        fprintf(f, " delivered=%s", j->delivered_id);
                if (j->restore_id)
                        fprintf(f, " restore=%s", j->restore_id);
                if (j->held)
                        fputs(" held", f);
                fputc('\n', f);
        }
        for (Retirement *ret = m->retirements; ret; ret = ret->next) {
                fprintf(f, "retire %s env=%s job=%s state=%s", ret->id, ret->env_name, strna(ret->job),
                        ret->state == RETIRE_WAIT_DELETE ? "delete" : "revoke");
                print_time(f, "at", ret->state == RETIRE_WAIT_DELETE ? ret->delete_at : ret->revoke_at);
                if (ret->unused && ret->state != RETIRE_WAIT_DELETE) {
                        char d[FORMAT_DURATION_MAX];
                        fprintf(f, " when-unused=%s", format_duration(d, sizeof(d), ret->unused));
                        print_time(f, "give-up", ret->unused_until);
                }
                fputc('\n', f);
        }
        for (Scan *s = m->scans; s; s = s->next) {
                fprintf(f, "scan job=%s env=%s name=%s", s->job, s->env_name, s->name);
                print_time(f, "from", s->from);
                print_time(f, "until", s->until);
                fputc('\n', f);
        }
        return fflush(f) == EOF ? -errno : 0;
}

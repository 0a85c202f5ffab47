/* SPDX-License-Identifier: MIT */
/* One rotation job per configured token: the documented manual workflow as a state
 * machine. Every mutating step is journaled before (intent) and after (outcome), so a
 * crash at any instant resumes from the journal plus what the job's files hold:
 *
 *   IDLE --due--> LOOKUP_OLD --> CREATE --> LOOKUP_NEW --> (deliver) --> HOOK --> IDLE
 *                    (file)     [create]    (staged file)   [delivered]  [rotated+retire]
 *
 * The old token is then retired independently (dtrotated-retire.c): revoke after
 * revoke_delay, delete grace_period after the confirmed revoke. */
#include <search.h>
#include <sys/stat.h>

#include "dtrotated-deliver.h"
#include "dtrotated-log.h"
#include "dtrotated-manager.h"
#include "dtrotated-util.h"

#define SCAN_SETTLE (2 * USEC_PER_SEC)

static const char *const job_state_table[_JOB_STATE_MAX] = {
        [JOB_INIT] = "init",         [JOB_IDLE] = "idle",
        [JOB_LOOKUP_OLD] = "lookup", [JOB_CREATE] = "create",
        [JOB_LOOKUP_NEW] = "verify", [JOB_HOOK] = "hook",
        [JOB_SCAN] = "scan",
};

const char *job_state_to_string(JobState s) {
        return s < _JOB_STATE_MAX ? job_state_table[s] : "?";
}

static void job_step(Job *j);
static void job_go_idle(Job *j);

static int job_name_cmp(const void *a, const void *b) {
        return strcmp(((const Job *) a)->name, ((const Job *) b)->name);
}

/* The caller has made sure that no job of that name exists (manager_find_job()). */
Job *job_new(Manager *m, const char *name) {
        Job *j = calloc(1, sizeof(*j));

        if (!j || !(j->name = strdup(name)) || !tsearch(j, &m->jobs_by_name, job_name_cmp)) {
                if (j)
                        free(j->name);
                free(j);
                return NULL;
        }
        j->manager = m;
        j->cur_expires = USEC_INFINITY;
        /* Keep configuration order: status lines and logs read naturally. */
        if (m->jobs_last)
                m->jobs_last->next = j;
        else
                m->jobs = j;
        m->jobs_last = j;
        m->n_jobs++;
        return j;
}

static void job_clear_rotation(Job *j) {
        /* token_name stays: other jobs compare theirs against it. */
        j->scopes = strv_free(j->scopes);
        j->new_secret = erase_and_free(j->new_secret);
        free(j->new_id);
        j->new_id = NULL;
        j->scan_candidates = strv_free(j->scan_candidates);
        j->scan_leftovers = strv_free(j->scan_leftovers);
        j->scan_index = 0;
}

Job *job_free(Job *j) {
        if (!j)
                return NULL;
        call_cancel(j->call);
        hook_free(j->hook);
        sd_event_source_disable_unref(j->timer);
        job_clear_rotation(j);
        free(j->token_name);
        free(j->name);
        free(j->last_error);
        free(j->cur_id);
        free(j->create_old);
        free(j->delivered_id);
        free(j->scan_name);
        free(j);
        return NULL;
}

/* O(log n): replaying the journal and applying the configuration look up every job. */
Job *manager_find_job(Manager *m, const char *name) {
        Job *const *p = tfind(&(Job) { .name = (char *) name }, &m->jobs_by_name, job_name_cmp);

        return p ? *p : NULL;
}

static void job_unlink_and_free(Job *j) {
        Manager *m = j->manager;
        Job *prev = NULL;

        for (Job **p = &m->jobs; *p; prev = *p, p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        if (m->jobs_last == j)
                                m->jobs_last = prev;
                        break;
                }
        (void) tdelete(j, &m->jobs_by_name, job_name_cmp);
        m->n_jobs--;
        job_free(j);
}

static int set_str(char **p, const char *v) {
        char *c = NULL;
        if (v && !(c = strdup(v)))
                return -ENOMEM;
        free(*p);
        *p = c;
        return 0;
}

/* ---- journal replay ---- */

static int replay_inconsistent(const JournalRecord *r, const char *what) {
        log_error("Journal: %s record for %s %s: %s; refusing to guess (inspect the journal)",
                  journal_type_to_string(r->type), r->job ? "job" : "token",
                  r->job ? r->job : strna(r->id), what);
        return -EBADMSG;
}

int job_apply_record(Manager *m, const JournalRecord *r) {
        Retirement *ret;
        Job *j = NULL;

        if (r->type == JOURNAL_RETIRE) {
                if (manager_find_retirement(m, r->env, r->id))
                        return 0; /* written again after a retried step */
                return retirement_new(m, r->env, r->id, r->job, r->at, r->grace) ? 0 : -ENOMEM;
        }
        if (r->type == JOURNAL_REVOKED || r->type == JOURNAL_DELETED) {
                ret = manager_find_retirement(m, r->env, r->id);
                if (!ret)
                        return replay_inconsistent(r, "no retirement of that token was recorded");
                if (r->type == JOURNAL_DELETED)
                        retirement_unlink_and_free(ret);
                else {
                        ret->state = RETIRE_WAIT_DELETE;
                        ret->delete_at = r->at;
                }
                return 0;
        }

        j = manager_find_job(m, r->job);
        if (!j && !(j = job_new(m, r->job)))
                return -ENOMEM;
        switch (r->type) {
        case JOURNAL_JOB:
        case JOURNAL_ROTATED:
                if (set_str(&j->cur_id, r->id) < 0)
                        return -ENOMEM;
                j->cur_created = r->created;
                j->cur_expires = r->expires;
                if (r->type == JOURNAL_ROTATED) {
                        j->create_at = 0;
                        j->delivered_id = (free(j->delivered_id), NULL);
                }
                break;
        case JOURNAL_CREATE:
                j->create_at = r->at;
                if (set_str(&j->create_old, r->old_id) < 0)
                        return -ENOMEM;
                break;
        case JOURNAL_DELIVERED:
                if (!j->create_at)
                        return replay_inconsistent(r, "delivered without a create");
                if (set_str(&j->delivered_id, r->id) < 0)
                        return -ENOMEM;
                j->delivered_created = r->created;
                j->delivered_expires = r->expires;
                break;
        case JOURNAL_SCAN:
                if (!j->scan_at || r->at < j->scan_at)
                        j->scan_at = r->at;
                if (set_str(&j->scan_name, r->name) < 0)
                        return -ENOMEM;
                break;
        case JOURNAL_SCANNED:
                j->scan_at = 0;
                break;
        case JOURNAL_FORGET:
                job_unlink_and_free(j);
                return 0;
        default:
                return replay_inconsistent(r, "unexpected record type");
        }
        if (r->env) {
                Env *e = manager_get_env(m, r->env, true);
                if (!e)
                        return -ENOMEM;
                if (!j->env)
                        j->env = e;
        }
        return 0;
}

int job_emit_records(Job *j) {
        const char *env = j->env ? j->env->name : NULL;
        int r = 0;

        if (j->cur_id)
                r = journal_compact_add(j->manager->journal, &(JournalRecord) {
                        .type = JOURNAL_JOB, .job = j->name, .env = env, .id = j->cur_id,
                        .created = j->cur_created, .expires = j->cur_expires });
        if (r >= 0 && j->create_at)
                r = journal_compact_add(j->manager->journal, &(JournalRecord) {
                        .type = JOURNAL_CREATE, .job = j->name, .env = env,
                        .old_id = j->create_old, .at = j->create_at });
        if (r >= 0 && j->delivered_id)
                r = journal_compact_add(j->manager->journal, &(JournalRecord) {
                        .type = JOURNAL_DELIVERED, .job = j->name, .env = env, .id = j->delivered_id,
                        .old_id = j->create_old, .created = j->delivered_created,
                        .expires = j->delivered_expires });
        if (r >= 0 && j->scan_at)
                r = journal_compact_add(j->manager->journal, &(JournalRecord) {
                        .type = JOURNAL_SCAN, .job = j->name, .env = env, .name = j->scan_name,
                        .at = j->scan_at });
        return r;
}

/* ---- scheduling ---- */

static usec_t job_due(Job *j) {
        const JobConfig *c = j->config;
        usec_t due = j->cur_created + c->rotate_every;

        if (j->cur_expires != USEC_INFINITY) {
                usec_t early = j->cur_expires > c->renew_before ? j->cur_expires - c->renew_before : 0;
                if (early < due)
                        due = early;
        }
        return due;
}

bool job_is_active(Job *j) {
        return j->call || j->hook || event_source_is_armed(j->timer);
}

static void job_changed(Job *j) {
        manager_status_changed(j->manager);
        manager_check_once_done(j->manager);
}

static int on_job_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Job *j = userdata;

        if (j->state == JOB_IDLE)
                j->state = JOB_LOOKUP_OLD;
        job_step(j);
        return 0;
}

/* Arms the job's timer for `when`, unless --once says that is beyond this run. */
static void job_schedule(Job *j, usec_t when, bool retry) {
        Manager *m = j->manager;
        int r;

        if (!manager_may_run_at(m, when, retry) || (m->once && !retry && j->rotated_this_run)) {
                if (j->timer)
                        (void) sd_event_source_set_enabled(j->timer, SD_EVENT_OFF);
                return;
        }
        r = manager_arm(m, &j->timer, when, on_job_timer, j);
        if (r < 0)
                log_job(LOG_ERR, j->name, NULL, NULL, NULL, r, "cannot arm timer: %m");
}

static void job_succeeded(Job *j) {
        j->failed = j->permanent = false;
        j->attempt = 0;
        free(j->last_error);
        j->last_error = NULL;
}

/* "in 2s", or "at the next run" for --once; for "retrying %s". */
char *format_retry(char *buf, size_t size, usec_t retry_at) {
        char d[FORMAT_DURATION_MAX];
        usec_t now = now_realtime();

        if (retry_at == USEC_INFINITY)
                snprintf(buf, size, "at the next run");
        else
                snprintf(buf, size, "in %s", format_duration(d, sizeof(d), retry_at > now ? retry_at - now : 0));
        return buf;
}

static void job_fail(Job *j, bool permanent, const char *error, usec_t retry_at) {
        Manager *m = j->manager;
        char when[FORMAT_DURATION_MAX + 16], ts[FORMAT_TIMESTAMP_MAX];

        j->failed = true;
        j->permanent = permanent;
        j->attempt++;
        free(j->last_error);
        j->last_error = strdup(strna(error));
        j->retry_at = manager_backoff(m, j->attempt, permanent, retry_at);
        format_retry(when, sizeof(when), j->retry_at);

        if (permanent)
                log_job(LOG_ERR, j->name, MSGID_FAILED, j->cur_id, NULL, 0, "%s failed: %s; retrying %s",
                        job_state_to_string(j->state), strna(error), when);
        else
                log_job(LOG_WARNING, j->name, NULL, j->cur_id, NULL, 0, "%s failed: %s; retrying %s (attempt %u)",
                        job_state_to_string(j->state), strna(error), when, j->attempt + 1);
        if (j->cur_expires != USEC_INFINITY && j->cur_expires <= j->retry_at && j->retry_at != USEC_INFINITY)
                log_job(LOG_CRIT, j->name, MSGID_EXPIRY, j->cur_id, NULL, 0,
                        "token %s expires at %s, before rotation can be retried: its consumers will lose access",
                        strna(j->cur_id), format_timestamp(ts, sizeof(ts), j->cur_expires));
        job_schedule(j, j->retry_at, true);
        job_changed(j);
}

static void job_fail_errno(Job *j, int error, const char *what) {
        char buf[256];
        snprintf(buf, sizeof(buf), "%s: %s", what, strerror(-error));
        job_fail(j, false, buf, 0);
}

static void job_fail_result(Job *j, const ApiResult *res) {
        job_fail(j, res->class == API_PERMANENT, res->error, res->retry_at);
}

/* The new token exists but cannot be written next to the job's file. Permissions, a
 * read-only file system (ReadWritePaths= of the unit) or a missing directory will not
 * fix themselves: say so loudly; the token is kept in memory and staged again later. */
static void job_fail_stage(Job *j, int error) {
        _cleanup_free_ char *dir = dirname_malloc(j->config->file);
        bool operator = IN_SET(-error, EROFS, EACCES, EPERM, ENOENT, ENOTDIR);
        char buf[512];

        snprintf(buf, sizeof(buf), "cannot write the new token next to %s: %s%s%s%s", j->config->file,
                 strerror(-error), operator ? " (is " : "", operator ? strna(dir) : "",
                 operator ? " writable for dtrotated? see ReadWritePaths= in dtrotated(8))" : "");
        job_fail(j, operator, buf, 0);
}

/* ---- steps ---- */

static void on_lookup_old(ApiResult *res, void *userdata);
static void on_create(ApiResult *res, void *userdata);
static void on_lookup_new(ApiResult *res, void *userdata);
static void on_list(ApiResult *res, void *userdata);
static void on_get(ApiResult *res, void *userdata);
static void job_run_hook(Job *j);

static Call *job_call(Job *j, ApiOp op, call_done_t done) {
        Call *c = call_new(j->env, op, done, j);
        if (!c)
                log_job(LOG_ERR, j->name, NULL, NULL, NULL, -ENOMEM, "out of memory");
        return c;
}

static bool job_is_management_token(Job *j) {
        const EnvConfig *e = j->env ? j->env->config : NULL;
        return e && e->management_token_file && streq(e->management_token_file, j->config->file);
}

static void job_step_lookup_old(Job *j) {
        _cleanup_erase_ char *secret = NULL;
        const char *why = NULL;
        char buf[512];
        int r;

        r = read_token_file(j->config->file, &secret, &why);
        if (r < 0) {
                snprintf(buf, sizeof(buf), "token file %s: %s", j->config->file, why ?: strerror(-r));
                /* Nothing will change without the operator: permanent. */
                job_fail(j, true, buf, 0);
                return;
        }
        j->call = job_call(j, API_LOOKUP, on_lookup_old);
        if (!j->call)
                return job_fail_errno(j, -ENOMEM, "lookup");
        j->call->arg_token = TAKE_PTR(secret);
        call_submit(j->call);
}

static void job_step_create(Job *j) {
        Manager *m = j->manager;
        int r;

        if (j->new_secret) {
                /* The create succeeded earlier but staging failed: stage again. */
                r = deliver_stage(j->config, j->new_secret);
                if (r < 0)
                        return job_fail_stage(j, r);
                j->state = JOB_LOOKUP_NEW;
                return job_step(j);
        }
        if (!j->create_at) {
                usec_t now = now_realtime();
                r = manager_journal_append(m, &(JournalRecord) {
                        .type = JOURNAL_CREATE, .job = j->name, .env = j->env->name,
                        .old_id = j->cur_id, .at = now }, 1);
                if (r < 0)
                        return job_fail_errno(j, r, "journal");
                j->create_at = now;
                if (set_str(&j->create_old, j->cur_id) < 0)
                        return job_fail_errno(j, -ENOMEM, "create");
        }
        j->call = job_call(j, API_CREATE, on_create);
        if (!j->call)
                return job_fail_errno(j, -ENOMEM, "create");
        j->call->arg_name = strdup(j->token_name);
        j->call->arg_scopes = strv_copy(j->scopes);
        j->call->arg_expires_in = j->config->expires_in;
        if (!j->call->arg_name || !j->call->arg_scopes) {
                call_cancel(TAKE_PTR(j->call));
                return job_fail_errno(j, -ENOMEM, "create");
        }
        call_submit(j->call);
}

static void job_step_lookup_new(Job *j) {
        j->call = job_call(j, API_LOOKUP, on_lookup_new);
        if (!j->call)
                return job_fail_errno(j, -ENOMEM, "lookup");
        j->call->arg_token = strdup(j->new_secret);
        if (!j->call->arg_token) {
                call_cancel(TAKE_PTR(j->call));
                return job_fail_errno(j, -ENOMEM, "lookup");
        }
        call_submit(j->call);
}

/* A create whose fate is unknown may still be carried out by the server for a while
 * after the client gave up (or died): until its request would have timed out, plus a
 * margin. Only then can a scan be sure to see it. */
static void job_defer_scan(Job *j, usec_t from) {
        usec_t timeout = j->env && j->env->config ? j->env->config->request_timeout : 30 * USEC_PER_SEC;
        usec_t t = from + timeout + SCAN_SETTLE;

        if (t > j->scan_not_before)
                j->scan_not_before = t;
}

static void job_step_scan(Job *j) {
        if (!j->scan_candidates && now_realtime() < j->scan_not_before) {
                log_job(LOG_DEBUG, j->name, NULL, NULL, NULL, 0,
                        "waiting for any late create to settle before looking for leftovers");
                job_schedule(j, j->scan_not_before, true);
                return;
        }
        if (!j->scan_candidates) {
                j->call = job_call(j, API_LIST, on_list);
        } else if (j->scan_index < strv_length(j->scan_candidates)) {
                j->call = job_call(j, API_GET, on_get);
                if (j->call && !(j->call->arg_id = strdup(j->scan_candidates[j->scan_index])))
                        call_cancel(TAKE_PTR(j->call));
        }
        if (!j->call)
                return job_fail_errno(j, -ENOMEM, "scan");
        call_submit(j->call);
}

static void job_step(Job *j) {
        if (j->call || j->hook)
                return; /* already under way */
        if (!j->config || !j->env) {
                job_fail(j, true, "not configured", 0);
                return;
        }
        switch (j->state) {
        case JOB_INIT:
        case JOB_LOOKUP_OLD:
                job_step_lookup_old(j);
                break;
        case JOB_CREATE:
                job_step_create(j);
                break;
        case JOB_LOOKUP_NEW:
                job_step_lookup_new(j);
                break;
        case JOB_HOOK:
                job_run_hook(j);
                break;
        case JOB_SCAN:
                job_step_scan(j);
                break;
        case JOB_IDLE:
        default:
                break;
        }
        manager_status_changed(j->manager);
}

/* Two jobs of one environment must not give their tokens one name: the name is how the
 * leftovers of an interrupted create are found again. */
static const Job *job_name_clash(Job *j, const char *token_name) {
        for (Job *o = j->manager->jobs; o; o = o->next)
                if (o != j && o->env == j->env && o->config && o->token_name &&
                    streq(o->token_name, token_name))
                        return o;
        return NULL;
}

static int job_record_current(Job *j, const TokenInfo *info) {
        usec_t created = info->created ?: now_realtime(); /* unknown: count from first sight */
        int r;

        r = manager_journal_append(j->manager, &(JournalRecord) {
                .type = JOURNAL_JOB, .job = j->name, .env = j->env->name, .id = info->id,
                .created = created, .expires = info->expires }, 1);
        if (r < 0)
                return r;
        if (set_str(&j->cur_id, info->id) < 0)
                return -ENOMEM;
        j->cur_created = created;
        j->cur_expires = info->expires;
        return 0;
}

static void on_lookup_old(ApiResult *res, void *userdata) {
        Job *j = userdata;
        const TokenInfo *info = &res->info;
        char ts[FORMAT_TIMESTAMP_MAX];
        const Job *clash;
        int r;

        j->call = NULL;
        if (res->class != API_OK)
                return job_fail_result(j, res);

        if (j->create_at && j->cur_id && !streq(info->id, j->cur_id)) {
                /* Resuming an interrupted rotation: the new token already reached the file. */
                if (set_str(&j->new_id, info->id) < 0)
                        return job_fail_errno(j, -ENOMEM, "lookup");
                j->new_created = info->created ?: now_realtime();
                j->new_expires = info->expires;
                r = manager_journal_append(j->manager, &(JournalRecord) {
                        .type = JOURNAL_DELIVERED, .job = j->name, .env = j->env->name,
                        .id = info->id, .old_id = j->cur_id, .created = j->new_created,
                        .expires = j->new_expires }, 1);
                if (r < 0)
                        return job_fail_errno(j, r, "journal");
                if (set_str(&j->delivered_id, info->id) < 0)
                        return job_fail_errno(j, -ENOMEM, "lookup");
                j->delivered_created = j->new_created;
                j->delivered_expires = j->new_expires;
                log_job(LOG_INFO, j->name, NULL, j->cur_id, info->id, 0,
                        "resuming: new token %s is already in %s", info->id, j->config->file);
                job_succeeded(j);
                j->state = JOB_HOOK;
                return job_step(j);
        }

        free(j->token_name);
        j->token_name = strdup(j->config->token_name ?: info->name);
        if (!j->token_name)
                return job_fail_errno(j, -ENOMEM, "lookup");
        clash = job_name_clash(j, j->token_name);
        if (clash) {
                char buf[512];
                snprintf(buf, sizeof(buf),
                         "token name '%s' is also used by job '%s' in environment %s; give one of them token_name",
                         j->token_name, clash->name, j->env->name);
                return job_fail(j, true, buf, 0);
        }

        if (!streq_ptr(info->id, j->cur_id)) {
                bool first = !j->cur_id;
                r = job_record_current(j, info);
                if (r < 0)
                        return job_fail_errno(j, r, "journal");
                log_job(LOG_INFO, j->name, NULL, NULL, info->id, 0, "%s token %s (%s), due %s",
                        first ? "tracking" : "the file now holds another token, tracking", info->id,
                        info->name, format_timestamp(ts, sizeof(ts), job_due(j)));
                if ((job_due(j) > now_realtime() && !info->revoked) || j->rotated_this_run) {
                        job_succeeded(j);
                        return job_go_idle(j);
                }
        } else if (j->state == JOB_INIT && job_due(j) > now_realtime() && !info->revoked) {
                job_succeeded(j);
                return job_go_idle(j);
        }

        if (info->revoked)
                log_job(LOG_WARNING, j->name, NULL, info->id, NULL, 0,
                        "token %s in %s is revoked; rotating it now", info->id, j->config->file);

        strv_free(j->scopes);
        j->scopes = strv_copy(j->config->scopes ?: info->scopes);
        if (!j->scopes)
                return job_fail_errno(j, -ENOMEM, "lookup");
        if (strv_length(j->scopes) == 0)
                return job_fail(j, true, "the token has no scopes and none are configured", 0);

        if (j->create_at) {
                /* An earlier create may or may not have happened and nothing reached the
                 * file: owe a scan for leftovers, then create afresh. */
                if (!j->scan_at) {
                        r = manager_journal_append(j->manager, &(JournalRecord) {
                                .type = JOURNAL_SCAN, .job = j->name, .env = j->env->name,
                                .name = j->token_name, .at = j->create_at }, 1);
                        if (r < 0)
                                return job_fail_errno(j, r, "journal");
                        j->scan_at = j->create_at;
                        if (set_str(&j->scan_name, j->token_name) < 0)
                                return job_fail_errno(j, -ENOMEM, "lookup");
                }
                j->create_at = 0;
        }
        job_succeeded(j);
        j->state = JOB_CREATE;
        job_step(j);
}

static void on_create(ApiResult *res, void *userdata) {
        Job *j = userdata;
        int r;

        j->call = NULL;
        if (res->class != API_OK) {
                if (res->maybe_done && (!j->scan_at || j->create_at < j->scan_at)) {
                        /* It may have been created anyway: look for it once a create has
                         * surely succeeded and nothing can complete late. */
                        r = manager_journal_append(j->manager, &(JournalRecord) {
                                .type = JOURNAL_SCAN, .job = j->name, .env = j->env->name,
                                .name = j->token_name, .at = j->create_at }, 1);
                        if (r >= 0) {
                                j->scan_at = j->create_at;
                                (void) set_str(&j->scan_name, j->token_name);
                        }
                }
                if (res->maybe_done)
                        job_defer_scan(j, now_realtime());
                return job_fail_result(j, res);
        }
        j->new_secret = TAKE_PTR(res->token);
        r = deliver_stage(j->config, j->new_secret);
        if (r < 0)
                return job_fail_stage(j, r);
        job_succeeded(j);
        j->state = JOB_LOOKUP_NEW;
        job_step(j);
}

static void on_lookup_new(ApiResult *res, void *userdata) {
        Job *j = userdata;
        const TokenInfo *info = &res->info;
        int r;

        j->call = NULL;
        if (res->class == API_OK && info->revoked)
                res->class = API_PERMANENT;
        if (res->class != API_OK) {
                if (res->status == 404 || (res->class == API_PERMANENT && info->revoked)) {
                        /* The staged token is useless: drop it and start the rotation over;
                         * the create intent makes it scan for leftovers. */
                        (void) deliver_discard_staged(j->config);
                        j->new_secret = erase_and_free(j->new_secret);
                        j->state = JOB_LOOKUP_OLD;
                        return job_fail(j, false, "the new token is unknown to the API or revoked", 0);
                }
                return job_fail_result(j, res);
        }

        r = deliver_commit(j->config);
        if (r < 0)
                return job_fail_errno(j, r, "moving the new token into place");
        /* Consumers now hold the new token. If it is our own management token, switch to
         * it before anything else: the API refuses to revoke the token in use. */
        if (job_is_management_token(j)) {
                r = env_load_auth(j->env);
                if (r < 0)
                        log_job(LOG_ERR, j->name, NULL, NULL, NULL, r,
                                "cannot re-read the new management token: %m");
                else
                        log_job(LOG_INFO, j->name, NULL, j->cur_id, info->id, 0,
                                "now authenticating to %s with the new token %s", j->env->name, info->id);
        }
        j->new_secret = erase_and_free(j->new_secret);
        j->new_created = info->created ?: now_realtime();
        j->new_expires = info->expires;

        r = manager_journal_append(j->manager, &(JournalRecord) {
                .type = JOURNAL_DELIVERED, .job = j->name, .env = j->env->name, .id = info->id,
                .old_id = j->cur_id, .created = j->new_created, .expires = j->new_expires }, 1);
        if (r < 0) {
                /* The file holds the new token: after a restart the file tells. Until then
                 * keep going from memory. */
                log_job(LOG_WARNING, j->name, NULL, NULL, NULL, r, "journal not updated: %m");
        }
        if (set_str(&j->delivered_id, info->id) < 0)
                return job_fail_errno(j, -ENOMEM, "deliver");
        j->delivered_created = j->new_created;
        j->delivered_expires = j->new_expires;
        log_job(LOG_INFO, j->name, NULL, j->cur_id, info->id, 0, "new token %s written to %s",
                info->id, j->config->file);
        job_succeeded(j);
        j->state = JOB_HOOK;
        job_step(j);
}

static void job_finish_rotation(Job *j) {
        Manager *m = j->manager;
        const JobConfig *c = j->config;
        usec_t now = now_realtime();
        char due[FORMAT_TIMESTAMP_MAX];
        Retirement *ret;
        int r;

        JournalRecord recs[2] = {
                { .type = JOURNAL_ROTATED, .job = j->name, .env = j->env->name, .id = j->delivered_id,
                  .old_id = j->create_old, .created = j->delivered_created,
                  .expires = j->delivered_expires },
                { .type = JOURNAL_RETIRE, .job = j->name, .env = j->env->name, .id = j->create_old,
                  .at = now + c->revoke_delay, .grace = c->grace_period },
        };
        bool retire = j->create_old && !streq(j->create_old, j->delivered_id);

        r = manager_journal_append(m, recs, retire ? 2 : 1);
        if (r < 0)
                return job_fail_errno(j, r, "journal");
        if (retire && !manager_find_retirement(m, j->env->name, j->create_old)) {
                ret = retirement_new(m, j->env->name, j->create_old, j->name, recs[1].at, recs[1].grace);
                if (ret)
                        retirement_start(ret);
        }
        set_str(&j->cur_id, j->delivered_id);
        j->cur_created = j->delivered_created;
        j->cur_expires = j->delivered_expires;
        j->create_at = 0;
        j->delivered_id = (free(j->delivered_id), NULL);
        j->rotated_this_run = true;
        log_job(LOG_INFO, j->name, MSGID_ROTATED, j->create_old, j->cur_id, 0,
                "rotated: %s replaces %s; next rotation due %s", j->cur_id, strna(j->create_old),
                format_timestamp(due, sizeof(due), job_due(j)));
        job_succeeded(j);
        if (j->scan_at) {
                j->state = JOB_SCAN;
                return job_step(j);
        }
        job_go_idle(j);
}

static void on_hook_done(Hook *h, int error, const char *what, void *userdata) {
        Job *j = userdata;
        char buf[256];

        hook_free(h);
        j->hook = NULL;
        if (error < 0) {
                snprintf(buf, sizeof(buf), "on_rotate %s %s; the old token stays valid until it succeeds",
                         j->config->on_rotate, what);
                return job_fail(j, false, buf, 0);
        }
        log_job(LOG_INFO, j->name, NULL, j->create_old, j->delivered_id, 0, "on_rotate %s succeeded",
                j->config->on_rotate);
        job_finish_rotation(j);
}

static void job_run_hook(Job *j) {
        int r;

        if (!j->config->on_rotate)
                return job_finish_rotation(j);
        r = hook_run(j->manager->event, j->config->on_rotate, j->name, j->config->file, j->create_old,
                     j->delivered_id, j->manager->hook_timeout, on_hook_done, j, &j->hook);
        if (r < 0)
                job_fail_errno(j, r, "starting on_rotate");
}

/* ---- leftover scan ---- */

static bool job_scan_is_known(Job *j, const char *id) {
        Manager *m = j->manager;

        for (Job *o = m->jobs; o; o = o->next)
                if (o->env == j->env && (streq_ptr(o->cur_id, id) || streq_ptr(o->delivered_id, id) ||
                                         streq_ptr(o->new_id, id)))
                        return true;
        return manager_find_retirement(m, j->env->name, id) != NULL;
}

static void job_scan_done(Job *j) {
        Manager *m = j->manager;
        size_t n = strv_length(j->scan_leftovers);
        _cleanup_free_ JournalRecord *recs = calloc(n + 1, sizeof(JournalRecord));
        usec_t now = now_realtime();
        int r;

        if (!recs)
                return job_fail_errno(j, -ENOMEM, "scan");
        for (size_t i = 0; i < n; i++)
                recs[i] = (JournalRecord) { .type = JOURNAL_RETIRE, .job = j->name, .env = j->env->name,
                                            .id = j->scan_leftovers[i], .at = now, .grace = 0 };
        recs[n] = (JournalRecord) { .type = JOURNAL_SCANNED, .job = j->name, .env = j->env->name };
        r = manager_journal_append(m, recs, n + 1);
        if (r < 0)
                return job_fail_errno(j, r, "journal");
        for (size_t i = 0; i < n; i++) {
                Retirement *ret;
                log_job(LOG_WARNING, j->name, NULL, j->scan_leftovers[i], NULL, 0,
                        "token %s is a leftover of an interrupted create and was never handed out: retiring it now",
                        j->scan_leftovers[i]);
                ret = retirement_new(m, j->env->name, j->scan_leftovers[i], j->name, now, 0);
                if (ret)
                        retirement_start(ret);
        }
        j->scan_at = 0;
        j->scan_candidates = strv_free(j->scan_candidates);
        j->scan_leftovers = strv_free(j->scan_leftovers);
        j->scan_index = 0;
        job_succeeded(j);
        job_go_idle(j);
}

static int job_scan_add_leftover(Job *j, const char *id) {
        char *c = strdup(id);
        if (!c || strv_push(&j->scan_leftovers, c) < 0) {
                free(c);
                return -ENOMEM;
        }
        return 0;
}

static void on_list(ApiResult *res, void *userdata) {
        Job *j = userdata;
        usec_t after = j->scan_at > j->manager->scan_margin ? j->scan_at - j->manager->scan_margin : 0;

        j->call = NULL;
        if (res->class != API_OK)
                return job_fail_result(j, res);
        j->scan_candidates = calloc(1, sizeof(char *));
        if (!j->scan_candidates)
                return job_fail_errno(j, -ENOMEM, "scan");
        for (size_t i = 0; i < res->n_list; i++) {
                const TokenInfo *t = &res->list[i];
                char *c;

                if (!t->id || !streq_ptr(t->name, j->scan_name) || job_scan_is_known(j, t->id))
                        continue;
                if (t->created) {
                        /* v2 lists carry creation times: no need to ask for each. */
                        if (t->created >= after && job_scan_add_leftover(j, t->id) < 0)
                                return job_fail_errno(j, -ENOMEM, "scan");
                        continue;
                }
                c = strdup(t->id);
                if (!c || strv_push(&j->scan_candidates, c) < 0) {
                        free(c);
                        return job_fail_errno(j, -ENOMEM, "scan");
                }
        }
        j->scan_index = 0;
        if (strv_length(j->scan_candidates) == 0)
                return job_scan_done(j);
        job_step(j);
}

static void on_get(ApiResult *res, void *userdata) {
        Job *j = userdata;
        usec_t after = j->scan_at > j->manager->scan_margin ? j->scan_at - j->manager->scan_margin : 0;

        j->call = NULL;
        if (res->class != API_OK && res->status != 404)
                return job_fail_result(j, res);
        /* 404: gone meanwhile, nothing to retire. */
        if (res->class == API_OK && res->info.created >= after &&
            job_scan_add_leftover(j, j->scan_candidates[j->scan_index]) < 0)
                return job_fail_errno(j, -ENOMEM, "scan");
        j->scan_index++;
        if (j->scan_index >= strv_length(j->scan_candidates))
                return job_scan_done(j);
        job_step(j);
}

/* ---- idle, configuration, start-up ---- */

static void job_go_idle(Job *j) {
        Manager *m = j->manager;
        char ts[FORMAT_TIMESTAMP_MAX];

        j->state = JOB_IDLE;
        job_clear_rotation(j);
        if (j->removed) {
                if (manager_journal_append(m, &(JournalRecord) { .type = JOURNAL_FORGET, .job = j->name }, 1) >= 0) {
                        log_job(LOG_INFO, j->name, NULL, j->cur_id, NULL, 0,
                                "removed from the configuration; its pending revoke/delete steps continue");
                        job_unlink_and_free(j);
                        manager_config_released(m);
                        manager_status_changed(m);
                        manager_check_once_done(m);
                        return;
                }
        }
        if (j->next_config) {
                j->config = j->next_config;
                j->next_config = NULL;
                j->env = manager_get_env(m, j->config->environment, true);
                manager_config_released(m);
        }
        if (j->config && j->cur_id) {
                usec_t due = job_due(j);
                log_job(LOG_DEBUG, j->name, NULL, NULL, j->cur_id, 0, "next rotation due %s",
                        format_timestamp(ts, sizeof(ts), due));
                job_schedule(j, due, false);
        }
        job_changed(j);
}

/* A create may have happened: the rotation must be finished with the settings it began with. */
static bool job_in_rotation(Job *j) {
        return j->create_at || j->delivered_id || j->new_secret || j->hook;
}

void job_set_config(Job *j, const JobConfig *c) {
        Manager *m = j->manager;

        if (!c) {
                j->removed = true;
                j->next_config = NULL;
                if ((j->state == JOB_IDLE || j->failed) && !job_in_rotation(j)) {
                        call_cancel(TAKE_PTR(j->call));
                        job_go_idle(j); /* forgets it */
                }
                return;
        }
        j->removed = false;
        if (j->config == c)
                return;
        if (j->config && job_config_equal(j->config, c) &&
            streq(j->config->environment, c->environment)) {
                /* Unchanged: keep state and timers, just point at the new copy. */
                j->config = c;
                if (j->next_config)
                        j->next_config = c;
                return;
        }
        if (!j->config) {
                j->config = c;
                if (!j->env || !streq(j->env->name, c->environment))
                        j->env = manager_get_env(m, c->environment, true);
                return;
        }
        /* Changed: takes effect at the next idle moment, never in the middle of a rotation. */
        j->next_config = c;
        if (j->state == JOB_IDLE && !j->call && !j->hook)
                job_go_idle(j);
        else if (j->failed && !job_in_rotation(j)) {
                /* Failing before anything was created (say, a wrong file path): the new
                 * settings may be the fix, so start over with them now. */
                call_cancel(TAKE_PTR(j->call));
                j->config = TAKE_PTR(j->next_config);
                j->env = manager_get_env(m, c->environment, true);
                job_succeeded(j);
                manager_config_released(m);
                job_start(j);
        }
}

void job_start(Job *j) {
        Manager *m = j->manager;
        _cleanup_erase_ char *staged = NULL;

        if (!j->config) {
                if (j->create_at || j->delivered_id) {
                        log_job(LOG_ERR, j->name, MSGID_FAILED, j->cur_id, NULL, 0,
                                "was removed from the configuration in the middle of a rotation; put it back so the rotation can finish");
                        j->removed = true;
                        return;
                }
                j->removed = true;
                j->state = JOB_IDLE;
                job_go_idle(j); /* forgets it */
                return;
        }
        if (j->env && !streq(j->env->name, j->config->environment)) {
                if (j->create_at || j->delivered_id)
                        log_job(LOG_WARNING, j->name, NULL, NULL, NULL, 0,
                                "environment changed in the middle of a rotation; finishing it in %s first",
                                j->env->name);
                else {
                        /* Another environment: its tokens are unknown there; start afresh. */
                        free(j->cur_id);
                        j->cur_id = NULL;
                        j->env = manager_get_env(m, j->config->environment, true);
                }
        }
        if (!j->env)
                j->env = manager_get_env(m, j->config->environment, true);
        if (j->create_at || j->scan_at)
                job_defer_scan(j, now_realtime()); /* a dead process's create may be in flight */

        if (j->delivered_id) {
                /* The new token is in the file; the hook may not have run. */
                j->state = JOB_HOOK;
        } else if (j->create_at && deliver_read_staged(j->config, &staged) >= 0) {
                /* A created token was staged but not moved into place: verify and use it. */
                j->new_secret = TAKE_PTR(staged);
                j->state = JOB_LOOKUP_NEW;
        } else if (j->create_at) {
                j->state = JOB_LOOKUP_OLD;   /* on_lookup_old decides what the file holds */
        } else if (j->scan_at) {
                j->state = JOB_SCAN;
        } else if (!j->cur_id) {
                j->state = JOB_INIT;
        } else {
                usec_t due = job_due(j), now = now_realtime();
                j->state = JOB_IDLE;
                if (due <= now && !m->once) {
                        /* Overdue at start-up: spread a fleet of them over a few seconds. */
                        usec_t spread = MIN(m->n_jobs * 10 * USEC_PER_MSEC, 5 * USEC_PER_SEC);
                        due = now + (spread ? random_u64() % spread : 0);
                }
                job_schedule(j, due, false);
                return;
        }
        if (j->state == JOB_HOOK || j->state == JOB_LOOKUP_NEW || j->state == JOB_LOOKUP_OLD)
                log_job(LOG_INFO, j->name, NULL, j->cur_id, j->delivered_id, 0,
                        "resuming an interrupted rotation (%s)", job_state_to_string(j->state));
        /* Resumed and first-sight work runs at once. */
        job_schedule(j, now_realtime(), true);
}
